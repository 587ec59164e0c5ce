//! C plugin projects: the template per kind and the build (Debian's clang and lld with
//! wasi-libc, `wit-bindgen c` and `wasm-component-ld`).
//!
//! A project holds the plugin's logic (`plugin.c`), its native test (`test.c`, `make test`
//! with the system's cc), the thin helper `sluice/sluice.{h,c}` (from `sdk/c`: the record view
//! and output builder over the generated bindings), the WIT contract and a Makefile whose
//! `wasm` target `sluice plugin build` runs with the toolchain's paths.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

use super::Kind;

/// The `wit-bindgen-cli` release whose generated C compiles with Debian bookworm's clang 14.
pub const WIT_BINDGEN_VERSION: &str = "0.63.0";

/// The Debian packages a C build needs: the compiler, the linker, the C library for
/// `wasm32-wasi` and the compiler runtime for it.
const APT_PACKAGES: [&str; 4] = ["clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32"];

const HELPER_H: &str = include_str!("../../../../sdk/c/sluice.h");
const HELPER_C: &str = include_str!("../../../../sdk/c/sluice.c");
const MAKEFILE: &str = include_str!("../../../../sdk/c/templates/Makefile");

/// The template's `plugin.c`, `test.c` and manifest description for `kind`.
fn template(kind: Kind) -> (&'static str, &'static str, &'static str) {
    match kind {
        Kind::Transform => (
            include_str!("../../../../sdk/c/templates/transform/plugin.c"),
            include_str!("../../../../sdk/c/templates/transform/test.c"),
            "Upper-cases every value; rejects empty values.",
        ),
        Kind::Sink => (
            include_str!("../../../../sdk/c/templates/sink/plugin.c"),
            include_str!("../../../../sdk/c/templates/sink/test.c"),
            "Counts each batch's records and logs the count when the batch commits.",
        ),
        Kind::Receiver => (
            include_str!("../../../../sdk/c/templates/receiver/plugin.c"),
            include_str!("../../../../sdk/c/templates/receiver/test.c"),
            "Counts from 0 to `count` (default 10) on one partition, then ends.",
        ),
        Kind::Aggregate => (
            include_str!("../../../../sdk/c/templates/aggregate/plugin.c"),
            include_str!("../../../../sdk/c/templates/aggregate/test.c"),
            "Aggregate: the sum of the values, as decimal integers, per key.",
        ),
    }
}

/// The files of a new C project of `kind` named `name`, by path relative to its directory: it
/// passes its own `make test` (natively, with cc) and builds with [`build`].
pub fn files(kind: Kind, name: &str) -> Result<Vec<(String, String)>> {
    let (plugin, test, description) = template(kind);
    let kind_upper = kind.to_string().to_uppercase();
    let makefile = MAKEFILE
        .replace("@KIND_UPPER@", &kind_upper)
        .replace("@WORLD@", kind.world())
        .replace("@KIND@", &kind.to_string())
        .replace("@NAME@", name);
    Ok(vec![
        ("plugin.c".to_owned(), plugin.replace("NAME", name)),
        ("test.c".to_owned(), test.replace("NAME", name)),
        ("sluice/sluice.h".to_owned(), HELPER_H.to_owned()),
        ("sluice/sluice.c".to_owned(), HELPER_C.to_owned()),
        ("wit/plugin.wit".to_owned(), super::WIT.to_owned()),
        ("Makefile".to_owned(), makefile),
        (
            format!("{name}.toml"),
            super::manifest(name, description, "64MiB", "1s"),
        ),
        ("README.md".to_owned(), readme(kind, name)),
        (".gitignore".to_owned(), "/build\n*.wasm\n".to_owned()),
    ])
}

fn readme(kind: Kind, name: &str) -> String {
    let usage = match kind {
        Kind::Transform => {
            "Run the built component on a few records, as the pipeline would:\n\n    \
             sluice plugin test NAME.wasm --text hello --text \"\" --input more-records.txt\n"
        }
        Kind::Sink => {
            "Write a few records to it and commit them, as the pipeline would:\n\n    \
             sluice plugin test NAME.wasm --text a --text b\n"
        }
        Kind::Receiver => {
            "Use it as a pipeline's source:\n\n    [source]\n    kind = \"plugin\"\n    \
             plugin = \"NAME\"\n    params = { count = \"100\" }\n"
        }
        Kind::Aggregate => {
            "Use it in a window step:\n\n    [[transform]]\n    \
             builtin = \"reduce-by-key-and-window\"\n    length = \"30s\"\n    \
             aggregate-plugin = \"NAME\"\n"
        }
    };
    format!(
        r#"# NAME

A [sluice](https://example.invalid/sluice) plugin (kind: {kind}), written in C.

    make test                    # the plugin's logic, natively (plugin.c with test.c, cc)
    sluice plugin build          # builds NAME.wasm here (clang, wit-bindgen c, wasm-component-ld)
    sluice plugin check NAME.wasm

`plugin.c` is the plugin; `sluice/sluice.h` documents the helper it uses (a record view of
each batch, an output builder, errors, the host's log and metrics). The first `sluice plugin
build` installs what is missing: Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32
(apt-get) and wit-bindgen-cli {WIT_BINDGEN_VERSION} (cargo install, under
~/.cache/sluice/toolchains).

{usage}
Put this directory on a pipeline's plugin search path, beside the first-party plugins:

    plugins = ["./NAME", "$SLUICE_PLUGINS"]     # in pipeline.toml; first match wins

or copy `NAME.wasm` and `NAME.toml` into a plugin directory.
"#
    )
    .replace("NAME", name)
}

/// Builds the C project in `dir` into `NAME.wasm` beside its manifest, installing the
/// toolchain first when a part of it is missing (once; each install is printed).
pub fn build(dir: &Path) -> Result<PathBuf> {
    let name = super::manifest_name(dir)?;
    if !dir.join("Makefile").is_file() {
        return Err(Error::Usage(format!(
            "{}: no Makefile; a C plugin project comes from `sluice plugin new --lang c`",
            dir.display()
        )));
    }
    let (wit_bindgen, component_ld) = {
        // One install at a time, also across processes (builds started together).
        let _installing = install_lock()?;
        ensure_clang()?;
        (ensure_wit_bindgen()?, find_component_ld()?)
    };
    super::run(
        Command::new("make")
            .arg("-C")
            .arg(dir)
            .arg("wasm")
            .arg(format!("NAME={name}"))
            .arg(format!("WIT_BINDGEN={}", wit_bindgen.display()))
            .arg(format!("COMPONENT_LD={}", component_ld.display()))
            .arg("WASM_LD=wasm-ld"),
        &format!("building the C plugin in {}", dir.display()),
    )?;
    Ok(dir.join(format!("{name}.wasm")))
}

/// An exclusive lock on the toolchain directory's `c-install.lock`, held while the C toolchain
/// is checked and installed; released when dropped.
fn install_lock() -> Result<std::fs::File> {
    let path = super::toolchain_dir("c-install.lock");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("creating {}", parent.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io(format!("opening {}", path.display())))?;
    file.lock()
        .map_err(Error::io(format!("locking {}", path.display())))?;
    Ok(file)
}

/// Whether clang can compile and link for `wasm32-wasi`: the compiler, wasm-ld, wasi-libc and
/// the compiler runtime are all there.
fn clang_ready() -> bool {
    let runtime = Command::new("clang")
        .args(["--target=wasm32-wasi", "-print-libgcc-file-name"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    runtime.is_some_and(|r| r.is_file())
        && on_path("wasm-ld").is_some()
        && Path::new("/usr/lib/wasm32-wasi/libc.a").is_file()
}

/// Installs Debian's clang, lld, wasi-libc and the wasm32 compiler runtime when missing.
fn ensure_clang() -> Result<()> {
    if clang_ready() {
        return Ok(());
    }
    println!(
        "installing the C toolchain: apt-get install {}",
        APT_PACKAGES.join(" ")
    );
    let install = || {
        super::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"])
                .args(APT_PACKAGES)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "installing the C toolchain",
        )
    };
    if install().is_err() {
        // The package lists may be missing or stale on a fresh machine.
        super::run(
            Command::new("apt-get").args(["update", "-q"]),
            "updating apt's package lists",
        )?;
        install()?;
    }
    if clang_ready() {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "clang cannot build for wasm32-wasi after installing {}",
            APT_PACKAGES.join(" ")
        )))
    }
}

/// `wit-bindgen` from the toolchain directory, installed with cargo when absent.
fn ensure_wit_bindgen() -> Result<PathBuf> {
    let root = super::toolchain_dir(&format!("wit-bindgen-{WIT_BINDGEN_VERSION}"));
    let bin = root.join("bin").join("wit-bindgen");
    if bin.is_file() {
        return Ok(bin);
    }
    println!(
        "installing wit-bindgen-cli {WIT_BINDGEN_VERSION} into {} (cargo install, once)",
        root.display()
    );
    super::run(
        Command::new("cargo")
            .args(["install", "--locked", "--quiet", "--root"])
            .arg(&root)
            .args(["wit-bindgen-cli", "--version", WIT_BINDGEN_VERSION])
            .args(["--no-default-features", "--features", "c"])
            // Not the caller's target directory: a plugin build must not lock it.
            .env("CARGO_TARGET_DIR", root.join("build")),
        "installing wit-bindgen-cli",
    )?;
    std::fs::remove_dir_all(root.join("build")).ok();
    Ok(bin)
}

/// `wasm-component-ld`: `$SLUICE_WASM_COMPONENT_LD`, the PATH, the one the Rust toolchain
/// ships (`rustc --print sysroot`), or installed with cargo into the toolchain directory.
fn find_component_ld() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_WASM_COMPONENT_LD") {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = on_path("wasm-component-ld") {
        return Ok(path);
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(rustlib) = sysroot.map(|s| s.join("lib/rustlib")) {
        let shipped = std::fs::read_dir(rustlib)
            .into_iter()
            .flatten()
            .flatten()
            .map(|host| host.path().join("bin/wasm-component-ld"))
            .find(|p| p.is_file());
        if let Some(path) = shipped {
            return Ok(path);
        }
    }
    let root = super::toolchain_dir("wasm-component-ld");
    let bin = root.join("bin").join("wasm-component-ld");
    if !bin.is_file() {
        println!(
            "installing wasm-component-ld into {} (cargo install, once)",
            root.display()
        );
        super::run(
            Command::new("cargo")
                .args(["install", "--locked", "--quiet", "--root"])
                .arg(&root)
                .arg("wasm-component-ld")
                .env("CARGO_TARGET_DIR", root.join("build")),
            "installing wasm-component-ld",
        )?;
        std::fs::remove_dir_all(root.join("build")).ok();
    }
    Ok(bin)
}

/// `program` in one of the PATH's directories.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
