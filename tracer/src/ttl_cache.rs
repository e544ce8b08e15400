//! A small map whose entries expire, for facts that are costly to re-read on every
//! failure of a retry storm yet may change (a pid's network namespace, a lookup's answer).

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

pub struct TtlCache<K, V> {
    entries: HashMap<K, (Instant, V)>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { entries: HashMap::new(), ttl, capacity }
    }

    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let (stored, value) = self.entries.get(key)?;
        (now.saturating_duration_since(*stored) < self.ttl).then(|| value.clone())
    }

    /// Never grows past `capacity`: drops expired entries first, everything if that is
    /// not enough (a refill costs one stat per pid).
    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let ttl = self.ttl;
            self.entries.retain(|_, (stored, _)| now.saturating_duration_since(*stored) < ttl);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (now, value));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let start = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(5), 8);
        cache.insert(1u32, 4026531840u64, start);
        assert_eq!(cache.get(&1, start + Duration::from_secs(4)), Some(4026531840));
        assert_eq!(cache.get(&1, start + Duration::from_secs(5)), None);
        assert_eq!(cache.get(&2, start), None);
    }

    #[test]
    fn size_stays_bounded() {
        let start = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(5), 3);
        for pid in 0..3u32 {
            cache.insert(pid, u64::from(pid), start);
        }
        // Full of live entries: the next one evicts them all.
        cache.insert(10, 10, start + Duration::from_secs(1));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&10, start + Duration::from_secs(1)), Some(10));

        // Expired entries go first, live ones stay.
        cache.insert(11, 11, start + Duration::from_secs(3));
        cache.insert(12, 12, start + Duration::from_secs(7));
        cache.insert(13, 13, start + Duration::from_secs(7));
        assert_eq!(cache.get(&10, start + Duration::from_secs(7)), None);
        assert_eq!(cache.get(&11, start + Duration::from_secs(7)), Some(11));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn updating_a_key_refreshes_it() {
        let start = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(5), 1);
        cache.insert(1u32, 1u64, start);
        cache.insert(1, 2, start + Duration::from_secs(4));
        assert_eq!(cache.get(&1, start + Duration::from_secs(8)), Some(2));
    }
}
