//! Rate-limited logging of source failures: a source that fails the same way on every call (a plugin
//! that panics on each request under 64 clients) must not flood the log.
//!
//! The first failure of a kind (source, kind and message template) is logged at once; the same
//! failure again within [`WINDOW`] is only counted, and the next one logged after the window says
//! how many were left out. The template is the message with every run of digits as one `#`:
//! messages that differ only in a changing number ("next try in 850 ms", a runner's pid, a count)
//! are one failure, or the limit would never apply to them.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long the same failure is logged once.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Distinct failures remembered; past this the memory is cleared (and each is logged once more).
const MAX_KEYS: usize = 4096;

struct Entry {
    logged_at: Instant,
    suppressed: u64,
}

static SEEN: Mutex<Option<HashMap<u64, Entry>>> = Mutex::new(None);

/// Whether to log the failure identified by `parts` now: `Some(n)` (log it, saying `n` like it were
/// left out since it was last logged) or `None` (count it, log nothing).
pub fn admit(parts: &[&str]) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    for part in parts {
        template(part).hash(&mut hasher);
    }
    let key = hasher.finish();
    let now = Instant::now();
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(HashMap::new);
    if seen.len() >= MAX_KEYS && !seen.contains_key(&key) {
        seen.clear();
    }
    match seen.get_mut(&key) {
        Some(entry) if now.duration_since(entry.logged_at) < WINDOW => {
            entry.suppressed += 1;
            None
        }
        Some(entry) => {
            let left_out = entry.suppressed;
            entry.logged_at = now;
            entry.suppressed = 0;
            Some(left_out)
        }
        None => {
            seen.insert(
                key,
                Entry {
                    logged_at: now,
                    suppressed: 0,
                },
            );
            Some(0)
        }
    }
}

/// `text` with each run of ASCII digits replaced by one `#`.
fn template(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_that_differ_only_in_numbers_are_one_failure() {
        assert_eq!(
            template("unhealthy: 3 call(s) in a row; next try in 850 ms"),
            "unhealthy: # call(s) in a row; next try in # ms"
        );
        assert_eq!(
            admit(&["t-numbers", "unhealthy", "next try in 1000 ms (pid 4242)"]),
            Some(0)
        );
        for ms in (0..1000).rev() {
            let message = format!("next try in {ms} ms (pid {})", 4000 + ms);
            assert_eq!(admit(&["t-numbers", "unhealthy", &message]), None);
        }
        // Another source, kind or wording is another failure.
        assert_eq!(
            admit(&["t-numbers-2", "unhealthy", "next try in 5 ms (pid 1)"]),
            Some(0)
        );
        assert_eq!(
            admit(&["t-numbers", "timeout", "next try in 5 ms (pid 1)"]),
            Some(0)
        );
        assert_eq!(
            admit(&["t-numbers", "unhealthy", "next try at 5 ms (pid 1)"]),
            Some(0)
        );
    }

    #[test]
    fn the_same_failure_is_logged_once_per_window() {
        assert_eq!(admit(&["t-src", "panic", "boom"]), Some(0));
        for _ in 0..1000 {
            assert_eq!(admit(&["t-src", "panic", "boom"]), None);
        }
        assert_eq!(admit(&["t-src", "panic", "other"]), Some(0));
        assert_eq!(admit(&["t-other", "panic", "boom"]), Some(0));
    }
}
