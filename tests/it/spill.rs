//! Keyed state past its memory budget (issue #12): `update-state-by-key` over ~200 k distinct
//! keys with `state-memory = "1MiB"` spills most keys to local disk, and its running totals
//! still equal an independent count, also across a SIGKILL and a restart.
//!
//! The independent count is the one of `window.rs`: which generator lines each batch held,
//! from the checkpoint log, split into words again by the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluice_tests::plugins_dir;

use crate::engine::{Running, WAIT_TIMEOUT, sluice_run, write_pipeline};
use crate::window::{first_done, per_batch_counts, written};

/// 4 partitions × 16,384 lines × 10 words drawn from 250,000 words: about 200 k distinct keys
/// (about 180 bytes each in memory, so 1 MiB holds some 6 k), over about 20 batches.
const SPILLING: &str = r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 4
rate = 4096
limit = 16384
vocabulary = 250000
words-per-line = 10

[[transform]]
plugin = "split-words"

[[transform]]
builtin = "update-state-by-key"
aggregate = "count"
snapshot-every = 4
state-memory = "1MiB"
state-spill-dir = "spill"

[[sink]]
kind = "files"
path = "out"
format = "kv"
"#;

const SPILLED: &str =
    "A keyed state went past its memory budget: its coldest keys now spill to disk.";

/// The spill files of the `update-state-by-key` step (step 1) under `dir/spill`.
fn spill_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(procs) = std::fs::read_dir(dir.join("spill")) else {
        return Vec::new();
    };
    procs
        .flatten()
        .flat_map(|p| std::fs::read_dir(p.path()).into_iter().flatten().flatten())
        .filter(|step| step.file_name().to_string_lossy().starts_with("step-1-"))
        .filter_map(|step| std::fs::read_dir(step.path()).ok())
        .flat_map(|files| files.flatten().map(|f| f.path()))
        .filter(|f| f.extension().is_some_and(|e| e == "dat"))
        .collect()
}

#[test]
fn a_keyed_state_past_its_memory_budget_spills_to_disk_and_stays_exact_across_a_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_pipeline(tmp.path(), SPILLING);
    let mut first = Running::start(sluice_run(tmp.path(), &path, &plugins_dir()));
    let t0 = std::time::Instant::now();
    let mut seen_files = false;
    while first_done(&first) < 8 {
        first.assert_alive("before the kill");
        assert!(
            t0.elapsed() < WAIT_TIMEOUT,
            "8 batches within {WAIT_TIMEOUT:?}"
        );
        seen_files |= spill_files(tmp.path())
            .iter()
            .any(|f| f.metadata().is_ok_and(|m| m.len() > 0));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        seen_files,
        "spill files are written while the state is over its budget"
    );
    let log = first.kill_hard();
    assert!(log.contains(SPILLED), "the first spill is logged:\n{log}");
    assert!(
        !spill_files(tmp.path()).is_empty(),
        "a SIGKILL leaves its spill files"
    );

    let second = Running::start(sluice_run(tmp.path(), &path, &plugins_dir())).wait(WAIT_TIMEOUT);
    second.assert_success();
    assert!(
        second
            .stderr
            .contains("Restored update-state-by-key's state from the checkpoint."),
        "the state was read back"
    );
    assert!(
        second.stderr.contains(SPILLED),
        "the restored state spills too"
    );
    assert!(
        std::fs::read_dir(tmp.path().join("spill")).unwrap().count() == 0,
        "the dead process's spill directory was cleared at the start, this one's at exit: {:?}",
        spill_files(tmp.path())
    );

    // Each batch outputs the keys it updated with their running totals: the independent
    // count of every batch up to it.
    let per_batch = per_batch_counts(&path);
    let got = written(tmp.path());
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for (b, counts) in per_batch.iter().enumerate() {
        for (w, n) in counts {
            *totals.entry(w.clone()).or_default() += n;
        }
        let want: BTreeMap<String, u64> = counts.keys().map(|w| (w.clone(), totals[w])).collect();
        let empty = BTreeMap::new();
        let got = got.get(&(b as u64)).unwrap_or(&empty);
        if got != &want {
            let wrong: Vec<_> = want
                .iter()
                .filter(|(w, n)| got.get(*w) != Some(n))
                .take(5)
                .map(|(w, n)| (w, n, got.get(w)))
                .collect();
            panic!(
                "batch {b}'s running totals: {} of {} keys differ, e.g. (key, want, got) {wrong:?}",
                want.iter().filter(|(w, n)| got.get(*w) != Some(n)).count(),
                want.len()
            );
        }
    }
    assert!(
        totals.len() > 150_000,
        "many distinct keys: {}",
        totals.len()
    );
    let all: u64 = totals.values().sum();
    assert_eq!(all, 4 * 16384 * 10, "every word counted once");
}
