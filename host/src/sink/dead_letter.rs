//! The dead-letter sink: records a plugin rejected, with their context, as JSON lines on
//! `object_store`: `<path>/<stream>/batch-<id>.jsonl`, one object per batch that had any,
//! written before the batch's sinks commit.
//!
//! Each line: `stream`, `batch`, `partition`, `offset` (the record's position in its source
//! partition, counted from 0; after a repartition, its position in the repartitioned batch),
//! `step` (the index of the `[[transform]]` that rejected it, from 0, so that
//! `sluice dead-letters replay` sends the record on from there), `plugin`, `digest`, `reason`, for a poison record `failure` (`panicked`, `timed-out`,
//! `out-of-memory`, `out-of-fuel` or `trapped`: the plugin failed on it alone, and `reason` has
//! the trap and the guest's message), and the record (`key`, `value` as text where it is
//! UTF-8, else `value_base64`, and `timestamp`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::runtime::Handle;

use super::SinkError;
use crate::batch::RecordBatch;
use crate::store::Location;

/// One rejected record and why.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The partition the record was in.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// The index of the step that rejected it (its `[[transform]]`, from 0).
    pub step: usize,
    /// The plugin that rejected it.
    pub plugin: &'a str,
    /// The plugin's sha256.
    pub digest: &'a str,
    /// The plugin's reason.
    pub reason: &'a str,
    /// For a poison record, what the call did (`panicked`, `timed-out`, …); `None` for a
    /// record the plugin rejected.
    pub failure: Option<&'a str>,
    /// The batch holding the record.
    pub batch: &'a RecordBatch,
    /// The record's index in `batch`.
    pub index: usize,
}

/// Collects a batch's dead letters and writes them out.
pub struct DeadLetters {
    location: Location,
    handle: Handle,
    pending: Mutex<BTreeMap<u64, Vec<u8>>>,
    total: AtomicU64,
}

impl DeadLetters {
    /// Dead letters written under `location`.
    pub fn new(location: Location, handle: Handle) -> Self {
        DeadLetters {
            location,
            handle,
            pending: Mutex::default(),
            total: AtomicU64::new(0),
        }
    }

    /// Where they go.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// How many records were dead-lettered so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Adds one rejected record of `batch_id`.
    pub fn add(&self, stream: &str, batch_id: u64, d: DeadLetter<'_>) {
        let value = d.batch.value(d.index);
        let mut obj = serde_json::json!({
            "stream": stream,
            "batch": batch_id,
            "partition": d.partition,
            "offset": d.offset,
            "step": d.step,
            "plugin": d.plugin,
            "digest": d.digest,
            "reason": d.reason,
            "key": d.batch.key(d.index).map(String::from_utf8_lossy),
            "timestamp": d.batch.timestamp(d.index),
        });
        if let Some(failure) = d.failure {
            obj["failure"] = failure.into();
        }
        match std::str::from_utf8(value) {
            Ok(text) => obj["value"] = text.into(),
            Err(_) => obj["value_base64"] = base64(value).into(),
        }
        let mut line = serde_json::to_vec(&obj).unwrap_or_default();
        line.push(b'\n');
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(batch_id)
            .or_default()
            .extend_from_slice(&line);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes `batch_id`'s dead letters, if it had any, as one object.
    pub fn flush(&self, stream: &str, batch_id: u64) -> Result<usize, SinkError> {
        let Some(body) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&batch_id)
        else {
            return Ok(0);
        };
        let lines = body.iter().filter(|&&b| b == b'\n').count();
        let path = self
            .location
            .child(&format!("{stream}/batch-{batch_id:010}.jsonl"));
        self.handle
            .block_on(self.location.store.put(&path, body.into()))
            .map_err(|e| SinkError::Io {
                sink: format!("dead letters {}", self.location),
                message: format!("writing {path}: {e}"),
            })?;
        Ok(lines)
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(super::base64(b"Man"), "TWFu");
        assert_eq!(super::base64(b"Ma"), "TWE=");
        assert_eq!(super::base64(b"\xff"), "/w==");
    }
}
