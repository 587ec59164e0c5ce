//! The segment format: pure encoding and decoding, no I/O.
//!
//! A segment is one object, written once by one PUT, holding the blocks of one commit group.
//! All integers are little-endian.
//!
//! ```text
//! header (32 bytes)
//!   0  magic        8 bytes  "SLUICWAL"
//!   8  version      u32      2 (bytes 0..12 stay the same in every version; 1 is read too)
//!  12  frames       u32      how many frames follow
//!  16  body_len     u64      bytes after the header (the frames, end to end)
//!  24  reserved     u32      0
//!  28  header_crc   u32      CRC-32 of bytes 0..28
//! frame, `frames` times
//!   0  payload_len  u32
//!   4  payload_crc  u32      CRC-32 of the payload
//!   8  payload      payload_len bytes:
//!        kind u8 (1 = block), flags u8 (1 keys, 2 timestamps, 4 headers, 8 timestamp runs),
//!        reserved u16,
//!        partition u32, first_offset u64, records u32 (n),
//!        values: n ends u32, data_len u32, data
//!        keys (flag 1): presence bitmap ceil(n/8) bytes, n ends u32, data_len u32, data
//!        timestamps (flag 2): n i64
//!        timestamp runs (flag 8, version 2, instead of flag 2): m u32, then m times
//!          (count u32, timestamp i64), the counts adding up to n
//!        headers (flag 4): n record ends u32, m u32 entries, m name ends u32, names_len u32,
//!          names, m value ends u32, values_len u32, values
//! ```
//!
//! The header says how many frames and bytes follow, so a segment cut short anywhere, even
//! exactly between two frames, is seen as torn; the header's own checksum keeps those two
//! numbers honest. The CRC is CRC-32 (IEEE, `crc32fast`, SIMD-accelerated).

use crate::batch::{BytesColumn, Headers, Keys, RecordBatch};

/// The eight bytes every segment starts with.
pub const MAGIC: [u8; 8] = *b"SLUICWAL";
/// The format version this code writes. Version 2 added timestamp runs (flag 8): a receiver
/// stamps every record of one read alike, so a block's timestamps are a few runs, and their
/// 8 bytes a record were about 10% of the log's bytes (upper-case over TCP).
pub const VERSION: u32 = 2;
/// The oldest format version this code reads (a segment of 1 is one of 2 with no runs).
pub const OLDEST_VERSION: u32 = 1;
/// The header's size.
pub const HEADER_LEN: usize = 32;
/// A frame's size before its payload.
pub const FRAME_HEADER_LEN: usize = 8;

const KIND_BLOCK: u8 = 1;
const FLAG_KEYS: u8 = 1;
const FLAG_TIMESTAMPS: u8 = 2;
const FLAG_HEADERS: u8 = 4;
const FLAG_TIMESTAMP_RUNS: u8 = 8;
const PAYLOAD_FIXED: usize = 1 + 1 + 2 + 4 + 8 + 4;

/// Encodes the header of a segment of `frames` frames and `body_len` bytes after it.
pub fn encode_header(frames: u32, body_len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&frames.to_le_bytes());
    h[16..24].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The exact size of the frame [`encode_block`] makes for `records`.
pub fn frame_len(records: &RecordBatch) -> usize {
    FRAME_HEADER_LEN + payload_len(records, stamps(records))
}

/// How a block's timestamps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamps {
    /// The records have none.
    None,
    /// One per record (flag 2).
    Each,
    /// This many runs of equal timestamps (flag 8), when that is smaller.
    Runs(usize),
}

fn stamps(b: &RecordBatch) -> Stamps {
    let n = b.len();
    if b.timestamps.len() != n || n == 0 {
        return Stamps::None;
    }
    let runs = 1 + b.timestamps.windows(2).filter(|w| w[0] != w[1]).count();
    if 4 + runs * 12 < n * 8 {
        Stamps::Runs(runs)
    } else {
        Stamps::Each
    }
}

fn column_len(c: &BytesColumn) -> usize {
    c.ends.len() * 4 + 4 + c.data.len()
}

fn payload_len(b: &RecordBatch, stamps: Stamps) -> usize {
    let n = b.len();
    let mut len = PAYLOAD_FIXED + column_len(&b.values);
    if let Some(k) = &b.keys {
        len += n.div_ceil(8) + column_len(&k.column);
    }
    len += match stamps {
        Stamps::None => 0,
        Stamps::Each => n * 8,
        Stamps::Runs(m) => 4 + m * 12,
    };
    if let Some(h) = &b.headers {
        len += n * 4 + 4 + column_len(&h.names) + column_len(&h.values);
    }
    len
}

/// Why a block cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

/// Encodes one block as a frame (length, checksum, payload), in one allocation of the exact
/// size. The batch is checked first ([`RecordBatch::validate`]), so what is written reads back.
pub fn encode_block(
    partition: u32,
    first_offset: u64,
    b: &RecordBatch,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_block_into(&mut out, partition, first_offset, b)?;
    Ok(out)
}

/// [`encode_block`] into `out` (cleared first), which keeps its allocation when it is large
/// enough: the log reuses its frames' buffers, so that encoding at full speed writes into
/// memory already mapped instead of faulting in fresh pages for every block.
pub fn encode_block_into(
    out: &mut Vec<u8>,
    partition: u32,
    first_offset: u64,
    b: &RecordBatch,
) -> Result<(), EncodeError> {
    b.validate().map_err(EncodeError)?;
    let n = b.len();
    let stamps = stamps(b);
    let plen = payload_len(b, stamps);
    if plen > u32::MAX as usize {
        return Err(EncodeError(format!(
            "a block of {plen} bytes is larger than a frame can hold (4 GiB)"
        )));
    }
    out.clear();
    if out.capacity() < FRAME_HEADER_LEN + plen {
        // A fresh buffer rather than `reserve`: growing would copy the old contents.
        *out = Vec::with_capacity(FRAME_HEADER_LEN + plen);
    }
    out.extend_from_slice(&(plen as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the checksum, below
    let mut flags = 0;
    if b.keys.is_some() {
        flags |= FLAG_KEYS;
    }
    flags |= match stamps {
        Stamps::None => 0,
        Stamps::Each => FLAG_TIMESTAMPS,
        Stamps::Runs(_) => FLAG_TIMESTAMP_RUNS,
    };
    if b.headers.is_some() {
        flags |= FLAG_HEADERS;
    }
    out.extend_from_slice(&[KIND_BLOCK, flags, 0, 0]);
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&first_offset.to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    put_column(out, &b.values);
    if let Some(k) = &b.keys {
        let bitmap = n.div_ceil(8);
        out.extend_from_slice(&k.present[..bitmap]);
        put_column(out, &k.column);
    }
    match stamps {
        Stamps::None => {}
        Stamps::Each => {
            for t in &b.timestamps {
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
        Stamps::Runs(m) => put_runs(out, &b.timestamps, m),
    }
    if let Some(h) = &b.headers {
        put_u32s(out, &h.record_ends);
        out.extend_from_slice(&(h.names.len() as u32).to_le_bytes());
        put_column(out, &h.names);
        put_column(out, &h.values);
    }
    debug_assert_eq!(out.len(), FRAME_HEADER_LEN + plen);
    let crc = crc32fast::hash(&out[FRAME_HEADER_LEN..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Writes `ts` as its `m` runs of equal values: (count u32, value i64) each.
fn put_runs(out: &mut Vec<u8>, ts: &[i64], m: usize) {
    out.extend_from_slice(&(m as u32).to_le_bytes());
    let mut rest = ts;
    while let Some(&t) = rest.first() {
        let count = rest.iter().position(|&x| x != t).unwrap_or(rest.len());
        out.extend_from_slice(&(count as u32).to_le_bytes());
        out.extend_from_slice(&t.to_le_bytes());
        rest = &rest[count..];
    }
}

fn put_u32s(out: &mut Vec<u8>, v: &[u32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn put_column(out: &mut Vec<u8>, c: &BytesColumn) {
    put_u32s(out, &c.ends);
    out.extend_from_slice(&(c.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&c.data);
}

/// One block read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBlock {
    /// The partition.
    pub partition: u32,
    /// The partition offset of its first record.
    pub first_offset: u64,
    /// Its records.
    pub records: RecordBatch,
}

/// What is wrong at one place of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The object does not start with the magic bytes: it is not a WAL segment.
    NotASegment,
    /// The header is damaged (its checksum does not match).
    HeaderChecksum {
        /// The checksum stored.
        stored: u32,
        /// The checksum of what was read.
        computed: u32,
    },
    /// The object ends before what its header promises: a torn write or a cut copy.
    Torn {
        /// The object's length the header promises.
        expected_len: u64,
        /// The object's length.
        actual_len: u64,
    },
    /// A frame's payload does not match its checksum.
    FrameChecksum {
        /// The checksum stored.
        stored: u32,
        /// The checksum of what was read.
        computed: u32,
    },
    /// A frame's checksum matches but its contents do not make a block (a writer's bug, or a
    /// crafted file).
    Malformed(String),
    /// The object is longer than its header says.
    TrailingBytes {
        /// The object's length the header promises.
        expected_len: u64,
        /// The object's length.
        actual_len: u64,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::NotASegment => f.write_str("not a WAL segment (no magic bytes)"),
            Damage::HeaderChecksum { stored, computed } => write!(
                f,
                "corrupt header (checksum stored {stored:08x}, computed {computed:08x})"
            ),
            Damage::Torn {
                expected_len,
                actual_len,
            } => write!(
                f,
                "torn: the header promises {expected_len} bytes, the object has {actual_len}"
            ),
            Damage::FrameChecksum { stored, computed } => write!(
                f,
                "corrupt frame (checksum stored {stored:08x}, computed {computed:08x})"
            ),
            Damage::Malformed(why) => write!(f, "malformed frame: {why}"),
            Damage::TrailingBytes {
                expected_len,
                actual_len,
            } => write!(
                f,
                "{} bytes after the last frame (the header promises {expected_len} bytes, the object has {actual_len})",
                actual_len - expected_len
            ),
        }
    }
}

/// Where and what: the first damage found in a segment, and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageAt {
    /// The byte position in the object where reading stopped (a frame's or the header's
    /// start, or the end of the last frame for trailing bytes).
    pub position: u64,
    /// What is wrong there.
    pub damage: Damage,
    /// Frames the header promised that could not be read (`None` when the header itself is
    /// unreadable).
    pub frames_lost: Option<u32>,
    /// Bytes from `position` to the end of the object, none of which was returned.
    pub bytes_unreadable: u64,
}

/// A whole segment, read: its readable blocks, and the damage that stopped reading, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedSegment {
    /// The blocks before any damage, in write order.
    pub blocks: Vec<DecodedBlock>,
    /// The damage, if any. Reading stops at the first: the frames after a damaged one are
    /// counted in `frames_lost`, never returned, so a partition's blocks never have a hole.
    pub damage: Option<DamageAt>,
}

/// A segment whose format version this code does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVersion(pub u32);

/// Reads a segment. Never panics, whatever the bytes: damage is reported, with where.
/// A segment of another format version is refused whole, since its layout is unknown.
pub fn decode_segment(bytes: &[u8]) -> Result<DecodedSegment, UnknownVersion> {
    let total = bytes.len() as u64;
    let damaged = |position: u64, damage, frames_lost, blocks| DecodedSegment {
        blocks,
        damage: Some(DamageAt {
            position,
            damage,
            frames_lost,
            bytes_unreadable: total - position,
        }),
    };
    if bytes.len() < 12 || bytes[0..8] != MAGIC {
        if bytes.len() < 12 && MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
            return Ok(damaged(
                0,
                Damage::Torn {
                    expected_len: HEADER_LEN as u64,
                    actual_len: total,
                },
                None,
                Vec::new(),
            ));
        }
        return Ok(damaged(0, Damage::NotASegment, None, Vec::new()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(UnknownVersion(version));
    }
    if bytes.len() < HEADER_LEN {
        let d = Damage::Torn {
            expected_len: HEADER_LEN as u64,
            actual_len: total,
        };
        return Ok(damaged(0, d, None, Vec::new()));
    }
    let le32 =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let frames = le32(12);
    let body_len = u64::from(le32(16)) | (u64::from(le32(20)) << 32);
    let stored = le32(28);
    let computed = crc32fast::hash(&bytes[0..28]);
    if stored != computed {
        let d = Damage::HeaderChecksum { stored, computed };
        return Ok(damaged(0, d, None, Vec::new()));
    }
    let expected_len = (HEADER_LEN as u64).saturating_add(body_len);
    let mut blocks = Vec::with_capacity(frames as usize);
    let mut pos = HEADER_LEN;
    for i in 0..frames {
        let lost = Some(frames - i);
        let torn = Damage::Torn {
            expected_len,
            actual_len: total,
        };
        if bytes.len() - pos < FRAME_HEADER_LEN {
            return Ok(damaged(pos as u64, torn, lost, blocks));
        }
        let plen = le32(pos) as usize;
        let stored = le32(pos + 4);
        let start = pos + FRAME_HEADER_LEN;
        if bytes.len() - start < plen {
            return Ok(damaged(pos as u64, torn, lost, blocks));
        }
        let payload = &bytes[start..start + plen];
        let computed = crc32fast::hash(payload);
        if stored != computed {
            let d = Damage::FrameChecksum { stored, computed };
            return Ok(damaged(pos as u64, d, lost, blocks));
        }
        match decode_payload(payload, version) {
            Ok(block) => blocks.push(block),
            Err(why) => return Ok(damaged(pos as u64, Damage::Malformed(why), lost, blocks)),
        }
        pos = start + plen;
    }
    if (pos as u64) < total || (pos as u64) != expected_len {
        // Frames all read, but the lengths disagree: either bytes follow the last frame, or
        // the frames end before the header's length (a header that lies).
        let d = if (pos as u64) < total {
            Damage::TrailingBytes {
                expected_len,
                actual_len: total,
            }
        } else {
            Damage::Malformed(format!(
                "the frames end at byte {pos}, the header says {expected_len}"
            ))
        };
        return Ok(damaged(pos as u64, d, Some(0), blocks));
    }
    Ok(DecodedSegment {
        blocks,
        damage: None,
    })
}

/// A cursor over a payload; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.bytes.len() - self.pos < n {
            return Err(format!(
                "{what}: needs {n} bytes at payload byte {}, {} left",
                self.pos,
                self.bytes.len() - self.pos
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let s = self.take(8, what)?;
        let mut a = [0; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    /// Timestamp runs, expanded to the block's `n` timestamps.
    fn runs(&mut self, n: usize) -> Result<Vec<i64>, String> {
        let m = self.u32("timestamp run count")? as usize;
        if m > n {
            return Err(format!("{m} timestamp runs for {n} records"));
        }
        let runs = self.take(m * 12, "timestamp runs")?;
        let mut ts = Vec::with_capacity(n);
        for run in runs.chunks_exact(12) {
            let count = u32::from_le_bytes([run[0], run[1], run[2], run[3]]) as usize;
            let mut t = [0; 8];
            t.copy_from_slice(&run[4..12]);
            if count == 0 || count > n - ts.len() {
                return Err(format!(
                    "a timestamp run of {count} records, with {} of {n} left",
                    n - ts.len()
                ));
            }
            ts.resize(ts.len() + count, i64::from_le_bytes(t));
        }
        if ts.len() != n {
            return Err(format!("timestamp runs of {} records for {n}", ts.len()));
        }
        Ok(ts)
    }

    fn u32s(&mut self, n: usize, what: &str) -> Result<Vec<u32>, String> {
        let s = self.take(
            n.checked_mul(4)
                .ok_or_else(|| format!("{what}: too many"))?,
            what,
        )?;
        Ok(s.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn column(&mut self, n: usize, what: &str) -> Result<BytesColumn, String> {
        let ends = self.u32s(n, what)?;
        let len = self.u32(what)? as usize;
        let data = self.take(len, what)?.to_vec().into();
        let c = BytesColumn { data, ends };
        c.validate(what)?;
        Ok(c)
    }
}

fn decode_payload(payload: &[u8], version: u32) -> Result<DecodedBlock, String> {
    let mut c = Cursor {
        bytes: payload,
        pos: 0,
    };
    let fixed = c.take(4, "frame kind")?;
    let (kind, flags) = (fixed[0], fixed[1]);
    if kind != KIND_BLOCK {
        return Err(format!("unknown frame kind {kind}"));
    }
    let known = match version {
        1 => FLAG_KEYS | FLAG_TIMESTAMPS | FLAG_HEADERS,
        _ => FLAG_KEYS | FLAG_TIMESTAMPS | FLAG_HEADERS | FLAG_TIMESTAMP_RUNS,
    };
    if flags & !known != 0 {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    if flags & FLAG_TIMESTAMPS != 0 && flags & FLAG_TIMESTAMP_RUNS != 0 {
        return Err("both timestamps and timestamp runs".to_owned());
    }
    let partition = c.u32("partition")?;
    let first_offset = c.u64("first offset")?;
    let n = c.u32("record count")? as usize;
    // Every record takes at least its 4-byte end: a count past that is a lie, refused before
    // anything is allocated for it.
    if n > payload.len() / 4 {
        return Err(format!(
            "{n} records cannot fit in a {}-byte payload",
            payload.len()
        ));
    }
    let values = c.column(n, "values")?;
    let keys = if flags & FLAG_KEYS != 0 {
        let present = c.take(n.div_ceil(8), "key bitmap")?.to_vec();
        let column = c.column(n, "keys")?;
        Some(Keys { column, present })
    } else {
        None
    };
    let timestamps = if flags & FLAG_TIMESTAMPS != 0 {
        let s = c.take(n * 8, "timestamps")?;
        s.chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()
    } else if flags & FLAG_TIMESTAMP_RUNS != 0 {
        c.runs(n)?
    } else {
        Vec::new()
    };
    let headers = if flags & FLAG_HEADERS != 0 {
        let record_ends = c.u32s(n, "header record ends")?;
        let m = c.u32("header count")? as usize;
        if m > payload.len() / 4 {
            return Err(format!(
                "{m} headers cannot fit in a {}-byte payload",
                payload.len()
            ));
        }
        let mut prev = 0;
        for &e in &record_ends {
            if e < prev || e as usize > m {
                return Err(format!(
                    "header record end {e} is below {prev} or past the {m} headers"
                ));
            }
            prev = e;
        }
        let names = c.column(m, "header names")?;
        let values = c.column(m, "header values")?;
        Some(Headers {
            record_ends,
            names,
            values,
        })
    } else {
        None
    };
    if c.pos != payload.len() {
        return Err(format!(
            "{} bytes after the block's last column",
            payload.len() - c.pos
        ));
    }
    let records = RecordBatch {
        values,
        keys,
        timestamps,
        headers,
    };
    records.validate()?;
    Ok(DecodedBlock {
        partition,
        first_offset,
        records,
    })
}
