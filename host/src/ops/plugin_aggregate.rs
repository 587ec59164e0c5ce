//! `reduce-by-key-and-window` with an aggregate plugin (`aggregate-plugin`): the window of
//! [`super::window`], with accumulators the plugin defines (see
//! [`crate::plugin::aggregator`]).
//!
//! As each block of a batch comes, the plugin's `add` runs on its records (a map-side combine
//! in the guest: one accumulator per key comes back) and `merge` folds them into the batch's
//! accumulators ([`PluginWindow::combine`]); after a `repartition-by-key` the same happens at
//! the close, per partition ([`PluginWindow::apply`]). The batch's accumulators are its
//! contribution,
//! kept per batch and written with its checkpoint entry as one record per key (the key, and the
//! accumulator's bytes). At each close that ends a slide the window's batches are merged (or,
//! with `inverse`, the running accumulators updated: the new batch merged, the expired one
//! taken out with `retract`) and `finish` gives each key's output value.
//!
//! A failed call leaves the window as it was, but for the running accumulators, which are
//! rebuilt from the batches at the next close; so are they after a restart, which restores
//! only the batches' contributions.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use super::aggregate::Fast;
use crate::batch::RecordBatch;
use crate::config::window::WindowSpec;
use crate::plugin::aggregator::{Accs, AggregatorStage};
use crate::plugin::{CallContext, CallResult};

/// The plugin side of a `reduce-by-key-and-window` step with `aggregate-plugin`.
#[derive(Debug)]
pub struct PluginWindow {
    /// The aggregate plugin, with its parameters.
    pub stage: Arc<AggregatorStage>,
    inverse: bool,
    spec: WindowSpec,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Each batch's accumulators, for the batches of the current window.
    batches: BTreeMap<u64, Accs>,
    /// With `inverse`: every batch in `batches` merged; `None` until rebuilt (after a restart
    /// or a failed call).
    running: Option<Accs>,
}

/// What a batch did to the window.
#[derive(Debug, Default)]
pub struct PluginApplied {
    /// The window's keys and output values, in key order (empty when this batch does not end
    /// a slide).
    pub out: Vec<(Box<[u8]>, Vec<u8>)>,
    /// The batch's contribution as records: the key and the accumulator's bytes.
    pub contribution: RecordBatch,
    /// Records the plugin rejected: the input (by position in `inputs`), the index, the reason.
    pub rejected: Vec<(usize, u32, String)>,
}

impl PluginWindow {
    /// The plugin side of a window of `spec`; `inverse` needs a plugin that can retract
    /// (checked when the plan is built).
    pub fn new(stage: Arc<AggregatorStage>, spec: WindowSpec, inverse: bool) -> PluginWindow {
        PluginWindow {
            stage,
            inverse,
            spec,
            state: Mutex::default(),
        }
    }

    /// The first batch of the window that batch `id` ends.
    fn first(&self, id: u64) -> u64 {
        (id + 1).saturating_sub(u64::from(self.spec.length))
    }

    /// Runs batch `ctx.batch_id`, whose records are `inputs` (per partition), through the
    /// window; `emits`: this batch ends a slide, so the window is finished and output.
    pub fn apply(
        &self,
        ctx: &CallContext,
        inputs: &[(u32, &RecordBatch)],
        emits: bool,
    ) -> CallResult<PluginApplied> {
        let mut rejected = Vec::new();
        let accs = Mutex::new(Accs::new());
        for (n, (partition, input)) in inputs.iter().enumerate() {
            let ctx = CallContext {
                partition: *partition,
                ..ctx.clone()
            };
            let bad = self.combine(&ctx, input, &accs)?;
            rejected.extend(bad.into_iter().map(|(i, r)| (n, i, r)));
        }
        let accs = accs.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut applied = self.close(ctx.batch_id, accs, emits)?;
        applied.rejected = rejected;
        Ok(applied)
    }

    /// The map-side combine: adds one block's records (`input`, of partition and part
    /// `ctx`) to the batch's accumulators `into` (the plugin's `add`, then its `merge` under
    /// the lock). Returns the records the plugin rejected, by index, with its reason.
    pub fn combine(
        &self,
        ctx: &CallContext,
        input: &RecordBatch,
        into: &Mutex<Accs>,
    ) -> CallResult<Vec<(u32, String)>> {
        if input.is_empty() {
            return Ok(Vec::new());
        }
        let added = self.stage.add(ctx, input)?;
        let mut into = into.lock().unwrap_or_else(|e| e.into_inner());
        self.stage.merge(&mut into, added.accs, ctx.batch_id)?;
        Ok(added.rejected)
    }

    /// Closes batch `id` with its accumulators `accs` (every block combined): they become its
    /// contribution, and with `emits` (the batch ends a slide) the window is finished.
    pub fn close(&self, id: u64, accs: Accs, emits: bool) -> CallResult<PluginApplied> {
        let mut applied = PluginApplied {
            contribution: contribution(&accs),
            ..PluginApplied::default()
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.put(&mut state, id, accs);
        if result.is_err() {
            state.running = None;
        }
        result?;
        if emits {
            let window = self.window(&mut state, id)?;
            let values = self.stage.finish(&window, id)?;
            applied.out = window
                .into_keys()
                .enumerate()
                .map(|(i, k)| (k, values.get(i).to_vec()))
                .collect();
        }
        Ok(applied)
    }

    /// Makes `accs` batch `id`'s contribution (replacing an earlier one), drops the batches
    /// that left the window, and keeps the running accumulators up to date.
    fn put(&self, state: &mut State, id: u64, accs: Accs) -> CallResult<()> {
        let old = state.batches.insert(id, accs.clone());
        let first = self.first(id);
        let expired: Vec<u64> = state.batches.range(..first).map(|(b, _)| *b).collect();
        let mut gone: Vec<Accs> = old.into_iter().collect();
        for b in expired {
            gone.extend(state.batches.remove(&b));
        }
        if !self.inverse {
            return Ok(());
        }
        if let Some(running) = state.running.as_mut() {
            for g in &gone {
                self.stage.retract(running, g, id)?;
            }
            self.stage.merge(running, accs, id)?;
        }
        Ok(())
    }

    /// The window's accumulators as of batch `id`: the running ones with `inverse` (rebuilt
    /// when missing), else every batch's merged.
    fn window(&self, state: &mut State, id: u64) -> CallResult<Accs> {
        if self.inverse
            && let Some(running) = &state.running
        {
            return Ok(running.clone());
        }
        let mut merged = Accs::new();
        for accs in state.batches.values() {
            self.stage.merge(&mut merged, accs.clone(), id)?;
        }
        if self.inverse {
            state.running = Some(merged.clone());
        }
        Ok(merged)
    }

    /// Puts back what batch `id` contributed (read from its checkpoint), at a restart.
    pub fn restore(&self, id: u64, accs: Accs) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.batches.insert(id, accs);
        state.running = None;
    }

    /// How many keys the window's batches hold.
    pub fn size(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.batches.values().map(|a| a.len()).sum()
    }
}

/// One record per key: the key and its accumulator.
pub fn contribution(accs: &Accs) -> RecordBatch {
    let bytes = accs.iter().map(|(k, a)| k.len() + a.len()).sum();
    let mut out = RecordBatch::with_capacity(accs.len(), bytes);
    for (k, a) in accs {
        out.push(Some(k), a, None);
    }
    out
}

/// The accumulators a contribution (read back from a checkpoint) holds.
pub fn accs_of(records: &RecordBatch) -> Accs {
    (0..records.len())
        .map(|i| {
            (
                records.key(i).unwrap_or_default().into(),
                records.value(i).to_vec(),
            )
        })
        .collect()
}

/// The window's output as records: one per key with its value, placed by a hash of the key
/// among `n` partitions (as the built-in aggregates place them), in key order.
pub fn by_partition(out: &[(Box<[u8]>, Vec<u8>)], time_ms: i64, n: u32) -> Vec<RecordBatch> {
    let n = n.max(1);
    let mut parts: Vec<RecordBatch> = (0..n).map(|_| RecordBatch::default()).collect();
    for (key, value) in out {
        let target = (Fast::default().hash_one(&key[..]) % u64::from(n)) as usize;
        parts[target].push(Some(key), value, Some(time_ms));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contribution_reads_back_as_the_same_accumulators() {
        let mut accs = Accs::new();
        accs.insert(b"a"[..].into(), vec![1, 2, 3]);
        accs.insert(b""[..].into(), vec![0]);
        assert_eq!(accs_of(&contribution(&accs)), accs);
    }

    #[test]
    fn output_lands_in_the_partition_the_built_in_aggregates_would_choose() {
        let out = vec![
            (b"a"[..].into(), b"1".to_vec()),
            (b"b"[..].into(), b"2".to_vec()),
            (b"c"[..].into(), b"3".to_vec()),
        ];
        let parts = by_partition(&out, 7, 4);
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 3);
        for p in &parts {
            for i in 0..p.len() {
                let key = p.key(i).unwrap();
                let want = (Fast::default().hash_one(key) % 4) as usize;
                assert!(std::ptr::eq(p, &parts[want]));
                assert_eq!(p.timestamp(i), Some(7));
            }
        }
    }
}
