//! The scheduler: the batch clock, the tracker that gives each batch the blocks of its
//! interval, and the job runner that runs batches in order.
//!
//! - Receivers and the block generator are async tasks on the tokio runtime.
//! - Every batch interval the clock task takes every partition's records (cutting a last
//!   block) as batch N, in order, and queues it. Closing a batch never waits for a job.
//! - The job runner (the calling thread) runs batches one at a time, in batch order, each as
//!   one task per partition on a pool of `workers` threads ([`job`]). A slow batch makes the
//!   next wait: the scheduling delay grows, is shown, and when processing takes longer than the
//!   interval for three batches running, the host says so with the numbers (Spark's app just
//!   "appears stuck").
//! - Stopping: `--max-batches` stops after that many batches. A stop request (Ctrl-C) stops
//!   the receivers, closes one last batch with what they had received, runs every queued batch
//!   and returns: nothing received is dropped and no batch is left half-written. A second
//!   request stops after the running batch. When every partition has ended (a generator's
//!   limit, a closed socket with `end-on-close`), the last records make a last batch.

pub mod job;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::block::{BlockManager, PartitionInput};
use crate::config::plan::{Plan, SourcePlan};
use crate::receiver::{self, PartitionWriter, Receiver, now_ms};
use job::{JobError, Lineage, Part};

/// How a run is bounded and shown.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this many batches.
    pub max_batches: Option<u64>,
    /// Print one progress line per batch on stderr (when it is a terminal, by default).
    pub progress: bool,
}

/// Stop requests: the first asks for a graceful stop, the second for a stop after the running
/// batch.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    graceful: Arc<AtomicBool>,
    now: Arc<AtomicBool>,
}

impl StopSignal {
    /// Records one stop request.
    pub fn request(&self) {
        if self.graceful.swap(true, Ordering::SeqCst) {
            self.now.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.graceful.load(Ordering::SeqCst)
    }
}

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
}

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
}

/// The pipeline stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A batch failed.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A receiver failed for good.
    #[error("receiver of partition {partition}: {message}")]
    Receiver {
        /// The partition.
        partition: u32,
        /// Why.
        message: String,
    },
}

struct Closed {
    id: u64,
    time_ms: i64,
    closed_at: Instant,
    inputs: Vec<PartitionInput>,
}

/// Runs `plan` until it ends, is stopped, or fails. Receivers and clocks run on `rt`; jobs run
/// on this thread and the worker pool.
pub fn run(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    opts: &RunOptions,
    stop: &StopSignal,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let file = &plan.file;
    let blocks = Arc::new(BlockManager::new(plan.partitions, file.memory_budget));
    let (stop_tx, stop_rx) = watch::channel(false);
    let failure: Arc<std::sync::Mutex<Option<RunError>>> = Arc::default();

    tracing::info!(
        pipeline = %plan.name,
        stream = %plan.stream,
        partitions = plan.partitions,
        workers = plan.workers,
        batch_interval_ms = file.batch_interval.as_millis() as u64,
        block_interval_ms = file.block_interval.as_millis() as u64,
        memory_budget_mib = file.memory_budget >> 20,
        plugins = ?plan.digests,
        "Starting: {} receivers run as async tasks (they hold no core); {} worker threads run the batch tasks.",
        plan.partitions,
        plan.workers
    );

    for partition in 0..plan.partitions {
        let receiver = match &plan.source {
            SourcePlan::Generator(g) => {
                Receiver::Generator(receiver::generator::GeneratorReceiver::new(g, partition))
            }
            SourcePlan::Files { location, poll } => {
                Receiver::Files(receiver::files::FilesReceiver::new(
                    location.clone(),
                    partition,
                    plan.partitions,
                    *poll,
                ))
            }
            SourcePlan::Tcp(t) => {
                Receiver::Tcp(receiver::tcp::TcpReceiver::new(&t.address, t.end_on_close))
            }
            SourcePlan::Amqp(a) => {
                Receiver::Amqp(receiver::amqp::AmqpReceiver::new(a.clone(), partition))
            }
            SourcePlan::EventHubs(e) => Receiver::EventHubs(
                receiver::amqp::eventhubs::EventHubsReceiver::new(e.clone(), partition),
            ),
            SourcePlan::Plugin(stage) => Receiver::Plugin(receiver::plugin::PluginReceiver::new(
                stage.clone(),
                partition,
            )),
        };
        let writer = PartitionWriter {
            blocks: blocks.clone(),
            partition,
        };
        let failure = failure.clone();
        let rx = stop_rx.clone();
        rt.spawn(async move {
            if let Err(e) = receiver::supervise(receiver, writer, rx).await {
                let mut f = failure.lock().unwrap_or_else(|e| e.into_inner());
                f.get_or_insert(RunError::Receiver {
                    partition,
                    message: e.to_string(),
                });
            }
        });
    }

    // The block generator.
    {
        let blocks = blocks.clone();
        let interval = file.block_interval;
        let mut rx = stop_rx.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => blocks.cut_blocks(now_ms()),
                    _ = rx.changed() => break,
                }
            }
        });
    }

    // The batch clock and tracker.
    let (batch_tx, mut batch_rx) = mpsc::unbounded_channel::<Closed>();
    let closing = Arc::new(AtomicBool::new(false));
    {
        let blocks = blocks.clone();
        let interval = file.batch_interval;
        let closing = closing.clone();
        let failure = failure.clone();
        rt.spawn(async move {
            let origin = tokio::time::Instant::now();
            let mut id = 0u64;
            loop {
                let due = origin + interval * (id as u32 + 1);
                let last = tokio::select! {
                    _ = tokio::time::sleep_until(due) => false,
                    _ = wait_flag(&closing) => {
                        // Let the receivers finish the chunk they are appending.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        true
                    }
                };
                let ended = blocks.all_ended();
                let failed = failure.lock().map(|f| f.is_some()).unwrap_or(true);
                let inputs = blocks.take_batch(now_ms());
                let closed = Closed {
                    id,
                    time_ms: now_ms(),
                    closed_at: Instant::now(),
                    inputs,
                };
                if batch_tx.send(closed).is_err() {
                    break;
                }
                id += 1;
                if last || (ended && !blocks.has_pending()) || failed {
                    break;
                }
            }
        });
    }

    let mut summary = RunSummary::default();
    let mut slow_streak = 0u32;
    let progress = opts.progress;
    let mut stopping = false;
    loop {
        if stop.requested() && !stopping {
            stopping = true;
            tracing::info!(
                "Stopping: the receivers stop, the records they received make a last batch, and every queued batch runs."
            );
            let _ = stop_tx.send(true);
            closing.store(true, Ordering::SeqCst);
        }
        let next = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(100), batch_rx.recv()).await
        });
        let closed = match next {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(_) => {
                if let Some(e) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = stop_tx.send(true);
                    return Err(e);
                }
                continue;
            }
        };
        let job_start = Instant::now();
        let scheduling_delay = job_start.duration_since(closed.closed_at);
        let bytes: u64 = closed.inputs.iter().map(|p| p.bytes).sum();
        let parts: Vec<Part> = closed
            .inputs
            .into_iter()
            .map(|p| Part {
                partition: p.partition,
                lineage: Lineage::Range {
                    partition: p.partition,
                    start: p.first_offset,
                },
                records: p.records,
            })
            .collect();
        let result = job::run(plan, closed.id, closed.time_ms, parts);
        blocks.release(bytes);
        let stats = match result {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "The pipeline stops: a batch failed.");
                let _ = stop_tx.send(true);
                closing.store(true, Ordering::SeqCst);
                return Err(e.into());
            }
        };
        let processing = job_start.elapsed();
        let report = BatchReport {
            id: closed.id,
            records_in: stats.records_in,
            records_out: stats.records_out,
            dead_letters: stats.dead_letters,
            scheduling_delay,
            processing,
            total_delay: closed.closed_at.elapsed(),
        };
        summary.batches += 1;
        summary.records_in += stats.records_in;
        summary.records_out += stats.records_out;
        summary.dead_letters += stats.dead_letters;
        summary.first_batch.get_or_insert(started.elapsed());
        summary.reports.push(report);
        show(&report, progress);
        if processing > file.batch_interval {
            slow_streak += 1;
            if slow_streak == 3 {
                tracing::warn!(
                    processing_ms = processing.as_millis() as u64,
                    batch_interval_ms = file.batch_interval.as_millis() as u64,
                    scheduling_delay_ms = scheduling_delay.as_millis() as u64,
                    partitions = plan.partitions,
                    workers = plan.workers,
                    "Batches take longer to process than the batch interval, so they queue up and the delay grows: add workers (`workers`), lengthen `batch-interval`, or lighten the plugins."
                );
            }
        } else {
            slow_streak = 0;
        }
        if opts.max_batches.is_some_and(|m| summary.batches >= m) && !stopping {
            tracing::info!(
                batches = summary.batches,
                "Reached --max-batches; stopping."
            );
            let _ = stop_tx.send(true);
            break;
        }
        if stop.now.load(Ordering::SeqCst) {
            tracing::info!("Stopped after the running batch, as asked twice.");
            break;
        }
    }
    let _ = stop_tx.send(true);
    closing.store(true, Ordering::SeqCst);
    if let Some(e) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(e);
    }
    summary.peak_buffered = blocks.peak();
    summary.backpressure_waits = blocks.backpressure_waits();
    Ok(summary)
}

async fn wait_flag(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn show(r: &BatchReport, progress: bool) {
    if progress && std::io::stderr().is_terminal() {
        eprintln!(
            "batch {:>6} | {:>10} records in | {:>10} out | processing {:>7.1} ms | delay {:>7.1} ms{}",
            r.id,
            r.records_in,
            r.records_out,
            r.processing.as_secs_f64() * 1e3,
            r.total_delay.as_secs_f64() * 1e3,
            if r.dead_letters > 0 {
                format!(" | {} dead letters", r.dead_letters)
            } else {
                String::new()
            }
        );
    } else {
        tracing::info!(
            batch = r.id,
            records_in = r.records_in,
            records_out = r.records_out,
            dead_letters = r.dead_letters,
            processing_ms = r.processing.as_secs_f64() * 1e3,
            scheduling_delay_ms = r.scheduling_delay.as_secs_f64() * 1e3,
            total_delay_ms = r.total_delay.as_secs_f64() * 1e3,
            "Batch done."
        );
    }
}
