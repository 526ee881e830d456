//! The optional principal cache: recently used sessions in memory, kept coherent across nodes by
//! Postgres LISTEN/NOTIFY, and bypassed whenever the notifications cannot be trusted.
//!
//! Correctness rests on three rules:
//! - every change that can make an entry wrong notifies (the triggers of the third migration),
//!   and the node's listener evicts what each notification names;
//! - while the listener is not connected, the cache is empty and bypassed (notifications lost
//!   then can never leave a stale entry behind), and entries are only filled while listening;
//! - a fill that raced a notification is dropped: each fill remembers the invalidation epoch it
//!   started in, and is only stored if no notification or reconnection came in between.
//!
//! A maximum entry age bounds staleness even if a notification were lost without a disconnect.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use quick_cache::{Weighter, sync::Cache};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use crate::{SessionId, UserId, extract::Principal};

/// The LISTEN channel the triggers notify on.
const CHANNEL: &str = "axum_live_auth";
/// The `application_name` of each node's listener connection (visible in `pg_stat_activity`).
pub(crate) const LISTENER_NAME: &str = "axum-live-auth-listener";

/// Settings of the principal cache; see
/// [`AuthLayerBuilder::principal_cache`](crate::AuthLayerBuilder::principal_cache).
///
/// ```
/// use std::time::Duration;
/// use axum_live_auth::CacheOptions;
///
/// let options = CacheOptions::default()
///     .max_entries(50_000)
///     .max_bytes(32 * 1024 * 1024)
///     .max_age(Duration::from_secs(2));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct CacheOptions {
    max_entries: u64,
    max_bytes: u64,
    max_age: Duration,
}

impl Default for CacheOptions {
    /// 10 000 entries, 16 MiB, 5 seconds.
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 16 * 1024 * 1024,
            max_age: Duration::from_secs(5),
        }
    }
}

impl CacheOptions {
    /// The most sessions kept. Default 10 000.
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries.max(1);
        self
    }

    /// The most memory the entries may take, estimated. Default 16 MiB.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// How long an entry may serve before it is read from the database again, whatever the
    /// notifications say. Default 5 seconds.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }
}

/// What the cache looks like right now, for tests and dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStatus {
    /// The node's listener is connected and listening: the cache is in use.
    pub listening: bool,
    /// Sessions cached.
    pub entries: u64,
    /// Their estimated size in bytes (each counts at least `max_bytes / max_entries`).
    pub weight_bytes: u64,
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that went to the database.
    pub misses: u64,
}

/// One cached session. Deadlines are instants of this process's monotonic clock, derived from
/// the database's own "seconds left" at the fill, so clock skew between them does not matter.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) secret_hash: Vec<u8>,
    pub(crate) principal: Arc<Principal>,
    filled: Instant,
    pub(crate) absolute_deadline: Instant,
    idle_deadline: Instant,
    next_touch: Instant,
    authenticated: Instant,
    weight: u64,
}

/// The deadlines of a session as of one moment, from the database's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub(crate) now: Instant,
    pub(crate) since_seen: Duration,
    pub(crate) idle_left: Duration,
    pub(crate) absolute_left: Duration,
    pub(crate) since_authenticated: Duration,
}

impl Entry {
    pub(crate) fn new(
        secret_hash: Vec<u8>,
        principal: Arc<Principal>,
        d: Deadlines,
        touch_interval: Duration,
    ) -> Self {
        let weight = std::mem::size_of::<Self>()
            + std::mem::size_of::<Principal>()
            + secret_hash.len()
            + principal.username.len()
            + principal.session_id.as_str().len()
            + principal
                .permissions
                .iter()
                .map(|p| p.len() + std::mem::size_of::<String>())
                .sum::<usize>();
        Self {
            secret_hash,
            principal,
            filled: d.now,
            absolute_deadline: d.now + d.absolute_left,
            idle_deadline: d.now + d.idle_left,
            next_touch: d.now + touch_interval.saturating_sub(d.since_seen),
            authenticated: d.now.checked_sub(d.since_authenticated).unwrap_or(d.now),
            weight: u64::try_from(weight).unwrap_or(u64::MAX),
        }
    }

    /// Whether both deadlines are still ahead.
    pub(crate) fn is_live(&self, now: Instant) -> bool {
        now < self.idle_deadline && now < self.absolute_deadline
    }

    pub(crate) fn touch_due(&self, now: Instant) -> bool {
        now >= self.next_touch
    }

    pub(crate) fn recently_authenticated(&self, now: Instant, window: Duration) -> bool {
        now.saturating_duration_since(self.authenticated) < window
    }

    /// The same entry after a touch write: idle deadline pushed, next touch one interval away.
    pub(crate) fn touched(&self, now: Instant, idle: Duration, interval: Duration) -> Self {
        Self {
            secret_hash: self.secret_hash.clone(),
            principal: Arc::clone(&self.principal),
            filled: self.filled,
            absolute_deadline: self.absolute_deadline,
            idle_deadline: (now + idle).min(self.absolute_deadline),
            next_touch: now + interval,
            authenticated: self.authenticated,
            weight: self.weight,
        }
    }
}

/// Weighs an entry by its size, but at least its share of the entry bound, so that the byte
/// bound also bounds the number of entries.
#[derive(Debug, Clone, Copy)]
struct ByWeight {
    min: u64,
}

impl Weighter<String, Arc<Entry>> for ByWeight {
    fn weight(&self, _key: &String, entry: &Arc<Entry>) -> u64 {
        entry.weight.max(self.min)
    }
}

/// The node's principal cache.
#[derive(Debug)]
pub(crate) struct PrincipalCache {
    entries: Cache<String, Arc<Entry>, ByWeight>,
    max_age: Duration,
    /// Whether the listener is connected; the cache is bypassed when not.
    listening: AtomicBool,
    /// Bumped by every notification and every change of `listening`.
    epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Where a fill started: only stored if nothing was invalidated since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fill(u64);

impl PrincipalCache {
    pub(crate) fn new(options: CacheOptions) -> Self {
        let min = (options.max_bytes / options.max_entries).max(1);
        let estimated = usize::try_from(options.max_entries).unwrap_or(usize::MAX);
        Self {
            entries: Cache::with_weighter(estimated, options.max_bytes, ByWeight { min }),
            max_age: options.max_age,
            listening: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// A live, fresh entry for the session, if the cache is in use and has one.
    pub(crate) fn get(&self, id: &SessionId, now: Instant) -> Option<Arc<Entry>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let entry = self.entries.get(id.as_str());
        let usable = entry.filter(|entry| {
            let fresh = now.saturating_duration_since(entry.filled) < self.max_age;
            // Too old to trust, or a deadline passed here (another node may have pushed the
            // idle one): ask the database.
            fresh && entry.is_live(now)
        });
        let counter = if usable.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        usable
    }

    /// Marks the start of a database read whose result may be cached; `None` while bypassed.
    pub(crate) fn begin_fill(&self) -> Option<Fill> {
        let epoch = self.epoch.load(Ordering::Acquire);
        self.listening
            .load(Ordering::Acquire)
            .then_some(Fill(epoch))
    }

    /// Stores a fill, unless something was invalidated since it began.
    pub(crate) fn finish_fill(&self, fill: Fill, id: &SessionId, entry: Entry) {
        if self.epoch.load(Ordering::Acquire) != fill.0 {
            return;
        }
        self.entries.insert(id.as_str().to_owned(), Arc::new(entry));
        // A notification that arrived during the insert may have missed the new entry.
        if self.epoch.load(Ordering::Acquire) != fill.0 {
            self.entries.remove(id.as_str());
        }
    }

    /// Replaces an entry after a touch, unless it was evicted meanwhile.
    pub(crate) fn replace(&self, id: &SessionId, entry: Entry) {
        let _ = self
            .entries
            .replace(id.as_str().to_owned(), Arc::new(entry), true);
    }

    pub(crate) fn status(&self) -> CacheStatus {
        CacheStatus {
            listening: self.listening.load(Ordering::Acquire),
            entries: self.entries.len() as u64,
            weight_bytes: self.entries.weight(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Applies one notification payload: `s:<session id>`, `u:<user id>` or anything else
    /// (`*`), which empties the cache.
    fn apply(&self, payload: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(session) = payload.strip_prefix("s:") {
            self.entries.remove(session);
        } else if let Some(user) = payload
            .strip_prefix("u:")
            .and_then(|u| u.parse::<UserId>().ok())
        {
            self.entries.retain(|_, entry| entry.principal.id != user);
        } else {
            self.entries.clear();
        }
    }

    /// Starts (or, on `false`, stops) using the cache. Stopping empties it first.
    fn set_listening(&self, listening: bool) {
        if !listening {
            self.listening.store(false, Ordering::Release);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
        if listening {
            self.listening.store(true, Ordering::Release);
        }
    }
}

/// Runs the node's listener for as long as the cache exists: connects on its own connection,
/// LISTENs, applies notifications; on any loss, bypasses and empties the cache, then reconnects.
pub(crate) fn spawn_listener(
    runtime: &tokio::runtime::Handle,
    cache: &Arc<PrincipalCache>,
    pool: &PgPool,
) {
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .application_name(LISTENER_NAME);
    // Its own connection, outside the app's pool: a listener holds it for good.
    let listener_pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options);
    let cache: Weak<PrincipalCache> = Arc::downgrade(cache);
    runtime.spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            match listen(&listener_pool, &cache).await {
                Ended::CacheDropped => return,
                Ended::Lost => backoff = Duration::from_millis(50),
                Ended::Failed(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "principal cache listener cannot connect; the cache stays bypassed"
                    );
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            tokio::time::sleep(backoff).await;
        }
    });
}

enum Ended {
    CacheDropped,
    Lost,
    Failed(sqlx::Error),
}

/// One connection's life: listen, then apply notifications until the connection is lost.
async fn listen(pool: &PgPool, cache: &Weak<PrincipalCache>) -> Ended {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => return Ended::Failed(error),
    };
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    if let Err(error) = listener.listen(CHANNEL).await {
        return Ended::Failed(error);
    }
    match cache.upgrade() {
        Some(cache) => cache.set_listening(true),
        None => return Ended::CacheDropped,
    }
    tracing::debug!("principal cache listening");
    loop {
        let received = listener.try_recv().await;
        let Some(cache) = cache.upgrade() else {
            return Ended::CacheDropped;
        };
        match received {
            Ok(Some(notification)) => cache.apply(notification.payload()),
            Ok(None) | Err(_) => {
                cache.set_listening(false);
                tracing::warn!("principal cache listener lost its connection; bypassing the cache");
                return Ended::Lost;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn principal(user: UserId, session: &SessionId) -> Arc<Principal> {
        Arc::new(Principal {
            id: user,
            username: format!("user{user}"),
            permissions: vec!["a".into(), "b".into()],
            session_id: session.clone(),
            authenticated_at: OffsetDateTime::UNIX_EPOCH,
        })
    }

    fn deadlines(now: Instant) -> Deadlines {
        Deadlines {
            now,
            since_seen: Duration::ZERO,
            idle_left: Duration::from_secs(1800),
            absolute_left: Duration::from_secs(43_200),
            since_authenticated: Duration::ZERO,
        }
    }

    fn session(n: u8) -> SessionId {
        SessionId::parse(&format!(
            "{}{}",
            "A".repeat(20),
            ["AA", "BA", "CA", "DA"][usize::from(n % 4)]
        ))
        .unwrap()
    }

    fn fill(cache: &PrincipalCache, user: UserId, id: &SessionId, now: Instant) {
        let f = cache.begin_fill().unwrap();
        let entry = Entry::new(
            vec![0; 32],
            principal(user, id),
            deadlines(now),
            Duration::from_secs(180),
        );
        cache.finish_fill(f, id, entry);
    }

    #[test]
    fn bypassed_until_listening_and_emptied_when_it_stops() {
        let cache = PrincipalCache::new(CacheOptions::default());
        let now = Instant::now();
        assert!(cache.begin_fill().is_none());
        cache.set_listening(true);
        fill(&cache, 1, &session(0), now);
        assert!(cache.get(&session(0), now).is_some());
        cache.set_listening(false);
        assert!(cache.get(&session(0), now).is_none());
        cache.set_listening(true);
        assert!(
            cache.get(&session(0), now).is_none(),
            "nothing survives a disconnect"
        );
    }

    #[test]
    fn notifications_evict_what_they_name() {
        let cache = PrincipalCache::new(CacheOptions::default());
        cache.set_listening(true);
        let now = Instant::now();
        fill(&cache, 1, &session(0), now);
        fill(&cache, 1, &session(1), now);
        fill(&cache, 2, &session(2), now);
        fill(&cache, 3, &session(3), now);
        cache.apply(&format!("s:{}", session(0)));
        assert!(cache.get(&session(0), now).is_none());
        assert!(cache.get(&session(1), now).is_some());
        cache.apply("u:1");
        assert!(cache.get(&session(1), now).is_none());
        assert!(cache.get(&session(2), now).is_some());
        cache.apply("*");
        assert!(cache.get(&session(2), now).is_none() && cache.get(&session(3), now).is_none());
    }

    #[test]
    fn a_fill_that_raced_a_notification_is_dropped() {
        let cache = PrincipalCache::new(CacheOptions::default());
        cache.set_listening(true);
        let now = Instant::now();
        let started = cache.begin_fill().unwrap();
        cache.apply("u:1");
        let entry = Entry::new(
            vec![0; 32],
            principal(1, &session(0)),
            deadlines(now),
            Duration::from_secs(180),
        );
        cache.finish_fill(started, &session(0), entry);
        assert!(cache.get(&session(0), now).is_none());
    }

    #[test]
    fn entries_expire_by_age_and_by_deadline() {
        let options = CacheOptions::default().max_age(Duration::from_secs(5));
        let cache = PrincipalCache::new(options);
        cache.set_listening(true);
        let now = Instant::now();
        fill(&cache, 1, &session(0), now);
        assert!(
            cache
                .get(&session(0), now + Duration::from_secs(4))
                .is_some()
        );
        assert!(
            cache
                .get(&session(0), now + Duration::from_secs(6))
                .is_none()
        );
        let short = Deadlines {
            idle_left: Duration::from_secs(1),
            ..deadlines(now)
        };
        let f = cache.begin_fill().unwrap();
        let entry = Entry::new(
            vec![0; 32],
            principal(1, &session(1)),
            short,
            Duration::from_secs(180),
        );
        cache.finish_fill(f, &session(1), entry);
        assert!(
            cache
                .get(&session(1), now + Duration::from_secs(2))
                .is_none()
        );
    }

    #[test]
    fn the_byte_bound_also_bounds_entries() {
        let options = CacheOptions::default()
            .max_entries(100)
            .max_bytes(100 * 1024);
        let cache = PrincipalCache::new(options);
        cache.set_listening(true);
        let now = Instant::now();
        for i in 0..1000u32 {
            let id = SessionId::parse(&format!("{i:0>21}A")).unwrap();
            fill(&cache, i64::from(i), &id, now);
        }
        let status = cache.status();
        assert!(status.entries <= 100, "{status:?}");
        assert!(status.weight_bytes <= 100 * 1024, "{status:?}");
    }
}
