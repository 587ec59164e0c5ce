//! What a transformation returns: [`Output`].

use std::sync::Arc;

use crate::batch::{Batch, Column, KeyColumn, Record, end_offset};
use crate::error::{BadRecord, Error};

/// Something that names an input record: a [`Record`] or its index.
pub trait Origin {
    /// The index of the input record in its batch.
    fn origin_index(&self) -> u32;
}

impl Origin for u32 {
    #[inline]
    fn origin_index(&self) -> u32 {
        *self
    }
}

impl Origin for Record<'_> {
    #[inline]
    fn origin_index(&self) -> u32 {
        self.index()
    }
}

impl Origin for &Record<'_> {
    #[inline]
    fn origin_index(&self) -> u32 {
        self.index()
    }
}

/// The records a transformation produces from one input [`Batch`].
///
/// Every output record names the input record it came from (its origin) and inherits that
/// record's timestamp and headers, and its key unless one is given. Values are appended to one
/// shared buffer, so pushing a record costs no allocation of its own. When every output record
/// `i` came from input record `i` (a map), no origins cross the boundary at all.
///
/// ```
/// use sluice_sdk::{Batch, Output};
///
/// let input = Batch::from_values(["a", "bb", "ccc"]);
/// let mut out = Output::new();
/// for record in input.records() {
///     match record.value().len() {
///         1 => out.reject(record, "too short"),
///         2 => out.push(record, b"two"),
///         _ => out.push_keyed(record, b"k", record.value()),
///     }
/// }
/// assert_eq!(out.len(), 2);
/// assert_eq!(out.value(0), b"two");
/// assert_eq!(out.origin(1), 2);
/// assert_eq!(out.key(0), None);
/// assert_eq!(out.key(1), Some(b"k".as_slice()));
/// assert_eq!(out.rejected()[0].index, 0);
/// ```
#[derive(Debug, Default)]
pub struct Output {
    data: Vec<u8>,
    ends: Vec<u32>,
    // Set by `pass_through` (data and ends) or `map_same_shape`/`map_values` (ends): the
    // values are the input's, shared rather than copied. `data`/`ends` are then unused.
    shared_data: Option<Arc<Vec<u8>>>,
    shared_ends: Option<Arc<Vec<u32>>>,
    // While `in_order`, output record `i` came from input record `i` and `origins` stays empty.
    in_order: bool,
    origins: Vec<u32>,
    keys: Option<KeyColumn>,
    rejected: Vec<BadRecord>,
    // Capacity to reserve on the first push: (records, bytes).
    hint: (usize, usize),
}

/// The columns of a finished [`Output`], as the WIT `output`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputParts {
    /// The output values.
    pub values: Column,
    /// The origin of each output record; empty when output record `i` came from input record
    /// `i` for every record of the input (a map).
    pub origins: Vec<u32>,
    /// New keys for the output records; `None` keeps each origin's key.
    pub keys: Option<KeyColumn>,
    /// The input records that were rejected.
    pub rejected: Vec<BadRecord>,
}

impl Output {
    /// An empty output.
    pub fn new() -> Self {
        Self {
            in_order: true,
            ..Self::default()
        }
    }

    /// An empty output with room for `records` records holding `bytes` bytes of values.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        let mut out = Self::new();
        out.data.reserve(bytes);
        out.ends.reserve(records);
        out
    }

    /// An empty output that reserves room for as much as `input` holds on its first push.
    pub(crate) fn for_input(input: &Batch) -> Self {
        Self {
            hint: (input.len(), input.values_data().len()),
            ..Self::new()
        }
    }

    /// Appends a record with `value`, coming from input record `origin`.
    #[inline]
    pub fn push(&mut self, origin: impl Origin, value: &[u8]) {
        self.begin(origin.origin_index());
        self.data.extend_from_slice(value);
        self.end(None);
    }

    /// Appends a record whose value `write` appends to the end of the shared values buffer,
    /// coming from input record `origin`. Nothing is copied twice.
    ///
    /// ```
    /// use std::io::Write;
    /// use sluice_sdk::{Batch, Output};
    ///
    /// let input = Batch::from_values(["7"]);
    /// let mut out = Output::new();
    /// out.push_with(0, |buf| write!(buf, "n={}", input.value(0)[0] - b'0').unwrap());
    /// assert_eq!(out.value(0), b"n=7");
    /// ```
    ///
    /// # Panics
    ///
    /// When `write` removes bytes that were in the buffer before it was called.
    #[inline]
    pub fn push_with(&mut self, origin: impl Origin, write: impl FnOnce(&mut Vec<u8>)) {
        self.begin(origin.origin_index());
        let start = self.data.len();
        write(&mut self.data);
        assert!(
            self.data.len() >= start,
            "Output::push_with: the closure removed bytes of earlier records"
        );
        self.end(None);
    }

    /// Appends a record with a new `key` and `value`, coming from input record `origin`.
    ///
    /// Once any record has a key, the output carries keys: records pushed without one (before
    /// or after) then have no key, rather than their origin's.
    #[inline]
    pub fn push_keyed(&mut self, origin: impl Origin, key: &[u8], value: &[u8]) {
        self.begin(origin.origin_index());
        self.data.extend_from_slice(value);
        self.end(Some(key));
    }

    /// Rejects input record `origin` for `reason`: the host sends it to the dead-letter sink
    /// and the rest of the batch goes on.
    pub fn reject(&mut self, origin: impl Origin, reason: impl Into<String>) {
        self.rejected.push(BadRecord {
            index: origin.origin_index(),
            reason: reason.into(),
        });
    }

    /// Makes this output a map of `input` that keeps every value's length, and returns the
    /// output values buffer, a copy of `input.values_data()`, to change in place with one loop
    /// over the whole buffer. The value offsets are shared with the input, not copied.
    ///
    /// ```
    /// use sluice_sdk::{Batch, Output};
    ///
    /// let input = Batch::from_values(["ab", "c"]);
    /// let mut out = Output::new();
    /// out.map_same_shape(&input).make_ascii_uppercase();
    /// assert_eq!(out.values().collect::<Vec<_>>(), [b"AB".as_slice(), b"C"]);
    /// ```
    ///
    /// # Panics
    ///
    /// When records were pushed before.
    pub fn map_same_shape(&mut self, input: &Batch) -> &mut [u8] {
        self.start_map(input);
        self.data.clear();
        self.data.extend_from_slice(input.values_data());
        &mut self.data
    }

    /// Makes this output a map of `input` that keeps every value's length: `map` gets the
    /// whole input values buffer and a zeroed output buffer of the same length to fill.
    ///
    /// ```
    /// use sluice_sdk::{Batch, Output};
    ///
    /// let input = Batch::from_values(["ab", "c"]);
    /// let mut out = Output::new();
    /// out.map_values(&input, |src, dst| {
    ///     for (d, s) in dst.iter_mut().zip(src) {
    ///         *d = s + 1;
    ///     }
    /// });
    /// assert_eq!(out.value(0), b"bc");
    /// ```
    ///
    /// # Panics
    ///
    /// When records were pushed before.
    pub fn map_values(&mut self, input: &Batch, map: impl FnOnce(&[u8], &mut [u8])) {
        self.start_map(input);
        self.data.clear();
        self.data.resize(input.values_data().len(), 0);
        map(input.values_data(), &mut self.data);
    }

    /// Makes this output exactly `input`'s values, without copying them.
    ///
    /// ```
    /// use sluice_sdk::{Batch, Output};
    ///
    /// let input = Batch::from_values(["a", "b"]);
    /// let mut out = Output::new();
    /// out.pass_through(&input);
    /// let parts = out.finish(input)?;
    /// assert_eq!(parts.values.data, b"ab");
    /// assert!(parts.origins.is_empty());
    /// # Ok::<(), sluice_sdk::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// When records were pushed before.
    pub fn pass_through(&mut self, input: &Batch) {
        self.start_map(input);
        let (data, _) = input.shared_values();
        self.shared_data = Some(data);
    }

    fn start_map(&mut self, input: &Batch) {
        assert!(
            self.is_empty(),
            "Output: a whole-batch map must come before any other record"
        );
        self.shared_data = None;
        self.shared_ends = Some(input.shared_ends());
    }

    /// The number of output records.
    #[inline]
    pub fn len(&self) -> usize {
        self.ends().len()
    }

    /// Whether there are no output records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of output record `i`.
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    pub fn value(&self, i: usize) -> &[u8] {
        let ends = self.ends();
        let start = if i == 0 { 0 } else { ends[i - 1] as usize };
        &self.data()[start..ends[i] as usize]
    }

    /// The output values in order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.value(i))
    }

    /// The index of the input record that output record `i` came from.
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    pub fn origin(&self, i: usize) -> u32 {
        assert!(i < self.len(), "output record {i} out of range");
        if self.in_order {
            i as u32
        } else {
            self.origins[i]
        }
    }

    /// The new key of output record `i`: `None` when it has none.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        self.keys.as_ref()?.get(i)
    }

    /// Whether the output carries new keys (some record was pushed with
    /// [`Output::push_keyed`]).
    pub fn has_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// The rejected input records, in the order they were rejected.
    pub fn rejected(&self) -> &[BadRecord] {
        &self.rejected
    }

    /// Finishes the output of a call with `input`, checking every origin, and gives its
    /// columns as the WIT `output` carries them.
    ///
    /// Returns a fatal error when an origin or rejected index is not a record of `input`: a
    /// bug in the plugin.
    pub fn finish(mut self, input: Batch) -> Result<OutputParts, Error> {
        let records = input.len();
        let count = self.len();
        let origins = if self.in_order {
            if count > records {
                return Err(Error::fatal(format!(
                    "output record {records} names input record {records} as its origin, but the input has {records} records"
                )));
            }
            if count == records {
                Vec::new()
            } else {
                (0..count as u32).collect()
            }
        } else {
            if let Some((i, origin)) = self
                .origins
                .iter()
                .enumerate()
                .find(|&(_, &o)| o as usize >= records)
            {
                return Err(Error::fatal(format!(
                    "output record {i} names input record {origin} as its origin, but the input has {records} records"
                )));
            }
            std::mem::take(&mut self.origins)
        };
        if let Some(bad) = self.rejected.iter().find(|r| r.index as usize >= records) {
            return Err(Error::fatal(format!(
                "rejected input record {}, but the input has {records} records",
                bad.index
            )));
        }
        // Drop the input first so that shared columns have a single owner left.
        drop(input);
        let data = match self.shared_data.take() {
            Some(shared) => Arc::unwrap_or_clone(shared),
            None => self.data,
        };
        let ends = match self.shared_ends.take() {
            Some(shared) => Arc::unwrap_or_clone(shared),
            None => self.ends,
        };
        Ok(OutputParts {
            values: Column { data, ends },
            origins,
            keys: self.keys,
            rejected: self.rejected,
        })
    }

    #[inline]
    fn data(&self) -> &[u8] {
        match &self.shared_data {
            Some(data) => data,
            None => &self.data,
        }
    }

    #[inline]
    fn ends(&self) -> &[u32] {
        match &self.shared_ends {
            Some(ends) => ends,
            None => &self.ends,
        }
    }

    /// Starts a record from input record `origin`.
    #[inline]
    fn begin(&mut self, origin: u32) {
        if self.shared_data.is_some() || self.shared_ends.is_some() {
            self.unshare();
        }
        if self.ends.capacity() == 0 {
            let (records, bytes) = std::mem::take(&mut self.hint);
            self.ends.reserve(records.max(16));
            self.data.reserve(bytes);
        }
        let i = self.ends.len() as u32;
        if self.in_order {
            if origin != i {
                self.in_order = false;
                self.origins.reserve(self.ends.capacity());
                self.origins.extend(0..i);
                self.origins.push(origin);
            }
        } else {
            self.origins.push(origin);
        }
    }

    /// Ends the record begun last, whose value is the tail of `data`.
    #[inline]
    fn end(&mut self, key: Option<&[u8]>) {
        self.ends.push(end_offset(self.data.len()));
        match (&mut self.keys, key) {
            (Some(keys), key) => keys.push(key),
            (None, None) => {}
            (None, Some(key)) => self.start_keys(key),
        }
    }

    /// Starts the key column at the record just ended, with room for as many records as the
    /// values have.
    #[cold]
    fn start_keys(&mut self, key: &[u8]) {
        let mut keys = KeyColumn::absent(self.ends.len() - 1);
        keys.column.ends.reserve(self.ends.capacity());
        keys.present.reserve(self.ends.capacity().div_ceil(8));
        keys.push(Some(key));
        self.keys = Some(keys);
    }

    #[cold]
    fn unshare(&mut self) {
        if let Some(data) = self.shared_data.take() {
            self.data = Arc::unwrap_or_clone(data);
        }
        if let Some(ends) = self.shared_ends.take() {
            self.ends = Arc::unwrap_or_clone(ends);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_in_order_sends_no_origins() {
        let input = Batch::from_values(["a", "b"]);
        let mut out = Output::new();
        for r in input.records() {
            out.push(r, r.value());
        }
        let parts = out.finish(input).unwrap();
        assert!(parts.origins.is_empty());
        assert_eq!(parts.values, Column::from_values(["a", "b"]));
    }

    #[test]
    fn a_filter_that_keeps_a_prefix_sends_its_origins() {
        let input = Batch::from_values(["a", "b", "c"]);
        let mut out = Output::new();
        out.push(0, b"a");
        out.push(1, b"b");
        assert_eq!(out.finish(input).unwrap().origins, [0, 1]);
    }

    #[test]
    fn a_filter_that_skips_sends_every_origin() {
        let input = Batch::from_values(["a", "b", "c"]);
        let mut out = Output::new();
        out.push(0, b"a");
        out.push(2, b"c");
        out.push(2, b"c2");
        assert_eq!(out.origin(1), 2);
        assert_eq!(out.finish(input).unwrap().origins, [0, 2, 2]);
    }

    #[test]
    fn an_origin_beyond_the_input_is_a_fatal_error() {
        let mut out = Output::new();
        out.push(5, b"x");
        let err = out.finish(Batch::from_values(["a"])).unwrap_err();
        assert!(matches!(err, Error::Fatal(m) if m.contains("input record 5")));

        let mut out = Output::new();
        out.push(0, b"x");
        out.push(1, b"y");
        assert!(out.finish(Batch::from_values(["a"])).is_err());

        let mut out = Output::new();
        out.reject(3, "no");
        assert!(out.finish(Batch::from_values(["a"])).is_err());
    }

    #[test]
    fn keys_set_late_leave_earlier_records_without_a_key() {
        let input = Batch::from_values(["a"; 10]);
        let mut out = Output::new();
        for i in 0..10 {
            if i == 9 {
                out.push_keyed(i, b"k", b"v");
            } else {
                out.push(i, b"v");
            }
        }
        out.push(0, b"after");
        assert!((0..9).all(|i| out.key(i).is_none()));
        assert_eq!(out.key(9), Some(b"k".as_slice()));
        assert_eq!(out.key(10), None);
        let keys = out.finish(input).unwrap().keys.unwrap();
        assert_eq!(keys.len(), 11);
        assert_eq!(keys.present, [0, 0b10]);
    }

    #[test]
    fn pass_through_hands_back_the_input_buffer_without_a_copy() {
        let input = Batch::from_values(["abc", "de"]);
        let pointer = input.values_data().as_ptr();
        let mut out = Output::new();
        out.pass_through(&input);
        assert_eq!(out.value(1), b"de");
        let parts = out.finish(input).unwrap();
        assert_eq!(parts.values.data.as_ptr(), pointer);
        assert_eq!(parts.values.ends, [3, 5]);
    }

    #[test]
    fn pushing_after_a_whole_batch_map_copies_the_shared_columns() {
        let input = Batch::from_values(["ab"]);
        let mut out = Output::new();
        out.map_same_shape(&input).make_ascii_uppercase();
        out.push(0, b"again");
        let parts = out.finish(input).unwrap();
        assert_eq!(parts.values, Column::from_values(["AB", "again"]));
        assert_eq!(parts.origins, [0, 0]);
    }

    #[test]
    #[should_panic(expected = "before any other record")]
    fn a_whole_batch_map_after_pushes_panics() {
        let input = Batch::from_values(["ab"]);
        let mut out = Output::new();
        out.push(0, b"x");
        out.pass_through(&input);
    }
}
