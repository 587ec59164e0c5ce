//! Messages whose body is longer than the source's `max-record-bytes`: the pump takes each out
//! of its chunk as it arrives, and at the chunk's append writes its body to a side object,
//! sets it aside (its dead letter names the queue and the delivery, or the Event Hubs offset
//! and sequence number) and accepts it: its bytes are kept, in the side object, so the
//! broker may forget it.

use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;

use super::{Dialect, message_id_text};
use crate::batch::RecordBatch;
use crate::batch::aside::Origin;
use crate::receiver::oversize::RecordLimit;
use crate::receiver::{PartitionWriter, Position, ReceiverError};

/// The messages of a chunk that passed the limit, waiting for the chunk's append.
#[derive(Default)]
pub(crate) struct LongMessages {
    limit: Option<(RecordLimit, String)>,
    /// When the link opened (ms): `amqp` side objects are named by it and the delivery.
    opened: i64,
    /// Deliveries taken on the link.
    delivered: u64,
    waiting: Vec<(Vec<u8>, Option<DeliveryInfo>, Origin)>,
}

impl LongMessages {
    /// Bodies longer than `limit` on the link from `address` are set aside.
    pub fn new(limit: Option<RecordLimit>, address: &str) -> Self {
        LongMessages {
            limit: limit.map(|l| (l, address.to_owned())),
            opened: crate::clock::now_ms(),
            ..LongMessages::default()
        }
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// After `message` was pushed to `chunk` at index `at`: takes it out again if its value
    /// is past the limit, keeping its delivery to accept. Returns the delivery back when it
    /// stays in the chunk.
    pub fn take_if_long(
        &mut self,
        chunk: &mut RecordBatch,
        at: usize,
        message: &Message<Body<Value>>,
        info: Option<DeliveryInfo>,
        dialect: &dyn Dialect,
    ) -> Option<DeliveryInfo> {
        let delivery = self.delivered;
        self.delivered += 1;
        let Some((limit, address)) = &self.limit else {
            return info;
        };
        if chunk.len() <= at || !limit.over(chunk.value(at).len()) {
            return info;
        }
        let value = chunk.value(at).to_vec();
        *chunk = chunk.slice(0..at);
        let origin = dialect.origin(message).unwrap_or_else(|| Origin::Amqp {
            address: address.clone(),
            delivery,
            message_id: message
                .properties
                .as_ref()
                .and_then(|p| p.message_id.as_ref())
                .map(message_id_text),
        });
        self.waiting.push((value, info, origin));
        None
    }

    /// Writes each waiting body to its side object, sets it aside (at `position`, where the
    /// source stands after the chunk) and accepts its delivery.
    pub async fn set_aside(
        &mut self,
        link: &fe2o3_amqp::Receiver,
        out: &PartitionWriter,
        position: Option<Position>,
    ) -> Result<(), ReceiverError> {
        let Some((limit, _)) = &self.limit else {
            return Ok(());
        };
        for (value, info, origin) in std::mem::take(&mut self.waiting) {
            let name = match &origin {
                Origin::EventHubs {
                    sequence_number, ..
                } => format!("eventhubs-p{}-{sequence_number}", out.partition),
                Origin::Amqp { delivery, .. } => {
                    format!("amqp-p{}-{}-{delivery}", out.partition, self.opened)
                }
                _ => format!("p{}-{}", out.partition, crate::clock::now_ms()),
            };
            let note = limit.set_aside(&name, &value, origin).await?;
            out.set_aside(note, position.clone(), false).await;
            if let Some(info) = info {
                link.accept(info).await.map_err(|e| {
                    ReceiverError::Transient(format!("accepting a delivery set aside: {e}"))
                })?;
            }
        }
        Ok(())
    }
}
