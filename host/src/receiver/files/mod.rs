//! The `files` source: new files in a directory or store prefix (Spark's `textFileStream`).
//!
//! Each file is read once, line by line, as soon as a listing shows it
//! (`file-writes = "atomic"`, the default): the store must make a file visible only whole, as
//! object stores do and as a local directory does when writers rename files into place (what
//! Spark's `textFileStream` also requires). With `file-writes = "in-place"`, for writers that
//! write where the source lists, a file is read only when two listings in a row show it with
//! the same size and modification time (a poll interval later). Names starting with `.` or
//! `_` or ending in `.tmp`, `.part` or `.partial` are never read, so a file still being
//! written under such a name is left alone. Files are spread over the partitions by a hash of
//! their name; each partition's receiver reads its own files, so the files of one batch are
//! read in parallel across partitions.
//!
//! Besides every poll interval, each partition lists once more [`CLOSE_LEAD`] before each
//! batch closes (the batch clock says when, [`crate::block::BlockManager::next_close`]): a
//! file waits for its batch at most about the batch interval and the lead, however long the
//! poll interval. Not with `file-writes = "in-place"`, whose two listings must stay a poll
//! interval apart.
//!
//! The source is replayable: each chunk is appended with its [`Position`] (the file and the
//! byte range it came from), so the checkpoint log knows which byte ranges made up each batch.
//! A restart gets a [`Resume`]: the files committed batches read to their end are never read
//! again; the ranges of a batch being recomputed are read again first, exactly; a file read
//! part way goes on from the byte after the last committed one.
//!
//! A file is streamed, not read whole. A line longer than `max-record-bytes` is set aside
//! ([`super::lines`]): its bytes go to a side object beside the dead letters, its dead letter
//! names the file and the line's byte offset, and its byte range is a position like any
//! chunk's, so the batch that commits it passes over it for good. A batch recomputed after a
//! crash reads it again and sets it aside again, into the same side object (its name is the
//! file's and the offset's).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use object_store::local::LocalFileSystem;

use super::lines::LineReader;
use super::oversize::RecordLimit;
use super::{BuildContext, BuildError, Receiver, Source};
use super::{Finished, PartitionWriter, Position, ReceiverError, Resume};
use crate::batch::RecordBatch;
use crate::batch::aside::Origin;
use crate::clock::now_ms;
use crate::store::Location;

pub mod fetch;
pub mod list;
mod schedule;

use fetch::{Fetch, Piece, Want};
use list::{Filter, Listed, list};
use schedule::until_next_listing;
pub use schedule::{CLOSE_LEAD, next_listing};

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
    /// `once`: read what is there at the start, then end.
    pub once: bool,
    /// `max-record-bytes`: a longer line is set aside.
    pub max_record_bytes: u64,
    /// `file-writes = "in-place"`: writers write where the source lists, so a file is read
    /// only once two listings show it unchanged (else as soon as it is listed).
    pub in_place: bool,
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
            once: self.once,
            partitions: self.partitions,
            in_place: self.in_place,
            limit: RecordLimit {
                max: self.max_record_bytes,
                dead_letters: ctx.dead_letters.clone(),
                stream: self.name.clone(),
            },
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
    /// Read what is there at the start, then end.
    pub once: bool,
    /// Partitions: files are spread over them by name.
    pub partitions: u32,
    /// Read a file only once two listings show it unchanged.
    pub in_place: bool,
    /// Lines longer than this are set aside.
    pub limit: RecordLimit,
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
        Receiver::Files(
            FilesReceiver::new(
                self.location.clone(),
                (partition, self.partitions),
                self.poll,
                self.limit.clone(),
                resume,
            )
            .once(self.once)
            .in_place(self.in_place),
        )
    }
}

/// The `files` receiver of one partition.
#[derive(Debug)]
pub struct FilesReceiver {
    location: Location,
    partition: u32,
    partitions: u32,
    poll: Duration,
    limit: RecordLimit,
    seen: HashSet<String>,
    /// `file-writes = "in-place"`: files listed once, with their size and modification time
    /// (`None`: files are read when first listed).
    candidates: Option<HashMap<String, (u64, i64)>>,
    /// What a restart must read first: byte ranges (`from..to`, or to the end when `to` is
    /// `None`) of named files, in order.
    first: Vec<Want>,
    /// The location as a local directory, read directly (`None`: a remote store).
    local: Option<Arc<LocalFileSystem>>,
    /// `once`: the files of this partition the first listing found and that are still to
    /// read (`None` until that listing, or without `once`); boxed, as every partition's
    /// receiver carries it and few use it.
    once: Option<Box<Option<HashSet<String>>>>,
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
    /// The receiver of `partition` of `partitions` over `location`, starting at `resume`;
    /// lines longer than `limit` are set aside.
    pub fn new(
        location: Location,
        (partition, partitions): (u32, u32),
        poll: Duration,
        limit: RecordLimit,
        resume: Resume,
    ) -> Self {
        let mut first = Vec::new();
        let mut seen = resume.seen;
        for r in &resume.replay {
            if let Position::File { file, from, to, .. } = r {
                first.push(Want {
                    name: file.clone(),
                    from: *from,
                    to: Some(*to),
                    size: None,
                });
            }
        }
        // The file read part way (by the replayed batch, or the last committed one) goes on.
        let last = resume.replay.last().or(resume.last.as_ref());
        if let Some(Position::File { file, to, done, .. }) = last {
            if *done {
                seen.insert(file.clone());
            } else {
                first.push(Want {
                    name: file.clone(),
                    from: *to,
                    to: None,
                    size: None,
                });
            }
        }
        for want in &first {
            seen.insert(want.name.clone());
        }
        let local = location.local.as_ref().and_then(|dir| {
            LocalFileSystem::new_with_prefix(dir)
                .inspect_err(|e| tracing::warn!(path = %dir.display(), error = %e, "The files source reads this directory through object_store: it cannot open it directly."))
                .ok()
        });
        FilesReceiver {
            location,
            partition,
            partitions,
            poll,
            limit,
            seen,
            candidates: None,
            first,
            local: local.map(Arc::new),
            once: None,
        }
    }

    /// With `once`, the receiver reads the files its partition has at its first listing
    /// (and what a restart must finish), then ends; files that come later are left for the
    /// next run.
    pub fn once(mut self, once: bool) -> Self {
        self.once = once.then(|| Box::new(None));
        self
    }

    /// With `in_place`, a file is read only when two listings in a row show it with the same
    /// size and modification time (for writers that write where the source lists).
    pub fn in_place(mut self, in_place: bool) -> Self {
        self.candidates = in_place.then(HashMap::new);
        self
    }

    /// `once`: notes the first listing's files, forgets those gone since; whether every
    /// one has been read.
    fn once_done(&mut self, listed: &HashSet<String>) -> bool {
        let Some(todo) = &mut self.once else {
            return false;
        };
        let todo = todo.as_mut().get_or_insert_with(|| listed.clone());
        todo.retain(|n| listed.contains(n) && !self.seen.contains(n));
        todo.is_empty()
    }

    /// Lists the location every poll interval and reads each new, settled file once.
    pub async fn run(
        &mut self,
        out: &PartitionWriter,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Finished, ReceiverError> {
        // What a restart must read first, each file dropped from the list once read.
        let first = self.first.clone();
        if self
            .read_all(first, out, stop, |me, _, _| {
                me.first.remove(0);
            })
            .await?
        {
            return Ok(Finished::Stopped);
        }
        loop {
            if *stop.borrow() {
                return Ok(Finished::Stopped);
            }
            let filter = Filter {
                partition: self.partition,
                partitions: self.partitions,
                seen: &self.seen,
                names: self.once.is_some(),
            };
            let local = self.local.as_ref().and(self.location.local.as_ref());
            let listing = list(&self.location, local, filter).await.map_err(|e| {
                ReceiverError::Transient(format!("files {}: listing failed: {e}", self.location))
            })?;
            // `once` only: this partition's files in the listing.
            let listed = listing.names;
            let mut waiting: u64 = listing.new.iter().map(|l| l.size).sum();
            let intake = out.blocks.intake(out.partition);
            intake.inspect(|i| i.set_lag(waiting));
            let todo = self.ready(listing.new);
            let stopped = self
                .read_listed(todo, out, stop, |read| {
                    waiting = waiting.saturating_sub(read);
                    intake.inspect(|i| i.set_lag(waiting));
                })
                .await?;
            if stopped {
                return Ok(Finished::Stopped);
            }
            if listed.is_some_and(|l| self.once_done(&l)) {
                return Ok(Finished::End);
            }
            // In place, two listings must stay a poll interval apart: no listing before closes.
            let blocks = &out.blocks;
            let before_closes = self.candidates.is_none();
            until_next_listing(self.poll, || blocks.next_close(), before_closes, stop).await;
        }
    }

    /// The files of a listing this partition reads now, in the listing's order (its own, not
    /// read before): with `in_place`, those shown unchanged by the listing before.
    fn ready(&mut self, new: Vec<Listed>) -> Vec<Listed> {
        let Some(candidates) = &mut self.candidates else {
            return new;
        };
        let mut todo = Vec::new();
        for file in new {
            let stamp = (file.size, file.modified_ms);
            if candidates.get(&file.name) != Some(&stamp) {
                candidates.insert(file.name, stamp);
                continue;
            }
            candidates.remove(&file.name);
            todo.push(file);
        }
        todo
    }

    /// Reads listed files in order, each whole, calling `done` with each one's size, until
    /// `stop` is set (checked between files; returns whether it was: a partition that changed
    /// hands stops within a file, not after a whole listing). The listing's size is the
    /// file's (a whole object), so no request asks it again.
    async fn read_listed(
        &mut self,
        todo: Vec<Listed>,
        out: &PartitionWriter,
        stop: &tokio::sync::watch::Receiver<bool>,
        mut done: impl FnMut(u64),
    ) -> Result<bool, ReceiverError> {
        let wants = todo
            .into_iter()
            .map(|file| Want {
                name: file.name,
                from: 0,
                to: None,
                size: Some(file.size),
            })
            .collect();
        self.read_all(wants, out, stop, |me, want, size| {
            done(size);
            me.seen.insert(want.name);
        })
        .await
    }

    /// Reads `wants` in order, their bytes fetched ahead ([`fetch`]), calling `done` after
    /// each; stops between files once `stop` is set (returns whether it was).
    async fn read_all(
        &mut self,
        wants: Vec<Want>,
        out: &PartitionWriter,
        stop: &tokio::sync::watch::Receiver<bool>,
        mut done: impl FnMut(&mut Self, Want, u64),
    ) -> Result<bool, ReceiverError> {
        if wants.is_empty() {
            return Ok(false);
        }
        let mut fetch = Fetch::start(
            &self.location,
            self.local.as_ref(),
            wants.clone(),
            self.partition,
        );
        for want in wants {
            if *stop.borrow() {
                return Ok(true);
            }
            let Piece::Open { size, stop_at } = fetch.next().await? else {
                return Err(ReceiverError::Transient(format!(
                    "files {}: the fetcher lost its place before {} (partition {})",
                    self.location, want.name, self.partition
                )));
            };
            if want.to.is_some_and(|t| t > size) {
                tracing::error!(
                    file = want.name,
                    recorded_end = want.to,
                    size,
                    "A file the checkpoint log names is shorter than it was: the records past its end cannot be read again."
                );
            }
            let range = (want.from.min(stop_at), stop_at);
            self.split(&mut fetch, &want.name, range, size, want.to.is_some(), out)
                .await?;
            done(self, want, size);
        }
        Ok(false)
    }

    /// Splits the bytes `from..stop_at` of file `name` (`size` bytes long), as `fetch` brings
    /// them, into records appended with their byte ranges (straight into the partition's
    /// buffer while no line is cut by a read's end), setting aside lines past the limit;
    /// `replay`: they are read again for the batch being recomputed.
    async fn split(
        &self,
        fetch: &mut Fetch,
        name: &str,
        (from, stop_at): (u64, u64),
        size: u64,
        replay: bool,
        out: &PartitionWriter,
    ) -> Result<(), ReceiverError> {
        let file = name.to_owned();
        let origin = move |offset| Origin::File {
            file: file.clone(),
            offset,
        };
        let mut lines = LineReader::new(self.limit.clone(), format!("files-{name}"), from, origin);
        let mut chunk = Chunk {
            records: RecordBatch::default(),
            from,
            file: name,
            size,
            replay,
        };
        let ts = now_ms();
        loop {
            match fetch.next().await? {
                Piece::Bytes(buf) => {
                    chunk.take(&mut lines, &buf, ts, out).await?;
                    fetch.recycle(buf);
                }
                Piece::End => break,
                Piece::Open { .. } => {
                    return Err(ReceiverError::Transient(format!(
                        "files {}: the fetcher lost its place in {name} (partition {})",
                        self.location, self.partition
                    )));
                }
            }
        }
        if let Some(long) = lines.finish(&mut chunk.records, ts).await? {
            chunk.flush(out, long.range.start).await;
            chunk.set_aside(out, long).await;
        }
        chunk.flush(out, lines.line_start()).await;
        tracing::debug!(
            file = name,
            partition = self.partition,
            bytes = stop_at - from,
            "Read a file."
        );
        Ok(())
    }
}

/// The records of a file read since the last append, and where they start.
struct Chunk<'a> {
    records: RecordBatch,
    from: u64,
    file: &'a str,
    size: u64,
    replay: bool,
}

impl Chunk<'_> {
    fn position(&self, from: u64, to: u64) -> Position {
        position(self.file, self.size, from, to)
    }

    /// Hands the lines of `bytes` (a read's, following the ones before) to the partition.
    /// While the reader holds no part of a line, the complete lines are split straight into
    /// the partition's buffer (one copy, from the read's buffer), with the byte range they
    /// took; a line begun in an earlier read, a line past the limit and a last line without
    /// its newline go through the reader, one line at a time. Each append is at most a
    /// read's bytes, so a big file meets the budget's backpressure as it goes.
    async fn take(
        &mut self,
        lines: &mut LineReader,
        bytes: &[u8],
        ts: i64,
        out: &PartitionWriter,
    ) -> Result<(), ReceiverError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            if lines.idle()
                && let Some(last) = memchr::memrchr(b'\n', rest)
            {
                let whole = &rest[..last + 1];
                let (file, size, from) = (self.file, self.size, self.from);
                let mut used = 0;
                out.append_filled(whole.len(), |b| {
                    used = lines.split_complete(whole, b, ts);
                    (used > 0).then(|| position(file, size, from, from + used as u64))
                })
                .await;
                self.from += used as u64;
                rest = &rest[used..];
                if rest.is_empty() {
                    break;
                }
            }
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            let fed = lines.feed(&rest[..end], &mut self.records, ts).await?;
            rest = &rest[fed.used..];
            if let Some(long) = fed.long {
                self.flush(out, long.range.start).await;
                self.set_aside(out, long).await;
            }
            self.flush(out, lines.line_start()).await;
        }
        Ok(())
    }

    /// Appends the records, which end at byte `to`.
    async fn flush(&mut self, out: &PartitionWriter, to: u64) {
        if self.records.is_empty() {
            return;
        }
        out.append_at(&self.records, self.position(self.from, to))
            .await;
        self.records.clear();
        self.from = to;
    }

    /// Sets aside a line past the limit (the records before it appended).
    async fn set_aside(&mut self, out: &PartitionWriter, long: super::lines::LongLine) {
        let position = self.position(long.range.start, long.range.end);
        out.set_aside(long.note, Some(position), self.replay).await;
        self.from = long.range.end;
    }
}

/// The position of bytes `from..to` of `file` (`size` bytes long).
fn position(file: &str, size: u64, from: u64, to: u64) -> Position {
    Position::File {
        file: file.to_owned(),
        from,
        to,
        done: to == size,
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

    /// Reads `dir` once with one partition (`direct`: the local reads, else object_store's
    /// path for remote stores), resuming at `resume`; the records, how many lines were set
    /// aside, and the positions, in order.
    async fn read_once(
        dir: &std::path::Path,
        direct: bool,
        resume: Resume,
    ) -> (Vec<Vec<u8>>, usize, Vec<Position>) {
        use crate::block::{BlockManager, Cut};
        let location = Location::resolve(dir.to_str().unwrap(), "source.path", dir, false).unwrap();
        let limit = RecordLimit {
            max: 100,
            dead_letters: Location::resolve("../dl", "dead-letter.path", dir, true).unwrap(),
            stream: "s".into(),
        };
        let poll = Duration::from_millis(10);
        let mut r = FilesReceiver::new(location, (0, 1), poll, limit, resume).once(true);
        if !direct {
            r.local = None;
        }
        let (m, mut rx) = BlockManager::new(1, u64::MAX, 1 << 30);
        let out = PartitionWriter {
            blocks: Arc::new(m),
            partition: 0,
        };
        let (_tx, mut stop) = tokio::sync::watch::channel(false);
        assert_eq!(r.run(&out, &mut stop).await.unwrap(), Finished::End);
        out.blocks.cut_blocks(now_ms());
        let (mut records, mut aside, mut positions) = (Vec::new(), 0, Vec::new());
        while let Ok(cut) = rx.try_recv() {
            if let Cut::Block(b) = cut {
                records.extend((0..b.records.len()).map(|i| b.records.value(i).to_vec()));
                aside += b.aside.len();
                positions.extend(b.positions);
            }
        }
        (records, aside, positions)
    }

    /// Whatever the reads' boundaries (files larger than a read, lines cut by them, a long
    /// line across one), each file's records come whole and in order, lines past the limit
    /// are set aside, and the positions cover each file's bytes exactly, in order, the last
    /// one done: through the local reads and through object_store alike; a restart reads the
    /// recorded ranges again exactly, then goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_line_of_every_file_comes_once_with_byte_ranges_that_cover_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        let mut want = Vec::new();
        let mut sizes = Vec::new();
        for (f, lines) in [(0u32, 3u32), (1, 30_000), (2, 1)] {
            let mut text = Vec::new();
            for i in 0..lines {
                let line = format!("f{f}-l{i}-{}", "z".repeat((i % 37) as usize));
                text.extend_from_slice(line.as_bytes());
                text.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
                want.push(line.into_bytes());
                if f == 1
                    && (i == 100 || (text.len() > fetch::PIECE - 300 && text.len() < fetch::PIECE))
                {
                    text.extend_from_slice(&[b'L'; 700]);
                    text.push(b'\n');
                }
            }
            if f == 1 {
                text.extend_from_slice(b"tail");
                want.push(b"tail".to_vec());
            }
            assert!(f != 1 || text.len() > 2 * fetch::PIECE);
            sizes.push(text.len() as u64);
            std::fs::write(dir.join(format!("f{f}.txt")), text).unwrap();
        }
        for direct in [true, false] {
            let (got, aside, positions) = read_once(&dir, direct, Resume::default()).await;
            assert_eq!(aside, 2, "direct {direct}: the long lines set aside");
            assert_eq!(got.len(), want.len(), "direct {direct}: record count");
            assert!(got == want, "direct {direct}: the records, in order");
            let mut next: HashMap<String, u64> = HashMap::new();
            for p in &positions {
                let Position::File {
                    file,
                    from,
                    to,
                    done,
                } = p
                else {
                    panic!("{p:?}");
                };
                let at = next.entry(file.clone()).or_default();
                assert_eq!(
                    *from, *at,
                    "direct {direct}: {file} read on from where it was"
                );
                assert!(to > from);
                *at = *to;
                let size = sizes[file[1..2].parse::<usize>().unwrap()];
                assert_eq!(*done, *to == size, "direct {direct}: {p:?}");
            }
            for (f, size) in sizes.iter().enumerate() {
                assert_eq!(
                    next[&format!("f{f}.txt")],
                    *size,
                    "direct {direct}: f{f} whole"
                );
            }
            // A restart recomputing the batch of the middle ranges of f1: exactly those bytes,
            // then the rest of f1 (read part way), and the other files as new.
            let ranges: Vec<Position> = positions
                .iter()
                .filter(|p| matches!(p, Position::File { file, .. } if file == "f1.txt"))
                .cloned()
                .collect();
            let (replay, last) = (ranges[1..3].to_vec(), ranges[2].clone());
            let Position::File { from: a, .. } = replay[0].clone() else {
                unreachable!()
            };
            let Position::File { to: b, .. } = last else {
                unreachable!()
            };
            let resume = Resume {
                replay,
                ..Resume::default()
            };
            let (again, _, _) = read_once(&dir, direct, resume).await;
            let text = std::fs::read(dir.join("f1.txt")).unwrap();
            let tail = &text[a as usize..];
            let expect: Vec<Vec<u8>> = tail
                .split(|&c| c == b'\n')
                .filter(|l| !l.is_empty() && l.len() <= 101)
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                .collect();
            let f1 = again
                .iter()
                .filter(|r| r.starts_with(b"f1-") || r == &b"tail")
                .count();
            assert_eq!(
                f1,
                expect.len(),
                "direct {direct}: f1 from byte {a} (replayed to {b})"
            );
            assert_eq!(
                again.len() - f1,
                4,
                "direct {direct}: f0 and f2 read as new"
            );
        }
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
