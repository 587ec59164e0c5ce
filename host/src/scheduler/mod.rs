//! The scheduler: the batch clock, the tracker that closes each batch over the blocks of its
//! interval, and the job runner.
//!
//! - Receivers and the block generator are async tasks on the tokio runtime.
//! - Blocks reach the job runner (the calling thread) as they are cut. It runs the pipeline's
//!   narrow steps and sink writes on them at once, one task per partition on a pool of
//!   `workers` threads ([`job::run_blocks`]), and gives their bytes back to the budget.
//! - Every batch interval the clock closes batch N. When the runner reaches the close (after
//!   every block of N), it runs what needs the whole batch (a count by key: from counts that
//!   were combined block by block) and commits every sink ([`job::close`]). Batches commit in
//!   order, and a batch's output is visible whole or not at all.
//! - A slow runner makes blocks and closes wait in the channel, while the budget stops the
//!   receivers: the scheduling delay grows and is shown, and when a batch's processing takes
//!   longer than the interval three batches running, the host says so with the numbers
//!   (Spark's app just "appears stuck").
//! - Stopping: `--max-batches` stops after that many batches. A stop request (Ctrl-C) stops
//!   the receivers, closes one last batch with what they had received, runs every block
//!   received and returns: nothing received is dropped and no batch is left half-written (the
//!   open batch's writes are aborted). A second request stops after the next commit. When
//!   every partition has ended (a generator's limit, a closed socket with `end-on-close`), the
//!   last records make a last batch.

pub mod job;

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::block::{BlockManager, Cut};
use crate::checkpoint;
use crate::config::location::Location;
use crate::config::plan::{Plan, SourcePlan};
use crate::receiver::{self, PartitionWriter, Receiver, now_ms};
use crate::wal::{Wal, WalOptions};
use job::{JobError, OpenBatch, Shape};

/// How a run is bounded and shown.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this many batches.
    pub max_batches: Option<u64>,
    /// Print one progress line per batch on stderr (when it is a terminal, by default).
    pub progress: bool,
    /// Write one JSON line per finished batch to this file.
    pub report: Option<std::path::PathBuf>,
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
    /// When its commit finished, ms since the epoch.
    pub done_ms: i64,
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
    /// Every latency marker's time from its send stamp to its batch's commit, ms.
    pub marker_latencies_ms: Vec<f64>,
}

/// The pipeline stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A batch failed.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The write-ahead log failed (a write, or opening it for recovery).
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    /// The checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The `--report` file could not be written.
    #[error("report file {}: {message}", path.display())]
    Report {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// A receiver failed for good.
    #[error("receiver of partition {partition}: {message}")]
    Receiver {
        /// The partition.
        partition: u32,
        /// Why.
        message: String,
    },
    /// Another driver owns this pipeline's checkpoint log: it committed the next entry first.
    #[error(
        "fenced: another driver committed {location} first; this driver stops and touches nothing more"
    )]
    Fenced {
        /// The checkpoint log entry the other driver wrote.
        location: String,
    },
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
    let (manager, mut cuts) = BlockManager::new(
        plan.partitions,
        file.memory_budget,
        max_block_bytes(file.memory_budget, plan.partitions),
    );
    let blocks = Arc::new(manager);
    let (stop_tx, stop_rx) = watch::channel(false);
    let failure: Arc<std::sync::Mutex<Option<RunError>>> = Arc::default();
    // Reliable mode: resume from the checkpoint and the write-ahead log, and put the log
    // between the block manager and the runner.
    let mut reliable = None;
    let mut first_batch = 0u64;
    let mut ends: Vec<u64> = vec![0; plan.partitions as usize];
    if let Some(at) = plan.checkpoint.as_ref().filter(|_| plan.wal) {
        let (wal, recovered) = recover(plan, at, rt, &blocks)?;
        first_batch = recovered.next_batch;
        ends = recovered.next_offsets;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for block in recovered.replay {
            let _ = tx.send(Cut::Block(block));
        }
        rt.spawn(log_blocks(
            wal.clone(),
            cuts,
            tx,
            blocks.clone(),
            failure.clone(),
        ));
        cuts = rx;
        reliable = Some((wal, at.clone()));
    }
    let mut report = match &opts.report {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| RunError::Report {
                path: path.clone(),
                message: e.to_string(),
            })?,
        )),
        None => None,
    };

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

    // The batch clock and tracker: batch N closes at the end of interval N, and the last
    // close says so.
    let origin_ms = now_ms();
    let batch_time = |id: u64| {
        origin_ms + (file.batch_interval.as_millis() as i64) * ((id - first_batch) as i64 + 1)
    };
    let closing = Arc::new(AtomicBool::new(false));
    let last_close = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    {
        let blocks = blocks.clone();
        let interval = file.batch_interval;
        let closing = closing.clone();
        let failure = failure.clone();
        let last_close = last_close.clone();
        rt.spawn(async move {
            let origin = tokio::time::Instant::now();
            let mut id = first_batch;
            loop {
                let due = origin + interval * ((id - first_batch) as u32 + 1);
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
                let last = last || (ended && !blocks.has_pending()) || failed;
                if last {
                    last_close.store(id, Ordering::SeqCst);
                }
                blocks.close_batch(id, now_ms());
                id += 1;
                if last {
                    break;
                }
            }
        });
    }

    let shape = Shape::of(&plan.steps, plan.partitions);
    let mut batch = OpenBatch::new(plan, &shape, first_batch, batch_time(first_batch));
    let mut pending: VecDeque<Cut> = VecDeque::new();
    let mut summary = RunSummary::default();
    let mut slow_streak = 0u32;
    let mut stopping = false;
    let fail = |e: JobError, batch: &OpenBatch| {
        tracing::error!(error = %e, "The pipeline stops: a batch failed.");
        let _ = stop_tx.send(true);
        closing.store(true, Ordering::SeqCst);
        job::abort(plan, batch);
        RunError::from(e)
    };
    loop {
        if stop.requested() && !stopping {
            stopping = true;
            tracing::info!(
                "Stopping: the receivers stop, the records they received make a last batch, and every block received runs."
            );
            let _ = stop_tx.send(true);
            closing.store(true, Ordering::SeqCst);
        }
        if pending.is_empty() {
            let next = rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(100), cuts.recv()).await
            });
            match next {
                Ok(Some(c)) => pending.push_back(c),
                Ok(None) => break,
                Err(_) => {
                    if let Some(e) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        let _ = stop_tx.send(true);
                        job::abort(plan, &batch);
                        return Err(e);
                    }
                    continue;
                }
            }
        }
        while let Ok(c) = cuts.try_recv() {
            pending.push_back(c);
        }
        let mut ready = Vec::new();
        let mut close = None;
        while let Some(c) = pending.pop_front() {
            match c {
                Cut::Block(b) => ready.push(b),
                Cut::Close { id, closed_at } => {
                    close = Some((id, closed_at));
                    break;
                }
            }
        }
        for b in &ready {
            let end = b.first_offset + b.records.len() as u64;
            if let Some(e) = ends.get_mut(b.id.partition as usize) {
                *e = (*e).max(end);
            }
        }
        if !ready.is_empty() {
            let t = Instant::now();
            if let Err(e) = job::run_blocks(plan, &shape, &batch, ready, &blocks) {
                return Err(fail(e, &batch));
            }
            batch.busy += t.elapsed();
        }
        let Some((id, closed_at)) = close else {
            continue;
        };
        debug_assert_eq!(id, batch.id);
        let closing_start = Instant::now();
        let scheduling_delay = closing_start.duration_since(closed_at);
        let next = OpenBatch::new(plan, &shape, id + 1, batch_time(id + 1));
        let this = std::mem::replace(&mut batch, next);
        let busy = this.busy;
        let time_ms = this.time_ms;
        let (closed, kept_bytes) = match job::close(plan, &shape, this) {
            Ok(c) => c,
            Err(e) => return Err(fail(e, &batch)),
        };
        blocks.release(kept_bytes);
        if let Some(Err(e)) = reliable
            .as_ref()
            .map(|(wal, at)| checkpoint_batch(rt, at, wal, id, &ends))
        {
            let _ = stop_tx.send(true);
            closing.store(true, Ordering::SeqCst);
            return Err(e);
        }
        let done_ms = now_ms();
        let processing = busy + closing_start.elapsed();
        let report_line = BatchReport {
            id,
            records_in: closed.records_in,
            records_out: closed.records_out,
            dead_letters: closed.dead_letters,
            scheduling_delay,
            processing,
            total_delay: closed_at.elapsed(),
            done_ms,
        };
        let done_us = done_ms * 1000;
        let latencies: Vec<f64> = closed
            .markers
            .iter()
            .map(|&us| (done_us - us) as f64 / 1e3)
            .collect();
        if let Some(w) = report.as_mut() {
            write_report(w, &report_line, time_ms, &latencies).map_err(|e| RunError::Report {
                path: opts.report.clone().unwrap_or_default(),
                message: e.to_string(),
            })?;
        }
        summary.batches += 1;
        summary.records_in += closed.records_in;
        summary.records_out += closed.records_out;
        summary.dead_letters += closed.dead_letters;
        summary.marker_latencies_ms.extend(latencies);
        summary.first_batch.get_or_insert(started.elapsed());
        summary.reports.push(report_line);
        show(&report_line, opts.progress);
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
        if id == last_close.load(Ordering::SeqCst) {
            break;
        }
        if opts.max_batches.is_some_and(|m| summary.batches >= m) && !stopping {
            tracing::info!(
                batches = summary.batches,
                "Reached --max-batches; stopping."
            );
            break;
        }
        if stop.now.load(Ordering::SeqCst) {
            tracing::info!("Stopped after the running batch, as asked twice.");
            break;
        }
    }
    // Whatever the open batch's blocks wrote is dropped: it never commits.
    job::abort(plan, &batch);
    let _ = stop_tx.send(true);
    closing.store(true, Ordering::SeqCst);
    if let Some(e) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(e);
    }
    summary.peak_buffered = blocks.peak();
    summary.backpressure_waits = blocks.backpressure_waits();
    Ok(summary)
}

/// What a restart in reliable mode resumes from.
struct Recovered {
    /// The first batch id of this run.
    next_batch: u64,
    /// Per partition, the next record's offset.
    next_offsets: Vec<u64>,
    /// The logged blocks the checkpoint does not cover, to run first.
    replay: Vec<crate::block::Block>,
}

/// Reads the checkpoint and opens the write-ahead log under `checkpoint.path`: damage is
/// reported with its location (and the run goes on with what is readable, never silently),
/// and the records after the checkpoint's offsets come back as blocks to run first.
fn recover(
    plan: &Plan,
    at: &Location,
    rt: &tokio::runtime::Runtime,
    blocks: &BlockManager,
) -> Result<(Wal, Recovered), RunError> {
    let (cp, (wal, log)) = rt.block_on(async {
        let cp = checkpoint::load(at).await?;
        let opened = Wal::open_at(at, "wal", WalOptions::default()).await?;
        Ok::<_, RunError>((cp, opened))
    })?;
    for problem in &log.problems {
        tracing::error!(problem = %problem, "The write-ahead log is damaged here: what is readable before it is replayed, the rest cannot be. The damaged segment is kept for inspection.");
    }
    blocks.set_reliable();
    let mut next: Vec<u64> = cp.as_ref().map_or_else(Vec::new, |c| c.offsets.clone());
    next.resize(plan.partitions as usize, 0);
    let mut replay = Vec::new();
    let mut replayed = 0u64;
    for rb in log.blocks {
        let p = rb.partition as usize;
        let Some(covered) = next.get_mut(p) else {
            continue;
        };
        let end = rb.first_offset + rb.records.len() as u64;
        if end <= *covered {
            continue;
        }
        let skip = covered.saturating_sub(rb.first_offset) as usize;
        let records = if skip == 0 {
            rb.records
        } else {
            rb.records.slice(skip..rb.records.len())
        };
        replayed += records.len() as u64;
        replay.push(blocks.replayed(rb.partition, rb.first_offset + skip as u64, records));
        *covered = end;
    }
    for (p, &n) in next.iter().enumerate() {
        blocks.resume(p as u32, n);
    }
    let next_batch = cp.as_ref().map_or(0, |c| c.batch + 1);
    tracing::info!(
        checkpoint = %at,
        next_batch,
        replayed_records = replayed,
        damaged_segments = log.problems.len(),
        "Reliable mode: resuming after the checkpoint; records in the write-ahead log that no committed batch holds run first."
    );
    Ok((
        wal,
        Recovered {
            next_batch,
            next_offsets: next,
            replay,
        },
    ))
}

/// The write-ahead log stage: writes each block (concurrently, so the log can group them) and
/// passes blocks and closes on in their order once written, marking each block's records
/// durable, so that sources acknowledge only logged records. A failed write stops the run.
async fn log_blocks(
    wal: Wal,
    mut cuts: tokio::sync::mpsc::UnboundedReceiver<Cut>,
    out: tokio::sync::mpsc::UnboundedSender<Cut>,
    blocks: Arc<BlockManager>,
    failure: Arc<std::sync::Mutex<Option<RunError>>>,
) {
    use futures::StreamExt;
    use futures::future::BoxFuture;
    let mut writing: futures::stream::FuturesOrdered<
        BoxFuture<'static, (Cut, Result<(), crate::wal::WalError>)>,
    > = futures::stream::FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            cut = cuts.recv(), if open => match cut {
                Some(Cut::Block(b)) => {
                    let wal = wal.clone();
                    writing.push_back(Box::pin(async move {
                        let r = wal.append(b.id.partition, b.first_offset, &b.records).await;
                        (Cut::Block(b), r)
                    }));
                }
                Some(close) => writing.push_back(Box::pin(async move { (close, Ok(())) })),
                None => open = false,
            },
            Some((cut, result)) = writing.next() => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "A block could not be written to the write-ahead log; the pipeline stops (its records were not acknowledged, so the source keeps them).");
                    let mut f = failure.lock().unwrap_or_else(|e| e.into_inner());
                    f.get_or_insert(RunError::Wal(e));
                    return;
                }
                if let Cut::Block(b) = &cut {
                    blocks.mark_durable(b.id.partition, b.first_offset + b.records.len() as u64);
                }
                if out.send(cut).is_err() {
                    return;
                }
            },
            else => return,
        }
    }
}

/// After batch `id` commits: saves the checkpoint (the batch and, per partition, the offset
/// below which every record is committed) and deletes the log segments it covers.
fn checkpoint_batch(
    rt: &tokio::runtime::Runtime,
    at: &Location,
    wal: &Wal,
    id: u64,
    ends: &[u64],
) -> Result<(), RunError> {
    let cp = checkpoint::Checkpoint {
        version: checkpoint::VERSION,
        batch: id,
        offsets: ends.to_vec(),
    };
    rt.block_on(async {
        checkpoint::save(at, &cp).await?;
        if let Err(e) = wal.truncate(ends).await {
            tracing::warn!(error = %e, "Segments of the write-ahead log that the checkpoint covers could not be deleted; the next checkpoint tries again.");
        }
        Ok(())
    })
}

/// The largest block: a partition's share of a sixteenth of the budget, between 256 KiB and
/// 2 MiB. Many blocks per partition fit in the budget, so receivers rarely wait for one to be
/// processed; and a block is one plugin call of a size that keeps the plugin's memory (which
/// an instance keeps at its high-water mark) and the host's copies small, at a call overhead
/// of a few per cent (measured with `sluice bench pipeline`).
pub fn max_block_bytes(budget: u64, partitions: u32) -> u64 {
    (budget / 16 / partitions.max(1) as u64).clamp(256 << 10, 2 << 20)
}

fn write_report(
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
        "marker_latency_ms": latencies,
    });
    serde_json::to_writer(&mut *w, &line)?;
    w.write_all(b"\n")?;
    w.flush()
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
