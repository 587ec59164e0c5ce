//! Where a lookup table lives and how a change to it is seen: a local file (its size,
//! modification time and inode) or an object in a store (its size, last-modified time and
//! ETag). [`Watch::poll`] reads the table again only when that stamp changed, and never
//! installs a file that changed while it was read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use tokio::runtime::Handle;

use super::LookupError;
use super::config::TableFormat;
use super::table::Table;
use crate::store::Location;

/// The table's file.
pub(crate) enum TableFile {
    /// A local file.
    Local(PathBuf),
    /// An object in a store, reached through the async runtime.
    Remote {
        store: Arc<dyn ObjectStore>,
        path: StorePath,
        handle: Handle,
    },
}

/// What tells one version of the file from another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    size: u64,
    modified_ns: Option<i128>,
    tag: Option<String>,
}

/// Why the file could not be had: the user's (missing, not a file) or the store's.
pub(crate) enum Unread {
    Missing(String),
    Unreachable(String),
}

impl TableFile {
    /// The file `spec` names (the value of `table`, relative to `base`), and how messages
    /// name it (an absolute path, or the URL).
    pub(crate) fn resolve(
        spec: &str,
        base: &Path,
        handle: &Handle,
    ) -> Result<(TableFile, String), String> {
        if spec.contains("://") && !spec.starts_with("file://") {
            let at = Location::resolve(spec, "table", base, false)?;
            let file = TableFile::Remote {
                store: at.store,
                path: at.prefix,
                handle: handle.clone(),
            };
            return Ok((file, spec.to_owned()));
        }
        let path = match spec.strip_prefix("file://") {
            Some(_) => url::Url::parse(spec)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| format!("key `table`: {spec:?} is not a local file URL"))?,
            None if Path::new(spec).is_absolute() => PathBuf::from(spec),
            None => base.join(spec),
        };
        let shown = path.display().to_string();
        Ok((TableFile::Local(path), shown))
    }

    /// The file's stamp now.
    pub(crate) fn stamp(&self) -> Result<Stamp, Unread> {
        match self {
            TableFile::Local(path) => {
                use std::os::unix::fs::MetadataExt as _;
                let meta = std::fs::metadata(path).map_err(|e| Unread::Missing(e.to_string()))?;
                if !meta.is_file() {
                    return Err(Unread::Missing("not a file".to_owned()));
                }
                Ok(Stamp {
                    size: meta.len(),
                    modified_ns: meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_nanos() as i128),
                    tag: Some(format!("{}:{}", meta.dev(), meta.ino())),
                })
            }
            TableFile::Remote {
                store,
                path,
                handle,
            } => {
                let meta = handle.block_on(store.head(path)).map_err(remote)?;
                Ok(Stamp {
                    size: meta.size,
                    modified_ns: meta.last_modified.timestamp_nanos_opt().map(i128::from),
                    tag: meta.e_tag,
                })
            }
        }
    }

    /// The file's bytes.
    pub(crate) fn read(&self) -> Result<Vec<u8>, Unread> {
        match self {
            TableFile::Local(path) => {
                std::fs::read(path).map_err(|e| Unread::Missing(e.to_string()))
            }
            TableFile::Remote {
                store,
                path,
                handle,
            } => handle
                .block_on(async { store.get(path).await?.bytes().await })
                .map(|b| b.to_vec())
                .map_err(remote),
        }
    }
}

fn remote(e: object_store::Error) -> Unread {
    match e {
        object_store::Error::NotFound { .. } => Unread::Missing("not found".to_owned()),
        other => Unread::Unreachable(other.to_string()),
    }
}

/// A table file and the version of it last read.
pub(crate) struct Watch {
    pub(crate) file: TableFile,
    /// How messages name the file.
    pub(crate) shown: String,
    pub(crate) format: TableFormat,
    pub(crate) key: String,
    last: Option<Stamp>,
}

impl Watch {
    /// A watch on `file`, nothing read yet.
    pub(crate) fn new(file: TableFile, shown: String, format: TableFormat, key: String) -> Self {
        Watch {
            file,
            shown,
            format,
            key,
            last: None,
        }
    }

    /// Reads the table as it is now (at start).
    pub(crate) fn load(&mut self) -> Result<Table, LookupError> {
        let stamp = self.file.stamp().map_err(|e| self.unread(e))?;
        let bytes = self.file.read().map_err(|e| self.unread(e))?;
        self.last = Some(stamp);
        self.parse(&bytes)
    }

    /// One look: `None` when the file is as last read (or changed while it was read: the next
    /// look takes it), the new table when it changed and reads well, an error when it changed
    /// and does not (reported once per version: the next look waits for another change) or
    /// cannot be had.
    pub(crate) fn poll(&mut self) -> Result<Option<Table>, LookupError> {
        let stamp = self.file.stamp().map_err(|e| self.unread(e))?;
        if self.last.as_ref() == Some(&stamp) {
            return Ok(None);
        }
        let bytes = self.file.read().map_err(|e| self.unread(e))?;
        if self.file.stamp().map_err(|e| self.unread(e))? != stamp {
            return Ok(None);
        }
        self.last = Some(stamp);
        self.parse(&bytes).map(Some)
    }

    fn parse(&self, bytes: &[u8]) -> Result<Table, LookupError> {
        Table::parse(bytes, self.format, &self.key).map_err(|problem| LookupError::Malformed {
            table: self.shown.clone(),
            problem,
        })
    }

    fn unread(&self, e: Unread) -> LookupError {
        let table = self.shown.clone();
        match e {
            Unread::Missing(reason) => LookupError::Missing { table, reason },
            Unread::Unreachable(reason) => LookupError::Unreachable { table, reason },
        }
    }
}
