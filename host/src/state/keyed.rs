//! Keyed state of plugin steps (the WIT `keyed-state` import): values by key that a
//! transformation keeps across batches, owned by the host.
//!
//! Each step whose plugin imports `keyed-state` has one [`KeyedStore`]: the *base*, the state
//! as of the last committed batch. The open batch writes into a [`KeyedBatch`]: an *overlay*
//! of puts and deletions over the base, which every call of the batch reads through. A call's
//! own writes wait in a [`Writes`] of its own and join the overlay only when the call
//! succeeds, so a call that traps, times out or is retried counts nothing. At the batch's
//! close ([`KeyedBatch::close`]) the overlay, with the entries whose time-to-live ran out, is
//! the batch's contribution (written with its checkpoint entry) and is merged into the base;
//! a batch that fails or is recomputed after a rollback drops its overlay with it.
//!
//! The base is a [`SpillMap`]: in memory up to the step's `state-memory` (default 256 MiB), its
//! coldest keys on local disk past it, as `update-state-by-key`'s. A spill file
//! that cannot be read or written fails the batch at its close, before anything of it is
//! committed (the reads of a call see no value for the key meanwhile); a restart rebuilds the
//! state from the checkpoint.
//!
//! Records (contributions and whole states) are one record per key: the value is a tag byte
//! ([`DELETED`], [`KEPT`], or [`EXPIRING`] followed by the expiry's batch time, 8 bytes little
//! endian) then the value; and one record without a key naming the plugin version whose layout
//! the state is in ([`Layout`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::batch::RecordBatch;

use super::Write;
use super::spill::{Codec, SpillError, SpillMap};

/// The hasher of the maps: fixed, so that iteration needs no randomness.
type Fast = foldhash::fast::FixedState;

/// Tag byte of a deleted key in a contribution.
pub const DELETED: u8 = 0;
/// Tag byte of a value kept until it is deleted.
pub const KEPT: u8 = 1;
/// Tag byte of a value with an expiry (8 bytes of batch time, ms, little endian, follow).
pub const EXPIRING: u8 = 2;

/// The most entries one `migrate` call converts.
pub const MIGRATE_CHUNK: usize = 4096;

/// How often a plugin step's whole keyed state is written, in batches (as
/// `update-state-by-key`'s `snapshot-every` default).
pub const SNAPSHOT_EVERY: u32 = 16;

/// A step's `snapshot-every`, `state-memory` and `state-spill-dir`.
type Settings = (u32, u64, Option<PathBuf>);

/// The keyed stores of a pipeline's plugin steps, by step index. A step gets one when its
/// plugin imports `keyed-state` (at start, or when a version that does is swapped in).
#[derive(Debug, Default)]
pub struct Stores {
    stores: Mutex<std::collections::BTreeMap<usize, Arc<KeyedStore>>>,
    /// The pipeline's name, for the spill directories.
    pipeline: String,
    /// Per step: `snapshot-every`, `state-memory` and `state-spill-dir` from the pipeline file.
    settings: Mutex<std::collections::BTreeMap<usize, Settings>>,
}

impl Stores {
    /// No store yet, for pipeline `pipeline` (which names their spill directories).
    pub fn new(pipeline: &str) -> Stores {
        Stores {
            stores: Mutex::default(),
            pipeline: pipeline.to_owned(),
            settings: Mutex::default(),
        }
    }

    /// Step `step`'s settings, for its store when one is made: a whole state every
    /// `snapshot_every` batches, up to `budget` bytes in memory, spilling under `spill_dir`
    /// (default: the system's temporary directory).
    pub fn configure(
        &self,
        step: usize,
        snapshot_every: u32,
        budget: u64,
        spill_dir: Option<PathBuf>,
    ) {
        let mut settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        settings.insert(step, (snapshot_every, budget, spill_dir));
    }

    /// Step `step`'s store, made empty the first time.
    pub fn of(&self, step: usize) -> Arc<KeyedStore> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores
            .entry(step)
            .or_insert_with(|| {
                let settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
                let (every, budget, at) = settings.get(&step).cloned().unwrap_or((
                    SNAPSHOT_EVERY,
                    crate::config::window::DEFAULT_STATE_MEMORY,
                    None,
                ));
                if let Some(at) = &at {
                    super::spill::clear_stale(Some(at), &self.pipeline);
                }
                let dir = super::spill::step_dir(at.as_deref(), &self.pipeline, step);
                Arc::new(KeyedStore::new(step, every, budget, dir))
            })
            .clone()
    }

    /// Every store, by step.
    pub fn all(&self) -> Vec<Arc<KeyedStore>> {
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.values().cloned().collect()
    }
}

/// One key's value, and the batch time after which it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Box<[u8]>,
    /// The last batch time (ms) it is seen at; `None`: until deleted.
    pub expires_ms: Option<i64>,
}

/// An entry on disk: its tag byte ([`KEPT`], or [`EXPIRING`] and the expiry), then the value.
impl Codec for Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        match self.expires_ms {
            None => out.push(KEPT),
            Some(e) => {
                out.push(EXPIRING);
                out.extend_from_slice(&e.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.value);
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&KEPT, v)) => Ok(Entry {
                value: v.into(),
                expires_ms: None,
            }),
            Some((&EXPIRING, rest)) if rest.len() >= 8 => {
                let (e, v) = rest.split_at(8);
                let mut at = [0u8; 8];
                at.copy_from_slice(e);
                Ok(Entry {
                    value: v.into(),
                    expires_ms: Some(i64::from_le_bytes(at)),
                })
            }
            _ => Err("a keyed-state entry without a valid tag".to_owned()),
        }
    }
    fn heap_bytes(&self) -> usize {
        self.value.len()
    }
}

impl Entry {
    fn live_at(&self, time_ms: i64) -> bool {
        self.expires_ms.is_none_or(|e| time_ms <= e)
    }
}

/// The plugin version whose layout a step's state is in: the version that last wrote it (or
/// migrated it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Its sha256.
    pub digest: String,
    /// Its manifest's `plugin-version` (what `migrate` is told as `from-version`).
    pub version: String,
}

/// A step's entries by key, in key order (what `migrate` converts).
pub type Entries = Vec<(Box<[u8]>, Entry)>;

/// A call's (or a batch's) writes: each key's new entry, or `None` for a deletion.
pub type Writes = HashMap<Box<[u8]>, Option<Entry>, Fast>;

type Map = HashMap<Box<[u8]>, Entry, Fast>;

#[derive(Debug)]
struct Base {
    map: SpillMap<Entry>,
    layout: Option<Layout>,
    /// The first spill error since the last close: the batch fails at its close with it.
    failed: Option<SpillError>,
}

impl Base {
    /// `r`'s value, or `None` with its error kept for the close.
    fn keep<T>(&mut self, r: Result<T, SpillError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.failed.get_or_insert(e);
                None
            }
        }
    }

    /// Every entry, in key order (memory and disk).
    fn sorted(&mut self) -> Vec<(Box<[u8]>, Entry)> {
        let mut all: Vec<(Box<[u8]>, Entry)> = Vec::with_capacity(self.map.len());
        let r = self
            .map
            .for_each(|k, e| all.push((Box::from(k), e.clone())));
        self.keep(r);
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// One step's committed keyed state. Shared by every batch (it lives across hot swaps: the
/// state belongs to the step, not to a plugin version).
#[derive(Debug)]
pub struct KeyedStore {
    /// The step's index in the pipeline.
    pub step: usize,
    /// A whole state is written every this many batches.
    pub snapshot_every: u32,
    base: Mutex<Base>,
}

impl KeyedStore {
    /// A store with no state yet, holding up to `budget` bytes in memory and spilling the
    /// rest into `dir`.
    pub fn new(step: usize, snapshot_every: u32, budget: u64, dir: PathBuf) -> KeyedStore {
        let name = format!("step {step} (a plugin's keyed state)");
        KeyedStore {
            step,
            snapshot_every: snapshot_every.max(1),
            base: Mutex::new(Base {
                map: SpillMap::new(name, budget, dir),
                layout: None,
                failed: None,
            }),
        }
    }

    fn base(&self) -> std::sync::MutexGuard<'_, Base> {
        self.base.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many keys it holds (expired ones included until a close removes them).
    pub fn size(&self) -> usize {
        self.base().map.len()
    }

    /// How many of its keys are on local disk (past its memory budget).
    pub fn on_disk(&self) -> usize {
        self.base().map.disk_len()
    }

    /// The version whose layout the committed state is in; `None` before any batch wrote it.
    pub fn layout(&self) -> Option<Layout> {
        self.base().layout.clone()
    }

    /// Whether batch `id` writes the whole state.
    pub fn writes_whole(&self, id: u64) -> bool {
        id.is_multiple_of(u64::from(self.snapshot_every))
    }

    /// Every committed entry, in key order (for `migrate`, in chunks).
    pub fn entries(&self) -> Entries {
        self.base().sorted()
    }

    /// Opens batch `id` (at batch time `time_ms`) on this state, written by the version
    /// `layout`.
    pub fn open(self: &Arc<Self>, time_ms: i64, layout: Layout) -> KeyedBatch {
        KeyedBatch {
            store: self.clone(),
            time_ms,
            overlay: Mutex::new(Overlay {
                replaced: None,
                writes: Writes::default(),
                layout,
            }),
        }
    }

    /// Replaces the state with a whole state read back from a checkpoint.
    pub fn restore_whole(&self, records: &RecordBatch) -> Result<(), String> {
        let mut base = self.base();
        base.map.clear();
        apply(&mut base, records)
    }

    /// Applies a batch's contribution read back from a checkpoint.
    pub fn restore_changes(&self, records: &RecordBatch) -> Result<(), String> {
        let mut base = self.base();
        apply(&mut base, records)
    }
}

impl super::Restore for KeyedStore {
    fn step(&self) -> usize {
        self.step
    }
    fn what(&self) -> &'static str {
        "a plugin step's keyed state"
    }
    fn restore_whole(&self, records: &RecordBatch) -> Result<(), String> {
        KeyedStore::restore_whole(self, records)
    }
    fn restore_changes(&self, records: &RecordBatch) -> Result<(), String> {
        KeyedStore::restore_changes(self, records)
    }
    fn size(&self) -> usize {
        KeyedStore::size(self)
    }
    fn keys_on_disk(&self) -> usize {
        self.on_disk()
    }
}

#[derive(Debug)]
struct Overlay {
    /// The whole state, when the batch migrated it (the base is then not read).
    replaced: Option<Map>,
    writes: Writes,
    layout: Layout,
}

/// The open batch's view of one step's state: its writes so far over the committed state.
#[derive(Debug)]
pub struct KeyedBatch {
    /// The step's state.
    pub store: Arc<KeyedStore>,
    /// The batch time, ms: what time-to-live counts in.
    pub time_ms: i64,
    overlay: Mutex<Overlay>,
}

impl KeyedBatch {
    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `key`'s value as the batch sees it so far (`None`: none, or expired).
    pub fn get(&self, key: &[u8]) -> Option<Box<[u8]>> {
        let overlay = self.overlay();
        let entry = match overlay.writes.get(key) {
            Some(w) => w.clone(),
            None => match &overlay.replaced {
                Some(map) => map.get(key).cloned(),
                None => {
                    let mut base = self.store.base();
                    let found = base.map.get(key).map(|e| e.cloned());
                    base.keep(found).flatten()
                }
            },
        };
        entry.filter(|e| e.live_at(self.time_ms)).map(|e| e.value)
    }

    /// The entry a put of `value` with `ttl_ms` in this batch makes.
    pub fn entry(&self, value: &[u8], ttl_ms: Option<u64>) -> Entry {
        Entry {
            value: value.into(),
            expires_ms: ttl_ms.map(|t| {
                self.time_ms
                    .saturating_add(i64::try_from(t).unwrap_or(i64::MAX))
            }),
        }
    }

    /// Adds a successful call's writes to the batch's.
    pub fn apply(&self, writes: Writes) {
        if writes.is_empty() {
            return;
        }
        let mut overlay = self.overlay();
        if overlay.writes.is_empty() {
            overlay.writes = writes;
        } else {
            overlay.writes.extend(writes);
        }
    }

    /// The version whose layout the batch's state is in.
    pub fn layout(&self) -> Layout {
        self.overlay().layout.clone()
    }

    /// The batch starts from `state` instead of the committed state: `migrate` converted it
    /// into the layout of `layout`. Entries keep their expiry.
    pub fn migrated(&self, state: Entries, layout: Layout) {
        let mut overlay = self.overlay();
        overlay.replaced = Some(state.into_iter().collect());
        overlay.layout = layout;
    }

    /// Closes batch `id`: removes what expired, merges the batch's writes into the committed
    /// state and returns what to write with its checkpoint entry: its changes (always, so that
    /// a restart finds every batch's), and the whole state every `snapshot-every` batches or
    /// after a migration. Called once the batch can no longer fail.
    pub fn close(&self, id: u64) -> Result<Vec<Write>, SpillError> {
        let mut overlay = self.overlay();
        let mut base = self.store.base();
        if let Some(e) = base.failed.take() {
            return Err(e);
        }
        let migrated = overlay.replaced.is_some();
        if let Some(map) = overlay.replaced.take() {
            base.map.clear();
            for (key, entry) in map {
                base.map.insert(key, entry)?;
            }
        }
        let mut writes = std::mem::take(&mut overlay.writes);
        let time = self.time_ms;
        // Entries last seen at this batch's time (or before) are gone for every later batch.
        let mut expired = Vec::new();
        base.map.for_each(|key, entry| {
            if entry.expires_ms.is_some_and(|e| e <= time) && !writes.contains_key(key) {
                expired.push(Box::<[u8]>::from(key));
            }
        })?;
        writes.extend(expired.into_iter().map(|k| (k, None)));
        for entry in writes.values_mut() {
            if entry
                .as_ref()
                .is_some_and(|e| e.expires_ms.is_some_and(|x| x <= time))
            {
                *entry = None;
            }
        }
        let mut changed: Vec<(Box<[u8]>, Option<Entry>)> = writes.into_iter().collect();
        changed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let contribution = encode(
            &overlay.layout,
            changed.iter().map(|(k, e)| (&k[..], e.as_ref())),
        );
        base.map.advance();
        for (key, entry) in changed {
            match entry {
                Some(e) => base.map.insert(key, e)?,
                None => {
                    base.map.remove(&key)?;
                }
            }
        }
        base.layout = Some(overlay.layout.clone());
        let step = self.store.step;
        let mut out = vec![Write::changes(step, contribution)];
        if migrated || self.store.writes_whole(id) {
            let all = base.sorted();
            if let Some(e) = base.failed.take() {
                return Err(e);
            }
            let whole = encode(&overlay.layout, all.iter().map(|(k, e)| (&k[..], Some(e))));
            out.push(Write::whole(step, whole));
        }
        Ok(out)
    }
}

/// Entries (`None`: deleted) as records, with the layout record first.
fn encode<'a>(
    layout: &Layout,
    entries: impl Iterator<Item = (&'a [u8], Option<&'a Entry>)>,
) -> RecordBatch {
    let mut out = RecordBatch::default();
    let mut value = Vec::new();
    value.extend_from_slice(layout.digest.as_bytes());
    value.push(b'\n');
    value.extend_from_slice(layout.version.as_bytes());
    out.push(None, &value, None);
    for (key, entry) in entries {
        value.clear();
        match entry {
            None => value.push(DELETED),
            Some(Entry {
                value: v,
                expires_ms: None,
            }) => {
                value.push(KEPT);
                value.extend_from_slice(v);
            }
            Some(Entry {
                value: v,
                expires_ms: Some(e),
            }) => {
                value.push(EXPIRING);
                value.extend_from_slice(&e.to_le_bytes());
                value.extend_from_slice(v);
            }
        }
        out.push(Some(key), &value, None);
    }
    out
}

/// Applies records [`encode`] made to `base`.
fn apply(base: &mut Base, records: &RecordBatch) -> Result<(), String> {
    for i in 0..records.len() {
        let value = records.value(i);
        let Some(key) = records.key(i) else {
            let text = String::from_utf8_lossy(value);
            let (digest, version) = text.split_once('\n').unwrap_or((&text, ""));
            base.layout = Some(Layout {
                digest: digest.to_owned(),
                version: version.to_owned(),
            });
            continue;
        };
        let bad = || {
            format!(
                "record {i} (key {:?}) has no valid tag",
                String::from_utf8_lossy(key)
            )
        };
        match value.split_first() {
            Some((&DELETED, [])) => {
                base.map.remove(key).map_err(|e| e.to_string())?;
            }
            Some((&KEPT, v)) => {
                base.map
                    .insert(
                        key.into(),
                        Entry {
                            value: v.into(),
                            expires_ms: None,
                        },
                    )
                    .map_err(|e| e.to_string())?;
            }
            Some((&EXPIRING, rest)) if rest.len() >= 8 => {
                let (e, v) = rest.split_at(8);
                let expires = i64::from_le_bytes(e.try_into().map_err(|_| bad())?);
                base.map
                    .insert(
                        key.into(),
                        Entry {
                            value: v.into(),
                            expires_ms: Some(expires),
                        },
                    )
                    .map_err(|e| e.to_string())?;
            }
            _ => return Err(bad()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        super::super::spill::step_dir(None, "keyed-tests", 0)
    }

    fn layout(d: &str) -> Layout {
        Layout {
            digest: d.into(),
            version: "1.0".into(),
        }
    }

    fn put(b: &KeyedBatch, k: &str, v: &str, ttl: Option<u64>) {
        let mut w = Writes::default();
        w.insert(k.as_bytes().into(), Some(b.entry(v.as_bytes(), ttl)));
        b.apply(w);
    }

    fn get(b: &KeyedBatch, k: &str) -> Option<String> {
        b.get(k.as_bytes())
            .map(|v| String::from_utf8(v.into_vec()).unwrap())
    }

    #[test]
    fn reads_see_the_batch_then_the_committed_state_and_a_dropped_batch_counts_nothing() {
        let store = Arc::new(KeyedStore::new(2, 4, 256 << 20, dir()));
        let b0 = store.open(100, layout("a"));
        put(&b0, "x", "1", None);
        assert_eq!(
            get(&b0, "x").as_deref(),
            Some("1"),
            "the batch sees its writes"
        );
        b0.close(0).unwrap();
        let dropped = store.open(200, layout("a"));
        put(&dropped, "x", "99", None);
        let mut w = Writes::default();
        w.insert(b"x"[..].into(), None);
        dropped.apply(w);
        assert_eq!(
            get(&dropped, "x"),
            None,
            "a delete hides the committed value"
        );
        drop(dropped); // failed, or recomputed after a rollback
        let b1 = store.open(200, layout("a"));
        assert_eq!(get(&b1, "x").as_deref(), Some("1"), "nothing of it counts");
        put(&b1, "y", "", None);
        assert_eq!(
            get(&b1, "y").as_deref(),
            Some(""),
            "an empty value is a value"
        );
    }

    #[test]
    fn contributions_read_back_to_the_same_state_with_deletions_expiries_and_layout() {
        let store = Arc::new(KeyedStore::new(0, 2, 256 << 20, dir()));
        let copy = KeyedStore::new(0, 2, 256 << 20, dir());
        let mut wholes = 0;
        for (id, time) in [(0u64, 10i64), (1, 20), (2, 30), (3, 40)] {
            let b = store.open(time, layout(&format!("d{}", id / 2)));
            put(
                &b,
                &format!("k{id}"),
                &format!("v{id}"),
                (id == 1).then_some(15),
            );
            put(&b, "empty", "", None);
            if id == 3 {
                let mut w = Writes::default();
                w.insert(b"k0"[..].into(), None);
                b.apply(w);
            }
            for write in b.close(id).unwrap() {
                let bytes = super::super::encode(&write.records);
                let records = super::super::decode(&bytes).unwrap();
                if write.whole {
                    wholes += 1;
                    copy.restore_whole(&records).unwrap();
                } else {
                    copy.restore_changes(&records).unwrap();
                }
            }
        }
        assert_eq!(wholes, 2, "batches 0 and 2");
        assert_eq!(copy.entries(), store.entries());
        assert_eq!(copy.layout(), Some(layout("d1")));
        let keys: Vec<_> = store.entries().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [&b"empty"[..], b"k2", b"k3"].map(Box::from),
            "k0 deleted, k1 expired at 35"
        );
        let mut bad = RecordBatch::default();
        bad.push(Some(b"k"), &[9], None);
        assert!(copy.restore_changes(&bad).unwrap_err().contains("\"k\""));
    }

    #[test]
    fn a_value_with_a_ttl_is_seen_until_its_batch_time_runs_out_then_removed_as_a_deletion() {
        let store = Arc::new(KeyedStore::new(0, 100, 256 << 20, dir()));
        let b = store.open(1_000, layout("a"));
        put(&b, "t", "v", Some(500));
        put(&b, "forever", "v", None);
        b.close(1).unwrap();
        let b = store.open(1_500, layout("a"));
        assert_eq!(
            get(&b, "t").as_deref(),
            Some("v"),
            "time T + ttl still sees it"
        );
        let writes = b.close(2).unwrap();
        assert_eq!(writes.len(), 1);
        let deleted: Vec<_> = (0..writes[0].records.len())
            .filter(|&i| writes[0].records.value(i) == [DELETED])
            .map(|i| writes[0].records.key(i).unwrap().to_vec())
            .collect();
        assert_eq!(deleted, [b"t".to_vec()], "removed at the close, recorded");
        let b = store.open(1_600, layout("a"));
        assert_eq!(get(&b, "t"), None);
        assert_eq!(get(&b, "forever").as_deref(), Some("v"));
        assert_eq!(store.size(), 1);
    }

    #[test]
    fn a_migrated_batch_starts_from_the_converted_state_and_writes_it_whole() {
        let store = Arc::new(KeyedStore::new(0, 100, 256 << 20, dir()));
        let b = store.open(1, layout("v1"));
        put(&b, "k", "7", None);
        b.close(1).unwrap();
        let b = store.open(2, layout("v2"));
        let converted = store
            .entries()
            .into_iter()
            .map(|(k, e)| {
                let value = format!("count:{}", String::from_utf8_lossy(&e.value));
                (
                    k,
                    Entry {
                        value: value.into_bytes().into(),
                        ..e
                    },
                )
            })
            .collect();
        b.migrated(converted, layout("v2"));
        assert_eq!(get(&b, "k").as_deref(), Some("count:7"));
        assert_eq!(
            store.layout(),
            Some(layout("v1")),
            "committed only at the close"
        );
        let writes = b.close(2).unwrap();
        assert_eq!(writes.len(), 2, "changes and the whole state");
        assert_eq!(store.layout(), Some(layout("v2")));
    }

    #[test]
    fn a_state_past_its_memory_budget_spills_to_disk_and_reads_and_closes_as_one_in_memory() {
        let small = Arc::new(KeyedStore::new(0, 3, 4 << 10, dir()));
        let large = Arc::new(KeyedStore::new(0, 3, 256 << 20, dir()));
        for id in 0..8u64 {
            let time = 1_000 * id as i64;
            let (a, b) = (small.open(time, layout("a")), large.open(time, layout("a")));
            for batch in [&a, &b] {
                let mut w = Writes::default();
                for k in 0..2_000u64 {
                    let key = format!("key-{}", (k * 7 + id * 311) % 5_000);
                    let seen = get(batch, &key).map_or(0, |v| v.parse::<u64>().unwrap());
                    let entry = match k % 10 {
                        0 => None,
                        1 => Some(batch.entry((seen + 1).to_string().as_bytes(), Some(1_500))),
                        _ => Some(batch.entry((seen + 1).to_string().as_bytes(), None)),
                    };
                    w.insert(key.into_bytes().into(), entry);
                }
                batch.apply(w);
            }
            let (wa, wb) = (a.close(id).unwrap(), b.close(id).unwrap());
            assert_eq!(wa.len(), wb.len(), "batch {id}: the same objects");
            for (x, y) in wa.iter().zip(&wb) {
                assert!(x.records == y.records, "batch {id}: the same records");
            }
        }
        assert!(small.on_disk() > 0, "the small store spilled");
        assert_eq!(large.on_disk(), 0);
        assert!(small.entries() == large.entries(), "the same state");
    }
}
