//! Login throttling (shared by every node through the database) and the per-node limit on
//! invalid session tokens.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::store::LoginFailures;

/// How failed logins are throttled. Defaults: 10 failures per client IP in 3 minutes, then
/// `429` until the window ends; per username (known or not), 5 free failures in a row, then a
/// wait that doubles with each failure (2 s, 4 s, … up to 1 hour) after the last one; after 100
/// failures in a row, no more attempts for that username until its password is reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoginThrottle {
    pub(crate) ip_failures: u32,
    pub(crate) ip_window: Duration,
    pub(crate) user_free_failures: u32,
    pub(crate) user_max_wait: Duration,
    pub(crate) user_hard_stop: u32,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            ip_failures: 10,
            ip_window: Duration::from_secs(3 * 60),
            user_free_failures: 5,
            user_max_wait: Duration::from_secs(60 * 60),
            user_hard_stop: 100,
        }
    }
}

/// What a locked username's `Retry-After` says: it stays locked until a password reset.
const LOCKED_RETRY: Duration = Duration::from_secs(60 * 60);

impl LoginThrottle {
    /// `Some(wait)` if a login attempt must be refused now, without checking the password.
    pub(crate) fn refuse(&self, failures: &LoginFailures) -> Option<Duration> {
        if let (Some(n), Some(left)) = (failures.ip_failures, failures.ip_window_left)
            && n.max(0).unsigned_abs() >= self.ip_failures
        {
            return Some(seconds(left));
        }
        let n = failures.user_failures.unwrap_or(0).max(0).unsigned_abs();
        if n >= self.user_hard_stop {
            return Some(LOCKED_RETRY);
        }
        if n >= self.user_free_failures {
            let doublings = (n - self.user_free_failures + 1).min(31);
            let wait = Duration::from_secs(1u64 << doublings).min(self.user_max_wait);
            let since = seconds(failures.user_since_last.unwrap_or(f64::MAX));
            if since < wait {
                return Some(wait - since);
            }
        }
        None
    }
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

/// The key a username's failures are counted under: lowercased, at most 64 characters, control
/// characters replaced, so that any input (even one no user could have) is counted and stored.
pub(crate) fn username_key(username: &str) -> String {
    username
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect::<String>()
        .to_lowercase()
}

/// Counts invalid session tokens per client IP on this node; past the limit within the window,
/// requests with a token from that IP are answered `429` until the window ends.
#[derive(Debug)]
pub(crate) struct InvalidTokens {
    limit: u32,
    window: Duration,
    counts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Bound on the addresses tracked; past it, finished windows are dropped, then all.
const MAX_TRACKED: usize = 100_000;

impl InvalidTokens {
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            counts: Mutex::default(),
        }
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// How long `ip` is still blocked, if it is.
    pub(crate) fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let &(start, n) = counts.get(&ip)?;
        let left = self.window.checked_sub(start.elapsed())?;
        (n > self.limit).then_some(left)
    }

    /// Counts one invalid token from `ip`; `true` exactly when this one crosses the limit.
    pub(crate) fn record(&self, ip: IpAddr) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= MAX_TRACKED && !counts.contains_key(&ip) {
            let window = self.window;
            counts.retain(|_, (start, _)| start.elapsed() < window);
            if counts.len() >= MAX_TRACKED {
                counts.clear();
            }
        }
        let entry = counts.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 == self.limit + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(ip: Option<(i32, f64)>, user: Option<(i32, f64)>) -> LoginFailures {
        LoginFailures {
            ip_failures: ip.map(|i| i.0),
            ip_window_left: ip.map(|i| i.1),
            user_failures: user.map(|u| u.0),
            user_since_last: user.map(|u| u.1),
        }
    }

    #[test]
    fn ten_failures_from_one_ip_close_it_for_the_rest_of_the_window() {
        let t = LoginThrottle::default();
        assert_eq!(t.refuse(&failures(Some((9, 100.0)), None)), None);
        assert_eq!(
            t.refuse(&failures(Some((10, 100.0)), None)),
            Some(Duration::from_secs(100))
        );
    }

    #[test]
    fn a_username_waits_longer_after_each_failure_and_stops_at_the_hard_stop() {
        let t = LoginThrottle::default();
        assert_eq!(t.refuse(&failures(None, Some((4, 0.0)))), None);
        assert_eq!(
            t.refuse(&failures(None, Some((5, 0.5)))),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(t.refuse(&failures(None, Some((5, 2.5)))), None);
        assert_eq!(
            t.refuse(&failures(None, Some((7, 0.0)))),
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            t.refuse(&failures(None, Some((40, 0.0)))),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(t.refuse(&failures(None, Some((99, 3601.0)))), None);
        assert_eq!(
            t.refuse(&failures(None, Some((100, 1e9)))),
            Some(LOCKED_RETRY)
        );
    }

    #[test]
    fn username_keys_are_storable_whatever_the_input() {
        assert_eq!(username_key("Alice"), "alice");
        assert_eq!(username_key("a\0b"), "a\u{fffd}b");
        assert_eq!(username_key(&"x".repeat(1000)).chars().count(), 64);
    }

    #[test]
    fn invalid_tokens_block_an_ip_past_the_limit_until_the_window_ends() {
        let limiter = InvalidTokens::new(3, Duration::from_millis(200));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!limiter.record(ip) && !limiter.record(ip) && !limiter.record(ip));
        assert!(limiter.blocked(ip).is_none());
        assert!(limiter.record(ip), "the fourth crosses the limit");
        assert!(!limiter.record(ip), "reported once");
        assert!(limiter.blocked(ip).is_some());
        assert!(limiter.blocked(other).is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert!(limiter.blocked(ip).is_none());
    }
}
