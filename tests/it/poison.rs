//! Poison records end to end: a plugin that panics, loops or hits its memory cap on one marked
//! record of a 10,000-record block has that record alone dead-lettered, with its position and
//! the trap, while the other records are output and the pipeline goes on; a plugin that fails
//! on every record stops the pipeline with the `max-poison-per-batch` message.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sluice_tests::*;

use crate::engine::{
    Running, WAIT_TIMEOUT, by_partition, committed, drop_file, files_under, sluice_run, u64_field,
    write_pipeline,
};

/// Records in the block.
const RECORDS: usize = 10_000;
/// The marked record's line (its offset in the file).
const POISON_AT: usize = 4321;

/// A pipeline reading `in/` (one partition, one block per two seconds), through fixture
/// `fixture` with `poison-prefix = prefix` and `extra` keys on its step, into `out/`.
fn pipeline(dir: &Path, fixture: &str, prefix: &str, extra: &str) -> std::path::PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"version = 1
batch-interval = "2s"
block-interval = "2s"

[source]
kind = "files"
path = "in"

[[transform]]
plugin = "{fixture}"
params = {{ poison-prefix = "{prefix}" }}
{extra}

[[sink]]
kind = "files"
path = "out"
"#
        ),
    )
}

/// `n` lines `NAME-i`, with line `poison` (if any) `POISON-i` instead.
fn lines(name: &str, n: usize, poison: Option<usize>) -> Vec<String> {
    (0..n)
        .map(|i| match poison {
            Some(p) if p == i => format!("POISON-{i}"),
            _ => format!("{name}-{i}"),
        })
        .collect()
}

fn file_of(lines: &[String]) -> Vec<u8> {
    let mut text = lines.join("\n");
    text.push('\n');
    text.into_bytes()
}

/// Every dead letter written under `dir`, as JSON.
fn dead_letters(dir: &Path) -> Vec<Value> {
    files_under(&dir.join("dead-letters").join("input"))
        .iter()
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Runs `fixture` over a 10,000-record file with one marked record, then a clean file, and
/// checks that only the marked record is dead-lettered, with its position and `failure`
/// (`reason` containing `trap`), and that everything else is output in order.
fn one_marked_record_alone_is_dead_lettered(fixture: &str, failure: &str, trap: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugin_dir_with(&fixtures_dir(), &[fixture], &tmp.path().join("plugins"));
    let pipeline = pipeline(tmp.path(), fixture, "POISON", "");
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let first = lines("line", RECORDS, Some(POISON_AT));
    drop_file(&input, "a.txt", &file_of(&first));
    let out = tmp.path().join("out");
    let output = || by_partition(&committed(&out, "input", "txt"));
    let count = || output().values().map(Vec::len).sum::<usize>();

    let mut sluice = Running::start(sluice_run(tmp.path(), &pipeline, &plugins));
    sluice.wait_for("9,999 records out", Duration::from_secs(60), || {
        count() >= RECORDS - 1
    });
    // The pipeline goes on: a later file is read and output too.
    let second = lines("later", 100, None);
    drop_file(&input, "b.txt", &file_of(&second));
    sluice.wait_for("the later file out", WAIT_TIMEOUT, || {
        count() >= RECORDS - 1 + second.len()
    });
    sluice.interrupt();
    let run = sluice.wait(WAIT_TIMEOUT);
    run.assert_success();

    let mut expected: Vec<String> = first
        .into_iter()
        .filter(|l| !l.starts_with("POISON"))
        .collect();
    expected.extend(second);
    assert_eq!(
        output().get(&0),
        Some(&expected),
        "every other record, in order"
    );

    let letters = dead_letters(tmp.path());
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let letter = &letters[0];
    assert_eq!(
        (u64_field(letter, "partition"), u64_field(letter, "offset")),
        (0, POISON_AT as u64),
        "{letter}"
    );
    assert_eq!(letter["value"], format!("POISON-{POISON_AT}"), "{letter}");
    assert_eq!(letter["plugin"], fixture, "{letter}");
    assert_eq!(letter["failure"], failure, "{letter}");
    assert!(
        letter["reason"].as_str().is_some_and(|r| r.contains(trap)),
        "the trap in the reason: {letter}"
    );
    let isolated = run.events("A plugin call failed on a block; calling it again in halves");
    assert_eq!(isolated.len(), 1, "one isolation:\n{}", run.stderr);
    assert_eq!(
        u64_field(&isolated[0], "records"),
        RECORDS as u64,
        "the whole file was one block: {}",
        isolated[0]
    );
    let done = run.events("The block's poison records are dead-lettered");
    eprintln!(
        "{fixture}: isolation of one poison record in {RECORDS} records: {}",
        done[0]
    );
}

#[test]
fn a_record_that_panics_alone_is_dead_lettered_and_the_other_9999_are_output() {
    one_marked_record_alone_is_dead_lettered("panic", "panicked", "fixture panic on purpose");
}

#[test]
fn a_record_that_loops_forever_alone_is_dead_lettered_and_the_other_9999_are_output() {
    one_marked_record_alone_is_dead_lettered("infinite-loop", "timed-out", "time budget");
}

#[test]
fn a_record_that_hits_the_memory_cap_alone_is_dead_lettered_and_the_other_9999_are_output() {
    one_marked_record_alone_is_dead_lettered("memory-hog", "out-of-memory", "memory cap");
}

#[test]
fn a_plugin_that_fails_on_every_record_stops_the_pipeline_with_the_limits_message() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugin_dir_with(&fixtures_dir(), &["panic"], &tmp.path().join("plugins"));
    let pipeline = pipeline(tmp.path(), "panic", "", "max-poison-per-batch = 20");
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    drop_file(&input, "a.txt", &file_of(&lines("line", 1000, None)));

    let run = Running::start(sluice_run(tmp.path(), &pipeline, &plugins)).wait(WAIT_TIMEOUT);
    assert_eq!(
        run.status.code(),
        Some(2),
        "a user's fault:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("`max-poison-per-batch` of 20")
            && run.stderr.contains("broken, not poisoned"),
        "the limit's message:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("fixture panic on purpose"),
        "the failure:\n{}",
        run.stderr
    );
    assert_eq!(
        committed(&tmp.path().join("out"), "input", "txt").len(),
        0,
        "nothing of the failed batch is output"
    );
}

#[test]
fn with_on_poison_stop_a_panic_on_one_record_stops_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = plugin_dir_with(&fixtures_dir(), &["panic"], &tmp.path().join("plugins"));
    let pipeline = pipeline(tmp.path(), "panic", "POISON", "on-poison = \"stop\"");
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    drop_file(&input, "a.txt", &file_of(&lines("line", 100, Some(7))));

    let run = Running::start(sluice_run(tmp.path(), &pipeline, &plugins)).wait(WAIT_TIMEOUT);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("fixture panic on purpose"),
        "{}",
        run.stderr
    );
    assert!(dead_letters(tmp.path()).is_empty());
}
