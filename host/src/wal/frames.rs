//! The buffers of the frames on their way to a segment, reused.
//!
//! Why (issue #16): every block's frame is a copy of the block, a few MiB at full speed, and a
//! fresh allocation that size comes straight from the kernel, zeroed page by page on first
//! write. The profile of upper-case over TCP with the log (no fsync) had 11.5% of all samples
//! in those page faults. A frame's buffer goes back here once its segment is written, and the
//! next block is encoded into memory already mapped.

use std::sync::Mutex;

use bytes::Bytes;

/// At most this many buffers wait here, so a burst of small blocks leaves few behind.
const MAX_BUFFERS: usize = 16;

/// Buffers of written frames, for the next blocks to be encoded into.
#[derive(Debug)]
pub(super) struct FramePool {
    /// The most bytes the buffers waiting here may hold together: about what the frames in
    /// flight hold at most anyway, so reuse adds nothing to the log's peak memory.
    max_bytes: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl FramePool {
    pub(super) fn new(max_bytes: usize) -> Self {
        FramePool {
            max_bytes,
            free: Mutex::new(Vec::new()),
        }
    }

    /// A buffer for a frame of about `len` bytes: the smallest one here that holds it, or
    /// else the largest (the encoder replaces a buffer too small), or else a new empty one.
    pub(super) fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let fits = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let pick = fits.or_else(|| {
            free.iter()
                .enumerate()
                .max_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
        });
        pick.map(|i| free.swap_remove(i)).unwrap_or_default()
    }

    /// Takes back a buffer (dropped when the pool is full).
    pub(super) fn give(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = free.iter().map(Vec::capacity).sum();
        if free.len() < MAX_BUFFERS && held + buf.capacity() <= self.max_bytes {
            free.push(buf);
        }
    }

    /// Takes back a written frame's buffer when nothing else holds the frame any more.
    pub(super) fn give_frame(&self, frame: Bytes) {
        if let Ok(buf) = frame.try_into_mut() {
            self.give(buf.into());
        }
    }

    /// Bytes the buffers waiting here hold.
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        let free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_frame_gives_its_allocation_to_the_next_block() {
        let pool = FramePool::new(1 << 20);
        let mut buf = pool.take(1000);
        buf.reserve_exact(1000);
        buf.extend_from_slice(&[7; 600]);
        let at = buf.as_ptr();
        let frame = Bytes::from(buf);
        let clone = frame.clone();
        pool.give_frame(frame);
        assert_eq!(
            pool.held_bytes(),
            0,
            "a frame still shared is not taken back"
        );
        pool.give_frame(clone);
        let again = pool.take(900);
        assert_eq!(again.as_ptr(), at, "the same allocation, no copy");
        assert!(again.capacity() >= 1000);
    }

    #[test]
    fn the_smallest_buffer_that_fits_is_taken_else_the_largest() {
        let pool = FramePool::new(1 << 20);
        for cap in [100, 5000, 2000] {
            pool.give(Vec::with_capacity(cap));
        }
        assert!((2000..5000).contains(&pool.take(1500).capacity()));
        assert!(pool.take(9000).capacity() >= 5000);
        assert!((100..2000).contains(&pool.take(10).capacity()));
        assert_eq!(pool.take(10).capacity(), 0, "empty: a new buffer");
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_bytes_and_buffers() {
        let pool = FramePool::new(10_000);
        pool.give(Vec::with_capacity(6000));
        pool.give(Vec::with_capacity(6000));
        assert!(pool.held_bytes() >= 6000 && pool.held_bytes() <= 10_000);
        let pool = FramePool::new(usize::MAX);
        for _ in 0..MAX_BUFFERS + 5 {
            pool.give(Vec::with_capacity(10));
        }
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS);
    }
}
