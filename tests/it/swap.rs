//! Hot swap of a transformation plugin under a running driver (issue #11): new versions land
//! in the plugin directory while records stream through, and each batch runs whole on the
//! version it recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::Digest;
use sluice_tests::plugins_dir;

use crate::engine::{Running, generated, generator_of, sluice_run, write_pipeline};

/// Swaps back and forth, as the issue asks.
const SWAPS: usize = 20;
/// Lines per second per partition: 2 partitions make 100,000 records/s.
const RATE: u64 = 50_000;
const BATCH_MS: u64 = 200;

/// The two versions of the plugin `tag`: the same component files as `uppercase` and
/// `identity`, so each batch's output shows which one ran it.
struct Versions {
    upper: Vec<u8>,
    same: Vec<u8>,
}

impl Versions {
    fn load() -> Versions {
        let read = |n: &str| std::fs::read(plugins_dir().join(format!("{n}.wasm"))).unwrap();
        Versions {
            upper: read("uppercase"),
            same: read("identity"),
        }
    }

    /// Puts version `upper` (else `same`) in place as `tag.wasm`, written in place as a
    /// plain copy does.
    fn install(&self, dir: &Path, upper: bool) {
        let bytes = if upper { &self.upper } else { &self.same };
        std::fs::write(dir.join("tag.wasm"), bytes).unwrap();
    }

    fn digest(bytes: &[u8]) -> String {
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn plugin_dir(root: &Path, v: &Versions) -> PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tag.toml"),
        "version = 1\nname = \"tag\"\nplugin-version = \"1\"\n",
    )
    .unwrap();
    v.install(&dir, true);
    dir
}

fn pipeline(dir: &Path) -> PathBuf {
    pipeline_with(dir, "[[transform]]\nplugin = \"tag\"\n")
}

/// The pipeline with `steps` (TOML `[[transform]]` tables) between the generator and the files
/// sink.
fn pipeline_with(dir: &Path, steps: &str) -> PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"version = 1
batch-interval = "{BATCH_MS}ms"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 2
rate = {RATE}

{steps}
[[sink]]
kind = "files"
path = "out"

[swap]
poll-interval = "50ms"
"#
        ),
    )
}

/// How often `needle` occurs in the run's log so far.
fn count(run: &Running, needle: &str) -> usize {
    run.stderr_so_far().matches(needle).count()
}

/// Waits (at most 60 s) until `done` holds for the run.
fn wait_for(run: &mut Running, what: &str, done: impl Fn(&Running) -> bool) {
    let t0 = Instant::now();
    while !done(run) {
        run.assert_alive(&format!("while waiting for {what}"));
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no {what} within 60 s; the log:\n{}",
            run.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const LIVE: &str = "goes live with the next batch";
const DONE: &str = "Batch done.";

/// One process of the pipeline, reporting its batches to `report-<n>.jsonl`.
fn start(root: &Path, pipeline: &Path, plugins: &Path, n: usize) -> Running {
    let mut cmd = sluice_run(root, pipeline, plugins);
    cmd.arg("--report")
        .arg(root.join(format!("report-{n}.jsonl")));
    Running::start(cmd)
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

/// Every entry of the pipeline's checkpoint log, oldest first (`sluice checkpoint list --json`).
pub(crate) fn checkpoint_entries(pipeline: &Path) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .args(["checkpoint", "list", "--json"])
        .arg(pipeline)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        serde_json::Value::Array(entries) => entries,
        other => panic!("not a list of entries: {other}"),
    }
}

/// The plugin digest each recorded batch ran `tag` with, by batch id.
pub(crate) fn recorded_versions(pipeline: &Path) -> BTreeMap<u64, String> {
    checkpoint_entries(pipeline)
        .iter()
        .map(|e| {
            (
                e["batch"].as_u64().unwrap(),
                e["plugins"]["tag"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Per partition, the end offset of the newest recorded batch.
fn recorded_ends(pipeline: &Path) -> Vec<u64> {
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .args(["checkpoint", "inspect", "--json"])
        .arg(pipeline)
        .output()
        .unwrap();
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    e["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end"].as_u64().unwrap())
        .collect()
}

/// The largest scheduling delay of any batch but each process's first (which waits for the
/// restart's recovery), in ms.
fn worst_delay(root: &Path, processes: usize) -> f64 {
    (0..processes)
        .flat_map(|n| {
            let text =
                std::fs::read_to_string(root.join(format!("report-{n}.jsonl"))).unwrap_or_default();
            text.lines()
                .skip(1)
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["scheduling_delay_ms"].as_f64().unwrap()
                })
                .collect::<Vec<_>>()
        })
        .fold(0.0, f64::max)
}

/// A temporary directory with the plugin directory (`tag` = `uppercase`) and the pipeline.
struct Setup {
    tmp: tempfile::TempDir,
    v: Versions,
    /// The digests of the two versions.
    upper: String,
    same: String,
    plugins: PathBuf,
    pipeline: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let v = Versions::load();
        let plugins = plugin_dir(tmp.path(), &v);
        Setup {
            upper: Versions::digest(&v.upper),
            same: Versions::digest(&v.same),
            pipeline: pipeline(tmp.path()),
            plugins,
            v,
            tmp,
        }
    }
}

#[test]
fn twenty_swaps_under_100000_records_a_second_lose_nothing_and_each_batch_runs_on_its_recorded_version()
 {
    let Setup {
        tmp,
        v,
        upper,
        same,
        plugins,
        pipeline,
    } = Setup::new();
    let root = tmp.path();
    let mut processes = 1;
    let mut run = start(root, &pipeline, &plugins, 0);
    wait_for(&mut run, "a first batch", |r| count(r, DONE) >= 2);
    let mut lived = 0;
    for k in 1..=SWAPS {
        v.install(&plugins, k % 2 == 0);
        wait_for(&mut run, &format!("swap {k} to go live"), |r| {
            count(r, LIVE) > lived
        });
        lived = count(&run, LIVE);
        if k == SWAPS / 2 {
            // Killed right after a swap: the restart recomputes the unfinished batch with the
            // version recorded for it, and the directory's version runs after it.
            run.kill_hard();
            run = start(root, &pipeline, &plugins, processes);
            processes += 1;
            lived = 0;
        }
        // Two batches more, so that each version runs at least one whole batch.
        let done = count(&run, DONE);
        wait_for(&mut run, "two batches after the swap", |r| {
            count(r, DONE) >= done + 2
        });
    }
    run.terminate();
    let ended = run.wait(Duration::from_secs(60));
    ended.assert_success();

    let versions = recorded_versions(&pipeline);
    let switches = versions
        .values()
        .zip(versions.values().skip(1))
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        switches, SWAPS,
        "the recorded batches switch version once per swap: {versions:?}"
    );
    // `sluice plugin history` lists the same switches.
    let history = std::process::Command::new(sluice_tests::sluice_bin())
        .args(["plugin", "history", "--json"])
        .arg(&pipeline)
        .output()
        .unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    let changes: Vec<&serde_json::Value> = all.iter().filter(|c| c["event"] == "swap").collect();
    assert_eq!(changes.len(), SWAPS, "plugin history: {all:?}");
    for c in &changes {
        let batch = c["batch"].as_u64().unwrap();
        assert_eq!(c["plugin"], "tag");
        assert_eq!(c["to"].as_str(), Some(versions[&batch].as_str()));
        assert_eq!(c["from"].as_str(), Some(versions[&(batch - 1)].as_str()));
    }
    let g = generator_of(&pipeline);
    let mut total = 0;
    for (p, batches) in output(root) {
        let n: usize = batches.values().map(Vec::len).sum();
        let want = generated(&g, p, n as u64);
        let mut at = 0;
        for (batch, lines) in &batches {
            let ran = &versions[batch];
            assert!(ran == &upper || ran == &same, "batch {batch} ran {ran}");
            for (i, line) in lines.iter().enumerate() {
                let w = &want[at + i];
                let expected = if ran == &upper {
                    w.to_ascii_uppercase()
                } else {
                    w.clone()
                };
                assert_eq!(
                    line,
                    &expected,
                    "partition {p} batch {batch} line {i} (record {}): the batch recorded {ran}",
                    at + i
                );
            }
            at += lines.len();
        }
        total += n;
    }
    let delay = worst_delay(root, processes);
    eprintln!(
        "[swap] {total} records in {} batches, {switches} version switches; worst scheduling delay {delay:.1} ms",
        versions.len()
    );
    assert!(total > 0);
    assert!(
        delay <= BATCH_MS as f64,
        "a batch waited {delay:.1} ms to start, more than the batch interval ({BATCH_MS} ms)"
    );
}

#[test]
fn a_corrupt_or_half_copied_version_never_goes_live_and_the_live_one_stays() {
    let Setup {
        tmp,
        v,
        upper,
        same,
        plugins,
        pipeline,
    } = Setup::new();
    let root = tmp.path();
    let mut run = start(root, &pipeline, &plugins, 0);
    wait_for(&mut run, "a first batch", |r| count(r, DONE) >= 2);
    // Not a component at all: refused with the reason, naming the plugin.
    std::fs::write(plugins.join("tag.wasm"), b"\0asm\x0d\0\x01\0 but broken").unwrap();
    wait_for(&mut run, "the refusal of the corrupt version", |r| {
        count(r, "failed its checks") >= 1
    });
    let log = run.stderr_so_far();
    let refusal = log
        .lines()
        .find(|l| l.contains("failed its checks"))
        .unwrap();
    assert!(
        refusal.contains("\"plugin\":\"tag\"") && refusal.contains("tag.wasm"),
        "the refusal names the plugin and its file: {refusal}"
    );
    // Half the new version, then (after the watcher has looked at it) the rest.
    let half = v.same.len() / 2;
    std::fs::write(plugins.join("tag.wasm"), &v.same[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(plugins.join("tag.wasm"))
        .unwrap();
    std::io::Write::write_all(&mut f, &v.same[half..]).unwrap();
    drop(f);
    wait_for(&mut run, "the whole new version to go live", |r| {
        count(r, LIVE) >= 1
    });
    let done = count(&run, DONE);
    wait_for(&mut run, "two batches after it", |r| {
        count(r, DONE) >= done + 2
    });
    run.terminate();
    run.wait(Duration::from_secs(60)).assert_success();
    let versions = recorded_versions(&pipeline);
    let ran: std::collections::BTreeSet<&String> = versions.values().collect();
    assert_eq!(
        ran,
        [&upper, &same].into_iter().collect(),
        "every batch ran the first version or the whole second one, nothing else"
    );
    let first_same = versions.iter().find(|(_, d)| **d == same).unwrap().0;
    assert!(
        versions.range(..first_same).all(|(_, d)| *d == upper)
            && versions.range(first_same..).all(|(_, d)| *d == same),
        "the live version ran until the whole new one replaced it: {versions:?}"
    );
}

/// Runs `sluice ARGS…` and returns its stdout parsed as JSON.
fn sluice_json(args: &[&str], pipeline: &Path) -> serde_json::Value {
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .args(args)
        .arg(pipeline)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_version_that_traps_on_every_batch_is_rolled_back_its_batch_recomputed_and_it_stays_quarantined()
 {
    let Setup {
        tmp,
        upper,
        plugins,
        pipeline,
        ..
    } = Setup::new();
    rolls_back(tmp.path(), &upper, &plugins, &pipeline, false);
}

#[test]
fn a_version_failing_in_a_step_after_a_repartition_is_rolled_back_at_the_close_and_the_batch_recomputed()
 {
    let Setup {
        tmp,
        upper,
        plugins,
        ..
    } = Setup::new();
    let steps =
        "[[transform]]\nbuiltin = \"repartition-by-key\"\n\n[[transform]]\nplugin = \"tag\"\n";
    let pipeline = pipeline_with(tmp.path(), steps);
    rolls_back(tmp.path(), &upper, &plugins, &pipeline, true);
}

/// The broken version goes live, is rolled back within its trial and stays quarantined; the
/// output is every generated record once, uppercased (`moved`: by partition after a
/// repartition, compared as a whole).
fn rolls_back(root: &Path, upper: &str, plugins: &Path, pipeline: &Path, moved: bool) {
    let broken = std::fs::read(sluice_tests::fixtures_dir().join("trap-always.wasm")).unwrap();
    let broken_digest = Versions::digest(&broken);
    let mut run = start(root, pipeline, plugins, 0);
    wait_for(&mut run, "a first batch", |r| count(r, DONE) >= 2);
    std::fs::write(plugins.join("tag.wasm"), &broken).unwrap();
    wait_for(&mut run, "the broken version to be rolled back", |r| {
        count(r, "failed on trial") >= 1
    });
    // The stream goes on, on the restored version.
    let done = count(&run, DONE);
    wait_for(&mut run, "three batches after the rollback", |r| {
        count(r, DONE) >= done + 3
    });
    // The broken file is still there: the watcher refuses it, it never goes live again.
    std::fs::write(plugins.join("tag.wasm"), &broken).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    run.terminate();
    let ended = run.wait(Duration::from_secs(60));
    ended.assert_success();
    assert_eq!(
        ended.stderr.matches("failed on trial").count(),
        1,
        "one rollback, one event"
    );
    assert!(
        ended
            .stderr
            .contains("Recomputing the batch with the restored version"),
        "the failed batch is recomputed"
    );

    let versions = recorded_versions(pipeline);
    assert!(
        versions.values().all(|d| d == upper),
        "no batch recorded the broken version: {versions:?}"
    );
    // Exact output: every generated record once, uppercased by the restored version.
    let g = generator_of(pipeline);
    if moved {
        let mut got: Vec<String> = output(root)
            .into_values()
            .flat_map(|b| b.into_values().flatten())
            .collect();
        let ends = recorded_ends(pipeline);
        let mut want: Vec<String> = (0..ends.len() as u32)
            .flat_map(|p| generated(&g, p, ends[p as usize]))
            .map(|w| w.to_ascii_uppercase())
            .collect();
        got.sort();
        want.sort();
        assert!(
            got == want,
            "{} records out, {} generated",
            got.len(),
            want.len()
        );
    } else {
        for (p, batches) in output(root) {
            let lines: Vec<&String> = batches.values().flatten().collect();
            let want = generated(&g, p, lines.len() as u64);
            for (i, (line, w)) in lines.iter().zip(&want).enumerate() {
                assert_eq!(**line, w.to_ascii_uppercase(), "partition {p} record {i}");
            }
        }
    }
    // One rolled-back event naming both digests and the error, in the log.
    let history = sluice_json(&["plugin", "history"], pipeline);
    let rolled: Vec<&serde_json::Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "rolled-back")
        .collect();
    assert_eq!(rolled.len(), 1, "{history:?}");
    assert_eq!(rolled[0]["digest"].as_str(), Some(broken_digest.as_str()));
    assert_eq!(rolled[0]["restored"].as_str(), Some(upper));
    assert!(
        rolled[0]["error"]
            .as_str()
            .unwrap()
            .contains("broken on every batch"),
        "{rolled:?}"
    );
    // Quarantined, across a restart: the run goes on with the recorded version.
    let q = sluice_json(&["plugin", "quarantine"], pipeline);
    assert!(q.get(&broken_digest).is_some(), "{q:?}");
    let mut again = start(root, pipeline, plugins, 1);
    wait_for(&mut again, "a batch after the restart", |r| {
        count(r, DONE) >= 2
    });
    again.terminate();
    again.wait(Duration::from_secs(60)).assert_success();
    assert!(
        recorded_versions(pipeline).values().all(|d| d == upper),
        "the restart did not run the quarantined version"
    );
    // Cleared, it may go live again.
    let cleared = std::process::Command::new(sluice_tests::sluice_bin())
        .args(["plugin", "clear"])
        .arg(pipeline)
        .arg(&broken_digest[..12])
        .output()
        .unwrap();
    assert!(cleared.status.success(), "{cleared:?}");
    let q = sluice_json(&["plugin", "quarantine"], pipeline);
    assert!(q.get(&broken_digest).is_none(), "{q:?}");
    // The history outlives compaction: with every entry but the newest gone, it still lists
    // the swap to the broken version and its rollback.
    let entries = root.join("checkpoints/checkpoint");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&entries)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names.pop();
    for n in names {
        std::fs::remove_file(n).unwrap();
    }
    let kept = sluice_json(&["plugin", "history"], pipeline);
    let events: Vec<&str> = kept
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"rolled-back"), "{kept:?}");
}
