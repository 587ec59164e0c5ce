//! `[source]` as written ([`RawSource`]): each kind's keys, checked, and the source config
//! they build.

use super::*;

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
    /// tcp `addresses`: one `host:port` per partition (partition `p` connects to entry `p`),
    /// instead of `address`; `partitions` defaults to how many there are.
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
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
    /// `wal-fsync`, with `wal = true` on a local checkpoint directory: whether each log
    /// segment is synced to the disk before its records are acknowledged. Off, a logged
    /// block survives a crash or kill of sluice but not a power cut or a crash of the
    /// machine (what Spark's receiver log gives on a local checkpoint directory). Default true.
    #[serde(default)]
    pub wal_fsync: Option<bool>,
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
    /// files `file-writes`: `"atomic"` (the store shows a file only whole: an object store, or
    /// writers that rename into place; a file is read as soon as it is listed) or `"in-place"`
    /// (writers write where the source lists; a file is read once two listings show it
    /// unchanged). Default `"atomic"`.
    #[serde(default)]
    pub file_writes: Option<String>,
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

/// tcp: `address` (every partition connects to it) or `addresses` (one per partition), and
/// the partition count.
fn tcp_addresses(raw: &RawSource) -> Result<(Vec<String>, u32), String> {
    match (&raw.address, &raw.addresses) {
        (Some(_), Some(_)) => Err(
            "key `source.addresses`: set either `address` (every partition connects to it) or `addresses` (one per partition), not both"
                .into(),
        ),
        (Some(a), None) => Ok((vec![a.clone()], raw.partitions.unwrap_or(1))),
        (None, Some(list)) if list.is_empty() => {
            Err("key `source.addresses`: needs at least one host:port".into())
        }
        (None, Some(list)) => match raw.partitions {
            Some(p) if p as usize != list.len() => Err(format!(
                "key `source.partitions`: {p}, but `source.addresses` names {} (one partition per address; leave `partitions` out)",
                list.len()
            )),
            _ => Ok((list.clone(), list.len() as u32)),
        },
        (None, None) => Err(
            "key `source.address`: required for a `tcp` source (or `addresses`, one per partition)"
                .into(),
        ),
    }
}

/// Fails when a key that `kind` does not take is set.
pub(super) fn only(
    table: &str,
    kind: &str,
    set: &[(&str, bool)],
    allowed: &[&str],
) -> Result<(), String> {
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
            ("file-writes", self.file_writes.is_some()),
            ("address", self.address.is_some()),
            ("addresses", self.addresses.is_some()),
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
                        "file-writes",
                        "max-record-bytes",
                    ],
                )?;
                let in_place = match self.file_writes.as_deref() {
                    None | Some("atomic") => false,
                    Some("in-place") => true,
                    Some(other) => {
                        return Err(format!(
                            "key `source.file-writes`: {other:?}; expected \"atomic\" (files appear whole: an object store, or writers that rename into place) or \"in-place\" (writers write where the source lists)"
                        ));
                    }
                };
                Ok(SourceConfig::Files(FilesConfig {
                    name,
                    partitions,
                    path: required("path", &self.path)?,
                    poll_interval: self.poll_interval.unwrap_or(Duration::from_millis(200)),
                    once: self.once.unwrap_or(false),
                    max_record_bytes,
                    in_place,
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
                        "addresses",
                        "end-on-close",
                        "max-record-bytes",
                    ],
                )?;
                let (addresses, partitions) = tcp_addresses(self)?;
                Ok(SourceConfig::Tcp(TcpConfig {
                    name,
                    partitions,
                    addresses,
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

pub(super) fn default_stream() -> String {
    "input".to_owned()
}
