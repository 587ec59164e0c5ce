//! JavaScript plugin projects: the template per kind and the build (componentize-js).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::Kind;

/// The files of a new JavaScript project of `kind` named `name`, by path relative to its directory.
pub fn files(kind: Kind, name: &str) -> Result<Vec<(String, String)>> {
    let _ = (kind, name);
    Err(Error::Usage(
        "--lang js: not built yet (issue #15)".to_owned(),
    ))
}

/// Builds the JavaScript project in `dir` into `NAME.wasm` beside its manifest.
pub fn build(dir: &Path) -> Result<PathBuf> {
    let _ = dir;
    Err(Error::Usage(
        "JavaScript plugins cannot be built yet (issue #15)".to_owned(),
    ))
}
