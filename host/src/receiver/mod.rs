//! Receivers: one async task per source partition, appending what it receives to the block
//! manager (which slows it down when the memory budget is used).
//!
//! Unlike Spark's receivers, a receiver does not hold a core: sixteen partitions run on a
//! two-thread pool. Built in: [`generator`], [`nexmark`], [`files`], [`tcp`], [`amqp`] (with its Event Hubs
//! dialect); receiver plugins run through
//! [`plugin`]. The [`supervise`] loop restarts a failed receiver with backoff.
//!
//! Each kind's file holds its config struct, which builds the kind's [`Source`] (see
//! [`source`]); [`SourceConfig`] has one arm per kind.

pub mod amqp;
pub mod files;
pub mod generator;
pub mod lines;
pub mod nexmark;
pub mod oversize;
pub mod plugin;
pub mod source;
pub mod tcp;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::batch::RecordBatch;
use crate::block::BlockManager;

pub use crate::batch::position::Position;
pub use source::{BuildContext, BuildError, Source, SourceConfig};

/// Where a receiver starts: at the first record that no committed batch holds, or, when the
/// driver recomputes an unfinished batch, at that batch's first record.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// The offset of the partition's first record this run.
    pub offset: u64,
    /// The source's position just before that record (`None`: the source's start).
    pub last: Option<Position>,
    /// `files`: the byte ranges of the batch being recomputed, to re-read first, in order.
    pub replay: Vec<Position>,
    /// `files`: the files read to their end by committed batches (never read again).
    pub seen: std::collections::HashSet<String>,
    /// Whether this comes from the checkpoint log (else the source's own start applies).
    pub from_log: bool,
    /// A source that redelivers ([`Source::duplicates`]): the live window of message ids and
    /// the redelivery counts, one for all partitions.
    pub dedup: Option<Arc<crate::dedup::Filter>>,
}

/// Why a receiver stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// A failure that a restart may cure (a closed connection, an unreachable store).
    #[error("{0}")]
    Transient(String),
    /// A failure a restart will not cure (a plugin's fatal error).
    #[error("{0}")]
    Fatal(String),
}

/// What a receiver writes into: its partition of the block manager.
#[derive(Debug, Clone)]
pub struct PartitionWriter {
    /// The block manager.
    pub blocks: Arc<BlockManager>,
    /// This receiver's partition.
    pub partition: u32,
}

impl PartitionWriter {
    /// Appends records, waiting first while the memory budget is used up, and returns the
    /// partition offsets they got.
    pub async fn append(&self, chunk: &RecordBatch) -> std::ops::Range<u64> {
        self.blocks.append(self.partition, chunk).await
    }

    /// [`PartitionWriter::append`] for a replayable source: `position` is where the source
    /// stands after these records.
    pub async fn append_at(&self, chunk: &RecordBatch, position: Position) -> std::ops::Range<u64> {
        self.blocks
            .append_with(
                self.partition,
                chunk.byte_size() as u64,
                Some(position),
                |buf| buf.append(chunk),
            )
            .await
    }

    /// Like [`PartitionWriter::append`], but `fill` appends the records straight into the
    /// partition's buffer; `size` is what they will take, for the budget.
    pub async fn append_with(
        &self,
        size: usize,
        fill: impl FnOnce(&mut RecordBatch),
    ) -> std::ops::Range<u64> {
        self.blocks
            .append_with(self.partition, size as u64, None, fill)
            .await
    }

    /// Like [`PartitionWriter::append_with`] for a replayable source: `fill` returns where
    /// the source stands after the records it appended (`None` when it appended none).
    pub async fn append_filled(
        &self,
        size: usize,
        fill: impl FnOnce(&mut RecordBatch) -> Option<Position>,
    ) -> std::ops::Range<u64> {
        self.blocks
            .append_filled(self.partition, size as u64, fill)
            .await
    }

    /// Sets aside a record too long for a block (its bytes already in their side object):
    /// its note goes to the batch's dead letters with the next block. `position` is where a
    /// replayable source stands after it; `replay`: it was read again for the batch being
    /// recomputed.
    pub async fn set_aside(
        &self,
        note: crate::batch::aside::SetAside,
        position: Option<Position>,
        replay: bool,
    ) {
        tracing::warn!(
            partition = self.partition,
            length = note.length,
            limit = note.limit,
            object = %note.object,
            source = ?note.origin,
            "A record longer than max-record-bytes was set aside: its bytes are in the side object, and it goes to the dead letters."
        );
        self.blocks
            .set_aside(self.partition, note, position, replay)
            .await;
    }

    /// Every record with an offset below the watched value is durable: in plain mode as soon
    /// as it is appended; in reliable mode (`wal = true`) after its block's write-ahead-log
    /// write. A receiver acknowledges its source only up to this mark.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.blocks.durable(self.partition)
    }
}

/// A receiver of one partition.
pub enum Receiver {
    /// `generator`.
    Generator(generator::GeneratorReceiver),
    /// `nexmark`.
    Nexmark(nexmark::NexmarkReceiver),
    /// `files`.
    Files(files::FilesReceiver),
    /// `tcp`.
    Tcp(tcp::TcpReceiver),
    /// `amqp`.
    Amqp(amqp::AmqpReceiver),
    /// `eventhubs`.
    EventHubs(amqp::eventhubs::EventHubsReceiver),
    /// A receiver plugin.
    Plugin(plugin::PluginReceiver),
}

/// How a receiver's run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// The partition has no more records, ever.
    End,
    /// The pipeline asked it to stop.
    Stopped,
}

impl Receiver {
    /// Receives until the partition ends, `stop` turns true, or a failure.
    pub async fn run(
        &mut self,
        out: &PartitionWriter,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Finished, ReceiverError> {
        match self {
            Receiver::Generator(r) => r.run(out, stop).await,
            Receiver::Nexmark(r) => r.run(out, stop).await,
            Receiver::Files(r) => r.run(out, stop).await,
            Receiver::Tcp(r) => r.run(out, stop).await,
            Receiver::Amqp(r) => r.run(out, stop).await,
            Receiver::EventHubs(r) => r.run(out, stop).await,
            Receiver::Plugin(r) => r.run(out, stop).await,
        }
    }

    /// For logs: which kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Receiver::Generator(_) => "generator",
            Receiver::Nexmark(_) => "nexmark",
            Receiver::Files(_) => "files",
            Receiver::Tcp(_) => "tcp",
            Receiver::Amqp(_) => "amqp",
            Receiver::EventHubs(_) => "eventhubs",
            Receiver::Plugin(_) => "plugin",
        }
    }
}

/// Runs a receiver until it ends or is stopped, restarting it after a transient failure with
/// exponential backoff (100 ms doubling to 5 s). A fatal failure is returned.
pub async fn supervise(
    mut receiver: Receiver,
    out: PartitionWriter,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ReceiverError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match receiver.run(&out, &mut stop).await {
            Ok(Finished::End) => {
                tracing::info!(
                    partition = out.partition,
                    kind = receiver.kind(),
                    "The partition has ended."
                );
                out.blocks.end_partition(out.partition);
                return Ok(());
            }
            Ok(Finished::Stopped) => return Ok(()),
            Err(ReceiverError::Fatal(m)) => {
                if let Some(i) = out.blocks.intake(out.partition) {
                    i.failed(&m);
                }
                tracing::error!(partition = out.partition, kind = receiver.kind(), error = %m, "The receiver failed and cannot be restarted.");
                out.blocks.end_partition(out.partition);
                return Err(ReceiverError::Fatal(m));
            }
            Err(ReceiverError::Transient(m)) => {
                if let Some(i) = out.blocks.intake(out.partition) {
                    i.failed(&m);
                }
                tracing::warn!(partition = out.partition, kind = receiver.kind(), error = %m, backoff_ms = backoff.as_millis() as u64, "The receiver failed; restarting it after a pause.");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Splits newline-delimited bytes into records (a trailing `\r` is dropped), appending complete
/// lines to `out` and returning how many bytes of `buf` were consumed; the rest is a partial
/// line waiting for more bytes.
pub fn split_lines(buf: &[u8], out: &mut RecordBatch, ts: i64) -> usize {
    let mut start = 0;
    while let Some(nl) = memchr(b'\n', &buf[start..]) {
        let mut line = &buf[start..start + nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        out.push(None, line, Some(ts));
        start += nl + 1;
    }
    start
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_a_partial_line_waits() {
        let mut out = RecordBatch::default();
        let used = split_lines(b"one\r\ntwo\nthr", &mut out, 0);
        assert_eq!(used, 9);
        assert_eq!(out.len(), 2);
        assert_eq!(out.value(0), b"one");
        assert_eq!(out.value(1), b"two");
    }
}
