//! `jsonl-sink`: writes each batch as JSON lines into files in the directory granted at guest
//! path `/out`.
//!
//! `write` puts one partition's records into `/out/<stream>-<batch id>-<partition>.jsonl.tmp`
//! (truncating it, so a replayed batch rewrites it); `commit` renames every `.tmp` file of the
//! batch to `.jsonl`, so a batch is either all there or not at all, and a repeated commit does
//! nothing. A partition with no records writes no file. Characters of the stream name other
//! than ASCII letters, digits, `.`, `_` and `-` become `_` in the file name.
//!
//! Each record is one line: `{"key":…,"value":…,"timestamp":…}`. A key or value that is
//! valid UTF-8 is a JSON string; one that is not is written base64-encoded (standard alphabet,
//! padded) under `key_base64` or `value_base64` instead, so no byte is lost. An absent key or
//! timestamp is `null`; the timestamp is in milliseconds since the Unix epoch.
//!
//! Parameter `headers` (`"true"` or `"false"`, default false): when true, each line also has
//! `"headers":[{"name":…,"value":…},…]`, the record's headers in order, each name and value
//! written as key and value are (`name_base64`, `value_base64` when not UTF-8).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sluice_sdk::{Batch, Context, Error, Params, Sink, export_sink};

/// Where the operator grants the output directory.
pub const OUT_DIR: &str = "/out";

/// The plugin: the directory it writes to.
#[derive(Debug)]
pub struct JsonlSink {
    dir: PathBuf,
    headers: bool,
}

impl JsonlSink {
    /// A sink writing into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            headers: false,
        }
    }

    /// The same sink, writing each record's headers too when `headers`.
    pub fn with_headers(mut self, headers: bool) -> Self {
        self.headers = headers;
        self
    }

    /// Writes `input`, partition `ctx.partition` of batch `ctx.batch_id`, into its `.tmp` file.
    pub fn write_batch(&self, ctx: &Context, input: &Batch) -> Result<(), Error> {
        // Part 0 is `<prefix><partition>`, a further part `<prefix><partition>.<part>`: the host
        // splits a big partition the same way on a replay, so a replay rewrites the same files.
        let part = if ctx.part == 0 {
            String::new()
        } else {
            format!(".{}", ctx.part)
        };
        let path = self.dir.join(format!(
            "{}{}{part}.jsonl.tmp",
            file_prefix(&ctx.stream, ctx.batch_id),
            ctx.partition
        ));
        if input.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(e, "remove", &path)),
                _ => Ok(()),
            };
        }
        let mut lines = Vec::with_capacity(input.values_data().len() * 4 / 3 + 48 * input.len());
        write_lines(input, self.headers, &mut lines);
        let mut file = File::create(&path).map_err(|e| io_error(e, "create", &path))?;
        file.write_all(&lines)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(e, "write", &path))
    }

    /// Renames every `.tmp` file of batch `batch_id` of `stream` to `.jsonl`.
    pub fn commit_batch(&self, stream: &str, batch_id: u64) -> Result<(), Error> {
        let prefix = file_prefix(stream, batch_id);
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error(e, "list", &self.dir))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(e, "list", &self.dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_ours = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".jsonl.tmp"))
                .is_some_and(|p| {
                    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                });
            if is_ours {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let from = self.dir.join(&name);
            let to = self.dir.join(name.trim_end_matches(".tmp"));
            fs::rename(&from, &to).map_err(|e| io_error(e, "rename", &from))?;
        }
        Ok(())
    }
}

/// `<stream>-<batch id>-`: what every file name of the batch starts with.
pub fn file_prefix(stream: &str, batch_id: u64) -> String {
    let stream: String = stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stream}-{batch_id}-")
}

/// Appends one JSON line per record of `input` to `out`.
pub fn format_jsonl(input: &Batch, out: &mut Vec<u8>) {
    write_lines(input, false, out);
}

/// Appends one JSON line per record of `input` to `out`, with its headers when `headers`.
pub fn write_lines(input: &Batch, headers: bool, out: &mut Vec<u8>) {
    for record in input.records() {
        out.push(b'{');
        match record.key() {
            None => out.extend_from_slice(b"\"key\":null"),
            Some(key) => write_field(out, "key", key),
        }
        out.push(b',');
        write_field(out, "value", record.value());
        match record.timestamp() {
            None => out.extend_from_slice(b",\"timestamp\":null"),
            Some(ms) => {
                // Writing into a Vec cannot fail.
                let _ = write!(out, ",\"timestamp\":{ms}");
            }
        }
        if headers {
            out.extend_from_slice(b",\"headers\":[");
            for (i, (name, value)) in record.headers().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'{');
                write_field(out, "name", name);
                out.push(b',');
                write_field(out, "value", value);
                out.push(b'}');
            }
            out.push(b']');
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Appends `"name":"text"`, or `"name_base64":"…"` when `bytes` is not UTF-8.
fn write_field(out: &mut Vec<u8>, name: &str, bytes: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            out.extend_from_slice(b"\":");
            write_json_string(out, text);
        }
        Err(_) => {
            out.extend_from_slice(b"_base64\":\"");
            write_base64(out, bytes);
            out.push(b'"');
        }
    }
}

/// Appends `s` as a JSON string literal.
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `bytes` in base64 (standard alphabet, padded).
fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let word = u32::from(chunk[0]) << 16
            | u32::from(*chunk.get(1).unwrap_or(&0)) << 8
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(ALPHABET[(word >> (18 - 6 * i) & 0x3f) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

/// Whose fault an I/O error is: a directory that is missing or not granted cannot get better
/// by retrying; anything else (a full disk, a busy device) may.
fn io_error(error: io::Error, action: &str, path: &Path) -> Error {
    let message = format!("cannot {action} {}: {error}", path.display());
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => Error::fatal(format!(
            "{message} (is the directory {OUT_DIR} granted to this plugin?)"
        )),
        _ => Error::retryable(message),
    }
}

impl Sink for JsonlSink {
    fn init(params: &Params) -> Result<Self, String> {
        params.allow_only(&["headers"])?;
        Ok(Self::new(OUT_DIR).with_headers(params.flag("headers")?))
    }

    fn write(&mut self, ctx: &Context, input: &Batch) -> Result<(), Error> {
        self.write_batch(ctx, input)
    }

    fn commit(&mut self, stream: &str, batch_id: u64) -> Result<(), Error> {
        self.commit_batch(stream, batch_id)
    }
}

export_sink!(JsonlSink);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::BatchBuilder;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jsonl-sink-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn records_become_json_lines() {
        let mut b = BatchBuilder::new();
        b.push(b"say \"hi\"\n").key(b"k").timestamp(7);
        b.push(b"\xff\x00a");
        b.push(b"\x01").key(b"\xfe");
        let mut out = Vec::new();
        format_jsonl(&b.finish(), &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"key":"k","value":"say \"hi\"\n","timestamp":7}"#
        );
        let ts = lines[1].rsplit_once(':').unwrap().1;
        assert_eq!(
            lines[1],
            format!(r#"{{"key":null,"value_base64":"/wBh","timestamp":{ts}"#)
        );
        assert!(lines[2].starts_with(r#"{"key_base64":"/g==","value":"\u0001","timestamp":"#));
    }

    #[test]
    fn headers_are_written_only_when_asked_and_keep_every_byte() {
        let mut b = BatchBuilder::new();
        b.push(b"v")
            .header(b"amqp.body-type", b"data")
            .header(b"bin", b"\xff");
        b.push(b"w");
        let batch = b.finish();
        let mut plain = Vec::new();
        format_jsonl(&batch, &mut plain);
        assert!(!String::from_utf8(plain).unwrap().contains("headers"));
        let mut out = Vec::new();
        write_lines(&batch, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with(
                r#","headers":[{"name":"amqp.body-type","value":"data"},{"name":"bin","value_base64":"/w=="}]}"#
            ),
            "{}",
            lines[0]
        );
        assert!(lines[1].ends_with(r#","headers":[]}"#), "{}", lines[1]);
    }

    #[test]
    fn base64_pads_every_length() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            let mut out = Vec::new();
            write_base64(&mut out, input.as_bytes());
            assert_eq!(out, expected.as_bytes());
        }
    }

    #[test]
    fn a_batch_is_visible_only_after_commit_and_a_replay_rewrites_it() {
        let dir = temp_dir("commit");
        let sink = JsonlSink::new(&dir);
        let batch = Batch::from_values(["a", "b"]);
        sink.write_batch(&Context::new("s/1", 0, 5, 0), &batch)
            .unwrap();
        sink.write_batch(&Context::new("s/1", 1, 5, 0), &batch)
            .unwrap();
        sink.write_batch(&Context::new("s/1", 0, 6, 0), &batch)
            .unwrap();
        sink.write_batch(&Context::new("s/1", 2, 5, 0), &Batch::default())
            .unwrap();
        assert_eq!(
            listing(&dir),
            [
                "s_1-5-0.jsonl.tmp",
                "s_1-5-1.jsonl.tmp",
                "s_1-6-0.jsonl.tmp"
            ]
        );

        sink.commit_batch("s/1", 5).unwrap();
        sink.commit_batch("s/1", 5).unwrap();
        assert_eq!(
            listing(&dir),
            ["s_1-5-0.jsonl", "s_1-5-1.jsonl", "s_1-6-0.jsonl.tmp"]
        );

        // A replay of batch 5 with other contents replaces the committed file.
        sink.write_batch(&Context::new("s/1", 0, 5, 0), &Batch::from_values(["c"]))
            .unwrap();
        sink.commit_batch("s/1", 5).unwrap();
        let text = fs::read_to_string(dir.join("s_1-5-0.jsonl")).unwrap();
        assert_eq!(text, "{\"key\":null,\"value\":\"c\",\"timestamp\":null}\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_a_fatal_error() {
        let sink = JsonlSink::new("/nonexistent/sluice-out");
        let err = sink
            .write_batch(&Context::default(), &Batch::from_values(["a"]))
            .unwrap_err();
        assert!(matches!(err, Error::Fatal(m) if m.contains("granted")));
    }
}
