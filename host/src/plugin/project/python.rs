//! Python plugin projects: the template per kind (see [`super::python_templates`]) and the
//! build with componentize-py, which bundles CPython into the component.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

use super::Kind;
use super::python_templates as templates;

/// The componentize-py release plugins are built with (installed from PyPI on first use).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The WIT worlds a Python project's `app.py` may bind, by the `sluice_component` function.
const WORLDS: [&str; 4] = ["transformer", "sink", "receiver", "aggregator"];

/// The files of a new Python project of `kind` named `name`: it builds with [`build`] and
/// passes its own `python3 -m unittest`.
pub fn files(kind: Kind, name: &str) -> Result<Vec<(String, String)>> {
    let mut files: Vec<(String, String)> = templates::files(kind, name)
        .into_iter()
        .map(|(path, text)| (path.to_owned(), text))
        .collect();
    files.extend([
        ("sluice.py".to_owned(), templates::HELPER.to_owned()),
        ("sluice_component.py".to_owned(), templates::GLUE.to_owned()),
        ("wit/plugin.wit".to_owned(), super::WIT.to_owned()),
        (
            format!("{name}.toml"),
            // CPython's heap starts at about 13 MiB; a 2 MiB block's values, offsets and
            // output as Python objects take a few times that.
            super::manifest(name, templates::description(kind), "64MiB", "5s"),
        ),
        (".gitignore".to_owned(), "*.wasm\n__pycache__/\n".to_owned()),
    ]);
    Ok(files)
}

/// Builds the Python project in `dir` (its `app.py`, the helper and `wit/`) into `NAME.wasm`
/// beside its manifest, installing componentize-py first if it is not yet installed.
pub fn build(dir: &Path) -> Result<PathBuf> {
    let name = super::manifest_name(dir)?;
    let world = world(dir)?;
    let wit = dir.join("wit");
    if !wit.is_dir() {
        return Err(Error::Usage(format!(
            "{}: no wit/ directory with the sluice contract (plugin new writes one)",
            dir.display()
        )));
    }
    let tool = install()?;
    let out = dir.join(format!("{name}.wasm"));
    let mut command = Command::new(&tool);
    command
        .current_dir(dir)
        .args([
            "-q",
            "-d",
            "wit",
            "-w",
            world,
            "componentize",
            "app",
            "-p",
            ".",
        ])
        .arg("-o")
        .arg(format!("{name}.wasm"));
    super::run(&mut command, "componentize-py")?;
    Ok(out)
}

/// The WIT world `dir/app.py` binds: the `sluice_component.WORLD(` call it makes.
fn world(dir: &Path) -> Result<&'static str> {
    let app = dir.join("app.py");
    let text =
        std::fs::read_to_string(&app).map_err(Error::io(format!("reading {}", app.display())))?;
    WORLDS
        .iter()
        .find(|w| text.contains(&format!("sluice_component.{w}(")))
        .copied()
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: no `sluice_component.WORLD(plugin.Plugin)` call (WORLD: {})",
                app.display(),
                WORLDS.join(", ")
            ))
        })
}

/// The `componentize-py` executable, installed into a venv under the toolchain directory on
/// first use (pip from PyPI), once: the venv counts as installed only after pip succeeded.
fn install() -> Result<PathBuf> {
    let venv = super::toolchain_dir(&format!("componentize-py-{COMPONENTIZE_PY}"));
    let tool = venv.join("bin").join("componentize-py");
    let done = venv.join(".installed");
    if done.is_file() && tool.is_file() {
        return Ok(tool);
    }
    eprintln!(
        "installing componentize-py {COMPONENTIZE_PY} (pip, from PyPI) into {} (once)",
        venv.display()
    );
    if venv.exists() {
        std::fs::remove_dir_all(&venv).map_err(Error::io(format!(
            "removing the unfinished {}",
            venv.display()
        )))?;
    }
    let python = std::env::var_os("SLUICE_PYTHON").unwrap_or_else(|| "python3".into());
    super::run(
        Command::new(&python).arg("-m").arg("venv").arg(&venv),
        "creating a Python venv for componentize-py (needs python3 with venv)",
    )?;
    super::run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--disable-pip-version-check", "-q"])
            .arg(format!("componentize-py=={COMPONENTIZE_PY}")),
        "installing componentize-py from PyPI",
    )?;
    std::fs::write(&done, COMPONENTIZE_PY)
        .map_err(Error::io(format!("writing {}", done.display())))?;
    Ok(tool)
}
