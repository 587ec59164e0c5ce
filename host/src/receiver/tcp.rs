//! The `tcp` source: newline-delimited records from a socket (Spark's `socketTextStream`).
//! The receiver connects to `address`; it reads only while the block manager has room, so a
//! full budget stops the reads and TCP's own flow control slows the sender.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{BuildContext, BuildError, Receiver, Resume, Source};
use super::{Finished, PartitionWriter, ReceiverError, split_lines};
use crate::batch::RecordBatch;
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
}

impl TcpConfig {
    /// Checks `address` looks like `host:port`; the socket is opened by each receiver.
    pub fn build(&self, _ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Source>, BuildError> {
        if self.address.parse::<std::net::SocketAddr>().is_err() && !self.address.contains(':') {
            return Err(BuildError::Invalid(format!(
                "key `source.address`: {:?} is not host:port",
                self.address
            )));
        }
        Ok(Arc::new(self.clone()))
    }
}

impl Source for TcpConfig {
    fn kind(&self) -> &'static str {
        "tcp"
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    /// What the peer sent is gone once read.
    fn replayable(&self) -> bool {
        false
    }

    fn receiver(self: Arc<Self>, _partition: u32, _resume: Resume) -> Receiver {
        Receiver::Tcp(TcpReceiver::new(&self.address, self.end_on_close))
    }
}

/// The `tcp` receiver of one partition.
#[derive(Debug)]
pub struct TcpReceiver {
    address: String,
    end_on_close: bool,
}

impl TcpReceiver {
    /// A receiver connecting to `address`; with `end_on_close`, the peer closing the connection
    /// ends the partition, else the receiver reconnects.
    pub fn new(address: &str, end_on_close: bool) -> Self {
        TcpReceiver {
            address: address.to_owned(),
            end_on_close,
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
        let mut buf = vec![0u8; 256 * 1024];
        let mut filled = 0usize;
        let mut chunk = RecordBatch::default();
        loop {
            if filled == buf.len() {
                // One line longer than the buffer: grow it rather than cut the record.
                buf.resize(buf.len() * 2, 0);
            }
            let read = tokio::select! {
                r = socket.read(&mut buf[filled..]) => r,
                _ = stop.changed() => return Ok(Finished::Stopped),
            };
            let n =
                read.map_err(|e| ReceiverError::Transient(format!("tcp {}: {e}", self.address)))?;
            if n == 0 {
                chunk.clear();
                if filled > 0 {
                    chunk.push(None, &buf[..filled], Some(now_ms()));
                    out.append(&chunk).await;
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
            filled += n;
            chunk.clear();
            let used = split_lines(&buf[..filled], &mut chunk, now_ms());
            buf.copy_within(used..filled, 0);
            filled -= used;
            out.append(&chunk).await;
        }
    }
}
