//! What every source and sink kind builds itself with: a [`BuildContext`] (the pipeline
//! file's directory, the async runtime, the plugin loader) and, when it cannot, a
//! [`BuildError`] saying whether the file is wrong or something it names did not answer.
//!
//! The kinds live in `receiver` and `sink`, each with its config struct; the plan asks each to
//! build itself with one context.

use std::path::Path;

use tokio::runtime::Handle;

use crate::plugin::{Plugin, PluginKind};
use crate::store::Location;

/// Loads a plugin for a table of the pipeline file: `(what, plugin, kind)`, where `what` names
/// the table for messages (`` `[source]` ``). The error is the whole message.
pub type LoadPlugin<'a> = dyn FnMut(&str, &str, PluginKind) -> Result<Plugin, String> + 'a;

/// What a kind needs to build itself.
pub struct BuildContext<'a> {
    /// How messages name the table being built: `` `[source]` ``, `` `[[sink]]` number 2 ``.
    pub what: &'a str,
    /// The pipeline file's directory: relative locations resolve against it.
    pub base: &'a Path,
    /// The async runtime, to reach stores and brokers (building waits on them).
    pub handle: &'a Handle,
    /// Loads a plugin from the plugin directory, with its grants, pinning its digest.
    pub load: &'a mut LoadPlugin<'a>,
    /// The dead-letter location (`[dead-letter] path`), reached: where a source writes the
    /// records it sets aside (longer than its `max-record-bytes`).
    pub dead_letters: &'a Location,
}

/// Why a kind could not be built. The message names the key, the store, the broker or the
/// plugin.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The pipeline file is wrong: a key, a path, a plugin or its parameters.
    #[error("{0}")]
    Invalid(String),
    /// A store or broker the file names did not answer; it may answer later.
    #[error("{0}")]
    Unreachable(String),
}

impl From<String> for BuildError {
    fn from(message: String) -> Self {
        BuildError::Invalid(message)
    }
}
