//! The `sluice` binary as a user runs it.

use std::process::Command;

use sluice_tests::*;

fn sluice(cache: &std::path::Path) -> Command {
    let mut c = Command::new(sluice_bin());
    c.arg("--cache-dir").arg(cache);
    c
}

/// The value of the `plugin check` line that starts with `label`, e.g. `sha256`.
fn check_line<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label).filter(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
        .trim()
}

#[test]
fn plugin_check_prints_the_components_own_digest_and_size_and_its_world_and_imports() {
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let file = plugins_dir().join("uppercase.wasm");
    let out = sluice(tmp.path())
        .args(["plugin", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the file is, worked out here rather than by the host's code.
    let bytes = std::fs::read(&file).unwrap();
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(check_line(&text, "sha256"), digest, "in:\n{text}");
    assert_eq!(
        check_line(&text, "file"),
        format!("{} ({} bytes)", file.display(), bytes.len()),
        "in:\n{text}"
    );
    assert_eq!(
        check_line(&text, "world"),
        "transformer (exports sluice:plugin/transform@0.1.0)"
    );
    let imports: Vec<&str> = check_line(&text, "imports").split(", ").collect();
    assert!(
        imports.contains(&"sluice:plugin/types@0.1.0"),
        "{imports:?}"
    );
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

/// `sluice run` on a small generator pipeline, text logs, stderr into a file (not a terminal),
/// with `args` before `run`; the log file's text.
fn run_logged(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let pipeline = dir.join("p.toml");
    std::fs::write(
        &pipeline,
        "version = 1\nbatch-interval = \"100ms\"\nblock-interval = \"50ms\"\n\n[source]\nkind = \"generator\"\npartitions = 1\nrate = 0\nlimit = 2000\n\n[[transform]]\nplugin = \"uppercase\"\n\n[[sink]]\nkind = \"count\"\n",
    )
    .unwrap();
    let log = dir.join(format!("log-{}.txt", args.join("_")));
    let out = sluice(&dir.join("cache"))
        .args(["--log-format", "text"])
        .args(args)
        .arg("run")
        .arg(&pipeline)
        .arg("--plugins")
        .arg(plugins_dir())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(out.success(), "sluice run {args:?} failed:\n{text}");
    text
}

#[test]
fn a_log_redirected_to_a_file_holds_no_escape_codes_and_its_level_follows_the_flags() {
    let tmp = tempfile::tempdir().unwrap();
    // RUST_LOG asks for debug; no flag: RUST_LOG holds, and the file is plain text.
    let plain = run_logged(tmp.path(), &[], &[("RUST_LOG", "debug")]);
    assert!(plain.contains("Batch done."), "{plain}");
    assert!(
        !plain.contains('\x1b'),
        "escape codes in a redirected log:\n{plain}"
    );
    assert!(
        plain.contains("DEBUG"),
        "RUST_LOG=debug without a flag:\n{plain}"
    );
    // Durations are read by people: a tenth of a millisecond at most.
    for line in plain.lines().filter(|l| l.contains("Batch done.")) {
        let value = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("processing_ms="))
            .unwrap_or_else(|| panic!("no processing_ms in {line}"));
        let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 1, "processing_ms={value} in {line}");
    }
    // -q: warnings and errors only, over RUST_LOG.
    let quiet = run_logged(tmp.path(), &["-q"], &[("RUST_LOG", "debug")]);
    assert!(
        !quiet.contains(" INFO ") && !quiet.contains("DEBUG") && !quiet.contains("Batch done."),
        "-q:\n{quiet}"
    );
    // --log-level wins over RUST_LOG too.
    let info = run_logged(
        tmp.path(),
        &["--log-level", "info"],
        &[("RUST_LOG", "debug")],
    );
    assert!(
        info.contains("Batch done.") && !info.contains("DEBUG"),
        "--log-level info:\n{info}"
    );
}

#[test]
fn bench_plugins_only_runs_the_one_workload_named_and_refuses_an_unknown_one() {
    let tmp = tempfile::tempdir().unwrap();
    let only = |name: &str| {
        sluice(tmp.path())
            .args(["bench", "plugins", "--quick", "--only", name, "--plugins"])
            .arg(plugins_dir())
            .output()
            .unwrap()
    };
    let out = only("identity");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("identity ratio wasm/native:"), "{text}");
    assert!(!text.contains("uppercase"), "only identity ran:\n{text}");
    assert!(
        !text.contains("instantiation"),
        "no instantiation timed:\n{text}"
    );

    let out = only("lowercase");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
    assert!(
        err.contains("--only takes uppercase or identity, not \"lowercase\""),
        "{err}"
    );
}
