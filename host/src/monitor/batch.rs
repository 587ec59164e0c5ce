//! What one committed batch did: the driver's per-batch report (progress line, `--report`
//! JSON line, summary) and what its checkpoint entry says, which the monitor keeps.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::checkpoint::SwapEvent;

/// What one batch did.
#[derive(Debug, Clone, Copy)]
pub struct BatchReport {
    /// The batch id.
    pub id: u64,
    /// Records in.
    pub records_in: u64,
    /// Records out (to the sinks).
    pub records_out: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
    /// From batch time to the job's start.
    pub scheduling_delay: Duration,
    /// The job's run time.
    pub processing: Duration,
    /// From batch time to the job's end.
    pub total_delay: Duration,
    /// When its commit finished, ms since the epoch.
    pub done_ms: i64,
    /// Time spent writing its checkpoint entry.
    pub checkpoint: Duration,
    /// Deliveries the broker marked as redelivered while the batch was open (AMQP:
    /// `delivery-count > 0` or not the first acquirer), dropped or not.
    pub redeliveries: u64,
    /// Redelivered messages dropped while the batch was open because their message id was in
    /// the duplicate-detection window.
    pub duplicates_dropped: u64,
}

/// What a committed batch's entry says, for the monitor's batch page.
#[derive(Debug, Clone, Default)]
pub struct BatchDetail {
    /// The sha256 of every plugin it ran with, by name.
    pub plugins: BTreeMap<String, String>,
    /// Its rollbacks and verdicts.
    pub events: Vec<SwapEvent>,
    /// Per partition, the offsets `[start, end)` it took.
    pub ranges: Vec<(u64, u64)>,
    /// It recomputed a batch a killed run had recorded.
    pub recomputed: bool,
    /// Its entry was written to a checkpoint log (`false` without `[checkpoint]`).
    pub checkpointed: bool,
}
