//! The records a plugin reads: [`Batch`], [`Record`] and the columns they are made of.

use std::fmt;
use std::sync::Arc;

/// The offset one past the end of a column holding `len` bytes.
///
/// # Panics
///
/// When a column grows past 4 GiB, which the WIT offsets (`u32`) cannot address.
#[inline]
pub(crate) fn end_offset(len: usize) -> u32 {
    u32::try_from(len).expect("a batch column holds at most 4 GiB")
}

/// The bounds of value `i` in a column with these `ends`.
#[inline]
fn bounds(ends: &[u32], i: usize) -> (usize, usize) {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    (start, ends[i] as usize)
}

/// A column of variable-length byte strings, as the WIT `bytes-column`.
///
/// Value `i` is `data[ends[i - 1]..ends[i]]`, with `ends[-1]` taken as 0.
///
/// ```
/// use sluice_sdk::Column;
///
/// let column = Column::from_values(["ab", "", "c"]);
/// assert_eq!(column.data, b"abc");
/// assert_eq!(column.ends, [2, 2, 3]);
/// assert_eq!(column.get(2), Some(b"c".as_slice()));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Column {
    /// Every value, back to back.
    pub data: Vec<u8>,
    /// The end offset of each value in `data`.
    pub ends: Vec<u32>,
}

impl Column {
    /// An empty column.
    pub fn new() -> Self {
        Self::default()
    }

    /// A column holding `values` in order.
    pub fn from_values<I, V>(values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut column = Self::new();
        for value in values {
            column.push(value.as_ref());
        }
        column
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the column holds no values.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Value `i`, or `None` when `i` is out of range or the offsets are malformed.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.data.get(start..end)
    }

    /// Appends a value.
    pub fn push(&mut self, value: &[u8]) {
        self.data.extend_from_slice(value);
        self.ends.push(end_offset(self.data.len()));
    }

    /// Checks the invariants the WIT states: `ends` never decreases and its last entry is the
    /// length of `data`.
    fn validate(&self, what: &str) -> Result<(), InvalidBatch> {
        if let Some(i) = first_decrease(&self.ends) {
            let (end, previous) = (self.ends[i], self.ends[i - 1]);
            return Err(InvalidBatch::new(format!(
                "{what}: end offset {i} ({end}) is smaller than the one before ({previous})"
            )));
        }
        let previous = self.ends.last().copied().unwrap_or(0);
        if previous as usize != self.data.len() {
            return Err(InvalidBatch::new(format!(
                "{what}: the last end offset is {previous} but the data holds {} bytes",
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// The index of the first entry of `ends` that is smaller than the one before it, if any
/// (offsets are unsigned, so the first entry never is).
///
/// The check runs 64 entries at a time with no early exit inside a block, so that it
/// vectorises, and keeps no value a message borrows: a loop that formatted its message in place
/// kept its counters in the guest's stack memory (6% of the samples of `sluice bench plugins`
/// before, under 2% after).
fn first_decrease(ends: &[u32]) -> Option<usize> {
    const BLOCK: usize = 64;
    let mut start = 0;
    while start + 1 < ends.len() {
        let end = (start + BLOCK + 1).min(ends.len());
        let block = &ends[start..end];
        let mut bad = false;
        for (a, b) in block.iter().zip(&block[1..]) {
            bad |= b < a;
        }
        if bad {
            return block
                .windows(2)
                .position(|w| w[1] < w[0])
                .map(|i| start + i + 1);
        }
        start = end - 1;
    }
    None
}

/// The keys of a batch, as the WIT `keys`: a column plus a presence bitmap.
///
/// Record `i` has a key when bit `i % 8` of `present[i / 8]` is set (least significant bit
/// first); an absent key is distinct from an empty one and takes no bytes in `column`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyColumn {
    /// The key of every record; absent keys are empty here.
    pub column: Column,
    /// One bit per record: set when the record has a key.
    pub present: Vec<u8>,
}

impl KeyColumn {
    /// A key column for `records` records, none of which has a key.
    pub fn absent(records: usize) -> Self {
        Self {
            column: Column {
                data: Vec::new(),
                ends: vec![0; records],
            },
            present: vec![0; records.div_ceil(8)],
        }
    }

    /// The number of records the column covers.
    pub fn len(&self) -> usize {
        self.column.len()
    }

    /// Whether the column covers no records.
    pub fn is_empty(&self) -> bool {
        self.column.is_empty()
    }

    /// Whether record `i` has a key.
    pub fn is_present(&self, i: usize) -> bool {
        self.present
            .get(i / 8)
            .is_some_and(|byte| byte >> (i % 8) & 1 == 1)
    }

    /// The key of record `i`: `None` when it has none or `i` is out of range.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if self.is_present(i) {
            self.column.get(i)
        } else {
            None
        }
    }

    /// Appends the key of the next record, `None` for an absent key.
    pub fn push(&mut self, key: Option<&[u8]>) {
        let i = self.column.ends.len();
        if i.is_multiple_of(8) {
            self.present.push(0);
        }
        if let Some(key) = key {
            self.column.data.extend_from_slice(key);
            self.present[i / 8] |= 1 << (i % 8);
        }
        self.column.ends.push(end_offset(self.column.data.len()));
    }

    /// Replaces the key of the last record, which must exist.
    pub(crate) fn set_last(&mut self, key: &[u8]) {
        let i = self.column.ends.len() - 1;
        let start = if i == 0 { 0 } else { self.column.ends[i - 1] };
        self.column.data.truncate(start as usize);
        self.column.data.extend_from_slice(key);
        self.column.ends[i] = end_offset(self.column.data.len());
        self.present[i / 8] |= 1 << (i % 8);
    }

    fn validate(&self, records: usize) -> Result<(), InvalidBatch> {
        if self.column.len() != records {
            return Err(InvalidBatch::new(format!(
                "keys: {} entries for {records} records",
                self.column.len()
            )));
        }
        if self.present.len() < records.div_ceil(8) {
            return Err(InvalidBatch::new(format!(
                "keys: a presence bitmap of {} bytes cannot cover {records} records",
                self.present.len()
            )));
        }
        self.column.validate("keys")
    }
}

/// The headers of a batch, as the WIT `headers`.
///
/// Record `i`'s headers are entries `record_ends[i - 1]..record_ends[i]` of `names` and
/// `values`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderColumns {
    /// The end (exclusive) of each record's run of header entries.
    pub record_ends: Vec<u32>,
    /// Header names, one entry per header.
    pub names: Column,
    /// Header values, one entry per header.
    pub values: Column,
}

impl HeaderColumns {
    /// Header columns for `records` records, none of which has a header.
    pub fn empty(records: usize) -> Self {
        Self {
            record_ends: vec![0; records],
            names: Column::new(),
            values: Column::new(),
        }
    }

    fn validate(&self, records: usize) -> Result<(), InvalidBatch> {
        if self.record_ends.len() != records {
            return Err(InvalidBatch::new(format!(
                "headers: {} record ends for {records} records",
                self.record_ends.len()
            )));
        }
        if self.names.len() != self.values.len() {
            return Err(InvalidBatch::new(format!(
                "headers: {} names but {} values",
                self.names.len(),
                self.values.len()
            )));
        }
        // Never decreasing, so only the last can pass the entries' count.
        let last = self.record_ends.last().copied().unwrap_or(0);
        let bad = match first_decrease(&self.record_ends) {
            Some(i) => Some(self.record_ends[i]),
            None => (last as usize > self.names.len()).then_some(last),
        };
        if let Some(end) = bad {
            return Err(InvalidBatch::new(format!(
                "headers: record end {end} is out of order or beyond the {} entries",
                self.names.len()
            )));
        }
        self.names.validate("header names")?;
        self.values.validate("header values")
    }
}

/// The columns of a [`Batch`], as the WIT `batch`: what [`Batch::from_parts`] takes and
/// [`Batch::into_parts`] gives back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchParts {
    /// The record values. The number of records is `values.len()`.
    pub values: Column,
    /// The record keys; `None` when no record has a key.
    pub keys: Option<KeyColumn>,
    /// Each record's timestamp in milliseconds since the Unix epoch: one per record, or empty.
    pub timestamps: Vec<i64>,
    /// The record headers; `None` when no record has any.
    pub headers: Option<HeaderColumns>,
}

/// A batch whose columns break the WIT's invariants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidBatch {
    message: String,
}

impl InvalidBatch {
    fn new(message: String) -> Self {
        Self { message }
    }
}

impl fmt::Display for InvalidBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed batch: {}", self.message)
    }
}

impl std::error::Error for InvalidBatch {}

/// One partition's records for one batch: what a transformation or sink is called with.
///
/// A batch is columnar and owns its columns; reading a record borrows from them, so iterating
/// costs no allocation. The columns are checked once when the batch is made, so no accessor
/// panics on a batch the host sent.
///
/// ```
/// use sluice_sdk::Batch;
///
/// let batch = Batch::from_values(["hello", "world"]);
/// assert_eq!(batch.len(), 2);
/// for record in batch.records() {
///     assert_eq!(record.value().len(), 5);
///     assert_eq!(record.key(), None);
/// }
/// assert_eq!(batch.value(1), b"world");
/// assert_eq!(batch.values_data(), b"helloworld");
/// assert_eq!(batch.value_ends(), [5, 10]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    // Shared so that [`crate::Output::pass_through`] can hand the values back without a copy.
    data: Arc<Vec<u8>>,
    ends: Arc<Vec<u32>>,
    keys: Option<KeyColumn>,
    timestamps: Vec<i64>,
    headers: Option<HeaderColumns>,
}

impl Batch {
    /// Makes a batch from its columns, checking that they are consistent.
    ///
    /// ```
    /// use sluice_sdk::{Batch, BatchParts, Column, KeyColumn};
    ///
    /// let mut keys = KeyColumn::default();
    /// keys.push(Some(b"k"));
    /// keys.push(None);
    /// let batch = Batch::from_parts(BatchParts {
    ///     values: Column::from_values(["a", "b"]),
    ///     keys: Some(keys),
    ///     timestamps: vec![10, 20],
    ///     headers: None,
    /// })?;
    /// assert_eq!(batch.key(0), Some(b"k".as_slice()));
    /// assert_eq!(batch.key(1), None);
    /// assert_eq!(batch.timestamp(1), Some(20));
    ///
    /// let broken = BatchParts { values: Column { data: b"abc".to_vec(), ends: vec![2] }, ..BatchParts::default() };
    /// assert!(Batch::from_parts(broken).is_err());
    /// # Ok::<(), sluice_sdk::InvalidBatch>(())
    /// ```
    pub fn from_parts(parts: BatchParts) -> Result<Self, InvalidBatch> {
        let records = parts.values.len();
        if records > u32::MAX as usize {
            return Err(InvalidBatch::new(format!("{records} records is too many")));
        }
        parts.values.validate("values")?;
        if let Some(keys) = &parts.keys {
            keys.validate(records)?;
        }
        if !parts.timestamps.is_empty() && parts.timestamps.len() != records {
            return Err(InvalidBatch::new(format!(
                "{} timestamps for {records} records",
                parts.timestamps.len()
            )));
        }
        if let Some(headers) = &parts.headers {
            headers.validate(records)?;
        }
        Ok(Self::from_parts_unchecked(parts))
    }

    /// Makes a batch from columns known to be consistent (built by this crate).
    pub(crate) fn from_parts_unchecked(parts: BatchParts) -> Self {
        Self {
            data: Arc::new(parts.values.data),
            ends: Arc::new(parts.values.ends),
            keys: parts.keys,
            timestamps: parts.timestamps,
            headers: parts.headers,
        }
    }

    /// A batch of records with these values and nothing else (no keys, timestamps or headers),
    /// mostly for tests.
    pub fn from_values<I, V>(values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        Self::from_parts_unchecked(BatchParts {
            values: Column::from_values(values),
            ..BatchParts::default()
        })
    }

    /// Takes the batch apart into its columns.
    pub fn into_parts(self) -> BatchParts {
        BatchParts {
            values: Column {
                data: Arc::unwrap_or_clone(self.data),
                ends: Arc::unwrap_or_clone(self.ends),
            },
            keys: self.keys,
            timestamps: self.timestamps,
            headers: self.headers,
        }
    }

    /// The number of records.
    #[inline]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch has no records.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The records in order, borrowed from the batch.
    #[inline]
    pub fn records(&self) -> Records<'_> {
        Records {
            batch: self,
            ends: self.ends.iter(),
            start: 0,
            index: 0,
        }
    }

    /// Record `i`, or `None` when `i >= self.len()`.
    pub fn get(&self, i: usize) -> Option<Record<'_>> {
        if i >= self.len() {
            return None;
        }
        let (start, end) = bounds(&self.ends, i);
        Some(Record {
            batch: self,
            index: i as u32,
            value: &self.data[start..end],
        })
    }

    /// The value of record `i`.
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    #[inline]
    pub fn value(&self, i: usize) -> &[u8] {
        let (start, end) = bounds(&self.ends, i);
        &self.data[start..end]
    }

    /// The key of record `i`: `None` when it has none or `i` is out of range.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        self.keys.as_ref()?.get(i)
    }

    /// The timestamp of record `i` in milliseconds since the Unix epoch: `None` when the batch
    /// carries no timestamps or `i` is out of range.
    pub fn timestamp(&self, i: usize) -> Option<i64> {
        self.timestamps.get(i).copied()
    }

    /// Every value back to back: the whole values buffer, for kernels that work on all the
    /// bytes at once. [`Batch::value_ends`] says where each value stops.
    #[inline]
    pub fn values_data(&self) -> &[u8] {
        &self.data
    }

    /// The end offset of each value in [`Batch::values_data`].
    #[inline]
    pub fn value_ends(&self) -> &[u32] {
        &self.ends
    }

    /// The key column, when any record has a key.
    pub fn keys(&self) -> Option<&KeyColumn> {
        self.keys.as_ref()
    }

    /// The timestamps: one per record, or empty.
    pub fn timestamps(&self) -> &[i64] {
        &self.timestamps
    }

    /// The header columns, when any record has a header.
    pub fn header_columns(&self) -> Option<&HeaderColumns> {
        self.headers.as_ref()
    }

    pub(crate) fn shared_values(&self) -> (Arc<Vec<u8>>, Arc<Vec<u32>>) {
        (Arc::clone(&self.data), Arc::clone(&self.ends))
    }

    pub(crate) fn shared_ends(&self) -> Arc<Vec<u32>> {
        Arc::clone(&self.ends)
    }
}

/// One record of a [`Batch`], borrowed from it.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    batch: &'a Batch,
    index: u32,
    value: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record's index in its batch: what [`crate::Output::push`] and
    /// [`crate::Output::reject`] take as the origin.
    #[inline]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The record's value.
    #[inline]
    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    /// The record's value as UTF-8 text.
    pub fn value_str(&self) -> Result<&'a str, std::str::Utf8Error> {
        std::str::from_utf8(self.value)
    }

    /// The record's key; `None` when it has none (distinct from an empty key).
    pub fn key(&self) -> Option<&'a [u8]> {
        self.batch.key(self.index as usize)
    }

    /// The record's timestamp in milliseconds since the Unix epoch, when the batch carries
    /// timestamps.
    pub fn timestamp(&self) -> Option<i64> {
        self.batch.timestamp(self.index as usize)
    }

    /// The record's headers as `(name, value)` pairs, in order.
    pub fn headers(&self) -> Headers<'a> {
        let (columns, range) = match &self.batch.headers {
            Some(h) => {
                let (start, end) = bounds(&h.record_ends, self.index as usize);
                (Some(h), start..end)
            }
            None => (None, 0..0),
        };
        Headers { columns, range }
    }
}

/// The records of a [`Batch`], in order: see [`Batch::records`].
#[derive(Clone, Debug)]
pub struct Records<'a> {
    batch: &'a Batch,
    ends: std::slice::Iter<'a, u32>,
    start: u32,
    index: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    #[inline]
    fn next(&mut self) -> Option<Record<'a>> {
        let end = *self.ends.next()?;
        let start = std::mem::replace(&mut self.start, end);
        let index = self.index;
        self.index += 1;
        Some(Record {
            batch: self.batch,
            index,
            value: &self.batch.data[start as usize..end as usize],
        })
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ends.size_hint()
    }
}

impl ExactSizeIterator for Records<'_> {}

/// The headers of one [`Record`]: see [`Record::headers`].
#[derive(Clone, Debug)]
pub struct Headers<'a> {
    columns: Option<&'a HeaderColumns>,
    range: std::ops::Range<usize>,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let columns = self.columns?;
        let i = self.range.next()?;
        let (name_start, name_end) = bounds(&columns.names.ends, i);
        let (value_start, value_end) = bounds(&columns.values.ends, i);
        Some((
            &columns.names.data[name_start..name_end],
            &columns.values.data[value_start..value_end],
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl ExactSizeIterator for Headers<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_decrease_is_found_wherever_it_falls_against_blocks() {
        let naive = |e: &[u32]| e.windows(2).position(|w| w[1] < w[0]).map(|i| i + 1);
        for len in [0, 1, 2, 63, 64, 65, 66, 127, 128, 129, 200] {
            let sorted: Vec<u32> = (0..len as u32).map(|i| i * 3).collect();
            assert_eq!(first_decrease(&sorted), None, "len {len}");
            for at in 1..len {
                let mut ends = sorted.clone();
                ends[at] = ends[at - 1].saturating_sub(1);
                if ends[at] < ends[at - 1] {
                    assert_eq!(first_decrease(&ends), naive(&ends), "len {len}, at {at}");
                    assert_eq!(first_decrease(&ends), Some(at), "len {len}, at {at}");
                }
            }
        }
        // Equal neighbours are allowed (empty values); a later decrease is still the first.
        assert_eq!(first_decrease(&[0, 0, 5, 5, 4, 1]), Some(4));
    }

    #[test]
    fn a_decreasing_end_offset_is_refused_with_its_place() {
        let err = Batch::from_parts(BatchParts {
            values: Column {
                data: b"abcdef".to_vec(),
                ends: (0..100)
                    .map(|i| if i == 70 { 1 } else { (i / 20).min(6) })
                    .collect(),
            },
            ..BatchParts::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("end offset 70 (1) is smaller than the one before (3)"),
            "{err}"
        );
    }

    #[test]
    fn a_batch_with_headers_yields_each_records_own_headers() {
        let headers = HeaderColumns {
            record_ends: vec![1, 1, 3],
            names: Column::from_values(["a", "b", "c"]),
            values: Column::from_values(["1", "2", "3"]),
        };
        let batch = Batch::from_parts(BatchParts {
            values: Column::from_values(["x", "y", "z"]),
            headers: Some(headers),
            ..BatchParts::default()
        })
        .unwrap();
        let all: Vec<Vec<(&[u8], &[u8])>> =
            batch.records().map(|r| r.headers().collect()).collect();
        assert_eq!(all[0], [(b"a".as_slice(), b"1".as_slice())]);
        assert!(all[1].is_empty());
        assert_eq!(
            all[2],
            [
                (b"b".as_slice(), b"2".as_slice()),
                (b"c".as_slice(), b"3".as_slice())
            ]
        );
    }

    #[test]
    fn malformed_columns_are_refused_with_a_reason() {
        let decreasing = BatchParts {
            values: Column {
                data: b"ab".to_vec(),
                ends: vec![2, 1],
            },
            ..BatchParts::default()
        };
        let err = Batch::from_parts(decreasing).unwrap_err().to_string();
        assert!(err.contains("smaller"), "{err}");

        let short_keys = BatchParts {
            values: Column::from_values(["a", "b"]),
            keys: Some(KeyColumn::absent(1)),
            ..BatchParts::default()
        };
        assert!(Batch::from_parts(short_keys).is_err());

        let timestamps = BatchParts {
            values: Column::from_values(["a", "b"]),
            timestamps: vec![1],
            ..BatchParts::default()
        };
        assert!(Batch::from_parts(timestamps).is_err());

        let headers = BatchParts {
            values: Column::from_values(["a"]),
            headers: Some(HeaderColumns {
                record_ends: vec![2],
                names: Column::from_values(["n"]),
                values: Column::from_values(["v"]),
            }),
            ..BatchParts::default()
        };
        assert!(Batch::from_parts(headers).is_err());
    }

    #[test]
    fn an_absent_key_differs_from_an_empty_key() {
        let mut keys = KeyColumn::default();
        for i in 0..20 {
            keys.push(if i % 3 == 0 { Some(b"") } else { None });
        }
        let batch = Batch::from_parts(BatchParts {
            values: Column::from_values(std::iter::repeat_n("v", 20)),
            keys: Some(keys),
            ..BatchParts::default()
        })
        .unwrap();
        for record in batch.records() {
            let expected = (record.index() % 3 == 0).then_some(b"".as_slice());
            assert_eq!(record.key(), expected, "record {}", record.index());
        }
    }

    #[test]
    fn parts_survive_a_round_trip() {
        let parts = BatchParts {
            values: Column::from_values(["a", "bc"]),
            keys: Some(KeyColumn::absent(2)),
            timestamps: vec![1, 2],
            headers: Some(HeaderColumns::empty(2)),
        };
        let batch = Batch::from_parts(parts.clone()).unwrap();
        assert_eq!(batch.into_parts(), parts);
    }
}
