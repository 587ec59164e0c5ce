//! The user's pipeline file: its schema (versioned, unknown keys rejected) and its loading,
//! with every error naming the file, the key and the line.
//!
//! `[source]` and `[[sink]]` are read here as flat tables ([`RawSource`], [`RawSink`]) so that
//! a wrong key gets its line number; each becomes the checked config of its kind, which lives
//! with the kind ([`crate::receiver`], [`crate::sink`]) and builds it. This module builds
//! nothing: the plan is assembled in the `plan` module.

pub mod admin;
pub mod event_window;
pub mod poison;
pub mod step;
pub mod swap;
pub mod window;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use step::{Step, StepConfig};

use crate::error::Fault;
use crate::plugin::limits::{Grants, RuntimeConfig};
use crate::plugin::manifest::{de_bytes, toml_message};
use crate::receiver::SourceConfig;
use crate::receiver::amqp::config::{OwnerLevelSetting, RawEventHubs, SeedParams, resolve_amqp};
use crate::receiver::files::FilesConfig;
use crate::receiver::generator::GeneratorConfig;
use crate::receiver::nexmark::NexmarkConfig;
use crate::receiver::oversize::{DEFAULT_MAX_RECORD_BYTES, check_max_record_bytes};
use crate::receiver::plugin::PluginSourceConfig;
use crate::receiver::tcp::TcpConfig;
use crate::secret::Secret;
use crate::sink::count::CountConfig;
use crate::sink::files::FilesSinkConfig;
use crate::sink::plugin::PluginSinkConfig;
use crate::sink::stdout::StdoutConfig;
use crate::sink::{Field, Fields, Format, OutputFormat, SinkConfig};

/// The pipeline file format this host reads.
pub const PIPELINE_VERSION: u32 = 1;

/// A pipeline file that cannot be used. The message names the file, the key and what was
/// expected.
#[derive(Debug, thiserror::Error)]
#[error("pipeline {}: {message}", path.display())]
pub struct ConfigError {
    /// The pipeline file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
    /// Whose fault it is: [`Fault::User`] for the file itself, [`Fault::External`] for a store
    /// or broker it names that did not answer.
    pub fault: Fault,
}

/// `pipeline.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PipelineFile {
    /// `version`: the file format, `1`. Required.
    pub version: u32,
    /// `name`: the pipeline's name, used in logs. Default: the file's directory name.
    #[serde(default)]
    pub name: Option<String>,
    /// `plugins`: the plugin directory. Default: `--plugins`, else `$SLUICE_PLUGINS`.
    #[serde(default)]
    pub plugins: Option<String>,
    /// `batch-interval`: how often a batch closes. Default `"1s"`; at least `"50ms"`.
    #[serde(default = "default_batch_interval", with = "humantime_serde")]
    pub batch_interval: Duration,
    /// `block-interval`: how often received records become a block. Default `"200ms"`.
    #[serde(default = "default_block_interval", with = "humantime_serde")]
    pub block_interval: Duration,
    /// `workers`: tasks running at once. Default: the number of cores.
    #[serde(default)]
    pub workers: Option<usize>,
    /// `memory-budget`: bytes of received records held before receivers are slowed.
    /// Default `"64MiB"`.
    #[serde(default = "default_budget", deserialize_with = "de_bytes")]
    pub memory_budget: u64,
    /// `[source]`: where records come from. Required.
    #[serde(rename = "source")]
    pub raw_source: RawSource,
    /// The source, checked (from `[source]`).
    #[serde(skip, default = "placeholder_source")]
    pub source: SourceConfig,
    /// `[[transform]]`: the steps, in order. Default: none.
    #[serde(default)]
    pub transform: Vec<StepConfig>,
    /// `[[sink]]`: where results go. At least one.
    #[serde(default, rename = "sink")]
    pub raw_sinks: Vec<RawSink>,
    /// The sinks, checked (from `[[sink]]`).
    #[serde(skip)]
    pub sink: Vec<SinkConfig>,
    /// `[dead-letter]`: where rejected records go. Default: `./dead-letters` beside the file.
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
    /// `[checkpoint]`: where the checkpoint log (and reliable mode's write-ahead log) go.
    /// Default: `./checkpoints` beside the file.
    #[serde(default)]
    pub checkpoint: Option<CheckpointConfig>,
    /// `[runtime]`: plugin runtime settings. Default: see [`RuntimeConfig`].
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// `[swap]`: hot swap of transformation plugins. Default: see [`swap::SwapConfig`].
    #[serde(default)]
    pub swap: swap::SwapConfig,
    /// `[admin]`: the admin endpoint (`sluice plugin swap`). Default: see
    /// [`admin::AdminConfig`].
    #[serde(default)]
    pub admin: admin::AdminConfig,
    /// `[ha]`: several hosts share the partitions through ownership leases (see
    /// [`crate::ha`]). Default: absent, one host owns every partition.
    #[serde(default)]
    pub ha: Option<crate::ha::HaConfig>,
    /// `[grants.NAME]`: what the operator grants each plugin, e.g.
    /// `[grants.jsonl-sink] dirs = { "/out" = "./out" }`. Default: nothing.
    #[serde(default)]
    pub grants: BTreeMap<String, Grants>,
}

fn placeholder_source() -> SourceConfig {
    SourceConfig::Generator(GeneratorConfig::default())
}

fn default_batch_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_block_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_budget() -> u64 {
    64 << 20
}

/// `[source]`, as written: `kind` says which source, and only that kind's keys may be set.
/// Every kind has `name` (the stream's name, default `"input"`) and `partitions` (one receiver
/// each, default 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSource {
    /// `kind`: `"generator"`, `"nexmark"`, `"files"`, `"tcp"`, `"amqp"`, `"eventhubs"` or
    /// `"plugin"`.
    /// Required.
    pub kind: String,
    /// `name`: the stream's name. Default `"input"`.
    #[serde(default)]
    pub name: Option<String>,
    /// `partitions`: how many partitions. Default 1 (a plugin: its own count).
    #[serde(default)]
    pub partitions: Option<u32>,
    /// generator and nexmark `seed`. Default 42.
    #[serde(default)]
    pub seed: Option<u64>,
    /// generator `vocabulary`: distinct words. Default 1000.
    #[serde(default)]
    pub vocabulary: Option<u32>,
    /// generator `words-per-line`. Default 10.
    #[serde(default)]
    pub words_per_line: Option<u32>,
    /// generator `rate`: lines per second per partition, 0 for as fast as possible. Default 1000.
    /// nexmark `rate`: events per second over all partitions, 0 for as fast as possible (event
    /// times then follow 10,000 a second). Default 0.
    #[serde(default)]
    pub rate: Option<u64>,
    /// generator `limit`: lines per partition, then it ends. Default: none.
    #[serde(default)]
    pub limit: Option<u64>,
    /// nexmark `events`: events over all partitions, then the stream ends. Default: none.
    #[serde(default)]
    pub events: Option<u64>,
    /// files `path`: directory or store prefix. Required for files.
    #[serde(default)]
    pub path: Option<String>,
    /// files `poll-interval`. Default `"200ms"`.
    #[serde(default, with = "humantime_serde")]
    pub poll_interval: Option<Duration>,
    /// tcp `address`: host:port. Required for tcp. amqp `address`: the source address of
    /// every partition's link (`{partition}` in it is replaced by the partition's number).
    #[serde(default)]
    pub address: Option<String>,
    /// amqp `url`: `amqp://[user:password@]host[:port]` or `amqps://…`. Required for amqp.
    #[serde(default)]
    pub url: Option<Secret>,
    /// amqp `queues`: one source address per partition, e.g. `["/queue/a", "/queue/b"]`.
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// amqp and eventhubs `credit`: the link credit window per partition. Default 2000.
    #[serde(default)]
    pub credit: Option<u32>,
    /// amqp `duplicate-detection`: a redelivered message whose message id was seen this long
    /// ago or less is dropped (`"off"`: kept). Needs `wal = true`. Default `"10m"` with it.
    #[serde(default)]
    pub duplicate_detection: Option<String>,
    /// amqp `duplicate-ids`: at most this many message ids are kept. Default 100000.
    #[serde(default)]
    pub duplicate_ids: Option<u64>,
    /// amqp `ca-file`: a PEM file of CA certificates trusted for `amqps://` besides the
    /// system's roots (relative to the pipeline file). Default: none.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// `wal`, any kind: reliable mode. Each block is written to the write-ahead log (under
    /// `[checkpoint] path`) before its records are acknowledged to the source, and a restart
    /// replays what the last checkpoint does not cover. Default false.
    #[serde(default)]
    pub wal: Option<bool>,
    /// eventhubs `connection-string`: `Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…`.
    #[serde(default)]
    pub connection_string: Option<Secret>,
    /// eventhubs `consumer-group`. Default `"$Default"`.
    #[serde(default)]
    pub consumer_group: Option<String>,
    /// eventhubs `start`: where a partition without a checkpoint starts. Default `"-1"`.
    #[serde(default)]
    pub start: Option<String>,
    /// eventhubs `checkpoint-dir`: where each partition's last durable offset is kept.
    #[serde(default)]
    pub checkpoint_dir: Option<String>,
    /// eventhubs `checkpoint-store`: `az://<container>`, where each partition's committed
    /// position and ownership are kept in the Azure SDK's checkpoint-store blob layout (read by
    /// Microsoft's processors and tools). Instead of `checkpoint-dir`.
    #[serde(default)]
    pub checkpoint_store: Option<String>,
    /// eventhubs `checkpoint-interval`. Default `"10s"`.
    #[serde(default, with = "humantime_serde")]
    pub checkpoint_interval: Option<Duration>,
    /// eventhubs `token-ttl`: each SAS token's lifetime, renewed at 80%. Default `"1h"`.
    #[serde(default, with = "humantime_serde")]
    pub token_ttl: Option<Duration>,
    /// eventhubs `owner-level`: the epoch partition links open with (a reader with the same or
    /// a higher one takes the partition), or `"off"`. Default 0.
    #[serde(default)]
    pub owner_level: Option<OwnerLevelSetting>,
    /// eventhubs `on-expired-offset`: `"fail"` or `"earliest"` when a position is older than
    /// the hub's retention. Default `"fail"`.
    #[serde(default)]
    pub on_expired_offset: Option<String>,
    /// eventhubs `eventhubs.*`: the seed's names (`eventhubs.policyname`, `…policykey`,
    /// `…namespace`, `…name`, `…partition.count`, `…consumergroup`, `…checkpoint.dir`,
    /// `…checkpoint.interval`).
    #[serde(default)]
    pub eventhubs: Option<SeedParams>,
    /// files `once`: read the files there at the start, then end (a batch job). Default false.
    #[serde(default)]
    pub once: Option<bool>,
    /// tcp `end-on-close`: the peer closing ends the partition. Default false.
    #[serde(default)]
    pub end_on_close: Option<bool>,
    /// plugin `plugin`: the receiver plugin. Required for plugin.
    #[serde(default)]
    pub plugin: Option<String>,
    /// plugin `params`.
    #[serde(default)]
    pub params: Option<BTreeMap<String, String>>,
    /// `max-record-bytes`, every kind but generator: a record longer than this (a line of
    /// files or tcp without its newline, a message's body, a plugin's record value) is not
    /// put in a block: its bytes go whole to a side object beside the dead letters, its dead
    /// letter names its source position, and the receiver moves on. From 1 byte to `"1GiB"`.
    /// Default `"16MiB"`.
    #[serde(default, deserialize_with = "crate::plugin::manifest::de_opt_bytes")]
    pub max_record_bytes: Option<u64>,
    /// `latency-marker`, any kind: a record whose value starts with this prefix followed by
    /// decimal epoch microseconds is a latency marker; each batch reports, for its markers,
    /// the time from that stamp to the batch's commit. Default: none.
    #[serde(default)]
    pub latency_marker: Option<String>,
}

/// Fails when a key that `kind` does not take is set.
fn only(table: &str, kind: &str, set: &[(&str, bool)], allowed: &[&str]) -> Result<(), String> {
    for (key, is_set) in set {
        if *is_set && !allowed.contains(key) {
            return Err(format!(
                "key `{table}.{key}`: not a key of a `{kind}` {table}; its keys are: kind, {}",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

impl RawSource {
    /// The source this table describes, or which key is wrong.
    pub fn resolve(&self) -> Result<SourceConfig, String> {
        let set = [
            ("name", self.name.is_some()),
            ("partitions", self.partitions.is_some()),
            ("seed", self.seed.is_some()),
            ("vocabulary", self.vocabulary.is_some()),
            ("words-per-line", self.words_per_line.is_some()),
            ("rate", self.rate.is_some()),
            ("limit", self.limit.is_some()),
            ("events", self.events.is_some()),
            ("path", self.path.is_some()),
            ("poll-interval", self.poll_interval.is_some()),
            ("once", self.once.is_some()),
            ("address", self.address.is_some()),
            ("end-on-close", self.end_on_close.is_some()),
            ("plugin", self.plugin.is_some()),
            ("params", self.params.is_some()),
            ("url", self.url.is_some()),
            ("queues", self.queues.is_some()),
            ("credit", self.credit.is_some()),
            ("duplicate-detection", self.duplicate_detection.is_some()),
            ("duplicate-ids", self.duplicate_ids.is_some()),
            ("ca-file", self.ca_file.is_some()),
            ("connection-string", self.connection_string.is_some()),
            ("consumer-group", self.consumer_group.is_some()),
            ("start", self.start.is_some()),
            ("checkpoint-dir", self.checkpoint_dir.is_some()),
            ("checkpoint-interval", self.checkpoint_interval.is_some()),
            ("checkpoint-store", self.checkpoint_store.is_some()),
            ("token-ttl", self.token_ttl.is_some()),
            ("owner-level", self.owner_level.is_some()),
            ("on-expired-offset", self.on_expired_offset.is_some()),
            ("eventhubs", self.eventhubs.is_some()),
            ("max-record-bytes", self.max_record_bytes.is_some()),
        ];
        let max_record_bytes =
            check_max_record_bytes(self.max_record_bytes.unwrap_or(DEFAULT_MAX_RECORD_BYTES))?;
        let name = self.name.clone().unwrap_or_else(default_stream);
        let partitions = self.partitions.unwrap_or(1);
        let required = |key: &str, v: &Option<String>| {
            v.clone()
                .ok_or_else(|| format!("key `source.{key}`: required for a `{}` source", self.kind))
        };
        match self.kind.as_str() {
            "generator" => {
                only(
                    "source",
                    "generator",
                    &set,
                    &[
                        "name",
                        "partitions",
                        "seed",
                        "vocabulary",
                        "words-per-line",
                        "rate",
                        "limit",
                    ],
                )?;
                Ok(SourceConfig::Generator(GeneratorConfig {
                    name,
                    partitions,
                    seed: self.seed.unwrap_or(42),
                    vocabulary: self.vocabulary.unwrap_or(1000),
                    words_per_line: self.words_per_line.unwrap_or(10),
                    rate: self.rate.unwrap_or(1000),
                    limit: self.limit,
                }))
            }
            "nexmark" => {
                only(
                    "source",
                    "nexmark",
                    &set,
                    &["name", "partitions", "seed", "rate", "events"],
                )?;
                if partitions == 0 {
                    return Err(
                        "key `source.partitions`: a `nexmark` source needs at least 1".into(),
                    );
                }
                Ok(SourceConfig::Nexmark(NexmarkConfig {
                    name,
                    partitions,
                    seed: self.seed.unwrap_or(42),
                    rate: self.rate.unwrap_or(0),
                    events: self.events,
                }))
            }
            "files" => {
                only(
                    "source",
                    "files",
                    &set,
                    &[
                        "name",
                        "partitions",
                        "path",
                        "poll-interval",
                        "once",
                        "max-record-bytes",
                    ],
                )?;
                Ok(SourceConfig::Files(FilesConfig {
                    name,
                    partitions,
                    path: required("path", &self.path)?,
                    poll_interval: self.poll_interval.unwrap_or(Duration::from_millis(200)),
                    once: self.once.unwrap_or(false),
                    max_record_bytes,
                }))
            }
            "tcp" => {
                only(
                    "source",
                    "tcp",
                    &set,
                    &[
                        "name",
                        "partitions",
                        "address",
                        "end-on-close",
                        "max-record-bytes",
                    ],
                )?;
                Ok(SourceConfig::Tcp(TcpConfig {
                    name,
                    partitions,
                    address: required("address", &self.address)?,
                    end_on_close: self.end_on_close.unwrap_or(false),
                    max_record_bytes,
                }))
            }
            "plugin" => {
                only(
                    "source",
                    "plugin",
                    &set,
                    &["name", "partitions", "plugin", "params", "max-record-bytes"],
                )?;
                Ok(SourceConfig::Plugin(PluginSourceConfig {
                    name,
                    partitions: self.partitions,
                    plugin: required("plugin", &self.plugin)?,
                    params: self.params.clone().unwrap_or_default(),
                    max_record_bytes,
                }))
            }
            "amqp" => {
                only(
                    "source",
                    "amqp",
                    &set,
                    &[
                        "name",
                        "partitions",
                        "url",
                        "queues",
                        "address",
                        "credit",
                        "duplicate-detection",
                        "duplicate-ids",
                        "max-record-bytes",
                        "ca-file",
                    ],
                )?;
                let mut amqp = resolve_amqp(
                    name,
                    self.url.as_ref(),
                    self.queues.as_ref(),
                    self.address.as_deref(),
                    self.partitions,
                    self.credit,
                    self.wal,
                )?;
                amqp.duplicates = crate::receiver::amqp::dedup::resolve(
                    self.duplicate_detection.as_deref(),
                    self.duplicate_ids,
                    amqp.wal,
                )?;
                amqp.max_record_bytes = max_record_bytes;
                amqp.ca_file = self.ca_file.clone();
                Ok(SourceConfig::Amqp(amqp))
            }
            "eventhubs" => {
                only(
                    "source",
                    "eventhubs",
                    &set,
                    &[
                        "name",
                        "partitions",
                        "connection-string",
                        "consumer-group",
                        "start",
                        "checkpoint-dir",
                        "checkpoint-interval",
                        "checkpoint-store",
                        "credit",
                        "token-ttl",
                        "owner-level",
                        "on-expired-offset",
                        "eventhubs",
                        "max-record-bytes",
                    ],
                )?;
                let mut eventhubs = RawEventHubs {
                    stream: name,
                    partitions: self.partitions,
                    connection_string: self.connection_string.as_ref(),
                    consumer_group: self.consumer_group.as_deref(),
                    start: self.start.as_deref(),
                    checkpoint_dir: self.checkpoint_dir.as_deref(),
                    checkpoint_interval: self.checkpoint_interval,
                    checkpoint_store: self.checkpoint_store.as_deref(),
                    credit: self.credit,
                    wal: self.wal,
                    token_ttl: self.token_ttl,
                    owner_level: self.owner_level.as_ref(),
                    on_expired_offset: self.on_expired_offset.as_deref(),
                    seed: self.eventhubs.as_ref(),
                }
                .resolve()?;
                eventhubs.max_record_bytes = max_record_bytes;
                Ok(SourceConfig::EventHubs(eventhubs))
            }
            other => Err(format!(
                "key `source.kind`: unknown source {other:?}; expected \"generator\", \"nexmark\", \"files\", \"tcp\", \"amqp\", \"eventhubs\" or \"plugin\""
            )),
        }
    }
}

fn default_stream() -> String {
    "input".to_owned()
}

/// `[[sink]]`, as written: `kind` says which sink, and only that kind's keys may be set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSink {
    /// `kind`: `"stdout"`, `"files"`, `"count"`, `"plugin"` or `"amqp"`. Required.
    pub kind: String,
    /// stdout and files `format`: `"lines"` (values), `"kv"` (key TAB value) or `"jsonl"`.
    /// Default `"lines"`. See [`crate::sink::format`].
    #[serde(default)]
    pub format: Option<OutputFormat>,
    /// stdout and files `fields`, with `format = "jsonl"` only: which of `"key"`, `"value"`,
    /// `"timestamp"`, `"headers"` each line holds. Default `["key", "value", "timestamp"]`.
    #[serde(default)]
    pub fields: Option<Vec<Field>>,
    /// stdout `top`: only the N records with the largest numeric value per batch.
    #[serde(default)]
    pub top: Option<usize>,
    /// files `path`: directory or store prefix. Required for files.
    #[serde(default)]
    pub path: Option<String>,
    /// plugin `plugin`: the sink plugin. Required for plugin.
    #[serde(default)]
    pub plugin: Option<String>,
    /// plugin `params`.
    #[serde(default)]
    pub params: Option<BTreeMap<String, String>>,
    /// amqp `url`: `amqp://[user:password@]host[:port]` or `amqps://…`. Required for amqp.
    #[serde(default)]
    pub url: Option<Secret>,
    /// amqp `queues`: the target addresses, in routing order (a record goes to
    /// `queues[fnv1a64(key) % len]`).
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// amqp `address`: one address with `{partition}` in it, made for 0..`partitions`.
    #[serde(default)]
    pub address: Option<String>,
    /// amqp `partitions`: how many queues `address` makes.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// amqp `ca-file`: a PEM file of CA certificates trusted for `amqps://`.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// amqp `id-prefix`: the first part of each message id. Default: the stream's name.
    #[serde(default)]
    pub id_prefix: Option<String>,
    /// `latency-marker`, any kind: a record whose value starts with this prefix followed by
    /// decimal epoch microseconds is a latency marker; each batch reports, for its markers,
    /// the time from that stamp to the batch's commit. Default: none.
    #[serde(default)]
    pub latency_marker: Option<String>,
}

impl RawSink {
    /// The sink this table (the `n`th, from 1) describes, or which key is wrong.
    pub fn resolve(&self) -> Result<SinkConfig, String> {
        let set = [
            ("format", self.format.is_some()),
            ("fields", self.fields.is_some()),
            ("top", self.top.is_some()),
            ("path", self.path.is_some()),
            ("plugin", self.plugin.is_some()),
            ("params", self.params.is_some()),
            ("url", self.url.is_some()),
            ("queues", self.queues.is_some()),
            ("address", self.address.is_some()),
            ("partitions", self.partitions.is_some()),
            ("ca-file", self.ca_file.is_some()),
            ("id-prefix", self.id_prefix.is_some()),
        ];
        match self.kind.as_str() {
            "amqp" => {
                only(
                    "sink",
                    "amqp",
                    &set,
                    &[
                        "url",
                        "queues",
                        "address",
                        "partitions",
                        "ca-file",
                        "id-prefix",
                    ],
                )?;
                Ok(SinkConfig::Amqp(crate::sink::amqp::resolve(
                    self.url.as_ref(),
                    self.queues.as_ref(),
                    self.address.as_deref(),
                    self.partitions,
                    self.ca_file.clone(),
                    self.id_prefix.clone(),
                )?))
            }
            "stdout" => {
                only("sink", "stdout", &set, &["format", "fields", "top"])?;
                let format = self.format()?;
                Ok(SinkConfig::Stdout(StdoutConfig {
                    format,
                    top: self.top,
                }))
            }
            "files" => {
                only("sink", "files", &set, &["format", "fields", "path"])?;
                let format = self.format()?;
                Ok(SinkConfig::Files(FilesSinkConfig {
                    path: self
                        .path
                        .clone()
                        .ok_or("key `sink.path`: required for a `files` sink")?,
                    format,
                }))
            }
            "count" => {
                only("sink", "count", &set, &[])?;
                Ok(SinkConfig::Count(CountConfig {}))
            }
            "plugin" => {
                only("sink", "plugin", &set, &["plugin", "params"])?;
                Ok(SinkConfig::Plugin(PluginSinkConfig {
                    plugin: self
                        .plugin
                        .clone()
                        .ok_or("key `sink.plugin`: required for a `plugin` sink")?,
                    params: self.params.clone().unwrap_or_default(),
                }))
            }
            other => Err(format!(
                "key `sink.kind`: unknown sink {other:?}; expected \"stdout\", \"files\", \"count\", \"plugin\" or \"amqp\""
            )),
        }
    }
}

impl RawSink {
    /// `format` and `fields`, checked together.
    fn format(&self) -> Result<Format, String> {
        let kind = self.format.unwrap_or_default();
        let fields = match &self.fields {
            None => Fields::DEFAULT,
            Some(_) if kind != OutputFormat::Jsonl => {
                return Err(format!(
                    "key `sink.fields`: only for format = \"jsonl\"; this sink's format is \"{}\"",
                    kind.name()
                ));
            }
            Some(list) if list.is_empty() => {
                return Err("key `sink.fields`: is empty; give some of \"key\", \"value\", \"timestamp\", \"headers\"".to_owned());
            }
            Some(list) => Fields::of(list),
        };
        Ok(Format { kind, fields })
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckpointConfig {
    /// `path`: the directory or store prefix (path, `file://`, `az://`, `s3://`). Default
    /// `checkpoints` beside the pipeline file.
    #[serde(default = "default_checkpoint_path")]
    pub path: String,
    /// `enabled`: keep the checkpoint log (default true). Without it a run starts over every
    /// time and nothing is exactly once; for benchmarks and throwaway runs.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_checkpoint_path() -> String {
    "checkpoints".to_owned()
}

fn yes() -> bool {
    true
}

/// `[dead-letter]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeadLetterConfig {
    /// `path`: the directory or store prefix for rejected records. Required.
    pub path: String,
}

impl PipelineFile {
    /// Reads and checks a pipeline file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            message: format!("cannot be read: {e}"),
            fault: Fault::User,
        })?;
        Self::parse(&text, path)
    }

    /// Parses pipeline text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError {
            path: path.to_owned(),
            message,
            fault: Fault::User,
        };
        // Check the version first, so a future file gets "version" rather than a key error.
        if let Ok(table) = text.parse::<toml::Table>() {
            match table.get("version") {
                None => {
                    return Err(bad(
                        "key `version`: missing; this host reads `version = 1`".to_owned()
                    ));
                }
                Some(toml::Value::Integer(v)) if *v != PIPELINE_VERSION as i64 => {
                    return Err(bad(format!(
                        "key `version`: this host reads pipeline version {PIPELINE_VERSION}, the file says {v}"
                    )));
                }
                _ => {}
            }
        }
        let mut file: PipelineFile =
            toml::from_str(text).map_err(|e| bad(toml_message(&e, text)))?;
        let with_line = |message: String| {
            // Point at the key's line when the message names one.
            let key = message
                .strip_prefix("key `")
                .and_then(|r| r.split('`').next())
                .and_then(|k| k.rsplit('.').next())
                .unwrap_or_default()
                .to_owned();
            match line_of_key(text, &key) {
                Some(line) if !key.is_empty() => bad(format!("line {line}: {message}")),
                _ => bad(message),
            }
        };
        file.source = file.raw_source.resolve().map_err(with_line)?;
        file.sink = file
            .raw_sinks
            .iter()
            .map(RawSink::resolve)
            .collect::<Result<_, _>>()
            .map_err(with_line)?;
        file.check().map_err(bad)?;
        Ok(file)
    }

    fn check(&self) -> Result<(), String> {
        if self.batch_interval < Duration::from_millis(50) {
            return Err(format!(
                "key `batch-interval`: {} is below the minimum of 50ms",
                humantime::format_duration(self.batch_interval)
            ));
        }
        if self.block_interval.is_zero() || self.block_interval > self.batch_interval {
            return Err(format!(
                "key `block-interval`: {} must be above zero and at most the batch interval ({})",
                humantime::format_duration(self.block_interval),
                humantime::format_duration(self.batch_interval)
            ));
        }
        if self.source.partitions() == 0 || self.source.partitions() > 4096 {
            return Err("key `source.partitions`: must be between 1 and 4096".to_owned());
        }
        if self.workers == Some(0) {
            return Err("key `workers`: must be at least 1".to_owned());
        }
        if self.sink.is_empty() {
            return Err("no `[[sink]]`: a pipeline needs at least one sink".to_owned());
        }
        if self.swap.poll_interval < Duration::from_millis(10) {
            return Err(format!(
                "key `swap.poll-interval`: {} is below the minimum of 10ms",
                humantime::format_duration(self.swap.poll_interval)
            ));
        }
        if let Some(ha) = &self.ha {
            ha.check()?;
        }
        if self.memory_budget < 1 << 20 {
            return Err("key `memory-budget`: must be at least 1MiB".to_owned());
        }
        for (i, step) in self.transform.iter().enumerate() {
            step.step(i + 1, self.batch_interval)?;
        }
        Ok(())
    }

    /// The checked steps.
    pub fn steps(&self) -> Vec<Step> {
        self.transform
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.step(i + 1, self.batch_interval).ok())
            .collect()
    }
}

/// The line (from 1) where `key = …` is first set, if anywhere.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
[source]
kind = "generator"
[[sink]]
kind = "stdout"
"#;

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let f = PipelineFile::parse(MINIMAL, Path::new("p.toml")).unwrap();
        assert_eq!(f.batch_interval, Duration::from_secs(1));
        assert_eq!(f.block_interval, Duration::from_millis(200));
        assert_eq!(f.source.partitions(), 1);
        assert_eq!(f.memory_budget, 64 << 20);
        assert!(matches!(f.source, SourceConfig::Generator(ref g) if g.seed == 42));
    }

    #[test]
    fn an_unknown_key_is_refused_with_file_key_and_line() {
        let text = MINIMAL.replace("kind = \"stdout\"", "kind = \"stdout\"\ncolour = \"red\"");
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("p.toml") && msg.contains("colour") && msg.contains("line 7"),
            "{msg}"
        );
    }

    #[test]
    fn a_wrong_type_is_refused_naming_the_key() {
        let text = MINIMAL.replace(
            "kind = \"generator\"",
            "kind = \"generator\"\nrate = \"fast\"",
        );
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 5"), "{msg}");
    }

    #[test]
    fn a_key_of_another_kind_is_refused_naming_it_and_the_kinds_keys() {
        let text = MINIMAL.replace(
            "kind = \"generator\"",
            "kind = \"tcp\"\naddress = \"127.0.0.1:1\"\nrate = 5",
        );
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("source.rate") && msg.contains("line 6") && msg.contains("address"),
            "{msg}"
        );
    }

    #[test]
    fn max_record_bytes_takes_a_size_and_refuses_zero_or_more_than_a_gibibyte() {
        let with = |v: &str| {
            let text = MINIMAL.replace(
                "kind = \"generator\"",
                &format!("kind = \"tcp\"\naddress = \"127.0.0.1:1\"\nmax-record-bytes = {v}"),
            );
            PipelineFile::parse(&text, Path::new("p.toml"))
        };
        match with("\"64MiB\"").unwrap().source {
            SourceConfig::Tcp(t) => assert_eq!(t.max_record_bytes, 64 << 20),
            other => panic!("{other:?}"),
        }
        for bad in ["0", "\"2GiB\""] {
            let msg = with(bad).unwrap_err().to_string();
            assert!(
                msg.contains("source.max-record-bytes") && msg.contains("1GiB"),
                "{msg}"
            );
        }
        let tcp = MINIMAL.replace(
            "kind = \"generator\"",
            "kind = \"tcp\"\naddress = \"127.0.0.1:1\"",
        );
        match PipelineFile::parse(&tcp, Path::new("p.toml"))
            .unwrap()
            .source
        {
            SourceConfig::Tcp(t) => assert_eq!(t.max_record_bytes, 16 << 20, "the default"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_nexmark_source_takes_its_keys_and_refuses_another_kinds_naming_it() {
        let with = |keys: &str| {
            let text = MINIMAL.replace(
                "kind = \"generator\"",
                &format!("kind = \"nexmark\"\n{keys}"),
            );
            PipelineFile::parse(&text, Path::new("p.toml")).map_err(|e| e.to_string())
        };
        match with("partitions = 3\nrate = 500\nevents = 1000\nseed = 7")
            .unwrap()
            .source
        {
            SourceConfig::Nexmark(n) => {
                assert_eq!(
                    (n.partitions, n.rate, n.events, n.seed),
                    (3, 500, Some(1000), 7)
                )
            }
            other => panic!("{other:?}"),
        }
        match with("").unwrap().source {
            SourceConfig::Nexmark(n) => assert_eq!((n.partitions, n.rate, n.events), (1, 0, None)),
            other => panic!("{other:?}"),
        }
        let msg = with("limit = 5").unwrap_err();
        assert!(
            msg.contains("source.limit") && msg.contains("events"),
            "{msg}"
        );
        let msg = with("partitions = 0").unwrap_err();
        assert!(msg.contains("source.partitions"), "{msg}");
    }

    #[test]
    fn steps_are_checked_with_their_number() {
        let text = format!("{MINIMAL}\n[[transform]]\nbuiltin = \"sort\"\n");
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("number 1") && msg.contains("sort"), "{msg}");
    }

    #[test]
    fn a_future_version_is_refused_as_such() {
        let text = MINIMAL.replace("version = 1", "version = 2");
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("version") && msg.contains('2'), "{msg}");
    }

    #[test]
    fn jsonl_fields_are_read_and_refused_with_another_format_or_when_empty() {
        let with = |extra: &str| {
            let text = MINIMAL.replace("kind = \"stdout\"", &format!("kind = \"stdout\"\n{extra}"));
            PipelineFile::parse(&text, Path::new("p.toml")).map_err(|e| e.to_string())
        };
        let f = with("format = \"jsonl\"\nfields = [\"value\", \"headers\"]").unwrap();
        let SinkConfig::Stdout(s) = &f.sink[0] else {
            panic!("a stdout sink")
        };
        assert_eq!(s.format.fields, Fields::of(&[Field::Value, Field::Headers]));
        let msg = with("fields = [\"key\"]").unwrap_err();
        assert!(
            msg.contains("sink.fields") && msg.contains("\"lines\""),
            "{msg}"
        );
        let msg = with("format = \"jsonl\"\nfields = []").unwrap_err();
        assert!(
            msg.contains("sink.fields") && msg.contains("empty"),
            "{msg}"
        );
        let msg = with("format = \"jsonl\"\nfields = [\"offset\"]").unwrap_err();
        assert!(msg.contains("offset") && msg.contains("line 8"), "{msg}");
    }

    #[test]
    fn a_batch_interval_below_50ms_is_refused() {
        let text = format!("batch-interval = \"10ms\"\nblock-interval = \"5ms\"\n{MINIMAL}");
        let msg = PipelineFile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("batch-interval"), "{msg}");
    }
}
