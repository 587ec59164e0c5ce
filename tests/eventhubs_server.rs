//! A small Azure Event Hubs stand-in for the tests, built on `fe2o3-amqp`'s acceptor: an AMQP
//! 1.0 server (SASL ANONYMOUS, plain TCP like the Event Hubs emulator) that
//!
//! - takes CBS `put-token` requests on `$cbs` and checks the shared access signature with the
//!   known key (its own HMAC-SHA256 code, not sluice's): `sr` must name the hub, `skn` the
//!   policy, `se` must lie ahead, `sig` must match; else it answers 401;
//! - refuses a partition link before a valid token (`amqp:unauthorized-access`) and a wrong
//!   address (`amqp:not-found`); addresses are `<hub>/ConsumerGroups/<cg>/Partitions/<n>`;
//! - starts a partition link after the `apache.org:selector-filter:string` filter
//!   (`amqp.annotation.x-opt-offset > 'N'`, `…x-opt-sequence-number > N`,
//!   `…x-opt-enqueued-time > MS`, `'-1'`, `'@latest'`);
//! - sends each event settled, with the message annotations Event Hubs documents:
//!   `x-opt-offset` (string), `x-opt-sequence-number` (long), `x-opt-enqueued-time`
//!   (timestamp), `x-opt-partition-key` (string, when the event has one).
//!
//! An event's sequence number is its index in its partition; its offset is `1000 + 10 * index`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SaslAnonymousMechanism, SessionAcceptor,
};
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErr};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Timestamp, Value};
use fe2o3_amqp::{Receiver, Sendable, Sender};
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

struct State {
    hub: String,
    key_name: String,
    key: String,
    partitions: Mutex<Vec<Vec<Event>>>,
    added: Notify,
    log: Mutex<Vec<String>>,
    put_tokens: AtomicUsize,
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
        let state = Arc::new(State {
            hub: hub.to_owned(),
            key_name: key_name.to_owned(),
            key: key.to_owned(),
            partitions: Mutex::new(partitions),
            added: Notify::new(),
            log: Mutex::default(),
            put_tokens: AtomicUsize::new(0),
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

    /// What happened so far, one line per event: `put-token accepted …`, `put-token refused …`,
    /// `attach <address> filter <selector>`, `refused link …`.
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }

    /// How many put-token requests were answered 202.
    pub fn accepted_tokens(&self) -> usize {
        self.state.put_tokens.load(Ordering::SeqCst)
    }

    /// A connection string for this server (`UseDevelopmentEmulator=true`: plain AMQP).
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

struct Conn {
    st: Arc<State>,
    authorized: AtomicBool,
    responses: Mutex<Option<mpsc::UnboundedReceiver<Message<AmqpValue<Value>>>>>,
    respond: mpsc::UnboundedSender<Message<AmqpValue<Value>>>,
}

async fn connection_main(mut conn: ListenerConnectionHandle, st: Arc<State>) {
    let (respond, rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Conn {
        st,
        authorized: AtomicBool::new(false),
        responses: Mutex::new(Some(rx)),
        respond,
    });
    let sessions = SessionAcceptor::new();
    while let Ok(session) = sessions.accept(&mut conn).await {
        tokio::spawn(session_main(session, ctx.clone()));
    }
    let _ = conn.on_close().await;
}

async fn session_main(mut session: ListenerSessionHandle, ctx: Arc<Conn>) {
    let links = LinkAcceptor::new();
    while let Ok(link) = links.accept(&mut session).await {
        match link {
            LinkEndpoint::Receiver(r) => {
                tokio::spawn(cbs_requests(r, ctx.clone()));
            }
            LinkEndpoint::Sender(s) => {
                let address = s
                    .source()
                    .as_ref()
                    .and_then(|s| s.address.clone())
                    .unwrap_or_default();
                if address == "$cbs" {
                    tokio::spawn(cbs_responses(s, ctx.clone()));
                } else {
                    tokio::spawn(partition_main(s, address, ctx.clone()));
                }
            }
        }
    }
    let _ = session.on_end().await;
}

/// Checks a `SharedAccessSignature sr=…&sig=…&se=…&skn=…` token; `Err` says why not.
fn check_token(st: &State, audience: &str, token: &str) -> Result<(), String> {
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
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|e| e.to_string())
    };
    let sr = decode(sr_raw)?;
    if sr != audience || !sr.ends_with(&format!("/{}", st.hub)) || !sr.starts_with("sb://") {
        return Err(format!(
            "sr {sr:?} does not name the hub (audience {audience:?})"
        ));
    }
    if decode(skn)? != st.key_name {
        return Err("unknown policy".into());
    }
    let expiry: u64 = se.parse().map_err(|_| "se is not a number")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if expiry <= now {
        return Err("the token has expired".into());
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(st.key.as_bytes()).unwrap();
    mac.update(format!("{sr_raw}\n{se}").as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if decode(sig_raw)? != want {
        return Err("InvalidSignature: the token's signature does not match".into());
    }
    Ok(())
}

async fn cbs_requests(mut r: Receiver, ctx: Arc<Conn>) {
    while let Ok(d) = r.recv::<Body<Value>>().await {
        let _ = r.accept(&d).await;
        let m = d.into_message();
        let props = m.application_properties.as_ref().map(|a| &a.0);
        let text = |k: &str| match props.and_then(|p| p.get(k)) {
            Some(SimpleValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        let (operation, kind, name) = (text("operation"), text("type"), text("name"));
        let token = match &m.body {
            Body::Value(v) => match &v.0 {
                Value::String(s) => s.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let verdict = if operation != "put-token" {
            Err(format!("unknown operation {operation:?}"))
        } else if kind != "servicebus.windows.net:sastoken" {
            Err(format!("unknown token type {kind:?}"))
        } else {
            check_token(&ctx.st, &name, &token)
        };
        let (code, description) = match &verdict {
            Ok(()) => {
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
        let id = m
            .properties
            .as_ref()
            .and_then(|p| p.message_id.clone())
            .unwrap_or(MessageId::Ulong(0));
        let response = Message::builder()
            .properties(Properties::builder().correlation_id(id).build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", code)
                    .insert("status-description", description)
                    .build(),
            )
            .value(Value::Null)
            .build();
        let _ = ctx.respond.send(response);
    }
}

async fn cbs_responses(mut s: Sender, ctx: Arc<Conn>) {
    let Some(mut rx) = ctx.responses.lock().unwrap().take() else {
        return;
    };
    while let Some(m) = rx.recv().await {
        if s.send(m).await.is_err() {
            return;
        }
    }
}

/// The index of the first event after the selector `expr`.
fn start_index(expr: &str, events: &[Event]) -> Result<usize, String> {
    let (field, rest) = expr
        .split_once(" > ")
        .map(|(f, r)| (f.trim(), r.trim()))
        .ok_or_else(|| format!("unsupported selector {expr:?}"))?;
    let value = rest.trim_matches('\'');
    let n = events.len();
    Ok(match field {
        "amqp.annotation.x-opt-offset" => match value {
            "-1" => 0,
            "@latest" => n,
            v => {
                let after: i64 = v.parse().map_err(|_| format!("bad offset {v:?}"))?;
                (0..n)
                    .find(|&i| offset_of(i).parse::<i64>().unwrap() > after)
                    .unwrap_or(n)
            }
        },
        "amqp.annotation.x-opt-sequence-number" => {
            let after: i64 = value.parse().map_err(|_| "bad sequence number")?;
            (after + 1).clamp(0, n as i64) as usize
        }
        "amqp.annotation.x-opt-enqueued-time" => {
            let after: i64 = value.parse().map_err(|_| "bad time")?;
            events
                .iter()
                .position(|e| e.enqueued_ms > after)
                .unwrap_or(n)
        }
        other => return Err(format!("unsupported selector field {other:?}")),
    })
}

fn selector(s: &Sender) -> Option<String> {
    let filter = s.source().as_ref()?.filter.as_ref()?;
    filter.iter().find_map(|(k, v)| {
        if k.0 != "apache.org:selector-filter:string" {
            return None;
        }
        match v {
            Value::Described(d) => match &d.value {
                Value::String(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        }
    })
}

async fn partition_main(mut s: Sender, address: String, ctx: Arc<Conn>) {
    let st = &ctx.st;
    let refuse = |cond: AmqpError, why: String| {
        st.note(format!("refused link {address}: {why}"));
        AmqpErr::new(cond, Some(why), None)
    };
    if !ctx.authorized.load(Ordering::SeqCst) {
        let e = refuse(
            AmqpError::UnauthorizedAccess,
            "no valid CBS token for this entity".into(),
        );
        let _ = s.close_with_error(e).await;
        return;
    }
    let parts: Vec<&str> = address.split('/').collect();
    let partition = match parts.as_slice() {
        [hub, "ConsumerGroups", cg, "Partitions", n] if *hub == st.hub && !cg.is_empty() => n
            .parse::<usize>()
            .ok()
            .filter(|n| *n < st.partitions.lock().unwrap().len()),
        _ => None,
    };
    let Some(partition) = partition else {
        let e = refuse(AmqpError::NotFound, format!("no entity at {address:?}"));
        let _ = s.close_with_error(e).await;
        return;
    };
    let expr = selector(&s).unwrap_or_else(|| "amqp.annotation.x-opt-offset > '-1'".into());
    let start = {
        let events = st.partitions.lock().unwrap();
        start_index(&expr, &events[partition])
    };
    let mut next = match start {
        Ok(i) => i,
        Err(why) => {
            let e = refuse(AmqpError::InvalidField, why);
            let _ = s.close_with_error(e).await;
            return;
        }
    };
    st.note(format!("attach {address} filter {expr}"));
    loop {
        let event = st.partitions.lock().unwrap()[partition].get(next).cloned();
        let Some(event) = event else {
            let added = st.added.notified();
            let _ = tokio::time::timeout(Duration::from_millis(100), added).await;
            // A detached link is noticed on the next send; an idle one times out here.
            if ctx.respond.is_closed() {
                return;
            }
            continue;
        };
        let mut annotations = MessageAnnotations::builder()
            .insert("x-opt-offset", Value::String(offset_of(next)))
            .insert("x-opt-sequence-number", Value::Long(next as i64))
            .insert(
                "x-opt-enqueued-time",
                Value::Timestamp(Timestamp::from_milliseconds(event.enqueued_ms)),
            );
        if let Some(k) = &event.partition_key {
            annotations = annotations.insert("x-opt-partition-key", Value::String(k.clone()));
        }
        let message = Message::builder()
            .message_annotations(annotations.build())
            .data(Binary::from(event.body.clone()))
            .build();
        let sendable = Sendable::builder().message(message).settled(true).build();
        if s.send(sendable).await.is_err() {
            return;
        }
        next += 1;
    }
}
