//! Sinks: where a pipeline's results go. Every sink sees the batch id, in two phases:
//! `write`, one or more times per partition as the batch's blocks are processed (partitions in
//! parallel from the worker pool, a partition's writes in order), then `commit` once the batch
//! is closed and every write done. A replayed batch comes again with the same id.
//!
//! Built in: [`StdoutSink`], [`FilesSink`] (one object per batch and partition, staged and
//! then moved into place at commit, so a batch's output is there whole or not at all),
//! [`CountSink`] (counts, for benchmarks); sink plugins through [`PluginSink`]. Dead letters
//! go through [`dead_letter::DeadLetters`].

pub mod dead_letter;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;

use crate::batch::RecordBatch;
use crate::config::OutputFormat;
use crate::config::location::Location;
use crate::plugin::{CallContext, PluginError, SinkStage};

/// A sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A sink plugin's call failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A store or output failed; trying again may help.
    #[error("sink {sink}: {message}")]
    Io {
        /// The sink.
        sink: String,
        /// What failed.
        message: String,
    },
    /// A batch's output is broken beyond repair (a failed part of an upload).
    #[error("sink {sink}: {message}")]
    Broken {
        /// The sink.
        sink: String,
        /// What failed.
        message: String,
    },
}

impl SinkError {
    /// Whether trying again can help.
    pub fn retryable(&self) -> bool {
        match self {
            SinkError::Plugin(e) => e.retryable(),
            SinkError::Io { .. } => true,
            SinkError::Broken { .. } => false,
        }
    }
}

/// A sink.
pub trait Sink: Send + Sync {
    /// A name for messages.
    fn name(&self) -> String;
    /// Writes one partition's records of a batch; nothing need be visible before `commit`.
    fn write(&self, ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError>;
    /// Makes the batch visible; must do no harm when called again for the same batch.
    fn commit(&self, stream: &str, batch_id: u64) -> Result<(), SinkError>;
    /// Drops what was written of a batch that will not commit (the run stopped with it open).
    fn abort(&self, _batch_id: u64) {}
}

/// Formats one record as a line (without the newline) into `out`.
pub fn format_record(format: OutputFormat, batch: &RecordBatch, i: usize, out: &mut Vec<u8>) {
    match format {
        OutputFormat::Lines => out.extend_from_slice(batch.value(i)),
        OutputFormat::Kv => {
            if let Some(k) = batch.key(i) {
                out.extend_from_slice(k);
            }
            out.push(b'\t');
            out.extend_from_slice(batch.value(i));
        }
        OutputFormat::Jsonl => {
            let v = serde_json::json!({
                "key": batch.key(i).map(|k| String::from_utf8_lossy(k)),
                "value": String::from_utf8_lossy(batch.value(i)),
                "timestamp": batch.timestamp(i),
            });
            let _ = serde_json::to_writer(&mut *out, &v);
        }
    }
}

fn numeric_value(batch: &RecordBatch, i: usize) -> i64 {
    std::str::from_utf8(batch.value(i))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(i64::MIN)
}

/// Formatted lines waiting for their batch's commit, by (batch, partition), each with its rank
/// for `top`.
type PendingLines = BTreeMap<(u64, u32), Vec<(i64, Vec<u8>)>>;

/// `kind = "stdout"`: prints each batch at commit, partitions in order.
pub struct StdoutSink {
    format: OutputFormat,
    top: Option<usize>,
    pending: Mutex<PendingLines>,
}

impl StdoutSink {
    /// A stdout sink; with `top`, only the N records with the largest numeric value per batch.
    pub fn new(format: OutputFormat, top: Option<usize>) -> Self {
        StdoutSink {
            format,
            top,
            pending: Mutex::default(),
        }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> String {
        "stdout".to_owned()
    }

    fn write(&self, ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError> {
        let mut lines = Vec::with_capacity(batch.len());
        for i in 0..batch.len() {
            let mut line = Vec::new();
            format_record(self.format, batch, i, &mut line);
            let rank = if self.top.is_some() {
                numeric_value(batch, i)
            } else {
                0
            };
            lines.push((rank, line));
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((ctx.batch_id, ctx.partition))
            .or_default()
            .extend(lines);
        Ok(())
    }

    fn commit(&self, _stream: &str, batch_id: u64) -> Result<(), SinkError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<_> = pending
            .keys()
            .filter(|(b, _)| *b == batch_id)
            .copied()
            .collect();
        let mut lines: Vec<(i64, Vec<u8>)> = keys
            .into_iter()
            .flat_map(|k| pending.remove(&k).unwrap_or_default())
            .collect();
        drop(pending);
        if let Some(n) = self.top {
            // Largest first; ties by text, so the output is deterministic.
            lines.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            lines.truncate(n);
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let io = |e: std::io::Error| SinkError::Io {
            sink: "stdout".to_owned(),
            message: e.to_string(),
        };
        if self.top.is_some() {
            writeln!(out, "-- batch {batch_id}: top {}", lines.len()).map_err(io)?;
        }
        for (_, line) in lines {
            out.write_all(&line).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.flush().map_err(io)
    }

    fn abort(&self, batch_id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(b, _), _| *b != batch_id);
    }
}

/// `kind = "files"`: one object per batch and partition,
/// `<path>/<stream>/batch-<id>-part-<partition>.<ext>`. A partition's records come in several
/// writes (one per block); they stream into a multipart upload of
/// `<path>/_staging/<stream>/…`, which `commit` completes and moves into place, so a batch's
/// output is there whole or not at all, and a batch never sits whole in memory.
pub struct FilesSink {
    location: Location,
    format: OutputFormat,
    handle: Handle,
    open: Mutex<BTreeMap<(u64, u32), Staged>>,
}

struct Staged {
    staging: object_store::path::Path,
    target: object_store::path::Path,
    upload: Option<object_store::WriteMultipart>,
}

/// Parts of a staged upload are 8 MiB (S3 wants at least 5 MiB for all but the last).
const UPLOAD_PART: usize = 8 << 20;

impl FilesSink {
    /// A files sink writing under `location`.
    pub fn new(location: Location, format: OutputFormat, handle: Handle) -> Self {
        FilesSink {
            location,
            format,
            handle,
            open: Mutex::default(),
        }
    }

    fn ext(&self) -> &'static str {
        match self.format {
            OutputFormat::Jsonl => "jsonl",
            OutputFormat::Kv => "tsv",
            OutputFormat::Lines => "txt",
        }
    }

    fn err(&self, message: String) -> SinkError {
        SinkError::Io {
            sink: format!("files {}", self.location),
            message,
        }
    }

    fn broken(&self, message: String) -> SinkError {
        SinkError::Broken {
            sink: format!("files {}", self.location),
            message,
        }
    }

    /// Takes every partition's staged upload of `batch_id`.
    fn take_batch(&self, batch_id: u64) -> Vec<Staged> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let rest = open.split_off(&(batch_id, 0));
        let (mine, later): (BTreeMap<_, _>, BTreeMap<_, _>) =
            rest.into_iter().partition(|((b, _), _)| *b == batch_id);
        open.extend(later);
        mine.into_values().collect()
    }

    fn staged(&self, ctx: &CallContext) -> Result<Staged, SinkError> {
        let key = (ctx.batch_id, ctx.partition);
        if let Some(s) = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
        {
            return Ok(s);
        }
        let name = format!(
            "{}/batch-{:010}-part-{:05}.{}",
            ctx.stream,
            ctx.batch_id,
            ctx.partition,
            self.ext()
        );
        let staging = self.location.child(&format!("_staging/{name}"));
        let target = self.location.child(&name);
        let upload = self
            .handle
            .block_on(self.location.store.put_multipart(&staging))
            .map_err(|e| self.err(format!("starting {staging}: {e}")))?;
        Ok(Staged {
            staging,
            target,
            upload: Some(object_store::WriteMultipart::new_with_chunk_size(
                upload,
                UPLOAD_PART,
            )),
        })
    }
}

impl Sink for FilesSink {
    fn name(&self) -> String {
        format!("files {}", self.location)
    }

    fn write(&self, ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut body = Vec::with_capacity(batch.values.data.len() + batch.len() * 8);
        for i in 0..batch.len() {
            format_record(self.format, batch, i, &mut body);
            body.push(b'\n');
        }
        let mut staged = self.staged(ctx)?;
        let upload = staged.upload.as_mut().expect("an open upload");
        // Parts upload as tasks on the runtime; at most two in flight per object.
        let waited = {
            let _in_runtime = self.handle.enter();
            upload.put(body.into());
            self.handle.block_on(upload.wait_for_capacity(2))
        };
        let staging = staged.staging.clone();
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ctx.batch_id, ctx.partition), staged);
        // A failed part breaks the whole upload: writing again would not mend it.
        waited.map_err(|e| self.broken(format!("writing {staging}: {e}")))
    }

    fn commit(&self, _stream: &str, batch_id: u64) -> Result<(), SinkError> {
        for mut s in self.take_batch(batch_id) {
            if let Some(upload) = s.upload.take() {
                self.handle
                    .block_on(upload.finish())
                    .map_err(|e| self.broken(format!("completing {}: {e}", s.staging)))?;
            }
            self.handle
                .block_on(self.location.store.rename(&s.staging, &s.target))
                .map_err(|e| self.err(format!("committing {}: {e}", s.target)))?;
        }
        Ok(())
    }

    fn abort(&self, batch_id: u64) {
        for mut s in self.take_batch(batch_id) {
            if let Some(upload) = s.upload.take() {
                let _ = self.handle.block_on(upload.abort());
            }
        }
    }
}

/// `kind = "count"`: counts records and bytes, writes nothing. For benchmarks.
#[derive(Default)]
pub struct CountSink {
    /// Records written.
    pub records: AtomicU64,
    /// Value bytes written.
    pub bytes: AtomicU64,
}

impl Sink for CountSink {
    fn name(&self) -> String {
        "count".to_owned()
    }

    fn write(&self, _ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError> {
        self.records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.bytes
            .fetch_add(batch.values.data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn commit(&self, _stream: &str, _batch_id: u64) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink plugin.
pub struct PluginSink(pub Arc<SinkStage>);

impl Sink for PluginSink {
    fn name(&self) -> String {
        format!("plugin {}", self.0.plugin().name())
    }

    fn write(&self, ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError> {
        Ok(self.0.write(ctx, batch)?)
    }

    fn commit(&self, stream: &str, batch_id: u64) -> Result<(), SinkError> {
        Ok(self.0.commit(stream, batch_id)?)
    }
}
