//! Connections a layer keeps between requests for their lookups, outside the pool.
//!
//! sqlx pings every connection that goes back into its pool: a second round trip per request,
//! in a task of its own. A lookup that takes a kept connection skips the pool's checkout and
//! that ping; one that finds none free takes one from the pool and keeps it from then on, if
//! there is room. A connection is put back only after its statements completed, so a lookup
//! cancelled mid-statement (its timeout, a dropped request) closes its connection instead of
//! leaving half a conversation for the next request.
//! Kept connections are outside the pool's count (a closing pool does not wait for them), at
//! most [`AuthLayerBuilder::lookup_connections`](crate::AuthLayerBuilder::lookup_connections),
//! and follow the pool's idle timeout and lifetime (the lifetime counted from when the layer
//! kept them): one past them is closed by the next lookup, or by the layer's
//! [background work](crate::AuthLayer::background) when no request comes. They close with the
//! layer.

use std::{
    ops::{Deref, DerefMut},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{
    PgConnection, PgPool, Postgres,
    pool::{PoolConnection, PoolOptions},
};

/// The connections one layer keeps.
#[derive(Debug)]
pub(crate) struct KeptConnections {
    idle: Mutex<Vec<Kept>>,
    /// Kept connections, idle or serving a request.
    open: Arc<AtomicUsize>,
    max: usize,
}

/// A kept connection: counted in [`KeptConnections`] until it is dropped (which closes it).
#[derive(Debug)]
pub(crate) struct Kept {
    conn: PgConnection,
    kept_since: Instant,
    idle_since: Instant,
    open: Arc<AtomicUsize>,
}

impl KeptConnections {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// The most recently used kept connection, after [`reap`](Self::reap): light traffic takes
    /// only the most recently used one, and the others must not stay open for good.
    pub(crate) fn take(&self, pool: &PgPool) -> Option<Kept> {
        self.reap(pool).pop()
    }

    /// Closes every idle kept connection past `pool`'s idle timeout or lifetime (every one once
    /// the pool is closed); hands back the rest, locked.
    fn reap(&self, pool: &PgPool) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let (now, closed) = (Instant::now(), pool.is_closed());
        idle.retain(|kept| !closed && kept.fresh(now, pool.options()));
        idle
    }

    /// Reaps `kept` at half the shortest of `pool`'s idle timeout and lifetime (at most every
    /// minute), forever: so that connections kept through a busy moment close on time
    /// however quiet it is afterwards.
    pub(crate) async fn reaping(kept: Arc<Self>, pool: PgPool) {
        let options = pool.options();
        let every = [options.get_idle_timeout(), options.get_max_lifetime()]
            .into_iter()
            .flatten()
            .min()
            .map_or(Duration::from_secs(60), |limit| {
                (limit / 2).clamp(Duration::from_millis(100), Duration::from_secs(60))
            });
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            drop(kept.reap(&pool));
        }
    }

    /// Keeps `kept` again, now that its request's statements completed.
    pub(crate) fn put_back(&self, mut kept: Kept, pool: &PgPool) {
        kept.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if !pool.is_closed() {
            idle.push(kept);
        }
    }

    /// Keeps `conn`, a pool connection a request just took, if fewer than the most are kept:
    /// from now on it is outside the pool, kept again once the request's statements completed
    /// ([`put_back`](Self::put_back)). `Err(conn)` when there is no room.
    pub(crate) fn adopt(
        &self,
        conn: PoolConnection<Postgres>,
        pool: &PgPool,
    ) -> Result<Kept, PoolConnection<Postgres>> {
        let reserved = !pool.is_closed()
            && self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < self.max).then_some(n + 1)
                })
                .is_ok();
        if !reserved {
            return Err(conn);
        }
        let now = Instant::now();
        Ok(Kept {
            conn: conn.detach(),
            kept_since: now,
            idle_since: now,
            open: Arc::clone(&self.open),
        })
    }
}

impl Kept {
    fn fresh(&self, now: Instant, options: &PoolOptions<Postgres>) -> bool {
        let within = |since: Instant, limit: Option<Duration>| {
            limit.is_none_or(|limit| now.duration_since(since) < limit)
        };
        within(self.idle_since, options.get_idle_timeout())
            && within(self.kept_since, options.get_max_lifetime())
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Deref for Kept {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Kept {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
