//! The `eventhubs` source's `checkpoint-store`: checkpoints and ownership in the Azure SDK's
//! blob layout on Azurite, judged by Microsoft's own `azure-eventhub-checkpointstoreblob`
//! (Python, from PyPI; `eventhubs_checkpoints.py` beside this file) rather than by our reading
//! of it. Events come from the stand-in of `sluice_tests::eventhubs_server`.
//!
//! The resume test runs Microsoft's processor itself (`EventHubConsumerClient` with a
//! `BlobCheckpointStore`) against the stand-in, which speaks its client's dialect, and starts
//! sluice on the checkpoints and ownership it left.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::receiver::amqp::azure_checkpoints::{AzureCheckpointStore, OwnershipError};
use sluice::store::Location;
use sluice_tests::eventhubs_server::{Event, FakeEventHubs, offset_of};
use sluice_tests::*;

use crate::engine::{Running, committed, line_count, sluice_run, write_pipeline};

const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";
const HUB: &str = "hub1";
const GROUP: &str = "$Default";
/// How long one call of the Python judge may take.
const PY_TIMEOUT: Duration = Duration::from_secs(60);

fn events(partition: usize, range: std::ops::Range<usize>) -> Vec<Event> {
    range
        .map(|i| Event {
            body: format!("p{partition}-e{i:04}").into_bytes(),
            partition_key: None,
            enqueued_ms: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

/// Microsoft's checkpoint store in a fresh container of Azurite.
struct Judge {
    python: PathBuf,
    container: String,
}

impl Judge {
    /// The judge for `test`: Azurite answers and the venv's python has the library
    /// (`scripts/services start` makes it). `None`: skipped as `skip_or_fail` says.
    fn new(test: &str) -> Option<Judge> {
        sluice_tests::azurite(test)?;
        let python = std::env::var_os("SLUICE_EH_CHECKPOINT_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/sluice/eh-checkpoint-venv/bin/python")
            });
        let ok = Command::new(&python)
            .args(["-c", "import azure.eventhub.extensions.checkpointstoreblob"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok
            && !skip_or_fail(
                test,
                &format!(
                    "{} cannot import azure-eventhub-checkpointstoreblob (scripts/services start installs it)",
                    python.display()
                ),
            )
        {
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let judge = Judge {
            python,
            container: format!("ehc-{}-{nanos}", std::process::id()),
        };
        judge.run(&["create-container", &judge.container, "-", "-", "-"]);
        Some(judge)
    }

    /// Runs the script with `args`, at most [`PY_TIMEOUT`]; its stdout.
    fn run(&self, args: &[&str]) -> String {
        self.run_with(args, &[])
    }

    /// [`Judge::run`] with environment variables (a connection string, which never goes on a
    /// command line).
    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("it/eventhubs_checkpoints.py");
        let child = Command::new(&self.python)
            .arg(&script)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let what = format!("eventhubs_checkpoints.py {args:?}");
        let out = sluice_tests::output_within(child, PY_TIMEOUT, &what, || {});
        assert!(
            out.status.success(),
            "eventhubs_checkpoints.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Lists (as [`Self::list`]) until `done` holds of the listing, while `run` is alive, for
    /// at most 30 s; the last listing, or a panic that shows it.
    fn list_until(
        &self,
        run: &mut Running,
        namespace: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listed = self.list(namespace);
            if done(&listed) {
                return listed;
            }
            run.assert_alive(&format!("while the test waited for {what}"));
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within 30 s; Microsoft's checkpoint store lists {listed:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `list_checkpoints` and `list_ownership` of `HUB`/`GROUP` in `namespace`:
    /// `{"checkpoints": [...], "ownership": [...]}`, each sorted by partition.
    fn list(&self, namespace: &str) -> Value {
        let text = self.run(&["list", &self.container, namespace, HUB, GROUP]);
        let mut v: Value = serde_json::from_str(&text).unwrap();
        for k in ["checkpoints", "ownership"] {
            v[k].as_array_mut()
                .unwrap()
                .sort_by_key(|c| c["partition_id"].as_str().unwrap().parse::<u32>().unwrap());
        }
        v
    }

    /// Microsoft's processor itself (`EventHubConsumerClient` with this store, greedy load
    /// balancing) reads `hub` from the start and checkpoints event `index` of each `partition`
    /// in `upto` (`partition_context.update_checkpoint`), then stops; it claims every partition
    /// of the hub on the way. Returns the partitions it checkpointed.
    fn process(&self, hub: &FakeEventHubs, upto: &[(u32, usize)]) -> String {
        let upto: serde_json::Map<String, serde_json::Value> = upto
            .iter()
            .map(|&(p, i)| (p.to_string(), json!(i)))
            .collect();
        let conn = hub.connection_string(KEY);
        let namespace = format!("127.0.0.1:{}", hub.port);
        let upto = serde_json::Value::Object(upto).to_string();
        self.run_with(
            &["process", &self.container, &namespace, HUB, GROUP, &upto],
            &[("EVENTHUB_CONNECTION_STRING", &conn)],
        )
    }
}

fn pipeline(dir: &Path, hub: &FakeEventHubs, container: &str, partitions: u32) -> PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"version = 1
batch-interval = "300ms"
block-interval = "100ms"

[source]
kind = "eventhubs"
connection-string = "{}"
partitions = {partitions}
checkpoint-store = "az://{container}"
checkpoint-interval = "200ms"

[[sink]]
kind = "files"
path = "out"
format = "jsonl"
"#,
            hub.connection_string(KEY)
        ),
    )
}

/// The owner id sluice logged when it built the source.
fn owner_id(log: &str) -> String {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Event Hubs checkpoints and ownership go to"))
        })
        .and_then(|v| v["fields"]["owner_id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("sluice logged no owner id:\n{log}"))
}

fn values(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = committed(out, "input", "jsonl")
        .into_values()
        .flatten()
        .map(|l| {
            let v: Value = serde_json::from_str(&l).unwrap();
            v["value"].as_str().unwrap().to_owned()
        })
        .collect();
    v.sort();
    v
}

fn checkpoint(namespace: &str, partition: u32, index: usize) -> Value {
    json!({
        "consumer_group": GROUP,
        "eventhub_name": HUB,
        "fully_qualified_namespace": namespace,
        "offset": offset_of(index),
        "partition_id": partition.to_string(),
        "sequence_number": index,
    })
}

fn owners(listed: &Value) -> Vec<(String, String)> {
    listed["ownership"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["partition_id"].as_str().unwrap().to_owned(),
                // A released blob's empty `ownerid` lists as None.
                o["owner_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn microsofts_checkpoint_store_lists_the_checkpoints_and_ownership_sluice_writes() {
    const TEST: &str =
        "microsofts_checkpoint_store_lists_the_checkpoints_and_ownership_sluice_writes";
    let Some(judge) = Judge::new(TEST) else {
        return;
    };
    let (n0, n1) = (30, 17);
    let hub = FakeEventHubs::start(HUB, "listen", KEY, vec![events(0, 0..n0), events(1, 0..n1)]);
    let namespace = format!("127.0.0.1:{}", hub.port);
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), &hub, &judge.container, 2);
    let out = tmp.path().join("out");

    let mut run = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    run.wait_for("every event", Duration::from_secs(60), || {
        line_count(&committed(&out, "input", "jsonl")) >= n0 + n1
    });
    let owner = owner_id(&run.stderr_so_far());
    let want_checkpoints = json!([
        checkpoint(&namespace, 0, n0 - 1),
        checkpoint(&namespace, 1, n1 - 1)
    ]);
    let want_owners = vec![
        ("0".to_owned(), owner.clone()),
        ("1".to_owned(), owner.clone()),
    ];
    let listed = judge.list_until(
        &mut run,
        &namespace,
        "sluice's checkpoints and ownership",
        |listed| listed["checkpoints"] == want_checkpoints && owners(listed) == want_owners,
    );
    for o in listed["ownership"].as_array().unwrap() {
        assert!(o["etag"].as_str().is_some_and(|e| !e.is_empty()), "{o}");
    }
    assert!(!listed.to_string().contains(KEY), "{listed}");

    run.interrupt();
    let ended = run.wait(Duration::from_secs(30));
    ended.assert_success();
    assert_eq!(values(&out).len(), n0 + n1, "each event once");
    // A processor that stops lets its partitions go (`ownerid` ""); so does sluice.
    let after = judge.list(&namespace);
    assert_eq!(
        owners(&after),
        vec![
            ("0".to_owned(), String::new()),
            ("1".to_owned(), String::new())
        ],
        "{after}"
    );
    assert_eq!(after["checkpoints"], want_checkpoints, "{after}");
    assert!(!ended.stderr.contains(KEY));
}

#[test]
fn a_pipeline_resumes_after_the_checkpoints_of_microsofts_processor_and_takes_its_partitions_over()
{
    const TEST: &str = "a_pipeline_resumes_after_the_checkpoints_of_microsofts_processor_and_takes_its_partitions_over";
    let Some(judge) = Judge::new(TEST) else {
        return;
    };
    const N: usize = 20;
    let hub = FakeEventHubs::start(
        HUB,
        "listen",
        KEY,
        (0..3).map(|p| events(p, 0..N)).collect(),
    );
    let namespace = format!("127.0.0.1:{}", hub.port);
    // The processor got to event 9 of partition 0 and event 14 of partition 1; partition 2
    // has no checkpoint (it starts at `start`, the earliest event).
    let upto = [(0, 9), (1, 14)];
    let done = judge.process(&hub, &upto);
    assert_eq!(done.trim(), "[\"0\", \"1\"]", "the processor's checkpoints");

    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), &hub, &judge.container, 3);
    let out = tmp.path().join("out");
    let mut want: Vec<String> = (10..N)
        .map(|i| format!("p0-e{i:04}"))
        .chain((15..N).map(|i| format!("p1-e{i:04}")))
        .chain((0..N).map(|i| format!("p2-e{i:04}")))
        .collect();
    want.sort();

    let mut run = Running::start(sluice_run(tmp.path(), &p, &plugins_dir()));
    run.wait_for(
        "the events after the checkpoints",
        Duration::from_secs(60),
        || line_count(&committed(&out, "input", "jsonl")) >= want.len(),
    );
    let owner = owner_id(&run.stderr_so_far());
    let want_checkpoints = json!([
        checkpoint(&namespace, 0, N - 1),
        checkpoint(&namespace, 1, N - 1),
        checkpoint(&namespace, 2, N - 1)
    ]);
    judge.list_until(
        &mut run,
        &namespace,
        "sluice's claims and checkpoints",
        |listed| {
            owners(listed).len() == 3
                && owners(listed).iter().all(|(_, o)| *o == owner)
                && listed["checkpoints"] == want_checkpoints
        },
    );
    // A moment more: nothing else may arrive.
    std::thread::sleep(Duration::from_millis(800));
    run.interrupt();
    run.wait(Duration::from_secs(30)).assert_success();

    assert_eq!(
        values(&out),
        want,
        "exactly the events after the processor's checkpoints"
    );
    for (partition, index) in upto {
        let want = format!(
            "attach {HUB}/ConsumerGroups/{GROUP}/Partitions/{partition} filter amqp.annotation.x-opt-offset > '{}'",
            offset_of(index)
        );
        assert!(
            hub.log()
                .iter()
                .any(|l| l == &want || l.starts_with(&format!("{want} epoch "))),
            "{want} in {:#?}",
            hub.log()
        );
    }
    let want = format!(
        "attach {HUB}/ConsumerGroups/{GROUP}/Partitions/2 filter amqp.annotation.x-opt-offset > '-1'"
    );
    assert!(
        hub.log()
            .iter()
            .any(|l| l == &want || l.starts_with(&format!("{want} epoch "))),
        "{want} in {:#?}",
        hub.log()
    );
}

#[test]
fn ownership_claims_are_conditional_on_the_etag_as_microsofts_processors_expect() {
    const TEST: &str =
        "ownership_claims_are_conditional_on_the_etag_as_microsofts_processors_expect";
    let Some(judge) = Judge::new(TEST) else {
        return;
    };
    let namespace = "myns.servicebus.windows.net";
    let at = Location::resolve(
        &format!("az://{}", judge.container),
        "test",
        Path::new("/"),
        false,
    )
    .unwrap();
    let store =
        AzureCheckpointStore::new(at.clone(), namespace.into(), HUB, GROUP, "host-a".into());
    let other = AzureCheckpointStore::new(at, namespace.into(), HUB, GROUP, "host-b".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lost = |r: Result<_, OwnershipError>| matches!(r, Err(OwnershipError::Lost { .. }));

    // Nobody owns partition 0: the first claim (If-None-Match: *) takes, a second does not.
    let first = rt.block_on(store.claim(0, "host-a", None)).unwrap();
    assert!(first.etag.is_some());
    assert!(lost(rt.block_on(other.claim(0, "host-b", None))));
    assert_eq!(
        owners(&judge.list(namespace)),
        vec![("0".to_owned(), "host-a".to_owned())]
    );
    // The holder renews on its ETag; a claim on a stale ETag loses.
    rt.block_on(store.renew(0, "host-a")).unwrap();
    assert!(lost(rt.block_on(other.claim(
        0,
        "host-b",
        first.etag.as_deref()
    ))));
    // A Python processor claims it on the ETag it lists: sluice's renewal then loses.
    judge.run(&[
        "claim",
        &judge.container,
        namespace,
        HUB,
        GROUP,
        "0",
        "python-processor",
    ]);
    assert!(lost(rt.block_on(store.renew(0, "host-a"))));
    assert_eq!(
        owners(&judge.list(namespace)),
        vec![("0".to_owned(), "python-processor".to_owned())]
    );
    // Taking over reads the current ETag first; releasing leaves `ownerid` empty.
    let took = rt.block_on(store.take_over(0)).unwrap();
    assert_eq!(took.owner_id, "host-a");
    let listed = rt.block_on(store.list_ownership()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].owner_id, "host-a");
    rt.block_on(store.release(0)).unwrap();
    assert_eq!(
        owners(&judge.list(namespace)),
        vec![("0".to_owned(), String::new())]
    );
}
