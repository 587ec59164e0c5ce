//! C plugin projects: the template per kind and the build (clang, wasi-libc, wit-bindgen c and wasm-component-ld).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::Kind;

/// The files of a new C project of `kind` named `name`, by path relative to its directory.
pub fn files(kind: Kind, name: &str) -> Result<Vec<(String, String)>> {
    let _ = (kind, name);
    Err(Error::Usage(
        "--lang c: not built yet (issue #15)".to_owned(),
    ))
}

/// Builds the C project in `dir` into `NAME.wasm` beside its manifest.
pub fn build(dir: &Path) -> Result<PathBuf> {
    let _ = dir;
    Err(Error::Usage(
        "C plugins cannot be built yet (issue #15)".to_owned(),
    ))
}
