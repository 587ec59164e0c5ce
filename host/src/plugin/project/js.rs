//! JavaScript plugin projects: the template per kind and the build (componentize-js).
//!
//! A project holds `app.js` (the plugin class; it imports only the helper `sluice.js`, so
//! `node --test` runs it natively), `package.json` (which names the WIT world under
//! `sluice.world`), `wit/plugin.wit` and `NAME.toml`. The build generates the component's
//! entry `.sluice/entry.js` (the host's imports wired into the helper, the world's export made
//! from the plugin class) and runs `componentize-js` on it from a small Node script, with the
//! HTTP and fetch-event features off, so the component imports only the WIT world and the
//! WASI interfaces the host links (stdio, clocks, random; nothing is granted beyond them).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::js_templates as templates;
use super::{Kind, WIT, manifest, manifest_name, run, toolchain_dir};
use crate::error::{Error, Result};

/// The helper every JavaScript project carries (`sdk/js/sluice.js`).
pub const HELPER: &str = include_str!("../../../../sdk/js/sluice.js");

/// The componentize-js release the build installs and uses, pinned.
const COMPONENTIZE_JS: &str = "0.23.0";

/// The Node script that turns a project's entry into a component (run from the project).
const BUILD_SCRIPT: &str = r#"// Written by `sluice plugin build`: componentize-js on a project's generated entry.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const [world, out] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath: '.sluice/entry.js',
  witPath: 'wit',
  worldName: world,
  // No fetch(), no HTTP handler: the host grants no wasi:http.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
"#;

/// The manifest's memory limit. Measured with json-upper: the engine's snapshot takes 9 MiB,
/// a 2 MiB block peaks under 16 MiB; the rest leaves room for the garbage of many calls on
/// one instance.
const MEMORY: &str = "64MiB";

/// The files of a new JavaScript project of `kind` named `name`, by path relative to its directory.
pub fn files(kind: Kind, name: &str) -> Result<Vec<(String, String)>> {
    let (app, test, description, readme) = templates::files(kind, name);
    Ok(vec![
        ("app.js".to_owned(), app),
        ("app.test.js".to_owned(), test),
        ("sluice.js".to_owned(), HELPER.to_owned()),
        ("wit/plugin.wit".to_owned(), WIT.to_owned()),
        (
            "package.json".to_owned(),
            format!(
                r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "description": "{description}",
  "scripts": {{
    "test": "node --test",
    "build": "sluice plugin build"
  }},
  "sluice": {{
    "world": "{world}"
  }}
}}
"#,
                description = description.replace('`', ""),
                world = kind.world()
            ),
        ),
        (
            format!("{name}.toml"),
            manifest(name, description, MEMORY, "1s"),
        ),
        ("README.md".to_owned(), readme),
        (
            ".gitignore".to_owned(),
            "/.sluice\n/node_modules\n*.wasm\n".to_owned(),
        ),
    ])
}

/// Builds the JavaScript project in `dir` into `NAME.wasm` beside its manifest, installing
/// componentize-js on first use.
pub fn build(dir: &Path) -> Result<PathBuf> {
    let name = manifest_name(dir)?;
    let world = world(dir)?;
    let toolchain = ensure_toolchain()?;
    let entry = dir.join(".sluice/entry.js");
    write(&entry, &entry_source(world)?)?;
    let script = toolchain.join("sluice-build.mjs");
    write_atomic(&script, BUILD_SCRIPT)?;
    let out = dir.join(format!("{name}.wasm"));
    run(
        Command::new("node")
            .arg(&script)
            .arg(world)
            .arg(&out)
            .current_dir(dir),
        &format!("componentize-js (building {name}.wasm, world {world})"),
    )?;
    Ok(out)
}

/// The WIT world named in `package.json` under `sluice.world`.
fn world(dir: &Path) -> Result<&'static str> {
    let path = dir.join("package.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let named = json.pointer("/sluice/world").and_then(|w| w.as_str());
    [
        Kind::Transform,
        Kind::Sink,
        Kind::Receiver,
        Kind::Aggregate,
    ]
    .iter()
    .map(|k| k.world())
    .find(|w| Some(*w) == named)
    .ok_or_else(|| {
        Error::Usage(format!(
            "{}: key sluice.world is {named:?}; choose transformer, sink, receiver or aggregator",
            path.display()
        ))
    })
}

/// The component's entry for `world`: the host's imports into the helper, and the world's
/// export made from the plugin class in `app.js`.
fn entry_source(world: &str) -> Result<String> {
    let (export, make) = match world {
        "transformer" => ("transform", "transformer"),
        "sink" => ("deliver", "sink"),
        "receiver" => ("source", "receiver"),
        "aggregator" => ("aggregate", "aggregator"),
        other => return Err(Error::Usage(format!("unknown world {other:?}"))),
    };
    Ok(format!(
        "// Generated by `sluice plugin build`; edit app.js instead.\n\
         import * as host from 'sluice:plugin/host@0.1.0';\n\
         import {{ setHost, {make} }} from '../sluice.js';\n\
         import Plugin from '../app.js';\n\
         setHost(host);\n\
         export const {export} = {make}(Plugin);\n"
    ))
}

/// The toolchain directory with componentize-js installed (npm, pinned), installed once: into
/// a fresh directory renamed into place, so concurrent builds never see half an install.
fn ensure_toolchain() -> Result<PathBuf> {
    let dir = toolchain_dir(&format!("componentize-js-{COMPONENTIZE_JS}"));
    let marker = dir.join("node_modules/@bytecodealliance/componentize-js/package.json");
    if marker.is_file() {
        return Ok(dir);
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(Error::io(format!("creating {}", parent.display())))?;
    let staging = parent.join(format!(
        ".componentize-js-{COMPONENTIZE_JS}.{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    write(
        &staging.join("package.json"),
        "{ \"name\": \"sluice-componentize-js\", \"private\": true }\n",
    )?;
    println!(
        "installing @bytecodealliance/componentize-js@{COMPONENTIZE_JS} (npm, once) into {}",
        dir.display()
    );
    run(
        Command::new("npm")
            .args(["install", "--save-exact", "--no-audit", "--no-fund"])
            .arg(format!(
                "@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"
            ))
            .current_dir(&staging),
        "npm install @bytecodealliance/componentize-js (JavaScript plugins need Node.js 18+ and npm)",
    )?;
    if std::fs::rename(&staging, &dir).is_err() {
        // Another build installed it first; keep that one.
        let _ = std::fs::remove_dir_all(&staging);
    }
    if !marker.is_file() {
        return Err(Error::Usage(format!(
            "componentize-js is not at {} after npm install",
            marker.display()
        )));
    }
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("creating {}", parent.display())))?;
    }
    std::fs::write(path, text).map_err(Error::io(format!("writing {}", path.display())))
}

/// Writes `text` to `path` unless it holds it already, through a renamed temporary file, so a
/// concurrent build never runs half a script.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    write(&tmp, text)?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!("writing {}", path.display())))
}
