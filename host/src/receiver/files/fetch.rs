//! The bytes of the files a partition reads, fetched ahead of the receiver that splits them
//! into lines, so that reading and splitting overlap (on two cores when there are two).
//!
//! A local directory is read by one blocking task per run of files, with plain positioned
//! reads of [`PIECE`] bytes into buffers that come back to it once split: object_store's
//! local stream reads 8 KiB per blocking task, and those hand-offs between threads cost the
//! files source more than its lines (issue #16). A remote store is read through object_store,
//! the bodies of [`PREFETCH`] small files at a time (one round trip each would be the
//! limit), a larger file streamed on its turn.
//!
//! At most [`AHEAD`] pieces wait between the fetcher and the receiver, so a partition holds a
//! few MiB beyond the memory budget, whatever the files' sizes: the budget's backpressure
//! stops the receiver, and the full hand-off stops the fetcher.

use std::io::ErrorKind;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::sync::mpsc;

use super::super::ReceiverError;
use crate::store::Location;

/// Bytes per read of a local file.
pub const PIECE: usize = 256 * 1024;

/// Pieces fetched and not yet split, at most.
pub const AHEAD: usize = 8;

/// Files at most this big (the range to read) are fetched whole from a remote store, ahead of
/// their turn.
pub const SMALL_FILE: u64 = 256 * 1024;

/// How many small files of a remote store are fetched at once.
pub const PREFETCH: usize = 8;

/// A byte range of a file to read: `from..to`, or to its end without `to` (a `to` marks a
/// range of a batch being recomputed). `size`: the file's size as just listed (else it is
/// asked of the store).
#[derive(Debug, Clone)]
pub struct Want {
    /// The file's name under the location.
    pub name: String,
    /// The first byte to read.
    pub from: u64,
    /// Where to stop, if not at the end.
    pub to: Option<u64>,
    /// The file's size, when known.
    pub size: Option<u64>,
}

/// What the fetcher hands the receiver, in order: for each file wanted, its [`Piece::Open`],
/// its bytes in pieces, then [`Piece::End`].
#[derive(Debug)]
pub enum Piece {
    /// The next file wanted: its size, and where its range ends (`to`, or the size when the
    /// file is shorter or without `to`).
    Open {
        /// The file's size.
        size: u64,
        /// The end of the range read.
        stop_at: u64,
    },
    /// The range's next bytes.
    Bytes(Buf),
    /// The range was read to its end.
    End,
}

/// A piece's bytes: a pooled buffer of a local read (given back with [`Fetch::recycle`]) or
/// a remote store's.
#[derive(Debug)]
pub enum Buf {
    /// `len` bytes of a buffer of [`PIECE`] bytes.
    Pooled(Vec<u8>, usize),
    /// Bytes from object_store.
    Shared(bytes::Bytes),
}

impl Deref for Buf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Buf::Pooled(v, len) => &v[..*len],
            Buf::Shared(b) => b,
        }
    }
}

/// Buffers of [`PIECE`] bytes, given back by the receiver for the next reads (the memory
/// stays warm: no page is faulted in again).
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// A fetch under way: the pieces of the files wanted, in order.
pub struct Fetch {
    rx: mpsc::Receiver<Result<Piece, String>>,
    pool: Pool,
}

impl Fetch {
    /// Starts fetching `wants`, in order, from `location` (`local`: the same directory as a
    /// local file system, read directly) for `partition`. Dropping the fetch stops it (after
    /// the read under way).
    pub fn start(
        location: &Location,
        local: Option<&Arc<LocalFileSystem>>,
        wants: Vec<Want>,
        partition: u32,
    ) -> Fetch {
        let (tx, rx) = mpsc::channel(AHEAD);
        let pool = Pool::default();
        let source = Source {
            location: location.clone(),
            partition,
            tx,
        };
        match local {
            Some(fs) => {
                let (fs, pool) = (fs.clone(), pool.clone());
                tokio::task::spawn_blocking(move || source.read_local(&fs, wants, &pool));
            }
            None => {
                tokio::spawn(source.read_remote(wants));
            }
        }
        Fetch { rx, pool }
    }

    /// The next piece; an error names the file, the location and the partition.
    pub async fn next(&mut self) -> Result<Piece, ReceiverError> {
        match self.rx.recv().await {
            Some(Ok(piece)) => Ok(piece),
            Some(Err(e)) => Err(ReceiverError::Transient(e)),
            None => Err(ReceiverError::Transient(
                "files: the fetcher ended before the files it was given".into(),
            )),
        }
    }

    /// Gives a piece's buffer back for the next reads.
    pub fn recycle(&self, buf: Buf) {
        if let Buf::Pooled(v, _) = buf {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < AHEAD + 2 {
                pool.push(v);
            }
        }
    }
}

/// The fetching side.
struct Source {
    location: Location,
    partition: u32,
    tx: mpsc::Sender<Result<Piece, String>>,
}

impl Source {
    fn failed(&self, name: &str, e: impl std::fmt::Display) -> String {
        format!(
            "files {}: reading {name} (partition {}): {e}",
            self.location, self.partition
        )
    }

    /// Reads the wanted ranges of a local directory, in order, until done, a failure (sent
    /// on), or the receiver gone.
    fn read_local(self, fs: &LocalFileSystem, wants: Vec<Want>, pool: &Pool) {
        for want in wants {
            if let Err(e) = self.read_local_file(fs, &want, pool) {
                let _ = self.tx.blocking_send(Err(self.failed(&want.name, e)));
                return;
            }
            if self.tx.is_closed() {
                return;
            }
        }
    }

    /// One wanted range, piece by piece. `Ok` also when the receiver went away.
    fn read_local_file(
        &self,
        fs: &LocalFileSystem,
        want: &Want,
        pool: &Pool,
    ) -> Result<(), String> {
        let path = fs
            .path_to_filesystem(&self.location.child(&want.name))
            .map_err(|e| e.to_string())?;
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let size = match want.size {
            Some(size) => size,
            None => file.metadata().map_err(|e| e.to_string())?.len(),
        };
        let stop_at = want.to.map_or(size, |t| t.min(size));
        let send = |piece| self.tx.blocking_send(Ok(piece)).is_ok();
        if !send(Piece::Open { size, stop_at }) {
            return Ok(());
        }
        let mut at = want.from;
        while at < stop_at {
            let spare = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut buf = spare.unwrap_or_else(|| vec![0; PIECE]);
            let len = PIECE.min((stop_at - at) as usize);
            let mut got = 0;
            while got < len {
                match file.read_at(&mut buf[got..len], at + got as u64) {
                    Ok(0) => {
                        return Err(format!(
                            "it ends at byte {}, before byte {stop_at}",
                            at + got as u64
                        ));
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            at += len as u64;
            if !send(Piece::Bytes(Buf::Pooled(buf, len))) {
                return Ok(());
            }
        }
        send(Piece::End);
        Ok(())
    }

    /// Reads the wanted ranges of a remote store, in order: the small ones [`PREFETCH`] at a
    /// time ahead of their turn, a larger one streamed on its turn.
    async fn read_remote(self, wants: Vec<Want>) {
        let store = self.location.store.clone();
        let location = self.location.clone();
        let mut opened = futures::stream::iter(wants)
            .map(|want| {
                let (store, path) = (store.clone(), location.child(&want.name));
                async move {
                    let got = open_remote(&*store, &path, &want).await;
                    (want, path, got)
                }
            })
            .buffered(PREFETCH);
        while let Some((want, path, got)) = opened.next().await {
            let sent = match got {
                Ok(opened) => self.send_remote(&path, opened).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    let _ = self.tx.send(Err(self.failed(&want.name, e))).await;
                    return;
                }
            }
        }
    }

    /// Sends one opened range (streaming it when it was not fetched whole); false when the
    /// receiver went away.
    async fn send_remote(
        &self,
        path: &object_store::path::Path,
        opened: Opened,
    ) -> Result<bool, String> {
        let Opened { size, range, whole } = opened;
        let open = Piece::Open {
            size,
            stop_at: range.end,
        };
        if self.tx.send(Ok(open)).await.is_err() {
            return Ok(false);
        }
        if let Some(bytes) = whole {
            let piece = Piece::Bytes(Buf::Shared(bytes));
            if !piece_empty(&piece) && self.tx.send(Ok(piece)).await.is_err() {
                return Ok(false);
            }
        } else {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(range)),
                ..GetOptions::default()
            };
            let mut stream = self
                .location
                .store
                .get_opts(path, opts)
                .await
                .map_err(|e| e.to_string())?
                .into_stream();
            while let Some(bytes) = stream.next().await {
                let piece = Piece::Bytes(Buf::Shared(bytes.map_err(|e| e.to_string())?));
                if self.tx.send(Ok(piece)).await.is_err() {
                    return Ok(false);
                }
            }
        }
        Ok(self.tx.send(Ok(Piece::End)).await.is_ok())
    }
}

fn piece_empty(piece: &Piece) -> bool {
    matches!(piece, Piece::Bytes(b) if b.is_empty())
}

/// A remote range about to be read: the file's size, the range, and its bytes when it was
/// small enough to fetch ahead.
struct Opened {
    size: u64,
    range: std::ops::Range<u64>,
    whole: Option<bytes::Bytes>,
}

/// Sizes a wanted range of a remote file (asking the store its size when the listing did
/// not say) and fetches it whole when it is small.
async fn open_remote(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
    want: &Want,
) -> Result<Opened, String> {
    let size = match want.size {
        Some(size) => size,
        None => store.head(path).await.map_err(|e| e.to_string())?.size,
    };
    let stop_at = want.to.map_or(size, |t| t.min(size));
    let range = want.from.min(stop_at)..stop_at;
    let whole = if range.is_empty() {
        Some(bytes::Bytes::new())
    } else if range.end - range.start <= SMALL_FILE {
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        let got = store
            .get_opts(path, opts)
            .await
            .map_err(|e| e.to_string())?;
        let bytes = got.bytes().await.map_err(|e| e.to_string())?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(format!(
                "bytes {}..{} came back as {} bytes",
                range.start,
                range.end,
                bytes.len()
            ));
        }
        Some(bytes)
    } else {
        None
    };
    Ok(Opened { size, range, whole })
}
