//! Windows over batch time (issue #12): a sliding word count equals an independent count of
//! the same input, with and without the inverse function, also across a SIGKILL.
//!
//! The independent count reads which source records each batch held from the checkpoint log
//! (`sluice checkpoint list --json`: per partition, the offsets of the batch), makes those
//! generator lines again, splits them into words and sums the last `length` batches itself.
//! The window is Spark's "30 s sliding every 10 s" in the same proportions (length 3 slides),
//! on a 200 ms batch interval so that the test takes seconds.

use std::collections::BTreeMap;
use std::path::Path;

use sluice::batch::RecordBatch;
use sluice::receiver::generator::LineGenerator;
use sluice_tests::plugins_dir;

use crate::engine::{Running, WAIT_TIMEOUT, committed, generator_of, sluice_run, write_pipeline};
use crate::swap::checkpoint_entries;

/// Batches per window and per slide: 1200 ms and 400 ms of 200 ms batches.
const LENGTH: u64 = 6;
const SLIDE: u64 = 2;

fn pipeline(inverse: bool) -> String {
    format!(
        r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 2
rate = 400
limit = 2400
vocabulary = 30
words-per-line = 3

[[transform]]
plugin = "split-words"

[[transform]]
builtin = "reduce-by-key-and-window"
length = "1200ms"
slide = "400ms"
aggregate = "count"
inverse = {inverse}

[[sink]]
kind = "files"
path = "out"
format = "kv"
"#
    )
}

/// Per batch, per partition, the source offsets `[start, end)` it held.
fn batch_ranges(pipeline: &Path) -> BTreeMap<u64, Vec<(u64, u64)>> {
    checkpoint_entries(pipeline)
        .iter()
        .map(|e| {
            let parts = e["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["start"].as_u64().unwrap(), p["end"].as_u64().unwrap()))
                .collect();
            (e["batch"].as_u64().unwrap(), parts)
        })
        .collect()
}

/// Per batch (ids from 0, every one recorded), each word's count in the batch's records.
pub(crate) fn per_batch_counts(pipeline: &Path) -> Vec<BTreeMap<String, u64>> {
    let g = generator_of(pipeline);
    let ranges = batch_ranges(pipeline);
    let ids: Vec<u64> = ranges.keys().copied().collect();
    assert_eq!(
        ids,
        (0..ids.len() as u64).collect::<Vec<_>>(),
        "every batch is in the checkpoint log"
    );
    ranges
        .values()
        .map(|parts| {
            let mut counts = BTreeMap::new();
            for (p, &(start, end)) in parts.iter().enumerate() {
                let mut source = LineGenerator::new(&g, p as u32);
                source.skip_to(start);
                let mut lines = RecordBatch::default();
                source.fill(&mut lines, (end - start) as usize, 0);
                for i in 0..lines.len() {
                    let line = std::str::from_utf8(lines.value(i)).unwrap();
                    for word in line.split_ascii_whitespace() {
                        *counts.entry(word.to_owned()).or_default() += 1;
                    }
                }
            }
            counts
        })
        .collect()
}

/// The independent count: per batch that ends a slide, each word's count over the last
/// `LENGTH` batches.
fn expected(pipeline: &Path) -> BTreeMap<u64, BTreeMap<String, u64>> {
    let per_batch = per_batch_counts(pipeline);
    let mut windows = BTreeMap::new();
    for b in (0..per_batch.len() as u64).filter(|b| (b + 1) % SLIDE == 0) {
        let mut window: BTreeMap<String, u64> = BTreeMap::new();
        for batch in &per_batch[(b + 1).saturating_sub(LENGTH) as usize..=b as usize] {
            for (w, n) in batch {
                *window.entry(w.clone()).or_default() += n;
            }
        }
        if !window.is_empty() {
            windows.insert(b, window);
        }
    }
    windows
}

/// What the pipeline wrote: per batch, each word's count (every partition's file).
pub(crate) fn written(dir: &Path) -> BTreeMap<u64, BTreeMap<String, u64>> {
    let mut out: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    for ((batch, _), lines) in committed(&dir.join("out"), "input", "tsv") {
        let window = out.entry(batch).or_default();
        for line in lines {
            let (word, n) = line.split_once('\t').unwrap();
            assert!(
                window.insert(word.to_owned(), n.parse().unwrap()).is_none(),
                "batch {batch}: {word} in two partitions"
            );
        }
    }
    out
}

/// Runs the pipeline, SIGKILLs it once `kill_after` batches are done, runs it again to the
/// end of the generator, and compares every window with the independent count.
fn window_survives_a_kill(inverse: bool, kill_after: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_pipeline(tmp.path(), &pipeline(inverse));
    let mut first = Running::start(sluice_run(tmp.path(), &path, &plugins_dir()));
    wait_for_batches(&mut first, kill_after, "before the kill");
    first.kill_hard();
    let second = Running::start(sluice_run(tmp.path(), &path, &plugins_dir())).wait(WAIT_TIMEOUT);
    second.assert_success();
    let want = expected(&path);
    let got = written(tmp.path());
    assert!(
        want.len() >= 10,
        "enough windows to mean something: {}",
        want.len()
    );
    for (batch, window) in &want {
        assert_eq!(
            got.get(batch),
            Some(window),
            "batch {batch} (inverse = {inverse}): the window's counts"
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "only the batches that end a slide output a window"
    );
    assert!(
        second
            .stderr
            .contains("Restored a window's state from the checkpoint."),
        "the restart read the window back"
    );
}

pub(crate) fn first_done(run: &Running) -> usize {
    run.stderr_so_far().matches("Batch done.").count()
}

/// Waits until `run` has finished `batches` batches, failing (named `what`) when it stops or
/// takes longer than [`WAIT_TIMEOUT`].
pub(crate) fn wait_for_batches(run: &mut Running, batches: usize, what: &str) {
    let t0 = std::time::Instant::now();
    while first_done(run) < batches {
        run.assert_alive(what);
        assert!(
            t0.elapsed() < WAIT_TIMEOUT,
            "{what}: {batches} batches within {WAIT_TIMEOUT:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_sliding_word_count_window_equals_an_independent_count_across_a_sigkill() {
    window_survives_a_kill(false, 9);
}

#[test]
fn a_sliding_window_kept_with_the_inverse_function_equals_an_independent_count_across_a_sigkill() {
    window_survives_a_kill(true, 8);
}

/// `update-state-by-key` counting words, its whole state written every 4 batches.
const RUNNING: &str = r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 2
rate = 300
limit = 2400
vocabulary = 30
words-per-line = 3

[[transform]]
plugin = "split-words"

[[transform]]
builtin = "update-state-by-key"
aggregate = "count"
snapshot-every = 4

[[sink]]
kind = "files"
path = "out"
format = "kv"
"#;

#[test]
fn keyed_running_totals_are_exact_after_ten_sigkills() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_pipeline(tmp.path(), RUNNING);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for kill in 0..10 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let batches = 1 + (seed % 3) as usize;
        let mut run = Running::start(sluice_run(tmp.path(), &path, &plugins_dir()));
        let t0 = std::time::Instant::now();
        while first_done(&run) < batches {
            run.assert_alive(&format!("before kill {kill}"));
            assert!(
                t0.elapsed() < WAIT_TIMEOUT,
                "kill {kill}: no batch within {WAIT_TIMEOUT:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(seed % 150));
        run.kill_hard();
    }
    let last = Running::start(sluice_run(tmp.path(), &path, &plugins_dir())).wait(WAIT_TIMEOUT);
    last.assert_success();
    assert!(
        last.stderr
            .contains("Restored update-state-by-key's state from the checkpoint."),
        "the state was read back"
    );
    // Each batch outputs the keys it updated with their running totals: the independent
    // count of every batch up to it.
    let per_batch = per_batch_counts(&path);
    let got = written(tmp.path());
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut checked = 0;
    for (b, counts) in per_batch.iter().enumerate() {
        for (w, n) in counts {
            *totals.entry(w.clone()).or_default() += n;
        }
        let want: BTreeMap<String, u64> = counts.keys().map(|w| (w.clone(), totals[w])).collect();
        let empty = BTreeMap::new();
        assert_eq!(
            got.get(&(b as u64)).unwrap_or(&empty),
            &want,
            "batch {b}'s running totals"
        );
        checked += usize::from(!want.is_empty());
    }
    assert!(checked >= 20, "enough batches to mean something: {checked}");
    let all: u64 = totals.values().sum();
    assert_eq!(
        all,
        2 * 2400 * 3,
        "every word of every generated line is counted once"
    );
}
