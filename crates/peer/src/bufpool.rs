//! A bounded pool of reusable chunk buffers for the agent's data path.
//!
//! Every chunk received or served used to get a fresh, zeroed buffer of up to 4 MiB: a
//! `malloc`, a `memset` and, on a VM whose host backs fresh guest pages lazily, a page
//! fault per 4 KiB (together about a tenth of an agent's CPU, see docs/perf). The pool
//! hands the same few buffers round instead. A buffer comes back once its bytes are
//! stored (received chunks) or written to the stream (served chunks); the pool keeps at
//! most `cap` idle buffers and drops the rest, so it never holds more memory than the
//! agent's chunks in flight plus upload slots did at their peak.
//!
//! A buffer taken out holds an earlier chunk's bytes: every user overwrites all of it
//! (`read_exact` into the whole buffer), so only a length beyond what a buffer ever held
//! is zeroed, once, when that buffer grows.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// A shared, bounded set of idle buffers; cloning shares the pool.
#[derive(Debug, Clone)]
pub(crate) struct BufPool {
    idle: Arc<Mutex<Vec<Vec<u8>>>>,
    cap: usize,
}

impl BufPool {
    /// A pool that keeps at most `cap` idle buffers.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            idle: Arc::new(Mutex::new(Vec::with_capacity(cap))),
            cap,
        }
    }

    /// A buffer of exactly `len` bytes, reused if one is idle. Its contents are
    /// unspecified (an earlier chunk's bytes): the caller overwrites all of it. The
    /// caller bounds `len` before asking, as it would before allocating.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        if len == 0 {
            return Vec::new();
        }
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            // Prefer a buffer already as long as asked: nothing of it is zeroed again.
            let fit = idle
                .iter()
                .position(|b| b.len() >= len)
                .or_else(|| idle.len().checked_sub(1));
            fit.map(|i| idle.swap_remove(i))
        };
        let mut buf = reused.unwrap_or_default();
        // Shrinking keeps the bytes; growing zeroes only the part never held before.
        buf.resize(len, 0);
        buf
    }

    /// Gives a buffer back; dropped if the pool already holds `cap` idle ones.
    pub(crate) fn put(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.cap {
            idle.push(buf);
        }
    }

    /// Gives back the buffer under `bytes` if nothing else still shares it.
    pub(crate) fn put_bytes(&self, bytes: Bytes) {
        if let Ok(unique) = bytes.try_into_mut() {
            self.put(Vec::from(unique));
        }
    }

    /// Idle buffers held now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_handed_out_again_without_a_new_allocation() {
        let pool = BufPool::new(2);
        let mut buf = pool.take(4 << 20);
        buf[..5].copy_from_slice(b"chunk");
        let at = buf.as_ptr();
        pool.put_bytes(Bytes::from(buf));
        assert_eq!(pool.idle(), 1);
        let again = pool.take(4 << 20);
        assert_eq!(again.as_ptr(), at, "the same memory comes back");
        // Not zeroed: the previous chunk's bytes are still there, to be overwritten.
        assert_eq!(&again[..5], b"chunk");
        assert_eq!(pool.idle(), 0);
        // A shorter request reuses it too.
        pool.put(again);
        let short = pool.take(1000);
        assert_eq!((short.as_ptr(), short.len()), (at, 1000));
    }

    #[test]
    fn the_pool_keeps_at_most_cap_idle_buffers() {
        let pool = BufPool::new(3);
        let bufs: Vec<_> = (0..10).map(|_| pool.take(1024)).collect();
        for b in bufs {
            pool.put(b);
        }
        assert_eq!(pool.idle(), 3);
        // Buffers still shared elsewhere are not taken back.
        let shared = Bytes::from(pool.take(1024));
        let other = shared.clone();
        pool.put_bytes(shared);
        assert_eq!(pool.idle(), 2);
        drop(other);
        // Empty buffers are not worth keeping.
        pool.put(Vec::new());
        assert_eq!(pool.idle(), 2);
        assert!(pool.take(0).is_empty());
    }

    #[test]
    fn a_buffer_that_fits_is_preferred_over_one_that_must_grow() {
        let pool = BufPool::new(4);
        let (big, small) = (pool.take(8192), pool.take(16));
        let big_at = big.as_ptr();
        pool.put(big);
        pool.put(small);
        let buf = pool.take(8192);
        assert_eq!(buf.as_ptr(), big_at);
    }
}
