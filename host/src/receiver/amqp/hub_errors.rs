//! What an Event Hubs error condition means for a partition's receiver: retry (a reconnect can
//! pass), let the partition go (another reader took it), apply the expired-offset policy, or
//! stop with a message (a reconnect would fail the same way).
//!
//! | condition | verdict |
//! |---|---|
//! | `amqp:link:stolen` | let the partition go: a reader with the same or a higher owner level holds it |
//! | `com.microsoft:argument-out-of-range` | the position is older than the retention: `on-expired-offset` |
//! | `amqp:unauthorized-access` | stop: the SAS token expired or was refused (a broken renewal) |
//! | `amqp:not-found`, `com.microsoft:argument-error`, `amqp:invalid-field`, `amqp:not-allowed`, `amqp:not-implemented` | stop |
//! | `com.microsoft:server-busy`, `amqp:resource-limit-exceeded`, `com.microsoft:timeout`, a lost connection, anything else | retry with backoff |

use super::config::EventHubsConfig;
use crate::receiver::ReceiverError;

/// The condition of a reader displaced by one with a higher owner level.
pub const LINK_STOLEN: &str = "amqp:link:stolen";
/// The condition of a position older than the retention.
pub const ARGUMENT_OUT_OF_RANGE: &str = "com.microsoft:argument-out-of-range";
/// The condition of a throttled or busy namespace.
pub const SERVER_BUSY: &str = "com.microsoft:server-busy";
/// The condition of a missing, expired or refused token.
pub const UNAUTHORIZED: &str = "amqp:unauthorized-access";

/// Conditions a reconnect cannot cure.
const STOPPING: [&str; 5] = [
    "amqp:not-found",
    "com.microsoft:argument-error",
    "amqp:invalid-field",
    "amqp:not-allowed",
    "amqp:not-implemented",
];

/// What a failed attach or receive means.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Reconnect with backoff.
    Retry(String),
    /// Another reader holds the partition with a higher owner level: stop this receiver.
    Lost(String),
    /// The position asked for is older than the retention.
    Expired(String),
    /// Stop the pipeline with this message.
    Stop(String),
}

/// Classifies `e`, a failure of partition `partition`'s link, by the condition its text
/// carries (the receive loop and the attach put it there as the wire symbol).
pub fn classify(cfg: &EventHubsConfig, partition: u32, e: ReceiverError) -> Verdict {
    let (fatal, text) = match e {
        ReceiverError::Fatal(t) => (true, t),
        ReceiverError::Transient(t) => (false, t),
    };
    let at = format!(
        "event hubs {}/{} partition {partition}",
        cfg.endpoint.host, cfg.hub
    );
    if text.contains(LINK_STOLEN) {
        return Verdict::Lost(format!("{at}: {text}"));
    }
    if text.contains(ARGUMENT_OUT_OF_RANGE) {
        return Verdict::Expired(format!("{at}: {text}"));
    }
    if text.contains(UNAUTHORIZED) {
        return Verdict::Stop(format!(
            "{at}: the service closed the link because the SAS token of policy `{}` is no longer valid (expired, or its renewal was refused): {text}",
            cfg.key_name
        ));
    }
    if let Some(c) = STOPPING.iter().find(|c| text.contains(*c)) {
        return Verdict::Stop(format!("{at}: {c} cannot pass by retrying: {text}"));
    }
    if fatal {
        return Verdict::Stop(text);
    }
    Verdict::Retry(format!("{at}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::amqp::config::RawEventHubs;
    use crate::secret::Secret;

    fn cfg() -> EventHubsConfig {
        let cs = Secret::new(
            "Endpoint=sb://ns.example/;SharedAccessKeyName=listen;SharedAccessKey=k;EntityPath=hub",
        );
        RawEventHubs {
            stream: "input".into(),
            connection_string: Some(&cs),
            ..RawEventHubs::default()
        }
        .resolve()
        .unwrap()
    }

    #[test]
    fn conditions_are_classified_into_retry_let_go_expired_and_stop() {
        let c = cfg();
        let t = |s: &str| classify(&c, 3, ReceiverError::Transient(s.to_owned()));
        assert!(
            matches!(t("the broker detached the link: com.microsoft:server-busy: busy"), Verdict::Retry(m) if m.contains("partition 3"))
        );
        assert!(matches!(t("the connection was lost"), Verdict::Retry(_)));
        assert!(matches!(
            t("detached: amqp:link:stolen: epoch 2"),
            Verdict::Lost(_)
        ));
        assert!(matches!(
            t("x com.microsoft:argument-out-of-range: old"),
            Verdict::Expired(_)
        ));
        assert!(
            matches!(t("x amqp:unauthorized-access: ExpiredToken"), Verdict::Stop(m) if m.contains("SAS token") && m.contains("`listen`"))
        );
        assert!(matches!(t("x amqp:not-found: no hub"), Verdict::Stop(_)));
        let refused = classify(&c, 0, ReceiverError::Fatal("refused the SAS token".into()));
        assert_eq!(refused, Verdict::Stop("refused the SAS token".into()));
    }
}
