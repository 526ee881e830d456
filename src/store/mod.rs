//! The only place with SQL. The rest of the crate talks to the database through [`AuthStore`]
//! and does not know which database it is.
//!
//! Each method is written once: its body is expanded for each database by [`on_pool!`], so the
//! Rust around a statement exists once, and so does every statement both databases understand
//! (sqlx's SQLite accepts `$N` placeholders). Statements that really differ (time arithmetic,
//! arrays) are a [`Dialects`] pair, Postgres and SQLite side by side. Values whose column types
//! differ (timestamps, durations, permission lists) go through the small types in
//! [`types`](self::types), which encode and decode for both.

mod grants;
#[cfg(feature = "postgres")]
mod held;
#[cfg(feature = "postgres")]
mod kept;
mod migrations;
#[cfg(feature = "postgres")]
mod pooler;
mod sessions;
mod throttle;
mod tokens;
mod types;
mod users;

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!("axum-live-auth needs a store: enable the `postgres` or the `sqlite` feature");

#[cfg(feature = "postgres")]
pub use self::migrations::POSTGRES_MIGRATOR;
#[cfg(feature = "sqlite")]
pub use self::migrations::SQLITE_MIGRATOR;
#[cfg(feature = "postgres")]
pub(crate) use self::pooler::PgStore;
#[cfg(feature = "postgres")]
pub use self::pooler::{ThroughPooler, through_transaction_pooler};
pub(crate) use self::{
    grants::GrantRow,
    sessions::{Created, Missed, NewSession, Renewal, RequestConnection, SessionRow},
    throttle::{AttemptKey, Reservation, Reserved, ThrottleLimits},
    tokens::{AddressChanges, Purpose, TokenRow},
    users::{PasswordSet, Recipient},
};
pub use self::{migrations::migrate, sessions::SessionInfo};
use crate::{Error, error::InfrastructureError};

/// `work`, or [`sqlx::Error::PoolTimedOut`] (the database did not answer in time) once
/// `deadline` has passed. On Postgres, work given up on closes its connection (see `held.rs`).
pub(crate) async fn by<T, E: From<sqlx::Error>>(
    deadline: tokio::time::Instant,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut.into()))
}

/// Where sessions, users and grants live: a Postgres or an SQLite pool.
///
/// Built from either pool (`From<PgPool>`, `From<SqlitePool>`, also from references), so every
/// function that takes `impl Into<AuthStore>` takes a pool directly. Cheap to clone.
///
/// ```
/// use axum_live_auth::{AuthStore, StoreKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let pg = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
/// let store = AuthStore::from(&pg);
/// assert_eq!(store.kind(), StoreKind::Postgres);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AuthStore {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    #[cfg(feature = "postgres")]
    Postgres(PgStore),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

/// Which database an [`AuthStore`] keeps its tables in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// Postgres: production, any number of nodes.
    Postgres,
    /// SQLite: one process; local development, single-node tools and tests.
    Sqlite,
}

/// Runs `$body` with `$pool` bound to the store's pool, whichever database it is: the body is
/// written once and compiled for each.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            #[cfg(feature = "postgres")]
            $crate::store::Backend::Postgres($pool) => $body,
            #[cfg(feature = "sqlite")]
            $crate::store::Backend::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Runs `$sql` with the given parameters on `$on` (a pool, or `&mut *tx`) and evaluates to the
/// number of rows it affected; a database error returns from the function.
macro_rules! execute {
    ($on:expr, $sql:expr $(, $param:expr)* $(,)?) => {
        sqlx::query($sql)$(.bind($param))*.execute($on).await?.rows_affected()
    };
}
pub(crate) use execute;

/// [`execute!`] on the store's pool, whichever database it is.
macro_rules! affected {
    ($store:expr, $sql:expr $(, $param:expr)* $(,)?) => {
        $crate::store::on_pool!($store, |pool| $crate::store::execute!(pool, $sql $(, $param)*))
    };
}
pub(crate) use affected;

/// Notifies `channel`, with an empty payload, on `connection` (the listener's probe). One
/// simple-protocol statement, nothing prepared, so it also runs through a transaction pooler;
/// `channel` must be a plain identifier (letters, digits, `_`), as it is written into it.
#[cfg(feature = "postgres")]
pub(crate) async fn notify(
    connection: &mut sqlx::PgConnection,
    channel: &str,
) -> Result<(), sqlx::Error> {
    if !channel
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(sqlx::Error::Protocol(format!(
            "not a plain channel name: {channel:?}"
        )));
    }
    let statement = format!("SELECT pg_notify('{channel}', '')");
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(connection)
        .await
        .map(drop)
}

/// A statement whose text differs between the databases, written side by side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialects {
    pub(crate) postgres: &'static str,
    pub(crate) sqlite: &'static str,
}

impl Dialects {
    /// The text for the database of `on` (a pool or a connection).
    pub(crate) fn of<DB: Dialect>(&self, _on: &impl OnDatabase<DB>) -> &'static str {
        if DB::POSTGRES {
            self.postgres
        } else {
            self.sqlite
        }
    }
}

/// A pool or connection of database `DB`, to pick a [`Dialects`] text by.
pub(crate) trait OnDatabase<DB> {}

impl<DB: sqlx::Database> OnDatabase<DB> for sqlx::Pool<DB> {}
impl<DB: sqlx::Database> OnDatabase<DB> for sqlx::pool::PoolConnection<DB> {}
impl<DB: sqlx::Database> OnDatabase<DB> for sqlx::Transaction<'_, DB> {}
#[cfg(feature = "postgres")]
impl OnDatabase<sqlx::Postgres> for PgStore {}
#[cfg(feature = "postgres")]
impl OnDatabase<sqlx::Postgres> for kept::Kept {}
#[cfg(feature = "postgres")]
impl OnDatabase<sqlx::Postgres> for held::Held {}

/// Which text of a [`Dialects`] a database takes.
pub(crate) trait Dialect: sqlx::Database {
    const POSTGRES: bool;
}

#[cfg(feature = "postgres")]
impl Dialect for sqlx::Postgres {
    const POSTGRES: bool = true;
}

#[cfg(feature = "sqlite")]
impl Dialect for sqlx::Sqlite {
    const POSTGRES: bool = false;
}

/// Runs a single-statement write again when Postgres refused it as a serialization failure
/// (SQLSTATE 40001): 16 tries in all. Such a statement runs in the database's default isolation:
/// under REPEATABLE READ or SERIALIZABLE one that finds its row changed by a transaction
/// committed after it began fails, where READ COMMITTED would have applied it to the row as
/// left; run again, it sees the change. Each failure means another change of the row committed.
/// Only for statements safe to repeat: a failed one changed nothing.
pub(crate) async fn repeating_conflicts<T, F>(mut statement: impl FnMut() -> F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>>,
{
    const ATTEMPTS: usize = 16;
    let mut attempt = 1;
    loop {
        match statement().await {
            Err(Error::Infrastructure(InfrastructureError::Database(sqlx::Error::Database(e))))
                if attempt < ATTEMPTS && e.code().as_deref() == Some("40001") =>
            {
                attempt += 1
            }
            done => return done,
        }
    }
}

/// How a transaction starts. Postgres: in READ COMMITTED whatever the database's default, since
/// the crate's transactions count on a statement that waited for a row lock reading the row as
/// the other transaction committed it (under REPEATABLE READ or SERIALIZABLE it would fail as a
/// serialization failure instead, and a login answer 503). SQLite takes the write lock at once,
/// so that a transaction never has to upgrade a read lock (which fails at once instead of
/// waiting for the busy timeout).
const BEGIN: Dialects = Dialects {
    postgres: "BEGIN ISOLATION LEVEL READ COMMITTED",
    sqlite: "BEGIN IMMEDIATE",
};

/// Connection options for an SQLite database used by this crate: the file is created if
/// missing, and it runs in WAL mode with a 5-second busy timeout and foreign keys on, so that
/// many concurrent requests wait for the one writer instead of failing with "database is
/// locked"; and with `synchronous=FULL`, so that a commit the crate reported (a ban, a
/// revocation, a spent reset link) survives a power loss, which `NORMAL` may roll back. An app
/// that prefers fewer syncs to that says so: `.synchronous(SqliteSynchronous::Normal)` on the
/// returned options.
///
/// # Errors
///
/// [`Error::Infrastructure`] when `url` is not an SQLite URL (`sqlite://path`,
/// `sqlite::memory:`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let options = axum_live_auth::sqlite_connect_options("sqlite://app.db")?;
/// let pool = sqlx::sqlite::SqlitePoolOptions::new().connect_lazy_with(options);
/// let auth = axum_live_auth::AuthLayer::builder(pool)
///     .allowed_origin("https://app.example.com")
///     .build()?;
/// # let _ = auth; Ok(()) }
/// ```
#[cfg(feature = "sqlite")]
pub fn sqlite_connect_options(url: &str) -> Result<sqlx::sqlite::SqliteConnectOptions, Error> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    Ok(url
        .parse::<SqliteConnectOptions>()?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(std::time::Duration::from_secs(5))
        .foreign_keys(true))
}

/// What the crate's entry points take as their database: a Postgres or SQLite pool of sqlx 0.9
/// (owned or borrowed), or an [`AuthStore`].
///
/// ```
/// fn layer_for(pool: impl axum_live_auth::IntoAuthStore) -> axum_live_auth::AuthLayerBuilder {
///     axum_live_auth::AuthLayer::builder(pool)
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pool of the sqlx that axum-live-auth is built on",
    label = "expected an sqlx 0.9 PgPool or SqlitePool",
    note = "axum-live-auth uses sqlx 0.9; a pool of another sqlx version (0.8, say) is another \
            type, even with the same name. Depend on sqlx 0.9, or build the pool through the \
            crate's re-export, `axum_live_auth::sqlx`."
)]
pub trait IntoAuthStore {
    /// The store.
    fn into_auth_store(self) -> AuthStore;
}

impl IntoAuthStore for AuthStore {
    fn into_auth_store(self) -> AuthStore {
        self
    }
}

impl<T: Pool> IntoAuthStore for T
where
    AuthStore: From<T>,
{
    fn into_auth_store(self) -> AuthStore {
        AuthStore::from(self)
    }
}

/// The pools (and references to them) an [`AuthStore`] is made from: sqlx 0.9's `PgPool` and
/// `SqlitePool`, and a `ThroughPooler` (feature `postgres`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pool of the sqlx that axum-live-auth is built on",
    label = "expected an sqlx 0.9 PgPool or SqlitePool",
    note = "axum-live-auth uses sqlx 0.9; a pool of another sqlx version (0.8, say) is another \
            type, even with the same name. Depend on sqlx 0.9, or build the pool through the \
            crate's re-export, `axum_live_auth::sqlx`."
)]
pub trait Pool: sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

/// The pools of each store, owned or borrowed (a borrowed one makes a store of a clone), and the
/// backend each makes.
macro_rules! pools {
    ($($feature:literal: $pool:ty => $backend:ident;)*) => {$(
        #[cfg(feature = $feature)]
        impl sealed::Sealed for $pool {}
        #[cfg(feature = $feature)]
        impl Pool for $pool {}
        #[cfg(feature = $feature)]
        impl sealed::Sealed for &$pool {}
        #[cfg(feature = $feature)]
        impl Pool for &$pool {}
        #[cfg(feature = $feature)]
        impl From<$pool> for AuthStore {
            fn from(pool: $pool) -> Self {
                Self {
                    backend: Backend::$backend(pool.into()),
                }
            }
        }
        #[cfg(feature = $feature)]
        impl From<&$pool> for AuthStore {
            fn from(pool: &$pool) -> Self {
                Self::from(pool.clone())
            }
        }
    )*};
}

pools! {
    "postgres": sqlx::PgPool => Postgres;
    "postgres": ThroughPooler => Postgres;
    "sqlite": sqlx::SqlitePool => Sqlite;
}

impl AuthStore {
    /// Which database the store uses.
    pub fn kind(&self) -> StoreKind {
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => StoreKind::Postgres,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => StoreKind::Sqlite,
        }
    }

    /// This store, keeping up to `max` Postgres connections between requests for their
    /// lookups (see [`kept`](self::kept)); not through a transaction pooler, not on SQLite.
    #[cfg_attr(not(feature = "postgres"), allow(unused_mut, unused_variables))]
    pub(crate) fn keeping_lookup_connections(mut self, max: usize) -> Self {
        match &mut self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(store) => {
                store.kept = (!store.pooled() && max > 0)
                    .then(|| std::sync::Arc::new(kept::KeptConnections::new(max)));
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => {}
        }
        self
    }

    /// Closes this store's kept connections once they are idle past the pool's limits (see
    /// [`KeptConnections::reaping`](kept::KeptConnections::reaping)); `None` if it keeps none.
    #[cfg(feature = "postgres")]
    pub(crate) fn reaping_kept(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let store = self.postgres()?;
        let kept = std::sync::Arc::clone(store.kept.as_ref()?);
        Some(kept::KeptConnections::reaping(kept, store.pool.clone()))
    }

    /// The most connections the store's pool opens.
    pub(crate) fn max_connections(&self) -> u32 {
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(store) => store.pool.options().get_max_connections(),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => pool.options().get_max_connections(),
        }
    }

    #[cfg(feature = "postgres")]
    fn postgres(&self) -> Option<&PgStore> {
        match &self.backend {
            Backend::Postgres(store) => Some(store),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => None,
        }
    }

    /// The Postgres pool, for the node's listener.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        self.postgres().map(|store| &store.pool)
    }

    /// Whether statements go through a transaction pooler, where LISTEN cannot work.
    #[cfg(feature = "postgres")]
    pub(crate) fn through_pooler(&self) -> bool {
        self.postgres().is_some_and(PgStore::pooled)
    }

    /// Whether the pool pings each connection on checkout, a round trip before every query
    /// (an in-process SQLite ping costs none).
    pub(crate) fn pings_on_checkout(&self) -> bool {
        match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(store) => store.pool.options().get_test_before_acquire(),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => false,
        }
    }
}

/// Maps a unique violation to `taken`, anything else to a database error.
fn unique_or(error: sqlx::Error, taken: Error) -> Error {
    match error.as_database_error() {
        Some(db) if db.is_unique_violation() => taken,
        _ => error.into(),
    }
}
