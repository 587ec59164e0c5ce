//! State kept with the checkpoint log: what each batch contributed to a stateful step (a
//! window's records or accumulators by key), written beside the batch's checkpoint entry and
//! read back at a restart.
//!
//! Each batch's contribution to step `i` is one object, `state/step-<i>/<batch>.seg` under the
//! checkpoint location, written before the batch's entry (which names it in `state`), so an
//! entry never names what is not there. It is incremental by nature: a batch writes only what
//! it added (the keys it touched), never the whole state. A batch that runs again writes its
//! object again, with the same contents (its records are the same). The format is the
//! write-ahead log's segment (one block, checksummed, versioned): a damaged object is found and
//! named, never read as state.
//!
//! Objects of batches that left every window are deleted after a later batch commits.
//!
//! [`keyed`] holds the keyed state of plugin steps (the WIT `keyed-state` import), restored
//! and forgotten the way `update-state-by-key`'s is: whole states and the changes after them.

pub mod keyed;

pub mod spill;

use object_store::{PutPayload, path::Path as StorePath};

use crate::batch::RecordBatch;
use crate::plan::{Plan, StepPlan};
use crate::store::Location;
use crate::wal::format::{decode_segment, encode_block, encode_header};

/// The name, under the checkpoint location, of batch `batch`'s contribution to step `step`.
pub fn name(step: usize, batch: u64) -> String {
    format!("state/step-{step}/{batch:020}.seg")
}

/// The name of the whole state of step `step` after batch `batch`.
pub fn whole_name(step: usize, batch: u64) -> String {
    format!("state/step-{step}/{batch:020}.whole.seg")
}

fn path(at: &Location, step: usize, batch: u64) -> StorePath {
    at.child(&name(step, batch))
}

/// One object a batch writes for a stateful step.
#[derive(Debug, Clone)]
pub struct Write {
    step: usize,
    whole: bool,
    records: RecordBatch,
}

impl Write {
    /// What the batch changed (or, for a window, contributed).
    pub fn changes(step: usize, records: RecordBatch) -> Write {
        Write {
            step,
            whole: false,
            records,
        }
    }

    /// The whole state after the batch.
    pub fn whole(step: usize, records: RecordBatch) -> Write {
        Write {
            step,
            whole: true,
            records,
        }
    }

    fn name(&self, batch: u64) -> String {
        if self.whole {
            whole_name(self.step, batch)
        } else {
            name(self.step, batch)
        }
    }
}

/// `records` as one segment.
pub fn encode(records: &RecordBatch) -> Vec<u8> {
    let frame = encode_block(0, 0, records).unwrap_or_else(|e| {
        // A batch the host built is always valid; a failure here is a bug, named loudly.
        panic!("a state block does not encode: {}", e.0)
    });
    let mut out = Vec::with_capacity(frame.len() + 32);
    out.extend_from_slice(&encode_header(1, frame.len() as u64));
    out.extend_from_slice(&frame);
    out
}

/// The records of a segment [`encode`] made, or what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<RecordBatch, String> {
    let segment = decode_segment(bytes).map_err(|v| {
        format!(
            "written in format version {}, which this host does not read",
            v.0
        )
    })?;
    if let Some(d) = segment.damage {
        return Err(format!("damaged at byte {}: {}", d.position, d.damage));
    }
    let mut blocks = segment.blocks;
    match (blocks.pop(), blocks.is_empty()) {
        (Some(b), true) => Ok(b.records),
        _ => Err("not one block".to_owned()),
    }
}

/// Why state could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("state {location}: {message}")]
pub struct StateError {
    /// The object.
    pub location: String,
    /// What went wrong.
    pub message: String,
}

/// Reads batch `batch`'s contribution to step `step`; `None` when there is none.
pub async fn get(
    at: &Location,
    step: usize,
    batch: u64,
) -> Result<Option<RecordBatch>, StateError> {
    let location = || format!("{at}/{}", name(step, batch));
    let bytes = match at.store.get(&path(at, step, batch)).await {
        Ok(r) => r.bytes().await,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => Err(e),
    }
    .map_err(|e| StateError {
        location: location(),
        message: format!("could not be read: {e}"),
    })?;
    decode(&bytes).map(Some).map_err(|message| StateError {
        location: location(),
        message,
    })
}

/// Deletes batch `batch`'s contribution to step `step`, if there is one.
pub async fn delete(at: &Location, step: usize, batch: u64) -> Result<(), StateError> {
    match at.store.delete(&path(at, step, batch)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(StateError {
            location: format!("{at}/{}", name(step, batch)),
            message: format!("could not be deleted: {e}"),
        }),
    }
}

/// Writes what batch `batch` contributed to each stateful step, before its checkpoint entry;
/// returns their names, for the entry's `state`.
pub async fn write_batch(
    at: &Location,
    batch: u64,
    writes: &[Write],
) -> Result<Vec<String>, StateError> {
    let mut names = Vec::with_capacity(writes.len());
    for w in writes {
        let name = w.name(batch);
        at.store
            .put(&at.child(&name), PutPayload::from(encode(&w.records)))
            .await
            .map_err(|e| StateError {
                location: format!("{at}/{name}"),
                message: format!("could not be written: {e}"),
            })?;
        names.push(name);
    }
    Ok(names)
}

/// After batch `batch` committed: deletes what no restart needs any more (best effort; a
/// failure is logged, and the object is never read again): a window's batch that left it; for
/// `update-state-by-key`, once a whole state is written, everything before the one before it.
pub async fn forget(plan: &Plan, at: &Location, batch: u64) {
    for step in plan.steps.iter() {
        let result = match step {
            StepPlan::Window(op) => match batch.checked_sub(u64::from(op.spec.length)) {
                Some(old) => delete(at, op.step, old).await,
                None => Ok(()),
            },
            StepPlan::UpdateState(op) if op.writes_whole(batch) => {
                let keep_from = batch.saturating_sub(u64::from(op.spec.snapshot_every));
                forget_before(at, op.step, keep_from).await
            }
            StepPlan::EventWindow(op) if op.writes_whole(batch) => {
                let keep_from = batch.saturating_sub(u64::from(op.spec.snapshot_every));
                forget_before(at, op.step, keep_from).await
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "A stateful step's old state could not be deleted.");
        }
    }
    for store in plan.keyed.all() {
        if store.writes_whole(batch) {
            let keep_from = batch.saturating_sub(u64::from(store.snapshot_every));
            if let Err(e) = forget_before(at, store.step, keep_from).await {
                tracing::warn!(error = %e, "A plugin step's old keyed state could not be deleted.");
            }
        }
    }
}

/// Deletes step `step`'s objects of batches before `keep_from`.
async fn forget_before(at: &Location, step: usize, keep_from: u64) -> Result<(), StateError> {
    for (batch, whole) in list(at, step).await? {
        if batch < keep_from {
            let name = if whole {
                whole_name(step, batch)
            } else {
                name(step, batch)
            };
            match at.store.delete(&at.child(&name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(StateError {
                        location: format!("{at}/{name}"),
                        message: format!("could not be deleted: {e}"),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Step `step`'s objects: each batch, and whether it is a whole state.
async fn list(at: &Location, step: usize) -> Result<Vec<(u64, bool)>, StateError> {
    use futures::TryStreamExt;
    let prefix = at.child(&format!("state/step-{step}"));
    let metas: Vec<_> = at
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| StateError {
            location: format!("{at}/state/step-{step}"),
            message: format!("could not be listed: {e}"),
        })?;
    let mut out: Vec<(u64, bool)> = metas
        .iter()
        .filter_map(|m| {
            let file = m.location.filename()?;
            let (digits, whole) = match file.strip_suffix(".whole.seg") {
                Some(d) => (d, true),
                None => (file.strip_suffix(".seg")?, false),
            };
            Some((digits.parse().ok()?, whole))
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// At a restart whose newest checkpoint entry is batch `last` (`replaying`: that batch did
/// not commit and runs again first): reads back every stateful step's state. A window gets
/// the contributions of the batches it still holds (a batch that runs again replaces its
/// own); `update-state-by-key` gets its newest whole state at or before the last committed
/// batch and the changes of each batch after it, in order. A damaged object, or a batch whose
/// changes are missing, stops the start, named.
pub async fn restore(
    plan: &Plan,
    at: &Location,
    last: u64,
    replaying: bool,
) -> Result<(), StateError> {
    for step in plan.steps.iter() {
        match step {
            StepPlan::Window(op) => {
                for batch in op.needed(last) {
                    let Some(records) = get(at, op.step, batch).await? else {
                        continue;
                    };
                    let slot = op.slot_of(records).map_err(|message| StateError {
                        location: format!("{at}/{}", name(op.step, batch)),
                        message,
                    })?;
                    op.restore(batch, slot);
                }
                tracing::info!(
                    step = op.step,
                    window = op.kind.name(),
                    last_batch = last,
                    held = op.size(),
                    "Restored a window's state from the checkpoint."
                );
            }
            StepPlan::UpdateState(op) => {
                if let Some(done) = done_before(last, replaying) {
                    restore_incremental(op.as_ref(), at, done).await?;
                }
            }
            StepPlan::EventWindow(op) => {
                if let Some(done) = done_before(last, replaying) {
                    restore_incremental(op.as_ref(), at, done).await?;
                }
            }
            _ => {}
        }
    }
    if let Some(done) = done_before(last, replaying) {
        for store in plan.keyed.all() {
            restore_incremental(store.as_ref(), at, done).await?;
        }
    }
    Ok(())
}

/// The last batch that committed, of a restart whose newest entry is `last`.
fn done_before(last: u64, replaying: bool) -> Option<u64> {
    if replaying {
        last.checked_sub(1)
    } else {
        Some(last)
    }
}

/// State kept as whole states and the changes of each batch after them
/// (`update-state-by-key`, a plugin step's keyed state): what [`restore`] reads back into.
pub trait Restore {
    /// The step's index.
    fn step(&self) -> usize;
    /// What the state is, for the log line (`update-state-by-key's state`).
    fn what(&self) -> &'static str;
    /// Replaces the state with a whole state.
    fn restore_whole(&self, records: &RecordBatch) -> Result<(), String>;
    /// Applies one batch's changes.
    fn restore_changes(&self, records: &RecordBatch) -> Result<(), String>;
    /// How many keys it holds.
    fn size(&self) -> usize;
    /// How many of them are spilled to local disk (see [`spill`]).
    fn keys_on_disk(&self) -> usize {
        0
    }
}

impl Restore for crate::ops::running::RunningOp {
    fn step(&self) -> usize {
        self.step
    }
    fn what(&self) -> &'static str {
        "update-state-by-key's state"
    }
    fn restore_whole(&self, records: &RecordBatch) -> Result<(), String> {
        crate::ops::running::RunningOp::restore_whole(self, records)
    }
    fn restore_changes(&self, records: &RecordBatch) -> Result<(), String> {
        crate::ops::running::RunningOp::restore_changes(self, records)
    }
    fn size(&self) -> usize {
        crate::ops::running::RunningOp::size(self)
    }
    fn keys_on_disk(&self) -> usize {
        self.where_state_is().on_disk
    }
}

impl Restore for crate::ops::event_window::EventWindowOp {
    fn step(&self) -> usize {
        self.step
    }
    fn what(&self) -> &'static str {
        "an event-window's windows and watermark"
    }
    fn restore_whole(&self, records: &RecordBatch) -> Result<(), String> {
        crate::ops::event_window::EventWindowOp::restore_whole(self, records)
    }
    fn restore_changes(&self, records: &RecordBatch) -> Result<(), String> {
        crate::ops::event_window::EventWindowOp::restore_changes(self, records)
    }
    fn size(&self) -> usize {
        crate::ops::event_window::EventWindowOp::size(self)
    }
}

/// A [`Restore`] state as of batch `done`: its newest whole state at or before it, then the
/// changes of every batch after that, in order; a missing one stops the start (see
/// [`restore`]).
async fn restore_incremental(op: &dyn Restore, at: &Location, done: u64) -> Result<(), StateError> {
    let step = op.step();
    let objects = list(at, step).await?;
    let whole = objects
        .iter()
        .filter(|(b, w)| *w && *b <= done)
        .map(|(b, _)| *b)
        .max();
    if let Some(b) = whole {
        let named = |message| StateError {
            location: format!("{at}/{}", whole_name(step, b)),
            message,
        };
        let bytes = at
            .store
            .get(&at.child(&whole_name(step, b)))
            .await
            .map_err(|e| named(format!("could not be read: {e}")))?
            .bytes()
            .await
            .map_err(|e| named(format!("could not be read: {e}")))?;
        let records = decode(&bytes).map_err(named)?;
        op.restore_whole(&records).map_err(named)?;
    }
    let changes: Vec<u64> = objects
        .iter()
        .filter(|(b, w)| !*w && whole.is_none_or(|x| *b > x) && *b <= done)
        .map(|(b, _)| *b)
        .collect();
    let from = whole.map_or(changes.first().copied().unwrap_or(done + 1), |w| w + 1);
    for (expected, &b) in (from..=done).zip(changes.iter().chain(std::iter::repeat(&u64::MAX))) {
        if b != expected {
            return Err(StateError {
                location: format!("{at}/{}", name(step, expected)),
                message: "is missing: the state after it cannot be rebuilt exactly".to_owned(),
            });
        }
        let records = get(at, step, b).await?.unwrap_or_default();
        op.restore_changes(&records).map_err(|message| StateError {
            location: format!("{at}/{}", name(step, b)),
            message,
        })?;
    }
    tracing::info!(
        step = step,
        whole_state_of_batch = whole,
        changes_applied = changes.len(),
        last_batch = done,
        keys = op.size(),
        keys_on_disk = op.keys_on_disk(),
        "Restored {} from the checkpoint.",
        op.what()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_and_a_flipped_byte_is_named() {
        let mut b = RecordBatch::default();
        b.push(Some(b"k"), b"v", None);
        b.push(Some(b""), b"\x00\x01", None);
        let bytes = encode(&b);
        let back = decode(&bytes).unwrap();
        assert_eq!(
            (back.key(1), back.value(1)),
            (Some(&b""[..]), &b"\x00\x01"[..])
        );
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode(&bad).unwrap_err().contains("damaged"), "checksummed");
        assert!(decode(&bytes[..bytes.len() - 3]).is_err(), "a torn write");
    }
}
