//! Store locations: where a pipeline reads files, writes output and dead letters.
//!
//! Every location is a path or a URL, and every one goes through `object_store`, so the same
//! code runs on a local directory, Azure Blob (Azurite in tests) and S3:
//!
//! - `out`, `./out`, `../data/in`: a directory relative to the pipeline file (said in the log,
//!   never an exception later: Spark's "checkpoint directory must be absolute" trap);
//! - `/srv/out` or `file:///srv/out`: an absolute directory;
//! - `az://container/prefix`: Azure Blob, credentials from `AZURE_STORAGE_*` variables
//!   (`AZURE_STORAGE_USE_EMULATOR=true` for Azurite);
//! - `s3://bucket/prefix`: S3, credentials from `AWS_*` variables.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;

/// A resolved location: a store and a prefix inside it.
#[derive(Clone)]
pub struct Location {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The prefix inside it.
    pub prefix: StorePath,
    /// What the user wrote, resolved, for messages.
    pub display: String,
    /// The local directory, when the location is one.
    pub local: Option<PathBuf>,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// `spec` as messages, the web UI and `/api/v1/` show it: a password or a query (a SAS
/// token, a signature) in the URL is replaced by `***`.
fn redacted(url: &url::Url, spec: &str) -> String {
    if url.password().is_none() && url.query().is_none() {
        return spec.to_owned();
    }
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    if shown.query().is_some() {
        shown.set_query(Some("***"));
    }
    shown.to_string()
}

impl Location {
    /// Resolves `spec` (the value of `key` in the pipeline file at `base`). A local directory
    /// is created when `create` is set, else it must exist.
    pub fn resolve(spec: &str, key: &str, base: &Path, create: bool) -> Result<Location, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(format!("key `{key}`: is empty; give a path or a URL"));
        }
        if let Some((scheme, _)) = spec.split_once("://") {
            let url = url::Url::parse(spec)
                .map_err(|e| format!("key `{key}`: {spec:?} is not a valid URL: {e}"))?;
            return match scheme {
                "file" => {
                    let path = url
                        .to_file_path()
                        .map_err(|_| format!("key `{key}`: {spec:?} is not a local file URL"))?;
                    Self::local(path, key, create)
                }
                "az" | "azure" | "abfs" | "abfss" => {
                    let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_url(spec)
                        .build()
                        .map_err(|e| format!("key `{key}`: {spec}: {e}"))?;
                    Ok(Self::remote(Arc::new(store), &url, spec))
                }
                "s3" | "s3a" => {
                    let store = object_store::aws::AmazonS3Builder::from_env()
                        .with_url(spec)
                        .build()
                        .map_err(|e| format!("key `{key}`: {spec}: {e}"))?;
                    Ok(Self::remote(Arc::new(store), &url, spec))
                }
                other => Err(format!(
                    "key `{key}`: unknown scheme {other:?} in {spec:?}; use a path, file://, az:// or s3://"
                )),
            };
        }
        let path = Path::new(spec);
        let path = if path.is_absolute() {
            path.to_owned()
        } else {
            let resolved = base.join(path);
            tracing::info!(key, given = spec, resolved = %resolved.display(), "A relative location is resolved against the pipeline file's directory.");
            resolved
        };
        Self::local(path, key, create)
    }

    fn local(path: PathBuf, key: &str, create: bool) -> Result<Location, String> {
        if create {
            std::fs::create_dir_all(&path)
                .map_err(|e| format!("key `{key}`: cannot create {}: {e}", path.display()))?;
        } else if !path.is_dir() {
            return Err(format!(
                "key `{key}`: {} is not a directory",
                path.display()
            ));
        }
        let path = std::fs::canonicalize(&path)
            .map_err(|e| format!("key `{key}`: {}: {e}", path.display()))?;
        let store = LocalFileSystem::new_with_prefix(&path)
            .map_err(|e| format!("key `{key}`: {}: {e}", path.display()))?;
        Ok(Location {
            store: Arc::new(store),
            prefix: StorePath::default(),
            display: path.display().to_string(),
            local: Some(path),
        })
    }

    fn remote(store: Arc<dyn ObjectStore>, url: &url::Url, spec: &str) -> Location {
        let prefix = StorePath::from_url_path(url.path()).unwrap_or_default();
        Location {
            store,
            prefix,
            display: redacted(url, spec),
            local: None,
        }
    }

    /// The path of `name` under this location's prefix.
    pub fn child(&self, name: &str) -> StorePath {
        let mut p = self.prefix.clone();
        for part in name.split('/').filter(|s| !s.is_empty()) {
            p = p.child(part);
        }
        p
    }

    /// The numbers `N` of the objects named `N.json` under `prefix` (a path below this
    /// location), ascending; other names are skipped. How the checkpoint log and a partition's
    /// chain list their entries.
    pub async fn numbered(&self, prefix: &str) -> Result<Vec<u64>, object_store::Error> {
        use futures::TryStreamExt;
        let objects: Vec<_> = self
            .store
            .list(Some(&self.child(prefix)))
            .try_collect()
            .await?;
        let mut numbers: Vec<u64> = objects
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Checks the store answers (a listing of the prefix).
    pub async fn reach(&self, key: &str) -> Result<(), String> {
        self.store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map(|_| ())
            .map_err(|e| format!("key `{key}`: {} cannot be reached: {e}", self.display))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_locations_password_and_query_never_show() {
        let shown = |spec: &str| redacted(&url::Url::parse(spec).unwrap(), spec);
        assert_eq!(shown("az://container/out"), "az://container/out");
        assert_eq!(
            shown("s3://key:hunter2@bucket/out?sig=abc"),
            "s3://key:***@bucket/out?***"
        );
        assert!(!shown("abfss://c@acct.dfs.core.windows.net/p?sv=1&sig=zz").contains("zz"));
    }

    #[test]
    fn a_relative_path_resolves_against_the_pipeline_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = Location::resolve("out/x", "sink.path", tmp.path(), true).unwrap();
        assert_eq!(
            loc.local.unwrap(),
            tmp.path().canonicalize().unwrap().join("out/x")
        );
    }

    #[test]
    fn a_file_url_and_an_absolute_path_are_the_same_place() {
        let tmp = tempfile::tempdir().unwrap();
        let abs = tmp.path().canonicalize().unwrap();
        let a = Location::resolve(abs.to_str().unwrap(), "k", Path::new("/"), false).unwrap();
        let b = Location::resolve(
            &format!("file://{}", abs.display()),
            "k",
            Path::new("/"),
            false,
        )
        .unwrap();
        assert_eq!(a.local, b.local);
    }

    #[test]
    fn an_unknown_scheme_or_a_missing_input_directory_is_refused_naming_the_key() {
        let msg = Location::resolve("ftp://x/y", "source.path", Path::new("/"), false).unwrap_err();
        assert!(msg.contains("source.path") && msg.contains("ftp"), "{msg}");
        let msg =
            Location::resolve("/no/such/dir", "source.path", Path::new("/"), false).unwrap_err();
        assert!(
            msg.contains("source.path") && msg.contains("not a directory"),
            "{msg}"
        );
    }
}
