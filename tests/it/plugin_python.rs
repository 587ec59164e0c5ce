//! Python plugins (#15), built with componentize-py: a Python author's workflow (`plugin new`
//! for every kind, `python3 -m unittest`, `plugin build`, `plugin test`), the host's limits and
//! error classes on CPython inside a component, a hot swap in a running pipeline, and
//! json-upper in Python against the Rust reference.
//!
//! A Python component carries CPython (about 19 MB) and takes tens of seconds to build and to
//! compile, so the builds are shared: the examples through `example_plugin`, the fault fixture
//! once per run (kept across runs while its sources are unchanged), and compiled components in
//! one cache under the target directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::Digest;
use sluice::batch::RecordBatch;
use sluice::plugin::limits::{Grants, RuntimeConfig};
use sluice::plugin::{CallContext, Failure, PluginRuntime};
use sluice_tests::*;

use crate::engine::{Running, committed, generated, generator_of, sluice_run, write_pipeline};
use crate::swap::recorded_versions;

/// Builds and runs of `sluice` and `python3` in these tests end within this.
const LIMIT: Duration = Duration::from_secs(900);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// One compiled-component cache for every Python test and run: compiling CPython takes ~30 s.
fn cache() -> PathBuf {
    target().join("python-plugin-cache")
}

fn sluice() -> Command {
    let mut c = Command::new(sluice_bin());
    c.env("SLUICE_CACHE_DIR", cache()).env("NO_COLOR", "1");
    c
}

fn ok(cmd: &mut Command) -> Output {
    let out = run_bounded(cmd, LIMIT);
    assert!(out.status.success(), "{cmd:?}:\n{}", output_text(&out));
    out
}

/// `tests/fixtures/python-faults` with the SDK's helper and the WIT beside it, built once per
/// run (and kept across runs while those sources are unchanged).
fn faults_fixture() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let fixture = repo().join("tests/fixtures/python-faults");
            let mut files: Vec<(String, Vec<u8>)> = Vec::new();
            for e in std::fs::read_dir(&fixture).unwrap() {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                files.push((name, std::fs::read(&path).unwrap()));
            }
            for name in ["sluice.py", "sluice_component.py"] {
                let text = std::fs::read(repo().join("sdk/python").join(name)).unwrap();
                files.push((name.to_owned(), text));
            }
            let wit = std::fs::read(repo().join("wit/plugin.wit")).unwrap();
            files.push(("wit/plugin.wit".to_owned(), wit));
            files.sort();
            let mut digest = sha2::Sha256::new();
            for (name, bytes) in &files {
                digest.update(name.as_bytes());
                digest.update((bytes.len() as u64).to_le_bytes());
                digest.update(bytes);
            }
            let digest = format!("{:x}", digest.finalize());
            let dir = target().join("python-fixtures/python-faults");
            let wasm = dir.join("python-faults.wasm");
            let stamp = dir.join(".sluice-source-digest");
            if wasm.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|d| d == digest) {
                return wasm;
            }
            std::fs::remove_dir_all(&dir).ok();
            std::fs::create_dir_all(dir.join("wit")).unwrap();
            for (name, bytes) in &files {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
            ok(sluice().args(["plugin", "build"]).current_dir(&dir));
            std::fs::write(&stamp, digest).unwrap();
            wasm
        })
        .clone()
}

fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(cache()),
        ..RuntimeConfig::default()
    })
    .expect("the plugin runtime starts")
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
    let mut b = RecordBatch::default();
    for (i, v) in values.iter().enumerate() {
        b.push(None, v.as_bytes(), Some(1_000 + i as i64));
    }
    b
}

fn values(b: &RecordBatch) -> Vec<String> {
    (0..b.len())
        .map(|i| String::from_utf8_lossy(b.value(i)).into_owned())
        .collect()
}

#[test]
fn python_projects_of_every_kind_pass_their_unittests_build_and_the_transform_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let kinds = ["transform", "sink", "receiver", "aggregate"];
    for kind in kinds {
        let name = format!("py-{kind}");
        ok(sluice()
            .args(["plugin", "new", &name, "--lang", "python", "--kind", kind])
            .current_dir(tmp.path()));
        let dir = tmp.path().join(&name);
        for file in [
            "plugin.py",
            "test_plugin.py",
            "app.py",
            "sluice.py",
            "README.md",
        ] {
            assert!(dir.join(file).is_file(), "{kind}: no {file}");
        }
        // The plugin's logic runs natively, without componentize-py's bindings.
        let tests = ok(Command::new("python3")
            .args(["-m", "unittest", "-v"])
            .current_dir(&dir));
        let report = String::from_utf8_lossy(&tests.stderr);
        assert!(
            report.contains("\nOK") && report.contains("Ran ") && !report.contains("Ran 0 tests"),
            "{kind}: {report}"
        );
    }
    // Two builds at a time (each is componentize-py, then the host compiles the component).
    for pair in kinds.chunks(2) {
        let builds: Vec<_> = pair
            .iter()
            .map(|kind| {
                let dir = tmp.path().join(format!("py-{kind}"));
                std::thread::spawn(move || {
                    run_bounded(sluice().args(["plugin", "build"]).current_dir(&dir), LIMIT)
                })
            })
            .collect();
        for (kind, build) in pair.iter().zip(builds) {
            let out = build.join().unwrap();
            assert!(
                out.status.success(),
                "plugin build of {kind}:\n{}",
                output_text(&out)
            );
            let world = match *kind {
                "transform" => "transformer",
                "aggregate" => "aggregator",
                other => other,
            };
            let printed = String::from_utf8_lossy(&out.stdout);
            assert!(
                printed.contains(world),
                "plugin build of {kind} checks a component of world {world}:\n{printed}"
            );
            assert!(
                tmp.path()
                    .join(format!("py-{kind}/py-{kind}.wasm"))
                    .is_file()
            );
        }
    }
    let wasm = tmp.path().join("py-transform/py-transform.wasm");
    let out = ok(sluice()
        .args(["plugin", "test"])
        .arg(&wasm)
        .args(["--text", "hello", "--text", "", "--text", "Wörld"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\nWöRLD\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reject record 1 \"\": empty value"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn a_python_plugin_past_its_memory_cap_or_time_budget_is_stopped_with_the_limit_error_and_the_host_goes_on()
 {
    let rt = runtime();
    let p = rt.load_file(&faults_fixture(), &Grants::default()).unwrap();
    let limits = p.info().limits;

    let hog = p.transformer(&params(&[("fault", "alloc")])).unwrap();
    let err = hog.transform(&ctx(7), &batch(&["x"])).unwrap_err();
    match err.failure {
        Failure::OutOfMemory { cap, requested } => {
            assert_eq!(cap, limits.memory);
            assert!(requested > cap, "{err}");
        }
        ref other => panic!("expected out of memory, got {other} ({err})"),
    }
    assert!(err.to_string().contains("memory cap"), "{err}");

    let spin = p.transformer(&params(&[("fault", "loop")])).unwrap();
    let started = Instant::now();
    let err = spin.transform(&ctx(8), &batch(&["x"])).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err.failure, Failure::TimedOut { .. }), "{err}");
    assert!(
        took >= limits.time && took < limits.time * 2,
        "stopped after {took:?}, budget {:?}",
        limits.time
    );

    // The host, the runtime and the plugin go on: a well-behaved stage of the same component.
    let fine = p.transformer(&params(&[("fault", "none")])).unwrap();
    let out = fine.transform(&ctx(9), &batch(&["fine", "too"])).unwrap();
    assert_eq!(values(&out.batch), ["FINE", "TOO"]);
}

#[test]
fn a_python_exception_is_a_classified_error_with_the_tracebacks_last_line_and_its_line() {
    let rt = runtime();
    let wasm = faults_fixture();
    let p = rt.load_file(&wasm, &Grants::default()).unwrap();
    let source =
        std::fs::read_to_string(repo().join("tests/fixtures/python-faults/plugin.py")).unwrap();
    let line = 1 + source
        .lines()
        .position(|l| l.contains("return a / b"))
        .unwrap();

    let stage = p.transformer(&params(&[("fault", "raise")])).unwrap();
    let err = stage
        .transform(&ctx(7), &batch(&["a", "boom", "c"]))
        .unwrap_err();
    let Failure::Fatal(message) = &err.failure else {
        panic!("an unexpected exception is fatal: {err}");
    };
    assert!(
        message.contains("ZeroDivisionError: division by zero"),
        "{message}"
    );
    assert!(
        message.contains(&format!("plugin.py:{line} in ratio")),
        "{message}"
    );
    // The instance goes on after the error.
    let out = stage.transform(&ctx(8), &batch(&["fine"])).unwrap();
    assert_eq!(values(&out.batch), ["FINE"]);

    // The helper's own exceptions are the WIT error cases.
    type Case = (&'static str, fn(&Failure) -> bool);
    let cases: [Case; 3] = [
        (
            "retry",
            |f| matches!(f, Failure::Retryable(m) if m == "busy downstream"),
        ),
        (
            "bad",
            |f| matches!(f, Failure::BadRecord { index: 1, reason } if reason == "a bad value"),
        ),
        (
            "fatal",
            |f| matches!(f, Failure::Fatal(m) if m == "broken invariant"),
        ),
    ];
    for (fault, expected) in cases {
        let stage = p.transformer(&params(&[("fault", fault)])).unwrap();
        let err = stage
            .transform(&ctx(9), &batch(&["a", "boom"]))
            .unwrap_err();
        assert!(expected(&err.failure), "fault {fault}: {err}");
    }

    // `sluice plugin test` fails with the same message, naming the plugin.
    let out = run_bounded(
        sluice().args(["plugin", "test"]).arg(&wasm).args([
            "--params",
            "fault=raise",
            "--text",
            "boom",
        ]),
        LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        err.contains("plugin `python-faults`")
            && err.contains("ZeroDivisionError: division by zero")
            && err.contains(&format!("plugin.py:{line}")),
        "{}",
        output_text(&out)
    );
}

#[test]
fn json_upper_in_python_matches_the_rust_version_byte_for_byte_on_the_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = ok(Command::new("python3").arg(repo().join("examples/json-upper/corpus.py")));
    let input = tmp.path().join("corpus.jsonl");
    std::fs::write(&input, &corpus.stdout).unwrap();
    let run = |lang: &str| {
        let wasm = example_plugin("json-upper", lang);
        let out = ok(sluice()
            .args(["-q", "plugin", "test"])
            .arg(&wasm)
            .arg("--input")
            .arg(&input));
        let rejects: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("reject record"))
            .map(str::to_owned)
            .collect();
        (out.stdout, rejects)
    };
    let (rust_out, rust_rejects) = run("rust");
    let (py_out, py_rejects) = run("python");
    assert_eq!(
        rust_out.iter().filter(|&&b| b == b'\n').count() + rust_rejects.len(),
        10_000
    );
    assert!(!rust_rejects.is_empty());
    assert!(rust_out == py_out, "the outputs differ");
    assert_eq!(rust_rejects, py_rejects);
}

#[test]
fn the_python_examples_carry_the_sdks_helper_and_the_wit_unchanged() {
    for example in ["json-upper", "identity"] {
        let dir = repo().join("examples").join(example).join("python");
        for (copy, original) in [
            ("sluice.py", "sdk/python/sluice.py"),
            ("sluice_component.py", "sdk/python/sluice_component.py"),
            ("wit/plugin.wit", "wit/plugin.wit"),
        ] {
            assert_eq!(
                std::fs::read_to_string(dir.join(copy)).unwrap(),
                std::fs::read_to_string(repo().join(original)).unwrap(),
                "examples/{example}/python/{copy} differs from {original}: copy it again"
            );
        }
        let tests = run_bounded(
            Command::new("python3")
                .args(["-m", "unittest"])
                .current_dir(&dir),
            LIMIT,
        );
        assert!(tests.status.success(), "{example}: {}", output_text(&tests));
    }
}

/// The plugin directory of the swap: `tag.toml` and, as `tag.wasm`, Python version `v1`.
fn swap_dir(root: &Path, v1: &[u8]) -> PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tag.toml"),
        "version = 1\nname = \"tag\"\nplugin-version = \"1\"\n\n[limits]\nmemory = \"64MiB\"\ntime = \"5s\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("tag.wasm"), v1).unwrap();
    dir
}

fn digest(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

fn wait_for(run: &mut Running, what: &str, limit: Duration, done: impl Fn(&str) -> bool) {
    let t0 = Instant::now();
    while !done(&run.stderr_so_far()) {
        run.assert_alive(&format!("while waiting for {what}"));
        assert!(
            t0.elapsed() < limit,
            "no {what} within {limit:?}; the log:\n{}",
            run.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_python_plugin_is_hot_swapped_in_a_running_pipeline_and_no_record_is_lost() {
    // v1 passes every value through; v2 upper-cases them: each batch's output shows its version.
    let v1 = std::fs::read(example_plugin("identity", "python")).unwrap();
    let v2 = std::fs::read(faults_fixture()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let plugins = swap_dir(root, &v1);
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
    // Compiling CPython once is enough: the tests' shared cache.
    cmd.env("SLUICE_CACHE_DIR", cache());
    let mut run = Running::start(cmd);
    let done = |log: &str| log.matches("Batch done.").count();
    wait_for(
        &mut run,
        "three batches on v1",
        Duration::from_secs(300),
        |l| done(l) >= 3,
    );
    std::fs::write(plugins.join("tag.wasm"), &v2).unwrap();
    wait_for(&mut run, "v2 to go live", Duration::from_secs(300), |l| {
        l.contains("goes live with the next batch")
    });
    let after = done(&run.stderr_so_far());
    wait_for(
        &mut run,
        "three batches on v2",
        Duration::from_secs(120),
        |l| done(l) >= after + 3,
    );
    run.terminate();
    run.wait(Duration::from_secs(60)).assert_success();

    let (d1, d2) = (digest(&v1), digest(&v2));
    let versions = recorded_versions(&pipeline);
    assert!(
        versions.values().any(|d| *d == d1) && versions.values().any(|d| *d == d2),
        "batches ran on both versions: {versions:?}"
    );
    let first_v2 = *versions.iter().find(|(_, d)| **d == d2).unwrap().0;
    assert!(
        versions.iter().all(|(b, d)| *d
            == if *b < first_v2 {
                d1.clone()
            } else {
                d2.clone()
            }),
        "v1 ran until v2 replaced it, then v2 only: {versions:?}"
    );
    // Per partition, the output is the generated lines in order, none lost or repeated, each
    // batch as its recorded version made it.
    let g = generator_of(&pipeline);
    let out = committed(&root.join("out"), "input", "txt");
    let mut per_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for ((batch, partition), lines) in &out {
        let upper = versions[batch] == d2;
        per_partition
            .entry(*partition)
            .or_default()
            .extend(lines.iter().map(|l| {
                assert_eq!(
                    *l == l.to_uppercase(),
                    upper || *l == l.to_uppercase() && *l == l.to_lowercase(),
                    "batch {batch} ran {}: {l:?}",
                    if upper { "v2" } else { "v1" }
                );
                l.to_lowercase()
            }));
    }
    assert_eq!(per_partition.len(), 2, "both partitions wrote output");
    for (partition, lines) in per_partition {
        let expected: Vec<String> = generated(&g, partition, lines.len() as u64)
            .into_iter()
            .map(|l| l.to_lowercase())
            .collect();
        assert!(
            lines == expected,
            "partition {partition}: the output is not the generated lines in order"
        );
    }
}
