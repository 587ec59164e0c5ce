//! The write-ahead log stage of reliable mode, between the block manager and the batch loop.
//!
//! Each block is encoded into the log (its own copy) and passed on to the batch loop at once,
//! so the per-record steps and sink writes run while its segment is being written. What waits
//! for the log is what must: a block's records are marked durable (and so acknowledged to the
//! source) only once the segment holding them is written, in block order; and a batch's close
//! is passed on only once every block before it is durable, so no batch is recorded in the
//! checkpoint log, nor committed to a sink, with a record the log does not hold. A crash
//! before that loses nothing that was acknowledged and commits nothing that was not logged:
//! the open batch's staged sink writes are dropped, and the records are either in the log
//! (replayed at the restart) or were never acknowledged (the source keeps them).
//!
//! The log's copies of the blocks being written are not counted in the memory budget (the
//! blocks are, until processed, as without the log); they are bounded instead: a block waits
//! before being handed to the log while the copies in flight would pass [`IN_FLIGHT`] (and the
//! log holds any), so a slow log stops the blocks, which fill the budget and hold the receivers
//! back as before. What reliable mode adds to memory is at most that fixed amount.
//!
//! Why (issue #16): with each block held until its segment was written, the blocks waiting
//! for the log filled the budget and the receiver waited (upper-case over TCP at half the
//! speed without the log, with or without fsync).

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::{RunError, Shutdown};
use crate::block::{Block, BlockManager, Cut};
use crate::wal::{Wal, WalError};

/// A block's write in flight: resolves to where its partition is durable up to, and the bytes
/// of its copy.
type Write = BoxFuture<'static, Result<(u32, u64, u64), WalError>>;

/// Cuts passed on in their order: blocks at once, closes once the blocks before them are
/// durable.
struct Order {
    out: UnboundedSender<Cut>,
    /// Cuts behind a close still waiting for the log: a close with the number of writes
    /// that must be done before it goes.
    held: VecDeque<(Cut, u64)>,
    /// Writes submitted, and writes done (in submission order).
    submitted: u64,
    done: u64,
}

impl Order {
    /// Passes on what may go; false once the batch loop is gone.
    fn pass(&mut self, cut: Cut) -> bool {
        let need = match cut {
            Cut::Close { .. } => self.submitted,
            Cut::Block(_) => 0,
        };
        self.held.push_back((cut, need));
        self.drain()
    }

    fn drain(&mut self) -> bool {
        while let Some((_, need)) = self.held.front() {
            if *need > self.done {
                break;
            }
            let Some((cut, _)) = self.held.pop_front() else {
                break;
            };
            if self.out.send(cut).is_err() {
                return false;
            }
        }
        true
    }
}

/// The stage: runs until the block manager's channel ends and every write is done, or a write
/// fails (which stops the run: the records it held were not acknowledged, so the source keeps
/// them).
pub(crate) async fn log_blocks(
    wal: Wal,
    mut cuts: UnboundedReceiver<Cut>,
    out: UnboundedSender<Cut>,
    blocks: Arc<BlockManager>,
    shutdown: Shutdown,
) {
    let mut stage = Stage {
        wal,
        blocks,
        writing: Default::default(),
        in_flight: 0,
        order: Order {
            out,
            held: VecDeque::new(),
            submitted: 0,
            done: 0,
        },
    };
    let fail = |e: WalError| {
        tracing::error!(error = %e, "A block could not be written to the write-ahead log; the pipeline stops (its records were not acknowledged, so the source keeps them).");
        shutdown.fail(RunError::Wal(e));
    };
    // A block waiting for the log's copies in flight to go under the bound.
    let mut parked: Option<Block> = None;
    let mut open = true;
    loop {
        tokio::select! {
            cut = cuts.recv(), if open && parked.is_none() => match cut {
                // A block of only records set aside (their bytes are in side objects): nothing
                // to log.
                Some(Cut::Block(b)) if !b.records.is_empty() => parked = Some(b),
                Some(cut) => {
                    if !stage.order.pass(cut) {
                        return;
                    }
                }
                None => open = false,
            },
            Some(written) = stage.writing.next() => {
                let (p, end, bytes) = match written {
                    Ok(w) => w,
                    Err(e) => return fail(e),
                };
                stage.in_flight -= bytes;
                stage.blocks.mark_durable(p, end);
                stage.order.done += 1;
                if !stage.order.drain() {
                    return;
                }
            },
            else => return,
        }
        if let Some(b) = parked.take_if(|b| {
            stage.in_flight == 0 || stage.in_flight + b.records.byte_size() as u64 <= IN_FLIGHT
        }) {
            match stage.submit(b).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => return fail(e),
            }
        }
    }
}

/// The most bytes of the log's copies of blocks in flight (encoded and not yet written): three
/// of the log's largest groups ([`crate::wal::WalOptions::max_group_bytes`]), so one is written
/// while the next fill, and reliable mode adds a fixed amount to memory.
pub(crate) const IN_FLIGHT: u64 = 24 << 20;

struct Stage {
    wal: Wal,
    blocks: Arc<BlockManager>,
    /// Each write resolves to its block's end and its copy's bytes.
    writing: futures::stream::FuturesOrdered<Write>,
    /// Bytes of the log's copies not yet written.
    in_flight: u64,
    order: Order,
}

impl Stage {
    /// Hands `b` to the log and passes it on to the batch loop; false once the batch loop is
    /// gone.
    async fn submit(&mut self, b: Block) -> Result<bool, WalError> {
        let (p, end) = (b.id.partition, b.first_offset + b.records.len() as u64);
        let durable = self.wal.submit(p, b.first_offset, &b.records).await?;
        let bytes = durable.bytes() as u64;
        self.in_flight += bytes;
        self.writing.push_back(Box::pin(async move {
            durable.wait().await.map(|()| (p, end, bytes))
        }));
        self.order.submitted += 1;
        Ok(self.order.pass(Cut::Block(b)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use object_store::local::LocalFileSystem;
    use object_store::path::Path;

    use super::*;
    use crate::batch::RecordBatch;
    use crate::wal::WalOptions;

    fn records(n: usize) -> RecordBatch {
        let lines: Vec<Vec<u8>> = (0..n).map(|i| format!("line {i}").into_bytes()).collect();
        RecordBatch::from_values(lines.iter().map(|l| l.as_slice()))
    }

    async fn open(dir: &std::path::Path, sync_delay: Duration) -> Wal {
        let store = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
        let opts = WalOptions {
            local_root: Some(dir.to_owned()),
            sync_delay,
            ..WalOptions::default()
        };
        Wal::open(store, Path::from("wal"), opts).await.unwrap().0
    }

    /// One block of `n` records and its batch's close, through a log stage on `wal`.
    async fn one_batch(
        wal: Wal,
        n: usize,
    ) -> (
        Arc<BlockManager>,
        UnboundedReceiver<Cut>,
        Shutdown,
        tokio::task::JoinHandle<()>,
    ) {
        let (m, cuts) = BlockManager::new(1, 1 << 20, 1 << 20);
        let blocks = Arc::new(m);
        // Reliable mode: records are durable once logged, not once appended.
        blocks.set_reliable();
        blocks.append(0, &records(n)).await;
        blocks.cut_blocks(1);
        blocks.close_batch(0, 2);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = Shutdown::default();
        let stage = tokio::spawn(log_blocks(wal, cuts, tx, blocks.clone(), shutdown.clone()));
        (blocks, rx, shutdown, stage)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_block_runs_while_it_is_logged_and_its_close_and_ack_wait_for_the_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let delay = Duration::from_millis(500);
        let wal = open(tmp.path(), delay).await;
        let started = Instant::now();
        let (blocks, mut out, _shutdown, _stage) = one_batch(wal, 100).await;
        // The block comes out at once, long before its segment is synced.
        let first = tokio::time::timeout(delay / 2, out.recv()).await;
        assert!(
            matches!(first, Ok(Some(Cut::Block(ref b))) if b.records.len() == 100),
            "the block waited for the log: {first:?}"
        );
        // Neither its acknowledgement nor its batch's close before the sync.
        assert_eq!(blocks.durable_offset(0), 0, "acknowledged before durable");
        assert!(
            out.try_recv().is_err(),
            "the close passed before its block was durable"
        );
        let close = tokio::time::timeout(Duration::from_secs(10), out.recv()).await;
        assert!(
            matches!(close, Ok(Some(Cut::Close { id: 0, .. }))),
            "{close:?}"
        );
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        assert_eq!(blocks.durable_offset(0), 100);
        let store = Arc::new(LocalFileSystem::new_with_prefix(tmp.path()).unwrap());
        let (_, rec) = Wal::open(store, Path::from("wal"), WalOptions::default())
            .await
            .unwrap();
        assert_eq!(rec.blocks.len(), 1);
        assert_eq!(rec.blocks[0].records, records(100));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_block_run_but_never_logged_never_lets_its_batch_close_nor_its_records_be_acked() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = open(tmp.path(), Duration::ZERO).await;
        // Another writer takes the log over: this one's next segment fails (as a crash before
        // the sync would leave it: not durable).
        let _newer = open(tmp.path(), Duration::ZERO).await;
        let (blocks, mut out, shutdown, stage) = one_batch(wal, 10).await;
        let mut seen = Vec::new();
        while let Ok(Some(cut)) = tokio::time::timeout(Duration::from_secs(10), out.recv()).await {
            seen.push(cut);
        }
        tokio::time::timeout(Duration::from_secs(10), stage)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !seen.iter().any(|c| matches!(c, Cut::Close { .. })),
            "a batch with a record the log does not hold was closed: {seen:?}"
        );
        assert!(shutdown.failed(), "the failed write stops the run");
        assert_eq!(
            blocks.durable_offset(0),
            0,
            "records acknowledged but not logged"
        );
    }
}
