//! The lookup join (`builtin = "lookup"`) end to end: `sluice run` on a files source of JSON
//! events enriched from a CSV table, every output record checked against a join computed here;
//! and a table changed while the pipeline runs changing the enrichment of later batches.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sluice_tests::plugins_dir;

use crate::batch_job::output;
use crate::engine::{Running, WAIT_TIMEOUT, drop_file, sluice_run, write_pipeline};

/// A pipeline: `in/` (JSON events, 2 partitions) → lookup on `ref/customers.csv` → `out/`.
fn pipeline(join: &str, once: bool, reload: &str) -> String {
    format!(
        r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "files"
path = "in"
partitions = 2
poll-interval = "50ms"
once = {once}

[[transform]]
builtin = "lookup"
table = "ref/customers.csv"
table-key = "id"
key-field = "customer"
join = "{join}"
reload-interval = "{reload}"

[[sink]]
kind = "files"
path = "out"
"#
    )
}

/// The table: customers c0..c29 but every fifth, names with commas and quotes.
fn customers(tier: &str) -> (String, BTreeMap<String, Value>) {
    let mut text = String::from("id,name,tier,since\n");
    let mut rows = BTreeMap::new();
    for c in (0..30).filter(|c| c % 5 != 0) {
        let id = format!("c{c}");
        let name = format!("Name {c}, \"the {c}th\"");
        text.push_str(&format!(
            "{id},\"{}\",{tier},0{c}\n",
            name.replace('"', "\"\"")
        ));
        let row = json!({"id": id, "name": name, "tier": tier, "since": format!("0{c}")});
        rows.insert(id, row);
    }
    (text, rows)
}

/// Events of file `f`: `n` JSON objects naming customers c0..c34 in turn (c30.. and every
/// fifth have no row).
fn events(f: usize, n: usize) -> (String, Vec<Value>) {
    let list: Vec<Value> = (0..n)
        .map(|i| json!({"file": f, "i": i, "customer": format!("c{}", (f * 7 + i) % 35), "amount": i * 3}))
        .collect();
    let text = list.iter().map(|v| format!("{v}\n")).collect();
    (text, list)
}

/// The join, computed here: each event with its row under `customers`, or `null` (left) or
/// dropped (inner) when it has none.
fn joined(events: &[Value], rows: &BTreeMap<String, Value>, left: bool) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .filter_map(|e| {
            let row = rows.get(e["customer"].as_str().unwrap()).cloned();
            if row.is_none() && !left {
                return None;
            }
            let mut e: Map<String, Value> = e.as_object().unwrap().clone();
            e.insert("customers".into(), row.unwrap_or(Value::Null));
            Some(Value::Object(e).to_string())
        })
        .collect();
    out.sort();
    out
}

/// Every output line, parsed and printed again (so member order and spacing do not matter).
fn output_values(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = output(root)
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("output line {l:?} is not JSON: {e}"))
                .to_string()
        })
        .collect();
    out.sort();
    out
}

fn run_join(join: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    std::fs::create_dir_all(root.join("ref")).unwrap();
    let (table, rows) = customers("gold");
    std::fs::write(root.join("ref/customers.csv"), table).unwrap();
    let mut all = Vec::new();
    for f in 0..4 {
        let (text, list) = events(f, 500);
        drop_file(&root.join("in"), &format!("e{f}.jsonl"), text.as_bytes());
        all.extend(list);
    }
    let path = write_pipeline(root, &pipeline(join, true, "10s"));
    let ended = Running::start(sluice_run(root, &path, &plugins_dir())).wait(WAIT_TIMEOUT * 2);
    ended.assert_success();
    let expected = joined(&all, &rows, join == "left");
    let got = output_values(root);
    let unmatched = all.len() - joined(&all, &rows, false).len();
    assert!(
        unmatched > 300,
        "the test has records without a row: {unmatched}"
    );
    assert_eq!(got.len(), expected.len(), "as many records as the join has");
    assert!(
        got == expected,
        "every output record equals the join computed by the test"
    );
}

#[test]
fn an_inner_lookup_join_outputs_exactly_the_records_with_a_row_each_enriched() {
    run_join("inner");
}

#[test]
fn a_left_lookup_join_outputs_every_record_with_its_row_or_null() {
    run_join("left");
}

#[test]
fn a_table_changed_while_the_pipeline_runs_enriches_later_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    std::fs::create_dir_all(root.join("ref")).unwrap();
    let (gold, gold_rows) = customers("gold");
    std::fs::write(root.join("ref/customers.csv"), gold).unwrap();
    let path = write_pipeline(root, &pipeline("inner", false, "50ms"));
    let mut running = Running::start(sluice_run(root, &path, &plugins_dir()));

    let (text, first) = events(0, 300);
    drop_file(&root.join("in"), "e0.jsonl", text.as_bytes());
    let want_first = joined(&first, &gold_rows, false);
    running.wait_for("the first file's records", WAIT_TIMEOUT, || {
        output(root).len() == want_first.len()
    });

    // The new version replaces the file at once (written beside it, then renamed).
    let (platinum, platinum_rows) = customers("platinum");
    drop_file(&root.join("ref"), "customers.csv", platinum.as_bytes());
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while !running.stderr_so_far().contains("is reloaded") {
        running.assert_alive("while the test waited for the reload");
        assert!(Instant::now() < deadline, "the table was never reloaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The batch open at the reload keeps the old version: let it close (batches are 200 ms).
    std::thread::sleep(Duration::from_millis(600));
    let (text, second) = events(1, 300);
    drop_file(&root.join("in"), "e1.jsonl", text.as_bytes());
    let mut want = want_first.clone();
    want.extend(joined(&second, &platinum_rows, false));
    want.sort();
    running.wait_for("the second file's records", WAIT_TIMEOUT, || {
        output(root).len() == want.len()
    });
    running.interrupt();
    running.wait(WAIT_TIMEOUT).assert_success();
    let got = output_values(root);
    assert!(
        got == want,
        "records before the change carry the old rows, records after it the new ones"
    );
    let tiers: Vec<&str> = ["\"tier\":\"gold\"", "\"tier\":\"platinum\""]
        .into_iter()
        .filter(|t| got.iter().any(|l| l.contains(t)))
        .collect();
    assert_eq!(tiers.len(), 2, "both versions of the table were used");
}

#[test]
fn a_malformed_table_refuses_the_pipeline_with_exit_2_naming_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    std::fs::create_dir_all(root.join("ref")).unwrap();
    std::fs::write(
        root.join("ref/customers.csv"),
        "id,name\nc1,Ann\nc2,\"Bo\",x\n",
    )
    .unwrap();
    let path = write_pipeline(root, &pipeline("inner", true, "10s"));
    let ended = Running::start(sluice_run(root, &path, &plugins_dir())).wait(WAIT_TIMEOUT);
    assert_eq!(
        ended.status.code(),
        Some(2),
        "the user's fault: {}",
        ended.stderr
    );
    assert!(
        ended.stderr.contains("customers.csv")
            && ended
                .stderr
                .contains("line 3: 3 fields, but the header line has 2")
            && ended.stderr.contains("`[[transform]]` number 1"),
        "{}",
        ended.stderr
    );
    assert!(
        !root.join("out").exists() || crate::engine::files_under(&root.join("out")).is_empty(),
        "nothing was written"
    );
}
