//! The open batch: the steps it pinned, the shadow it compares, and what its blocks did so
//! far; and the [`Shape`] of a pipeline's steps (which run per block, which at the close).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::part::Part;
use super::shadow::Shadow;
use crate::plan::{Plan, StepPlan};
use crate::plugin::CallContext;

/// How a pipeline's steps split between blocks and the batch's close.
///
/// The steps before the first `repartition-by-key`, `count-by-key` or window work record by
/// record,
/// so they run on each block as soon as it is cut (the *narrow* steps). What comes after
/// needs the whole batch and runs when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// How many steps run on each block.
    pub narrow: usize,
    /// What happens to a block's output.
    pub combine: Combine,
}

/// What happens to a block's output after the narrow steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Nothing waits for the batch: the block goes to the sinks now.
    Stream,
    /// `[repartition-by-key] count-by-key`: the block's keys are counted where it is (a
    /// map-side combine) and merged into the batch's counts, per target partition
    /// (`partitions`; `None`: where the record is). Steps from `rest` run on the counts.
    Count {
        /// The repartition's partition count.
        partitions: Option<u32>,
        /// The first step after the count.
        rest: usize,
        /// `sum-values`: each record adds its value (a decimal count) rather than 1.
        sum_values: bool,
    },
    /// `update-state-by-key`, or a window step that aggregates: the block's records are
    /// combined into the batch's accumulators where they are (a map-side combine), the step
    /// runs on them at the close, and steps from `rest` run on its output.
    Aggregate {
        /// The first step after the stateful one.
        rest: usize,
    },
    /// Anything else: the block's output is kept until the batch closes, then steps from
    /// `from` run on it.
    Collect {
        /// The first step that needs the whole batch.
        from: usize,
    },
}

impl Shape {
    /// The shape of `steps` over `partitions` source partitions.
    pub fn of(steps: &[StepPlan], partitions: u32) -> Shape {
        let narrow = steps
            .iter()
            .position(|s| {
                matches!(
                    s,
                    StepPlan::RepartitionByKey(_)
                        | StepPlan::CountByKey { .. }
                        | StepPlan::Window(_)
                        | StepPlan::UpdateState(_)
                        | StepPlan::EventWindow(_)
                )
            })
            .unwrap_or(steps.len());
        let combine = match &steps[narrow..] {
            [] => Combine::Stream,
            [StepPlan::CountByKey { sum_values }, ..] => Combine::Count {
                partitions: None,
                rest: narrow + 1,
                sum_values: *sum_values,
            },
            [StepPlan::UpdateState(_), ..] => Combine::Aggregate { rest: narrow + 1 },
            [StepPlan::EventWindow(_), ..] => Combine::Aggregate { rest: narrow + 1 },
            [StepPlan::Window(w), ..] if w.combines() => Combine::Aggregate { rest: narrow + 1 },
            [
                StepPlan::RepartitionByKey(n),
                StepPlan::CountByKey { sum_values },
                ..,
            ] => Combine::Count {
                partitions: Some(n.unwrap_or(partitions).max(1)),
                rest: narrow + 2,
                sum_values: *sum_values,
            },
            _ => Combine::Collect { from: narrow },
        };
        Shape { narrow, combine }
    }
}

/// Numbers each stage's calls per partition within a batch (the WIT `batch-context.part`).
#[derive(Debug, Default)]
pub(super) struct Calls(Mutex<HashMap<(usize, u32), u32>>);

impl Calls {
    pub(super) fn next(&self, stage: usize, partition: u32) -> u32 {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry((stage, partition)).or_default();
        *n += 1;
        *n - 1
    }
}

/// The hasher of the per-key counts: fixed, so a key always lands in the same partition.
pub type Fast = foldhash::fast::FixedState;

/// Counts per key of one target partition.
pub type Counts = HashMap<Box<[u8]>, u64, Fast>;

/// The batch that is open: what its blocks did so far.
#[derive(Debug)]
pub struct OpenBatch {
    /// The batch id.
    pub id: u64,
    /// The batch time (the end of its interval), ms since the epoch.
    pub time_ms: i64,
    pub(super) calls: Calls,
    pub(super) counts: Vec<Mutex<Counts>>,
    pub(super) kept: Mutex<Vec<Part>>,
    /// [`Combine::Aggregate`]: the accumulators of the blocks so far.
    pub(super) combined: Mutex<crate::ops::aggregate::Partial>,
    /// [`Combine::Aggregate`] before a window with an aggregate plugin: the accumulators of
    /// the blocks so far.
    pub(super) plugin_accs: Mutex<crate::plugin::aggregator::Accs>,
    pub(super) kept_bytes: AtomicU64,
    pub(super) records_in: AtomicU64,
    pub(super) records_out: AtomicU64,
    pub(super) markers: Mutex<Vec<i64>>,
    /// Per step, the poison records dead-lettered in this batch.
    pub(super) poisoned: Vec<AtomicU32>,
    pub(super) dead_before: u64,
    /// Time spent on its blocks so far.
    pub busy: Duration,
    /// The steps it runs, pinned when it opened (a recomputed batch runs with the plugin
    /// versions it first ran with).
    pub steps: std::sync::Arc<Vec<StepPlan>>,
    /// Per step, the version of a lookup step's table, pinned when it opened: every block of
    /// the batch joins with the same version (`None` for other steps).
    pub(super) tables: Vec<Option<std::sync::Arc<crate::lookup::Table>>>,
    /// The candidate running in the shadow of a step's plugin, pinned when it opened.
    pub shadow: Option<std::sync::Arc<Shadow>>,
    pub(super) shadow_calls: Calls,
    /// Per plugin step with keyed state, the batch's view of it, opened at its first call
    /// ([`super::keyed`]); dropped with the batch when it fails or is recomputed.
    pub(super) keyed:
        Mutex<std::collections::BTreeMap<usize, std::sync::Arc<crate::state::keyed::KeyedBatch>>>,
}

impl OpenBatch {
    /// Opens batch `id` with batch time `time_ms`, running `steps`.
    pub fn new(
        plan: &Plan,
        shape: &Shape,
        id: u64,
        time_ms: i64,
        steps: std::sync::Arc<Vec<StepPlan>>,
    ) -> OpenBatch {
        let targets = match shape.combine {
            Combine::Count {
                partitions: Some(n),
                ..
            } => n,
            _ => plan.partitions,
        };
        // Sized from the previous batch: a map that grows while blocks wait on its lock
        // rehashes every key it holds each time.
        let keys = match shape.combine {
            Combine::Count { .. } => plan.count_keys_hint.load(Ordering::Relaxed),
            _ => 0,
        };
        OpenBatch {
            id,
            time_ms,
            calls: Calls::default(),
            counts: (0..targets)
                .map(|_| Mutex::new(Counts::with_capacity_and_hasher(keys, Fast::default())))
                .collect(),
            kept: Mutex::default(),
            combined: Mutex::default(),
            plugin_accs: Mutex::default(),
            kept_bytes: AtomicU64::new(0),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            markers: Mutex::default(),
            poisoned: steps.iter().map(|_| AtomicU32::new(0)).collect(),
            tables: steps
                .iter()
                .map(|s| match s {
                    StepPlan::Lookup(lookup) => Some(lookup.table()),
                    _ => None,
                })
                .collect(),
            dead_before: plan.dead_letters.total(),
            busy: Duration::ZERO,
            steps,
            shadow: None,
            shadow_calls: Calls::default(),
            keyed: Mutex::default(),
        }
    }

    /// The bytes of the blocks whose output it keeps until it closes (for the budget).
    pub fn kept_bytes(&self) -> u64 {
        self.kept_bytes.load(Ordering::Relaxed)
    }

    pub(super) fn ctx(&self, plan: &Plan, partition: u32, part: u32) -> CallContext {
        CallContext {
            stream: plan.stream.clone(),
            partition,
            batch_id: self.id,
            batch_time_ms: self.time_ms,
            part,
        }
    }
}
