//! Shadow runs and `promote` (issue #11): a candidate runs beside the live version on the same
//! input, its output is compared and dropped, the report names the differing records with their
//! offsets, and `promote` swaps it in.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sluice_tests::{fixtures_dir, sluice_bin};

use crate::admin::{Setup, wait_batches};
use crate::swap::recorded_versions;

/// `sluice plugin shadow <pipeline> tag <file> --batches N`.
fn shadow(s: &Setup, file: &Path, batches: u32) -> Output {
    Command::new(sluice_bin())
        .args(["plugin", "shadow"])
        .arg(&s.pipeline)
        .arg("tag")
        .arg(file)
        .args(["--batches", &batches.to_string(), "--wait", "60s"])
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap()
}

fn promote(s: &Setup) -> Output {
    Command::new(sluice_bin())
        .args(["plugin", "promote"])
        .arg(&s.pipeline)
        .arg("tag")
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_shadow_run_reports_the_differing_records_leaves_the_live_output_alone_and_promote_swaps_it_in()
{
    let s = Setup::new();
    let (mut run, _) = s.start();
    let same = s.version("identity.wasm", "tag.wasm");

    // The candidate (identity) beside the live version (uppercase): every record differs.
    let o = shadow(&s, &same, 3);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(report.contains("3 of 3 batches differed"), "{report}");
    let first = report
        .lines()
        .find(|l| l.trim_start().starts_with("partition 0 offset "))
        .unwrap_or_else(|| panic!("no differing record shown: {report}"));
    // `partition 0 offset N: live "X"  candidate "x"`: the same record, both versions.
    let (_, values) = first.split_once(": live ").unwrap();
    let (live, cand) = values.split_once("  candidate ").unwrap();
    assert_eq!(live.trim(), cand.trim().to_ascii_uppercase(), "{first}");
    assert_ne!(live.trim(), cand.trim(), "{first}");
    // The candidate's output went nowhere: the live output is all uppercase.
    let lines = crate::batch_job::output(s.root());
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|l| *l == l.to_ascii_uppercase()),
        "a candidate record reached the sink"
    );

    // The live version against itself: nothing differs.
    let upper = s.version("uppercase.wasm", "upper.wasm");
    let o = shadow(&s, &upper, 2);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 of 2 batches differed"),
        "{}",
        text(&o)
    );

    // A candidate that traps: a finding, not a failure of the pipeline; not promoted.
    let broken = s.root().join("versions/broken.wasm");
    std::fs::copy(fixtures_dir().join("trap-always.wasm"), &broken).unwrap();
    let o = shadow(&s, &broken, 3);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("the candidate failed"),
        "{}",
        text(&o)
    );
    run.assert_alive("after a candidate trapped in the shadow");
    let o = promote(&s);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // The identity again, then promoted: later batches run it.
    let o = shadow(&s, &same, 2);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = promote(&s);
    assert!(o.status.success(), "{}", text(&o));
    wait_batches(&mut run, 3);
    run.terminate();
    run.wait(Duration::from_secs(60)).assert_success();
    let versions = recorded_versions(&s.pipeline);
    let first_same = versions
        .iter()
        .find(|(_, d)| **d == s.same)
        .map(|(b, _)| *b);
    let first_same = first_same.expect("a batch ran the promoted version");
    assert!(
        versions.range(..first_same).all(|(_, d)| *d == s.upper)
            && versions.range(first_same..).all(|(_, d)| *d == s.same),
        "{versions:?}"
    );
    // The verdicts are in the history: four shadow runs, one of them failed.
    let out = Command::new(sluice_bin())
        .args(["plugin", "history", "--json"])
        .arg(&s.pipeline)
        .output()
        .unwrap();
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shadowed: Vec<&serde_json::Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "shadowed")
        .collect();
    assert_eq!(shadowed.len(), 4, "{history}");
    assert_eq!(
        shadowed.iter().filter(|e| e["failed"].is_string()).count(),
        1,
        "{history}"
    );
}
