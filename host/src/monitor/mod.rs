//! The monitor: what a running pipeline shows of itself, in the web UI, `/metrics`, the JSON
//! API under `/api/v1/` and `sluice status`.
//!
//! - [`Monitor`] is fed by the driver once per committed batch ([`Monitor::batch_done`]) and
//!   reads the rest live when asked: the receivers' intake ([`crate::block::Intake`]), the
//!   plugins' calls and metrics ([`crate::plugin::PluginMetrics`]), the live steps. Nothing
//!   here is on the record path: the cost is one lock per batch, and whatever a reader asks.
//! - [`batch`]: what one committed batch did (the driver's report of it);
//! - [`history`]: the bounded history (batches, swaps, checkpoints) and the delay histograms;
//! - [`api`]: the JSON documents of `/api/v1/`;
//! - [`prometheus`]: the text exposition of `/metrics`;
//! - [`assets`]: the UI's page, script and style, embedded in the binary;
//! - [`status`]: `sluice status`, the terminal's view of the API.

pub mod api;
pub mod assets;
pub mod batch;
pub mod history;
pub mod prometheus;
pub mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::block::BlockManager;
use crate::plan::{Plan, StepPlan};
use crate::plugin::Plugin;
use crate::sink::Sink;
use crate::swap::Live;
use batch::{BatchDetail, BatchReport};
use history::History;

/// What does not change while a pipeline runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    /// The pipeline's name.
    pub pipeline: String,
    /// Its stream.
    pub stream: String,
    /// The source's kind.
    pub source: String,
    /// The sinks' names.
    pub sinks: Vec<String>,
    /// Source partitions.
    pub partitions: u32,
    /// Worker threads.
    pub workers: usize,
    /// `batch-interval`, ms.
    pub batch_interval_ms: u64,
    /// `block-interval`, ms.
    pub block_interval_ms: u64,
    /// `memory-budget`, bytes.
    pub memory_budget: u64,
    /// Reliable mode (`wal = true`).
    pub wal: bool,
    /// When the run started, ms since the epoch.
    pub started_ms: i64,
    /// sluice's version.
    pub version: &'static str,
    /// This process.
    pub pid: u32,
}

/// Several hosts (`[ha]`): this member, the partitions it owns now, and what would show a
/// partition stuck between hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ownership {
    /// This member's id.
    pub member: String,
    /// The partitions it owns, ascending.
    pub owned: Vec<u32>,
    /// Partitions it has claimed but not taken yet: each waits for its previous receiver here
    /// to stop and for the batch holding that receiver's last records to commit.
    pub waiting: Vec<Waiting>,
    /// Partition commits the fence refused since the start (another host had taken the
    /// partition over first; the output was dropped, never written).
    pub commits_refused: u64,
    /// Partitions it lost since the start (taken over, or given up by the balance).
    pub partitions_lost: u64,
}

/// A partition claimed by this member and not taken yet (see [`Ownership::waiting`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    /// The partition.
    pub partition: u32,
    /// Batches committed here since it was claimed.
    pub batches: u64,
}

/// A running pipeline's view of itself; shared by the driver (which feeds it) and the HTTP
/// server (which reads it).
pub struct Monitor {
    /// What does not change.
    pub info: Info,
    blocks: Arc<BlockManager>,
    live: Arc<Live>,
    sinks: Vec<Arc<dyn Sink>>,
    dead_letters: Arc<crate::sink::dead_letter::DeadLetters>,
    checkpoint_location: Option<String>,
    history: Mutex<History>,
    ownership: Mutex<Option<Ownership>>,
    ready: AtomicBool,
    stopping: AtomicBool,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").field("info", &self.info).finish()
    }
}

impl Monitor {
    /// The monitor of `plan`'s run, reading `blocks` and `live`.
    pub fn new(plan: &Plan, blocks: Arc<BlockManager>, live: Arc<Live>) -> Arc<Monitor> {
        let file = &plan.file;
        Arc::new(Monitor {
            info: Info {
                pipeline: plan.name.clone(),
                stream: plan.stream.clone(),
                source: plan.source.kind().to_owned(),
                sinks: plan.sinks.iter().map(|s| s.name()).collect(),
                partitions: plan.partitions,
                workers: plan.workers,
                batch_interval_ms: file.batch_interval.as_millis() as u64,
                block_interval_ms: file.block_interval.as_millis() as u64,
                memory_budget: file.memory_budget,
                wal: plan.wal,
                started_ms: crate::clock::now_ms(),
                version: env!("CARGO_PKG_VERSION"),
                pid: std::process::id(),
            },
            blocks,
            live,
            sinks: plan.sinks.clone(),
            dead_letters: plan.dead_letters.clone(),
            checkpoint_location: plan.checkpoint.as_ref().map(|c| c.to_string()),
            history: Mutex::new(History::default()),
            ownership: Mutex::new(None),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        })
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the driver once per committed batch: what it did, what its entry says, its
    /// batch time and its latency markers' send-to-commit times (ms).
    pub fn batch_done(
        &self,
        report: &BatchReport,
        detail: &BatchDetail,
        time_ms: i64,
        latencies: &[f64],
    ) {
        self.history().add(report, detail, time_ms, latencies);
        self.ready.store(true, Ordering::Release);
    }

    /// Called when the run starts stopping: `/readyz` answers 503 from then on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Several hosts: called whenever the partitions this member owns change.
    pub fn set_ownership(&self, ownership: Ownership) {
        *self.ownership.lock().unwrap_or_else(|e| e.into_inner()) = Some(ownership);
    }

    /// Whether the run is ready: its first batch committed, no receiver failing now, and
    /// not stopping. The reason when it is not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("the pipeline is stopping".into());
        }
        if !self.ready.load(Ordering::Acquire) {
            return Err("no batch has committed yet".into());
        }
        let failing: Vec<u32> = (0..self.info.partitions)
            .filter(|&p| self.blocks.intake(p).is_some_and(|i| i.failing()))
            .collect();
        if !failing.is_empty() {
            return Err(format!(
                "the receivers of partitions {failing:?} are failing (see /api/v1/receivers)"
            ));
        }
        Ok(())
    }

    /// The newest dead letters, newest first.
    pub fn dead_letter_samples(&self) -> Vec<serde_json::Value> {
        self.dead_letters.samples()
    }

    /// Every plugin the run calls now: the live steps' transformations (the versions new
    /// batches pin), then the plugin sinks. Each once, by name.
    pub fn plugins(&self) -> Vec<Plugin> {
        let steps = self.live.steps();
        let mut out: Vec<Plugin> = Vec::new();
        let transforms = steps.iter().filter_map(|s| match s {
            StepPlan::Plugin(stage, _) => Some(stage.plugin().clone()),
            _ => None,
        });
        let sinks = self.sinks.iter().filter_map(|s| s.plugin().cloned());
        for p in transforms.chain(sinks) {
            if !out.iter().any(|q| q.name() == p.name()) {
                out.push(p);
            }
        }
        out
    }
}
