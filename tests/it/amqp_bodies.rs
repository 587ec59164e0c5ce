//! AMQP bodies and properties end to end: `amqp_bodies.py` publishes one message of every
//! body kind with python-qpid-proton (an AMQP 1.0 client independent of sluice's fe2o3-amqp)
//! to RabbitMQ, sluice takes them in through the `amqp` source, and `jsonl-sink` with
//! `headers = "true"` writes each record's value and headers; every record must be what the
//! README's "AMQP messages as records" says, value and headers exactly.
//!
//! RabbitMQ 3.10 changes three bodies on the way (its AMQP 1.0 plugin): it delivers several
//! body sections in reverse order and a bodiless message with an empty data section, and it
//! drops the connection on an amqp-value list of more than one element. So those cases
//! accept the broker's version too; `receiver::amqp::body`'s unit tests decode proton's own
//! bytes for them, unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use sluice_tests::*;

use crate::amqp::broker;
use crate::engine::{Running, files_under, sluice_run, write_pipeline};

const UUID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// The venv's python that has python-qpid-proton (`scripts/services start` makes it):
/// `$SLUICE_PROTON_PYTHON`, else `~/.cache/sluice/proton-venv/bin/python`. `None`: skipped,
/// loudly, unless `SLUICE_SERVICES=1`, which makes it a failure.
fn proton_python(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("SLUICE_PROTON_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap())
                .join(".cache/sluice/proton-venv/bin/python")
        });
    let ok = std::process::Command::new(&python)
        .args(["-c", "import proton"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !services_required(),
            "{test}: SLUICE_SERVICES=1 but {} cannot import proton; run scripts/services start",
            python.display()
        );
        eprintln!(
            "\n!!! SKIPPED {test}: {} cannot import proton (scripts/services start installs it) !!!\n",
            python.display()
        );
        return None;
    }
    Some(python)
}

/// A record as jsonl-sink wrote it: value and headers, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp: Option<i64>,
}

/// `"<name>"` or `"<name>_base64"` of a jsonl-sink object, as bytes.
fn bytes_field(o: &serde_json::Value, name: &str) -> Vec<u8> {
    if let Some(s) = o[name].as_str() {
        return s.as_bytes().to_vec();
    }
    let b64 = o[format!("{name}_base64")]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {o}"));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn parse(line: &str) -> Record {
    let o: serde_json::Value = serde_json::from_str(line).unwrap();
    let headers = o["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no headers in {line}"))
        .iter()
        .map(|h| {
            (
                String::from_utf8(bytes_field(h, "name")).unwrap(),
                bytes_field(h, "value"),
            )
        })
        .collect();
    Record {
        value: bytes_field(&o, "value"),
        headers,
        timestamp: o["timestamp"].as_i64(),
    }
}

/// Every committed line under `out`, as records by their `amqp.app.case` header.
fn records_by_case(out: &std::path::Path) -> BTreeMap<String, Vec<Record>> {
    let mut by_case: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for path in files_under(out) {
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let r = parse(line);
            let case = r
                .headers
                .iter()
                .find(|(n, _)| n == "amqp.app.case")
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
                .unwrap_or_else(|| panic!("a record without amqp.app.case: {line}"));
            by_case.entry(case).or_default().push(r);
        }
    }
    by_case
}

fn h(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
        .collect()
}

/// A case whose only headers are the body type and the case name.
fn plain(case: &'static str, value: &[u8], body_type: &str) -> (&'static str, Vec<Record>) {
    (case, vec![plain_record(case, value, body_type)])
}

fn plain_record(case: &str, value: &[u8], body_type: &str) -> Record {
    Record {
        value: value.to_vec(),
        headers: h(&[
            ("amqp.body-type", body_type.as_bytes()),
            ("amqp.app.case", case.as_bytes()),
        ]),
        timestamp: None,
    }
}

/// Each case and the records it may arrive as (more than one where RabbitMQ 3.10 rewrites
/// the body; see the module doc). Timestamps are compared only where the message has a
/// creation time.
fn expected() -> Vec<(&'static str, Vec<Record>)> {
    let v = |case: &'static str, json: &str, t: &str| plain(case, json.as_bytes(), t);
    let mut cases = vec![
        plain("data-one", b"\x00\xffhi\n", "data"),
        (
            "data-several",
            vec![
                plain_record("data-several", b"abc\xff", "data"),
                plain_record("data-several", b"c\xffab", "data"),
            ],
        ),
        v("value-string", "h\u{e9}llo \"q\"", "amqp-value:string"),
        plain("value-binary", b"\x01\x02\xff", "amqp-value:binary"),
        v("value-symbol", "a-symbol", "amqp-value:symbol"),
        v("value-null", "null", "amqp-value:null"),
        v("value-boolean", "true", "amqp-value:boolean"),
        v("value-ubyte", "255", "amqp-value:ubyte"),
        v("value-ushort", "65535", "amqp-value:ushort"),
        v("value-uint", "4294967295", "amqp-value:uint"),
        v("value-ulong", "18446744073709551615", "amqp-value:ulong"),
        v("value-byte", "-128", "amqp-value:byte"),
        v("value-short", "-32768", "amqp-value:short"),
        v("value-int", "-2147483648", "amqp-value:int"),
        v("value-long", "-9223372036854775808", "amqp-value:long"),
        v("value-float", "1.5", "amqp-value:float"),
        v("value-double", "0.1", "amqp-value:double"),
        v("value-double-whole", "2.0", "amqp-value:double"),
        v(
            "value-double-nan",
            r#"{"$double":"NaN"}"#,
            "amqp-value:double",
        ),
        v(
            "value-float-inf",
            r#"{"$float":"-Infinity"}"#,
            "amqp-value:float",
        ),
        v(
            "value-decimal32",
            r#"{"$decimal32":"15E-1"}"#,
            "amqp-value:decimal32",
        ),
        v(
            "value-decimal64",
            r#"{"$decimal64":"-12345E-2"}"#,
            "amqp-value:decimal64",
        ),
        v(
            "value-decimal128",
            r#"{"$decimal128":"7E3"}"#,
            "amqp-value:decimal128",
        ),
        v("value-char", r#"{"$char":"€"}"#, "amqp-value:char"),
        v(
            "value-timestamp",
            r#"{"$timestamp":1700000000123}"#,
            "amqp-value:timestamp",
        ),
        v(
            "value-uuid",
            &format!(r#"{{"$uuid":"{UUID}"}}"#),
            "amqp-value:uuid",
        ),
        v(
            "value-list",
            r#"[[1,"a",null,true,[{"$symbol":"s"}],{"k":{"$binary":"AA=="}},2.0]]"#,
            "amqp-value:list",
        ),
        v(
            "value-map",
            r#"{"a":1,"$$b":"x","n":null}"#,
            "amqp-value:map",
        ),
        v(
            "value-map-keys",
            r#"{"$map":[[1,"one"],[{"$symbol":"s"},2.5]]}"#,
            "amqp-value:map",
        ),
        v("value-array", r#"{"$array":[1,2,3]}"#, "amqp-value:array"),
        v(
            "value-described",
            r#"{"$described":[{"$symbol":"com.example:point"},[1,2]]}"#,
            "amqp-value:described",
        ),
        v(
            "value-described-code",
            r#"{"$described":[4660,"x"]}"#,
            "amqp-value:described",
        ),
        v(
            "sequence-one",
            r#"[1,"two",{"$binary":"Aw=="}]"#,
            "amqp-sequence",
        ),
        (
            "sequence-several",
            vec![
                plain_record("sequence-several", br#"[1,"b",null]"#, "amqp-sequence"),
                plain_record("sequence-several", br#"["b",null,1]"#, "amqp-sequence"),
            ],
        ),
        (
            "none",
            vec![
                plain_record("none", b"", "none"),
                plain_record("none", b"", "data"),
            ],
        ),
    ];
    cases.extend(with_properties());
    cases
}

/// The cases that carry properties and application properties.
fn with_properties() -> Vec<(&'static str, Vec<Record>)> {
    let uuid = UUID.as_bytes();
    let properties = Record {
        value: b"p".to_vec(),
        headers: h(&[
            ("amqp.body-type", b"data"),
            ("amqp.message-id", b"42"),
            ("amqp.message-id-type", b"ulong"),
            ("amqp.user-id", b"guest"),
            ("amqp.to", b"/queue/elsewhere"),
            ("amqp.subject", b"the subject"),
            ("amqp.reply-to", b"/queue/replies"),
            ("amqp.correlation-id", uuid),
            ("amqp.correlation-id-type", b"uuid"),
            ("amqp.content-type", b"text/plain"),
            ("amqp.content-encoding", b"gzip"),
            ("amqp.absolute-expiry-time", b"1800000000000"),
            ("amqp.creation-time", b"1700000000500"),
            ("amqp.group-id", b"g1"),
            ("amqp.group-sequence", b"7"),
            ("amqp.reply-to-group-id", b"rg"),
            ("amqp.app.case", b"properties"),
        ]),
        timestamp: Some(1_700_000_000_500),
    };
    let uuid_json = format!(r#"{{"$uuid":"{UUID}"}}"#);
    let app = Record {
        value: b"a".to_vec(),
        headers: h(&[
            ("amqp.body-type", b"data"),
            ("amqp.message-id", b"42"),
            ("amqp.correlation-id", b"\x01\xfe"),
            ("amqp.correlation-id-type", b"binary"),
            ("amqp.app.case", b"app-properties"),
            ("amqp.app.s", b"text"),
            ("amqp.app.i", b"-7"),
            ("amqp.app-type.i", b"int"),
            ("amqp.app.l", b"9"),
            ("amqp.app-type.l", b"long"),
            ("amqp.app.b", b"false"),
            ("amqp.app-type.b", b"boolean"),
            ("amqp.app.d", b"0.25"),
            ("amqp.app-type.d", b"double"),
            ("amqp.app.bin", b"\xff\x00"),
            ("amqp.app-type.bin", b"binary"),
            ("amqp.app.sym", b"sy"),
            ("amqp.app-type.sym", b"symbol"),
            ("amqp.app.u", uuid_json.as_bytes()),
            ("amqp.app-type.u", b"uuid"),
            ("amqp.app.nul", b""),
            ("amqp.app-type.nul", b"null"),
            ("amqp.app.ts", br#"{"$timestamp":5}"#),
            ("amqp.app-type.ts", b"timestamp"),
        ]),
        timestamp: None,
    };
    let id_uuid = Record {
        value: b"u".to_vec(),
        headers: h(&[
            ("amqp.body-type", b"data"),
            ("amqp.message-id", uuid),
            ("amqp.message-id-type", b"uuid"),
            ("amqp.correlation-id", b"c-1"),
            ("amqp.app.case", b"id-uuid"),
        ]),
        timestamp: None,
    };
    let id_binary = Record {
        value: b"b".to_vec(),
        headers: h(&[
            ("amqp.body-type", b"data"),
            ("amqp.message-id", b"\x00\xff"),
            ("amqp.message-id-type", b"binary"),
            ("amqp.correlation-id", b"7"),
            ("amqp.correlation-id-type", b"ulong"),
            ("amqp.app.case", b"id-binary"),
        ]),
        timestamp: None,
    };
    vec![
        ("properties", vec![properties]),
        ("app-properties", vec![app]),
        ("id-uuid", vec![id_uuid]),
        ("id-binary", vec![id_binary]),
    ]
}

/// Runs `amqp_bodies.py` (with `args`) to publish to `queue`; returns how many it published.
fn publish_with_proton(python: &std::path::Path, queue: &str, args: &[&str]) -> usize {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("it/amqp_bodies.py");
    let published = std::process::Command::new(python)
        .arg(&script)
        .args([amqp_url().as_str(), queue])
        .args(args)
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "amqp_bodies.py: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    String::from_utf8_lossy(&published.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn every_amqp_body_kind_and_property_from_an_independent_client_arrives_as_documented() {
    const TEST: &str =
        "every_amqp_body_kind_and_property_from_an_independent_client_arrives_as_documented";
    let Some(_turn) = broker(TEST) else {
        return;
    };
    let Some(python) = proton_python(TEST) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let queue = fresh_queue("bodies");
    let n = publish_with_proton(&python, &queue, &[]);
    let expected = expected();
    assert_eq!(
        n,
        expected.len(),
        "the script publishes one message per case"
    );

    let pipeline = write_pipeline(
        tmp.path(),
        &format!(
            r#"version = 1
batch-interval = "300ms"
block-interval = "100ms"

[source]
kind = "amqp"
url = "{}"
queues = ["{queue}"]

[[sink]]
kind = "plugin"
plugin = "jsonl-sink"
params = {{ headers = "true" }}

[grants.jsonl-sink]
dirs = {{ "/out" = "out" }}
"#,
            amqp_url()
        ),
    );
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut sluice = Running::start(sluice_run(tmp.path(), &pipeline, &plugins_dir()));
    sluice.wait_for("every message", Duration::from_secs(60), || {
        records_by_case(&out).values().map(Vec::len).sum::<usize>() >= n
    });
    sluice.interrupt();
    sluice.wait(Duration::from_secs(30)).assert_success();

    let mut got = records_by_case(&out);
    for (case, alternatives) in expected {
        let records = got
            .remove(case)
            .unwrap_or_else(|| panic!("no record for case {case}"));
        assert_eq!(records.len(), 1, "case {case}: {records:?}");
        let mut record = records[0].clone();
        if alternatives[0].timestamp.is_none() {
            record.timestamp = None;
        }
        assert!(
            alternatives.contains(&record),
            "case {case}: got\n{record:?}\nexpected one of\n{alternatives:?}"
        );
    }
    assert!(got.is_empty(), "records of no case: {got:?}");
}

#[test]
fn a_message_the_decoder_cannot_read_is_rejected_with_an_error_naming_it_and_the_stream_goes_on() {
    const TEST: &str = "a_message_the_decoder_cannot_read_is_rejected_with_an_error_naming_it_and_the_stream_goes_on";
    let Some(_turn) = broker(TEST) else {
        return;
    };
    let Some(python) = proton_python(TEST) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let queue = fresh_queue("undecodable");
    assert_eq!(publish_with_proton(&python, &queue, &["--undecodable"]), 3);
    let pipeline = write_pipeline(
        tmp.path(),
        &format!(
            r#"version = 1
batch-interval = "300ms"
block-interval = "100ms"

[source]
kind = "amqp"
url = "{}"
queues = ["{queue}"]
wal = true

[[sink]]
kind = "files"
path = "out"
format = "lines"
"#,
            amqp_url()
        ),
    );
    let out = tmp.path().join("out");
    let mut sluice = Running::start(sluice_run(tmp.path(), &pipeline, &plugins_dir()));
    let lines = || -> Vec<String> { crate::kill::output_now(&out) };
    sluice.wait_for(
        "the message after the undecodable one",
        Duration::from_secs(60),
        || lines().iter().any(|l| l == "after"),
    );
    // A second of running: a receiver that took the message as a link failure would restart
    // on it again and again.
    std::thread::sleep(Duration::from_secs(1));
    sluice.interrupt();
    let ended = sluice.wait(Duration::from_secs(30));
    ended.assert_success();
    assert_eq!(
        lines(),
        ["before", "after"],
        "the two decodable messages, once each"
    );
    let errors: Vec<&str> = (ended.stderr.lines())
        .filter(|l| l.contains("could not be decoded"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one error for the one message:\n{}",
        ended.stderr
    );
    assert!(
        errors[0].contains(&queue) && errors[0].contains("delivery_id"),
        "the error names the queue and the delivery: {}",
        errors[0]
    );
    assert!(
        !ended.stderr.contains("The receiver failed"),
        "the receiver did not restart:\n{}",
        ended.stderr
    );
    let left = sluice_tests::rabbitmqctl(&["list_queues", "name", "messages"]);
    let listing = String::from_utf8_lossy(&left.stdout);
    let row = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(queue.rsplit('/').next().unwrap()))
        .unwrap_or_else(|| panic!("queue {queue} in:\n{listing}"));
    assert!(
        row.ends_with("\t0") || row.split_whitespace().nth(1) == Some("0"),
        "the rejected message left the queue: {row}"
    );
}
