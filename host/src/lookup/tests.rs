//! The lookup join on blocks: inner and left, key field and record key, values that are not
//! JSON objects, and reloading.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

fn config(table: &str, extra: &[(&str, &str)]) -> LookupConfig {
    let mut text = format!(
        "version = 1\n[source]\nkind = \"generator\"\n[[sink]]\nkind = \"stdout\"\n[[transform]]\nbuiltin = \"lookup\"\ntable = {table:?}\ntable-key = \"id\"\n"
    );
    for (k, v) in extra {
        text.push_str(&format!("{k} = {v:?}\n"));
    }
    let file = crate::config::PipelineFile::parse(&text, Path::new("p.toml")).unwrap();
    match file.steps().remove(0) {
        crate::config::Step::Lookup(c) => *c,
        other => panic!("{other:?}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const CUSTOMERS: &str = "id,name,tier\n1,Ann,gold\n2,\"Bo, Jr\",silver\n";

/// A lookup on `customers.csv` in a temporary directory, with `extra` keys.
fn lookup(dir: &Path, extra: &[(&str, &str)]) -> Lookup {
    std::fs::write(dir.join("customers.csv"), CUSTOMERS).unwrap();
    let rt = runtime();
    Lookup::start(&config("customers.csv", extra), dir, rt.handle()).unwrap()
}

fn values(batch: &RecordBatch) -> Vec<Value> {
    (0..batch.len())
        .map(|i| serde_json::from_slice(batch.value(i)).unwrap())
        .collect()
}

fn keyed(records: &[(Option<&str>, &str)]) -> RecordBatch {
    let mut b = RecordBatch::default();
    for (i, (k, v)) in records.iter().enumerate() {
        b.push(k.map(str::as_bytes), v.as_bytes(), Some(100 + i as i64));
    }
    b
}

#[test]
fn an_inner_join_on_a_key_field_adds_the_row_and_drops_records_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let l = lookup(tmp.path(), &[("key-field", "customer")]);
    let mut input = keyed(&[
        (Some("k0"), r#"{"customer":"1","amount":5}"#),
        (None, r#"{"customer":"9","amount":6}"#),
        (None, r#"{"amount":7}"#),
        (Some("k3"), r#" {"customer":2} "#),
        (None, "not json"),
    ]);
    let h = |i: usize| vec![(b"h".to_vec(), format!("header {i}").into_bytes())];
    let mut with_headers = RecordBatch::default();
    for i in 0..input.len() {
        let headers = h(i);
        let pairs: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        with_headers.push_with_headers(input.key(i), input.value(i), input.timestamp(i), &pairs);
    }
    input = with_headers;
    let (out, origins) = l.join(&l.table(), &input);
    for (j, &i) in origins.iter().enumerate() {
        let got: Vec<_> = out
            .headers_of(j)
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(got, h(i as usize), "headers go with their record");
    }
    assert_eq!(
        origins,
        [0, 3],
        "record i of the output came from input origins[i]"
    );
    assert_eq!(
        values(&out),
        [
            json!({"customer":"1","amount":5,"customers":{"id":"1","name":"Ann","tier":"gold"}}),
            json!({"customer":2,"customers":{"id":"2","name":"Bo, Jr","tier":"silver"}}),
        ]
    );
    assert_eq!(out.key(0), Some(&b"k0"[..]));
    assert_eq!(out.key(1), Some(&b"k3"[..]));
    assert_eq!(
        out.timestamps,
        [100, 103],
        "timestamps go with their record"
    );
}

#[test]
fn a_left_join_keeps_every_record_with_null_for_no_row() {
    let tmp = tempfile::tempdir().unwrap();
    let l = lookup(
        tmp.path(),
        &[("key-field", "customer"), ("join", "left"), ("into", "c")],
    );
    let input = keyed(&[
        (None, r#"{"customer":"9"}"#),
        (None, r#"{"customer":"1"}"#),
        (None, "{}"),
        (None, "[1,2]"),
    ]);
    let (out, origins) = l.join(&l.table(), &input);
    assert!(
        origins.is_empty(),
        "a left join outputs every record: a map"
    );
    assert_eq!(
        values(&out),
        [
            json!({"customer":"9","c":null}),
            json!({"customer":"1","c":{"id":"1","name":"Ann","tier":"gold"}}),
            json!({"c":null}),
            json!({"value":"[1,2]","c":null}),
        ]
    );
}

#[test]
fn without_key_field_the_record_key_joins_and_a_plain_value_is_wrapped() {
    let tmp = tempfile::tempdir().unwrap();
    let l = lookup(tmp.path(), &[("join", "left")]);
    let mut input = keyed(&[
        (Some("2"), "hello \"you\""),
        (Some("1"), r#"{"customer":"2","x":1}"#),
        (None, r#"{"customer":"1"}"#),
    ]);
    input.push(Some(b"1"), b"\xff\x00", None);
    let (out, _) = l.join(&l.table(), &input);
    let ann = json!({"id":"1","name":"Ann","tier":"gold"});
    assert_eq!(
        values(&out),
        [
            json!({"value":"hello \"you\"","customers":{"id":"2","name":"Bo, Jr","tier":"silver"}}),
            json!({"customer":"2","x":1,"customers":ann}),
            json!({"customer":"1","customers":null}),
            json!({"value_base64":"/wA=","customers":ann}),
        ]
    );
}

#[test]
fn a_member_already_named_into_is_replaced_by_the_row() {
    let tmp = tempfile::tempdir().unwrap();
    let l = lookup(
        tmp.path(),
        &[("key-field", "customer"), ("into", "customer")],
    );
    let (out, _) = l.join(&l.table(), &keyed(&[(None, r#"{"customer":"1","n":1}"#)]));
    assert_eq!(
        values(&out),
        [json!({"customer":{"id":"1","name":"Ann","tier":"gold"},"n":1})]
    );
}

#[test]
fn a_missing_or_malformed_table_is_refused_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let err = Lookup::start(&config("nope.csv", &[]), tmp.path(), rt.handle()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("nope.csv") && msg.contains("cannot be read"),
        "{msg}"
    );
    std::fs::write(tmp.path().join("bad.jsonl"), "{\"id\":1}\n{\"id\":2,\n").unwrap();
    let msg = Lookup::start(&config("bad.jsonl", &[]), tmp.path(), rt.handle())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("bad.jsonl") && msg.contains("line 2: not a JSON object"),
        "{msg}"
    );
}

/// Waits up to 5 s for `f` to hold.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_changed_table_is_reloaded_and_a_pinned_version_stays_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let l = lookup(tmp.path(), &[("reload-interval", "20ms")]);
    let pinned = l.table();
    std::fs::write(
        tmp.path().join("customers.csv"),
        "id,name,tier\n1,Ann,platinum\n3,Cy,bronze\n",
    )
    .unwrap();
    eventually("the new version is loaded", || {
        l.table().len() == 2 && l.table().get(b"3").is_some()
    });
    let now = l.table();
    assert!(String::from_utf8_lossy(now.get(b"1").unwrap()).contains("platinum"));
    assert!(now.get(b"2").is_none());
    // A batch that pinned the first version still joins with it.
    assert!(String::from_utf8_lossy(pinned.get(b"1").unwrap()).contains("gold"));
    assert!(pinned.get(b"2").is_some());
}

#[test]
fn a_reload_that_fails_keeps_the_previous_table() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("customers.csv");
    std::fs::write(&path, CUSTOMERS).unwrap();
    let (file, shown) =
        TableFile::resolve("customers.csv", tmp.path(), runtime().handle()).unwrap();
    let mut watch = Watch::new(file, shown, TableFormat::Csv, "id".into());
    let first = watch.load().unwrap();
    assert_eq!(first.len(), 2);
    assert!(watch.poll().unwrap().is_none(), "unchanged: nothing read");
    std::fs::write(&path, "id,name\n1,Ann\n2,Bo,extra\n").unwrap();
    let msg = watch.poll().unwrap_err().to_string();
    assert!(
        msg.contains("customers.csv") && msg.contains("line 3: 3 fields"),
        "{msg}"
    );
    assert!(
        watch.poll().unwrap().is_none(),
        "a broken version is reported once"
    );
    std::fs::remove_file(&path).unwrap();
    let msg = watch.poll().unwrap_err().to_string();
    assert!(msg.contains("cannot be read"), "{msg}");
    std::fs::write(&path, "id,name\n5,Eve\n").unwrap();
    let fixed = watch.poll().unwrap().expect("the fixed file is read");
    assert!(fixed.get(b"5").is_some());

    // Through the running step: a broken file leaves the loaded table in place.
    let l = lookup(tmp.path(), &[("reload-interval", "20ms")]);
    std::fs::write(&path, "id,name\n\"1,Ann\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(l.table().len(), 2, "the previous version stays");
    assert!(l.table().get(b"2").is_some());
}

/// `cargo test --release -p sluice --lib lookup::tests::measure -- --ignored --nocapture`:
/// the join's speed on 10,000-record blocks of JSON events against a 10,000-row CSV table.
#[test]
#[ignore = "a measurement"]
fn measure_join_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,name,tier,city\n");
    for c in 0..10_000 {
        csv.push_str(&format!("c{c},\"Name {c}, Esq.\",gold,City {}\n", c % 97));
    }
    std::fs::write(tmp.path().join("customers.csv"), csv).unwrap();
    let rt = runtime();
    for join in ["inner", "left"] {
        let l = Lookup::start(
            &config(
                "customers.csv",
                &[("key-field", "customer"), ("join", join)],
            ),
            tmp.path(),
            rt.handle(),
        )
        .unwrap();
        let table = l.table();
        let blocks: Vec<RecordBatch> = (0..20)
            .map(|b| {
                let mut batch = RecordBatch::default();
                for i in 0..10_000 {
                    let v = format!(
                        r#"{{"id":{i},"customer":"c{}","amount":{},"note":"block {b}"}}"#,
                        (i * 7 + b) % 12_500,
                        i % 1000
                    );
                    batch.push(None, v.as_bytes(), Some(0));
                }
                batch
            })
            .collect();
        let start = Instant::now();
        let mut out = 0;
        for block in &blocks {
            out += l.join(&table, block).0.len();
        }
        let took = start.elapsed();
        let n = blocks.len() * 10_000;
        println!(
            "lookup {join}: {n} records in {took:?}: {:.2} M records/s, {:.0} ns a record, {out} out",
            n as f64 / took.as_secs_f64() / 1e6,
            took.as_nanos() as f64 / n as f64
        );
    }
}
