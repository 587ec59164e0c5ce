//! Checkpoints: after each batch commits in reliable mode (`wal = true`), what the pipeline
//! has processed for good — the batch id and, per partition, the offset below which every
//! record is in a committed batch. A restart resumes from it: batch ids go on from the next
//! one, and the write-ahead log replays only the records after the offsets.
//!
//! One small JSON object, `<checkpoint.path>/checkpoint.json`, replaced whole by each save (a
//! single PUT: atomic on a local directory, Azure Blob and S3). It holds no secret. A file that
//! does not parse, or of a version this host does not know, is refused with its location: the
//! host never guesses where to resume.

use object_store::PutPayload;
use serde::{Deserialize, Serialize};

use crate::config::location::Location;

/// The checkpoint format this host writes and reads.
pub const VERSION: u32 = 1;

/// What is committed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The format, [`VERSION`].
    pub version: u32,
    /// The last committed batch.
    pub batch: u64,
    /// Per partition, the offset below which every record is in a committed batch.
    pub offsets: Vec<u64>,
}

/// A checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store failed.
    #[error("checkpoint {location}: {message}")]
    Store {
        /// The object.
        location: String,
        /// What failed.
        message: String,
    },
    /// The object is not a checkpoint this host can use.
    #[error(
        "checkpoint {location} is damaged or of another format ({message}); the host will not guess where to resume: move it away to start from the write-ahead log alone"
    )]
    Damaged {
        /// The object.
        location: String,
        /// Why.
        message: String,
    },
}

fn object(at: &Location) -> object_store::path::Path {
    at.child("checkpoint.json")
}

/// Reads the checkpoint under `at`, `None` when there is none yet.
pub async fn load(at: &Location) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = object(at);
    let location = format!("{at}/checkpoint.json");
    let bytes = match at.store.get(&path).await {
        Ok(r) => r.bytes().await.map_err(|e| CheckpointError::Store {
            location: location.clone(),
            message: e.to_string(),
        })?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => {
            return Err(CheckpointError::Store {
                location,
                message: e.to_string(),
            });
        }
    };
    let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Damaged {
        location: location.clone(),
        message: e.to_string(),
    })?;
    if cp.version != VERSION {
        return Err(CheckpointError::Damaged {
            location,
            message: format!("version {}, this host reads {VERSION}", cp.version),
        });
    }
    Ok(Some(cp))
}

/// Replaces the checkpoint under `at`.
pub async fn save(at: &Location, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let body = serde_json::to_vec(cp).expect("a checkpoint serializes");
    at.store
        .put(&object(at), PutPayload::from(body))
        .await
        .map(|_| ())
        .map_err(|e| CheckpointError::Store {
            location: format!("{at}/checkpoint.json"),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here(dir: &std::path::Path) -> Location {
        Location::resolve(dir.to_str().unwrap(), "checkpoint.path", dir, true).unwrap()
    }

    #[tokio::test]
    async fn a_saved_checkpoint_loads_back_and_none_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        let at = here(tmp.path());
        assert_eq!(load(&at).await.unwrap(), None);
        let cp = Checkpoint {
            version: VERSION,
            batch: 7,
            offsets: vec![10, 0, 3],
        };
        save(&at, &cp).await.unwrap();
        assert_eq!(load(&at).await.unwrap(), Some(cp));
    }

    #[tokio::test]
    async fn a_damaged_checkpoint_is_refused_with_its_location() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("checkpoint.json"),
            b"{\"version\": 1, \"bat",
        )
        .unwrap();
        let e = load(&here(tmp.path())).await.unwrap_err().to_string();
        assert!(
            e.contains("checkpoint.json") && e.contains("damaged"),
            "{e}"
        );
        std::fs::write(
            tmp.path().join("checkpoint.json"),
            b"{\"version\": 9, \"batch\": 1, \"offsets\": []}",
        )
        .unwrap();
        let e = load(&here(tmp.path())).await.unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }
}
