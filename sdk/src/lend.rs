//! Lending a transformation's output to the host: the allocator [`export_transform!`] installs
//! in a WebAssembly build keeps the output's big buffers alive after the call has returned.
//!
//! After `transform` returns, the component model's `post-return` frees the returned lists,
//! and a freed buffer's first bytes become the allocator's bookkeeping. A host that reads the
//! output values where they lie, instead of copying them out during the call, needs them
//! unchanged until it calls the instance again. So while the output is out (from the moment
//! the glue hands it back until the next allocation, which only a next call makes), this
//! allocator holds back the freeing of buffers of at least [`LEND_MIN`] bytes, and frees them
//! at that next allocation. The output values are the first list `post-return` frees, so they
//! are always among those held.
//!
//! A component built this way carries the custom section [`SECTION`]; the host lends only
//! from components that do, only values of at least [`LEND_MIN`] bytes, and never calls an
//! instance while its output is lent. The SDK's `lend-output` feature (on by default) adds
//! both; a plugin that sets its own `#[global_allocator]` turns it off
//! (`default-features = false`: two global allocators do not link), and its output is then
//! copied out as before.
//!
//! [`export_transform!`]: crate::export_transform

#![allow(unsafe_code)]

/// What `export_transform!` adds with the `lend-output` feature (on by default): the
/// allocator, and the section that tells the host.
#[cfg(feature = "lend-output")]
#[doc(hidden)]
#[macro_export]
macro_rules! __lend_output {
    () => {
        #[global_allocator]
        static __SLUICE_ALLOC: $crate::lend::LendingAlloc = $crate::lend::LendingAlloc;
        #[unsafe(link_section = "sluice:lends-output")]
        #[used]
        static __SLUICE_LENDS: [u8; 1] = *b"1";
    };
}

/// Without the `lend-output` feature, `export_transform!` adds nothing: the plugin keeps its
/// own global allocator, and the host copies its output.
#[cfg(not(feature = "lend-output"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __lend_output {
    () => {};
}

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// The smallest buffer the host borrows instead of copying (smaller ones cost less to copy
/// than an instance held out of the host's pool), and the smallest one held back here.
pub const LEND_MIN: usize = 64 << 10;

/// The custom section that says a component keeps its output valid until its next call.
pub const SECTION: &str = "sluice:lends-output";

/// How many buffers can be held back at once. Before the output's values are freed (the first
/// list `post-return` frees, fields in order), at most the input's other columns are (nine
/// lists, when the glue hands the input's own values back); beyond this many, a buffer is
/// freed at once, which is safe for any after the values.
const HELD: usize = 32;

/// The global allocator `export_transform!` installs in a WebAssembly build: the system
/// allocator, holding back the freeing of big buffers while an output is out.
#[derive(Debug, Default)]
pub struct LendingAlloc;

struct Held {
    /// Set when the glue hands an output back; cleared (after freeing what was held) at the
    /// next allocation.
    out: bool,
    bufs: [(usize, Layout); HELD],
    len: usize,
}

struct State(UnsafeCell<Held>);

// SAFETY: a WebAssembly component instance runs one thread; nothing here is shared between
// threads in any build that installs the allocator.
unsafe impl Sync for State {}

static STATE: State = State(UnsafeCell::new(Held {
    out: false,
    bufs: [(0, Layout::new::<u8>()); HELD],
    len: 0,
}));

/// Called by the glue as it hands `transform`'s output back: from now until the next
/// allocation, big buffers freed are held back.
pub fn output_out() {
    // SAFETY: one thread (see `State`); no other reference to the state is live here.
    unsafe { (*STATE.0.get()).out = true };
}

impl LendingAlloc {
    /// Frees what was held back, once the next call has begun (its first allocation).
    ///
    /// # Safety
    /// Called from the allocator only, on the instance's one thread.
    unsafe fn release(&self) {
        let held = unsafe { &mut *STATE.0.get() };
        if !held.out {
            return;
        }
        held.out = false;
        for &(ptr, layout) in &held.bufs[..held.len] {
            unsafe { System.dealloc(ptr as *mut u8, layout) };
        }
        held.len = 0;
    }
}

// SAFETY: every block comes from and goes back to `System`, with its own layout; a held
// block is freed exactly once, at the next allocation.
unsafe impl GlobalAlloc for LendingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe {
            self.release();
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe {
            self.release();
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let held = unsafe { &mut *STATE.0.get() };
        if held.out && layout.size() >= LEND_MIN && held.len < HELD {
            held.bufs[held.len] = (ptr as usize, layout);
            held.len += 1;
            return;
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    // Not releasing here: handing the output back shrinks its lists to their length
    // (`into_boxed_slice`), which reallocates after `output_out`; only a new call allocates.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The state is one static, so the steps run in one test, in order.
    #[test]
    fn big_buffers_freed_while_an_output_is_out_stay_unchanged_until_the_next_allocation() {
        let a = LendingAlloc;
        let big = Layout::from_size_align(LEND_MIN, 8).unwrap();
        let small = Layout::from_size_align(64, 8).unwrap();
        unsafe {
            let out = a.alloc(big);
            out.write_bytes(7, LEND_MIN);
            // Something after it, so that freeing it would not merely grow the free space at
            // the heap's end: the system allocator would write its free-list links into it.
            let after = a.alloc(small);
            output_out();
            a.dealloc(out, big); // held: the host may be reading it
            a.dealloc(after, small); // small: freed at once
            assert_eq!((*STATE.0.get()).len, 1);
            let bytes = std::slice::from_raw_parts(out, LEND_MIN);
            assert!(
                bytes.iter().all(|&b| b == 7),
                "the held buffer is unchanged"
            );
            let filler = a.alloc(small); // a next call: the held buffer goes
            assert_eq!((*STATE.0.get()).len, 0);
            assert!(!(*STATE.0.get()).out);
            a.dealloc(filler, small);
            // Outside an output's time, big buffers are freed at once.
            let again = a.alloc(big);
            a.dealloc(again, big);
            assert_eq!((*STATE.0.get()).len, 0);
        }
    }
}
