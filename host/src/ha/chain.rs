//! Where each partition stands, and the fence that makes a stale owner's commits impossible.
//!
//! Every commit of a partition's records, by whichever host, creates the next link of that
//! partition's chain, `<checkpoint>/partitions/<p>/<seq:020>.json`, create-if-absent: the
//! host, its batch, where the partition stands after it ([`Position`]), the files it read to
//! their end, and the staged output objects the commit moves into place. A host that gains a
//! partition reads the chain's head (its start: the last committed position) and creates the
//! next link itself, a *takeover* link holding no records. From then on the previous owner's
//! next commit of that partition needs the same sequence number and collides: it is refused,
//! and that host drops the partition. A lease tells who *should* read a partition; the chain
//! makes it impossible for two hosts to commit the same records, however long one was paused
//! between checking its lease and committing.
//!
//! A commit creates its links after its sinks' uploads are complete and before they are moved
//! into place, so a host killed between the two leaves committed output in staging: the next
//! owner moves it into place (create-if-absent, so a late move by the host itself, or twice,
//! is harmless) before taking over.
//!
//! Every [`SNAPSHOT_EVERY`] links (and in every takeover link) a link carries the whole set of
//! files of its partition read to their end; the head's set is that snapshot plus the files
//! finished by the links after it. Source-agnostic: for Event Hubs the position is the last
//! event's offset and sequence number, and the set of files is empty.

use std::collections::HashSet;

use object_store::{PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::batch::position::Position;
use crate::store::Location;

/// A link carries the whole set of files read every this many links.
pub const SNAPSHOT_EVERY: u64 = 16;

/// One committed step of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The member that committed it.
    pub member: String,
    /// The member's batch (`None`: a takeover link, holding no records).
    pub batch: Option<u64>,
    /// The lease generation the member held.
    pub generation: u64,
    /// Where the partition stands after it (`None`: the source's start).
    pub last: Option<Position>,
    /// Files read to their end by this link's records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<String>,
    /// A snapshot: every file of the partition read to its end, this link's included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<Vec<String>>,
    /// Output objects this commit moves from staging into place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// When it was written, ms since the epoch.
    pub written_ms: i64,
}

/// A staged output object and where it goes, in the store of sink `sink` (its index among the
/// pipeline's sinks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// The sink's index.
    pub sink: usize,
    /// The staged object (a path in the sink's store).
    pub staged: String,
    /// Where it goes.
    pub target: String,
}

/// A partition's head: the newest link and where the partition stands.
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// The newest link's sequence number (`None`: no link yet).
    pub seq: Option<u64>,
    /// The newest link.
    pub link: Option<Link>,
    /// Every file of the partition read to its end.
    pub seen: HashSet<String>,
}

impl Head {
    /// The sequence number the next link takes.
    pub fn next(&self) -> u64 {
        self.seq.map_or(0, |s| s + 1)
    }
    /// Where the partition stands.
    pub fn last(&self) -> Option<Position> {
        self.link.as_ref().and_then(|l| l.last.clone())
    }
}

/// A chain could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("partition chain {location}: {message}")]
pub struct ChainError {
    /// The object or prefix.
    pub location: String,
    /// What failed.
    pub message: String,
}

/// The partitions' chains under a checkpoint location.
#[derive(Debug, Clone)]
pub struct Chains {
    at: Location,
}

impl Chains {
    /// The chains under `at` (the pipeline's checkpoint location, shared by every host).
    pub fn new(at: Location) -> Self {
        Chains { at }
    }

    fn path(&self, partition: u32, seq: u64) -> object_store::path::Path {
        self.at
            .child(&format!("partitions/{partition}/{seq:020}.json"))
    }

    fn describe(&self, partition: u32, seq: u64) -> String {
        format!("{}/partitions/{partition}/{seq:020}.json", self.at)
    }

    fn err(&self, location: String) -> impl FnOnce(object_store::Error) -> ChainError {
        move |e| ChainError {
            location,
            message: e.to_string(),
        }
    }

    /// The sequence numbers of `partition`'s links, oldest first.
    pub async fn list(&self, partition: u32) -> Result<Vec<u64>, ChainError> {
        self.at
            .numbered(&format!("partitions/{partition}"))
            .await
            .map_err(self.err(format!("{}/partitions/{partition}", self.at)))
    }

    /// Reads link `seq` of `partition`.
    pub async fn read(&self, partition: u32, seq: u64) -> Result<Link, ChainError> {
        let location = self.describe(partition, seq);
        let bytes = self
            .at
            .store
            .get(&self.path(partition, seq))
            .await
            .map_err(self.err(location.clone()))?
            .bytes()
            .await
            .map_err(self.err(location.clone()))?;
        serde_json::from_slice(&bytes).map_err(|e| ChainError {
            location,
            message: format!("damaged or of another format: {e}"),
        })
    }

    /// The head of `partition`: its newest link, and the files read back to the newest
    /// snapshot.
    pub async fn head(&self, partition: u32) -> Result<Head, ChainError> {
        let seqs = self.list(partition).await?;
        let mut head = Head::default();
        for &seq in seqs.iter().rev() {
            let link = self.read(partition, seq).await?;
            head.seen.extend(link.done.iter().cloned());
            let snapshot = link.seen.clone();
            if head.link.is_none() {
                head.seq = Some(seq);
                head.link = Some(link);
            }
            if let Some(all) = snapshot {
                head.seen.extend(all);
                return Ok(head);
            }
        }
        if let Some(&first) = seqs.first()
            && first > 0
        {
            return Err(ChainError {
                location: self.describe(partition, first),
                message: "the links back to the last snapshot are missing; the files read cannot be known".to_owned(),
            });
        }
        Ok(head)
    }

    /// Creates link `seq` of `partition` if absent: `Ok(false)` when another host created it
    /// first (the caller's commit of this partition is refused).
    pub async fn append(&self, partition: u32, seq: u64, link: &Link) -> Result<bool, ChainError> {
        let body = serde_json::to_vec_pretty(link).expect("a link serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .at
            .store
            .put_opts(&self.path(partition, seq), PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err(self.describe(partition, seq))(e)),
        }
    }

    /// Deletes links older than two snapshots before `seq` (best effort).
    pub async fn prune(&self, partition: u32, seq: u64) {
        let Some(below) = seq.checked_sub(2 * SNAPSHOT_EVERY) else {
            return;
        };
        let Ok(seqs) = self.list(partition).await else {
            return;
        };
        for s in seqs.into_iter().filter(|&s| s < below) {
            let _ = self.at.store.delete(&self.path(partition, s)).await;
        }
    }

    /// Takes `partition` over for `member` (holding lease `generation`): moves into place what
    /// the head's commit left staged (`sinks`: each sink's store, `None` for a sink without
    /// one), then creates the takeover link. Returns the head it starts from and the sequence
    /// number of its first commit. Tries again when another host appends meanwhile (bounded).
    pub async fn take_over(
        &self,
        partition: u32,
        member: &str,
        generation: u64,
        sinks: &[Option<Location>],
    ) -> Result<(Head, u64), ChainError> {
        for _ in 0..8 {
            let head = self.head(partition).await?;
            if let Some(link) = &head.link {
                for part in &link.parts {
                    if let Some(Some(at)) = sinks.get(part.sink) {
                        settle(at, part).await?;
                    }
                }
            }
            let mut seen: Vec<String> = head.seen.iter().cloned().collect();
            seen.sort();
            let link = Link {
                member: member.to_owned(),
                batch: None,
                generation,
                last: head.last(),
                done: Vec::new(),
                seen: Some(seen),
                parts: Vec::new(),
                written_ms: crate::clock::now_ms(),
            };
            let seq = head.next();
            if self.append(partition, seq, &link).await? {
                return Ok((head, seq + 1));
            }
        }
        Err(ChainError {
            location: format!("{}/partitions/{partition}", self.at),
            message: "other hosts kept appending while this one tried to take the partition over; it tries again at the next claim".to_owned(),
        })
    }
}

/// Moves a committed part from staging into place, create-if-absent; a part already in place
/// (moved by its host or by an earlier takeover) is left as it is.
pub async fn settle(at: &Location, part: &Part) -> Result<(), ChainError> {
    let staged = object_store::path::Path::from(part.staged.as_str());
    let target = object_store::path::Path::from(part.target.as_str());
    let err = |e: object_store::Error| ChainError {
        location: format!("{at}/{}", part.target),
        message: format!("moving the committed part from {}: {e}", part.staged),
    };
    match at.store.rename_if_not_exists(&staged, &target).await {
        Ok(()) => {
            tracing::info!(part = %target, "Moved into place a part whose commit its host did not finish.");
            Ok(())
        }
        Err(object_store::Error::AlreadyExists { .. }) => {
            let _ = at.store.delete(&staged).await;
            Ok(())
        }
        Err(object_store::Error::NotFound { .. }) => match at.store.head(&target).await {
            Ok(_) => Ok(()),
            Err(e) => Err(err(e)),
        },
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains(dir: &std::path::Path) -> Chains {
        Chains::new(Location::resolve(dir.to_str().unwrap(), "checkpoint.path", dir, true).unwrap())
    }

    fn file(name: &str, to: u64, done: bool) -> Option<Position> {
        Some(Position::File {
            file: name.into(),
            from: 0,
            to,
            done,
        })
    }

    fn link(member: &str, batch: u64, last: Option<Position>, done: &[&str]) -> Link {
        Link {
            member: member.into(),
            batch: Some(batch),
            generation: 0,
            last,
            done: done.iter().map(|s| s.to_string()).collect(),
            seen: None,
            parts: Vec::new(),
            written_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_takeover_starts_at_the_head_and_fences_the_old_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let c = chains(tmp.path());
        let (head, next) = c.take_over(3, "a", 0, &[]).await.unwrap();
        assert_eq!((head.seq, next), (None, 1));
        assert!(
            c.append(3, 1, &link("a", 0, file("f1", 10, true), &["f1"]))
                .await
                .unwrap()
        );
        assert!(
            c.append(3, 2, &link("a", 1, file("f2", 5, false), &[]))
                .await
                .unwrap()
        );
        // b takes over: it starts after a's last commit, with f1 seen.
        let (head, next) = c.take_over(3, "b", 1, &[]).await.unwrap();
        assert_eq!(head.seq, Some(2));
        assert_eq!(head.last(), file("f2", 5, false));
        assert_eq!(head.seen, HashSet::from(["f1".to_owned()]));
        assert_eq!(next, 4);
        // a, paused meanwhile, tries to commit its next batch: refused.
        assert!(
            !c.append(3, 3, &link("a", 2, file("f2", 9, true), &["f2"]))
                .await
                .unwrap()
        );
        // A third host walks back to b's snapshot.
        assert!(
            c.append(3, 4, &link("b", 0, file("f2", 9, true), &["f2"]))
                .await
                .unwrap()
        );
        let head = c.head(3).await.unwrap();
        assert_eq!(head.seen, HashSet::from(["f1".to_owned(), "f2".to_owned()]));
    }

    #[tokio::test]
    async fn a_takeover_moves_what_a_killed_host_committed_but_left_staged() {
        let tmp = tempfile::tempdir().unwrap();
        let at =
            Location::resolve(tmp.path().to_str().unwrap(), "sink.path", tmp.path(), true).unwrap();
        std::fs::create_dir_all(tmp.path().join("_staging")).unwrap();
        std::fs::write(tmp.path().join("_staging/x"), b"A\n").unwrap();
        let c = chains(&tmp.path().join("ck"));
        let mut l = link("a", 0, file("f", 2, true), &["f"]);
        l.parts.push(Part {
            sink: 0,
            staged: "_staging/x".into(),
            target: "out/batch-0".into(),
        });
        assert!(c.append(0, 0, &l).await.unwrap());
        c.take_over(0, "b", 1, &[Some(at.clone())]).await.unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("out/batch-0")).unwrap(),
            b"A\n"
        );
        // A late move by the killed host's own code path, or a second settle, is harmless.
        settle(&at, &l.parts[0]).await.unwrap();
    }
}
