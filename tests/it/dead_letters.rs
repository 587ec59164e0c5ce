//! `sluice dead-letters list | show | replay` end to end: a pipeline whose plugin rejects some
//! records runs; `list` counts its letters and `show` gives them with their positions; after
//! the pipeline file is changed to a plugin that accepts them, `replay` outputs exactly those
//! records, once, in its own namespace; a second replay is refused unless `--again`; letters
//! that fail again are dead-lettered again and replayed from there; a malformed dead-letter
//! file is refused naming the file and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sluice_tests::*;

use crate::engine::{
    Running, WAIT_TIMEOUT, committed, drop_file, files_under, sluice_run, write_pipeline,
};

/// The input: values `bad` (offsets 1 and 3) and a non-UTF-8 one (offset 4) are rejected by
/// the `bad-record` fixture; the rest pass.
const INPUT: &[u8] = b"a0\nbad\na2\nbad\n\xff\xfez\na5\n";
/// The rejected values, in offset order.
const REJECTED: [&[u8]; 3] = [b"bad", b"bad", b"\xff\xfez"];

/// A pipeline from `in/` through `plugin` into `out/`, one partition.
fn pipeline(dir: &Path, plugin: &str) -> PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"version = 1
batch-interval = "500ms"
block-interval = "250ms"

[source]
kind = "files"
path = "in"

[[transform]]
plugin = "{plugin}"

[[sink]]
kind = "files"
path = "out"
"#
        ),
    )
}

/// Runs the `bad-record` pipeline over [`INPUT`] until its 3 good records are out, and stops
/// it. Returns the plugin directory (with `identity` too).
fn run_with_letters(dir: &Path) -> PathBuf {
    let plugins = plugin_dir_with(&fixtures_dir(), &["bad-record"], &dir.join("plugins"));
    plugin_dir_with(&plugins_dir(), &["identity"], &plugins);
    let pipeline = pipeline(dir, "bad-record");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    drop_file(&input, "a.txt", INPUT);
    let out = dir.join("out");
    let mut sluice = Running::start(sluice_run(dir, &pipeline, &plugins));
    sluice.wait_for("the 3 good records out", WAIT_TIMEOUT, || {
        committed(&out, "input", "txt")
            .values()
            .map(Vec::len)
            .sum::<usize>()
            >= 3
    });
    sluice.interrupt();
    sluice.wait(WAIT_TIMEOUT).assert_success();
    plugins
}

/// `sluice <args>` in `dir` (its cache there).
fn sluice(dir: &Path, args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .args(args)
        .current_dir(dir)
        .env("SLUICE_CACHE_DIR", dir.join("cache"))
        .env("NO_COLOR", "1")
        .env_remove("SLUICE_PLUGINS")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "sluice failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn replay(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "dead-letters",
        "replay",
        "pipeline.toml",
        "--plugins",
        "plugins",
    ];
    args.extend_from_slice(extra);
    sluice(dir, &args)
}

/// Every line of every part file of stream `stream` in `out/` (not below it), as bytes,
/// sorted; and whether each part has its commit record.
fn output_of(dir: &Path, stream: &str) -> Vec<Vec<u8>> {
    let at = dir.join("out").join(stream);
    let mut lines = Vec::new();
    for path in files_under(&at) {
        if path.parent() != Some(at.as_path()) {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let batch = name.split("-part-").next().unwrap();
        assert!(
            at.join("_commits").join(format!("{batch}.json")).exists(),
            "{name} has its commit record"
        );
        let bytes = std::fs::read(&path).unwrap();
        lines.extend(
            bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    lines.sort();
    lines
}

fn sorted(values: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = values.iter().map(|v| v.to_vec()).collect();
    v.sort();
    v
}

#[test]
fn after_the_plugin_is_fixed_a_replay_outputs_the_dead_letters_once_and_again_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_with_letters(dir);
    let before = output_of(dir, "input");
    assert_eq!(before, sorted(&[b"a0", b"a2", b"a5"]));

    let list: Value = serde_json::from_str(&ok(&sluice(
        dir,
        &["dead-letters", "list", "pipeline.toml", "--json"],
    )))
    .unwrap();
    assert_eq!(list["total"]["letters"], 3, "{list:#}");
    assert_eq!(list["total"]["replayed"], 0, "{list:#}");
    let counts: Vec<(String, String, u64)> = list["total"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_owned();
            (s("step"), s("reason"), c["letters"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(
        counts[0],
        ("bad-record".into(), "fixture: the value is `bad`".into(), 2)
    );
    assert!(counts[1].1.starts_with("fixture: the value is not UTF-8") && counts[1].2 == 1);
    let text = ok(&sluice(dir, &["dead-letters", "list", "pipeline.toml"]));
    assert!(
        text.contains("3 letters in") && text.contains("bad-record: 2 ×"),
        "{text}"
    );

    let shown: Value = serde_json::from_str(&ok(&sluice(
        dir,
        &["dead-letters", "show", "pipeline.toml", "--json"],
    )))
    .unwrap();
    let positions: Vec<(u64, u64, u64)> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["partition"].as_u64().unwrap(),
                l["offset"].as_u64().unwrap(),
                l["step"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(positions, [(0, 1, 0), (0, 3, 0), (0, 4, 0)], "{shown:#}");
    assert_eq!(shown[2]["value_base64"], "//56", "{shown:#}");
    let text = ok(&sluice(
        dir,
        &["dead-letters", "show", "pipeline.toml", "--limit", "1"],
    ));
    assert!(
        text.contains("1 chosen") && text.contains("offset 1") && text.contains("\"bad\""),
        "{text}"
    );
    let text = ok(&sluice(
        dir,
        &[
            "dead-letters",
            "show",
            "pipeline.toml",
            "--partition",
            "0",
            "--step",
            "bad-record",
        ],
    ));
    assert!(
        text.contains("3 chosen") && text.contains(r#""\xff\xfez""#),
        "{text}"
    );

    // The fix: the step now accepts every record.
    pipeline(dir, "identity");
    let dry = ok(&replay(dir, &["--dry-run"]));
    assert!(dry.contains("3 dead letters"), "{dry}");
    assert!(
        !dir.join("out/input/replay-000001").exists(),
        "a dry run writes nothing"
    );

    let first = ok(&replay(dir, &[]));
    assert!(first.contains("replay-000001: 3 dead letters"), "{first}");
    assert!(
        first.contains("3 records output, 0 dead-lettered again"),
        "{first}"
    );
    assert_eq!(output_of(dir, "input/replay-000001"), sorted(&REJECTED));
    assert_eq!(
        output_of(dir, "input"),
        before,
        "the pipeline's own batches are untouched"
    );

    let second = replay(dir, &[]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(
        second.status.code(),
        Some(2),
        "refused as the user's: {stderr}"
    );
    assert!(
        stderr.contains("replayed before (by replay-000001)") && stderr.contains("--again"),
        "{stderr}"
    );
    assert!(!dir.join("out/input/replay-000002").exists());
    let list = ok(&sluice(dir, &["dead-letters", "list", "pipeline.toml"]));
    assert!(list.contains("3 letters in 1 files, 3 replayed"), "{list}");

    let again = ok(&replay(
        dir,
        &["--again", "--batch", &shown[0]["batch"].to_string()],
    ));
    assert!(again.contains("replay-000002: 3 dead letters"), "{again}");
    assert_eq!(output_of(dir, "input/replay-000002"), sorted(&REJECTED));
    assert_eq!(output_of(dir, "input/replay-000001"), sorted(&REJECTED));
}

#[test]
fn letters_that_fail_again_are_dead_lettered_again_at_their_positions_and_replayed_from_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_with_letters(dir);

    // Not fixed yet: each letter fails again.
    let first = ok(&replay(dir, &[]));
    assert!(
        first.contains("0 records output, 3 dead-lettered again"),
        "{first}"
    );
    assert!(output_of(dir, "input/replay-000001").is_empty());
    let shown: Value = serde_json::from_str(&ok(&sluice(
        dir,
        &["dead-letters", "show", "pipeline.toml", "--json"],
    )))
    .unwrap();
    let again: Vec<(String, u64, u64)> = shown
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["file"].as_str().unwrap().starts_with("replay-000001/"))
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_owned(),
                l["partition"].as_u64().unwrap(),
                l["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    let stream = "input/replay-000001".to_owned();
    assert_eq!(
        again,
        [
            (stream.clone(), 0, 1),
            (stream.clone(), 0, 3),
            (stream, 0, 4)
        ],
        "{shown:#}"
    );

    // Fixed: the replay takes the letters not replayed yet, those of replay-000001.
    pipeline(dir, "identity");
    let second = ok(&replay(dir, &[]));
    assert!(second.contains("replay-000002: 3 dead letters"), "{second}");
    assert!(
        second.contains("skipped: 3 letters replayed before"),
        "{second}"
    );
    assert_eq!(output_of(dir, "input/replay-000002"), sorted(&REJECTED));
    assert_eq!(
        replay(dir, &[]).status.code(),
        Some(2),
        "everything was replayed"
    );
}

#[test]
fn a_malformed_dead_letter_file_is_refused_naming_the_file_and_line_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pipeline(dir, "identity");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    plugin_dir_with(&plugins_dir(), &["identity"], &dir.join("plugins"));
    let letters = dir.join("dead-letters").join("input");
    std::fs::create_dir_all(&letters).unwrap();
    let good = r#"{"batch":7,"partition":0,"offset":2,"step":0,"plugin":"identity","reason":"r","value":"v"}"#;
    std::fs::write(
        letters.join("batch-0000000007.jsonl"),
        format!("{good}\n{{\"batch\":7}}\n"),
    )
    .unwrap();
    for args in [
        vec!["dead-letters", "list", "pipeline.toml"],
        vec!["dead-letters", "show", "pipeline.toml"],
        vec![
            "dead-letters",
            "replay",
            "pipeline.toml",
            "--plugins",
            "plugins",
        ],
    ] {
        let out = sluice(dir, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("dead-letters/input/batch-0000000007.jsonl line 2: not a dead letter")
                && stderr.contains("`partition`"),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        !dir.join("out/input/replay-000001").exists(),
        "nothing replayed"
    );
}

#[test]
fn a_letter_rejected_by_a_later_step_is_replayed_from_that_step_with_the_value_it_held_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugins = plugin_dir_with(&fixtures_dir(), &["bad-record"], &dir.join("plugins"));
    plugin_dir_with(&plugins_dir(), &["identity", "uppercase"], &plugins);
    let two_steps = |second: &str| {
        let text = std::fs::read_to_string(pipeline(dir, second)).unwrap();
        let text = text.replacen(
            "[[transform]]",
            "[[transform]]\nplugin = \"uppercase\"\n\n[[transform]]",
            1,
        );
        write_pipeline(dir, &text)
    };
    let file = two_steps("bad-record");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    drop_file(&input, "a.txt", b"ok\n\xff\xfez\n");
    let mut driver = Running::start(sluice_run(dir, &file, &plugins));
    driver.wait_for("the good record out", WAIT_TIMEOUT, || {
        !committed(&dir.join("out"), "input", "txt").is_empty()
    });
    driver.interrupt();
    driver.wait(WAIT_TIMEOUT).assert_success();
    let shown: Value = serde_json::from_str(&ok(&sluice(
        dir,
        &["dead-letters", "show", "pipeline.toml", "--json"],
    )))
    .unwrap();
    assert_eq!(shown.as_array().unwrap().len(), 1, "{shown:#}");
    assert_eq!(
        (shown[0]["step"].as_u64(), shown[0]["offset"].as_u64()),
        (Some(1), Some(1)),
        "{shown:#}"
    );

    two_steps("identity");
    let dry = ok(&replay(dir, &["--dry-run"]));
    assert!(
        dry.contains("rejected by bad-record → enters at step 1 (identity)"),
        "{dry}"
    );
    let done = ok(&replay(dir, &[]));
    assert!(done.contains("from step 1 (identity): 1 output"), "{done}");
    assert_eq!(
        output_of(dir, "input/replay-000001"),
        sorted(&[b"\xff\xfeZ"])
    );
}
