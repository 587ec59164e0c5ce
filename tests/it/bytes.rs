//! Bytes are bytes: values holding every byte value 0-255, invalid UTF-8 (lone continuation
//! bytes, overlong encodings, truncated sequences, surrogates encoded in UTF-8, code points
//! past U+10FFFF), NUL, CR and LF go through each source into every sink format at once
//! (files `lines`, `kv`, `jsonl`, `jsonl` with every field, and stdout), and each output,
//! decoded as the README's "Sink formats" says, is byte-identical to what was sent, in order.
//!
//! What a source's framing cannot carry it is not given, and each test says so: the files and
//! tcp sources cut records at LF and drop a CR just before it (CRLF line ends), so they get
//! the values without LF that do not end in CR. The generator makes its own lines from a seed
//! and cannot be given bytes, so it is not here. AMQP (RabbitMQ, one data section per
//! message) and Event Hubs (the stand-in server) carry any bytes. No source can give a key
//! that is not UTF-8 (an Event Hubs partition key is a string); the unit tests of
//! `sink::format` cover those keys and header names and values.
//!
//! What a format cannot carry (LF in a value, for `lines` and `kv`) must be dead-lettered,
//! naming the sink, with the record's offset, while the rest of the batch is written.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use sluice_tests::eventhubs_server::{Event, FakeEventHubs};
use sluice_tests::*;

use crate::amqp::{broker, rt};
use crate::engine::{
    Ended, Running, accept_sluice, drop_file, files_under, sluice_run, write_pipeline,
};

/// The values every source is offered, each once, in this order.
fn values() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        (0..=255).collect(),
        (0..=255).filter(|&b| b != b'\n').collect(),
    ];
    v.extend((0..=255u8).map(|b| vec![b]));
    let special: [&[u8]; 36] = [
        // Lone continuation bytes.
        b"\x80",
        b"\xbf",
        b"a\x80b",
        b"\x80\x81\x82",
        // Overlong encodings ('/' in two, three and four bytes, NUL in two).
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xf0\x80\x80\xaf",
        b"\xc0\x80",
        b"\xc1\xbf",
        // Truncated sequences.
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9f\x98",
        b"ab\xe2\x82",
        b"\xe2\x82cd",
        // Surrogates encoded in UTF-8, alone and as a pair (CESU-8).
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xed\xa0\xbd\xed\xb8\x80",
        // Past U+10FFFF, and bytes UTF-8 never has.
        b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80",
        b"\xfe\xff",
        b"\xff\xfe\x00\x00",
        // NUL, CR and LF inside values.
        b"a\x00b",
        b"\x00\x00",
        b"a\rb",
        b"a\nb",
        b"a\r\nb",
        b"\n\n",
        b"ends in CR\r",
        b"\rstarts with CR",
        b"\xff\n\xfe",
        // Valid UTF-8 that JSON escapes, or that looks like an escape.
        "h\u{e9}llo w\u{f6}rld \u{1f600} \u{2028} \u{feff}".as_bytes(),
        br#"quote " backslash \ slash / \u0041 \ufffd"#,
        b"\t\x7f\x1b[0m\x08\x0c",
        "\u{fffd} a real replacement character".as_bytes(),
        b"{\"value\":\"not a record\"}",
        b"",
    ];
    v.extend(special.iter().map(|s| s.to_vec()));
    v
}

/// Whether line framing (records cut at LF, a CR just before it dropped) carries `value`.
fn line_framed(value: &[u8]) -> bool {
    !value.contains(&b'\n') && value.last() != Some(&b'\r')
}

/// What went into a source, record by record.
struct Sent {
    values: Vec<Vec<u8>>,
    /// The key each record must come out with.
    keys: Vec<Option<Vec<u8>>>,
    /// A header value each record must carry (its message id), if any.
    header: Vec<Option<Vec<u8>>>,
}

impl Sent {
    fn plain(values: Vec<Vec<u8>>) -> Sent {
        let n = values.len();
        Sent {
            values,
            keys: vec![None; n],
            header: vec![None; n],
        }
    }

    /// The values a line-per-record format must refuse, with their index.
    fn with_lf(&self) -> Vec<(u64, Vec<u8>)> {
        (0..)
            .zip(&self.values)
            .filter(|(_, v)| v.contains(&b'\n'))
            .map(|(i, v)| (i, v.clone()))
            .collect()
    }

    fn without_lf(&self) -> Vec<Vec<u8>> {
        let values = self.values.iter();
        values.filter(|v| !v.contains(&b'\n')).cloned().collect()
    }
}

/// A pipeline from `source` (its whole `[source]` table, and any transform) into every sink
/// format: stdout first (so that it has printed a batch before the files sinks commit it).
fn pipeline(source: &str, stdout: &str) -> String {
    let mut text = format!(
        r#"version = 1
batch-interval = "300ms"
block-interval = "100ms"

{source}

[[sink]]
kind = "stdout"
format = "{stdout}"
"#
    );
    for (path, format) in [
        ("out-lines", "lines"),
        ("out-kv", "kv"),
        ("out-jsonl", "jsonl"),
    ] {
        text +=
            &format!("\n[[sink]]\nkind = \"files\"\npath = \"{path}\"\nformat = \"{format}\"\n");
    }
    text + "\n[[sink]]\nkind = \"files\"\npath = \"out-all\"\nformat = \"jsonl\"\n\
            fields = [\"headers\", \"timestamp\", \"value\", \"key\"]\n"
}

/// Every committed part of a files sink's `input` stream, batches in order, concatenated.
fn committed_bytes(out: &Path) -> Vec<u8> {
    let mut parts: Vec<_> = files_under(&out.join("input"))
        .into_iter()
        .filter(|p| !p.parent().is_some_and(|d| d.ends_with("_commits")))
        .collect();
    parts.sort();
    parts
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Records of a line-per-record output: every one ends with LF.
fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.is_empty() {
        return Vec::new();
    }
    assert_eq!(bytes.last(), Some(&b'\n'), "the last record ends with LF");
    let body = &bytes[..bytes.len() - 1];
    body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

/// `kv`: the key, up to the first TAB, and the value.
fn split_kv(line: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let tab = line
        .iter()
        .position(|&b| b == b'\t')
        .expect("a TAB in every kv line");
    (line[..tab].to_vec(), line[tab + 1..].to_vec())
}

/// `obj[name]` as UTF-8 bytes, or `obj[name_base64]` decoded; `None` when `obj[name]` is
/// `null`.
fn field(obj: &Value, name: &str) -> Option<Vec<u8>> {
    let b64 = obj.get(format!("{name}_base64"));
    match (obj.get(name), b64) {
        (Some(Value::String(s)), None) => Some(s.as_bytes().to_vec()),
        (Some(Value::Null), None) => None,
        (None, Some(Value::String(b))) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_else(|e| panic!("{name}_base64 in {obj}: {e}")),
        ),
        _ => panic!("exactly one of `{name}` and `{name}_base64` in {obj}"),
    }
}

/// A `jsonl` output's records, parsed.
fn json_records(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).expect("jsonl output is UTF-8");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn values_of(records: &[Value]) -> Vec<Vec<u8>> {
    records.iter().map(|r| field(r, "value").unwrap()).collect()
}

/// The dead letters of the run in `dir`, by the sink that refused them: (offset, value).
fn refused_by_sink(dir: &Path) -> BTreeMap<String, Vec<(u64, Vec<u8>)>> {
    let mut by_sink: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for path in files_under(&dir.join("dead-letters").join("input")) {
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let l: Value = serde_json::from_str(line).unwrap();
            assert_eq!(l["failure"], "unwritable", "{l}");
            let reason = l["reason"].as_str().unwrap();
            assert!(
                reason.contains("cannot write record") && reason.contains("line feed"),
                "{l}"
            );
            let sink = l["sink"].as_str().unwrap().to_owned();
            assert!(reason.contains(&sink), "the reason names the sink: {l}");
            let offset = l["offset"].as_u64().unwrap();
            by_sink
                .entry(sink)
                .or_default()
                .push((offset, field(&l, "value").unwrap()));
        }
    }
    for letters in by_sink.values_mut() {
        letters.sort();
    }
    by_sink
}

/// How many dead letters the run in `dir` has written so far.
fn dead_letter_count(dir: &Path) -> usize {
    let files = files_under(&dir.join("dead-letters").join("input"));
    let lines = |p: &std::path::PathBuf| std::fs::read_to_string(p).unwrap().lines().count();
    files.iter().map(lines).sum()
}

/// Whether every files sink has committed all of `sent` (the jsonl one holds every record)
/// and every refusal is dead-lettered.
fn all_out(dir: &Path, sent: &Sent, stdout: &str) -> bool {
    let refusing = if stdout == "jsonl" { 2 } else { 3 };
    split_lines(&committed_bytes(&dir.join("out-all"))).len() >= sent.values.len()
        && dead_letter_count(dir) >= refusing * sent.with_lf().len()
}

/// Checks every output of the run in `dir` against `sent`.
fn check_outputs(dir: &Path, run: &Ended, sent: &Sent, stdout: &str) {
    let exact = &sent.values;
    let no_lf = sent.without_lf();
    let lines = split_lines(&committed_bytes(&dir.join("out-lines")));
    assert!(
        lines == no_lf,
        "files lines: every value without LF, exactly"
    );
    let kv: Vec<_> = split_lines(&committed_bytes(&dir.join("out-kv")))
        .iter()
        .map(|l| split_kv(l))
        .collect();
    let kv_values: Vec<_> = kv.iter().map(|(_, v)| v.clone()).collect();
    assert!(
        kv_values == no_lf,
        "files kv: every value without LF, exactly"
    );
    let kv_keys: Vec<_> = kv.iter().map(|(k, _)| k.clone()).collect();
    let want_keys: Vec<_> = (sent.keys.iter().zip(exact))
        .filter(|(_, v)| !v.contains(&b'\n'))
        .map(|(k, _)| k.clone().unwrap_or_default())
        .collect();
    assert_eq!(kv_keys, want_keys, "files kv: the keys");
    let jsonl = json_records(&committed_bytes(&dir.join("out-jsonl")));
    assert!(
        values_of(&jsonl) == *exact,
        "files jsonl: every value, exactly"
    );
    let keys: Vec<_> = jsonl.iter().map(|r| field(r, "key")).collect();
    assert_eq!(keys, sent.keys, "files jsonl: the keys");
    let every_field = committed_bytes(&dir.join("out-all"));
    check_every_field(&json_records(&every_field), sent);
    check_field_order(&every_field);
    let printed = &run.stdout_bytes;
    match stdout {
        "lines" => assert!(split_lines(printed) == no_lf, "stdout lines"),
        "kv" => {
            let values: Vec<_> = split_lines(printed).iter().map(|l| split_kv(l).1).collect();
            assert!(values == no_lf, "stdout kv");
        }
        _ => assert!(values_of(&json_records(printed)) == *exact, "stdout jsonl"),
    }
    check_dead_letters(dir, sent, stdout);
}

/// `fields = [every field]`: value, key, a timestamp, and the headers the record has.
fn check_every_field(records: &[Value], sent: &Sent) {
    assert!(
        values_of(records) == sent.values,
        "files jsonl, every field: every value"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(field(r, "key"), sent.keys[i], "{r}");
        assert!(r["timestamp"].is_i64(), "{r}");
        let headers: Vec<(Vec<u8>, Vec<u8>)> = r["headers"]
            .as_array()
            .unwrap_or_else(|| panic!("a headers list in {r}"))
            .iter()
            .map(|h| (field(h, "name").unwrap(), field(h, "value").unwrap()))
            .collect();
        if let Some(id) = &sent.header[i] {
            assert!(
                headers.iter().any(|(_, v)| v == id),
                "its id among the headers of {r}"
            );
        }
        assert_eq!(r.as_object().unwrap().len(), 4, "{r}");
    }
}

/// The fields come in the documented order, whatever the order of `fields`.
fn check_field_order(bytes: &[u8]) {
    for line in std::str::from_utf8(bytes).unwrap().lines() {
        let key = line.find("\"key").unwrap();
        let value = line.find("\"value").unwrap();
        let timestamp = line.find("\"timestamp\":").unwrap();
        let headers = line.find("\"headers\":[").unwrap();
        assert!(
            key == 1 && key < value && value < timestamp && timestamp < headers,
            "{line}"
        );
    }
}

/// Each line-per-record sink dead-lettered exactly the values with LF, at their offsets.
fn check_dead_letters(dir: &Path, sent: &Sent, stdout: &str) {
    let by_sink = refused_by_sink(dir);
    let with_lf = sent.with_lf();
    assert!(!with_lf.is_empty() || by_sink.is_empty());
    let mut sinks: Vec<&String> = by_sink.keys().collect();
    sinks.sort();
    let named = |part: &str| {
        by_sink
            .iter()
            .find(|(s, _)| s.contains(part))
            .map(|(_, l)| l)
    };
    for part in ["out-lines", "out-kv"] {
        if !with_lf.is_empty() {
            assert!(
                named(part) == Some(&with_lf),
                "{part} refused exactly the values with LF"
            );
        }
    }
    let stdout_refuses = stdout != "jsonl" && !with_lf.is_empty();
    assert_eq!(
        named("stdout") == Some(&with_lf),
        stdout_refuses,
        "stdout: {sinks:?}"
    );
    let expected = 2 + usize::from(stdout_refuses);
    assert_eq!(
        by_sink.len(),
        if with_lf.is_empty() { 0 } else { expected },
        "{sinks:?}"
    );
}

#[test]
fn every_byte_read_from_files_comes_out_of_every_format_as_sent() {
    let tmp = tempfile::tempdir().unwrap();
    // Line framing: no LF, no CR at the end (it would read as a CRLF line end).
    let sent = Sent::plain(values().into_iter().filter(|v| line_framed(v)).collect());
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let mut file: Vec<u8> = sent.values.join(&b'\n');
    file.push(b'\n');
    drop_file(&input, "values.txt", &file);
    let source =
        "[source]\nkind = \"files\"\npath = \"in\"\n\n[[transform]]\nplugin = \"identity\"";
    let p = write_pipeline(tmp.path(), &pipeline(source, "lines"));
    let mut sluice = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    sluice.wait_for("every record", Duration::from_secs(60), || {
        all_out(tmp.path(), &sent, "lines")
    });
    sluice.interrupt();
    let run = sluice.wait(Duration::from_secs(30));
    run.assert_success();
    check_outputs(tmp.path(), &run, &sent, "lines");
}

#[test]
fn every_byte_sent_over_tcp_comes_out_of_every_format_as_sent() {
    let tmp = tempfile::tempdir().unwrap();
    // Line framing, as for files.
    let sent = Sent::plain(values().into_iter().filter(|v| line_framed(v)).collect());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let source = format!(
        "[source]\nkind = \"tcp\"\naddress = \"{address}\"\nend-on-close = true\n\n\
         [[transform]]\nplugin = \"identity\""
    );
    let p = write_pipeline(tmp.path(), &pipeline(&source, "kv"));
    let mut sluice = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    let mut peer = accept_sluice(&listener, &mut sluice);
    let mut bytes: Vec<u8> = sent.values.join(&b'\n');
    bytes.push(b'\n');
    std::io::Write::write_all(&mut peer, &bytes).unwrap();
    drop(peer);
    let run = sluice.wait(Duration::from_secs(60));
    run.assert_success();
    check_outputs(tmp.path(), &run, &sent, "kv");
}

#[test]
fn every_byte_published_over_amqp_comes_out_of_every_format_as_sent() {
    let Some(_turn) = broker("every_byte_published_over_amqp_comes_out_of_every_format_as_sent")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let queue = fresh_queue("bytes");
    // A message carries any bytes: every value, LF and a final CR included.
    let values = values();
    let ids: Vec<String> = (0..values.len()).map(|i| format!("bytes-{i:04}")).collect();
    let messages: Vec<(String, Vec<u8>)> = ids.iter().cloned().zip(values.clone()).collect();
    rt().block_on(publish(&queue, &messages));
    let sent = Sent {
        keys: vec![None; values.len()],
        header: ids.into_iter().map(|id| Some(id.into_bytes())).collect(),
        values,
    };
    let source = format!(
        "[source]\nkind = \"amqp\"\nurl = \"{}\"\nqueues = [\"{queue}\"]\ncredit = 100",
        amqp_url()
    );
    let p = write_pipeline(tmp.path(), &pipeline(&source, "jsonl"));
    let mut sluice = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    sluice.wait_for("every message", Duration::from_secs(60), || {
        all_out(tmp.path(), &sent, "jsonl")
    });
    sluice.interrupt();
    let run = sluice.wait(Duration::from_secs(30));
    run.assert_success();
    check_outputs(tmp.path(), &run, &sent, "jsonl");
}

#[test]
fn every_byte_read_from_event_hubs_comes_out_of_every_format_as_sent() {
    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";
    let tmp = tempfile::tempdir().unwrap();
    // An event carries any bytes: every value, LF and a final CR included.
    let values = values();
    let keys: Vec<Option<Vec<u8>>> = (0..values.len())
        .map(|i| (i % 3 != 0).then(|| format!("pk-{}", i % 5).into_bytes()))
        .collect();
    let events: Vec<Event> = (values.iter().zip(&keys).enumerate())
        .map(|(i, (v, k))| Event {
            body: v.clone(),
            partition_key: k.as_ref().map(|k| String::from_utf8(k.clone()).unwrap()),
            enqueued_ms: 1_700_000_000_000 + i as i64,
        })
        .collect();
    let hub = FakeEventHubs::start("hub1", "listen", KEY, vec![events]);
    let header = keys.clone();
    let sent = Sent {
        values,
        keys,
        header,
    };
    let source = format!(
        "[source]\nkind = \"eventhubs\"\nconnection-string = \"{}\"\npartitions = 1\n\
         checkpoint-dir = \"ckpt\"",
        hub.connection_string(KEY)
    );
    let p = write_pipeline(tmp.path(), &pipeline(&source, "jsonl"));
    let mut sluice = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    sluice.wait_for("every event", Duration::from_secs(60), || {
        all_out(tmp.path(), &sent, "jsonl")
    });
    sluice.interrupt();
    let run = sluice.wait(Duration::from_secs(30));
    run.assert_success();
    check_outputs(tmp.path(), &run, &sent, "jsonl");
}
