//! The Azure SDK's checkpoint store on Azure Blob, as Microsoft's Event Hubs processors keep it
//! (`azure-eventhub-checkpointstoreblob` for Python, `Azure.Messaging.EventHubs.Processor` for
//! .NET), so that sluice can take over from a consumer group's processor and Azure's tools see
//! sluice's progress (`checkpoint-store = "az://<container>"` on an `eventhubs` source).
//!
//! The layout, learned from the Python library's `_blobstoragecs.py` and judged by it in the
//! tests (`tests/it/eventhubs_checkpoints.rs`):
//!
//! - one blob per partition, at the container's root, its whole name lower-cased:
//!   `<fully qualified namespace>/<event hub>/<consumer group>/checkpoint/<partition>` and
//!   `…/ownership/<partition>`;
//! - empty content; what matters is in the blob's metadata: `offset` and `sequencenumber` (a
//!   checkpoint: the last event processed; a processor resumes *after* it), `ownerid` (an
//!   ownership; `""` once released);
//! - ownership is claimed by a conditional write: `If-Match: <etag>` of the blob as last seen,
//!   or `If-None-Match: *` when there was none; a 412 or 409 means another owner wrote first.
//!
//! The fully qualified namespace is the connection string's `Endpoint` as Python reads it: its
//! host, with `:port` when the endpoint names a port other than the default. Nothing here
//! ever holds a key or a token: the blob store's own credentials come from the environment.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{
    Attribute, Attributes, GetOptions, PutMode, PutOptions, PutPayload, UpdateVersion,
};

use super::config::{AmqpEndpoint, EventHubsConfig};
use super::eventhubs::{EventHubsSource, Position};
use crate::receiver::{BuildContext, BuildError, ReceiverError};
use crate::store::Location;

/// The pipeline key this store comes from, for messages.
pub const KEY: &str = "source.checkpoint-store";

/// A claim newer than this, by another owner, is said in the log when sluice takes the
/// partition over (the processors' own ownership expiry is 2 to 3 minutes).
const RECENT: Duration = Duration::from_secs(60);

/// One partition's ownership blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The partition.
    pub partition: u32,
    /// `ownerid`; empty when released.
    pub owner_id: String,
    /// The blob's ETag: the condition of the next claim.
    pub etag: Option<String>,
    /// When it was last claimed or renewed, ms since the epoch.
    pub last_modified_ms: i64,
}

/// Why a claim did not take.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// Another owner wrote the blob since its ETag was read (412 or 409): the partition is
    /// theirs until they let it go or their claim expires.
    #[error(
        "the ownership of partition {partition} at {blob} changed since it was read: another owner claimed it"
    )]
    Lost {
        /// The partition.
        partition: u32,
        /// Its ownership blob.
        blob: String,
    },
    /// The store did not answer as expected; the claim may be tried again.
    #[error("ownership of partition {partition} at {blob}: {message}")]
    Store {
        /// The partition.
        partition: u32,
        /// Its ownership blob.
        blob: String,
        /// What the store said.
        message: String,
    },
}

/// An Azure SDK checkpoint store: one event hub and consumer group in one container.
#[derive(Debug)]
pub struct AzureCheckpointStore {
    at: Location,
    namespace: String,
    hub: String,
    consumer_group: String,
    owner_id: String,
    /// The partitions this store's claims hold, with the ETag of the last write.
    held: Mutex<HashMap<u32, String>>,
}

/// The fully qualified namespace the Azure SDKs name in blob names: `host` or `host:port`
/// (the `Endpoint`'s network location, as Python's `urlparse(endpoint).netloc`).
pub fn namespace_of(endpoint: &AmqpEndpoint) -> String {
    let default = if endpoint.tls { 5671 } else { 5672 };
    if endpoint.port == default {
        endpoint.host.clone()
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    }
}

/// A fresh owner id, shaped like the processors' (a version-4 UUID), from the standard
/// library's random hasher keys.
pub fn new_owner_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u32(std::process::id());
        h.write_i64(crate::clock::now_ms());
        h.finish()
    };
    let (a, b) = (word(1), word(2));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

impl AzureCheckpointStore {
    /// The store of `checkpoint-store = spec` for `cfg`'s hub and consumer group, claiming as
    /// `owner_id`. Refuses anything but an Azure Blob container's root.
    pub fn resolve(
        spec: &str,
        cfg: &EventHubsConfig,
        base: &Path,
        owner_id: String,
    ) -> Result<Self, String> {
        let scheme = spec.trim().split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("az" | "azure" | "abfs" | "abfss")) {
            return Err(format!(
                "key `{KEY}`: {spec:?} is not an Azure Blob container; give az://<container> (the Azure SDK's checkpoint store lives in Azure Blob; `checkpoint-dir` keeps checkpoints anywhere else)"
            ));
        }
        let path = url::Url::parse(spec.trim())
            .map(|u| u.path().trim_matches('/').to_owned())
            .unwrap_or_default();
        if !path.is_empty() {
            return Err(format!(
                "key `{KEY}`: {spec:?} names a path inside the container ({path}); the Azure SDK's checkpoint store keeps its blobs at the container's root: give az://<container>"
            ));
        }
        let at = Location::resolve(spec, KEY, base, false)?;
        Ok(Self::new(
            at,
            namespace_of(&cfg.endpoint),
            &cfg.hub,
            &cfg.consumer_group,
            owner_id,
        ))
    }

    /// The store at `at` (a container's root) for `hub` and `consumer_group` of `namespace`.
    pub fn new(
        at: Location,
        namespace: String,
        hub: &str,
        consumer_group: &str,
        owner_id: String,
    ) -> Self {
        AzureCheckpointStore {
            at,
            namespace,
            hub: hub.to_owned(),
            consumer_group: consumer_group.to_owned(),
            owner_id,
            held: Mutex::default(),
        }
    }

    /// The owner id this host claims partitions as.
    pub fn owner_id(&self) -> &str {
        &self.owner_id
    }

    /// The blob name of `partition`'s `kind` (`checkpoint` or `ownership`), lower-cased as the
    /// SDKs do.
    pub fn blob_name(&self, kind: &str, partition: u32) -> String {
        format!(
            "{}/{}/{}/{kind}/{partition}",
            self.namespace, self.hub, self.consumer_group
        )
        .to_lowercase()
    }

    /// Where the `kind` blobs of every partition are.
    fn dir(&self, kind: &str) -> StorePath {
        let name = format!(
            "{}/{}/{}/{kind}",
            self.namespace, self.hub, self.consumer_group
        );
        self.at.child(&name.to_lowercase())
    }

    fn path(&self, kind: &str, partition: u32) -> StorePath {
        self.at.child(&self.blob_name(kind, partition))
    }

    /// Checks the container answers (a listing of this hub's blobs).
    pub async fn reach(&self) -> Result<(), String> {
        let prefix = self.dir("checkpoint");
        self.at
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map(|_| ())
            .map_err(|e| format!("key `{KEY}`: {} cannot be reached: {e}", self.at))
    }

    /// The metadata and ETag of `kind`'s blob of `partition`; `None` when there is none.
    async fn head(
        &self,
        kind: &str,
        partition: u32,
    ) -> Result<Option<(Attributes, Option<String>, i64)>, String> {
        let path = self.path(kind, partition);
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.at.store.get_opts(&path, opts).await {
            Ok(r) => Ok(Some((
                r.attributes,
                r.meta.e_tag,
                r.meta.last_modified.timestamp_millis(),
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(format!("blob {path} in {}: {e}", self.at)),
        }
    }

    /// `partition`'s checkpoint as a processor left it: the last event it processed (a
    /// restart resumes after it); `None` when there is none.
    pub async fn load_checkpoint(&self, partition: u32) -> Result<Option<Position>, String> {
        let Some((attrs, _, _)) = self.head("checkpoint", partition).await? else {
            return Ok(None);
        };
        let meta = |k: &'static str| {
            attrs
                .get(&Attribute::Metadata(k.into()))
                .map(|v| v.as_ref().to_owned())
        };
        let blob = self.blob_name("checkpoint", partition);
        let offset = meta("offset").unwrap_or_default();
        let sequence_number = match meta("sequencenumber") {
            Some(s) => s.trim().parse::<i64>().map_err(|_| {
                format!(
                    "checkpoint blob {blob}: its `sequencenumber` metadata {s:?} is not a number"
                )
            })?,
            None if offset.is_empty() => {
                return Err(format!(
                    "checkpoint blob {blob}: has neither `offset` nor `sequencenumber` metadata; not an Event Hubs checkpoint"
                ));
            }
            None => -1,
        };
        Ok(Some(Position {
            offset,
            sequence_number,
            enqueued_time_ms: 0,
        }))
    }

    /// Writes `partition`'s checkpoint at `position` (already committed): metadata `offset`
    /// and `sequencenumber`, empty content.
    pub async fn store_checkpoint(
        &self,
        partition: u32,
        position: &Position,
    ) -> Result<(), String> {
        let path = self.path("checkpoint", partition);
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata("offset".into()),
            position.offset.clone().into(),
        );
        attributes.insert(
            Attribute::Metadata("sequencenumber".into()),
            position.sequence_number.to_string().into(),
        );
        let opts = PutOptions {
            mode: PutMode::Overwrite,
            attributes,
            ..Default::default()
        };
        self.at
            .store
            .put_opts(&path, PutPayload::new(), opts)
            .await
            .map(|_| ())
            .map_err(|e| format!("checkpoint blob {path} in {}: {e}", self.at))
    }

    /// `partition`'s ownership blob; `None` when nobody ever claimed it.
    pub async fn ownership(&self, partition: u32) -> Result<Option<Ownership>, OwnershipError> {
        let found = self
            .head("ownership", partition)
            .await
            .map_err(|message| self.store_error(partition, message))?;
        Ok(found.map(|(attrs, etag, last_modified_ms)| Ownership {
            partition,
            owner_id: attrs
                .get(&Attribute::Metadata("ownerid".into()))
                .map(|v| v.as_ref().to_owned())
                .unwrap_or_default(),
            etag,
            last_modified_ms,
        }))
    }

    /// Every ownership blob of this hub and consumer group, read one by one.
    pub async fn list_ownership(&self) -> Result<Vec<Ownership>, OwnershipError> {
        let prefix = self.dir("ownership");
        let listed: Vec<_> = self
            .at
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.store_error(0, e.to_string()))?;
        let mut out = Vec::new();
        for o in listed {
            let Some(p) = o.location.filename().and_then(|f| f.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(own) = self.ownership(p).await? {
                out.push(own);
            }
        }
        out.sort_by_key(|o| o.partition);
        Ok(out)
    }

    /// Claims `partition` for `owner` by a conditional write: `If-Match: etag` (the blob as
    /// the caller last saw it), or `If-None-Match: *` when `etag` is `None` (nobody claimed it
    /// yet). On success the claim is held (for [`Self::renew`], when `owner` is this store's
    /// owner id; any other write lets it go) and its new ETag returned;
    /// [`OwnershipError::Lost`] when another owner wrote first. This is the Python
    /// processor's `claim_ownership` of one partition, and the call HA leases build on.
    pub async fn claim(
        &self,
        partition: u32,
        owner: &str,
        etag: Option<&str>,
    ) -> Result<Ownership, OwnershipError> {
        let path = self.path("ownership", partition);
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata("ownerid".into()),
            owner.to_owned().into(),
        );
        let mode = match etag {
            Some(e) => PutMode::Update(UpdateVersion {
                e_tag: Some(e.to_owned()),
                version: None,
            }),
            None => PutMode::Create,
        };
        let opts = PutOptions {
            mode,
            attributes,
            ..Default::default()
        };
        match self.at.store.put_opts(&path, PutPayload::new(), opts).await {
            Ok(r) => {
                let etag = r.e_tag;
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                match &etag {
                    Some(e) if owner == self.owner_id => {
                        held.insert(partition, e.clone());
                    }
                    _ => {
                        held.remove(&partition);
                    }
                }
                Ok(Ownership {
                    partition,
                    owner_id: owner.to_owned(),
                    etag,
                    last_modified_ms: crate::clock::now_ms(),
                })
            }
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotFound { .. },
            ) => {
                if owner == self.owner_id || owner.is_empty() {
                    self.forget(partition);
                }
                Err(OwnershipError::Lost {
                    partition,
                    blob: self.blob_name("ownership", partition),
                })
            }
            Err(e) => Err(self.store_error(partition, e.to_string())),
        }
    }

    /// Renews `owner`'s held claim on `partition` (a conditional write on the ETag of its last
    /// write); [`OwnershipError::Lost`] when another owner took it since, or it was not held.
    pub async fn renew(&self, partition: u32, owner: &str) -> Result<Ownership, OwnershipError> {
        let etag = self
            .held_etag(partition)
            .ok_or_else(|| OwnershipError::Lost {
                partition,
                blob: self.blob_name("ownership", partition),
            })?;
        self.claim(partition, owner, Some(&etag)).await
    }

    /// Lets `partition` go, as a processor does when it stops: `ownerid` set to `""` on the
    /// held claim. Nothing when it is not held.
    pub async fn release(&self, partition: u32) -> Result<(), OwnershipError> {
        match self.held_etag(partition) {
            Some(etag) => self.claim(partition, "", Some(&etag)).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Takes `partition` for this host whoever holds it (one host reads every partition):
    /// a claim on the blob's current ETag, read again once if another writer came between.
    pub async fn take_over(&self, partition: u32) -> Result<Ownership, OwnershipError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let current = self.ownership(partition).await?;
            if let Some(o) = &current
                && !o.owner_id.is_empty()
                && o.owner_id != self.owner_id
                && crate::clock::now_ms() - o.last_modified_ms < RECENT.as_millis() as i64
            {
                tracing::warn!(partition, owner_id = %o.owner_id, blob = %self.blob_name("ownership", partition), "Taking over a partition that another owner claimed less than a minute ago; a processor still running with that owner id would fight over it.");
            }
            let etag = current.as_ref().and_then(|o| o.etag.as_deref());
            match self.claim(partition, &self.owner_id, etag).await {
                Err(OwnershipError::Lost { .. }) if tries < 3 => continue,
                other => return other,
            }
        }
    }

    fn held_etag(&self, partition: u32) -> Option<String> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .cloned()
    }

    fn forget(&self, partition: u32) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&partition);
    }

    fn store_error(&self, partition: u32, message: String) -> OwnershipError {
        OwnershipError::Store {
            partition,
            blob: self.blob_name("ownership", partition),
            message,
        }
    }
}

/// With `checkpoint-store`: the store, reached (a listing), with a fresh owner id for this
/// process. Called when the `eventhubs` source is built; claims nothing yet.
pub fn build(
    cfg: &EventHubsConfig,
    ctx: &mut BuildContext<'_>,
) -> Result<Option<AzureCheckpointStore>, BuildError> {
    let Some(spec) = &cfg.checkpoint_store else {
        return Ok(None);
    };
    let store = AzureCheckpointStore::resolve(spec, cfg, ctx.base, new_owner_id())?;
    ctx.handle
        .block_on(store.reach())
        .map_err(BuildError::Unreachable)?;
    tracing::info!(owner_id = %store.owner_id(), container = %store.at, namespace = %store.namespace, hub = %store.hub, consumer_group = %store.consumer_group, "Event Hubs checkpoints and ownership go to the Azure SDK's checkpoint store.");
    Ok(Some(store))
}

/// The receivers' side: claim before reading, renew with each checkpoint, let go on stop.
impl EventHubsSource {
    /// Before `partition`'s receiver attaches: takes its ownership blob (single host: every
    /// partition). A store that does not answer is a transient failure (the receiver is
    /// restarted); without `checkpoint-store`, nothing.
    pub async fn take_ownership(&self, partition: u32) -> Result<(), ReceiverError> {
        let Some(az) = &self.azure else {
            return Ok(());
        };
        if az.held_etag(partition).is_some() {
            return Ok(());
        }
        match az.take_over(partition).await {
            Ok(_) => {
                tracing::info!(partition, owner_id = %az.owner_id(), blob = %az.blob_name("ownership", partition), "Claimed the partition's ownership blob in the Azure checkpoint store.");
                Ok(())
            }
            Err(e) => Err(ReceiverError::Transient(e.to_string())),
        }
    }

    /// With each checkpoint of `partition`: renews its claim; a lost claim is taken back (one
    /// host reads every partition) and said in the log.
    pub async fn renew_ownership(&self, partition: u32) {
        let Some(az) = &self.azure else { return };
        match az.renew(partition, az.owner_id()).await {
            Ok(_) => {}
            Err(OwnershipError::Lost { .. }) => {
                tracing::warn!(partition, blob = %az.blob_name("ownership", partition), "Another owner wrote the partition's ownership blob; taking it back (sluice reads every partition of the event hub).");
                if let Err(e) = az.take_over(partition).await {
                    tracing::warn!(partition, error = %e, "The partition's ownership could not be claimed again; trying at the next checkpoint.");
                }
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "The partition's ownership could not be renewed; trying at the next checkpoint.")
            }
        }
    }

    /// When `partition`'s receiver stops: releases its ownership blob (`ownerid` `""`), so a
    /// processor can take it at once.
    pub async fn release_ownership(&self, partition: u32) {
        let Some(az) = &self.azure else { return };
        if let Err(e) = az.release(partition).await {
            tracing::warn!(partition, error = %e, "The partition's ownership could not be released; it expires by itself.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn endpoint(host: &str, port: u16, tls: bool) -> AmqpEndpoint {
        AmqpEndpoint {
            tls,
            host: host.into(),
            port,
            user: None,
            password: Secret::default(),
        }
    }

    #[test]
    fn the_namespace_is_the_endpoint_host_with_a_port_only_when_it_names_one() {
        assert_eq!(
            namespace_of(&endpoint("myns.servicebus.windows.net", 5671, true)),
            "myns.servicebus.windows.net"
        );
        assert_eq!(
            namespace_of(&endpoint("localhost", 5672, false)),
            "localhost"
        );
        assert_eq!(
            namespace_of(&endpoint("127.0.0.1", 40123, false)),
            "127.0.0.1:40123"
        );
    }

    #[test]
    fn blob_names_are_lower_cased_as_the_sdks_write_them() {
        let tmp = tempfile::tempdir().unwrap();
        let at = Location::resolve(tmp.path().to_str().unwrap(), "k", tmp.path(), false).unwrap();
        let s = AzureCheckpointStore::new(
            at,
            "MyNs.servicebus.windows.net".into(),
            "Hub1",
            "$Default",
            "o".into(),
        );
        assert_eq!(
            s.blob_name("checkpoint", 3),
            "myns.servicebus.windows.net/hub1/$default/checkpoint/3"
        );
        assert_eq!(
            s.blob_name("ownership", 0),
            "myns.servicebus.windows.net/hub1/$default/ownership/0"
        );
    }

    #[test]
    fn the_key_takes_a_container_root_only_and_not_beside_checkpoint_dir() {
        let text = |extra: &str| {
            format!(
                "version = 1\n[source]\nkind = \"eventhubs\"\nconnection-string = \"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b;EntityPath=h\"\npartitions = 2\n{extra}\n[[sink]]\nkind = \"stdout\"\n"
            )
        };
        let parse = |extra: &str| {
            crate::config::PipelineFile::parse(&text(extra), Path::new("p.toml"))
                .map_err(|e| e.to_string())
        };
        let f = parse("checkpoint-store = \"az://ckpt\"").unwrap();
        let crate::receiver::SourceConfig::EventHubs(cfg) = &f.source else {
            panic!("{:?}", f.source)
        };
        assert_eq!(cfg.checkpoint_store.as_deref(), Some("az://ckpt"));
        let err = parse("checkpoint-store = \"az://ckpt\"\ncheckpoint-dir = \"d\"").unwrap_err();
        assert!(
            err.contains("source.checkpoint-store") && err.contains("give one of them"),
            "{err}"
        );
        for (spec, says) in [
            ("az://ckpt/some/prefix", "container's root"),
            ("/tmp/ckpt", "not an Azure Blob container"),
            ("s3://bucket", "not an Azure Blob container"),
        ] {
            let err =
                AzureCheckpointStore::resolve(spec, cfg, Path::new("/"), "o".into()).unwrap_err();
            assert!(err.contains(KEY) && err.contains(says), "{spec}: {err}");
        }
    }

    #[test]
    fn a_checkpoint_without_an_offset_resumes_after_its_sequence_number() {
        use super::super::config::StartPosition;
        use super::super::eventhubs::selector;
        let p = Position {
            offset: String::new(),
            sequence_number: 41,
            enqueued_time_ms: 0,
        };
        assert_eq!(
            selector(Some(&p), &StartPosition::Earliest),
            "amqp.annotation.x-opt-sequence-number > 41"
        );
    }

    #[test]
    fn owner_ids_look_like_version_4_uuids_and_differ() {
        let (a, b) = (new_owner_id(), new_owner_id());
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{a}");
        assert_eq!(&a[14..15], "4", "{a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}
