//! Postgres through a transaction pooler (PgBouncer in transaction mode): where each statement
//! keeps one server connection for all its round trips, and is committed before it returns.

use std::sync::Arc;

use futures_util::{StreamExt as _, TryStreamExt as _, future::BoxFuture, stream::BoxStream};
use sqlx::{
    Either, Execute, Executor, Postgres, SqlSafeStr as _, Transaction,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult, PgRow},
};

use super::{held::Held, kept::KeptConnections};

/// Opens the transaction that pins a server connection, and drops whatever prepared statements
/// an earlier client left on it (sqlx names its statements `sqlx_s_1`, `sqlx_s_2`, … on every
/// client connection, so they would collide). In READ COMMITTED, as every transaction of the
/// crate (see `BEGIN` in the store).
const PINNED_BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; DEALLOCATE ALL";

/// The store's Postgres pool, and whether it goes through a transaction pooler.
///
/// As an [`Executor`] it runs a statement on the pool as it is, or, through a pooler, in a
/// transaction of its own, whose `COMMIT` is awaited (see [`through_transaction_pooler`]): a
/// failed commit is the call's error.
#[derive(Debug, Clone)]
pub(crate) struct PgStore {
    pub(crate) pool: PgPool,
    pooled: bool,
    /// The connections a layer keeps for its lookups; none through a pooler, nor outside a
    /// layer.
    pub(crate) kept: Option<Arc<KeptConnections>>,
}

impl PgStore {
    /// A transaction, starting with `statement` (through a pooler: one that also pins).
    pub(crate) async fn begin_with(&self, statement: &'static str) -> Result<Held, sqlx::Error> {
        let statement = if self.pooled { PINNED_BEGIN } else { statement };
        Held::begin(&self.pool, statement).await
    }

    /// A connection for the statements of one request, or for one statement: through a pooler,
    /// in a transaction of their own.
    pub(crate) async fn held(&self) -> Result<Held, sqlx::Error> {
        if self.pooled {
            Held::begin(&self.pool, PINNED_BEGIN).await
        } else {
            Held::checkout(&self.pool).await
        }
    }

    /// Whether statements must be pinned in a transaction of their own.
    pub(crate) fn pooled(&self) -> bool {
        self.pooled
    }

    /// A transaction as sqlx's [`Transaction`], begun with `statement` (through a pooler: one
    /// that also pins a server connection), for sqlx's migrator, which nests its own
    /// transactions in it as savepoints.
    ///
    /// Its `BEGIN` runs in a task of its own, which a cancelled caller does not stop, so that the
    /// connection never goes back to the pool inside it (see [`held`](super::held)). The checkout
    /// stays with the caller, so that one who gives up while waiting for a connection leaves no
    /// task behind to take one for nobody.
    pub(crate) async fn transaction(
        &self,
        statement: &'static str,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let conn = self.pool.acquire().await?;
        let statement = if self.pooled { PINNED_BEGIN } else { statement };
        tokio::spawn(Transaction::begin(conn, Some(statement.into_sql_str())))
            .await
            .unwrap_or_else(|stopped| Err(sqlx::Error::Io(std::io::Error::other(stopped))))
    }
}

impl From<PgPool> for PgStore {
    fn from(pool: PgPool) -> Self {
        Self {
            pool,
            pooled: false,
            kept: None,
        }
    }
}

impl From<ThroughPooler> for PgStore {
    fn from(pooled: ThroughPooler) -> Self {
        Self {
            pooled: true,
            ..Self::from(pooled.0)
        }
    }
}

impl<'p> Executor<'p> for &'_ PgStore {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let store = self.clone();
        let results = async move {
            let mut held = store.held().await?;
            let results = (&mut *held).fetch_many(query).try_collect::<Vec<_>>().await;
            let results = held.done(results).await?;
            Ok::<_, sqlx::Error>(futures_util::stream::iter(results.into_iter().map(Ok)))
        };
        futures_util::stream::once(results).try_flatten().boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let store = self.clone();
        Box::pin(async move {
            let mut held = store.held().await?;
            let row = (&mut *held).fetch_optional(query).await;
            held.done(row).await
        })
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [sqlx::postgres::PgTypeInfo],
    ) -> BoxFuture<'e, Result<sqlx::postgres::PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        (&self.pool).prepare_with(sql, parameters)
    }

    fn describe<'e>(
        self,
        sql: sqlx::SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>> {
        (&self.pool).describe(sql)
    }
}

/// A Postgres pool whose connections go through PgBouncer (or another pooler) in transaction
/// mode, made by [`through_transaction_pooler`]; the crate's entry points take it like a pool.
#[derive(Debug, Clone)]
pub struct ThroughPooler(PgPool);

/// A Postgres pool whose connections go through PgBouncer (or another pooler) in transaction
/// mode, safely.
///
/// sqlx prepares each statement in one round trip and runs it in another, and a transaction
/// pooler may hand the server connection to another client in between. So every statement of
/// the crate on this pool runs in a transaction of its own (`BEGIN` and `COMMIT` around it; a
/// request's session lookup and touch share one), which keeps the server connection for all its
/// round trips. The `COMMIT` is awaited before the call returns, so a change (a revoked grant, a
/// disabled user) is committed when the call says it is done. Prepared statements are not
/// cached (`statement_cache_capacity(0)`) and are deallocated at each `BEGIN`, so that no client
/// finds another's. Costs: two more round trips per statement. The node's listener needs a
/// direct connection ([`listen_pool`](crate::AuthLayerBuilder::listen_pool));
/// [`migrate`](crate::migrate) runs through the pooler, all in one pinned transaction.
///
/// PgBouncer 1.21 and later can track prepared statements itself (`max_prepared_statements`).
/// This pool needs no such tracking, and on 1.21 it must be off for the crate's database or
/// user: 1.21 passes the pool's `DEALLOCATE ALL` on without noting it, then skips preparing a
/// statement it believes is still there, and the request fails. Later versions handle
/// `DEALLOCATE ALL`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
///
/// let through_bouncer: PgConnectOptions = "postgres://app@pgbouncer:6432/app".parse()?;
/// let requests = axum_live_auth::through_transaction_pooler(
///     PgPoolOptions::new().max_connections(20),
///     through_bouncer,
/// );
/// let direct = sqlx::PgPool::connect_lazy("postgres://app@db:5432/app")?;
/// let auth = axum_live_auth::AuthLayer::builder(requests)
///     .allowed_origin("https://app.example.com")
///     .listen_pool(direct)
///     .build()?;
/// # let _ = auth; Ok(())
/// # }
/// ```
pub fn through_transaction_pooler(pool: PgPoolOptions, connect: PgConnectOptions) -> ThroughPooler {
    ThroughPooler(
        // No statement cache (a prepared statement lives on one server connection), and no
        // `extra_float_digits` in the startup packet, which PgBouncer refuses unless its
        // `ignore_startup_parameters` names it (the crate reads no float in text).
        pool.test_before_acquire(false)
            .connect_lazy_with(connect.statement_cache_capacity(0).extra_float_digits(None)),
    )
}
