//! A source as the pipeline file names it ([`SourceConfig`], one arm per kind, each kind's
//! config struct in its own file) and as it is built ([`Source`]): a kind builds itself from a
//! [`BuildContext`] (in `crate::build`), and the driver asks the built source for each partition's receiver.
//! A new kind is one file (or folder) here and one arm of [`SourceConfig`].

use std::sync::Arc;

use super::amqp::config::{AmqpConfig, EventHubsConfig};
use super::files::FilesConfig;
use super::generator::GeneratorConfig;
use super::nexmark::NexmarkConfig;
use super::plugin::PluginSourceConfig;
use super::tcp::TcpConfig;
use super::{Receiver, Resume};
pub use crate::build::{BuildContext, BuildError};

/// A source, built: stores reached, brokers probed, plugins loaded.
pub trait Source: Send + Sync {
    /// The kind, for logs (`"files"`).
    fn kind(&self) -> &'static str;
    /// How many partitions it has.
    fn partitions(&self) -> u32;
    /// Whether a restart can read the same records again from the positions the checkpoint
    /// log records (or, for the generator and nexmark, from their offsets).
    fn replayable(&self) -> bool;
    /// Whether a restart reads the records again from recorded source positions, so a
    /// write-ahead log of its blocks would only be a second copy (`wal = true` is turned off).
    fn replays_by_position(&self) -> bool {
        false
    }
    /// What the source does about redeliveries (`None`: it never redelivers); asked once when
    /// the run starts.
    fn duplicates(&self) -> Option<crate::dedup::Detection> {
        None
    }
    /// The receiver of `partition`, starting at `resume`.
    fn receiver(self: Arc<Self>, partition: u32, resume: Resume) -> Receiver;
}

/// `[source]`, checked: which kind, with that kind's settings.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// `kind = "generator"`: deterministic text lines.
    Generator(GeneratorConfig),
    /// `kind = "nexmark"`: the Nexmark benchmark's auction events.
    Nexmark(NexmarkConfig),
    /// `kind = "files"`: new files in a directory or store prefix, each read once.
    Files(FilesConfig),
    /// `kind = "tcp"`: newline-delimited records from a socket.
    Tcp(TcpConfig),
    /// `kind = "amqp"`: an AMQP 1.0 broker, one link per partition.
    Amqp(AmqpConfig),
    /// `kind = "eventhubs"`: Azure Event Hubs, one link per partition.
    EventHubs(EventHubsConfig),
    /// `kind = "plugin"`: a receiver plugin.
    Plugin(PluginSourceConfig),
}

impl SourceConfig {
    /// The stream's name.
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Generator(c) => &c.name,
            SourceConfig::Nexmark(c) => &c.name,
            SourceConfig::Files(c) => &c.name,
            SourceConfig::Tcp(c) => &c.name,
            SourceConfig::Amqp(c) => &c.name,
            SourceConfig::EventHubs(c) => &c.name,
            SourceConfig::Plugin(c) => &c.name,
        }
    }

    /// How many partitions the file asks for (a receiver plugin says its own).
    pub fn partitions(&self) -> u32 {
        match self {
            SourceConfig::Generator(c) => c.partitions,
            SourceConfig::Nexmark(c) => c.partitions,
            SourceConfig::Files(c) => c.partitions,
            SourceConfig::Tcp(c) => c.partitions,
            SourceConfig::Amqp(c) => c.partitions,
            SourceConfig::EventHubs(c) => c.partitions.unwrap_or(1),
            SourceConfig::Plugin(c) => c.partitions.unwrap_or(1),
        }
    }

    /// The kind builds itself; the message says what is wrong (the key, the store, the
    /// broker, the plugin).
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Source>, BuildError> {
        match self {
            SourceConfig::Generator(c) => c.build(ctx),
            SourceConfig::Nexmark(c) => c.build(ctx),
            SourceConfig::Files(c) => c.build(ctx),
            SourceConfig::Tcp(c) => c.build(ctx),
            SourceConfig::Amqp(c) => c.build(ctx),
            SourceConfig::EventHubs(c) => c.build(ctx),
            SourceConfig::Plugin(c) => c.build(ctx),
        }
    }
}
