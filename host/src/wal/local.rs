//! Segments on a local directory, written without `object_store`'s local store.
//!
//! Why: `object_store` writes through the page cache, and reliable mode at full speed writes
//! every received byte once more. Measured on upper-case over TCP (perf, 2026-12-05), the page
//! cache copy, the writeback that the fsync starts and the eviction of a deleted segment's
//! pages took more CPU than the rest of the log (about 27% of all samples, against 4% for
//! encoding and checksums). With fsync, this writer sends the segment to the disk with
//! `O_DIRECT` from one reused, aligned buffer instead: no page cache copy, nothing to write
//! back, nothing to evict, then `fdatasync`. Without fsync (`wal-fsync = false`) it writes
//! through the page cache and syncs nothing, which is what Spark's receiver log does on a local
//! checkpoint directory (`hflush` on Hadoop's raw local file system is a `flush`).
//!
//! The promises stay those of the store path: a segment appears whole or not at all (staged
//! under `<segment>#<n>`, a name `object_store` listings skip, then hard-linked into place,
//! which fails rather than replace a segment already there) and, with fsync, an append is
//! answered only after the staged file's data and the directory holding its new name are
//! synced.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use object_store::path::Path;

/// The alignment `O_DIRECT` needs of the buffer, the length and the file offset (the page
/// size covers every logical block size in use).
const ALIGN: usize = 4096;

/// Staging names are unique within a process; a crash can leave one behind, never listed.
static STAGING: AtomicU64 = AtomicU64::new(0);

/// What writing a segment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The segment is in place and (with fsync) durable.
    Written,
    /// The name was taken by a segment holding other bytes: another writer has this epoch.
    Taken,
}

/// The local writer's state, moved into each blocking write and back.
#[derive(Debug)]
pub(super) struct LocalWriter {
    root: PathBuf,
    fsync: bool,
    /// Falls to false, once, when the file system refuses `O_DIRECT` (tmpfs, some overlays).
    direct: bool,
    /// Reused across segments; the aligned window in it is what `O_DIRECT` writes.
    buf: Vec<u8>,
    /// `fdatasync`/`fsync` calls made, for [`super::WalStats::syncs`].
    pub(super) syncs: u64,
    /// Slept before the data sync, so a test can see that no append is answered before it.
    #[cfg(test)]
    pub(super) sync_delay: std::time::Duration,
}

impl LocalWriter {
    /// A writer of segments under the local directory `root` (the store's root).
    pub(super) fn new(root: PathBuf, fsync: bool) -> Self {
        LocalWriter {
            root,
            fsync,
            direct: fsync,
            buf: Vec::new(),
            syncs: 0,
            #[cfg(test)]
            sync_delay: std::time::Duration::ZERO,
        }
    }

    /// Writes `parts`, end to end, as the object `path`: staged, synced (with fsync), linked
    /// into place, the directory synced (with fsync). Blocking: run it off the runtime.
    pub(super) fn write(&mut self, path: &Path, parts: &[Bytes]) -> io::Result<Outcome> {
        let target = self.file_of(path);
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::other("a segment path has no directory"))?
            .to_owned();
        let staging = staging_name(&target);
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if let Err(e) = self.stage(&staging, parts, total) {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
        let linked = std::fs::hard_link(&staging, &target);
        let _ = std::fs::remove_file(&staging);
        match linked {
            Ok(()) => {}
            // A retried write of the same bytes (see `writer::is_ours`) is ours.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return if same_bytes(&target, parts, total)? {
                    Ok(Outcome::Written)
                } else {
                    Ok(Outcome::Taken)
                };
            }
            Err(e) => return Err(e),
        }
        if self.fsync {
            File::open(&dir)?.sync_all()?;
            self.syncs += 1;
        }
        Ok(Outcome::Written)
    }

    fn file_of(&self, path: &Path) -> PathBuf {
        let mut file = self.root.clone();
        for part in path.parts() {
            file.push(part.as_ref());
        }
        file
    }

    /// Writes the staged file (creating its directory when missing) and syncs its data.
    fn stage(&mut self, staging: &FsPath, parts: &[Bytes], total: usize) -> io::Result<()> {
        let mut file = match self.create(staging) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = staging.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                self.create(staging)?
            }
            other => other?,
        };
        if self.direct {
            match self.write_direct(&mut file, parts, total) {
                Ok(()) => {}
                // The file system takes `O_DIRECT` at open and refuses it at write.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!(file = %staging.display(), "The WAL's directory does not take direct writes; segments go through the page cache.");
                    self.direct = false;
                    drop(file);
                    std::fs::remove_file(staging)?;
                    file = self.create(staging)?;
                    write_parts(&mut file, parts)?;
                }
                Err(e) => return Err(e),
            }
        } else {
            write_parts(&mut file, parts)?;
        }
        if self.fsync {
            #[cfg(test)]
            std::thread::sleep(self.sync_delay);
            file.sync_data()?;
            self.syncs += 1;
        }
        Ok(())
    }

    /// Creates `staging` (with `O_DIRECT` while direct writes work).
    fn create(&mut self, staging: &FsPath) -> io::Result<File> {
        if self.direct {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_DIRECT)
                .open(staging)
            {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::info!(file = %staging.display(), "The WAL's directory does not take direct writes; segments go through the page cache.");
                    self.direct = false;
                }
                other => return other,
            }
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(staging)
    }

    /// One aligned write of the parts, padded to the alignment, then cut to their length.
    fn write_direct(&mut self, file: &mut File, parts: &[Bytes], total: usize) -> io::Result<()> {
        let padded = total.div_ceil(ALIGN) * ALIGN;
        if self.buf.len() < padded + ALIGN {
            self.buf = vec![0; padded + ALIGN];
        }
        let start = self.buf.as_ptr().align_offset(ALIGN);
        let window = &mut self.buf[start..start + padded];
        let mut at = 0;
        for p in parts {
            window[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        window[total..].fill(0);
        let written = file.write(window)?;
        if written != padded {
            return Err(io::Error::other(format!(
                "a direct write took {written} of {padded} bytes"
            )));
        }
        if padded != total {
            file.set_len(total as u64)?;
        }
        Ok(())
    }
}

fn write_parts(file: &mut File, parts: &[Bytes]) -> io::Result<()> {
    for p in parts {
        file.write_all(p)?;
    }
    Ok(())
}

/// `<segment>#<n>`: a name `object_store`'s local listings skip, in the segment's directory so
/// that the link into place stays on one file system.
fn staging_name(target: &FsPath) -> PathBuf {
    let n = STAGING.fetch_add(1, Ordering::Relaxed);
    let mut name = target.as_os_str().to_owned();
    name.push(format!("#{}{n}", std::process::id()));
    PathBuf::from(name)
}

/// Whether the file at `target` holds exactly `parts`, end to end.
fn same_bytes(target: &FsPath, parts: &[Bytes], total: usize) -> io::Result<bool> {
    let got = std::fs::read(target)?;
    if got.len() != total {
        return Ok(false);
    }
    let mut at = 0;
    for p in parts {
        if got[at..at + p.len()] != p[..] {
            return Ok(false);
        }
        at += p.len();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(sizes: &[usize]) -> Vec<Bytes> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n]))
            .collect()
    }

    #[test]
    fn a_segment_of_any_length_is_written_whole_with_and_without_fsync() {
        for fsync in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let mut w = LocalWriter::new(tmp.path().to_owned(), fsync);
            for (i, sizes) in [&[32, 5000, 1][..], &[4096], &[1, 2, 3], &[70_000, 8]]
                .iter()
                .enumerate()
            {
                let path = Path::from(format!("wal/{i}.seg"));
                let p = parts(sizes);
                assert_eq!(w.write(&path, &p).unwrap(), Outcome::Written);
                let got = std::fs::read(tmp.path().join(format!("wal/{i}.seg"))).unwrap();
                assert_eq!(got, p.concat(), "fsync {fsync}, sizes {sizes:?}");
            }
            // Two syncs per segment with fsync (its data, its directory), none without.
            assert_eq!(w.syncs, if fsync { 8 } else { 0 });
            let left: Vec<_> = std::fs::read_dir(tmp.path().join("wal"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.contains('#'))
                .collect();
            assert!(left.is_empty(), "staging files left: {left:?}");
        }
    }

    #[test]
    fn a_name_already_taken_is_never_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = LocalWriter::new(tmp.path().to_owned(), true);
        let path = Path::from("wal/0.seg");
        w.write(&path, &parts(&[100])).unwrap();
        // The same bytes again: a retry of our own write.
        assert_eq!(w.write(&path, &parts(&[100])).unwrap(), Outcome::Written);
        // Other bytes: taken, and the first segment stays.
        assert_eq!(w.write(&path, &parts(&[7, 7])).unwrap(), Outcome::Taken);
        let got = std::fs::read(tmp.path().join("wal/0.seg")).unwrap();
        assert_eq!(got, vec![1; 100]);
    }
}
