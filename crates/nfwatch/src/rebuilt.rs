//! A lookup table read whole from the system again on a miss, at most once
//! a second: a burst of keys the system no longer has (a cgroup removed, a
//! socket closed) must not turn into a burst of rebuilds.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

const MIN_REBUILD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct RebuiltMap<K, V> {
    entries: HashMap<K, V>,
    last_rebuild: Option<Instant>,
}

impl<K: Eq + Hash, V> RebuiltMap<K, V> {
    pub fn new() -> Self {
        Self {
            entries: HashMap::new(),
            last_rebuild: None,
        }
    }

    /// The value for `key`, after replacing the table with `rebuild()`'s
    /// if `key` is missing and the last rebuild is a second old.
    pub fn get(&mut self, key: &K, rebuild: impl FnOnce() -> HashMap<K, V>) -> Option<&V> {
        let due = self
            .last_rebuild
            .is_none_or(|at| at.elapsed() >= MIN_REBUILD_INTERVAL);
        if due && !self.entries.contains_key(key) {
            self.entries = rebuild();
            self.last_rebuild = Some(Instant::now());
        }
        self.entries.get(key)
    }

    /// As if the last rebuild were a second older.
    #[cfg(test)]
    pub fn backdate(&mut self) {
        self.last_rebuild = self
            .last_rebuild
            .and_then(|at| at.checked_sub(MIN_REBUILD_INTERVAL));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_rebuilds_at_most_once_a_second() {
        let mut map = RebuiltMap::new();
        let mut rebuilds = 0;
        assert_eq!(
            map.get(&1, || {
                rebuilds += 1;
                HashMap::from([(1, "one")])
            }),
            Some(&"one")
        );
        assert_eq!(
            map.get(&2, || {
                rebuilds += 1;
                HashMap::from([(2, "two")])
            }),
            None
        );
        assert_eq!(rebuilds, 1);
        map.backdate();
        assert_eq!(
            map.get(&2, || {
                rebuilds += 1;
                HashMap::from([(2, "two")])
            }),
            Some(&"two")
        );
        assert_eq!(rebuilds, 2);
    }
}
