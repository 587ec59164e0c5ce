//! The admin endpoint of a running pipeline: an HTTP API on loopback (by default) that
//! `sluice plugin swap` talks to.
//!
//! - [`start`] binds `[admin] listen`, makes a [`token::Token`], writes the [`file`] (address,
//!   pid, token; owner-only) and serves [`server`] until the returned [`Admin`] is dropped,
//!   which also removes the file;
//! - [`routes`]: what the API answers (`GET /v1/plugins`, `POST /v1/plugins/{name}/swap`);
//! - [`client`]: the other side, for the command line.
//!
//! The endpoint reaches the driver only through the swap [`Gate`], the same one the
//! plugin-directory watcher offers to, so a version sent here is checked exactly as a file
//! dropped there. The token is never logged.

pub mod client;
pub mod file;
mod public;
mod routes;
pub mod server;
pub mod shadow;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::plan::Plan;
use crate::swap::Gate;
use file::AdminFile;
use token::Token;

/// The admin endpoint failed to start, or a command could not use it.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The endpoint could not listen on its address.
    #[error("admin endpoint: cannot listen on {address} (`[admin] listen`): {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin file could not be written or read.
    #[error("admin file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// There is no admin file: the pipeline is not running (or runs with `[admin] enabled =
    /// false`).
    #[error("{} does not exist: the pipeline is not running, or runs with `[admin] enabled = false`", file.display())]
    NotRunning {
        /// Where the file would be.
        file: PathBuf,
    },
    /// The endpoint did not answer.
    #[error("the admin endpoint at {address} cannot be reached: {message}")]
    Unreachable {
        /// Where it was looked for.
        address: String,
        /// Why.
        message: String,
    },
    /// The endpoint refused the token.
    #[error(
        "the admin endpoint at {address} refused the token (401): give the token of the running pipeline's admin file"
    )]
    Unauthorized {
        /// The endpoint.
        address: String,
    },
    /// The new version failed a check and did not go live.
    #[error(
        "plugin {plugin}: the new version (sha256 {digest}) was refused and the live version stays: {reason}"
    )]
    Refused {
        /// The plugin.
        plugin: String,
        /// The refused version's sha256.
        digest: String,
        /// Why.
        reason: String,
    },
    /// The endpoint answered with another error.
    #[error("the admin endpoint answered {status}: {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The command's arguments are wrong.
    #[error("{0}")]
    Usage(String),
}

/// A running admin endpoint; dropping it stops the endpoint and removes the admin file.
#[derive(Debug)]
pub struct Admin {
    stop: watch::Sender<bool>,
    file: PathBuf,
    /// The address it listens on.
    pub address: SocketAddr,
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        AdminFile::remove_if_ours(&self.file);
    }
}

/// Where the endpoint listens, beside `[admin]`: `sluice run --ui [ADDR]`, and whether a
/// person watches (a terminal), in which case it takes the documented port.
#[derive(Debug, Clone, Default)]
pub struct UiOptions {
    /// `--ui` was given: serve even with `[admin] enabled = false`.
    pub requested: bool,
    /// `--ui ADDR`: listen there.
    pub listen: Option<SocketAddr>,
    /// `--ui` alone, or a terminal attached: with neither `--ui ADDR` nor a `[admin] listen`
    /// port, try [`UI_PORT`] and the nine ports after it (as Spark's UI takes 4040, then 4041,
    /// …), then any free port.
    pub default_port: bool,
    /// Print the UI's address on stderr (a person is watching).
    pub announce: bool,
}

/// The port the UI takes by default when a terminal is attached (Spark's, as its users know).
pub const UI_PORT: u16 = 4040;

/// The addresses to try, in order.
fn candidates(config: &crate::config::admin::AdminConfig, ui: &UiOptions) -> Vec<SocketAddr> {
    if let Some(a) = ui.listen {
        return vec![a];
    }
    if ui.default_port && config.listen.port() == 0 {
        let ip = config.listen.ip();
        let mut v: Vec<SocketAddr> = (0..10).map(|i| SocketAddr::new(ip, UI_PORT + i)).collect();
        v.push(config.listen);
        return v;
    }
    vec![config.listen]
}

/// Starts `plan`'s admin endpoint and web UI on `rt`, offering swaps to `gate` and showing
/// `monitor`; `None` with `[admin] enabled = false` and no `--ui`. Must be called outside
/// `rt`.
pub fn start(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    gate: Option<Arc<Gate>>,
    monitor: Option<Arc<crate::monitor::Monitor>>,
    ui: &UiOptions,
) -> Result<Option<Admin>, AdminError> {
    let config = &plan.file.admin;
    if !config.enabled && !ui.requested {
        return Ok(None);
    }
    let (address, listener) = bind(rt, &candidates(config, ui))?;
    if !address.ip().is_loopback() {
        tracing::warn!(address = %address, "The admin endpoint and web UI listen on an address other hosts may reach, as asked: anyone who reaches it can read the UI, /api/v1/ and /metrics; only a holder of the token can swap plugins.");
    }
    let local = plan.checkpoint.as_ref().and_then(|c| c.local.as_deref());
    let path = file::path_for(&plan.path, local);
    let token = match &config.token_file {
        Some(f) => token::from_file(&plan.path.parent().unwrap_or(".".as_ref()).join(f))?,
        None => Token::generate().map_err(|source| AdminError::File {
            path: "/dev/urandom".into(),
            source,
        })?,
    };
    let written = AdminFile {
        address,
        pid: std::process::id(),
        token: token.clone(),
    };
    written.write(&path)?;
    let (stop, stopped) = watch::channel(false);
    let state = Arc::new(server::State {
        token,
        gate,
        monitor,
    });
    rt.spawn(server::serve(listener, state, stopped));
    tracing::info!(address = %address, file = %path.display(), "The admin endpoint listens (`sluice plugin swap` reads its address and token from the admin file, readable by its owner only).");
    if ui.announce {
        eprintln!("Web UI: http://{address}/  (`sluice status {address}` in another terminal)");
    }
    tracing::info!(url = %format!("http://{address}/"), "The web UI, /api/v1/, /metrics, /healthz and /readyz are served here, read-only without the token.");
    Ok(Some(Admin {
        stop,
        file: path,
        address,
    }))
}

/// Binds the first of `addresses` that is free; the error names the last one tried.
fn bind(
    rt: &tokio::runtime::Runtime,
    addresses: &[SocketAddr],
) -> Result<(SocketAddr, tokio::net::TcpListener), AdminError> {
    let mut last = None;
    for &address in addresses {
        let bound = rt
            .block_on(tokio::net::TcpListener::bind(address))
            .and_then(|l| Ok((l.local_addr()?, l)));
        match bound {
            Ok(b) => return Ok(b),
            Err(source) => last = Some(AdminError::Bind { address, source }),
        }
    }
    Err(last.unwrap_or_else(|| AdminError::Usage("no address to listen on".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::admin::AdminConfig;

    #[test]
    fn the_ui_takes_the_documented_port_only_when_asked_and_stays_on_loopback() {
        let config = AdminConfig::default();
        let any = |ui: &UiOptions| candidates(&config, ui);
        assert_eq!(any(&UiOptions::default()), vec![config.listen]);
        let terminal = UiOptions {
            default_port: true,
            ..UiOptions::default()
        };
        let tried = any(&terminal);
        assert_eq!(tried[0], "127.0.0.1:4040".parse().unwrap());
        assert_eq!(tried[9], "127.0.0.1:4049".parse().unwrap());
        assert_eq!(tried[10], config.listen, "then any free port");
        assert!(tried.iter().all(|a| a.ip().is_loopback()));
        let given: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let explicit = UiOptions {
            requested: true,
            listen: Some(given),
            default_port: true,
            announce: false,
        };
        assert_eq!(any(&explicit), vec![given]);
    }
}
