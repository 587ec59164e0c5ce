//! The host's columnar record batch: the layout blocks are cut in, batches are run in and
//! plugins are called with.
//!
//! It mirrors the WIT `batch` record, so handing a batch to a plugin is a few memory copies,
//! whatever the number of records: one buffer of all values and their end offsets, the same for
//! keys (with a presence bitmap, so an absent key differs from an empty one), one timestamp per
//! record, and optional headers.

pub mod aside;
mod data;
mod newlines;
pub mod position;
mod prefix;

pub use data::Data;

/// Variable-length byte strings back to back, with the end offset of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BytesColumn {
    /// Every value, back to back.
    pub data: Data,
    /// Where each value ends in `data`.
    pub ends: Vec<u32>,
}

impl BytesColumn {
    /// An empty column with room for `items` values of `bytes` bytes in all.
    pub fn with_capacity(items: usize, bytes: usize) -> Self {
        BytesColumn {
            data: Data::with_capacity(bytes),
            ends: Vec::with_capacity(items),
        }
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Value `i`. Panics when `i` is out of range, like slice indexing.
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }

    /// Appends a value.
    #[inline]
    pub fn push(&mut self, value: &[u8]) {
        self.data.extend_from_slice(value);
        self.ends.push(self.data.len() as u32);
    }

    /// Appends the value `src[..len]`. A value is moved 32 bytes at a time, the last move
    /// reaching past its end, when `src` and the spare capacity both hold the rounded-up
    /// length (the bytes past the value are spare capacity, never part of the data); else it
    /// is copied exactly.
    #[inline(always)]
    #[allow(unsafe_code)]
    pub fn push_from(&mut self, src: &[u8], len: usize) {
        const STEP: usize = 32;
        let wide = len.next_multiple_of(STEP);
        let data = self.data.to_mut();
        let at = data.len();
        if src.len() >= wide && data.capacity() - at >= wide {
            let (from, to) = (src.as_ptr(), data.as_mut_ptr());
            let mut done = 0;
            while done < wide {
                // SAFETY: `done + STEP <= wide`, and `src` holds `wide` readable bytes while
                // the buffer has `wide` bytes of spare capacity after `at`; the two do not
                // overlap (`src` is borrowed shared, the buffer mutably).
                unsafe {
                    std::ptr::copy_nonoverlapping(from.add(done), to.add(at + done), STEP);
                }
                done += STEP;
            }
            // SAFETY: the first `len` bytes after `at` were written just above.
            unsafe { data.set_len(at + len) };
        } else {
            data.extend_from_slice(&src[..len]);
        }
        self.ends.push(data.len() as u32);
    }

    /// Appends values `range` of `other`, in one copy.
    pub fn extend_from(&mut self, other: &BytesColumn, range: std::ops::Range<usize>) {
        if range.is_empty() {
            return;
        }
        let start = if range.start == 0 {
            0
        } else {
            other.ends[range.start - 1] as usize
        };
        let end = other.ends[range.end - 1] as usize;
        let base = self.data.len() as u32;
        self.data.extend_from_slice(&other.data[start..end]);
        let shift = base as i64 - start as i64;
        self.ends
            .extend(other.ends[range].iter().map(|&e| (e as i64 + shift) as u32));
    }

    /// Checks the invariants a plugin's output must keep: ends never decrease, the last is the
    /// data length.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        let mut prev = 0u32;
        for (i, &e) in self.ends.iter().enumerate() {
            if e < prev {
                return Err(format!(
                    "{what}: end offset {i} ({e}) is below the one before ({prev})"
                ));
            }
            prev = e;
        }
        if prev as usize != self.data.len() {
            return Err(format!(
                "{what}: the last end offset is {prev} but the data is {} bytes",
                self.data.len()
            ));
        }
        Ok(())
    }
}

/// Keys, where at least one record has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// Every record's key; absent keys are empty here.
    pub column: BytesColumn,
    /// Bit `i` set when record `i` has a key (least significant bit first).
    pub present: Vec<u8>,
}

impl Keys {
    /// Record `i`'s key, or `None` when it has none.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if self
            .present
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
        {
            Some(self.column.get(i))
        } else {
            None
        }
    }

    /// Appends a key.
    pub fn push(&mut self, key: Option<&[u8]>) {
        let i = self.column.len();
        if i / 8 >= self.present.len() {
            self.present.push(0);
        }
        match key {
            Some(k) => {
                self.present[i / 8] |= 1 << (i % 8);
                self.column.push(k);
            }
            None => self.column.push(&[]),
        }
    }
}

/// Headers, where at least one record has some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// The end of each record's run of entries.
    pub record_ends: Vec<u32>,
    /// Header names.
    pub names: BytesColumn,
    /// Header values.
    pub values: BytesColumn,
}

/// One partition's records: a block, or a batch's worth of blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordBatch {
    /// The values.
    pub values: BytesColumn,
    /// The keys, when any record has one.
    pub keys: Option<Keys>,
    /// One timestamp per record (ms since the epoch), or empty.
    pub timestamps: Vec<i64>,
    /// The headers, when any record has some.
    pub headers: Option<Headers>,
}

impl RecordBatch {
    /// An empty batch with room for `records` records of `bytes` value bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        RecordBatch {
            values: BytesColumn::with_capacity(records, bytes),
            timestamps: Vec::with_capacity(records),
            ..Default::default()
        }
    }

    /// A batch of these values, with no keys, timestamps or headers.
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut b = RecordBatch::default();
        for v in values {
            b.values.push(v);
        }
        b
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Removes every record, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.values.data.clear();
        self.values.ends.clear();
        self.keys = None;
        self.timestamps.clear();
        self.headers = None;
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value bytes held (what a memory budget counts), plus keys.
    pub fn byte_size(&self) -> usize {
        self.values.data.len()
            + self.values.ends.len() * 4
            + self.timestamps.len() * 8
            + self
                .keys
                .as_ref()
                .map_or(0, |k| k.column.data.len() + k.column.ends.len() * 4)
    }

    /// The bytes its buffers hold allocated (their capacity): what it costs in memory.
    pub fn allocated(&self) -> usize {
        self.values.data.capacity()
            + self.values.ends.capacity() * 4
            + self.timestamps.capacity() * 8
            + self.keys.as_ref().map_or(0, |k| {
                k.column.data.capacity() + k.column.ends.capacity() * 4 + k.present.capacity()
            })
            + self.headers.as_ref().map_or(0, |h| {
                h.record_ends.capacity() * 4
                    + h.names.data.capacity()
                    + h.names.ends.capacity() * 4
                    + h.values.data.capacity()
                    + h.values.ends.capacity() * 4
            })
    }

    /// Record `i`'s value.
    #[inline]
    pub fn value(&self, i: usize) -> &[u8] {
        self.values.get(i)
    }

    /// Record `i`'s key.
    #[inline]
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        self.keys.as_ref().and_then(|k| k.get(i))
    }

    /// Record `i`'s timestamp.
    #[inline]
    pub fn timestamp(&self, i: usize) -> Option<i64> {
        self.timestamps.get(i).copied()
    }

    /// Appends a record. Keys start being kept from the first record that has one.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: Option<i64>) {
        let i = self.len();
        if key.is_some() && self.keys.is_none() {
            let mut keys = Keys::default();
            for _ in 0..i {
                keys.push(None);
            }
            self.keys = Some(keys);
        }
        if let Some(keys) = &mut self.keys {
            keys.push(key);
        }
        self.values.push(value);
        if let Some(ts) = timestamp {
            if self.timestamps.len() < i {
                self.timestamps.resize(i, ts);
            }
            self.timestamps.push(ts);
        } else if !self.timestamps.is_empty() {
            let last = *self.timestamps.last().unwrap_or(&0);
            self.timestamps.push(last);
        }
    }

    /// Appends every line of `text` that ends with a newline, in order, as a record without a
    /// key stamped `ts`: the line without its `\n` and without a `\r` just before it. Stops
    /// before the first line longer than `max` bytes; returns how many bytes of `text` the
    /// appended lines took, newlines included. The receivers' fast path: one `memchr` pass,
    /// each value copied in 32-byte moves where both sides have room (no call per line), the
    /// timestamps filled once at the end; a batch with keys or headers takes [`Self::push`].
    pub fn push_lines(&mut self, text: &[u8], ts: i64, max: usize) -> usize {
        let mut used = 0;
        if self.keys.is_some() || self.headers.is_some() {
            for i in memchr::memchr_iter(b'\n', text) {
                let line = &text[used..i];
                let record = line.strip_suffix(b"\r").unwrap_or(line);
                if record.len() > max {
                    break;
                }
                self.push(None, record, Some(ts));
                used = i + 1;
            }
            return used;
        }
        let values = &mut self.values;
        newlines::for_each(text, |i| {
            let end = if i > used && text[i - 1] == b'\r' {
                i - 1
            } else {
                i
            };
            if end - used > max {
                return false;
            }
            values.push_from(&text[used..], end - used);
            used = i + 1;
            true
        });
        if used > 0 {
            // As `push` would have: records before without a timestamp get this one.
            self.timestamps.resize(self.len(), ts);
        }
        used
    }

    /// Appends a record with headers (`name`, `value` pairs, kept in order). Once a batch has
    /// headers, append every further record with this method (`push` keeps no header column).
    pub fn push_with_headers(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp: Option<i64>,
        headers: &[(&[u8], &[u8])],
    ) {
        let had = self.len();
        self.push(key, value, timestamp);
        let h = self.headers.get_or_insert_with(|| Headers {
            record_ends: vec![0; had],
            ..Default::default()
        });
        for (name, value) in headers {
            h.names.push(name);
            h.values.push(value);
        }
        h.record_ends.push(h.names.len() as u32);
    }

    /// Adds a header to the last record, which was appended by [`Self::push_with_headers`]:
    /// a receiver builds a record's headers one by one without gathering them first.
    pub fn push_header(&mut self, name: &[u8], value: &[u8]) {
        let n = self.len();
        debug_assert!(n > 0, "push_header needs a record to add to");
        let h = self.headers.get_or_insert_with(|| Headers {
            record_ends: vec![0; n],
            ..Default::default()
        });
        h.names.push(name);
        h.values.push(value);
        if let Some(end) = h.record_ends.last_mut() {
            *end = h.names.len() as u32;
        }
    }

    /// Record `i`'s headers, as (name, value) pairs.
    pub fn headers_of(&self, i: usize) -> impl Iterator<Item = (&[u8], &[u8])> {
        let range = self.headers.as_ref().map_or(0..0, |h| {
            let start = if i == 0 {
                0
            } else {
                h.record_ends[i - 1] as usize
            };
            start..h.record_ends[i] as usize
        });
        let h = self.headers.as_ref();
        range.filter_map(move |j| h.map(|h| (h.names.get(j), h.values.get(j))))
    }

    /// Appends every record of `other`.
    pub fn append(&mut self, other: &RecordBatch) {
        if other.is_empty() {
            return;
        }
        let had = self.len();
        if (had == 0 || !self.timestamps.is_empty()) && other.timestamps.len() == other.len() {
            self.timestamps.extend_from_slice(&other.timestamps);
        } else if !self.timestamps.is_empty() {
            let last = *self.timestamps.last().unwrap_or(&0);
            self.timestamps.resize(had + other.len(), last);
        }
        if self.keys.is_some() || other.keys.is_some() {
            let keys = self.keys.get_or_insert_with(|| {
                let mut k = Keys::default();
                for _ in 0..had {
                    k.push(None);
                }
                k
            });
            for i in 0..other.len() {
                keys.push(other.key(i));
            }
        }
        if let Some(h) = &other.headers {
            let mine = self.headers.get_or_insert_with(|| Headers {
                record_ends: vec![0; had],
                ..Default::default()
            });
            let base = mine.names.len() as u32;
            mine.names.extend_from(&h.names, 0..h.names.len());
            mine.values.extend_from(&h.values, 0..h.values.len());
            mine.record_ends
                .extend(h.record_ends.iter().map(|e| e + base));
        } else if let Some(mine) = &mut self.headers {
            let last = mine.record_ends.last().copied().unwrap_or(0);
            mine.record_ends.resize(had + other.len(), last);
        }
        self.values.extend_from(&other.values, 0..other.len());
    }

    /// Records `range`, copied with one copy per column.
    pub fn slice(&self, range: std::ops::Range<usize>) -> RecordBatch {
        let mut out = RecordBatch::default();
        out.values.extend_from(&self.values, range.clone());
        if !self.timestamps.is_empty() {
            out.timestamps
                .extend_from_slice(&self.timestamps[range.clone()]);
        }
        if self.keys.is_some() || self.headers.is_some() {
            let idx: Vec<u32> = (range.start as u32..range.end as u32).collect();
            let mut gathered = RecordBatch::default();
            self.gather_into(&idx, &mut gathered);
            out.keys = gathered.keys;
            out.headers = gathered.headers;
        }
        out
    }

    /// The records at `indices`, in that order, with their keys, timestamps and headers.
    pub fn gather(&self, indices: &[u32]) -> RecordBatch {
        let bytes: usize = indices.iter().map(|&i| self.value(i as usize).len()).sum();
        let mut out = RecordBatch::with_capacity(indices.len(), bytes);
        self.gather_into(indices, &mut out);
        out
    }

    /// Appends the records at `indices` to `out`.
    pub fn gather_into(&self, indices: &[u32], out: &mut RecordBatch) {
        for &i in indices {
            let i = i as usize;
            out.push(self.key(i), self.value(i), self.timestamp(i));
            if let Some(h) = &self.headers {
                let mine = out.headers.get_or_insert_with(|| Headers {
                    record_ends: vec![0; out.values.len() - 1],
                    ..Default::default()
                });
                let start = if i == 0 {
                    0
                } else {
                    h.record_ends[i - 1] as usize
                };
                mine.names
                    .extend_from(&h.names, start..h.record_ends[i] as usize);
                mine.values
                    .extend_from(&h.values, start..h.record_ends[i] as usize);
                mine.record_ends.push(mine.names.len() as u32);
            } else if let Some(mine) = &mut out.headers {
                let last = mine.record_ends.last().copied().unwrap_or(0);
                mine.record_ends.push(last);
            }
        }
    }

    /// Checks the batch's invariants (column lengths and offsets).
    pub fn validate(&self) -> Result<(), String> {
        self.values.validate("values")?;
        let n = self.len();
        if !self.timestamps.is_empty() && self.timestamps.len() != n {
            return Err(format!(
                "{} timestamps for {n} records",
                self.timestamps.len()
            ));
        }
        if let Some(k) = &self.keys {
            k.column.validate("keys")?;
            if k.column.len() != n {
                return Err(format!("{} keys for {n} records", k.column.len()));
            }
            if k.present.len() < n.div_ceil(8) {
                return Err(format!(
                    "the key presence bitmap has {} bytes for {n} records",
                    k.present.len()
                ));
            }
        }
        if let Some(h) = &self.headers {
            h.names.validate("header names")?;
            h.values.validate("header values")?;
            if h.record_ends.len() != n || h.names.len() != h.values.len() {
                return Err("header columns do not line up with the records".to_owned());
            }
            if h.record_ends
                .last()
                .is_some_and(|&e| e as usize != h.names.len())
            {
                return Err("header record ends do not cover the header entries".to_owned());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A xorshift generator from `seed` (not zero): the random cases of this module's tests.
    pub(super) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn an_absent_key_differs_from_an_empty_one() {
        let mut b = RecordBatch::default();
        b.push(None, b"a", Some(1));
        b.push(Some(b""), b"b", Some(2));
        b.push(Some(b"k"), b"c", Some(3));
        assert_eq!(b.key(0), None);
        assert_eq!(b.key(1), Some(&b""[..]));
        assert_eq!(b.key(2), Some(&b"k"[..]));
        assert_eq!(b.value(2), b"c");
        b.validate().unwrap();
    }

    #[test]
    fn appending_batches_keeps_every_column_aligned() {
        let mut a = RecordBatch::from_values([&b"x"[..], b"yy"]);
        let mut b = RecordBatch::default();
        b.push(Some(b"k1"), b"zzz", Some(7));
        a.append(&b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.value(2), b"zzz");
        assert_eq!(a.key(0), None);
        assert_eq!(a.key(2), Some(&b"k1"[..]));
        a.validate().unwrap();
    }

    #[test]
    fn headers_pushed_with_a_record_stay_with_it() {
        let mut b = RecordBatch::from_values([&b"plain"[..]]);
        b.push_with_headers(
            None,
            b"v",
            Some(1),
            &[(b"x-opt-offset", b"42"), (b"k", b"")],
        );
        b.push_with_headers(None, b"none", None, &[]);
        b.validate().unwrap();
        assert_eq!(b.headers_of(0).count(), 0);
        assert_eq!(
            b.headers_of(1).collect::<Vec<_>>(),
            [(&b"x-opt-offset"[..], &b"42"[..]), (b"k", b"")]
        );
        assert_eq!(b.headers_of(2).count(), 0);
    }

    #[test]
    fn headers_added_one_by_one_belong_to_the_last_record_only() {
        let mut b = RecordBatch::default();
        b.push_with_headers(None, b"a", None, &[(b"h", b"1")]);
        b.push_header(b"i", b"2");
        b.push_with_headers(None, b"b", None, &[]);
        b.push_header(b"j", b"3");
        b.validate().unwrap();
        assert_eq!(
            b.headers_of(0).collect::<Vec<_>>(),
            [(&b"h"[..], &b"1"[..]), (b"i", b"2")]
        );
        assert_eq!(
            b.headers_of(1).collect::<Vec<_>>(),
            [(&b"j"[..], &b"3"[..])]
        );
    }

    #[test]
    fn validation_catches_offsets_that_run_backwards() {
        let col = BytesColumn {
            data: b"abc".to_vec().into(),
            ends: vec![2, 1, 3],
        };
        assert!(col.validate("values").unwrap_err().contains("below"));
    }

    /// The lines `push_lines` must give, one byte at a time: the records, and the bytes taken.
    fn lines_naive(text: &[u8], max: usize) -> (Vec<Vec<u8>>, usize) {
        let (mut out, mut used) = (Vec::new(), 0);
        for (i, _) in text.iter().enumerate().filter(|(_, b)| **b == b'\n') {
            let mut r = &text[used..i];
            if r.last() == Some(&b'\r') {
                r = &r[..r.len() - 1];
            }
            if r.len() > max {
                break;
            }
            out.push(r.to_vec());
            used = i + 1;
        }
        (out, used)
    }

    #[test]
    fn pushed_lines_equal_a_byte_by_byte_split_whatever_the_room_around_them() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for round in 0..400 {
            // Lines of 0 to 200 bytes (across every multiple of the 32-byte move), some with
            // `\r`, the text sometimes ending inside a line.
            let mut text = Vec::new();
            for _ in 0..next() % 20 {
                let len = (next() % 201) as usize;
                text.extend((0..len).map(|_| b'a' + (next() % 26) as u8));
                if next().is_multiple_of(4) {
                    text.push(b'\r');
                }
                text.push(b'\n');
            }
            text.extend((0..next() % 40).map(|_| b'z'));
            let max = if round % 3 == 0 { 150 } else { usize::MAX };
            // Exact room, a little room, plenty; and records already in the batch.
            let room = [0, 7, 1 << 16][round % 3];
            let mut b = RecordBatch::with_capacity(4, room);
            b.push(None, b"before", None);
            let used = b.push_lines(&text, 42, max);
            let (want, want_used) = lines_naive(&text, max);
            if want.is_empty() {
                assert_eq!(b.timestamps, [0i64; 0], "nothing pushed, nothing stamped");
                continue;
            }
            assert_eq!(used, want_used, "round {round}");
            assert_eq!(b.len(), want.len() + 1);
            for (i, w) in want.iter().enumerate() {
                assert_eq!(b.value(i + 1), &w[..], "round {round} line {i}");
            }
            assert_eq!(
                b.values.data.len(),
                6 + want.iter().map(Vec::len).sum::<usize>()
            );
            // Every record stamped, the one before too (as `push` does).
            assert!((0..b.len()).all(|i| b.timestamp(i) == Some(42)));
            b.validate().unwrap();
        }
    }

    #[test]
    fn pushed_lines_in_a_batch_with_keys_keep_the_keys_column_aligned() {
        let mut b = RecordBatch::default();
        b.push(Some(b"k"), b"first", Some(1));
        let used = b.push_lines(b"a\r\nbb\nccc", 2, usize::MAX);
        assert_eq!(used, 6);
        assert_eq!((b.value(1), b.value(2)), (&b"a"[..], &b"bb"[..]));
        assert_eq!(
            (b.key(0), b.key(1), b.key(2)),
            (Some(&b"k"[..]), None, None)
        );
        assert_eq!(b.timestamps, [1, 2, 2]);
        b.validate().unwrap();
    }

    /// Not a test: `push_lines` against a `push` per line on bench-like text, printed (the
    /// fastest of 15 rounds of each, alternating, so that a busy machine says less).
    #[test]
    #[ignore]
    fn measure_push_lines() {
        let line = b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda\n";
        let text: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(line.len() * 4000)
            .collect();
        let mut b = RecordBatch::with_capacity(8192, 1 << 20);
        let (mut per_push, mut lines) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..15 {
            let t = std::time::Instant::now();
            for _ in 0..50 {
                b.clear();
                let mut used = 0;
                for i in memchr::memchr_iter(b'\n', &text) {
                    b.push(None, &text[used..i], Some(1));
                    used = i + 1;
                }
            }
            per_push = per_push.min(t.elapsed());
            let t = std::time::Instant::now();
            for _ in 0..50 {
                b.clear();
                b.push_lines(&text, 1, usize::MAX);
            }
            lines = lines.min(t.elapsed());
        }
        eprintln!("200,000 lines: push per line {per_push:?}, push_lines {lines:?}");
    }
}
