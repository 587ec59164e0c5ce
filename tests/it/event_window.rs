//! Event-time windows (issue #12): tumbling windows over out-of-order JSON lines whose event
//! time is a field (`time-field = "ts"`), fed file by file through the files source; each
//! closed window's result equals an independent computation, the records beyond the allowed
//! lateness are in the dead letters with their lateness, and a SIGKILL in the middle changes
//! nothing.
//!
//! The input is built so that lateness does not depend on where batches split: file `k` holds
//! on-time records within 1.5 s below to 0.5 s above its base time `B + k s` (never behind the
//! watermark any split can reach, `max − 2 s`), shuffled, and, from file 2 on, a few records
//! 3.5–4 s behind it, whose 1 s window ended before the watermark that file `k − 1` alone
//! makes. The test waits for each file to be done before it drops the next.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use sluice_tests::plugins_dir;

use crate::engine::{
    Running, WAIT_TIMEOUT, committed, drop_file, files_under, sluice_run, write_pipeline,
};
use crate::kill::log_values;

/// The base event time (ms): a whole second.
const BASE: i64 = 1_700_000_000_000;
const FILES: i64 = 10;
const LENGTH: i64 = 1_000;
const LATENESS: i64 = 2_000;

const PIPELINE: &str = r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "files"
path = "in"
partitions = 1
poll-interval = "50ms"

[[transform]]
builtin = "event-window"
window = "tumbling"
length = "1s"
aggregate = "count"
allowed-lateness = "2s"
time-field = "ts"
snapshot-every = 3

[[sink]]
kind = "files"
path = "out"
format = "lines"
"#;

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// File `k`'s lines and which of their event times are late.
fn file(k: i64, rng: &mut Rng) -> (Vec<String>, Vec<i64>) {
    let base = BASE + k * 1_000;
    let mut lines = Vec::new();
    let mut late = Vec::new();
    for i in 0..60 {
        let ts = base - 1_500 + (rng.next() % 2_000) as i64;
        lines.push(format!("{{\"ts\":{ts},\"n\":\"{k}-{i}\"}}"));
    }
    if k >= 2 {
        for i in 0..3 {
            let ts = base - 4_000 + (rng.next() % 500) as i64;
            late.push(ts);
            lines.push(format!("{{\"ts\":{ts},\"n\":\"{k}-late-{i}\"}}"));
        }
    }
    // Shuffle (Fisher-Yates): out of order within the file.
    for i in (1..lines.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        lines.swap(i, j);
    }
    (lines, late)
}

fn ts_of(line: &str) -> i64 {
    serde_json::from_str::<Value>(line).unwrap()["ts"]
        .as_i64()
        .unwrap()
}

/// Records taken in by the batches done so far (from the run's log).
fn taken_in(run: &Running) -> u64 {
    run.stderr_so_far()
        .lines()
        .filter(|l| l.contains("Batch done."))
        .flat_map(|l| log_values(l, "records_in"))
        .sum()
}

/// Drops files `range` one at a time, each once the one before is done.
fn feed(run: &mut Running, dir: &Path, files: &[Vec<String>], range: std::ops::Range<usize>) {
    let mut want = 0;
    for k in range {
        let text = files[k].join("\n") + "\n";
        drop_file(&dir.join("in"), &format!("f{k:02}.jsonl"), text.as_bytes());
        want += files[k].len() as u64;
        let t0 = std::time::Instant::now();
        while taken_in(run) < want {
            run.assert_alive(&format!("while file {k} ran"));
            assert!(
                t0.elapsed() < WAIT_TIMEOUT,
                "file {k} done within {WAIT_TIMEOUT:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[test]
fn event_time_tumbling_windows_equal_an_independent_count_and_late_records_are_dead_lettered_across_a_sigkill()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let path = write_pipeline(dir, PIPELINE);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (files, late): (Vec<Vec<String>>, Vec<Vec<i64>>) =
        (0..FILES).map(|k| file(k, &mut rng)).unzip();

    let mut first = Running::start(sluice_run(dir, &path, &plugins_dir()));
    feed(&mut first, dir, &files, 0..5);
    // A batch or two more, so the last file's batch has committed, then a crash.
    std::thread::sleep(std::time::Duration::from_millis(500));
    first.kill_hard();
    let mut second = Running::start(sluice_run(dir, &path, &plugins_dir()));
    feed(&mut second, dir, &files, 5..FILES as usize);
    std::thread::sleep(std::time::Duration::from_millis(500));
    second.terminate();
    let ended = second.wait(WAIT_TIMEOUT);
    ended.assert_success();

    // The independent computation: on-time records counted per 1 s window; a window is out
    // once the watermark (the largest event time − 2 s) reached its end.
    let mut want: BTreeMap<(i64, i64), u64> = BTreeMap::new();
    let mut max = i64::MIN;
    for line in files.concat() {
        if line.contains("late") {
            continue;
        }
        let ts = ts_of(&line);
        max = max.max(ts);
        let start = ts.div_euclid(LENGTH) * LENGTH;
        *want.entry((start, start + LENGTH)).or_default() += 1;
    }
    let watermark = max - LATENESS;
    want.retain(|(_, end), _| *end <= watermark);
    assert!(want.len() >= 8, "enough windows closed: {}", want.len());

    let mut got: BTreeMap<(i64, i64), u64> = BTreeMap::new();
    for ((batch, _), lines) in committed(&dir.join("out"), "input", "txt") {
        for line in lines {
            let v: Value = serde_json::from_str(&line).unwrap();
            let w = (v["start"].as_i64().unwrap(), v["end"].as_i64().unwrap());
            let n = v["value"].as_u64().unwrap();
            assert!(
                got.insert(w, n).is_none(),
                "window {w:?} output twice (again in batch {batch})"
            );
        }
    }
    assert_eq!(got, want, "each closed window's count");

    // The late records, each once, with its lateness: how far behind the largest event time
    // seen at the close before its batch, which is at least the allowed lateness.
    let mut letters: BTreeMap<String, String> = BTreeMap::new();
    for p in files_under(&dir.join("dead-letters").join("input")) {
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let l: Value = serde_json::from_str(line).unwrap();
            assert_eq!(l["builtin"], "event-window", "{l}");
            let value = l["value"].as_str().unwrap().to_owned();
            letters.insert(value, l["reason"].as_str().unwrap().to_owned());
        }
    }
    let mut late_lines: Vec<&String> = files
        .iter()
        .flatten()
        .filter(|l| l.contains("late"))
        .collect();
    late_lines.sort();
    assert_eq!(late_lines.len(), late.concat().len());
    assert_eq!(
        letters.keys().collect::<Vec<_>>(),
        late_lines,
        "exactly the late records are dead letters"
    );
    for (value, reason) in &letters {
        let ts = ts_of(value);
        let by: i64 = reason
            .strip_prefix("late by ")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no lateness in {reason:?}"));
        let seen: i64 = reason
            .split("largest event time seen, ")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no largest event time in {reason:?}"));
        assert_eq!(by, seen - ts, "{reason}");
        assert!(by > LATENESS, "{reason}");
        let start = ts.div_euclid(LENGTH) * LENGTH;
        assert!(
            reason.contains(&format!("its window [{start}, {})", start + LENGTH)),
            "{reason}"
        );
    }
    assert!(
        ended
            .stderr
            .contains("Restored an event-window's windows and watermark from the checkpoint."),
        "the restart read the windows back"
    );
}
