//! Support for sluice's end-to-end tests: where the built components are, and small helpers.
//!
//! The components are built once per test run by `scripts/build-plugins` (which `scripts/test`
//! runs before `cargo test`), never by a `build.rs`. A test that cannot find them fails with a
//! message saying so; it is never skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluice::plugin::PluginRuntime;
use sluice::plugin::limits::RuntimeConfig;

/// The directory `scripts/build-plugins` wrote into: `$SLUICE_TEST_COMPONENTS`, else
/// `$CARGO_TARGET_DIR/sluice-plugins`, else `/root/.cache/sluice/target/sluice-plugins`.
pub fn components_dir() -> PathBuf {
    let dir = std::env::var_os("SLUICE_TEST_COMPONENTS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("sluice-plugins"))
        })
        .unwrap_or_else(|| PathBuf::from("/root/.cache/sluice/target/sluice-plugins"));
    assert!(
        dir.join("plugins").join("uppercase.wasm").exists(),
        "the test components are not built in {}: run scripts/build-plugins (scripts/test does)",
        dir.display()
    );
    dir
}

/// The first-party plugins directory.
pub fn plugins_dir() -> PathBuf {
    components_dir().join("plugins")
}

/// The misbehaving fixtures directory.
pub fn fixtures_dir() -> PathBuf {
    components_dir().join("fixtures")
}

/// A runtime whose compiled-component cache is `cache` (a test's own temporary directory, so
/// tests do not share cache state).
pub fn runtime_with_cache(cache: &Path) -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(cache.to_owned()),
        ..RuntimeConfig::default()
    })
    .expect("the plugin runtime starts")
}

/// Copies `names` (each `NAME.wasm` and its `NAME.toml` if any) from `from` into a fresh
/// directory, so a test can build the plugin directory it needs.
pub fn plugin_dir_with(from: &Path, names: &[&str], into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    for name in names {
        for ext in ["wasm", "toml"] {
            let src = from.join(format!("{name}.{ext}"));
            if src.exists() {
                std::fs::copy(&src, into.join(format!("{name}.{ext}"))).unwrap();
            }
        }
    }
    into.to_owned()
}

/// Parameters from pairs.
pub fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `sluice` binary built with the tests.
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash> -> target/<profile>/sluice
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("sluice");
    assert!(
        bin.exists(),
        "the sluice binary is not at {}; build it with cargo build",
        bin.display()
    );
    bin
}

/// Whether the test services must be there: `scripts/test` starts them (`scripts/services
/// start`) and sets `SLUICE_SERVICES=1`, so a test that needs one fails when it is missing.
pub fn services_required() -> bool {
    std::env::var("SLUICE_SERVICES").is_ok_and(|v| v == "1")
}

/// Azurite's blob service, as `scripts/services start` left it (its env file sourced): a store
/// on the test container. When it is not configured or does not answer, the test fails, or
/// with `SLUICE_SKIP_SERVICES=1` gets `None`, the skip printed and recorded (see [`services`]).
pub fn azurite(test: &str) -> Option<std::sync::Arc<dyn object_store::ObjectStore>> {
    let Ok(container) = std::env::var("SLUICE_AZURITE_CONTAINER") else {
        skip_or_fail(
            test,
            "Azurite is not configured (SLUICE_AZURITE_CONTAINER is unset)",
        );
        return None;
    };
    // Where object_store's emulator mode connects.
    let url = std::env::var("AZURITE_BLOB_STORAGE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:10000".to_owned());
    let addr = host_port(&url, 10000);
    if !answers(&addr) {
        skip_or_fail(
            test,
            &format!("Azurite does not answer at {addr} (AZURITE_BLOB_STORAGE_URL)"),
        );
        return None;
    }
    let account = std::env::var("SLUICE_AZURITE_ACCOUNT").unwrap_or("devstoreaccount1".into());
    let mut builder = object_store::azure::MicrosoftAzureBuilder::new()
        .with_use_emulator(true)
        .with_account(account)
        .with_container_name(container);
    if let Ok(key) = std::env::var("SLUICE_AZURITE_KEY") {
        builder = builder.with_access_key(key);
    }
    let store = builder
        .build()
        .unwrap_or_else(|e| panic!("{test}: cannot configure Azurite: {e}"));
    Some(std::sync::Arc::new(store))
}

/// A prefix no other test run uses: `name/<pid>-<nanos>`.
pub fn unique_prefix(name: &str) -> object_store::path::Path {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    object_store::path::Path::from(format!("{name}/{}-{nanos}", std::process::id()))
}

pub mod eventhubs_server;
mod services;

pub use services::{WhenMissing, answers, host_port, missing, skip_or_fail, skipped_file};

/// Whether RabbitMQ answers at [`amqp_url`]'s address, so `test` can use it. When it does not,
/// the test fails with a message saying how to start it (`scripts/services start`) or to opt
/// into skipping; with `SLUICE_SKIP_SERVICES=1` (and not `SLUICE_SERVICES=1`) this returns
/// `false`, the skip printed and recorded in [`skipped_file`].
pub fn services(test: &str) -> bool {
    let addr = host_port(&amqp_url(), 5672);
    answers(&addr)
        || skip_or_fail(
            test,
            &format!("RabbitMQ does not answer at {addr} (SLUICE_AMQP_URL)"),
        )
}

/// The test broker's URL: `$SLUICE_AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672`.
pub fn amqp_url() -> String {
    std::env::var("SLUICE_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned())
}

/// A queue address no other test uses: `/queue/sluice-<what>-<pid>-<ns>`.
pub fn fresh_queue(what: &str) -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("/queue/sluice-{what}-{}-{ns}", std::process::id())
}

/// Waits for `child` to exit and returns its output; kills it and panics naming `what` when it
/// takes longer than `limit`. `each` runs between polls (e.g. to check a server is alive).
pub fn output_within(
    mut child: std::process::Child,
    limit: std::time::Duration,
    what: &str,
    mut each: impl FnMut(),
) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took longer than {limit:?}");
        }
        each();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `rabbitmqctl` on the services' node (as `scripts/services` starts it), e.g. `stop_app`.
pub fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    let state = std::env::var_os("SLUICE_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/sluice/services")
        });
    std::process::Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
        .args(["-n", "sluice@localhost"])
        .args(args)
        .env("HOME", state.join("rabbitmq"))
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODENAME", "sluice@localhost")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("rabbitmqctl runs")
}

/// Publishes durable messages with `fe2o3-amqp`'s `Sender`: each body (a Data section) with
/// the message id `id`, all outcomes awaited.
pub async fn publish(address: &str, messages: &[(String, Vec<u8>)]) {
    publish_as(address, messages, true).await
}

/// [`publish`] as a sender that sets no message id (the ids given only name the messages
/// here): the broker's redeliveries of these cannot be told from new messages.
pub async fn publish_without_ids(address: &str, messages: &[(String, Vec<u8>)]) {
    publish_as(address, messages, false).await
}

async fn publish_as(address: &str, messages: &[(String, Vec<u8>)], with_ids: bool) {
    use fe2o3_amqp::{Connection, Sender, Session};
    use std::time::Duration;
    use tokio::time::timeout;
    let mut conn = Connection::open("sluice-test-publisher", amqp_url().as_str())
        .await
        .expect("the test publisher connects");
    let mut session = Session::begin(&mut conn).await.unwrap();
    let mut sender = Sender::attach(&mut session, format!("pub-{address}"), address)
        .await
        .unwrap();
    // Every step is bounded: a publisher that hangs fails the test saying where, instead of
    // holding the whole suite until CI's limit.
    let settled = std::sync::atomic::AtomicUsize::new(0);
    let limit = Duration::from_secs(60 + messages.len() as u64 / 100);
    let sent = timeout(limit, send_all(&mut sender, messages, with_ids, &settled)).await;
    let settled = settled.into_inner();
    assert!(
        sent.is_ok(),
        "the test publisher (fe2o3-amqp) hung: {settled} of {} messages to {address} settled within {limit:?}",
        messages.len()
    );
    // RabbitMQ 3.10 answers a closing detach in a way fe2o3-amqp calls an illegal state, and a
    // close can then wait for an answer that never comes. Every outcome was awaited above, so
    // the messages are in: each close gets 2 s and is then dropped.
    let _ = timeout(Duration::from_secs(2), sender.close()).await;
    let _ = timeout(Duration::from_secs(2), session.end()).await;
    let _ = timeout(Duration::from_secs(2), conn.close()).await;
}

/// Sends every message (durable, the id as message id when `with_ids`) with at most 500
/// outcomes outstanding, and awaits them all; `settled` counts the outcomes seen.
async fn send_all(
    sender: &mut fe2o3_amqp::Sender,
    messages: &[(String, Vec<u8>)],
    with_ids: bool,
    settled: &std::sync::atomic::AtomicUsize,
) {
    use fe2o3_amqp::Sendable;
    use fe2o3_amqp::types::messaging::{Header, Message, Properties};
    use fe2o3_amqp::types::primitives::Binary;
    use std::sync::atomic::Ordering::Relaxed;
    let mut pending = std::collections::VecDeque::new();
    for (id, body) in messages {
        let m = Message::builder()
            .header(Header::builder().durable(true).build())
            .properties(if with_ids {
                Properties::builder().message_id(id.clone()).build()
            } else {
                Properties::default()
            })
            .data(Binary::from(body.clone()))
            .build();
        pending.push_back(
            sender
                .send_batchable(Sendable::builder().message(m).build())
                .await
                .unwrap(),
        );
        if pending.len() > 500 {
            pending.pop_front().unwrap().await.unwrap();
            settled.fetch_add(1, Relaxed);
        }
    }
    for p in pending {
        p.await.unwrap();
        settled.fetch_add(1, Relaxed);
    }
}

/// `examples/<example>/<lang>` built by `sluice plugin build`, once per test run: the project
/// is copied to `$CARGO_TARGET_DIR/example-builds/<example>-<lang>` and built there (so tests
/// running at once never build into the checkout), and the build is kept across runs while no
/// source file changed (a digest of the project's files, `*.wasm` and build outputs aside).
/// Returns the `.wasm`; panics with the build's output when it fails.
pub fn example_plugin(example: &str, lang: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<BTreeMap<String, PathBuf>> =
        std::sync::Mutex::new(BTreeMap::new());
    let key = format!("{example}-{lang}");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(wasm) = built.get(&key) {
        return wasm.clone();
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(example)
        .join(lang);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("example-builds").join(&key);
    let digest = tree_digest(&source);
    let stamp = dir.join(".sluice-source-digest");
    let wasm = dir.join(format!("{example}.wasm"));
    let fresh = wasm.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|d| d == digest);
    if !fresh {
        sluice::plugin::project::copy_project(&source, &dir).unwrap();
        let out = std::process::Command::new(sluice_bin())
            .args(["plugin", "build"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", target.join("example-builds-cargo"))
            .output()
            .expect("running sluice plugin build");
        assert!(
            out.status.success() && wasm.is_file(),
            "sluice plugin build in {} failed ({}):\n{}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&stamp, &digest).unwrap();
    }
    built.insert(key, wasm.clone());
    wasm
}

/// A digest of every file under `dir` (paths and contents), build outputs aside.
fn tree_digest(dir: &Path) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    for rel in files {
        hash.update(rel.to_string_lossy().as_bytes());
        hash.update(std::fs::read(dir.join(&rel)).unwrap());
    }
    format!("{:x}", hash.finalize())
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if sluice::plugin::project::is_build_output(&name) || name == ".sluice-source-digest" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, files);
        } else {
            files.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

/// Runs `cmd` to the end (stdin closed, stdout and stderr read on threads so a chatty child
/// cannot block on a full pipe), killing it and failing the test past `limit`; its output.
pub fn run_bounded(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} starts: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            panic!("{cmd:?} ran past {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A command's exit status, stdout and stderr, for an assertion's message.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
