//! What a run reports: one line per batch (progress on a terminal, `--report` JSON lines), and
//! the run's summary.

use std::io::IsTerminal;
use std::time::Duration;

/// How a run is bounded and shown.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this many batches.
    pub max_batches: Option<u64>,
    /// Print one progress line per batch on stderr (when it is a terminal, by default).
    pub progress: bool,
    /// Write one JSON line per finished batch to this file.
    pub report: Option<std::path::PathBuf>,
    /// Start over: remove the checkpoint log, the write-ahead log and earlier output first.
    pub from_scratch: bool,
    /// Several hosts (`[ha]`): this process's member, from [`super::ha::prepare`].
    pub ha: Option<super::ha::Setup>,
    /// Where the web UI listens (`--ui`, a terminal's default port).
    pub ui: crate::admin::UiOptions,
}

pub use crate::monitor::batch::BatchReport;

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Batches run.
    pub batches: u64,
    /// Records in.
    pub records_in: u64,
    /// Records out.
    pub records_out: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
    /// The most bytes the block manager held.
    pub peak_buffered: u64,
    /// How often a receiver waited for room.
    pub backpressure_waits: u64,
    /// Every batch.
    pub reports: Vec<BatchReport>,
    /// From the start to the first finished batch.
    pub first_batch: Option<Duration>,
    /// When the first record came in from a receiver.
    pub first_record: Option<std::time::Instant>,
    /// Every latency marker's time from its send stamp to its batch's commit, ms.
    pub marker_latencies_ms: Vec<f64>,
}

pub(crate) fn write_report(
    w: &mut impl std::io::Write,
    r: &BatchReport,
    time_ms: i64,
    latencies: &[f64],
) -> std::io::Result<()> {
    let line = serde_json::json!({
        "batch": r.id,
        "time_ms": time_ms,
        "done_ms": r.done_ms,
        "records_in": r.records_in,
        "records_out": r.records_out,
        "dead_letters": r.dead_letters,
        "processing_ms": r.processing.as_secs_f64() * 1e3,
        "scheduling_delay_ms": r.scheduling_delay.as_secs_f64() * 1e3,
        "total_delay_ms": r.total_delay.as_secs_f64() * 1e3,
        "checkpoint_ms": r.checkpoint.as_secs_f64() * 1e3,
        "redeliveries": r.redeliveries,
        "duplicates_dropped": r.duplicates_dropped,
        "marker_latency_ms": latencies,
    });
    serde_json::to_writer(&mut *w, &line)?;
    w.write_all(b"\n")?;
    w.flush()
}

pub(crate) fn show(r: &BatchReport, progress: bool) {
    if progress && std::io::stderr().is_terminal() {
        eprintln!(
            "batch {:>6} | {:>10} records in | {:>10} out | processing {:>7.1} ms | delay {:>7.1} ms{}{}",
            r.id,
            r.records_in,
            r.records_out,
            r.processing.as_secs_f64() * 1e3,
            r.total_delay.as_secs_f64() * 1e3,
            if r.dead_letters > 0 {
                format!(" | {} dead letters", r.dead_letters)
            } else {
                String::new()
            },
            redelivery_text(r)
        );
    } else {
        tracing::info!(
            batch = r.id,
            records_in = r.records_in,
            records_out = r.records_out,
            dead_letters = r.dead_letters,
            redeliveries = r.redeliveries,
            duplicates_dropped = r.duplicates_dropped,
            processing_ms = crate::telemetry::ms(r.processing),
            scheduling_delay_ms = crate::telemetry::ms(r.scheduling_delay),
            total_delay_ms = crate::telemetry::ms(r.total_delay),
            "Batch done."
        );
    }
}

fn redelivery_text(r: &BatchReport) -> String {
    match (r.redeliveries, r.duplicates_dropped) {
        (0, 0) => String::new(),
        (n, 0) => format!(" | {n} redeliveries"),
        (n, d) => format!(" | {n} redeliveries, {d} duplicates dropped"),
    }
}
