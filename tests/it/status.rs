//! `sluice status` against a running pipeline (by address and by pipeline file) and against
//! nothing; `/healthz` and `/readyz` before and after the first batch (issue #14).

use std::process::{Command, Output};

use sluice_tests::{plugins_dir, sluice_bin};

use crate::engine::{Running, WAIT_TIMEOUT, sluice_run, write_pipeline};
use crate::metrics::{admin_of, get, get_json};

/// A generator (2 partitions) through `grep` to files, batches every `interval`.
fn generator_pipeline(dir: &std::path::Path, name: &str, interval: &str) -> std::path::PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"version = 1
name = "{name}"
batch-interval = "{interval}"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 2
rate = 500

[[transform]]
plugin = "grep"
params = {{ pattern = "a" }}

[[sink]]
kind = "files"
path = "out"
"#
        ),
    )
}

fn status(target: &str) -> Output {
    Command::new(sluice_bin())
        .args(["status", target])
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// A port on 127.0.0.1 nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sluice_status_shows_a_running_pipeline_by_address_and_by_file_and_says_when_nothing_listens() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pipeline = generator_pipeline(root, "status-shown", "200ms");
    let mut cmd = sluice_run(root, &pipeline, &plugins_dir());
    cmd.args(["--ui", "127.0.0.1:0"]);
    let mut run = Running::start(cmd);
    let (address, _) = admin_of(&mut run, root);
    run.wait_for("three batches", WAIT_TIMEOUT, || {
        get_json(&address, "/api/v1/overview")["totals"]["batches"]
            .as_u64()
            .is_some_and(|b| b >= 3)
    });
    for target in [
        address.clone(),
        format!("http://{address}/"),
        pipeline.to_str().unwrap().to_owned(),
    ] {
        let out = status(&target);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "sluice status {target}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("pipeline status-shown (stream input), ready"),
            "names the pipeline: {stdout}"
        );
        let batches: u64 = stdout
            .split("batches ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no batch count: {stdout}"));
        assert!(batches >= 3, "{stdout}");
        let rate: f64 = stdout
            .split("input ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no input rate: {stdout}"));
        assert!(
            (200.0..=3000.0).contains(&rate),
            "2 partitions at 500 lines/s: {rate} records/s in {stdout}"
        );
        assert!(
            stdout.contains("records/s")
                && stdout.contains("source generator × 2 partitions")
                && stdout.contains("processing"),
            "{stdout}"
        );
    }
    run.interrupt();
    run.wait(WAIT_TIMEOUT).assert_success();

    // Nothing listens: exit 75 (unreachable, try again later), the address named.
    let nowhere = format!("127.0.0.1:{}", closed_port());
    let out = status(&nowhere);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains(&nowhere) && stderr.contains("cannot be reached"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // The stopped pipeline's file: its admin file is gone, so it is not running (75 too).
    let out = status(pipeline.to_str().unwrap());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("not running"), "{stderr}");
}

#[test]
fn healthz_answers_while_alive_and_readyz_only_once_a_batch_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Batches every 4 s: the first one commits well after the endpoint is up.
    let pipeline = generator_pipeline(root, "readiness", "4s");
    let mut run = Running::start(sluice_run(root, &pipeline, &plugins_dir()));
    let (address, _) = admin_of(&mut run, root);
    let (status, body) = get(&address, "/readyz");
    assert_eq!(status, 503, "not ready before the first batch: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["reason"], "no batch has committed yet", "{v}");
    assert_eq!(
        get(&address, "/healthz").0,
        200,
        "alive before the first batch"
    );
    let (_, metrics) = get(&address, "/metrics");
    assert!(
        metrics.contains("sluice_ready{pipeline=\"readiness\"} 0\n"),
        "{metrics}"
    );

    run.wait_for("the first batch", WAIT_TIMEOUT, || {
        run_batches(&address) >= 1
    });
    let (status, body) = get(&address, "/readyz");
    assert_eq!(status, 200, "ready after the first batch: {body}");
    assert_eq!(get(&address, "/healthz"), (200, r#"{"alive":true}"#.into()));
    let (_, metrics) = get(&address, "/metrics");
    assert!(
        metrics.contains("sluice_ready{pipeline=\"readiness\"} 1\n"),
        "{metrics}"
    );
    run.terminate();
    run.wait(WAIT_TIMEOUT).assert_success();
    assert!(
        std::net::TcpStream::connect(&address).is_err(),
        "the endpoint stops with the run"
    );
}

fn run_batches(address: &str) -> u64 {
    get_json(address, "/api/v1/overview")["totals"]["batches"]
        .as_u64()
        .unwrap_or(0)
}
