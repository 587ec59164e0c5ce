//! The claim loop: an async task that, every claim interval, reads the ownership records,
//! renews this member's leases, claims and steals toward its fair share ([`super::balance`]),
//! takes gained partitions over ([`super::chain`]) and reports each change on a channel, which
//! the batch loop applies at its next batch boundary.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::chain::{Chains, Head};
use super::lease::{Leases, Record};
use crate::clock::now_ms;
use crate::store::Location;

/// A change of this member's partitions.
#[derive(Debug)]
pub enum Change {
    /// The member now owns `partition` and has taken it over: it starts from `head`, and its
    /// first commit of it is link `next`.
    Gained {
        /// The partition.
        partition: u32,
        /// The lease generation.
        generation: u64,
        /// The previous owner, when there was one, and whether its lease was live (a steal).
        from: Option<(String, bool)>,
        /// Where the partition stands.
        head: Box<Head>,
        /// The sequence number of the member's first link.
        next: u64,
    },
    /// The member no longer owns `partition`.
    Lost {
        /// The partition.
        partition: u32,
        /// Why, for the log.
        reason: String,
    },
}

/// A partition whose lease this member holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease's generation now (each renewal creates the next).
    pub generation: u64,
    /// The generation at which the member last took the partition over (its
    /// [`Change::Gained`]).
    pub taken: u64,
}

/// The partitions whose leases this member holds; shared by the claim loop, which claims,
/// renews and loses them, and the batch loop, which lets one go when its commit is refused.
#[derive(Debug, Clone, Default)]
pub struct Owned(Arc<Mutex<BTreeMap<u32, Lease>>>);

impl Owned {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Lease>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The partitions held now.
    pub fn partitions(&self) -> Vec<u32> {
        self.lock().keys().copied().collect()
    }

    /// The batch loop lets go of `partition`, which it ran since the takeover at generation
    /// `taken`. It is forgotten unless the claim loop has taken it over again since: that
    /// takeover's [`Change::Gained`] is on its way to the batch loop, and forgetting it would
    /// make the next claim take the partition over once more, whose new link would fence out
    /// the takeover on its way, whose refused commit would forget the next one: a host that
    /// never commits a partition it holds. Returns whether it was forgotten.
    pub fn release(&self, partition: u32, taken: u64) -> bool {
        let mut owned = self.lock();
        if owned.get(&partition).is_some_and(|h| h.taken > taken) {
            return false;
        }
        owned.remove(&partition).is_some()
    }

    /// Empties it, giving each partition's lease generation (the run ends).
    pub fn take_all(&self) -> Vec<(u32, u64)> {
        std::mem::take(&mut *self.lock())
            .into_iter()
            .map(|(p, h)| (p, h.generation))
            .collect()
    }
}

/// What the claim loop needs.
pub struct ClaimLoop {
    /// This member.
    pub member: String,
    /// The ownership records.
    pub leases: Leases,
    /// The partitions' chains.
    pub chains: Chains,
    /// Each sink's store (for parts a killed host left staged).
    pub sinks: Vec<Option<Location>>,
    /// How often to run.
    pub claim_interval: Duration,
    /// How long a written lease lasts.
    pub lease_expiry: Duration,
    /// The partitions this member owns; shared with the batch loop, which lets go of a
    /// partition whose commit the fence refused.
    pub owned: Owned,
    /// Where changes go.
    pub changes: mpsc::UnboundedSender<Change>,
}

impl ClaimLoop {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let seed = self
            .member
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        // Rounds start every claim interval, however long a round takes (reading the records,
        // taking partitions over), so that "within two claim intervals" holds on a busy host
        // too; a round that overruns a whole interval delays the next rather than bunching.
        let mut ticks = tokio::time::interval(self.claim_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for round in 0u64.. {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.cycle(seed.wrapping_add(round)).await {
                tracing::warn!(member = %self.member, error = %e, "The ownership records could not be read or written; trying again at the next claim interval.");
            }
        }
    }

    fn record(&self, generation: u64) -> Record {
        let now = now_ms();
        Record {
            owner: self.member.clone(),
            generation,
            claimed_ms: now,
            expires_ms: now + self.lease_expiry.as_millis() as i64,
        }
    }

    fn lose(&self, partition: u32, reason: String) {
        if self.owned.lock().remove(&partition).is_some() {
            let _ = self.changes.send(Change::Lost { partition, reason });
        }
    }

    /// One claim interval's work.
    async fn cycle(&self, seed: u64) -> Result<(), String> {
        let records = self.leases.read().await.map_err(|e| e.to_string())?;
        for p in self.owned.partitions() {
            match &records[p as usize] {
                Some(r) if r.owner == self.member => {}
                Some(r) => self.lose(
                    p,
                    format!("{} took generation {} of its lease", r.owner, r.generation),
                ),
                None => self.lose(p, "its ownership records are gone".to_owned()),
            }
        }
        let moves = super::balance::balance(&self.member, now_ms(), &records, seed);
        for (p, g) in moves.renew {
            if self
                .leases
                .create(p, &self.record(g))
                .await
                .map_err(|e| e.to_string())?
            {
                self.leases.prune(p, g).await;
                let was_owned = match self.owned.lock().get_mut(&p) {
                    Some(held) => {
                        held.generation = g;
                        true
                    }
                    None => false,
                };
                if !was_owned {
                    // Claimed earlier, but its takeover failed: try it again.
                    self.take_over(p, g, None).await;
                }
            } else {
                self.lose(
                    p,
                    format!("another host created generation {g} of its lease first"),
                );
            }
        }
        for t in moves.take {
            if self
                .leases
                .create(t.partition, &self.record(t.generation))
                .await
                .map_err(|e| e.to_string())?
            {
                self.take_over(t.partition, t.generation, t.from).await;
            }
        }
        Ok(())
    }

    /// The lease of `partition` is ours at `generation`: takes the partition over and reports
    /// it. A failed takeover leaves the partition unowned here; the next renewal tries again.
    async fn take_over(&self, partition: u32, generation: u64, from: Option<(String, bool)>) {
        match self
            .chains
            .take_over(partition, &self.member, generation, &self.sinks)
            .await
        {
            Ok((head, next)) => {
                let taken = Lease {
                    generation,
                    taken: generation,
                };
                self.owned.lock().insert(partition, taken);
                let _ = self.changes.send(Change::Gained {
                    partition,
                    generation,
                    from,
                    head: Box::new(head),
                    next,
                });
            }
            Err(e) => {
                self.owned.lock().remove(&partition);
                tracing::warn!(partition, generation, error = %e, "The lease was claimed but the partition could not be taken over; trying again at the next claim interval.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_loop(dir: &std::path::Path) -> (ClaimLoop, mpsc::UnboundedReceiver<Change>) {
        let at = Location::resolve(dir.to_str().unwrap(), "checkpoint.path", dir, true).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let claims = ClaimLoop {
            member: "a".into(),
            leases: Leases::new(at.clone(), 1),
            chains: Chains::new(at),
            sinks: Vec::new(),
            claim_interval: Duration::from_secs(1),
            lease_expiry: Duration::from_secs(3),
            owned: Owned::default(),
            changes: tx,
        };
        (claims, rx)
    }

    /// The generation of each change sent so far (lost: `None`).
    fn sent(rx: &mut mpsc::UnboundedReceiver<Change>) -> Vec<Option<u64>> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| match c {
                Change::Gained { generation, .. } => Some(generation),
                Change::Lost { .. } => None,
            })
            .collect()
    }

    /// The batch loop still runs the partition from its first takeover when the claim loop
    /// takes it over again (another host held it meanwhile). The first takeover's next commit
    /// is refused by the second's link; letting it go must leave the second alone, or each
    /// claim would take the partition over once more and fence out the takeover before it.
    #[tokio::test]
    async fn a_refused_commit_of_an_older_takeover_does_not_make_the_claim_loop_take_over_again() {
        let tmp = tempfile::tempdir().unwrap();
        let (claims, mut rx) = claim_loop(tmp.path());
        claims.cycle(0).await.unwrap();
        assert_eq!(sent(&mut rx), vec![Some(0)]);
        // Host b took it (its lease now lapsed), then a takes it back.
        let b = Record {
            owner: "b".into(),
            generation: 1,
            claimed_ms: now_ms() - 10_000,
            expires_ms: now_ms() - 7_000,
        };
        assert!(claims.leases.create(0, &b).await.unwrap());
        claims.chains.take_over(0, "b", 1, &[]).await.unwrap();
        claims.cycle(1).await.unwrap();
        assert_eq!(sent(&mut rx), vec![None, Some(2)]);
        let links = claims.chains.list(0).await.unwrap().len();
        // The batch loop's commit for the takeover at generation 0 is refused.
        assert!(
            !claims.owned.release(0, 0),
            "the newer takeover was forgotten"
        );
        for round in 2..5 {
            claims.cycle(round).await.unwrap();
        }
        assert_eq!(sent(&mut rx), vec![], "renewals only");
        assert_eq!(claims.chains.list(0).await.unwrap().len(), links);
        assert_eq!(claims.owned.partitions(), vec![0]);
        // A refusal of the takeover the batch loop runs now lets the partition go.
        assert!(claims.owned.release(0, 2));
        assert_eq!(claims.owned.partitions(), Vec::<u32>::new());
    }
}
