//! Keyed state for plugins (issue #12): a running count per key kept by the `stateful` fixture
//! in the host's keyed state is exact across SIGKILLs, carries over a hot swap, is converted
//! by a new version's `migrate`, and stays as it was (with the old version) when `migrate`
//! fails.
//!
//! The independent count reads which generator records each batch held from the checkpoint
//! log and counts them itself ([`crate::window::per_batch_counts`]); each batch outputs, per
//! key it saw, the key's count after it, so every batch's output is checked.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_tests::{fixtures_dir, plugins_dir, sluice_bin};

use crate::engine::{Running, WAIT_TIMEOUT, committed, sluice_run, write_pipeline};
use crate::swap::recorded_versions;
use crate::window::{first_done, per_batch_counts, wait_for_batches};

/// Words from two partitions, split, repartitioned by word (each key then comes from one
/// partition, as exact keyed state needs), counted by plugin `tag` (the `stateful` fixture).
fn pipeline(rate: u32, limit: u32, params: &str) -> String {
    format!(
        r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 2
rate = {rate}
limit = {limit}
vocabulary = 30
words-per-line = 3

[[transform]]
plugin = "split-words"

[[transform]]
builtin = "repartition-by-key"

[[transform]]
plugin = "tag"
params = {{ {params} }}

[[sink]]
kind = "files"
path = "out"
format = "kv"

[swap]
watch = false
"#
    )
}

/// A plugin directory with `split-words` and the `stateful` fixture as `tag`.
fn plugins(root: &Path) -> PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        plugins_dir().join("split-words.wasm"),
        dir.join("split-words.wasm"),
    )
    .unwrap();
    std::fs::copy(fixtures_dir().join("stateful.wasm"), dir.join("tag.wasm")).unwrap();
    dir
}

/// A copy of the `stateful` fixture with a custom section added: the same code under another
/// digest, as a new release would be.
fn new_version(root: &Path, name: &str) -> PathBuf {
    let mut bytes = std::fs::read(fixtures_dir().join("stateful.wasm")).unwrap();
    let section_name = b"sluice-test-version";
    let payload = name.as_bytes();
    let size = 1 + section_name.len() + payload.len();
    assert!(size < 128, "one LEB128 byte");
    bytes.extend_from_slice(&[0, size as u8, section_name.len() as u8]);
    bytes.extend_from_slice(section_name);
    bytes.extend_from_slice(payload);
    let path = root.join(format!("{name}.wasm"));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    path
}

/// What the pipeline wrote: per batch, each word's stored count (either layout, as text).
fn written(root: &Path) -> BTreeMap<u64, BTreeMap<String, String>> {
    let mut out: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for ((batch, _), lines) in committed(&root.join("out"), "input", "tsv") {
        let counts = out.entry(batch).or_default();
        for line in lines {
            let (word, n) = line.split_once('\t').unwrap();
            assert!(
                counts.insert(word.to_owned(), n.to_owned()).is_none(),
                "batch {batch}: {word} output twice"
            );
        }
    }
    out
}

fn count(stored: &str) -> u64 {
    stored
        .strip_prefix("count:")
        .unwrap_or(stored)
        .parse()
        .unwrap_or_else(|e| panic!("{stored:?} is not a count: {e}"))
}

/// Checks every batch's output against the independent count; returns per batch whether its
/// counts were in layout v2 (`count:N`), for batches with output.
fn check_exact(root: &Path, pipeline: &Path, records: u64) -> BTreeMap<u64, bool> {
    let per_batch = per_batch_counts(pipeline);
    let got = written(root);
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut layouts = BTreeMap::new();
    for (b, counts) in per_batch.iter().enumerate() {
        for (w, n) in counts {
            *totals.entry(w.clone()).or_default() += n;
        }
        let want: BTreeMap<String, u64> = counts.keys().map(|w| (w.clone(), totals[w])).collect();
        let empty = BTreeMap::new();
        let batch = got.get(&(b as u64)).unwrap_or(&empty);
        let have: BTreeMap<String, u64> =
            batch.iter().map(|(w, s)| (w.clone(), count(s))).collect();
        assert_eq!(have, want, "batch {b}'s running counts");
        let v2: Vec<bool> = batch.values().map(|s| s.starts_with("count:")).collect();
        if let Some(&first) = v2.first() {
            assert!(v2.iter().all(|&x| x == first), "batch {b}: one layout");
            layouts.insert(b as u64, first);
        }
    }
    assert_eq!(
        totals.values().sum::<u64>(),
        records * 3,
        "every word of every generated line is counted once"
    );
    layouts
}

#[test]
fn running_counts_in_a_plugins_keyed_state_are_exact_after_three_sigkills() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = plugins(root);
    let path = write_pipeline(root, &pipeline(300, 1800, ""));
    for (kill, batches) in [(0, 2), (1, 4), (2, 3)] {
        let mut run = Running::start(sluice_run(root, &path, &dir));
        wait_for_batches(&mut run, batches, &format!("before kill {kill}"));
        std::thread::sleep(std::time::Duration::from_millis(37 * kill + 20));
        run.kill_hard();
    }
    let last = Running::start(sluice_run(root, &path, &dir)).wait(WAIT_TIMEOUT);
    last.assert_success();
    assert!(
        last.stderr
            .contains("Restored a plugin step's keyed state from the checkpoint."),
        "the state was read back"
    );
    let layouts = check_exact(root, &path, 2 * 1800);
    assert!(layouts.len() >= 10, "enough batches: {}", layouts.len());
}

#[test]
fn a_plugins_keyed_state_past_its_memory_budget_spills_to_disk_and_stays_exact_across_a_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = plugins(root);
    // 20,000 words; 64 KiB holds about a thousand of them.
    let text = pipeline(1_500, 6_000, "")
        .replace("vocabulary = 30", "vocabulary = 20000")
        .replace(
            "plugin = \"tag\"\n",
            "plugin = \"tag\"\nstate-memory = \"64KiB\"\nstate-spill-dir = \"spill\"\nsnapshot-every = 4\n",
        );
    let path = write_pipeline(root, &text);
    let mut run = Running::start(sluice_run(root, &path, &dir));
    wait_for_batches(&mut run, 6, "before the kill");
    let spilled = run.kill_hard();
    assert!(
        spilled.contains("A keyed state went past its memory budget"),
        "the state spilled before the kill"
    );
    let last = Running::start(sluice_run(root, &path, &dir)).wait(WAIT_TIMEOUT);
    last.assert_success();
    check_exact(root, &path, 2 * 6_000);
    let left: Vec<_> = std::fs::read_dir(root.join("spill"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "spill files removed at exit: {left:?}");
}

/// `sluice plugin swap <pipeline> tag <file> <args>`.
fn swap(pipeline: &Path, file: &Path, args: &[&str]) -> std::process::Output {
    Command::new(sluice_bin())
        .args(["plugin", "swap"])
        .arg(pipeline)
        .arg("tag")
        .arg(file)
        .args(args)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap()
}

/// Runs the pipeline, swaps `tag` for a new version with `args` after a few batches, lets it
/// run to the end of the generator; returns the log, the layouts per batch and the versions
/// each batch recorded.
fn swapped(args: &[&str]) -> (String, BTreeMap<u64, bool>, BTreeMap<u64, String>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = plugins(root);
    let path = write_pipeline(root, &pipeline(200, 2400, "layout = \"v1\""));
    let mut run = Running::start(sluice_run(root, &path, &dir));
    let t0 = std::time::Instant::now();
    while first_done(&run) < 4 || !root.join("checkpoints/admin.json").exists() {
        run.assert_alive("before the swap");
        assert!(t0.elapsed() < WAIT_TIMEOUT, "no batches in time");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let version = new_version(root, "v2");
    let out = swap(&path, &version, args);
    assert!(
        out.status.success(),
        "the swap is accepted (and tried on the next batch): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = run.wait(WAIT_TIMEOUT);
    ended.assert_success();
    let layouts = check_exact(root, &path, 2 * 2400);
    (ended.stderr.clone(), layouts, recorded_versions(&path))
}

#[test]
fn keyed_state_carries_over_a_hot_swap_and_counts_go_on_from_where_they_were() {
    let (_, layouts, versions) = swapped(&["--param", "layout=v1"]);
    let digests: std::collections::BTreeSet<_> = versions.values().collect();
    assert_eq!(digests.len(), 2, "batches ran both versions: {versions:?}");
    assert!(layouts.values().all(|v2| !v2), "layout v1 throughout");
}

#[test]
fn a_new_version_with_migrate_converts_the_state_and_counts_go_on_in_its_layout() {
    let (log, layouts, versions) = swapped(&["--param", "layout=v2"]);
    assert!(
        log.contains("Migrated a plugin step's keyed state to the new version's layout."),
        "{log}"
    );
    let first_v2 = layouts.iter().find(|(_, v2)| **v2).map(|(b, _)| *b);
    let first_v2 = first_v2.expect("some batches in layout v2");
    assert!(
        layouts.range(first_v2..).all(|(_, v2)| *v2),
        "every batch after the swap in v2: {layouts:?}"
    );
    assert!(first_v2 >= 4, "the swap came after four batches");
    let new = &versions[&first_v2];
    assert!(
        versions.range(first_v2..).all(|(_, d)| d == new),
        "the new version ran from then on"
    );
}

#[test]
fn a_version_whose_migrate_fails_is_rolled_back_and_the_old_version_keeps_its_state() {
    let (log, layouts, versions) =
        swapped(&["--param", "layout=v2", "--param", "bug=migrate-fails"]);
    assert!(
        log.contains("could not migrate its keyed state: migrate-fails on purpose")
            && log.contains("`tag`"),
        "the plugin and its message are named: {log}"
    );
    assert!(log.contains("rolled back"), "{log}");
    assert!(layouts.values().all(|v2| !v2), "the old layout throughout");
    let digests: std::collections::BTreeSet<_> = versions.values().collect();
    assert_eq!(digests.len(), 1, "only the old version committed batches");
}

#[test]
fn at_start_a_version_whose_migrate_fails_stops_with_exit_2_and_one_whose_migrate_works_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = plugins(root);
    let path = write_pipeline(root, &pipeline(200, 1600, "layout = \"v1\""));
    let mut run = Running::start(sluice_run(root, &path, &dir));
    wait_for_batches(&mut run, 3, "in the first run");
    run.terminate();
    run.wait(WAIT_TIMEOUT).assert_success();

    std::fs::copy(new_version(root, "v2"), dir.join("tag.wasm")).unwrap();
    let failing = pipeline(200, 1600, "layout = \"v2\", bug = \"migrate-fails\"");
    let path = write_pipeline(root, &failing);
    let ended = Running::start(sluice_run(root, &path, &dir)).wait(WAIT_TIMEOUT);
    assert_eq!(ended.status.code(), Some(2), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("`tag`")
            && ended
                .stderr
                .contains("could not migrate its keyed state: migrate-fails on purpose"),
        "the plugin and its message are named: {}",
        ended.stderr
    );

    let path = write_pipeline(root, &pipeline(200, 1600, "layout = \"v2\""));
    let ended = Running::start(sluice_run(root, &path, &dir)).wait(WAIT_TIMEOUT);
    ended.assert_success();
    let layouts = check_exact(root, &path, 2 * 1600);
    assert!(layouts.values().any(|v2| !v2) && layouts.values().any(|v2| *v2));
    let last_v1 = layouts
        .iter()
        .filter(|(_, v2)| !**v2)
        .map(|(b, _)| *b)
        .max();
    assert!(
        layouts.range(last_v1.unwrap() + 1..).all(|(_, v2)| *v2),
        "v1 then v2: {layouts:?}"
    );
}
