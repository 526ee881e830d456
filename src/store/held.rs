//! A Postgres pool connection the store holds for one statement, one transaction, or one
//! request's statements through a transaction pooler.
//!
//! Dropped before its work was answered (the request was cancelled: the client went away, the
//! app's timeout, the lookup's deadline), the connection is closed, not handed back to the pool.
//! Back in the pool it would be checked with a round trip that has no time bound, so that over a
//! network gone silent it would hold its place in the pool for good; and one whose `BEGIN` was
//! cut short could come back inside its transaction (sqlx 0.9.0 queues the `ROLLBACK` of a
//! dropped transaction only once its `BEGIN` was answered), where the next request's `now()`
//! stands still and its writes are never committed.
//!
//! Transactions here are plain `BEGIN` … `COMMIT` statements, which sqlx does not track: code
//! that needs sqlx's nesting (its migrator, which makes savepoints) uses sqlx's `Transaction`
//! (see [`PgStore::transaction`](super::PgStore::transaction)), never `begin()` on a `Held`.

use std::{
    ops::{Deref, DerefMut},
    time::Duration,
};

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};

/// How long [`Held::roll_back_later`] waits for the rollback before closing the connection.
const ROLLBACK_WITHIN: Duration = Duration::from_secs(5);

/// A connection held for some work; see the [module](self).
#[derive(Debug)]
pub(crate) struct Held {
    conn: PoolConnection<Postgres>,
    work: Work,
}

/// What the connection is doing: anything but `Idle` closes it when dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Idle,
    /// Used outside a transaction (any mutable use counts), until its work is declared done.
    Busy,
    /// From the moment the `BEGIN` may have been sent until the transaction's end was answered.
    Transaction,
}

impl Held {
    /// A connection of `pool`, doing nothing yet.
    pub(crate) async fn checkout(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self::from(pool.acquire().await?))
    }

    /// A connection of `pool` in a transaction begun with `statement` (`BEGIN`, or one that
    /// also pins a server connection).
    pub(crate) async fn begin(pool: &PgPool, statement: &'static str) -> Result<Self, sqlx::Error> {
        let mut held = Self::checkout(pool).await?;
        held.work = Work::Transaction;
        sqlx::raw_sql(statement).execute(&mut *held.conn).await?;
        Ok(held)
    }

    /// After the statements it was held for ended with `result`: a transaction begun for them
    /// alone is committed (or, after an error, rolled back); otherwise the connection goes back
    /// to the pool.
    pub(crate) async fn done<T>(self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        match result {
            Ok(done) if self.work == Work::Transaction => self.commit().await.map(|()| done),
            result => {
                self.release();
                result
            }
        }
    }

    /// Its statements were answered and nothing of theirs is to be kept: back to the pool, or,
    /// in a transaction (which only read, or failed), rolled back first.
    pub(crate) fn release(mut self) {
        match self.work {
            Work::Transaction => self.roll_back_later(),
            Work::Busy | Work::Idle => self.work = Work::Idle,
        }
    }

    /// Commits its transaction; outside one, as [`release`](Self::release).
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        if self.work != Work::Transaction {
            self.release();
            return Ok(());
        }
        self.end("COMMIT").await
    }

    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        self.end("ROLLBACK").await
    }

    /// Ends a transaction whose outcome does not matter (it only read, or failed) without
    /// waiting for it: rolled back in a task of its own within [`ROLLBACK_WITHIN`], or else
    /// closed.
    fn roll_back_later(mut self) {
        // Outside a runtime (none on a request path), `self` is dropped here: closed.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _closed_if_not =
                    tokio::time::timeout(ROLLBACK_WITHIN, self.end("ROLLBACK")).await;
            });
        }
    }

    async fn end(&mut self, statement: &'static str) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(statement).execute(&mut *self.conn).await?;
        self.work = Work::Idle;
        Ok(())
    }
}

impl From<PoolConnection<Postgres>> for Held {
    fn from(conn: PoolConnection<Postgres>) -> Self {
        Self {
            conn,
            work: Work::Idle,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.work != Work::Idle {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for Held {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

/// Any mutable use of an idle connection makes it busy until [`Held::release`] or
/// [`Held::done`]: a statement cut short closes it.
impl DerefMut for Held {
    fn deref_mut(&mut self) -> &mut PgConnection {
        if self.work == Work::Idle {
            self.work = Work::Busy;
        }
        &mut self.conn
    }
}
