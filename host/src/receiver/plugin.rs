//! Receiver plugins: a `receiver`-world component polled for records.

use std::sync::Arc;
use std::time::Duration;

use super::{Finished, PartitionWriter, ReceiverError};
use crate::plugin::{Failure, PluginError, ReceiverStage};

/// The receiver of one partition of a receiver plugin. It remembers the last position the
/// plugin returned, so after a failure a fresh instance opens where the last one stopped.
#[derive(Debug)]
pub struct PluginReceiver {
    stage: Arc<ReceiverStage>,
    partition: u32,
    position: Option<String>,
    opened: bool,
}

impl PluginReceiver {
    /// The receiver of `partition`.
    pub fn new(stage: Arc<ReceiverStage>, partition: u32) -> Self {
        PluginReceiver {
            stage,
            partition,
            position: None,
            opened: false,
        }
    }

    /// Polls the plugin until its partition ends or `stop`.
    pub async fn run(
        &mut self,
        out: &PartitionWriter,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Finished, ReceiverError> {
        loop {
            if *stop.borrow() {
                return Ok(Finished::Stopped);
            }
            if !self.opened {
                let (stage, partition, position) =
                    (self.stage.clone(), self.partition, self.position.clone());
                tokio::task::spawn_blocking(move || stage.open(partition, position.as_deref()))
                    .await
                    .map_err(|e| ReceiverError::Fatal(e.to_string()))?
                    .map_err(classify)?;
                self.opened = true;
            }
            let (stage, partition) = (self.stage.clone(), self.partition);
            let polled = tokio::task::spawn_blocking(move || stage.poll(partition, 4096, 1 << 20))
                .await
                .map_err(|e| ReceiverError::Fatal(e.to_string()))?;
            let polled = match polled {
                Ok(p) => p,
                Err(e) => {
                    // The next call gets a fresh instance, which must be opened again.
                    self.opened = false;
                    return Err(classify(e));
                }
            };
            let empty = polled.records.is_empty();
            if !empty {
                out.append(&polled.records).await;
            }
            if polled.position.is_some() {
                self.position = polled.position;
            }
            if polled.end {
                return Ok(Finished::End);
            }
            if empty {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

fn classify(e: PluginError) -> ReceiverError {
    match e.failure {
        Failure::Fatal(_) | Failure::Init(_) | Failure::Contract(_) => {
            ReceiverError::Fatal(e.to_string())
        }
        _ => ReceiverError::Transient(e.to_string()),
    }
}
