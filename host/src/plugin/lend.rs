//! Borrowing a transformation's output values where the guest left them, instead of copying
//! them out of its memory: the second of the two copies a call made (about 20 µs a megabyte
//! here, a third of an `uppercase` call).
//!
//! A component lends when it says so with the custom section [`sluice_sdk::lend::SECTION`]:
//! the Rust SDK's `export_transform!` adds it, with an allocator that keeps the output's big
//! buffers unchanged until the instance's next call (`post-return` would otherwise free them,
//! and a freed buffer's first bytes become the allocator's). The host then:
//!
//! - borrows only values of at least [`sluice_sdk::lend::LEND_MIN`] bytes (smaller ones cost
//!   less to copy than an instance held out of the pool);
//! - keeps the instance out of its stage's pool while any of the batch's bytes are alive
//!   ([`Lent`]), so nothing calls it, and nothing can move or change its memory; and gives it
//!   back when the last reference goes;
//! - lends from at most [`MAX_LENT`] instances of a stage at once, copying beyond: instances
//!   are pooling-allocator slots and memory, and that bound keeps both to what a few batches
//!   in flight need;
//! - lends only with the pooling allocator, whose memories never move.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::Instance;

pub(crate) use sluice_sdk::lend::LEND_MIN;

/// The most instances of one stage whose output is lent at once.
pub(crate) const MAX_LENT: usize = 4;

/// Whether the component carries the lending section (`"1"`) in any of its core modules.
/// A component that cannot be parsed does not lend (compiling it says what is wrong).
pub(crate) fn lends_output(component: &[u8]) -> bool {
    let mut found = false;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload {
            Ok(wasmparser::Payload::CustomSection(c))
                if c.name() == sluice_sdk::lend::SECTION && c.data() == b"1" =>
            {
                found = true;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    found
}

/// Where a stage's instances go back to, and how many are lent now.
#[derive(Default)]
pub(crate) struct Home {
    pub(crate) idle: Mutex<Vec<Instance>>,
    pub(crate) lent: AtomicUsize,
}

impl Home {
    /// A place among the [`MAX_LENT`] lent instances, unless all are taken.
    pub(crate) fn slot(self: &Arc<Self>) -> Option<Slot> {
        self.lent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LENT).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                home: Some(self.clone()),
            })
    }

    /// Puts an idle instance back in the pool.
    pub(crate) fn give_back(&self, inst: Instance) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(inst);
        }
    }

    fn unlend(&self) {
        self.lent.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A place among a stage's lent instances, taken before a call that may lend; given back when
/// dropped unless [`Slot::lend`] used it.
pub(crate) struct Slot {
    home: Option<Arc<Home>>,
}

impl Slot {
    /// Lends `inst`'s output values, `len` bytes at host address `addr` in its memory; `reuse`:
    /// whether the instance goes back to the pool afterwards (else it is retired).
    pub(crate) fn lend(
        mut self,
        inst: Instance,
        reuse: bool,
        addr: usize,
        len: usize,
    ) -> bytes::Bytes {
        let home = self.home.take().expect("a slot lends once");
        bytes::Bytes::from_owner(Lent {
            inst: Some(inst),
            home,
            reuse,
            addr,
            len,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(home) = &self.home {
            home.unlend();
        }
    }
}

/// An instance held out of its pool while its output values, `len` bytes at host address
/// `addr` inside its memory, are in use: the owner of the [`bytes::Bytes`] [`Slot::lend`]
/// makes.
struct Lent {
    inst: Option<Instance>,
    home: Arc<Home>,
    /// Whether the instance goes back to the pool (else it is retired when let go).
    reuse: bool,
    addr: usize,
    len: usize,
}

impl AsRef<[u8]> for Lent {
    #[allow(unsafe_code)]
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `addr..addr + len` lay inside the instance's linear memory when the call
        // returned (the lift checked it against the memory's bounds). The instance is owned
        // here and never called while lent, so its memory neither grows nor moves (pooling
        // slots are fixed) nor changes: the guest's allocator holds the buffer until its next
        // call (see `sluice_sdk::lend`). The memory lives as long as the instance, which
        // lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(inst) = self.inst.take()
            && self.reuse
        {
            self.home.give_back(inst);
        }
        self.home.unlend();
    }
}

// SAFETY: `Lent` only reads the lent bytes through `&self` (plain immutable memory while the
// instance is not run) and touches the instance only when dropped, through `&mut self`.
#[allow(unsafe_code)]
unsafe impl Sync for Lent {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_lent_are_out_and_a_slot_let_go_makes_room() {
        let home = Arc::new(Home::default());
        let slots: Vec<Slot> = (0..MAX_LENT).map(|_| home.slot().unwrap()).collect();
        assert!(home.slot().is_none(), "the next output is copied");
        drop(slots);
        assert_eq!(home.lent.load(Ordering::Acquire), 0);
        assert!(home.slot().is_some());
    }

    #[test]
    fn only_a_component_with_the_section_lends() {
        // A core module with the section, and one with another custom section.
        let with = wat_module(sluice_sdk::lend::SECTION, b"1");
        let other = wat_module("name-of-something-else", b"1");
        let wrong_version = wat_module(sluice_sdk::lend::SECTION, b"2");
        assert!(lends_output(&with));
        assert!(!lends_output(&other));
        assert!(!lends_output(&wrong_version));
        assert!(
            !lends_output(b"\0asm\x01\0\0\0\x00\xff"),
            "a broken section"
        );
    }

    /// An empty core module with one custom section.
    fn wat_module(name: &str, data: &[u8]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(data);
        m.push(0);
        m.push(body.len() as u8);
        m.extend_from_slice(&body);
        m
    }
}
