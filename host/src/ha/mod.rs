//! High availability across hosts: several `sluice run` processes of one pipeline share its
//! source partitions through records in the object store that already holds the checkpoints,
//! with no coordinator (the way Azure's Event Hubs processors share partitions through
//! ownership blobs).
//!
//! - [`lease`]: who should read a partition. `ownership/<p>/<generation>.json`; claimed,
//!   renewed and stolen only by creating the next generation if absent.
//! - [`balance`]: which partitions a host claims or steals each claim interval (a pure
//!   function: greedy, toward a fair share).
//! - [`chain`]: where a partition stands, and the fence. Every commit of a partition's records
//!   by any host creates the next link of that partition's chain, `partitions/<p>/<seq>.json`,
//!   if absent; a new owner first creates a link of its own (the takeover), so a stale owner's
//!   next commit of that partition collides and is refused.
//!
//! Each process is a *member* with an id of its own (a fresh one per start, as Event Hubs
//! processors use a GUID): its own checkpoint log under `members/<id>/` and its own stream of
//! output, so the batch ids of different hosts never collide.

pub mod balance;
pub mod chain;
pub mod claim;
pub mod lease;

use std::time::Duration;

use serde::Deserialize;

/// `[ha]`: several hosts share the pipeline's partitions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HaConfig {
    /// `claim-interval`: how often a host renews its leases and claims toward its fair share.
    /// Default `"10s"`.
    #[serde(default = "default_claim", with = "humantime_serde")]
    pub claim_interval: Duration,
    /// `lease-expiry`: how long a lease lasts without renewal: a dead host's partitions move
    /// after it. Default `"30s"`; longer than `claim-interval`.
    #[serde(default = "default_expiry", with = "humantime_serde")]
    pub lease_expiry: Duration,
    /// `owner`: the name this host's member id starts with. Default: the host name and the
    /// process id. A random suffix is always added: each start is a new member.
    #[serde(default)]
    pub owner: Option<String>,
}

fn default_claim() -> Duration {
    Duration::from_secs(10)
}

fn default_expiry() -> Duration {
    Duration::from_secs(30)
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            claim_interval: default_claim(),
            lease_expiry: default_expiry(),
            owner: None,
        }
    }
}

impl HaConfig {
    /// Checks the keys; called when the pipeline file is read. The message names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.claim_interval < Duration::from_millis(100) {
            return Err(format!(
                "key `ha.claim-interval`: {} is below the minimum of 100ms",
                humantime::format_duration(self.claim_interval)
            ));
        }
        if self.lease_expiry <= self.claim_interval {
            return Err(format!(
                "key `ha.lease-expiry`: {} must be longer than `ha.claim-interval` ({}): a host renews its leases once per claim interval, so a lease that expires sooner would lapse while its host is alive and the partition would change hands for nothing; give at least twice the claim interval",
                humantime::format_duration(self.lease_expiry),
                humantime::format_duration(self.claim_interval)
            ));
        }
        if let Some(o) = &self.owner
            && (o.is_empty()
                || !o
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        {
            return Err(format!(
                "key `ha.owner`: {o:?} must be non-empty letters, digits, '-', '_' or '.' (it names objects in the store)"
            ));
        }
        Ok(())
    }
}

/// A fresh member id: `name` (default: the host name and the process id), then a random suffix,
/// so that a restarted host never takes its predecessor's leases or log for its own.
pub fn member_id(name: Option<&str>) -> String {
    let base = match name {
        Some(n) => n.to_owned(),
        None => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| {
                    h.trim()
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect::<String>()
                })
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "host".to_owned());
            format!("{host}-{}", std::process::id())
        }
    };
    format!("{base}-{:08x}", random_u32())
}

/// 32 random-enough bits (time, process id and a stack address, hashed); no rand crate.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_not_longer_than_the_claim_interval_is_refused_naming_both_keys() {
        let c = HaConfig {
            claim_interval: Duration::from_secs(10),
            lease_expiry: Duration::from_secs(10),
            owner: None,
        };
        let msg = c.check().unwrap_err();
        assert!(
            msg.contains("ha.lease-expiry") && msg.contains("ha.claim-interval"),
            "{msg}"
        );
        assert!(msg.contains("10s") && msg.contains("renews"), "{msg}");
        assert!(HaConfig::default().check().is_ok());
    }

    #[test]
    fn member_ids_are_fresh_per_call() {
        let a = member_id(Some("web"));
        let b = member_id(Some("web"));
        assert!(a.starts_with("web-") && a != b, "{a} {b}");
    }
}
