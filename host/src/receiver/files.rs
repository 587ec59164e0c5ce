//! The `files` source: new files in a directory or store prefix (Spark's `textFileStream`).
//!
//! Each file is read once, line by line. A file is read only when two listings in a row show
//! it with the same size and modification time, and names starting with `.` or `_` or ending in
//! `.tmp`, `.part` or `.partial` are never read, so a half-written file is not read: write
//! files elsewhere and rename them in, or give them such a name until they are complete.
//! Files are spread over the partitions by a hash of their name.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::TryStreamExt;

use super::{Finished, PartitionWriter, ReceiverError, now_ms, split_lines};
use crate::batch::RecordBatch;
use crate::config::location::Location;

/// The `files` receiver of one partition.
#[derive(Debug)]
pub struct FilesReceiver {
    location: Location,
    partition: u32,
    partitions: u32,
    poll: Duration,
    seen: HashSet<String>,
    candidates: HashMap<String, (u64, i64)>,
}

/// Whether a file name is one the source never reads (hidden, or still being written).
pub fn ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('_')
        || [".tmp", ".part", ".partial", ".crc"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// The partition a file belongs to (FNV-1a of its name).
pub fn partition_of(name: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as u32
}

impl FilesReceiver {
    /// The receiver of `partition` of `partitions` over `location`.
    pub fn new(location: Location, partition: u32, partitions: u32, poll: Duration) -> Self {
        FilesReceiver {
            location,
            partition,
            partitions,
            poll,
            seen: HashSet::new(),
            candidates: HashMap::new(),
        }
    }

    /// Lists the location every poll interval and reads each new, settled file once.
    pub async fn run(
        &mut self,
        out: &PartitionWriter,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Finished, ReceiverError> {
        loop {
            if *stop.borrow() {
                return Ok(Finished::Stopped);
            }
            let listing = self
                .location
                .store
                .list_with_delimiter(Some(&self.location.prefix))
                .await
                .map_err(|e| {
                    ReceiverError::Transient(format!(
                        "files {}: listing failed: {e}",
                        self.location
                    ))
                })?;
            let mut objects = listing.objects;
            objects.sort_by(|a, b| a.location.cmp(&b.location));
            for meta in objects {
                let Some(name) = meta.location.filename().map(str::to_owned) else {
                    continue;
                };
                if ignored(&name)
                    || self.seen.contains(&name)
                    || partition_of(&name, self.partitions) != self.partition
                {
                    continue;
                }
                let stamp = (meta.size, meta.last_modified.timestamp_millis());
                if self.candidates.get(&name) != Some(&stamp) {
                    self.candidates.insert(name, stamp);
                    continue;
                }
                self.read(&meta.location, &name, out).await?;
                self.candidates.remove(&name);
                self.seen.insert(name);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn read(
        &self,
        path: &object_store::path::Path,
        name: &str,
        out: &PartitionWriter,
    ) -> Result<(), ReceiverError> {
        let bytes = self
            .location
            .store
            .get(path)
            .await
            .map_err(|e| {
                ReceiverError::Transient(format!("files {}: reading {name}: {e}", self.location))
            })?
            .into_stream()
            .try_fold(Vec::new(), |mut acc, b| async move {
                acc.extend_from_slice(&b);
                Ok(acc)
            })
            .await
            .map_err(|e| {
                ReceiverError::Transient(format!("files {}: reading {name}: {e}", self.location))
            })?;
        let ts = now_ms();
        let mut chunk = RecordBatch::default();
        let mut start = 0;
        // Append in slices of about 1 MiB so a big file still meets the budget's backpressure.
        while start < bytes.len() {
            let mut end = (start + (1 << 20)).min(bytes.len());
            if end < bytes.len() {
                end = match bytes[end..].iter().position(|&b| b == b'\n') {
                    Some(i) => end + i + 1,
                    None => bytes.len(),
                };
            }
            chunk.clear();
            let used = split_lines(&bytes[start..end], &mut chunk, ts);
            if start + used < end {
                // The last line has no newline: it is a record all the same.
                chunk.push(None, &bytes[start + used..end], Some(ts));
            }
            out.append(&chunk).await;
            start = end;
        }
        tracing::debug!(
            file = name,
            partition = self.partition,
            bytes = bytes.len(),
            "Read a file."
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_hidden_names_are_never_read() {
        for name in [".x", "_SUCCESS", "a.tmp", "b.part", "c.partial"] {
            assert!(ignored(name), "{name}");
        }
        assert!(!ignored("events-001.txt"));
    }

    #[test]
    fn files_spread_over_partitions_stably() {
        let p = partition_of("a.txt", 4);
        assert_eq!(p, partition_of("a.txt", 4));
        let spread: HashSet<u32> = (0..100)
            .map(|i| partition_of(&format!("f{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
