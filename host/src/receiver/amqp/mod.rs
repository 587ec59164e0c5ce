//! AMQP 1.0 receivers (`fe2o3-amqp`): `amqp` for any broker (RabbitMQ, ActiveMQ, Qpid) and
//! `eventhubs` for Azure Event Hubs ([`eventhubs`]).
//!
//! One link per partition, each on its own connection, run by the receiver [`supervise`] loop:
//! when the broker goes away the link fails with a transient error and is re-established with
//! backoff.
//!
//! **Backpressure is link credit.** The link runs in manual credit mode with a window of
//! `credit` deliveries. Received deliveries are appended to the block manager in chunks; once
//! half the window has been appended the window is granted again. While the block manager's
//! budget is used up, `append` waits, so no credit is granted and the broker stops sending:
//! at most one window per partition waits in memory outside the budget.
//!
//! **Settlement follows durability.** Every appended delivery is kept, with the partition
//! offset it got, until [`PartitionWriter::durable`] covers that offset; then the covered
//! deliveries are accepted in one disposition per consecutive range. In plain mode that is
//! right after the append (accept on receipt); in reliable mode (`wal = true`) it is after the
//! block holding them is in the write-ahead log, so a crash loses nothing the broker forgot.
//! Deliveries received but not yet appended are never accepted: a lost connection or a stop
//! returns them to the broker (a redelivery has `first-acquirer = false`).
//!
//! [`supervise`]: super::supervise

pub mod azure_checkpoints;
pub mod bench;
pub mod body;
pub mod config;
pub mod dedup;
pub mod eventhubs;
pub mod hub_errors;
pub mod management;
mod oversize;
pub mod tls;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::{ReceiverAttachError, RecvError};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{self, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Body, Message, Source};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Connection, Delivery, Session};
use futures::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use self::body::Converter;
use self::config::{AmqpConfig, AmqpEndpoint};
use super::{BuildContext, BuildError, Receiver, Resume};
use super::{Finished, PartitionWriter, ReceiverError};
use crate::batch::RecordBatch;
use crate::clock::now_ms;

/// The application property that carries a record's key through the broker: the `amqp` sink
/// sets it, and this source makes it the record's key again.
pub const KEY_PROPERTY: &str = "sluice-key";

/// The most deliveries appended in one chunk.
const MAX_CHUNK: usize = 1024;
/// How long connecting, attaching and closing may take.
const NET_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection and session.
pub struct Link {
    /// The connection.
    pub connection: ConnectionHandle<()>,
    /// Its one session.
    pub session: SessionHandle<()>,
}

impl Link {
    /// Ends the session and closes the connection, each within a short time.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.session.end()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.connection.close()).await;
    }

    /// Attaches a receiving link (see [`attach`]); when that fails, closes the connection
    /// before returning the error, so a failed attach leaves nothing open.
    pub async fn attach_or_close(
        mut self,
        address: &str,
        container: &str,
        credit: u32,
        filter: Option<String>,
        sender_settled: bool,
    ) -> Result<(Link, fe2o3_amqp::Receiver), ReceiverError> {
        match attach(
            &mut self.session,
            address,
            container,
            credit,
            filter,
            sender_settled,
        )
        .await
        {
            Ok(link) => Ok((self, link)),
            Err(e) => {
                self.close().await;
                Err(e)
            }
        }
    }
}

/// Connects to `endpoint` (TLS for `amqps`, trusting the system's roots) and begins a
/// session. Messages name the endpoint without its password.
pub async fn connect(endpoint: &AmqpEndpoint, container_id: &str) -> Result<Link, ReceiverError> {
    connect_with(endpoint, container_id, &[]).await
}

/// [`connect`], trusting also the CA certificates `extra` (a source's or sink's `ca-file`)
/// for `amqps`. An untrusted certificate is fatal, see [`tls`].
pub async fn connect_with(
    endpoint: &AmqpEndpoint,
    container_id: &str,
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Link, ReceiverError> {
    let transient = |what: &str, e: &dyn std::fmt::Display| {
        ReceiverError::Transient(format!("amqp {endpoint}: {what}: {e}"))
    };
    let addr = (endpoint.host.as_str(), endpoint.port);
    let tcp = tokio::time::timeout(NET_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| transient("connecting", &"timed out"))?
        .map_err(|e| transient("cannot connect", &e))?;
    let _ = tcp.set_nodelay(true);
    let sasl = match &endpoint.user {
        Some(user) => SaslProfile::Plain {
            username: user.clone(),
            password: endpoint.password.expose().to_owned(),
        },
        None => SaslProfile::Anonymous,
    };
    // TLS is set up here (see `tls`) and AMQP runs over it, so the connection builder is
    // always told "amqp".
    let builder = Connection::builder()
        .container_id(container_id)
        .scheme("amqp")
        .hostname(endpoint.host.as_str())
        .sasl_profile(sasl)
        .idle_time_out(60_000u32);
    let open = async {
        if endpoint.tls {
            let stream = tls::handshake(tcp, endpoint, extra).await?;
            builder
                .open_with_stream(stream)
                .await
                .map_err(|e| open_error(endpoint, &e))
        } else {
            builder
                .open_with_stream(tcp)
                .await
                .map_err(|e| open_error(endpoint, &e))
        }
    };
    let mut connection = tokio::time::timeout(NET_TIMEOUT, open)
        .await
        .map_err(|_| transient("opening the connection", &"timed out"))??;
    let session = tokio::time::timeout(NET_TIMEOUT, Session::begin(&mut connection))
        .await
        .map_err(|_| transient("beginning a session", &"timed out"))?
        .map_err(|e| transient("beginning a session", &e))?;
    Ok(Link {
        connection,
        session,
    })
}

/// Refused credentials are fatal; any other failure to open the connection transient.
fn open_error(endpoint: &AmqpEndpoint, e: &fe2o3_amqp::connection::OpenError) -> ReceiverError {
    let text = endpoint.password.scrub(&e.to_string());
    if text.contains("SASL") || text.contains("sasl") || text.contains("Auth") {
        ReceiverError::Fatal(format!(
            "amqp {endpoint}: the broker refused the credentials: {text}"
        ))
    } else {
        ReceiverError::Transient(format!("amqp {endpoint}: opening the connection: {text}"))
    }
}

/// Says what an attach failure means; a refused address or authorization is fatal.
pub fn attach_error(address: &str, e: &ReceiverAttachError) -> ReceiverError {
    match e {
        ReceiverAttachError::RemoteClosedWithError(err) => {
            let message = format!("attaching to {address:?}: {}", describe(err));
            let cond = format!("{:?}", err.condition);
            if cond.contains("NotFound")
                || cond.contains("UnauthorizedAccess")
                || cond.contains("NotAllowed")
                || cond.contains("InvalidField")
            {
                ReceiverError::Fatal(message)
            } else {
                ReceiverError::Transient(message)
            }
        }
        other => ReceiverError::Transient(format!("attaching to {address:?}: {other}")),
    }
}

/// An AMQP error as a sentence: its condition as it goes on the wire (`amqp:not-found`,
/// `com.microsoft:server-busy`) and its description.
pub fn describe(e: &definitions::Error) -> String {
    let cond = condition_symbol(&e.condition);
    match &e.description {
        Some(d) => format!("{cond}: {d}"),
        None => cond,
    }
}

/// An error condition's symbol, as the peer sent it.
pub fn condition_symbol(c: &definitions::ErrorCondition) -> String {
    use definitions::ErrorCondition as C;
    use fe2o3_amqp::types::primitives::Symbol;
    match c {
        C::AmqpError(e) => Symbol::from(e).0,
        C::ConnectionError(e) => Symbol::from(e).0,
        C::SessionError(e) => Symbol::from(e).0,
        C::LinkError(e) => Symbol::from(e).0,
        C::Custom(s) => s.0.clone(),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

/// Appends a broker message as a record (see [`body`]): the body as the value, the
/// application property `sluice-key` (binary or string; set by the `amqp` sink) as the key,
/// else no key, the creation time (else now) as the timestamp, the properties and application
/// properties as headers.
pub fn push_message(out: &mut RecordBatch, message: &Message<Body<Value>>, conv: &mut Converter) {
    let ts = message
        .properties
        .as_ref()
        .and_then(|p| p.creation_time.as_ref())
        .map_or_else(now_ms, |t| t.milliseconds());
    conv.push(out, message, sink_key(message), ts);
}

/// The key an `amqp` sink gave `message` (its `sluice-key` application property).
fn sink_key(message: &Message<Body<Value>>) -> Option<&[u8]> {
    use fe2o3_amqp::types::primitives::SimpleValue;
    match message.application_properties.as_ref()?.get(KEY_PROPERTY)? {
        SimpleValue::Binary(b) => Some(b.as_slice()),
        SimpleValue::String(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// What the receive loop does with each delivery, per dialect.
pub(crate) trait Dialect: Send {
    /// Appends the delivery's record to `out`, converting it with `conv`.
    fn push(&mut self, out: &mut RecordBatch, message: &Message<Body<Value>>, conv: &mut Converter);
    /// Called after a chunk was appended at `offsets` (its last record is the chunk's last).
    fn appended(&mut self, offsets: std::ops::Range<u64>);
    /// Called when every record below `durable` is durable.
    fn durable(&mut self, durable: u64);
    /// Where the source stands after the records pushed so far (a replayable dialect).
    fn position(&self) -> Option<super::Position> {
        None
    }
    /// The place of `message` (the last one pushed) as a dead letter names it, when the
    /// dialect has one (else its queue and delivery number).
    fn origin(&self, _message: &Message<Body<Value>>) -> Option<crate::batch::aside::Origin> {
        None
    }
}

/// Why the receive loop returned.
pub(crate) enum Pumped {
    /// `stop` was set.
    Stopped,
    /// A dialect timer fired (Event Hubs: renew the token, write a checkpoint).
    Timer,
}

/// The receive loop state of one link, kept across calls so that a dialect timer can run
/// between them.
pub(crate) struct Pump {
    credit: u32,
    since_grant: u32,
    chunk: RecordBatch,
    infos: Vec<DeliveryInfo>,
    unsettled: VecDeque<(u64, DeliveryInfo)>,
    conv: Converter,
    settles: bool,
    sifter: Option<dedup::Sifter>,
    /// Messages past `max-record-bytes`, to set aside.
    long: oversize::LongMessages,
    /// Records appended over the link's life.
    pub received: u64,
    /// Messages rejected because they could not be decoded.
    undecodable: u64,
    /// The link's address, for messages about it.
    address: String,
}

impl Pump {
    /// A loop granting `credit` at a time; `settles`: the deliveries need accepting (false
    /// for sender-settled links).
    pub fn new(credit: u32, settles: bool) -> Self {
        Pump {
            credit,
            since_grant: 0,
            chunk: RecordBatch::default(),
            infos: Vec::new(),
            unsettled: VecDeque::new(),
            conv: Converter::default(),
            settles,
            sifter: None,
            long: oversize::LongMessages::default(),
            received: 0,
            undecodable: 0,
            address: String::new(),
        }
    }

    /// Counts redeliveries and drops duplicates through `sifter` (see [`dedup`]).
    pub(crate) fn sifting(mut self, sifter: Option<dedup::Sifter>) -> Self {
        self.sifter = sifter;
        self
    }

    /// Bodies longer than `limit` on the link from `address` are set aside.
    pub fn with_limit(
        mut self,
        limit: Option<crate::receiver::oversize::RecordLimit>,
        address: &str,
    ) -> Self {
        self.long = oversize::LongMessages::new(limit, address);
        self.address = address.to_owned();
        self
    }

    /// Receives until `stop`, a failure, or `timer` fires.
    pub async fn run(
        &mut self,
        link: &mut fe2o3_amqp::Receiver,
        out: &PartitionWriter,
        durable: &mut watch::Receiver<u64>,
        stop: &mut watch::Receiver<bool>,
        dialect: &mut dyn Dialect,
        timer: impl std::future::Future<Output = ()>,
    ) -> Result<Pumped, ReceiverError> {
        tokio::pin!(timer);
        loop {
            if *stop.borrow() {
                return Ok(Pumped::Stopped);
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(Pumped::Stopped),
                _ = durable.changed() => {
                    let d = *durable.borrow_and_update();
                    self.settle(link, d, dialect).await?;
                }
                _ = &mut timer => return Ok(Pumped::Timer),
                first = link.recv::<Body<Value>>() => {
                    let mut failure = None;
                    match first {
                        Ok(d) => self.take(d, dialect),
                        Err(RecvError::MessageDecode(e)) => self.undecodable(link, e).await?,
                        Err(e) => return Err(recv_error(&e)),
                    }
                    // Whatever else has already arrived joins this chunk.
                    while self.chunk.len() < MAX_CHUNK {
                        match link.recv::<Body<Value>>().now_or_never() {
                            Some(Ok(d)) => self.take(d, dialect),
                            Some(Err(RecvError::MessageDecode(e))) => {
                                self.undecodable(link, e).await?;
                            }
                            Some(Err(e)) => {
                                failure = Some(recv_error(&e));
                                break;
                            }
                            None => break,
                        }
                    }
                    self.flush(link, out, durable, dialect).await?;
                    if let Some(e) = failure {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// A message the AMQP decoder cannot read (not valid AMQP 1.0, or an encoding fe2o3-amqp
    /// does not support, such as an array with a null descriptor): it is rejected with the
    /// decoder's reason, so the broker dead-letters or drops it by its own policy (sluice never
    /// had its bytes), and the link goes on. Taking it as a link failure would restart the
    /// receiver on the same message forever.
    async fn undecodable(
        &mut self,
        link: &fe2o3_amqp::Receiver,
        e: fe2o3_amqp::link::MessageDecodeError,
    ) -> Result<(), ReceiverError> {
        self.undecodable += 1;
        self.since_grant += 1;
        let reason = format!("sluice could not decode the message: {}", e.source);
        tracing::error!(
            address = %self.address,
            delivery_id = e.info.delivery_id(),
            error = %e.source,
            rejected = self.settles,
            undecodable_so_far = self.undecodable,
            "A message could not be decoded; it is rejected (the broker dead-letters or drops it by its own policy; on a pre-settled link it is gone) and the stream goes on."
        );
        if !self.settles {
            return Ok(());
        }
        let error = definitions::Error::new(definitions::AmqpError::DecodeError, reason, None);
        link.reject(e.info, error)
            .await
            .map_err(|e| ReceiverError::Transient(format!("rejecting an undecodable message: {e}")))
    }

    fn take(&mut self, d: Delivery<Body<Value>>, dialect: &mut dyn Dialect) {
        let (info, message) = d.into_parts();
        let at = self.chunk.len();
        dialect.push(&mut self.chunk, &message, &mut self.conv);
        if let Some(s) = &self.sifter {
            s.note(&message);
        }
        let info = self.settles.then_some(info);
        if let Some(info) = self
            .long
            .take_if_long(&mut self.chunk, at, &message, info, dialect)
        {
            self.infos.push(info);
        }
    }

    /// Appends the chunk (waiting while the budget is used: no credit is granted meanwhile),
    /// then grants credit again when half the window is used, and settles what is durable.
    async fn flush(
        &mut self,
        link: &mut fe2o3_amqp::Receiver,
        out: &PartitionWriter,
        durable: &mut watch::Receiver<u64>,
        dialect: &mut dyn Dialect,
    ) -> Result<(), ReceiverError> {
        let n = self.chunk.len();
        let long = self.long.len();
        if n == 0 && long == 0 {
            return Ok(());
        }
        if n > 0 {
            let dropped = match &self.sifter {
                Some(s) => s.sift(&mut self.chunk, &mut self.infos),
                None => Vec::new(),
            };
            let offsets = match dialect.position() {
                Some(p) => out.append_at(&self.chunk, p).await,
                None => out.append(&self.chunk).await,
            };
            self.received += self.chunk.len() as u64;
            self.chunk.clear();
            dialect.appended(offsets.clone());
            // A dropped duplicate is accepted once everything this partition appended before
            // it is durable: its first copy among it when it came on this link's queue.
            let before = offsets.end.saturating_sub(1);
            self.unsettled.extend(offsets.zip(self.infos.drain(..)));
            self.unsettled
                .extend(dropped.into_iter().map(|info| (before, info)));
        }
        self.long.set_aside(link, out, dialect.position()).await?;
        self.since_grant += (n + long) as u32;
        if self.since_grant >= self.credit / 2 {
            self.since_grant = 0;
            link.set_credit(self.credit)
                .await
                .map_err(|e| ReceiverError::Transient(format!("granting link credit: {e}")))?;
        }
        let d = *durable.borrow_and_update();
        self.settle(link, d, dialect).await
    }

    /// Accepts every delivery below `durable`, one disposition per consecutive range.
    async fn settle(
        &mut self,
        link: &fe2o3_amqp::Receiver,
        durable: u64,
        dialect: &mut dyn Dialect,
    ) -> Result<(), ReceiverError> {
        dialect.durable(durable);
        let covered = self.unsettled.partition_point(|(o, _)| *o < durable);
        if covered == 0 {
            return Ok(());
        }
        let done: Vec<DeliveryInfo> = self.unsettled.drain(..covered).map(|(_, i)| i).collect();
        if let Some(delay) = accept_delay() {
            tokio::time::sleep(delay).await;
        }
        link.accept_all(done)
            .await
            .map_err(|e| ReceiverError::Transient(format!("accepting deliveries: {e}")))
    }

    /// On a stop: waits (at most `wait`) for what was appended to become durable, settling it.
    pub async fn drain(
        &mut self,
        link: &fe2o3_amqp::Receiver,
        durable: &mut watch::Receiver<u64>,
        dialect: &mut dyn Dialect,
        wait: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let d = *durable.borrow_and_update();
            if self.settle(link, d, dialect).await.is_err() || self.unsettled.is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, durable.changed())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Deliveries appended but not yet accepted.
    pub fn unsettled(&self) -> usize {
        self.unsettled.len()
    }
}

/// Fault injection for the kill trials: `SLUICE_FAULT_ACCEPT_DELAY_MS` delays every accept
/// after its records are logged, widening the window in which a kill leaves logged records
/// unaccepted (the broker redelivers them while the log replays them: what duplicate detection
/// removes). Never set in production.
fn accept_delay() -> Option<Duration> {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms: u64 = std::env::var("SLUICE_FAULT_ACCEPT_DELAY_MS").ok()?.parse().ok()?;
        tracing::warn!(delay_ms = ms, "SLUICE_FAULT_ACCEPT_DELAY_MS is set: every accept is delayed (fault injection for tests).");
        Some(Duration::from_millis(ms))
    })
}

fn recv_error(e: &RecvError) -> ReceiverError {
    use fe2o3_amqp::link::LinkStateError as L;
    let text = match e {
        RecvError::LinkStateError(L::RemoteDetachedWithError(err))
        | RecvError::LinkStateError(L::RemoteClosedWithError(err)) => {
            format!("the broker detached the link: {}", describe(err))
        }
        RecvError::LinkStateError(L::SessionStopped(_)) => "the connection was lost".to_owned(),
        other => other.to_string(),
    };
    ReceiverError::Transient(text)
}

/// The `amqp` receiver of one partition: one link on `address`.
pub struct AmqpReceiver {
    cfg: Arc<AmqpConfig>,
    partition: u32,
    address: String,
    dedup: Option<Arc<crate::dedup::Filter>>,
}

struct PlainDialect;

impl Dialect for PlainDialect {
    fn push(
        &mut self,
        out: &mut RecordBatch,
        message: &Message<Body<Value>>,
        conv: &mut Converter,
    ) {
        push_message(out, message, conv);
    }
    fn appended(&mut self, _: std::ops::Range<u64>) {}
    fn durable(&mut self, _: u64) {}
}

impl AmqpReceiver {
    /// The receiver of `partition`.
    pub fn new(cfg: Arc<AmqpConfig>, partition: u32) -> Self {
        let address = cfg.addresses[partition as usize % cfg.addresses.len()].clone();
        AmqpReceiver {
            cfg,
            partition,
            address,
            dedup: None,
        }
    }

    /// Counts redeliveries and, with detection on, drops duplicates through `filter`.
    pub fn with_dedup(mut self, filter: Option<Arc<crate::dedup::Filter>>) -> Self {
        self.dedup = filter;
        self
    }

    /// Connects, attaches and receives until `stop` or a failure.
    pub async fn run(
        &mut self,
        out: &PartitionWriter,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Finished, ReceiverError> {
        let ep = &self.cfg.endpoint;
        let container = format!(
            "sluice-{}-{}-{}",
            self.cfg.name,
            self.partition,
            std::process::id()
        );
        let (conn, mut link) = connect_with(ep, &container, &self.cfg.ca)
            .await?
            .attach_or_close(&self.address, &container, self.cfg.credit, None, false)
            .await?;
        tracing::info!(
            broker = %ep,
            address = %self.address,
            partition = self.partition,
            credit = self.cfg.credit,
            reliable = self.cfg.wal,
            "Attached to the broker."
        );
        let mut pump = Pump::new(self.cfg.credit, true)
            .with_limit(self.cfg.limit.clone(), &self.address)
            .sifting(self.dedup.clone().map(dedup::Sifter::new));
        let mut durable = out.durable();
        let mut dialect = PlainDialect;
        let result = pump
            .run(
                &mut link,
                out,
                &mut durable,
                stop,
                &mut dialect,
                std::future::pending(),
            )
            .await;
        if matches!(result, Ok(Pumped::Stopped)) {
            pump.drain(&link, &mut durable, &mut dialect, Duration::from_secs(5))
                .await;
            let left = pump.unsettled();
            let _ = tokio::time::timeout(Duration::from_secs(2), link.close()).await;
            conn.close().await;
            tracing::info!(
                partition = self.partition,
                received = pump.received,
                unsettled_returned = left,
                "Detached from the broker."
            );
            return Ok(Finished::Stopped);
        }
        drop(link);
        conn.close().await;
        result.map(|_| Finished::Stopped)
    }
}

/// Attaches a receiving link on `address` in manual credit mode and grants `credit`.
/// `filter`: a selector (Event Hubs); `sender_settled`: ask the sender to settle on send.
pub async fn attach(
    session: &mut SessionHandle<()>,
    address: &str,
    container: &str,
    credit: u32,
    filter: Option<String>,
    sender_settled: bool,
) -> Result<fe2o3_amqp::Receiver, ReceiverError> {
    attach_with(
        session,
        address,
        container,
        credit,
        filter,
        sender_settled,
        None,
    )
    .await
}

/// [`attach`] with link `properties` (Event Hubs: `com.microsoft:epoch`).
pub async fn attach_with(
    session: &mut SessionHandle<()>,
    address: &str,
    container: &str,
    credit: u32,
    filter: Option<String>,
    sender_settled: bool,
    properties: Option<definitions::Fields>,
) -> Result<fe2o3_amqp::Receiver, ReceiverError> {
    let mut source = Source::builder().address(address.to_owned());
    if let Some(f) = filter {
        source = source.add_to_filter(
            eventhubs::SELECTOR_FILTER,
            serde_amqp::described::Described {
                descriptor: serde_amqp::descriptor::Descriptor::Name(
                    eventhubs::SELECTOR_FILTER.into(),
                ),
                value: Value::String(f),
            },
        );
    }
    let mut builder = fe2o3_amqp::Receiver::builder()
        .name(format!("{container}-{address}"))
        .source(source.build())
        .credit_mode(CreditMode::Manual)
        .auto_accept(false)
        .sender_settle_mode(if sender_settled {
            SenderSettleMode::Settled
        } else {
            SenderSettleMode::Unsettled
        });
    if let Some(p) = properties {
        builder = builder.properties(p);
    }
    let mut link = tokio::time::timeout(NET_TIMEOUT, builder.attach(session))
        .await
        .map_err(|_| ReceiverError::Transient(format!("attaching to {address:?}: timed out")))?
        .map_err(|e| attach_error(address, &e))?;
    link.set_credit(credit)
        .await
        .map_err(|e| ReceiverError::Transient(format!("granting link credit: {e}")))?;
    Ok(link)
}

/// `sluice validate` for an `amqp` source: connects, attaches every partition's address and
/// detaches, within `NET_TIMEOUT` each. The message says which step failed; a broker that
/// does not answer is [`BuildError::Unreachable`], one that will never be accepted (an
/// untrusted certificate, refused credentials) [`BuildError::Invalid`].
pub async fn probe(cfg: &AmqpConfig) -> Result<(), BuildError> {
    let container = format!("sluice-validate-{}", std::process::id());
    let mut conn = match connect_with(&cfg.endpoint, &container, &cfg.ca).await {
        Ok(conn) => conn,
        Err(ReceiverError::Fatal(e)) => {
            return Err(BuildError::Invalid(format!("`[source]`: {e}")));
        }
        Err(ReceiverError::Transient(e)) => {
            return Err(BuildError::Unreachable(format!(
                "`[source]`: cannot reach the broker: {e}"
            )));
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for address in &cfg.addresses {
        if !seen.insert(address) {
            continue;
        }
        let link = attach(&mut conn.session, address, &container, 1, None, false)
            .await
            .map_err(|e| format!("`[source]`: broker {}: {e}", cfg.endpoint));
        match link {
            Ok(l) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), l.close()).await;
            }
            Err(e) => {
                conn.close().await;
                return Err(BuildError::Unreachable(e));
            }
        }
    }
    conn.close().await;
    Ok(())
}

impl AmqpConfig {
    /// Reaches the broker now (connect, attach each address, detach), as stores are reached.
    /// With `ca-file`, its certificates are read first (relative to the pipeline file).
    pub fn build(&self, ctx: &mut BuildContext<'_>) -> Result<Arc<dyn super::Source>, BuildError> {
        let mut built = self.clone();
        if let Some(path) = &self.ca_file {
            built.ca = tls::load_ca_file(&ctx.base.join(path), "source.ca-file")?;
        }
        ctx.handle.block_on(probe(&built))?;
        built.limit = Some(crate::receiver::oversize::RecordLimit {
            max: self.max_record_bytes,
            dead_letters: ctx.dead_letters.clone(),
            stream: self.name.clone(),
        });
        Ok(Arc::new(built))
    }
}

impl super::Source for AmqpConfig {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    /// An accepted delivery is gone from the broker (reliable mode logs blocks instead).
    fn replayable(&self) -> bool {
        false
    }

    /// Redeliveries are counted; in reliable mode, dropped by message id (unless turned off).
    fn duplicates(&self) -> Option<crate::dedup::Detection> {
        Some(self.duplicates.map_or(
            crate::dedup::Detection::Count,
            crate::dedup::Detection::ById,
        ))
    }

    fn receiver(self: Arc<Self>, partition: u32, resume: Resume) -> Receiver {
        Receiver::Amqp(AmqpReceiver::new(self, partition).with_dedup(resume.dedup))
    }
}
