//! The driver end to end: the checkpoint log, recovery of an unfinished batch, plugin versions
//! pinned per batch, damaged entries, and re-runs that resume instead of overwriting.
//!
//! An unfinished batch is made the way a crash between the checkpoint entry and the sink
//! commit leaves it: the run's last batch is recorded in the log but its commit record and a
//! part file are gone (a SIGKILL in that window is too narrow to hit on purpose; the kill
//! trials in `recovery.rs` hit it by chance).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_tests::*;

use crate::engine::{Running, sluice_run};

const RUN: Duration = Duration::from_secs(90);

/// A generator → `uppercase` → files pipeline that ends by itself after `limit` lines per
/// partition, in `dir`.
fn generator_pipeline(dir: &Path, limit: u64) -> PathBuf {
    let p = dir.join("pipeline.toml");
    std::fs::write(
        &p,
        format!(
            r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"
[source]
kind = "generator"
partitions = 2
rate = 100000
limit = {limit}
[[transform]]
plugin = "uppercase"
[[sink]]
kind = "files"
path = "out"
"#
        ),
    )
    .unwrap();
    p
}

fn run_to_end(dir: &Path, pipeline: &Path, plugins: &Path, extra: &[&str]) -> crate::engine::Ended {
    let mut cmd = sluice_run(dir, pipeline, plugins);
    cmd.args(extra);
    let ended = Running::start(cmd).wait(RUN);
    ended.assert_success();
    ended
}

/// Every output line, sorted, and the part files by name.
fn output(dir: &Path) -> (Vec<String>, Vec<String>) {
    let out = dir.join("out/input");
    let mut lines = Vec::new();
    let mut parts = Vec::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('_') {
            continue;
        }
        lines.extend(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
        parts.push(name);
    }
    lines.sort();
    parts.sort();
    (lines, parts)
}

/// The newest batch in the checkpoint log, made unfinished: its commit record and its first
/// part file removed. Returns its id.
fn unfinish_last_batch(dir: &Path) -> u64 {
    let mut entries: Vec<_> = std::fs::read_dir(dir.join("checkpoints/checkpoint"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    // The very last batch of a run that ended may be empty: take the last with records.
    let commits = dir.join("out/input/_commits");
    let mut with_parts: Vec<u64> = std::fs::read_dir(dir.join("out/input"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_prefix("batch-")?.split('-').next()?.parse().ok()
        })
        .collect();
    with_parts.sort();
    let last = *with_parts.last().expect("some output");
    // Entries after it go too: they were written after its commit.
    for name in entries {
        let b: u64 = name.trim_end_matches(".json").parse().unwrap();
        if b > last {
            std::fs::remove_file(dir.join("checkpoints/checkpoint").join(&name)).unwrap();
            let _ = std::fs::remove_file(commits.join(format!("batch-{b:010}.json")));
        }
    }
    std::fs::remove_file(commits.join(format!("batch-{last:010}.json"))).unwrap();
    let removed = (0..2)
        .filter(|p| {
            std::fs::remove_file(dir.join(format!("out/input/batch-{last:010}-part-{p:05}.txt")))
                .is_ok()
        })
        .count();
    assert!(removed > 0);
    last
}

#[test]
fn a_recorded_batch_that_did_not_commit_is_recomputed_from_exactly_its_records() {
    let clean = tempfile::tempdir().unwrap();
    let p = generator_pipeline(clean.path(), 60_000);
    run_to_end(clean.path(), &p, &plugins_dir(), &[]);
    let expected = output(clean.path());
    assert_eq!(expected.0.len(), 120_000);

    let tmp = tempfile::tempdir().unwrap();
    let p = generator_pipeline(tmp.path(), 60_000);
    run_to_end(tmp.path(), &p, &plugins_dir(), &[]);
    let batch = unfinish_last_batch(tmp.path());
    let again = run_to_end(tmp.path(), &p, &plugins_dir(), &[]);
    assert!(
        again
            .stderr
            .contains("is recomputed first from exactly its recorded records"),
        "{}",
        again.stderr
    );
    let got = output(tmp.path());
    assert_eq!(got.0.len(), expected.0.len(), "batch {batch} recomputed");
    assert!(
        got.0 == expected.0,
        "the output equals a run without a crash"
    );
    assert!(
        tmp.path()
            .join(format!("out/input/_commits/batch-{batch:010}.json"))
            .exists()
    );
}

#[test]
fn a_batch_recorded_under_plugin_v1_is_recomputed_with_v1_after_v2_is_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugin_dir_with(&plugins_dir(), &["uppercase"], &tmp.path().join("plugins"));
    let p = generator_pipeline(tmp.path(), 40_000);
    run_to_end(tmp.path(), &p, &plugins, &[]);
    let batch = unfinish_last_batch(tmp.path());
    // v2 of `uppercase`: another component under the same name (it returns values unchanged).
    std::fs::copy(
        plugins_dir().join("identity.wasm"),
        plugins.join("uppercase.wasm"),
    )
    .unwrap();
    std::fs::remove_file(plugins.join("uppercase.toml")).unwrap();
    let again = run_to_end(tmp.path(), &p, &plugins, &[]);
    assert!(
        again
            .stderr
            .contains("runs with the plugin version it was recorded with"),
        "{}",
        again.stderr
    );
    let part: String = (0..2)
        .filter_map(|p| {
            std::fs::read_to_string(
                tmp.path()
                    .join(format!("out/input/batch-{batch:010}-part-{p:05}.txt")),
            )
            .ok()
        })
        .collect();
    assert!(!part.is_empty());
    assert_eq!(
        part,
        part.to_uppercase(),
        "the recomputed batch ran with v1 (uppercase), not v2"
    );
}

#[test]
fn a_damaged_checkpoint_entry_is_reported_with_its_location_and_the_one_before_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let p = generator_pipeline(tmp.path(), 30_000);
    run_to_end(tmp.path(), &p, &plugins_dir(), &[]);
    let before = output(tmp.path());
    let log = tmp.path().join("checkpoints/checkpoint");
    let mut entries: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let newest = entries.last().unwrap().clone();
    let text = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &text[..text.len() / 3]).unwrap();
    // As a crash before its commit leaves it: the sinks do not have that batch.
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();
    let b: u64 = name.trim_end_matches(".json").parse().unwrap();
    let _ = std::fs::remove_file(
        tmp.path()
            .join(format!("out/input/_commits/batch-{b:010}.json")),
    );
    for part in 0..2 {
        let _ = std::fs::remove_file(
            tmp.path()
                .join(format!("out/input/batch-{b:010}-part-{part:05}.txt")),
        );
    }
    let again = run_to_end(tmp.path(), &p, &plugins_dir(), &[]);
    assert!(
        again.stderr.contains(&name) && again.stderr.contains("damaged"),
        "the damaged entry is named: {}",
        again.stderr
    );
    assert!(
        newest.with_extension("json.damaged").exists(),
        "kept for inspection"
    );
    // The batch is formed again from the source (its entry is unreadable), so its parts may
    // split differently: the records are what must be the same.
    assert!(output(tmp.path()).0 == before.0, "nothing lost or doubled");
}

#[test]
fn a_rerun_resumes_and_output_without_a_checkpoint_is_not_overwritten_unless_from_scratch() {
    let tmp = tempfile::tempdir().unwrap();
    let p = generator_pipeline(tmp.path(), 20_000);
    run_to_end(tmp.path(), &p, &plugins_dir(), &[]);
    let first = output(tmp.path());
    // Again: resumes after the last batch; the generator has nothing more; nothing changes.
    let again = run_to_end(tmp.path(), &p, &plugins_dir(), &[]);
    assert!(
        again.stderr.contains("Resuming after batch"),
        "{}",
        again.stderr
    );
    assert!(output(tmp.path()) == first);
    // Without its checkpoint log, the run refuses to start over the output.
    std::fs::remove_dir_all(tmp.path().join("checkpoints")).unwrap();
    let refused = Running::start(sluice_run(tmp.path(), &p, &plugins_dir())).wait(RUN);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("--from-scratch")
            && refused.stderr.contains("already holds output"),
        "{}",
        refused.stderr
    );
    assert!(output(tmp.path()) == first, "nothing was touched");
    // --from-scratch starts over at batch 0 and gives the same output.
    let fresh = run_to_end(tmp.path(), &p, &plugins_dir(), &["--from-scratch"]);
    assert!(fresh.stderr.contains("--from-scratch"), "{}", fresh.stderr);
    assert!(
        output(tmp.path()).0 == first.0,
        "the same records (batches may split differently)"
    );
}

#[test]
fn checkpoint_list_and_inspect_show_what_each_entry_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let p = generator_pipeline(tmp.path(), 10_000);
    run_to_end(tmp.path(), &p, &plugins_dir(), &[]);
    let sluice = |args: &[&str]| {
        let out = std::process::Command::new(sluice_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let p = p.to_str().unwrap();
    let list = sluice(&["checkpoint", "list", p]);
    assert!(list.contains("uppercase@"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&sluice(&["checkpoint", "list", p, "--json"])).unwrap();
    let entries = json.as_array().unwrap();
    let records: u64 = entries
        .iter()
        .flat_map(|e| e["partitions"].as_array().unwrap())
        .map(|p| p["end"].as_u64().unwrap() - p["start"].as_u64().unwrap())
        .sum();
    assert_eq!(records, 20_000, "the entries cover every record once");
    let inspect = sluice(&["checkpoint", "inspect", p, "0"]);
    assert!(
        inspect.contains("partition 1: offsets 0..")
            && inspect.contains("plugin    uppercase sha256"),
        "{inspect}"
    );
}
