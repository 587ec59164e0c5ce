//! One recorded batch recomputed into the replay's sink, the way a restart recomputes its
//! unfinished batch ([`crate::driver::recover`]):
//!
//! - a replayable source (files, generator, Event Hubs): each partition's receiver starts at
//!   the batch's first offset with its recorded byte ranges to read again
//!   ([`recover::recompute_from`]), and the block manager holds it at the batch's end
//!   ([`recover::fence_at`]); when every partition is there the batch closes;
//! - reliable mode (`wal = true`): the batch's records are taken from the write-ahead log,
//!   read once, read-only ([`Wal::read_only`]: the running writer is not fenced).
//!
//! Nothing is acknowledged to the source (the records are marked durable only up to the
//! batch's start), and a source that stops giving records before the batch's end (a file
//! gone, a retention passed) is reported with the partition and offsets, never waited for
//! forever.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use super::{ReplayError, Result};
use crate::block::{Block, BlockManager, Cut};
use crate::checkpoint::Entry;
use crate::clock::now_ms;
use crate::driver::recover;
use crate::plan::{Plan, StepPlan};
use crate::receiver::{self, PartitionWriter, Position, SourceConfig};
use crate::scheduler::job::{self, Closed, OpenBatch, Shape};
use crate::scheduler::max_block_bytes;
use crate::store::Location;
use crate::wal::{Recovery, Wal};

/// How long the source may give nothing before the batch's end is reached.
const STALL: Duration = Duration::from_secs(10);

/// Where the replayed batches' records come from.
pub struct Source<'a> {
    plan: &'a Plan,
    rt: &'a tokio::runtime::Runtime,
    /// Reliable mode: what the write-ahead log held when the replay started.
    logged: Option<Recovery>,
    /// The files source: its location, to check the files a batch read are still there.
    files: Option<Location>,
}

impl<'a> Source<'a> {
    /// The source of `plan`'s recorded batches; refuses a source that cannot give recorded
    /// records again. In reliable mode, reads the write-ahead log (read-only).
    pub fn new(plan: &'a Plan, rt: &'a tokio::runtime::Runtime) -> Result<Self> {
        if !recover::replayable(plan) {
            return Err(ReplayError::NotRetained(format!(
                "the source `{}` cannot give recorded records again and `wal = true` is not set: a replay needs a replayable source (files, generator, Event Hubs) or the write-ahead log",
                plan.source.kind()
            )));
        }
        if let SourceConfig::EventHubs(c) = &plan.file.source
            && let Some(dir) = &c.checkpoint_dir
        {
            return Err(ReplayError::Refused(format!(
                "the Event Hubs source has `checkpoint-dir = {dir:?}`: its receivers would write the replay's positions there, over the running pipeline's; replay with a copy of the pipeline file without `checkpoint-dir`"
            )));
        }
        if let SourceConfig::EventHubs(c) = &plan.file.source
            && let Some(store) = &c.checkpoint_store
        {
            return Err(ReplayError::Refused(format!(
                "the Event Hubs source has `checkpoint-store = {store:?}`: its receivers would write the replay's positions and claim ownership there, over the running pipeline's; replay with a copy of the pipeline file without `checkpoint-store`"
            )));
        }
        if let Some(StepPlan::Window(op)) =
            plan.steps.iter().find(|s| matches!(s, StepPlan::Window(_)))
        {
            return Err(ReplayError::Refused(format!(
                "`[[transform]]` number {} is a `{}`: a replay recomputes batches one by one and does not rebuild a window's state, so it would write windows that differ from the recorded run's",
                op.step + 1,
                op.kind.name()
            )));
        }
        if let Some(store) = plan.keyed.all().first() {
            return Err(ReplayError::Refused(format!(
                "`[[transform]]` number {}'s plugin keeps keyed state: a replay recomputes batches one by one and does not rebuild that state, so it would write output that differs from the recorded run's",
                store.step + 1
            )));
        }
        if let Some(StepPlan::EventWindow(op)) = plan
            .steps
            .iter()
            .find(|s| matches!(s, StepPlan::EventWindow(_)))
        {
            return Err(ReplayError::Refused(format!(
                "`[[transform]]` number {} is an `event-window`: a replay recomputes batches one by one and does not rebuild its windows and watermark, so it would write windows that differ from the recorded run's",
                op.step + 1
            )));
        }
        let logged = match (&plan.checkpoint, plan.wal) {
            (Some(at), true) => Some(rt.block_on(Wal::read_only(at, "wal"))?),
            _ => None,
        };
        let files = match &plan.file.source {
            SourceConfig::Files(c) => {
                let base = crate::plan::base_dir(&plan.path);
                Location::resolve(&c.path, "source.path", &base, false).ok()
            }
            _ => None,
        };
        Ok(Source {
            plan,
            rt,
            logged,
            files,
        })
    }

    /// Recomputes batch `entry` (after `before`, when recorded) with `steps`, writes and
    /// commits it in the plan's sinks; returns what it did.
    pub fn recompute(
        &mut self,
        entry: &Entry,
        before: Option<&Entry>,
        steps: Arc<Vec<StepPlan>>,
    ) -> Result<Closed> {
        let plan = self.plan;
        if entry.partitions.len() != plan.partitions as usize {
            return Err(ReplayError::Refused(format!(
                "batch {} was recorded with {} partitions and the pipeline has {}: it cannot be replayed with this pipeline file",
                entry.batch,
                entry.partitions.len(),
                plan.partitions
            )));
        }
        let shape = Shape::of(&steps, plan.partitions);
        let batch = OpenBatch::new(plan, &shape, entry.batch, entry.batch_time_ms, steps);
        let budget = plan.file.memory_budget;
        let (manager, cuts) = BlockManager::new(
            plan.partitions,
            budget,
            max_block_bytes(budget, plan.partitions),
        );
        let blocks = Arc::new(manager);
        // Nothing past the batch's start is acknowledged to the source.
        blocks.set_reliable();
        for (p, pe) in entry.partitions.iter().enumerate() {
            blocks.resume(p as u32, pe.start);
        }
        let run = Run {
            plan,
            shape: &shape,
            batch: &batch,
            entry,
            blocks: &blocks,
        };
        let ran = match &self.logged {
            Some(log) => run.read_log(log, plan.checkpoint.as_ref()),
            None => match &self.files {
                Some(at) => self
                    .rt
                    .block_on(files_there(at, entry))
                    .and_then(|()| run.read_source(self.rt, before, cuts)),
                None => run.read_source(self.rt, before, cuts),
            },
        };
        if let Err(e) = ran {
            job::abort(plan, &batch);
            return Err(e);
        }
        let (closed, _) = job::finish(plan, &shape, batch)?;
        job::commit(plan, entry.batch)?;
        Ok(closed)
    }
}

/// The first batch of a range whose predecessor's entry is gone can be replayed only when its
/// source needs no recorded position to start from (the generator's offsets; the files
/// source's byte ranges).
pub fn check_positions_known(entry: &Entry) -> Result<()> {
    let needs = entry
        .partitions
        .iter()
        .any(|p| matches!(&p.last, Some(pos) if !matches!(pos, Position::File { .. })));
    if needs {
        let b = entry.batch;
        return Err(ReplayError::Refused(format!(
            "batch {b}: the entry of batch {} (where the source stood before it) is no longer in the checkpoint log, and this source starts from a recorded position: replay from batch {} on",
            b - 1,
            b + 1
        )));
    }
    Ok(())
}

/// The files source: every file `entry`'s ranges name is still at `at`, at least as long as
/// the batch read it; said at once, naming the file, rather than after waiting for it.
async fn files_there(at: &Location, entry: &Entry) -> Result<()> {
    let mut need: BTreeMap<&str, u64> = BTreeMap::new();
    for r in entry.partitions.iter().flat_map(|p| &p.ranges) {
        if let Position::File { file, to, .. } = r {
            let end = need.entry(file.as_str()).or_default();
            *end = (*end).max(*to);
        }
    }
    let b = entry.batch;
    for (file, to) in need {
        match at.store.head(&at.child(file)).await {
            Ok(m) if m.size >= to => {}
            Ok(m) => {
                return Err(ReplayError::NotRetained(format!(
                    "batch {b}: file {file} in {at} is shorter than when the batch read it ({} bytes; the batch read up to byte {to}): a replay needs the source data the batch was read from",
                    m.size
                )));
            }
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ReplayError::NotRetained(format!(
                    "batch {b}: file {file} is no longer in {at} (the batch read it up to byte {to}): a replay needs the source data the batch was read from"
                )));
            }
            Err(e) => {
                return Err(ReplayError::Store(format!(
                    "files source {at}: {file}: {e}"
                )));
            }
        }
    }
    Ok(())
}

/// One batch being recomputed.
struct Run<'r> {
    plan: &'r Plan,
    shape: &'r Shape,
    batch: &'r OpenBatch,
    entry: &'r Entry,
    blocks: &'r Arc<BlockManager>,
}

impl Run<'_> {
    /// Reads the batch's records from the source again, up to its recorded ends.
    fn read_source(
        &self,
        rt: &tokio::runtime::Runtime,
        before: Option<&Entry>,
        mut cuts: UnboundedReceiver<Cut>,
    ) -> Result<()> {
        recover::fence_at(self.blocks, self.entry);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let failed = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut tasks = Vec::new();
        // Past the fence nothing is read, so no file needs to be marked as seen.
        let seen = HashSet::new();
        for (p, pe) in self.entry.partitions.iter().enumerate() {
            let last = before
                .and_then(|b| b.partitions.get(p))
                .and_then(|b| b.last.clone());
            let partition = p as u32;
            let receiver = self
                .plan
                .source
                .clone()
                .receiver(partition, recover::recompute_from(pe, last, &seen));
            let writer = PartitionWriter {
                blocks: self.blocks.clone(),
                partition,
            };
            let (stopped, failed) = (stopped.clone(), failed.clone());
            tasks.push(rt.spawn(async move {
                if let Err(e) = receiver::supervise(receiver, writer, stopped).await {
                    let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
                    f.push(format!("partition {partition}: {e}"));
                }
            }));
        }
        let ran = self.drive(rt, &mut cuts, &failed);
        let _ = stop.send(true);
        rt.block_on(async {
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
        });
        ran
    }

    /// Runs the blocks as they are cut; closes the batch once every partition has reached its
    /// end; fails when the source stops short of it.
    fn drive(
        &self,
        rt: &tokio::runtime::Runtime,
        cuts: &mut UnboundedReceiver<Cut>,
        failed: &Mutex<Vec<String>>,
    ) -> Result<()> {
        let mut closing = false;
        let mut progress = (Instant::now(), self.blocks.fence_progress());
        loop {
            let (ready, closed) = next_cuts(rt, cuts);
            if !ready.is_empty() {
                job::run_blocks(self.plan, self.shape, self.batch, ready, self.blocks)?;
            }
            if closed {
                return Ok(());
            }
            if closing {
                continue;
            }
            if self.blocks.fence_reached() == Some(true) {
                self.blocks.close_batch(self.entry.batch, now_ms());
                closing = true;
                continue;
            }
            self.blocks.cut_blocks(now_ms());
            let now = self.blocks.fence_progress();
            if now != progress.1 {
                progress = (Instant::now(), now);
            }
            let failures = failed.lock().unwrap_or_else(|e| e.into_inner()).join("; ");
            let ended = self.blocks.all_ended();
            if !failures.is_empty() || ended || progress.0.elapsed() > STALL {
                return Err(self.short(&progress.1, &failures, ended));
            }
        }
    }

    /// The source stopped short of the batch's recorded ends: which partitions, how far.
    fn short(&self, progress: &[(u64, Option<u64>)], failures: &str, ended: bool) -> ReplayError {
        let mut parts = Vec::new();
        for (p, pe) in self.entry.partitions.iter().enumerate() {
            let got = progress.get(p).map_or(pe.start, |g| g.0);
            if got < pe.end {
                let files: Vec<String> = pe
                    .ranges
                    .iter()
                    .filter_map(|r| match r {
                        Position::File { file, .. } => Some(file.clone()),
                        _ => None,
                    })
                    .collect();
                let from = if files.is_empty() {
                    String::new()
                } else {
                    format!(" (from {})", files.join(", "))
                };
                parts.push(format!(
                    "partition {p} gave offsets {}..{got} of {}..{}{from}",
                    pe.start, pe.start, pe.end
                ));
            }
        }
        let why = if !failures.is_empty() {
            format!("its receivers failed: {failures}")
        } else if ended {
            "the source ended".to_owned()
        } else {
            format!("it gave nothing more for {} s", STALL.as_secs())
        };
        ReplayError::NotRetained(format!(
            "batch {}: the source no longer holds the batch's recorded records ({why}): {}. A replay needs the source data the batch was read from",
            self.entry.batch,
            parts.join("; ")
        ))
    }

    /// Reliable mode: takes the batch's records from the write-ahead log.
    fn read_log(&self, log: &Recovery, at: Option<&Location>) -> Result<()> {
        let mut ready: Vec<Block> = Vec::new();
        for (p, pe) in self.entry.partitions.iter().enumerate() {
            let partition = p as u32;
            let mut mine: Vec<_> = log
                .blocks
                .iter()
                .filter(|b| b.partition == partition)
                .collect();
            mine.sort_by_key(|b| b.first_offset);
            let mut next = pe.start;
            for rb in mine {
                let end = rb.first_offset + rb.records.len() as u64;
                if next >= pe.end || end <= next || rb.first_offset > next {
                    continue;
                }
                let hi = end.min(pe.end);
                let at = |o: u64| (o - rb.first_offset) as usize;
                let slice = rb.records.slice(at(next)..at(hi));
                ready.push(self.blocks.replayed(partition, next, slice));
                next = hi;
            }
            if next < pe.end {
                return Err(ReplayError::NotRetained(format!(
                    "batch {}: the write-ahead log at {}/wal no longer holds partition {p}'s records from offset {next} (the batch holds {}..{}); the log keeps only what the newest batches need",
                    self.entry.batch,
                    at.map(|a| a.to_string()).unwrap_or_default(),
                    pe.start,
                    pe.end
                )));
            }
        }
        job::run_blocks(self.plan, self.shape, self.batch, ready, self.blocks)?;
        Ok(())
    }
}

/// The blocks cut so far (waiting up to 50 ms for the first), and whether the close came.
fn next_cuts(
    rt: &tokio::runtime::Runtime,
    cuts: &mut UnboundedReceiver<Cut>,
) -> (Vec<Block>, bool) {
    let mut ready = Vec::new();
    let first =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(50), cuts.recv()).await });
    let mut take = |c: Cut| match c {
        Cut::Block(b) => {
            ready.push(b);
            false
        }
        Cut::Close { .. } => true,
    };
    let mut closed = match first {
        Ok(Some(c)) => take(c),
        _ => false,
    };
    while !closed {
        match cuts.try_recv() {
            Ok(c) => closed = take(c),
            Err(_) => break,
        }
    }
    (ready, closed)
}
