//! `kind = "stdout"`: lines on standard output, printed at commit.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use super::{BuildContext, BuildError, Format, Sink, SinkError, Unwritable};
use crate::batch::RecordBatch;
use crate::plugin::CallContext;

/// `kind = "stdout"`, checked.
#[derive(Debug, Clone)]
pub struct StdoutConfig {
    /// How records are written.
    pub format: Format,
    /// Only the N records with the largest numeric value per batch.
    pub top: Option<usize>,
}

impl StdoutConfig {
    /// A stdout sink needs nothing outside itself.
    pub fn build(&self, _ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        Ok(Arc::new(StdoutSink::new(self.format, self.top)))
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
    format: Format,
    top: Option<usize>,
    pending: Mutex<PendingLines>,
}

impl StdoutSink {
    /// A stdout sink; with `top`, only the N records with the largest numeric value per batch.
    pub fn new(format: impl Into<Format>, top: Option<usize>) -> Self {
        StdoutSink {
            format: format.into(),
            top,
            pending: Mutex::default(),
        }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> String {
        "stdout".to_owned()
    }

    fn unwritable(&self, batch: &RecordBatch) -> Vec<(usize, Unwritable)> {
        self.format.unwritable(batch)
    }

    fn write(&self, ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError> {
        let mut lines = Vec::with_capacity(batch.len());
        for i in 0..batch.len() {
            let mut line = Vec::new();
            self.format
                .write(batch, i, &mut line)
                .map_err(|reason| SinkError::unwritable(self.name(), ctx, i, reason))?;
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

    /// What was printed cannot be taken back or told apart: a recorded batch counts as
    /// printed (at most once on a crash, never twice).
    fn committed(&self, _stream: &str, _batch_id: u64) -> Result<Option<bool>, SinkError> {
        Ok(Some(true))
    }
}
