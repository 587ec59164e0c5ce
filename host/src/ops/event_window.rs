//! `event-window`: windows over event time with a watermark, as Spark Structured Streaming's
//! `window()` with `withWatermark` and Flink's event-time tumbling, sliding and session
//! windows.
//!
//! **Time.** A record's event time is its timestamp, or a top-level field of its JSON value
//! (`time-field`: ms since the epoch, or an RFC 3339 time in UTC). A record without one is
//! dead-lettered with the reason.
//!
//! **Watermark.** At each batch close, after the batch's records are added, the watermark
//! becomes `W = max(W, min over source partitions of their largest event time seen −
//! allowed-lateness)`, as Flink takes the minimum of its sources' watermarks: partitions that
//! run at different paces do not make each other's records late (a partition that never had a
//! record does not count; one that stops holds the watermark back). It never goes back. The
//! records of batch N are judged against the watermark of batch N−1's close (checkpointed),
//! never one that depends on the order blocks arrive in, so a recomputed batch gives the same
//! result.
//!
//! **Windows.** Tumbling `[k·length, (k+1)·length)`; sliding `[k·slide, k·slide + length)`
//! (a record is in each one that holds it); session: per key, a record within `gap` of a
//! session (`start − gap < t < last + gap`) joins it (and may join two), and the window is
//! `[first, last + gap)`. A window is *closed* once its end ≤ W: at that close it is output
//! (one record per key) and dropped.
//!
//! **Late records.** A record is late when every window that would hold it is closed already
//! (for a session: `t + gap ≤ W`). It goes to the dead letters with its lateness: how far its
//! event time is behind the largest event time seen, the allowed lateness, its window and the
//! watermark. A sliding window record whose earlier windows closed but whose later ones are
//! open is added to the open ones only.
//!
//! **Output.** One record per (window, key), windows in order, keys in order within a window:
//! key = the key, value = `{"start":S,"end":E,"value":V}` (ms; V the aggregate as
//! `reduce-by-key-and-window` writes it), timestamp = `E − 1`. With `early-updates`, each close
//! also outputs the open windows' current values, with `"early":true`. With `top = N`, a
//! window outputs only the keys whose value is at least its N-th largest (ties kept).
//!
//! **State.** The open windows' accumulators per (window, key) and the watermark. Each batch
//! writes what it changed (the watermark, and the accumulators it touched); every
//! `snapshot-every` batches the whole state; a restart reads the newest whole state and the
//! changes after it ([`crate::state`]). A batch that runs again in the same process starts
//! from the state before its first run.
//!
//! **Combine.** Blocks are combined where they run ([`EventWindowOp::combine`]): accumulators
//! by (window start, key), or for sessions by (event time, key), plus the batch's largest
//! event time under the empty key.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;

use super::aggregate::{Acc, Fast, Num, Partial};
use crate::batch::RecordBatch;
use crate::config::event_window::{EventWindowSpec, Shape, TimeSource};
use crate::config::window::Aggregate;

/// A combined key shorter than a window's (8 bytes and more) carries the largest event time
/// of a source partition: its number, 4 bytes big-endian.
fn clock_key(partition: u32) -> [u8; 4] {
    partition.to_be_bytes()
}

/// A session of one key.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    start: i64,
    last: i64,
    acc: Acc,
}

/// The state: the watermark and the open windows.
#[derive(Debug, Clone)]
struct Windows {
    /// The largest event time seen (`i64::MIN`: none yet).
    max_seen: i64,
    /// The largest event time seen in each source partition that had a record.
    max_by_partition: BTreeMap<u32, i64>,
    /// The watermark (`i64::MIN`: none yet).
    watermark: i64,
    /// Tumbling and sliding: accumulators by key, by window start.
    windows: BTreeMap<i64, Partial>,
    /// Session: each key's open sessions, by start.
    sessions: HashMap<Box<[u8]>, Vec<Session>, Fast>,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            max_seen: i64::MIN,
            max_by_partition: BTreeMap::new(),
            watermark: i64::MIN,
            windows: BTreeMap::new(),
            sessions: HashMap::with_hasher(Fast::default()),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    now: Windows,
    /// The last batch applied and the state before it (a rerun starts from there).
    before: Option<(u64, Windows)>,
}

/// What a batch's records are judged against: the previous close's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The largest event time seen.
    pub max_seen: i64,
    /// The watermark.
    pub watermark: i64,
}

/// One `event-window` step and its state.
#[derive(Debug)]
pub struct EventWindowOp {
    /// The step's index in the pipeline.
    pub step: usize,
    /// Its settings.
    pub spec: EventWindowSpec,
    state: Mutex<State>,
}

/// What a batch close did.
#[derive(Debug)]
pub struct Applied {
    /// The output, per output partition.
    pub out: Vec<RecordBatch>,
    /// What the batch changed, to write with its checkpoint entry.
    pub contribution: RecordBatch,
    /// The whole state, when this batch writes it.
    pub whole: Option<RecordBatch>,
}

/// One output row: window start and end, key, accumulator, whether early.
type Row = (i64, i64, Box<[u8]>, Acc, bool);

impl EventWindowOp {
    /// A step with no state yet.
    pub fn new(step: usize, spec: EventWindowSpec) -> EventWindowOp {
        EventWindowOp {
            step,
            spec,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether batch `id` writes the whole state.
    pub fn writes_whole(&self, id: u64) -> bool {
        id.is_multiple_of(u64::from(self.spec.snapshot_every))
    }

    /// How many (window, key) accumulators it holds.
    pub fn size(&self) -> usize {
        let s = self.lock();
        s.now.windows.values().map(|p| p.len()).sum::<usize>()
            + s.now.sessions.values().map(|v| v.len()).sum::<usize>()
    }

    /// The clock batch `id`'s records are judged against: the one of the close before it
    /// (also when `id` runs again).
    pub fn clock(&self, id: u64) -> Clock {
        let s = self.lock();
        let w = match &s.before {
            Some((b, w)) if *b == id => w,
            _ => &s.now,
        };
        Clock {
            max_seen: w.max_seen,
            watermark: w.watermark,
        }
    }

    /// Adds `input`'s records (of source partition `partition`) that are on time (by `clock`)
    /// to `into` (the batch's combined
    /// accumulators); returns the others, by index, with why: late (and by how much), no event
    /// time, or a value the aggregate cannot read. Allocates only for a combined key `into`
    /// does not hold yet.
    pub fn combine(
        &self,
        clock: &Clock,
        partition: u32,
        input: &RecordBatch,
        into: &mut Partial,
    ) -> Vec<(usize, String)> {
        let aggregate = self.spec.aggregate;
        let w = clock.watermark;
        let mut rejected = Vec::new();
        let mut max = i64::MIN;
        let mut buf = Vec::with_capacity(64);
        for i in 0..input.len() {
            let t = match self.event_time(input, i) {
                Ok(t) => t,
                Err(why) => {
                    rejected.push((i, why));
                    continue;
                }
            };
            let key = input.key(i).unwrap_or_default();
            let value = input.value(i);
            let mut add = |at: i64| -> bool {
                buf.clear();
                buf.extend_from_slice(&at.to_be_bytes());
                buf.extend_from_slice(key);
                match into.get_mut(&buf[..]) {
                    Some(acc) => acc.add(aggregate, value).is_ok(),
                    None => match Acc::of(aggregate, value) {
                        Ok(acc) => {
                            into.insert(buf.as_slice().into(), acc);
                            true
                        }
                        Err(_) => false,
                    },
                }
            };
            let (ok, late) = match self.spec.shape {
                Shape::Tumbling { length } => {
                    let start = t.div_euclid(length).saturating_mul(length);
                    let end = start.saturating_add(length);
                    if end <= w {
                        (true, Some((start, end)))
                    } else {
                        (add(start), None)
                    }
                }
                Shape::Sliding { length, slide } => {
                    let mut start = t.div_euclid(slide).saturating_mul(slide);
                    let end = start.saturating_add(length);
                    if end <= w {
                        (true, Some((start, end)))
                    } else {
                        let mut ok = true;
                        while ok && start.saturating_add(length) > t.max(w) {
                            ok = add(start);
                            start -= slide;
                        }
                        (ok, None)
                    }
                }
                Shape::Session { gap } => {
                    let end = t.saturating_add(gap);
                    if end <= w {
                        (true, Some((t, end)))
                    } else {
                        (add(t), None)
                    }
                }
            };
            if let Some((start, end)) = late {
                rejected.push((i, self.late_reason(clock, t, start, end)));
            } else if !ok {
                rejected.push((
                    i,
                    "the value is not a number, which the step's aggregate needs".to_owned(),
                ));
            } else {
                max = max.max(t);
            }
        }
        if max > i64::MIN {
            let acc = Acc::Extreme(Num::Int(i128::from(max)));
            let key = clock_key(partition);
            match into.get_mut(&key[..]) {
                Some(a) => a.merge(Aggregate::Max, &acc),
                None => {
                    into.insert(key.into(), acc);
                }
            }
        }
        rejected
    }

    fn late_reason(&self, clock: &Clock, t: i64, start: i64, end: i64) -> String {
        format!(
            "late by {} ms (its event time {t} is that far behind the largest event time seen, {}; allowed lateness {} ms): its window [{start}, {end}) closed at watermark {}",
            clock.max_seen.saturating_sub(t),
            clock.max_seen,
            self.spec.allowed_lateness,
            clock.watermark
        )
    }

    /// Record `i`'s event time, or why it has none.
    fn event_time(&self, input: &RecordBatch, i: usize) -> Result<i64, String> {
        match &self.spec.time {
            TimeSource::Timestamp => input.timestamp(i).ok_or_else(|| {
                "the record has no timestamp, which is its event time here".to_owned()
            }),
            TimeSource::Field(f) => {
                let scanned = crate::lookup::scan::scan(input.value(i), Some(f), None)
                    .map_err(|e| {
                        format!("the value is not a JSON object ({e}), so it has no event time field `{f}`")
                    })?;
                let text = scanned
                    .key
                    .ok_or_else(|| format!("the value has no event time field `{f}`"))?;
                parse_time(&text).ok_or_else(|| {
                    format!(
                        "the event time field `{f}` ({}) is neither ms since the epoch nor an RFC 3339 time",
                        String::from_utf8_lossy(&text)
                    )
                })
            }
        }
    }

    /// Merges a block's combined accumulators (`from`) into the batch's (`into`).
    pub fn merge(&self, into: &mut Partial, from: Partial) {
        if into.is_empty() {
            *into = from;
            return;
        }
        for (key, acc) in from {
            let aggregate = if key.len() < 8 {
                Aggregate::Max
            } else {
                self.spec.aggregate
            };
            match into.get_mut(&key) {
                Some(a) => a.merge(aggregate, &acc),
                None => {
                    into.insert(key, acc);
                }
            }
        }
    }

    /// Closes batch `id` with its combined accumulators: adds them, advances the watermark,
    /// outputs and drops the windows it closes; `partitions` is the source's partition count.
    pub fn apply_combined(&self, id: u64, mut batch: Partial, partitions: u32) -> Applied {
        let aggregate = self.spec.aggregate;
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some((b, w)) = state.before.take()
            && b == id
        {
            state.now = w;
        }
        state.before = Some((id, state.now.clone()));
        let now = &mut state.now;
        let clocks: Vec<(u32, i64)> = batch
            .extract_if(|k, _| k.len() < 8)
            .filter_map(|(k, a)| {
                let p = u32::from_be_bytes(k[..].try_into().ok()?);
                match a {
                    Acc::Extreme(Num::Int(m)) => Some((p, i64::try_from(m).ok()?)),
                    _ => None,
                }
            })
            .collect();
        let mut changed_windows: Vec<(i64, Box<[u8]>)> = Vec::new();
        let mut changed_keys: Vec<Box<[u8]>> = Vec::new();
        match self.spec.shape {
            Shape::Session { gap } => {
                let mut entries: Vec<(Box<[u8]>, i64, Acc)> = batch
                    .into_iter()
                    .filter_map(|(k, acc)| {
                        let (t, key) = split(&k)?;
                        Some((key.into(), t, acc))
                    })
                    .collect();
                entries.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                for (key, t, acc) in entries {
                    let list = now.sessions.entry(key.clone()).or_default();
                    join_session(list, t, acc, gap, aggregate);
                    if changed_keys.last() != Some(&key) {
                        changed_keys.push(key);
                    }
                }
            }
            _ => {
                for (k, acc) in batch {
                    let Some((start, key)) = split(&k) else {
                        continue;
                    };
                    let window = now
                        .windows
                        .entry(start)
                        .or_insert_with(|| Partial::with_hasher(Fast::default()));
                    match window.get_mut(key) {
                        Some(a) => a.merge(aggregate, &acc),
                        None => {
                            window.insert(key.into(), acc);
                        }
                    }
                    changed_windows.push((start, key.into()));
                }
            }
        }
        for (p, m) in clocks {
            let max = now.max_by_partition.entry(p).or_insert(i64::MIN);
            *max = (*max).max(m);
            now.max_seen = now.max_seen.max(m);
        }
        if let Some(slowest) = now.max_by_partition.values().min() {
            now.watermark = now
                .watermark
                .max(slowest.saturating_sub(self.spec.allowed_lateness));
        }
        let mut rows = self.close(now);
        if self.spec.early_updates {
            rows.extend(self.open_rows(now));
        }
        let out = self.output(rows, partitions);
        let contribution = self.encode_changes(now, &changed_windows, &changed_keys);
        let whole = self.writes_whole(id).then(|| self.encode_whole(now));
        Applied {
            out,
            contribution,
            whole,
        }
    }

    /// Removes and returns the windows the watermark closed, in window order.
    fn close(&self, now: &mut Windows) -> Vec<Row> {
        let w = now.watermark;
        let mut rows = Vec::new();
        match self.spec.shape {
            Shape::Session { gap } => {
                now.sessions.retain(|key, list| {
                    list.retain(|s| {
                        let end = s.last.saturating_add(gap);
                        if end <= w {
                            rows.push((s.start, end, key.clone(), s.acc.clone(), false));
                            false
                        } else {
                            true
                        }
                    });
                    !list.is_empty()
                });
                rows.sort_unstable_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
            }
            Shape::Tumbling { length } | Shape::Sliding { length, .. } => {
                while let Some(entry) = now.windows.first_entry() {
                    let start = *entry.key();
                    if start.saturating_add(length) > w {
                        break;
                    }
                    let keys = entry.remove();
                    self.window_rows(start, start.saturating_add(length), keys, false, &mut rows);
                }
            }
        }
        rows
    }

    /// The open windows' current values, for `early-updates`.
    fn open_rows(&self, now: &Windows) -> Vec<Row> {
        let mut rows = Vec::new();
        match self.spec.shape {
            Shape::Session { gap } => {
                for (key, list) in &now.sessions {
                    for s in list {
                        let end = s.last.saturating_add(gap);
                        rows.push((s.start, end, key.clone(), s.acc.clone(), true));
                    }
                }
                rows.sort_unstable_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
            }
            Shape::Tumbling { length } | Shape::Sliding { length, .. } => {
                for (start, keys) in &now.windows {
                    let end = start.saturating_add(length);
                    self.window_rows(*start, end, keys.clone(), true, &mut rows);
                }
            }
        }
        rows
    }

    /// One window's rows, keys in order, only the `top` ones if set.
    fn window_rows(&self, start: i64, end: i64, keys: Partial, early: bool, rows: &mut Vec<Row>) {
        let aggregate = self.spec.aggregate;
        let mut keys: Vec<(Box<[u8]>, Acc)> = keys.into_iter().collect();
        if let Some(top) = self.spec.top {
            let mut scores: Vec<f64> = keys.iter().map(|(_, a)| score(a, aggregate)).collect();
            scores.sort_unstable_by(|a, b| b.total_cmp(a));
            if let Some(&nth) = scores.get(top as usize - 1) {
                keys.retain(|(_, a)| score(a, aggregate) >= nth);
            }
        }
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rows.extend(keys.into_iter().map(|(k, a)| (start, end, k, a, early)));
    }

    /// The rows as records, placed by a hash of the key.
    fn output(&self, rows: Vec<Row>, partitions: u32) -> Vec<RecordBatch> {
        let n = self.spec.partitions.unwrap_or(partitions).max(1);
        let mut out: Vec<RecordBatch> = (0..n).map(|_| RecordBatch::default()).collect();
        let mut value = Vec::with_capacity(64);
        for (start, end, key, acc, early) in rows {
            use std::io::Write;
            let target = (Fast::default().hash_one(&key[..]) % u64::from(n)) as usize;
            value.clear();
            let _ = write!(value, "{{\"start\":{start},\"end\":{end},\"value\":");
            acc.write(self.spec.aggregate, &mut value);
            if early {
                value.extend_from_slice(b",\"early\":true");
            }
            value.push(b'}');
            out[target].push(Some(&key), &value, Some(end.saturating_sub(1)));
        }
        out
    }
}

/// A combined key's time (window start, or event time for sessions) and the record's key.
fn split(k: &[u8]) -> Option<(i64, &[u8])> {
    let (t, key) = k.split_first_chunk::<8>()?;
    Some((i64::from_be_bytes(*t), key))
}

/// Adds a record (or several with the same event time, `acc`) at `t` to a key's sessions
/// (sorted by start): it joins every session within `gap` of it, merging them.
fn join_session(list: &mut Vec<Session>, t: i64, acc: Acc, gap: i64, aggregate: Aggregate) {
    let mut joined = Session {
        start: t,
        last: t,
        acc,
    };
    list.retain(|s| {
        let near = s.start.saturating_sub(gap) < t && t < s.last.saturating_add(gap);
        if near {
            joined.start = joined.start.min(s.start);
            joined.last = joined.last.max(s.last);
            joined.acc.merge(aggregate, &s.acc);
        }
        !near
    });
    let at = list.partition_point(|s| s.start < joined.start);
    list.insert(at, joined);
}

/// What `top` ranks an accumulator by: its result as a number.
fn score(acc: &Acc, aggregate: Aggregate) -> f64 {
    let num = |n: &Num| match *n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    };
    match acc {
        Acc::Count(n) => *n as f64,
        Acc::Sum { n, sum } if aggregate == Aggregate::Mean => num(sum) / (*n).max(1) as f64,
        Acc::Sum { sum, .. } => num(sum),
        Acc::Extreme(v) => num(v),
        Acc::Distinct(m) => m.len() as f64,
    }
}

/// An event time written as ms since the epoch, or an RFC 3339 time in UTC.
fn parse_time(text: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(text).ok()?.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

mod codec;

#[cfg(test)]
mod tests;
