//! How a receiver makes a batch: [`BatchBuilder`].

use std::time::{SystemTime, UNIX_EPOCH};

use crate::batch::{Batch, BatchParts, Column, HeaderColumns, KeyColumn, end_offset};

/// Builds a [`Batch`] record by record, as a receiver's `poll` does.
///
/// Keys, timestamps and headers are optional per record; a column is only sent when some
/// record has one. A record without a timestamp in a batch where others have one gets the time
/// the builder first needed one (the time the receiver got it).
///
/// ```
/// use sluice_sdk::BatchBuilder;
///
/// let mut out = BatchBuilder::new();
/// out.push(b"plain");
/// out.push(b"rich").key(b"user-1").timestamp(1_700_000_000_000).header(b"source", b"a.log");
/// assert_eq!(out.len(), 2);
///
/// let batch = out.finish();
/// assert_eq!(batch.key(0), None);
/// assert_eq!(batch.key(1), Some(b"user-1".as_slice()));
/// assert_eq!(batch.timestamp(1), Some(1_700_000_000_000));
/// let record = batch.get(1).unwrap();
/// assert_eq!(record.headers().collect::<Vec<_>>(), [(b"source".as_slice(), b"a.log".as_slice())]);
/// ```
#[derive(Debug, Default)]
pub struct BatchBuilder {
    values: Column,
    keys: Option<KeyColumn>,
    timestamps: Vec<i64>,
    has_timestamps: bool,
    headers: Option<HeaderColumns>,
    received_ms: Option<i64>,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty builder with room for `records` records holding `bytes` bytes of values.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        let mut builder = Self::new();
        builder.values.data.reserve(bytes);
        builder.values.ends.reserve(records);
        builder
    }

    /// Appends a record with `value`; the returned handle adds its key, timestamp and headers.
    #[inline]
    pub fn push(&mut self, value: &[u8]) -> RecordMut<'_> {
        self.values.data.extend_from_slice(value);
        self.end_value()
    }

    /// Appends a record whose value `write` appends to the end of the values buffer.
    ///
    /// # Panics
    ///
    /// When `write` removes bytes that were in the buffer before it was called.
    #[inline]
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> RecordMut<'_> {
        let start = self.values.data.len();
        write(&mut self.values.data);
        assert!(
            self.values.data.len() >= start,
            "BatchBuilder::push_with: the closure removed bytes of earlier records"
        );
        self.end_value()
    }

    fn end_value(&mut self) -> RecordMut<'_> {
        self.values.ends.push(end_offset(self.values.data.len()));
        if let Some(keys) = &mut self.keys {
            keys.push(None);
        }
        if self.has_timestamps {
            let now = self.received_ms();
            self.timestamps.push(now);
        }
        if let Some(headers) = &mut self.headers {
            headers.record_ends.push(end_offset(headers.names.len()));
        }
        RecordMut { builder: self }
    }

    /// The number of records so far.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The bytes of all values so far, to keep a batch near a size limit.
    pub fn value_bytes(&self) -> usize {
        self.values.data.len()
    }

    /// The finished batch.
    pub fn finish(self) -> Batch {
        Batch::from_parts_unchecked(BatchParts {
            values: self.values,
            keys: self.keys,
            timestamps: self.timestamps,
            headers: self.headers,
        })
    }

    fn received_ms(&mut self) -> i64 {
        *self.received_ms.get_or_insert_with(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        })
    }
}

/// The record just pushed to a [`BatchBuilder`], to add its key, timestamp and headers.
#[derive(Debug)]
pub struct RecordMut<'a> {
    builder: &'a mut BatchBuilder,
}

impl RecordMut<'_> {
    /// Sets the record's key (replacing one set before).
    pub fn key(self, key: &[u8]) -> Self {
        let b = &mut *self.builder;
        match &mut b.keys {
            Some(keys) => keys.set_last(key),
            None => {
                let mut keys = KeyColumn::absent(b.values.len() - 1);
                keys.push(Some(key));
                b.keys = Some(keys);
            }
        }
        self
    }

    /// Sets the record's timestamp, in milliseconds since the Unix epoch (event time).
    pub fn timestamp(self, ms: i64) -> Self {
        let b = &mut *self.builder;
        if !b.has_timestamps {
            b.has_timestamps = true;
            let now = b.received_ms();
            b.timestamps = vec![now; b.values.len()];
        }
        if let Some(last) = b.timestamps.last_mut() {
            *last = ms;
        }
        self
    }

    /// Adds a header to the record.
    pub fn header(self, name: &[u8], value: &[u8]) -> Self {
        let b = &mut *self.builder;
        let headers = b
            .headers
            .get_or_insert_with(|| HeaderColumns::empty(b.values.len()));
        headers.names.push(name);
        headers.values.push(value);
        if let Some(last) = headers.record_ends.last_mut() {
            *last = end_offset(headers.names.len());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_columns_cover_records_pushed_before_and_after() {
        let mut out = BatchBuilder::new();
        out.push(b"a");
        out.push(b"b")
            .timestamp(5)
            .header(b"h", b"1")
            .key(b"x")
            .key(b"yz");
        out.push(b"c");
        let batch = Batch::from_parts(out.finish().into_parts()).expect("valid batch");
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.timestamps().len(), 3);
        assert_eq!(batch.timestamp(1), Some(5));
        assert_eq!(batch.timestamp(0), batch.timestamp(2));
        assert_eq!(batch.key(1), Some(b"yz".as_slice()));
        assert_eq!(batch.key(2), None);
        assert_eq!(batch.get(2).unwrap().headers().count(), 0);
        assert_eq!(batch.get(1).unwrap().headers().count(), 1);
    }

    #[test]
    fn a_batch_without_extras_sends_no_optional_columns() {
        let mut out = BatchBuilder::with_capacity(2, 8);
        out.push_with(|buf| buf.extend_from_slice(b"abc"));
        assert_eq!(out.value_bytes(), 3);
        let parts = out.finish().into_parts();
        assert!(parts.keys.is_none() && parts.headers.is_none() && parts.timestamps.is_empty());
    }
}
