//! Receiver plugins: a `receiver`-world component polled for records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::oversize::RecordLimit;
use super::{BuildContext, BuildError, Receiver, Resume, Source};
use super::{Finished, PartitionWriter, ReceiverError};
use crate::batch::RecordBatch;
use crate::batch::aside::Origin;
use crate::plugin::{Failure, PluginError, PluginKind, ReceiverStage};

/// `kind = "plugin"` in `[source]`.
#[derive(Debug, Clone)]
pub struct PluginSourceConfig {
    /// The stream's name.
    pub name: String,
    /// Checked against what the plugin says, when given.
    pub partitions: Option<u32>,
    /// The receiver plugin's name.
    pub plugin: String,
    /// Its parameters.
    pub params: BTreeMap<String, String>,
    /// `max-record-bytes`: a record with a longer value is set aside.
    pub max_record_bytes: u64,
}

impl PluginSourceConfig {
    /// Loads the receiver plugin, makes its stage (the plugin checks its parameters) and asks
    /// it for its partition count, which `partitions`, when given, must match.
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Source>, BuildError> {
        let plugin = (ctx.load)("`[source]`", &self.plugin, PluginKind::Receiver)?;
        let stage = plugin
            .receiver(&self.params)
            .map_err(|e| format!("`[source]`: {e}"))?;
        let have = stage.partitions().map_err(|e| format!("`[source]`: {e}"))?;
        if let Some(want) = self.partitions
            && want != have
        {
            return Err(BuildError::Invalid(format!(
                "key `source.partitions`: the file says {want} but plugin `{}` has {have}",
                self.plugin
            )));
        }
        Ok(Arc::new(PluginSource {
            stage: Arc::new(stage),
            partitions: have,
            plugin: self.plugin.clone(),
            limit: RecordLimit {
                max: self.max_record_bytes,
                dead_letters: ctx.dead_letters.clone(),
                stream: self.name.clone(),
            },
        }))
    }
}

/// A receiver plugin, built: its stage made.
#[derive(Debug)]
pub struct PluginSource {
    /// The stage, shared by the partitions' receivers.
    pub stage: Arc<ReceiverStage>,
    /// Partitions, as the plugin says.
    pub partitions: u32,
    /// The plugin's name.
    pub plugin: String,
    /// Records with longer values are set aside.
    pub limit: RecordLimit,
}

impl Source for PluginSource {
    fn kind(&self) -> &'static str {
        "plugin"
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The host records no position of a plugin's partition (the plugin keeps its own).
    fn replayable(&self) -> bool {
        false
    }

    fn receiver(self: Arc<Self>, partition: u32, _resume: Resume) -> Receiver {
        Receiver::Plugin(PluginReceiver {
            stage: self.stage.clone(),
            partition,
            position: None,
            opened: false,
            oversize: Oversize {
                plugin: self.plugin.clone(),
                limit: self.limit.clone(),
                started: crate::clock::now_ms(),
                polls: 0,
            },
        })
    }
}

/// The receiver of one partition of a receiver plugin. It remembers the last position the
/// plugin returned, so after a failure a fresh instance opens where the last one stopped.
#[derive(Debug)]
pub struct PluginReceiver {
    stage: Arc<ReceiverStage>,
    partition: u32,
    position: Option<String>,
    opened: bool,
    oversize: Oversize,
}

/// What a plugin receiver needs to set aside records past the limit.
#[derive(Debug)]
struct Oversize {
    plugin: String,
    limit: RecordLimit,
    /// When the receiver started, ms (side objects are named by it and the poll).
    started: i64,
    polls: u64,
}

impl PluginReceiver {
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
                self.append(out, &polled.records).await?;
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

impl PluginReceiver {
    /// Appends a poll's records; those with values past the limit are set aside instead
    /// (after the others).
    async fn append(
        &mut self,
        out: &PartitionWriter,
        records: &RecordBatch,
    ) -> Result<(), ReceiverError> {
        let o = &mut self.oversize;
        let poll = o.polls;
        o.polls += 1;
        let long: Vec<usize> = (0..records.len())
            .filter(|&i| o.limit.over(records.value(i).len()))
            .collect();
        if long.is_empty() {
            out.append(records).await;
            return Ok(());
        }
        let keep: Vec<u32> = (0..records.len() as u32)
            .filter(|i| !long.contains(&(*i as usize)))
            .collect();
        out.append(&records.gather(&keep)).await;
        for i in long {
            let name = format!("plugin-p{}-{}-{poll}-{i}", self.partition, o.started);
            let origin = Origin::Plugin {
                plugin: o.plugin.clone(),
                poll,
                index: i as u64,
            };
            let note = o.limit.set_aside(&name, records.value(i), origin).await?;
            out.set_aside(note, None, false).await;
        }
        Ok(())
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
