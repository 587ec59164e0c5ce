//! The Event Hubs `$management` node: a `READ` of type `com.microsoft:eventhub` gives the hub's
//! partition ids, which is where an `eventhubs` source without `partitions` learns its
//! partition count (as Microsoft's clients do: `get_partition_ids`).
//!
//! The request carries `operation = "READ"`, `type`, `name` (the hub) and `security_token` (a
//! SAS token for the hub) as application properties; the answer's `status-code` is 200 and
//! its body a map with `partition_count` and `partition_ids`.

use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, Message};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp_management::client::MgmtClient;
use fe2o3_amqp_management::error::Error as MgmtError;
use fe2o3_amqp_management::request::Request;
use fe2o3_amqp_management::response::Response;

use super::Link;
use crate::secret::Secret;

/// The management node's address.
pub const MANAGEMENT_NODE: &str = "$management";
/// The entity type of a hub.
pub const EVENTHUB_TYPE: &str = "com.microsoft:eventhub";

/// `READ` of the hub `name`, authorized by `token`.
struct ReadHub {
    name: String,
    token: Secret,
}

/// The hub's description: how many partitions it has.
struct HubInfo {
    partitions: u32,
}

impl Request for ReadHub {
    const OPERATION: &'static str = "READ";
    type Response = HubInfo;
    type Body = AmqpValue<Value>;

    fn manageable_entity_type(&mut self) -> Option<String> {
        Some(EVENTHUB_TYPE.to_owned())
    }

    fn encode_application_properties(&mut self) -> Option<ApplicationProperties> {
        Some(
            ApplicationProperties::builder()
                .insert("name", SimpleValue::String(self.name.clone()))
                .insert(
                    "security_token",
                    SimpleValue::String(self.token.expose().to_owned()),
                )
                .build(),
        )
    }

    fn encode_body(self) -> Self::Body {
        AmqpValue(Value::Null)
    }
}

fn field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    match map {
        Value::Map(m) => m.iter().find_map(|(k, v)| match k {
            Value::String(s) | Value::Symbol(fe2o3_amqp::types::primitives::Symbol(s))
                if s == key =>
            {
                Some(v)
            }
            _ => None,
        }),
        _ => None,
    }
}

impl Response for HubInfo {
    const STATUS_CODE: u16 = 200;
    type Body = AmqpValue<Value>;
    type Error = MgmtError;

    fn decode_message(message: Message<Self::Body>) -> Result<Self, Self::Error> {
        let body = &message.body.0;
        let ids = match field(body, "partition_ids") {
            Some(Value::List(l)) => Some(l.len()),
            Some(Value::Array(a)) => Some(a.0.len()),
            _ => None,
        };
        let count = match field(body, "partition_count") {
            Some(Value::Int(n)) => usize::try_from(*n).ok(),
            Some(Value::Long(n)) => usize::try_from(*n).ok(),
            Some(Value::Uint(n)) => Some(*n as usize),
            _ => None,
        };
        let partitions = ids.or(count).ok_or_else(|| {
            MgmtError::DecodeError(Some(fe2o3_amqp_management::error::InvalidType {
                expected: "a map with partition_ids or partition_count".to_owned(),
                actual: format!("{body:?}"),
            }))
        })?;
        Ok(HubInfo {
            partitions: partitions as u32,
        })
    }
}

/// Asks the `$management` node of `conn` for the partition count of hub `hub`, authorized by
/// `token`. `Err` says what failed, with the status the service answered.
pub async fn partition_count(
    conn: &mut Link,
    container: &str,
    hub: &str,
    token: Secret,
) -> Result<u32, String> {
    let mut client = MgmtClient::builder()
        .management_node_address(MANAGEMENT_NODE)
        .client_node_addr(format!("{container}-mgmt"))
        .attach(&mut conn.session)
        .await
        .map_err(|e| format!("attaching the $management node: {e}"))?;
    let request = ReadHub {
        name: hub.to_owned(),
        token: token.clone(),
    };
    let answer = tokio::time::timeout(super::NET_TIMEOUT, client.call(request)).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.close()).await;
    match answer {
        Err(_) => Err("the $management READ got no answer".to_owned()),
        Ok(Ok(HubInfo { partitions })) => Ok(partitions),
        Ok(Err(MgmtError::Status(s))) => Err(format!(
            "the $management READ of hub `{hub}` was refused (status {}{}{})",
            s.code.0.get(),
            if s.description.is_some() { ": " } else { "" },
            token.scrub(s.description.as_deref().unwrap_or_default())
        )),
        Ok(Err(e)) => Err(format!(
            "the $management READ of hub `{hub}`: {}",
            token.scrub(&e.to_string())
        )),
    }
}
