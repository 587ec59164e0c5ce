//! The `tcp` source: newline-delimited records from a socket (Spark's `socketTextStream`).
//! The receiver connects to `address`; it reads only while the block manager has room, so a
//! full budget stops the reads and TCP's own flow control slows the sender.
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

/// `kind = "tcp"`.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// The stream's name.
    pub name: String,
    /// Partitions.
    pub partitions: u32,
    /// `host:port` to connect to.
    pub address: String,
    /// The peer closing the connection ends the partition, instead of a reconnect.
    pub end_on_close: bool,
    /// `max-record-bytes`: a longer line is set aside.
    pub max_record_bytes: u64,
}

impl TcpConfig {
    /// Checks `address` looks like `host:port`; the socket is opened by each receiver.
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Source>, BuildError> {
        if self.address.parse::<std::net::SocketAddr>().is_err() && !self.address.contains(':') {
            return Err(BuildError::Invalid(format!(
                "key `source.address`: {:?} is not host:port",
                self.address
            )));
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

    fn receiver(self: Arc<Self>, _partition: u32, _resume: Resume) -> Receiver {
        Receiver::Tcp(TcpReceiver::new(
            &self.config.address,
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
        let mut buf = vec![0u8; 256 * 1024];
        let mut chunk = RecordBatch::default();
        loop {
            let read = tokio::select! {
                r = socket.read(&mut buf) => r,
                _ = stop.changed() => return Ok(Finished::Stopped),
            };
            let n =
                read.map_err(|e| ReceiverError::Transient(format!("tcp {}: {e}", self.address)))?;
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
                        "tcp {}: the peer closed the connection",
                        self.address
                    )))
                };
            }
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let fed = lines.feed(rest, &mut chunk, now_ms()).await?;
                rest = &rest[fed.used..];
                if let Some(long) = fed.long {
                    out.append(&chunk).await;
                    chunk.clear();
                    out.set_aside(long.note, None, false).await;
                }
            }
            out.append(&chunk).await;
        }
    }
}
