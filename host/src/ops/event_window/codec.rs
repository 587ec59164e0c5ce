//! The `event-window` state as records, for the checkpoint: what a batch changed, the whole
//! state, and reading either back.
//!
//! Records: the clock (empty key; value: largest event time seen and watermark, 8 bytes each,
//! little-endian, then per source partition its number in 4 bytes and its largest event time
//! in 8); a window's key (`w`, the window start in 8 bytes big-endian, the key; value:
//! the encoded accumulator); a key's sessions (`s`, the key; value: per session its start and
//! last event time, 8 bytes each, the accumulator's length in 4 bytes and the accumulator;
//! empty when the key has none left). After records are applied, the windows the watermark
//! closed are dropped, as the close that wrote them dropped them.

use super::{Acc, EventWindowOp, Fast, Partial, Session, Shape, Windows};
use crate::batch::RecordBatch;

impl EventWindowOp {
    /// What a batch changed: the clock, the accumulators of the windows it touched that are
    /// still open, and the sessions of the keys it touched.
    pub(super) fn encode_changes(
        &self,
        now: &Windows,
        windows: &[(i64, Box<[u8]>)],
        keys: &[Box<[u8]>],
    ) -> RecordBatch {
        let mut out = RecordBatch::default();
        clock_record(now, &mut out);
        let mut k = Vec::new();
        let mut v = Vec::new();
        let mut windows: Vec<&(i64, Box<[u8]>)> = windows.iter().collect();
        windows.sort_unstable();
        for (start, key) in windows {
            if let Some(acc) = now.windows.get(start).and_then(|p| p.get(key)) {
                window_record(*start, key, acc, (&mut k, &mut v), &mut out);
            }
        }
        for key in keys {
            let list = now.sessions.get(key).map_or(&[][..], |l| &l[..]);
            session_record(key, list, (&mut k, &mut v), &mut out);
        }
        out
    }

    /// The whole state.
    pub(super) fn encode_whole(&self, now: &Windows) -> RecordBatch {
        let mut out = RecordBatch::default();
        clock_record(now, &mut out);
        let mut k = Vec::new();
        let mut v = Vec::new();
        for (start, keys) in &now.windows {
            let mut keys: Vec<_> = keys.iter().collect();
            keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, acc) in keys {
                window_record(*start, key, acc, (&mut k, &mut v), &mut out);
            }
        }
        let mut sessions: Vec<_> = now.sessions.iter().collect();
        sessions.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, list) in sessions {
            session_record(key, list, (&mut k, &mut v), &mut out);
        }
        out
    }

    /// Replaces the state with a whole state read back from a checkpoint.
    pub fn restore_whole(&self, records: &RecordBatch) -> Result<(), String> {
        let mut s = self.lock();
        s.before = None;
        s.now = Windows::default();
        self.apply_records(&mut s.now, records)
    }

    /// Applies a batch's changes read back from a checkpoint.
    pub fn restore_changes(&self, records: &RecordBatch) -> Result<(), String> {
        let mut s = self.lock();
        s.before = None;
        self.apply_records(&mut s.now, records)
    }

    fn apply_records(&self, now: &mut Windows, records: &RecordBatch) -> Result<(), String> {
        for i in 0..records.len() {
            let key = records.key(i).unwrap_or_default();
            let value = records.value(i);
            let bad = |what: &str| format!("record {i}: {what}");
            match key.split_first() {
                None => {
                    let cut = || bad("a clock cut short");
                    let (a, rest) = value.split_first_chunk::<8>().ok_or_else(cut)?;
                    let (b, mut rest) = rest.split_first_chunk::<8>().ok_or_else(cut)?;
                    now.max_seen = now.max_seen.max(i64::from_le_bytes(*a));
                    now.watermark = now.watermark.max(i64::from_le_bytes(*b));
                    while !rest.is_empty() {
                        let (p, r) = rest.split_first_chunk::<4>().ok_or_else(cut)?;
                        let (m, r) = r.split_first_chunk::<8>().ok_or_else(cut)?;
                        let max = now
                            .max_by_partition
                            .entry(u32::from_le_bytes(*p))
                            .or_insert(i64::MIN);
                        *max = (*max).max(i64::from_le_bytes(*m));
                        rest = r;
                    }
                }
                Some((b'w', rest)) => {
                    let (start, k) = super::split(rest).ok_or_else(|| bad("a window cut short"))?;
                    let acc = Acc::decode(value).map_err(|e| bad(&e))?;
                    now.windows
                        .entry(start)
                        .or_insert_with(|| Partial::with_hasher(Fast::default()))
                        .insert(k.into(), acc);
                }
                Some((b's', k)) => {
                    let list = decode_sessions(value).map_err(|e| bad(&e))?;
                    if list.is_empty() {
                        now.sessions.remove(k);
                    } else {
                        now.sessions.insert(k.into(), list);
                    }
                }
                Some((t, _)) => return Err(bad(&format!("unknown record tag {t}"))),
            }
        }
        // Drop what the watermark closed, as the close that wrote these did.
        let w = now.watermark;
        match self.spec.shape {
            Shape::Session { gap } => now.sessions.retain(|_, list| {
                list.retain(|s| s.last.saturating_add(gap) > w);
                !list.is_empty()
            }),
            Shape::Tumbling { length } | Shape::Sliding { length, .. } => now
                .windows
                .retain(|start, _| start.saturating_add(length) > w),
        }
        Ok(())
    }
}

fn clock_record(now: &Windows, out: &mut RecordBatch) {
    let mut v = Vec::with_capacity(16 + 12 * now.max_by_partition.len());
    v.extend_from_slice(&now.max_seen.to_le_bytes());
    v.extend_from_slice(&now.watermark.to_le_bytes());
    for (p, m) in &now.max_by_partition {
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&m.to_le_bytes());
    }
    out.push(Some(b""), &v, None);
}

fn window_record(
    start: i64,
    key: &[u8],
    acc: &Acc,
    (k, v): (&mut Vec<u8>, &mut Vec<u8>),
    out: &mut RecordBatch,
) {
    k.clear();
    k.push(b'w');
    k.extend_from_slice(&start.to_be_bytes());
    k.extend_from_slice(key);
    v.clear();
    acc.encode(v);
    out.push(Some(k), v, None);
}

fn session_record(
    key: &[u8],
    list: &[Session],
    (k, v): (&mut Vec<u8>, &mut Vec<u8>),
    out: &mut RecordBatch,
) {
    k.clear();
    k.push(b's');
    k.extend_from_slice(key);
    v.clear();
    let mut acc = Vec::new();
    for s in list {
        v.extend_from_slice(&s.start.to_le_bytes());
        v.extend_from_slice(&s.last.to_le_bytes());
        acc.clear();
        s.acc.encode(&mut acc);
        v.extend_from_slice(&(acc.len() as u32).to_le_bytes());
        v.extend_from_slice(&acc);
    }
    out.push(Some(k), v, None);
}

fn decode_sessions(mut v: &[u8]) -> Result<Vec<Session>, String> {
    let mut list = Vec::new();
    while !v.is_empty() {
        let cut = || "a session cut short".to_owned();
        let (start, rest) = v.split_first_chunk::<8>().ok_or_else(cut)?;
        let (last, rest) = rest.split_first_chunk::<8>().ok_or_else(cut)?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(cut)?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(cut());
        }
        let (acc, rest) = rest.split_at(len);
        list.push(Session {
            start: i64::from_le_bytes(*start),
            last: i64::from_le_bytes(*last),
            acc: Acc::decode(acc)?,
        });
        v = rest;
    }
    Ok(list)
}
