//! `kind = "amqp"`: a repartition sink through the broker, as Kafka Streams does with its
//! repartition topics. Each record goes to one of N queues by a stable hash of its key, so a
//! second pipeline reading those queues as its partitions (an `amqp` source with `queues`)
//! sees every record of a key in one partition, whichever host or partition produced it.
//!
//! ```toml
//! [[sink]]
//! kind = "amqp"
//! url = "amqp://guest:guest@127.0.0.1:5672"     # amqps:// for TLS
//! queues = ["/queue/wc-0", "/queue/wc-1", "/queue/wc-2"]
//! # or: address = "/queue/wc-{partition}" and partitions = 3
//! ca-file = "ca.pem"                             # amqps: also trust this CA
//! id-prefix = "host-a"                           # default: the stream's name
//! ```
//!
//! **Routing.** Queue `fnv1a64(key) % N` (FNV-1a, 64 bits, over the key's bytes; [`route`]); a
//! record without a key by the hash of its value, so a replayed batch routes the same way.
//!
//! **Messages.** Durable; the body one data section holding the value; the key (when there is
//! one) in the application property `sluice-key` (binary), which the `amqp` source makes the
//! record's key again; the timestamp as the creation time; the message id
//! `<id-prefix>/<batch>/<partition>/<index>` (`id-prefix` defaults to the stream's name; index:
//! the record's place among the partition's records of that batch), the same every time the
//! batch is recomputed. Processes that split different inputs into the same queues (not sharing
//! one checkpoint log) must each have their own `id-prefix`, or the consumer's duplicate
//! detection takes their messages for each other's.
//!
//! **Delivery.** A batch's records are held by the sink until its `commit`, which sends them
//! and returns only when the broker has accepted every one (at-least-once). A commit that
//! fails part-way, or a batch recomputed after a crash, sends messages again with the same ids:
//! a consumer with duplicate detection by message id (an `amqp` source with `wal = true`)
//! drops them, which makes the chain exact. A broker that goes away is reconnected with
//! backoff within the commit for up to [`COMMIT_PATIENCE`]; then the commit fails as
//! transient. Errors name the queue.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::types::messaging::{ApplicationProperties, Header, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, OrderedMap, SimpleValue, Timestamp};
use fe2o3_amqp::{Sendable, Sender};
use tokio::runtime::Handle;

use super::{BuildContext, BuildError, Sink, SinkError};
use crate::batch::RecordBatch;
use crate::plugin::CallContext;
use crate::receiver::ReceiverError;
use crate::receiver::amqp::config::AmqpEndpoint;
use crate::receiver::amqp::tls::{ExtraRoots, load_ca_file};
use crate::receiver::amqp::{Link, connect_with};

pub use crate::receiver::amqp::KEY_PROPERTY;
/// How long a commit keeps reconnecting to a broker that went away before it fails.
pub const COMMIT_PATIENCE: Duration = Duration::from_secs(60);
/// How long one network step (connect, attach, an outcome) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The most messages sent and not yet settled.
const IN_FLIGHT: usize = 1000;

/// `kind = "amqp"` sink, checked.
#[derive(Debug, Clone)]
pub struct AmqpSinkConfig {
    /// The broker.
    pub endpoint: AmqpEndpoint,
    /// The queues, in routing order: record goes to `queues[route(key) % len]`.
    pub queues: Vec<String>,
    /// `ca-file`, as written (relative to the pipeline file).
    pub ca_file: Option<PathBuf>,
    /// `id-prefix`: the first part of every message id; `None`: the stream's name.
    pub id_prefix: Option<String>,
}

/// The `amqp` keys of a `[[sink]]`, checked: `url`, and `queues` or `address` with
/// `{partition}` and `partitions`.
pub fn resolve(
    url: Option<&crate::secret::Secret>,
    queues: Option<&Vec<String>>,
    address: Option<&str>,
    partitions: Option<u32>,
    ca_file: Option<PathBuf>,
    id_prefix: Option<String>,
) -> Result<AmqpSinkConfig, String> {
    if let Some(p) = &id_prefix
        && (p.is_empty() || p.contains('/'))
    {
        return Err(format!(
            "key `sink.id-prefix`: {p:?} must be non-empty and have no `/`"
        ));
    }
    let url = url.ok_or(
        "key `sink.url`: required for an `amqp` sink, e.g. \"amqp://guest:guest@127.0.0.1:5672\"",
    )?;
    let endpoint = AmqpEndpoint::parse(url.expose(), "sink.url")?;
    let queues = match (queues, address, partitions) {
        (Some(_), Some(_), _) => {
            return Err(
                "key `sink.queues`: give either `queues` or `address` with `partitions`, not both"
                    .to_owned(),
            );
        }
        (Some(_), None, Some(_)) => {
            return Err(
                "key `sink.partitions`: only with `address`; `queues` gives one queue each"
                    .to_owned(),
            );
        }
        (Some(q), None, None) => q.clone(),
        (None, Some(a), Some(n)) if a.contains("{partition}") && n > 0 => (0..n)
            .map(|i| a.replace("{partition}", &i.to_string()))
            .collect(),
        (None, Some(_), _) => {
            return Err("key `sink.address`: needs `{partition}` in it and `partitions` (1 or more), e.g. address = \"/queue/wc-{partition}\", partitions = 3".to_owned());
        }
        (None, None, _) => {
            return Err("key `sink.queues`: an `amqp` sink needs `queues = [\"/queue/a\", …]` (records go to one of them by key hash) or `address` with `{partition}` and `partitions`".to_owned());
        }
    };
    if queues.is_empty() {
        return Err("key `sink.queues`: is empty; give at least one address".to_owned());
    }
    if let Some(bad) = queues.iter().find(|a| a.trim().is_empty()) {
        return Err(format!("key `sink.queues`: {bad:?} is not an address"));
    }
    Ok(AmqpSinkConfig {
        endpoint,
        queues,
        ca_file,
        id_prefix,
    })
}

/// The queue of a record among `n`: FNV-1a (64 bits) of the key, else of the value, mod `n`.
/// Stable across runs, hosts and versions (it is part of the output's contract).
pub fn route(key: Option<&[u8]>, value: &[u8], n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.unwrap_or(value) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

impl AmqpSinkConfig {
    /// Reads `ca-file`, then reaches the broker and attaches a sender to every queue (a broker
    /// that does not answer may answer later; an untrusted certificate or refused credentials
    /// will not).
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
        let what = ctx.what;
        let ca = match &self.ca_file {
            Some(p) => load_ca_file(&ctx.base.join(p), "sink.ca-file")
                .map_err(|e| BuildError::Invalid(format!("{what}: {e}")))?,
            None => ExtraRoots::default(),
        };
        let sink = AmqpSink {
            cfg: self.clone(),
            ca,
            handle: ctx.handle.clone(),
            pending: Mutex::new(BTreeMap::new()),
            links: tokio::sync::Mutex::new(None),
        };
        let opened = ctx.handle.block_on(sink.links()).map(drop);
        opened.map_err(|e| match e {
            Failed::Fatal(m) => BuildError::Invalid(format!("{what}: {m}")),
            Failed::Transient(m) => {
                BuildError::Unreachable(format!("{what}: cannot reach the broker: {m}"))
            }
        })?;
        Ok(Arc::new(sink))
    }
}

/// A record held until its batch commits.
struct Held {
    queue: usize,
    id: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    timestamp: Option<i64>,
}

/// The connection and one sender per queue.
struct Links {
    link: Link,
    senders: Vec<Sender>,
}

/// Why sending failed: `Fatal` will fail again (the message names the queue).
enum Failed {
    Transient(String),
    Fatal(String),
}

/// `kind = "amqp"`: see the module's doc.
pub struct AmqpSink {
    cfg: AmqpSinkConfig,
    ca: ExtraRoots,
    handle: Handle,
    /// Held records by (batch, partition), in order.
    pending: Mutex<BTreeMap<(u64, u32), Vec<Held>>>,
    links: tokio::sync::Mutex<Option<Links>>,
}

impl AmqpSink {
    /// Opens the connection and the senders when there are none; returns the guard.
    async fn links(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Links>>, Failed> {
        let mut guard = self.links.lock().await;
        if guard.is_some() {
            return Ok(guard);
        }
        let container = format!("sluice-sink-{}", std::process::id());
        let mut link = connect_with(&self.cfg.endpoint, &container, &self.ca)
            .await
            .map_err(|e| match e {
                ReceiverError::Fatal(m) => Failed::Fatal(m),
                ReceiverError::Transient(m) => Failed::Transient(m),
            })?;
        let mut senders = Vec::with_capacity(self.cfg.queues.len());
        for queue in &self.cfg.queues {
            let name = format!("{container}-{queue}");
            match tokio::time::timeout(
                STEP_TIMEOUT,
                Sender::attach(&mut link.session, name, queue.as_str()),
            )
            .await
            {
                Ok(Ok(s)) => senders.push(s),
                Ok(Err(e)) => {
                    link.close().await;
                    return Err(Failed::Transient(format!(
                        "queue {queue:?}: attaching a sender: {e}"
                    )));
                }
                Err(_) => {
                    link.close().await;
                    return Err(Failed::Transient(format!(
                        "queue {queue:?}: attaching a sender: timed out"
                    )));
                }
            }
        }
        *guard = Some(Links { link, senders });
        Ok(guard)
    }

    /// Sends `held` and waits for every outcome; on a failure the connection is dropped.
    async fn send(&self, held: &[Held]) -> Result<(), Failed> {
        let mut guard = self.links().await?;
        let result = {
            let links = guard.as_mut().expect("opened above");
            send_all(&mut links.senders, &self.cfg.queues, held).await
        };
        if result.is_err()
            && let Some(l) = guard.take()
        {
            drop(l.senders);
            l.link.close().await;
        }
        result
    }

    fn io(&self, message: String) -> SinkError {
        SinkError::Io {
            sink: format!("amqp {}", self.cfg.endpoint),
            message,
        }
    }
}

fn message_of(h: &Held) -> Message<fe2o3_amqp::types::messaging::Data> {
    let mut props = OrderedMap::new();
    if let Some(k) = &h.key {
        props.insert(
            KEY_PROPERTY.to_owned(),
            SimpleValue::Binary(Binary::from(k.clone())),
        );
    }
    let mut properties = Properties::builder().message_id(h.id.clone());
    if let Some(ts) = h.timestamp {
        properties = properties.creation_time(Timestamp::from_milliseconds(ts));
    }
    Message::builder()
        .header(Header::builder().durable(true).build())
        .properties(properties.build())
        .application_properties((!props.is_empty()).then_some(ApplicationProperties(props)))
        .data(Binary::from(h.value.clone()))
        .build()
}

/// Sends every record to its queue with at most [`IN_FLIGHT`] unsettled, awaiting them all.
async fn send_all(senders: &mut [Sender], queues: &[String], held: &[Held]) -> Result<(), Failed> {
    let mut waiting = VecDeque::new();
    let settle = |(queue, fut): (usize, _)| async move {
        let outcome: Result<Result<Outcome, _>, _> = tokio::time::timeout(STEP_TIMEOUT, fut).await;
        let q = &queues[queue];
        match outcome {
            Err(_) => Err(Failed::Transient(format!(
                "queue {q:?}: no outcome within {STEP_TIMEOUT:?}"
            ))),
            Ok(Err(e)) => Err(Failed::Transient(format!("queue {q:?}: sending: {e}"))),
            Ok(Ok(Outcome::Accepted(_))) => Ok(()),
            Ok(Ok(Outcome::Rejected(r))) => Err(Failed::Fatal(format!(
                "queue {q:?}: the broker rejected a message: {:?}",
                r.error
            ))),
            Ok(Ok(other)) => Err(Failed::Transient(format!(
                "queue {q:?}: the broker did not accept a message: {other:?}"
            ))),
        }
    };
    for h in held {
        let q = &queues[h.queue];
        let fut = tokio::time::timeout(
            STEP_TIMEOUT,
            senders[h.queue].send_batchable(Sendable::builder().message(message_of(h)).build()),
        )
        .await
        .map_err(|_| {
            Failed::Transient(format!(
                "queue {q:?}: no link credit within {STEP_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| Failed::Transient(format!("queue {q:?}: sending: {e}")))?;
        waiting.push_back((h.queue, fut));
        if waiting.len() >= IN_FLIGHT {
            settle(waiting.pop_front().expect("not empty")).await?;
        }
    }
    while let Some(w) = waiting.pop_front() {
        settle(w).await?;
    }
    Ok(())
}

impl Sink for AmqpSink {
    fn name(&self) -> String {
        format!("amqp {}", self.cfg.endpoint)
    }

    /// Holds the records, each with its queue and message id, until the batch commits.
    fn write(&self, ctx: &CallContext, batch: &RecordBatch) -> Result<(), SinkError> {
        let n = self.cfg.queues.len();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let held = pending.entry((ctx.batch_id, ctx.partition)).or_default();
        for i in 0..batch.len() {
            let (key, value) = (batch.key(i), batch.value(i));
            held.push(Held {
                queue: route(key, value, n),
                id: format!(
                    "{}/{}/{}/{}",
                    self.cfg.id_prefix.as_deref().unwrap_or(&ctx.stream),
                    ctx.batch_id,
                    ctx.partition,
                    held.len()
                ),
                key: key.map(<[u8]>::to_vec),
                value: value.to_vec(),
                timestamp: batch.timestamp(i),
            });
        }
        Ok(())
    }

    /// Sends the batch's records and returns once the broker accepted them all, reconnecting
    /// for up to [`COMMIT_PATIENCE`]. Called again after success, it sends nothing.
    fn commit(&self, _stream: &str, batch_id: u64) -> Result<(), SinkError> {
        let held: Vec<Held> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<(u64, u32)> = pending
                .range((batch_id, 0)..=(batch_id, u32::MAX))
                .map(|(k, _)| *k)
                .collect();
            keys.iter()
                .flat_map(|k| pending.remove(k).unwrap_or_default())
                .collect()
        };
        if held.is_empty() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + COMMIT_PATIENCE;
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.handle.block_on(self.send(&held)) {
                Ok(()) => return Ok(()),
                Err(Failed::Fatal(m)) => {
                    self.restore(batch_id, held);
                    return Err(SinkError::Broken {
                        sink: self.name(),
                        message: format!("batch {batch_id}: {m}"),
                    });
                }
                Err(Failed::Transient(m)) if std::time::Instant::now() >= deadline => {
                    self.restore(batch_id, held);
                    return Err(self.io(format!("batch {batch_id}: {m}")));
                }
                Err(Failed::Transient(m)) => {
                    tracing::warn!(sink = %self.name(), batch = batch_id, error = %m, "Sending the batch to the broker failed; reconnecting and sending it again.");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn abort(&self, batch_id: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|(b, _), _| *b != batch_id);
    }

    /// Closes the senders and the connection in the background (the run is ending).
    fn stop(&self, _stream: &str) {
        let taken = self.links.try_lock().ok().and_then(|mut g| g.take());
        if let Some(l) = taken {
            self.handle.spawn(async move {
                for s in l.senders {
                    let _ = tokio::time::timeout(Duration::from_secs(2), s.close()).await;
                }
                l.link.close().await;
            });
        }
    }
}

impl AmqpSink {
    /// Puts records back after a failed commit, so the next attempt sends them (again).
    fn restore(&self, batch_id: u64, held: Vec<Held>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert((batch_id, u32::MAX), held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_fnv1a_of_the_key_else_of_the_value() {
        // FNV-1a 64 of "" is the offset basis; of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(
            route(Some(b"a"), b"ignored", 1 << 20),
            0xaf63dc4c8601ec8c % (1 << 20)
        );
        assert_eq!(route(None, b"a", 1 << 20), route(Some(b"a"), b"", 1 << 20));
        let spread: std::collections::BTreeSet<usize> = (0..100)
            .map(|i| route(Some(format!("w{i}").as_bytes()), b"", 3))
            .collect();
        assert_eq!(spread.len(), 3, "100 keys reach all 3 queues");
    }

    #[test]
    fn the_queues_come_from_queues_or_an_address_template_and_a_wrong_key_is_named() {
        let url = crate::secret::Secret::new("amqp://guest:guest@127.0.0.1:5672");
        let c = resolve(
            Some(&url),
            None,
            Some("/queue/wc-{partition}"),
            Some(3),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.queues, ["/queue/wc-0", "/queue/wc-1", "/queue/wc-2"]);
        let q = vec!["/queue/a".to_owned()];
        let e = resolve(Some(&url), Some(&q), Some("/queue/b"), None, None, None).unwrap_err();
        assert!(e.contains("sink.queues"), "{e}");
        let e = resolve(Some(&url), None, Some("/queue/b"), Some(2), None, None).unwrap_err();
        assert!(
            e.contains("sink.address") && e.contains("{partition}"),
            "{e}"
        );
        let e = resolve(None, Some(&q), None, None, None, None).unwrap_err();
        assert!(e.contains("sink.url"), "{e}");
        let e = resolve(Some(&url), Some(&q), None, None, None, Some("a/b".into())).unwrap_err();
        assert!(e.contains("sink.id-prefix"), "{e}");
    }
}
