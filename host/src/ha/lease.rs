//! Ownership leases: `<checkpoint>/ownership/<partition>/<generation:020>.json`, each
//! `{owner, generation, claimed_ms, expires_ms}`.
//!
//! The owner of a partition is the owner of its highest generation, and its lease is live
//! while `expires_ms` is after now. Claiming a free or expired partition, renewing one's own
//! lease and stealing a live one are the same write: create generation g+1 if absent
//! (`PutMode::Create`, which local files, Azure Blob and S3 all have). Of two hosts racing for
//! g+1 exactly one creates it; the other's create fails and it reads again. Generations older
//! than g-2 are deleted by the host that wrote g.
//!
//! Leases compare expiry times written by one host's clock with another host's: hosts are
//! assumed to agree on the time to well within a claim interval (NTP). A skewed clock can only
//! move a partition early or late; exactness never rests on the lease (see [`super::chain`]).

use futures::TryStreamExt;
use object_store::{PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::store::Location;

/// One generation of a partition's ownership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The member that owns the partition from this generation on.
    pub owner: String,
    /// The generation (its object's name).
    pub generation: u64,
    /// When it was written, ms since the epoch (the writer's clock).
    pub claimed_ms: i64,
    /// Until when it holds without renewal, ms since the epoch.
    pub expires_ms: i64,
}

impl Record {
    /// Whether the lease still holds at `now_ms`.
    pub fn live(&self, now_ms: i64) -> bool {
        self.expires_ms > now_ms
    }
}

/// A lease could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("ownership {location}: {message}")]
pub struct LeaseError {
    /// The object or prefix.
    pub location: String,
    /// What failed.
    pub message: String,
}

/// The ownership records of a pipeline's partitions.
#[derive(Debug, Clone)]
pub struct Leases {
    at: Location,
    partitions: u32,
}

impl Leases {
    /// The records under `at` (the checkpoint location) for `partitions` partitions.
    pub fn new(at: Location, partitions: u32) -> Self {
        Leases { at, partitions }
    }

    fn path(&self, partition: u32, generation: u64) -> object_store::path::Path {
        self.at
            .child(&format!("ownership/{partition}/{generation:020}.json"))
    }

    fn describe(&self, partition: u32, generation: u64) -> String {
        format!("{}/ownership/{partition}/{generation:020}.json", self.at)
    }

    /// Every partition's highest generation (`None`: never claimed). A damaged record reads as
    /// an expired lease of owner `"?"`, so that the next claim replaces it.
    pub async fn read(&self) -> Result<Vec<Option<Record>>, LeaseError> {
        let prefix = self.at.child("ownership");
        let objects: Vec<_> = self
            .at
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| LeaseError {
                location: format!("{}/ownership", self.at),
                message: e.to_string(),
            })?;
        let mut highest: Vec<Option<u64>> = vec![None; self.partitions as usize];
        for o in &objects {
            let mut parts = o.location.prefix_match(&prefix).into_iter().flatten();
            let (Some(p), Some(g)) = (parts.next(), parts.next()) else {
                continue;
            };
            let p: Option<usize> = p.as_ref().parse().ok();
            let g: Option<u64> = g
                .as_ref()
                .strip_suffix(".json")
                .and_then(|g| g.parse().ok());
            if let (Some(slot), Some(g)) = (p.and_then(|p| highest.get_mut(p)), g) {
                *slot = Some(slot.map_or(g, |h: u64| h.max(g)));
            }
        }
        let mut out = Vec::with_capacity(highest.len());
        for (p, g) in highest.into_iter().enumerate() {
            out.push(match g {
                Some(g) => Some(self.get(p as u32, g).await?),
                None => None,
            });
        }
        Ok(out)
    }

    async fn get(&self, partition: u32, generation: u64) -> Result<Record, LeaseError> {
        let location = self.describe(partition, generation);
        let bytes = self
            .at
            .store
            .get(&self.path(partition, generation))
            .await
            .map_err(|e| LeaseError {
                location: location.clone(),
                message: e.to_string(),
            })?
            .bytes()
            .await
            .map_err(|e| LeaseError {
                location: location.clone(),
                message: e.to_string(),
            })?;
        Ok(match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if r.generation == generation => r,
            _ => {
                tracing::warn!(record = %location, "An ownership record is damaged; it counts as an expired lease.");
                Record {
                    owner: "?".to_owned(),
                    generation,
                    claimed_ms: 0,
                    expires_ms: 0,
                }
            }
        })
    }

    /// Creates generation `record.generation` of `partition` if absent: `Ok(true)` when this
    /// call created it (the caller owns the partition), `Ok(false)` when another host did first.
    pub async fn create(&self, partition: u32, record: &Record) -> Result<bool, LeaseError> {
        let body = serde_json::to_vec(record).expect("a record serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let path = self.path(partition, record.generation);
        match self
            .at
            .store
            .put_opts(&path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(LeaseError {
                location: self.describe(partition, record.generation),
                message: e.to_string(),
            }),
        }
    }

    /// Deletes the generations of `partition` below `generation - 2` (best effort: a failure
    /// is tried again at the next renewal).
    pub async fn prune(&self, partition: u32, generation: u64) {
        for g in generation.saturating_sub(5)..generation.saturating_sub(2) {
            match self.at.store.delete(&self.path(partition, g)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::debug!(partition, generation = g, error = %e, "An old ownership record could not be deleted; the next renewal tries again.");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases(dir: &std::path::Path, partitions: u32) -> Leases {
        let at = Location::resolve(dir.to_str().unwrap(), "checkpoint.path", dir, true).unwrap();
        Leases::new(at, partitions)
    }

    fn rec(owner: &str, generation: u64, expires_ms: i64) -> Record {
        Record {
            owner: owner.to_owned(),
            generation,
            claimed_ms: 0,
            expires_ms,
        }
    }

    #[tokio::test]
    async fn claim_renew_and_steal_are_creates_of_the_next_generation() {
        let tmp = tempfile::tempdir().unwrap();
        let l = leases(tmp.path(), 2);
        assert_eq!(l.read().await.unwrap(), vec![None, None]);
        // Claim.
        assert!(l.create(1, &rec("a", 0, 1000)).await.unwrap());
        assert_eq!(l.read().await.unwrap()[1], Some(rec("a", 0, 1000)));
        // Renew.
        assert!(l.create(1, &rec("a", 1, 2000)).await.unwrap());
        // Steal.
        assert!(l.create(1, &rec("b", 2, 3000)).await.unwrap());
        let now = l.read().await.unwrap();
        assert_eq!(now[1], Some(rec("b", 2, 3000)));
        assert_eq!(now[0], None);
        // A stale renewal of generation 2 fails: someone moved first.
        assert!(!l.create(1, &rec("a", 2, 9000)).await.unwrap());
        // Expiry.
        assert!(now[1].as_ref().unwrap().live(2999));
        assert!(!now[1].as_ref().unwrap().live(3000));
    }

    #[tokio::test]
    async fn of_two_contenders_for_one_generation_exactly_one_wins() {
        for round in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let l = leases(tmp.path(), 1);
            let (a, b) = (l.clone(), l.clone());
            let ta = tokio::spawn(async move { a.create(0, &rec("a", round, 1)).await.unwrap() });
            let tb = tokio::spawn(async move { b.create(0, &rec("b", round, 1)).await.unwrap() });
            let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
            assert!(ra ^ rb, "round {round}: a {ra}, b {rb}");
            let winner = l.read().await.unwrap()[0].clone().unwrap().owner;
            assert_eq!(winner, if ra { "a" } else { "b" });
        }
    }

    #[tokio::test]
    async fn old_generations_are_pruned_and_the_highest_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let l = leases(tmp.path(), 1);
        for g in 0..6 {
            assert!(l.create(0, &rec("a", g, 1)).await.unwrap());
        }
        l.prune(0, 5).await;
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("ownership/0"))
            .unwrap()
            .count()
            .to_string()
            .into_bytes();
        assert_eq!(left, b"3");
        assert_eq!(l.read().await.unwrap()[0].as_ref().unwrap().generation, 5);
    }
}
