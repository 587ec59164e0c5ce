//! The Azure Event Hubs dialect of the AMQP receiver.
//!
//! - **Authorization**: SASL ANONYMOUS, then a CBS `put-token` (`fe2o3-amqp-cbs`) with a shared
//!   access signature: `SharedAccessSignature sr=<url-encoded resource>&sig=<url-encoded
//!   base64 HMAC-SHA256 of "<url-encoded resource>\n<expiry>">&se=<expiry>&skn=<policy>`,
//!   renewed at 80% of its lifetime (`token-ttl`). A refused token is a fatal error saying so.
//! - **Partitions**: one link per partition on `<hub>/ConsumerGroups/<cg>/Partitions/<n>`,
//!   settled by the sender (Event Hubs does not take acknowledgements: its position is the
//!   consumer's checkpoint).
//! - **Position**: the `apache.org:selector-filter:string` filter,
//!   `amqp.annotation.x-opt-offset > '<offset>'` (or on the sequence number or enqueued time).
//!   A reconnect resumes after the last record appended; a restart after the last checkpoint.
//! - **Records**: the body as the value, `x-opt-partition-key` as the key, `x-opt-enqueued-time`
//!   as the timestamp; the headers of every AMQP message ([`super::body`]: `amqp.body-type`,
//!   the properties, `amqp.app.<name>`), then `x-opt-offset`, `x-opt-sequence-number`,
//!   `x-opt-enqueued-time` (ms) and `x-opt-partition-key`.
//! - **Owner level**: each partition link opens with `com.microsoft:epoch` = `owner-level`
//!   (default 0). A reader with the same or a higher epoch takes the partition: the service
//!   closes this link with `amqp:link:stolen`, and this receiver lets the partition go (it
//!   stops, with a log line saying who took it; the host keeps its other partitions).
//! - **Errors** ([`super::hub_errors`]): server-busy, a lost connection and timeouts reconnect
//!   with backoff; an expired or refused token, a missing hub and argument errors stop the
//!   pipeline with a message; a position older than the retention follows `on-expired-offset`.
//! - **Partition count**: `partitions`, or else the `$management` node's answer
//!   ([`super::management`]), asked when the source is built (this also proves the key).
//! - **Checkpoints**: the last *durable* position of each partition ([`EventHubsSource::
//!   durable_position`], for the checkpoint code) and, with `checkpoint-dir`, a small JSON per
//!   partition written every `checkpoint-interval` when it moved. Neither ever holds a key or
//!   a token.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::{Symbol, Timestamp, Value};
use fe2o3_amqp_cbs::client::CbsClient;
use fe2o3_amqp_cbs::token::CbsToken;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::watch;

use super::body::Converter;
use super::config::{EventHubsConfig, ExpiredOffset, StartPosition};
use super::hub_errors::{Verdict, classify};
use super::{Dialect, Pump, Pumped, connect};
use crate::batch::RecordBatch;
use crate::clock::now_ms;
use crate::receiver::{BuildContext, BuildError, Receiver, Resume, Source};
use crate::receiver::{Finished, PartitionWriter, ReceiverError};
use crate::secret::Secret;
use crate::store::Location;

/// The selector filter's name and descriptor.
pub const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
/// The link property that carries a receiver's owner level.
pub const EPOCH: &str = "com.microsoft:epoch";
/// The CBS token type of a shared access signature.
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

/// Characters kept as they are when URL-encoding (like .NET's `WebUtility.UrlEncode` and
/// Python's `quote_plus`): letters, digits, `-`, `_`, `.`, `~`.
const URL_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, URL_ENCODE).to_string()
}

/// A shared access signature for `resource_uri`, valid until `expiry` (seconds since the
/// epoch), signed with the policy `key_name`'s `key`.
pub fn sas_token(resource_uri: &str, key_name: &str, key: &Secret, expiry: u64) -> Secret {
    let sr = url_encode(resource_uri);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(format!("{sr}\n{expiry}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Secret::new(format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}&skn={}",
        url_encode(&sig),
        url_encode(key_name)
    ))
}

pub use crate::batch::position::EventHubsPosition as Position;

/// The selector that starts a link after `resume`, else at `start`.
pub fn selector(resume: Option<&Position>, start: &StartPosition) -> String {
    match (resume, start) {
        (Some(p), _) if p.offset.is_empty() => {
            format!(
                "amqp.annotation.x-opt-sequence-number > {}",
                p.sequence_number
            )
        }
        (Some(p), _) => format!("amqp.annotation.x-opt-offset > '{}'", p.offset),
        (None, StartPosition::Earliest) => "amqp.annotation.x-opt-offset > '-1'".to_owned(),
        (None, StartPosition::Latest) => "amqp.annotation.x-opt-offset > '@latest'".to_owned(),
        (None, StartPosition::Offset(o)) => format!("amqp.annotation.x-opt-offset > '{o}'"),
        (None, StartPosition::Sequence(n)) => {
            format!("amqp.annotation.x-opt-sequence-number > {n}")
        }
        (None, StartPosition::Enqueued(ms)) => {
            format!("amqp.annotation.x-opt-enqueued-time > {ms}")
        }
    }
}

/// A checkpoint file: `<checkpoint-dir>/<hub>/<consumer-group>/<partition>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFile {
    /// Format version, 1.
    pub version: u32,
    /// The namespace's host.
    pub namespace: String,
    /// The event hub.
    pub hub: String,
    /// The consumer group.
    pub consumer_group: String,
    /// The partition.
    pub partition: u32,
    /// The last durable event's position.
    #[serde(flatten)]
    pub position: Position,
    /// When written, ms since the epoch.
    pub written_ms: i64,
}

/// An `eventhubs` source: its configuration, checkpoint store and durable positions, shared by
/// the receivers of its partitions.
pub struct EventHubsSource {
    /// The configuration.
    pub cfg: EventHubsConfig,
    /// Where checkpoints go, with `checkpoint-dir`.
    pub checkpoints: Option<Location>,
    /// Where event bodies past `max-record-bytes` go.
    pub limit: Option<crate::receiver::oversize::RecordLimit>,
    /// The Azure SDK's checkpoint store, with `checkpoint-store` (see [`super::azure_checkpoints`]).
    pub azure: Option<super::azure_checkpoints::AzureCheckpointStore>,
    /// The partition count: `partitions`, or the hub's own.
    pub partitions: u32,
    positions: Vec<Mutex<Option<Position>>>,
}

impl std::fmt::Debug for EventHubsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHubsSource")
            .field("cfg", &self.cfg)
            .field("checkpoints", &self.checkpoints)
            .finish_non_exhaustive()
    }
}

impl EventHubsSource {
    /// The source of `cfg` with `partitions` partitions, checkpointing under `checkpoints`.
    pub fn new(cfg: EventHubsConfig, checkpoints: Option<Location>, partitions: u32) -> Self {
        EventHubsSource {
            positions: (0..partitions).map(|_| Mutex::new(None)).collect(),
            partitions,
            cfg,
            checkpoints,
            limit: None,
            azure: None,
        }
    }

    /// The position of the last durable event of `partition` (every event up to it is
    /// durable): what a checkpoint stores, and where a restart resumes.
    pub fn durable_position(&self, partition: u32) -> Option<Position> {
        self.positions
            .get(partition as usize)
            .and_then(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn set_durable(&self, partition: u32, p: &Position) {
        if let Some(m) = self.positions.get(partition as usize) {
            *m.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
        }
    }

    fn checkpoint_path(&self, loc: &Location, partition: u32) -> object_store::path::Path {
        loc.child(&format!(
            "{}/{}/{partition}.json",
            self.cfg.hub, self.cfg.consumer_group
        ))
    }

    /// Reads `partition`'s checkpoint, if there is one.
    pub async fn load_checkpoint(&self, partition: u32) -> Result<Option<Position>, String> {
        if let Some(az) = &self.azure {
            return az.load_checkpoint(partition).await;
        }
        let Some(loc) = &self.checkpoints else {
            return Ok(None);
        };
        let path = self.checkpoint_path(loc, partition);
        let bytes = match loc.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| format!("checkpoint {path}: {e}"))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(format!("checkpoint {path}: {e}")),
        };
        let file: CheckpointFile = serde_json::from_slice(&bytes)
            .map_err(|e| format!("checkpoint {path}: not a checkpoint file: {e}"))?;
        if file.version != 1 || file.partition != partition {
            return Err(format!(
                "checkpoint {path}: version {} of partition {}; expected version 1 of partition {partition}",
                file.version, file.partition
            ));
        }
        Ok(Some(file.position))
    }

    /// Writes `partition`'s checkpoint at `position` (already durable).
    pub async fn store_checkpoint(
        &self,
        partition: u32,
        position: &Position,
    ) -> Result<(), String> {
        if let Some(az) = &self.azure {
            return az.store_checkpoint(partition, position).await;
        }
        let Some(loc) = &self.checkpoints else {
            return Ok(());
        };
        let file = CheckpointFile {
            version: 1,
            namespace: self.cfg.endpoint.host.clone(),
            hub: self.cfg.hub.clone(),
            consumer_group: self.cfg.consumer_group.clone(),
            partition,
            position: position.clone(),
            written_ms: now_ms(),
        };
        let path = self.checkpoint_path(loc, partition);
        let body = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        loc.store
            .put(&path, body.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("checkpoint {path}: {e}"))
    }

    /// Puts a fresh token for the hub through `cbs`; returns when it expires.
    async fn authorize(&self, cbs: &mut CbsClient) -> Result<SystemTime, ReceiverError> {
        let cfg = &self.cfg;
        // The token says its expiry in whole seconds (`se`): renewal is timed from that, not
        // from the unrounded instant, or a short `token-ttl` would renew after the service
        // already closed the link.
        let expiry = (SystemTime::now() + cfg.token_ttl)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let expires = UNIX_EPOCH + Duration::from_secs(expiry);
        let resource = cfg.resource_uri();
        let token = sas_token(&resource, &cfg.key_name, &cfg.key, expiry);
        let cbs_token = CbsToken::new(
            token.expose().to_owned(),
            SAS_TOKEN_TYPE,
            Timestamp::from_milliseconds(expiry as i64 * 1000),
        );
        let put = cbs.put_token(resource.clone(), cbs_token);
        let outcome = tokio::time::timeout(super::NET_TIMEOUT, put)
            .await
            .map_err(|_| {
                ReceiverError::Transient(format!(
                    "event hubs {}/{}: the CBS put-token got no answer",
                    cfg.endpoint.host, cfg.hub
                ))
            })?;
        match outcome {
            Ok(()) => Ok(expires),
            Err(fe2o3_amqp_management::error::Error::Status(s)) => {
                let code = s.code.0.get();
                let why = s
                    .description
                    .as_deref()
                    .map(|d| cfg.key.scrub(&token.scrub(d)))
                    .unwrap_or_default();
                let msg = format!(
                    "event hubs {}/{}: the service refused the SAS token of policy `{}` (status {code}{}{why}); check the key and that the policy has the Listen right",
                    cfg.endpoint.host,
                    cfg.hub,
                    cfg.key_name,
                    if why.is_empty() { "" } else { ": " },
                );
                if matches!(code, 401 | 403 | 404) {
                    Err(ReceiverError::Fatal(msg))
                } else {
                    Err(ReceiverError::Transient(msg))
                }
            }
            Err(e) => Err(ReceiverError::Transient(format!(
                "event hubs {}/{}: CBS put-token: {}",
                cfg.endpoint.host,
                cfg.hub,
                cfg.key.scrub(&token.scrub(&e.to_string()))
            ))),
        }
    }
}

/// Connects, authorizes by CBS and reads the hub from the `$management` node: `sluice
/// validate`, and where a source without `partitions` learns the hub's partition count (which
/// it returns). It attaches no partition link, so it never displaces a running reader.
pub async fn probe(src: &EventHubsSource) -> Result<u32, String> {
    let container = format!("sluice-validate-{}", std::process::id());
    let cfg = &src.cfg;
    let mut conn = connect(&cfg.endpoint, &container)
        .await
        .map_err(|e| format!("`[source]`: cannot reach Event Hubs: {e}"))?;
    let result = async {
        let mut cbs = CbsClient::attach(&mut conn.session)
            .await
            .map_err(|e| format!("`[source]`: attaching the CBS node: {e}"))?;
        src.authorize(&mut cbs)
            .await
            .map_err(|e| format!("`[source]`: {e}"))?;
        let expiry = (SystemTime::now() + cfg.token_ttl)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let token = sas_token(&cfg.resource_uri(), &cfg.key_name, &cfg.key, expiry);
        let count = super::management::partition_count(&mut conn, &container, &cfg.hub, token)
            .await
            .map_err(|e| {
                format!(
                    "`[source]`: event hubs {}/{}: {}",
                    cfg.endpoint.host,
                    cfg.hub,
                    cfg.key.scrub(&e)
                )
            })?;
        let _ = tokio::time::timeout(Duration::from_secs(2), cbs.close()).await;
        Ok(count)
    }
    .await;
    conn.close().await;
    result
}

struct EventHubsDialect {
    /// The position of the last record pushed.
    current: Option<Position>,
    /// The position of the last record appended.
    appended: Option<Position>,
    /// Appended chunks: (end offset, position of their last record).
    pending: VecDeque<(u64, Position)>,
    /// The last durable position, and whether it moved since read.
    durable: Option<Position>,
    src: Arc<EventHubsSource>,
    partition: u32,
}

fn annotation<'a>(m: &'a Message<Body<Value>>, key: &str) -> Option<&'a Value> {
    use fe2o3_amqp::types::messaging::annotations::AnnotationKey;
    m.message_annotations
        .as_ref()
        .and_then(|a| a.0.get(&key as &dyn AnnotationKey))
}

fn as_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Long(n) => Some(*n),
        Value::Int(n) => Some(*n as i64),
        Value::Ulong(n) => i64::try_from(*n).ok(),
        Value::Uint(n) => Some(*n as i64),
        Value::Timestamp(t) => Some(t.milliseconds()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl Dialect for EventHubsDialect {
    fn push(&mut self, out: &mut RecordBatch, m: &Message<Body<Value>>, conv: &mut Converter) {
        let offset = match annotation(m, "x-opt-offset") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => as_i64(Some(other))
                .map(|n| n.to_string())
                .unwrap_or_default(),
            None => String::new(),
        };
        let seq = as_i64(annotation(m, "x-opt-sequence-number")).unwrap_or(-1);
        let enqueued = as_i64(annotation(m, "x-opt-enqueued-time"));
        let key = match annotation(m, "x-opt-partition-key") {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        conv.push(
            out,
            m,
            key.map(str::as_bytes),
            enqueued.unwrap_or_else(now_ms),
        );
        let seq_text = seq.to_string();
        let enq_text = enqueued.map(|e| e.to_string()).unwrap_or_default();
        out.push_header(b"x-opt-offset", offset.as_bytes());
        out.push_header(b"x-opt-sequence-number", seq_text.as_bytes());
        out.push_header(b"x-opt-enqueued-time", enq_text.as_bytes());
        if let Some(k) = key {
            out.push_header(b"x-opt-partition-key", k.as_bytes());
        }
        if !offset.is_empty() {
            self.current = Some(Position {
                offset,
                sequence_number: seq,
                enqueued_time_ms: enqueued.unwrap_or(0),
            });
        }
    }

    fn appended(&mut self, offsets: std::ops::Range<u64>) {
        if let Some(p) = &self.current {
            self.pending.push_back((offsets.end, p.clone()));
            self.appended = Some(p.clone());
        }
    }

    fn position(&self) -> Option<crate::receiver::Position> {
        self.current
            .clone()
            .map(crate::receiver::Position::EventHubs)
    }

    fn origin(&self, _: &Message<Body<Value>>) -> Option<crate::batch::aside::Origin> {
        let p = self.current.as_ref()?;
        Some(crate::batch::aside::Origin::EventHubs {
            offset: p.offset.clone(),
            sequence_number: p.sequence_number,
        })
    }

    fn durable(&mut self, durable: u64) {
        let mut last = None;
        while self.pending.front().is_some_and(|(end, _)| *end <= durable) {
            last = self.pending.pop_front().map(|(_, p)| p);
        }
        if let Some(p) = last {
            self.src.set_durable(self.partition, &p);
            self.durable = Some(p);
        }
    }
}

impl EventHubsConfig {
    /// Resolves and reaches `checkpoint-dir`, then probes the namespace (connect, authorize,
    /// attach, detach).
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Source>, BuildError> {
        let checkpoints = match &self.checkpoint_dir {
            Some(dir) => {
                let loc = Location::resolve(dir, "source.checkpoint-dir", ctx.base, true)?;
                ctx.handle
                    .block_on(loc.reach("source.checkpoint-dir"))
                    .map_err(BuildError::Unreachable)?;
                Some(loc)
            }
            None => None,
        };
        let asked = EventHubsSource::new(self.clone(), None, 0);
        let hub_partitions = ctx
            .handle
            .block_on(probe(&asked))
            .map_err(BuildError::Unreachable)?;
        let partitions = match self.partitions {
            Some(n) => n,
            None => {
                tracing::info!(hub = %self.hub, partitions = hub_partitions, "The hub's $management node gives its partition count.");
                if hub_partitions == 0 || hub_partitions > 4096 {
                    return Err(BuildError::Invalid(format!(
                        "`[source]`: event hub `{}` says it has {hub_partitions} partitions; give `partitions` (1 to 4096)",
                        self.hub
                    )));
                }
                hub_partitions
            }
        };
        let mut src = EventHubsSource::new(self.clone(), checkpoints, partitions);
        src.azure = super::azure_checkpoints::build(self, ctx)?;
        src.limit = Some(crate::receiver::oversize::RecordLimit {
            max: self.max_record_bytes,
            dead_letters: ctx.dead_letters.clone(),
            stream: self.name.clone(),
        });
        Ok(Arc::new(src))
    }
}

impl Source for EventHubsSource {
    fn kind(&self) -> &'static str {
        "eventhubs"
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn replayable(&self) -> bool {
        true
    }

    fn replays_by_position(&self) -> bool {
        true
    }

    fn receiver(self: Arc<Self>, partition: u32, resume: Resume) -> Receiver {
        Receiver::EventHubs(EventHubsReceiver::new(self, partition, &resume))
    }
}

/// The `eventhubs` receiver of one partition.
pub struct EventHubsReceiver {
    src: Arc<EventHubsSource>,
    partition: u32,
    /// Where to resume: after the last record appended (set after the first connection).
    resume: Option<Position>,
    started: bool,
    written: Option<Position>,
    /// `on-expired-offset = "earliest"` applied: the next attach starts at the oldest
    /// retained event.
    from_earliest: bool,
}

impl EventHubsReceiver {
    /// The receiver of `partition`. With a checkpoint log (`resume.from_log`), it starts
    /// after the position the log gives (a recomputed batch's start, or the last committed
    /// event); without one, after its `checkpoint-dir` checkpoint.
    pub fn new(
        src: Arc<EventHubsSource>,
        partition: u32,
        resume: &crate::receiver::Resume,
    ) -> Self {
        let from_log = match &resume.last {
            Some(crate::receiver::Position::EventHubs(p)) => Some(p.clone()),
            _ => None,
        };
        EventHubsReceiver {
            src,
            partition,
            started: resume.from_log && from_log.is_some(),
            written: from_log.clone(),
            resume: from_log,
            from_earliest: false,
        }
    }

    async fn checkpoint(&mut self, durable: &Option<Position>) {
        self.src.renew_ownership(self.partition).await;
        let Some(p) = durable else { return };
        if self.written.as_ref() == Some(p) {
            return;
        }
        match self.src.store_checkpoint(self.partition, p).await {
            Ok(()) => self.written = Some(p.clone()),
            Err(e) => {
                tracing::warn!(partition = self.partition, error = %e, "The checkpoint could not be written; trying again at the next interval.")
            }
        }
    }

    /// Connects, authorizes, attaches and receives until `stop` or a failure, which it
    /// classifies ([`super::hub_errors`]): a stolen partition ends this receiver (`Stopped`,
    /// with a log line), an expired position follows `on-expired-offset`, and the rest is a
    /// transient or a fatal error.
    pub async fn run(
        &mut self,
        out: &PartitionWriter,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Finished, ReceiverError> {
        let Err(e) = self.run_link(out, stop).await else {
            return Ok(Finished::Stopped);
        };
        let cfg = &self.src.cfg;
        match classify(cfg, self.partition, e) {
            Verdict::Retry(m) => Err(ReceiverError::Transient(m)),
            Verdict::Stop(m) => Err(ReceiverError::Fatal(m)),
            Verdict::Lost(m) => {
                tracing::error!(partition = self.partition, owner_level = ?cfg.owner_level, reason = %m, "Another reader with the same or a higher owner level took the partition; this host lets it go and stops its receiver (its other partitions go on).");
                Ok(Finished::Stopped)
            }
            Verdict::Expired(m) => match cfg.on_expired_offset {
                ExpiredOffset::Fail => Err(ReceiverError::Fatal(format!(
                    "{m}. The events after this partition's last position are no longer retained by the hub; `on-expired-offset = \"earliest\"` goes on from the oldest retained event instead, skipping the lost ones"
                ))),
                ExpiredOffset::Earliest => {
                    tracing::warn!(partition = self.partition, resume = ?self.resume.as_ref().map(|p| &p.offset), reason = %m, "The position is older than the hub's retention; as `on-expired-offset = \"earliest\"` says, the partition goes on from the oldest retained event and the events in between are lost.");
                    self.from_earliest = true;
                    self.resume = None;
                    Err(ReceiverError::Transient(m))
                }
            },
        }
    }

    async fn run_link(
        &mut self,
        out: &PartitionWriter,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Finished, ReceiverError> {
        let cfg = &self.src.cfg.clone();
        if !self.started {
            self.resume = self
                .src
                .load_checkpoint(self.partition)
                .await
                .map_err(ReceiverError::Transient)?;
            self.written = self.resume.clone();
            self.started = true;
            if let Some(p) = &self.resume {
                tracing::info!(partition = self.partition, offset = %p.offset, sequence_number = p.sequence_number, "Resuming from the checkpoint.");
            }
        }
        self.src.take_ownership(self.partition).await?;
        let container = format!(
            "sluice-{}-{}-{}",
            cfg.name,
            self.partition,
            std::process::id()
        );
        let mut conn = connect(&cfg.endpoint, &container).await?;
        let mut cbs = match CbsClient::attach(&mut conn.session).await {
            Ok(c) => c,
            Err(e) => {
                conn.close().await;
                return Err(ReceiverError::Transient(format!(
                    "event hubs {}: attaching the CBS node: {e}",
                    cfg.endpoint.host
                )));
            }
        };
        let mut expires = match self.src.authorize(&mut cbs).await {
            Ok(t) => t,
            Err(e) => {
                conn.close().await;
                return Err(e);
            }
        };
        let address = cfg.partition_address(self.partition);
        let filter = match self.from_earliest {
            true => selector(None, &StartPosition::Earliest),
            false => selector(self.resume.as_ref(), &cfg.start),
        };
        let properties = cfg.owner_level.map(|level| {
            let mut f = fe2o3_amqp::types::definitions::Fields::new();
            f.insert(Symbol::from(EPOCH), Value::Long(level));
            f
        });
        let attached = super::attach_with(
            &mut conn.session,
            &address,
            &container,
            cfg.credit,
            Some(filter.clone()),
            true,
            properties,
        )
        .await;
        let mut link = match attached {
            Ok(l) => l,
            Err(e) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), cbs.close()).await;
                conn.close().await;
                return Err(e);
            }
        };
        tracing::info!(namespace = %cfg.endpoint.host, address = %address, partition = self.partition, filter = %filter, credit = cfg.credit, owner_level = ?cfg.owner_level, "Attached to the event hub partition.");
        let mut dialect = EventHubsDialect {
            current: self.resume.clone(),
            appended: self.resume.clone(),
            pending: VecDeque::new(),
            durable: None,
            src: self.src.clone(),
            partition: self.partition,
        };
        let mut pump = Pump::new(cfg.credit, false).with_limit(self.src.limit.clone(), &address);
        let mut durable = out.durable();
        let mut next_checkpoint = tokio::time::Instant::now() + cfg.checkpoint_interval;
        let result = loop {
            let renew_in = expires
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .mul_f64(0.8)
                .saturating_sub(Duration::from_millis(0));
            // Renew at 80% of the token's remaining life (from issue: 80% of the ttl).
            let renew_at = tokio::time::Instant::now() + renew_in.min(cfg.token_ttl.mul_f64(0.8));
            let wake = renew_at.min(next_checkpoint);
            let r = pump
                .run(
                    &mut link,
                    out,
                    &mut durable,
                    stop,
                    &mut dialect,
                    tokio::time::sleep_until(wake),
                )
                .await;
            match r {
                Ok(Pumped::Timer) => {
                    let now = tokio::time::Instant::now();
                    if now >= renew_at {
                        match self.src.authorize(&mut cbs).await {
                            Ok(t) => {
                                expires = t;
                                tracing::debug!(
                                    partition = self.partition,
                                    "Renewed the SAS token."
                                );
                            }
                            Err(e) => break Err(e),
                        }
                    }
                    if now >= next_checkpoint {
                        let d = dialect.durable.clone();
                        self.checkpoint(&d).await;
                        next_checkpoint = now + cfg.checkpoint_interval;
                    }
                }
                Ok(Pumped::Stopped) => break Ok(Finished::Stopped),
                Err(e) => break Err(e),
            }
        };
        if result.is_ok() {
            pump.drain(&link, &mut durable, &mut dialect, Duration::from_secs(5))
                .await;
        }
        let d = dialect.durable.clone();
        self.checkpoint(&d).await;
        if matches!(result, Ok(Finished::Stopped)) {
            self.src.release_ownership(self.partition).await;
        }
        self.resume = dialect.appended.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), link.close()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), cbs.close()).await;
        conn.close().await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector, computed independently with Python's standard library:
    ///
    /// ```python
    /// import base64, hashlib, hmac, urllib.parse
    /// uri, name, key, se = "sb://myns.servicebus.windows.net/hub1", "listen", "c2VjcmV0LWtleS0x", 1900000000
    /// sr = urllib.parse.quote_plus(uri)
    /// sig = base64.b64encode(hmac.new(key.encode(), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
    /// print(f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote_plus(sig)}&se={se}&skn={name}")
    /// ```
    #[test]
    fn the_sas_token_matches_a_vector_computed_independently() {
        let token = sas_token(
            "sb://myns.servicebus.windows.net/hub1",
            "listen",
            &Secret::new("c2VjcmV0LWtleS0x"),
            1_900_000_000,
        );
        assert_eq!(
            token.expose(),
            "SharedAccessSignature sr=sb%3A%2F%2Fmyns.servicebus.windows.net%2Fhub1&sig=vOeDv%2BZPtmQF07cSWNWfR2jfmmk%2BqGsh%2Bgpr%2Fk2ZhmY%3D&se=1900000000&skn=listen"
        );
        assert_eq!(format!("{token} {token:?}"), "*** ***");
    }

    #[test]
    fn the_selector_resumes_after_the_checkpointed_offset() {
        let p = Position {
            offset: "4096".into(),
            sequence_number: 7,
            enqueued_time_ms: 1,
        };
        assert_eq!(
            selector(Some(&p), &StartPosition::Earliest),
            "amqp.annotation.x-opt-offset > '4096'"
        );
        assert_eq!(
            selector(None, &StartPosition::Earliest),
            "amqp.annotation.x-opt-offset > '-1'"
        );
        assert_eq!(
            selector(None, &StartPosition::Enqueued(5)),
            "amqp.annotation.x-opt-enqueued-time > 5"
        );
    }
}
