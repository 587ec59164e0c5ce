//! C plugins (issue #15): `plugin new --lang c` for every kind, then `make test`, `plugin
//! build` and `plugin test`; a C plugin held to its memory cap and time budget; and a hot swap
//! of a C plugin in a running pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice::batch::RecordBatch;
use sluice::plugin::limits::Grants;
use sluice::plugin::{CallContext, Failure};
use sluice_tests::*;

use crate::engine::{Running, generated, generator_of, sluice_run, write_pipeline};

/// A C build, the first one included (apt-get and cargo install of the toolchain).
const BUILD_LIMIT: Duration = Duration::from_secs(1500);

fn sluice(cache: &Path) -> Command {
    let mut c = Command::new(sluice_bin());
    c.arg("--cache-dir").arg(cache).arg("-q");
    c
}

/// `sluice plugin new NAME --lang c --kind KIND` in `parent`; the project's directory.
fn new_project(parent: &Path, name: &str, kind: &str) -> PathBuf {
    let made = run_bounded(
        sluice(&parent.join("cache"))
            .args(["plugin", "new", name, "--kind", kind, "--lang", "c"])
            .current_dir(parent),
        Duration::from_secs(30),
    );
    assert!(
        made.status.success(),
        "plugin new, {kind}: {}",
        output_text(&made)
    );
    parent.join(name)
}

/// `sluice plugin build` in `project`; its output (stdout: `plugin check`'s).
fn build(project: &Path) -> Output {
    let built = run_bounded(
        sluice(&project.join("../cache"))
            .args(["plugin", "build"])
            .current_dir(project),
        BUILD_LIMIT,
    );
    assert!(
        built.status.success(),
        "plugin build: {}",
        output_text(&built)
    );
    built
}

/// A C project made by `plugin new` with `plugin.c` (and the manifest's limits) replaced,
/// built once per test run under `$CARGO_TARGET_DIR/c-fixtures/NAME`.
fn c_fixture(name: &str, plugin_c: &str, limits: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(wasm) = built.get(name) {
        return wasm.clone();
    }
    let root = sluice_bin()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("c-fixtures");
    std::fs::create_dir_all(&root).unwrap();
    let project = root.join(name);
    if project.exists() {
        std::fs::remove_dir_all(&project).unwrap();
    }
    new_project(&root, name, "transform");
    std::fs::write(project.join("plugin.c"), plugin_c).unwrap();
    std::fs::write(
        project.join(format!("{name}.toml")),
        format!(
            "version = 1\nname = \"{name}\"\nplugin-version = \"0.1.0\"\n\n[limits]\n{limits}\n"
        ),
    )
    .unwrap();
    build(&project);
    let wasm = project.join(format!("{name}.wasm"));
    built.insert(name.to_owned(), wasm.clone());
    wasm
}

#[test]
fn plugin_new_makes_a_c_project_of_every_kind_that_passes_make_test_and_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    for (kind, world) in [
        ("transform", "transformer"),
        ("sink", "sink"),
        ("receiver", "receiver"),
        ("aggregate", "aggregator"),
    ] {
        let name = format!("my-{kind}");
        let project = new_project(tmp.path(), &name, kind);

        // The plugin's logic runs natively, out of the box.
        let tested = run_bounded(
            Command::new("make").arg("test").current_dir(&project),
            Duration::from_secs(120),
        );
        assert!(
            tested.status.success(),
            "make test, {kind}: {}",
            output_text(&tested)
        );
        assert!(
            String::from_utf8_lossy(&tested.stdout).contains(&format!("{name}: ok")),
            "make test, {kind}: {}",
            output_text(&tested)
        );

        let built = build(&project);
        let out = String::from_utf8_lossy(&built.stdout);
        assert!(
            out.lines()
                .any(|l| l.starts_with("world") && l.contains(&format!(" {world} "))),
            "{kind}: {out}"
        );
        let wasm = project.join(format!("{name}.wasm"));
        assert!(wasm.is_file());

        // Not quiet (-q): the sink's log line at commit is an INFO line.
        let tried = run_bounded(
            Command::new(sluice_bin())
                .arg("--cache-dir")
                .arg(&cache)
                .args(["plugin", "test"])
                .arg(&wasm)
                .args(["--text", "hello", "--text", "", "--text", "World"]),
            Duration::from_secs(60),
        );
        match kind {
            "transform" => {
                assert!(tried.status.success(), "{}", output_text(&tried));
                assert_eq!(String::from_utf8_lossy(&tried.stdout), "HELLO\nWORLD\n");
                assert!(
                    String::from_utf8_lossy(&tried.stderr)
                        .contains("reject record 1 \"\": empty value"),
                    "{}",
                    output_text(&tried)
                );
            }
            "sink" => {
                assert!(tried.status.success(), "{}", output_text(&tried));
                let err = String::from_utf8_lossy(&tried.stderr);
                assert!(
                    err.contains("batch 0 of stream test: 3 records") && err.contains("committed"),
                    "the sink logs its count at commit: {}",
                    output_text(&tried)
                );
            }
            _ => {}
        }
    }

    // The receiver and the aggregate in a pipeline: 0..99 summed over the window.
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["my-receiver", "my-aggregate"] {
        for ext in ["wasm", "toml"] {
            let file = format!("{name}.{ext}");
            std::fs::copy(tmp.path().join(name).join(&file), plugins.join(&file)).unwrap();
        }
    }
    let pipeline = write_pipeline(
        tmp.path(),
        r#"version = 1
batch-interval = "200ms"

[source]
kind = "plugin"
plugin = "my-receiver"
params = { count = "100" }

[[transform]]
builtin = "reduce-by-key-and-window"
length = "600ms"
slide = "200ms"
aggregate-plugin = "my-aggregate"
inverse = true

[[sink]]
kind = "files"
path = "out"
"#,
    );
    let run = Running::start(sluice_run(tmp.path(), &pipeline, &plugins));
    run.wait(Duration::from_secs(60)).assert_success();
    let mut sums = Vec::new();
    for e in std::fs::read_dir(tmp.path().join("out/input")).unwrap() {
        let path = e.unwrap().path();
        if path.is_file() {
            sums.push(std::fs::read_to_string(&path).unwrap().trim().to_owned());
        }
    }
    assert!(sums.iter().any(|s| s == "4950"), "window sums: {sums:?}");
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

fn values(b: &RecordBatch) -> Vec<String> {
    (0..b.len())
        .map(|i| String::from_utf8_lossy(b.value(i)).into_owned())
        .collect()
}

#[test]
fn a_c_plugin_is_held_to_its_memory_cap_and_time_budget_and_the_host_goes_on() {
    let wasm = c_fixture(
        "c-limits",
        include_str!("../fixtures/c-limits/plugin.c"),
        "memory = \"16MiB\"\ntime = \"1s\"",
    );
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt.load_file(&wasm, &Grants::default()).unwrap();
    let cap = p.info().limits.memory;
    let budget = p.info().limits.time;
    assert_eq!(cap, 16 << 20);

    let hog = p.transformer(&params(&[("misbehave", "alloc")])).unwrap();
    let go = RecordBatch::from_values([b"a".as_slice(), b"go"]);
    let err = hog.transform(&ctx(7), &go).unwrap_err();
    match err.failure {
        Failure::OutOfMemory { cap: c, requested } => {
            assert_eq!(c, cap);
            assert!(requested > cap, "{err}");
        }
        ref other => panic!("expected out of memory, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("plugin `c-limits`") && msg.contains("batch 7"),
        "{msg}"
    );
    // The host and the stage go on: the next call runs on a fresh instance.
    let fine = RecordBatch::from_values([b"x".as_slice()]);
    assert_eq!(values(&hog.transform(&ctx(8), &fine).unwrap().batch), ["x"]);

    let spin = p.transformer(&params(&[("misbehave", "spin")])).unwrap();
    let started = Instant::now();
    let err = spin.transform(&ctx(9), &go).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err.failure, Failure::TimedOut { .. }), "{err}");
    assert!(
        (budget..budget * 2).contains(&took),
        "stopped after {took:?}, budget {budget:?}"
    );
    assert_eq!(
        values(&spin.transform(&ctx(10), &fine).unwrap().batch),
        ["x"]
    );
}

/// The C template's transformation (upper-case) built once per run.
fn c_upper() -> PathBuf {
    c_fixture(
        "c-upper",
        include_str!("../../sdk/c/templates/transform/plugin.c"),
        "memory = \"64MiB\"\ntime = \"1s\"",
    )
}

#[test]
fn a_c_plugin_is_hot_swapped_in_a_running_pipeline_and_nothing_is_lost() {
    let v1 = std::fs::read(example_plugin("identity", "c")).unwrap();
    let v2 = std::fs::read(c_upper()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(
        plugins.join("tag.toml"),
        "version = 1\nname = \"tag\"\nplugin-version = \"1\"\n",
    )
    .unwrap();
    std::fs::write(plugins.join("tag.wasm"), &v1).unwrap();
    let pipeline = write_pipeline(
        root,
        r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 2
rate = 20000

[[transform]]
plugin = "tag"

[[sink]]
kind = "files"
path = "out"

[swap]
poll-interval = "50ms"
"#,
    );
    let mut run = Running::start(sluice_run(root, &pipeline, &plugins));
    let done = |r: &Running| r.stderr_so_far().matches("Batch done.").count();
    let wait = |run: &mut Running, what: &str, f: &dyn Fn(&Running) -> bool| {
        let t0 = Instant::now();
        while !f(run) {
            run.assert_alive(&format!("while waiting for {what}"));
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no {what} within 60 s; the log:\n{}",
                run.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(&mut run, "two batches on v1", &|r| done(r) >= 2);
    std::fs::write(plugins.join("tag.wasm"), &v2).unwrap();
    wait(&mut run, "v2 to go live", &|r| {
        r.stderr_so_far().contains("goes live with the next batch")
    });
    let after = done(&run);
    wait(&mut run, "two batches on v2", &|r| done(r) >= after + 2);
    run.terminate();
    run.wait(Duration::from_secs(60)).assert_success();

    // Every generated record is in the output once, in order, as the version its batch
    // recorded made it: v1 (identity) before the swap, v2 (upper-case) after.
    let versions = crate::swap::recorded_versions(&pipeline);
    let digest = |b: &[u8]| -> String {
        use sha2::Digest;
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    let (d1, d2) = (digest(&v1), digest(&v2));
    assert!(versions.values().any(|v| v == &d1), "{versions:?}");
    assert!(versions.values().any(|v| v == &d2), "{versions:?}");
    let g = generator_of(&pipeline);
    let mut by_partition: BTreeMap<u32, BTreeMap<u64, Vec<String>>> = BTreeMap::new();
    for e in std::fs::read_dir(root.join("out/input")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("batch-") else {
            continue;
        };
        let (batch, rest) = rest.split_once("-part-").unwrap();
        let partition = rest.split('.').next().unwrap();
        let lines = std::fs::read_to_string(&path).unwrap();
        by_partition
            .entry(partition.parse().unwrap())
            .or_default()
            .insert(
                batch.parse().unwrap(),
                lines.lines().map(str::to_owned).collect(),
            );
    }
    let mut upper_cased = 0;
    for (p, batches) in by_partition {
        let n: usize = batches.values().map(Vec::len).sum();
        let want = generated(&g, p, n as u64);
        let mut at = 0;
        for (batch, lines) in &batches {
            let ran = &versions[batch];
            for (i, line) in lines.iter().enumerate() {
                let expected = if ran == &d2 {
                    upper_cased += 1;
                    want[at + i].to_ascii_uppercase()
                } else {
                    assert_eq!(ran, &d1, "batch {batch}");
                    want[at + i].clone()
                };
                assert_eq!(line, &expected, "partition {p} batch {batch} line {i}");
            }
            at += lines.len();
        }
    }
    assert!(upper_cased > 0, "v2 ran no batch");
}

/// `corpus.py`'s records, one a line.
fn json_corpus(records: usize) -> Vec<Vec<u8>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/json-upper/corpus.py");
    let out = run_bounded(
        Command::new("python3").arg(script).arg(records.to_string()),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "corpus.py: {}", output_text(&out));
    out.stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The output values and rejects of `wasm` on `input`, and records/s over `rounds` calls.
fn json_upper_run(
    rt: &sluice::plugin::PluginRuntime,
    wasm: &Path,
    input: &RecordBatch,
    rounds: u32,
) -> (Vec<Vec<u8>>, Vec<(u32, String)>, f64) {
    let p = rt.load_file(wasm, &Grants::default()).unwrap();
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let out = stage.transform(&ctx(0), input).unwrap();
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(stage.transform(&ctx(0), input).unwrap());
    }
    let rate = (input.len() as f64 * f64::from(rounds)) / started.elapsed().as_secs_f64();
    let values = (0..out.batch.len())
        .map(|i| out.batch.value(i).to_vec())
        .collect();
    (values, out.rejected, rate)
}

#[test]
fn json_upper_in_c_gives_the_rust_versions_output_and_rejects_byte_for_byte() {
    let records = json_corpus(10_000);
    assert_eq!(records.len(), 10_000);
    let input = RecordBatch::from_values(records.iter().map(Vec::as_slice));
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let (rust, rust_rejects, rust_rate) =
        json_upper_run(&rt, &example_plugin("json-upper", "rust"), &input, 5);
    let (c, c_rejects, c_rate) = json_upper_run(&rt, &example_plugin("json-upper", "c"), &input, 5);
    assert!(rust_rejects.len() > 1_000, "the corpus has malformed lines");
    assert_eq!(c.len(), rust.len(), "output records");
    for (i, (a, b)) in c.iter().zip(&rust).enumerate() {
        assert_eq!(
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b),
            "output record {i}"
        );
    }
    assert_eq!(c_rejects, rust_rejects, "rejects (index, reason)");
    eprintln!(
        "[plugin_c] json-upper on 10,000 records: C {c_rate:.0} records/s, Rust {rust_rate:.0} records/s"
    );
}
