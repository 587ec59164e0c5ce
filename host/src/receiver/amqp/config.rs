//! `[source]` of kinds `amqp` (any AMQP 1.0 broker: RabbitMQ, ActiveMQ, Qpid) and `eventhubs`
//! (Azure Event Hubs over AMQP 1.0), checked.
//!
//! ```toml
//! [source]
//! kind = "amqp"
//! url = "amqp://guest:guest@127.0.0.1:5672"   # amqps:// for TLS; no user: SASL ANONYMOUS
//! queues = ["/queue/a", "/queue/b"]           # one link, so one partition, each
//! # or: address = "/queue/a" and partitions = 2 (competing links on one queue), or an address
//! #     with "{partition}" in it, made per partition
//! credit = 2000                               # link credit window per partition
//! wal = false                                 # reliable mode: accept only what is durable
//! ca-file = "ca.pem"                          # amqps: also trust this CA (see `super::tls`)
//!
//! [source]
//! kind = "eventhubs"
//! connection-string = "Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=HUB"
//! partitions = 4
//! consumer-group = "$Default"
//! start = "-1"            # "-1" (earliest), "@latest", "offset:N", "sequence:N", "enqueued:RFC3339"
//! checkpoint-dir = "ckpt" # the last durable offset per partition; a restart resumes there
//! checkpoint-interval = "10s"
//! owner-level = 0         # the epoch receivers open with; "off": none
//! on-expired-offset = "fail" # or "earliest": a position older than the retention
//! # partitions left out: asked from the hub's $management node
//! # or the seed's names, as TOML dotted keys:
//! # eventhubs.policyname, eventhubs.policykey, eventhubs.namespace, eventhubs.name,
//! # eventhubs.partition.count, eventhubs.consumergroup, eventhubs.checkpoint.dir,
//! # eventhubs.checkpoint.interval (seconds)
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

/// The default link credit window per partition (measured: see the README's AMQP figures).
pub const DEFAULT_CREDIT: u32 = 2000;

/// Where an AMQP connection goes and how it authenticates. Prints without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpEndpoint {
    /// `amqps`: TLS.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (default 5672, or 5671 with TLS).
    pub port: u16,
    /// SASL PLAIN user; `None` is SASL ANONYMOUS.
    pub user: Option<String>,
    /// SASL PLAIN password.
    pub password: Secret,
}

impl AmqpEndpoint {
    /// Parses `amqp://[user[:password]@]host[:port]` or `amqps://…`; `key` is for messages.
    /// The message never quotes the URL (it may hold a password).
    pub fn parse(spec: &str, key: &str) -> Result<AmqpEndpoint, String> {
        let url = url::Url::parse(spec.trim()).map_err(|e| {
            format!("key `{key}`: not a URL ({e}); expected amqp://[user:password@]host[:port] or amqps://…")
        })?;
        let tls = match url.scheme() {
            "amqp" => false,
            "amqps" => true,
            other => {
                return Err(format!(
                    "key `{key}`: scheme {other:?} is not amqp or amqps"
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("key `{key}`: the URL names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !matches!(url.path(), "" | "/") {
            return Err(format!(
                "key `{key}`: the URL has a path ({:?}); give addresses with `queues` or `address`",
                url.path()
            ));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = (!url.username().is_empty()).then(|| decode(url.username()));
        Ok(AmqpEndpoint {
            tls,
            port: url.port().unwrap_or(if tls { 5671 } else { 5672 }),
            host,
            user,
            password: Secret::new(url.password().map(decode).unwrap_or_default()),
        })
    }
}

impl fmt::Display for AmqpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        match &self.user {
            Some(u) => write!(f, "{scheme}://{u}:***@{}:{}", self.host, self.port),
            None => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Debug for AmqpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `kind = "amqp"`, checked.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// The stream's name.
    pub name: String,
    /// Partitions: one link each.
    pub partitions: u32,
    /// The broker.
    pub endpoint: AmqpEndpoint,
    /// Each partition's source address.
    pub addresses: Vec<String>,
    /// Link credit window per partition.
    pub credit: u32,
    /// Reliable mode: deliveries are accepted only once durable.
    pub wal: bool,
    /// Duplicate detection by message id (`duplicate-detection`, `duplicate-ids`; see
    /// [`super::dedup`]): on by default in reliable mode.
    pub duplicates: Option<crate::dedup::Settings>,
    /// `max-record-bytes`: a longer message body is set aside (see `receiver::oversize`).
    pub max_record_bytes: u64,
    /// Where bodies past the limit go; set when the source is built.
    pub limit: Option<crate::receiver::oversize::RecordLimit>,
    /// `ca-file`: a PEM file of CA certificates to trust for `amqps`, as written (relative to
    /// the pipeline file). Default: none (the system's roots only, see [`super::tls`]).
    pub ca_file: Option<std::path::PathBuf>,
    /// Its certificates, read when the source is built.
    pub ca: super::tls::ExtraRoots,
}

/// Where an Event Hubs partition starts when it has no checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// `"-1"` or `"earliest"`: the oldest retained event.
    Earliest,
    /// `"@latest"` or `"latest"`: only events enqueued from now on.
    Latest,
    /// `"offset:N"`: after the event at this offset.
    Offset(String),
    /// `"sequence:N"`: after the event with this sequence number.
    Sequence(i64),
    /// `"enqueued:2026-11-23T10:00:00Z"`: events enqueued after this time (ms since the epoch).
    Enqueued(i64),
}

impl StartPosition {
    /// Parses the `start` key.
    pub fn parse(s: &str) -> Result<StartPosition, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "key `source.start`: {s:?} is not a start position; expected \"-1\" (earliest), \"@latest\", \"offset:N\", \"sequence:N\" or \"enqueued:RFC3339-time\""
            )
        };
        Ok(match s {
            "-1" | "earliest" => StartPosition::Earliest,
            "@latest" | "latest" => StartPosition::Latest,
            _ => {
                if let Some(o) = s.strip_prefix("offset:") {
                    if o.is_empty() || !o.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad());
                    }
                    StartPosition::Offset(o.to_owned())
                } else if let Some(n) = s.strip_prefix("sequence:") {
                    StartPosition::Sequence(n.parse().map_err(|_| bad())?)
                } else if let Some(t) = s.strip_prefix("enqueued:") {
                    let t = humantime::parse_rfc3339_weak(t).map_err(|_| bad())?;
                    let ms = t
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_err(|_| bad())?
                        .as_millis() as i64;
                    StartPosition::Enqueued(ms)
                } else {
                    return Err(bad());
                }
            }
        })
    }
}

/// What a partition does when the position it asks for is older than the hub's retention
/// (`com.microsoft:argument-out-of-range`): `on-expired-offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredOffset {
    /// `"fail"` (the default): stop the pipeline with a message; nothing is skipped silently.
    Fail,
    /// `"earliest"`: log what was lost and go on from the oldest retained event.
    Earliest,
}

/// The `owner-level` key as written: an epoch (0 or more) or `"off"`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum OwnerLevelSetting {
    /// An epoch.
    Level(i64),
    /// `"off"`.
    Text(String),
}

/// The default owner level (epoch) receivers open with.
pub const DEFAULT_OWNER_LEVEL: i64 = 0;

/// `kind = "eventhubs"`, checked.
#[derive(Debug, Clone)]
pub struct EventHubsConfig {
    /// The stream's name.
    pub name: String,
    /// Partitions, numbered 0..N as Event Hubs does; `None`: asked from the hub's
    /// `$management` node when the source is built.
    pub partitions: Option<u32>,
    /// `owner-level`: the epoch (`com.microsoft:epoch`) each partition link opens with, so a
    /// reader with the same or a higher one takes the partition from this one and a lower one
    /// is refused; `None` (`"off"`): links open without one. Default 0.
    pub owner_level: Option<i64>,
    /// `on-expired-offset`: see [`ExpiredOffset`]. Default `"fail"`.
    pub on_expired_offset: ExpiredOffset,
    /// The namespace's AMQP endpoint (SASL ANONYMOUS; authorization is by CBS token).
    pub endpoint: AmqpEndpoint,
    /// The event hub.
    pub hub: String,
    /// The shared access policy's name.
    pub key_name: String,
    /// The shared access policy's key.
    pub key: Secret,
    /// The consumer group.
    pub consumer_group: String,
    /// Where a partition without a checkpoint starts.
    pub start: StartPosition,
    /// Where the last durable offset of each partition is kept; `None`: nowhere.
    pub checkpoint_dir: Option<String>,
    /// How often it is written (when it moved).
    pub checkpoint_interval: Duration,
    /// `checkpoint-store`: the Azure SDK's checkpoint store (`az://<container>`), in place of
    /// `checkpoint-dir` (see `azure_checkpoints`).
    pub checkpoint_store: Option<String>,
    /// Link credit window per partition.
    pub credit: u32,
    /// Reliable mode.
    pub wal: bool,
    /// Lifetime of each SAS token; renewed at 80% of it.
    pub token_ttl: Duration,
    /// `max-record-bytes`: a longer event body is set aside (see `receiver::oversize`).
    pub max_record_bytes: u64,
}

impl EventHubsConfig {
    /// The address of partition `n`'s link: `<hub>/ConsumerGroups/<cg>/Partitions/<n>`.
    pub fn partition_address(&self, n: u32) -> String {
        format!(
            "{}/ConsumerGroups/{}/Partitions/{n}",
            self.hub, self.consumer_group
        )
    }

    /// The resource the SAS token is for: `sb://<host>/<hub>`.
    pub fn resource_uri(&self) -> String {
        format!("sb://{}/{}", self.endpoint.host, self.hub)
    }
}

/// The parts of an Event Hubs connection string. Prints without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The namespace's endpoint.
    pub endpoint: AmqpEndpoint,
    /// `SharedAccessKeyName`.
    pub key_name: String,
    /// `SharedAccessKey`.
    pub key: Secret,
    /// `EntityPath`: the event hub, when the string is for one.
    pub entity_path: Option<String>,
}

impl ConnectionString {
    /// Parses `Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…`
    /// (`UseDevelopmentEmulator=true`: the local emulator, plain AMQP on port 5672). Messages
    /// never quote the string.
    pub fn parse(s: &str) -> Result<ConnectionString, String> {
        const KEY: &str = "key `source.connection-string`";
        let (mut endpoint, mut key_name, mut key, mut entity, mut emulator) =
            (None, None, None, None, false);
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!(
                    "{KEY}: a part has no `=`; expected Endpoint=…;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]"
                ));
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(v.trim().to_owned()),
                "sharedaccesskeyname" => key_name = Some(v.trim().to_owned()),
                "sharedaccesskey" => key = Some(Secret::new(v.trim())),
                "entitypath" => entity = Some(v.trim().to_owned()),
                "usedevelopmentemulator" => emulator = v.trim().eq_ignore_ascii_case("true"),
                other => {
                    return Err(format!(
                        "{KEY}: unknown part `{other}`; expected Endpoint, SharedAccessKeyName, SharedAccessKey, EntityPath or UseDevelopmentEmulator"
                    ));
                }
            }
        }
        let endpoint = endpoint.ok_or(format!("{KEY}: no Endpoint=sb://…"))?;
        let url =
            url::Url::parse(&endpoint).map_err(|e| format!("{KEY}: Endpoint is not a URL: {e}"))?;
        if url.scheme() != "sb" {
            return Err(format!(
                "{KEY}: Endpoint's scheme is {:?}; expected sb://",
                url.scheme()
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(format!("{KEY}: Endpoint names no host"))?
            .to_owned();
        let tls = !emulator;
        Ok(ConnectionString {
            endpoint: AmqpEndpoint {
                tls,
                port: url.port().unwrap_or(if tls { 5671 } else { 5672 }),
                host,
                user: None,
                password: Secret::default(),
            },
            key_name: key_name
                .filter(|k| !k.is_empty())
                .ok_or(format!("{KEY}: no SharedAccessKeyName"))?,
            key: key
                .filter(|k| !k.is_empty())
                .ok_or(format!("{KEY}: no SharedAccessKey"))?,
            entity_path: entity.filter(|e| !e.is_empty()),
        })
    }
}

/// The seed's Event Hubs parameters, as TOML dotted keys under `eventhubs.`
/// (`eventhubs.policyname = "…"`, `eventhubs.partition.count = 4`, …).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedParams {
    /// `eventhubs.policyname`: the shared access policy.
    #[serde(default)]
    pub policyname: Option<String>,
    /// `eventhubs.policykey`: its key.
    #[serde(default)]
    pub policykey: Option<Secret>,
    /// `eventhubs.namespace`: `NS` (for `NS.servicebus.windows.net`) or a full host name.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `eventhubs.name`: the event hub.
    #[serde(default)]
    pub name: Option<String>,
    /// `eventhubs.partition.count`.
    #[serde(default)]
    pub partition: Option<SeedPartition>,
    /// `eventhubs.consumergroup`.
    #[serde(default)]
    pub consumergroup: Option<String>,
    /// `eventhubs.checkpoint.dir` and `eventhubs.checkpoint.interval` (seconds).
    #[serde(default)]
    pub checkpoint: Option<SeedCheckpoint>,
}

/// `eventhubs.partition.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPartition {
    /// `eventhubs.partition.count`.
    pub count: u32,
}

/// `eventhubs.checkpoint.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedCheckpoint {
    /// `eventhubs.checkpoint.dir`.
    #[serde(default)]
    pub dir: Option<String>,
    /// `eventhubs.checkpoint.interval`: seconds, or a duration such as `"10s"`.
    #[serde(default)]
    pub interval: Option<SecondsOrDuration>,
}

/// A number of seconds, or a humantime duration.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SecondsOrDuration {
    /// Seconds.
    Seconds(u64),
    /// `"10s"`, `"1m"`, or a plain number of seconds as text.
    Text(String),
}

impl SecondsOrDuration {
    fn duration(&self, key: &str) -> Result<Duration, String> {
        match self {
            SecondsOrDuration::Seconds(s) => Ok(Duration::from_secs(*s)),
            SecondsOrDuration::Text(t) => match t.trim().parse::<u64>() {
                Ok(s) => Ok(Duration::from_secs(s)),
                Err(_) => humantime::parse_duration(t.trim())
                    .map_err(|e| format!("key `{key}`: {t:?} is not a duration: {e}")),
            },
        }
    }
}

/// The `eventhubs` keys of `[source]`, as written.
#[derive(Debug, Default)]
pub struct RawEventHubs<'a> {
    /// `name`: the stream.
    pub stream: String,
    /// `partitions`.
    pub partitions: Option<u32>,
    /// `connection-string`.
    pub connection_string: Option<&'a Secret>,
    /// `consumer-group`.
    pub consumer_group: Option<&'a str>,
    /// `start`.
    pub start: Option<&'a str>,
    /// `checkpoint-dir`.
    pub checkpoint_dir: Option<&'a str>,
    /// `checkpoint-store`.
    pub checkpoint_store: Option<&'a str>,
    /// `checkpoint-interval`.
    pub checkpoint_interval: Option<Duration>,
    /// `credit`.
    pub credit: Option<u32>,
    /// `wal`.
    pub wal: Option<bool>,
    /// `token-ttl`.
    pub token_ttl: Option<Duration>,
    /// `owner-level`.
    pub owner_level: Option<&'a OwnerLevelSetting>,
    /// `on-expired-offset`.
    pub on_expired_offset: Option<&'a str>,
    /// `eventhubs.*`.
    pub seed: Option<&'a SeedParams>,
}

fn one_of<T: Clone>(a: Option<T>, ka: &str, b: Option<T>, kb: &str) -> Result<Option<T>, String> {
    match (a, b) {
        (Some(_), Some(_)) => Err(format!(
            "key `source.{ka}`: also given as `{kb}`; give one of them"
        )),
        (a, b) => Ok(a.or(b)),
    }
}

impl RawEventHubs<'_> {
    /// The checked source.
    pub fn resolve(&self) -> Result<EventHubsConfig, String> {
        let none = SeedParams::default();
        let seed = self.seed.unwrap_or(&none);
        let (endpoint, key_name, key, hub) = match self.connection_string {
            Some(cs) => {
                for (set, k) in [
                    (seed.policyname.is_some(), "policyname"),
                    (seed.policykey.is_some(), "policykey"),
                    (seed.namespace.is_some(), "namespace"),
                ] {
                    if set {
                        return Err(format!(
                            "key `source.eventhubs.{k}`: also given by `connection-string`; give one of them"
                        ));
                    }
                }
                let cs = ConnectionString::parse(cs.expose())?;
                let hub = match (&cs.entity_path, &seed.name) {
                    (Some(_), Some(_)) => {
                        return Err(
                            "key `source.eventhubs.name`: the connection string's EntityPath names the hub already; give one of them".to_owned()
                        );
                    }
                    (Some(e), None) | (None, Some(e)) => e.clone(),
                    (None, None) => {
                        return Err("key `source.connection-string`: has no EntityPath; add `;EntityPath=HUB` or set `eventhubs.name`".to_owned());
                    }
                };
                (cs.endpoint, cs.key_name, cs.key, hub)
            }
            None => {
                let missing = |k: &str| {
                    format!(
                        "key `source.eventhubs.{k}`: required for an `eventhubs` source without `connection-string`"
                    )
                };
                let ns = seed.namespace.clone().ok_or_else(|| missing("namespace"))?;
                let host = if ns.contains('.') {
                    ns
                } else {
                    format!("{ns}.servicebus.windows.net")
                };
                (
                    AmqpEndpoint {
                        tls: true,
                        host,
                        port: 5671,
                        user: None,
                        password: Secret::default(),
                    },
                    seed.policyname
                        .clone()
                        .ok_or_else(|| missing("policyname"))?,
                    seed.policykey.clone().ok_or_else(|| missing("policykey"))?,
                    seed.name.clone().ok_or_else(|| missing("name"))?,
                )
            }
        };
        let partitions = one_of(
            self.partitions,
            "partitions",
            seed.partition.as_ref().map(|p| p.count),
            "eventhubs.partition.count",
        )?;
        if partitions == Some(0) {
            return Err("key `source.partitions`: must be between 1 and 4096 (or left out: asked from the hub)".to_owned());
        }
        let owner_level = match self.owner_level {
            None => Some(DEFAULT_OWNER_LEVEL),
            Some(OwnerLevelSetting::Level(n)) if *n >= 0 => Some(*n),
            Some(OwnerLevelSetting::Text(t)) if t == "off" => None,
            Some(other) => {
                return Err(format!(
                    "key `source.owner-level`: {other:?} is not an owner level; give an integer of 0 or more (default {DEFAULT_OWNER_LEVEL}) or \"off\""
                ));
            }
        };
        let on_expired_offset = match self.on_expired_offset.unwrap_or("fail") {
            "fail" => ExpiredOffset::Fail,
            "earliest" => ExpiredOffset::Earliest,
            other => {
                return Err(format!(
                    "key `source.on-expired-offset`: {other:?}; expected \"fail\" (default) or \"earliest\""
                ));
            }
        };
        let consumer_group = one_of(
            self.consumer_group.map(str::to_owned),
            "consumer-group",
            seed.consumergroup.clone(),
            "eventhubs.consumergroup",
        )?
        .unwrap_or_else(|| "$Default".to_owned());
        if consumer_group.is_empty() || consumer_group.contains('/') {
            return Err(format!(
                "key `source.consumer-group`: {consumer_group:?} is not a consumer group name"
            ));
        }
        let ck = seed.checkpoint.as_ref();
        let checkpoint_dir = one_of(
            self.checkpoint_dir.map(str::to_owned),
            "checkpoint-dir",
            ck.and_then(|c| c.dir.clone()),
            "eventhubs.checkpoint.dir",
        )?;
        if let (Some(_), Some(_)) = (&checkpoint_dir, self.checkpoint_store) {
            return Err("key `source.checkpoint-store`: also given as `checkpoint-dir`; give one of them (checkpoint-store keeps the checkpoints in the Azure SDK's blob layout)".to_owned());
        }
        let seed_interval = match ck.and_then(|c| c.interval.as_ref()) {
            Some(i) => Some(i.duration("source.eventhubs.checkpoint.interval")?),
            None => None,
        };
        let checkpoint_interval = one_of(
            self.checkpoint_interval,
            "checkpoint-interval",
            seed_interval,
            "eventhubs.checkpoint.interval",
        )?
        .unwrap_or(Duration::from_secs(10));
        if checkpoint_interval.is_zero() {
            return Err("key `source.checkpoint-interval`: must be above zero".to_owned());
        }
        let token_ttl = self.token_ttl.unwrap_or(Duration::from_secs(3600));
        if token_ttl < Duration::from_secs(2) {
            return Err("key `source.token-ttl`: must be at least 2s".to_owned());
        }
        if hub.is_empty() || hub.contains('/') {
            return Err(format!("the event hub name {hub:?} is not valid"));
        }
        Ok(EventHubsConfig {
            name: self.stream.clone(),
            partitions,
            owner_level,
            on_expired_offset,
            endpoint,
            hub,
            key_name,
            key,
            consumer_group,
            start: StartPosition::parse(self.start.unwrap_or("-1"))?,
            checkpoint_dir,
            checkpoint_interval,
            checkpoint_store: self.checkpoint_store.map(str::to_owned),
            credit: check_credit(self.credit)?,
            wal: self.wal.unwrap_or(false),
            token_ttl,
            max_record_bytes: crate::receiver::oversize::DEFAULT_MAX_RECORD_BYTES,
        })
    }
}

/// The `credit` key, checked.
pub fn check_credit(credit: Option<u32>) -> Result<u32, String> {
    match credit {
        None => Ok(DEFAULT_CREDIT),
        Some(c) if (2..=1_000_000).contains(&c) => Ok(c),
        Some(c) => Err(format!(
            "key `source.credit`: {c} is out of range; give 2 to 1000000 (default {DEFAULT_CREDIT})"
        )),
    }
}

/// The `amqp` keys of `[source]`, checked: `address` with `partitions`, or `queues`.
pub fn resolve_amqp(
    stream: String,
    url: Option<&Secret>,
    queues: Option<&Vec<String>>,
    address: Option<&str>,
    partitions: Option<u32>,
    credit: Option<u32>,
    wal: Option<bool>,
) -> Result<AmqpConfig, String> {
    let url = url.ok_or("key `source.url`: required for an `amqp` source, e.g. \"amqp://guest:guest@127.0.0.1:5672\"")?;
    let endpoint = AmqpEndpoint::parse(url.expose(), "source.url")?;
    let addresses = match (queues, address) {
        (Some(_), Some(_)) => {
            return Err(
                "key `source.queues`: give either `queues` (one partition each) or `address` (with `partitions`), not both".to_owned(),
            );
        }
        (Some(q), None) => {
            if q.is_empty() {
                return Err("key `source.queues`: is empty; give at least one address".to_owned());
            }
            if let Some(p) = partitions
                && p as usize != q.len()
            {
                return Err(format!(
                    "key `source.partitions`: {p}, but `queues` has {} addresses (one partition each); leave `partitions` out",
                    q.len()
                ));
            }
            if let Some(bad) = q.iter().find(|a| a.trim().is_empty()) {
                return Err(format!("key `source.queues`: {bad:?} is not an address"));
            }
            q.clone()
        }
        (None, Some(a)) => {
            if a.trim().is_empty() {
                return Err("key `source.address`: is empty".to_owned());
            }
            let n = partitions.unwrap_or(1);
            (0..n)
                .map(|i| a.replace("{partition}", &i.to_string()))
                .collect()
        }
        (None, None) => {
            return Err("key `source.queues`: an `amqp` source needs `queues = [\"/queue/a\", …]` (one partition each) or `address = \"/queue/a\"` with `partitions`".to_owned());
        }
    };
    Ok(AmqpConfig {
        name: stream,
        partitions: addresses.len() as u32,
        endpoint,
        addresses,
        credit: check_credit(credit)?,
        wal: wal.unwrap_or(false),
        duplicates: wal.unwrap_or(false).then(crate::dedup::Settings::default),
        max_record_bytes: crate::receiver::oversize::DEFAULT_MAX_RECORD_BYTES,
        limit: None,
        ca_file: None,
        ca: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amqp_url_prints_without_its_password() {
        let e = AmqpEndpoint::parse("amqp://guest:s3cr%40t@127.0.0.1:5673", "source.url").unwrap();
        assert_eq!(e.password.expose(), "s3cr@t");
        assert_eq!(e.to_string(), "amqp://guest:***@127.0.0.1:5673");
        assert_eq!(format!("{e:?}"), "amqp://guest:***@127.0.0.1:5673");
        let s = AmqpEndpoint::parse("amqps://broker.example", "k").unwrap();
        assert_eq!((s.tls, s.port, s.user), (true, 5671, None));
        let err = AmqpEndpoint::parse("http://u:pw@h", "source.url").unwrap_err();
        assert!(err.contains("scheme") && !err.contains("pw"), "{err}");
    }

    #[test]
    fn a_connection_string_is_parsed_and_prints_without_its_key() {
        let cs = ConnectionString::parse(
            "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=abcDEF123+/=;EntityPath=hub1",
        )
        .unwrap();
        assert_eq!(cs.endpoint.host, "myns.servicebus.windows.net");
        assert_eq!((cs.endpoint.tls, cs.endpoint.port), (true, 5671));
        assert_eq!(cs.key.expose(), "abcDEF123+/=");
        assert_eq!(cs.entity_path.as_deref(), Some("hub1"));
        assert!(!format!("{cs:?}").contains("abcDEF"));
        let emu = ConnectionString::parse(
            "Endpoint=sb://127.0.0.1:5999;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true",
        )
        .unwrap();
        assert_eq!((emu.endpoint.tls, emu.endpoint.port), (false, 5999));
        let err =
            ConnectionString::parse("Endpoint=sb://x/;SharedAccessKey=topsecret").unwrap_err();
        assert!(
            err.contains("SharedAccessKeyName") && !err.contains("topsecret"),
            "{err}"
        );
    }

    #[test]
    fn start_positions_parse_and_a_bad_one_says_what_is_expected() {
        assert_eq!(StartPosition::parse("-1").unwrap(), StartPosition::Earliest);
        assert_eq!(
            StartPosition::parse("@latest").unwrap(),
            StartPosition::Latest
        );
        assert_eq!(
            StartPosition::parse("offset:4096").unwrap(),
            StartPosition::Offset("4096".into())
        );
        assert_eq!(
            StartPosition::parse("enqueued:1970-01-01T00:00:01Z").unwrap(),
            StartPosition::Enqueued(1000)
        );
        assert!(
            StartPosition::parse("yesterday")
                .unwrap_err()
                .contains("@latest")
        );
    }
}
