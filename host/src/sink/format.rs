//! How the stdout and files sinks write records ([`Format`]), and the one JSON encoding of
//! bytes that every JSON output of the host shares ([`json_bytes`]): a byte sequence that is
//! valid UTF-8 is a JSON string under its field's name; any other is base64 (standard
//! alphabet, padded) under the name with `_base64` appended. No byte is ever replaced.
//!
//! Every format writes one line per record, ended by LF (`\n`):
//! - `lines`: the value's bytes as they are. A value holding LF cannot be written.
//! - `kv`: the key's bytes (nothing when the record has none), TAB, the value's bytes. A key
//!   holding TAB or LF, or a value holding LF, cannot be written.
//! - `jsonl`: one JSON object holding the chosen [`Field`]s, always in the order `key`,
//!   `value`, `timestamp`, `headers` (default: the first three). `key` is `null` when the
//!   record has none; `timestamp` is milliseconds since the Unix epoch, or `null`; `headers`
//!   is a list, in the record's order, of `{"name":…,"value":…}` (empty when it has none).
//!   Key, value and each header's name and value follow the encoding above, so `jsonl`
//!   carries any bytes.
//!
//! A record a format cannot carry is [`Unwritable`]: the sink says so before writing
//! ([`Format::unwritable`]), and the job dead-letters it with the reason.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;

use crate::batch::RecordBatch;

/// How records are written out: `format` of the stdout and files sinks.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// The value, one per line.
    #[default]
    Lines,
    /// `key<TAB>value`, one per line.
    Kv,
    /// One JSON object per line.
    Jsonl,
}

impl OutputFormat {
    /// The name in the pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Lines => "lines",
            OutputFormat::Kv => "kv",
            OutputFormat::Jsonl => "jsonl",
        }
    }
}

/// One field of a `jsonl` line: an entry of the sink's `fields`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Field {
    /// `key` (or `key_base64`), `null` when the record has none.
    Key,
    /// `value` (or `value_base64`).
    Value,
    /// `timestamp`: ms since the Unix epoch, or `null`.
    Timestamp,
    /// `headers`: a list of `{"name":…,"value":…}` (each part may be `…_base64`).
    Headers,
}

/// The set of fields a `jsonl` line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields(u8);

impl Fields {
    /// `key`, `value` and `timestamp`: what `jsonl` wrote before `fields` existed.
    pub const DEFAULT: Fields =
        Fields(1 << Field::Key as u8 | 1 << Field::Value as u8 | 1 << Field::Timestamp as u8);
    /// Every field.
    pub const ALL: Fields = Fields(Fields::DEFAULT.0 | 1 << Field::Headers as u8);

    /// The set of `list` (repeats do nothing).
    pub fn of(list: &[Field]) -> Fields {
        Fields(list.iter().fold(0, |set, &f| set | 1 << f as u8))
    }

    /// Whether `field` is in the set.
    pub fn has(self, field: Field) -> bool {
        self.0 & 1 << field as u8 != 0
    }
}

impl Default for Fields {
    fn default() -> Self {
        Fields::DEFAULT
    }
}

/// A sink's format: its kind and, for `jsonl`, its fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Format {
    /// `format`.
    pub kind: OutputFormat,
    /// `fields` (used by `jsonl` only).
    pub fields: Fields,
}

impl From<OutputFormat> for Format {
    fn from(kind: OutputFormat) -> Self {
        Format {
            kind,
            fields: Fields::DEFAULT,
        }
    }
}

/// Why a format cannot carry a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unwritable {
    /// A line-per-record format and a value holding LF.
    #[error(
        "its value holds a line feed (at byte {at}), and the `{format}` format ends a record with one; format = \"jsonl\" carries any bytes"
    )]
    LineFeedInValue {
        /// `lines` or `kv`.
        format: &'static str,
        /// Where in the value.
        at: usize,
    },
    /// `kv` and a key holding its separator or LF.
    #[error(
        "its key holds a {what} (at byte {at}), which the `kv` format puts after the key or at a record's end; format = \"jsonl\" carries any bytes"
    )]
    SeparatorInKey {
        /// `tab` or `line feed`.
        what: &'static str,
        /// Where in the key.
        at: usize,
    },
}

fn find(bytes: &[u8], byte: u8) -> Option<usize> {
    bytes.iter().position(|&b| b == byte)
}

impl Format {
    /// The file name extension of the files sink's parts.
    pub fn extension(&self) -> &'static str {
        match self.kind {
            OutputFormat::Jsonl => "jsonl",
            OutputFormat::Kv => "tsv",
            OutputFormat::Lines => "txt",
        }
    }

    /// Whether record `i` of `batch` can be written exactly.
    pub fn check(&self, batch: &RecordBatch, i: usize) -> Result<(), Unwritable> {
        if self.kind == OutputFormat::Jsonl {
            return Ok(());
        }
        if let Some(at) = find(batch.value(i), b'\n') {
            let format = self.kind.name();
            return Err(Unwritable::LineFeedInValue { format, at });
        }
        if self.kind == OutputFormat::Kv {
            let key = batch.key(i).unwrap_or_default();
            if let Some(at) = find(key, b'\t') {
                return Err(Unwritable::SeparatorInKey { what: "tab", at });
            }
            if let Some(at) = find(key, b'\n') {
                let what = "line feed";
                return Err(Unwritable::SeparatorInKey { what, at });
            }
        }
        Ok(())
    }

    /// The records of `batch` this format cannot carry, each with why, in order.
    pub fn unwritable(&self, batch: &RecordBatch) -> Vec<(usize, Unwritable)> {
        (0..batch.len())
            .filter_map(|i| self.check(batch, i).err().map(|e| (i, e)))
            .collect()
    }

    /// Writes record `i` of `batch` as a line, without its LF, into `out`; a record the format
    /// cannot carry writes nothing.
    pub fn write(
        &self,
        batch: &RecordBatch,
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Unwritable> {
        self.check(batch, i)?;
        match self.kind {
            OutputFormat::Lines => out.extend_from_slice(batch.value(i)),
            OutputFormat::Kv => {
                out.extend_from_slice(batch.key(i).unwrap_or_default());
                out.push(b'\t');
                out.extend_from_slice(batch.value(i));
            }
            OutputFormat::Jsonl => self.write_json(batch, i, out),
        }
        Ok(())
    }

    /// Every field starts with a comma; the first one's becomes the object's `{`.
    fn write_json(&self, batch: &RecordBatch, i: usize, out: &mut Vec<u8>) {
        let f = self.fields;
        let start = out.len();
        if f.has(Field::Key) {
            out.push(b',');
            match batch.key(i) {
                Some(key) => push_bytes_field(out, "key", key),
                None => out.extend_from_slice(br#""key":null"#),
            }
        }
        if f.has(Field::Value) {
            out.push(b',');
            push_bytes_field(out, "value", batch.value(i));
        }
        if f.has(Field::Timestamp) {
            out.extend_from_slice(br#","timestamp":"#);
            match batch.timestamp(i) {
                Some(ms) => out.extend_from_slice(ms.to_string().as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
        }
        if f.has(Field::Headers) {
            out.extend_from_slice(br#","headers":["#);
            for (n, (name, value)) in batch.headers_of(i).enumerate() {
                out.extend_from_slice(if n == 0 { b"{" } else { b",{" });
                push_bytes_field(out, "name", name);
                out.push(b',');
                push_bytes_field(out, "value", value);
                out.push(b'}');
            }
            out.push(b']');
        }
        match out.get_mut(start) {
            Some(comma) => *comma = b'{',
            None => out.push(b'{'),
        }
        out.push(b'}');
    }
}

/// `bytes` as JSON: the suffix to add to the field's name (`""`, or `"_base64"` when `bytes`
/// is not UTF-8) and the string to write under it.
pub fn json_bytes(bytes: &[u8]) -> (&'static str, Cow<'_, str>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => ("", Cow::Borrowed(text)),
        Err(_) => (
            "_base64",
            Cow::Owned(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

/// Puts `bytes` into a JSON object under `name` (or `name_base64`), as [`json_bytes`] says.
pub fn insert_bytes(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    bytes: &[u8],
) {
    let (suffix, text) = json_bytes(bytes);
    obj.insert(format!("{name}{suffix}"), text.into_owned().into());
}

/// Appends `"name":"…"` (or `"name_base64":"…"`) to `out`, as [`json_bytes`] says.
pub fn push_bytes_field(out: &mut Vec<u8>, name: &str, bytes: &[u8]) {
    let (suffix, text) = json_bytes(bytes);
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    out.extend_from_slice(b"\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text.as_ref());
}

#[cfg(test)]
mod tests;
