//! `[admin]`: the admin endpoint of a running pipeline (`sluice plugin swap` talks to it).

use std::net::{Ipv4Addr, SocketAddr};

use serde::Deserialize;

/// `[admin]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminConfig {
    /// `enabled`: whether a running pipeline listens for admin requests. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `listen`: the address and port it listens on; port 0 takes any free port. Default
    /// `"127.0.0.1:0"`. An address other than a loopback one is allowed because it is written
    /// here, and the log warns about it at every start.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `token-file`: a file whose content (trimmed) is the token control requests must
    /// present, for an endpoint others reach (`sluice run --ui 0.0.0.0:4040`); at least 16
    /// characters. Default: a new random token at each start, in the admin file only.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: default_listen(),
            token_file: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}
