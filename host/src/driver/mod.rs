//! The driver: a pipeline's lifecycle. Each question has one file as its answer:
//!
//! - where does a restart resume? [`recover`];
//! - how does a batch commit? [`commit`] (record in the checkpoint log, then the sinks);
//! - what if a new plugin version fails its trial? [`attempt`] (roll back, recompute);
//! - how does a run stop? [`shutdown`] (one [`Shutdown`] for signals, limits, ends, failures);
//! - what does a run report? [`report`];
//! - how is a crashed driver brought back? [`supervise`] (`sluice run --supervise`);
//! - who hears that the memory budget holds the source back? `backpressure.rs` (one warning
//!   every 30 s at most).
//!
//! [`run`] ties them together: recover, start the receivers, the block generator and the batch
//! clock as async tasks, then the batch loop on this thread: blocks run as they are cut (on the
//! worker pool), and each close finishes, records and commits its batch, in order.

pub mod attempt;
mod backpressure;
pub mod commit;
pub mod ha;
mod log_stage;
pub mod recover;
pub mod report;
pub mod shutdown;
pub mod supervise;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::block::{BlockManager, Cut};
use crate::clock::now_ms;
use crate::clock::{Clock, SystemClock};
use crate::plan::Plan;
use crate::receiver::{self, PartitionWriter, Resume};
use crate::scheduler::job::{self, JobError, Shape};
use crate::scheduler::max_block_bytes;
use crate::scheduler::tracker::{BatchClock, Signals, Tracker};
use crate::swap::Gate;
use crate::swap::watch::Watcher;
use crate::wal::Wal;
use attempt::Attempt;
pub use report::{BatchReport, RunOptions, RunSummary};
pub use shutdown::Shutdown;

/// The pipeline stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A batch failed.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The write-ahead log failed (a write, or opening it for recovery).
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    /// The checkpoint log could not be read or written.
    #[error(transparent)]
    Checkpoint(crate::checkpoint::CheckpointError),
    /// Another driver committed an entry of this pipeline's checkpoint log first.
    #[error(
        "fenced: another driver committed {location} first; this driver stops and touches nothing more"
    )]
    Fenced {
        /// The entry that was already there.
        location: String,
    },
    /// The run cannot start from what the checkpoint log and the sinks hold.
    #[error("recovery: {0}")]
    Recovery(String),
    /// A sink's store failed while the run started (cleaning staging, reading commit records).
    #[error(transparent)]
    Store(crate::sink::SinkError),
    /// The run would overwrite earlier output.
    #[error("{0}")]
    Refused(String),
    /// The `--report` file could not be written.
    #[error("report file {}: {message}", path.display())]
    Report {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// The admin endpoint could not start.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// A receiver failed for good.
    #[error("receiver of partition {partition}: {message}")]
    Receiver {
        /// The partition.
        partition: u32,
        /// Why.
        message: String,
    },
}

impl From<crate::checkpoint::CheckpointError> for RunError {
    fn from(e: crate::checkpoint::CheckpointError) -> Self {
        match e {
            crate::checkpoint::CheckpointError::Fenced { location } => {
                RunError::Fenced { location }
            }
            e => RunError::Checkpoint(e),
        }
    }
}

/// Runs `plan` until it ends, is stopped, or fails. Receivers and clocks run on `rt`; batches
/// run on this thread and the worker pool.
pub fn run(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    opts: &RunOptions,
    shutdown: &Shutdown,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let file = &plan.file;
    if file.ha.is_some() != opts.ha.is_some() {
        return Err(RunError::Refused(
            "[ha]: the member was not set up (driver::ha::prepare) for a pipeline with `[ha]`"
                .to_owned(),
        ));
    }
    let (manager, cuts) = BlockManager::new(
        plan.partitions,
        file.memory_budget,
        max_block_bytes(file.memory_budget, plan.partitions),
    );
    let blocks = Arc::new(manager.paced(file.queue_target));
    let mut start = recover::start(plan, rt, &blocks, opts.from_scratch)?;
    restore_state(plan, rt, &start)?;
    let (cuts, wal) = match start.wal.take() {
        Some((wal, replay)) => (
            log_stage(rt, &wal, cuts, replay, &blocks, shutdown),
            Some(wal),
        ),
        None => (cuts, None),
    };
    tracing::info!(
        pipeline = %plan.name,
        stream = %plan.stream,
        partitions = plan.partitions,
        workers = plan.workers,
        first_batch = start.first_batch,
        batch_interval_ms = file.batch_interval.as_millis() as u64,
        block_interval_ms = file.block_interval.as_millis() as u64,
        memory_budget_mib = file.memory_budget >> 20,
        plugins = ?plan.digests,
        "Starting: {} receivers run as async tasks (they hold no core); {} worker threads run the batch tasks.",
        plan.partitions,
        plan.workers
    );
    // New batches pin the live steps; new plugin versions, from the plugin directory or the
    // admin endpoint, go through the gate (crate::swap).
    let live = Arc::new(
        crate::swap::start(plan, rt.handle(), start.log.as_ref()).map_err(RunError::Recovery)?,
    );
    let gate = Gate::from_plan(plan, live.clone()).map(Arc::new);
    let _watching = gate
        .clone()
        .and_then(|g| Watcher::from_plan(plan, g))
        .map(Watcher::spawn);
    let monitor = crate::monitor::Monitor::new(plan, blocks.clone(), live.clone());
    let _admin = crate::admin::start(plan, rt, gate, Some(monitor.clone()), &opts.ui)?;
    let (batch_clock, last_close) =
        start_tasks(plan, rt, &blocks, &mut start, wal.is_some(), shutdown);
    let mut committer = commit::Committer::new(plan, rt, &mut start, wal);
    committer.ha = opts
        .ha
        .clone()
        .map(|setup| ha::Member::start(plan, rt, setup, monitor.clone()));
    let shape = Shape::of(&plan.steps, plan.partitions);
    let mut batch = match &start.replay {
        Some(r) => Attempt::open(
            plan,
            &shape,
            (r.entry.batch, r.entry.batch_time_ms),
            r.steps.clone(),
            &live,
        ),
        None => Attempt::open(
            plan,
            &shape,
            (start.first_batch, batch_clock.time_ms(start.first_batch)),
            live.steps(),
            &live,
        ),
    };
    let mut replaying = start.replay.take().map(|r| r.entry);
    let mut state = LoopState::new(opts, cuts)?;
    let mut backpressure = backpressure::Backpressure::new(Instant::now());
    let result: Result<(), RunError> = (|| loop {
        if shutdown.requested() && !state.stopping {
            state.stopping = true;
            monitor.stopping();
            let closes = state
                .pending
                .iter()
                .filter(|c| matches!(c, Cut::Close { .. }))
                .count();
            tracing::info!(
                batches_to_finish = closes + 1,
                blocks_waiting = state.pending.len() - closes,
                "Stopping: the receivers stop, the records they received make a last batch, and every block received runs: {} batches remain (interrupt again to stop after the running one).",
                closes + 1
            );
            shutdown.stop_receiving();
        }
        let Some(ready) = next_cuts(rt, &mut state, shutdown)? else {
            return Ok(());
        };
        let (blocks_ready, close) = ready;
        if !blocks_ready.is_empty() {
            let t = Instant::now();
            let mut blocks_ready = blocks_ready;
            committer.track(&mut blocks_ready);
            batch.run(plan, &shape, blocks_ready, &blocks, &live)?;
            batch.batch.busy += t.elapsed();
        }
        let Some((id, closed_at)) = close else {
            continue;
        };
        debug_assert_eq!(id, batch.batch.id);
        let closing_start = Instant::now();
        let next_time = batch_clock.time_ms(id + 1).max(batch.batch.time_ms + 1);
        // A placeholder until the next batch opens, after this one's close: a rollback in the
        // close changes the steps the next one must pin.
        let placeholder = Attempt::open(plan, &shape, (id + 1, next_time), Arc::default(), &live);
        let this = std::mem::replace(&mut batch, placeholder);
        let done = this.finish(plan, &shape, &blocks, &live)?;
        batch = Attempt::open(plan, &shape, (id + 1, next_time), live.steps(), &live);
        let report =
            committer.close(done, (closing_start, closed_at), replaying.take(), &blocks)?;
        state.record(plan, opts, &report, started)?;
        monitor.batch_done(
            &report.report,
            &report.detail,
            report.time_ms,
            &report.latencies,
        );
        backpressure.batch_done(plan, &blocks, &monitor, report.report.processing);
        committer.boundary(&blocks, shutdown, id);
        if id == last_close.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        if opts.max_batches.is_some_and(|m| state.summary.batches >= m) && !state.stopping {
            tracing::info!(
                batches = state.summary.batches,
                "Reached --max-batches; stopping."
            );
            return Ok(());
        }
        if shutdown.now() {
            tracing::info!(
                dropped_blocks = state.pending.len(),
                "Stopped after the running batch, as asked twice: the records received and not committed are dropped (a replayable source gives them again at the next start)."
            );
            return Ok(());
        }
    })();
    // Whatever the open batch's blocks wrote is dropped: it never commits.
    job::abort(plan, &batch.batch);
    shutdown.stop_receiving();
    if let Some(member) = &mut committer.ha {
        member.stop(rt, plan.partitions);
    }
    for sink in &plan.sinks {
        sink.stop(&plan.stream);
    }
    result?;
    if let Some(e) = shutdown.take_failure() {
        return Err(e);
    }
    let mut summary = state.summary;
    summary.peak_buffered = blocks.peak();
    summary.backpressure_waits = blocks.backpressure_waits();
    summary.first_record = blocks.first_record();
    Ok(summary)
}

/// Puts back the stateful steps' state as of the newest checkpoint entry (see [`crate::state`]).
fn restore_state(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    start: &recover::Start,
) -> Result<(), RunError> {
    let (last, replaying) = match &start.replay {
        Some(r) => (Some(r.entry.batch), true),
        None => (
            start.last_time_ms.and(start.first_batch.checked_sub(1)),
            false,
        ),
    };
    if let (Some(log), Some(last)) = (&start.log, last) {
        rt.block_on(crate::state::restore(plan, log.location(), last, replaying))
            .map_err(|e| {
                RunError::Recovery(format!(
                    "{e}; the state of a stateful step cannot be restored exactly (`sluice run --from-scratch` starts over)"
                ))
            })?;
    }
    Ok(())
}

/// Starts the receivers, the block generator and the batch clock; returns the clock and where
/// the clock publishes the id of the last close.
fn start_tasks(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    blocks: &Arc<BlockManager>,
    start: &mut recover::Start,
    logged: bool,
    shutdown: &Shutdown,
) -> (BatchClock, Arc<std::sync::atomic::AtomicU64>) {
    let file = &plan.file;
    // Several hosts: receivers start as partitions are gained (driver::ha).
    if file.ha.is_none() {
        spawn_receivers(
            plan,
            rt,
            blocks,
            std::mem::take(&mut start.resumes),
            shutdown,
        );
    }
    spawn_block_generator(rt, blocks, file.block_interval, shutdown);
    let clock = Arc::new(SystemClock);
    // In reliable mode the recomputed batch's close comes from the log.
    let logged_replay = logged && start.replay.is_some();
    let tracker_first = start.first_batch + u64::from(logged_replay);
    let last_time_ms = match (&start.replay, logged_replay) {
        (Some(r), true) => Some(r.entry.batch_time_ms),
        _ => start.last_time_ms,
    };
    // A fresh run's first batch closes one interval after launch, its set-up counted in it.
    let now_ms = match last_time_ms {
        None => crate::clock::first_origin_ms(clock.now_ms(), file.batch_interval),
        Some(_) => clock.now_ms(),
    };
    let batch_clock = BatchClock::new(tracker_first, now_ms, file.batch_interval, last_time_ms);
    let last_close = spawn_clock(rt, blocks, batch_clock, tracker_first, clock, shutdown);
    (batch_clock, last_close)
}

/// What the batch loop carries between rounds.
struct LoopState {
    pending: VecDeque<Cut>,
    summary: RunSummary,
    slow_streak: u32,
    stopping: bool,
    cuts: UnboundedReceiver<Cut>,
    report: Option<std::io::BufWriter<std::fs::File>>,
}

type Ready = (Vec<crate::block::Block>, Option<(u64, Instant)>);

/// Waits for the next blocks (up to the next close). `None` when the cut channel closed.
fn next_cuts(
    rt: &tokio::runtime::Runtime,
    state: &mut LoopState,
    shutdown: &Shutdown,
) -> Result<Option<Ready>, RunError> {
    if state.pending.is_empty() {
        let next = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(100), state.cuts.recv()).await
        });
        match next {
            Ok(Some(c)) => state.pending.push_back(c),
            Ok(None) => return Ok(None),
            Err(_) => {
                if let Some(e) = shutdown.take_failure() {
                    return Err(e);
                }
                return Ok(Some((Vec::new(), None)));
            }
        }
    }
    while let Ok(c) = state.cuts.try_recv() {
        state.pending.push_back(c);
    }
    let mut ready = Vec::new();
    while let Some(c) = state.pending.pop_front() {
        match c {
            Cut::Block(b) => ready.push(b),
            Cut::Close { id, closed_at } => return Ok(Some((ready, Some((id, closed_at))))),
        }
    }
    Ok(Some((ready, None)))
}

impl LoopState {
    /// The state of a new loop; opens the `--report` file.
    fn new(opts: &RunOptions, cuts: UnboundedReceiver<Cut>) -> Result<Self, RunError> {
        let report = match &opts.report {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::File::create(path).map_err(|e| RunError::Report {
                    path: path.clone(),
                    message: e.to_string(),
                })?,
            )),
            None => None,
        };
        Ok(LoopState {
            pending: VecDeque::new(),
            summary: RunSummary::default(),
            slow_streak: 0,
            stopping: false,
            cuts,
            report,
        })
    }

    /// Adds a finished batch to the summary, the report file and the progress line.
    fn record(
        &mut self,
        plan: &Plan,
        opts: &RunOptions,
        done: &commit::Committed,
        started: Instant,
    ) -> Result<(), RunError> {
        let r = &done.report;
        if let Some(w) = self.report.as_mut() {
            report::write_report(w, r, done.time_ms, &done.latencies).map_err(|e| {
                RunError::Report {
                    path: opts.report.clone().unwrap_or_default(),
                    message: e.to_string(),
                }
            })?;
        }
        let s = &mut self.summary;
        s.batches += 1;
        s.records_in += r.records_in;
        s.records_out += r.records_out;
        s.dead_letters += r.dead_letters;
        s.marker_latencies_ms.extend(done.latencies.iter().copied());
        s.first_batch.get_or_insert(started.elapsed());
        s.reports.push(*r);
        report::show(r, opts.progress);
        let interval = plan.file.batch_interval;
        if r.processing > interval {
            self.slow_streak += 1;
            if self.slow_streak == 3 {
                tracing::warn!(
                    processing_ms = r.processing.as_millis() as u64,
                    batch_interval_ms = interval.as_millis() as u64,
                    scheduling_delay_ms = r.scheduling_delay.as_millis() as u64,
                    partitions = plan.partitions,
                    workers = plan.workers,
                    "Batches take longer to process than the batch interval, so they queue up and the delay grows: add workers (`workers`), lengthen `batch-interval`, or lighten the plugins."
                );
            }
        } else {
            self.slow_streak = 0;
        }
        Ok(())
    }
}

fn spawn_receivers(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    blocks: &Arc<BlockManager>,
    resumes: Vec<Resume>,
    shutdown: &Shutdown,
) {
    for (partition, resume) in (0..plan.partitions).zip(resumes) {
        let receiver = plan.source.clone().receiver(partition, resume);
        let writer = PartitionWriter {
            blocks: blocks.clone(),
            partition,
        };
        let shutdown = shutdown.clone();
        rt.spawn(async move {
            if let Err(e) = receiver::supervise(receiver, writer, shutdown.receivers()).await {
                shutdown.fail(RunError::Receiver {
                    partition,
                    message: e.to_string(),
                });
            }
        });
    }
}

fn spawn_block_generator(
    rt: &tokio::runtime::Runtime,
    blocks: &Arc<BlockManager>,
    interval: Duration,
    shutdown: &Shutdown,
) {
    let blocks = blocks.clone();
    let mut rx = shutdown.receivers();
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

/// The batch clock and tracker: a recomputed batch closes once every partition has received
/// its recorded records; every other batch at the end of its interval. A stop, a failure or
/// every partition ending makes the next close the last, whose id it publishes.
fn spawn_clock(
    rt: &tokio::runtime::Runtime,
    blocks: &Arc<BlockManager>,
    batch_clock: BatchClock,
    first: u64,
    clock: Arc<dyn Clock>,
    shutdown: &Shutdown,
) -> Arc<std::sync::atomic::AtomicU64> {
    let last_close = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let (blocks, shutdown, last) = (blocks.clone(), shutdown.clone(), last_close.clone());
    rt.spawn(async move {
        let mut tracker = Tracker::new(first);
        if blocks.fence_reached().is_some() {
            wait_for_fence(&blocks, &shutdown).await;
            if let Some((id, _)) = tracker.close(Signals::default()) {
                blocks.close_batch(id, clock.now_ms());
            }
        }
        loop {
            let id = tracker.next();
            let interval_ms = batch_clock.time_ms(id + 1) - batch_clock.time_ms(id);
            blocks.set_next_close(batch_clock.time_ms(id), interval_ms);
            let wait = batch_clock.until(id, clock.now_ms());
            let stopped = tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                _ = wait_until(|| shutdown.closing()) => {
                    // Let the receivers finish the chunk they are appending.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    true
                }
            };
            let signals = Signals {
                closing: stopped || shutdown.failed(),
                drained: blocks.all_ended() && !blocks.has_pending(),
            };
            let Some((id, is_last)) = tracker.close(signals) else {
                break;
            };
            if is_last {
                last.store(id, std::sync::atomic::Ordering::SeqCst);
            }
            blocks.close_batch(id, clock.now_ms());
            if is_last {
                break;
            }
        }
    });
    last_close
}

/// Waits until every partition has received the records of the batch being recomputed,
/// saying every 10 s which partitions are short.
async fn wait_for_fence(blocks: &BlockManager, shutdown: &Shutdown) {
    let started = Instant::now();
    let mut said = Duration::ZERO;
    while blocks.fence_reached() == Some(false) && !shutdown.failed() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if started.elapsed() >= said + Duration::from_secs(10) {
            said = started.elapsed();
            tracing::warn!(progress = ?blocks.fence_progress(), waited_s = said.as_secs(), "Recomputing the unfinished batch: waiting for the source to give its recorded records again (received, recorded end) per partition.");
        }
    }
}

async fn wait_until(f: impl Fn() -> bool) {
    while !f() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reliable mode: puts the write-ahead log between the block manager and the batch loop; the
/// logged blocks to replay go first.
fn log_stage(
    rt: &tokio::runtime::Runtime,
    wal: &Wal,
    cuts: UnboundedReceiver<Cut>,
    replay: Vec<Cut>,
    blocks: &Arc<BlockManager>,
    shutdown: &Shutdown,
) -> UnboundedReceiver<Cut> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for cut in replay {
        let _ = tx.send(cut);
    }
    rt.spawn(log_stage::log_blocks(
        wal.clone(),
        cuts,
        tx,
        blocks.clone(),
        shutdown.clone(),
    ));
    rx
}
