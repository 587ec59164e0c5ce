//! Windows over batch time: Spark Streaming's `window`, `countByWindow` and
//! `reduceByKeyAndWindow` (with and without the inverse function).
//!
//! A window step keeps, per batch of the current window, what that batch contributed: its
//! records (`window`) or its accumulators by key (the others). At the close of every
//! `slide`-th batch (batch ids `slide-1`, `2*slide-1`, …: ids never repeat, also across
//! restarts) it outputs the window of the last `length` batches; at the other closes it
//! outputs nothing. With `inverse`, it also keeps the window's running accumulators, adding
//! the new batch and taking the expired one out, instead of merging `length` batches again.
//!
//! A batch that runs again (recomputed after a crash or a rollback) replaces what it
//! contributed before, so the window is the same as if it had run once. Each batch's
//! contribution, as records ([`WindowOp::apply`] returns it), is written with the batch's
//! checkpoint entry (see [`crate::state`]); a restart reads back those of the last `length`
//! batches ([`WindowOp::restore`]).

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use super::aggregate::{Acc, Fast, Partial, merge};
use crate::batch::RecordBatch;
use crate::config::window::{Aggregate, WindowKind, WindowSpec};

/// One window step and its state.
#[derive(Debug)]
pub struct WindowOp {
    /// The step's index in the pipeline (which state it owns).
    pub step: usize,
    /// What it outputs.
    pub kind: WindowKind,
    /// Its length and slide in batches.
    pub spec: WindowSpec,
    state: Mutex<State>,
    /// With `aggregate-plugin`: the plugin and its own state, which stands in for `state`.
    plugin: Option<super::plugin_aggregate::PluginWindow>,
}

/// What one batch contributed to the window.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// Its records (`window`).
    Records(Box<RecordBatch>),
    /// Its accumulators by key.
    Partial(Partial),
}

#[derive(Debug, Default)]
struct State {
    batches: BTreeMap<u64, Slot>,
    /// With `inverse`: the accumulators of every batch in `batches`, merged.
    running: Partial,
}

/// What a batch did to a window step.
#[derive(Debug)]
pub struct Applied {
    /// The output, per output partition (empty when this batch does not end a slide).
    pub out: Vec<RecordBatch>,
    /// The batch's contribution as records (see [`slot_records`]), to keep with its checkpoint
    /// entry.
    pub contribution: RecordBatch,
    /// Records whose value is not a number (for a numeric aggregate), by input and index:
    /// they are left out of the window.
    pub not_numbers: Vec<(usize, usize)>,
}

impl WindowOp {
    /// A window step with no state yet.
    pub fn new(step: usize, kind: WindowKind, spec: WindowSpec) -> WindowOp {
        WindowOp {
            step,
            kind,
            spec,
            state: Mutex::default(),
            plugin: None,
        }
    }

    /// A `reduce-by-key-and-window` step whose aggregate is the plugin `stage`
    /// (`aggregate-plugin`); `kind` gives `inverse` and `partitions`.
    pub fn with_plugin(
        step: usize,
        kind: WindowKind,
        spec: WindowSpec,
        stage: std::sync::Arc<crate::plugin::aggregator::AggregatorStage>,
    ) -> WindowOp {
        let inverse = matches!(kind, WindowKind::ReduceByKey { inverse: true, .. });
        WindowOp {
            plugin: Some(super::plugin_aggregate::PluginWindow::new(
                stage, spec, inverse,
            )),
            ..WindowOp::new(step, kind, spec)
        }
    }

    /// Its aggregate plugin's side, with `aggregate-plugin`.
    pub fn plugin(&self) -> Option<&super::plugin_aggregate::PluginWindow> {
        self.plugin.as_ref()
    }

    /// Its output partitions: `partitions`, else the source's `source`.
    pub fn out_partitions(&self, source: u32) -> u32 {
        match self.kind {
            WindowKind::ReduceByKey {
                partitions: Some(p),
                ..
            } => p,
            _ => source,
        }
        .max(1)
    }

    /// What it aggregates; `None` for `window`, which keeps records.
    pub fn aggregate(&self) -> Option<Aggregate> {
        match self.kind {
            WindowKind::Records => None,
            WindowKind::Count => Some(Aggregate::Count),
            WindowKind::ReduceByKey { aggregate, .. } => Some(aggregate),
        }
    }

    fn inverse(&self) -> bool {
        matches!(self.kind, WindowKind::ReduceByKey { inverse: true, .. })
    }

    /// Whether batch `id` ends a slide (its close outputs a window).
    pub fn emits(&self, id: u64) -> bool {
        (id + 1).is_multiple_of(u64::from(self.spec.slide))
    }

    /// Runs batch `id` (its records, in `inputs`) through the window; `partitions` is the
    /// source's partition count, `time_ms` the batch time (the output's timestamp).
    pub fn apply(
        &self,
        id: u64,
        time_ms: i64,
        inputs: &[&RecordBatch],
        partitions: u32,
    ) -> Applied {
        let mut not_numbers = Vec::new();
        let slot = match self.aggregate() {
            None => {
                let mut all = RecordBatch::default();
                for input in inputs {
                    all.append(input);
                }
                Slot::Records(Box::new(all))
            }
            Some(aggregate) => Slot::Partial(self.partial(aggregate, inputs, &mut not_numbers)),
        };
        self.apply_slot(id, time_ms, slot, partitions, not_numbers)
    }

    fn apply_slot(
        &self,
        id: u64,
        time_ms: i64,
        slot: Slot,
        partitions: u32,
        not_numbers: Vec<(usize, usize)>,
    ) -> Applied {
        let contribution = slot_records(&slot).into_owned();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.put(&mut state, id, slot);
        let out = if self.emits(id) {
            self.output(&state, time_ms, partitions)
        } else {
            Vec::new()
        };
        Applied {
            out,
            contribution,
            not_numbers,
        }
    }

    /// Puts back what batch `id` contributed (read from its checkpoint), at a restart.
    pub fn restore(&self, id: u64, slot: Slot) {
        if let (Some(p), Slot::Records(r)) = (&self.plugin, &slot) {
            return p.restore(id, super::plugin_aggregate::accs_of(r));
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.put(&mut state, id, slot);
    }

    /// The batches whose contributions a restart after batch `last` needs.
    pub fn needed(&self, last: u64) -> std::ops::RangeInclusive<u64> {
        (last + 1).saturating_sub(u64::from(self.spec.length))..=last
    }

    /// How many keys (or records, for `window`) the window holds now.
    pub fn size(&self) -> usize {
        if let Some(p) = &self.plugin {
            return p.size();
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .batches
            .values()
            .map(|s| match s {
                Slot::Records(r) => r.len(),
                Slot::Partial(p) => p.len(),
            })
            .sum()
    }

    /// What a block's `input` adds to the batch's accumulators (`into`), for a step that
    /// aggregates ([`WindowOp::aggregate`] is `Some`): the map-side combine, run as blocks
    /// come. Returns the records whose value is not a number.
    pub fn combine(&self, input: &RecordBatch, into: &mut Partial) -> Vec<usize> {
        let aggregate = self.aggregate().unwrap_or(Aggregate::Count);
        super::aggregate::add_records(into, aggregate, input, self.kind == WindowKind::Count)
    }

    /// Whether its batches combine block by block (every kind but `window`, which keeps
    /// records; an aggregate plugin's combine with the plugin, see
    /// [`super::plugin_aggregate`]).
    pub fn combines(&self) -> bool {
        self.aggregate().is_some()
    }

    /// Runs batch `id` through the window from its accumulators already combined
    /// ([`WindowOp::combine`]).
    pub fn apply_combined(
        &self,
        id: u64,
        time_ms: i64,
        partial: Partial,
        partitions: u32,
    ) -> Applied {
        self.apply_slot(id, time_ms, Slot::Partial(partial), partitions, Vec::new())
    }

    fn partial(
        &self,
        aggregate: Aggregate,
        inputs: &[&RecordBatch],
        not_numbers: &mut Vec<(usize, usize)>,
    ) -> Partial {
        let mut partial = Partial::with_hasher(Fast::default());
        let one_key = matches!(self.kind, WindowKind::Count);
        for (n, input) in inputs.iter().enumerate() {
            let bad = super::aggregate::add_records(&mut partial, aggregate, input, one_key);
            not_numbers.extend(bad.into_iter().map(|i| (n, i)));
        }
        partial
    }

    /// Makes `slot` batch `id`'s contribution, replacing an earlier one, and drops the
    /// batches that left the window.
    fn put(&self, state: &mut State, id: u64, slot: Slot) {
        let aggregate = self.aggregate().unwrap_or(Aggregate::Count);
        let inverse = self.inverse();
        if let (true, Slot::Partial(p)) = (inverse, &slot) {
            if let Some(Slot::Partial(old)) = state.batches.get(&id) {
                subtract(&mut state.running, old);
            }
            merge(&mut state.running, p, aggregate);
        }
        state.batches.insert(id, slot);
        let first = *self.needed(id).start();
        let expired: Vec<u64> = state.batches.range(..first).map(|(b, _)| *b).collect();
        for b in expired {
            if let (true, Some(Slot::Partial(old))) = (inverse, state.batches.get(&b)) {
                subtract(&mut state.running, old);
            }
            state.batches.remove(&b);
        }
    }

    /// The window now, per output partition, sorted by key.
    fn output(&self, state: &State, time_ms: i64, partitions: u32) -> Vec<RecordBatch> {
        let aggregate = match self.aggregate() {
            None => {
                let mut all = RecordBatch::default();
                for slot in state.batches.values() {
                    if let Slot::Records(r) = slot {
                        all.append(r);
                    }
                }
                return vec![all];
            }
            Some(a) => a,
        };
        let merged;
        let window = if self.inverse() {
            &state.running
        } else {
            let mut m = Partial::with_hasher(Fast::default());
            for slot in state.batches.values() {
                if let Slot::Partial(p) = slot {
                    merge(&mut m, p, aggregate);
                }
            }
            merged = m;
            &merged
        };
        match self.kind {
            WindowKind::Count => {
                let n = window.get(&[][..]).map_or(0, |acc| match acc {
                    Acc::Count(n) => *n,
                    _ => 0,
                });
                let mut out = RecordBatch::default();
                out.push(None, n.to_string().as_bytes(), Some(time_ms));
                vec![out]
            }
            _ => {
                let n = match self.kind {
                    WindowKind::ReduceByKey {
                        partitions: Some(p),
                        ..
                    } => p,
                    _ => partitions,
                }
                .max(1);
                by_partition(window, aggregate, time_ms, n)
            }
        }
    }
}

/// One record per key (its aggregate in decimal), placed by a hash of the key among `n`
/// partitions, sorted by key in each.
fn by_partition(window: &Partial, aggregate: Aggregate, time_ms: i64, n: u32) -> Vec<RecordBatch> {
    let mut keys: Vec<(&[u8], &Acc)> = window
        .iter()
        .filter(|(_, acc)| !acc.is_empty())
        .map(|(k, a)| (&k[..], a))
        .collect();
    keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<RecordBatch> = (0..n).map(|_| RecordBatch::default()).collect();
    let mut value = Vec::with_capacity(24);
    for (key, acc) in keys {
        let target = (Fast::default().hash_one(key) % u64::from(n)) as usize;
        value.clear();
        acc.write(aggregate, &mut value);
        out[target].push(Some(key), &value, Some(time_ms));
    }
    out
}

fn subtract(from: &mut Partial, what: &Partial) {
    for (key, acc) in what {
        if let Some(a) = from.get_mut(key) {
            a.subtract(acc);
            if a.is_empty() {
                from.remove(key);
            }
        }
    }
}

/// A slot as one record batch: the records themselves, or one record per key whose value is
/// the encoded accumulator; [`WindowOp::slot_of`] reads it back.
pub fn slot_records(slot: &Slot) -> std::borrow::Cow<'_, RecordBatch> {
    match slot {
        Slot::Records(r) => std::borrow::Cow::Borrowed(&**r),
        Slot::Partial(p) => {
            let mut keys: Vec<_> = p.iter().collect();
            keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let mut out = RecordBatch::with_capacity(keys.len(), keys.len() * 16);
            let mut value = Vec::new();
            for (key, acc) in keys {
                value.clear();
                acc.encode(&mut value);
                out.push(Some(key), &value, None);
            }
            std::borrow::Cow::Owned(out)
        }
    }
}

impl WindowOp {
    /// The slot `records` (read back from a checkpoint) stand for, or what is wrong (with an
    /// aggregate plugin, the records as they are: [`WindowOp::restore`] reads them).
    pub fn slot_of(&self, records: RecordBatch) -> Result<Slot, String> {
        if self.aggregate().is_none() || self.plugin.is_some() {
            return Ok(Slot::Records(Box::new(records)));
        }
        let mut p = Partial::with_hasher(Fast::default());
        for i in 0..records.len() {
            let acc = Acc::decode(records.value(i)).map_err(|e| format!("record {i}: {e}"))?;
            p.insert(records.key(i).unwrap_or_default().into(), acc);
        }
        Ok(Slot::Partial(p))
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

    fn rows(out: &[RecordBatch]) -> Vec<(String, String)> {
        let mut v: Vec<_> = out
            .iter()
            .flat_map(|b| {
                (0..b.len()).map(move |i| {
                    (
                        String::from_utf8_lossy(b.key(i).unwrap_or_default()).into_owned(),
                        String::from_utf8_lossy(b.value(i)).into_owned(),
                    )
                })
            })
            .collect();
        v.sort();
        v
    }

    fn reduce(aggregate: Aggregate, inverse: bool, length: u32, slide: u32) -> WindowOp {
        WindowOp::new(
            0,
            WindowKind::ReduceByKey {
                aggregate,
                inverse,
                partitions: None,
            },
            WindowSpec { length, slide },
        )
    }

    #[test]
    fn a_sliding_window_sums_the_last_batches_with_and_without_the_inverse() {
        let batches = [
            keyed(&[("a", "1"), ("b", "2")]),
            keyed(&[("a", "10")]),
            keyed(&[("b", "5"), ("c", "7")]),
            keyed(&[("a", "100")]),
        ];
        for inverse in [false, true] {
            let w = reduce(Aggregate::Sum, inverse, 3, 1);
            let outs: Vec<_> = batches
                .iter()
                .enumerate()
                .map(|(id, b)| rows(&w.apply(id as u64, 0, &[b], 2).out))
                .collect();
            let r = |v: &[(&str, &str)]| {
                v.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                outs[2],
                r(&[("a", "11"), ("b", "7"), ("c", "7")]),
                "inverse {inverse}"
            );
            // Batch 0 left the window: b's 2 is gone, a keeps 10 + 100.
            assert_eq!(
                outs[3],
                r(&[("a", "110"), ("b", "5"), ("c", "7")]),
                "inverse {inverse}"
            );
        }
    }

    #[test]
    fn only_every_slide_th_batch_outputs_and_a_rerun_batch_replaces_its_contribution() {
        let w = reduce(Aggregate::Count, true, 4, 2);
        let b = keyed(&[("k", "x")]);
        assert!(w.apply(0, 0, &[&b], 1).out.is_empty());
        assert_eq!(
            rows(&w.apply(1, 0, &[&b], 1).out),
            [("k".into(), "2".into())]
        );
        // Batch 1 again (a recompute) with two records: counted once, as the rerun says.
        let two = keyed(&[("k", "x"), ("k", "y")]);
        assert_eq!(
            rows(&w.apply(1, 0, &[&two], 1).out),
            [("k".into(), "3".into())]
        );
    }

    #[test]
    fn a_restored_window_goes_on_as_if_it_never_stopped() {
        let batches: Vec<_> = (0..6).map(|i| keyed(&[("k", &i.to_string())])).collect();
        let w = reduce(Aggregate::Sum, true, 3, 1);
        let mut saved = Vec::new();
        for (id, b) in batches.iter().enumerate().take(4) {
            saved.push(w.apply(id as u64, 0, &[b], 1).contribution);
        }
        let fresh = reduce(Aggregate::Sum, true, 3, 1);
        for id in fresh.needed(3) {
            let records = saved[id as usize].clone();
            fresh.restore(id, fresh.slot_of(records).unwrap());
        }
        for (id, b) in batches.iter().enumerate().skip(4) {
            let (a, f) = (
                w.apply(id as u64, 0, &[b], 1),
                fresh.apply(id as u64, 0, &[b], 1),
            );
            assert_eq!(rows(&a.out), rows(&f.out));
        }
    }

    #[test]
    fn count_by_window_and_window_output_the_whole_window() {
        let c = WindowOp::new(
            0,
            WindowKind::Count,
            WindowSpec {
                length: 2,
                slide: 1,
            },
        );
        let w = WindowOp::new(
            0,
            WindowKind::Records,
            WindowSpec {
                length: 2,
                slide: 1,
            },
        );
        let b0 = keyed(&[("a", "1"), ("b", "2")]);
        let b1 = keyed(&[("c", "3")]);
        let b2 = keyed(&[]);
        c.apply(0, 0, &[&b0], 1);
        assert_eq!(
            rows(&c.apply(1, 0, &[&b1], 1).out),
            [(String::new(), "3".into())]
        );
        assert_eq!(
            rows(&c.apply(2, 0, &[&b2], 1).out),
            [(String::new(), "1".into())]
        );
        w.apply(0, 0, &[&b0], 1);
        assert_eq!(w.apply(1, 0, &[&b1], 1).out[0].len(), 3);
        assert_eq!(
            rows(&w.apply(2, 0, &[&b2], 1).out),
            [("c".into(), "3".into())]
        );
    }

    #[test]
    fn values_that_are_not_numbers_are_named_and_left_out() {
        let w = reduce(Aggregate::Max, false, 1, 1);
        let b = keyed(&[("a", "3"), ("a", "x"), ("a", "7")]);
        let applied = w.apply(0, 0, &[&b], 1);
        assert_eq!(applied.not_numbers, [(0, 1)]);
        assert_eq!(rows(&applied.out), [("a".into(), "7".into())]);
    }
}
