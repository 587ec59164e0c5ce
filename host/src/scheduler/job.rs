//! The work of a batch, in two parts: [`run_blocks`] runs the narrow steps and the sink writes
//! on each block as it is cut (one task per partition on the bounded worker pool), and
//! [`close`] runs what needs the whole batch, then commits every sink once.
//!
//! Retry policy: a `retryable` plugin error is retried on a fresh instance, up to three times
//! with backoff (100, 200, 400 ms); a `bad-record` error dead-letters that record and calls
//! again without it; a trap, a time-out or memory past the cap (a *poison* failure) has the
//! block called again in halves until the records that fail alone are found and dead-lettered
//! ([`super::isolate`]), or, with the step's `on-poison = "stop"`, is handled as before
//! isolation (a time-out retried, a trap stopping the pipeline); anything else (a fatal error,
//! a broken contract) stops the pipeline with the plugin, its digest, the partition and the
//! batch in the message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::combine::{combine_counts, count_by_key, counts_part, repartition};
use super::isolate::{self, Isolation, poison_kind};
use super::shadow::{self, Shadow};
use crate::batch::RecordBatch;
use crate::block::{Block, BlockManager};
use crate::config::poison::{OnPoison, PoisonPolicy};
use crate::plan::{Plan, StepPlan};
use crate::plugin::limits::Limits;
use crate::plugin::{CallContext, Failure, PluginError, TransformStage};
use crate::sink::dead_letter::{DeadLetter, Unwritten};
use crate::sink::{Sink, SinkError};

/// A job failed and the pipeline must stop.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A plugin failed in a way retries did not cure.
    #[error("batch {batch}: {source}")]
    Plugin {
        /// The batch.
        batch: u64,
        /// The plugin's error (naming plugin, digest, partition and batch).
        source: PluginError,
    },
    /// A step dead-lettered more poison records of one batch than its `max-poison-per-batch`.
    #[error(
        "batch {batch}: {source}; that is one more record failing alone than the step's `max-poison-per-batch` of {limit} for a batch: a plugin that fails on (nearly) every record is broken, not poisoned, so the pipeline stops"
    )]
    Poisoned {
        /// The batch.
        batch: u64,
        /// The step's limit.
        limit: u32,
        /// The failure of the record over the limit.
        source: PluginError,
    },
    /// A sink failed.
    #[error("batch {batch}: {source}")]
    Sink {
        /// The batch.
        batch: u64,
        /// The sink's error.
        source: SinkError,
    },
}

/// Where each record of a partition's data came from: its source partition and offset.
#[derive(Debug, Clone)]
pub enum Lineage {
    /// Record `i` is offset `start + i` of `partition`.
    Range {
        /// The source partition.
        partition: u32,
        /// The first record's offset.
        start: u64,
    },
    /// Record `i` came from `self.0[i]`.
    Explicit(Vec<(u32, u64)>),
    /// Record `i` came from record `origins[i]` of the earlier lineage: a filter's or a
    /// flat map's, kept as the plugin gave it (resolved only when a record is dead-lettered).
    Via(Box<Lineage>, Vec<u32>),
}

impl Lineage {
    /// Where record `i` came from.
    pub fn at(&self, i: usize) -> (u32, u64) {
        match self {
            Lineage::Range { partition, start } => (*partition, start + i as u64),
            Lineage::Explicit(v) => v.get(i).copied().unwrap_or((u32::MAX, u64::MAX)),
            Lineage::Via(base, origins) => origins
                .get(i)
                .map_or((u32::MAX, u64::MAX), |&o| base.at(o as usize)),
        }
    }

    /// The lineage after a step with these origins (empty: a map, unchanged).
    pub fn follow(self, origins: Vec<u32>) -> Lineage {
        if origins.is_empty() {
            return self;
        }
        Lineage::Via(Box::new(self), origins)
    }
}

/// One partition's data between steps.
#[derive(Debug)]
pub struct Part {
    /// The partition (after a repartition, the new one).
    pub partition: u32,
    /// The records.
    pub records: RecordBatch,
    /// Where they came from.
    pub lineage: Lineage,
}

/// Runs `f` over `items` on the worker pool, keeping the order of the results. The pool's
/// threads live as long as the plan: blocks come hundreds of times a second, and a thread
/// started per round cost more than small blocks' work.
pub fn pool_map<T: Send, R: Send>(
    pool: &rayon::ThreadPool,
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync + Send,
) -> Vec<R> {
    if pool.current_num_threads() <= 1 || items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    use rayon::prelude::*;
    pool.install(|| items.into_par_iter().with_max_len(1).map(f).collect())
}

/// How a pipeline's steps split between blocks and the batch's close.
///
/// The steps before the first `repartition-by-key` or `count-by-key` work record by record,
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
            .position(|s| matches!(s, StepPlan::RepartitionByKey(_) | StepPlan::CountByKey))
            .unwrap_or(steps.len());
        let combine = match &steps[narrow..] {
            [] => Combine::Stream,
            [StepPlan::CountByKey, ..] => Combine::Count {
                partitions: None,
                rest: narrow + 1,
            },
            [StepPlan::RepartitionByKey(n), StepPlan::CountByKey, ..] => Combine::Count {
                partitions: Some(n.unwrap_or(partitions).max(1)),
                rest: narrow + 2,
            },
            _ => Combine::Collect { from: narrow },
        };
        Shape { narrow, combine }
    }
}

/// Numbers each stage's calls per partition within a batch (the WIT `batch-context.part`).
#[derive(Debug, Default)]
struct Calls(Mutex<HashMap<(usize, u32), u32>>);

impl Calls {
    fn next(&self, stage: usize, partition: u32) -> u32 {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry((stage, partition)).or_default();
        *n += 1;
        *n - 1
    }
}

/// The hasher of the per-key counts: fixed, so a key always lands in the same partition.
pub(crate) type Fast = foldhash::fast::FixedState;

/// Counts per key of one target partition.
pub(crate) type Counts = HashMap<Box<[u8]>, u64, Fast>;

/// The batch that is open: what its blocks did so far.
#[derive(Debug)]
pub struct OpenBatch {
    /// The batch id.
    pub id: u64,
    /// The batch time (the end of its interval), ms since the epoch.
    pub time_ms: i64,
    calls: Calls,
    counts: Vec<Mutex<Counts>>,
    kept: Mutex<Vec<Part>>,
    kept_bytes: AtomicU64,
    records_in: AtomicU64,
    records_out: AtomicU64,
    markers: Mutex<Vec<i64>>,
    /// Per step, the poison records dead-lettered in this batch.
    poisoned: Vec<AtomicU32>,
    dead_before: u64,
    /// Time spent on its blocks so far.
    pub busy: Duration,
    /// The steps it runs, pinned when it opened (a recomputed batch runs with the plugin
    /// versions it first ran with).
    pub steps: std::sync::Arc<Vec<StepPlan>>,
    /// The candidate running in the shadow of a step's plugin, pinned when it opened.
    pub shadow: Option<std::sync::Arc<Shadow>>,
    shadow_calls: Calls,
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
        OpenBatch {
            id,
            time_ms,
            calls: Calls::default(),
            counts: (0..targets)
                .map(|_| Mutex::new(Counts::with_hasher(Fast::default())))
                .collect(),
            kept: Mutex::default(),
            kept_bytes: AtomicU64::new(0),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            markers: Mutex::default(),
            poisoned: steps.iter().map(|_| AtomicU32::new(0)).collect(),
            dead_before: plan.dead_letters.total(),
            busy: Duration::ZERO,
            steps,
            shadow: None,
            shadow_calls: Calls::default(),
        }
    }

    /// The bytes of the blocks whose output it keeps until it closes (for the budget).
    pub fn kept_bytes(&self) -> u64 {
        self.kept_bytes.load(Ordering::Relaxed)
    }

    fn ctx(&self, plan: &Plan, partition: u32, part: u32) -> CallContext {
        CallContext {
            stream: plan.stream.clone(),
            partition,
            batch_id: self.id,
            batch_time_ms: self.time_ms,
            part,
        }
    }
}

/// Runs the narrow steps on `blocks` (of the open batch, in arrival order): one task per
/// partition on the worker pool, each taking its partition's blocks in order. A block's bytes
/// are given back to the budget as soon as it is done (when the batch keeps its output, at
/// close).
pub fn run_blocks(
    plan: &Plan,
    shape: &Shape,
    batch: &OpenBatch,
    blocks: Vec<Block>,
    manager: &BlockManager,
) -> Result<(), JobError> {
    let mut by_partition: Vec<Vec<Block>> = Vec::new();
    for block in blocks {
        match by_partition
            .iter_mut()
            .find(|g| g[0].id.partition == block.id.partition)
        {
            Some(g) => g.push(block),
            None => by_partition.push(vec![block]),
        }
    }
    let results = pool_map(&plan.pool, by_partition, |group: Vec<Block>| {
        for block in group {
            let bytes = block.bytes;
            run_block(plan, shape, batch, block, manager)?;
            if matches!(shape.combine, Combine::Collect { .. }) {
                batch.kept_bytes.fetch_add(bytes, Ordering::Relaxed);
            } else {
                manager.release(bytes);
            }
        }
        Ok(())
    });
    results.into_iter().collect()
}

fn run_block(
    plan: &Plan,
    shape: &Shape,
    batch: &OpenBatch,
    block: Block,
    manager: &BlockManager,
) -> Result<(), JobError> {
    for note in &block.aside {
        plan.dead_letters
            .add_set_aside(&plan.stream, batch.id, block.id.partition, note);
    }
    if block.records.is_empty() {
        // Only records set aside.
        return Ok(());
    }
    let records = block.records;
    batch
        .records_in
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    if let Some(prefix) = &plan.latency_marker {
        find_markers(&records, prefix, &batch.markers);
    }
    let partition = block.id.partition;
    let mut lineage = Lineage::Range {
        partition,
        start: block.first_offset,
    };
    // The block's own buffer is only read, and goes back to the block manager for reuse.
    let mut current: Option<RecordBatch> = None;
    for (i, step) in batch.steps[..shape.narrow].iter().enumerate() {
        let input = current.as_ref().unwrap_or(&records);
        let out = match step {
            StepPlan::Plugin(stage, policy) => {
                let before = shadowed(batch, i).then(|| lineage.clone());
                let out = transform_part(
                    plan,
                    (stage, *policy),
                    batch,
                    i,
                    (partition, input, lineage),
                )?;
                if let Some(before) = &before {
                    shadow_step(plan, batch, i, (partition, input, before), &out);
                }
                out
            }
            StepPlan::Native(step) => Part {
                partition,
                records: (step.f)(input),
                lineage,
            },
            StepPlan::RepartitionByKey(_) | StepPlan::CountByKey => {
                unreachable!("Shape::of puts barriers after the narrow steps")
            }
        };
        lineage = out.lineage;
        current = Some(out.records);
    }
    let part = Part {
        partition,
        records: current.unwrap_or_default(),
        lineage,
    };
    {
        let part = if shape.narrow == 0 {
            // No step ran: the block is the output (and is not reused).
            Part { records, ..part }
        } else {
            manager.recycle(records);
            part
        };
        match shape.combine {
            Combine::Stream => write_sinks(plan, batch, &part),
            Combine::Count { partitions, .. } => {
                combine_counts(&part, partitions, &batch.counts);
                Ok(())
            }
            Combine::Collect { .. } => {
                batch
                    .kept
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(part);
                Ok(())
            }
        }
    }
}

/// Whether a shadow pinned by `batch` runs a candidate for step `step`.
fn shadowed(batch: &OpenBatch, step: usize) -> bool {
    batch
        .shadow
        .as_ref()
        .is_some_and(|s| s.stage_for(step).is_some())
}

/// Runs the shadow's candidate for step `step` on the step's input (in the calls the live
/// step made) and compares its output with the live step's `live` (see [`super::shadow`]).
fn shadow_step(
    plan: &Plan,
    batch: &OpenBatch,
    step: usize,
    input: (u32, &RecordBatch, &Lineage),
    live: &Part,
) {
    let Some(shadow) = &batch.shadow else {
        return;
    };
    let Some(stage) = shadow.stage_for(step) else {
        return;
    };
    let (partition, records, lineage) = input;
    let mut out = RecordBatch::default();
    let mut origins: Vec<u32> = Vec::new();
    let ranges = call_ranges(records);
    let whole = ranges.len() == 1;
    for range in ranges {
        let ctx = batch.ctx(plan, partition, batch.shadow_calls.next(step, partition));
        let slice = if whole {
            std::borrow::Cow::Borrowed(records)
        } else {
            std::borrow::Cow::Owned(records.slice(range.clone()))
        };
        match shadow::call(stage, &ctx, &slice) {
            Ok((b, o)) => {
                let from = range.start as u32;
                if o.is_empty() {
                    origins.extend((0..b.len() as u32).map(|i| from + i));
                } else {
                    origins.extend(o.iter().map(|&x| from + x));
                }
                out.append(&b);
            }
            Err(e) => {
                shadow.fail(batch.id, format!("partition {partition}: {e}"));
                return;
            }
        }
    }
    shadow.compare(batch.id, live, (&out, &origins), lineage);
}

/// Records the send stamps (epoch µs) of the values that start with `prefix`.
fn find_markers(records: &RecordBatch, prefix: &[u8], out: &Mutex<Vec<i64>>) {
    let mut found = Vec::new();
    for i in 0..records.len() {
        if let Some(rest) = records.value(i).strip_prefix(prefix) {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if let Some(us) = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                found.push(us);
            }
        }
    }
    if !found.is_empty() {
        out.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
    }
}

/// Writes one partition's records to every sink, in calls of bounded size; the records a
/// sink's format cannot carry go to the dead letters instead.
fn write_sinks(plan: &Plan, batch: &OpenBatch, part: &Part) -> Result<(), JobError> {
    let stages = batch.steps.len();
    for (s, sink) in plan.sinks.iter().enumerate() {
        let records = writable(plan, batch, sink.as_ref(), part);
        for range in call_ranges(&records) {
            let ctx = batch.ctx(
                plan,
                part.partition,
                batch.calls.next(stages + s, part.partition),
            );
            let result = if range.len() == records.len() {
                with_retry(|| sink.write(&ctx, &records))
            } else {
                let slice = records.slice(range);
                with_retry(|| sink.write(&ctx, &slice))
            };
            result.map_err(|source| JobError::Sink {
                batch: batch.id,
                source,
            })?;
        }
        if s == 0 {
            batch
                .records_out
                .fetch_add(records.len() as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// `part`'s records that `sink` can write. The others (a line feed in a value of a
/// line-per-record format) are dead-lettered with the sink's reason and their source
/// position, as a poison record is: one record a format cannot carry never stops a stream.
fn writable<'a>(
    plan: &Plan,
    batch: &OpenBatch,
    sink: &dyn Sink,
    part: &'a Part,
) -> std::borrow::Cow<'a, RecordBatch> {
    let refused = sink.unwritable(&part.records);
    let Some((_, first)) = refused.first() else {
        return std::borrow::Cow::Borrowed(&part.records);
    };
    let name = sink.name();
    tracing::warn!(sink = %name, batch = batch.id, partition = part.partition, records = refused.len(), reason = %first, "The sink's format cannot carry some records; they go to the dead letters and the rest is written.");
    for (index, reason) in &refused {
        let error = SinkError::Unwritable {
            sink: name.clone(),
            batch: batch.id,
            partition: part.partition,
            index: *index,
            reason: reason.clone(),
        };
        let (partition, offset) = part.lineage.at(*index);
        let unwritten = Unwritten {
            sink: &name,
            partition,
            offset,
            reason: &error.to_string(),
            batch: &part.records,
            index: *index,
        };
        plan.dead_letters
            .add_unwritable(&plan.stream, batch.id, unwritten);
    }
    let mut refused = refused.iter().map(|(i, _)| *i).peekable();
    let keep: Vec<u32> = (0..part.records.len())
        .filter(|&i| refused.next_if_eq(&i).is_none())
        .map(|i| i as u32)
        .collect();
    std::borrow::Cow::Owned(part.records.gather(&keep))
}

/// What a closed batch did.
#[derive(Debug, Default, Clone)]
pub struct Closed {
    /// Records in.
    pub records_in: u64,
    /// Records written to the sinks (by the first sink).
    pub records_out: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
    /// The send stamps (epoch µs) of the batch's latency markers.
    pub markers: Vec<i64>,
}

/// Finishes `batch` once it is closed: runs the steps that need the whole batch, writes their
/// output and flushes dead letters; nothing is visible yet ([`commit`] does that, after the
/// driver recorded the batch). Returns what the batch did and the bytes of kept blocks to give
/// back to the budget.
pub fn finish(plan: &Plan, shape: &Shape, batch: OpenBatch) -> Result<(Closed, u64), JobError> {
    let time_ms = batch.time_ms;
    let parts_and_rest = match shape.combine {
        Combine::Stream => None,
        Combine::Count { rest, .. } => {
            let parts = batch
                .counts
                .iter()
                .enumerate()
                .map(|(t, m)| {
                    let counts = std::mem::replace(
                        &mut *m.lock().unwrap_or_else(|e| e.into_inner()),
                        Counts::with_hasher(Fast::default()),
                    );
                    counts_part(t as u32, counts, time_ms)
                })
                .collect();
            Some((parts, rest))
        }
        Combine::Collect { from } => {
            let kept = std::mem::take(&mut *batch.kept.lock().unwrap_or_else(|e| e.into_inner()));
            Some((merge_parts(kept, plan.partitions), from))
        }
    };
    if let Some((mut parts, rest)) = parts_and_rest {
        for (i, step) in batch.steps.iter().enumerate().skip(rest) {
            parts = match step {
                StepPlan::Plugin(stage, policy) => pool_map(&plan.pool, parts, |part| {
                    let before = shadowed(&batch, i).then(|| part.lineage.clone());
                    let out = transform_part(
                        plan,
                        (stage, *policy),
                        &batch,
                        i,
                        (part.partition, &part.records, part.lineage),
                    )?;
                    if let Some(before) = &before {
                        shadow_step(
                            plan,
                            &batch,
                            i,
                            (part.partition, &part.records, before),
                            &out,
                        );
                    }
                    Ok(out)
                })
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?,
                StepPlan::RepartitionByKey(n) => {
                    let n = n.unwrap_or(parts.len() as u32).max(1);
                    repartition(parts, n)
                }
                StepPlan::CountByKey => pool_map(&plan.pool, parts, |p| count_by_key(p, time_ms)),
                StepPlan::Native(step) => pool_map(&plan.pool, parts, |p| Part {
                    partition: p.partition,
                    records: (step.f)(&p.records),
                    lineage: p.lineage,
                }),
            };
        }
        pool_map(&plan.pool, parts.iter().collect(), |p: &Part| {
            write_sinks(plan, &batch, p)
        })
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    }
    plan.dead_letters
        .flush(&plan.stream, batch.id)
        .map_err(|source| JobError::Sink {
            batch: batch.id,
            source,
        })?;
    let closed = Closed {
        records_in: batch.records_in.load(Ordering::Relaxed),
        records_out: batch.records_out.load(Ordering::Relaxed),
        dead_letters: plan.dead_letters.total() - batch.dead_before,
        markers: std::mem::take(&mut *batch.markers.lock().unwrap_or_else(|e| e.into_inner())),
    };
    Ok((closed, batch.kept_bytes.load(Ordering::Relaxed)))
}

/// Commits batch `id` in every sink, in order, each retried on a transient failure.
pub fn commit(plan: &Plan, id: u64) -> Result<(), JobError> {
    for sink in &plan.sinks {
        with_retry(|| sink.commit(&plan.stream, id))
            .map_err(|source| JobError::Sink { batch: id, source })?;
    }
    Ok(())
}

/// Tells every sink to drop what it holds of `batch`, which will not commit as it is (the run
/// stopped with the batch open, or it is recomputed after a rollback).
pub fn abort(plan: &Plan, batch: &OpenBatch) {
    for sink in &plan.sinks {
        sink.abort(batch.id);
    }
}

/// Joins kept blocks' outputs into one part per partition.
fn merge_parts(kept: Vec<Part>, partitions: u32) -> Vec<Part> {
    let mut out: Vec<(RecordBatch, Vec<(u32, u64)>)> =
        (0..partitions).map(|_| Default::default()).collect();
    for part in kept {
        if let Some((records, lineage)) = out.get_mut(part.partition as usize) {
            records.append(&part.records);
            lineage.extend((0..part.records.len()).map(|i| part.lineage.at(i)));
        }
    }
    into_parts(out)
}

/// Numbers gathered partitions' records and lineages as parts 0, 1, ...
pub(crate) fn into_parts(gathered: Vec<(RecordBatch, Vec<(u32, u64)>)>) -> Vec<Part> {
    gathered
        .into_iter()
        .enumerate()
        .map(|(p, (records, lineage))| Part {
            partition: p as u32,
            records,
            lineage: Lineage::Explicit(lineage),
        })
        .collect()
}

fn with_retry(mut f: impl FnMut() -> Result<(), SinkError>) -> Result<(), SinkError> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(e) if e.retryable() && attempt < 3 => {
                tracing::warn!(error = %e, attempt, "A sink call failed; retrying.");
                std::thread::sleep(Duration::from_millis(100 << attempt));
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// The most value bytes sent in one call. A partition's batch above it is sent in several
/// calls, in order, with the same batch id: a plugin's memory cap then bounds the call, not
/// the batch (at full speed a one-second batch can hold tens of megabytes per partition).
pub const MAX_CALL_BYTES: usize = 8 << 20;

/// Splits `0..batch.len()` into ranges of at most about `MAX_CALL_BYTES` of values.
fn call_ranges(batch: &RecordBatch) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut base = 0usize;
    for (i, &end) in batch.values.ends.iter().enumerate() {
        if end as usize - base > MAX_CALL_BYTES && i > start {
            ranges.push(start..i);
            start = i;
            base = if i == 0 {
                0
            } else {
                batch.values.ends[i - 1] as usize
            };
        }
    }
    ranges.push(start..batch.len());
    ranges
}

/// Runs a transform step (its stage and poison policy) on one partition's data, in calls of
/// bounded size.
fn transform_part(
    plan: &Plan,
    stage: (&TransformStage, PoisonPolicy),
    batch: &OpenBatch,
    step: usize,
    input: (u32, &RecordBatch, Lineage),
) -> Result<Part, JobError> {
    let (partition, records, lineage) = input;
    let caller = Caller {
        plan,
        stage: stage.0,
        policy: stage.1,
        batch,
        step,
        partition,
    };
    let ranges = call_ranges(records);
    if ranges.len() == 1 {
        return caller.isolating(records, lineage);
    }
    // Several calls: each gets a slice; outputs are appended, with lineage per slice.
    let mut out = RecordBatch::default();
    let mut out_lineage = Vec::new();
    for range in ranges {
        let slice = records.slice(range.clone());
        let slice_lineage = Lineage::Explicit(range.clone().map(|i| lineage.at(i)).collect());
        let done = caller.isolating(&slice, slice_lineage)?;
        out.append(&done.records);
        out_lineage.extend((0..done.records.len()).map(|i| done.lineage.at(i)));
    }
    Ok(Part {
        partition,
        records: out,
        lineage: Lineage::Explicit(out_lineage),
    })
}

/// A transform step's calls on one partition's data within a batch.
struct Caller<'a> {
    plan: &'a Plan,
    stage: &'a TransformStage,
    policy: PoisonPolicy,
    batch: &'a OpenBatch,
    step: usize,
    partition: u32,
}

impl Caller<'_> {
    /// One call on `records` (the next part of the partition), its poison records isolated as
    /// the step's policy says.
    fn isolating(&self, records: &RecordBatch, lineage: Lineage) -> Result<Part, JobError> {
        let part = self.batch.calls.next(self.step, self.partition);
        let ctx = self.batch.ctx(self.plan, self.partition, part);
        let call = |r: &RecordBatch, l: Lineage, limits: &Limits| self.call(&ctx, r, l, limits);
        let dead_letter = |r: &RecordBatch, index: usize, at: (u32, u64), e: &PluginError| {
            let reason = format!("poison: {}", e.failure);
            self.dead_letter(&ctx, (r, index), at, &reason, poison_kind(&e.failure));
        };
        let iso = Isolation {
            policy: self.policy,
            found: &self.batch.poisoned[self.step],
            batch: ctx.batch_id,
            partition: self.partition,
            limits: self.stage.plugin().info().limits,
            cost: self.stage.cost(),
            call: &call,
            dead_letter: &dead_letter,
        };
        isolate::call(&iso, records, lineage)
    }

    /// Dead-letters `record` (a batch and an index in it), from source position `at`.
    fn dead_letter(
        &self,
        ctx: &CallContext,
        record: (&RecordBatch, usize),
        at: (u32, u64),
        reason: &str,
        failure: Option<&str>,
    ) {
        let info = self.stage.plugin().info();
        self.plan.dead_letters.add(
            &self.plan.stream,
            ctx.batch_id,
            DeadLetter {
                partition: at.0,
                offset: at.1,
                step: self.step,
                plugin: &info.name,
                digest: &info.digest,
                reason,
                failure,
                batch: record.0,
                index: record.1,
            },
        );
    }

    /// One call on `records` under `limits`, with the retry policy of the module's doc: a
    /// retryable failure retried, bad records dead-lettered and the call made again without
    /// them.
    fn call(
        &self,
        ctx: &CallContext,
        records: &RecordBatch,
        lineage: Lineage,
        limits: &Limits,
    ) -> Result<Part, JobError> {
        let isolating = self.policy.on_poison == OnPoison::DeadLetter;
        let mut input = std::borrow::Cow::Borrowed(records);
        let mut lineage = lineage;
        let mut retries = 0;
        let mut bad_rounds = 0;
        loop {
            match self.stage.transform_within(ctx, &input, limits) {
                Ok(out) => {
                    for (index, reason) in &out.rejected {
                        let at = lineage.at(*index as usize);
                        self.dead_letter(ctx, (&input, *index as usize), at, reason, None);
                    }
                    return Ok(Part {
                        partition: self.partition,
                        lineage: lineage.follow(out.origins),
                        records: out.batch,
                    });
                }
                Err(e) => match &e.failure {
                    Failure::BadRecord { index, reason }
                        if (*index as usize) < input.len() && bad_rounds < 1000 =>
                    {
                        let index = *index as usize;
                        self.dead_letter(ctx, (&input, index), lineage.at(index), reason, None);
                        let keep: Vec<u32> = (0..input.len() as u32)
                            .filter(|&i| i as usize != index)
                            .collect();
                        input = std::borrow::Cow::Owned(input.gather(&keep));
                        // Resolved now: bad records one by one would nest a lineage per round.
                        lineage = Lineage::Explicit(
                            keep.iter().map(|&i| lineage.at(i as usize)).collect(),
                        );
                        bad_rounds += 1;
                    }
                    // Isolation calls again in halves: a retry of the whole would only wait.
                    f if isolating && poison_kind(f).is_some() => {
                        return Err(JobError::Plugin {
                            batch: ctx.batch_id,
                            source: e,
                        });
                    }
                    f if f.retryable() && retries < 3 => {
                        tracing::warn!(error = %e, retry = retries + 1, "A plugin call failed; retrying on a fresh instance.");
                        std::thread::sleep(Duration::from_millis(100 << retries));
                        retries += 1;
                    }
                    _ => {
                        return Err(JobError::Plugin {
                            batch: ctx.batch_id,
                            source: e,
                        });
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(pairs: &[(&str, &str)]) -> RecordBatch {
        let mut b = RecordBatch::default();
        for (k, v) in pairs {
            b.push(Some(k.as_bytes()), v.as_bytes(), Some(0));
        }
        b
    }

    #[test]
    fn repartition_sends_equal_keys_to_one_partition_and_keeps_lineage() {
        let parts = vec![
            Part {
                partition: 0,
                records: keyed(&[("a", "1"), ("b", "2")]),
                lineage: Lineage::Range {
                    partition: 0,
                    start: 10,
                },
            },
            Part {
                partition: 1,
                records: keyed(&[("a", "3")]),
                lineage: Lineage::Range {
                    partition: 1,
                    start: 0,
                },
            },
        ];
        let out = repartition(parts, 3);
        let with_a: Vec<_> = out
            .iter()
            .filter(|p| (0..p.records.len()).any(|i| p.records.key(i) == Some(b"a")))
            .collect();
        assert_eq!(with_a.len(), 1);
        let p = with_a[0];
        let origins: Vec<_> = (0..p.records.len())
            .filter(|&i| p.records.key(i) == Some(b"a"))
            .map(|i| p.lineage.at(i))
            .collect();
        assert_eq!(origins, [(0, 10), (1, 0)]);
        assert_eq!(out.iter().map(|p| p.records.len()).sum::<usize>(), 3);
    }

    #[test]
    fn count_by_key_counts_each_key_once() {
        let part = Part {
            partition: 0,
            records: keyed(&[("x", ""), ("y", ""), ("x", "")]),
            lineage: Lineage::Range {
                partition: 0,
                start: 0,
            },
        };
        let out = count_by_key(part, 5);
        assert_eq!(out.records.len(), 2);
        assert_eq!(out.records.key(0), Some(&b"x"[..]));
        assert_eq!(out.records.value(0), b"2");
        assert_eq!(out.records.value(1), b"1");
    }

    #[test]
    fn a_big_batch_is_split_into_calls_of_bounded_size() {
        let value = vec![b'x'; 1 << 20];
        let mut b = RecordBatch::default();
        for _ in 0..20 {
            b.push(None, &value, Some(0));
        }
        let ranges = call_ranges(&b);
        assert!(ranges.len() >= 2, "{ranges:?}");
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, 20);
        for r in &ranges {
            let bytes: usize = r.clone().map(|i| b.value(i).len()).sum();
            assert!(bytes <= MAX_CALL_BYTES + (1 << 20), "{bytes}");
        }
        let slice = b.slice(ranges[1].clone());
        assert_eq!(slice.len(), ranges[1].len());
        slice.validate().unwrap();
    }

    #[test]
    fn the_pool_keeps_the_order_of_results() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let out = pool_map(&pool, (0..100).collect(), |i: i32| i * 2);
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    }
}
