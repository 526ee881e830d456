//! The optional principal cache: recently used sessions, and answers to scoped permission
//! checks, in this node's memory, kept coherent across nodes by Postgres LISTEN/NOTIFY (see
//! `listener.rs`), and bypassed whenever the notifications cannot be trusted.
//!
//! Correctness rests on three rules:
//! - every change that can make an entry wrong notifies (the triggers of the migrations), and
//!   the node's listener evicts what each notification names;
//! - while the listener is not connected, the cache is empty and bypassed (notifications lost
//!   then can never leave a stale entry behind), and entries are only filled while listening;
//! - writes are generation-checked: every notification and every change of the listener's state
//!   bumps a generation; a fill that started in an older generation is dropped, and a touch
//!   never writes back an older copy (it moves an entry's deadlines in place). Two fills of one
//!   generation may land out of order; only touches, which move deadlines later, can come
//!   between them, so the older one at worst asks for a touch that writes nothing.
//!
//! A maximum age bounds the staleness of every entry and answer, even if a notification were lost
//! without a disconnect.

use std::{
    collections::HashSet,
    future::Future,
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use quick_cache::{Weighter, sync::Cache};

use crate::{Resource, SessionId, UserId, principal::Principal};

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
    pub(crate) max_age: Duration,
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
    /// The most sessions kept (and, separately, the most scoped-permission answers). Default
    /// 10 000.
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = entries.max(1);
        self
    }

    /// The most memory the session entries may take, estimated. Default 16 MiB.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// How long an entry may serve before it is read from the database again, whatever the
    /// notifications say. Default 5 seconds; at least 1 ms and at most 400 days, or
    /// [`build`](crate::AuthLayerBuilder::build) refuses it.
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
    /// Scoped-permission answers cached.
    pub answers: u64,
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that went to the database.
    pub misses: u64,
}

/// A session as resolved: from the cache, or read just now. Deadlines are instants of this
/// process's monotonic clock, derived from the database's own clock at the read, so clock skew
/// between them does not matter. The idle deadline and the next touch move in place.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) secret_hash: Vec<u8>,
    pub(crate) principal: Arc<Principal>,
    read: Instant,
    absolute_deadline: Instant,
    /// How long before `read` the session last proved the password (an age, not an instant:
    /// a clock that cannot count back that far must not make an old check look recent).
    since_authenticated: Duration,
    /// Nanoseconds after `read`.
    idle_deadline: AtomicU64,
    /// Nanoseconds after `read`.
    next_touch: AtomicU64,
    weight: u64,
}

/// The deadlines of a session as of one moment, from the database's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// This process's clock when the database was asked (deadlines err on the early side).
    pub(crate) now: Instant,
    pub(crate) since_seen: Duration,
    pub(crate) idle_left: Duration,
    pub(crate) absolute_left: Duration,
    pub(crate) since_authenticated: Duration,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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
            read: d.now,
            absolute_deadline: d.now + d.absolute_left,
            since_authenticated: d.since_authenticated,
            idle_deadline: AtomicU64::new(nanos(d.idle_left)),
            next_touch: AtomicU64::new(nanos(touch_interval.saturating_sub(d.since_seen))),
            weight: u64::try_from(weight).unwrap_or(u64::MAX),
        }
    }

    fn offset(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.read))
    }

    /// Whether both deadlines are still ahead.
    fn is_live(&self, now: Instant) -> bool {
        now < self.absolute_deadline
            && self.offset(now) < self.idle_deadline.load(Ordering::Acquire)
    }

    /// Whether this request should write the idle deadline back: the touch interval has passed
    /// and no other request of the session claimed the touch first.
    pub(crate) fn claim_touch(&self, now: Instant, interval: Duration) -> bool {
        let at = self.offset(now);
        let due = self.next_touch.load(Ordering::Acquire);
        at >= due
            && self
                .next_touch
                .compare_exchange(
                    due,
                    at + nanos(interval),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// After a touch write: the idle deadline is `idle` from now, never past the absolute one.
    pub(crate) fn touched(&self, now: Instant, idle: Duration) {
        let absolute = self.offset(self.absolute_deadline);
        let deadline = (self.offset(now) + nanos(idle)).min(absolute);
        self.idle_deadline.fetch_max(deadline, Ordering::AcqRel);
    }

    pub(crate) fn recently_authenticated(&self, now: Instant, window: Duration) -> bool {
        self.since_authenticated
            .saturating_add(now.saturating_duration_since(self.read))
            < window
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

/// A scoped-permission question: user, permission, resource.
type Question = (UserId, String, Resource);

#[derive(Debug)]
pub(crate) struct PrincipalCache {
    entries: Cache<String, Arc<Entry>, ByWeight>,
    /// Each answer with the instant its read began.
    answers: Cache<Question, (bool, Instant)>,
    max_age: Duration,
    /// Whether the listener is connected; the cache is bypassed when not.
    listening: AtomicBool,
    /// Bumped by every notification and every change of `listening`.
    generation: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl PrincipalCache {
    pub(crate) fn new(options: CacheOptions) -> Self {
        let min = (options.max_bytes / options.max_entries).max(1);
        let capacity = usize::try_from(options.max_entries).unwrap_or(usize::MAX);
        Self {
            entries: Cache::with_weighter(capacity, options.max_bytes, ByWeight { min }),
            answers: Cache::new(capacity),
            max_age: options.max_age,
            listening: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The session's entry: a live, fresh cached one, or what `fill` reads (stored unless
    /// something was invalidated meanwhile). `fill` also returns a value of its own (the
    /// request's connection), passed on with a fresh entry; or, with no entry, why not
    /// (never cached).
    pub(crate) async fn get_or_fill<X, M, E, F>(
        &self,
        id: &SessionId,
        now: Instant,
        fill: F,
    ) -> Result<Result<(Arc<Entry>, Option<X>), M>, E>
    where
        F: Future<Output = Result<Result<(Entry, X), M>, E>>,
    {
        if let Some(entry) = self.get(id, now) {
            return Ok(Ok((entry, None)));
        }
        let generation = self.begin_fill();
        Ok(fill.await?.map(|(entry, extra)| {
            let entry = Arc::new(entry);
            if let Some(generation) = generation {
                self.store(
                    &self.entries,
                    generation,
                    id.as_str().to_owned(),
                    Arc::clone(&entry),
                );
            }
            (entry, Some(extra))
        }))
    }

    /// A cached answer to a scoped-permission question, younger than the maximum age, or what
    /// `ask` answers (stored unless something was invalidated meanwhile).
    pub(crate) async fn answer<E, F>(
        &self,
        user: UserId,
        permission: &str,
        resource: &Resource,
        now: Instant,
        ask: F,
    ) -> Result<bool, E>
    where
        F: Future<Output = Result<bool, E>>,
    {
        let question = (user, permission.to_owned(), resource.clone());
        if self.listening.load(Ordering::Acquire)
            && let Some((answer, read)) = self.answers.get(&question)
            && now.saturating_duration_since(read) < self.max_age
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(answer);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let generation = self.begin_fill();
        let answer = ask.await?;
        if let Some(generation) = generation {
            self.store(&self.answers, generation, question, (answer, now));
        }
        Ok(answer)
    }

    fn get(&self, id: &SessionId, now: Instant) -> Option<Arc<Entry>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        // Too old to trust, or a deadline passed here (another node may have pushed the idle
        // one): ask the database.
        let usable = self.entries.get(id.as_str()).filter(|entry| {
            now.saturating_duration_since(entry.read) < self.max_age && entry.is_live(now)
        });
        let counter = if usable.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        usable
    }

    /// The generation a database read starts in; `None` while the cache is bypassed.
    fn begin_fill(&self) -> Option<u64> {
        let generation = self.generation.load(Ordering::Acquire);
        self.listening.load(Ordering::Acquire).then_some(generation)
    }

    /// Stores what a read found, unless something was invalidated since it began.
    fn store<K, V, W>(&self, map: &Cache<K, V, W>, generation: u64, key: K, value: V)
    where
        K: Eq + Hash + Clone,
        V: Clone,
        W: Weighter<K, V> + Clone,
    {
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        map.insert(key.clone(), value);
        // A notification that arrived during the insert may have missed the new value.
        if self.generation.load(Ordering::Acquire) != generation {
            map.remove(&key);
        }
    }

    pub(crate) fn status(&self) -> CacheStatus {
        CacheStatus {
            listening: self.listening.load(Ordering::Acquire),
            entries: self.entries.len() as u64,
            weight_bytes: self.entries.weight(),
            answers: self.answers.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Applies notification payloads: `s:<session id>`, `u:<user id>`, `r:<user id>` (scoped
    /// grants), `r:*`, or anything else (`*`), which empties the cache. Each kind of removal is
    /// one pass over the cache however many users the payloads name (a role's change notifies
    /// each of its holders, and a pass per holder would keep the listener, and the notifications
    /// behind it, busy for seconds).
    pub(crate) fn apply_all(&self, payloads: &[&str]) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let user = |rest: &str| rest.parse::<UserId>().ok();
        let (mut users, mut scoped) = (HashSet::new(), HashSet::new());
        let mut every_answer = false;
        for payload in payloads {
            if let Some(session) = payload.strip_prefix("s:") {
                self.entries.remove(session);
            } else if let Some(id) = payload.strip_prefix("u:").and_then(user) {
                users.insert(id);
            } else if *payload == "r:*" {
                every_answer = true;
            } else if let Some(id) = payload.strip_prefix("r:").and_then(user) {
                scoped.insert(id);
            } else {
                self.entries.clear();
                self.answers.clear();
                return;
            }
        }
        if !users.is_empty() {
            self.entries
                .retain(|_, entry| !users.contains(&entry.principal.id));
        }
        if every_answer {
            self.answers.clear();
        } else if !scoped.is_empty() {
            self.answers
                .retain(|question, _| !scoped.contains(&question.0));
        }
    }

    /// Starts (or, on `false`, stops) using the cache. Stopping empties it first.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn set_listening(&self, listening: bool) {
        if !listening {
            self.listening.store(false, Ordering::Release);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
        self.answers.clear();
        if listening {
            self.listening.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn principal(user: UserId, session: &SessionId, permissions: &[&str]) -> Arc<Principal> {
        Arc::new(Principal {
            id: user,
            username: format!("user{user}"),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            session_id: session.clone(),
            authenticated_at: OffsetDateTime::UNIX_EPOCH,
            email: None,
            email_verified: false,
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

    fn entry(user: UserId, id: &SessionId, permissions: &[&str], d: Deadlines) -> Entry {
        Entry::new(
            vec![0; 32],
            principal(user, id, permissions),
            d,
            Duration::from_secs(180),
        )
    }

    /// Fills through `get_or_fill` as a request would; returns the principal's permissions.
    fn fill(cache: &PrincipalCache, user: UserId, id: &SessionId, now: Instant) -> Vec<String> {
        let filled = futures_util::FutureExt::now_or_never(cache.get_or_fill(id, now, async {
            Ok::<_, ()>(Ok::<_, ()>((
                entry(user, id, &["a", "b"], deadlines(now)),
                (),
            )))
        }));
        let (entry, _) = filled.unwrap().unwrap().unwrap();
        entry.principal.permissions.clone()
    }

    fn cached(cache: &PrincipalCache, id: &SessionId, now: Instant) -> bool {
        cache.get(id, now).is_some()
    }

    #[test]
    fn a_password_check_older_than_the_clock_can_count_back_is_not_recent() {
        let now = Instant::now();
        let window = Duration::from_secs(900);
        let aged = |since_authenticated| {
            let d = Deadlines {
                since_authenticated,
                ..deadlines(now)
            };
            entry(1, &session(0), &[], d)
        };
        assert!(aged(Duration::from_secs(60)).recently_authenticated(now, window));
        assert!(
            !aged(Duration::from_secs(60))
                .recently_authenticated(now + Duration::from_secs(841), window),
            "the window closes as the process's clock moves on after the read"
        );
        assert!(!aged(Duration::from_secs(901)).recently_authenticated(now, window));
        // On a platform whose monotonic clock starts at boot, `now - age` fails for an age
        // longer than the uptime; that must not read as a check made just now.
        assert!(!aged(Duration::MAX).recently_authenticated(now, window));
    }

    #[test]
    fn bypassed_until_listening_and_emptied_when_it_stops() {
        let cache = PrincipalCache::new(CacheOptions::default());
        let now = Instant::now();
        fill(&cache, 1, &session(0), now);
        assert!(
            !cached(&cache, &session(0), now),
            "not stored while bypassed"
        );
        cache.set_listening(true);
        fill(&cache, 1, &session(0), now);
        assert!(cached(&cache, &session(0), now));
        cache.set_listening(false);
        assert!(!cached(&cache, &session(0), now));
        cache.set_listening(true);
        assert!(
            !cached(&cache, &session(0), now),
            "nothing survives a disconnect"
        );
    }

    #[test]
    fn notifications_evict_what_they_name() {
        let cache = PrincipalCache::new(CacheOptions::default());
        cache.set_listening(true);
        let now = Instant::now();
        for (user, n) in [(1, 0), (1, 1), (2, 2), (3, 3)] {
            fill(&cache, user, &session(n), now);
        }
        cache.apply_all(&[&format!("s:{}", session(0))]);
        assert!(!cached(&cache, &session(0), now));
        assert!(cached(&cache, &session(1), now));
        cache.apply_all(&["u:1"]);
        assert!(!cached(&cache, &session(1), now));
        assert!(cached(&cache, &session(2), now));
        cache.apply_all(&["r:2"]);
        assert!(
            cached(&cache, &session(2), now),
            "scoped changes leave principals alone"
        );
        cache.apply_all(&["*"]);
        assert!(!cached(&cache, &session(2), now) && !cached(&cache, &session(3), now));
    }

    /// Payloads applied together evict what each names, as one by one would.
    #[test]
    fn notifications_applied_together_evict_what_each_names() {
        let cache = PrincipalCache::new(CacheOptions::default());
        cache.set_listening(true);
        let now = Instant::now();
        for (user, n) in [(1, 0), (2, 1), (3, 2), (4, 3)] {
            fill(&cache, user, &session(n), now);
        }
        cache.apply_all(&["u:1", "r:4", &format!("s:{}", session(2)), "u:2"]);
        let left: Vec<bool> = (0..4).map(|n| cached(&cache, &session(n), now)).collect();
        assert_eq!(left, [false, false, false, true]);
        cache.apply_all(&["u:9", "*"]);
        assert!(
            !cached(&cache, &session(3), now),
            "a `*` among them empties the cache"
        );
    }

    #[test]
    fn a_fill_that_raced_a_notification_is_dropped() {
        let cache = PrincipalCache::new(CacheOptions::default());
        cache.set_listening(true);
        let now = Instant::now();
        let id = session(0);
        let raced = futures_util::FutureExt::now_or_never(cache.get_or_fill(&id, now, async {
            cache.apply_all(&["u:1"]); // arrives while the database is being read
            Ok::<_, ()>(Ok::<_, ()>((entry(1, &id, &["a"], deadlines(now)), ())))
        }));
        assert!(
            raced.unwrap().unwrap().is_ok(),
            "the request is still answered"
        );
        assert!(!cached(&cache, &id, now), "but the read is not kept");
    }

    #[test]
    fn a_touch_never_brings_back_an_entry_older_than_what_is_there() {
        let cache = PrincipalCache::new(CacheOptions::default());
        cache.set_listening(true);
        let now = Instant::now();
        let id = session(0);
        fill(&cache, 1, &id, now);
        // A request hits the entry, its touch is due, and it awaits the touch write...
        let stale = cache.get(&id, now).unwrap();
        // ...meanwhile a grant changes (notification) and another request fills afresh...
        cache.apply_all(&["u:1"]);
        let fresh = futures_util::FutureExt::now_or_never(cache.get_or_fill(&id, now, async {
            Ok::<_, ()>(Ok::<_, ()>((entry(1, &id, &["fresh"], deadlines(now)), ())))
        }));
        assert!(fresh.unwrap().unwrap().is_ok());
        // ...then the first request's touch completes.
        stale.touched(now, Duration::from_secs(1800));
        let entry = cache.get(&id, now).unwrap();
        assert_eq!(entry.principal.permissions, ["fresh"]);
    }

    #[test]
    fn one_request_claims_each_touch() {
        let now = Instant::now();
        let d = Deadlines {
            since_seen: Duration::from_secs(200),
            ..deadlines(now)
        };
        let e = entry(1, &session(0), &[], d);
        let interval = Duration::from_secs(180);
        assert!(e.claim_touch(now, interval), "due");
        assert!(!e.claim_touch(now, interval), "claimed by the first");
        assert!(
            e.claim_touch(now + interval, interval),
            "due again an interval later"
        );
    }

    #[test]
    fn entries_expire_by_age_and_by_deadline() {
        let options = CacheOptions::default().max_age(Duration::from_secs(5));
        let cache = PrincipalCache::new(options);
        cache.set_listening(true);
        let now = Instant::now();
        fill(&cache, 1, &session(0), now);
        assert!(cached(&cache, &session(0), now + Duration::from_secs(4)));
        assert!(!cached(&cache, &session(0), now + Duration::from_secs(6)));
        let short = Deadlines {
            idle_left: Duration::from_secs(1),
            ..deadlines(now)
        };
        let id = session(1);
        let _ = futures_util::FutureExt::now_or_never(cache.get_or_fill(&id, now, async {
            Ok::<_, ()>(Ok::<_, ()>((entry(1, &id, &[], short), ())))
        }));
        assert!(cached(&cache, &id, now));
        assert!(!cached(&cache, &id, now + Duration::from_secs(2)));
    }

    #[test]
    fn answers_are_cached_and_evicted_by_user_or_all() {
        let cache = PrincipalCache::new(CacheOptions::default());
        cache.set_listening(true);
        let project: Resource = "project:42".parse().unwrap();
        let now = Instant::now();
        let ask_at = |now: Instant, answer: bool| {
            futures_util::FutureExt::now_or_never(
                cache.answer(1, "p", &project, now, async move { Ok::<_, ()>(answer) }),
            )
            .unwrap()
            .unwrap()
        };
        let ask = |answer| ask_at(now, answer);
        assert!(ask(true));
        assert!(ask(false), "served from memory, not asked again");
        cache.apply_all(&["r:2"]);
        assert!(ask(false), "another user's change");
        cache.apply_all(&["r:1"]);
        assert!(!ask(false), "asked again");
        assert!(!ask(true));
        cache.apply_all(&["r:*"]);
        assert!(ask(true));
        // Bounded by the maximum age (5 s by default) like sessions, should a notification be
        // lost without the listener noticing.
        assert!(ask_at(now + Duration::from_secs(4), false), "still fresh");
        assert!(
            !ask_at(now + Duration::from_secs(6), false),
            "too old: asked again"
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
