//! `sluice plugin new` and `sluice plugin build`: plugin projects in every language a plugin can
//! be written in. One file per language: what its template holds, how it is built, and which
//! toolchain it needs (installed on first use, once, under `~/.cache/sluice/toolchains`).
//!
//! Every language's project is self-contained: the template carries the WIT contract and the
//! language's thin helper (a record view over the columnar batch and an output builder), so
//! that it builds outside a sluice checkout. Rust projects depend on the SDK crate instead.

mod c;
mod js;
mod js_templates;
mod python;
mod python_templates;
mod rust;
mod rust_templates;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use crate::error::{Error, Result};

pub use rust::default_sdk_path;

/// The WIT contract every plugin is built against, carried by non-Rust templates.
pub const WIT: &str = include_str!("../../../../wit/plugin.wit");

/// What `plugin new --kind` makes: one per WIT world a plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A transformation (world `transformer`): upper-cases values, rejects empty ones.
    Transform,
    /// A sink (world `sink`): counts each batch's records and logs them at commit.
    Sink,
    /// A receiver (world `receiver`): counts from 0 to `count`, once.
    Receiver,
    /// An aggregate for `reduce-by-key-and-window` (world `aggregator`): the sum per key.
    Aggregate,
}

impl Kind {
    /// The WIT world a plugin of this kind targets.
    pub fn world(self) -> &'static str {
        match self {
            Self::Transform => "transformer",
            Self::Sink => "sink",
            Self::Receiver => "receiver",
            Self::Aggregate => "aggregator",
        }
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "transform" => Ok(Self::Transform),
            "sink" => Ok(Self::Sink),
            "receiver" => Ok(Self::Receiver),
            "aggregate" => Ok(Self::Aggregate),
            _ => Err(format!(
                "{s:?}: choose transform, sink, receiver or aggregate"
            )),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transform => "transform",
            Self::Sink => "sink",
            Self::Receiver => "receiver",
            Self::Aggregate => "aggregate",
        })
    }
}

/// The languages a plugin project can be written in (`plugin new --lang`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust with the `sluice-sdk` crate, built by cargo for `wasm32-wasip2`.
    Rust,
    /// Python, built by `componentize-py` (it bundles CPython).
    Python,
    /// JavaScript, built by `@bytecodealliance/componentize-js` (SpiderMonkey).
    Js,
    /// C, built by clang with wasi-libc, `wit-bindgen c` and `wasm-component-ld`.
    C,
}

impl FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "rust" => Ok(Self::Rust),
            "python" | "py" => Ok(Self::Python),
            "js" | "javascript" => Ok(Self::Js),
            "c" => Ok(Self::C),
            _ => Err(format!("{s:?}: choose rust, python, js or c")),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::Js => "js",
            Self::C => "c",
        })
    }
}

/// What `plugin new` needs besides the name, kind and language.
#[derive(Debug, Clone)]
pub struct NewOptions {
    /// The Rust SDK crate's directory (Rust projects depend on it by path).
    pub sdk: PathBuf,
}

/// Creates a ready plugin project in `parent/NAME` from the template of `lang` and `kind`: it
/// builds with [`build_project`] and passes its own tests (`cargo test`, `python3 -m unittest`,
/// `node --test`, `make test`).
pub fn new_project(
    lang: Lang,
    kind: Kind,
    name: &str,
    parent: &Path,
    options: &NewOptions,
) -> Result<PathBuf> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        return Err(Error::Usage(format!(
            "{} already exists; choose another name or remove it",
            dir.display()
        )));
    }
    let files = match lang {
        Lang::Rust => rust::files(kind, name, &options.sdk)?,
        Lang::Python => python::files(kind, name)?,
        Lang::Js => js::files(kind, name)?,
        Lang::C => c::files(kind, name)?,
    };
    write_files(&dir, &files)?;
    Ok(dir)
}

/// Builds the plugin project in `dir` with its language's toolchain (found by the files the
/// template wrote) and leaves `NAME.wasm` next to its manifest `NAME.toml`.
pub fn build_project(dir: &Path) -> Result<PathBuf> {
    match detect(dir)? {
        Lang::Rust => rust::build(dir),
        Lang::Python => python::build(dir),
        Lang::Js => js::build(dir),
        Lang::C => c::build(dir),
    }
}

/// The language of the project in `dir`, by the file its template marks it with.
pub fn detect(dir: &Path) -> Result<Lang> {
    let markers = [
        ("Cargo.toml", Lang::Rust),
        ("app.py", Lang::Python),
        ("app.js", Lang::Js),
        ("plugin.c", Lang::C),
    ];
    markers
        .iter()
        .find(|(file, _)| dir.join(file).is_file())
        .map(|(_, lang)| *lang)
        .ok_or_else(|| {
            Error::Usage(format!(
                "{} is not a plugin project: it has none of Cargo.toml (Rust), app.py (Python), app.js (JavaScript) or plugin.c (C)",
                dir.display()
            ))
        })
}

/// The plugin's name: the stem of the single `NAME.toml` manifest in `dir` (Rust projects
/// name theirs after the crate; other languages have only the manifest).
pub fn manifest_name(dir: &Path) -> Result<String> {
    let mut names = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(Error::io(format!("reading {}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "toml") && !matches!(stem, "Cargo" | "pyproject") {
            names.push(stem.to_owned());
        }
    }
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Usage(format!(
            "{}: no NAME.toml plugin manifest",
            dir.display()
        ))),
        many => Err(Error::Usage(format!(
            "{}: several manifests ({}); keep one NAME.toml",
            dir.display(),
            many.join(", ")
        ))),
    }
}

/// The common manifest of a new plugin: name, version, description and limits.
pub fn manifest(name: &str, description: &str, memory: &str, time: &str) -> String {
    format!(
        r#"version = 1
name = "{name}"
plugin-version = "0.1.0"
description = "{description}"

[limits]
memory = "{memory}"
time = "{time}"
"#
    )
}

/// Where the toolchain `name` (a venv, an npm project, a C bindings generator) lives once
/// installed: `$SLUICE_TOOLCHAINS`, else `~/.cache/sluice/toolchains`, then `name`.
pub fn toolchain_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("SLUICE_TOOLCHAINS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice/toolchains"))
        })
        .unwrap_or_else(|| PathBuf::from(".sluice-toolchains"));
    root.join(name)
}

/// Runs `command`, which does `what`; a failure to start or a non-zero exit is a usage error
/// naming `what` and the command.
pub fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .map_err(Error::io(format!("{what}: running {command:?}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{what} failed ({status}): {command:?}"
        )))
    }
}

/// Copies the plugin project `from` over `to`, its sources only (no `*.wasm`, `target`,
/// `node_modules`, `__pycache__` or `build`), keeping what `to` built before so that a second
/// build is incremental. A Rust project's relative `path` dependencies are made absolute, so
/// the copy builds where it lies. Used by `bench plugins --lang` and the tests, which build
/// `examples/` outside the checkout.
pub fn copy_project(from: &Path, to: &Path) -> Result<()> {
    copy_sources(from, to)?;
    let cargo_toml = to.join("Cargo.toml");
    if cargo_toml.is_file() {
        let text = std::fs::read_to_string(&cargo_toml)
            .map_err(Error::io(format!("reading {}", cargo_toml.display())))?;
        let mut doc: toml::Table = toml::from_str(&text)
            .map_err(|e| Error::Usage(format!("{}: {e}", cargo_toml.display())))?;
        if let Some(deps) = doc.get_mut("dependencies").and_then(|d| d.as_table_mut()) {
            for (_, dep) in deps.iter_mut() {
                let Some(path) = dep.get_mut("path") else {
                    continue;
                };
                if let Some(rel) = path.as_str().filter(|p| Path::new(p).is_relative()) {
                    let abs = std::fs::canonicalize(from.join(rel))
                        .map_err(Error::io(format!("{}: path {rel}", from.display())))?;
                    *path = toml::Value::String(abs.display().to_string());
                }
            }
        }
        let text = toml::to_string(&doc).map_err(|e| Error::Usage(e.to_string()))?;
        std::fs::write(&cargo_toml, text)
            .map_err(Error::io(format!("writing {}", cargo_toml.display())))?;
    }
    Ok(())
}

/// Whether `name` is something a build makes, not a source.
pub fn is_build_output(name: &str) -> bool {
    name.ends_with(".wasm") || matches!(name, "target" | "node_modules" | "__pycache__" | "build")
}

fn copy_sources(from: &Path, to: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(from).map_err(Error::io(format!("reading {}", from.display())))?;
    std::fs::create_dir_all(to).map_err(Error::io(format!("creating {}", to.display())))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_build_output(&name) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_sources(&path, &to.join(&*name))?;
        } else {
            std::fs::copy(&path, to.join(&*name))
                .map_err(Error::io(format!("copying {}", path.display())))?;
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase();
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "plugin name {name:?}: use lower-case letters, digits, '-' and '_', starting with a letter"
        )))
    }
}

fn write_files(dir: &Path, files: &[(String, String)]) -> Result<()> {
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&path, text).map_err(Error::io(format!("writing {}", path.display())))?;
    }
    Ok(())
}
