//! JavaScript plugins (issue #15): `plugin new --lang js` for every kind builds and passes its
//! own `node --test`; a JS plugin is held to its memory cap and time budget, a thrown error is
//! classified and named, and a JS plugin is hot-swapped in a running pipeline.
//!
//! A JS component embeds SpiderMonkey (about 12 MB), which takes a minute or more to compile:
//! every build and run here shares one compiled-plugin cache under the target directory, so
//! each component is compiled once (by the `plugin check` after its build).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::Digest;
use sluice::batch::RecordBatch;
use sluice::plugin::limits::Grants;
use sluice::plugin::{CallContext, Failure};
use sluice_tests::{runtime_with_cache, sluice_bin};

use crate::engine::{Running, generated, generator_of, sluice_run, write_pipeline};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The compiled-plugin cache every JS test shares.
fn shared_cache() -> PathBuf {
    target_dir().join("js-plugin-cache")
}

fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `sluice ARGS` in `dir` with the shared cache; panics with its output when it fails.
fn sluice(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(sluice_bin())
        .args(args)
        .current_dir(dir)
        .env("SLUICE_CACHE_DIR", shared_cache())
        .output()
        .expect("sluice runs");
    assert!(
        out.status.success(),
        "sluice {args:?} in {} failed ({}):\n{}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The fixture `tests/fixtures/js-probe` with `VERSION` set to `version`, built outside the
/// checkout once per run, and kept across runs while its sources are unchanged; returns the
/// `.wasm`.
fn probe(version: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(wasm) = built.get(version) {
        return wasm.clone();
    }
    let source = checkout().join("tests/fixtures/js-probe");
    let dir = target_dir().join(format!("js-builds/probe-{version}"));
    let app = std::fs::read_to_string(source.join("app.js")).unwrap();
    let patched = app.replace("'v1:'", &format!("'{version}:'"));
    assert!(
        version == "v1" || patched != app,
        "the fixture names its version"
    );
    let files = [
        "sluice.js",
        "package.json",
        "js-probe.toml",
        "wit/plugin.wit",
    ];
    let mut digest = sha2::Sha256::new();
    digest.update(&patched);
    for file in files {
        digest.update(std::fs::read(source.join(file)).unwrap());
    }
    let digest = format!("{:x}", digest.finalize());
    let wasm = dir.join("js-probe.wasm");
    let stamp = dir.join(".sluice-source-digest");
    if !(wasm.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|d| d == digest)) {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("wit")).unwrap();
        for file in files {
            std::fs::copy(source.join(file), dir.join(file)).unwrap();
        }
        std::fs::write(dir.join("app.js"), patched).unwrap();
        sluice(&dir, &["plugin", "build"]);
        std::fs::write(&stamp, digest).unwrap();
    }
    built.insert(version.to_owned(), wasm.clone());
    wasm
}

fn ctx(batch_id: u64) -> CallContext {
    CallContext {
        stream: "events".into(),
        partition: 3,
        batch_id,
        batch_time_ms: 1_700_000_000_000,
        part: 0,
    }
}

fn batch(values: &[&str]) -> RecordBatch {
    RecordBatch::from_values(values.iter().map(|v| v.as_bytes()))
}

fn values(b: &RecordBatch) -> Vec<String> {
    (0..b.len())
        .map(|i| String::from_utf8_lossy(b.value(i)).into_owned())
        .collect()
}

/// `plugin new` of `kind` in `root`, then `node --test` and `plugin build` in the project.
fn made_built_and_tested(root: &Path, kind: &str) {
    let name = format!("my-{kind}");
    sluice(
        root,
        &["plugin", "new", &name, "--lang", "js", "--kind", kind],
    );
    let dir = root.join(&name);
    let node = Command::new("node")
        .arg("--test")
        .current_dir(&dir)
        .output()
        .expect("node runs");
    assert!(
        node.status.success(),
        "node --test in the new {kind} project:\n{}\n{}",
        String::from_utf8_lossy(&node.stdout),
        String::from_utf8_lossy(&node.stderr)
    );
    let built = sluice(&dir, &["plugin", "build"]);
    let shown = String::from_utf8_lossy(&built.stdout);
    let world = match kind {
        "transform" => "transformer",
        "aggregate" => "aggregator",
        other => other,
    };
    assert!(
        shown.contains(&format!("world     {world}")),
        "plugin build checks the {kind} component: {shown}"
    );
    assert!(
        !shown.contains("wasi:http"),
        "a JS component imports no HTTP: {shown}"
    );
}

#[test]
fn every_kind_of_js_plugin_is_made_built_and_passes_its_own_tests() {
    let tmp = tempfile::tempdir().unwrap();
    // The four builds run at once: each is mostly componentize-js and one compile.
    std::thread::scope(|s| {
        for kind in ["transform", "sink", "receiver", "aggregate"] {
            let root = tmp.path();
            s.spawn(move || made_built_and_tested(root, kind));
        }
    });
    let dir = tmp.path().join("my-transform");
    let out = sluice(
        &dir,
        &[
            "plugin",
            "test",
            "my-transform.wasm",
            "--text",
            "hello",
            "--text",
            "",
            "--text",
            "World",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\nWORLD\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reject record 1 \"\": empty value"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_js_plugin_is_stopped_at_its_memory_cap_and_time_budget_and_the_host_goes_on() {
    let rt = runtime_with_cache(&shared_cache());
    let p = rt.load_file(&probe("v1"), &Grants::default()).unwrap();
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let cap = p.info().limits.memory;
    let err = stage
        .transform(&ctx(7), &batch(&["a", "alloc"]))
        .unwrap_err();
    match err.failure {
        Failure::OutOfMemory { cap: c, requested } => {
            assert_eq!(c, cap);
            assert!(requested > cap);
        }
        ref other => panic!("expected out of memory, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("plugin `js-probe`") && msg.contains("batch 7"),
        "{msg}"
    );

    let budget = p.info().limits.time;
    let started = Instant::now();
    let err = stage.transform(&ctx(8), &batch(&["spin"])).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err.failure, Failure::TimedOut { .. }), "{err}");
    assert!(
        took < budget * 4,
        "stopped after {took:?}, budget {budget:?}"
    );

    let out = stage.transform(&ctx(9), &batch(&["fine"])).unwrap();
    assert_eq!(values(&out.batch), ["v1:fine"]);
}

#[test]
fn a_thrown_js_error_is_a_classified_error_naming_it() {
    let rt = runtime_with_cache(&shared_cache());
    let p = rt.load_file(&probe("v1"), &Grants::default()).unwrap();
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let err = stage.transform(&ctx(7), &batch(&["throw"])).unwrap_err();
    match &err.failure {
        Failure::Fatal(m) => assert!(
            m.contains("RangeError: the probe threw on purpose") && m.contains("app.js"),
            "the message names the error and where it was thrown: {m}"
        ),
        other => panic!("expected a fatal error, got {other}"),
    }
    assert!(!err.retryable(), "a thrown error is not retried blindly");
    assert!(err.to_string().contains("plugin `js-probe`"), "{err}");
}

const LIVE: &str = "goes live with the next batch";
const DONE: &str = "Batch done.";

fn wait_for(run: &mut Running, what: &str, done: impl Fn(&str) -> bool) {
    let t0 = Instant::now();
    while !done(&run.stderr_so_far()) {
        run.assert_alive(&format!("while waiting for {what}"));
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no {what} within 300 s; the log:\n{}",
            run.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_js_plugin_is_hot_swapped_in_a_running_pipeline_and_nothing_is_lost() {
    let (v1, v2) = (probe("v1"), probe("v2"));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(
        plugins.join("tag.toml"),
        "version = 1\nname = \"tag\"\nplugin-version = \"1\"\n\n[limits]\nmemory = \"256MiB\"\ntime = \"2s\"\n",
    )
    .unwrap();
    std::fs::copy(&v1, plugins.join("tag.wasm")).unwrap();
    let pipeline = write_pipeline(
        root,
        r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 2
rate = 5000

[[transform]]
plugin = "tag"

[[sink]]
kind = "files"
path = "out"

[swap]
poll-interval = "50ms"
"#,
    );
    let mut cmd = sluice_run(root, &pipeline, &plugins);
    cmd.env("SLUICE_CACHE_DIR", shared_cache());
    let mut run = Running::start(cmd);
    wait_for(&mut run, "two batches on v1", |log| {
        log.matches(DONE).count() >= 2
    });
    std::fs::copy(&v2, plugins.join("tag.wasm")).unwrap();
    wait_for(&mut run, "v2 to go live", |log| log.contains(LIVE));
    let done = run.stderr_so_far().matches(DONE).count();
    wait_for(&mut run, "two batches on v2", |log| {
        log.matches(DONE).count() >= done + 2
    });
    run.terminate();
    run.wait(Duration::from_secs(60)).assert_success();

    let g = generator_of(&pipeline);
    let mut seen = [false, false];
    for (p, batches) in output(root) {
        let lines: Vec<&String> = batches.values().flatten().collect();
        let want = generated(&g, p, lines.len() as u64);
        let mut last = "v1:";
        for (batch, batch_lines) in &batches {
            let Some(first) = batch_lines.first() else {
                continue;
            };
            let version = if first.starts_with("v2:") {
                "v2:"
            } else {
                "v1:"
            };
            assert!(
                batch_lines.iter().all(|l| l.starts_with(version)),
                "partition {p} batch {batch} ran one version whole"
            );
            assert!(version >= last, "partition {p}: v2 never goes back to v1");
            last = version;
            seen[usize::from(version == "v2:")] = true;
        }
        for (i, (line, w)) in lines.iter().zip(&want).enumerate() {
            assert_eq!(&line[3..], w.as_str(), "partition {p} record {i}");
        }
    }
    assert_eq!(seen, [true, true], "both versions ran");
}

/// Each batch's output lines, by partition: `batch-<id>-part-<p>.<ext>` of the stream `input`.
fn output(root: &Path) -> BTreeMap<u32, BTreeMap<u64, Vec<String>>> {
    let mut parts: BTreeMap<u32, BTreeMap<u64, Vec<String>>> = BTreeMap::new();
    for e in std::fs::read_dir(root.join("out/input")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("batch-") else {
            continue;
        };
        let (batch, rest) = rest.split_once("-part-").unwrap();
        let partition = rest.split('.').next().unwrap();
        let lines = std::fs::read_to_string(&path).unwrap();
        parts.entry(partition.parse().unwrap()).or_default().insert(
            batch.parse().unwrap(),
            lines.lines().map(str::to_owned).collect(),
        );
    }
    parts
}

#[test]
fn the_js_examples_and_fixture_carry_the_current_helper_and_contract() {
    let helper = std::fs::read_to_string(checkout().join("sdk/js/sluice.js")).unwrap();
    let wit = std::fs::read_to_string(checkout().join("wit/plugin.wit")).unwrap();
    for dir in [
        "examples/json-upper/js",
        "examples/identity/js",
        "tests/fixtures/js-probe",
    ] {
        let dir = checkout().join(dir);
        assert_eq!(
            std::fs::read_to_string(dir.join("sluice.js")).unwrap(),
            helper,
            "{}/sluice.js is a copy of sdk/js/sluice.js",
            dir.display()
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("wit/plugin.wit")).unwrap(),
            wit,
            "{}/wit/plugin.wit is a copy of wit/plugin.wit",
            dir.display()
        );
    }
}
