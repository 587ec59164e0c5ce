//! The dead-letter sink: records a plugin rejected, with their context, as JSON lines on
//! `object_store`: `<path>/<stream>/batch-<id>.jsonl`, one object per batch that had any,
//! written before the batch's sinks commit.
//!
//! Each line: `stream`, `batch`, `partition`, `offset` (the record's position in its source
//! partition, counted from 0; after a repartition, its position in the repartitioned batch),
//! `step` (the index of the `[[transform]]` that rejected it, from 0, so that
//! `sluice dead-letters replay` sends the record on from there), `plugin`, `digest`, `reason`, for a poison record `failure` (`panicked`, `timed-out`,
//! `out-of-memory`, `out-of-fuel` or `trapped`: the plugin failed on it alone, and `reason` has
//! the trap and the guest's message), and the record: `key` (`null` when it has none),
//! `value` and `timestamp`; a key or value that is not UTF-8 is under `key_base64` or
//! `value_base64` instead ([`super::format::json_bytes`], as in the `jsonl` format).
//!
//! A record a built-in step could not take (a value that is not a number, for a window's
//! numeric aggregate) has `builtin` (the step's name) and null `plugin` and `digest`.
//!
//! A record a sink's format cannot carry ([`DeadLetters::add_unwritable`]) has `sink` (the
//! sink's name) instead of `plugin` and `digest`, and `failure` = `unwritable`.
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
use super::format::insert_bytes;
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

/// A record a sink's format cannot carry.
#[derive(Debug, Clone)]
pub struct Unwritten<'a> {
    /// The sink's name.
    pub sink: &'a str,
    /// The record's source partition.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// Why (the sink's error, naming sink, batch, partition and index).
    pub reason: &'a str,
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
    samples: Mutex<std::collections::VecDeque<serde_json::Value>>,
}

/// How many of the newest dead letters [`DeadLetters::samples`] keeps.
pub const KEEP_SAMPLES: usize = 20;
/// The longest sample value kept, characters (the whole record is in the dead-letter store).
const SAMPLE_CHARS: usize = 200;

impl DeadLetters {
    /// Dead letters written under `location`.
    pub fn new(location: Location, handle: Handle) -> Self {
        DeadLetters {
            location,
            handle,
            pending: Mutex::default(),
            total: AtomicU64::new(0),
            samples: Mutex::default(),
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
        let mut obj = serde_json::json!({
            "stream": stream,
            "batch": batch_id,
            "partition": d.partition,
            "offset": d.offset,
            "step": d.step,
            "plugin": d.plugin,
            "digest": d.digest,
            "reason": d.reason,
        });
        if let Some(failure) = d.failure {
            obj["failure"] = failure.into();
        }
        self.push(batch_id, obj, d.batch, d.index);
    }

    /// Adds one record of `batch_id` that a sink's format cannot carry.
    pub fn add_unwritable(&self, stream: &str, batch_id: u64, u: Unwritten<'_>) {
        let obj = serde_json::json!({
            "stream": stream,
            "batch": batch_id,
            "partition": u.partition,
            "offset": u.offset,
            "sink": u.sink,
            "reason": u.reason,
            "failure": "unwritable",
        });
        self.push(batch_id, obj, u.batch, u.index);
    }

    /// Adds one record of `batch_id` that built-in step `step` (named `builtin`) could not
    /// take: `plugin` and `digest` are null, `builtin` names the step.
    pub fn add_from_builtin(
        &self,
        stream: &str,
        batch_id: u64,
        (step, builtin): (usize, &str),
        (partition, offset): (u32, u64),
        reason: &str,
        (batch, index): (&RecordBatch, usize),
    ) {
        let obj = serde_json::json!({
            "stream": stream,
            "batch": batch_id,
            "partition": partition,
            "offset": offset,
            "step": step,
            "plugin": null,
            "digest": null,
            "builtin": builtin,
            "reason": reason,
        });
        self.push(batch_id, obj, batch, index);
    }

    /// Completes `obj` with record `index` of `batch` and keeps it as a line of `batch_id`.
    fn push(&self, batch_id: u64, mut obj: serde_json::Value, batch: &RecordBatch, index: usize) {
        if let Some(map) = obj.as_object_mut() {
            match batch.key(index) {
                Some(key) => insert_bytes(map, "key", key),
                None => {
                    map.insert("key".to_owned(), serde_json::Value::Null);
                }
            }
            insert_bytes(map, "value", batch.value(index));
            map.insert("timestamp".to_owned(), batch.timestamp(index).into());
        }
        self.push_line(batch_id, &obj);
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
        let preview = match std::str::from_utf8(&a.preview) {
            Err(e) if e.error_len().is_none() => &a.preview[..e.valid_up_to()],
            _ => &a.preview[..],
        };
        if let Some(map) = obj.as_object_mut() {
            insert_bytes(map, "preview", preview);
        }
        self.push_line(batch_id, &obj);
    }

    /// Keeps `obj` as a line of `batch_id`'s dead letters.
    fn push_line(&self, batch_id: u64, obj: &serde_json::Value) {
        let mut line = serde_json::to_vec(obj).unwrap_or_default();
        line.push(b'\n');
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(batch_id)
            .or_default()
            .extend_from_slice(&line);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.keep_sample(obj);
    }

    /// Keeps `obj` among the newest [`KEEP_SAMPLES`], its value cut to [`SAMPLE_CHARS`].
    fn keep_sample(&self, obj: &serde_json::Value) {
        let mut sample = obj.clone();
        if let Some(serde_json::Value::String(v)) = sample.get_mut("value")
            && let Some((cut, _)) = v.char_indices().nth(SAMPLE_CHARS)
        {
            v.truncate(cut);
            v.push('…');
        }
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == KEEP_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The newest dead letters (at most [`KEEP_SAMPLES`]), newest first, for the monitor.
    pub fn samples(&self) -> Vec<serde_json::Value> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.iter().rev().cloned().collect()
    }

    /// Drops what batch `batch_id` dead-lettered so far (it is being recomputed); returns how
    /// many.
    pub fn discard(&self, batch_id: u64) -> u64 {
        let body = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&batch_id);
        let lines = body.map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64);
        self.total.fetch_sub(lines, Ordering::Relaxed);
        lines
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(d: &DeadLetters, batch_id: u64) -> Vec<serde_json::Value> {
        let pending = d.pending.lock().unwrap();
        pending[&batch_id]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn keys_and_values_that_are_not_utf8_are_kept_in_base64_never_replaced() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let location = Location::resolve("dead", "dead", dir.path(), true).unwrap();
        let d = DeadLetters::new(location, rt.handle().clone());
        let mut batch = RecordBatch::default();
        batch.push(Some(b"\xfe"), b"\xff\x00", Some(3));
        batch.push(None, b"text", None);
        let u = |index| Unwritten {
            sink: "files out",
            partition: 1,
            offset: 9,
            reason: "no",
            batch: &batch,
            index,
        };
        d.add_unwritable("s", 4, u(0));
        d.add_unwritable("s", 4, u(1));
        let got = lines(&d, 4);
        assert_eq!(got[0]["key_base64"], "/g==");
        assert_eq!(got[0]["value_base64"], "/wA=");
        assert!(got[0].get("key").is_none() && got[0].get("value").is_none());
        assert_eq!(got[0]["sink"], "files out");
        assert_eq!(got[0]["failure"], "unwritable");
        assert_eq!(got[1]["key"], serde_json::Value::Null);
        assert_eq!(got[1]["value"], "text");
        assert_eq!(d.total(), 2);
    }
}
