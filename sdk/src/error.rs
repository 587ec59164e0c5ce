//! Why a call failed: [`Error`].

use std::fmt;

use crate::output::Origin;

/// One input record a plugin could not process, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    /// The index of the record in the input batch.
    pub index: u32,
    /// Why it was rejected, for a person to read.
    pub reason: String,
}

/// Why a call failed. Each kind tells the host what it may do next.
///
/// ```
/// use sluice_sdk::Error;
///
/// let e = Error::retryable("the server is busy");
/// assert_eq!(e.to_string(), "retryable: the server is busy");
/// assert!(matches!(Error::bad_record(3, "not JSON"), Error::BadRecord(r) if r.index == 3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A passing failure (a busy downstream, a timeout): the host retries the same call on a
    /// fresh instance, with backoff, a bounded number of times.
    Retryable(String),
    /// The plugin cannot go on (a bad parameter, a broken invariant): the host stops the
    /// pipeline and names the plugin and the batch.
    Fatal(String),
    /// One record made the whole call fail: the host dead-letters that record and calls again
    /// with the rest of the batch. Prefer [`crate::Output::reject`], which needs no second call.
    BadRecord(BadRecord),
}

impl Error {
    /// A passing failure: retrying the call may succeed.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }

    /// A failure that retrying cannot help.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal(message.into())
    }

    /// Input record `record` (a [`crate::Record`] or its index) made the call fail.
    pub fn bad_record(record: impl Origin, reason: impl Into<String>) -> Self {
        Self::BadRecord(BadRecord {
            index: record.origin_index(),
            reason: reason.into(),
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retryable(m) => write!(f, "retryable: {m}"),
            Self::Fatal(m) => write!(f, "fatal: {m}"),
            Self::BadRecord(r) => write!(f, "bad record {}: {}", r.index, r.reason),
        }
    }
}

impl std::error::Error for Error {}
