//! Producer links of the stand-in: events sent to `<hub>` (spread by partition key, else round
//! robin) or `<hub>/Partitions/<n>`, one message or a batch (message format `0x80013700`, each
//! Data section an encoded message) per delivery; each delivery is accepted once stored.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErr};
use fe2o3_amqp::types::messaging::message::__private::Deserializable;
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;

use super::{Conn, Event};

/// The message format of an Event Hubs batch.
const BATCH_FORMAT: u32 = 0x8001_3700;

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn event_of(m: &Message<Body<Value>>, now_ms: i64) -> Event {
    let body = match &m.body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect(),
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone().into_bytes(),
            Value::Binary(b) => b.to_vec(),
            other => format!("{other:?}").into_bytes(),
        },
        _ => Vec::new(),
    };
    use fe2o3_amqp::types::messaging::annotations::AnnotationKey;
    let key = m
        .message_annotations
        .as_ref()
        .and_then(|a| a.0.get(&"x-opt-partition-key" as &dyn AnnotationKey))
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        });
    Event {
        body,
        partition_key: key,
        enqueued_ms: now_ms,
    }
}

/// The messages of one delivery: the batch's inner messages, or the message itself.
fn messages(
    format: Option<u32>,
    m: Message<Body<Value>>,
) -> Result<Vec<Message<Body<Value>>>, String> {
    if format != Some(BATCH_FORMAT) {
        return Ok(vec![m]);
    }
    let Body::Data(batch) = m.body else {
        return Err("a batch whose body is not Data sections".into());
    };
    batch
        .iter()
        .map(|d| {
            serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(&d.0)
                .map(|x| x.0)
                .map_err(|e| format!("a batch entry is not an AMQP message: {e}"))
        })
        .collect()
}

/// Takes events on one producer link until it closes.
pub(super) async fn producer_main(mut r: Receiver, address: String, ctx: Arc<Conn>) {
    let st = &ctx.st;
    let n = st.partitions.lock().unwrap().len();
    let parts: Vec<&str> = address.split('/').collect();
    let target = match parts.as_slice() {
        [hub] if *hub == st.hub => Some(None),
        [hub, ps, p] if *hub == st.hub && ps.eq_ignore_ascii_case("Partitions") => {
            p.parse::<usize>().ok().filter(|p| *p < n).map(Some)
        }
        _ => None,
    };
    let refuse = |cond: AmqpError, why: String| {
        st.note(format!("refused producer link {address}: {why}"));
        AmqpErr::new(cond, Some(why), None)
    };
    if !ctx.authorized.load(Ordering::SeqCst) {
        let e = refuse(
            AmqpError::UnauthorizedAccess,
            "no valid CBS token for this entity".into(),
        );
        let _ = r.close_with_error(e).await;
        return;
    }
    let Some(target) = target else {
        let e = refuse(
            AmqpError::NotFound,
            format!("The messaging entity '{address}' could not be found"),
        );
        let _ = r.close_with_error(e).await;
        return;
    };
    loop {
        let d = match r.recv::<Body<Value>>().await {
            Ok(d) => d,
            Err(fe2o3_amqp::link::RecvError::MessageDecode(e)) => {
                st.note(format!(
                    "rejected an undecodable delivery on {address}: {}",
                    e.source
                ));
                let why = e.source.to_string();
                let _ = r
                    .reject(
                        e.info,
                        AmqpErr::new(AmqpError::DecodeError, Some(why), None),
                    )
                    .await;
                continue;
            }
            Err(e) => {
                st.note(format!("producer link {address} ended: {e}"));
                break;
            }
        };
        let format = *d.message_format();
        let now = sluice_now_ms();
        let (info, message) = d.into_parts();
        let events: Vec<Event> = match messages(format, message) {
            Ok(ms) => ms.iter().map(|m| event_of(m, now)).collect(),
            Err(why) => {
                st.note(format!("rejected a delivery on {address}: {why}"));
                let _ = r
                    .reject(info, AmqpErr::new(AmqpError::DecodeError, Some(why), None))
                    .await;
                continue;
            }
        };
        {
            let mut parts = st.partitions.lock().unwrap();
            for e in &events {
                let p = match (target, &e.partition_key) {
                    (Some(p), _) => p,
                    (None, Some(k)) => (fnv(k) % n as u64) as usize,
                    (None, None) => st.round_robin.fetch_add(1, Ordering::SeqCst) % n,
                };
                parts[p].push(e.clone());
            }
        }
        st.note(format!("received {} events on {address}", events.len()));
        st.added.notify_waiters();
        let _ = r.accept(info).await;
    }
}

fn sluice_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
