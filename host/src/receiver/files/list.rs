//! One listing of the files source's location, as a partition sees it: its own files' names
//! (for `once`), and the size and modification time of those not read yet.
//!
//! A local directory is listed directly: its names are read (a `readdir`, no `stat`), the
//! partition's own new ones picked by name, and only those asked their size. object_store's
//! local listing asks every file's metadata, and a directory that keeps its files grows with
//! the stream: at ten thousand files that was most of a listing's cost, several times a second
//! per partition (issue #16). The names are the ones object_store would give (its listing
//! skips the staging files `NAME#N` its own writes leave), so positions in the checkpoint log
//! name the same files either way. A remote store is listed through object_store.

use std::collections::HashSet;
use std::path::PathBuf;

use object_store::path::PathPart;

use super::{ignored, partition_of};
use crate::store::Location;

/// A file of a listing not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name under the location.
    pub name: String,
    /// Its size, bytes.
    pub size: u64,
    /// When it was last modified, ms since the epoch.
    pub modified_ms: i64,
}

/// A partition's view of one listing, sorted by name.
#[derive(Debug, Default)]
pub struct Listing {
    /// The names of all its files, read or not (only when asked for).
    pub names: Option<HashSet<String>>,
    /// Its files not read yet.
    pub new: Vec<Listed>,
}

/// Which files a partition takes from a listing.
pub struct Filter<'a> {
    /// The partition.
    pub partition: u32,
    /// Of how many.
    pub partitions: u32,
    /// The files read already.
    pub seen: &'a HashSet<String>,
    /// Whether [`Listing::names`] is wanted (`once`).
    pub names: bool,
}

impl Filter<'_> {
    fn own(&self, name: &str) -> bool {
        !ignored(name) && partition_of(name, self.partitions) == self.partition
    }
}

/// Lists `location` (`local`: its directory, listed directly) for the partition `filter`
/// says.
pub async fn list(
    location: &Location,
    local: Option<&PathBuf>,
    filter: Filter<'_>,
) -> Result<Listing, String> {
    match local {
        Some(dir) => list_local(dir.clone(), filter).await,
        None => list_remote(location, filter).await,
    }
}

async fn list_remote(location: &Location, filter: Filter<'_>) -> Result<Listing, String> {
    let listing = location
        .store
        .list_with_delimiter(Some(&location.prefix))
        .await
        .map_err(|e| e.to_string())?;
    let mut objects = listing.objects;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    let mut out = Listing {
        names: filter.names.then(HashSet::new),
        new: Vec::new(),
    };
    for meta in objects {
        let Some(name) = meta.location.filename() else {
            continue;
        };
        if !filter.own(name) {
            continue;
        }
        if let Some(names) = &mut out.names {
            names.insert(name.to_owned());
        }
        if !filter.seen.contains(name) {
            out.new.push(Listed {
                name: name.to_owned(),
                size: meta.size,
                modified_ms: meta.last_modified.timestamp_millis(),
            });
        }
    }
    Ok(out)
}

async fn list_local(dir: PathBuf, filter: Filter<'_>) -> Result<Listing, String> {
    let (partition, partitions) = (filter.partition, filter.partitions);
    let d = dir.clone();
    let names = tokio::task::spawn_blocking(move || own_names(&d, partition, partitions))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let new: Vec<String> = names
        .iter()
        .filter(|n| !filter.seen.contains(*n))
        .cloned()
        .collect();
    let new = if new.is_empty() {
        Vec::new()
    } else {
        tokio::task::spawn_blocking(move || sized(&dir, new))
            .await
            .map_err(|e| e.to_string())?
    };
    Ok(Listing {
        names: filter.names.then(|| names.into_iter().collect()),
        new,
    })
}

/// The names in `dir` that are files (or links to files) of `partition`, sorted; a name
/// object_store would not list is left out (not UTF-8, a control character, or one of its
/// staging files).
fn own_names(
    dir: &std::path::Path,
    partition: u32,
    partitions: u32,
) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if ignored(&name)
            || partition_of(&name, partitions) != partition
            || PathPart::parse(&name).is_err()
            || staging(&name)
        {
            continue;
        }
        let file = match entry.file_type() {
            Ok(t) if t.is_symlink() => std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()),
            Ok(t) => t.is_file(),
            Err(_) => false,
        };
        if file {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Whether `name` is a staging file of object_store's local writes (`NAME#123`).
fn staging(name: &str) -> bool {
    name.split_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The size and modification time of each named file of `dir`; a file gone since the names
/// were read is left out.
fn sized(dir: &std::path::Path, names: Vec<String>) -> Vec<Listed> {
    names
        .into_iter()
        .filter_map(|name| {
            let meta = std::fs::metadata(dir.join(&name)).ok()?;
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            Some(Listed {
                size: meta.len(),
                modified_ms,
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct listing of a local directory gives what object_store's listing gives: the
    /// same names (its staging files, hidden and temporary names, and directories left out)
    /// with the same sizes and modification times, in the same order.
    #[tokio::test]
    async fn a_local_listing_matches_object_stores() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for (i, name) in [
            "b.txt",
            "a.txt",
            "c#12",
            "c#x",
            "_SUCCESS",
            ".hidden",
            "d.tmp",
            "e f%g.txt",
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(dir.join(name), vec![b'x'; i * 10 + 1]).unwrap();
        }
        for i in 0..40 {
            std::fs::write(dir.join(format!("f{i:02}")), format!("{i}\n")).unwrap();
        }
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub").join("inner.txt"), b"no\n").unwrap();
        std::os::unix::fs::symlink(dir.join("a.txt"), dir.join("link.txt")).unwrap();
        let location = Location::resolve(dir.to_str().unwrap(), "source.path", dir, false).unwrap();
        let local = location.local.clone().unwrap();
        let mut seen = HashSet::new();
        seen.insert("f03".to_owned());
        for partition in 0..3 {
            let filter = |names| Filter {
                partition,
                partitions: 3,
                seen: &seen,
                names,
            };
            let direct = list(&location, Some(&local), filter(true)).await.unwrap();
            let store = list(&location, None, filter(true)).await.unwrap();
            assert_eq!(
                direct.new, store.new,
                "partition {partition}: the new files"
            );
            assert_eq!(
                direct.names, store.names,
                "partition {partition}: the names"
            );
            assert!(!direct.new.is_empty(), "partition {partition} has files");
        }
        let mut all = Vec::new();
        for partition in 0..3 {
            let filter = Filter {
                partition,
                partitions: 3,
                seen: &seen,
                names: false,
            };
            let listing = list(&location, Some(&local), filter).await.unwrap();
            assert!(listing.names.is_none());
            all.extend(listing.new.into_iter().map(|l| l.name));
        }
        assert!(all.contains(&"c#x".to_owned()) && all.contains(&"link.txt".to_owned()));
        assert!(!all.contains(&"c#12".to_owned()) && !all.contains(&"f03".to_owned()));
        assert_eq!(all.len(), 40 - 1 + 5, "{all:?}");
    }
}
