//! A record set aside by its receiver instead of going into a block: longer than the source's
//! `max-record-bytes`. Its bytes are in a side object beside the dead letters; what travels
//! with the block (and becomes its dead-letter line) is this note.

use serde::Serialize;

/// Where a set-aside record was in its source, as its dead letter names it (`source`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Origin {
    /// `files`: the record is `length` bytes of `file` from byte `offset` (its line's first
    /// byte; the newline and a `\r` before it are not part of it).
    File {
        /// The file's name in the source directory.
        file: String,
        /// The byte offset of the record's first byte.
        offset: u64,
    },
    /// `tcp`: the record starts `offset` bytes into connection `connection` from `peer`.
    Tcp {
        /// The address connected to.
        peer: String,
        /// The connection, by the time it was opened (ms since the epoch).
        connection: i64,
        /// The byte offset of the record's first byte on that connection.
        offset: u64,
    },
    /// `amqp`: delivery `delivery` (its number on this link, and its message id when it has
    /// one) from `address`.
    Amqp {
        /// The source address (queue).
        address: String,
        /// The delivery's number on the link (counted from 0 since the link opened).
        delivery: u64,
        /// The message id, when the message has one.
        message_id: Option<String>,
    },
    /// `eventhubs`: the event at this offset and sequence number.
    EventHubs {
        /// `x-opt-offset`.
        offset: String,
        /// `x-opt-sequence-number`.
        sequence_number: i64,
    },
    /// A receiver plugin: the record's index in what one poll returned.
    Plugin {
        /// The plugin.
        plugin: String,
        /// The poll, counted from 0 since the receiver started.
        poll: u64,
        /// The record's index in that poll's batch.
        index: u64,
    },
}

/// A record longer than `max-record-bytes`: where it was, where its bytes are, how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Where it was in its source.
    pub origin: Origin,
    /// Its length in bytes.
    pub length: u64,
    /// The limit it passed (`max-record-bytes`).
    pub limit: u64,
    /// The side object holding its bytes, relative to the dead-letter location
    /// (`<stream>/oversize/<name>.bin`).
    pub object: String,
    /// Its first bytes (at most [`PREVIEW_BYTES`]).
    pub preview: Vec<u8>,
    /// When it was received, ms since the epoch.
    pub timestamp: i64,
    /// The partition offset of the record after it (it has none of its own); set by the block
    /// manager.
    pub offset: u64,
}

/// How many of a set-aside record's first bytes its dead letter shows.
pub const PREVIEW_BYTES: usize = 64;
