//! One transformation, `json-upper` (`examples/json-upper/SPEC.md`), written in Rust, Python,
//! JavaScript and C: each is built with `sluice plugin build` and run end to end through the
//! same pipeline (files source, one partition, the plugin, files sink) over the same 10,000
//! records, and all of them give byte-identical output and the same rejects (offset and
//! reason) in the dead letters.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sluice_tests::{example_plugin, sluice_bin};

use crate::engine::{Running, drop_file, files_under, sluice_run, write_pipeline};

/// The languages json-upper is written in.
const LANGS: [&str; 4] = ["rust", "python", "js", "c"];

/// The records of `examples/json-upper/corpus.py`.
fn corpus() -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/json-upper/corpus.py");
    let out = Command::new("python3").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What one language's run left: the output part files' bytes in batch order, and the
/// rejects as (offset, reason, value) in offset order.
struct Run {
    output: Vec<u8>,
    rejects: Vec<(u64, String, String)>,
}

/// Runs json-upper built in `lang` over `corpus` as a batch job (`once = true`) in a fresh
/// directory and reads what it wrote.
fn run(lang: &str, corpus: &[u8]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wasm = example_plugin("json-upper", lang);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&wasm, plugins.join("json-upper.wasm")).unwrap();
    std::fs::copy(wasm.with_extension("toml"), plugins.join("json-upper.toml")).unwrap();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    drop_file(&dir.join("in"), "corpus.jsonl", corpus);
    let pipeline = write_pipeline(
        dir,
        r#"version = 1
batch-interval = "500ms"
block-interval = "100ms"

[source]
kind = "files"
path = "in"
partitions = 1
poll-interval = "50ms"
once = true

[[transform]]
plugin = "json-upper"

[[sink]]
kind = "files"
path = "out"
"#,
    );
    let ended = Running::start(sluice_run(dir, &pipeline, &plugins)).wait(Duration::from_secs(120));
    ended.assert_success();
    Run {
        output: output(dir),
        rejects: rejects(dir),
    }
}

/// The committed part files of stream `input`, concatenated in (batch, part) order.
fn output(dir: &Path) -> Vec<u8> {
    let at = dir.join("out").join("input");
    let mut parts: Vec<PathBuf> = files_under(&at)
        .into_iter()
        .filter(|p| p.parent() == Some(at.as_path()))
        .collect();
    parts.sort();
    parts
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// The dead letters, by `sluice dead-letters show --json`.
fn rejects(dir: &Path) -> Vec<(u64, String, String)> {
    let out = Command::new(sluice_bin())
        .args([
            "dead-letters",
            "show",
            "pipeline.toml",
            "--json",
            "--limit",
            "100000",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut rejects: Vec<(u64, String, String)> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["offset"].as_u64().unwrap(),
                l["reason"].as_str().unwrap().to_owned(),
                format!("{}{}", l["value"], l["value_base64"]),
            )
        })
        .collect();
    rejects.sort();
    rejects
}

#[test]
fn json_upper_gives_byte_identical_output_and_rejects_in_every_language() {
    let corpus = corpus();
    let lines = corpus
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(lines, 10_000);
    let runs: Vec<(&str, Run)> = LANGS
        .iter()
        .map(|&lang| (lang, run(lang, &corpus)))
        .collect();
    let (_, reference) = &runs[0];
    let kept = reference
        .output
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    // Every record is accounted for, and the corpus exercises every reason of the spec.
    assert_eq!(kept + reference.rejects.len(), 10_000);
    for reason in [
        "not valid JSON",
        "not a JSON object",
        "field \"user\" is missing or not a string",
        "field \"item\" is missing or not a string",
    ] {
        assert!(
            reference
                .rejects
                .iter()
                .any(|(_, r, _)| r.ends_with(reason)),
            "no reject says {reason:?}"
        );
    }
    assert!(
        reference.output.starts_with(
            b"{\"user\":\"ALICE\",\"item\":\"\xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9\"}\n"
        ),
        "{}",
        String::from_utf8_lossy(&reference.output[..200.min(reference.output.len())])
    );
    for (lang, run) in &runs[1..] {
        assert!(
            run.output == reference.output,
            "{lang}'s output differs from Rust's at byte {}",
            run.output
                .iter()
                .zip(&reference.output)
                .position(|(a, b)| a != b)
                .unwrap_or(run.output.len().min(reference.output.len()))
        );
        assert_eq!(
            run.rejects.len(),
            reference.rejects.len(),
            "{lang}'s reject count"
        );
        for (theirs, ours) in run.rejects.iter().zip(&reference.rejects) {
            assert_eq!(theirs, ours, "{lang}'s reject differs from Rust's");
        }
    }
}
