//! The admin file: where a running pipeline's admin endpoint listens, and its token, for
//! `sluice plugin swap PIPELINE` to read.
//!
//! It is `admin.json` in the checkpoint directory when that is a local directory; otherwise
//! (a checkpoint log in a remote store, or none) `<pipeline file stem>.admin.json` beside the
//! pipeline file, because the token must stay on this machine. It is written atomically (a
//! temporary file created with mode 0600, then renamed), so a reader never sees half of it and
//! nobody but its owner can read it, and it is removed at a clean exit.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::AdminError;
use super::token::Token;
use crate::config::PipelineFile;
use crate::store::Location;

/// The admin file's name in a local checkpoint directory.
pub const FILE_NAME: &str = "admin.json";

/// What the admin file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// The address the endpoint listens on.
    pub address: SocketAddr,
    /// The driver's process id.
    pub pid: u32,
    /// The token requests must present.
    #[serde(serialize_with = "ser_token", deserialize_with = "de_token")]
    pub token: Token,
}

fn ser_token<S: serde::Serializer>(t: &Token, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.expose())
}

fn de_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Token, D::Error> {
    let text = String::deserialize(d)?;
    Ok(Token::from_text(&text))
}

/// Where the admin file of the pipeline at `pipeline` goes, given its local checkpoint
/// directory (`None`: the checkpoint log is remote or off).
pub fn path_for(pipeline: &Path, checkpoint_dir: Option<&Path>) -> PathBuf {
    match checkpoint_dir {
        Some(dir) => dir.join(FILE_NAME),
        None => pipeline.with_extension(FILE_NAME),
    }
}

/// Where the admin file of the pipeline file at `pipeline` is, resolving its `[checkpoint]`
/// as a run does (for `sluice plugin swap PIPELINE`).
pub fn path_of_pipeline(pipeline: &Path) -> Result<PathBuf, AdminError> {
    let file = PipelineFile::load(pipeline).map_err(|e| AdminError::Usage(e.to_string()))?;
    let base = pipeline
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned());
    let checkpoint = file.checkpoint.as_ref();
    let dir = match checkpoint.map_or("checkpoints", |c| c.path.as_str()) {
        _ if checkpoint.is_some_and(|c| !c.enabled) => None,
        spec if spec.contains("://") && !spec.starts_with("file://") => None,
        // A directory that is not there: no run has made it, so there is no file either.
        spec => Some(
            Location::resolve(spec, "checkpoint.path", &base, false)
                .map_err(|_| AdminError::NotRunning {
                    file: base.join(spec).join(FILE_NAME),
                })?
                .local
                .unwrap_or_else(|| base.join(spec)),
        ),
    };
    Ok(path_for(
        &base.join(pipeline.file_name().unwrap_or_default()),
        dir.as_deref(),
    ))
}

impl AdminFile {
    /// Writes it to `path` atomically, readable and writable by its owner only.
    pub fn write(&self, path: &Path) -> Result<(), AdminError> {
        let failed = |source| AdminError::File {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let text = serde_json::to_vec_pretty(self).expect("the admin file serializes");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&text)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(failed)
    }

    /// Reads the admin file at `path`; a missing one means the pipeline is not running.
    pub fn read(path: &Path) -> Result<AdminFile, AdminError> {
        let text = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AdminError::NotRunning {
                file: path.to_owned(),
            },
            _ => AdminError::File {
                path: path.to_owned(),
                source: e,
            },
        })?;
        serde_json::from_slice(&text).map_err(|e| AdminError::File {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })
    }

    /// Removes the admin file at `path` if this process wrote it (another driver of the same
    /// pipeline may have written its own since).
    pub fn remove_if_ours(path: &Path) {
        let ours = AdminFile::read(path).is_ok_and(|f| f.pid == std::process::id());
        if ours && let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "Could not remove the admin file.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_admin_file_is_owner_only_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(FILE_NAME);
        let file = AdminFile {
            address: "127.0.0.1:4567".parse().unwrap(),
            pid: std::process::id(),
            token: Token::generate().unwrap(),
        };
        file.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = AdminFile::read(&path).unwrap();
        assert_eq!(back.address, file.address);
        assert!(back.token.matches(file.token.expose().as_bytes()));
        AdminFile::remove_if_ours(&path);
        assert!(!path.exists());
        assert!(matches!(
            AdminFile::read(&path),
            Err(AdminError::NotRunning { .. })
        ));
    }

    #[test]
    fn without_a_local_checkpoint_directory_it_goes_beside_the_pipeline_file() {
        let p = Path::new("/srv/p/pipeline.toml");
        assert_eq!(
            path_for(p, None),
            PathBuf::from("/srv/p/pipeline.admin.json")
        );
        assert_eq!(
            path_for(p, Some(Path::new("/srv/p/checkpoints"))),
            PathBuf::from("/srv/p/checkpoints/admin.json")
        );
    }
}
