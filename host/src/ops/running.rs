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

use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Mutex;

use super::aggregate::{Acc, Fast, Partial};
use crate::batch::RecordBatch;
use crate::config::window::{RunningSpec, StateOutput};
use crate::state::spill::{Codec, SpillError, SpillMap};

/// One key's state.
#[derive(Debug, Clone, PartialEq)]
struct Kept {
    acc: Acc,
    /// The batch time of its last update, ms.
    touched_ms: i64,
}

/// As in a contribution: the last update's batch time (8 bytes), then the accumulator.
impl Codec for Kept {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.touched_ms.to_le_bytes());
        self.acc.encode(out);
    }
    fn decode(bytes: &[u8]) -> Result<Kept, String> {
        let (ms, acc) = bytes.split_first_chunk::<8>().ok_or("cut short")?;
        Ok(Kept {
            acc: Acc::decode(acc)?,
            touched_ms: i64::from_le_bytes(*ms),
        })
    }
    fn heap_bytes(&self) -> usize {
        match &self.acc {
            // Each distinct value: its table slot and its key's allocation (a guess: 24).
            Acc::Distinct(m) => m.capacity() * (size_of::<(Box<[u8]>, u64)>() + 1) + m.len() * 24,
            _ => 0,
        }
    }
}

/// The keys and their state, in memory up to the step's `state-memory`, then on local disk.
type Keys = SpillMap<Kept>;

/// Keys a batch changed, each with its state before (`None`: it had none).
type Undo = Vec<(Box<[u8]>, Option<Kept>)>;

#[derive(Debug)]
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

/// How much of a step's state is where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSize {
    /// Keys in memory.
    pub in_memory: usize,
    /// Keys spilled to disk.
    pub on_disk: usize,
    /// Bytes the in-memory keys take (an estimate), at most the budget.
    pub memory_bytes: usize,
}

impl RunningOp {
    /// A step with no state yet, holding up to `memory` bytes of it in memory and spilling
    /// the rest into `spill_dir` (see [`crate::state::spill`]).
    pub fn new(step: usize, spec: RunningSpec, memory: u64, spill_dir: PathBuf) -> RunningOp {
        let name = format!("step {step} (update-state-by-key)");
        RunningOp {
            step,
            spec,
            state: Mutex::new(State {
                keys: SpillMap::new(name, memory, spill_dir),
                undo: None,
            }),
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

    /// How many keys are in memory and on disk.
    pub fn where_state_is(&self) -> StateSize {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        StateSize {
            in_memory: state.keys.memory_len(),
            on_disk: state.keys.disk_len(),
            memory_bytes: state.keys.bytes(),
        }
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
    ) -> Result<Applied, SpillError> {
        let mut batch = Partial::with_hasher(Fast::default());
        let mut not_numbers = Vec::new();
        for (n, input) in inputs.iter().enumerate() {
            let bad = self.combine(input, &mut batch);
            not_numbers.extend(bad.into_iter().map(|i| (n, i)));
        }
        let mut applied = self.apply_combined(id, time_ms, batch, partitions)?;
        applied.not_numbers = not_numbers;
        Ok(applied)
    }

    /// Runs batch `id` through the state from its accumulators already combined
    /// ([`RunningOp::combine`]). A spill file that cannot be written or read is an error (the
    /// state is then not whole: the pipeline stops, and a restart rebuilds it from the
    /// checkpoint).
    pub fn apply_combined(
        &self,
        id: u64,
        time_ms: i64,
        batch: Partial,
        partitions: u32,
    ) -> Result<Applied, SpillError> {
        let aggregate = self.spec.aggregate;
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        state.keys.advance();
        if let Some((last, undo)) = state.undo.take()
            && last == id
        {
            for (key, before) in undo {
                match before {
                    Some(k) => state.keys.insert(key, k)?,
                    None => drop(state.keys.remove(&key)?),
                }
            }
        }
        let mut undo: Undo = Vec::with_capacity(batch.len());
        let mut changed: Undo = Vec::with_capacity(batch.len());
        for (key, acc) in batch {
            let mut new = None;
            let before = state.keys.upsert(&key, |before| {
                let acc = match before {
                    Some(k) => {
                        let mut sum = k.acc.clone();
                        sum.merge(aggregate, &acc);
                        sum
                    }
                    None => acc,
                };
                let kept = Kept {
                    acc,
                    touched_ms: time_ms,
                };
                new = Some(kept.clone());
                kept
            })?;
            undo.push((key.clone(), before));
            changed.push((key, new));
        }
        if let Some(timeout) = self.spec.timeout {
            let oldest = time_ms - timeout.as_millis() as i64;
            let mut idle: Vec<Box<[u8]>> = Vec::new();
            state.keys.for_each(|key, k| {
                if k.touched_ms < oldest {
                    idle.push(key.into());
                }
            })?;
            for key in idle {
                let before = state.keys.remove(&key)?;
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
            StateOutput::All => self.output_all(&mut state.keys, time_ms, partitions)?,
        };
        let contribution = encode(changed.iter().map(|(k, v)| (&k[..], v.as_ref())));
        let whole = match self.writes_whole(id) {
            true => Some(whole(&mut state.keys)?),
            false => None,
        };
        state.undo = Some((id, undo));
        Ok(Applied {
            out,
            contribution,
            whole,
            not_numbers: Vec::new(),
        })
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

    /// Every key's state, for `output = "all"`.
    fn output_all(
        &self,
        keys: &mut Keys,
        time_ms: i64,
        partitions: u32,
    ) -> Result<Vec<RecordBatch>, SpillError> {
        if let Some(all) = keys.all_in_memory() {
            let mut all: Vec<(&[u8], &Kept)> = all.collect();
            all.sort_unstable_by(|a, b| a.0.cmp(b.0));
            return Ok(self.output(all.into_iter(), time_ms, partitions));
        }
        // Part of it is on disk: records as they come, then sorted by key per partition.
        let n = self.spec.partitions.unwrap_or(partitions).max(1);
        let mut out: Vec<RecordBatch> = (0..n).map(|_| RecordBatch::default()).collect();
        let mut value = Vec::with_capacity(24);
        keys.for_each(|key, kept| {
            let target = (Fast::default().hash_one(key) % u64::from(n)) as usize;
            value.clear();
            kept.acc.write(self.spec.aggregate, &mut value);
            out[target].push(Some(key), &value, Some(time_ms));
        })?;
        Ok(out.into_iter().map(sorted_by_key).collect())
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
/// time (8 bytes) and the encoded accumulator ([`Codec`] for [`Kept`]); empty for a removal.
fn encode<'a>(keys: impl Iterator<Item = (&'a [u8], Option<&'a Kept>)>) -> RecordBatch {
    let mut out = RecordBatch::default();
    let mut value = Vec::new();
    for (key, kept) in keys {
        value.clear();
        if let Some(k) = kept {
            k.encode(&mut value);
        }
        out.push(Some(key), &value, None);
    }
    out
}

/// The whole state as records, in key order.
fn whole(keys: &mut Keys) -> Result<RecordBatch, SpillError> {
    if let Some(all) = keys.all_in_memory() {
        let mut all: Vec<(&[u8], &Kept)> = all.collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        return Ok(encode(all.into_iter().map(|(k, v)| (k, Some(v)))));
    }
    let mut out = RecordBatch::default();
    let mut value = Vec::new();
    keys.for_each(|key, kept| {
        value.clear();
        kept.encode(&mut value);
        out.push(Some(key), &value, None);
    })?;
    Ok(sorted_by_key(out))
}

/// The records of `batch` in key order (keys are unique here, so the order is the same
/// whatever order they came in).
fn sorted_by_key(batch: RecordBatch) -> RecordBatch {
    let mut order: Vec<u32> = (0..batch.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| batch.key(a as usize).cmp(&batch.key(b as usize)));
    let mut out = RecordBatch::with_capacity(batch.len(), batch.byte_size());
    for i in order {
        let i = i as usize;
        out.push(batch.key(i), batch.value(i), batch.timestamp(i));
    }
    out
}

fn apply_records(keys: &mut Keys, records: &RecordBatch) -> Result<(), String> {
    for i in 0..records.len() {
        let key = records.key(i).unwrap_or_default();
        let value = records.value(i);
        if value.is_empty() {
            keys.remove(key).map_err(|e| e.to_string())?;
            continue;
        }
        let kept = Kept::decode(value).map_err(|e| format!("record {i}: {e}"))?;
        keys.insert(key.into(), kept).map_err(|e| e.to_string())?;
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

    /// A step whose state stays in memory.
    fn in_memory(spec: RunningSpec) -> RunningOp {
        RunningOp::new(0, spec, 1 << 30, PathBuf::from("/nonexistent"))
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
        let op = in_memory(spec(StateOutput::Updated, None));
        op.apply(0, 0, &[&keyed(&[("a", "1"), ("b", "2")])], 1)
            .unwrap();
        assert_eq!(
            rows(&op.apply(1, 0, &[&keyed(&[("a", "5")])], 1).unwrap().out),
            ["a=6"]
        );
        // Batch 1 again (a recompute after a rollback): its first run is undone.
        assert_eq!(
            rows(&op.apply(1, 0, &[&keyed(&[("a", "7")])], 1).unwrap().out),
            ["a=8"]
        );
        let all = in_memory(spec(StateOutput::All, None));
        all.apply(0, 0, &[&keyed(&[("a", "1"), ("b", "2")])], 1)
            .unwrap();
        assert_eq!(
            rows(&all.apply(1, 0, &[&keyed(&[("a", "5")])], 1).unwrap().out),
            ["a=6", "b=2"]
        );
    }

    #[test]
    fn an_idle_key_times_out() {
        let op = in_memory(spec(StateOutput::All, Some(Duration::from_millis(150))));
        op.apply(0, 0, &[&keyed(&[("a", "1"), ("b", "1")])], 1)
            .unwrap();
        op.apply(1, 100, &[&keyed(&[("a", "1")])], 1).unwrap();
        let third = op.apply(2, 200, &[&keyed(&[("a", "1")])], 1).unwrap();
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
        let op = in_memory(spec(StateOutput::All, None));
        let batches = [
            keyed(&[("a", "1"), ("b", "2")]),
            keyed(&[("a", "3")]),
            keyed(&[("c", "4")]),
            keyed(&[("b", "5")]),
        ];
        let mut saved = Vec::new();
        for (id, b) in batches.iter().enumerate() {
            let a = op.apply(id as u64, 0, &[b], 1).unwrap();
            saved.push((a.whole, a.contribution));
        }
        // Whole state at batch 2, then batch 3's changes.
        let back = in_memory(spec(StateOutput::All, None));
        back.restore_whole(saved[2].0.as_ref().unwrap()).unwrap();
        back.restore_changes(&saved[3].1).unwrap();
        let more = keyed(&[("a", "10")]);
        assert_eq!(
            rows(&op.apply(4, 0, &[&more], 1).unwrap().out),
            rows(&back.apply(4, 0, &[&more], 1).unwrap().out)
        );
    }

    #[test]
    fn a_state_spilled_to_disk_gives_what_one_in_memory_gives() {
        let tmp = tempfile::tempdir().unwrap();
        for output in [StateOutput::Updated, StateOutput::All] {
            let spec = spec(output, Some(Duration::from_millis(250)));
            let memory = in_memory(spec);
            let spilled = RunningOp::new(0, spec, 4 << 10, tmp.path().join("step-0"));
            let mut seed = 7u64;
            for id in 0..40u64 {
                let mut pairs = Vec::new();
                for _ in 0..300 {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    pairs.push((
                        format!("key-{}", (seed >> 33) % 2000),
                        format!("{}", seed >> 60),
                    ));
                }
                let pairs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let b = keyed(&pairs);
                let time = id as i64 * 100;
                let (a, s) = (
                    memory.apply(id, time, &[&b], 1).unwrap(),
                    spilled.apply(id, time, &[&b], 1).unwrap(),
                );
                assert_eq!(rows(&a.out), rows(&s.out), "batch {id}");
                assert_eq!(rows(&[a.contribution]), rows(&[s.contribution]));
                assert_eq!(a.whole.map(|w| rows(&[w])), s.whole.map(|w| rows(&[w])));
                if id % 7 == 3 {
                    // A rerun of the batch (after a rollback) with other records.
                    let again = keyed(&pairs[..100]);
                    let (a, s) = (
                        memory.apply(id, time, &[&again], 1).unwrap(),
                        spilled.apply(id, time, &[&again], 1).unwrap(),
                    );
                    assert_eq!(rows(&a.out), rows(&s.out), "rerun of batch {id}");
                }
            }
            let size = spilled.where_state_is();
            assert!(size.on_disk > 100, "{size:?}");
            assert_eq!(size.in_memory + size.on_disk, memory.size());
        }
    }
}
