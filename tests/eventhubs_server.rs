//! A small Azure Event Hubs stand-in for the tests, built on `fe2o3-amqp`'s acceptor: an AMQP
//! 1.0 server (SASL ANONYMOUS, plain TCP like the Event Hubs emulator) that speaks the dialect
//! Microsoft's own clients speak (the Python `azure-eventhub` is the judge of it):
//!
//! - takes CBS `put-token` requests on `$cbs` and checks the shared access signature with the
//!   known key (its own HMAC-SHA256 code, not sluice's): `sr` must be `sb://<host>/<hub>[/…]`,
//!   `skn` the policy, `se` must lie ahead, `sig` must match; else it answers 401. A token
//!   expires: when the connection's newest token passes its `se`, every link of the connection
//!   is closed with `amqp:unauthorized-access`, as the service does, so a broken renewal fails;
//! - answers `$management` `READ` requests of type `com.microsoft:eventhub` (name, created_at,
//!   partition_count, partition_ids) and `com.microsoft:partition` (begin and last sequence
//!   numbers, last offset and time, is_partition_empty), `status-code` 200, else 404/401;
//! - takes events ([`ingest`]) on `<hub>` (spread by partition key, else round robin) and
//!   `<hub>/Partitions/<n>`, single or batched (message format `0x80013700`);
//! - serves partition links ([`partition`]) on `<hub>/ConsumerGroups/<cg>/Partitions/<n>`
//!   after the `apache.org:selector-filter:string` filter (offset, sequence number, enqueued
//!   time; `>` or `>=`), with the documented annotations, and owner levels
//!   (`com.microsoft:epoch`): a reader with the same or a higher epoch closes the older with
//!   `amqp:link:stolen`; a lower one is refused with it;
//! - answers with Microsoft's conditions: `amqp:unauthorized-access`, `amqp:not-found`,
//!   `amqp:link:stolen`, `com.microsoft:server-busy` (on command: [`FakeEventHubs::server_busy`])
//!   and `com.microsoft:argument-out-of-range` (a position older than the retention:
//!   [`FakeEventHubs::expire_before`]).
//!
//! Addresses may come bare (`hub/…`, as sluice sends them) or as URLs
//! (`amqps://host:port/hub/…`, as the Python client sends them).
//!
//! An event's sequence number is its index in its partition; its offset is `1000 + 10 * index`.

mod ingest;
mod partition;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SaslAnonymousMechanism, SessionAcceptor,
};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Timestamp, Value};
use fe2o3_amqp::{Receiver, Sender};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Notify, mpsc};

/// One event of a partition.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its body (one Data section).
    pub body: Vec<u8>,
    /// Its partition key.
    pub partition_key: Option<String>,
    /// When it was enqueued, ms since the epoch.
    pub enqueued_ms: i64,
}

/// The offset Event Hubs would give the event at `index`.
pub fn offset_of(index: usize) -> String {
    (1000 + 10 * index).to_string()
}

/// One open partition link, as the epoch rules see it.
struct Reader {
    id: u64,
    partition: usize,
    consumer_group: String,
    epoch: Option<i64>,
    /// Set to close the link (a newer epoch stole it).
    kick: Arc<Mutex<Option<String>>>,
}

struct State {
    hub: String,
    key_name: String,
    key: String,
    partitions: Mutex<Vec<Vec<Event>>>,
    added: Notify,
    log: Mutex<Vec<String>>,
    put_tokens: AtomicUsize,
    readers: Mutex<Vec<Reader>>,
    next_reader: AtomicU64,
    /// Bumped by [`FakeEventHubs::server_busy`]: links opened before are closed.
    busy: AtomicU64,
    /// Renewals (a put-token on a connection that already holds one) are refused.
    refuse_renewals: AtomicBool,
    /// Per partition, the index of the oldest retained event.
    retained_from: Mutex<Vec<usize>>,
    round_robin: AtomicUsize,
}

impl State {
    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
}

/// A running stand-in; stops when dropped.
pub struct FakeEventHubs {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeEventHubs {
    /// Serves event hub `hub` with these partitions, authorizing policy `key_name` with `key`.
    pub fn start(hub: &str, key_name: &str, key: &str, partitions: Vec<Vec<Event>>) -> Self {
        let n = partitions.len();
        let state = Arc::new(State {
            hub: hub.to_owned(),
            key_name: key_name.to_owned(),
            key: key.to_owned(),
            partitions: Mutex::new(partitions),
            added: Notify::new(),
            log: Mutex::default(),
            put_tokens: AtomicUsize::new(0),
            readers: Mutex::default(),
            next_reader: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            refuse_renewals: AtomicBool::new(false),
            retained_from: Mutex::new(vec![0; n]),
            round_robin: AtomicUsize::new(0),
        });
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let acceptor = ConnectionAcceptor::builder()
                    .container_id("fake-event-hubs")
                    // As the service does (240 s). This and the properties make every field
                    // of the Open frame go on the wire: the Python client's decoder indexes
                    // them all, as the service always sends them.
                    .idle_time_out(240_000u32)
                    .properties(stand_in_properties())
                    .sasl_acceptor(SaslAnonymousMechanism::new())
                    .build();
                let serve = async {
                    while let Ok((stream, _)) = listener.accept().await {
                        match acceptor.accept(stream).await {
                            Ok(conn) => {
                                tokio::spawn(connection_main(conn, st.clone()));
                            }
                            Err(e) => st.note(format!("connection refused: {e}")),
                        }
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
        });
        FakeEventHubs {
            port: port_rx.recv().unwrap(),
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Appends events to `partition`.
    pub fn add(&self, partition: usize, events: Vec<Event>) {
        self.state.partitions.lock().unwrap()[partition].extend(events);
        self.state.added.notify_waiters();
    }

    /// The events of `partition` so far (what producers sent, in order).
    pub fn events(&self, partition: usize) -> Vec<Event> {
        self.state.partitions.lock().unwrap()[partition].clone()
    }

    /// What happened so far, one line per event: `put-token accepted …`, `put-token refused …`,
    /// `attach <address> filter <selector> epoch <e>`, `refused link …`, `closed link …`,
    /// `management …`, `received … events …`.
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }

    /// How many put-token requests were answered 202.
    pub fn accepted_tokens(&self) -> usize {
        self.state.put_tokens.load(Ordering::SeqCst)
    }

    /// Test knob: closes every partition link open now with `com.microsoft:server-busy`, as
    /// the service does when it throttles.
    pub fn server_busy(&self) {
        self.state.busy.fetch_add(1, Ordering::SeqCst);
        self.state.added.notify_waiters();
    }

    /// Test knob: from now on, a put-token on a connection that already holds a token (a
    /// renewal) is refused with 401, so the old token runs out.
    pub fn refuse_renewals(&self, refuse: bool) {
        self.state.refuse_renewals.store(refuse, Ordering::SeqCst);
    }

    /// Test knob (the retention): the events of `partition` before `index` are gone; a link
    /// asking for a position before it is refused with `com.microsoft:argument-out-of-range`,
    /// and `-1` starts at `index`.
    pub fn expire_before(&self, partition: usize, index: usize) {
        self.state.retained_from.lock().unwrap()[partition] = index;
    }

    /// A connection string for this server (`UseDevelopmentEmulator=true`: plain AMQP). The
    /// Python `azure-eventhub` takes the port from the Endpoint's netloc and, with
    /// `UseDevelopmentEmulator=true`, `use_tls=False`.
    pub fn connection_string(&self, key: &str) -> String {
        format!(
            "Endpoint=sb://127.0.0.1:{}/;SharedAccessKeyName={};SharedAccessKey={key};EntityPath={};UseDevelopmentEmulator=true",
            self.port, self.state.key_name, self.state.hub
        )
    }
}

impl Drop for FakeEventHubs {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Response = Message<AmqpValue<Value>>;
/// A node's reply channel: its sender, and its receiver until the reply link takes it.
type Node = (
    mpsc::UnboundedSender<Response>,
    Option<mpsc::UnboundedReceiver<Response>>,
);

/// One AMQP connection: its authorization and the reply channels of its nodes.
struct Conn {
    st: Arc<State>,
    authorized: AtomicBool,
    /// When its newest accepted token expires (seconds since the epoch).
    expires: AtomicU64,
    /// Reply channels per node (`$cbs`, `$management`): (sender, receiver until taken).
    nodes: Mutex<HashMap<String, Node>>,
    /// Set when the connection ends.
    closed: AtomicBool,
}

impl Conn {
    fn channel(&self, node: &str) -> mpsc::UnboundedSender<Response> {
        let mut nodes = self.nodes.lock().unwrap();
        let e = nodes.entry(node.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            (tx, Some(rx))
        });
        e.0.clone()
    }

    fn take_replies(&self, node: &str) -> Option<mpsc::UnboundedReceiver<Response>> {
        self.channel(node);
        self.nodes.lock().unwrap().get_mut(node)?.1.take()
    }

    /// Why the connection's links must close for lack of a live token, if they must.
    fn token_expired(&self) -> Option<String> {
        let expires = self.expires.load(Ordering::SeqCst);
        (self.authorized.load(Ordering::SeqCst) && expires <= now_secs()).then(|| {
            format!("ExpiredToken: the token expired at {expires} (se); put a new one on $cbs before it runs out")
        })
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn connection_main(mut conn: ListenerConnectionHandle, st: Arc<State>) {
    let ctx = Arc::new(Conn {
        st,
        authorized: AtomicBool::new(false),
        expires: AtomicU64::new(0),
        nodes: Mutex::default(),
        closed: AtomicBool::new(false),
    });
    // An explicit handle-max: the Python client takes it from Begin and compares with it.
    let sessions = SessionAcceptor::builder()
        .handle_max(1023u32)
        .properties(stand_in_properties())
        .build();
    while let Ok(session) = sessions.accept(&mut conn).await {
        tokio::spawn(session_main(session, ctx.clone()));
    }
    ctx.closed.store(true, Ordering::SeqCst);
    let _ = conn.on_close().await;
}

/// Properties the stand-in puts on its Open, Begin and Attach frames, so that every field of
/// those frames is on the wire (the Python client's decoder indexes the last one).
fn stand_in_properties() -> fe2o3_amqp::types::definitions::Fields {
    let mut f = fe2o3_amqp::types::definitions::Fields::new();
    f.insert(
        fe2o3_amqp::types::primitives::Symbol::from("com.microsoft:stand-in"),
        Value::Bool(true),
    );
    f
}

/// The entity path of an address: `amqps://host:port/hub/x` and `hub/x` both give `hub/x`.
fn entity_path(address: &str) -> String {
    let rest = match address.split_once("://") {
        Some((_, after)) => after.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => address,
    };
    rest.trim_matches('/').to_owned()
}

async fn session_main(mut session: ListenerSessionHandle, ctx: Arc<Conn>) {
    // Receiver settle mode `first` only, as the service: a producer asking for `second` gets
    // `first` (the Python client asks for `second` and then waits for a settled disposition).
    let links = LinkAcceptor::builder()
        .supported_receiver_settle_modes(fe2o3_amqp::acceptor::SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(fe2o3_amqp::types::definitions::ReceiverSettleMode::First)
        .properties(stand_in_properties())
        .build();
    while let Ok(link) = links.accept(&mut session).await {
        match link {
            LinkEndpoint::Receiver(r) => {
                let address = r
                    .target()
                    .as_ref()
                    .and_then(|t| t.address.clone())
                    .unwrap_or_default();
                match address.as_str() {
                    "$cbs" => {
                        tokio::spawn(cbs_requests(r, ctx.clone()));
                    }
                    "$management" => {
                        tokio::spawn(management_requests(r, ctx.clone()));
                    }
                    _ => {
                        tokio::spawn(ingest::producer_main(r, entity_path(&address), ctx.clone()));
                    }
                }
            }
            LinkEndpoint::Sender(s) => {
                let address = s
                    .source()
                    .as_ref()
                    .and_then(|s| s.address.clone())
                    .unwrap_or_default();
                if address == "$cbs" || address == "$management" {
                    tokio::spawn(replies(s, address, ctx.clone()));
                } else {
                    tokio::spawn(partition::partition_main(
                        s,
                        entity_path(&address),
                        ctx.clone(),
                    ));
                }
            }
        }
    }
    let _ = session.on_end().await;
}

/// Checks a `SharedAccessSignature sr=…&sig=…&se=…&skn=…` token for `audience` (`None`: its
/// own `sr`); `Ok` gives its expiry, `Err` says why not.
fn check_token(st: &State, audience: Option<&str>, token: &str) -> Result<u64, String> {
    let fields = token
        .strip_prefix("SharedAccessSignature ")
        .ok_or("not a SharedAccessSignature")?;
    let get = |name: &str| {
        fields
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .ok_or(format!("no {name}"))
    };
    let (sr_raw, sig_raw, se, skn) = (get("sr")?, get("sig")?, get("se")?, get("skn")?);
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|e| e.to_string())
    };
    let sr = decode(sr_raw)?;
    // The resource is the hub, or something under it (`…/hub/consumergroups/$Default`).
    let hub_of = |uri: &str| -> Option<String> {
        let rest = uri.strip_prefix("sb://")?;
        let (_, path) = rest.split_once('/')?;
        path.split('/').next().map(str::to_ascii_lowercase)
    };
    if audience.is_some_and(|a| a != sr) || hub_of(&sr) != Some(st.hub.to_ascii_lowercase()) {
        return Err(format!(
            "sr {sr:?} does not name the hub (audience {audience:?})"
        ));
    }
    if decode(skn)? != st.key_name {
        return Err("unknown policy".into());
    }
    let expiry: u64 = se.parse().map_err(|_| "se is not a number")?;
    if expiry <= now_secs() {
        return Err("the token has expired".into());
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(st.key.as_bytes()).unwrap();
    mac.update(format!("{sr_raw}\n{se}").as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if decode(sig_raw)? != want {
        return Err("InvalidSignature: the token's signature does not match".into());
    }
    Ok(expiry)
}

fn text_of(m: &Message<Body<Value>>, key: &str) -> String {
    match m.application_properties.as_ref().and_then(|a| a.0.get(key)) {
        Some(SimpleValue::String(s)) => s.clone(),
        Some(SimpleValue::Symbol(s)) => s.0.clone(),
        Some(SimpleValue::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn reply(
    m: &Message<Body<Value>>,
    code: i32,
    description: String,
    body: Value,
) -> Message<AmqpValue<Value>> {
    let id = m
        .properties
        .as_ref()
        .and_then(|p| p.message_id.clone())
        .unwrap_or(MessageId::Ulong(0));
    Message::builder()
        .properties(Properties::builder().correlation_id(id).build())
        .application_properties(
            ApplicationProperties::builder()
                .insert("status-code", code)
                .insert("status-description", description)
                .build(),
        )
        .value(body)
        .build()
}

async fn cbs_requests(mut r: Receiver, ctx: Arc<Conn>) {
    let respond = ctx.channel("$cbs");
    while let Ok(d) = r.recv::<Body<Value>>().await {
        let _ = r.accept(&d).await;
        let m = d.into_message();
        let (operation, kind, name) = (
            text_of(&m, "operation"),
            text_of(&m, "type"),
            text_of(&m, "name"),
        );
        let token = match &m.body {
            Body::Value(v) => match &v.0 {
                Value::String(s) => s.clone(),
                Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let renewal = ctx.authorized.load(Ordering::SeqCst);
        let verdict = if operation != "put-token" {
            Err(format!("unknown operation {operation:?}"))
        } else if kind != "servicebus.windows.net:sastoken" {
            Err(format!("unknown token type {kind:?}"))
        } else if renewal && ctx.st.refuse_renewals.load(Ordering::SeqCst) {
            Err("renewals are refused (test knob)".to_owned())
        } else {
            check_token(&ctx.st, Some(&name), &token)
        };
        let (code, description) = match &verdict {
            Ok(expiry) => {
                ctx.expires.store(*expiry, Ordering::SeqCst);
                ctx.authorized.store(true, Ordering::SeqCst);
                ctx.st.put_tokens.fetch_add(1, Ordering::SeqCst);
                ctx.st.note(format!("put-token accepted for {name}"));
                (202, "Accepted".to_owned())
            }
            Err(why) => {
                ctx.st.note(format!("put-token refused: {why}"));
                (401, why.clone())
            }
        };
        let _ = respond.send(reply(&m, code, description, Value::Null));
    }
}

async fn replies(mut s: Sender, node: String, ctx: Arc<Conn>) {
    let Some(mut rx) = ctx.take_replies(&node) else {
        return;
    };
    while let Some(m) = rx.recv().await {
        // `batchable`: every field of the Transfer on the wire (see `partition_main`).
        if s.send_batchable(m).await.is_err() {
            return;
        }
    }
}

/// `$management` `READ` of the hub or of a partition, as the service answers it.
async fn management_requests(mut r: Receiver, ctx: Arc<Conn>) {
    let respond = ctx.channel("$management");
    while let Ok(d) = r.recv::<Body<Value>>().await {
        let _ = r.accept(&d).await;
        let m = d.into_message();
        let (operation, kind, name) = (
            text_of(&m, "operation"),
            text_of(&m, "type"),
            text_of(&m, "name"),
        );
        let token = text_of(&m, "security_token");
        let st = &ctx.st;
        let answer = if operation != "READ" {
            Err((400, format!("unknown operation {operation:?}")))
        } else if let Err(why) = check_token(st, None, &token) {
            Err((401, format!("Unauthorized: security_token: {why}")))
        } else if name != st.hub {
            Err((
                404,
                format!("The messaging entity '{name}' could not be found"),
            ))
        } else if kind == "com.microsoft:eventhub" {
            let n = st.partitions.lock().unwrap().len();
            Ok(map(vec![
                ("name", Value::String(st.hub.clone())),
                (
                    "created_at",
                    Value::Timestamp(Timestamp::from_milliseconds(1_700_000_000_000)),
                ),
                ("partition_count", Value::Int(n as i32)),
                (
                    "partition_ids",
                    Value::List((0..n).map(|i| Value::String(i.to_string())).collect()),
                ),
            ]))
        } else if kind == "com.microsoft:partition" {
            let id = text_of(&m, "partition");
            let events = st.partitions.lock().unwrap();
            match id
                .parse::<usize>()
                .ok()
                .and_then(|i| events.get(i).map(|e| (i, e)))
            {
                None => Err((404, format!("partition {id:?} does not exist"))),
                Some((i, events)) => {
                    let begin = st.retained_from.lock().unwrap()[i];
                    let last = events.len() as i64 - 1;
                    Ok(map(vec![
                        ("name", Value::String(st.hub.clone())),
                        ("partition", Value::String(id.clone())),
                        ("begin_sequence_number", Value::Long(begin as i64)),
                        ("last_enqueued_sequence_number", Value::Long(last)),
                        (
                            "last_enqueued_offset",
                            Value::String(if last < 0 {
                                "-1".into()
                            } else {
                                offset_of(last as usize)
                            }),
                        ),
                        (
                            "last_enqueued_time_utc",
                            Value::Timestamp(Timestamp::from_milliseconds(
                                events.last().map_or(0, |e| e.enqueued_ms),
                            )),
                        ),
                        ("is_partition_empty", Value::Bool(events.len() <= begin)),
                    ]))
                }
            }
        } else {
            Err((400, format!("unknown type {kind:?}")))
        };
        let response = match answer {
            Ok(body) => {
                st.note(format!("management {kind} answered"));
                reply(&m, 200, "OK".into(), body)
            }
            Err((code, why)) => {
                st.note(format!("management {kind} refused: {code} {why}"));
                reply(&m, code, why, Value::Null)
            }
        };
        let _ = respond.send(response);
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(Value::String(k.to_owned()), v);
    }
    Value::Map(m)
}
