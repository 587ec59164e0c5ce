//! The web UI in a real browser (issue #14): `sluice run --ui` on a generator pipeline with the
//! `grep` plugin, and Debian's headless Chromium, driven by selenium (`ui_browser.py` beside
//! this file, from the venv `scripts/services start` makes), looks at the page as a person
//! would: the batches table fills, each chart draws a path through its data, grep's own
//! counter shows with a count, a batch's page opens from its row, the swap controls are
//! disabled without the token and show the server's 401 for a wrong one, and a new version
//! swapped in through the page shows in the swap history. Screenshots are kept as test
//! artifacts (their paths are printed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sluice_tests::{plugins_dir, skip_or_fail};

use crate::engine::{Running, WAIT_TIMEOUT, sluice_run, write_pipeline};

/// How long the browser script may take in all (each of its waits is bounded by 30 s).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(240);

/// The browser and its driver, and a python that can `import selenium`; `None` when they are
/// missing and the test is to be skipped (as [`skip_or_fail`] decides).
struct Browser {
    python: PathBuf,
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Browser {
    fn find(test: &str) -> Option<Browser> {
        let var = |name: &str, default: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        let home = std::env::var("HOME").unwrap_or_default();
        let b = Browser {
            python: var(
                "SLUICE_UI_PYTHON",
                &format!("{home}/.cache/sluice/ui-venv/bin/python"),
            ),
            chromium: var("SLUICE_CHROMIUM", "/usr/bin/chromium"),
            chromedriver: var("SLUICE_CHROMEDRIVER", "/usr/bin/chromedriver"),
        };
        let selenium = Command::new(&b.python)
            .args(["-c", "import selenium"])
            .output()
            .is_ok_and(|o| o.status.success());
        let missing = [
            (!b.chromium.exists()).then(|| b.chromium.display().to_string()),
            (!b.chromedriver.exists()).then(|| b.chromedriver.display().to_string()),
            (!selenium).then(|| format!("selenium for {}", b.python.display())),
        ];
        let missing: Vec<String> = missing.into_iter().flatten().collect();
        let what = format!(
            "the headless browser is missing: {} (scripts/services start installs Debian's \
             chromium and chromium-driver and a venv with selenium)",
            missing.join(", ")
        );
        if !missing.is_empty() && !skip_or_fail(test, &what) {
            return None;
        }
        Some(b)
    }
}

/// Where the test keeps its screenshots: `$SLUICE_TEST_ARTIFACTS`, else `test-artifacts/` in
/// the target directory the test binary was built in.
fn artifacts() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_TEST_ARTIFACTS") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/<test binary> -> target
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the binary is in target/<profile>/deps");
    target.join("test-artifacts")
}

/// A copy of the `grep` component with a custom section added: the same plugin under another
/// digest, as a new release would be.
fn grep_v2(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(plugins_dir().join("grep.wasm")).unwrap();
    let (name, payload) = (b"sluice-test-version", b"grep-v2");
    let size = 1 + name.len() + payload.len();
    bytes.extend_from_slice(&[0, size as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let path = dir.join("grep-v2.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A free port on loopback.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn the_web_ui_in_headless_chromium_fills_its_tables_draws_its_charts_shows_a_plugins_own_counter_and_keeps_the_controls_behind_the_token()
 {
    let test = "ui::the_web_ui_in_headless_chromium";
    let Some(browser) = Browser::find(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for f in ["grep.wasm", "grep.toml"] {
        std::fs::copy(plugins_dir().join(f), plugins.join(f)).unwrap();
    }
    let pipeline = write_pipeline(
        root,
        r#"version = 1
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 2
rate = 2000

[[transform]]
plugin = "grep"
params = { pattern = "a" }

[[sink]]
kind = "files"
path = "out"

[swap]
watch = false
"#,
    );
    let address = format!("127.0.0.1:{}", free_port());
    let mut cmd = sluice_run(root, &pipeline, &plugins);
    cmd.args(["--ui", &address]);
    let mut run = Running::start(cmd);
    let admin_file = root.join("checkpoints").join("admin.json");
    run.wait_for("the admin file", WAIT_TIMEOUT, || {
        admin_file.exists()
            && std::fs::read(&admin_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some()
    });
    let admin: Value = serde_json::from_slice(&std::fs::read(&admin_file).unwrap()).unwrap();
    let token = admin["token"].as_str().expect("the admin file has a token");

    let shot = artifacts().join("ui.png");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("it/ui_browser.py");
    let swap_file = grep_v2(root);
    let child = Command::new(&browser.python)
        .arg(&script)
        .args(["--url", &format!("http://{address}/")])
        .arg("--screenshot")
        .arg(&shot)
        .args(["--plugin", "grep", "--counter", "grep_kept_total"])
        .arg("--swap-file")
        .arg(&swap_file)
        .arg("--manifest-file")
        .arg(plugins.join("grep.toml"))
        .arg("--chromium")
        .arg(&browser.chromium)
        .arg("--chromedriver")
        .arg(&browser.chromedriver)
        // The token goes by the environment, never on a command line others can read.
        .env("SLUICE_UI_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} cannot start: {e}", browser.python.display()));
    let out = sluice_tests::output_within(child, BROWSER_TIMEOUT, "ui_browser.py", || {
        run.assert_alive("while the browser looked at the UI")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("ui_browser.py:\n{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the browser's checks failed ({}):\n{stdout}{stderr}\nsluice's log (end):\n{}",
        out.status,
        tail(&run.stderr_so_far(), 40)
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} is not a screenshot of a drawn page ({} bytes)",
        shot.display(),
        png.len()
    );
    println!("screenshot: {}", shot.display());
    run.assert_alive("after the browser's checks");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
