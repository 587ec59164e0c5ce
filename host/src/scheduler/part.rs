//! What flows between a batch's steps: a partition's records with their lineage ([`Part`]),
//! and the error that stops a job ([`JobError`]).

use crate::batch::RecordBatch;
use crate::plugin::PluginError;
use crate::sink::SinkError;

/// A job failed and the pipeline must stop.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A plugin failed in a way retries did not cure.
    #[error("batch {batch}: {source}")]
    Plugin {
        /// The batch.
        batch: u64,
        /// The plugin's error (naming plugin, digest, partition and batch).
        source: PluginError,
    },
    /// A step dead-lettered more poison records of one batch than its `max-poison-per-batch`.
    #[error(
        "batch {batch}: {source}; that is one more record failing alone than the step's `max-poison-per-batch` of {limit} for a batch: a plugin that fails on (nearly) every record is broken, not poisoned, so the pipeline stops"
    )]
    Poisoned {
        /// The batch.
        batch: u64,
        /// The step's limit.
        limit: u32,
        /// The failure of the record over the limit.
        source: PluginError,
    },
    /// A stateful step's spill file could not be written or read back.
    #[error(
        "batch {batch}: step {step}: {source}; the state held there is not reachable, so the pipeline stops (a restart rebuilds the state from the checkpoint)"
    )]
    State {
        /// The batch.
        batch: u64,
        /// The step.
        step: usize,
        /// The spill error (naming the file).
        source: crate::state::spill::SpillError,
    },
    /// A sink failed.
    #[error("batch {batch}: {source}")]
    Sink {
        /// The batch.
        batch: u64,
        /// The sink's error.
        source: SinkError,
    },
}

/// Where each record of a partition's data came from: its source partition and offset.
#[derive(Debug, Clone)]
pub enum Lineage {
    /// Record `i` is offset `start + i` of `partition`.
    Range {
        /// The source partition.
        partition: u32,
        /// The first record's offset.
        start: u64,
    },
    /// Record `i` came from `self.0[i]`.
    Explicit(Vec<(u32, u64)>),
    /// Record `i` came from record `origins[i]` of the earlier lineage: a filter's or a
    /// flat map's, kept as the plugin gave it (resolved only when a record is dead-lettered).
    Via(Box<Lineage>, Vec<u32>),
}

impl Lineage {
    /// Where record `i` came from.
    pub fn at(&self, i: usize) -> (u32, u64) {
        match self {
            Lineage::Range { partition, start } => (*partition, start + i as u64),
            Lineage::Explicit(v) => v.get(i).copied().unwrap_or((u32::MAX, u64::MAX)),
            Lineage::Via(base, origins) => origins
                .get(i)
                .map_or((u32::MAX, u64::MAX), |&o| base.at(o as usize)),
        }
    }

    /// The lineage after a step with these origins (empty: a map, unchanged).
    pub fn follow(self, origins: Vec<u32>) -> Lineage {
        if origins.is_empty() {
            return self;
        }
        Lineage::Via(Box::new(self), origins)
    }
}

/// One partition's data between steps.
#[derive(Debug)]
pub struct Part {
    /// The partition (after a repartition, the new one).
    pub partition: u32,
    /// The records.
    pub records: RecordBatch,
    /// Where they came from.
    pub lineage: Lineage,
}

/// Numbers gathered partitions' records and lineages as parts 0, 1, ...
pub(crate) fn into_parts(gathered: Vec<(RecordBatch, Vec<(u32, u64)>)>) -> Vec<Part> {
    gathered
        .into_iter()
        .enumerate()
        .map(|(p, (records, lineage))| Part {
            partition: p as u32,
            records,
            lineage: Lineage::Explicit(lineage),
        })
        .collect()
}

/// A stateful step's output, one part per output partition.
pub(super) fn output_parts(out: Vec<RecordBatch>) -> Vec<Part> {
    out.into_iter()
        .enumerate()
        .map(|(p, records)| Part {
            partition: p as u32,
            lineage: Lineage::Range {
                partition: p as u32,
                start: 0,
            },
            records,
        })
        .collect()
}
