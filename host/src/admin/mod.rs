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

/// Starts `plan`'s admin endpoint on `rt`, offering swaps to `gate`; `None` with `[admin]
/// enabled = false`. Must be called outside `rt`.
pub fn start(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    gate: Option<Arc<Gate>>,
) -> Result<Option<Admin>, AdminError> {
    let config = &plan.file.admin;
    if !config.enabled {
        return Ok(None);
    }
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .and_then(|l| Ok((l.local_addr()?, l)));
    let (address, listener) = listener.map_err(|source| AdminError::Bind {
        address: config.listen,
        source,
    })?;
    if !address.ip().is_loopback() {
        tracing::warn!(address = %address, "The admin endpoint listens on an address other hosts may reach, as `[admin] listen` asks: anyone who has the token can swap this pipeline's plugins.");
    }
    let local = plan.checkpoint.as_ref().and_then(|c| c.local.as_deref());
    let path = file::path_for(&plan.path, local);
    let token = Token::generate().map_err(|source| AdminError::File {
        path: "/dev/urandom".into(),
        source,
    })?;
    let written = AdminFile {
        address,
        pid: std::process::id(),
        token: token.clone(),
    };
    written.write(&path)?;
    let (stop, stopped) = watch::channel(false);
    let state = Arc::new(server::State { token, gate });
    rt.spawn(server::serve(listener, state, stopped));
    tracing::info!(address = %address, file = %path.display(), "The admin endpoint listens (`sluice plugin swap` reads its address and token from the admin file, readable by its owner only).");
    Ok(Some(Admin {
        stop,
        file: path,
        address,
    }))
}
