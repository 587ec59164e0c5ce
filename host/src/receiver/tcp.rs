//! The `tcp` source: newline-delimited records from a socket (Spark's `socketTextStream`).
//! Each partition's receiver opens its own connection: to `address` (every partition to the
//! same server, which must accept as many connections), or to its own entry of `addresses`
//! (a union of socket streams, as a Spark job would `union` several). Partitions read in
//! parallel, so one receiver's thread is not the ceiling. A receiver reads only while the
//! block manager has room, so a full budget stops the reads and TCP's own flow control slows
//! the sender.
//!
//! A line longer than `max-record-bytes` is never held whole: once past the limit it is
//! streamed to a side object beside the dead letters to its end ([`super::lines`]), and its
//! dead letter names the peer, the connection (by the time it opened) and the line's byte
//! offset on it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::lines::LineReader;
use super::oversize::RecordLimit;
use super::{BuildContext, BuildError, Receiver, Resume, Source};
use super::{Finished, PartitionWriter, ReceiverError};
use crate::batch::RecordBatch;
use crate::batch::aside::Origin;
use crate::clock::now_ms;

/// Bytes asked of the socket per read.
const READ_BYTES: usize = 256 * 1024;

/// `kind = "tcp"`.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// The stream's name.
    pub name: String,
    /// Partitions.
    pub partitions: u32,
    /// `host:port` to connect to: one for every partition, or one per partition (partition
    /// `p` connects to entry `p`).
    pub addresses: Vec<String>,
    /// The peer closing the connection ends the partition, instead of a reconnect.
    pub end_on_close: bool,
    /// `max-record-bytes`: a longer line is set aside.
    pub max_record_bytes: u64,
}

impl TcpConfig {
    /// Checks each address looks like `host:port`; the sockets are opened by the receivers.
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Source>, BuildError> {
        for address in &self.addresses {
            if address.parse::<std::net::SocketAddr>().is_err() && !address.contains(':') {
                let key = if self.addresses.len() == 1 {
                    "address"
                } else {
                    "addresses"
                };
                return Err(BuildError::Invalid(format!(
                    "key `source.{key}`: {address:?} is not host:port"
                )));
            }
        }
        Ok(Arc::new(TcpSource {
            config: self.clone(),
            limit: RecordLimit {
                max: self.max_record_bytes,
                dead_letters: ctx.dead_letters.clone(),
                stream: self.name.clone(),
            },
        }))
    }
}

/// A `tcp` source, built.
#[derive(Debug)]
pub struct TcpSource {
    /// Its settings.
    pub config: TcpConfig,
    /// Lines longer than this are set aside.
    pub limit: RecordLimit,
}

impl Source for TcpSource {
    fn kind(&self) -> &'static str {
        "tcp"
    }

    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// What the peer sent is gone once read.
    fn replayable(&self) -> bool {
        false
    }

    fn receiver(self: Arc<Self>, partition: u32, _resume: Resume) -> Receiver {
        let addresses = &self.config.addresses;
        let address = &addresses[partition as usize % addresses.len().max(1)];
        Receiver::Tcp(TcpReceiver::new(
            address,
            self.config.end_on_close,
            self.limit.clone(),
        ))
    }
}

/// The `tcp` receiver of one partition.
#[derive(Debug)]
pub struct TcpReceiver {
    address: String,
    end_on_close: bool,
    limit: RecordLimit,
}

impl TcpReceiver {
    /// A receiver connecting to `address`; with `end_on_close`, the peer closing the connection
    /// ends the partition, else the receiver reconnects. Lines longer than `limit` are set
    /// aside.
    pub fn new(address: &str, end_on_close: bool, limit: RecordLimit) -> Self {
        TcpReceiver {
            address: address.to_owned(),
            end_on_close,
            limit,
        }
    }

    /// Connects and reads lines until the peer closes or `stop`.
    pub async fn run(
        &mut self,
        out: &PartitionWriter,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Finished, ReceiverError> {
        let mut socket =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&self.address))
                .await
                .map_err(|_| {
                    ReceiverError::Transient(format!("tcp {}: connecting timed out", self.address))
                })?
                .map_err(|e| {
                    ReceiverError::Transient(format!("tcp {}: cannot connect: {e}", self.address))
                })?;
        tracing::info!(address = %self.address, partition = out.partition, "Connected.");
        let connection = now_ms();
        let peer = self.address.clone();
        let origin = move |offset| Origin::Tcp {
            peer: peer.clone(),
            connection,
            offset,
        };
        let prefix = format!("tcp-p{}-{connection}", out.partition);
        let mut lines = LineReader::new(self.limit.clone(), prefix, 0, origin);
        let mut buf = vec![0u8; READ_BYTES];
        let mut chunk = RecordBatch::default();
        loop {
            let read = tokio::select! {
                r = socket.read(&mut buf) => r,
                _ = stop.changed() => return Ok(Finished::Stopped),
            };
            let n = read.map_err(|e| {
                ReceiverError::Transient(format!(
                    "tcp {} (partition {}): {e}",
                    self.address, out.partition
                ))
            })?;
            chunk.clear();
            if n == 0 {
                let long = lines.finish(&mut chunk, now_ms()).await?;
                out.append(&chunk).await;
                if let Some(long) = long {
                    out.set_aside(long.note, None, false).await;
                }
                return if self.end_on_close {
                    Ok(Finished::End)
                } else {
                    Err(ReceiverError::Transient(format!(
                        "tcp {} (partition {}): the peer closed the connection",
                        self.address, out.partition
                    )))
                };
            }
            take(&mut lines, &buf[..n], &mut chunk, out).await?;
        }
    }
}

/// Hands the lines of `bytes` (what one read brought) to the partition. While the reader
/// holds no part of a line, its complete lines are split straight into the partition's
/// buffer (one copy, from the read buffer); a line begun in an earlier read, a line past the
/// limit and a last line without its newline go through the reader, one line at a time.
async fn take(
    lines: &mut LineReader,
    bytes: &[u8],
    chunk: &mut RecordBatch,
    out: &PartitionWriter,
) -> Result<(), ReceiverError> {
    let ts = now_ms();
    let mut rest = bytes;
    while !rest.is_empty() {
        if lines.idle()
            && let Some(last) = memchr::memrchr(b'\n', rest)
        {
            let whole = &rest[..last + 1];
            let mut used = 0;
            out.append_with(whole.len(), |b| used = lines.split_complete(whole, b, ts))
                .await;
            rest = &rest[used..];
            if rest.is_empty() {
                break;
            }
        }
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        chunk.clear();
        let fed = lines.feed(&rest[..end], chunk, ts).await?;
        out.append(chunk).await;
        if let Some(long) = fed.long {
            out.set_aside(long.note, None, false).await;
        }
        rest = &rest[fed.used..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BlockManager, Cut};
    use crate::store::Location;

    /// What the partition got: its records and how many lines were set aside.
    fn drain(
        m: &BlockManager,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Cut>,
    ) -> (Vec<Vec<u8>>, usize) {
        m.cut_blocks(now_ms());
        let (mut records, mut aside) = (Vec::new(), 0);
        while let Ok(cut) = rx.try_recv() {
            if let Cut::Block(b) = cut {
                records.extend((0..b.records.len()).map(|i| b.records.value(i).to_vec()));
                aside += b.aside.len();
            }
        }
        (records, aside)
    }

    /// Whatever the reads' boundaries, the partition gets the lines (without CR), a line past
    /// the limit set aside, and a last line without its newline: the fast path (straight into
    /// the partition's buffer) and the reader's path hand over where the other stopped.
    #[tokio::test]
    async fn lines_reach_the_partition_exactly_whatever_the_read_boundaries() {
        let tmp = tempfile::tempdir().unwrap();
        let limit = RecordLimit {
            max: 24,
            dead_letters: Location::resolve("dl", "dead-letter.path", tmp.path(), true).unwrap(),
            stream: "s".into(),
        };
        let (mut text, mut want) = (Vec::new(), Vec::new());
        for i in 0..3000u32 {
            let line = format!("l{i}-{}", "z".repeat((i % 13) as usize));
            text.extend_from_slice(line.as_bytes());
            text.extend_from_slice(if i % 4 == 0 { b"\r\n" } else { b"\n" });
            want.push(line.into_bytes());
            if i % 500 == 250 {
                text.extend_from_slice(&[b'L'; 70]);
                text.push(b'\n');
            }
        }
        text.extend_from_slice(b"tail");
        want.push(b"tail".to_vec());
        for cut in [1usize, 2, 3, 7, 25, 26, 64, 4096, text.len()] {
            let (m, mut rx) = BlockManager::new(1, u64::MAX, 1 << 30);
            let out = PartitionWriter {
                blocks: Arc::new(m),
                partition: 0,
            };
            let mut lines =
                LineReader::new(limit.clone(), format!("t{cut}"), 0, |offset| Origin::Tcp {
                    peer: "p".into(),
                    connection: 0,
                    offset,
                });
            let mut chunk = RecordBatch::default();
            for piece in text.chunks(cut) {
                take(&mut lines, piece, &mut chunk, &out).await.unwrap();
            }
            chunk.clear();
            assert!(lines.finish(&mut chunk, 0).await.unwrap().is_none());
            out.append(&chunk).await;
            let (got, aside) = drain(&out.blocks, &mut rx);
            assert_eq!(aside, 6, "reads of {cut} bytes: the long lines set aside");
            assert_eq!(got.len(), want.len(), "reads of {cut} bytes: record count");
            assert!(got == want, "reads of {cut} bytes: the records, in order");
        }
    }
}
