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

use object_store::{PutPayload, path::Path as StorePath};

use crate::batch::RecordBatch;
use crate::plan::{Plan, StepPlan};
use crate::store::Location;
use crate::wal::format::{decode_segment, encode_block, encode_header};

/// The name, under the checkpoint location, of batch `batch`'s contribution to step `step`.
pub fn name(step: usize, batch: u64) -> String {
    format!("state/step-{step}/{batch:020}.seg")
}

fn path(at: &Location, step: usize, batch: u64) -> StorePath {
    at.child(&name(step, batch))
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

/// Writes batch `batch`'s contribution to step `step`.
pub async fn put(at: &Location, step: usize, batch: u64, bytes: Vec<u8>) -> Result<(), StateError> {
    at.store
        .put(&path(at, step, batch), PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(|e| StateError {
            location: format!("{at}/{}", name(step, batch)),
            message: format!("could not be written: {e}"),
        })
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
    contributions: &[(usize, RecordBatch)],
) -> Result<Vec<String>, StateError> {
    let mut names = Vec::with_capacity(contributions.len());
    for (step, records) in contributions {
        put(at, *step, batch, encode(records)).await?;
        names.push(name(*step, batch));
    }
    Ok(names)
}

/// After batch `batch` committed: deletes the contributions of the batch that left each
/// window with it (best effort; a failure is logged, and the object is never read again).
pub async fn forget(plan: &Plan, at: &Location, batch: u64) {
    for step in plan.steps.iter() {
        if let StepPlan::Window(op) = step
            && let Some(old) = batch.checked_sub(u64::from(op.spec.length))
            && let Err(e) = delete(at, op.step, old).await
        {
            tracing::warn!(error = %e, "A window's expired state could not be deleted.");
        }
    }
}

/// At a restart whose newest checkpoint entry is batch `last`: reads back each window's
/// contributions of the batches its window still holds. A batch with none (it ran before the
/// step was in the pipeline) contributes nothing; a damaged one stops the start, named.
pub async fn restore(plan: &Plan, at: &Location, last: u64) -> Result<usize, StateError> {
    let mut restored = 0;
    for step in plan.steps.iter() {
        let StepPlan::Window(op) = step else { continue };
        for batch in op.needed(last) {
            let Some(records) = get(at, op.step, batch).await? else {
                continue;
            };
            let slot = op.slot_of(records).map_err(|message| StateError {
                location: format!("{at}/{}", name(op.step, batch)),
                message,
            })?;
            op.restore(batch, slot);
            restored += 1;
        }
        tracing::info!(
            step = op.step,
            window = op.kind.name(),
            last_batch = last,
            held = op.size(),
            "Restored a window's state from the checkpoint."
        );
    }
    Ok(restored)
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
