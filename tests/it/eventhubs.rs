//! The `eventhubs` source against the stand-in server of `sluice_tests::eventhubs_server`
//! (CBS put-token checked with the known key, partition addresses, the offset selector, the
//! documented annotations): events flow with their metadata, a wrong key is refused clearly,
//! a restart resumes from the checkpointed offset, the token is renewed, and no key or token
//! ever appears in a log, an error, the CLI's output or a checkpoint.

use std::path::Path;
use std::time::Duration;

use sluice::config::PipelineFile;
use sluice::receiver::SourceConfig;
use sluice_tests::eventhubs_server::{Event, FakeEventHubs, offset_of};
use sluice_tests::*;

use crate::engine::{Running, committed, files_under, line_count, sluice_run, write_pipeline};

const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";
const WRONG_KEY: &str = "d3Jvbmcta2V5LXdyb25nLWtleQ==";

fn events(partition: usize, range: std::ops::Range<usize>) -> Vec<Event> {
    range
        .map(|i| Event {
            body: format!("p{partition}-e{i:04}").into_bytes(),
            partition_key: Some(format!("key-{}", i % 3)),
            enqueued_ms: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

fn pipeline(dir: &Path, connection_string: &str, extra: &str) -> std::path::PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"version = 1
batch-interval = "300ms"
block-interval = "100ms"

[source]
kind = "eventhubs"
connection-string = "{connection_string}"
partitions = 2
checkpoint-dir = "ckpt"
checkpoint-interval = "200ms"
{extra}

[[sink]]
kind = "files"
path = "out"
format = "jsonl"
"#
        ),
    )
}

/// Fails when `text` holds a key or anything that looks like a token.
fn assert_no_secret(what: &str, text: &str) {
    for needle in [KEY, WRONG_KEY, "SharedAccessSignature", "sig="] {
        assert!(
            !text.contains(needle),
            "{what} contains {needle:?}:\n{text}"
        );
    }
}

fn values(out: &Path) -> Vec<serde_json::Value> {
    committed(out, "input", "jsonl")
        .into_values()
        .flatten()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

#[test]
fn a_wrong_key_is_refused_with_a_clear_error_that_names_no_secret() {
    let hub = FakeEventHubs::start("hub1", "listen", KEY, vec![events(0, 0..3), vec![]]);
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), &hub.connection_string(WRONG_KEY), "");
    let out = std::process::Command::new(sluice_bin())
        .arg("validate")
        .arg(&p)
        .env("SLUICE_CACHE_DIR", tmp.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("refused the SAS token")
            && stderr.contains("`listen`")
            && stderr.contains("401"),
        "{stderr}"
    );
    assert_no_secret("validate's output", &format!("{stdout}{stderr}"));
    assert!(
        hub.log()
            .iter()
            .any(|l| l.starts_with("put-token refused: InvalidSignature")),
        "{:?}",
        hub.log()
    );

    // `sluice run` refuses the same way, and so does a receiver whose key goes bad later.
    let run =
        Running::start(sluice_run(tmp.path(), &p, &plugins_dir())).wait(Duration::from_secs(30));
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("refused the SAS token"),
        "{}",
        run.stderr
    );
    assert_no_secret("run's log", &format!("{}{}", run.stdout, run.stderr));

    // The right key passes.
    let good = pipeline(tmp.path(), &hub.connection_string(KEY), "");
    let out = std::process::Command::new(sluice_bin())
        .arg("validate")
        .arg(&good)
        .env("SLUICE_CACHE_DIR", tmp.path().join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn events_flow_with_their_metadata_and_a_restart_resumes_from_the_checkpointed_offset() {
    const FIRST: usize = 40;
    const MORE: usize = 15;
    let hub = FakeEventHubs::start(
        "hub1",
        "listen",
        KEY,
        vec![events(0, 0..FIRST), events(1, 0..FIRST)],
    );
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), &hub.connection_string(KEY), "");
    let out = tmp.path().join("out");

    let mut first = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    first.wait_for(
        "every event of the first run",
        Duration::from_secs(60),
        || line_count(&committed(&out, "input", "jsonl")) >= 2 * FIRST,
    );
    // Let a checkpoint interval pass, then stop.
    std::thread::sleep(Duration::from_millis(600));
    first.interrupt();
    let run1 = first.wait(Duration::from_secs(30));
    run1.assert_success();

    let got = values(&out);
    assert_eq!(got.len(), 2 * FIRST, "each event once");
    let e = got
        .iter()
        .find(|v| v["value"] == "p0-e0004")
        .expect("event 4 of partition 0");
    assert_eq!(e["key"], "key-1", "the partition key is the record's key");
    assert_eq!(e["timestamp"], 1_700_000_000_004i64, "the enqueued time");

    // The checkpoints hold the last durable offset of each partition, and no secret.
    let ckpt = tmp.path().join("ckpt");
    let files = files_under(&ckpt);
    assert_eq!(files.len(), 2, "{files:?}");
    for partition in 0..2 {
        let path = ckpt
            .join("hub1")
            .join("$Default")
            .join(format!("{partition}.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_no_secret("a checkpoint", &text);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["offset"], offset_of(FIRST - 1), "{text}");
        assert_eq!(v["sequence_number"], (FIRST - 1) as i64, "{text}");
        assert_eq!(v["partition"], partition, "{text}");
    }

    // More events arrive while sluice is down; the restart reads only those.
    hub.add(0, events(0, FIRST..FIRST + MORE));
    hub.add(1, events(1, FIRST..FIRST + MORE));
    let tokens_before = hub.accepted_tokens();
    // Another output directory, so that it holds only what the restart reads. (The checkpoint
    // log stays: batch ids go on, and the last batch, whose commit record is in `out`, is
    // recomputed from its recorded positions into `out2`: here it held no events.)
    let p2 = pipeline(
        tmp.path(),
        &hub.connection_string(KEY),
        "token-ttl = \"2s\"",
    );
    std::fs::write(
        &p2,
        std::fs::read_to_string(&p2)
            .unwrap()
            .replace("path = \"out\"", "path = \"out2\""),
    )
    .unwrap();
    let out2 = tmp.path().join("out2");
    let mut second = Running::start(sluice_run(tmp.path(), &p2, &plugins_dir()));
    second.wait_for("the new events", Duration::from_secs(60), || {
        line_count(&committed(&out2, "input", "jsonl")) >= 2 * MORE
    });
    // Long enough for the 2 s tokens to be renewed (at 80% of their life).
    std::thread::sleep(Duration::from_secs(3));
    second.interrupt();
    let run2 = second.wait(Duration::from_secs(30));
    run2.assert_success();

    let again = values(&out2);
    let mut got: Vec<&str> = again.iter().map(|v| v["value"].as_str().unwrap()).collect();
    got.sort();
    let mut want: Vec<String> = (0..2)
        .flat_map(|p| (FIRST..FIRST + MORE).map(move |i| format!("p{p}-e{i:04}")))
        .collect();
    want.sort();
    assert_eq!(
        got, want,
        "only the new events: nothing read twice, nothing lost"
    );
    for partition in 0..2 {
        let want = format!(
            "attach hub1/ConsumerGroups/$Default/Partitions/{partition} filter amqp.annotation.x-opt-offset > '{}' epoch 0",
            offset_of(FIRST - 1)
        );
        assert!(hub.log().contains(&want), "{want} in {:#?}", hub.log());
    }
    assert!(
        hub.accepted_tokens() >= tokens_before + 4,
        "each partition's token was renewed: {} then {}",
        tokens_before,
        hub.accepted_tokens()
    );
    assert!(
        run2.stderr.contains("Recovering: batch") || run2.stderr.contains("Resuming after batch"),
        "the restart resumes from the checkpoint log: {}",
        run2.stderr
    );
    for (what, run) in [("run 1", &run1), ("run 2", &run2)] {
        assert_no_secret(what, &format!("{}{}", run.stdout, run.stderr));
    }
}

#[test]
fn the_seeds_parameter_names_configure_an_event_hubs_source_and_debug_shows_no_key() {
    let text = r#"version = 1
[source]
kind = "eventhubs"
eventhubs.policyname = "RootManageSharedAccessKey"
eventhubs.policykey = "c2VjcmV0LWtleS1mb3ItdGVzdHM="
eventhubs.namespace = "myns"
eventhubs.name = "hub1"
eventhubs.partition.count = 4
eventhubs.consumergroup = "cg1"
eventhubs.checkpoint.dir = "ckpt"
eventhubs.checkpoint.interval = 5
[[sink]]
kind = "stdout"
"#;
    let f = PipelineFile::parse(text, Path::new("p.toml")).unwrap();
    let SourceConfig::EventHubs(e) = &f.source else {
        panic!("{:?}", f.source)
    };
    assert_eq!(e.endpoint.host, "myns.servicebus.windows.net");
    assert!(e.endpoint.tls);
    assert_eq!((e.partitions, e.consumer_group.as_str()), (Some(4), "cg1"));
    assert_eq!(e.key_name, "RootManageSharedAccessKey");
    assert_eq!(e.key.expose(), KEY);
    assert_eq!(e.checkpoint_dir.as_deref(), Some("ckpt"));
    assert_eq!(e.checkpoint_interval, Duration::from_secs(5));
    assert_eq!(
        e.partition_address(3),
        "hub1/ConsumerGroups/cg1/Partitions/3"
    );
    assert_no_secret("the parsed file's Debug", &format!("{f:?}"));

    // Both forms at once, a missing part, a key of another kind: each refused by name.
    let both = text.replace(
        "eventhubs.policyname",
        "connection-string = \"Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=b\"\neventhubs.policyname",
    );
    let err = PipelineFile::parse(&both, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("give one of them"), "{err}");
    let missing = text.replace("eventhubs.namespace = \"myns\"\n", "");
    let err = PipelineFile::parse(&missing, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("eventhubs.namespace") && err.contains("required"),
        "{err}"
    );
    assert_no_secret("an error", &err);
    let foreign = text.replace(
        "kind = \"eventhubs\"",
        "kind = \"eventhubs\"\nqueues = [\"/queue/a\"]",
    );
    let err = PipelineFile::parse(&foreign, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source.queues") && err.contains("connection-string"),
        "{err}"
    );
}
