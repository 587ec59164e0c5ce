//! The `amqp` receiver's part of duplicate detection (see [`crate::dedup`]): its keys, counting
//! the deliveries the broker marks as redelivered, and taking the duplicates out of a chunk
//! before it is appended.
//!
//! ```toml
//! [source]
//! kind = "amqp"
//! wal = true
//! duplicate-detection = "10m"   # the window: ids seen this long ago or less; "off" turns it off
//! duplicate-ids = 100000        # at most this many ids kept, the oldest forgotten first
//! ```
//!
//! On by default in reliable mode (`wal = true`): a user who asked for nothing lost also wants
//! nothing twice, and a message without an id costs nothing. A sender that gives two different
//! messages the same id within the window loses the second; each batch reports how many it
//! dropped (`duplicates_dropped`), so that shows.

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;

use crate::batch::RecordBatch;
use crate::clock::now_ms;
use crate::dedup::{Filter, Settings};

/// The shortest and longest `duplicate-detection` window (Azure Service Bus allows 20 s to 7
/// days).
const WINDOW_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));

/// The most `duplicate-ids`: about 50 bytes each, twice (the live and the committed window).
const MAX_IDS: u64 = 10_000_000;

/// The `duplicate-detection` and `duplicate-ids` keys of an `amqp` source, checked. `None`:
/// no detection (redeliveries are still counted).
pub fn resolve(
    window: Option<&str>,
    ids: Option<u64>,
    wal: bool,
) -> Result<Option<Settings>, String> {
    let off = window.is_some_and(|w| w.trim() == "off");
    if !wal {
        if window.is_some_and(|_| !off) || ids.is_some() {
            return Err("key `source.duplicate-detection`: needs `wal = true` (the window of message ids is kept in the checkpoint with the batches, which only reliable mode records for an amqp source)".to_owned());
        }
        return Ok(None);
    }
    if off {
        return Ok(None);
    }
    let mut s = Settings::default();
    if let Some(w) = window {
        s.window = humantime::parse_duration(w.trim()).map_err(|e| {
            format!("key `source.duplicate-detection`: {w:?}: {e}; give a duration such as \"10m\", or \"off\"")
        })?;
        if s.window < WINDOW_RANGE.0 || s.window > WINDOW_RANGE.1 {
            return Err(format!(
                "key `source.duplicate-detection`: {w:?} is out of range; give 1s to 7days (default 10m), or \"off\""
            ));
        }
    }
    if let Some(n) = ids {
        if n == 0 || n > MAX_IDS {
            return Err(format!(
                "key `source.duplicate-ids`: {n} is out of range; give 1 to {MAX_IDS} (default {})",
                crate::dedup::DEFAULT_MAX_IDS
            ));
        }
        s.max_ids = n as usize;
    }
    Ok(Some(s))
}

/// Whether the broker marks `message` as redelivered: a delivery count above 0, or a header
/// saying it is not the first acquirer. A message without a header says nothing.
fn redelivered(message: &Message<Body<Value>>) -> bool {
    message
        .header
        .as_ref()
        .is_some_and(|h| h.delivery_count > 0 || !h.first_acquirer)
}

/// What the receive loop does about redeliveries: counts them, and (with detection on) takes
/// the duplicates out of each chunk.
pub(crate) struct Sifter {
    filter: Arc<Filter>,
}

impl Sifter {
    /// A sifter reporting to `filter`.
    pub fn new(filter: Arc<Filter>) -> Self {
        Sifter { filter }
    }

    /// Called for each delivery as it is taken into the chunk.
    pub fn note(&self, message: &Message<Body<Value>>) {
        if redelivered(message) {
            self.filter.redelivered(1);
        }
    }

    /// Takes the records whose id is in the window out of `chunk`, and their deliveries out
    /// of `infos` (one per record, or none on a sender-settled link); returns those
    /// deliveries, which must be accepted too, or the broker sends them again.
    pub fn sift(
        &self,
        chunk: &mut RecordBatch,
        infos: &mut Vec<DeliveryInfo>,
    ) -> Vec<DeliveryInfo> {
        let drop = self.filter.sift(chunk, now_ms());
        if drop.is_empty() {
            return Vec::new();
        }
        let mut dropped = drop.iter().copied().peekable();
        let keep: Vec<u32> = (0..chunk.len())
            .filter(|&i| dropped.next_if_eq(&i).is_none())
            .map(|i| i as u32)
            .collect();
        *chunk = chunk.gather(&keep);
        if infos.len() != keep.len() + drop.len() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(drop.len());
        let mut kept = Vec::with_capacity(keep.len());
        let mut dropped = drop.iter().copied().peekable();
        for (i, info) in infos.drain(..).enumerate() {
            if dropped.next_if_eq(&i).is_some() {
                out.push(info);
            } else {
                kept.push(info);
            }
        }
        *infos = kept;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_on_by_default_in_reliable_mode_and_refused_without_it() {
        assert_eq!(resolve(None, None, true), Ok(Some(Settings::default())));
        assert_eq!(resolve(None, None, false), Ok(None));
        assert_eq!(resolve(Some("off"), None, true), Ok(None));
        assert_eq!(
            resolve(Some("90s"), Some(5000), true),
            Ok(Some(Settings {
                window: Duration::from_secs(90),
                max_ids: 5000
            }))
        );
        let e = resolve(Some("10m"), None, false).unwrap_err();
        assert!(e.contains("needs `wal = true`"), "{e}");
        let e = resolve(Some("ten minutes"), None, true).unwrap_err();
        assert!(e.contains("duplicate-detection"), "{e}");
        let e = resolve(None, Some(0), true).unwrap_err();
        assert!(
            e.contains("duplicate-ids") && e.contains("out of range"),
            "{e}"
        );
    }
}
