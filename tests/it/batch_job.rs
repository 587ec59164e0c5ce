//! The same pipeline file as a batch job (issue #11): a files source with `once = true` reads
//! what its directory holds, runs it as batches, and exits 0.

use std::path::Path;
use std::time::Duration;

use sluice_tests::plugins_dir;

use crate::engine::{Running, drop_file, sluice_run, write_pipeline};

pub(crate) const PIPELINE: &str = r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "files"
path = "in"
partitions = 2
poll-interval = "50ms"
once = true

[[transform]]
plugin = "uppercase"

[[sink]]
kind = "files"
path = "out"
"#;

/// Writes files `from..to` of 1,000 numbered lines each into `in`.
fn add_files(root: &Path, from: usize, to: usize) {
    for f in from..to {
        let text: String = (0..1000).map(|i| format!("file {f} line {i}\n")).collect();
        drop_file(&root.join("in"), &format!("f{f:02}.txt"), text.as_bytes());
    }
}

/// Every output line, sorted.
pub(crate) fn output(root: &Path) -> Vec<String> {
    let mut lines: Vec<String> = crate::engine::files_under(&root.join("out/input"))
        .iter()
        .filter(|p| !p.to_string_lossy().contains("/_"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    lines
}

fn expected(files: usize) -> Vec<String> {
    let mut lines: Vec<String> = (0..files)
        .flat_map(|f| (0..1000).map(move |i| format!("FILE {f} LINE {i}")))
        .collect();
    lines.sort();
    lines
}

/// Runs the pipeline to its end, which must come by itself within 60 s with exit 0.
fn run_once(root: &Path, pipeline: &Path) -> String {
    let ended =
        Running::start(sluice_run(root, pipeline, &plugins_dir())).wait(Duration::from_secs(60));
    ended.assert_success();
    ended.stderr
}

#[test]
fn once_reads_every_file_there_exactly_once_exits_0_and_a_rerun_reads_only_new_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("in")).unwrap();
    add_files(root, 0, 6);
    let pipeline = write_pipeline(root, PIPELINE);
    run_once(root, &pipeline);
    assert!(
        output(root) == expected(6),
        "every line of the 6 files, once"
    );
    // Nothing new: the rerun ends at once and writes nothing.
    run_once(root, &pipeline);
    assert!(
        output(root) == expected(6),
        "a rerun with nothing new changes nothing"
    );
    // Two more files: only they are read.
    add_files(root, 6, 8);
    run_once(root, &pipeline);
    let out = output(root);
    assert_eq!(out.len(), 8000, "8 files of 1,000 lines, each once");
    assert!(out == expected(8));
}
