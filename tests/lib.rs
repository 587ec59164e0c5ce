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

/// Whether the test services must be there: `scripts/test` starts them (`scripts/services
/// start`) and sets `SLUICE_SERVICES=1`, so a test that needs one fails when it is missing.
pub fn services_required() -> bool {
    std::env::var("SLUICE_SERVICES").is_ok_and(|v| v == "1")
}

/// Azurite's blob service, as `scripts/services start` left it (its env file sourced): a store
/// on the test container. `None`, said loudly, when the services are not running and not
/// required (a plain `cargo test`); a panic when `SLUICE_SERVICES=1` and they are missing.
pub fn azurite(test: &str) -> Option<std::sync::Arc<dyn object_store::ObjectStore>> {
    let Ok(container) = std::env::var("SLUICE_AZURITE_CONTAINER") else {
        assert!(
            !services_required(),
            "{test}: SLUICE_SERVICES=1 but SLUICE_AZURITE_CONTAINER is unset: \
             source the env file of scripts/services start"
        );
        eprintln!(
            "\n*** SKIPPED {test}: Azurite is not configured. Run `scripts/services start` and \
             source `$(scripts/services env)`, or run scripts/test. ***\n"
        );
        return None;
    };
    let account = std::env::var("SLUICE_AZURITE_ACCOUNT").unwrap_or("devstoreaccount1".into());
    let mut builder = object_store::azure::MicrosoftAzureBuilder::new()
        .with_use_emulator(true)
        .with_account(account)
        .with_container_name(container);
    if let Ok(key) = std::env::var("SLUICE_AZURITE_KEY") {
        builder = builder.with_access_key(key);
    }
    let store = builder
        .build()
        .unwrap_or_else(|e| panic!("{test}: cannot configure Azurite: {e}"));
    Some(std::sync::Arc::new(store))
}

/// A prefix no other test run uses: `name/<pid>-<nanos>`.
pub fn unique_prefix(name: &str) -> object_store::path::Path {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    object_store::path::Path::from(format!("{name}/{}-{nanos}", std::process::id()))
}
