//! The Event Hubs dialect, judged by Microsoft's own Python client (`azure-eventhub` from
//! PyPI, in the venv `scripts/services start` makes; driven through `eventhubs_client.py`),
//! and the places where a real Event Hubs would hurt sluice: owner levels taking a partition,
//! token expiry, server-busy detaches and a position older than the retention.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::eventhubs_server::{Event, FakeEventHubs, offset_of};
use sluice_tests::*;

use crate::engine::{Running, committed, line_count, sluice_run, write_pipeline};

const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";
const HUB: &str = "hub1";

fn services_required() -> bool {
    std::env::var("SLUICE_SERVICES").is_ok_and(|v| v == "1")
}

/// The venv's python that has `azure-eventhub`: `$SLUICE_EVENTHUB_PYTHON`, else
/// `~/.cache/sluice/eventhub-venv/bin/python`. `None`: skipped, loudly, unless
/// `SLUICE_SERVICES=1`, which makes it a failure.
fn eventhub_python(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("SLUICE_EVENTHUB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap())
                .join(".cache/sluice/eventhub-venv/bin/python")
        });
    let ok = Command::new(&python)
        .args(["-c", "import azure.eventhub"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !services_required(),
            "{test}: SLUICE_SERVICES=1 but {} cannot import azure.eventhub; run scripts/services start",
            python.display()
        );
        eprintln!(
            "\n!!! SKIPPED {test}: {} cannot import azure.eventhub (scripts/services start installs it) !!!\n",
            python.display()
        );
        return None;
    }
    Some(python)
}

/// Runs `eventhubs_client.py ARGS` against `hub` (at most `timeout`) and parses its JSON.
fn client(
    python: &Path,
    hub: &FakeEventHubs,
    args: &[&str],
    timeout: Duration,
) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("it/eventhubs_client.py");
    let mut child = Command::new(python)
        .arg(&script)
        .args(args)
        .env("EVENTHUB_CONNECTION_STRING", hub.connection_string(KEY))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the Python client {args:?} did not finish within {timeout:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "the Python client {args:?} said:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the Python client {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the Python client's output is not JSON ({e}): {stdout}"))
}

fn events(partition: usize, range: std::ops::Range<usize>) -> Vec<Event> {
    range
        .map(|i| Event {
            body: format!("p{partition}-e{i:04}").into_bytes(),
            partition_key: None,
            enqueued_ms: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

fn pipeline(dir: &Path, hub: &FakeEventHubs, extra: &str) -> PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"version = 1
batch-interval = "300ms"
block-interval = "100ms"

[source]
kind = "eventhubs"
connection-string = "{}"
{extra}

[[sink]]
kind = "files"
path = "out"
format = "jsonl"
"#,
            hub.connection_string(KEY)
        ),
    )
}

/// Every committed record's value, counted.
fn values(out: &Path) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in committed(out, "input", "jsonl").into_values().flatten() {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        *seen
            .entry(v["value"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    seen
}

fn assert_each_once(seen: &BTreeMap<String, usize>, want: &[String]) {
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "read more than once: {twice:?}");
    let missing: Vec<_> = want.iter().filter(|w| !seen.contains_key(*w)).collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(seen.len(), want.len(), "nothing else");
}

fn stopped_ok(run: Running) -> crate::engine::Ended {
    run.interrupt();
    let ended = run.wait(Duration::from_secs(30));
    ended.assert_success();
    ended
}

#[test]
fn microsofts_client_sends_10000_events_over_4_partitions_and_sluice_reads_each_once_asking_management_for_the_count()
 {
    let test = "microsofts_client_sends_10000_events…";
    let Some(python) = eventhub_python(test) else {
        return;
    };
    let hub = FakeEventHubs::start(HUB, "listen", KEY, vec![vec![]; 4]);
    let props = client(&python, &hub, &["props"], Duration::from_secs(60));
    assert_eq!(
        props["partition_ids"],
        serde_json::json!(["0", "1", "2", "3"])
    );
    assert_eq!(props["partitions"][2]["is_empty"], true, "{props}");
    let sent = client(&python, &hub, &["send", "10000"], Duration::from_secs(120));
    assert_eq!(sent["sent"], 10000);
    let per: Vec<usize> = (0..4).map(|p| hub.events(p).len()).collect();
    assert_eq!(per.iter().sum::<usize>(), 10000, "{per:?}");
    assert!(
        per.iter().all(|n| *n >= 2000),
        "spread over the 4 partitions: {per:?}"
    );
    let props = client(&python, &hub, &["props"], Duration::from_secs(60));
    assert_eq!(
        props["partitions"][1]["last_enqueued_sequence_number"],
        per[1] as i64 - 1,
        "{props}"
    );

    // No `partitions`: sluice asks the hub's $management node.
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), &hub, "");
    let out = tmp.path().join("out");
    let mut run = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    run.wait_for("all 10,000 events", Duration::from_secs(90), || {
        line_count(&committed(&out, "input", "jsonl")) >= 10000
    });
    std::thread::sleep(Duration::from_millis(700));
    let ended = stopped_ok(run);
    let want: Vec<String> = (0..10000).map(|n| format!("e{n}")).collect();
    assert_each_once(&values(&out), &want);
    assert!(
        ended.stderr.contains("gives its partition count")
            && ended.stderr.contains("\"partitions\":4"),
        "the count came from $management: {}",
        ended.stderr
    );
    for partition in 0..4 {
        let attach = format!("attach {HUB}/ConsumerGroups/$Default/Partitions/{partition} ");
        assert!(
            hub.log()
                .iter()
                .any(|l| l.starts_with(&attach) && l.ends_with("epoch 0")),
            "partition {partition} read with owner level 0: {:#?}",
            hub.log()
        );
    }
}

#[test]
fn microsofts_client_reads_from_the_stand_in_after_an_offset_and_from_a_sequence_number() {
    let Some(python) = eventhub_python("microsofts_client_reads_from_the_stand_in…") else {
        return;
    };
    let mut p0 = events(0, 0..50);
    p0[12].partition_key = Some("k12".into());
    let hub = FakeEventHubs::start(HUB, "listen", KEY, vec![p0, events(1, 0..5)]);
    let after = format!("offset:{}", offset_of(9));
    let got = client(
        &python,
        &hub,
        &["receive", "0", &after, "40", "-", "30"],
        Duration::from_secs(60),
    );
    let evs = got["events"].as_array().unwrap();
    assert_eq!(evs.len(), 40, "{got}");
    for (i, e) in evs.iter().enumerate() {
        let n = 10 + i;
        assert_eq!(e["body"], format!("p0-e{n:04}"), "{e}");
        assert_eq!(e["offset"], offset_of(n), "{e}");
        assert_eq!(e["sequence_number"], n as i64, "{e}");
    }
    assert_eq!(evs[2]["partition_key"], "k12");
    let got = client(
        &python,
        &hub,
        &["receive", "1", "sequence:3", "2", "-", "30"],
        Duration::from_secs(60),
    );
    let bodies: Vec<&str> = got["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["p1-e0003", "p1-e0004"], "{got}");
    let log = hub.log();
    assert!(
        log.iter()
            .any(|l| l.contains("filter amqp.annotation.x-opt-offset > '1090'"))
            && log
                .iter()
                .any(|l| l.contains("filter amqp.annotation.x-opt-sequence-number >= '3'")),
        "{log:#?}"
    );
}

#[test]
fn a_reader_with_a_higher_owner_level_takes_a_partition_and_sluice_lets_it_go_without_retrying() {
    let Some(python) = eventhub_python("a_reader_with_a_higher_owner_level…") else {
        return;
    };
    let hub = FakeEventHubs::start(HUB, "listen", KEY, vec![events(0, 0..20), events(1, 0..20)]);
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), &hub, "partitions = 2");
    let out = tmp.path().join("out");
    let mut run = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    run.wait_for("the first 40 events", Duration::from_secs(60), || {
        line_count(&committed(&out, "input", "jsonl")) >= 40
    });
    // Microsoft's client opens partition 1 with owner level 1: sluice's (0) is closed.
    let got = client(
        &python,
        &hub,
        &["receive", "1", "offset:-1", "20", "1", "30"],
        Duration::from_secs(60),
    );
    assert_eq!(got["events"].as_array().unwrap().len(), 20, "{got}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run.stderr_so_far().contains("took the partition") {
        run.assert_alive("while it should let partition 1 go");
        assert!(
            Instant::now() < deadline,
            "sluice did not let partition 1 go: {}",
            run.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The host goes on with partition 0 and does not come back for partition 1.
    hub.add(0, events(0, 20..30));
    hub.add(1, events(1, 20..30));
    run.wait_for("partition 0's new events", Duration::from_secs(30), || {
        line_count(&committed(&out, "input", "jsonl")) >= 50
    });
    std::thread::sleep(Duration::from_secs(2));
    run.assert_alive("after losing a partition");
    let ended = stopped_ok(run);
    let seen = values(&out);
    assert!(
        !seen.contains_key("p1-e0025"),
        "partition 1 is not read after it was taken"
    );
    let attaches = hub
        .log()
        .iter()
        .filter(|l| {
            l.starts_with(&format!(
                "attach {HUB}/ConsumerGroups/$Default/Partitions/1 "
            ))
        })
        .count();
    assert_eq!(
        attaches,
        2,
        "sluice's and the client's, no retry: {:#?}",
        hub.log()
    );
    assert!(
        hub.log()
            .iter()
            .any(|l| l.contains("closed link") && l.contains("Stolen")),
        "{:#?}",
        hub.log()
    );
    let line = ended
        .stderr
        .lines()
        .find(|l| l.contains("took the partition"))
        .unwrap();
    assert!(
        line.contains("\"partition\":1") && line.contains("amqp:link:stolen"),
        "{line}"
    );
}

#[test]
fn sluice_renews_its_token_past_several_expiries_and_a_refused_renewal_stops_it_naming_the_token() {
    let hub = FakeEventHubs::start(HUB, "listen", KEY, vec![events(0, 0..10), events(1, 0..10)]);
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), &hub, "partitions = 2\ntoken-ttl = \"3s\"");
    let out = tmp.path().join("out");
    let mut run = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    // About four token lifetimes, with events coming all along.
    for round in 1..=10 {
        std::thread::sleep(Duration::from_millis(1200));
        hub.add(0, events(0, 10 * round..10 * round + 10));
        hub.add(1, events(1, 10 * round..10 * round + 10));
        run.assert_alive("while its tokens expire");
    }
    run.wait_for("all 220 events", Duration::from_secs(30), || {
        line_count(&committed(&out, "input", "jsonl")) >= 220
    });
    let _ = stopped_ok(run);
    let want: Vec<String> = (0..2)
        .flat_map(|p| (0..110).map(move |i| format!("p{p}-e{i:04}")))
        .collect();
    assert_each_once(&values(&out), &want);
    let closed: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|l| l.contains("closed link"))
        .collect();
    assert!(closed.is_empty(), "no link outlived its token: {closed:#?}");
    assert!(
        hub.accepted_tokens() >= 8,
        "renewed: {} tokens",
        hub.accepted_tokens()
    );

    // Renewals refused: the token runs out and sluice stops, saying so.
    let hub = FakeEventHubs::start(HUB, "listen", KEY, vec![events(0, 0..10)]);
    hub.refuse_renewals(true);
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), &hub, "partitions = 1\ntoken-ttl = \"3s\"");
    let ended =
        Running::start(sluice_run(tmp.path(), &p, &plugins_dir())).wait(Duration::from_secs(30));
    assert!(!ended.status.success(), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("SAS token") && ended.stderr.contains("`listen`"),
        "the message names the token: {}",
        ended.stderr
    );
}

#[test]
fn a_server_busy_detach_makes_sluice_reconnect_and_lose_nothing() {
    let hub = FakeEventHubs::start(
        HUB,
        "listen",
        KEY,
        vec![events(0, 0..100), events(1, 0..100)],
    );
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), &hub, "partitions = 2");
    let out = tmp.path().join("out");
    let mut run = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    run.wait_for("the first 200 events", Duration::from_secs(60), || {
        line_count(&committed(&out, "input", "jsonl")) >= 200
    });
    for round in 1..=3 {
        hub.server_busy();
        hub.add(0, events(0, 100 * round..100 * round + 100));
        hub.add(1, events(1, 100 * round..100 * round + 100));
        std::thread::sleep(Duration::from_millis(700));
    }
    run.wait_for("all 800 events", Duration::from_secs(60), || {
        line_count(&committed(&out, "input", "jsonl")) >= 800
    });
    std::thread::sleep(Duration::from_millis(700));
    let ended = stopped_ok(run);
    let want: Vec<String> = (0..2)
        .flat_map(|p| (0..400).map(move |i| format!("p{p}-e{i:04}")))
        .collect();
    assert_each_once(&values(&out), &want);
    let busy = hub
        .log()
        .iter()
        .filter(|l| l.contains("closed link") && l.contains("server-busy"))
        .count();
    assert!(
        busy >= 2,
        "the stand-in closed links as busy: {:#?}",
        hub.log()
    );
    assert!(
        ended.stderr.contains("com.microsoft:server-busy"),
        "{}",
        ended.stderr
    );
}

#[test]
fn a_position_older_than_the_retention_stops_with_a_message_or_starts_at_the_earliest_as_configured()
 {
    let hub = FakeEventHubs::start(HUB, "listen", KEY, vec![events(0, 0..50)]);
    hub.expire_before(0, 20);
    let start = format!("partitions = 1\nstart = \"offset:{}\"", offset_of(5));
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), &hub, &start);
    let ended =
        Running::start(sluice_run(tmp.path(), &p, &plugins_dir())).wait(Duration::from_secs(30));
    assert!(!ended.status.success(), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("older than the retention")
            && ended.stderr.contains("com.microsoft:argument-out-of-range")
            && ended.stderr.contains("on-expired-offset"),
        "{}",
        ended.stderr
    );

    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(
        tmp.path(),
        &hub,
        &format!("{start}\non-expired-offset = \"earliest\""),
    );
    let out = tmp.path().join("out");
    let mut run = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    run.wait_for("the 30 retained events", Duration::from_secs(60), || {
        line_count(&committed(&out, "input", "jsonl")) >= 30
    });
    std::thread::sleep(Duration::from_millis(700));
    let ended = stopped_ok(run);
    let want: Vec<String> = (20..50).map(|i| format!("p0-e{i:04}")).collect();
    assert_each_once(&values(&out), &want);
    assert!(
        ended.stderr.contains("older than the hub's retention"),
        "{}",
        ended.stderr
    );
}
