//! A column's bytes: a buffer the host owns, or bytes lent to it read-only, such as a plugin's
//! output left in the plugin instance's memory (see `plugin::lend`). Readers see a `[u8]`
//! either way; the first write to lent bytes copies them into an owned buffer.

use std::fmt;
use std::ops::Deref;

/// The bytes of a [`super::BytesColumn`].
#[derive(Clone)]
pub enum Data {
    /// A buffer of the host's own, grown by the receivers and builders.
    Owned(Vec<u8>),
    /// Read-only bytes someone else keeps alive (a reference count; cloning is cheap).
    Lent(bytes::Bytes),
}

impl Data {
    /// An empty owned buffer with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Data::Owned(Vec::with_capacity(bytes))
    }

    /// The owned buffer, copying lent bytes into one first.
    #[inline(always)]
    pub fn to_mut(&mut self) -> &mut Vec<u8> {
        if let Data::Lent(b) = self {
            *self = Data::Owned(b.to_vec());
        }
        match self {
            Data::Owned(v) => v,
            Data::Lent(_) => unreachable!("made owned just above"),
        }
    }

    /// The bytes as an owned buffer (a copy when they are lent).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Data::Owned(v) => v,
            Data::Lent(b) => b.to_vec(),
        }
    }

    /// Whether these bytes are lent (not in a buffer of the host's).
    pub fn is_lent(&self) -> bool {
        matches!(self, Data::Lent(_))
    }

    /// Appends `bytes`.
    #[inline(always)]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.to_mut().extend_from_slice(bytes);
    }

    /// Removes every byte; lent bytes are let go.
    pub fn clear(&mut self) {
        match self {
            Data::Owned(v) => v.clear(),
            Data::Lent(_) => *self = Data::Owned(Vec::new()),
        }
    }

    /// The bytes held: an owned buffer's capacity, or the length of lent bytes (what they
    /// keep alive of their owner is counted by the owner).
    pub fn capacity(&self) -> usize {
        match self {
            Data::Owned(v) => v.capacity(),
            Data::Lent(b) => b.len(),
        }
    }
}

impl Default for Data {
    fn default() -> Self {
        Data::Owned(Vec::new())
    }
}

impl Deref for Data {
    type Target = [u8];

    #[inline(always)]
    fn deref(&self) -> &[u8] {
        match self {
            Data::Owned(v) => v,
            Data::Lent(b) => b,
        }
    }
}

impl AsRef<[u8]> for Data {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Data {
    fn from(v: Vec<u8>) -> Self {
        Data::Owned(v)
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Data {}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lent_bytes_read_like_owned_ones_and_a_write_copies_them_first() {
        let lent = bytes::Bytes::from_static(b"abc");
        let mut d = Data::Lent(lent.clone());
        assert_eq!(d, Data::from(b"abc".to_vec()));
        assert_eq!(&d[1..], b"bc");
        assert!(d.is_lent());
        d.extend_from_slice(b"d");
        assert!(!d.is_lent());
        assert_eq!(&*d, b"abcd");
        assert_eq!(&lent[..], b"abc", "the lender's bytes are untouched");
        let mut e = Data::Lent(lent);
        e.clear();
        assert!(e.is_empty() && !e.is_lent());
    }
}
