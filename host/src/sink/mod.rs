//! Sinks: where a pipeline's results go. Every sink sees the batch id, in two phases:
//! `write`, one or more times per partition as the batch's blocks are processed (partitions in
//! parallel from the worker pool, a partition's writes in order), then `commit` once the batch
//! is closed and every write done. A replayed batch comes again with the same id.
//!
//! The kinds, one file or folder each, with the config struct that builds it:
//! [`stdout`], [`files`] (one object per batch and partition, staged and then moved into place
//! at commit, so a batch's output is there whole or not at all), [`count`] (counts, for
//! benchmarks), [`plugin`] (sink plugins) and [`amqp`] (a repartition sink: records to N broker
//! queues by key hash); [`SinkConfig`] has one arm per kind. Dead letters
//! go through [`dead_letter::DeadLetters`]. How stdout and files write a record, and the JSON
//! encoding of bytes shared by every JSON output, are in [`format`].

pub mod amqp;
pub mod count;
pub mod dead_letter;
pub mod files;
pub mod format;
pub mod plugin;
pub mod stdout;

use std::sync::Arc;

use crate::batch::RecordBatch;
pub use crate::build::{BuildContext, BuildError};
use crate::plugin::{CallContext, PluginError};
use count::{CountConfig, CountSink};
use files::FilesSinkConfig;
pub use format::{Field, Fields, Format, OutputFormat, Unwritable};
use plugin::PluginSinkConfig;
use stdout::StdoutConfig;

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
    /// The sink's format cannot carry a record (a line feed in a value of a line-per-record
    /// format); the job dead-letters such records before writing ([`Sink::unwritable`]).
    #[error(
        "sink {sink} cannot write record {index} of partition {partition} in batch {batch}: {reason}"
    )]
    Unwritable {
        /// The sink.
        sink: String,
        /// The batch.
        batch: u64,
        /// The partition.
        partition: u32,
        /// The record's index in the records given to the sink.
        index: usize,
        /// Why.
        reason: Unwritable,
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
    /// Record `index` of the call `ctx` that sink `sink`'s format cannot carry.
    pub fn unwritable(
        sink: String,
        ctx: &crate::plugin::CallContext,
        index: usize,
        reason: Unwritable,
    ) -> SinkError {
        SinkError::Unwritable {
            sink,
            batch: ctx.batch_id,
            partition: ctx.partition,
            index,
            reason,
        }
    }

    /// Whether trying again can help.
    pub fn retryable(&self) -> bool {
        match self {
            SinkError::Plugin(e) => e.retryable(),
            SinkError::Io { .. } => true,
            SinkError::Broken { .. } | SinkError::Unwritable { .. } => false,
        }
    }
}

/// A sink.
pub trait Sink: Send + Sync {
    /// A name for messages.
    fn name(&self) -> String;
    /// The records of `batch` this sink cannot write exactly (its format cannot carry them),
    /// each with why, in order; called before `write`, which then gets the others, and the
    /// job dead-letters these. Default: none (a sink that writes any bytes).
    fn unwritable(&self, _batch: &RecordBatch) -> Vec<(usize, Unwritable)> {
        Vec::new()
    }
    /// The plugin behind this sink, when it is one (the monitor shows its calls and metrics).
    fn plugin(&self) -> Option<&crate::plugin::Plugin> {
        None
    }
    /// Writes one partition's records of a batch; nothing need be visible before `commit`.
    fn write(&self, ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError>;
    /// Makes the batch visible; must do no harm when called again for the same batch.
    fn commit(&self, stream: &str, batch_id: u64) -> Result<(), SinkError>;
    /// Drops what was written of a batch that will not commit (the run stopped with it open).
    fn abort(&self, _batch_id: u64) {}
    /// Whether batch `batch_id` is committed for good, when the sink can tell (`None`: it
    /// cannot, and a restart recomputes the batch and commits it again).
    fn committed(&self, _stream: &str, _batch_id: u64) -> Result<Option<bool>, SinkError> {
        Ok(None)
    }
    /// At start: cleans what a killed run left half-done (staged writes).
    fn recover(&self, _stream: &str) -> Result<(), SinkError> {
        Ok(())
    }
    /// At the end of a run, after the open batch was aborted: removes this run's staging.
    fn stop(&self, _stream: &str) {}
    /// Whether earlier runs left output here (a re-run without a checkpoint would mix with it).
    fn has_output(&self, _stream: &str) -> Result<bool, SinkError> {
        Ok(false)
    }
    /// `run --from-scratch`: removes the output of earlier runs; returns how many objects.
    fn clear(&self, _stream: &str) -> Result<usize, SinkError> {
        Ok(0)
    }
    /// Several hosts (`[ha]`): the store this sink's commits move staged objects in, so that a
    /// host taking a partition over can finish a move its killed owner committed (`None`: the
    /// sink stages nothing).
    fn location(&self) -> Option<crate::store::Location> {
        None
    }
    /// Several hosts: completes the staged writes of `batch_id` without making anything
    /// visible, and returns, per partition, the staged object and where its commit moves it.
    fn stage(&self, _batch_id: u64) -> Result<Vec<StagedPart>, SinkError> {
        Ok(Vec::new())
    }
    /// Several hosts: commits `batch_id` for the partitions `keep` holds to, and drops what
    /// was written for the others (partitions this host no longer owns).
    fn commit_only(
        &self,
        stream: &str,
        batch_id: u64,
        _keep: &dyn Fn(u32) -> bool,
    ) -> Result<(), SinkError> {
        self.commit(stream, batch_id)
    }
    /// A count sink's counters, so a benchmark can read them (`None`: not a count sink).
    fn counter(self: Arc<Self>) -> Option<Arc<CountSink>> {
        None
    }
}

/// A partition's staged output of a batch ([`Sink::stage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedPart {
    /// The partition.
    pub partition: u32,
    /// The staged object, a path in the sink's store.
    pub staged: String,
    /// Where the commit moves it.
    pub target: String,
}

/// A `[[sink]]`, checked: which kind, with that kind's settings.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// `kind = "stdout"`: lines on standard output.
    Stdout(StdoutConfig),
    /// `kind = "files"`: one object per batch and partition, committed atomically.
    Files(FilesSinkConfig),
    /// `kind = "count"`: counts records, writes nothing (for benchmarks).
    Count(CountConfig),
    /// `kind = "plugin"`: a sink plugin.
    Plugin(PluginSinkConfig),
    /// `kind = "amqp"`: records to N broker queues by key hash (a repartition through the
    /// broker).
    Amqp(amqp::AmqpSinkConfig),
}

impl SinkConfig {
    /// The kind builds itself; the message says what is wrong, naming the table.
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        match self {
            SinkConfig::Stdout(c) => c.build(ctx),
            SinkConfig::Files(c) => c.build(ctx),
            SinkConfig::Count(c) => c.build(ctx),
            SinkConfig::Plugin(c) => c.build(ctx),
            SinkConfig::Amqp(c) => c.build(ctx),
        }
    }
}
