//! The `amqp` source against the real broker (RabbitMQ 3.10 with `rabbitmq_amqp1_0`, from
//! `scripts/services start`): every message reaches the sink, across a broker restart; a
//! rejected record is dead-lettered with its partition and offset; `sluice validate` reaches
//! the broker; and the bare consumer benchmark. Without the broker these tests fail, unless
//! `SLUICE_SKIP_SERVICES=1` opts into skipping (each skip printed and recorded). The SIGKILL trials are in `recovery.rs`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice::receiver::amqp::bench;
use sluice::receiver::amqp::config::AmqpEndpoint;
use sluice_tests::*;

use crate::engine::{
    Running, committed, files_under, line_count, sluice_run, u64_field, write_pipeline,
};

/// The broker tests take turns: one of them restarts the broker, which would cut the others'
/// connections.
pub(crate) static BROKER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the broker's turn, then checks that it answers (in that order: while another test
/// has it stopped for a restart, it does not). `None`: skipped by the opt-in (see `services`).
pub(crate) fn broker(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    let turn = BROKER.lock().unwrap_or_else(|e| e.into_inner());
    services(test).then_some(turn)
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    range
        .map(|i| {
            let id = format!("{prefix}-{i:06}");
            (id.clone(), id.into_bytes())
        })
        .collect()
}

pub(crate) fn pipeline(queue: &str, extra: &str) -> String {
    format!(
        r#"version = 1
batch-interval = "300ms"
block-interval = "100ms"

[source]
kind = "amqp"
url = "{}"
queues = ["{queue}"]
credit = 500
{extra}

[[sink]]
kind = "files"
path = "out"
"#,
        amqp_url()
    )
}

#[test]
fn every_published_message_reaches_the_sink_across_a_broker_restart() {
    let Some(_turn) = broker("every_published_message_reaches_the_sink_across_a_broker_restart")
    else {
        return;
    };
    const N: usize = 6000;
    let tmp = tempfile::tempdir().unwrap();
    let queue = fresh_queue("restart");
    let rt = rt();
    rt.block_on(publish(&queue, &ids("m", 0..N / 2)));
    let pipeline = write_pipeline(tmp.path(), &pipeline(&queue, ""));
    let out = tmp.path().join("out");
    let mut sluice = Running::start(sluice_run(tmp.path(), &pipeline, &plugins_dir()));
    let seen = |out: &std::path::Path| -> BTreeSet<String> {
        committed(out, "input", "txt")
            .into_values()
            .flatten()
            .collect()
    };
    sluice.wait_for("the first half", Duration::from_secs(60), || {
        seen(&out).len() >= N / 2
    });

    // The broker goes away mid-stream and comes back; the second half is published after.
    let stop = rabbitmqctl(&["stop_app"]);
    assert!(
        stop.status.success(),
        "rabbitmqctl stop_app: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    let start = rabbitmqctl(&["start_app"]);
    assert!(
        start.status.success(),
        "rabbitmqctl start_app: {}",
        String::from_utf8_lossy(&start.stderr)
    );
    rabbitmqctl(&["await_startup"]);
    rt.block_on(publish(&queue, &ids("m", N / 2..N)));
    sluice.wait_for("every message", Duration::from_secs(90), || {
        seen(&out).len() >= N
    });
    sluice.interrupt();
    let run = sluice.wait(Duration::from_secs(30));
    run.assert_success();

    let all = committed(&out, "input", "txt");
    let got: BTreeSet<String> = all.values().flatten().cloned().collect();
    let expected: BTreeSet<String> = ids("m", 0..N).into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, expected, "every message id, none other");
    let duplicates = line_count(&all) - got.len();
    assert!(
        duplicates <= 500,
        "at most one credit window redelivered, got {duplicates} duplicates"
    );
    assert!(
        !run.events("The receiver failed; restarting it").is_empty(),
        "the receiver noticed the broker leave and reconnected:\n{}",
        run.stderr
    );
    assert!(
        run.events("Attached to the broker.").len() >= 2,
        "it attached again:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("guest:guest"),
        "no password in the log"
    );
}

#[test]
fn a_record_the_transformation_rejects_is_dead_lettered_with_its_partition_and_offset() {
    let Some(_turn) = broker(
        "a_record_the_transformation_rejects_is_dead_lettered_with_its_partition_and_offset",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let queue = fresh_queue("dead");
    let bodies: [&[u8]; 4] = [br#"{"id":1,"x":2}"#, b"{not json", br#"{"id":3}"#, b"[1,2]"];
    let messages: Vec<(String, Vec<u8>)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("d-{i}"), b.to_vec()))
        .collect();
    rt().block_on(publish(&queue, &messages));
    let text = pipeline(&queue, "").replace(
        "[[sink]]",
        "[[transform]]\nplugin = \"json-project\"\nparams = { fields = \"id\" }\n\n[[sink]]",
    );
    let pipeline = write_pipeline(tmp.path(), &text);
    let out = tmp.path().join("out");
    let dead = tmp.path().join("dead-letters").join("input");
    let letters = || -> Vec<serde_json::Value> {
        files_under(&dead)
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut sluice = Running::start(sluice_run(tmp.path(), &pipeline, &plugins_dir()));
    sluice.wait_for(
        "2 records out and 2 dead letters",
        Duration::from_secs(60),
        || line_count(&committed(&out, "input", "txt")) >= 2 && letters().len() >= 2,
    );
    sluice.interrupt();
    sluice.wait(Duration::from_secs(30)).assert_success();
    let got: Vec<String> = committed(&out, "input", "txt")
        .into_values()
        .flatten()
        .collect();
    assert_eq!(got, [r#"{"id":1}"#, r#"{"id":3}"#]);
    let mut letters = letters();
    letters.sort_by_key(|l| u64_field(l, "offset"));
    let context: Vec<(u64, u64, &str)> = letters
        .iter()
        .map(|l| {
            (
                u64_field(l, "partition"),
                u64_field(l, "offset"),
                l["value"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(context, [(0, 1, "{not json"), (0, 3, "[1,2]")]);
    for l in &letters {
        assert_eq!(l["plugin"], "json-project", "{l}");
    }
}

#[test]
fn validate_reaches_the_broker_and_says_clearly_when_it_cannot() {
    let Some(_turn) = broker("validate_reaches_the_broker_and_says_clearly_when_it_cannot") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let queue = fresh_queue("validate");
    let validate = |text: &str| {
        let pipeline = write_pipeline(tmp.path(), text);
        std::process::Command::new(sluice_bin())
            .arg("validate")
            .arg(&pipeline)
            .env("SLUICE_CACHE_DIR", tmp.path().join("cache"))
            .output()
            .unwrap()
    };
    let ok = validate(&pipeline(&queue, ""));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok"));

    let closed_port = pipeline(&queue, "").replace("127.0.0.1:5672", "127.0.0.1:1");
    let down = validate(&closed_port);
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(!down.status.success());
    assert!(
        err.contains("cannot reach the broker") && err.contains("127.0.0.1:1"),
        "{err}"
    );

    let wrong_password = pipeline(&queue, "").replace("guest:guest", "guest:not-the-password");
    let refused = validate(&wrong_password);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("refused") && !err.contains("not-the-password"),
        "{err}"
    );

    let no_address = pipeline(&queue, "").replace(&format!("queues = [\"{queue}\"]"), "");
    let bad = validate(&no_address);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("source.queues") && err.contains("address"),
        "{err}"
    );
}

/// The bare `fe2o3-amqp` consumer (`sluice bench amqp` will run it): publishes then consumes
/// `SLUICE_AMQP_BENCH_N` (default 20000) messages of 100 bytes and prints both rates.
#[test]
fn the_bare_consumer_benchmark_consumes_everything_published() {
    let Some(_turn) = broker("the_bare_consumer_benchmark_consumes_everything_published") else {
        return;
    };
    let n: u64 = std::env::var("SLUICE_AMQP_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let credit: u32 = std::env::var("SLUICE_AMQP_BENCH_CREDIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let ep = AmqpEndpoint::parse(&amqp_url(), "url").unwrap();
    let queue = fresh_queue("bench");
    let rt = rt();
    let published = rt
        .block_on(bench::publish(&ep, &queue, "b", n, 100, 1000))
        .unwrap();
    let started = Instant::now();
    let consumed = rt
        .block_on(bench::consume(&ep, &queue, n, credit, 500))
        .unwrap();
    assert_eq!(consumed.messages, n);
    assert_eq!(consumed.bytes, n * 100);
    eprintln!(
        "amqp bench: published {n} x 100 B at {:.0} msgs/s; consumed at {:.0} msgs/s (credit {credit}, accepts per 500; {:.2} s)",
        published.per_second(),
        consumed.per_second(),
        started.elapsed().as_secs_f64()
    );
}

/// The whole receiver path (link, credit, append, accepts) under `sluice run` with a counting
/// sink: publishes `SLUICE_AMQP_BENCH_N` (default 20000) messages, then prints the rate at which
/// the pipeline took them in.
#[test]
fn the_pipeline_takes_in_every_published_message_and_reports_its_rate() {
    let Some(_turn) = broker("the_pipeline_takes_in_every_published_message_and_reports_its_rate")
    else {
        return;
    };
    let n: usize = std::env::var("SLUICE_AMQP_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let credit: u32 = std::env::var("SLUICE_AMQP_BENCH_CREDIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let ep = AmqpEndpoint::parse(&amqp_url(), "url").unwrap();
    let queue = fresh_queue("rate");
    rt().block_on(bench::publish(&ep, &queue, "r", n as u64, 100, 1000))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let text = pipeline(&queue, "")
        .replace("credit = 500", &format!("credit = {credit}"))
        .replace("kind = \"files\"\npath = \"out\"", "kind = \"count\"");
    let p = write_pipeline(tmp.path(), &text);
    let started = Instant::now();
    let mut sluice = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    let took = loop {
        let records_in: u64 = sluice
            .stderr_so_far()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "Batch done.")
            .filter_map(|v| v["fields"]["records_in"].as_u64())
            .sum();
        if records_in >= n as u64 {
            break started.elapsed();
        }
        sluice.assert_alive("while taking in the messages");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{records_in} of {n} in after 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    sluice.interrupt();
    let run = sluice.wait(Duration::from_secs(30));
    run.assert_success();
    let summary = run.summary();
    assert_eq!(u64_field(&summary, "records_in"), n as u64);
    eprintln!(
        "amqp pipeline: {n} messages in {:.2} s from start (connect included): {:.0} msgs/s (credit {credit})",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
