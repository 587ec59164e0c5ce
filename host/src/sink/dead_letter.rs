//! The dead-letter sink: records a plugin rejected, with their context, as JSON lines on
//! `object_store`: `<path>/<stream>/batch-<id>.jsonl`, one object per batch that had any,
//! written before the batch's sinks commit.
//!
//! Each line: `stream`, `batch`, `partition`, `offset` (the record's position in its source
//! partition, counted from 0; after a repartition, its position in the repartitioned batch),
//! `plugin`, `digest`, `reason`, for a poison record `failure` (`panicked`, `timed-out`,
//! `out-of-memory`, `out-of-fuel` or `trapped`: the plugin failed on it alone, and `reason` has
//! the trap and the guest's message), and the record (`key`, `value` as text where it is
//! UTF-8, else `value_base64`, and `timestamp`).
//!
//! A record its source set aside for being longer than `max-record-bytes` has `failure`
//! `"oversize"`, `plugin` and `digest` null, `offset` the partition offset of the record after
//! it (it has none of its own), `source` its place in the source (`{"kind": "file", "file",
//! "offset"}`, `{"kind": "tcp", "peer", "connection", "offset"}`, `{"kind": "amqp",
//! "address", "delivery", "message_id"}`, `{"kind": "event-hubs", "offset",
//! "sequence_number"}`, `{"kind": "plugin", "plugin", "poll", "index"}`), `length`, `limit`,
//! `value_object` (its whole bytes, as a side object under the dead-letter location:
//! `<stream>/oversize/<name>.bin`) and `preview` (its first 64 bytes as text where UTF-8, else
//! `preview_base64`) instead of `value`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::runtime::Handle;

use super::SinkError;
use crate::batch::RecordBatch;
use crate::batch::aside::SetAside;
use crate::store::Location;

/// One rejected record and why.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The partition the record was in.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
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
        self.push(batch_id, &obj);
    }

    /// Adds a record of `batch_id`'s partition `partition` that its receiver set aside.
    pub fn add_set_aside(&self, stream: &str, batch_id: u64, partition: u32, a: &SetAside) {
        let mut obj = serde_json::json!({
            "stream": stream,
            "batch": batch_id,
            "partition": partition,
            "offset": a.offset,
            "plugin": null,
            "digest": null,
            "reason": format!(
                "oversize: the record is {} bytes, longer than the source's max-record-bytes ({}); its bytes are in {}",
                a.length, a.limit, a.object
            ),
            "failure": "oversize",
            "source": a.origin,
            "length": a.length,
            "limit": a.limit,
            "value_object": a.object,
            "key": null,
            "timestamp": a.timestamp,
        });
        // A preview cut inside a character keeps the text before it.
        match std::str::from_utf8(&a.preview) {
            Ok(text) => obj["preview"] = text.into(),
            Err(e) if e.error_len().is_none() => {
                obj["preview"] = String::from_utf8_lossy(&a.preview[..e.valid_up_to()]).into()
            }
            Err(_) => obj["preview_base64"] = base64(&a.preview).into(),
        }
        self.push(batch_id, &obj);
    }

    fn push(&self, batch_id: u64, obj: &serde_json::Value) {
        let mut line = serde_json::to_vec(obj).unwrap_or_default();
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
