//! Newline-delimited records from a byte stream (the `files` and `tcp` sources), each at most
//! `max-record-bytes` long. A line past the limit is never held whole: once it passes the limit,
//! what it has so far and the rest of it, up to its newline, go in chunks to a side object
//! ([`super::oversize`]), and the line comes back as a [`LongLine`] for the receiver to set aside.
//!
//! A record is a line without its newline and without a `\r` just before it; a last line
//! without a newline is a record all the same (with its bytes as they are).

use std::ops::Range;

use super::ReceiverError;
use super::oversize::{RecordLimit, SideWriter};
use crate::batch::RecordBatch;
use crate::batch::aside::{Origin, SetAside};

/// A line past the limit, complete: its note and the bytes it took in the stream (newline
/// included).
#[derive(Debug)]
pub struct LongLine {
    /// The note to set aside.
    pub note: SetAside,
    /// Its bytes in the stream.
    pub range: Range<u64>,
}

/// What [`LineReader::feed`] did with some bytes.
#[derive(Debug)]
pub struct Fed {
    /// How many of them it took; the caller feeds the rest again.
    pub used: usize,
    /// A line past the limit that ended in them. The records appended before it end where it
    /// starts: append them before setting it aside.
    pub long: Option<LongLine>,
}

/// Splits a stream into records, setting aside lines past the limit.
pub struct LineReader {
    limit: RecordLimit,
    /// Side objects are named `<prefix>-<offset of the line>`.
    prefix: String,
    origin: Box<dyn Fn(u64) -> Origin + Send + Sync>,
    /// The bytes of the line not complete yet.
    partial: Vec<u8>,
    /// The stream offset of that line's first byte.
    line_start: u64,
    /// A line past the limit being written out, and how many of its bytes were read.
    long: Option<(SideWriter, u64)>,
}

impl LineReader {
    /// A reader of a stream whose first byte is at offset `start`; `origin` names a line's
    /// place in the source from its offset.
    pub fn new(
        limit: RecordLimit,
        prefix: String,
        start: u64,
        origin: impl Fn(u64) -> Origin + Send + Sync + 'static,
    ) -> Self {
        LineReader {
            limit,
            prefix,
            origin: Box::new(origin),
            partial: Vec::new(),
            line_start: start,
            long: None,
        }
    }

    /// The stream offset after the last complete line: where the records handed out so far
    /// end.
    pub fn line_start(&self) -> u64 {
        self.line_start
    }

    /// Whether it holds nothing: no part of a line, no long line being written. Only then may
    /// [`LineReader::split_complete`] be called.
    pub fn idle(&self) -> bool {
        self.partial.is_empty() && self.long.is_none()
    }

    /// The fast path of an [`idle`](LineReader::idle) reader, synchronous so that it can run
    /// inside the block manager's fill (records go straight into the partition's buffer):
    /// pushes the complete lines of `bytes` within the limit to `out` (stamped `ts`) and
    /// returns how many bytes they took. It stops before a line past the limit and before a
    /// last line without its newline: the caller feeds those to [`LineReader::feed`].
    pub fn split_complete(&mut self, bytes: &[u8], out: &mut RecordBatch, ts: i64) -> usize {
        debug_assert!(self.idle(), "split_complete on a reader holding a line");
        let used = out.push_lines(bytes, ts, self.limit.max_len());
        self.line_start += used as u64;
        used
    }

    /// Takes bytes that follow what it was fed before: complete lines within the limit are
    /// pushed to `out` (stamped `ts`), a line past it goes to its side object. Stops after a
    /// long line ends, so the caller can append what came before it first.
    pub async fn feed(
        &mut self,
        bytes: &[u8],
        out: &mut RecordBatch,
        ts: i64,
    ) -> Result<Fed, ReceiverError> {
        if self.long.is_some() {
            return self.feed_long(bytes).await;
        }
        let mut used = 0;
        while let Some(i) = memchr(&bytes[used..]) {
            let line = &bytes[used..used + i];
            let ends_cr = line.last().or(self.partial.last()) == Some(&b'\r');
            if self.limit.over(self.partial.len() + i - ends_cr as usize) {
                let held = self.partial.len() as u64;
                let mut w = self.start_long().await?;
                w.write(line).await?;
                self.long = Some((w, held));
                let long = self.end_long(i as u64 + 1, true).await?;
                return Ok(Fed {
                    used: used + i + 1,
                    long: Some(long),
                });
            }
            let record = if self.partial.is_empty() {
                line
            } else {
                self.partial.extend_from_slice(line);
                &self.partial[..]
            };
            // The line's bytes and its newline.
            let taken = record.len() as u64 + 1;
            let record = record.strip_suffix(b"\r").unwrap_or(record);
            out.push(None, record, Some(ts));
            self.line_start += taken;
            self.partial.clear();
            used += i + 1;
        }
        let rest = &bytes[used..];
        let held = self.partial.len() + rest.len();
        let ends_cr = rest.last().or(self.partial.last()) == Some(&b'\r');
        if self.limit.over(held - ends_cr as usize) {
            let mut w = self.start_long().await?;
            w.write(rest).await?;
            self.long = Some((w, held as u64));
        } else {
            self.partial.extend_from_slice(rest);
        }
        Ok(Fed {
            used: bytes.len(),
            long: None,
        })
    }

    /// The stream ended: a last line without a newline is a record (pushed to `out`), or a
    /// long line set aside.
    pub async fn finish(
        &mut self,
        out: &mut RecordBatch,
        ts: i64,
    ) -> Result<Option<LongLine>, ReceiverError> {
        if self.long.is_some() {
            return self.end_long(0, false).await.map(Some);
        }
        if !self.partial.is_empty() {
            out.push(None, &self.partial, Some(ts));
            self.line_start += self.partial.len() as u64;
            self.partial.clear();
        }
        Ok(None)
    }

    /// Opens the side object of the line starting at `line_start` and writes the bytes held.
    async fn start_long(&mut self) -> Result<SideWriter, ReceiverError> {
        let name = format!("{}-{:012}", self.prefix, self.line_start);
        let mut w = self.limit.start(&name).await?;
        w.write(&std::mem::take(&mut self.partial)).await?;
        Ok(w)
    }

    async fn feed_long(&mut self, bytes: &[u8]) -> Result<Fed, ReceiverError> {
        let Some((w, read)) = self.long.as_mut() else {
            return Ok(Fed {
                used: 0,
                long: None,
            });
        };
        match memchr(bytes) {
            None => {
                w.write(bytes).await?;
                *read += bytes.len() as u64;
                Ok(Fed {
                    used: bytes.len(),
                    long: None,
                })
            }
            Some(i) => {
                w.write(&bytes[..i]).await?;
                let long = self.end_long(i as u64 + 1, true).await?;
                Ok(Fed {
                    used: i + 1,
                    long: Some(long),
                })
            }
        }
    }

    /// Completes the long line: `more` stream bytes (its last ones and its newline) were
    /// read since.
    async fn end_long(&mut self, more: u64, at_newline: bool) -> Result<LongLine, ReceiverError> {
        let (w, read) = self.long.take().expect("a long line is being written");
        let start = self.line_start;
        let end = start + read + more;
        let note = w.finish(at_newline, (self.origin)(start)).await?;
        self.line_start = end;
        Ok(LongLine {
            note,
            range: start..end,
        })
    }
}

/// The first newline in `hay` (a SIMD search).
fn memchr(hay: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', hay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Location;

    fn reader(dir: &std::path::Path, max: u64) -> LineReader {
        let dead_letters = Location::resolve("dl", "dead-letter.path", dir, true).unwrap();
        let limit = RecordLimit {
            max,
            dead_letters,
            stream: "s".into(),
        };
        LineReader::new(limit, "t".into(), 100, |offset| Origin::File {
            file: "f".into(),
            offset,
        })
    }

    /// Feeds `pieces` one after the other; returns the records and the long lines.
    async fn feed_all(r: &mut LineReader, pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<LongLine>) {
        let (mut out, mut long) = (RecordBatch::default(), Vec::new());
        for piece in pieces {
            let mut rest = *piece;
            while !rest.is_empty() {
                let fed = r.feed(rest, &mut out, 0).await.unwrap();
                rest = &rest[fed.used..];
                long.extend(fed.long);
            }
        }
        long.extend(r.finish(&mut out, 0).await.unwrap());
        let records = (0..out.len()).map(|i| out.value(i).to_vec()).collect();
        (records, long)
    }

    #[tokio::test]
    async fn a_line_past_the_limit_goes_whole_to_its_side_object_with_its_byte_range() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = reader(tmp.path(), 8);
        // The long line comes in three pieces, the middle one without a newline.
        let pieces: [&[u8]; 4] = [
            b"one\r\ntwo\nLONG-",
            b"0123456789",
            b"-TAIL\r\nthree\n",
            b"four",
        ];
        let (records, long) = feed_all(&mut r, &pieces).await;
        assert_eq!(records, [&b"one"[..], b"two", b"three", b"four"]);
        assert_eq!(long.len(), 1);
        let line = &long[0];
        assert_eq!(
            line.range,
            109..131,
            "from its first byte to after its newline"
        );
        assert_eq!(
            line.note.origin,
            Origin::File {
                file: "f".into(),
                offset: 109
            }
        );
        assert_eq!(line.note.length, 20, "without the \\r");
        let bytes = std::fs::read(tmp.path().join("dl").join(&line.note.object)).unwrap();
        assert_eq!(bytes, b"LONG-0123456789-TAIL");
        assert_eq!(r.line_start(), 141);
    }

    #[tokio::test]
    async fn a_line_at_the_limit_is_a_record_and_a_long_last_line_without_newline_is_set_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = reader(tmp.path(), 4);
        let (records, long) = feed_all(&mut r, &[b"abcd\r\nab", b"cdefgh"]).await;
        assert_eq!(records, [&b"abcd"[..]]);
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].range, 106..114);
        let bytes = std::fs::read(tmp.path().join("dl").join(&long[0].note.object)).unwrap();
        assert_eq!(bytes, b"abcdefgh");
    }
}
