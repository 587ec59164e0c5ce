//! A new version's trial: its first `trial-batches` batches. A batch on trial keeps a copy of
//! its input, and a step on trial stops at the first poison failure (no isolation), so a
//! version that fails is blamed at once; the driver then rolls it back and recomputes the
//! batch with the version it replaced ([`super::Live::roll_back`]).

use crate::checkpoint::SwapEvent;
use crate::config::poison::{OnPoison, PoisonPolicy};
use crate::plan::StepPlan;
use crate::plugin::Failure;
use crate::scheduler::job::JobError;

/// A version on trial.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Its sha256.
    pub digest: String,
    /// The steps it replaced (index, step as it was): what a rollback restores.
    pub replaced: Vec<(usize, StepPlan)>,
    /// The batches it must still finish to pass.
    pub left: u32,
    /// Its trial length.
    pub batches: u32,
}

/// The policy a step on trial runs with: its own, but stopping at the first poison failure.
pub fn strict(policy: PoisonPolicy) -> PoisonPolicy {
    PoisonPolicy {
        on_poison: OnPoison::Stop,
        ..policy
    }
}

/// A failure laid at the door of a version on trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blame {
    /// The plugin.
    pub plugin: String,
    /// The failing version's sha256.
    pub digest: String,
    /// The failure, as the pipeline would have stopped with it.
    pub error: String,
}

/// The version `error` is the fault of, if it is a plugin's own failure (a trap, a time-out,
/// a limit, a fatal error, a broken contract; not a retryable error retries did not cure,
/// nor a sink's failure).
pub fn blame(error: &JobError) -> Option<Blame> {
    let source = match error {
        JobError::Plugin { source, .. } | JobError::Poisoned { source, .. } => source,
        JobError::Sink { .. } | JobError::State { .. } => return None,
    };
    if matches!(
        source.failure,
        Failure::Retryable(_) | Failure::BadRecord { .. }
    ) {
        return None;
    }
    Some(Blame {
        plugin: source.site.plugin.to_string(),
        digest: source.site.digest.to_string(),
        error: error.to_string(),
    })
}

/// A rollback done: the event the batch's entry records.
#[derive(Debug, Clone)]
pub struct RolledBack {
    /// The version restored, by sha256.
    pub restored: String,
    /// The steps restored (index, step): a failed batch is recomputed with its own steps
    /// with these in place.
    pub steps: Vec<(usize, StepPlan)>,
    /// The event.
    pub event: SwapEvent,
}
