//! The only place with SQL. The rest of the crate talks to the database through [`AuthStore`]
//! and does not know which database it is.
//!
//! Two implementations with the same tables and the same behaviour: Postgres (feature
//! `postgres`, the default; production, any number of nodes) and SQLite (feature `sqlite`,
//! bundled; local development, single-node tools and tests).

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!("axum-live-auth needs a store: enable the `postgres` or the `sqlite` feature");

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use time::OffsetDateTime;

#[cfg(feature = "postgres")]
pub use self::postgres::MIGRATOR;
#[cfg(feature = "sqlite")]
pub use self::sqlite::{SQLITE_MIGRATOR, sqlite_connect_options};
use crate::{Error, SessionId, UserId};

/// Where sessions, users and grants live: a Postgres or an SQLite pool.
///
/// Built from either pool (`From<PgPool>`, `From<SqlitePool>`, also from references), so every
/// function that takes `impl Into<AuthStore>` takes a pool directly. Cheap to clone.
///
/// ```
/// use axum_live_auth::AuthStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let pg = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
/// let store = AuthStore::from(&pg);
/// assert_eq!(store.statement_count(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AuthStore {
    backend: Backend,
    statements: Arc<AtomicU64>,
}

#[derive(Debug, Clone)]
enum Backend {
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgStore),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteStore),
}

/// Runs `$call` on whichever backend `$self` has, bound to `$store`, with the statement counter
/// bound to `$count`.
macro_rules! dispatch {
    ($self:expr, |$store:ident, $count:ident| $call:expr) => {{
        let $count: &Counter<'_> = &Counter(&$self.statements);
        match &$self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres($store) => $call,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite($store) => $call,
        }
    }};
}

/// Counts the statements a store sends: every statement of a backend starts with `count.one()`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counter<'a>(&'a AtomicU64);

impl Counter<'_> {
    pub(crate) fn one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(feature = "postgres")]
impl From<sqlx::PgPool> for AuthStore {
    fn from(pool: sqlx::PgPool) -> Self {
        Self::new(Backend::Postgres(postgres::PgStore::new(pool)))
    }
}

#[cfg(feature = "postgres")]
impl From<&sqlx::PgPool> for AuthStore {
    fn from(pool: &sqlx::PgPool) -> Self {
        Self::from(pool.clone())
    }
}

#[cfg(feature = "sqlite")]
impl From<sqlx::SqlitePool> for AuthStore {
    fn from(pool: sqlx::SqlitePool) -> Self {
        Self::new(Backend::Sqlite(sqlite::SqliteStore::new(pool)))
    }
}

#[cfg(feature = "sqlite")]
impl From<&sqlx::SqlitePool> for AuthStore {
    fn from(pool: &sqlx::SqlitePool) -> Self {
        Self::from(pool.clone())
    }
}

/// Applies the crate's migrations to the store's database: `MIGRATOR` on Postgres,
/// `SQLITE_MIGRATOR` on SQLite.
///
/// Their bookkeeping table is `_axum_live_auth_migrations`, separate from the application's
/// own `_sqlx_migrations`, so both migrators run on one database without seeing each other.
///
/// # Errors
///
/// [`Error::Migrate`] when a migration fails or the applied ones differ from the shipped ones.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
/// axum_live_auth::migrate(&pool).await?;
/// # Ok(())
/// # }
/// ```
pub async fn migrate(store: impl Into<AuthStore>) -> Result<(), Error> {
    let store = store.into();
    dispatch!(store, |s, _count| s.migrate().await)
}

impl AuthStore {
    fn new(backend: Backend) -> Self {
        Self {
            backend,
            statements: Arc::default(),
        }
    }

    /// How many SQL statements this store (and its clones, and the layers and [`Accounts`]
    /// built from it) has sent to the database. For checking the crate's cost in tests and
    /// dashboards: a request without a session cookie adds nothing, an authenticated one adds
    /// one.
    ///
    /// [`Accounts`]: crate::Accounts
    pub fn statement_count(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// The Postgres pool, for the principal cache's listener.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.backend {
            Backend::Postgres(store) => Some(store.pool()),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => None,
        }
    }

    /// Whether the pool pings each connection on checkout, a round trip before every query.
    pub(crate) fn pings_on_checkout(&self) -> bool {
        dispatch!(self, |s, _count| s.pings_on_checkout())
    }

    // --- sessions -------------------------------------------------------------------------

    /// A connection for the statements of one request, so that the lookup and the touch that
    /// may follow it share one checkout of the pool.
    pub(crate) async fn connection(&self) -> Result<RequestConnection, sqlx::Error> {
        let conn = dispatch!(self, |s, _count| s.connection().await.map(Conn::from))?;
        Ok(RequestConnection {
            conn,
            statements: Arc::clone(&self.statements),
        })
    }

    pub(crate) async fn create_session(&self, new: &NewSession<'_>) -> Result<Created, Error> {
        dispatch!(self, |s, count| s.create_session(count, new).await)
    }

    pub(crate) async fn delete_session(&self, id: &SessionId) -> Result<(), sqlx::Error> {
        dispatch!(self, |s, count| s.delete_session(count, id).await)
    }

    /// Replaces a live session by a new one with the same user and absolute deadline;
    /// `false` if the old one is gone or expired.
    pub(crate) async fn rotate_session(
        &self,
        old: &SessionId,
        new_id: &SessionId,
        new_hash: &[u8],
        idle_timeout: Duration,
        reauthenticated: bool,
    ) -> Result<bool, Error> {
        dispatch!(self, |s, count| s
            .rotate_session(count, old, new_id, new_hash, idle_timeout, reauthenticated)
            .await)
    }

    /// The user's live sessions, most recently used first.
    pub(crate) async fn list_sessions(&self, user: UserId) -> Result<Vec<SessionInfo>, Error> {
        dispatch!(self, |s, count| s.list_sessions(count, user).await)
    }

    /// Deletes one session of `user` by public id; `false` if the user has no such session.
    pub(crate) async fn delete_user_session(&self, user: UserId, id: &str) -> Result<bool, Error> {
        dispatch!(self, |s, count| s
            .delete_user_session(count, user, id)
            .await)
    }

    /// Deletes every session of `user` except `keep`; returns how many ended.
    pub(crate) async fn delete_user_sessions(
        &self,
        user: UserId,
        keep: Option<&SessionId>,
    ) -> Result<u64, Error> {
        dispatch!(self, |s, count| s
            .delete_user_sessions(count, user, keep)
            .await)
    }

    /// Stores a new password hash and ends every session of the user except `keep`,
    /// atomically; `false` if the user does not exist.
    pub(crate) async fn set_password_ending_sessions(
        &self,
        user: UserId,
        hash: &str,
        keep: Option<&SessionId>,
    ) -> Result<bool, Error> {
        dispatch!(self, |s, count| s
            .set_password_ending_sessions(count, user, hash, keep)
            .await)
    }

    /// Deletes every session past either deadline and says which.
    pub(crate) async fn purge_expired(&self) -> Result<Vec<Expired>, Error> {
        dispatch!(self, |s, count| s.purge_expired(count).await)
    }

    /// The password hash of an enabled user.
    pub(crate) async fn password_hash(&self, user: UserId) -> Result<Option<String>, sqlx::Error> {
        dispatch!(self, |s, count| s.password_hash(count, user).await)
    }

    /// The user's name as stored.
    pub(crate) async fn username(&self, user: UserId) -> Result<Option<String>, sqlx::Error> {
        dispatch!(self, |s, count| s.username(count, user).await)
    }

    // --- login throttling -------------------------------------------------------------------

    /// Failures of `ip` in its current window and of `username` in a row, in one query.
    pub(crate) async fn login_failures(
        &self,
        ip: Option<&str>,
        username: &str,
        ip_window: Duration,
    ) -> Result<LoginFailures, Error> {
        dispatch!(self, |s, count| s
            .login_failures(count, ip, username, ip_window)
            .await)
    }

    /// Counts one more failure for `ip` (a new window if the last one ended) and `username`.
    pub(crate) async fn record_login_failure(
        &self,
        ip: Option<&str>,
        username: &str,
        ip_window: Duration,
    ) -> Result<(), Error> {
        dispatch!(self, |s, count| s
            .record_login_failure(count, ip, username, ip_window)
            .await)
    }

    /// Forgets the failures of `username` (after a successful login or a password reset).
    pub(crate) async fn clear_login_failures(&self, username: &str) -> Result<(), Error> {
        dispatch!(self, |s, count| s
            .clear_login_failures(count, username)
            .await)
    }

    /// Deletes failure counters older than `horizon`, except usernames at the hard stop.
    pub(crate) async fn purge_login_failures(
        &self,
        horizon: Duration,
        hard_stop: u32,
    ) -> Result<u64, Error> {
        dispatch!(self, |s, count| s
            .purge_login_failures(count, horizon, hard_stop)
            .await)
    }

    // --- users and grants -------------------------------------------------------------------

    pub(crate) async fn create_user(
        &self,
        username: &str,
        password_hash: Option<&str>,
    ) -> Result<UserId, Error> {
        dispatch!(self, |s, count| s
            .create_user(count, username, password_hash)
            .await)
    }

    pub(crate) async fn user_id(&self, username: &str) -> Result<Option<UserId>, sqlx::Error> {
        dispatch!(self, |s, count| s.user_id(count, username).await)
    }

    pub(crate) async fn login_row(&self, username: &str) -> Result<Option<LoginRow>, sqlx::Error> {
        dispatch!(self, |s, count| s.login_row(count, username).await)
    }

    pub(crate) async fn set_password_hash(&self, user: UserId, hash: &str) -> Result<bool, Error> {
        dispatch!(self, |s, count| s
            .set_password_hash(count, user, hash)
            .await)
    }

    /// Sets `disabled_at` and ends every session of the user, atomically.
    pub(crate) async fn disable_user(&self, user: UserId) -> Result<bool, Error> {
        dispatch!(self, |s, count| s.disable_user(count, user).await)
    }

    pub(crate) async fn enable_user(&self, user: UserId) -> Result<bool, Error> {
        dispatch!(self, |s, count| s.enable_user(count, user).await)
    }

    pub(crate) async fn grant_permission(
        &self,
        user: UserId,
        permission: &str,
    ) -> Result<(), Error> {
        dispatch!(self, |s, count| s
            .grant_permission(count, user, permission)
            .await)
    }

    pub(crate) async fn revoke_permission(
        &self,
        user: UserId,
        permission: &str,
    ) -> Result<bool, Error> {
        dispatch!(self, |s, count| s
            .revoke_permission(count, user, permission)
            .await)
    }

    pub(crate) async fn ensure_role(&self, name: &str) -> Result<(), Error> {
        dispatch!(self, |s, count| s.ensure_role(count, name).await)
    }

    pub(crate) async fn grant_role_permission(
        &self,
        role: &str,
        permission: &str,
    ) -> Result<(), Error> {
        dispatch!(self, |s, count| s
            .grant_role_permission(count, role, permission)
            .await)
    }

    pub(crate) async fn revoke_role_permission(
        &self,
        role: &str,
        permission: &str,
    ) -> Result<bool, Error> {
        dispatch!(self, |s, count| s
            .revoke_role_permission(count, role, permission)
            .await)
    }

    pub(crate) async fn assign_role(&self, user: UserId, role: &str) -> Result<(), Error> {
        dispatch!(self, |s, count| s.assign_role(count, user, role).await)
    }

    pub(crate) async fn unassign_role(&self, user: UserId, role: &str) -> Result<bool, Error> {
        dispatch!(self, |s, count| s.unassign_role(count, user, role).await)
    }
}

/// One pool connection, held for the statements of one request.
#[derive(Debug)]
pub(crate) struct RequestConnection {
    conn: Conn,
    statements: Arc<AtomicU64>,
}

#[derive(Debug)]
enum Conn {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

#[cfg(feature = "postgres")]
impl From<sqlx::pool::PoolConnection<sqlx::Postgres>> for Conn {
    fn from(conn: sqlx::pool::PoolConnection<sqlx::Postgres>) -> Self {
        Self::Postgres(conn)
    }
}

#[cfg(feature = "sqlite")]
impl From<sqlx::pool::PoolConnection<sqlx::Sqlite>> for Conn {
    fn from(conn: sqlx::pool::PoolConnection<sqlx::Sqlite>) -> Self {
        Self::Sqlite(conn)
    }
}

impl RequestConnection {
    /// The one query of every authenticated request: session, user, disabled flag and
    /// effective permissions, only if neither deadline has passed.
    pub(crate) async fn lookup_session(
        &mut self,
        id: &SessionId,
    ) -> Result<Option<SessionRow>, sqlx::Error> {
        Counter(&self.statements).one();
        match &mut self.conn {
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => postgres::lookup_session(conn, id).await,
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(conn) => sqlite::lookup_session(conn, id).await,
        }
    }

    /// Pushes the idle deadline forward (never past the absolute one) if the touch interval
    /// has passed since the last write.
    pub(crate) async fn touch_session(
        &mut self,
        id: &SessionId,
        idle_timeout: Duration,
        touch_interval: Duration,
    ) -> Result<(), sqlx::Error> {
        Counter(&self.statements).one();
        match &mut self.conn {
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => {
                postgres::touch_session(conn, id, idle_timeout, touch_interval).await
            }
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(conn) => {
                sqlite::touch_session(conn, id, idle_timeout, touch_interval).await
            }
        }
    }
}

/// What the per-request lookup returns for a live session of an enabled user.
#[derive(Debug)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
pub(crate) struct SessionRow {
    pub(crate) secret_hash: Vec<u8>,
    pub(crate) user_id: UserId,
    pub(crate) username: String,
    /// Effective permissions, sorted by byte value and distinct.
    pub(crate) permissions: Vec<String>,
    pub(crate) authenticated_at: OffsetDateTime,
    pub(crate) last_seen_at: OffsetDateTime,
    pub(crate) idle_expires_at: OffsetDateTime,
    pub(crate) expires_at: OffsetDateTime,
    /// The database's clock at the lookup: every deadline is measured against it, never
    /// against the application server's clock.
    pub(crate) now: OffsetDateTime,
}

impl SessionRow {
    /// `to - from`, or zero if `to` is earlier.
    pub(crate) fn between(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
        Duration::try_from(to - from).unwrap_or(Duration::ZERO)
    }
}

/// One of a user's sessions, as listed to them or to an operator. Never the secret or its
/// hash.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "postgres", derive(sqlx::FromRow))]
#[non_exhaustive]
pub struct SessionInfo {
    /// The public session id (the token's part before the dot).
    pub id: String,
    /// When the user logged in (kept across rotations).
    pub created_at: OffsetDateTime,
    /// When the session was last written back (at most one touch interval stale).
    pub last_seen_at: OffsetDateTime,
    /// When it ends unless used.
    pub idle_expires_at: OffsetDateTime,
    /// When it ends however it is used.
    pub expires_at: OffsetDateTime,
    /// The user agent at login.
    pub user_agent: Option<String>,
    /// The client address at login.
    pub ip: Option<String>,
    /// Whether this is the session of the request that listed it.
    pub current: bool,
}

/// Failed logins, as the throttle needs them.
#[derive(Debug, Default, PartialEq, sqlx::FromRow)]
pub(crate) struct LoginFailures {
    /// Failures from the IP address in its current window.
    pub(crate) ip_failures: Option<i32>,
    /// Seconds until that window ends.
    pub(crate) ip_window_left: Option<f64>,
    /// Failures of the username in a row.
    pub(crate) user_failures: Option<i32>,
    /// Seconds since the username's last failure.
    pub(crate) user_since_last: Option<f64>,
}

/// A session removed by the purge.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Expired {
    pub(crate) id: String,
    pub(crate) user_id: UserId,
    pub(crate) user_agent: Option<String>,
    pub(crate) ip: Option<String>,
}

/// What password verification needs to know about a user.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LoginRow {
    pub(crate) id: UserId,
    pub(crate) password_hash: Option<String>,
    pub(crate) disabled: bool,
}

/// A session about to be inserted.
#[derive(Debug)]
pub(crate) struct NewSession<'a> {
    pub(crate) id: &'a SessionId,
    pub(crate) secret_hash: &'a [u8],
    pub(crate) user_id: UserId,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    pub(crate) user_agent: Option<&'a str>,
    pub(crate) ip: Option<IpAddr>,
    /// The most sessions a user may have; the least recently used beyond it end.
    pub(crate) max_sessions: u32,
}

/// Outcome of inserting a session.
#[derive(Debug)]
pub(crate) enum Created {
    /// Inserted; these sessions of the user ended to keep under the cap.
    Yes {
        evicted: Vec<String>,
    },
    IdTaken,
    UserInactive,
}
