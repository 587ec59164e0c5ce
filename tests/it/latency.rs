//! Latency a user relies on (issue #16): a file dropped into a watched directory makes the
//! batch that closes next and is committed within about one batch interval, however long the
//! poll interval (the files source lists once more just before each batch closes), and a
//! fresh run's first batch closes one batch interval after launch, its set-up counted in it.
//!
//! Bounds are loose on purpose (the machine running the tests may be loaded): each separates
//! the behaviour from its absence by seconds or by the order of two events, not by a few ms.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::*;

use crate::engine::{Running, WAIT_TIMEOUT, drop_file, sluice_run, write_pipeline};

const INTERVAL_MS: f64 = 1_000.0;

/// The batches of a `--report` file so far.
fn report_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn epoch_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// Ms since the epoch of an RFC 3339 UTC timestamp as the JSON log writes it
/// (`2026-12-05T08:32:44.725262Z`).
fn log_time_ms(ts: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| -> i64 { ts[r].parse().unwrap() };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + num(11..13) * 3_600 + num(14..16) * 60 + num(17..19);
    let frac: f64 = format!("0{}", ts[19..].trim_end_matches('Z'))
        .parse()
        .unwrap_or(0.0);
    secs * 1_000 + (frac * 1_000.0) as i64
}

/// One latency marker of a `--report` file: how long its file waited for its batch (from
/// its stamp to the close the batch is timed at, the files source's part) and how long from
/// its stamp to its batch's commit (that, plus running and checkpointing the batch).
struct Marker {
    to_close_ms: f64,
    to_commit_ms: f64,
    batch: u64,
    total_delay_ms: f64,
    checkpoint_ms: f64,
}

impl std::fmt::Display for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "batch {}: {:.0} ms to its close, {:.0} ms to its commit (the batch's delay {:.0} ms, \
             its checkpoint {:.0} ms)",
            self.batch,
            self.to_close_ms,
            self.to_commit_ms,
            self.total_delay_ms,
            self.checkpoint_ms
        )
    }
}

fn markers(report: &[Value]) -> Vec<Marker> {
    let mut out = Vec::new();
    for b in report {
        let (Some(time), Some(done)) = (b["time_ms"].as_f64(), b["done_ms"].as_f64()) else {
            continue;
        };
        for l in b["marker_latency_ms"].as_array().into_iter().flatten() {
            let Some(to_commit_ms) = l.as_f64() else {
                continue;
            };
            // The report gives the commit time (done_ms) and the marker's time to it.
            let stamp = done - to_commit_ms;
            out.push(Marker {
                to_close_ms: time - stamp,
                to_commit_ms,
                batch: b["batch"].as_u64().unwrap_or(u64::MAX),
                total_delay_ms: b["total_delay_ms"].as_f64().unwrap_or(f64::NAN),
                checkpoint_ms: b["checkpoint_ms"].as_f64().unwrap_or(f64::NAN),
            });
        }
    }
    out
}

#[test]
fn a_dropped_file_makes_the_batch_that_closes_next_and_is_committed_whatever_the_poll_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("in");
    std::fs::create_dir(&input).unwrap();
    // A 10 s poll interval: without the listing before each close a file waits up to 10 s.
    let pipeline = write_pipeline(
        dir,
        "version = 1\nbatch-interval = \"1s\"\nblock-interval = \"100ms\"\n\n[source]\nkind = \"files\"\npath = \"in\"\npartitions = 2\npoll-interval = \"10s\"\nlatency-marker = \"#MARK \"\n\n[[sink]]\nkind = \"count\"\n",
    );
    let report = dir.join("report.jsonl");
    let mut cmd = sluice_run(dir, &pipeline, &plugins_dir());
    cmd.arg("--report").arg(&report);
    let mut sluice = Running::start(cmd);
    sluice.wait_for("the first batch", WAIT_TIMEOUT, || {
        !report_lines(&report).is_empty()
    });
    // Four files at different points of the batch interval, each a marker stamped as it is
    // written (epoch µs, 16 digits) and a few lines.
    let files = 4;
    for i in 0..files {
        let text = format!("#MARK {:016}\nline a\nline b\n", epoch_us());
        drop_file(&input, &format!("f{i}.txt"), text.as_bytes());
        std::thread::sleep(Duration::from_millis(730));
    }
    sluice.wait_for("every file's marker", Duration::from_secs(15), || {
        markers(&report_lines(&report)).len() == files
    });
    sluice.interrupt();
    sluice.wait(WAIT_TIMEOUT).assert_success();
    let got = markers(&report_lines(&report));
    // A file is in the first batch that closes after it (less the lead of the listing before
    // the close, 50 ms), so it waits at most a batch interval for its close, and is committed
    // soon after; both with room for a loaded machine. The poll interval (10 s) is far above.
    // (CI, 2026-12-06: one partition's files took 7.8 s and 9.2 s, its receiver having listed
    // before the batch clock said its first close; both figures show which part was late.)
    let bound = INTERVAL_MS + 800.0;
    let shown: Vec<String> = got.iter().map(|m| m.to_string()).collect();
    assert!(
        got.iter().all(|m| m.to_close_ms <= bound),
        "each file at most {bound} ms before its batch's close: {shown:#?}"
    );
    assert!(
        got.iter().all(|m| m.to_commit_ms <= bound),
        "each file committed within {bound} ms: {shown:#?}"
    );
}

#[test]
fn a_fresh_runs_first_batch_closes_one_batch_interval_after_launch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("in")).unwrap();
    let pipeline = write_pipeline(
        dir,
        "version = 1\nbatch-interval = \"1s\"\n\n[source]\nkind = \"files\"\npath = \"in\"\n\n[[sink]]\nkind = \"count\"\n",
    );
    let report = dir.join("report.jsonl");
    let mut cmd = sluice_run(dir, &pipeline, &plugins_dir());
    cmd.arg("--report").arg(&report);
    let launched_ms = (epoch_us() / 1_000) as i64;
    let launched = Instant::now();
    let mut sluice = Running::start(cmd);
    sluice.wait_for("the first batch", WAIT_TIMEOUT, || {
        !report_lines(&report).is_empty()
    });
    let took = launched.elapsed();
    sluice.interrupt();
    let run = sluice.wait(WAIT_TIMEOUT);
    run.assert_success();
    let first = &report_lines(&report)[0];
    let opened_ms = first["time_ms"].as_i64().unwrap() - INTERVAL_MS as i64;
    // The first batch's interval began when the process started: before it logged anything
    // (the old grid began after the set-up: the plan, the plugin's compilation, the admin
    // endpoint).
    let first_log = run
        .stderr
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .expect("a JSON log line");
    let logged_ms = log_time_ms(first_log["timestamp"].as_str().unwrap());
    assert!(
        launched_ms <= opened_ms && opened_ms <= logged_ms,
        "the first batch opened at {opened_ms}, launched at {launched_ms}, first log at {logged_ms}"
    );
    // What a user sees: the first batch done about one interval after launch (room for a
    // loaded machine; the set-up no longer adds to it).
    assert!(
        took < Duration::from_millis(1_000 + 900),
        "first batch done {took:?} after launch"
    );
}

#[test]
fn log_times_are_read_as_ms_since_the_epoch() {
    assert_eq!(log_time_ms("1970-01-01T00:00:01.5Z"), 1_500);
    assert_eq!(
        log_time_ms("2026-12-05T08:32:44.725262Z"),
        1_796_459_564_725
    );
}

/// The scheduling delays (close to the start of the closing work, ms) of a full-speed word
/// count on the generator, with `queue_target` (`None`: the default), run for about 5 s; and
/// the run's peak buffered MiB from its summary.
fn full_speed_word_count(queue_target: Option<&str>) -> (Vec<f64>, f64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let target = queue_target.map_or(String::new(), |t| format!("queue-target = \"{t}\"\n"));
    let pipeline = write_pipeline(
        dir,
        &format!(
            "version = 1\nbatch-interval = \"1s\"\nmemory-budget = \"256MiB\"\n{target}\n[source]\nkind = \"generator\"\npartitions = 1\nrate = 0\nwords-per-line = 10\n\n[[transform]]\nplugin = \"count-words\"\n\n[[transform]]\nbuiltin = \"repartition-by-key\"\n\n[[transform]]\nbuiltin = \"count-by-key\"\nsum-values = true\n\n[[sink]]\nkind = \"count\"\n\n[checkpoint]\nenabled = false\n"
        ),
    );
    let report = dir.join("report.jsonl");
    let mut cmd = sluice_run(dir, &pipeline, &plugins_dir());
    cmd.arg("--report").arg(&report);
    let mut sluice = Running::start(cmd);
    sluice.wait_for("six batches", WAIT_TIMEOUT, || {
        report_lines(&report).len() >= 6
    });
    sluice.interrupt();
    let run = sluice.wait(WAIT_TIMEOUT);
    run.assert_success();
    // The batches closed at full speed (the last ones drain after the interrupt).
    let delays = report_lines(&report)[..6]
        .iter()
        .map(|b| b["scheduling_delay_ms"].as_f64().unwrap())
        .collect();
    let peak = run.summary()["peak_buffered_mib"]
        .as_f64()
        .unwrap_or(f64::NAN);
    (delays, peak)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[test]
fn a_source_faster_than_its_pipeline_leaves_each_batch_only_about_the_queue_target_to_finish() {
    // A full-speed generator feeds a word count several times slower than it: a 256 MiB
    // budget alone lets every batch close with the budget's worth of records still to
    // process (a few hundred ms); the default `queue-target` (50 ms) holds each partition's
    // queue to about 50 ms of its measured processing time, whatever the budget. The two run
    // side by side, so a loaded machine slows both alike.
    let (paced, paced_peak) = full_speed_word_count(None);
    let (budget_only, budget_peak) = full_speed_word_count(Some("0s"));
    let (p, b) = (median(paced.clone()), median(budget_only.clone()));
    eprintln!(
        "scheduling delay, ms: paced {paced:?} (median {p}, peak {paced_peak} MiB); budget only {budget_only:?} (median {b}, peak {budget_peak} MiB)"
    );
    assert!(
        p < 250.0 && p < b / 2.0,
        "paced: a median scheduling delay of {p} ms ({paced:?}); with the budget alone {b} ms ({budget_only:?})"
    );
    assert!(
        paced_peak < budget_peak,
        "the pace held less in memory: {paced_peak} MiB against {budget_peak} MiB"
    );
}
