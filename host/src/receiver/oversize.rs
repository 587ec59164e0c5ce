//! Records longer than a source's `max-record-bytes`: instead of going into a block, each is
//! written whole, in chunks, to a side object beside the dead letters
//! (`<dead-letter path>/<stream>/oversize/<name>.bin`) and set aside with its source position
//! ([`SetAside`]); its block carries the note to the batch's dead letters, and the receiver
//! moves on. The name is derived from the record's position, so reading the same record again
//! (a replayed batch) writes the same object with the same bytes.

use object_store::{WriteMultipart, path::Path};

use super::ReceiverError;
use crate::batch::aside::{Origin, PREVIEW_BYTES, SetAside};
use crate::clock::now_ms;
use crate::store::Location;

/// `max-record-bytes` when the file names none: 16 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 16 << 20;

/// The highest `max-record-bytes` accepted: 1 GiB (a record under the limit is held whole in
/// memory, in a block, and in a plugin's linear memory).
pub const MAX_MAX_RECORD_BYTES: u64 = 1 << 30;

/// Bytes sent to the store per part of a side object.
const PART_BYTES: usize = 4 << 20;

/// Checks a `max-record-bytes` value, with the message naming the key.
pub fn check_max_record_bytes(n: u64) -> Result<u64, String> {
    if n == 0 || n > MAX_MAX_RECORD_BYTES {
        return Err(format!(
            "key `source.max-record-bytes`: {n} is out of range; expected 1 byte to 1GiB (a record under the limit is held whole in memory; default \"16MiB\")"
        ));
    }
    Ok(n)
}

/// A source's record limit and where its oversize records go.
#[derive(Debug, Clone)]
pub struct RecordLimit {
    /// `max-record-bytes`.
    pub max: u64,
    /// The dead-letter location.
    pub dead_letters: Location,
    /// The stream's name (the dead letters' folder).
    pub stream: String,
}

impl RecordLimit {
    /// The longest record within the limit.
    pub fn max_len(&self) -> usize {
        usize::try_from(self.max).unwrap_or(usize::MAX)
    }

    /// Whether a record of `len` bytes is over the limit.
    pub fn over(&self, len: usize) -> bool {
        len as u64 > self.max
    }

    /// Starts the side object named `name` (made safe for a path).
    pub async fn start(&self, name: &str) -> Result<SideWriter, ReceiverError> {
        let object = format!("{}/oversize/{}.bin", self.stream, safe_name(name));
        let path = self.dead_letters.child(&object);
        let upload = self
            .dead_letters
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| side_error(&path, e))?;
        Ok(SideWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, PART_BYTES),
            path,
            object,
            length: 0,
            preview: Vec::new(),
            held_cr: false,
            limit: self.max,
        })
    }

    /// Writes a record held whole (a message) to its side object and makes its note.
    pub async fn set_aside(
        &self,
        name: &str,
        value: &[u8],
        origin: Origin,
    ) -> Result<SetAside, ReceiverError> {
        let mut w = self.start(name).await?;
        w.write(value).await?;
        w.finish(false, origin).await
    }
}

/// A side object being written: the bytes of one oversize record, in parts.
pub struct SideWriter {
    upload: WriteMultipart,
    path: Path,
    object: String,
    length: u64,
    preview: Vec<u8>,
    /// A `\r` at the end of what was written so far, held back: it is dropped if the line
    /// ends right after it.
    held_cr: bool,
    limit: u64,
}

impl SideWriter {
    /// Appends bytes of the record, waiting while parts are being sent (at most two at once,
    /// so a record of any length takes a bounded amount of memory).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ReceiverError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.held_cr) {
            self.put(b"\r");
        }
        let (body, cr) = match bytes {
            [body @ .., b'\r'] => (body, true),
            _ => (bytes, false),
        };
        // A part at a time, so at most two are in flight whatever `bytes` holds.
        for part in body.chunks(PART_BYTES) {
            self.put(part);
            let path = &self.path;
            self.upload
                .wait_for_capacity(2)
                .await
                .map_err(|e| side_error(path, e))?;
        }
        self.held_cr = cr;
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) {
        let room = PREVIEW_BYTES.saturating_sub(self.preview.len());
        self.preview
            .extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.length += bytes.len() as u64;
        self.upload.write(bytes);
    }

    /// The record's bytes so far.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Completes the object; `at_newline`: the record ended at a newline (a `\r` before it is
    /// not part of the record). Returns the record's note.
    pub async fn finish(
        mut self,
        at_newline: bool,
        origin: Origin,
    ) -> Result<SetAside, ReceiverError> {
        if self.held_cr && !at_newline {
            self.put(b"\r");
        }
        let path = self.path.clone();
        self.upload
            .finish()
            .await
            .map_err(|e| side_error(&path, e))?;
        Ok(SetAside {
            origin,
            length: self.length,
            limit: self.limit,
            object: self.object,
            preview: self.preview,
            timestamp: now_ms(),
            offset: 0,
        })
    }
}

fn side_error(path: &Path, e: object_store::Error) -> ReceiverError {
    ReceiverError::Transient(format!(
        "writing the oversize record's side object {path}: {e}"
    ))
}

/// `name` with every byte outside `[A-Za-z0-9._-]` as `_`, and a hash of the original when
/// anything was replaced, so two names stay apart.
pub fn safe_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe == name && !name.starts_with('.') {
        return safe;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}-{h:016x}", safe.trim_start_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_or_huge_limit_is_refused_naming_the_key() {
        for n in [0, MAX_MAX_RECORD_BYTES + 1] {
            let e = check_max_record_bytes(n).unwrap_err();
            assert!(e.contains("source.max-record-bytes"), "{e}");
        }
        assert_eq!(check_max_record_bytes(64 << 20), Ok(64 << 20));
    }

    #[test]
    fn names_with_other_characters_are_made_safe_and_kept_apart() {
        assert_eq!(safe_name("files-a.txt-00000012"), "files-a.txt-00000012");
        let a = safe_name("files-a b-1");
        let b = safe_name("files-a/b-1");
        assert!(a.starts_with("files-a_b-1-"), "{a}");
        assert_ne!(a, b);
    }
}
