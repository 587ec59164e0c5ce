//! `/metrics` judged by the Prometheus project's own text parser (`prometheus-client` from
//! PyPI, in the venv `scripts/services start` makes; the script is `metrics.py` beside this
//! file), and its values compared with the run's own `--report` file (issue #14).
//!
//! How the comparison is made exact: a files source keeps running after its input is read, so
//! the test drops its files, waits until the run has committed every record, then scrapes.
//! Nothing is in flight at that moment, so the plugin's own counters are final; and whatever
//! `sluice_batches_total` says (B), the report's first B lines (written before the monitor
//! hears of a batch) are the batches the scrape counted, however many empty batches came
//! after. No linger option is needed, and no timing is guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sluice_tests::{plugins_dir, skip_or_fail};

use crate::engine::{Running, WAIT_TIMEOUT, drop_file, sluice_run, write_pipeline};

/// How long the parser may take.
const PY_TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTP/1.1 request (`method path`, with `Authorization: Bearer <token>` when given, and
/// `body`) to `address`; the status, the headers (lower-cased names) and the body.
pub(crate) fn request(
    address: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, BTreeMap<String, String>, String) {
    let mut s = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer from {method} {path}: {answer:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line from {method} {path}: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// `GET path` without a token; the status and body.
pub(crate) fn get(address: &str, path: &str) -> (u16, String) {
    let (status, _, body) = request(address, "GET", path, None, "");
    (status, body)
}

/// `GET path`, which must answer 200 with JSON.
pub(crate) fn get_json(address: &str, path: &str) -> Value {
    let (status, body) = get(address, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The admin file of a run whose checkpoint log is `root/checkpoints` (the default), once the
/// run has written it: (address, token).
pub(crate) fn admin_of(run: &mut Running, root: &Path) -> (String, String) {
    let file = root.join("checkpoints").join("admin.json");
    run.wait_for("the admin file", WAIT_TIMEOUT, || file.exists());
    let admin: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    (
        admin["address"].as_str().unwrap().to_owned(),
        admin["token"].as_str().unwrap().to_owned(),
    )
}

/// The parser's python: `$SLUICE_PROM_PYTHON`, else the venv `scripts/services start` makes;
/// `None` when it cannot import the parser and the test is to be skipped (see `skip_or_fail`).
pub(crate) fn judge(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("SLUICE_PROM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/sluice/prom-venv/bin/python")
        });
    let ok = Command::new(&python)
        .args(["-c", "import prometheus_client.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok
        && !skip_or_fail(
            test,
            &format!(
                "{} cannot import prometheus_client (scripts/services start installs it)",
                python.display()
            ),
        )
    {
        return None;
    }
    Some(python)
}

/// The exposition as the parser read it (see metrics.py): families and declared types.
pub(crate) fn parse(python: &Path, exposition: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("it/metrics.py");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = sluice_tests::output_within(child, PY_TIMEOUT, "metrics.py", || {});
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\nthe exposition:\n{exposition}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One parsed sample.
#[derive(Debug)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The parsed exposition: family name (as the parser names it) → (type, samples).
pub(crate) struct Families(BTreeMap<String, (String, Vec<Sample>)>);

impl Families {
    pub(crate) fn of(parsed: &Value) -> Families {
        let mut map = BTreeMap::new();
        for f in parsed["families"].as_array().unwrap() {
            let samples = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    name: s["name"].as_str().unwrap().to_owned(),
                    labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                    value: s["value"].as_f64().unwrap(),
                })
                .collect();
            map.insert(
                f["name"].as_str().unwrap().to_owned(),
                (f["type"].as_str().unwrap().to_owned(), samples),
            );
        }
        Families(map)
    }

    /// The samples of family `name` (the parser's name: a counter's without `_total`), which
    /// must exist with type `kind`.
    pub(crate) fn family(&self, name: &str, kind: &str) -> &[Sample] {
        let (t, samples) = self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no family {name}; the families: {:?}", self.0.keys()));
        assert_eq!(t, kind, "the type of {name}");
        samples
    }

    /// The value of sample `sample` of family `family` whose labels include `labels`; there
    /// must be exactly one.
    fn value(&self, family: &str, kind: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
        let hits: Vec<&Sample> = self
            .family(family, kind)
            .iter()
            .filter(|s| {
                s.name == sample
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(hits.len(), 1, "{sample}{labels:?}: {hits:?}");
        hits[0].value
    }

    /// A counter's one value with `labels`.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let family = name
            .strip_suffix("_total")
            .expect("a counter ends in _total");
        self.value(family, "counter", name, labels)
    }

    /// A histogram's `_count` with `labels`.
    fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, "histogram", &format!("{name}_count"), labels)
    }

    /// A histogram's `_sum` with `labels`.
    fn histogram_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, "histogram", &format!("{name}_sum"), labels)
    }
}

/// The families every run exports, by declared name and type.
const EXPECTED: &[(&str, &str)] = &[
    ("sluice_batches_total", "counter"),
    ("sluice_records_in_total", "counter"),
    ("sluice_records_out_total", "counter"),
    ("sluice_dead_letters_total", "counter"),
    ("sluice_checkpoints_total", "counter"),
    ("sluice_batches_recomputed_total", "counter"),
    ("sluice_backpressure_waits_total", "counter"),
    ("sluice_batch_scheduling_delay_seconds", "histogram"),
    ("sluice_batch_processing_seconds", "histogram"),
    ("sluice_batch_total_delay_seconds", "histogram"),
    ("sluice_checkpoint_write_seconds", "histogram"),
    ("sluice_memory_budget_bytes", "gauge"),
    ("sluice_memory_used_bytes", "gauge"),
    ("sluice_memory_peak_bytes", "gauge"),
    ("sluice_ready", "gauge"),
    ("sluice_start_time_seconds", "gauge"),
    ("sluice_partition_records_total", "counter"),
    ("sluice_partition_bytes_total", "counter"),
    ("sluice_partition_backpressure_seconds_total", "counter"),
    ("sluice_partition_receiver_failing", "gauge"),
    ("sluice_plugin_calls_total", "counter"),
    ("sluice_plugin_traps_total", "counter"),
    ("sluice_plugin_records_total", "counter"),
    ("sluice_plugin_memory_peak_bytes", "gauge"),
    ("sluice_plugin_call_duration_seconds", "histogram"),
    ("sluice_user_grep_kept_total", "counter"),
    ("sluice_user_grep_dropped_total", "counter"),
];

/// The shape of the exposition: the expected families with their types, names that follow
/// the conventions, and the labels each kind of family must carry.
fn assert_shape(parsed: &Value, f: &Families, pipeline: &str, partitions: u32) {
    let declared: BTreeMap<String, String> =
        serde_json::from_value(parsed["types"].clone()).unwrap();
    for (name, kind) in EXPECTED {
        assert_eq!(
            declared.get(*name).map(String::as_str),
            Some(*kind),
            "# TYPE {name} {kind}; declared: {declared:?}"
        );
    }
    for (name, kind) in &declared {
        assert!(name.starts_with("sluice_"), "{name}: not under sluice_");
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name}: no _total"),
            "histogram" => assert!(name.ends_with("_seconds"), "histogram {name}: not seconds"),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name} ends in _total"),
            other => panic!("{name}: type {other}"),
        }
    }
    let partition_set: BTreeSet<String> = (0..partitions).map(|p| p.to_string()).collect();
    for (family, (kind, samples)) in &f.0 {
        assert!(!samples.is_empty(), "{family} has no sample");
        for s in samples {
            assert_eq!(
                s.labels.get("pipeline").map(String::as_str),
                Some(pipeline),
                "{} {:?}: the pipeline label",
                s.name,
                s.labels
            );
            if kind == "counter" {
                assert_eq!(s.name, format!("{family}_total"), "a counter's sample name");
            }
        }
        if family.starts_with("sluice_partition_") {
            let got: BTreeSet<String> = samples
                .iter()
                .map(|s| s.labels.get("partition").cloned().unwrap_or_default())
                .collect();
            assert_eq!(got, partition_set, "{family}: one sample per partition");
        }
        if family.starts_with("sluice_plugin_") {
            assert!(
                samples.iter().all(
                    |s| s.labels.get("plugin").map(String::as_str) == Some("grep")
                        && s.labels.get("digest").is_some_and(|d| d.len() == 12)
                ),
                "{family}: the plugin and digest labels: {samples:?}"
            );
        }
        if family.starts_with("sluice_user_") {
            assert!(
                samples
                    .iter()
                    .all(|s| s.labels.get("plugin").map(String::as_str) == Some("grep")),
                "{family}: the plugin label: {samples:?}"
            );
        }
    }
    for name in [
        "sluice_batch_scheduling_delay_seconds",
        "sluice_batch_processing_seconds",
        "sluice_plugin_call_duration_seconds",
    ] {
        let buckets: Vec<&Sample> = f
            .family(name, "histogram")
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
            .collect();
        assert!(
            buckets.len() > 5 && buckets.iter().any(|s| s.labels["le"] == "+Inf"),
            "{name}: buckets up to +Inf: {buckets:?}"
        );
    }
}

/// The report file's lines, in order.
fn report_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The scrape's values against the report's first `sluice_batches_total` batches, and the
/// grep plugin's own counters against what went in and out. Every record is in, so nothing
/// is in flight. Returns the batches the scrape counted.
fn assert_values(f: &Families, report: &[Value], records: u64, kept: u64) -> usize {
    let batches = f.counter("sluice_batches_total", &[]) as usize;
    assert!(
        batches >= 1 && batches <= report.len(),
        "{batches} batches scraped, {} reported",
        report.len()
    );
    let counted = &report[..batches];
    let sum = |k: &str| counted.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>() as f64;
    assert_eq!(f.counter("sluice_records_in_total", &[]), sum("records_in"));
    assert_eq!(
        f.counter("sluice_records_out_total", &[]),
        sum("records_out")
    );
    assert_eq!(f.counter("sluice_dead_letters_total", &[]), 0.0);
    assert_eq!(sum("records_in"), records as f64, "every record is in");
    assert_eq!(sum("records_out"), kept as f64, "the matches went out");
    for name in [
        "sluice_batch_scheduling_delay_seconds",
        "sluice_batch_processing_seconds",
        "sluice_batch_total_delay_seconds",
    ] {
        assert_eq!(f.histogram_count(name, &[]), batches as f64, "{name}_count");
    }
    let processing: f64 = counted
        .iter()
        .map(|r| r["processing_ms"].as_f64().unwrap() / 1e3)
        .sum();
    let scraped = f.histogram_sum("sluice_batch_processing_seconds", &[]);
    assert!(
        (scraped - processing).abs() < 1e-6 * batches as f64,
        "processing time: /metrics {scraped} s, the report {processing} s"
    );
    assert_eq!(
        f.histogram_count("sluice_checkpoint_write_seconds", &[]),
        f.counter("sluice_checkpoints_total", &[])
    );
    let per_partition: f64 = f
        .family("sluice_partition_records", "counter")
        .iter()
        .map(|s| s.value)
        .sum();
    assert!(
        per_partition >= records as f64,
        "the partitions handed in {per_partition}, the batches took {records}"
    );
    let grep = [("plugin", "grep")];
    assert_eq!(
        f.counter("sluice_user_grep_kept_total", &grep),
        kept as f64,
        "the plugin's own counter of what it kept"
    );
    assert_eq!(
        f.counter("sluice_user_grep_kept_total", &grep)
            + f.counter("sluice_user_grep_dropped_total", &grep),
        records as f64,
        "kept and dropped make what went in"
    );
    assert_eq!(
        f.counter("sluice_plugin_records_total", &grep),
        records as f64
    );
    let calls = f.counter("sluice_plugin_calls_total", &grep);
    assert!(calls >= 1.0);
    assert_eq!(
        f.histogram_count("sluice_plugin_call_duration_seconds", &grep),
        calls
    );
    assert_eq!(f.counter("sluice_plugin_traps_total", &grep), 0.0);
    assert_eq!(f.value("sluice_ready", "gauge", "sluice_ready", &[]), 1.0);
    batches
}

/// `n` lines of file `name`, every third one a match for `ERROR`.
fn log_file(name: &str, n: usize) -> (String, u64) {
    let lines: Vec<String> = (0..n)
        .map(|i| match i % 3 {
            0 => format!("{name} {i} ERROR disk full"),
            _ => format!("{name} {i} all fine"),
        })
        .collect();
    (format!("{}\n", lines.join("\n")), n.div_ceil(3) as u64)
}

/// Scrapes once every record of `records` is committed (the overview says so); the text and
/// its content type.
fn scrape_when_in(run: &mut Running, address: &str, records: u64) -> (String, String) {
    run.wait_for(
        &format!("{records} records committed"),
        WAIT_TIMEOUT,
        || get_json(address, "/api/v1/overview")["totals"]["records_in"].as_u64() == Some(records),
    );
    let (status, headers, text) = request(address, "GET", "/metrics", None, "");
    assert_eq!(status, 200, "{text}");
    (text, headers["content-type"].clone())
}

#[test]
fn metrics_parse_with_prometheus_own_parser_and_match_the_runs_report() {
    let Some(python) = judge("metrics_parse_with_prometheus_own_parser_and_match_the_runs_report")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let input = root.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let pipeline = write_pipeline(
        root,
        r#"version = 1
name = "metrics-judged"
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "files"
path = "in"
partitions = 3

[[transform]]
plugin = "grep"
params = { pattern = "ERROR" }

[[sink]]
kind = "files"
path = "out"
"#,
    );
    let report = root.join("report.jsonl");
    let (mut records, mut kept) = (0u64, 0u64);
    let mut add_files = |names: &[&str], size: usize| {
        for (i, name) in names.iter().enumerate() {
            let (text, matches) = log_file(name, size + 37 * i);
            drop_file(&input, name, text.as_bytes());
            records += (size + 37 * i) as u64;
            kept += matches;
        }
        (records, kept)
    };
    let first = add_files(&["a.log", "b.log", "c.log", "d.log"], 500);
    let mut cmd = sluice_run(root, &pipeline, &plugins_dir());
    cmd.args(["--ui", "127.0.0.1:0", "--report"]).arg(&report);
    let mut run = Running::start(cmd);
    let (address, _) = admin_of(&mut run, root);

    let (text1, content_type) = scrape_when_in(&mut run, &address, first.0);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let second = add_files(&["e.log", "f.log", "g.log"], 900);
    let (text2, _) = scrape_when_in(&mut run, &address, second.0);
    run.interrupt();
    let ended = run.wait(WAIT_TIMEOUT);
    ended.assert_success();
    let report = report_lines(&report);

    let mut counted = Vec::new();
    for (text, (records, kept)) in [(&text1, first), (&text2, second)] {
        let parsed = parse(&python, text);
        let families = Families::of(&parsed);
        assert_shape(&parsed, &families, "metrics-judged", 3);
        counted.push(assert_values(&families, &report, records, kept));
    }
    assert!(
        counted[1] > counted[0],
        "the second scrape counted more batches: {counted:?}"
    );
}
