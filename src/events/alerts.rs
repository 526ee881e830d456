//! Counting invalid session tokens per client address, to raise an alert: nothing is refused
//! for it (see `AuthLayerBuilder::invalid_token_alert`).

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use quick_cache::sync::Cache;

/// Addresses tracked at most; past it the least recently seen are forgotten one by one.
const MAX_TRACKED: usize = 100_000;

/// Invalid tokens per address (aggregated as the per-address limits are) within a window.
#[derive(Debug)]
pub(crate) struct TokenAlerts {
    threshold: u32,
    window: Duration,
    counts: Cache<IpAddr, Arc<Window>>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    count: AtomicU32,
}

impl TokenAlerts {
    pub(crate) fn new(threshold: u32, window: Duration) -> Self {
        Self {
            threshold,
            window,
            counts: Cache::new(MAX_TRACKED),
        }
    }

    /// Counts one invalid token from `address`; `Some(count)` exactly when this one reaches
    /// the threshold within the window.
    pub(crate) fn record(&self, address: IpAddr) -> Option<u32> {
        let now = Instant::now();
        let window = match self.counts.get(&address) {
            Some(window) if now.duration_since(window.start) < self.window => window,
            _ => {
                let fresh = Arc::new(Window {
                    start: now,
                    count: AtomicU32::new(0),
                });
                self.counts.insert(address, Arc::clone(&fresh));
                fresh
            }
        };
        let count = window.count.fetch_add(1, Ordering::Relaxed) + 1;
        (count == self.threshold).then_some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_once_per_window_and_forgets_old_addresses_one_by_one() {
        let alerts = TokenAlerts::new(3, Duration::from_millis(100));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(alerts.record(ip), None);
        assert_eq!(alerts.record(ip), None);
        assert_eq!(alerts.record(ip), Some(3));
        assert_eq!(alerts.record(ip), None, "once per window");
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(alerts.record(ip), None, "a new window");
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            alerts.record(IpAddr::from(i.to_be_bytes()));
        }
        assert!(alerts.counts.len() <= MAX_TRACKED, "bounded");
        assert!(
            alerts.counts.len() > MAX_TRACKED / 2,
            "evicts some, not all"
        );
    }
}
