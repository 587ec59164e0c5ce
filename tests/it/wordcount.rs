//! Word count through the real pipeline (issue #16): `count-words` (each distinct word of a
//! block once, with its count) → `repartition-by-key` → `count-by-key` with `sum-values`
//! gives exactly the counts of counting every word one by one, and so does the old path
//! (`split-words` → `repartition-by-key` → `count-by-key`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sluice_tests::plugins_dir;

use crate::engine::{Running, drop_file, files_under, sluice_run, write_pipeline};

/// A batch job over `in` (read once), the word count steps `steps`, counts into `out` as JSON
/// lines.
fn pipeline(steps: &str) -> String {
    format!(
        r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "files"
path = "in"
partitions = 2
poll-interval = "50ms"
once = true

{steps}
[[sink]]
kind = "files"
path = "out"
format = "jsonl"
"#
    )
}

const COUNT_WORDS: &str = r#"[[transform]]
plugin = "count-words"

[[transform]]
builtin = "repartition-by-key"
partitions = 3

[[transform]]
builtin = "count-by-key"
sum-values = true
"#;

const SPLIT_WORDS: &str = r#"[[transform]]
plugin = "split-words"

[[transform]]
builtin = "repartition-by-key"
partitions = 3

[[transform]]
builtin = "count-by-key"
"#;

/// Writes 8 files of 1,500 lines of words drawn from a skewed vocabulary (a few words very
/// common, most rare; short, long, non-ASCII), with runs of mixed whitespace, empty lines and
/// lines of only whitespace, and returns every word's count, counted one by one.
fn corpus(dir: &Path) -> BTreeMap<String, u64> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Form feed separates words; vertical tab does not (ASCII whitespace as Rust defines it).
    let seps = [" ", "  ", "\t", " \t ", "\r", "\x0C"];
    let mut expected = BTreeMap::new();
    for f in 0..8 {
        let mut text = String::new();
        for _ in 0..1500 {
            let words = next() % 16;
            for w in 0..words {
                let r = next();
                // Squaring skews: word 0 is drawn far more often than word 899.
                let word = match r % 5 {
                    0 => format!("w{}", (r >> 8) % 30 * ((r >> 20) % 30) % 900),
                    1 => format!("Word{}", (r >> 8) % 7),
                    // Longer than the 16 bytes count-words keys inline, and than its 64-byte
                    // scan chunks; some share their first 16 bytes.
                    2 => format!(
                        "long-{}-{}",
                        "o".repeat(10 + (r >> 8) as usize % 70),
                        (r >> 16) % 3
                    ),
                    3 => format!("\u{e9}t\u{e9}{}\x0Bv", (r >> 8) % 40),
                    _ => format!("x{}y", (r >> 8) % 2000),
                };
                *expected.entry(word.clone()).or_default() += 1;
                if w > 0 {
                    text.push_str(seps[(r >> 40) as usize % seps.len()]);
                }
                text.push_str(&word);
            }
            text.push_str(if words % 5 == 0 { " \t\n" } else { "\n" });
        }
        drop_file(dir, &format!("f{f}.txt"), text.as_bytes());
    }
    expected
}

/// Every word's count summed over the output of every batch, checking that no batch has a
/// word twice (the counts of one batch are global after the repartition).
fn counted(root: &Path) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    let mut per_batch: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for path in files_under(&root.join("out/input")) {
        let name = path.to_string_lossy().into_owned();
        if name.contains("/_") {
            continue;
        }
        // One object per batch and partition: `batch-<id>-...`; the batch is what matters.
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let batch = file.split('-').take(2).collect::<Vec<_>>().join("-");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let word = v["key"].as_str().unwrap().to_owned();
            let n: u64 = v["value"].as_str().unwrap().parse().unwrap();
            let seen = per_batch.entry(batch.clone()).or_default();
            assert!(
                seen.insert(word.clone(), n).is_none(),
                "{word:?} twice in {batch} ({name})"
            );
            *total.entry(word).or_default() += n;
        }
    }
    total
}

fn run(steps: &str) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    let expected = corpus(&root.join("in"));
    let file = write_pipeline(root, &pipeline(steps));
    let ended =
        Running::start(sluice_run(root, &file, &plugins_dir())).wait(Duration::from_secs(90));
    ended.assert_success();
    (counted(root), expected)
}

#[test]
fn count_words_then_count_by_key_with_sum_values_counts_every_word_exactly() {
    let (got, expected) = run(COUNT_WORDS);
    assert_eq!(got.len(), expected.len(), "distinct words");
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(w, n)| got.get(*w) != Some(n))
        .take(5)
        .map(|(w, n)| format!("{w}: {:?}, want {n}", got.get(w)))
        .collect();
    assert!(wrong.is_empty(), "wrong counts: {wrong:?}");
    assert_eq!(got, expected);
}

#[test]
fn split_words_then_count_by_key_gives_the_same_exact_counts() {
    let (got, expected) = run(SPLIT_WORDS);
    assert_eq!(got, expected);
}
