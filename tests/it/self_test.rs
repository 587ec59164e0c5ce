//! A transformation's optional `self-test` export (issue #11): run before a version goes live,
//! at start and in a hot swap; a failure refuses the version with the plugin's own message.

use sluice_tests::fixtures_dir;

use crate::admin::{Setup, digest, live_digest, pipeline_text, wait_batches};
use crate::engine::{Running, WAIT_TIMEOUT, sluice_run, write_pipeline};
use crate::swap::recorded_versions;

/// What the fixture's self-test says of its `bug = "drop-last"` release.
const CAUGHT: &str =
    r#"["a", "bc", "def"] gave 2 records (["A", "BC"]), expected ["A", "BC", "DEF"]"#;

#[test]
fn a_version_whose_self_test_fails_is_refused_with_its_message_and_one_that_passes_goes_live() {
    let s = Setup::new();
    let (mut run, admin) = s.start();
    let address = admin["address"].as_str().unwrap().to_owned();
    let token = admin["token"].as_str().unwrap().to_owned();
    let fixture = fixtures_dir().join("self-tested.wasm");
    let tested = s.version_of(&fixture, "tag.wasm");

    // `init` takes `bug = "drop-last"`; only the self-test sees that the release loses records.
    let out = s.swap(&tested, &["--param", "bug=drop-last"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("failed its self-test") && stderr.contains(CAUGHT),
        "the plugin's own message is returned: {stderr}"
    );
    wait_batches(&mut run, 1);
    assert_eq!(live_digest(&address, &token), s.upper, "the live one stays");

    let out = s.swap(&tested, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = digest(&fixture);
    assert_eq!(live_digest(&address, &token), passed);
    wait_batches(&mut run, 2);
    run.terminate();
    let ended = run.wait(WAIT_TIMEOUT);
    ended.assert_success();
    assert!(
        ended.stderr.contains("failed its self-test") && ended.stderr.contains("gave 2 records"),
        "the refusal is logged with the reason (JSON lines, so the quotes are escaped)"
    );
    let versions = recorded_versions(&s.pipeline);
    assert!(
        versions.values().any(|d| *d == passed),
        "batches ran the version that passed: {versions:?}"
    );
}

#[test]
fn a_pipeline_whose_plugin_fails_its_self_test_does_not_start_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        fixtures_dir().join("self-tested.wasm"),
        plugins.join("checked.wasm"),
    )
    .unwrap();
    let step = "plugin = \"checked\"\nparams = { bug = \"drop-last\" }";
    let pipeline = write_pipeline(tmp.path(), &pipeline_text(step));
    let ended = Running::start(sluice_run(tmp.path(), &pipeline, &plugins)).wait(WAIT_TIMEOUT);
    assert_eq!(ended.status.code(), Some(2), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("checked")
            && ended.stderr.contains("failed its self-test")
            && ended.stderr.contains(CAUGHT),
        "the plugin and its message are named: {}",
        ended.stderr
    );
    assert!(
        !tmp.path().join("out").exists()
            || std::fs::read_dir(tmp.path().join("out")).unwrap().count() == 0,
        "nothing was written"
    );
}
