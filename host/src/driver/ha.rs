//! Several hosts (`[ha]`, see [`crate::ha`]): the driver's side. A member keeps all P
//! partition slots but runs receivers only for the partitions it owns; the claim loop's
//! changes are applied at batch boundaries (receivers started for gained partitions, stopped
//! for lost ones), and each batch commits a partition only through the next link of its chain,
//! so a commit the fence refuses drops that partition's output and the partition.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, watch};

use super::{RunError, Shutdown};
use crate::batch::position::Position;
use crate::block::BlockManager;
use crate::checkpoint::{CheckpointError, Entry};
use crate::ha::HaConfig;
use crate::ha::chain::{Chains, Link, Part, SNAPSHOT_EVERY};
use crate::ha::claim::{Change, ClaimLoop, Owned};
use crate::ha::lease::Leases;
use crate::plan::{Plan, StepPlan};
use crate::receiver::{self, PartitionWriter, Resume};
use crate::scheduler::job::{JobError, with_retry};
use crate::store::Location;

/// A member of a pipeline run by several hosts, as [`prepare`] set it up.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The member id (fresh per process start).
    pub member: String,
    /// The pipeline's checkpoint location, shared by every host.
    pub base: Location,
    /// `[ha]`.
    pub config: HaConfig,
}

/// Called before [`super::run`] when the pipeline has `[ha]`: checks that it can run on several
/// hosts, picks this process's member id (`owner` overrides `[ha] owner`) and points the plan's
/// checkpoint log at `<checkpoint>/members/<id>` and its stream at `<stream>/<id>`.
pub fn prepare(plan: &mut Plan, owner: Option<&str>) -> Result<Option<Setup>, RunError> {
    let Some(config) = plan.file.ha.clone() else {
        return Ok(None);
    };
    let refuse = |why: String| Err(RunError::Refused(format!("[ha]: {why}")));
    let Some(base) = plan.checkpoint.clone() else {
        return refuse("hosts share partitions through the checkpoint location; `[checkpoint] enabled = false` cannot run on several hosts".to_owned());
    };
    if plan.wal {
        return refuse("`source.wal = true` keeps records in one host's write-ahead log, which another host cannot replay; several hosts need a replayable source (`files`, `eventhubs`) instead".to_owned());
    }
    if !matches!(plan.source.kind(), "files" | "eventhubs") {
        return refuse(format!(
            "source kind `{}` cannot be read again by another host from a recorded position; several hosts need `files` or `eventhubs`",
            plan.source.kind()
        ));
    }
    for (i, step) in plan.steps.iter().enumerate() {
        let alone = match step {
            StepPlan::Plugin(stage, _) => !stage.plugin().uses_keyed_state(),
            StepPlan::Lookup(_) | StepPlan::Native(_) => true,
            _ => false,
        };
        if !alone {
            return refuse(format!(
                "step {} needs every partition's records or keeps state across batches, which no single host has: split the pipeline through the broker: a first pipeline (on every host) ends in an `amqp` sink routing records to N queues by key hash, and a second one reads those queues as its partitions and runs the step",
                i + 1
            ));
        }
    }
    for sink in &plan.sinks {
        if sink.location().is_none() && sink.clone().counter().is_none() {
            return refuse(format!(
                "sink {} cannot commit a partition's output on its own (only `files` and `count` sinks can), so a partition changing hands could repeat or lose records",
                sink.name()
            ));
        }
    }
    let member = crate::ha::member_id(owner.or(config.owner.as_deref()));
    let local = base.local.as_ref().map(|l| l.join("members").join(&member));
    if let Some(dir) = &local {
        std::fs::create_dir_all(dir)
            .map_err(|e| RunError::Recovery(format!("creating {}: {e}", dir.display())))?;
    }
    plan.checkpoint = Some(Location {
        store: base.store.clone(),
        prefix: base.child(&format!("members/{member}")),
        display: format!("{base}/members/{member}"),
        local,
    });
    plan.stream = format!("{}/{member}", plan.stream);
    tracing::info!(member = %member, checkpoint = %base, stream = %plan.stream, claim_interval_ms = config.claim_interval.as_millis() as u64, lease_expiry_ms = config.lease_expiry.as_millis() as u64, "Several hosts: this process is member {member}; it claims its share of the partitions through ownership leases and writes its own checkpoint log and output stream.");
    Ok(Some(Setup {
        member,
        base,
        config,
    }))
}

/// A partition this member owns and has taken over.
struct Held {
    generation: u64,
    /// The sequence number of its next link.
    next: u64,
    /// Where it stands after the last link.
    last: Option<Position>,
    /// Its files read to their end.
    seen: HashSet<String>,
}

/// A receiver this member started.
struct Running {
    stop: watch::Sender<bool>,
    done: Arc<AtomicBool>,
    /// Once it is seen stopped: the batch its last records belong to at the latest (see
    /// [`BlockManager::cut_partition`]). Its partition is not taken again here before that
    /// batch has committed, so no record it read is committed as the new owner's.
    drained_by: Option<u64>,
}

/// The batch loop's side of a member.
pub(crate) struct Member {
    setup: Setup,
    chains: Chains,
    owned: Owned,
    changes: mpsc::UnboundedReceiver<Change>,
    /// Changes that wait for a partition's old receiver to stop.
    waiting: Vec<Change>,
    held: BTreeMap<u32, Held>,
    running: BTreeMap<u32, Running>,
    stop_claims: watch::Sender<bool>,
    /// Shows the held partitions (`/api/v1/overview` → `ownership`, `/metrics`).
    monitor: Arc<crate::monitor::Monitor>,
    /// What was last shown.
    shown: Option<crate::monitor::Ownership>,
    /// The last batch committed here (what the waits are counted against).
    batch: u64,
    /// Claimed partitions still waiting to be taken.
    waits: Waits,
    /// Partition commits the fence refused, and partitions lost, since the start.
    refused: u64,
    lost: u64,
}

/// A claimed partition that waits this many batches to be taken is logged as a warning. A
/// hand-over normally waits one or two (the old receiver stops at a boundary, then the batch
/// with its last records commits); a partition that waits much longer is read by nobody.
const LONG_WAIT_BATCHES: u64 = 20;

impl Member {
    /// Starts the claim loop on `rt`; `monitor` is told the partitions held whenever they
    /// change (none at first).
    pub fn start(
        plan: &Plan,
        rt: &tokio::runtime::Runtime,
        setup: Setup,
        monitor: Arc<crate::monitor::Monitor>,
    ) -> Member {
        let (tx, rx) = mpsc::unbounded_channel();
        let owned = Owned::default();
        let chains = Chains::new(setup.base.clone());
        let claims = ClaimLoop {
            member: setup.member.clone(),
            leases: Leases::new(setup.base.clone(), plan.partitions),
            chains: chains.clone(),
            sinks: plan.sinks.iter().map(|s| s.location()).collect(),
            claim_interval: setup.config.claim_interval,
            lease_expiry: setup.config.lease_expiry,
            owned: owned.clone(),
            changes: tx,
        };
        let (stop_claims, stop_rx) = watch::channel(false);
        rt.spawn(claims.run(stop_rx));
        let mut member = Member {
            setup,
            chains,
            owned,
            changes: rx,
            waiting: Vec::new(),
            held: BTreeMap::new(),
            running: BTreeMap::new(),
            stop_claims,
            monitor,
            shown: None,
            batch: 0,
            waits: Waits::default(),
            refused: 0,
            lost: 0,
        };
        member.show_ownership();
        member
    }

    /// Tells the monitor the partitions held now, those waiting to be taken and the counts,
    /// when they changed since it was last told.
    fn show_ownership(&mut self) {
        let ownership = crate::monitor::Ownership {
            member: self.setup.member.clone(),
            owned: self.held.keys().copied().collect(),
            waiting: self.waits.shown(self.batch),
            commits_refused: self.refused,
            partitions_lost: self.lost,
        };
        if self.shown.as_ref() != Some(&ownership) {
            self.monitor.set_ownership(ownership.clone());
            self.shown = Some(ownership);
        }
    }

    /// Counts the waits of the partitions claimed and not taken now, and logs one that has
    /// waited [`LONG_WAIT_BATCHES`] (once per wait).
    fn note_waits(&mut self) {
        let waiting: BTreeSet<u32> = self
            .waiting
            .iter()
            .filter_map(|c| match c {
                Change::Gained { partition, .. } => Some(*partition),
                Change::Lost { .. } => None,
            })
            .collect();
        for (p, waited) in self.waits.update(&waiting, self.batch) {
            let why = match self.running.get(&p).and_then(|r| r.drained_by) {
                Some(b) => format!(
                    "batch {b}, which holds the last records of its previous receiver here, has not committed"
                ),
                None => "its previous receiver here has not stopped".to_owned(),
            };
            tracing::warn!(member = %self.setup.member, partition = p, waited_batches = waited, "Partition {p} was claimed by this host {waited} batches ago and is still not taken: {why}. Nobody reads the partition meanwhile; `sluice_ha_partition_waiting_batches` shows the wait.");
        }
    }

    /// After batch `batch` committed: applies the claim loop's changes. A gained partition
    /// waits until its previous receiver here (if any) has stopped and the batch holding its
    /// last records has committed, so that no record it read is mistaken for the new owner's.
    pub fn boundary(
        &mut self,
        plan: &Plan,
        rt: &tokio::runtime::Runtime,
        blocks: &Arc<BlockManager>,
        shutdown: &Shutdown,
        last: &mut [Option<Position>],
        batch: u64,
    ) {
        self.batch = batch;
        let mut todo = std::mem::take(&mut self.waiting);
        while let Ok(c) = self.changes.try_recv() {
            todo.push(c);
        }
        for (&p, r) in self.running.iter_mut() {
            if r.drained_by.is_none() && r.done.load(Ordering::SeqCst) {
                r.drained_by = Some(blocks.cut_partition(p));
            }
        }
        let mut blocked = BTreeSet::new();
        for change in todo {
            let p = match &change {
                Change::Gained { partition, .. } | Change::Lost { partition, .. } => *partition,
            };
            let busy = self
                .running
                .get(&p)
                .is_some_and(|r| r.drained_by.is_none_or(|b| b > batch));
            match change {
                Change::Lost { partition, reason } => {
                    if blocked.contains(&p) {
                        self.waiting.push(Change::Lost { partition, reason });
                    } else {
                        self.drop_partition(partition, &reason, batch);
                    }
                }
                gained @ Change::Gained { .. } if busy || blocked.contains(&p) => {
                    blocked.insert(p);
                    self.waiting.push(gained);
                }
                Change::Gained { .. } if shutdown.closing() => {}
                Change::Gained {
                    partition,
                    generation,
                    from,
                    mut head,
                    next,
                } => {
                    let start = head.last();
                    let from_text = match &from {
                        Some((o, true)) => format!("stolen from {o}"),
                        Some((o, false)) => format!("claimed from {o} (its lease had expired)"),
                        None => "claimed (never owned before)".to_owned(),
                    };
                    tracing::info!(member = %self.setup.member, partition, generation, from = ?from.as_ref().map(|f| &f.0), start = ?start, files_done = head.seen.len(), first_link = next, "Partition {partition} {from_text} (generation {generation}); its receiver starts at the last committed position.");
                    last[partition as usize] = start.clone();
                    let resume = Resume {
                        offset: 0,
                        last: start.clone(),
                        replay: Vec::new(),
                        seen: head.seen.clone(),
                        from_log: head.seq.is_some(),
                        dedup: None,
                    };
                    self.held.insert(
                        partition,
                        Held {
                            generation,
                            next,
                            last: start,
                            seen: std::mem::take(&mut head.seen),
                        },
                    );
                    self.spawn(plan, rt, blocks, shutdown, partition, resume);
                }
            }
        }
        self.note_waits();
        self.show_ownership();
    }

    /// Stops `partition`'s receiver and forgets it (its records in later batches are dropped).
    fn drop_partition(&mut self, partition: u32, reason: &str, batch: u64) {
        let Some(held) = self.held.remove(&partition) else {
            return;
        };
        self.owned.release(partition, held.generation);
        self.lost += 1;
        if let Some(r) = self.running.get(&partition) {
            let _ = r.stop.send(true);
        }
        self.show_ownership();
        tracing::warn!(member = %self.setup.member, partition, after_batch = batch, reason, "Partition {partition} lost: {reason}; its receiver stops at this batch boundary and what it read since is dropped (the new owner reads it).");
    }

    fn spawn(
        &mut self,
        plan: &Plan,
        rt: &tokio::runtime::Runtime,
        blocks: &Arc<BlockManager>,
        shutdown: &Shutdown,
        partition: u32,
        resume: Resume,
    ) {
        let receiver = plan.source.clone().receiver(partition, resume);
        let writer = PartitionWriter {
            blocks: blocks.clone(),
            partition,
        };
        let (stop, rx) = watch::channel(false);
        let done = Arc::new(AtomicBool::new(false));
        let mut global = shutdown.receivers();
        let bridge = stop.clone();
        rt.spawn(async move {
            loop {
                if *global.borrow_and_update() {
                    let _ = bridge.send(true);
                    return;
                }
                tokio::select! {
                    r = global.changed() => if r.is_err() { return },
                    _ = bridge.closed() => return,
                }
            }
        });
        let (shutdown, finished) = (shutdown.clone(), done.clone());
        rt.spawn(async move {
            if let Err(e) = receiver::supervise(receiver, writer, rx).await {
                shutdown.fail(RunError::Receiver {
                    partition,
                    message: e.to_string(),
                });
            }
            finished.store(true, Ordering::SeqCst);
        });
        self.running.insert(
            partition,
            Running {
                stop,
                done,
                drained_by: None,
            },
        );
    }

    /// Commits batch `entry.batch`: completes the sinks' uploads, creates the next link of
    /// every held partition the batch moved (the fence: a refused link means another host took
    /// the partition over), then lets the sinks commit the partitions whose links were created
    /// and drop the rest.
    pub fn commit(
        &mut self,
        plan: &Plan,
        rt: &tokio::runtime::Runtime,
        entry: &Entry,
    ) -> Result<(), RunError> {
        let id = entry.batch;
        if let Some(delay) = commit_delay() {
            std::thread::sleep(delay);
        }
        let sink_err = |source| RunError::Job(JobError::Sink { batch: id, source });
        let mut parts: BTreeMap<u32, Vec<Part>> = BTreeMap::new();
        for (i, sink) in plan.sinks.iter().enumerate() {
            for sp in with_retry(|| sink.stage(id)).map_err(sink_err)? {
                parts.entry(sp.partition).or_default().push(Part {
                    sink: i,
                    staged: sp.staged,
                    target: sp.target,
                });
            }
        }
        let mut keep = BTreeSet::new();
        let mut refused = Vec::new();
        for (&p, held) in self.held.iter_mut() {
            let Some(pe) = entry.partitions.get(p as usize) else {
                continue;
            };
            let p_parts = parts.remove(&p).unwrap_or_default();
            if pe.ranges.is_empty() && pe.last == held.last && p_parts.is_empty() {
                continue;
            }
            let done: Vec<String> = entry_files_done(pe);
            let seq = held.next;
            let snapshot = seq.is_multiple_of(SNAPSHOT_EVERY);
            let mut seen = held.seen.clone();
            seen.extend(done.iter().cloned());
            let link = Link {
                member: self.setup.member.clone(),
                batch: Some(id),
                generation: held.generation,
                last: pe.last.clone(),
                done,
                seen: snapshot.then(|| {
                    let mut all: Vec<String> = seen.iter().cloned().collect();
                    all.sort();
                    all
                }),
                parts: p_parts,
                written_ms: crate::clock::now_ms(),
            };
            let created = rt
                .block_on(self.chains.append(p, seq, &link))
                .map_err(|e| {
                    RunError::Checkpoint(CheckpointError::Store {
                        location: e.location,
                        message: e.message,
                    })
                })?;
            if created {
                keep.insert(p);
                held.next += 1;
                held.last = pe.last.clone();
                held.seen = seen;
                if snapshot {
                    rt.block_on(self.chains.prune(p, seq));
                }
            } else {
                refused.push((p, seq));
            }
        }
        self.refused += refused.len() as u64;
        for (p, seq) in refused {
            tracing::warn!(member = %self.setup.member, partition = p, batch = id, link = seq, "The commit of partition {p} in batch {id} was refused by the fence: another host took the partition over (it created link {seq} first). This host's output for it is dropped, never written.");
            self.drop_partition(p, "another host took it over (fence)", id);
        }
        for sink in &plan.sinks {
            with_retry(|| sink.commit_only(&plan.stream, id, &|p| keep.contains(&p)))
                .map_err(sink_err)?;
        }
        Ok(())
    }

    /// The run ended: stops the claim loop and lets the leases go (an expired generation each),
    /// so the other hosts take the partitions at their next claim instead of after the expiry.
    pub fn stop(&mut self, rt: &tokio::runtime::Runtime, partitions: u32) {
        let _ = self.stop_claims.send(true);
        let owned = self.owned.take_all();
        let leases = Leases::new(self.setup.base.clone(), partitions);
        rt.block_on(async {
            for (p, g) in &owned {
                let record = crate::ha::lease::Record {
                    owner: self.setup.member.clone(),
                    generation: g + 1,
                    claimed_ms: crate::clock::now_ms(),
                    expires_ms: 0,
                };
                let _ = leases.create(*p, &record).await;
            }
        });
        if !owned.is_empty() {
            tracing::info!(member = %self.setup.member, partitions = owned.len(), "Let the leases go: the other hosts take these partitions at their next claim.");
        }
    }
}

/// Claimed partitions not taken yet: the batch from which each has waited, and whether its
/// long wait was logged.
#[derive(Debug, Default)]
struct Waits(BTreeMap<u32, (u64, bool)>);

impl Waits {
    /// After batch `batch`: keeps the partitions of `waiting` (one not waiting before starts
    /// its wait here; one no longer waiting is forgotten, so a later wait starts over), and
    /// returns those whose wait reached [`LONG_WAIT_BATCHES`] now, with its length.
    fn update(&mut self, waiting: &BTreeSet<u32>, batch: u64) -> Vec<(u32, u64)> {
        self.0.retain(|p, _| waiting.contains(p));
        let mut long = Vec::new();
        for &p in waiting {
            let (since, logged) = self.0.entry(p).or_insert((batch, false));
            let waited = batch.saturating_sub(*since);
            if waited >= LONG_WAIT_BATCHES && !*logged {
                *logged = true;
                long.push((p, waited));
            }
        }
        long
    }

    /// The waits as the monitor shows them, counted to batch `batch`.
    fn shown(&self, batch: u64) -> Vec<crate::monitor::Waiting> {
        self.0
            .iter()
            .map(|(&partition, &(since, _))| crate::monitor::Waiting {
                partition,
                batches: batch.saturating_sub(since),
            })
            .collect()
    }
}

/// Fault injection for the tests: `SLUICE_FAULT_COMMIT_DELAY_MS` delays every batch's commit
/// of its partitions, so the batch loop lags behind the clock and closes queue up (what a slow
/// store or a host woken from a pause does). Never set in production.
fn commit_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms: u64 = std::env::var("SLUICE_FAULT_COMMIT_DELAY_MS")
            .ok()?
            .parse()
            .ok()?;
        tracing::warn!(delay_ms = ms, "SLUICE_FAULT_COMMIT_DELAY_MS is set: every batch's commit is delayed (fault injection for tests).");
        Some(std::time::Duration::from_millis(ms))
    })
}

fn entry_files_done(pe: &crate::checkpoint::PartitionEntry) -> Vec<String> {
    pe.ranges
        .iter()
        .filter_map(|r| match r {
            Position::File {
                file, done: true, ..
            } => Some(file.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_wait_is_reported_once_and_a_new_wait_starts_over() {
        let mut waits = Waits::default();
        let set = |ps: &[u32]| ps.iter().copied().collect::<BTreeSet<u32>>();
        assert!(waits.update(&set(&[3]), 5).is_empty());
        assert!(waits.update(&set(&[3, 4]), 24).is_empty());
        let shown = waits.shown(24);
        assert_eq!(
            shown
                .iter()
                .map(|w| (w.partition, w.batches))
                .collect::<Vec<_>>(),
            [(3, 19), (4, 0)]
        );
        assert_eq!(waits.update(&set(&[3, 4]), 25), [(3, 20)]);
        assert!(waits.update(&set(&[3, 4]), 26).is_empty(), "reported once");
        // Partition 3 is taken; when it is claimed again, its wait starts over.
        assert!(waits.update(&set(&[4]), 27).is_empty());
        assert_eq!(waits.update(&set(&[3, 4]), 44), [(4, 20)]);
        assert_eq!(waits.shown(44)[0].batches, 0);
        assert_eq!(waits.update(&set(&[3]), 64), [(3, 20)]);
        assert_eq!(waits.shown(64).len(), 1);
    }
}
