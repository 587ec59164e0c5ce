//! Keyed state: values by key that a transformation keeps across batches, owned by the host
//! (Spark's `mapWithState`, Flink's keyed state).
//!
//! The host keeps the state of each step (scoped to the pipeline, the step and the key),
//! checkpoints it with the batch that wrote it, restores it after a crash and carries it over a
//! hot swap; a new version that changes the layout of the values converts it with
//! [`crate::Migrate`]. A call sees what earlier calls of its batch wrote, then the state of
//! the last committed batch; what a failed call wrote is dropped, and a batch's writes count
//! only when it commits, so counts stay exact across retries, rollbacks and crashes.
//!
//! The partitions of a step share its state: for exact state, each key must come from one
//! partition (a source partitioned by key, or `repartition-by-key` before the step).
//! A time-to-live counts in batch time: a value put with a TTL in the batch of time T is gone
//! for batches after T + TTL (a replay expires the same values).
//!
//! Outside a batch (in `init`, a self-test or a shadow run) reads find nothing and writes are
//! dropped. Run natively (in tests), the state is a map of the current thread.
//!
//! ```
//! use sluice_sdk::state;
//!
//! let seen = state::get(b"word").map_or(0, |v| v.len());
//! state::put(b"word", &vec![b'x'; seen + 1]);
//! assert_eq!(state::get(b"word").map(|v| v.len()), Some(seen + 1));
//! state::delete(b"word");
//! assert_eq!(state::get(b"word"), None);
//! ```

use std::time::Duration;

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static NATIVE: std::cell::RefCell<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// The value of `key`, or `None` when it has none (never put, deleted, or expired).
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    return crate::__private::keyed_state::get(key);
    #[cfg(not(target_arch = "wasm32"))]
    NATIVE.with(|m| m.borrow().get(key).cloned())
}

/// Sets the value of `key`, kept until it is deleted. An empty value is a value.
pub fn put(key: &[u8], value: &[u8]) {
    put_ttl(key, value, None);
}

/// Sets the value of `key`, gone for batches whose time is more than `ttl` after this one's.
pub fn put_with_ttl(key: &[u8], value: &[u8], ttl: Duration) {
    put_ttl(key, value, Some(ttl_ms(ttl)));
}

fn put_ttl(key: &[u8], value: &[u8], ttl: Option<u64>) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::keyed_state::put(key, value, ttl);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = ttl;
        NATIVE.with(|m| m.borrow_mut().insert(key.to_vec(), value.to_vec()));
    }
}

/// Removes `key`'s value, if it has one.
pub fn delete(key: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::keyed_state::delete(key);
    #[cfg(not(target_arch = "wasm32"))]
    NATIVE.with(|m| m.borrow_mut().remove(key));
}

/// [`get`] for each of `keys`, in one call to the host.
pub fn get_many<K: AsRef<[u8]>>(keys: &[K]) -> Vec<Option<Vec<u8>>> {
    #[cfg(target_arch = "wasm32")]
    {
        let found = crate::__private::keyed_state::get_many(&crate::__private::column_of(keys));
        let mut start = 0usize;
        found
            .column
            .ends
            .iter()
            .enumerate()
            .map(|(i, &end)| {
                let end = end as usize;
                let here = found
                    .present
                    .get(i / 8)
                    .is_some_and(|b| b & (1 << (i % 8)) != 0);
                let v = found.column.data.get(start..end).map(<[u8]>::to_vec);
                start = end;
                v.filter(|_| here)
            })
            .collect()
    }
    #[cfg(not(target_arch = "wasm32"))]
    keys.iter().map(|k| get(k.as_ref())).collect()
}

/// [`put`] (with a `ttl`, [`put_with_ttl`]) for each pair, in one call to the host.
pub fn put_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)], ttl: Option<Duration>) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::keyed_state::put_many(
        &crate::__private::column_of(pairs.iter().map(|(k, _)| k)),
        &crate::__private::column_of(pairs.iter().map(|(_, v)| v)),
        ttl.map(ttl_ms),
    );
    #[cfg(not(target_arch = "wasm32"))]
    for (k, v) in pairs {
        put_ttl(k.as_ref(), v.as_ref(), ttl.map(ttl_ms));
    }
}

/// [`delete`] for each of `keys`, in one call to the host.
pub fn delete_many<K: AsRef<[u8]>>(keys: &[K]) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::keyed_state::delete_many(&crate::__private::column_of(keys));
    #[cfg(not(target_arch = "wasm32"))]
    for k in keys {
        delete(k.as_ref());
    }
}
