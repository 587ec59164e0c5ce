//! The top-level error: every module's error, wrapped.

use crate::plugin::{LoadError, PluginError, RuntimeError};

/// Anything that can stop a sluice command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A plugin could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A plugin call failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The pipeline file is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The pipeline stopped on an error.
    #[error(transparent)]
    Run(#[from] crate::driver::RunError),
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    /// The plugin runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A command's input is wrong (a path, an argument).
    #[error("{0}")]
    Usage(String),
    /// An I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// `Result` with the top-level [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
