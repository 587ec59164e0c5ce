//! What can go wrong with a plugin; whose fault each is and whether a retry can help is in
//! [`crate::error`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::error::Fault;

/// A plugin that could not be loaded. Each names the file or plugin at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin {}: cannot be read: {source}", path.display())]
    Read {
        /// The `.wasm` file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is malformed.
    #[error("plugin manifest {}: {message}", path.display())]
    Manifest {
        /// The `.toml` file.
        path: PathBuf,
        /// What is wrong, with the key.
        message: String,
    },
    /// Not a WebAssembly component this host can compile (truncated, corrupt, a core module).
    #[error("plugin {}: not a valid WebAssembly component: {message}", path.display())]
    Invalid {
        /// The `.wasm` file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The digest differs from the manifest's `sha256`.
    #[error("plugin {}: sha256 is {actual} but its manifest expects {expected}", path.display())]
    DigestMismatch {
        /// The `.wasm` file.
        path: PathBuf,
        /// The manifest's digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The component does not implement any sluice world.
    #[error(
        "plugin {}: exports [{}], which match no sluice world; expected one of: {}",
        path.display(),
        exports.join(", "),
        super::PluginKind::expected_exports()
    )]
    WrongWorld {
        /// The `.wasm` file.
        path: PathBuf,
        /// What the component exports.
        exports: Vec<String>,
    },
    /// The component exports a sluice interface but with other types (another contract version).
    #[error("plugin {}: exports {export} but its types do not match this host's contract: {message}", path.display())]
    WorldMismatch {
        /// The `.wasm` file.
        path: PathBuf,
        /// The export that was found.
        export: String,
        /// The type checker's message.
        message: String,
    },
    /// The component imports something this host does not provide.
    #[error("plugin {name}: imports something this host does not provide: {message}")]
    Link {
        /// The plugin.
        name: String,
        /// The linker's message, naming the import.
        message: String,
    },
    /// The manifest asks for a capability the operator did not grant.
    #[error(
        "plugin {name}: asks for directory {dir:?} (manifest `capabilities.dirs`), which the operator has not granted; grant it in the pipeline file with `[grants.{name}] dirs = {{ {dir:?} = \"/host/path\" }}` or remove it from the manifest"
    )]
    NotGranted {
        /// The plugin.
        name: String,
        /// The guest directory asked for.
        dir: String,
    },
    /// A granted directory cannot be opened.
    #[error("plugin {name}: granted directory {} for {guest:?} cannot be opened: {message}", host.display())]
    Grant {
        /// The plugin.
        name: String,
        /// The guest path.
        guest: String,
        /// The host path.
        host: PathBuf,
        /// Why.
        message: String,
    },
    /// A limit in the manifest is over the operator's maximum.
    #[error(
        "plugin {name}: manifest `limits.{key}` is {asked}, over the operator's maximum of {max}"
    )]
    Limit {
        /// The plugin.
        name: String,
        /// `memory`, `time` or `fuel`.
        key: &'static str,
        /// What the manifest asks.
        asked: String,
        /// The maximum.
        max: String,
    },
    /// Two files claim the same plugin name.
    #[error("plugin {name}: defined twice, by {} and {}", first.display(), second.display())]
    Duplicate {
        /// The name.
        name: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// The plugin is of another kind than its place in the pipeline needs.
    #[error("plugin `{name}` is a {kind} (it exports {}), but a {role} is needed here", kind.export_name())]
    WrongRole {
        /// The plugin.
        name: String,
        /// What it is.
        kind: super::PluginKind,
        /// What is needed.
        role: super::PluginKind,
    },
}

/// Where a failing call was made: the plugin, its version digest, the partition and the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSite {
    /// The plugin's name.
    pub plugin: Arc<str>,
    /// The plugin's sha256, in full.
    pub digest: Arc<str>,
    /// The WIT function called (`init`, `transform`, `write`, …).
    pub call: &'static str,
    /// The partition, when the call had one.
    pub partition: Option<u32>,
    /// The batch, when the call had one.
    pub batch: Option<u64>,
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = &self.digest[..self.digest.len().min(12)];
        write!(f, "plugin `{}` (sha256 {short})", self.plugin)?;
        match (self.partition, self.batch) {
            (Some(p), Some(b)) => write!(f, " on partition {p} of batch {b}")?,
            (Some(p), None) => write!(f, " on partition {p}")?,
            (None, Some(b)) => write!(f, " in batch {b}")?,
            (None, None) => {}
        }
        write!(f, " in `{}`", self.call)
    }
}

/// What went wrong in a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The guest panicked; the message is what its panic hook printed.
    Panicked(String),
    /// The call ran past its time budget and was interrupted.
    TimedOut {
        /// The budget.
        budget: Duration,
        /// How long it ran before it stopped.
        elapsed: Duration,
    },
    /// The call used up its fuel (instruction budget).
    OutOfFuel(u64),
    /// The call tried to grow memory past its cap.
    OutOfMemory {
        /// The cap in bytes.
        cap: u64,
        /// What it asked for.
        requested: u64,
    },
    /// Any other trap (an out-of-bounds access, a stack overflow, …).
    Trapped(String),
    /// `init` refused the parameters.
    Init(String),
    /// The plugin's `self-test` export reported a failure.
    SelfTest(String),
    /// The plugin's `migrate` export returned an error converting its keyed state.
    Migrate(String),
    /// The guest returned `error::retryable`.
    Retryable(String),
    /// The guest returned `error::fatal`.
    Fatal(String),
    /// The guest returned `error::bad-record`.
    BadRecord {
        /// The record's index in the input batch.
        index: u32,
        /// The guest's reason.
        reason: String,
    },
    /// The guest returned data that breaks the contract (offsets out of range, …).
    Contract(String),
    /// The instance could not be made (the instance pool is exhausted, …).
    Instantiate(String),
}

/// A failed plugin call: where, and what. A value, never a host crash.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{site}: {failure}")]
pub struct PluginError {
    /// Where the call was made.
    pub site: CallSite,
    /// What went wrong.
    pub failure: Failure,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Panicked(m) => write!(f, "panicked: {m}"),
            Failure::TimedOut { budget, elapsed } => write!(
                f,
                "interrupted after {} ms, over its time budget of {} ms",
                elapsed.as_millis(),
                budget.as_millis()
            ),
            Failure::OutOfFuel(fuel) => write!(f, "ran out of fuel ({fuel} units per call)"),
            Failure::OutOfMemory { cap, requested } => write!(
                f,
                "stopped at its memory cap of {} MiB (it asked for {} MiB)",
                cap >> 20,
                requested >> 20
            ),
            Failure::Trapped(m) => write!(f, "trapped: {m}"),
            Failure::Init(m) => write!(f, "refused its parameters: {m}"),
            Failure::SelfTest(m) => write!(f, "failed its self-test: {m}"),
            Failure::Migrate(m) => write!(f, "could not migrate its keyed state: {m}"),
            Failure::Retryable(m) => write!(f, "failed, retryable: {m}"),
            Failure::Fatal(m) => write!(f, "failed: {m}"),
            Failure::BadRecord { index, reason } => {
                write!(f, "rejected record {index} of the batch: {reason}")
            }
            Failure::Contract(m) => write!(f, "broke the plugin contract: {m}"),
            Failure::Instantiate(m) => write!(f, "could not be instantiated: {m}"),
        }
    }
}

impl Failure {
    /// Whether calling again (on a fresh instance) can help.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Failure::Retryable(_) | Failure::TimedOut { .. } | Failure::Instantiate(_)
        )
    }

    /// Whether the instance that failed must be thrown away (it trapped, or its state is
    /// suspect). A trapped instance refuses further calls in any case.
    pub fn poisons_instance(&self) -> bool {
        !matches!(self, Failure::BadRecord { .. })
    }
}

impl PluginError {
    /// Whether calling again can help.
    pub fn retryable(&self) -> bool {
        self.failure.retryable()
    }
}

/// `Result` with a [`PluginError`].
pub type CallResult<T> = Result<T, PluginError>;
