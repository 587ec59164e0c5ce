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

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::call::{call_ranges, shadow_step, shadowed, transform_part};
use super::combine::{
    combine_counts, count_by_key, counts_part, dead_letter_bad_counts, repartition,
};
pub use super::open::{Combine, OpenBatch, Shape};
use super::open::{Counts, Fast};
pub use super::part::{JobError, Lineage, Part};
use super::part::{into_parts, output_parts};
use super::plugin_window::{
    plugin_combine_block, plugin_window, plugin_window_at, plugin_window_close,
};
use crate::batch::RecordBatch;
use crate::block::{Block, BlockManager};
use crate::plan::{Plan, StepPlan};
use crate::sink::dead_letter::Unwritten;
use crate::sink::{Sink, SinkError};

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
            let (bytes, partition) = (block.bytes, block.id.partition);
            let data = block.records.byte_size() as u64;
            let started = std::time::Instant::now();
            run_block(plan, shape, batch, block, manager)?;
            manager.pace().processed(partition, data, started.elapsed());
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
            StepPlan::Lookup(lookup) => lookup_part(batch, i, lookup, (partition, input, lineage)),
            StepPlan::RepartitionByKey(_)
            | StepPlan::CountByKey { .. }
            | StepPlan::Window(_)
            | StepPlan::UpdateState(_)
            | StepPlan::EventWindow(_) => {
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
            Combine::Count {
                partitions,
                sum_values,
                ..
            } => {
                let bad = combine_counts(&part, (partitions, sum_values), &batch.counts);
                dead_letter_bad_counts(plan, batch, shape.narrow, &part, &bad);
                Ok(())
            }
            Combine::Aggregate { .. } if plugin_window_at(batch, shape.narrow).is_some() => {
                plugin_combine_block(plan, batch, shape.narrow, &part)
            }
            Combine::Aggregate { .. } => {
                combine_block(plan, batch, shape.narrow, &part);
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

/// Step `i`, a lookup, on one partition's records, with the table version `batch` pinned:
/// output record `j` comes from input record `origins[j]`, so lineage follows.
fn lookup_part(
    batch: &OpenBatch,
    i: usize,
    lookup: &crate::lookup::Lookup,
    (partition, input, lineage): (u32, &RecordBatch, Lineage),
) -> Part {
    let pinned;
    let table = match batch.tables.get(i) {
        Some(Some(table)) => table,
        _ => {
            pinned = lookup.table();
            &pinned
        }
    };
    let (records, origins) = lookup.join(table, input);
    Part {
        partition,
        records,
        lineage: lineage.follow(origins),
    }
}

/// Records the send stamps (epoch µs) of the values that start with `prefix`.
fn find_markers(records: &RecordBatch, prefix: &[u8], out: &Mutex<Vec<i64>>) {
    let mut found = Vec::new();
    records.values.for_each_starting_with(prefix, |i| {
        let rest = &records.value(i)[prefix.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if let Some(us) = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            found.push(us);
        }
    });
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
    /// What the batch contributed to each stateful step, to write with its checkpoint entry
    /// ([`crate::state`]).
    pub state: Vec<crate::state::Write>,
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
            let mut most = 0;
            let parts = batch
                .counts
                .iter()
                .enumerate()
                .map(|(t, m)| {
                    let counts = std::mem::replace(
                        &mut *m.lock().unwrap_or_else(|e| e.into_inner()),
                        Counts::with_hasher(Fast::default()),
                    );
                    most = most.max(counts.len());
                    counts_part(t as u32, counts, time_ms)
                })
                .collect();
            plan.count_keys_hint.store(most, Ordering::Relaxed);
            Some((parts, rest))
        }
        Combine::Collect { from } => {
            let kept = std::mem::take(&mut *batch.kept.lock().unwrap_or_else(|e| e.into_inner()));
            Some((merge_parts(kept, plan.partitions), from))
        }
        Combine::Aggregate { .. } => None,
    };
    let mut state = Vec::new();
    let parts_and_rest = match shape.combine {
        Combine::Aggregate { rest } if plugin_window_at(&batch, shape.narrow).is_some() => {
            let (out, write) = plugin_window_close(plan, &batch, shape.narrow)?;
            state.push(write);
            Some((out, rest))
        }
        Combine::Aggregate { rest } => {
            let combined =
                std::mem::take(&mut *batch.combined.lock().unwrap_or_else(|e| e.into_inner()));
            let (out, writes) = apply_combined(plan, &batch, shape.narrow, combined)?;
            state.extend(writes);
            Some((out, rest))
        }
        _ => parts_and_rest,
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
                StepPlan::CountByKey { sum_values } => pool_map(&plan.pool, parts, |p| {
                    let (out, bad) = count_by_key(&p, *sum_values, time_ms);
                    dead_letter_bad_counts(plan, &batch, i, &p, &bad);
                    out
                }),
                StepPlan::Window(op) if op.plugin().is_some() => {
                    let (out, write) = plugin_window(plan, &batch, op, &parts)?;
                    state.push(write);
                    out
                }
                StepPlan::Window(op) => {
                    let inputs: Vec<&RecordBatch> = parts.iter().map(|p| &p.records).collect();
                    let applied = op.apply(batch.id, time_ms, &inputs, plan.partitions);
                    not_numbers(
                        plan,
                        &batch,
                        (op.step, op.kind.name()),
                        &parts,
                        &applied.not_numbers,
                    );
                    state.push(crate::state::Write::changes(op.step, applied.contribution));
                    output_parts(applied.out)
                }
                StepPlan::UpdateState(op) => {
                    let inputs: Vec<&RecordBatch> = parts.iter().map(|p| &p.records).collect();
                    let applied = op
                        .apply(batch.id, time_ms, &inputs, plan.partitions)
                        .map_err(|source| JobError::State {
                            batch: batch.id,
                            step: op.step,
                            source,
                        })?;
                    let name = (op.step, "update-state-by-key");
                    not_numbers(plan, &batch, name, &parts, &applied.not_numbers);
                    state.push(crate::state::Write::changes(op.step, applied.contribution));
                    if let Some(whole) = applied.whole {
                        state.push(crate::state::Write::whole(op.step, whole));
                    }
                    output_parts(applied.out)
                }
                StepPlan::EventWindow(op) => {
                    let clock = op.clock(batch.id);
                    let mut partial = crate::ops::aggregate::Partial::default();
                    for part in &parts {
                        let mut local = crate::ops::aggregate::Partial::default();
                        let rejected =
                            op.combine(&clock, part.partition, &part.records, &mut local);
                        event_rejects(plan, &batch, op.step, part, rejected);
                        op.merge(&mut partial, local);
                    }
                    let (out, writes) = event_window_close(plan, &batch, op, partial);
                    state.extend(writes);
                    out
                }
                StepPlan::Lookup(lookup) => pool_map(&plan.pool, parts, |p| {
                    lookup_part(&batch, i, lookup, (p.partition, &p.records, p.lineage))
                }),
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
    // Last, once nothing else can fail: the plugin steps' keyed state of the batch is
    // committed (only a spill file that cannot be read or written fails it).
    state.extend(super::keyed::close(plan, &batch)?);
    let closed = Closed {
        records_in: batch.records_in.load(Ordering::Relaxed),
        records_out: batch.records_out.load(Ordering::Relaxed),
        dead_letters: plan.dead_letters.total() - batch.dead_before,
        markers: std::mem::take(&mut *batch.markers.lock().unwrap_or_else(|e| e.into_inner())),
        state,
    };
    Ok((closed, batch.kept_bytes.load(Ordering::Relaxed)))
}

/// Sends the records a built-in step's numeric aggregate could not read (by part and index)
/// to the dead letters, with their source position.
fn not_numbers(
    plan: &Plan,
    batch: &OpenBatch,
    step: (usize, &str),
    parts: &[Part],
    which: &[(usize, usize)],
) {
    for &(n, i) in which {
        let part = &parts[n];
        plan.dead_letters.add_from_builtin(
            &plan.stream,
            batch.id,
            step,
            part.lineage.at(i),
            "the value is not a number, which the step's aggregate needs",
            (&part.records, i),
        );
    }
}

/// [`Combine::Aggregate`]: combines a block's output into the batch's accumulators for the
/// stateful step `step` (locally first, then merged under the lock, so partitions combine in
/// parallel); a value its aggregate cannot read goes to the dead letters.
fn combine_block(plan: &Plan, batch: &OpenBatch, step: usize, part: &Part) {
    let mut local = crate::ops::aggregate::Partial::default();
    if let StepPlan::EventWindow(op) = &batch.steps[step] {
        let clock = op.clock(batch.id);
        let rejected = op.combine(&clock, part.partition, &part.records, &mut local);
        event_rejects(plan, batch, op.step, part, rejected);
        let mut combined = batch.combined.lock().unwrap_or_else(|e| e.into_inner());
        op.merge(&mut combined, local);
        return;
    }
    let (bad, aggregate, name) = match &batch.steps[step] {
        StepPlan::Window(op) => (
            op.combine(&part.records, &mut local),
            op.aggregate(),
            op.kind.name(),
        ),
        StepPlan::UpdateState(op) => (
            op.combine(&part.records, &mut local),
            Some(op.spec.aggregate),
            "update-state-by-key",
        ),
        _ => unreachable!("Shape::of combines only before a stateful step"),
    };
    let bad: Vec<(usize, usize)> = bad.into_iter().map(|i| (0, i)).collect();
    not_numbers(plan, batch, (step, name), std::slice::from_ref(part), &bad);
    let aggregate = aggregate.unwrap_or(crate::config::window::Aggregate::Count);
    let mut combined = batch.combined.lock().unwrap_or_else(|e| e.into_inner());
    if combined.is_empty() {
        *combined = local;
    } else {
        crate::ops::aggregate::merge(&mut combined, &local, aggregate);
    }
}

/// [`Combine::Aggregate`] at the close: runs the stateful step on the batch's accumulators;
/// its output, and what to write with the batch's checkpoint entry.
fn apply_combined(
    plan: &Plan,
    batch: &OpenBatch,
    step: usize,
    combined: crate::ops::aggregate::Partial,
) -> Result<(Vec<Part>, Vec<crate::state::Write>), JobError> {
    let (id, time_ms) = (batch.id, batch.time_ms);
    match &batch.steps[step] {
        StepPlan::Window(op) => {
            let applied = op.apply_combined(id, time_ms, combined, plan.partitions);
            let writes = vec![crate::state::Write::changes(op.step, applied.contribution)];
            Ok((output_parts(applied.out), writes))
        }
        StepPlan::UpdateState(op) => {
            let applied = op
                .apply_combined(id, time_ms, combined, plan.partitions)
                .map_err(|source| JobError::State {
                    batch: id,
                    step: op.step,
                    source,
                })?;
            let mut writes = vec![crate::state::Write::changes(op.step, applied.contribution)];
            if let Some(whole) = applied.whole {
                writes.push(crate::state::Write::whole(op.step, whole));
            }
            Ok((output_parts(applied.out), writes))
        }
        StepPlan::EventWindow(op) => Ok(event_window_close(plan, batch, op, combined)),
        _ => unreachable!("Shape::of combines only before a stateful step"),
    }
}

/// The records an `event-window` step rejected (late, no event time, not a number), to the
/// dead letters with the reason and their source position.
fn event_rejects(
    plan: &Plan,
    batch: &OpenBatch,
    step: usize,
    part: &Part,
    rejected: Vec<(usize, String)>,
) {
    for (i, reason) in rejected {
        plan.dead_letters.add_from_builtin(
            &plan.stream,
            batch.id,
            (step, "event-window"),
            part.lineage.at(i),
            &reason,
            (&part.records, i),
        );
    }
}

/// Closes an `event-window` step for `batch` with its combined accumulators: its output, and
/// what to write with the batch's checkpoint entry.
fn event_window_close(
    plan: &Plan,
    batch: &OpenBatch,
    op: &crate::ops::event_window::EventWindowOp,
    combined: crate::ops::aggregate::Partial,
) -> (Vec<Part>, Vec<crate::state::Write>) {
    let applied = op.apply_combined(batch.id, combined, plan.partitions);
    let mut writes = vec![crate::state::Write::changes(op.step, applied.contribution)];
    if let Some(whole) = applied.whole {
        writes.push(crate::state::Write::whole(op.step, whole));
    }
    (output_parts(applied.out), writes)
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

/// Calls a sink until it succeeds, a failure that a retry cannot help, or the fourth failure.
pub(crate) fn with_retry<T>(mut f: impl FnMut() -> Result<T, SinkError>) -> Result<T, SinkError> {
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
        let (out, bad) = count_by_key(&part, false, 5);
        assert!(bad.is_empty());
        assert_eq!(out.records.len(), 2);
        assert_eq!(out.records.key(0), Some(&b"x"[..]));
        assert_eq!(out.records.value(0), b"2");
        assert_eq!(out.records.value(1), b"1");
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
