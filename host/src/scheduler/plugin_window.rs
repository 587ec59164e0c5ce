//! `reduce-by-key-and-window` with an aggregate plugin (world `aggregator`): the plugin's
//! `add` on each block as it comes (a map-side combine), and the window at the batch's close.
//! Records the plugin rejects go to the dead letters.

use super::open::OpenBatch;
use super::part::{JobError, Part, output_parts};
use crate::batch::RecordBatch;
use crate::plan::{Plan, StepPlan};

/// `reduce-by-key-and-window` with an aggregate plugin, at the close: its output parts and
/// the batch's contribution; records the plugin rejected go to the dead letters.
pub(super) fn plugin_window(
    plan: &Plan,
    batch: &OpenBatch,
    op: &crate::ops::window::WindowOp,
    parts: &[Part],
) -> Result<(Vec<Part>, crate::state::Write), JobError> {
    let Some(p) = op.plugin() else {
        unreachable!("called for a window with an aggregate plugin")
    };
    let ctx = crate::plugin::CallContext {
        stream: plan.stream.clone(),
        partition: 0,
        batch_id: batch.id,
        batch_time_ms: batch.time_ms,
        part: 0,
    };
    let inputs: Vec<(u32, &RecordBatch)> =
        parts.iter().map(|p| (p.partition, &p.records)).collect();
    let applied = p
        .apply(&ctx, &inputs, op.emits(batch.id))
        .map_err(|source| JobError::Plugin {
            batch: batch.id,
            source,
        })?;
    for (n, i, reason) in &applied.rejected {
        let part = &parts[*n];
        let at = *i as usize;
        plan.dead_letters.add_from_builtin(
            &plan.stream,
            batch.id,
            (op.step, op.kind.name()),
            part.lineage.at(at),
            reason,
            (&part.records, at),
        );
    }
    let n = op.out_partitions(plan.partitions);
    let out = crate::ops::plugin_aggregate::by_partition(&applied.out, batch.time_ms, n);
    let write = crate::state::Write::changes(op.step, applied.contribution);
    Ok((output_parts(out), write))
}

/// Step `step` when it is a window with an aggregate plugin.
pub(super) fn plugin_window_at(
    batch: &OpenBatch,
    step: usize,
) -> Option<&crate::ops::window::WindowOp> {
    match batch.steps.get(step) {
        Some(StepPlan::Window(op)) if op.plugin().is_some() => Some(op),
        _ => None,
    }
}

/// [`Combine::Aggregate`] before a window with an aggregate plugin: the plugin adds a block's
/// output to the batch's accumulators; records it rejects go to the dead letters.
pub(super) fn plugin_combine_block(
    plan: &Plan,
    batch: &OpenBatch,
    step: usize,
    part: &Part,
) -> Result<(), JobError> {
    let Some((op, p)) = plugin_window_at(batch, step).and_then(|op| Some((op, op.plugin()?)))
    else {
        unreachable!("called before a window with an aggregate plugin")
    };
    let ctx = batch.ctx(plan, part.partition, batch.calls.next(step, part.partition));
    let rejected = p
        .combine(&ctx, &part.records, &batch.plugin_accs)
        .map_err(|source| JobError::Plugin {
            batch: batch.id,
            source,
        })?;
    for (i, reason) in &rejected {
        let i = *i as usize;
        plan.dead_letters.add_from_builtin(
            &plan.stream,
            batch.id,
            (op.step, op.kind.name()),
            part.lineage.at(i),
            reason,
            (&part.records, i),
        );
    }
    Ok(())
}

/// [`Combine::Aggregate`] at the close of a batch before a window with an aggregate plugin:
/// its output parts and the batch's contribution.
pub(super) fn plugin_window_close(
    plan: &Plan,
    batch: &OpenBatch,
    step: usize,
) -> Result<(Vec<Part>, crate::state::Write), JobError> {
    let Some((op, p)) = plugin_window_at(batch, step).and_then(|op| Some((op, op.plugin()?)))
    else {
        unreachable!("called before a window with an aggregate plugin")
    };
    let accs = std::mem::take(&mut *batch.plugin_accs.lock().unwrap_or_else(|e| e.into_inner()));
    let applied = p
        .close(batch.id, accs, op.emits(batch.id))
        .map_err(|source| JobError::Plugin {
            batch: batch.id,
            source,
        })?;
    let n = op.out_partitions(plan.partitions);
    let out = crate::ops::plugin_aggregate::by_partition(&applied.out, batch.time_ms, n);
    let write = crate::state::Write::changes(op.step, applied.contribution);
    Ok((output_parts(out), write))
}
