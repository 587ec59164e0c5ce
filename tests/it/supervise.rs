//! `sluice run --supervise` and stopping on SIGTERM, with the real binary: a driver killed
//! with SIGKILL comes back by itself, a bad pipeline file is not restarted, a driver that
//! crashes at start every time is given up on, and SIGTERM drains like the first Ctrl-C.
//!
//! The supervisor logs `The driver started.` with the child's `pid` for every start; the tests
//! find the driver to kill from those lines (and check it is the supervisor's child in
//! `/proc/PID/stat`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::*;

use crate::engine::{
    Running, WAIT_TIMEOUT, committed, files_under, generated, generator_of, line_count, sluice_run,
    u64_field, write_pipeline,
};

/// `sluice run PIPELINE --plugins DIR --supervise`, as [`sluice_run`] sets it up.
fn supervised(dir: &Path, pipeline: &Path) -> Command {
    let mut c = sluice_run(dir, pipeline, &plugins_dir());
    c.arg("--supervise");
    c
}

/// Every JSON log line in `log` whose message starts with `message`: its position among the
/// lines, and its fields.
fn events(log: &str, message: &str) -> Vec<(usize, Value)> {
    log.lines()
        .enumerate()
        .filter_map(|(i, l)| Some((i, serde_json::from_str::<Value>(l).ok()?["fields"].clone())))
        .filter(|(_, f)| {
            f["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .collect()
}

/// The pid of every driver the supervisor started, in order.
fn driver_pids(log: &str) -> Vec<u32> {
    events(log, "The driver started.")
        .iter()
        .map(|(_, f)| u64_field(f, "pid") as u32)
        .collect()
}

/// The parent pid of `pid`, from `/proc/PID/stat` (field 4, after the parenthesised name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(1)?.parse().ok()
}

/// Polls the log of `sup` every 50 ms until `done` holds of it, and returns it; fails if the
/// process exits or [`WAIT_TIMEOUT`] passes first.
fn wait_for_log(sup: &mut Running, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let log = sup.stderr_so_far();
        if done(&log) {
            return log;
        }
        sup.assert_alive(&format!("while the test waited for {what}"));
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {WAIT_TIMEOUT:?}; the log so far:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[allow(unsafe_code)]
fn kill_hard(pid: u32) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) takes plain integers and touches no memory of this process; `pid` was
    // just read as the supervisor's live child, which only the supervisor reaps.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "SIGKILL: {}", std::io::Error::last_os_error());
}

const GENERATOR_TO_COUNT: &str = r#"version = 1
batch-interval = "200ms"

[source]
kind = "generator"
partitions = 2
rate = 2000

[[sink]]
kind = "count"
"#;

#[test]
fn a_supervised_driver_killed_with_sigkill_is_started_again_and_its_batches_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(tmp.path(), GENERATOR_TO_COUNT);
    let mut sup = Running::start(supervised(tmp.path(), &pipeline));
    let log = wait_for_log(&mut sup, "the first driver's first batch", |log| {
        !events(log, "Batch done.").is_empty()
    });
    let first = driver_pids(&log)[0];
    assert_eq!(
        parent_of(first),
        Some(sup.pid()),
        "the driver is the supervisor's child"
    );
    kill_hard(first);

    let log = wait_for_log(&mut sup, "a second driver and a batch of its own", |log| {
        let starts = events(log, "The driver started.");
        starts.len() == 2
            && events(log, "Batch done.")
                .iter()
                .any(|(line, _)| *line > starts[1].0)
    });
    let second = driver_pids(&log)[1];
    assert_ne!(second, first);
    assert_eq!(
        parent_of(second),
        Some(sup.pid()),
        "the new driver is the supervisor's child"
    );
    let restarts = events(&log, "Restarting the driver");
    assert_eq!(restarts.len(), 1, "one restart line in:\n{log}");
    let restart = &restarts[0].1;
    assert!(
        restart["exit"].as_str().unwrap().contains("SIGKILL"),
        "the restart line names the signal: {restart}"
    );
    assert_eq!(
        u64_field(restart, "backoff_ms"),
        100,
        "the first restart is fast"
    );

    sup.terminate();
    let run = sup.wait(WAIT_TIMEOUT);
    run.assert_success();
    assert_eq!(
        driver_pids(&run.stderr).len(),
        2,
        "no restart after the stop"
    );
    assert_eq!(
        run.events("The pipeline stopped.").len(),
        1,
        "the second driver drained"
    );
    assert_eq!(parent_of(second), None, "the driver is gone");
}

#[test]
fn a_bad_pipeline_file_under_supervise_exits_2_at_once_and_is_not_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        &GENERATOR_TO_COUNT.replace("rate = 2000", "rate = 2000\ncolour = \"red\""),
    );
    let started = Instant::now();
    let run = Running::start(supervised(tmp.path(), &pipeline)).wait(WAIT_TIMEOUT);
    assert_eq!(
        run.status.code(),
        Some(2),
        "exit status; log:\n{}",
        run.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error message in:\n{}", run.stderr);
    assert!(errors[0].contains("colour"), "{}", errors[0]);
    assert!(
        driver_pids(&run.stderr).is_empty(),
        "a driver started:\n{}",
        run.stderr
    );
    assert!(run.events("Restarting the driver").is_empty());
}

#[test]
fn a_driver_that_crashes_at_start_every_time_is_given_up_on_after_five_tries_with_exit_70() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        &GENERATOR_TO_COUNT.replace("kind = \"count\"", "kind = \"files\"\npath = \"out\""),
    );
    // The sink's staging directory is a file: every write fails, after the sink's retries, as
    // a store that refuses writes would (exit 75, a restart may help; here it never does).
    std::fs::create_dir_all(tmp.path().join("out")).unwrap();
    std::fs::write(tmp.path().join("out/_staging"), "in the way").unwrap();
    let run = Running::start(supervised(tmp.path(), &pipeline)).wait(Duration::from_secs(120));

    assert_eq!(
        run.status.code(),
        Some(70),
        "exit status; log:\n{}",
        run.stderr
    );
    assert_eq!(
        driver_pids(&run.stderr).len(),
        5,
        "five starts in:\n{}",
        run.stderr
    );
    let restarts = run.events("Restarting the driver");
    let backoffs: Vec<u64> = restarts
        .iter()
        .map(|r| u64_field(r, "backoff_ms"))
        .collect();
    assert_eq!(backoffs, [100, 200, 400, 800], "the backoff doubles");
    for r in &restarts {
        assert_eq!(r["exit"], "exited with code 75", "{r}");
    }
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    let gave_up = errors.last().expect("an error message");
    for part in [
        "crashed 5 times in a row",
        "exited with code 75",
        "giving up",
    ] {
        assert!(gave_up.contains(part), "{part:?} is not in {gave_up:?}");
    }
}

#[test]
fn sigterm_mid_run_exits_0_with_every_batch_whole_and_nothing_left_in_staging() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        r#"version = 1
batch-interval = "300ms"

[source]
kind = "generator"
partitions = 4
rate = 20000

[[transform]]
plugin = "uppercase"

[[sink]]
kind = "files"
path = "out"
"#,
    );
    let g = generator_of(&pipeline);
    let out = tmp.path().join("out");
    let mut sluice = Running::start(sluice_run(tmp.path(), &pipeline, &plugins_dir()));
    let started = Instant::now();
    sluice.wait_for(
        "1.5 s of running and a committed batch",
        WAIT_TIMEOUT,
        || {
            started.elapsed() >= Duration::from_millis(1500)
                && !committed(&out, &g.name, "txt").is_empty()
        },
    );
    sluice.terminate();
    let run = sluice.wait(WAIT_TIMEOUT);
    run.assert_success();
    assert_eq!(run.events("Stop requested:").len(), 1, "the stop is logged");

    assert_eq!(
        files_under(&out.join("_staging")),
        Vec::<PathBuf>::new(),
        "staged leftovers"
    );
    let files = committed(&out, &g.name, "txt");
    let done = run.events("Batch done.");
    assert!(!done.is_empty(), "no batch done in:\n{}", run.stderr);
    for batch in &done {
        let id = u64_field(batch, "batch");
        let lines: usize = files
            .range((id, 0)..(id + 1, 0))
            .map(|(_, l)| l.len())
            .sum();
        assert_eq!(
            lines as u64,
            u64_field(batch, "records_out"),
            "batch {id}'s output"
        );
    }
    let ids: Vec<u64> = done.iter().map(|b| u64_field(b, "batch")).collect();
    assert!(
        files.keys().all(|(b, _)| ids.contains(b)),
        "output only from finished batches"
    );
    assert_eq!(
        line_count(&files) as u64,
        u64_field(&run.summary(), "records_in")
    );
    // Each partition's output is its generator's first lines, upper-cased: nothing lost or
    // repeated before the stop.
    for (partition, lines) in crate::engine::by_partition(&files) {
        let expected: Vec<String> = generated(&g, partition, lines.len() as u64)
            .iter()
            .map(|l| l.to_uppercase())
            .collect();
        assert!(
            lines == expected,
            "partition {partition} is not its first lines, upper-cased"
        );
    }
}

#[test]
fn a_second_stop_signal_of_either_kind_stops_after_the_running_batch_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(tmp.path(), GENERATOR_TO_COUNT);
    let mut sluice = Running::start(sluice_run(tmp.path(), &pipeline, &plugins_dir()));
    wait_for_log(&mut sluice, "a batch", |log| {
        !events(log, "Batch done.").is_empty()
    });
    sluice.terminate();
    std::thread::sleep(Duration::from_millis(100));
    sluice.interrupt();
    let run = sluice.wait(WAIT_TIMEOUT);
    run.assert_success();
    let first = run.events("Stop requested:");
    let second = run.events("Stop requested again:");
    assert_eq!(first.len(), 1, "one first request in:\n{}", run.stderr);
    assert_eq!(first[0]["signal"], "SIGTERM");
    assert_eq!(second.len(), 1, "one second request in:\n{}", run.stderr);
    assert_eq!(second[0]["signal"], "SIGINT");
    assert!(
        second[0]["message"]
            .as_str()
            .unwrap()
            .contains("after the running batch"),
        "{}",
        second[0]
    );
}
