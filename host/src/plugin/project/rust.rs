//! Rust plugin projects: a crate depending on `sluice-sdk`, built by cargo for `wasm32-wasip2`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

use super::Kind;
use super::rust_templates as templates;

/// Where the SDK was when this host was built; `plugin new` points new projects at it.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sdk")
}

/// The files of a new Rust project of `kind` named `name` (see [`super::rust_templates`]),
/// depending on the SDK crate at `sdk`: it builds with [`build`] and passes its own `cargo
/// test`.
pub fn files(kind: Kind, name: &str, sdk: &Path) -> Result<Vec<(String, String)>> {
    let sdk = std::fs::canonicalize(sdk).map_err(|e| {
        Error::Usage(format!(
            "the sluice SDK is not at {} ({e}); pass --sdk PATH to the `sdk/` directory of a sluice checkout",
            sdk.display()
        ))
    })?;
    let (lib, description, readme) = templates::files(kind, name);
    Ok(vec![
        (
            "Cargo.toml".to_owned(),
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
sluice-sdk = {{ path = {sdk:?} }}

[profile.release]
lto = true
codegen-units = 1
strip = true

# A plugin is a project of its own, not part of an enclosing workspace.
[workspace]
"#,
                sdk = sdk.display().to_string()
            ),
        ),
        (
            ".cargo/config.toml".to_owned(),
            // No `[build] target` here: `cargo test` runs the plugin's tests natively (a wasm
            // test binary cannot be executed), and `sluice plugin build` passes the target.
            r#"# Byte loops run 7-8x faster with WebAssembly SIMD.
[target.wasm32-wasip2]
rustflags = ["-C", "target-feature=+simd128"]
"#
            .to_owned(),
        ),
        ("src/lib.rs".to_owned(), lib),
        (
            format!("{name}.toml"),
            super::manifest(name, description, "64MiB", "1s"),
        ),
        ("README.md".to_owned(), readme),
        (".gitignore".to_owned(), "/target\n*.wasm\n".to_owned()),
    ])
}

/// Builds the plugin project in `dir` and copies `NAME.wasm` next to its manifest.
pub fn build(dir: &Path) -> Result<PathBuf> {
    let cargo_toml = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo_toml).map_err(|e| {
        Error::Usage(format!(
            "{} is not a plugin project: {} ({e})",
            dir.display(),
            cargo_toml.display()
        ))
    })?;
    let manifest: toml::Value = toml::from_str(&text)
        .map_err(|e| Error::Usage(format!("{}: {e}", cargo_toml.display())))?;
    let name = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| Error::Usage(format!("{}: no [package] name", cargo_toml.display())))?
        .to_owned();
    ensure_wasm_target()?;
    let status = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .status()
        .map_err(Error::io("running cargo"))?;
    if !status.success() {
        return Err(Error::Usage(format!(
            "cargo build failed in {} ({status})",
            dir.display()
        )));
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let artifact = target_dir
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let out = dir.join(format!("{name}.wasm"));
    std::fs::copy(&artifact, &out).map_err(Error::io(format!(
        "copying {} to {}",
        artifact.display(),
        out.display()
    )))?;
    Ok(out)
}

/// Installs the `wasm32-wasip2` target with rustup when it is missing.
fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip2"))
        .unwrap_or(false);
    if !installed {
        let status = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status()
            .map_err(Error::io("running rustup target add wasm32-wasip2"))?;
        if !status.success() {
            return Err(Error::Usage(
                "rustup target add wasm32-wasip2 failed".to_owned(),
            ));
        }
    }
    Ok(())
}
