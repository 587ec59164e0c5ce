//! Where a run starts: the answer to "where does a restart resume?".
//!
//! The checkpoint log's newest entry, batch L, is the only batch that may not have committed
//! (entry L+1 is written only after L commits). So:
//! - every sink says L is committed → start at L+1, each partition after L's last record;
//! - L did not commit and the source can replay it (files, generator, Event Hubs, or any source
//!   with `wal = true`) → recompute L first from exactly its recorded records (re-read from the
//!   source up to a fence, or from the write-ahead log), with its recorded plugin digests;
//! - L did not commit and nothing can replay it (plain tcp or AMQP) → its records are lost, as
//!   plain mode documents, and the run starts at L+1: its id is never used for other records.
//!
//! With no entry at all, a run whose sinks already hold output refuses to start (a new batch 0
//! would mix with it) unless `--from-scratch` clears it.

use std::collections::HashSet;
use std::sync::Arc;

use super::RunError;
use crate::block::{Block, BlockManager, Cut};
use crate::checkpoint::{CheckpointLog, Entry, PartitionEntry};
use crate::clock::now_ms;
use crate::dedup::{Detection, Filter, Recorder, SeenIds, Window};
use crate::plan::{Plan, StepPlan};
use crate::receiver::{Position, Resume};
use crate::wal::{Wal, WalOptions};

/// What the checkpoint log says about each partition, kept up to date batch by batch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    /// Per partition, the offset after the last recorded batch's records.
    pub ends: Vec<u64>,
    /// Per partition, where the source stood there.
    pub last: Vec<Option<Position>>,
    /// The files read to their end by recorded batches.
    pub seen: HashSet<String>,
}

/// The batch a restart recomputes.
pub(crate) struct Replay {
    /// Its entry, as recorded.
    pub entry: Entry,
    /// The steps it runs (its recorded plugin versions).
    pub steps: Arc<Vec<StepPlan>>,
}

/// How the run starts.
pub(crate) struct Start {
    /// The first batch id to open.
    pub first_batch: u64,
    /// The recorded time of the batch before it.
    pub last_time_ms: Option<i64>,
    /// Per partition, where its receiver starts.
    pub resumes: Vec<Resume>,
    /// The batch to recompute first.
    pub replay: Option<Replay>,
    /// The recorded progress before `first_batch`.
    pub progress: Progress,
    /// The checkpoint log.
    pub log: Option<CheckpointLog>,
    /// Reliable mode: the log, and the logged blocks to run first (with the close of the
    /// recomputed batch among them).
    pub wal: Option<(Wal, Vec<Cut>)>,
    /// A source that redelivers: the receivers' live window of message ids (the committed
    /// window plus the ids of the logged blocks to run first) and the redelivery counts.
    pub dedup: Option<Arc<Filter>>,
    /// Duplicate detection by id: the committed window, as of the newest entry.
    pub recorder: Option<Recorder>,
}

/// Whether the source can give the same records again from a recorded position.
pub(crate) fn replayable(plan: &Plan) -> bool {
    plan.wal || plan.source.replayable()
}

/// Reads the checkpoint log and decides where the run starts (see the module doc).
pub(crate) fn start(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    blocks: &BlockManager,
    from_scratch: bool,
) -> Result<Start, RunError> {
    let n = plan.partitions as usize;
    for sink in &plan.sinks {
        sink.recover(&plan.stream).map_err(RunError::Store)?;
    }
    let log = plan.checkpoint.clone().map(CheckpointLog::new);
    let mut found = match &log {
        Some(log) => {
            if from_scratch {
                clear(plan, rt, log)?;
            }
            rt.block_on(log.recover())?
        }
        None => Default::default(),
    };
    for problem in &found.problems {
        tracing::error!(problem = %problem, "A checkpoint entry is damaged; the one before it is used.");
    }
    for &b in &found.damaged {
        if found.last.as_ref().is_none_or(|l| b > l.batch) && committed(plan, b)? {
            return Err(RunError::Recovery(format!(
                "the checkpoint entry of batch {b} is damaged, and the sinks hold batch {b} committed: the host cannot know which records it held and will not guess. Restore the entry (it was moved aside as .damaged) or start over with `--from-scratch`"
            )));
        }
    }
    let mut start = Start {
        first_batch: 0,
        last_time_ms: None,
        resumes: vec![Resume::default(); n],
        replay: None,
        progress: Progress {
            ends: vec![0; n],
            last: vec![None; n],
            seen: HashSet::new(),
        },
        log,
        wal: None,
        dedup: None,
        recorder: None,
    };
    (start.dedup, start.recorder) = dedup_start(plan, &std::mem::take(&mut found.ids))?;
    match found.last {
        None => refuse_over_output(plan, from_scratch)?,
        Some(last) => resume_after(plan, &mut start, last, found.before, found.seen_before)?,
    }
    if replayable(plan) {
        // Sources are acknowledged once their records are committed (Event Hubs
        // checkpoints), or logged in reliable mode.
        blocks.set_reliable();
    }
    if plan.wal {
        start.wal = Some(open_wal(plan, rt, blocks, &mut start)?);
    }
    for (p, r) in start.resumes.iter_mut().enumerate() {
        blocks.resume(p as u32, r.offset);
        r.dedup = start.dedup.clone();
    }
    if let (Some(r), None) = (&start.replay, &start.wal) {
        fence_at(blocks, &r.entry);
    }
    Ok(start)
}

/// The live and committed windows of message ids, rebuilt from the checkpoint entries `ids`
/// (see [`crate::dedup`]), for a source that redelivers.
fn dedup_start(
    plan: &Plan,
    ids: &[(i64, Option<SeenIds>)],
) -> Result<(Option<Arc<Filter>>, Option<Recorder>), RunError> {
    let Some(detection) = plan.source.duplicates() else {
        return Ok((None, None));
    };
    let Detection::ById(settings) = detection else {
        return Ok((Some(Arc::new(Filter::new(detection, None))), None));
    };
    let window = Window::rebuild(settings, ids.iter().map(|(t, s)| (*t, s.as_ref())))
        .map_err(|e| RunError::Recovery(format!("duplicate detection: {e}")))?;
    tracing::info!(
        message_ids = window.len(),
        window_s = settings.window.as_secs(),
        max_ids = settings.max_ids,
        "Duplicate detection: a redelivered message whose id is in the window is dropped; the committed window is rebuilt from the checkpoint log."
    );
    let filter = Filter::new(detection, Some(window.clone()));
    Ok((Some(Arc::new(filter)), Some(Recorder::new(window))))
}

fn clear(plan: &Plan, rt: &tokio::runtime::Runtime, log: &CheckpointLog) -> Result<(), RunError> {
    let entries = rt.block_on(log.clear())?;
    let mut outputs = 0;
    for sink in &plan.sinks {
        outputs += sink.clear(&plan.stream).map_err(RunError::Store)?;
    }
    let wal = rt.block_on(delete_prefix(log.location(), "wal"))?;
    // The plugin history numbers batches of the log that is gone; the quarantine stays.
    rt.block_on(delete_prefix(log.location(), "plugins/history"))?;
    tracing::warn!(checkpoint = %log.location(), entries, output_objects = outputs, wal_segments = wal, "--from-scratch: removed the checkpoint log, the write-ahead log, the plugin history and the earlier output (not the quarantine of plugin versions); the run starts over at batch 0.");
    Ok(())
}

async fn delete_prefix(at: &crate::store::Location, name: &str) -> Result<usize, RunError> {
    use futures::TryStreamExt;
    let prefix = at.child(name);
    let objects: Vec<_> = at
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| RunError::Recovery(format!("listing {at}/{name}: {e}")))?;
    for o in &objects {
        at.store
            .delete(&o.location)
            .await
            .map_err(|e| RunError::Recovery(format!("deleting {}: {e}", o.location)))?;
    }
    Ok(objects.len())
}

fn refuse_over_output(plan: &Plan, from_scratch: bool) -> Result<(), RunError> {
    if from_scratch || plan.checkpoint.is_none() {
        return Ok(());
    }
    for sink in &plan.sinks {
        if sink.has_output(&plan.stream).map_err(RunError::Store)? {
            return Err(RunError::Refused(format!(
                "sink {} already holds output of stream `{}` but there is no checkpoint log at {}: a new run would start again at batch 0 and overwrite it. Point `[checkpoint] path` at the run's checkpoints, or start over with `sluice run --from-scratch` (which removes that output)",
                sink.name(),
                plan.stream,
                plan.checkpoint
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Whether every sink has batch `id` committed for good.
fn committed(plan: &Plan, id: u64) -> Result<bool, RunError> {
    for sink in &plan.sinks {
        match sink.committed(&plan.stream, id).map_err(RunError::Store)? {
            Some(true) => {}
            Some(false) | None => return Ok(false),
        }
    }
    Ok(true)
}

fn resume_after(
    plan: &Plan,
    start: &mut Start,
    last: Entry,
    before: Option<Entry>,
    seen_before: HashSet<String>,
) -> Result<(), RunError> {
    if last.partitions.len() != plan.partitions as usize {
        return Err(RunError::Recovery(format!(
            "the checkpoint log at {} was written with {} partitions and the pipeline has {}; changing the partition count of a running pipeline is not supported: start over with `--from-scratch`",
            plan.checkpoint
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            last.partitions.len(),
            plan.partitions
        )));
    }
    let done = committed(plan, last.batch)?;
    let can_replay = replayable(plan);
    let records: u64 = last.partitions.iter().map(|p| p.end - p.start).sum();
    if !done && can_replay {
        let steps = plan
            .pinned_steps_with(&last.plugins, &last.params)
            .map_err(RunError::Recovery)?;
        start.first_batch = last.batch;
        start.last_time_ms = before.as_ref().map(|b| b.batch_time_ms);
        start.progress.seen = seen_before;
        for (p, pe) in last.partitions.iter().enumerate() {
            let prev = before.as_ref().and_then(|b| b.partitions.get(p));
            start.progress.ends[p] = pe.start;
            start.progress.last[p] = prev.and_then(|e| e.last.clone());
            start.resumes[p] =
                recompute_from(pe, start.progress.last[p].clone(), &start.progress.seen);
        }
        tracing::info!(
            batch = last.batch,
            records,
            "Recovering: batch {} was recorded but not committed; it is recomputed first from exactly its recorded records, with its recorded plugin versions.",
            last.batch
        );
        start.replay = Some(Replay { entry: last, steps });
        return Ok(());
    }
    if !done {
        tracing::warn!(
            batch = last.batch,
            records_lost = records,
            "Batch {} was recorded but not committed, and the source cannot give its records again (plain mode; set `wal = true` on the source to keep them): they are lost. The run goes on at batch {}.",
            last.batch,
            last.batch + 1
        );
    } else {
        tracing::info!(
            batch = last.batch,
            "Resuming after batch {}, the last committed one.",
            last.batch
        );
    }
    start.first_batch = last.batch + 1;
    start.last_time_ms = Some(last.batch_time_ms);
    start.progress.seen = seen_before;
    start
        .progress
        .seen
        .extend(last.files_done().map(str::to_owned));
    for (p, pe) in last.partitions.iter().enumerate() {
        start.progress.ends[p] = pe.end;
        start.progress.last[p] = pe.last.clone();
        start.resumes[p] = Resume {
            offset: pe.end,
            last: pe.last.clone(),
            replay: Vec::new(),
            seen: start.progress.seen.clone(),
            from_log: true,
            dedup: None,
        };
    }
    Ok(())
}

/// Where a partition's receiver starts to give the records of a recorded batch again: at
/// the batch's first offset `pe.start`, after `last_before` (where the source stood after the
/// batch before), re-reading the batch's recorded byte ranges first. Its records end at
/// `pe.end`, where the block manager's fence holds the partition ([`fence_at`]). Used by a
/// restart (the unfinished batch) and by `sluice replay` (any recorded batch).
pub(crate) fn recompute_from(
    pe: &PartitionEntry,
    last_before: Option<Position>,
    seen: &HashSet<String>,
) -> Resume {
    Resume {
        offset: pe.start,
        last: last_before,
        replay: pe.ranges.clone(),
        seen: seen.clone(),
        from_log: true,
        dedup: None,
    }
}

/// Holds each partition at the end of `entry`'s records: a recomputed batch gets exactly them.
pub(crate) fn fence_at(blocks: &BlockManager, entry: &Entry) {
    blocks.fence(&entry.partitions.iter().map(|p| p.end).collect::<Vec<_>>());
}

/// Reliable mode: opens the write-ahead log under the checkpoint location and turns the logged
/// records no committed batch holds into blocks to run first. When a batch is recomputed, its
/// records (below its recorded ends) come first, then its close, then the rest; the receivers
/// start after the last logged record.
fn open_wal(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    blocks: &BlockManager,
    start: &mut Start,
) -> Result<(Wal, Vec<Cut>), RunError> {
    let at = plan.checkpoint.as_ref().ok_or_else(|| {
        RunError::Recovery(
            "`wal = true` needs the checkpoint log (`[checkpoint] enabled = false` turns it off)"
                .to_owned(),
        )
    })?;
    let opts = WalOptions {
        fsync: plan.wal_fsync,
        ..WalOptions::default()
    };
    let (wal, log) = rt.block_on(Wal::open_at(at, "wal", opts))?;
    for problem in &log.problems {
        tracing::error!(problem = %problem, "The write-ahead log is damaged here: what is readable before it is replayed, the rest cannot be. The damaged segment is kept for inspection.");
    }
    let fence: Option<Vec<u64>> = start
        .replay
        .as_ref()
        .map(|r| r.entry.partitions.iter().map(|p| p.end).collect());
    let mut next: Vec<u64> = start.resumes.iter().map(|r| r.offset).collect();
    let (mut before, mut after) = (Vec::new(), Vec::new());
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
        let from = (*covered).max(rb.first_offset);
        let cut = fence.as_ref().map_or(end, |f| f[p].clamp(from, end));
        for (lo, hi) in [(from, cut), (cut, end)] {
            if lo >= hi {
                continue;
            }
            let slice = rb
                .records
                .slice((lo - rb.first_offset) as usize..(hi - rb.first_offset) as usize);
            replayed += slice.len() as u64;
            if let Some(f) = &start.dedup {
                f.replayed(&slice, now_ms());
            }
            let block: Block = blocks.replayed(rb.partition, lo, slice);
            if fence.as_ref().is_some_and(|f| hi <= f[p]) {
                before.push(Cut::Block(block));
            } else {
                after.push(Cut::Block(block));
            }
        }
        *covered = end;
    }
    let mut cuts = before;
    if let Some(r) = &start.replay {
        cuts.push(Cut::Close {
            id: r.entry.batch,
            closed_at: std::time::Instant::now(),
        });
    }
    cuts.extend(after);
    for (p, r) in start.resumes.iter_mut().enumerate() {
        r.offset = next[p];
    }
    tracing::info!(
        checkpoint = %at,
        next_batch = start.first_batch,
        replayed_records = replayed,
        message_ids = start.dedup.as_ref().map_or(0, |f| f.len()),
        damaged_segments = log.problems.len(),
        "Reliable mode: resuming after the checkpoint; records in the write-ahead log that no committed batch holds run first."
    );
    Ok((wal, cuts))
}
