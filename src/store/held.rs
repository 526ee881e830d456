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

use std::{
    ops::{Deref, DerefMut},
    time::Duration,
};

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};

/// How long a transaction whose outcome does not matter may take to roll back before its
/// connection is closed instead.
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
    /// A statement outside a transaction, from the moment it may have been sent until it was
    /// answered.
    Statement,
    /// From the moment the `BEGIN` may have been sent until the transaction's end was answered.
    Transaction,
}

impl Held {
    /// A connection of `pool`, doing nothing yet.
    pub(crate) async fn checkout(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self {
            conn: pool.acquire().await?,
            work: Work::Idle,
        })
    }

    /// A connection of `pool` in a transaction begun with `statement` (`BEGIN`, or one that
    /// also pins a server connection).
    pub(crate) async fn begin(pool: &PgPool, statement: &'static str) -> Result<Self, sqlx::Error> {
        let mut held = Self::checkout(pool).await?;
        held.work = Work::Transaction;
        sqlx::raw_sql(statement).execute(&mut *held.conn).await?;
        Ok(held)
    }

    /// The connection, for a statement that runs outside any transaction (in one, it already
    /// counts as busy); [`statement_done`](Self::statement_done) once it was answered.
    pub(crate) fn for_statement(&mut self) -> &mut PgConnection {
        if self.work == Work::Idle {
            self.work = Work::Statement;
        }
        &mut self.conn
    }

    /// After a statement that ended with `result`: a transaction begun for it alone is
    /// committed (or, after an error, rolled back); the connection is idle again.
    pub(crate) async fn statement_done<T>(
        mut self,
        result: Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        match (self.work, result) {
            (Work::Transaction, Ok(done)) => self.commit().await.map(|()| done),
            (Work::Transaction, Err(error)) => {
                self.roll_back_later();
                Err(error)
            }
            (_, result) => {
                self.work = Work::Idle;
                result
            }
        }
    }

    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.end("COMMIT").await
    }

    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        self.end("ROLLBACK").await
    }

    /// Ends a transaction whose outcome does not matter (it only read, or failed) without
    /// waiting for it: rolled back in a task of its own within [`ROLLBACK_WITHIN`], or else
    /// closed.
    pub(crate) fn roll_back_later(mut self) {
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

impl DerefMut for Held {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
