//! A bare `fe2o3-amqp` consumer and publisher, for `sluice bench amqp`: what one link on this
//! broker can do with no pipeline behind it (manual credit refilled at half the window,
//! accepts batched into one disposition per range), the ceiling the receiver is measured
//! against.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::types::messaging::{Body, Header, Message, Properties};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::{Sendable, Sender};

use super::{attach, connect};
use crate::receiver::amqp::config::AmqpEndpoint;

/// What a benchmark run measured.
#[derive(Debug, Clone, Copy)]
pub struct BenchReport {
    /// Messages moved.
    pub messages: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// From the first to the last message.
    pub elapsed: Duration,
}

impl BenchReport {
    /// Messages per second.
    pub fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Publishes `n` durable messages of `size` bytes to `address`, `window` unsettled at once.
/// Each message's id is `<prefix>-<i>`.
pub async fn publish(
    endpoint: &AmqpEndpoint,
    address: &str,
    prefix: &str,
    n: u64,
    size: usize,
    window: usize,
) -> Result<BenchReport, String> {
    let container = format!("sluice-bench-pub-{}", std::process::id());
    let mut conn = connect(endpoint, &container)
        .await
        .map_err(|e| e.to_string())?;
    let mut sender = Sender::attach(&mut conn.session, format!("{container}-{address}"), address)
        .await
        .map_err(|e| format!("attaching a sender to {address:?}: {e}"))?;
    let payload = vec![b'x'; size];
    let started = Instant::now();
    let mut inflight = VecDeque::new();
    for i in 0..n {
        let message = Message::builder()
            .header(Header::builder().durable(true).build())
            .properties(
                Properties::builder()
                    .message_id(format!("{prefix}-{i}"))
                    .build(),
            )
            .data(Binary::from(payload.clone()))
            .build();
        let fut = sender
            .send_batchable(Sendable::builder().message(message).build())
            .await
            .map_err(|e| format!("sending: {e}"))?;
        inflight.push_back(fut);
        if inflight.len() >= window
            && let Some(f) = inflight.pop_front()
        {
            f.await.map_err(|e| format!("sending: {e}"))?;
        }
    }
    for f in inflight {
        f.await.map_err(|e| format!("sending: {e}"))?;
    }
    let elapsed = started.elapsed();
    let _ = sender.close().await;
    conn.close().await;
    Ok(BenchReport {
        messages: n,
        bytes: n * size as u64,
        elapsed,
    })
}

/// Consumes `n` messages from `address` with a bare link: manual credit `credit`, granted
/// again each time half of it is used, and accepts sent every `accept_batch` deliveries.
pub async fn consume(
    endpoint: &AmqpEndpoint,
    address: &str,
    n: u64,
    credit: u32,
    accept_batch: usize,
) -> Result<BenchReport, String> {
    let container = format!("sluice-bench-sub-{}", std::process::id());
    let mut conn = connect(endpoint, &container)
        .await
        .map_err(|e| e.to_string())?;
    let mut link = attach(&mut conn.session, address, &container, credit, None, false)
        .await
        .map_err(|e| e.to_string())?;
    let mut got = 0u64;
    let mut bytes = 0u64;
    let mut since_grant = 0u32;
    let mut batch: Vec<DeliveryInfo> = Vec::with_capacity(accept_batch);
    let mut started = None;
    while got < n {
        let d = tokio::time::timeout(Duration::from_secs(10), link.recv::<Body<Value>>())
            .await
            .map_err(|_| format!("no message for 10 s after {got} of {n}"))?
            .map_err(|e| format!("receiving: {e}"))?;
        started.get_or_insert_with(Instant::now);
        let (info, message) = d.into_parts();
        if let Body::Data(sections) = &message.body {
            bytes += sections.iter().map(|s| s.0.len() as u64).sum::<u64>();
        }
        batch.push(info);
        got += 1;
        since_grant += 1;
        if batch.len() >= accept_batch || got == n {
            link.accept_all(std::mem::take(&mut batch))
                .await
                .map_err(|e| format!("accepting: {e}"))?;
        }
        if since_grant >= credit / 2 {
            since_grant = 0;
            link.set_credit(credit)
                .await
                .map_err(|e| format!("granting credit: {e}"))?;
        }
    }
    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
    let _ = link.close().await;
    conn.close().await;
    Ok(BenchReport {
        messages: got,
        bytes,
        elapsed,
    })
}
