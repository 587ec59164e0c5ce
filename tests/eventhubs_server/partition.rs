//! Partition links of the stand-in: the selector filter, owner levels (epochs), the retention,
//! token expiry and server-busy, each closing the link with the service's condition.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErr, ErrorCondition, LinkError};
use fe2o3_amqp::types::messaging::{Message, MessageAnnotations};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Timestamp, Value};
use fe2o3_amqp::{Sendable, Sender};

use super::{Conn, Event, Reader, State, offset_of};

/// The condition of a position older than the retention.
pub const ARGUMENT_OUT_OF_RANGE: &str = "com.microsoft:argument-out-of-range";
/// The condition of a throttled or busy namespace.
pub const SERVER_BUSY: &str = "com.microsoft:server-busy";

fn custom(cond: &str, why: String) -> AmqpErr {
    AmqpErr::new(ErrorCondition::Custom(Symbol::from(cond)), Some(why), None)
}

/// The index of the first event the selector `expr` gives, or why it cannot be served
/// (`Err((condition, description))`). `retained`: the index of the oldest retained event.
fn start_index(expr: &str, events: &[Event], retained: usize) -> Result<usize, (AmqpErr, String)> {
    let invalid = |why: String| {
        (
            AmqpErr::new(AmqpError::InvalidField, Some(why.clone()), None),
            why,
        )
    };
    let (field, op, rest) = [" >= ", " > "]
        .iter()
        .find_map(|op| {
            expr.split_once(op)
                .map(|(f, r)| (f.trim(), op.trim(), r.trim()))
        })
        .ok_or_else(|| invalid(format!("unsupported selector {expr:?}")))?;
    let inclusive = op == ">=";
    let value = rest.trim_matches('\'');
    let n = events.len();
    let first = |pred: &dyn Fn(usize) -> bool| (0..n).find(|&i| pred(i)).unwrap_or(n);
    let index = match field {
        "amqp.annotation.x-opt-offset" => match value {
            "-1" => return Ok(retained.min(n)),
            "@latest" => return Ok(n),
            v => {
                let at: i64 = v
                    .parse()
                    .map_err(|_| invalid(format!("bad offset {v:?}")))?;
                let off = |i: usize| offset_of(i).parse::<i64>().unwrap_or(0);
                first(&|i| if inclusive { off(i) >= at } else { off(i) > at })
            }
        },
        "amqp.annotation.x-opt-sequence-number" => {
            let at: i64 = value
                .parse()
                .map_err(|_| invalid(format!("bad sequence number {value:?}")))?;
            let from = if inclusive { at } else { at + 1 };
            from.clamp(0, n as i64) as usize
        }
        "amqp.annotation.x-opt-enqueued-time" => {
            let at: i64 = value
                .parse()
                .map_err(|_| invalid(format!("bad time {value:?}")))?;
            let t = |i: usize| events[i].enqueued_ms;
            return Ok(first(&|i| if inclusive { t(i) >= at } else { t(i) > at }).max(retained));
        }
        other => return Err(invalid(format!("unsupported selector field {other:?}"))),
    };
    if index < retained {
        let why = format!(
            "The supplied position ({expr}) is older than the retention: the oldest retained event has offset {} and sequence number {retained}",
            offset_of(retained)
        );
        return Err((custom(ARGUMENT_OUT_OF_RANGE, why.clone()), why));
    }
    Ok(index)
}

fn selector(s: &Sender) -> Option<String> {
    let filter = s.source().as_ref()?.filter.as_ref()?;
    filter.iter().find_map(|(k, v)| {
        if k.0 != "apache.org:selector-filter:string" {
            return None;
        }
        let inner = match v {
            Value::Described(d) => &d.value,
            other => other,
        };
        match inner {
            Value::String(s) => Some(s.clone()),
            Value::Binary(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    })
}

/// Set to the reason when a newer reader takes the link's partition.
type Kick = Arc<Mutex<Option<String>>>;

fn epoch(s: &Sender) -> Option<i64> {
    s.properties(|p| {
        let v = p.as_ref()?.get(&Symbol::from("com.microsoft:epoch"))?;
        match v {
            Value::Long(n) => Some(*n),
            Value::Int(n) => Some(*n as i64),
            Value::Ulong(n) => Some(*n as i64),
            Value::Uint(n) => Some(*n as i64),
            _ => None,
        }
    })
}

/// Registers a reader of `partition` in `cg` with `epoch`: readers with a lower epoch (or
/// none, when this one has one) are kicked; `Err` when a reader with a higher epoch holds it
/// (or one with an epoch, when this one has none).
fn register(
    st: &State,
    partition: usize,
    cg: &str,
    epoch: Option<i64>,
) -> Result<(u64, Kick), String> {
    let mut readers = st.readers.lock().unwrap();
    let rivals = readers
        .iter()
        .filter(|r| r.partition == partition && r.consumer_group == cg);
    for r in rivals.clone() {
        match (r.epoch, epoch) {
            (Some(theirs), Some(mine)) if theirs > mine => {
                return Err(format!(
                    "Receiver with epoch '{mine}' cannot be created as a receiver with epoch '{theirs}' already exists for partition {partition} of consumer group {cg}"
                ));
            }
            (Some(theirs), None) => {
                return Err(format!(
                    "A receiver without an epoch cannot be created as a receiver with epoch '{theirs}' already exists for partition {partition} of consumer group {cg}"
                ));
            }
            _ => {}
        }
    }
    if let Some(mine) = epoch {
        for r in rivals {
            *r.kick.lock().unwrap() = Some(format!(
                "New receiver with higher epoch of '{mine}' is created hence current receiver with epoch '{}' is getting disconnected (partition {partition}, consumer group {cg})",
                r.epoch.map_or("none".to_owned(), |e| e.to_string())
            ));
        }
    }
    let id = st.next_reader.fetch_add(1, Ordering::SeqCst);
    let kick = Arc::new(Mutex::new(None));
    readers.push(Reader {
        id,
        partition,
        consumer_group: cg.to_owned(),
        epoch,
        kick: kick.clone(),
    });
    Ok((id, kick))
}

fn unregister(st: &State, id: u64) {
    st.readers.lock().unwrap().retain(|r| r.id != id);
}

/// Why the link must close now, if it must.
fn must_close(ctx: &Conn, busy_at: u64, kick: &Mutex<Option<String>>) -> Option<AmqpErr> {
    if let Some(why) = kick.lock().unwrap().clone() {
        return Some(AmqpErr::new(LinkError::Stolen, Some(why), None));
    }
    if let Some(why) = ctx.token_expired() {
        return Some(AmqpErr::new(AmqpError::UnauthorizedAccess, Some(why), None));
    }
    if ctx.st.busy.load(Ordering::SeqCst) != busy_at {
        return Some(custom(
            SERVER_BUSY,
            "The server is busy. Please try again later (test knob).".into(),
        ));
    }
    None
}

/// Serves one partition link until it closes, the connection ends, or a rule closes it.
pub(super) async fn partition_main(mut s: Sender, address: String, ctx: Arc<Conn>) {
    let st = &ctx.st;
    let note_close = |e: &AmqpErr| {
        st.note(format!(
            "closed link {address}: {:?}: {}",
            e.condition,
            e.description.clone().unwrap_or_default()
        ))
    };
    let refuse = |e: AmqpErr| {
        st.note(format!(
            "refused link {address}: {}",
            e.description.clone().unwrap_or_default()
        ));
        e
    };
    if !ctx.authorized.load(Ordering::SeqCst) {
        let e = refuse(AmqpErr::new(
            AmqpError::UnauthorizedAccess,
            Some("no valid CBS token for this entity".into()),
            None,
        ));
        let _ = s.close_with_error(e).await;
        return;
    }
    let parts: Vec<&str> = address.split('/').collect();
    let found = match parts.as_slice() {
        [hub, cgs, cg, ps, n]
            if *hub == st.hub
                && cgs.eq_ignore_ascii_case("ConsumerGroups")
                && ps.eq_ignore_ascii_case("Partitions")
                && !cg.is_empty() =>
        {
            n.parse::<usize>()
                .ok()
                .filter(|n| *n < st.partitions.lock().unwrap().len())
                .map(|n| (n, cg.to_string()))
        }
        _ => None,
    };
    let Some((partition, cg)) = found else {
        let e = refuse(AmqpErr::new(
            AmqpError::NotFound,
            Some(format!(
                "The messaging entity '{address}' could not be found"
            )),
            None,
        ));
        let _ = s.close_with_error(e).await;
        return;
    };
    let expr = selector(&s).unwrap_or_else(|| "amqp.annotation.x-opt-offset > '-1'".into());
    let retained = st.retained_from.lock().unwrap()[partition];
    let start = start_index(&expr, &st.partitions.lock().unwrap()[partition], retained);
    let mut next = match start {
        Ok(i) => i,
        Err((e, _)) => {
            let e = refuse(e);
            let _ = s.close_with_error(e).await;
            return;
        }
    };
    let epoch = epoch(&s);
    let (id, kick) = match register(st, partition, &cg, epoch) {
        Ok(r) => r,
        Err(why) => {
            let e = refuse(AmqpErr::new(LinkError::Stolen, Some(why), None));
            let _ = s.close_with_error(e).await;
            return;
        }
    };
    let busy_at = st.busy.load(Ordering::SeqCst);
    st.note(format!(
        "attach {address} filter {expr} epoch {}",
        epoch.map_or("none".to_owned(), |e| e.to_string())
    ));
    loop {
        if let Some(e) = must_close(&ctx, busy_at, &kick) {
            note_close(&e);
            let _ = s.close_with_error(e).await;
            break;
        }
        let event = st.partitions.lock().unwrap()[partition].get(next).cloned();
        let Some(event) = event else {
            let added = st.added.notified();
            let _ = tokio::time::timeout(Duration::from_millis(100), added).await;
            if ctx.closed.load(Ordering::SeqCst) {
                break;
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
        // `batchable` (a hint the receiver may ignore) puts every field of the Transfer on the
        // wire, as the service does (the Python client's decoder indexes the payload after the
        // last one), and the outcome is not awaited: a receiver settles at its own pace.
        let sent = tokio::time::timeout(Duration::from_secs(30), s.send_batchable(sendable)).await;
        if !matches!(sent, Ok(Ok(_))) {
            break;
        }
        next += 1;
    }
    unregister(st, id);
}
