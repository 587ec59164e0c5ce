//! What can go wrong with the write-ahead log.

/// What can go wrong with the log. Each says whether retrying can help
/// ([`WalError::is_retryable`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// The store could not list the log's segments.
    #[error("WAL {prefix}: cannot list the segments: {message}")]
    List {
        /// The log's prefix.
        prefix: String,
        /// The store's error.
        message: String,
    },
    /// A segment could not be read.
    #[error("WAL segment {path}: cannot read it: {message}")]
    Read {
        /// The segment.
        path: String,
        /// The store's error.
        message: String,
    },
    /// A segment has a format version this host does not read.
    #[error(
        "WAL segment {path}: format version {found}, but this sluice reads versions 1 to {supported}; \
         it was written by a newer sluice (run that one), or its header is damaged"
    )]
    UnknownVersion {
        /// The segment.
        path: String,
        /// The version it says.
        found: u32,
        /// The newest version this host reads.
        supported: u32,
    },
    /// A block cannot be encoded (its columns do not line up, or it is over 4 GiB).
    #[error(
        "WAL: block at partition {partition} offset {first_offset} cannot be written: {message}"
    )]
    Block {
        /// The partition.
        partition: u32,
        /// The block's first offset.
        first_offset: u64,
        /// Why.
        message: String,
    },
    /// Writing a segment failed; the blocks in it are not durable.
    #[error("WAL segment {path}: write failed: {message}")]
    Write {
        /// The segment.
        path: String,
        /// The store's error.
        message: String,
    },
    /// Another writer claimed this log: a newer [`Wal::open`] (another driver, or a restart
    /// of this one) took it over, so this writer stops writing for good.
    #[error(
        "WAL {prefix}: {}; another driver took over this log, so this one stops writing (fenced)",
        fence_reason(*epoch, *newer)
    )]
    Fenced {
        /// The log's prefix.
        prefix: String,
        /// The epoch this writer holds (or tried to claim, when opening).
        epoch: u64,
        /// The newer epoch found (equal to `epoch` when another writer claimed that same epoch
        /// at the same moment).
        newer: u64,
    },
    /// An epoch object cannot be read as one: without it, which segments are stale is unknown.
    #[error("WAL epoch object {path}: {message}")]
    BadEpoch {
        /// The object.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Deleting a checkpointed segment failed.
    #[error("WAL segment {path}: cannot delete it: {message}")]
    Delete {
        /// The segment.
        path: String,
        /// The store's error.
        message: String,
    },
    /// The log's writer task is gone (the runtime is shutting down).
    #[error("WAL: the writer has stopped")]
    Closed,
}

impl WalError {
    /// Whether trying again can help: a store's failure can pass; a fenced log, a newer
    /// format or a malformed block cannot.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            WalError::List { .. }
                | WalError::Read { .. }
                | WalError::Write { .. }
                | WalError::Delete { .. }
        )
    }
}

fn fence_reason(epoch: u64, newer: u64) -> String {
    if newer > epoch {
        format!("epoch {newer} was claimed after this writer's epoch {epoch}")
    } else {
        format!("another writer claimed epoch {epoch} at the same moment")
    }
}

/// `Result` with [`WalError`].
pub type Result<T> = std::result::Result<T, WalError>;
