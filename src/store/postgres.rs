//! The Postgres store: every SQL statement of the crate, for Postgres.

use std::{sync::LazyLock, time::Duration};

use sqlx::{PgPool, Postgres, migrate::Migrator, pool::PoolConnection};

use super::{
    Counter, Created, Expired, LoginFailures, LoginRow, NewSession, SessionInfo, SessionRow,
};
use crate::{Error, SessionId, UserId};

/// The crate's migrations, embedded at compile time.
///
/// Its bookkeeping table is `_axum_live_auth_migrations`, separate from the application's own
/// `_sqlx_migrations`, so both migrators run on one database without seeing each other.
///
/// Usually applied with [`migrate`](crate::migrate); a test can name it in
/// `#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]`.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
/// axum_live_auth::MIGRATOR.run(&pool).await?;
/// # Ok(())
/// # }
/// ```
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    // Set once, before the first run; changing it on a deployed database would make the
    // migrations run again, which is what the "dangerous" in the name warns about.
    migrator.dangerous_set_table_name("_axum_live_auth_migrations");
    migrator
});

/// The one query of every authenticated request: session, user, disabled flag and effective
/// permissions, only if neither deadline has passed. It reads `auth_users.permissions`, which
/// triggers keep up to date, instead of joining the grant tables (see README, "Cost of the
/// per-request query").
const LOOKUP: &str = "\
SELECT s.secret_hash, s.user_id, u.username, u.permissions, s.authenticated_at,
s.last_seen_at, s.idle_expires_at, s.expires_at, now() AS now
  FROM auth_sessions s
  JOIN auth_users u ON u.id = s.user_id
 WHERE s.id = $1
   AND s.expires_at > now()
   AND s.idle_expires_at > now()
   AND u.disabled_at IS NULL";

/// Pushes the idle deadline forward, never past the absolute one. The `last_seen_at` condition
/// makes concurrent touches of one session write once.
const TOUCH: &str = "\
UPDATE auth_sessions
   SET last_seen_at = now(),
       idle_expires_at = LEAST(now() + $2, expires_at)
 WHERE id = $1
   AND last_seen_at <= now() - $3";

/// Inserts a session for an enabled user and, if it was inserted, ends the user's least recently
/// used sessions beyond the cap ($8). A colliding id inserts nothing (and ends nothing) and is
/// retried by the caller with a new token. The IP address is bound as text and cast, since
/// `std::net::IpAddr` maps to `inet` in sqlx only with an extra crate.
const CREATE_SESSION: &str = "\
WITH new AS (
    INSERT INTO auth_sessions
           (id, secret_hash, user_id, idle_expires_at, expires_at, user_agent, ip)
    SELECT $1, $2, u.id, now() + LEAST($4, $5), now() + $5, $6, $7::inet
      FROM auth_users u
     WHERE u.id = $3 AND u.disabled_at IS NULL
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
), evicted AS (
    DELETE FROM auth_sessions
     WHERE EXISTS (SELECT 1 FROM new)
       AND id IN (SELECT id FROM auth_sessions WHERE user_id = $3
                   ORDER BY last_seen_at DESC, created_at DESC, id OFFSET $8 - 1)
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM new), coalesce((SELECT array_agg(id) FROM evicted), '{}')";

/// Replaces a live session by a new one: same user, creation time, absolute deadline, user
/// agent and IP; a fresh idle deadline; `authenticated_at` now if $5. One statement, so the
/// old token is dead the moment the new one exists.
const ROTATE: &str = "\
WITH old AS (
    DELETE FROM auth_sessions
     WHERE id = $1 AND expires_at > now() AND idle_expires_at > now()
    RETURNING *
)
INSERT INTO auth_sessions (id, secret_hash, user_id, created_at, last_seen_at, idle_expires_at,
                           expires_at, authenticated_at, user_agent, ip)
SELECT $2, $3, user_id, created_at, now(), LEAST(now() + $4, expires_at), expires_at,
       CASE WHEN $5 THEN now() ELSE authenticated_at END, user_agent, ip
  FROM old
RETURNING 1";

const LIST_SESSIONS: &str = "\
SELECT id, created_at, last_seen_at, idle_expires_at, expires_at, user_agent, host(ip) AS ip,
       false AS current
  FROM auth_sessions
 WHERE user_id = $1 AND expires_at > now() AND idle_expires_at > now()
 ORDER BY last_seen_at DESC, created_at DESC, id";

pub(super) async fn lookup_session(
    conn: &mut PoolConnection<Postgres>,
    id: &SessionId,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(LOOKUP)
        .bind(id.as_str())
        .fetch_optional(&mut **conn)
        .await
}

pub(super) async fn touch_session(
    conn: &mut PoolConnection<Postgres>,
    id: &SessionId,
    idle_timeout: Duration,
    touch_interval: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(TOUCH)
        .bind(id.as_str())
        .bind(idle_timeout)
        .bind(touch_interval)
        .execute(&mut **conn)
        .await?;
    Ok(())
}

/// Handle on the crate's tables. Cheap to clone (the pool is reference-counted).
#[derive(Debug, Clone)]
pub(super) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub(super) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, as the executor of one more statement.
    fn exec(&self, count: &Counter<'_>) -> &PgPool {
        count.one();
        &self.pool
    }

    pub(super) async fn migrate(&self) -> Result<(), Error> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) fn pings_on_checkout(&self) -> bool {
        self.pool.options().get_test_before_acquire()
    }

    // --- sessions -------------------------------------------------------------------------

    pub(super) async fn connection(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        self.pool.acquire().await
    }

    pub(super) async fn create_session(
        &self,
        count: &Counter<'_>,
        new: &NewSession<'_>,
    ) -> Result<Created, Error> {
        let (inserted, evicted): (bool, Vec<String>) = sqlx::query_as(CREATE_SESSION)
            .bind(new.id.as_str())
            .bind(new.secret_hash)
            .bind(new.user_id)
            .bind(new.idle_timeout)
            .bind(new.absolute_timeout)
            .bind(new.user_agent)
            .bind(new.ip.map(|ip| ip.to_string()))
            .bind(i64::from(new.max_sessions))
            .fetch_one(self.exec(count))
            .await?;
        if inserted {
            return Ok(Created::Yes { evicted });
        }
        // Nothing inserted: either the id exists, or the user is missing or disabled.
        let active: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM auth_users WHERE id = $1 AND disabled_at IS NULL)",
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

    pub(super) async fn rotate_session(
        &self,
        count: &Counter<'_>,
        old: &SessionId,
        new_id: &SessionId,
        new_hash: &[u8],
        idle_timeout: Duration,
        reauthenticated: bool,
    ) -> Result<bool, Error> {
        let done = sqlx::query(ROTATE)
            .bind(old.as_str())
            .bind(new_id.as_str())
            .bind(new_hash)
            .bind(idle_timeout)
            .bind(reauthenticated)
            .execute(self.exec(count))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn list_sessions(
        &self,
        count: &Counter<'_>,
        user: UserId,
    ) -> Result<Vec<SessionInfo>, Error> {
        Ok(sqlx::query_as(LIST_SESSIONS)
            .bind(user)
            .fetch_all(self.exec(count))
            .await?)
    }

    /// Deletes one session of `user`; `false` if the user has no such session.
    pub(super) async fn delete_user_session(
        &self,
        count: &Counter<'_>,
        user: UserId,
        id: &str,
    ) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM auth_sessions WHERE user_id = $1 AND id = $2")
            .bind(user)
            .bind(id)
            .execute(self.exec(count))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes every session of `user` but `keep`; returns how many ended.
    pub(super) async fn delete_user_sessions(
        &self,
        count: &Counter<'_>,
        user: UserId,
        keep: Option<&SessionId>,
    ) -> Result<u64, Error> {
        let done =
            sqlx::query("DELETE FROM auth_sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2")
                .bind(user)
                .bind(keep.map(SessionId::as_str))
                .execute(self.exec(count))
                .await?;
        Ok(done.rows_affected())
    }

    /// Stores a new password hash and ends every session of the user but `keep`, in one
    /// statement; `false` if the user does not exist.
    pub(super) async fn set_password_ending_sessions(
        &self,
        count: &Counter<'_>,
        user: UserId,
        hash: &str,
        keep: Option<&SessionId>,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "WITH ended AS (
                 DELETE FROM auth_sessions WHERE user_id = $1 AND id IS DISTINCT FROM $3
             )
             UPDATE auth_users SET password_hash = $2 WHERE id = $1",
        )
        .bind(user)
        .bind(hash)
        .bind(keep.map(SessionId::as_str))
        .execute(self.exec(count))
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes every session past either deadline.
    pub(super) async fn purge_expired(&self, count: &Counter<'_>) -> Result<Vec<Expired>, Error> {
        Ok(sqlx::query_as(
            "DELETE FROM auth_sessions WHERE expires_at <= now() OR idle_expires_at <= now()
             RETURNING id, user_id, user_agent, host(ip) AS ip",
        )
        .fetch_all(self.exec(count))
        .await?)
    }

    pub(super) async fn username(
        &self,
        count: &Counter<'_>,
        user: UserId,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT username FROM auth_users WHERE id = $1")
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
        Ok(sqlx::query_as(
            "SELECT ip.failures AS ip_failures,
                    extract(epoch FROM ip.window_start + $3 - now())::float8 AS ip_window_left,
                    u.failures AS user_failures,
                    extract(epoch FROM now() - u.last_failure_at)::float8 AS user_since_last
               FROM (SELECT 1) one
               LEFT JOIN auth_login_attempts ip
                      ON ip.kind = 'ip' AND ip.key = $1 AND ip.window_start > now() - $3
               LEFT JOIN auth_login_attempts u ON u.kind = 'user' AND u.key = $2",
        )
        .bind(ip)
        .bind(username)
        .bind(ip_window)
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
        sqlx::query(
            "INSERT INTO auth_login_attempts AS a (kind, key, failures)
             SELECT kind, key, 1 FROM (VALUES ('ip', $1::text), ('user', $2)) v (kind, key)
              WHERE key IS NOT NULL
             ON CONFLICT (kind, key) DO UPDATE
                SET failures = CASE WHEN a.kind = 'user' OR a.window_start > now() - $3
                                    THEN a.failures + 1 ELSE 1 END,
                    window_start = CASE WHEN a.kind = 'ip' AND a.window_start <= now() - $3
                                        THEN now() ELSE a.window_start END,
                    last_failure_at = now()",
        )
        .bind(ip)
        .bind(username)
        .bind(ip_window)
        .execute(self.exec(count))
        .await?;
        Ok(())
    }

    pub(super) async fn clear_login_failures(
        &self,
        count: &Counter<'_>,
        username: &str,
    ) -> Result<(), Error> {
        sqlx::query("DELETE FROM auth_login_attempts WHERE kind = 'user' AND key = $1")
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
        let done = sqlx::query(
            "DELETE FROM auth_login_attempts
WHERE (kind = 'ip' AND window_start <= now() - $1)
                 OR (kind = 'user' AND last_failure_at <= now() - $1 AND failures < $2)",
        )
        .bind(horizon)
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
            "SELECT password_hash FROM auth_users WHERE id = $1 AND disabled_at IS NULL",
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
        sqlx::query("DELETE FROM auth_sessions WHERE id = $1")
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
            "INSERT INTO auth_users (username, password_hash) VALUES ($1, $2) RETURNING id",
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
        sqlx::query_scalar("SELECT id FROM auth_users WHERE lower(username) = lower($1)")
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
               FROM auth_users WHERE lower(username) = lower($1)",
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
        let done = sqlx::query("UPDATE auth_users SET password_hash = $2 WHERE id = $1")
            .bind(user)
            .bind(hash)
            .execute(self.exec(count))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets `disabled_at` and ends every session of the user, in one statement.
    pub(super) async fn disable_user(
        &self,
        count: &Counter<'_>,
        user: UserId,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "WITH ended AS (DELETE FROM auth_sessions WHERE user_id = $1)
             UPDATE auth_users SET disabled_at = coalesce(disabled_at, now()) WHERE id = $1",
        )
        .bind(user)
        .execute(self.exec(count))
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn enable_user(
        &self,
        count: &Counter<'_>,
        user: UserId,
    ) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE auth_users SET disabled_at = NULL WHERE id = $1")
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
             SELECT id, $2 FROM auth_users WHERE id = $1
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
            sqlx::query("DELETE FROM auth_user_permissions WHERE user_id = $1 AND permission = $2")
                .bind(user)
                .bind(permission)
                .execute(self.exec(count))
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates the role if it does not exist yet.
    pub(super) async fn ensure_role(&self, count: &Counter<'_>, name: &str) -> Result<(), Error> {
        sqlx::query("INSERT INTO auth_roles (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
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
             SELECT id, $2 FROM auth_roles WHERE name = $1
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
            "DELETE FROM auth_role_permissions rp USING auth_roles r
              WHERE rp.role_id = r.id AND r.name = $1 AND rp.permission = $2",
        )
        .bind(role)
        .bind(permission)
        .execute(self.exec(count))
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives the user the role. `Err(RoleNotFound)` / `Err(UserNotFound)` when either is missing.
    pub(super) async fn assign_role(
        &self,
        count: &Counter<'_>,
        user: UserId,
        role: &str,
    ) -> Result<(), Error> {
        let done = sqlx::query(
            "INSERT INTO auth_user_roles (user_id, role_id)
             SELECT u.id, r.id FROM auth_users u, auth_roles r WHERE u.id = $1 AND r.name = $2
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
            "DELETE FROM auth_user_roles ur USING auth_roles r
              WHERE ur.role_id = r.id AND ur.user_id = $1 AND r.name = $2",
        )
        .bind(user)
        .bind(role)
        .execute(self.exec(count))
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_exists(&self, count: &Counter<'_>, user: UserId) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_users WHERE id = $1)")
            .bind(user)
            .fetch_one(self.exec(count))
            .await
    }

    async fn role_exists(&self, count: &Counter<'_>, role: &str) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_roles WHERE name = $1)")
            .bind(role)
            .fetch_one(self.exec(count))
            .await
    }
}
