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
    /// The partitions this member owns, by lease generation; shared with the batch loop,
    /// which removes a partition whose commit the fence refused.
    pub owned: Arc<Mutex<BTreeMap<u32, u64>>>,
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
        for round in 0u64.. {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.cycle(seed.wrapping_add(round)).await {
                tracing::warn!(member = %self.member, error = %e, "The ownership records could not be read or written; trying again at the next claim interval.");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.claim_interval) => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, u64>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
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
        if self.owned().remove(&partition).is_some() {
            let _ = self.changes.send(Change::Lost { partition, reason });
        }
    }

    /// One claim interval's work.
    async fn cycle(&self, seed: u64) -> Result<(), String> {
        let records = self.leases.read().await.map_err(|e| e.to_string())?;
        let owned: Vec<u32> = self.owned().keys().copied().collect();
        for p in owned {
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
                let was_owned = self.owned().insert(p, g).is_some();
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
                self.owned().insert(partition, generation);
                let _ = self.changes.send(Change::Gained {
                    partition,
                    generation,
                    from,
                    head: Box::new(head),
                    next,
                });
            }
            Err(e) => {
                self.owned().remove(&partition);
                tracing::warn!(partition, generation, error = %e, "The lease was claimed but the partition could not be taken over; trying again at the next claim interval.");
            }
        }
    }
}
