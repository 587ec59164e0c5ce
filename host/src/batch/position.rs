//! Where records came from in their source: what the checkpoint log records per batch and
//! partition so that a restart re-reads exactly the records a batch held. Plain data, never
//! code, versioned with the checkpoint log.

use serde::{Deserialize, Serialize};

/// Where a replayable source stands after a chunk of records: what the checkpoint log records
/// per batch and partition, so that a restart re-reads exactly the records a batch held. Plain
/// data (never code), versioned with the checkpoint log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Position {
    /// `files`: bytes `from..to` of `file` were read; `done` when `to` is its end.
    File {
        /// The file's name (in the source directory).
        file: String,
        /// The first byte read.
        from: u64,
        /// The byte after the last one read.
        to: u64,
        /// Whether the file was read to its end.
        done: bool,
    },
    /// `eventhubs`: the last event taken.
    EventHubs(EventHubsPosition),
}

/// Where an Event Hubs partition is: the position of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventHubsPosition {
    /// `x-opt-offset`.
    pub offset: String,
    /// `x-opt-sequence-number`.
    pub sequence_number: i64,
    /// `x-opt-enqueued-time`, ms since the epoch.
    pub enqueued_time_ms: i64,
}
