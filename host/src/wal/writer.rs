//! The writer task: groups the appends handed in, checks the fence, writes each group as one
//! segment and answers every append of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};
use tokio::sync::mpsc;

use super::local::{LocalWriter, Outcome};
use super::{Pending, Result, SegmentInfo, Shared, WalError, epoch, format, segment_name};

/// Skips the fence check, so that the ignored measurement in the tests can compare appends
/// with and without it. Nothing else sets it.
pub(super) static SKIP_FENCE_CHECK: AtomicBool = AtomicBool::new(false);

/// Counts an append on its way to the writer until it is sent.
pub(super) struct Coming<'a> {
    count: &'a AtomicUsize,
    sent: bool,
}

impl<'a> Coming<'a> {
    pub(super) fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Coming { count, sent: false }
    }

    /// The writer now owns the count (it takes it back when it receives the block).
    pub(super) fn sent(mut self) {
        self.sent = true;
    }
}

impl Drop for Coming<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The writer task: takes a group of pending blocks, writes it as one segment, answers each.
/// Every append handed in while a group is written and synced waits in the queue and goes
/// into the next group (up to [`super::WalOptions::max_group_bytes`]): the group commit.
pub(super) async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Pending>, mut seq: u64) {
    let mut local = None;
    let take = |p: Pending, group: &mut Vec<Pending>, bytes: &mut usize| {
        shared.coming.fetch_sub(1, Ordering::AcqRel);
        *bytes += p.frame.len();
        group.push(p);
    };
    while let Some(first) = rx.recv().await {
        let mut group = Vec::new();
        let mut bytes = 0;
        take(first, &mut group, &mut bytes);
        let deadline = tokio::time::Instant::now() + shared.opts.group_window;
        let mut yielded = false;
        while bytes < shared.opts.max_group_bytes {
            match rx.try_recv() {
                Ok(p) => {
                    take(p, &mut group, &mut bytes);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            // Nobody else is appending: waiting would only add latency. But first let the
            // tasks woken with this one (a tick's other partitions) have one turn.
            if shared.coming.load(Ordering::Acquire) == 0 {
                if yielded {
                    break;
                }
                yielded = true;
                tokio::task::yield_now().await;
                continue;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => take(p, &mut group, &mut bytes),
                Ok(None) | Err(_) => break,
            }
        }
        let result = write_group(&shared, seq, &group, &mut local).await;
        seq += 1;
        for p in group {
            let _ = p.done.send(result.clone());
            shared.frames.give_frame(p.frame);
        }
    }
}

async fn write_group(
    shared: &Shared,
    seq: u64,
    group: &[Pending],
    local: &mut Option<LocalWriter>,
) -> Result<()> {
    let path = shared.prefix.child(segment_name(shared.epoch, seq));
    if let Some(e) = shared
        .fenced
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    {
        return Err(e);
    }
    // The fence: no segment once a newer writer has claimed the log. A newer open that lists
    // the log between this check and the write below does not read this segment, records
    // so in its epoch object, and every later recovery ignores the segment (see `epoch`).
    if !SKIP_FENCE_CHECK.load(Ordering::Relaxed) {
        epoch::check(&shared.store, &shared.prefix, shared.epoch)
            .await
            .map_err(|e| fence(shared, e))?;
    }
    let body_len: u64 = group.iter().map(|p| p.frame.len() as u64).sum();
    let header = format::encode_header(group.len() as u32, body_len);
    let parts: Vec<Bytes> = std::iter::once(Bytes::copy_from_slice(&header))
        .chain(group.iter().map(|p| p.frame.clone()))
        .collect();
    match &shared.opts.local_root {
        Some(root) => {
            let w = local.take().unwrap_or_else(|| new_local(shared, root));
            let (w, written) = write_local(shared, &path, parts, w).await;
            *local = w;
            written?;
        }
        None => put_segment(shared, &path, parts).await?,
    }
    let mut info = SegmentInfo::new(path, false, false);
    for p in group {
        info.note(p.partition, p.end);
    }
    shared
        .segments
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((shared.epoch, seq), info);
    shared.segments_written.fetch_add(1, Ordering::Relaxed);
    shared
        .blocks_written
        .fetch_add(group.len() as u64, Ordering::Relaxed);
    shared
        .bytes_written
        .fetch_add(header.len() as u64 + body_len, Ordering::Relaxed);
    Ok(())
}

fn new_local(shared: &Shared, root: &std::path::Path) -> LocalWriter {
    #[allow(unused_mut)]
    let mut w = LocalWriter::new(root.to_owned(), shared.opts.fsync);
    #[cfg(test)]
    {
        w.sync_delay = shared.opts.sync_delay;
    }
    w
}

/// Writes a segment to the local directory ([`LocalWriter`], off the runtime) and gives the
/// writer back (none when the write panicked: the next write makes a new one).
async fn write_local(
    shared: &Shared,
    path: &Path,
    parts: Vec<Bytes>,
    mut w: LocalWriter,
) -> (Option<LocalWriter>, Result<()>) {
    let before = w.syncs;
    let file = path.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let r = w.write(&file, &parts);
        (w, r)
    })
    .await;
    let (w, outcome) = match joined {
        Ok(done) => done,
        Err(e) => {
            return (
                None,
                Err(write_failed(path, format!("the write stopped: {e}"))),
            );
        }
    };
    shared.syncs.fetch_add(w.syncs - before, Ordering::Relaxed);
    let result = match outcome {
        Ok(Outcome::Written) => Ok(()),
        // Someone else writes under this epoch's names: two writers claimed it.
        Ok(Outcome::Taken) => Err(taken(shared)),
        Err(e) => Err(write_failed(path, e)),
    };
    (Some(w), result)
}

/// Writes a segment to a remote store with one create-if-absent PUT.
async fn put_segment(shared: &Shared, path: &Path, parts: Vec<Bytes>) -> Result<()> {
    let payload: PutPayload = parts.into_iter().collect();
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match shared.store.put_opts(path, payload.clone(), opts).await {
        Ok(_) => Ok(()),
        // A client retry of a PUT that went through but whose answer was lost also finds the
        // object there: it is ours when it holds exactly what was written.
        Err(object_store::Error::AlreadyExists { .. }) if is_ours(shared, path, &payload).await => {
            tracing::debug!(segment = %path, "A retried WAL write found its own segment already written.");
            Ok(())
        }
        // Someone else writes under this epoch's names: two writers claimed it.
        Err(object_store::Error::AlreadyExists { .. }) => Err(taken(shared)),
        Err(e) => Err(write_failed(path, e)),
    }
}

/// Someone else writes under this epoch's names: two writers claimed it (remembered as a fence).
fn taken(shared: &Shared) -> WalError {
    fence(
        shared,
        WalError::Fenced {
            prefix: shared.prefix.to_string(),
            epoch: shared.epoch,
            newer: shared.epoch,
        },
    )
}

/// Writing segment `path` failed.
fn write_failed(path: &Path, e: impl std::fmt::Display) -> WalError {
    WalError::Write {
        path: path.to_string(),
        message: e.to_string(),
    }
}

/// Remembers a fence, so that every later append fails the same way; other errors pass.
fn fence(shared: &Shared, e: WalError) -> WalError {
    if matches!(e, WalError::Fenced { .. }) {
        tracing::error!(prefix = %shared.prefix, epoch = shared.epoch, "{e}");
        *shared.fenced.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
    }
    e
}

/// Whether the object at `path` holds exactly `payload`.
async fn is_ours(shared: &Shared, path: &Path, payload: &PutPayload) -> bool {
    let Ok(got) = shared.store.get(path).await else {
        return false;
    };
    let Ok(got) = got.bytes().await else {
        return false;
    };
    got.len() == payload.content_length()
        && payload
            .iter()
            .scan(0usize, |at, chunk| {
                let start = *at;
                *at += chunk.len();
                Some(got[start..*at] == chunk[..])
            })
            .all(|same| same)
}

/// Makes an object written to a local directory survive a power cut: the file, then `dirs`
/// directories above it (its new name; a new directory's name in its parent). A segment needs
/// one; an epoch object, the first object of the log, three (`epoch/`, the log's directory and
/// the one holding it).
pub(super) async fn fsync(root: &std::path::Path, path: &Path, dirs: usize) -> std::io::Result<()> {
    let mut file = root.to_owned();
    for part in path.parts() {
        file.push(part.as_ref());
    }
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&file)?.sync_all()?;
        let mut dir = file.parent();
        for _ in 0..dirs {
            if let Some(d) = dir {
                std::fs::File::open(d)?.sync_all()?;
                dir = d.parent();
            }
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}
