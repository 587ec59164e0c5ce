//! Support for sluice's end-to-end tests: where the built components are, and small helpers.
//!
//! The components are built once per test run by `scripts/build-plugins` (which `scripts/test`
//! runs before `cargo test`), never by a `build.rs`. A test that cannot find them fails with a
//! message saying so; it is never skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluice::plugin::PluginRuntime;
use sluice::plugin::limits::RuntimeConfig;

/// The directory `scripts/build-plugins` wrote into: `$SLUICE_TEST_COMPONENTS`, else
/// `$CARGO_TARGET_DIR/sluice-plugins`, else `/root/.cache/sluice/target/sluice-plugins`.
pub fn components_dir() -> PathBuf {
    let dir = std::env::var_os("SLUICE_TEST_COMPONENTS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("sluice-plugins"))
        })
        .unwrap_or_else(|| PathBuf::from("/root/.cache/sluice/target/sluice-plugins"));
    assert!(
        dir.join("plugins").join("uppercase.wasm").exists(),
        "the test components are not built in {}: run scripts/build-plugins (scripts/test does)",
        dir.display()
    );
    dir
}

/// The first-party plugins directory.
pub fn plugins_dir() -> PathBuf {
    components_dir().join("plugins")
}

/// The misbehaving fixtures directory.
pub fn fixtures_dir() -> PathBuf {
    components_dir().join("fixtures")
}

/// A runtime whose compiled-component cache is `cache` (a test's own temporary directory, so
/// tests do not share cache state).
pub fn runtime_with_cache(cache: &Path) -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(cache.to_owned()),
        ..RuntimeConfig::default()
    })
    .expect("the plugin runtime starts")
}

/// Copies `names` (each `NAME.wasm` and its `NAME.toml` if any) from `from` into a fresh
/// directory, so a test can build the plugin directory it needs.
pub fn plugin_dir_with(from: &Path, names: &[&str], into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    for name in names {
        for ext in ["wasm", "toml"] {
            let src = from.join(format!("{name}.{ext}"));
            if src.exists() {
                std::fs::copy(&src, into.join(format!("{name}.{ext}"))).unwrap();
            }
        }
    }
    into.to_owned()
}

/// Parameters from pairs.
pub fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `sluice` binary built with the tests.
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash> -> target/<profile>/sluice
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("sluice");
    assert!(
        bin.exists(),
        "the sluice binary is not at {}; build it with cargo build",
        bin.display()
    );
    bin
}
