//! A Rust plugin author's workflow: `plugin new` for every kind, `cargo test` and `plugin
//! build` in the new project, `plugin test` on a few records, the plugin search path, and what
//! `plugin list`/`check` tell.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sluice_tests::*;

fn sluice(cache: &Path) -> Command {
    let mut c = Command::new(sluice_bin());
    c.arg("--cache-dir").arg(cache).arg("-q");
    c
}

/// The checkout's SDK, which the scaffolded projects depend on by path.
fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// One target directory for every scaffolded project of every run, beside the tests' own, so
/// the SDK and its dependencies compile once (natively for `cargo test`, and for wasm).
fn shared_project_target() -> PathBuf {
    sluice_bin()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("plugin-workflow-projects")
}

const CARGO_LIMIT: Duration = Duration::from_secs(900);

#[test]
fn plugin_new_makes_a_project_of_every_kind_that_passes_cargo_test_and_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let target = shared_project_target();
    for (kind, world) in [
        ("transform", "transformer"),
        ("sink", "sink"),
        ("receiver", "receiver"),
        ("aggregate", "aggregator"),
    ] {
        let name = format!("my-{kind}");
        let made = run_bounded(
            sluice(&cache)
                .args(["plugin", "new", &name, "--kind", kind, "--lang", "rust"])
                .arg("--sdk")
                .arg(sdk_dir())
                .current_dir(tmp.path()),
            Duration::from_secs(30),
        );
        assert!(made.status.success(), "{kind}: {}", output_text(&made));
        let project = tmp.path().join(&name);

        // The project's own tests run natively, out of the box.
        let tested = run_bounded(
            Command::new("cargo")
                .args(["test", "--quiet"])
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(&project),
            CARGO_LIMIT,
        );
        assert!(
            tested.status.success(),
            "cargo test, {kind}: {}",
            output_text(&tested)
        );
        assert!(
            String::from_utf8_lossy(&tested.stdout).contains("test result: ok."),
            "cargo test, {kind}: {}",
            output_text(&tested)
        );

        let built = run_bounded(
            sluice(&cache)
                .args(["plugin", "build"])
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(&project),
            CARGO_LIMIT,
        );
        assert!(
            built.status.success(),
            "plugin build, {kind}: {}",
            output_text(&built)
        );
        let out = String::from_utf8_lossy(&built.stdout);
        assert!(
            out.lines()
                .any(|l| l.starts_with("world") && l.contains(&format!(" {world} "))),
            "{kind}: {out}"
        );
        assert!(project.join(format!("{name}.wasm")).is_file());

        if kind == "transform" {
            // The built component does what its README says.
            let tried = run_bounded(
                sluice(&cache)
                    .args(["plugin", "test"])
                    .arg(project.join(format!("{name}.wasm")))
                    .args(["--text", "hello", "--text", ""]),
                Duration::from_secs(60),
            );
            assert!(tried.status.success(), "{}", output_text(&tried));
            assert_eq!(String::from_utf8_lossy(&tried.stdout), "HELLO\n");
            assert!(
                String::from_utf8_lossy(&tried.stderr)
                    .contains("reject record 1 \"\": empty value"),
                "{}",
                output_text(&tried)
            );
        }
    }
}

#[test]
fn plugin_new_refuses_an_unknown_language_naming_the_ones_it_knows() {
    let tmp = tempfile::tempdir().unwrap();
    for lang in ["go", "cobol"] {
        let out = run_bounded(
            sluice(&tmp.path().join("cache"))
                .args(["plugin", "new", "p", "--lang", lang])
                .current_dir(tmp.path()),
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("choose rust, python, js or c"),
            "{lang}: {err}"
        );
        assert!(!tmp.path().join("p").exists());
    }
}

fn plugin_test(cache: &Path, file: &Path, args: &[&str]) -> Output {
    run_bounded(
        sluice(cache).args(["plugin", "test"]).arg(file).args(args),
        Duration::from_secs(60),
    )
}

#[test]
fn plugin_test_prints_the_output_records_of_uppercase_and_grep_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let input = tmp.path().join("input.txt");
    std::fs::write(&input, "from a file\r\nerror: last\n").unwrap();
    let out = plugin_test(
        &cache,
        &plugins_dir().join("uppercase.wasm"),
        &["--text", "a line", "--text", "ünï"],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "A LINE\nüNï\n");

    let out = plugin_test(
        &cache,
        &plugins_dir().join("grep.wasm"),
        &[
            "--text",
            "an error",
            "--text",
            "fine",
            "--params",
            "pattern=error",
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "an error\n");

    // `--input`: one record per line, after the `--text` ones; params over the defaults.
    let out = plugin_test(
        &cache,
        &plugins_dir().join("grep.wasm"),
        &[
            "--text",
            "error first",
            "--input",
            input.to_str().unwrap(),
            "--params",
            "pattern=error",
            "--params",
            "invert=true",
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from a file\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3 records in, 1 out, 0 rejected"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn plugin_test_shows_a_rejecting_plugins_rejects_with_their_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let out = plugin_test(
        &tmp.path().join("cache"),
        &fixtures_dir().join("bad-record.wasm"),
        &["--text", "ok", "--text", "bad", "--text", "fine"],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\nfine\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l == "reject record 1 \"bad\": fixture: the value is `bad`"),
        "{err}"
    );
    assert!(err.contains("3 records in, 2 out, 1 rejected"), "{err}");
}

#[test]
fn plugin_test_exits_non_zero_with_a_classified_error_naming_the_plugin_on_a_trap() {
    let tmp = tempfile::tempdir().unwrap();
    let out = plugin_test(
        &tmp.path().join("cache"),
        &fixtures_dir().join("trap-always.wasm"),
        &["--text", "x"],
    );
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: plugin `trap-always` (sha256 ")
                && l.contains("in `transform`: panicked: fixture trap-always")),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{}", output_text(&out));
}

/// A directory holding `identity.wasm` under the name `uppercase` (no manifest): a plugin of
/// that name whose digest tells it apart from the real one.
fn impostor_dir(into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    std::fs::copy(
        plugins_dir().join("identity.wasm"),
        into.join("uppercase.wasm"),
    )
    .unwrap();
    into.to_owned()
}

fn sha256(file: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(file).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_plugin_search_path_takes_the_first_match_and_expands_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    impostor_dir(&tmp.path().join("mine"));
    let pipeline = |plugins: &str| {
        let file = tmp.path().join("p.toml");
        std::fs::write(
            &file,
            format!(
                "version = 1\nplugins = {plugins}\n\n[source]\nkind = \"generator\"\npartitions = 1\nrate = 0\nlimit = 10\n\n[[transform]]\nplugin = \"uppercase\"\n\n[[sink]]\nkind = \"count\"\n"
            ),
        )
        .unwrap();
        file
    };
    let validate = |file: &Path, extra: &[&str]| {
        let out = run_bounded(
            sluice(&cache)
                .arg("validate")
                .arg(file)
                .args(extra)
                .env("SLUICE_WORKFLOW_PLUGINS", plugins_dir())
                .env_remove("SLUICE_WORKFLOW_UNSET"),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("plugin uppercase sha256 "))
            .unwrap_or_else(|| panic!("{}", output_text(&out)))
            .to_owned()
    };
    let impostor = sha256(&tmp.path().join("mine/uppercase.wasm"));
    let real = sha256(&plugins_dir().join("uppercase.wasm"));
    assert_ne!(impostor, real);

    // Relative to the pipeline file; an unset variable is left out.
    let file = pipeline(r#"["$SLUICE_WORKFLOW_UNSET", "./mine", "$SLUICE_WORKFLOW_PLUGINS"]"#);
    assert_eq!(validate(&file, &[]), impostor);
    let file = pipeline(r#"["${SLUICE_WORKFLOW_PLUGINS}", "./mine"]"#);
    assert_eq!(validate(&file, &[]), real);
    // A string stays valid.
    let file = pipeline(r#""mine""#);
    assert_eq!(validate(&file, &[]), impostor);
    // Repeated --plugins replace the file's path, in their order.
    let mine = tmp.path().join("mine");
    let plugins = plugins_dir();
    let (mine, plugins) = (mine.to_str().unwrap(), plugins.to_str().unwrap());
    assert_eq!(
        validate(&file, &["--plugins", plugins, "--plugins", mine]),
        real
    );
    assert_eq!(
        validate(&file, &["--plugins", mine, "--plugins", plugins]),
        impostor
    );

    // A plugin on no directory of the path: the message names the whole path.
    let missing = tmp.path().join("p.toml");
    std::fs::write(
        &missing,
        "version = 1\nplugins = [\"./mine\", \"./nothing\"]\n\n[source]\nkind = \"generator\"\npartitions = 1\nlimit = 1\n\n[[transform]]\nplugin = \"grep\"\n\n[[sink]]\nkind = \"count\"\n",
    )
    .unwrap();
    let out = run_bounded(
        sluice(&cache).arg("validate").arg(&missing),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plugin `grep` is not in") && err.contains("mine") && err.contains("nothing"),
        "{err}"
    );
}

#[test]
fn plugin_list_names_the_shadowed_duplicate_and_shows_descriptions_params_and_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = impostor_dir(&tmp.path().join("mine"));
    let firsts = plugin_dir_with(
        &plugins_dir(),
        &["uppercase", "grep"],
        &tmp.path().join("p"),
    );
    let out = run_bounded(
        sluice(&tmp.path().join("cache"))
            .args(["plugin", "list"])
            .arg(&mine)
            .arg("$SLUICE_WORKFLOW_LIST")
            .env("SLUICE_WORKFLOW_LIST", &firsts),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let list = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = list
        .lines()
        .filter(|l| l.starts_with("uppercase"))
        .collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(rows[0].ends_with(" ok"), "{list}");
    assert!(
        rows[1].contains(&format!(
            "shadowed by {} (first match wins)",
            mine.join("uppercase.wasm").display()
        )),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("grep") && l.ends_with(" ok")),
        "{list}"
    );
    assert!(
        list.contains("    about     Keeps records whose value contains a pattern."),
        "{list}"
    );
    assert!(list.contains("    params    invert = \"false\""), "{list}");
    assert!(
        list.contains("    limits    memory 64 MiB, time 1s, fuel off"),
        "{list}"
    );
}

#[test]
fn plugin_check_shows_the_description_parameter_defaults_limits_and_capabilities() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_bounded(
        sluice(&tmp.path().join("cache"))
            .args(["plugin", "check"])
            .arg(plugins_dir().join("grep.wasm")),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let check = String::from_utf8_lossy(&out.stdout);
    for line in [
        "plugin    grep 0.1.0",
        "about     Keeps records whose value contains a pattern.",
        "params    invert = \"false\"",
        "limits    memory 64 MiB, time 1s, fuel off",
        "asks for  nothing",
    ] {
        assert!(check.lines().any(|l| l == line), "{line:?} in:\n{check}");
    }
    let out = run_bounded(
        sluice(&tmp.path().join("cache"))
            .args(["plugin", "check"])
            .arg(fixtures_dir().join("wants-dir.wasm")),
        Duration::from_secs(60),
    );
    let check = String::from_utf8_lossy(&out.stdout);
    assert!(
        check
            .lines()
            .any(|l| l.starts_with("asks for  directories /")),
        "{}",
        output_text(&out)
    );
}
