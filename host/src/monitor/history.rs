//! The monitor's bounded history: the last [`KEEP_BATCHES`] batches, the swap events, the
//! checkpoints written, the run's totals, and the delay histograms `/metrics` exports.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::batch::{BatchDetail, BatchReport};
use crate::checkpoint::SwapEvent;

/// How many batches the history keeps (the UI's table and charts; the totals count all).
pub const KEEP_BATCHES: usize = 1000;
/// How many swap events it keeps.
pub const KEEP_SWAPS: usize = 200;

/// The histograms' upper bounds, seconds (Prometheus `le`).
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A cumulative histogram of durations in seconds, Prometheus style.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Histogram {
    /// Per bound of [`BUCKETS`], how many observations were at most it.
    pub counts: [u64; BUCKETS.len()],
    /// All observations.
    pub count: u64,
    /// Their sum, seconds.
    pub sum: f64,
}

impl Histogram {
    /// Adds one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        for (bound, c) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// One batch, as the UI's table and batch page show it.
#[derive(Debug, Clone, Serialize)]
pub struct BatchRow {
    /// The batch id.
    pub batch: u64,
    /// Its batch time, ms since the epoch.
    pub time_ms: i64,
    /// When its commit finished, ms since the epoch.
    pub done_ms: i64,
    /// Records in.
    pub records_in: u64,
    /// Records out (to the first sink).
    pub records_out: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
    /// From batch time to the job's start, ms.
    pub scheduling_delay_ms: f64,
    /// The job's run time, ms.
    pub processing_ms: f64,
    /// From batch time to the job's end, ms.
    pub total_delay_ms: f64,
    /// Writing its checkpoint entry, ms.
    pub checkpoint_ms: f64,
    /// `committed`, `recomputed` (a killed run's batch run again), or `rolled back` (a new
    /// plugin version failed in it and the batch ran again on the one before).
    pub outcome: &'static str,
    /// The plugins it ran with: name → first 12 hex digits of the sha256.
    pub plugins: BTreeMap<String, String>,
    /// Per partition, the offsets `[start, end)` it took.
    pub partitions: Vec<(u64, u64)>,
    /// Its swap events.
    pub events: Vec<SwapEvent>,
    /// Its latency markers' send-to-commit times, ms.
    pub marker_latency_ms: Vec<f64>,
    /// Redeliveries seen while it was open.
    pub redeliveries: u64,
    /// Duplicates dropped while it was open.
    pub duplicates_dropped: u64,
}

/// A swap event and the batch it came in.
#[derive(Debug, Clone, Serialize)]
pub struct SwapRow {
    /// The batch.
    pub batch: u64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// The event.
    #[serde(flatten)]
    pub event: Swap,
}

/// What happened to a plugin version.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Swap {
    /// A verdict the checkpoint entry records (`rolled-back`, `passed`).
    Recorded(SwapEvent),
    /// A new version ran for the first time in this batch (`event` = `live`).
    Live {
        /// Always `live`.
        event: &'static str,
        /// The plugin.
        plugin: String,
        /// The new version's sha256.
        digest: String,
        /// The sha256 of the version it replaced.
        previous: String,
    },
}

/// The run's totals since it started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Batches committed.
    pub batches: u64,
    /// Records in.
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
    /// Checkpoint entries written.
    pub checkpoints: u64,
    /// Batches recomputed after a restart or a rollback.
    pub recomputed: u64,
}

/// What the monitor remembers.
#[derive(Debug, Default)]
pub struct History {
    /// The last batches, oldest first.
    pub batches: VecDeque<BatchRow>,
    /// The last swap events, oldest first.
    pub swaps: VecDeque<SwapRow>,
    /// Since the start.
    pub totals: Totals,
    /// Scheduling delay, seconds.
    pub scheduling: Histogram,
    /// Processing time, seconds.
    pub processing: Histogram,
    /// Total delay, seconds.
    pub total_delay: Histogram,
    /// Checkpoint write time, seconds.
    pub checkpoint: Histogram,
}

impl History {
    /// Adds a committed batch.
    pub fn add(&mut self, r: &BatchReport, d: &BatchDetail, time_ms: i64, latencies: &[f64]) {
        let rolled_back = d
            .events
            .iter()
            .any(|e| matches!(e, SwapEvent::RolledBack { .. }));
        let outcome = match (rolled_back, d.recomputed) {
            (true, _) => "rolled back",
            (false, true) => "recomputed",
            (false, false) => "committed",
        };
        let t = &mut self.totals;
        t.batches += 1;
        t.records_in += r.records_in;
        t.records_out += r.records_out;
        t.dead_letters += r.dead_letters;
        t.checkpoints += u64::from(d.checkpointed);
        t.recomputed += u64::from(outcome != "committed");
        self.scheduling.observe(r.scheduling_delay.as_secs_f64());
        self.processing.observe(r.processing.as_secs_f64());
        self.total_delay.observe(r.total_delay.as_secs_f64());
        if d.checkpointed {
            self.checkpoint.observe(r.checkpoint.as_secs_f64());
        }
        let before = self.batches.back().map(|b| &b.plugins);
        let went_live: Vec<Swap> = d
            .plugins
            .iter()
            .filter_map(|(name, digest)| {
                let previous = before?.get(name)?;
                let short = crate::swap::short(digest);
                (previous != short).then(|| Swap::Live {
                    event: "live",
                    plugin: name.clone(),
                    digest: short.to_owned(),
                    previous: previous.clone(),
                })
            })
            .collect();
        let recorded = d.events.iter().cloned().map(Swap::Recorded);
        for event in went_live.into_iter().chain(recorded) {
            let row = SwapRow {
                batch: r.id,
                at_ms: r.done_ms,
                event,
            };
            push_bounded(&mut self.swaps, row, KEEP_SWAPS);
        }
        let row = BatchRow {
            batch: r.id,
            time_ms,
            done_ms: r.done_ms,
            records_in: r.records_in,
            records_out: r.records_out,
            dead_letters: r.dead_letters,
            scheduling_delay_ms: crate::telemetry::ms(r.scheduling_delay),
            processing_ms: crate::telemetry::ms(r.processing),
            total_delay_ms: crate::telemetry::ms(r.total_delay),
            checkpoint_ms: crate::telemetry::ms(r.checkpoint),
            outcome,
            plugins: d
                .plugins
                .iter()
                .map(|(k, v)| (k.clone(), crate::swap::short(v).to_owned()))
                .collect(),
            partitions: d.ranges.clone(),
            events: d.events.clone(),
            marker_latency_ms: latencies.to_vec(),
            redeliveries: r.redeliveries,
            duplicates_dropped: r.duplicates_dropped,
        };
        push_bounded(&mut self.batches, row, KEEP_BATCHES);
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, keep: usize) {
    if q.len() == keep {
        q.pop_front();
    }
    q.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(h: &mut History, id: u64, grep: &str, events: Vec<SwapEvent>, recomputed: bool) {
        let report = BatchReport {
            id,
            records_in: 10,
            records_out: 9,
            dead_letters: 1,
            scheduling_delay: std::time::Duration::from_millis(2),
            processing: std::time::Duration::from_millis(30),
            total_delay: std::time::Duration::from_millis(32),
            done_ms: 1_000 + id as i64,
            checkpoint: std::time::Duration::from_millis(1),
            redeliveries: 0,
            duplicates_dropped: 0,
        };
        let detail = BatchDetail {
            plugins: [("grep".to_owned(), grep.to_owned())].into(),
            events,
            ranges: vec![(0, 10)],
            recomputed,
            checkpointed: true,
        };
        h.add(&report, &detail, 900, &[]);
    }

    #[test]
    fn a_new_digest_is_a_live_swap_and_a_rollback_marks_its_batch() {
        let mut h = History::default();
        add(&mut h, 0, "aaaaaaaaaaaaaaaa", Vec::new(), false);
        add(&mut h, 1, "aaaaaaaaaaaaaaaa", Vec::new(), true);
        add(&mut h, 2, "bbbbbbbbbbbbbbbb", Vec::new(), false);
        let rollback = SwapEvent::RolledBack {
            plugin: "grep".into(),
            digest: "cccccccccccccccc".into(),
            restored: "bbbbbbbbbbbbbbbb".into(),
            error: "panicked".into(),
        };
        add(&mut h, 3, "bbbbbbbbbbbbbbbb", vec![rollback], false);
        let outcomes: Vec<&str> = h.batches.iter().map(|b| b.outcome).collect();
        assert_eq!(
            outcomes,
            ["committed", "recomputed", "committed", "rolled back"]
        );
        let swaps = serde_json::to_value(&h.swaps).unwrap();
        assert_eq!(swaps[0]["event"], "live");
        assert_eq!(swaps[0]["batch"], 2);
        assert_eq!(swaps[0]["digest"], "bbbbbbbbbbbb");
        assert_eq!(swaps[0]["previous"], "aaaaaaaaaaaa");
        assert_eq!(swaps[1]["event"], "rolled-back");
        assert_eq!(swaps.as_array().unwrap().len(), 2);
        assert_eq!(h.totals.batches, 4);
        assert_eq!(h.totals.recomputed, 2);
        assert_eq!(h.totals.dead_letters, 4);
    }

    #[test]
    fn a_histogram_counts_each_observation_in_every_bucket_at_or_above_it() {
        let mut h = Histogram::default();
        h.observe(0.03);
        h.observe(0.3);
        h.observe(500.0);
        assert_eq!(h.count, 3);
        assert_eq!(h.counts[2], 0, "le=0.025");
        assert_eq!(h.counts[3], 1, "le=0.05");
        assert_eq!(h.counts[6], 2, "le=0.5");
        assert_eq!(h.counts[BUCKETS.len() - 1], 2, "le=120; +Inf is count");
        assert!((h.sum - 500.33).abs() < 1e-9);
    }
}
