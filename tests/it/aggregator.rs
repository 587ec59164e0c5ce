//! Aggregate plugins (issue #12, world `aggregator`): `reduce-by-key-and-window` with
//! `aggregate-plugin = "stats-agg"` equals an independent computation of the same input, with
//! and without `inverse` (the plugin's `retract`), also across a SIGKILL; an aggregate that
//! panics stops the pipeline with an error naming it, and `inverse = true` on one that cannot
//! retract is refused at the start.
//!
//! The input is the generator's words (`split-words`: key and value both the word) measured
//! by their length (`measure = "bytes"`), so each word's statistics over a window follow from
//! its count there: `count` = n, `sum` = n × len, and `min`, `max`, `mean`, `median` = len. The
//! counts per batch come from the checkpoint log, as in the window tests.

use std::collections::BTreeMap;
use std::path::Path;

use sluice_tests::{fixtures_dir, plugin_dir_with, plugins_dir};

use crate::engine::{Running, WAIT_TIMEOUT, committed, sluice_run, write_pipeline};
use crate::window::{per_batch_counts, wait_for_batches};

/// Batches per window and per slide: 1200 ms and 400 ms of 200 ms batches.
const LENGTH: u64 = 6;
const SLIDE: u64 = 2;

fn pipeline(plugin: &str, inverse: bool) -> String {
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
aggregate-plugin = "{plugin}"
aggregate-params = {{ measure = "bytes" }}
inverse = {inverse}
partitions = 3

[[sink]]
kind = "files"
path = "out"
format = "kv"
"#
    )
}

/// The independent computation: per batch that ends a slide, each word's statistics over the
/// last `LENGTH` batches, as `stats-agg` writes them.
fn expected(pipeline: &Path) -> BTreeMap<u64, BTreeMap<String, String>> {
    let per_batch = per_batch_counts(pipeline);
    let mut windows = BTreeMap::new();
    for b in (0..per_batch.len() as u64).filter(|b| (b + 1) % SLIDE == 0) {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for batch in &per_batch[(b + 1).saturating_sub(LENGTH) as usize..=b as usize] {
            for (w, n) in batch {
                *counts.entry(w.clone()).or_default() += n;
            }
        }
        let window: BTreeMap<String, String> = counts
            .into_iter()
            .map(|(w, n)| {
                let len = w.len() as u64;
                let stats = format!(
                    r#"{{"count":{n},"sum":{},"min":{len},"max":{len},"mean":{len},"median":{len}}}"#,
                    n * len
                );
                (w, stats)
            })
            .collect();
        if !window.is_empty() {
            windows.insert(b, window);
        }
    }
    windows
}

/// What the pipeline wrote: per batch, each word's statistics (every partition's file).
fn written(dir: &Path) -> BTreeMap<u64, BTreeMap<String, String>> {
    let mut out: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for ((batch, _), lines) in committed(&dir.join("out"), "input", "tsv") {
        let window = out.entry(batch).or_default();
        for line in lines {
            let (word, stats) = line.split_once('\t').unwrap();
            assert!(
                window.insert(word.to_owned(), stats.to_owned()).is_none(),
                "batch {batch}: {word} in two partitions"
            );
        }
    }
    out
}

/// Runs the pipeline, SIGKILLs it once `kill_after` batches are done, runs it again to the
/// end, and compares every window with the independent computation.
fn plugin_window_survives_a_kill(inverse: bool, kill_after: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_pipeline(tmp.path(), &pipeline("stats-agg", inverse));
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
            "batch {batch} (inverse = {inverse}): each word's statistics over the window"
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

#[test]
fn a_sliding_window_with_a_plugin_aggregate_equals_an_independent_computation_across_a_sigkill() {
    plugin_window_survives_a_kill(false, 9);
}

#[test]
fn a_plugin_aggregate_kept_with_retract_equals_an_independent_computation_across_a_sigkill() {
    plugin_window_survives_a_kill(true, 8);
}

#[test]
fn a_plugin_aggregate_that_panics_stops_the_pipeline_naming_it_and_inverse_needs_retract() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugin_dir_with(&fixtures_dir(), &["agg-panic"], &tmp.path().join("plugins"));
    plugin_dir_with(&plugins_dir(), &["split-words"], &plugins);

    let path = write_pipeline(tmp.path(), &pipeline("agg-panic", false));
    let ended = Running::start(sluice_run(tmp.path(), &path, &plugins)).wait(WAIT_TIMEOUT);
    assert!(!ended.status.success(), "the pipeline stops");
    let stderr = &ended.stderr;
    assert!(
        stderr.contains("agg-panic") && stderr.contains("fixture aggregate panic on purpose"),
        "the error names the plugin and its panic: {stderr}"
    );
    assert!(
        stderr.contains("finish"),
        "the error names the call: {stderr}"
    );
    assert!(
        !stderr.contains("panicked at host") && !stderr.contains("RUST_BACKTRACE"),
        "the host did not crash: {stderr}"
    );

    let fresh = tempfile::tempdir().unwrap();
    let path = write_pipeline(fresh.path(), &pipeline("agg-panic", true));
    let ended = Running::start(sluice_run(fresh.path(), &path, &plugins)).wait(WAIT_TIMEOUT);
    assert!(!ended.status.success());
    assert!(
        ended.stderr.contains("`inverse = true`") && ended.stderr.contains("agg-panic"),
        "inverse on an aggregate that cannot retract is refused, naming it: {}",
        ended.stderr
    );
}
