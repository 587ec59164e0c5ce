//! The admin endpoint of a running pipeline and `sluice plugin swap` (issue #11): loopback and
//! a token by default, the token never printed, and a version sent through it checked as one
//! dropped in the plugin directory is.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use sha2::Digest;
use sluice_tests::{plugins_dir, sluice_bin};

use crate::engine::{Running, WAIT_TIMEOUT, committed, sluice_run, write_pipeline};
use crate::swap::recorded_versions;

const DONE: &str = "Batch done.";

/// A pipeline whose one step is plugin `tag` (the `uppercase` component), from a generator, to
/// files; the plugin directory is not watched, so only the endpoint swaps.
pub(crate) struct Setup {
    tmp: tempfile::TempDir,
    pub(crate) pipeline: PathBuf,
    plugins: PathBuf,
    /// The digests of `uppercase` and `identity`.
    pub(crate) upper: String,
    pub(crate) same: String,
}

pub(crate) fn digest(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Setup {
    pub(crate) fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let plugins = tmp.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::copy(
            plugins_dir().join("uppercase.wasm"),
            plugins.join("tag.wasm"),
        )
        .unwrap();
        let pipeline = write_pipeline(tmp.path(), &pipeline_text("plugin = \"tag\""));
        Setup {
            upper: digest(&plugins_dir().join("uppercase.wasm")),
            same: digest(&plugins_dir().join("identity.wasm")),
            pipeline,
            plugins,
            tmp,
        }
    }

    pub(crate) fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn admin_file(&self) -> PathBuf {
        self.root().join("checkpoints").join("admin.json")
    }

    /// Starts the pipeline and waits for its admin file and a first batch.
    pub(crate) fn start(&self) -> (Running, Value) {
        let mut run = Running::start(sluice_run(self.root(), &self.pipeline, &self.plugins));
        let file = self.admin_file();
        wait_until(&mut run, "the admin file and a first batch", |r| {
            file.exists() && r.stderr_so_far().contains(DONE)
        });
        let admin: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        (run, admin)
    }

    /// `sluice plugin swap <pipeline> tag <file> <args>`.
    pub(crate) fn swap(&self, file: &Path, args: &[&str]) -> Output {
        Command::new(sluice_bin())
            .args(["plugin", "swap"])
            .arg(&self.pipeline)
            .arg("tag")
            .arg(file)
            .args(args)
            .env_remove("SLUICE_ADMIN_TOKEN")
            .output()
            .unwrap()
    }

    /// A copy of `component` of the test plugins, as `name` in the test's directory.
    pub(crate) fn version(&self, component: &str, name: &str) -> PathBuf {
        self.version_of(&plugins_dir().join(component), name)
    }

    /// A copy of the component at `path`, as `name` in the test's directory.
    pub(crate) fn version_of(&self, path: &Path, name: &str) -> PathBuf {
        let dir = self.root().join("versions");
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join(name);
        std::fs::copy(path, &copy).unwrap();
        copy
    }
}

/// A pipeline from a generator (one partition, 2,000 lines/s) through the step `step` (the
/// body of its `[[transform]]`) to files, 200 ms batches; the plugin directory is not watched.
pub(crate) fn pipeline_text(step: &str) -> String {
    format!(
        r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 1
rate = 2000

[[transform]]
{step}

[[sink]]
kind = "files"
path = "out"

[swap]
watch = false
"#
    )
}

/// Waits (at most [`WAIT_TIMEOUT`]) until `done` holds for the run, which must stay alive.
fn wait_until(run: &mut Running, what: &str, done: impl Fn(&Running) -> bool) {
    let t0 = std::time::Instant::now();
    while !done(run) {
        run.assert_alive(&format!("while waiting for {what}"));
        assert!(
            t0.elapsed() < WAIT_TIMEOUT,
            "no {what} within {WAIT_TIMEOUT:?}; the log:\n{}",
            run.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request to `address`; its status and body.
fn http(address: &str, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

fn get_plugins(address: &str, authorization: Option<&str>) -> (u16, String) {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    http(
        address,
        &format!("GET /v1/plugins HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n"),
    )
}

pub(crate) fn live_digest(address: &str, token: &str) -> String {
    let (status, body) = get_plugins(address, Some(&format!("Bearer {token}")));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["plugins"][0]["name"], "tag", "{v}");
    v["plugins"][0]["digest"].as_str().unwrap().to_owned()
}

pub(crate) fn wait_batches(run: &mut Running, more: usize) {
    let done = run.stderr_so_far().matches(DONE).count();
    wait_until(run, &format!("{more} more batches"), |r| {
        r.stderr_so_far().matches(DONE).count() >= done + more
    });
}

#[test]
fn the_admin_endpoint_listens_on_loopback_refuses_a_missing_or_wrong_token_and_never_prints_it() {
    let s = Setup::new();
    let (mut run, admin) = s.start();
    let mode = std::fs::metadata(s.admin_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the admin file is its owner's only");
    let address = admin["address"].as_str().unwrap().to_owned();
    let token = admin["token"].as_str().unwrap().to_owned();
    assert!(
        address.starts_with("127.0.0.1:"),
        "listens on loopback: {address}"
    );
    assert_eq!(token.len(), 64);
    assert_eq!(admin["pid"].as_u64(), Some(u64::from(run.pid())));

    let (status, body) = get_plugins(&address, None);
    assert_eq!(status, 401, "no token: {body}");
    let wrong = format!("Bearer {}", "0".repeat(64));
    assert_eq!(get_plugins(&address, Some(&wrong)).0, 401, "a wrong token");
    assert_eq!(
        get_plugins(&address, Some(&token)).0,
        401,
        "the token without `Bearer`"
    );
    // A swap without the token is refused before its body is looked at.
    let swap = format!(
        "POST /v1/plugins/tag/swap HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    assert_eq!(http(&address, &swap).0, 401);
    assert_eq!(
        live_digest(&address, &token),
        s.upper,
        "the right token is let in"
    );
    let unknown = format!(
        "GET /v1/nothing HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        http(&address, &unknown).0,
        404,
        "a route the API does not have"
    );
    // The command line with a wrong token file is refused too (exit 2).
    let token_file = s.root().join("wrong-token");
    std::fs::write(&token_file, "0".repeat(64)).unwrap();
    let out = s.swap(
        &s.version("identity.wasm", "tag.wasm"),
        &["--token-file", token_file.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token"));

    wait_batches(&mut run, 1);
    assert_eq!(
        live_digest(&address, &token),
        s.upper,
        "nothing was swapped"
    );
    run.terminate();
    let ended = run.wait(WAIT_TIMEOUT);
    ended.assert_success();
    assert!(
        !ended.stderr.contains(&token) && !ended.stdout.contains(&token),
        "the token is never printed"
    );
    assert!(ended.stderr.contains("The admin endpoint listens"));
    assert!(
        !s.admin_file().exists(),
        "a clean exit removes the admin file"
    );
    // With the pipeline stopped, the command cannot reach it: exit 75.
    let out = s.swap(&s.version("identity.wasm", "tag.wasm"), &[]);
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn plugin_swap_of_a_second_version_goes_live_and_later_batches_run_it() {
    let s = Setup::new();
    let (mut run, admin) = s.start();
    let address = admin["address"].as_str().unwrap().to_owned();
    let token = admin["token"].as_str().unwrap().to_owned();
    wait_batches(&mut run, 1);
    let out = s.swap(&s.version("identity.wasm", "tag.wasm"), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("goes live with the next batch"), "{stdout}");
    assert_eq!(live_digest(&address, &token), s.same);
    // The same version again changes nothing.
    let again = s.swap(&s.version("identity.wasm", "tag.wasm"), &[]);
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already"));
    wait_batches(&mut run, 2);
    run.terminate();
    let ended = run.wait(WAIT_TIMEOUT);
    ended.assert_success();
    assert!(
        ended.stderr.contains("\"from\":\"admin endpoint\""),
        "the log says where it came from"
    );

    let versions = recorded_versions(&s.pipeline);
    let first_same = *versions
        .iter()
        .find(|(_, d)| **d == s.same)
        .unwrap_or_else(|| panic!("no batch ran the new version: {versions:?}"))
        .0;
    assert!(
        versions.range(..first_same).all(|(_, d)| *d == s.upper)
            && versions.range(first_same..).all(|(_, d)| *d == s.same),
        "the batches ran the first version, then the new one: {versions:?}"
    );
    // Each batch's output shows the version it recorded: uppercase, then as generated.
    let out = committed(&s.root().join("out"), "input", "txt");
    let mut later = 0;
    for ((batch, _), lines) in &out {
        let upper = lines.iter().all(|l| *l == l.to_ascii_uppercase());
        assert_eq!(
            upper,
            versions[batch] == s.upper,
            "batch {batch}: {:?}",
            &lines[..1]
        );
        later += usize::from(!upper);
    }
    assert!(later > 0, "batches ran the new version");
}

#[test]
fn a_corrupt_version_or_parameters_init_rejects_are_refused_with_exit_2_and_the_live_version_stays()
{
    let s = Setup::new();
    let (mut run, admin) = s.start();
    let address = admin["address"].as_str().unwrap().to_owned();
    let token = admin["token"].as_str().unwrap().to_owned();

    let corrupt = s.root().join("versions-corrupt").join("tag.wasm");
    std::fs::create_dir_all(corrupt.parent().unwrap()).unwrap();
    std::fs::write(&corrupt, b"\0asm\x0d\0\x01\0 but broken").unwrap();
    let out = s.swap(&corrupt, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("plugin tag")
            && stderr.contains("refused")
            && stderr.contains("live version stays"),
        "the reason is printed: {stderr}"
    );
    assert_eq!(live_digest(&address, &token), s.upper);

    // `identity` takes no parameter: its `init` refuses one.
    let identity = s.version("identity.wasm", "tag.wasm");
    let out = s.swap(&identity, &["--param", "bogus=1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bogus"),
        "the reason names the parameter: {stderr}"
    );
    assert_eq!(live_digest(&address, &token), s.upper);

    // A plugin no step uses: exit 2, and nothing is checked.
    let out = Command::new(sluice_bin())
        .args(["plugin", "swap"])
        .arg(&s.pipeline)
        .arg("nosuch")
        .arg(&identity)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("404") && stderr.contains("nosuch"),
        "{stderr}"
    );

    wait_batches(&mut run, 2);
    run.terminate();
    let ended = run.wait(WAIT_TIMEOUT);
    ended.assert_success();
    assert_eq!(
        ended.stderr.matches("failed its checks").count(),
        2,
        "each refusal is logged"
    );
    let versions = recorded_versions(&s.pipeline);
    assert!(
        versions.values().all(|d| *d == s.upper),
        "every batch ran the live version: {versions:?}"
    );
}

#[test]
fn parameters_given_in_a_swap_are_recorded_with_each_batch_and_a_recompute_uses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for f in ["grep.wasm", "grep.toml"] {
        std::fs::copy(plugins_dir().join(f), plugins.join(f)).unwrap();
    }
    let pipeline = write_pipeline(
        root,
        &pipeline_text("plugin = \"grep\"\nparams = { pattern = \"a\" }"),
    );
    let mut run = Running::start(sluice_run(root, &pipeline, &plugins));
    let admin = root.join("checkpoints").join("admin.json");
    wait_until(&mut run, "the admin file and a first batch", |r| {
        admin.exists() && r.stderr_so_far().contains(DONE)
    });
    let o = Command::new(sluice_bin())
        .args(["plugin", "swap"])
        .arg(&pipeline)
        .arg("grep")
        .arg(plugins.join("grep.wasm"))
        .args(["--param", "pattern=e"])
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    wait_batches(&mut run, 3);
    run.terminate();
    run.wait(Duration::from_secs(60)).assert_success();

    let entries = crate::swap::checkpoint_entries(&pipeline);
    let with: Vec<&Value> = entries
        .iter()
        .filter(|e| e.get("params").is_some())
        .collect();
    assert!(with.len() >= 2, "{entries:?}");
    assert!(
        entries[0].get("params").is_none(),
        "the first batch ran the file's"
    );
    for e in &with {
        assert_eq!(e["params"]["0"]["pattern"], "e", "{e}");
        assert_eq!(e["params"]["0"]["invert"], "false", "{e}");
    }
    // A recompute of a batch that ran with the swapped parameters uses them: its replay gives
    // the live output of that batch exactly.
    let name = |b: u64| format!("input/batch-{b:010}-part-00000.txt");
    let batch = with
        .iter()
        .map(|e| e["batch"].as_u64().unwrap())
        .find(|&b| root.join("out").join(name(b)).exists())
        .expect("a batch with the swapped parameters wrote output");
    let replayed = root.join("replayed");
    let o = Command::new(sluice_bin())
        .arg("replay")
        .arg(&pipeline)
        .args(["--batches", &batch.to_string(), "--out"])
        .arg(&replayed)
        .arg("--plugins")
        .arg(&plugins)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let live = std::fs::read_to_string(root.join("out").join(name(batch))).unwrap();
    let again = std::fs::read_to_string(replayed.join(name(batch))).unwrap();
    assert!(
        !live.is_empty() && live.lines().all(|l| l.contains('e')),
        "{live}"
    );
    assert_eq!(again, live);
}
