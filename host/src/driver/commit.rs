//! How a batch commits: the answer to "where is a batch committed?".
//!
//! When batch N closes: its wide steps run and its sinks' writes finish (nothing visible yet);
//! then its entry goes into the checkpoint log (create-if-absent: losing that race means another
//! driver took over, and this one stops, fenced); then every sink commits N; then the source is
//! acknowledged (Event Hubs checkpoints follow commits), the write-ahead log forgets what no
//! unfinished batch needs, and old entries are compacted. A crash anywhere leaves N either
//! unrecorded (its records are read again into a new batch) or recorded (recomputed from the
//! same records and committed again, idempotently).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::attempt::Finished;
use super::recover::{Progress, Start};
use super::report::BatchReport;
use super::{RunError, Shutdown};
use crate::batch::position::Position;
use crate::block::{Block, BlockManager};
use crate::checkpoint::{CheckpointLog, Entry, PartitionEntry, SNAPSHOT_EVERY, VERSION};
use crate::clock::now_ms;
use crate::dedup::{Filter, Recorder};
use crate::plan::Plan;
use crate::scheduler::job;
use crate::wal::Wal;

/// A committed batch, for the report.
#[derive(Debug)]
pub struct Committed {
    /// The batch's line.
    pub report: BatchReport,
    /// Its batch time.
    pub time_ms: i64,
    /// Its latency markers' send-to-commit times, ms.
    pub latencies: Vec<f64>,
    /// What its checkpoint entry says, for the monitor.
    pub detail: BatchDetail,
}

pub use crate::monitor::batch::BatchDetail;

/// Records and commits batches, in order.
pub(crate) struct Committer<'a> {
    plan: &'a Plan,
    rt: &'a tokio::runtime::Runtime,
    log: Option<CheckpointLog>,
    wal: Option<Wal>,
    /// What the log says up to the last recorded batch.
    progress: Progress,
    /// The open batch's source ranges, per partition.
    ranges: Vec<Vec<Position>>,
    /// The open batch's last position, per partition.
    last: Vec<Option<Position>>,
    /// The open batch's end offset, per partition.
    ends: Vec<u64>,
    /// A source that redelivers: the redelivery counts to report.
    dedup: Option<Arc<Filter>>,
    /// Duplicate detection by id: the committed window of message ids.
    recorder: Option<Recorder>,
    /// The open batch is a recomputed one, whose ids are recorded already.
    recomputing: bool,
    /// The plugin versions of the last recorded batch (for the plugin history).
    before: Option<BTreeMap<String, String>>,
    /// Several hosts: this member (commits go through the partitions' chains).
    pub(crate) ha: Option<super::ha::Member>,
    /// The write-ahead log's truncation running in the background, if any.
    truncating: Option<tokio::task::JoinHandle<()>>,
    /// The newest truncation left to a later one (one was running).
    skipped: Option<(Wal, Vec<u64>)>,
}

impl<'a> Committer<'a> {
    /// A committer going on from `start`.
    pub fn new(
        plan: &'a Plan,
        rt: &'a tokio::runtime::Runtime,
        start: &mut Start,
        wal: Option<Wal>,
    ) -> Self {
        let n = plan.partitions as usize;
        let before = start
            .log
            .as_ref()
            .map(|log| rt.block_on(crate::checkpoint::history::newest_plugins(log)))
            .filter(|p| !p.is_empty());
        Committer {
            before,
            plan,
            rt,
            log: start.log.clone(),
            wal,
            ends: start.progress.ends.clone(),
            last: start.progress.last.clone(),
            progress: start.progress.clone(),
            ranges: vec![Vec::new(); n],
            dedup: start.dedup.clone(),
            recorder: start.recorder.take(),
            recomputing: start.replay.is_some(),
            ha: None,
            truncating: None,
            skipped: None,
        }
    }

    /// Several hosts: after batch `batch` committed, applies the ownership changes (see
    /// [`super::ha::Member::boundary`]).
    pub fn boundary(&mut self, blocks: &Arc<BlockManager>, shutdown: &Shutdown, batch: u64) {
        if let Some(m) = &mut self.ha {
            m.boundary(self.plan, self.rt, blocks, shutdown, &mut self.last, batch);
        }
    }

    /// Notes where the open batch's blocks came from (their offsets and source positions).
    pub fn track(&mut self, blocks: &mut [Block]) {
        for b in blocks {
            if let (Some(r), false) = (&mut self.recorder, self.recomputing) {
                r.note(&b.records);
            }
            let p = b.id.partition as usize;
            let end = b.first_offset + b.records.len() as u64;
            if let Some(e) = self.ends.get_mut(p) {
                *e = (*e).max(end);
            }
            for pos in std::mem::take(&mut b.positions) {
                if let Some(l) = self.last.get_mut(p) {
                    *l = Some(pos.clone());
                }
                if let (Position::File { .. }, Some(r)) = (&pos, self.ranges.get_mut(p)) {
                    merge_range(r, pos);
                }
            }
        }
    }

    /// Records and commits the finished batch `done` (see the module doc), whose close began
    /// at `closing_start`. `replayed` is its entry when it is a recomputed batch (already
    /// recorded).
    pub fn close(
        &mut self,
        done: Finished,
        (closing_start, closed_at): (Instant, Instant),
        replayed: Option<Entry>,
        blocks: &BlockManager,
    ) -> Result<Committed, RunError> {
        let plan = self.plan;
        let Finished {
            id,
            time_ms,
            busy,
            steps,
            closed,
            events,
        } = done;
        let plugins = crate::swap::digests(&plan.digests, &steps);
        let t = Instant::now();
        let recomputed = replayed.is_some();
        let entry = match replayed {
            Some(e) => {
                // Its ranges and ids are recorded already; the next batch's start afresh.
                self.ranges.iter_mut().for_each(Vec::clear);
                if let Some(r) = &mut self.recorder {
                    r.discard();
                }
                e
            }
            None => {
                let mut e = self.entry(id, time_ms, plugins);
                e.events = events;
                e.params = step_params(&plan.steps, &steps);
                if let Some(log) = &self.log {
                    e.state = self
                        .rt
                        .block_on(crate::state::write_batch(log.location(), id, &closed.state))
                        .map_err(|e| {
                            RunError::Checkpoint(crate::checkpoint::CheckpointError::Store {
                                location: e.location,
                                message: e.message,
                            })
                        })?;
                    self.rt.block_on(log.append(&e))?;
                    let happened = crate::checkpoint::history::of_entry(self.before.as_ref(), &e);
                    self.rt
                        .block_on(crate::checkpoint::history::keep(log, id, &happened));
                }
                e
            }
        };
        let checkpoint = t.elapsed();
        self.recomputing = false;
        self.before = Some(entry.plugins.clone());
        let counts = self
            .dedup
            .as_ref()
            .map(|f| f.take_counts())
            .unwrap_or_default();
        match &mut self.ha {
            Some(member) => member.commit(plan, self.rt, &entry)?,
            None => job::commit(plan, id)?,
        }
        self.after_commit(&entry, blocks);
        let done_us = crate::clock::now_us();
        let done_ms = done_us.div_euclid(1000);
        Ok(Committed {
            report: BatchReport {
                id,
                records_in: closed.records_in,
                records_out: closed.records_out,
                dead_letters: closed.dead_letters,
                scheduling_delay: closing_start.duration_since(closed_at),
                processing: busy + closing_start.elapsed(),
                total_delay: closed_at.elapsed(),
                done_ms,
                checkpoint,
                redeliveries: counts.redeliveries,
                duplicates_dropped: counts.duplicates,
            },
            time_ms,
            latencies: closed
                .markers
                .iter()
                .map(|&us| (done_us - us) as f64 / 1e3)
                .collect(),
            detail: BatchDetail {
                ranges: entry.partitions.iter().map(|p| (p.start, p.end)).collect(),
                plugins: entry.plugins,
                events: entry.events,
                recomputed,
                checkpointed: self.log.is_some(),
            },
        })
    }

    /// The open batch's entry; resets the per-batch tracking.
    fn entry(&mut self, id: u64, time_ms: i64, plugins: BTreeMap<String, String>) -> Entry {
        let partitions = (0..self.ends.len())
            .map(|p| PartitionEntry {
                start: self.progress.ends[p],
                end: self.ends[p],
                ranges: std::mem::take(&mut self.ranges[p]),
                last: self.last[p].clone(),
            })
            .collect();
        let mut entry = Entry {
            version: VERSION,
            batch: id,
            batch_time_ms: time_ms,
            written_ms: now_ms(),
            partitions,
            wal_keep_from: self.wal.as_ref().map(|_| self.progress.ends.clone()),
            plugins,
            state: Vec::new(),
            files_seen: None,
            events: Vec::new(),
            params: BTreeMap::new(),
            seen_ids: self
                .recorder
                .as_mut()
                .map(|r| r.record(time_ms, id.is_multiple_of(SNAPSHOT_EVERY))),
        };
        self.progress
            .seen
            .extend(entry.files_done().map(str::to_owned));
        if id.is_multiple_of(SNAPSHOT_EVERY) && !self.progress.seen.is_empty() {
            let mut all: Vec<String> = self.progress.seen.iter().cloned().collect();
            all.sort();
            entry.files_seen = Some(all);
        }
        entry
    }

    /// Deletes the log's segments below `keep` off the batch loop: a second of segments is
    /// hundreds of files, and deleting them (without fsync, evicting their pages) held the next
    /// batch back. One truncation at a time; one still running when the next commit comes
    /// leaves that commit's segments to the one after (truncation deletes everything below
    /// its offsets, so nothing is left behind for good).
    fn truncate(&mut self, wal: Wal, keep: Vec<u64>) {
        if self.truncating.as_ref().is_some_and(|t| !t.is_finished()) {
            self.skipped = Some((wal, keep));
            return;
        }
        self.skipped = None;
        self.truncating = Some(self.rt.spawn(async move {
            if let Err(e) = wal.truncate(&keep).await {
                tracing::warn!(error = %e, "Segments of the write-ahead log that committed batches cover could not be deleted; the next commit tries again.");
            }
        }));
    }

    /// After batch `entry.batch` committed: acknowledge the source, trim the write-ahead log
    /// and the checkpoint log.
    fn after_commit(&mut self, entry: &Entry, blocks: &BlockManager) {
        for (p, pe) in entry.partitions.iter().enumerate() {
            self.progress.ends[p] = pe.end;
            self.progress.last[p] = pe.last.clone();
            self.ends[p] = self.ends[p].max(pe.end);
            if self.wal.is_none() {
                blocks.mark_durable(p as u32, pe.end);
            }
        }
        if let Some(wal) = &self.wal {
            // The batch just committed stays in the log until the next one commits: a
            // restart that cannot tell whether it committed recomputes it from there.
            let keep = entry.wal_keep_from.clone().unwrap_or_default();
            self.truncate(wal.clone(), keep);
        }
        self.rt.block_on(async {
            if let Some(log) = &self.log {
                crate::state::forget(self.plan, log.location(), entry.batch).await;
            }
            if let Some(log) = &self.log
                && entry.batch.is_multiple_of(SNAPSHOT_EVERY)
                && entry.batch >= SNAPSHOT_EVERY
            {
                match log.compact(entry.batch - SNAPSHOT_EVERY).await {
                    Ok(n) => tracing::debug!(deleted = n, "Compacted the checkpoint log."),
                    Err(e) => tracing::warn!(error = %e, "Old checkpoint entries could not be deleted; the next compaction tries again."),
                }
            }
        });
    }
}

impl Drop for Committer<'_> {
    /// The run is over: lets the last truncation of the log finish, and makes the one it
    /// skipped (a segment left is read again, and skipped, by the next start).
    fn drop(&mut self) {
        let (running, skipped) = (self.truncating.take(), self.skipped.take());
        let wait = std::time::Duration::from_secs(10);
        let last = async move {
            if let Some(t) = running {
                let _ = t.await;
            }
            if let Some((wal, keep)) = skipped {
                let _ = wal.truncate(&keep).await;
            }
        };
        // The timer is made inside the runtime (a timeout made outside it panics).
        let _ = self
            .rt
            .block_on(async move { tokio::time::timeout(wait, last).await });
    }
}

/// Adds a chunk's byte range, joining it to the previous one when it goes on in the same file.
fn merge_range(ranges: &mut Vec<Position>, next: Position) {
    if let (
        Some(Position::File { file, to, done, .. }),
        Position::File {
            file: f2,
            from: from2,
            to: to2,
            done: done2,
        },
    ) = (ranges.last_mut(), &next)
        && file == f2
        && to == from2
    {
        *to = *to2;
        *done = *done2;
        return;
    }
    ranges.push(next);
}

/// The parameters of each plugin step of `ran` that differ from the plan's own.
fn step_params(
    plan: &[crate::plan::StepPlan],
    ran: &[crate::plan::StepPlan],
) -> crate::checkpoint::StepParams {
    use crate::plan::StepPlan;
    plan.iter()
        .zip(ran)
        .enumerate()
        .filter_map(|(i, pair)| match pair {
            (StepPlan::Plugin(p, _), StepPlan::Plugin(r, _)) if p.0.params() != r.0.params() => {
                Some((i, r.0.params().iter().cloned().collect()))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(file: &str, from: u64, to: u64, done: bool) -> Position {
        Position::File {
            file: file.into(),
            from,
            to,
            done,
        }
    }

    #[test]
    fn consecutive_ranges_of_a_file_are_joined_and_others_kept_apart() {
        let mut r = Vec::new();
        merge_range(&mut r, range("a", 0, 10, false));
        merge_range(&mut r, range("a", 10, 20, true));
        merge_range(&mut r, range("b", 0, 5, false));
        merge_range(&mut r, range("b", 7, 9, false));
        assert_eq!(
            r,
            vec![
                range("a", 0, 20, true),
                range("b", 0, 5, false),
                range("b", 7, 9, false)
            ]
        );
    }
}
