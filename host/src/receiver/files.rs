//! The `files` source: new files in a directory or store prefix (Spark's `textFileStream`).
//!
//! Each file is read once, line by line. A file is read only when two listings in a row show
//! it with the same size and modification time, and names starting with `.` or `_` or ending in
//! `.tmp`, `.part` or `.partial` are never read, so a half-written file is not read: write
//! files elsewhere and rename them in, or give them such a name until they are complete.
//! Files are spread over the partitions by a hash of their name.
//!
//! The source is replayable: each chunk is appended with its [`Position`] (the file and the
//! byte range it came from), so the checkpoint log knows which byte ranges made up each batch.
//! A restart gets a [`Resume`]: the files committed batches read to their end are never read
//! again; the ranges of a batch being recomputed are read again first, exactly; a file read
//! part way goes on from the byte after the last committed one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;

use super::{BuildContext, BuildError, Receiver, Source};
use super::{Finished, PartitionWriter, Position, ReceiverError, Resume, split_lines};
use crate::batch::RecordBatch;
use crate::clock::now_ms;
use crate::store::Location;

/// `kind = "files"`.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// The stream's name.
    pub name: String,
    /// Partitions.
    pub partitions: u32,
    /// The directory or store prefix to watch.
    pub path: String,
    /// How often to list it.
    pub poll_interval: Duration,
}

impl FilesConfig {
    /// Resolves `path` (it must exist) and reaches its store.
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Source>, BuildError> {
        let location = Location::resolve(&self.path, "source.path", ctx.base, false)?;
        ctx.handle
            .block_on(location.reach("source.path"))
            .map_err(BuildError::Unreachable)?;
        Ok(Arc::new(FilesSource {
            location,
            poll: self.poll_interval,
            partitions: self.partitions,
        }))
    }
}

/// A `files` source, built: its location reached.
#[derive(Debug)]
pub struct FilesSource {
    /// Where.
    pub location: Location,
    /// How often to list it.
    pub poll: Duration,
    /// Partitions: files are spread over them by name.
    pub partitions: u32,
}

impl Source for FilesSource {
    fn kind(&self) -> &'static str {
        "files"
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn replayable(&self) -> bool {
        true
    }

    fn replays_by_position(&self) -> bool {
        true
    }

    fn receiver(self: Arc<Self>, partition: u32, resume: Resume) -> Receiver {
        Receiver::Files(FilesReceiver::new(
            self.location.clone(),
            partition,
            self.partitions,
            self.poll,
            resume,
        ))
    }
}

/// The `files` receiver of one partition.
#[derive(Debug)]
pub struct FilesReceiver {
    location: Location,
    partition: u32,
    partitions: u32,
    poll: Duration,
    seen: HashSet<String>,
    candidates: HashMap<String, (u64, i64)>,
    /// What a restart must read first: byte ranges (`from..to`, or to the end when `to` is
    /// `None`) of named files, in order.
    first: Vec<(String, u64, Option<u64>)>,
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
    /// The receiver of `partition` of `partitions` over `location`, starting at `resume`.
    pub fn new(
        location: Location,
        partition: u32,
        partitions: u32,
        poll: Duration,
        resume: Resume,
    ) -> Self {
        let mut first = Vec::new();
        let mut seen = resume.seen;
        for r in &resume.replay {
            if let Position::File { file, from, to, .. } = r {
                first.push((file.clone(), *from, Some(*to)));
            }
        }
        // The file read part way (by the replayed batch, or the last committed one) goes on.
        let last = resume.replay.last().or(resume.last.as_ref());
        if let Some(Position::File { file, to, done, .. }) = last {
            if *done {
                seen.insert(file.clone());
            } else {
                first.push((file.clone(), *to, None));
            }
        }
        for (file, ..) in &first {
            seen.insert(file.clone());
        }
        FilesReceiver {
            location,
            partition,
            partitions,
            poll,
            seen,
            candidates: HashMap::new(),
            first,
        }
    }

    /// Lists the location every poll interval and reads each new, settled file once.
    pub async fn run(
        &mut self,
        out: &PartitionWriter,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Finished, ReceiverError> {
        while let Some((name, from, to)) = self.first.first().cloned() {
            if *stop.borrow() {
                return Ok(Finished::Stopped);
            }
            let path = self.location.child(&name);
            self.read(&path, &name, from, to, out).await?;
            self.first.remove(0);
        }
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
                self.read(&meta.location, &name, 0, None, out).await?;
                self.candidates.remove(&name);
                self.seen.insert(name);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Reads bytes `from..to` (to the end without `to`) of a file, appending its lines in
    /// chunks of about 1 MiB, each with the byte range it came from.
    async fn read(
        &self,
        path: &object_store::path::Path,
        name: &str,
        from: u64,
        to: Option<u64>,
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
        let size = bytes.len();
        let stop_at = to.map_or(size, |t| (t as usize).min(size));
        if to.is_some_and(|t| t as usize > size) {
            tracing::error!(
                file = name,
                recorded_end = to,
                size,
                "A file the checkpoint log names is shorter than it was: the records past its end cannot be read again."
            );
        }
        let mut start = (from as usize).min(stop_at);
        // Append in slices of about 1 MiB so a big file still meets the budget's backpressure.
        while start < stop_at {
            let mut end = (start + (1 << 20)).min(stop_at);
            if end < stop_at {
                end = match bytes[end..stop_at].iter().position(|&b| b == b'\n') {
                    Some(i) => end + i + 1,
                    None => stop_at,
                };
            }
            chunk.clear();
            let used = split_lines(&bytes[start..end], &mut chunk, ts);
            if start + used < end {
                // The last line has no newline: it is a record all the same.
                chunk.push(None, &bytes[start + used..end], Some(ts));
            }
            let position = Position::File {
                file: name.to_owned(),
                from: start as u64,
                to: end as u64,
                done: end == size,
            };
            out.append_at(&chunk, position).await;
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
