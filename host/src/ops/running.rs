//! `update-state-by-key`: Spark Streaming's `updateStateByKey` / `mapWithState` with a built-in
//! aggregate: a running state per key, kept across batches, with an optional idle timeout.
//!
//! Each batch updates the keys it has records for and outputs them (or every key). What it
//! changed (each touched key's new state, or its removal after a timeout) is its
//! *contribution*, written with its checkpoint entry; every `snapshot-every` batches the whole
//! state is written too. A restart reads the newest whole state at or before the last
//! committed batch and applies the contributions after it, in order, so the state after a
//! crash is the state without one ([`crate::state`]).
//!
//! A batch that runs again in the same process (recomputed after a plugin rollback) first
//! undoes what its first run changed, so it counts once.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use super::aggregate::{Acc, Fast, Partial};
use crate::batch::RecordBatch;
use crate::config::window::{RunningSpec, StateOutput};

/// One key's state.
#[derive(Debug, Clone, PartialEq)]
struct Kept {
    acc: Acc,
    /// The batch time of its last update, ms.
    touched_ms: i64,
}

type Keys = HashMap<Box<[u8]>, Kept, Fast>;

/// Keys a batch changed, each with its state before (`None`: it had none).
type Undo = Vec<(Box<[u8]>, Option<Kept>)>;

#[derive(Debug, Default)]
struct State {
    keys: Keys,
    /// The last batch applied, and each key it changed with its state before.
    undo: Option<(u64, Undo)>,
}

/// One `update-state-by-key` step and its state.
#[derive(Debug)]
pub struct RunningOp {
    /// The step's index in the pipeline.
    pub step: usize,
    /// Its settings.
    pub spec: RunningSpec,
    state: Mutex<State>,
}

/// What a batch did to the state.
#[derive(Debug)]
pub struct Applied {
    /// The output, per output partition.
    pub out: Vec<RecordBatch>,
    /// The keys it changed: their new state, or an empty value for a key dropped.
    pub contribution: RecordBatch,
    /// The whole state, when this batch writes it.
    pub whole: Option<RecordBatch>,
    /// Records whose value is not a number, by input and index.
    pub not_numbers: Vec<(usize, usize)>,
}

impl RunningOp {
    /// A step with no state yet.
    pub fn new(step: usize, spec: RunningSpec) -> RunningOp {
        RunningOp {
            step,
            spec,
            state: Mutex::default(),
        }
    }

    /// Whether batch `id` writes the whole state.
    pub fn writes_whole(&self, id: u64) -> bool {
        id.is_multiple_of(u64::from(self.spec.snapshot_every))
    }

    /// How many keys it holds.
    pub fn size(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .len()
    }

    /// What a block's `input` adds to the batch's accumulators (`into`): the map-side
    /// combine, run as blocks come. Returns the records whose value is not a number.
    pub fn combine(&self, input: &RecordBatch, into: &mut Partial) -> Vec<usize> {
        super::aggregate::add_records(into, self.spec.aggregate, input, false)
    }

    /// Runs batch `id` (`inputs`, at batch time `time_ms`) through the state.
    pub fn apply(
        &self,
        id: u64,
        time_ms: i64,
        inputs: &[&RecordBatch],
        partitions: u32,
    ) -> Applied {
        let mut batch = Partial::with_hasher(Fast::default());
        let mut not_numbers = Vec::new();
        for (n, input) in inputs.iter().enumerate() {
            let bad = self.combine(input, &mut batch);
            not_numbers.extend(bad.into_iter().map(|i| (n, i)));
        }
        let mut applied = self.apply_combined(id, time_ms, batch, partitions);
        applied.not_numbers = not_numbers;
        applied
    }

    /// Runs batch `id` through the state from its accumulators already combined
    /// ([`RunningOp::combine`]).
    pub fn apply_combined(
        &self,
        id: u64,
        time_ms: i64,
        batch: Partial,
        partitions: u32,
    ) -> Applied {
        let aggregate = self.spec.aggregate;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((last, undo)) = state.undo.take()
            && last == id
        {
            for (key, before) in undo {
                match before {
                    Some(k) => state.keys.insert(key, k),
                    None => state.keys.remove(&key),
                };
            }
        }
        let not_numbers = Vec::new();
        let mut undo: Undo = Vec::with_capacity(batch.len());
        let mut changed: Undo = Vec::with_capacity(batch.len());
        for (key, acc) in batch {
            let before = state.keys.get(&key).cloned();
            let kept = match &before {
                Some(k) => {
                    let mut acc2 = k.acc.clone();
                    acc2.merge(aggregate, &acc);
                    Kept {
                        acc: acc2,
                        touched_ms: time_ms,
                    }
                }
                None => Kept {
                    acc,
                    touched_ms: time_ms,
                },
            };
            undo.push((key.clone(), before));
            state.keys.insert(key.clone(), kept.clone());
            changed.push((key, Some(kept)));
        }
        if let Some(timeout) = self.spec.timeout {
            let oldest = time_ms - timeout.as_millis() as i64;
            let idle: Vec<Box<[u8]>> = state
                .keys
                .iter()
                .filter(|(_, k)| k.touched_ms < oldest)
                .map(|(key, _)| key.clone())
                .collect();
            for key in idle {
                let before = state.keys.remove(&key);
                undo.push((key.clone(), before));
                changed.push((key, None));
            }
        }
        changed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let out = match self.spec.output {
            StateOutput::Updated => self.output(
                changed
                    .iter()
                    .filter_map(|(k, v)| v.as_ref().map(|v| (&k[..], v))),
                time_ms,
                partitions,
            ),
            StateOutput::All => {
                let mut all: Vec<(&[u8], &Kept)> =
                    state.keys.iter().map(|(k, v)| (&k[..], v)).collect();
                all.sort_unstable_by(|a, b| a.0.cmp(b.0));
                self.output(all.into_iter(), time_ms, partitions)
            }
        };
        let contribution = encode(changed.iter().map(|(k, v)| (&k[..], v.as_ref())));
        let whole = self.writes_whole(id).then(|| {
            let mut all: Vec<(&[u8], &Kept)> =
                state.keys.iter().map(|(k, v)| (&k[..], v)).collect();
            all.sort_unstable_by(|a, b| a.0.cmp(b.0));
            encode(all.into_iter().map(|(k, v)| (k, Some(v))))
        });
        state.undo = Some((id, undo));
        Applied {
            out,
            contribution,
            whole,
            not_numbers,
        }
    }

    /// Replaces the state with a whole state read back from a checkpoint.
    pub fn restore_whole(&self, records: &RecordBatch) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.keys.clear();
        state.undo = None;
        apply_records(&mut state.keys, records)
    }

    /// Applies a batch's contribution read back from a checkpoint.
    pub fn restore_changes(&self, records: &RecordBatch) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.undo = None;
        apply_records(&mut state.keys, records)
    }

    /// One record per key (its state in decimal), placed by a hash of the key, in key order.
    fn output<'a>(
        &self,
        keys: impl Iterator<Item = (&'a [u8], &'a Kept)>,
        time_ms: i64,
        partitions: u32,
    ) -> Vec<RecordBatch> {
        let n = self.spec.partitions.unwrap_or(partitions).max(1);
        let mut out: Vec<RecordBatch> = (0..n).map(|_| RecordBatch::default()).collect();
        let mut value = Vec::with_capacity(24);
        for (key, kept) in keys {
            let target = (Fast::default().hash_one(key) % u64::from(n)) as usize;
            value.clear();
            kept.acc.write(self.spec.aggregate, &mut value);
            out[target].push(Some(key), &value, Some(time_ms));
        }
        out
    }
}

/// Keys and their state (`None`: removed) as records: the value is the last update's batch
/// time (8 bytes) and the encoded accumulator; empty for a removal.
fn encode<'a>(keys: impl Iterator<Item = (&'a [u8], Option<&'a Kept>)>) -> RecordBatch {
    let mut out = RecordBatch::default();
    let mut value = Vec::new();
    for (key, kept) in keys {
        value.clear();
        if let Some(k) = kept {
            value.extend_from_slice(&k.touched_ms.to_le_bytes());
            k.acc.encode(&mut value);
        }
        out.push(Some(key), &value, None);
    }
    out
}

fn apply_records(keys: &mut Keys, records: &RecordBatch) -> Result<(), String> {
    for i in 0..records.len() {
        let key: Box<[u8]> = records.key(i).unwrap_or_default().into();
        let value = records.value(i);
        if value.is_empty() {
            keys.remove(&key);
            continue;
        }
        let (ms, acc) = value
            .split_first_chunk::<8>()
            .ok_or_else(|| format!("record {i}: cut short"))?;
        let acc = Acc::decode(acc).map_err(|e| format!("record {i}: {e}"))?;
        keys.insert(
            key,
            Kept {
                acc,
                touched_ms: i64::from_le_bytes(*ms),
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::window::Aggregate;

    fn spec(output: StateOutput, timeout: Option<Duration>) -> RunningSpec {
        RunningSpec {
            aggregate: Aggregate::Sum,
            timeout,
            output,
            snapshot_every: 2,
            partitions: Some(1),
        }
    }

    fn keyed(pairs: &[(&str, &str)]) -> RecordBatch {
        let mut b = RecordBatch::default();
        for (k, v) in pairs {
            b.push(Some(k.as_bytes()), v.as_bytes(), Some(0));
        }
        b
    }

    fn rows(out: &[RecordBatch]) -> Vec<String> {
        out.iter()
            .flat_map(|b| {
                (0..b.len()).map(move |i| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(b.key(i).unwrap_or_default()),
                        String::from_utf8_lossy(b.value(i))
                    )
                })
            })
            .collect()
    }

    #[test]
    fn running_totals_output_the_updated_keys_or_all_and_a_rerun_counts_once() {
        let op = RunningOp::new(0, spec(StateOutput::Updated, None));
        op.apply(0, 0, &[&keyed(&[("a", "1"), ("b", "2")])], 1);
        assert_eq!(
            rows(&op.apply(1, 0, &[&keyed(&[("a", "5")])], 1).out),
            ["a=6"]
        );
        // Batch 1 again (a recompute after a rollback): its first run is undone.
        assert_eq!(
            rows(&op.apply(1, 0, &[&keyed(&[("a", "7")])], 1).out),
            ["a=8"]
        );
        let all = RunningOp::new(0, spec(StateOutput::All, None));
        all.apply(0, 0, &[&keyed(&[("a", "1"), ("b", "2")])], 1);
        assert_eq!(
            rows(&all.apply(1, 0, &[&keyed(&[("a", "5")])], 1).out),
            ["a=6", "b=2"]
        );
    }

    #[test]
    fn an_idle_key_times_out() {
        let op = RunningOp::new(0, spec(StateOutput::All, Some(Duration::from_millis(150))));
        op.apply(0, 0, &[&keyed(&[("a", "1"), ("b", "1")])], 1);
        op.apply(1, 100, &[&keyed(&[("a", "1")])], 1);
        let third = op.apply(2, 200, &[&keyed(&[("a", "1")])], 1);
        assert_eq!(rows(&third.out), ["a=3"]);
        let c = &third.contribution;
        assert_eq!(
            (c.len(), c.key(0), c.key(1)),
            (2, Some(&b"a"[..]), Some(&b"b"[..]))
        );
        assert!(
            !c.value(0).is_empty() && c.value(1).is_empty(),
            "b's removal is recorded"
        );
    }

    #[test]
    fn whole_state_and_changes_read_back_give_the_same_state() {
        let op = RunningOp::new(0, spec(StateOutput::All, None));
        let batches = [
            keyed(&[("a", "1"), ("b", "2")]),
            keyed(&[("a", "3")]),
            keyed(&[("c", "4")]),
            keyed(&[("b", "5")]),
        ];
        let mut saved = Vec::new();
        for (id, b) in batches.iter().enumerate() {
            let a = op.apply(id as u64, 0, &[b], 1);
            saved.push((a.whole, a.contribution));
        }
        // Whole state at batch 2, then batch 3's changes.
        let back = RunningOp::new(0, spec(StateOutput::All, None));
        back.restore_whole(saved[2].0.as_ref().unwrap()).unwrap();
        back.restore_changes(&saved[3].1).unwrap();
        let more = keyed(&[("a", "10")]);
        assert_eq!(
            rows(&op.apply(4, 0, &[&more], 1).out),
            rows(&back.apply(4, 0, &[&more], 1).out)
        );
    }
}
