//! Remembering successful checks that are expensive to repeat (a password hash, a token's
//! signature), per worker thread so that no lock is taken on the request path.
//!
//! Entries are keyed by a SHA-256 digest of the credential under a per-process random salt and
//! the plugin instance, so the cache never holds a secret, and an instance built by a reload
//! never sees the previous config's verdicts. The table is bounded: when full it is emptied.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Entries per thread and kind of cache.
const MAX_ENTRIES: usize = 4096;

/// A credential's digest.
pub(crate) type Key = [u8; 32];

/// A new id for a plugin instance, to keep its entries apart from other instances'.
pub(crate) fn instance_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The cache key of `credential` for the plugin instance `instance`.
pub(crate) fn key(instance: u64, credential: &[u8]) -> Key {
    static SALT: OnceLock<[u8; 32]> = OnceLock::new();
    let mut h = Sha256::new();
    h.update(SALT.get_or_init(rand::random));
    h.update(instance.to_le_bytes());
    h.update(credential);
    h.finalize().into()
}

/// Verdicts with their expiry; held in a `thread_local!` by each plugin that uses one.
pub(crate) struct Verified<V> {
    map: HashMap<Key, (V, Instant)>,
}

impl<V: Clone> Verified<V> {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Verified { map: HashMap::new() }
    }

    /// The verdict for `key`, if one is remembered and still valid at `now`.
    pub(crate) fn get(&self, key: &Key, now: Instant) -> Option<V> {
        self.map.get(key).filter(|(_, until)| *until > now).map(|(v, _)| v.clone())
    }

    /// Remembers `value` for `key` until `until`.
    pub(crate) fn insert(&mut self, key: Key, value: V, until: Instant) {
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(key, (value, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keyed_by_instance_expires_and_stays_bounded() {
        let (a, b) = (instance_id(), instance_id());
        assert_ne!(key(a, b"secret"), key(b, b"secret"));
        let now = Instant::now();
        let mut c = Verified::new();
        c.insert(key(a, b"secret"), 7, now + Duration::from_secs(1));
        assert_eq!(c.get(&key(a, b"secret"), now), Some(7));
        assert_eq!(c.get(&key(b, b"secret"), now), None);
        assert_eq!(c.get(&key(a, b"secret"), now + Duration::from_secs(2)), None);
        for i in 0..MAX_ENTRIES + 10 {
            c.insert(key(a, &i.to_le_bytes()), i, now + Duration::from_secs(1));
        }
        assert!(c.map.len() <= MAX_ENTRIES);
    }
}
