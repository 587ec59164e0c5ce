//! The `sluice` binary as a user runs it.

use std::process::Command;

use sluice_tests::*;

fn sluice(cache: &std::path::Path) -> Command {
    let mut c = Command::new(sluice_bin());
    c.arg("--cache-dir").arg(cache);
    c
}

#[test]
fn plugin_check_prints_world_version_imports_size_and_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sluice(tmp.path())
        .args(["plugin", "check"])
        .arg(plugins_dir().join("uppercase.wasm"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "world     transformer",
        "sluice:plugin/transform@0.1.0",
        "sha256",
        "imports",
        "bytes",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn plugin_check_refuses_a_wrong_world_component_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sluice(tmp.path())
        .args(["plugin", "check"])
        .arg(fixtures_dir().join("wrong-world.wasm"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong-world.wasm") && err.contains("match no sluice world"),
        "{err}"
    );
}

#[test]
fn plugin_list_shows_every_plugin_and_why_refused_ones_are() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir_with(
        &plugins_dir(),
        &["uppercase", "grep"],
        &tmp.path().join("p"),
    );
    plugin_dir_with(&fixtures_dir(), &["truncated"], &dir);
    let out = sluice(&tmp.path().join("cache"))
        .args(["plugin", "list"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("uppercase") && l.ends_with("ok")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("grep") && l.ends_with("ok")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("truncated") && l.contains("refused")),
        "{text}"
    );
}

#[test]
fn plugin_new_then_build_makes_a_working_transformation() {
    let tmp = tempfile::tempdir().unwrap();
    let status = sluice(&tmp.path().join("cache"))
        .args(["plugin", "new", "shout"])
        .current_dir(tmp.path())
        .status()
        .unwrap();
    assert!(status.success());
    let project = tmp.path().join("shout");
    let config = std::fs::read_to_string(project.join(".cargo/config.toml")).unwrap();
    assert!(
        config.contains("wasm32-wasip2") && config.contains("+simd128"),
        "{config}"
    );
    let out = sluice(&tmp.path().join("cache"))
        .args(["plugin", "build"])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("world     transformer"), "{text}");

    // The built plugin runs.
    let rt = runtime_with_cache(&tmp.path().join("cache"));
    let p = rt
        .load_file(&project.join("shout.wasm"), &Default::default())
        .unwrap();
    let stage = p.transformer(&Default::default()).unwrap();
    let ctx = sluice::plugin::CallContext {
        stream: "s".into(),
        partition: 0,
        batch_id: 0,
        batch_time_ms: 0,
        part: 0,
    };
    let out = stage
        .transform(&ctx, &sluice::batch::RecordBatch::from_values([&b"hi"[..]]))
        .unwrap();
    assert_eq!(out.batch.value(0), b"HI");
}
