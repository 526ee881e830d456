//! The SQLite store: every SQL statement of the crate, for SQLite.
//!
//! Times are INTEGER milliseconds since the Unix epoch, computed by SQLite itself (`NOW` below),
//! so that, as on Postgres, one clock (the database's) decides every deadline.

use std::{str::FromStr, sync::LazyLock, time::Duration};

use sqlx::{
    Sqlite, SqlitePool,
    migrate::Migrator,
    pool::PoolConnection,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};
use time::OffsetDateTime;

use super::{
    Counter, Created, Expired, LoginFailures, LoginRow, NewSession, SessionInfo, SessionRow,
};
use crate::{Error, SessionId, UserId};

/// The SQLite store's migrations (`migrations/sqlite`), embedded at compile time, with the same
/// tables and columns as `MIGRATOR` (Postgres) and the same separate bookkeeping table,
/// `_axum_live_auth_migrations`. Usually applied with [`migrate`](crate::migrate).
pub static SQLITE_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.dangerous_set_table_name("_axum_live_auth_migrations");
    migrator
});

/// Connection options for an SQLite database used by this crate: the file is created if
/// missing, and it runs in WAL mode with `synchronous=NORMAL`, a 5-second busy timeout and
/// foreign keys on, so that many concurrent requests wait for the one writer instead of
/// failing with "database is locked".
///
/// # Errors
///
/// [`Error::Database`] when `url` is not an SQLite URL (`sqlite://path`, `sqlite::memory:`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let options = axum_live_auth::sqlite_connect_options("sqlite://app.db")?;
/// let pool = sqlx::sqlite::SqlitePoolOptions::new().connect_lazy_with(options);
/// let auth = axum_live_auth::AuthLayer::builder(pool)
///     .allowed_origin("https://app.example.com")
///     .build()?;
/// # let _ = auth; Ok(())
/// # }
/// ```
pub fn sqlite_connect_options(url: &str) -> Result<SqliteConnectOptions, Error> {
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true))
}

/// The database's current time in milliseconds; stable within one statement.
macro_rules! now {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}

const LOOKUP: &str = concat!(
    "SELECT s.secret_hash, s.user_id, u.username, u.permissions, s.authenticated_at,
s.last_seen_at, s.idle_expires_at, s.expires_at, ",
    now!(),
    " AS now
       FROM auth_sessions s
       JOIN auth_users u ON u.id = s.user_id
      WHERE s.id = ?1
        AND s.expires_at > ",
    now!(),
    " AND s.idle_expires_at > ",
    now!(),
    " AND u.disabled_at IS NULL"
);

const TOUCH: &str = concat!(
    "UPDATE auth_sessions
        SET last_seen_at = ",
    now!(),
    ", idle_expires_at = min(",
    now!(),
    " + ?2, expires_at)
      WHERE id = ?1
        AND last_seen_at <= ",
    now!(),
    " - ?3"
);

const CREATE_SESSION: &str = concat!(
    "INSERT INTO auth_sessions
            (id, secret_hash, user_id, idle_expires_at, expires_at, user_agent, ip)
     SELECT ?1, ?2, u.id, ",
    now!(),
    " + min(?4, ?5), ",
    now!(),
    " + ?5, ?6, ?7
       FROM auth_users u
      WHERE u.id = ?3 AND u.disabled_at IS NULL
     ON CONFLICT (id) DO NOTHING
     RETURNING 1"
);

/// After a new session ?3 of user ?1: ends the user's least recently used other sessions so
/// that at most ?2 remain with the new one.
const EVICT: &str = "\
DELETE FROM auth_sessions
 WHERE user_id = ?1 AND id <> ?3
   AND id NOT IN (SELECT id FROM auth_sessions WHERE user_id = ?1 AND id <> ?3
                   ORDER BY last_seen_at DESC, created_at DESC, id LIMIT ?2 - 1)
RETURNING id";

/// Copies a live session ?1 into a new one ?2 (see the Postgres store's `ROTATE`).
const ROTATE_INSERT: &str = concat!(
    "INSERT INTO auth_sessions (id, secret_hash, user_id, created_at, last_seen_at,
                                idle_expires_at, expires_at, authenticated_at, user_agent, ip)
     SELECT ?2, ?3, user_id, created_at, ",
    now!(),
    ", min(",
    now!(),
    " + ?4, expires_at), expires_at, CASE WHEN ?5 THEN ",
    now!(),
    " ELSE authenticated_at END, user_agent, ip
       FROM auth_sessions
      WHERE id = ?1 AND expires_at > ",
    now!(),
    " AND idle_expires_at > ",
    now!()
);

const LIST_SESSIONS: &str = concat!(
    "SELECT id, created_at, last_seen_at, idle_expires_at, expires_at, user_agent, ip
       FROM auth_sessions
      WHERE user_id = ?1 AND expires_at > ",
    now!(),
    " AND idle_expires_at > ",
    now!(),
    " ORDER BY last_seen_at DESC, created_at DESC, id"
);

const PURGE: &str = concat!(
    "DELETE FROM auth_sessions WHERE expires_at <= ",
    now!(),
    " OR idle_expires_at <= ",
    now!(),
    " RETURNING id, user_id, user_agent, ip"
);

const DISABLE: &str = concat!(
    "UPDATE auth_users SET disabled_at = coalesce(disabled_at, ",
    now!(),
    ") WHERE id = ?1"
);

const LOGIN_FAILURES: &str = concat!(
    "SELECT ip.failures AS ip_failures,
            (ip.window_start + ?3 - ",
    now!(),
    ") / 1000.0 AS ip_window_left,
            u.failures AS user_failures,
            (",
    now!(),
    " - u.last_failure_at) / 1000.0 AS user_since_last
       FROM (SELECT 1) one
       LEFT JOIN auth_login_attempts ip
              ON ip.kind = 'ip' AND ip.key = ?1 AND ip.window_start > ",
    now!(),
    " - ?3
       LEFT JOIN auth_login_attempts u ON u.kind = 'user' AND u.key = ?2"
);

const RECORD_LOGIN_FAILURE: &str = concat!(
    "INSERT INTO auth_login_attempts AS a (kind, key, failures)
     SELECT column1, column2, 1 FROM (VALUES ('ip', ?1), ('user', ?2)) WHERE column2 IS NOT NULL
     ON CONFLICT (kind, key) DO UPDATE
        SET failures = CASE WHEN a.kind = 'user' OR a.window_start > ",
    now!(),
    " - ?3 THEN a.failures + 1 ELSE 1 END,
            window_start = CASE WHEN a.kind = 'ip' AND a.window_start <= ",
    now!(),
    " - ?3 THEN ",
    now!(),
    " ELSE a.window_start END,
            last_failure_at = ",
    now!()
);

const PURGE_LOGIN_FAILURES: &str = concat!(
    "DELETE FROM auth_login_attempts
      WHERE (kind = 'ip' AND window_start <= ",
    now!(),
    " - ?1)
         OR (kind = 'user' AND last_failure_at <= ",
    now!(),
    " - ?1 AND failures < ?2)"
);

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn time(millis: i64) -> Result<OffsetDateTime, sqlx::Error> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// A listed session as SQLite returns it.
#[derive(sqlx::FromRow)]
struct InfoRow {
    id: String,
    created_at: i64,
    last_seen_at: i64,
    idle_expires_at: i64,
    expires_at: i64,
    user_agent: Option<String>,
    ip: Option<String>,
}

impl TryFrom<InfoRow> for SessionInfo {
    type Error = sqlx::Error;

    fn try_from(row: InfoRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.id,
            created_at: time(row.created_at)?,
            last_seen_at: time(row.last_seen_at)?,
            idle_expires_at: time(row.idle_expires_at)?,
            expires_at: time(row.expires_at)?,
            user_agent: row.user_agent,
            ip: row.ip,
            current: false,
        })
    }
}

/// The lookup's row as SQLite returns it.
#[derive(sqlx::FromRow)]
struct Row {
    secret_hash: Vec<u8>,
    user_id: UserId,
    username: String,
    permissions: String,
    authenticated_at: i64,
    last_seen_at: i64,
    idle_expires_at: i64,
    expires_at: i64,
    now: i64,
}

impl TryFrom<Row> for SessionRow {
    type Error = sqlx::Error;

    fn try_from(row: Row) -> Result<Self, sqlx::Error> {
        Ok(Self {
            secret_hash: row.secret_hash,
            user_id: row.user_id,
            username: row.username,
            permissions: row.permissions.lines().map(str::to_owned).collect(),
            authenticated_at: time(row.authenticated_at)?,
            last_seen_at: time(row.last_seen_at)?,
            idle_expires_at: time(row.idle_expires_at)?,
            expires_at: time(row.expires_at)?,
            now: time(row.now)?,
        })
    }
}

pub(super) async fn lookup_session(
    conn: &mut PoolConnection<Sqlite>,
    id: &SessionId,
) -> Result<Option<SessionRow>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(LOOKUP)
        .bind(id.as_str())
        .fetch_optional(&mut **conn)
        .await?;
    row.map(SessionRow::try_from).transpose()
}

pub(super) async fn touch_session(
    conn: &mut PoolConnection<Sqlite>,
    id: &SessionId,
    idle_timeout: Duration,
    touch_interval: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(TOUCH)
        .bind(id.as_str())
        .bind(millis(idle_timeout))
        .bind(millis(touch_interval))
        .execute(&mut **conn)
        .await?;
    Ok(())
}

/// Handle on the crate's tables in an SQLite database. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub(super) fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The pool, as the executor of one more statement.
    fn exec(&self, count: &Counter<'_>) -> &SqlitePool {
        count.one();
        &self.pool
    }

    pub(super) async fn migrate(&self) -> Result<(), Error> {
        SQLITE_MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// An in-process ping costs no network round trip.
    pub(super) fn pings_on_checkout(&self) -> bool {
        false
    }

    // --- sessions -------------------------------------------------------------------------

    pub(super) async fn connection(&self) -> Result<PoolConnection<Sqlite>, sqlx::Error> {
        self.pool.acquire().await
    }

    /// Inserts the session and ends the least recently used ones beyond the cap, in one
    /// transaction.
    pub(super) async fn create_session(
        &self,
        count: &Counter<'_>,
        new: &NewSession<'_>,
    ) -> Result<Created, Error> {
        count.one();
        let mut tx = self.pool.begin().await?;
        count.one();
        let inserted = sqlx::query(CREATE_SESSION)
            .bind(new.id.as_str())
            .bind(new.secret_hash)
            .bind(new.user_id)
            .bind(millis(new.idle_timeout))
            .bind(millis(new.absolute_timeout))
            .bind(new.user_agent)
            .bind(new.ip.map(|ip| ip.to_string()))
            .fetch_optional(&mut *tx)
            .await?;
        if inserted.is_some() {
            count.one();
            let evicted = sqlx::query_scalar(EVICT)
                .bind(new.user_id)
                .bind(i64::from(new.max_sessions))
                .bind(new.id.as_str())
                .fetch_all(&mut *tx)
                .await?;
            count.one();
            tx.commit().await?;
            return Ok(Created::Yes { evicted });
        }
        count.one();
        tx.rollback().await?;
        // Nothing inserted: either the id exists, or the user is missing or disabled.
        let active: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM auth_users WHERE id = ?1 AND disabled_at IS NULL)",
        )
        .bind(new.user_id)
        .fetch_one(self.exec(count))
        .await?;
        Ok(if active {
            Created::IdTaken
        } else {
            Created::UserInactive
        })
    }

    /// Copies the session into a new one and deletes it, in one transaction.
    pub(super) async fn rotate_session(
        &self,
        count: &Counter<'_>,
        old: &SessionId,
        new_id: &SessionId,
        new_hash: &[u8],
        idle_timeout: Duration,
        reauthenticated: bool,
    ) -> Result<bool, Error> {
        count.one();
        let mut tx = self.pool.begin().await?;
        count.one();
        let copied = sqlx::query(ROTATE_INSERT)
            .bind(old.as_str())
            .bind(new_id.as_str())
            .bind(new_hash)
            .bind(millis(idle_timeout))
            .bind(reauthenticated)
            .execute(&mut *tx)
            .await?;
        if copied.rows_affected() != 1 {
            return Ok(false);
        }
        count.one();
        sqlx::query("DELETE FROM auth_sessions WHERE id = ?1")
            .bind(old.as_str())
            .execute(&mut *tx)
            .await?;
        count.one();
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn list_sessions(
        &self,
        count: &Counter<'_>,
        user: UserId,
    ) -> Result<Vec<SessionInfo>, Error> {
        let rows: Vec<InfoRow> = sqlx::query_as(LIST_SESSIONS)
            .bind(user)
            .fetch_all(self.exec(count))
            .await?;
        Ok(rows
            .into_iter()
            .map(SessionInfo::try_from)
            .collect::<Result<_, _>>()?)
    }

    pub(super) async fn delete_user_session(
        &self,
        count: &Counter<'_>,
        user: UserId,
        id: &str,
    ) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM auth_sessions WHERE user_id = ?1 AND id = ?2")
            .bind(user)
            .bind(id)
            .execute(self.exec(count))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn delete_user_sessions(
        &self,
        count: &Counter<'_>,
        user: UserId,
        keep: Option<&SessionId>,
    ) -> Result<u64, Error> {
        let done = sqlx::query("DELETE FROM auth_sessions WHERE user_id = ?1 AND id IS NOT ?2")
            .bind(user)
            .bind(keep.map(SessionId::as_str))
            .execute(self.exec(count))
            .await?;
        Ok(done.rows_affected())
    }

    /// Stores the hash and ends the sessions in one transaction.
    pub(super) async fn set_password_ending_sessions(
        &self,
        count: &Counter<'_>,
        user: UserId,
        hash: &str,
        keep: Option<&SessionId>,
    ) -> Result<bool, Error> {
        count.one();
        let mut tx = self.pool.begin().await?;
        count.one();
        let done = sqlx::query("UPDATE auth_users SET password_hash = ?2 WHERE id = ?1")
            .bind(user)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        count.one();
        sqlx::query("DELETE FROM auth_sessions WHERE user_id = ?1 AND id IS NOT ?2")
            .bind(user)
            .bind(keep.map(SessionId::as_str))
            .execute(&mut *tx)
            .await?;
        count.one();
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn purge_expired(&self, count: &Counter<'_>) -> Result<Vec<Expired>, Error> {
        Ok(sqlx::query_as(PURGE).fetch_all(self.exec(count)).await?)
    }

    pub(super) async fn username(
        &self,
        count: &Counter<'_>,
        user: UserId,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT username FROM auth_users WHERE id = ?1")
            .bind(user)
            .fetch_optional(self.exec(count))
            .await
    }

    // --- login throttling -------------------------------------------------------------------

    pub(super) async fn login_failures(
        &self,
        count: &Counter<'_>,
        ip: Option<&str>,
        username: &str,
        ip_window: Duration,
    ) -> Result<LoginFailures, Error> {
        Ok(sqlx::query_as(LOGIN_FAILURES)
            .bind(ip)
            .bind(username)
            .bind(millis(ip_window))
            .fetch_one(self.exec(count))
            .await?)
    }

    pub(super) async fn record_login_failure(
        &self,
        count: &Counter<'_>,
        ip: Option<&str>,
        username: &str,
        ip_window: Duration,
    ) -> Result<(), Error> {
        sqlx::query(RECORD_LOGIN_FAILURE)
            .bind(ip)
            .bind(username)
            .bind(millis(ip_window))
            .execute(self.exec(count))
            .await?;
        Ok(())
    }

    pub(super) async fn clear_login_failures(
        &self,
        count: &Counter<'_>,
        username: &str,
    ) -> Result<(), Error> {
        sqlx::query("DELETE FROM auth_login_attempts WHERE kind = 'user' AND key = ?1")
            .bind(username)
            .execute(self.exec(count))
            .await?;
        Ok(())
    }

    pub(super) async fn purge_login_failures(
        &self,
        count: &Counter<'_>,
        horizon: Duration,
        hard_stop: u32,
    ) -> Result<u64, Error> {
        let done = sqlx::query(PURGE_LOGIN_FAILURES)
            .bind(millis(horizon))
            .bind(i64::from(hard_stop))
            .execute(self.exec(count))
            .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn password_hash(
        &self,
        count: &Counter<'_>,
        user: UserId,
    ) -> Result<Option<String>, sqlx::Error> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT password_hash FROM auth_users WHERE id = ?1 AND disabled_at IS NULL",
        )
        .bind(user)
        .fetch_optional(self.exec(count))
        .await?
        .flatten())
    }

    pub(super) async fn delete_session(
        &self,
        count: &Counter<'_>,
        id: &SessionId,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM auth_sessions WHERE id = ?1")
            .bind(id.as_str())
            .execute(self.exec(count))
            .await?;
        Ok(())
    }

    // --- users and grants -------------------------------------------------------------------

    pub(super) async fn create_user(
        &self,
        count: &Counter<'_>,
        username: &str,
        password_hash: Option<&str>,
    ) -> Result<UserId, Error> {
        sqlx::query_scalar(
            "INSERT INTO auth_users (username, password_hash) VALUES (?1, ?2) RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .fetch_one(self.exec(count))
        .await
        .map_err(|e| match e.as_database_error() {
            Some(db) if db.is_unique_violation() => Error::UsernameTaken,
            _ => Error::Database(e),
        })
    }

    pub(super) async fn user_id(
        &self,
        count: &Counter<'_>,
        username: &str,
    ) -> Result<Option<UserId>, sqlx::Error> {
        sqlx::query_scalar("SELECT id FROM auth_users WHERE lower(username) = lower(?1)")
            .bind(username)
            .fetch_optional(self.exec(count))
            .await
    }

    pub(super) async fn login_row(
        &self,
        count: &Counter<'_>,
        username: &str,
    ) -> Result<Option<LoginRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, password_hash, disabled_at IS NOT NULL AS disabled
               FROM auth_users WHERE lower(username) = lower(?1)",
        )
        .bind(username)
        .fetch_optional(self.exec(count))
        .await
    }

    pub(super) async fn set_password_hash(
        &self,
        count: &Counter<'_>,
        user: UserId,
        hash: &str,
    ) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE auth_users SET password_hash = ?2 WHERE id = ?1")
            .bind(user)
            .bind(hash)
            .execute(self.exec(count))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets `disabled_at` and ends every session of the user, in one transaction (SQLite has
    /// no data-modifying common table expressions).
    pub(super) async fn disable_user(
        &self,
        count: &Counter<'_>,
        user: UserId,
    ) -> Result<bool, Error> {
        count.one();
        let mut tx = self.pool.begin().await?;
        count.one();
        let done = sqlx::query(DISABLE).bind(user).execute(&mut *tx).await?;
        count.one();
        sqlx::query("DELETE FROM auth_sessions WHERE user_id = ?1")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        count.one();
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn enable_user(
        &self,
        count: &Counter<'_>,
        user: UserId,
    ) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE auth_users SET disabled_at = NULL WHERE id = ?1")
            .bind(user)
            .execute(self.exec(count))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn grant_permission(
        &self,
        count: &Counter<'_>,
        user: UserId,
        permission: &str,
    ) -> Result<(), Error> {
        let done = sqlx::query(
            "INSERT INTO auth_user_permissions (user_id, permission)
             SELECT id, ?2 FROM auth_users WHERE id = ?1
             ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(permission)
        .execute(self.exec(count))
        .await?;
        if done.rows_affected() == 0 && !self.user_exists(count, user).await? {
            return Err(Error::UserNotFound);
        }
        Ok(())
    }

    pub(super) async fn revoke_permission(
        &self,
        count: &Counter<'_>,
        user: UserId,
        permission: &str,
    ) -> Result<bool, Error> {
        let done =
            sqlx::query("DELETE FROM auth_user_permissions WHERE user_id = ?1 AND permission = ?2")
                .bind(user)
                .bind(permission)
                .execute(self.exec(count))
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn ensure_role(&self, count: &Counter<'_>, name: &str) -> Result<(), Error> {
        sqlx::query("INSERT INTO auth_roles (name) VALUES (?1) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(self.exec(count))
            .await?;
        Ok(())
    }

    pub(super) async fn grant_role_permission(
        &self,
        count: &Counter<'_>,
        role: &str,
        permission: &str,
    ) -> Result<(), Error> {
        let done = sqlx::query(
            "INSERT INTO auth_role_permissions (role_id, permission)
             SELECT id, ?2 FROM auth_roles WHERE name = ?1
             ON CONFLICT DO NOTHING",
        )
        .bind(role)
        .bind(permission)
        .execute(self.exec(count))
        .await?;
        if done.rows_affected() == 0 && !self.role_exists(count, role).await? {
            return Err(Error::RoleNotFound);
        }
        Ok(())
    }

    pub(super) async fn revoke_role_permission(
        &self,
        count: &Counter<'_>,
        role: &str,
        permission: &str,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "DELETE FROM auth_role_permissions
              WHERE permission = ?2 AND role_id IN (SELECT id FROM auth_roles WHERE name = ?1)",
        )
        .bind(role)
        .bind(permission)
        .execute(self.exec(count))
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn assign_role(
        &self,
        count: &Counter<'_>,
        user: UserId,
        role: &str,
    ) -> Result<(), Error> {
        let done = sqlx::query(
            "INSERT INTO auth_user_roles (user_id, role_id)
             SELECT u.id, r.id FROM auth_users u, auth_roles r WHERE u.id = ?1 AND r.name = ?2
             ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(role)
        .execute(self.exec(count))
        .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        if !self.user_exists(count, user).await? {
            return Err(Error::UserNotFound);
        }
        if !self.role_exists(count, role).await? {
            return Err(Error::RoleNotFound);
        }
        Ok(())
    }

    pub(super) async fn unassign_role(
        &self,
        count: &Counter<'_>,
        user: UserId,
        role: &str,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "DELETE FROM auth_user_roles
              WHERE user_id = ?1 AND role_id IN (SELECT id FROM auth_roles WHERE name = ?2)",
        )
        .bind(user)
        .bind(role)
        .execute(self.exec(count))
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_exists(&self, count: &Counter<'_>, user: UserId) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_users WHERE id = ?1)")
            .bind(user)
            .fetch_one(self.exec(count))
            .await
    }

    async fn role_exists(&self, count: &Counter<'_>, role: &str) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_roles WHERE name = ?1)")
            .bind(role)
            .fetch_one(self.exec(count))
            .await
    }
}
