//! A keyed map with a memory budget that spills its coldest entries to a local file: the
//! host's keyed state past what it may hold in memory (Flink's RocksDB state backend plays
//! this part there).
//!
//! Keys are bytes; values are any [`Codec`] type, kept decoded in memory (so the in-memory
//! case costs what a plain hash map costs) and encoded on disk. Each entry is in exactly one
//! place: in memory, or in the spill file.
//!
//! - **Budget.** The map counts the bytes of its in-memory entries (key, value, table entry;
//!   an estimate, see [`SpillMap::bytes`]). When an insert would go past the budget, the
//!   coldest entries are written to disk until memory is at three quarters of it. "Coldest":
//!   each entry carries the generation in which it was last touched; [`SpillMap::advance`]
//!   starts a new generation (once per batch), and entries untouched for the most
//!   generations go first (an approximate LRU with no per-access allocation).
//! - **Disk.** One append-only file, `spill-<n>.dat`, of checksummed records (key and encoded
//!   value), and an in-memory index from a 64-bit hash of the key to the record's offset
//!   (keys whose hash another spilled key already holds are indexed by the key itself). So a
//!   spilled key costs about 17–34 bytes of memory (the index entry), whatever its value. A
//!   key read back ([`SpillMap::get`]) moves into memory and its record becomes garbage; when
//!   the garbage outweighs the live records the file is rewritten with the live ones only.
//! - **Not durable.** The files are scratch space, not state: durability is the checkpoint's
//!   business. They live in a directory per process and step ([`step_dir`]), cleared when the
//!   map first spills and removed when it is dropped; directories left by processes that no
//!   longer run are removed by [`clear_stale`]. A failed read or write (or a record whose
//!   checksum does not match) is a [`SpillError`] naming the file: the caller stops the
//!   pipeline rather than lose an entry.

use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::ops::aggregate::Fast;

/// How a value is kept on disk, and what it costs in memory.
pub trait Codec: Sized {
    /// Appends its encoding to `out` ([`Codec::decode`] reads it back).
    fn encode(&self, out: &mut Vec<u8>);
    /// The value `encode` wrote, or what is wrong with the bytes.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
    /// The heap bytes it owns (an estimate, for the budget), beside its own size.
    fn heap_bytes(&self) -> usize;
}

/// Bytes as themselves.
impl Codec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes.to_vec())
    }
    fn heap_bytes(&self) -> usize {
        self.capacity()
    }
}

/// A spill file could not be written or read back: the state it held is not reachable, so
/// the step cannot go on (the checkpoint still has the state; a restart rebuilds it).
#[derive(Debug, thiserror::Error)]
#[error("state spill file {}: {message}", file.display())]
pub struct SpillError {
    /// The file.
    pub file: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// The result of a map operation.
pub type Result<T, E = SpillError> = std::result::Result<T, E>;

/// The directory of step `step`'s spill files:
/// `<base>/sluice-spill-<pipeline>-<pid>/step-<step>-<n>`, `base` being the step's
/// `state-spill-dir` or else the system's temporary directory, `n` counting the maps made in
/// this process (so that two plans of one process never share a directory).
pub fn step_dir(base: Option<&Path>, pipeline: &str, step: usize) -> PathBuf {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = base.map_or_else(std::env::temp_dir, Path::to_owned);
    base.join(format!("{}{}", prefix(pipeline), std::process::id()))
        .join(format!("step-{step}-{n}"))
}

/// The spill directories of this process's maps, for [`remove_process_dirs`].
static DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the spill files of every map of this process: called once when the process ends
/// (a map still in use after it would fail its next disk access, naming the file).
pub fn remove_process_dirs() {
    let dirs = std::mem::take(&mut *DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in dirs {
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn prefix(pipeline: &str) -> String {
    let safe: String = pipeline
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("sluice-spill-{safe}-")
}

/// Removes the spill directories under `base` (default: the temporary directory) that
/// processes of pipeline `pipeline` left behind (a crash or a SIGKILL skips the cleanup):
/// those whose process id no longer runs. Called when a plan with spillable state is built.
pub fn clear_stale(base: Option<&Path>, pipeline: &str) {
    let base = base.map_or_else(std::env::temp_dir, Path::to_owned);
    let prefix = prefix(pipeline);
    let Ok(entries) = std::fs::read_dir(&base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

struct Slot<V> {
    value: V,
    /// The generation it was last touched in.
    generation: u32,
}

/// What one in-memory entry costs beside its key's and value's heap bytes: the table's slot,
/// its control byte and the key's allocation header.
const fn overhead<V>() -> usize {
    size_of::<(Box<[u8]>, Slot<V>)>() + 1 + 16
}

/// A keyed map in memory up to a byte budget, its coldest entries on disk past it (see the
/// module's documentation). Not thread-safe by itself: its owner holds it under a lock.
pub struct SpillMap<V> {
    /// Who owns it, for logs (e.g. "step 1 (update-state-by-key)").
    name: String,
    mem: HashMap<Box<[u8]>, Slot<V>, Fast>,
    mem_bytes: usize,
    budget: usize,
    generation: u32,
    dir: PathBuf,
    disk: Option<Disk>,
    scratch: Vec<u8>,
    /// Whether the first spill was logged.
    told: bool,
    /// The spill file is compacted past this many garbage bytes (and more garbage than live).
    min_garbage: u64,
}

impl<V: std::fmt::Debug> std::fmt::Debug for SpillMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillMap")
            .field("name", &self.name)
            .field("in_memory", &self.mem.len())
            .field("on_disk", &self.disk.as_ref().map_or(0, Disk::len))
            .field("bytes", &self.mem_bytes)
            .field("budget", &self.budget)
            .finish()
    }
}

impl<V: Codec> SpillMap<V> {
    /// An empty map named `name` (in logs) holding up to `budget` bytes in memory, spilling
    /// into `dir` (made, and emptied, at the first spill).
    pub fn new(name: impl Into<String>, budget: u64, dir: PathBuf) -> SpillMap<V> {
        SpillMap {
            name: name.into(),
            mem: HashMap::with_hasher(Fast::default()),
            mem_bytes: 0,
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            generation: 0,
            dir,
            disk: None,
            scratch: Vec::new(),
            told: false,
            min_garbage: 64 << 20,
        }
    }

    /// How many keys it holds, in memory and on disk.
    pub fn len(&self) -> usize {
        self.mem.len() + self.disk_len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes its in-memory entries take (an estimate: keys, values' heap bytes and one
    /// table slot each; not the table's spare capacity nor the disk index), at most the budget
    /// once an insert has made room.
    pub fn bytes(&self) -> usize {
        self.mem_bytes
    }

    /// Its memory budget, bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// How many keys are in memory.
    pub fn memory_len(&self) -> usize {
        self.mem.len()
    }

    /// How many keys are on disk.
    pub fn disk_len(&self) -> usize {
        self.disk.as_ref().map_or(0, Disk::len)
    }

    /// The live bytes of the spill file (its records still indexed).
    pub fn disk_bytes(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.live)
    }

    /// Starts a new generation: what is touched from now on is warmer than what was touched
    /// before. Called once per batch.
    pub fn advance(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// `key`'s value, read back into memory if it was on disk (which may spill colder
    /// entries). Marks it touched.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<&V>> {
        let generation = self.generation;
        // Two lookups on a hit: the borrow checker does not let the first one's reference
        // out of the branch that falls through to the disk.
        if self.mem.contains_key(key) {
            let slot = self.mem.get_mut(key).expect("just found");
            slot.generation = generation;
            return Ok(Some(&slot.value));
        }
        let Some(value) = self.take_from_disk(key)? else {
            return Ok(None);
        };
        self.insert_new(key.into(), value)?;
        Ok(self.mem.get(key).map(|s| &s.value))
    }

    /// Whether it holds `key` (in memory or on disk), without moving it.
    pub fn contains(&mut self, key: &[u8]) -> Result<bool> {
        if self.mem.contains_key(key) {
            return Ok(true);
        }
        match &mut self.disk {
            None => Ok(false),
            Some(d) => Ok(d.find(key, hash(key))?.is_some()),
        }
    }

    /// Sets `key`'s value (in memory, touched), replacing what it had; may spill colder
    /// entries to make room.
    pub fn insert(&mut self, key: Box<[u8]>, value: V) -> Result<()> {
        if let Some(slot) = self.mem.get_mut(&key) {
            self.mem_bytes = self.mem_bytes - slot.value.heap_bytes() + value.heap_bytes();
            slot.value = value;
            slot.generation = self.generation;
            if self.mem_bytes > self.budget {
                self.make_room(0, Some(&key[..]))?;
            }
            return Ok(());
        }
        if self.disk.is_some() {
            // The key's older value, if it was spilled, is garbage now.
            self.take_from_disk(&key)?;
        }
        self.insert_new(key, value)
    }

    /// Sets `key`'s value to `f` of its value so far (`None`: it had none), in one lookup
    /// when the key is in memory; returns the value so far. Marks it touched; may spill colder
    /// entries to make room.
    pub fn upsert(&mut self, key: &[u8], f: impl FnOnce(Option<&V>) -> V) -> Result<Option<V>> {
        if let Some(slot) = self.mem.get_mut(key) {
            let value = f(Some(&slot.value));
            self.mem_bytes = self.mem_bytes - slot.value.heap_bytes() + value.heap_bytes();
            let before = std::mem::replace(&mut slot.value, value);
            slot.generation = self.generation;
            if self.mem_bytes > self.budget {
                self.make_room(0, Some(key))?;
            }
            return Ok(Some(before));
        }
        let before = self.take_from_disk(key)?;
        let value = f(before.as_ref());
        self.insert_new(key.into(), value)?;
        Ok(before)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &[u8]) -> Result<Option<V>> {
        if let Some(slot) = self.mem.remove(key) {
            self.mem_bytes -= entry_bytes(key, &slot.value);
            return Ok(Some(slot.value));
        }
        self.take_from_disk(key)
    }

    /// Removes every entry (and the spill file).
    pub fn clear(&mut self) {
        self.mem.clear();
        self.mem_bytes = 0;
        self.disk = None;
    }

    /// Calls `f` with every entry, the in-memory ones first, then those on disk (read in file
    /// order, one at a time: iterating does not bring the state into memory). The order is
    /// unspecified.
    pub fn for_each(&mut self, mut f: impl FnMut(&[u8], &V)) -> Result<()> {
        for (key, slot) in &self.mem {
            f(key, &slot.value);
        }
        match &mut self.disk {
            Some(d) => d.for_each(|key, bytes| {
                let value = V::decode(bytes)?;
                f(key, &value);
                Ok(())
            }),
            None => Ok(()),
        }
    }

    /// The in-memory entries, when nothing is on disk (then they are all of them): lets a
    /// caller that sorts or borrows the whole state keep its plain in-memory path.
    pub fn all_in_memory(&self) -> Option<impl Iterator<Item = (&[u8], &V)>> {
        (self.disk_len() == 0).then(|| self.mem.iter().map(|(k, s)| (&k[..], &s.value)))
    }

    fn take_from_disk(&mut self, key: &[u8]) -> Result<Option<V>> {
        let Some(d) = &mut self.disk else {
            return Ok(None);
        };
        let Some(bytes) = d.take(key, hash(key))? else {
            return Ok(None);
        };
        let value = V::decode(bytes).map_err(|e| d.error(format!("key {key:?}: {e}")))?;
        d.maybe_compact()?;
        Ok(Some(value))
    }

    /// Inserts a key it does not hold, making room first.
    fn insert_new(&mut self, key: Box<[u8]>, value: V) -> Result<()> {
        let bytes = entry_bytes(&key, &value);
        if self.mem_bytes + bytes > self.budget {
            self.make_room(bytes, None)?;
        }
        self.mem_bytes += bytes;
        self.mem.insert(
            key,
            Slot {
                value,
                generation: self.generation,
            },
        );
        Ok(())
    }

    /// Spills the coldest entries (never `keep`) until `incoming` more bytes fit within three
    /// quarters of the budget.
    fn make_room(&mut self, incoming: usize, keep: Option<&[u8]>) -> Result<()> {
        let target = self.budget / 4 * 3;
        let Some(need) = (self.mem_bytes + incoming).checked_sub(target) else {
            return Ok(());
        };
        // Bytes by age (generations since last touched, the last bucket for anything older).
        let mut by_age = [0usize; 64];
        let age = |g: u32, now: u32| (now.wrapping_sub(g) as usize).min(63);
        for (key, slot) in &self.mem {
            by_age[age(slot.generation, self.generation)] += entry_bytes(key, &slot.value);
        }
        // Everything older than `cut` goes, and entries of age `cut` until enough is freed.
        let (mut cut, mut older) = (63, 0);
        while cut > 0 && older + by_age[cut] < need {
            older += by_age[cut];
            cut -= 1;
        }
        let disk = match &mut self.disk {
            Some(d) => d,
            None => self.disk.insert(Disk::create(&self.dir, self.min_garbage)?),
        };
        let (now, mut freed, mut at_cut) = (self.generation, 0usize, need.saturating_sub(older));
        let spilled = self.mem.extract_if(|key, slot| {
            let a = age(slot.generation, now);
            if freed >= need || keep == Some(&key[..]) || a < cut {
                return false;
            }
            if a == cut {
                if at_cut == 0 {
                    return false;
                }
                at_cut = at_cut.saturating_sub(entry_bytes(key, &slot.value));
            }
            freed += entry_bytes(key, &slot.value);
            true
        });
        let mut count = 0usize;
        // On an error the entries not iterated yet stay in memory (`extract_if` keeps what it
        // was not asked for); the one that failed is lost here, and the caller stops.
        for (key, slot) in spilled {
            self.scratch.clear();
            slot.value.encode(&mut self.scratch);
            disk.put(&key, hash(&key), &self.scratch)?;
            count += 1;
        }
        self.mem_bytes -= freed;
        disk.flush()?;
        if !self.told {
            self.told = true;
            tracing::info!(
                state = %self.name,
                budget_bytes = self.budget,
                keys_in_memory = self.mem.len(),
                keys_on_disk = disk.len(),
                spilled_now = count,
                dir = %self.dir.display(),
                "A keyed state went past its memory budget: its coldest keys now spill to disk."
            );
        }
        Ok(())
    }
}

impl<V> Drop for SpillMap<V> {
    fn drop(&mut self) {
        if let Some(d) = &self.disk {
            tracing::info!(
                state = %self.name,
                keys_in_memory = self.mem.len(),
                keys_on_disk = d.len(),
                spill_file_bytes = d.end(),
                "A keyed state that spilled to disk is dropped; its spill files are removed."
            );
        }
        self.disk = None;
    }
}

fn hash(key: &[u8]) -> u64 {
    let h = Fast::default().hash_one(key);
    #[cfg(test)]
    if tests::NARROW_HASH.get() {
        // Few distinct hashes, so that tests reach the collided keys' path.
        return h & 7;
    }
    h
}

fn entry_bytes<V: Codec>(key: &[u8], value: &V) -> usize {
    key.len() + value.heap_bytes() + overhead::<V>()
}

/// A record: crc32 of the rest, key length, value length (u32, little endian), key, value.
const HEADER: usize = 12;
/// Pending appends are written out past this many bytes.
const WRITE_CHUNK: usize = 1 << 20;

/// The spill file and its index (see the module's documentation).
struct Disk {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// The file's number: a compaction writes the next one.
    number: u64,
    /// Bytes in the file, and appended records not written yet (at offset `written`).
    written: u64,
    pending: Vec<u8>,
    /// Key hash → offset of its record.
    index: HashMap<u64, u64, Fast>,
    /// Keys whose hash another key held in `index` when they were spilled → offset.
    collided: HashMap<Box<[u8]>, u64, Fast>,
    /// Bytes of the records still indexed.
    live: u64,
    /// Compaction is considered past this many garbage bytes.
    min_garbage: u64,
    read: Vec<u8>,
}

impl Disk {
    /// Makes (and empties) `dir` and its first file.
    fn create(dir: &Path, min_garbage: u64) -> Result<Disk> {
        let fail = |e: std::io::Error| SpillError {
            file: dir.to_owned(),
            message: format!("could not be made: {e}"),
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(fail)?;
        }
        std::fs::create_dir_all(dir).map_err(fail)?;
        DIRS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.to_owned());
        let path = dir.join("spill-0.dat");
        let file = open(&path)?;
        Ok(Disk {
            dir: dir.to_owned(),
            path,
            file,
            number: 0,
            written: 0,
            pending: Vec::new(),
            index: HashMap::with_hasher(Fast::default()),
            collided: HashMap::with_hasher(Fast::default()),
            live: 0,
            min_garbage,
            read: Vec::new(),
        })
    }

    fn len(&self) -> usize {
        self.index.len() + self.collided.len()
    }

    fn end(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    fn error(&self, message: String) -> SpillError {
        SpillError {
            file: self.path.clone(),
            message,
        }
    }

    fn io(&self, what: &str, e: std::io::Error) -> SpillError {
        self.error(format!("could not be {what}: {e}"))
    }

    /// Appends a record for `key` (which it does not hold) and indexes it.
    fn put(&mut self, key: &[u8], h: u64, value: &[u8]) -> Result<()> {
        let at = self.end();
        let start = self.pending.len();
        self.pending.extend_from_slice(&[0; 4]);
        self.pending
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.pending
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.pending.extend_from_slice(key);
        self.pending.extend_from_slice(value);
        let crc = crc32fast::hash(&self.pending[start + 4..]);
        self.pending[start..start + 4].copy_from_slice(&crc.to_le_bytes());
        self.live += (HEADER + key.len() + value.len()) as u64;
        match self.index.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(key.into(), at);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(at);
            }
        }
        if self.pending.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending records out.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.pending)
            .map_err(|e| self.io("written", e))?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Reads the record at `at` into `self.read`; returns the key's length.
    fn read_at(&mut self, at: u64) -> Result<usize> {
        let mut header = [0u8; HEADER];
        if at >= self.written {
            let from = (at - self.written) as usize;
            header.copy_from_slice(&self.pending[from..from + HEADER]);
        } else {
            self.file
                .read_exact_at(&mut header, at)
                .map_err(|e| self.io(&format!("read at offset {at}"), e))?;
        }
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (crc, klen, vlen) = (word(0), word(4) as usize, word(8) as usize);
        self.read.clear();
        self.read.resize(klen + vlen, 0);
        if at >= self.written {
            let from = (at - self.written) as usize + HEADER;
            self.read
                .copy_from_slice(&self.pending[from..from + klen + vlen]);
        } else if let Err(e) = self.file.read_exact_at(&mut self.read, at + HEADER as u64) {
            return Err(self.io(&format!("read at offset {at}"), e));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[4..]);
        hasher.update(&self.read);
        if hasher.finalize() != crc {
            return Err(self.error(format!(
                "the record at offset {at} is damaged (checksum mismatch)"
            )));
        }
        Ok(klen)
    }

    /// The offset of `key`'s record and its key's length, if it holds the key; the record is
    /// then in `self.read`.
    fn find(&mut self, key: &[u8], h: u64) -> Result<Option<(u64, usize)>> {
        if !self.collided.is_empty()
            && let Some(&at) = self.collided.get(key)
        {
            return Ok(Some((at, self.read_at(at)?)));
        }
        let Some(&at) = self.index.get(&h) else {
            return Ok(None);
        };
        let klen = self.read_at(at)?;
        Ok((self.read[..klen] == *key).then_some((at, klen)))
    }

    /// Removes `key`, returning its value's bytes.
    fn take(&mut self, key: &[u8], h: u64) -> Result<Option<&[u8]>> {
        let Some((_, klen)) = self.find(key, h)? else {
            return Ok(None);
        };
        if self.collided.is_empty() || self.collided.remove(key).is_none() {
            self.index.remove(&h);
        }
        self.live -= (HEADER + self.read.len()) as u64;
        Ok(Some(&self.read[klen..]))
    }

    /// Calls `f` with each live record's key and value bytes, in file order.
    fn for_each(
        &mut self,
        mut f: impl FnMut(&[u8], &[u8]) -> std::result::Result<(), String>,
    ) -> Result<()> {
        self.flush()?;
        let file = self.file.try_clone().map_err(|e| self.io("opened", e))?;
        let mut r = BufReader::with_capacity(1 << 16, ReadAt { file, at: 0 });
        let (mut at, mut header, mut buf) = (0u64, [0u8; HEADER], Vec::new());
        while at < self.written {
            r.read_exact(&mut header)
                .map_err(|e| self.io(&format!("read at offset {at}"), e))?;
            let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4"));
            let (klen, vlen) = (word(4) as usize, word(8) as usize);
            buf.resize(klen + vlen, 0);
            r.read_exact(&mut buf)
                .map_err(|e| self.io(&format!("read at offset {at}"), e))?;
            let key = &buf[..klen];
            let live = self.index.get(&hash(key)) == Some(&at)
                || (!self.collided.is_empty() && self.collided.get(key) == Some(&at));
            if live {
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(&header[4..]);
                hasher.update(&buf);
                if hasher.finalize() != word(0) {
                    return Err(self.error(format!(
                        "the record at offset {at} is damaged (checksum mismatch)"
                    )));
                }
                f(key, &buf[klen..]).map_err(|e| self.error(format!("key {key:?}: {e}")))?;
            }
            at += (HEADER + klen + vlen) as u64;
        }
        Ok(())
    }

    /// Rewrites the file with its live records only, when garbage is most of it.
    fn maybe_compact(&mut self) -> Result<()> {
        let garbage = self.end() - self.live;
        if garbage < self.min_garbage || garbage < self.live {
            return Ok(());
        }
        self.flush()?;
        let number = self.number + 1;
        let path = self.dir.join(format!("spill-{number}.dat"));
        let mut next = Disk {
            dir: self.dir.clone(),
            file: open(&path)?,
            path,
            number,
            written: 0,
            pending: Vec::new(),
            index: HashMap::with_capacity_and_hasher(self.index.len(), Fast::default()),
            collided: HashMap::with_hasher(Fast::default()),
            live: 0,
            min_garbage: self.min_garbage,
            read: Vec::new(),
        };
        let mut value = Vec::new();
        self.for_each(|key, v| {
            value.clear();
            value.extend_from_slice(v);
            next.put(key, hash(key), &value).map_err(|e| e.to_string())
        })?;
        next.flush()?;
        // The old file goes with the old value (its `Drop`).
        drop(std::mem::replace(self, next));
        Ok(())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // The step's directory, then the process's, if empty now.
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn open(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| SpillError {
            file: path.to_owned(),
            message: format!("could not be made: {e}"),
        })
}

/// A file read from an offset on, without moving its cursor (appends go on at the end).
struct ReadAt {
    file: File,
    at: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "spill_tests.rs"]
mod tests;
