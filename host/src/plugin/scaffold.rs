//! `sluice plugin new`, `build`, `check` and `list`: the plugin author's tools.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

use super::search::PluginPath;
use super::templates::{self, TemplateKind};
use super::{Plugin, PluginRuntime};

/// Where the SDK was when this host was built; `plugin new` points new projects at it.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sdk")
}

/// Creates a ready plugin project in `dir/NAME` from the template of `kind` (see
/// [`super::templates`]): it builds with [`build_project`] and passes its own `cargo test`.
pub fn new_project(name: &str, parent: &Path, sdk: &Path, kind: TemplateKind) -> Result<PathBuf> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        || !name.as_bytes()[0].is_ascii_lowercase()
    {
        return Err(Error::Usage(format!(
            "plugin name {name:?}: use lower-case letters, digits, '-' and '_', starting with a letter"
        )));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(Error::Usage(format!(
            "{} already exists; choose another name or remove it",
            dir.display()
        )));
    }
    let sdk = std::fs::canonicalize(sdk).map_err(|e| {
        Error::Usage(format!(
            "the sluice SDK is not at {} ({e}); pass --sdk PATH to the `sdk/` directory of a sluice checkout",
            sdk.display()
        ))
    })?;
    let (lib, description, readme) = templates::files(kind, name);
    let files: [(&str, String); 6] = [
        (
            "Cargo.toml",
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
            ".cargo/config.toml",
            // No `[build] target` here: `cargo test` runs the plugin's tests natively (a wasm
            // test binary cannot be executed), and `sluice plugin build` passes the target.
            r#"# Byte loops run 7-8x faster with WebAssembly SIMD.
[target.wasm32-wasip2]
rustflags = ["-C", "target-feature=+simd128"]
"#
            .to_owned(),
        ),
        ("src/lib.rs", lib),
        (
            &format!("{name}.toml"),
            format!(
                r#"version = 1
name = "{name}"
plugin-version = "0.1.0"
description = "{description}"

[limits]
memory = "64MiB"
time = "1s"
"#
            ),
        ),
        ("README.md", readme),
        (".gitignore", "/target\n*.wasm\n".to_owned()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&path, text).map_err(Error::io(format!("writing {}", path.display())))?;
    }
    Ok(dir)
}

/// Builds the plugin project in `dir` and copies `NAME.wasm` next to its manifest.
pub fn build_project(dir: &Path) -> Result<PathBuf> {
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
pub fn ensure_wasm_target() -> Result<()> {
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

/// What `sluice plugin check` prints for a plugin that loads: what it is (description,
/// version, world), what it takes (parameters with their defaults), its limits and what it
/// asks for.
pub fn describe(plugin: &Plugin) -> String {
    let i = plugin.info();
    let m = &i.manifest;
    let asks = if m.capabilities.dirs.is_empty() {
        "nothing".to_owned()
    } else {
        format!("directories {}", m.capabilities.dirs.join(", "))
    };
    format!(
        "plugin    {} {}\nabout     {}\nfile      {} ({} bytes)\nsha256    {}\nworld     {} (exports {})\nimports   {}\nparams    {}\nlimits    {}\nasks for  {asks}\ncompiled  in {:.1} ms ({})\n",
        i.name,
        m.plugin_version,
        if m.description.is_empty() {
            "(no description in its manifest)"
        } else {
            &m.description
        },
        i.path.display(),
        i.size,
        i.digest,
        if plugin.has_self_test() {
            "tested-transformer"
        } else {
            i.kind.world()
        },
        i.exports.join(", "),
        i.imports.join(", "),
        params_line(m),
        limits_line(&i.limits),
        i.compile_time.as_secs_f64() * 1e3,
        if i.cached {
            "from the cache"
        } else {
            "compiled now, cached"
        },
    )
}

/// The manifest's `[params]` (the defaults a pipeline's `params` override), as `k = "v", …`.
fn params_line(m: &super::Manifest) -> String {
    if m.params.is_empty() {
        return "no defaults in its manifest".to_owned();
    }
    m.params
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn limits_line(l: &super::limits::Limits) -> String {
    format!(
        "memory {} MiB, time {}, fuel {}",
        l.memory >> 20,
        humantime::format_duration(l.time),
        l.fuel.map_or("off".to_owned(), |f| f.to_string())
    )
}

/// `sluice plugin check FILE`: the description, or the reason it is refused.
pub fn check(runtime: &PluginRuntime, file: &Path) -> Result<String> {
    let plugin = runtime.inspect_file(file)?;
    Ok(describe(&plugin))
}

/// `sluice plugin list DIR…`: the directories as a search path, first match wins. One block
/// per plugin file: name, kind, version, size, digest and status (`ok`, `shadowed by` the
/// earlier file of the same name, or `refused:` and why), then its description, parameter
/// defaults, limits and capabilities.
pub fn list(runtime: &PluginRuntime, path: &PluginPath) -> Result<String> {
    if path.is_empty() {
        return Err(Error::Usage(format!(
            "no plugin directory to list{}",
            if path.unset.is_empty() {
                String::new()
            } else {
                format!(" (left out, variable not set: {})", path.unset.join(", "))
            }
        )));
    }
    for dir in &path.dirs {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
    }
    let mut out = format!("search path: {}\n", path.describe());
    out.push_str(&format!(
        "{:<16} {:<12} {:<10} {:>9}  {:<12}  status\n",
        "name", "kind", "version", "bytes", "sha256"
    ));
    let files = path.files();
    for (file, wins) in &files {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let status = match wins {
            true => "ok".to_owned(),
            false => {
                let winner = files
                    .iter()
                    .find(|(f, w)| *w && f.file_stem() == file.file_stem())
                    .map_or_else(String::new, |(f, _)| f.display().to_string());
                format!("shadowed by {winner} (first match wins)")
            }
        };
        match runtime.inspect_file(file) {
            Ok(p) => {
                let i = p.info();
                let m = &i.manifest;
                out.push_str(&format!(
                    "{:<16} {:<12} {:<10} {:>9}  {:<12}  {status}\n",
                    i.name,
                    i.kind.to_string(),
                    m.plugin_version,
                    i.size,
                    &i.digest[..12]
                ));
                out.push_str(&format!("    file      {}\n", file.display()));
                if !m.description.is_empty() {
                    out.push_str(&format!("    about     {}\n", m.description));
                }
                out.push_str(&format!("    params    {}\n", params_line(m)));
                out.push_str(&format!("    limits    {}\n", limits_line(&i.limits)));
                if !m.capabilities.dirs.is_empty() {
                    out.push_str(&format!(
                        "    asks for  directories {}\n",
                        m.capabilities.dirs.join(", ")
                    ));
                }
            }
            Err(e) => {
                out.push_str(&format!(
                    "{stem:<16} {:<12} {:<10} {:>9}  {:<12}  refused: {e}\n",
                    "-", "-", "-", "-"
                ));
                out.push_str(&format!("    file      {}\n", file.display()));
                if !wins {
                    out.push_str(&format!("    ({status})\n"));
                }
            }
        }
    }
    Ok(out)
}
