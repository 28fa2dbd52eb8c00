//! Log an error once per distinct key, remembering at most a fixed number of keys.
//!
//! A device that sends the same malformed payload a thousand times a second must not flood
//! the log, yet the first occurrence of each distinct problem should be seen. [`LogOnce`]
//! answers "is this the first time?" per key; the caller logs when it is and counts every
//! occurrence in its statistics either way. Past the cap, new keys are no longer remembered
//! (so memory stays bounded whatever the input) and only counted in
//! [`LogOnce::not_logged`]; one warning says so when the cap is reached.
//!
//! ```
//! use tbgw::log_once::LogOnce;
//!
//! let mut once = LogOnce::new(2);
//! assert!(once.first("mapping[0]: temp"));
//! assert!(!once.first("mapping[0]: temp"));
//! assert!(once.first("mapping[1]: hum"));
//! assert!(!once.first("mapping[2]: co2"), "past the cap: counted, not logged");
//! assert_eq!(once.not_logged(), 1);
//! ```

use std::collections::HashSet;

/// Which error keys were already logged. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct LogOnce {
    seen: HashSet<String>,
    cap: usize,
    not_logged: u64,
}

impl LogOnce {
    /// Remembers at most `cap` distinct keys.
    pub fn new(cap: usize) -> Self {
        LogOnce {
            seen: HashSet::new(),
            cap,
            not_logged: 0,
        }
    }

    /// `true` the first time `key` is seen (the caller logs it), `false` for a key already
    /// logged and for any new key once `cap` keys are remembered.
    pub fn first(&mut self, key: &str) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        if self.seen.len() >= self.cap {
            if self.not_logged == 0 {
                tracing::warn!(
                    cap = self.cap,
                    "Too many distinct errors to log each once; further ones are only counted."
                );
            }
            self.not_logged += 1;
            return false;
        }
        self.seen.insert(key.to_string());
        true
    }

    /// Occurrences of keys that were not remembered because the cap was reached.
    pub fn not_logged(&self) -> u64 {
        self.not_logged
    }

    /// Distinct keys remembered (logged) so far.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// No key was logged yet.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forgets every key (for example when a connection is re-established).
    pub fn clear(&mut self) {
        self.seen.clear();
        self.not_logged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_logged_once_and_memory_stays_bounded() {
        let mut once = LogOnce::new(100);
        let logged = (0..10_000)
            .filter(|i| once.first(&format!("key {}", i % 250)))
            .count();
        assert_eq!(logged, 100);
        assert_eq!(once.len(), 100);
        // 150 keys past the cap, each seen 40 times.
        assert_eq!(once.not_logged(), 150 * 40);
        once.clear();
        assert!(once.is_empty());
        assert!(once.first("key 0"));
    }
}
