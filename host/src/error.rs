//! The top-level error, and the one taxonomy every module error answers to: whose fault a
//! failure is ([`Fault`]) and whether trying again can help ([`Classify`]). The process exit
//! code follows from it ([`Error::exit_code`]).
//!
//! The classification of every module's error is written here, in one place, so that the whole
//! table can be read at once: a bad pipeline file, a plugin refused at load, a plugin's fatal
//! error or trap are the user's; a store, broker or network failure is external and usually
//! passes; a bug or an impossible state is internal.

use crate::admin::AdminError;
use crate::checkpoint::CheckpointError;
use crate::config::ConfigError;
use crate::dead_letters::DeadLetterError;
use crate::driver::RunError;
use crate::driver::supervise::SuperviseError;
use crate::plugin::{Failure, LoadError, PluginError, RuntimeError};
use crate::receiver::ReceiverError;
use crate::replay::ReplayError;
use crate::scheduler::job::JobError;
use crate::sink::SinkError;
use crate::wal::WalError;

/// Whose fault a failure is, so an operator knows where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The pipeline file, a plugin, its configuration or an argument: the user must change
    /// something; running again as is will fail the same way.
    User,
    /// Something outside sluice (a store, a broker, the network) that may come back.
    External,
    /// A bug in sluice itself, or a state it should never reach.
    Internal,
}

/// What every error can say about itself. Implemented for each module's error, here.
pub trait Classify {
    /// Whose fault it is.
    fn fault(&self) -> Fault;
    /// Whether trying the same thing again (a call, a batch, the process) can help.
    fn retryable(&self) -> bool;
    /// Whether another driver owns what this one was writing (it must stop and touch nothing
    /// more); such an error exits with [`EXIT_FENCED`], whatever its fault.
    fn fenced(&self) -> bool {
        false
    }
}

/// Exit code: the command did what it was asked (including a graceful stop on a signal).
pub const EXIT_OK: u8 = 0;
/// Exit code: the user's fault (a bad pipeline file, plugin or argument); do not restart.
pub const EXIT_USER: u8 = 2;
/// Exit code: fenced, another driver owns this pipeline's checkpoint log; do not restart.
pub const EXIT_FENCED: u8 = 3;
/// Exit code: a bug in sluice (`EX_SOFTWARE`).
pub const EXIT_INTERNAL: u8 = 70;
/// Exit code: an outside failure that may pass (`EX_TEMPFAIL`); a restart may succeed.
pub const EXIT_TEMPFAIL: u8 = 75;

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
    Config(#[from] ConfigError),
    /// The pipeline stopped on an error.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The plugin runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// `run --supervise` gave up, or could not start the driver.
    #[error(transparent)]
    Supervise(#[from] SuperviseError),
    /// `sluice dead-letters` failed.
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
    /// `sluice replay` failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The admin endpoint could not be used (`sluice plugin swap`), or refused the version.
    #[error(transparent)]
    Admin(#[from] AdminError),
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

    /// The process exit code for this error: [`EXIT_FENCED`] when fenced, else by fault:
    /// [`EXIT_USER`], [`EXIT_TEMPFAIL`] (external) or [`EXIT_INTERNAL`].
    pub fn exit_code(&self) -> u8 {
        if self.fenced() {
            return EXIT_FENCED;
        }
        match self.fault() {
            Fault::User => EXIT_USER,
            Fault::External => EXIT_TEMPFAIL,
            Fault::Internal => EXIT_INTERNAL,
        }
    }

    /// The module error inside, if any.
    fn inner(&self) -> Option<&dyn Classify> {
        let inner: &dyn Classify = match self {
            Error::Load(e) => e,
            Error::Plugin(e) => e,
            Error::Config(e) => e,
            Error::Run(e) => e,
            Error::Wal(e) => e,
            Error::Runtime(e) => e,
            Error::Supervise(e) => e,
            Error::DeadLetters(e) => e,
            Error::Replay(e) => e,
            Error::Admin(e) => e,
            Error::Usage(_) | Error::Io { .. } => return None,
        };
        Some(inner)
    }
}

impl Classify for Error {
    fn fault(&self) -> Fault {
        match (self, self.inner()) {
            (_, Some(e)) => e.fault(),
            (Error::Usage(_), _) => Fault::User,
            // The operating system refused (a directory, a thread, a process).
            _ => Fault::External,
        }
    }

    fn retryable(&self) -> bool {
        self.inner().is_some_and(Classify::retryable)
    }

    fn fenced(&self) -> bool {
        self.inner().is_some_and(Classify::fenced)
    }
}

/// A plugin refused at load (a file, a manifest, a grant): the user's, never retryable.
impl Classify for LoadError {
    fn fault(&self) -> Fault {
        Fault::User
    }
    fn retryable(&self) -> bool {
        false
    }
}

/// What the failed call says: a guest's `retryable` error is external; a failed instantiation
/// (a full instance pool) internal; a trap, a fatal error, a bad record or a broken contract
/// the plugin's, so the user's.
impl Classify for Failure {
    fn fault(&self) -> Fault {
        match self {
            Failure::Retryable(_) => Fault::External,
            Failure::Instantiate(_) => Fault::Internal,
            _ => Fault::User,
        }
    }
    fn retryable(&self) -> bool {
        Failure::retryable(self)
    }
}

/// As its [`Failure`].
impl Classify for PluginError {
    fn fault(&self) -> Fault {
        self.failure.fault()
    }
    fn retryable(&self) -> bool {
        Classify::retryable(&self.failure)
    }
}

/// The engine could not be built: internal.
impl Classify for RuntimeError {
    fn fault(&self) -> Fault {
        Fault::Internal
    }
    fn retryable(&self) -> bool {
        false
    }
}

/// A bad pipeline file is the user's; a store or broker it names that cannot be reached at
/// start is external, and a restart may find it.
impl Classify for ConfigError {
    fn fault(&self) -> Fault {
        self.fault
    }
    fn retryable(&self) -> bool {
        self.fault == Fault::External
    }
}

/// A store's failure is external and may pass; a segment of a newer format is the operator's
/// to sort out; a block that cannot be encoded, or a writer gone, is a bug; a fenced log is
/// another writer's.
impl Classify for WalError {
    fn fault(&self) -> Fault {
        match self {
            WalError::List { .. }
            | WalError::Read { .. }
            | WalError::Write { .. }
            | WalError::Delete { .. }
            | WalError::Fenced { .. } => Fault::External,
            WalError::UnknownVersion { .. } | WalError::BadEpoch { .. } => Fault::User,
            WalError::Block { .. } | WalError::Closed => Fault::Internal,
        }
    }
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
    fn fenced(&self) -> bool {
        matches!(self, WalError::Fenced { .. })
    }
}

/// A replay asked of what is not there (a batch out of the log, a source that let its data
/// go, a plugin name no step runs, a refused file or out location) is the user's; the stores
/// and the batch job answer as themselves.
impl Classify for ReplayError {
    fn fault(&self) -> Fault {
        match self {
            ReplayError::Config(e) => e.fault(),
            ReplayError::Checkpoint(e) => e.fault(),
            ReplayError::Wal(e) => e.fault(),
            ReplayError::Job(e) => e.fault(),
            ReplayError::Store(_) => Fault::External,
            ReplayError::Refused(_) | ReplayError::Plugin(_) | ReplayError::NotRetained(_) => {
                Fault::User
            }
        }
    }
    fn retryable(&self) -> bool {
        match self {
            ReplayError::Config(e) => Classify::retryable(e),
            ReplayError::Checkpoint(e) => Classify::retryable(e),
            ReplayError::Wal(e) => Classify::retryable(e),
            ReplayError::Job(e) => Classify::retryable(e),
            ReplayError::Store(_) => true,
            _ => false,
        }
    }
}

/// A store's failure is external; a damaged checkpoint needs the operator (it says what to do).
impl Classify for CheckpointError {
    fn fault(&self) -> Fault {
        match self {
            CheckpointError::Store { .. } | CheckpointError::Fenced { .. } => Fault::External,
            CheckpointError::Damaged { .. } => Fault::User,
        }
    }
    fn retryable(&self) -> bool {
        matches!(self, CheckpointError::Store { .. })
    }
    fn fenced(&self) -> bool {
        matches!(self, CheckpointError::Fenced { .. })
    }
}

/// A plugin sink's failure as its call's; a store's is external (a broken upload cannot be
/// mended by writing again, but the batch can be redone); a record the format cannot carry is
/// the user's (the data or the chosen format).
impl Classify for SinkError {
    fn fault(&self) -> Fault {
        match self {
            SinkError::Plugin(e) => e.fault(),
            SinkError::Io { .. } | SinkError::Broken { .. } => Fault::External,
            SinkError::Unwritable { .. } => Fault::User,
        }
    }
    fn retryable(&self) -> bool {
        SinkError::retryable(self)
    }
}

/// A transient receiver failure is external; a fatal one (a plugin's fatal error) the user's.
impl Classify for ReceiverError {
    fn fault(&self) -> Fault {
        match self {
            ReceiverError::Transient(_) => Fault::External,
            ReceiverError::Fatal(_) => Fault::User,
        }
    }
    fn retryable(&self) -> bool {
        matches!(self, ReceiverError::Transient(_))
    }
}

/// As the failed plugin's or sink's error.
impl Classify for JobError {
    fn fault(&self) -> Fault {
        match self {
            JobError::Plugin { source, .. } => source.fault(),
            JobError::Poisoned { .. } => Fault::User,
            JobError::State { .. } => Fault::External,
            JobError::Sink { source, .. } => source.fault(),
        }
    }
    fn retryable(&self) -> bool {
        match self {
            JobError::Plugin { source, .. } => Classify::retryable(source),
            JobError::Poisoned { .. } | JobError::State { .. } => false,
            JobError::Sink { source, .. } => Classify::retryable(source),
        }
    }
}

/// As the inner error; an unwritable `--report` file is the user's argument; a receiver that
/// failed for good did so on a fatal error (a transient one is restarted where it runs).
impl Classify for RunError {
    fn fault(&self) -> Fault {
        match self {
            RunError::Job(e) => e.fault(),
            RunError::Wal(e) => e.fault(),
            RunError::Checkpoint(e) => e.fault(),
            RunError::Report { .. } | RunError::Receiver { .. } => Fault::User,
            RunError::Recovery(_) | RunError::Refused(_) => Fault::User,
            RunError::Store(e) => e.fault(),
            RunError::Admin(e) => e.fault(),
            RunError::Fenced { .. } => Fault::External,
        }
    }
    fn retryable(&self) -> bool {
        match self {
            RunError::Job(e) => e.retryable(),
            RunError::Wal(e) => Classify::retryable(e),
            RunError::Checkpoint(e) => e.retryable(),
            RunError::Store(e) => e.retryable(),
            RunError::Admin(e) => e.retryable(),
            RunError::Report { .. }
            | RunError::Receiver { .. }
            | RunError::Fenced { .. }
            | RunError::Recovery(_)
            | RunError::Refused(_) => false,
        }
    }
    fn fenced(&self) -> bool {
        match self {
            RunError::Wal(e) => e.fenced(),
            RunError::Fenced { .. } => true,
            _ => false,
        }
    }
}

/// A version refused by its checks, a wrong token or argument, or an answer that names a
/// mistake in the request (4xx) is the user's; a driver that cannot be reached (not running,
/// not answering), an endpoint that cannot listen or a server error is external, and may pass.
impl Classify for AdminError {
    fn fault(&self) -> Fault {
        match self {
            AdminError::Refused { .. } | AdminError::Unauthorized { .. } | AdminError::Usage(_) => {
                Fault::User
            }
            AdminError::Rejected { status, .. } if *status < 500 => Fault::User,
            AdminError::Rejected { .. }
            | AdminError::Bind { .. }
            | AdminError::File { .. }
            | AdminError::NotRunning { .. }
            | AdminError::Unreachable { .. } => Fault::External,
        }
    }
    fn retryable(&self) -> bool {
        self.fault() == Fault::External
    }
}

/// A malformed letter or a refused replay is the user's; a store's failure external; a replayed
/// batch's failure as the job's.
impl Classify for DeadLetterError {
    fn fault(&self) -> Fault {
        match self {
            DeadLetterError::Malformed { .. } | DeadLetterError::Refused(_) => Fault::User,
            DeadLetterError::Store { .. } => Fault::External,
            DeadLetterError::Config(e) => e.fault(),
            DeadLetterError::Job { source, .. } => source.fault(),
        }
    }
    fn retryable(&self) -> bool {
        match self {
            DeadLetterError::Store { .. } => true,
            DeadLetterError::Malformed { .. } | DeadLetterError::Refused(_) => false,
            DeadLetterError::Config(e) => e.retryable(),
            DeadLetterError::Job { source, .. } => source.retryable(),
        }
    }
}

/// A supervisor that gave up on a driver crashing at start, or could not start it at all:
/// internal (the driver's own errors, above it in the log, say more).
impl Classify for SuperviseError {
    fn fault(&self) -> Fault {
        Fault::Internal
    }
    fn retryable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::PipelineFile;
    use crate::driver::supervise::Exit;
    use crate::plugin::CallSite;

    fn plugin_error(failure: Failure) -> PluginError {
        PluginError {
            site: CallSite {
                plugin: "uppercase".into(),
                digest: "ab".repeat(32).into(),
                call: "transform",
                partition: Some(1),
                batch: Some(7),
            },
            failure,
        }
    }

    fn job(failure: Failure) -> Error {
        Error::Run(RunError::Job(JobError::Plugin {
            batch: 7,
            source: plugin_error(failure),
        }))
    }

    fn sink(source: SinkError) -> Error {
        Error::Run(RunError::Job(JobError::Sink { batch: 7, source }))
    }

    #[test]
    fn a_bad_pipeline_file_a_refused_plugin_or_a_trap_exits_2() {
        let bad = PipelineFile::parse("version = 1\nsauce = 3\n", Path::new("p.toml")).unwrap_err();
        let refused = LoadError::NotGranted {
            name: "reader".into(),
            dir: "/data".into(),
        };
        let cases = [
            Error::from(bad),
            Error::from(refused),
            job(Failure::Trapped("unreachable".into())),
            job(Failure::Fatal("no".into())),
            job(Failure::OutOfFuel(1000)),
            Error::Run(RunError::Receiver {
                partition: 0,
                message: "fatal".into(),
            }),
            Error::Usage("no such file".into()),
        ];
        for e in cases {
            assert_eq!(e.exit_code(), EXIT_USER, "{e}");
            assert!(!e.retryable(), "{e}");
        }
    }

    #[test]
    fn a_store_or_broker_failure_exits_75_and_is_retryable() {
        let unreachable = ConfigError {
            path: "p.toml".into(),
            message: "key `sink.path`: az://c/out cannot be reached".into(),
            fault: Fault::External,
        };
        let cases = [
            Error::from(unreachable),
            sink(SinkError::Io {
                sink: "files out".into(),
                message: "Not a directory".into(),
            }),
            Error::Wal(WalError::Write {
                path: "wal/1".into(),
                message: "timed out".into(),
            }),
            Error::Run(RunError::Checkpoint(CheckpointError::Store {
                location: "cp".into(),
                message: "503".into(),
            })),
            job(Failure::Retryable("busy".into())),
        ];
        for e in cases {
            assert_eq!(e.exit_code(), EXIT_TEMPFAIL, "{e}");
            assert!(e.retryable(), "{e}");
        }
    }

    #[test]
    fn a_fenced_driver_exits_3_whether_the_log_or_the_checkpoint_fenced_it() {
        let by_log = Error::Run(RunError::Wal(WalError::Fenced {
            prefix: "wal".into(),
            epoch: 1,
            newer: 2,
        }));
        let by_checkpoint = Error::Run(RunError::Fenced {
            location: "checkpoint/00000000000000000012".into(),
        });
        for e in [by_log, by_checkpoint] {
            assert_eq!(e.exit_code(), EXIT_FENCED, "{e}");
            assert!(!e.retryable(), "{e}");
        }
    }

    #[test]
    fn a_bug_or_a_supervisor_that_gave_up_exits_70() {
        let gave_up = SuperviseError::GaveUp {
            crashes: 5,
            within: std::time::Duration::from_secs(10),
            last: Exit::Code(75),
        };
        let cases = [
            Error::Wal(WalError::Closed),
            Error::Runtime(RuntimeError("no engine".into())),
            job(Failure::Instantiate("pool exhausted".into())),
            Error::from(gave_up),
        ];
        for e in cases {
            assert_eq!(e.exit_code(), EXIT_INTERNAL, "{e}");
        }
    }

    #[test]
    fn the_fenced_message_says_who_won_and_that_this_driver_stops() {
        let e = RunError::Fenced {
            location: "checkpoint/12".into(),
        };
        assert_eq!(
            e.to_string(),
            "fenced: another driver committed checkpoint/12 first; this driver stops and touches nothing more"
        );
    }

    #[test]
    fn plugin_swap_exits_2_when_refused_and_75_when_the_driver_cannot_be_reached() {
        let refused = AdminError::Refused {
            plugin: "tag".into(),
            digest: "ab".repeat(32),
            reason: "init: unknown parameter".into(),
        };
        let token = AdminError::Unauthorized {
            address: "127.0.0.1:1".into(),
        };
        for e in [refused, token] {
            assert_eq!(Error::from(e).exit_code(), EXIT_USER);
        }
        let gone = AdminError::NotRunning {
            file: "/srv/p/checkpoints/admin.json".into(),
        };
        let silent = AdminError::Unreachable {
            address: "127.0.0.1:1".into(),
            message: "connection refused".into(),
        };
        for e in [gone, silent] {
            assert_eq!(Error::from(e).exit_code(), EXIT_TEMPFAIL);
        }
    }
}
