//! The test database, Postgres or SQLite, and the few statements whose SQL differs between
//! them (times are `timestamptz` on Postgres and epoch milliseconds on SQLite).

use axum_live_auth::{AuthStore, UserId};
use sqlx::{AssertSqlSafe, PgPool, SqlitePool};

#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl From<PgPool> for Db {
    fn from(pool: PgPool) -> Self {
        Self::Postgres(pool)
    }
}

impl From<SqlitePool> for Db {
    fn from(pool: SqlitePool) -> Self {
        Self::Sqlite(pool)
    }
}

/// SQLite's clock, in the store's unit.
const SQLITE_NOW: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

impl Db {
    pub fn store(&self) -> AuthStore {
        match self {
            Self::Postgres(pool) => pool.into(),
            Self::Sqlite(pool) => pool.into(),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Self::Sqlite(_))
    }

    /// The Postgres pool, for the tests that only make sense on Postgres.
    pub fn postgres(&self) -> &PgPool {
        match self {
            Self::Postgres(pool) => pool,
            Self::Sqlite(_) => panic!("a Postgres-only test got SQLite"),
        }
    }

    /// Applies an application's own migrations, beside the crate's.
    pub async fn run(&self, migrator: &sqlx::migrate::Migrator) {
        match self {
            Self::Postgres(pool) => migrator.run(pool).await,
            Self::Sqlite(pool) => migrator.run(pool).await,
        }
        .unwrap();
    }

    /// Runs a statement written in SQL both databases understand.
    pub async fn exec(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        match self {
            Self::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            Self::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
        .unwrap();
    }

    /// Runs `postgres` or `sqlite`, whichever fits; `NOW` in the SQLite text is its clock,
    /// outside string literals only: a session id written into the text may hold `NOW`.
    pub async fn exec_each(&self, postgres: &str, sqlite: &str) {
        match self {
            Self::Postgres(_) => self.exec(postgres).await,
            Self::Sqlite(_) => {
                let parts = sqlite.split('\'').enumerate();
                let parts: Vec<String> = parts
                    .map(|(i, part)| {
                        if i % 2 == 0 {
                            part.replace("NOW", SQLITE_NOW)
                        } else {
                            part.to_owned()
                        }
                    })
                    .collect();
                self.exec(&parts.join("'")).await
            }
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let sql = AssertSqlSafe(sql.to_owned());
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap()
    }

    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }

    /// The only session row, every column as text.
    pub async fn session_row_text(&self) -> String {
        match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar("SELECT row_to_json(s)::text FROM auth_sessions s")
                    .fetch_one(pool)
                    .await
            }
            Self::Sqlite(pool) => sqlx::query_scalar(
                "SELECT json_object('id', id, 'secret_hash', hex(secret_hash), 'user_id', user_id,
                        'created_at', created_at, 'last_seen_at', last_seen_at,
                        'idle_expires_at', idle_expires_at, 'expires_at', expires_at,
                        'authenticated_at', authenticated_at, 'user_agent', user_agent, 'ip', ip)
                   FROM auth_sessions",
            )
            .fetch_one(pool)
            .await,
        }
        .unwrap()
    }

    /// (id, secret_hash) of the only session.
    pub async fn session_id_and_hash(&self) -> (String, Vec<u8>) {
        let sql = "SELECT id, secret_hash FROM auth_sessions";
        match self {
            Self::Postgres(pool) => sqlx::query_as(sql).fetch_one(pool).await,
            Self::Sqlite(pool) => sqlx::query_as(sql).fetch_one(pool).await,
        }
        .unwrap()
    }

    /// Moves every session's idle deadline one second into the past.
    pub async fn expire_idle(&self) {
        self.exec_each(
            "UPDATE auth_sessions SET idle_expires_at = now() - interval '1 second'",
            "UPDATE auth_sessions SET idle_expires_at = NOW - 1000",
        )
        .await;
    }

    /// Moves every session's absolute deadline into the past while it looks active.
    pub async fn expire_absolute_keep_active(&self) {
        self.exec_each(
            "UPDATE auth_sessions SET created_at = now() - interval '13 hours',
                    expires_at = now() - interval '1 second',
                    idle_expires_at = now() - interval '1 second', last_seen_at = now()",
            "UPDATE auth_sessions SET created_at = NOW - 13 * 3600000, expires_at = NOW - 1000,
                    idle_expires_at = NOW - 1000, last_seen_at = NOW",
        )
        .await;
    }

    /// Ten minutes of absolute lifetime left, five of idle, last touched 25 minutes ago.
    pub async fn near_absolute_deadline(&self) {
        self.exec_each(
            "UPDATE auth_sessions SET expires_at = now() + interval '10 minutes',
                    idle_expires_at = now() + interval '5 minutes',
                    last_seen_at = now() - interval '25 minutes'",
            "UPDATE auth_sessions SET expires_at = NOW + 600000, idle_expires_at = NOW + 300000,
                    last_seen_at = NOW - 1500000",
        )
        .await;
    }

    /// Moves `last_seen_at` (and, with `idle`, the idle deadline) `secs` into the past.
    pub async fn age_sessions(&self, secs: u64, idle: bool) {
        let (pg, lite) = if idle {
            (
                format!(
                    "UPDATE auth_sessions SET last_seen_at = last_seen_at - interval '{secs} seconds',
                            idle_expires_at = idle_expires_at - interval '{secs} seconds'"
                ),
                format!(
                    "UPDATE auth_sessions SET last_seen_at = last_seen_at - {secs}000,
                            idle_expires_at = idle_expires_at - {secs}000"
                ),
            )
        } else {
            (
                format!(
                    "UPDATE auth_sessions SET last_seen_at = last_seen_at - interval '{secs} seconds'"
                ),
                format!("UPDATE auth_sessions SET last_seen_at = last_seen_at - {secs}000"),
            )
        };
        self.exec_each(&pg, &lite).await;
    }

    /// Moves the password check of session `id` `secs` into the past.
    pub async fn age_authentication(&self, id: &str, secs: u64) {
        self.exec_each(
            &format!(
                "UPDATE auth_sessions SET authenticated_at = now() - interval '{secs} seconds'
                  WHERE id = '{id}'"
            ),
            &format!(
                "UPDATE auth_sessions SET authenticated_at = NOW - {secs}000 WHERE id = '{id}'"
            ),
        )
        .await;
    }

    /// (created_at, expires_at) of session `id`, in epoch seconds.
    pub async fn created_and_expires(&self, id: &str) -> (f64, f64) {
        match self {
            Self::Postgres(pool) => sqlx::query_as(
                "SELECT extract(epoch FROM created_at)::float8, extract(epoch FROM expires_at)::float8
                   FROM auth_sessions WHERE id = $1",
            )
            .bind(id)
            .fetch_one(pool)
            .await,
            Self::Sqlite(pool) => sqlx::query_as(
                "SELECT created_at / 1000.0, expires_at / 1000.0 FROM auth_sessions WHERE id = $1",
            )
            .bind(id)
            .fetch_one(pool)
            .await,
        }
        .unwrap()
    }

    /// (last_seen_at, idle_expires_at, expires_at) of the only session, in epoch seconds.
    pub async fn deadlines(&self) -> (f64, f64, f64) {
        match self {
            Self::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT extract(epoch FROM last_seen_at)::float8,
                        extract(epoch FROM idle_expires_at)::float8,
                        extract(epoch FROM expires_at)::float8 FROM auth_sessions",
                )
                .fetch_one(pool)
                .await
            }
            Self::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT last_seen_at / 1000.0, idle_expires_at / 1000.0, expires_at / 1000.0
                   FROM auth_sessions",
                )
                .fetch_one(pool)
                .await
            }
        }
        .unwrap()
    }

    /// (idle deadline, absolute deadline) of the only session, in seconds after its creation.
    pub async fn lifetimes(&self) -> (f64, f64) {
        match self {
            Self::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT extract(epoch FROM idle_expires_at - created_at)::float8,
                        extract(epoch FROM expires_at - created_at)::float8 FROM auth_sessions",
                )
                .fetch_one(pool)
                .await
            }
            Self::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT (idle_expires_at - created_at) / 1000.0,
                        (expires_at - created_at) / 1000.0 FROM auth_sessions",
                )
                .fetch_one(pool)
                .await
            }
        }
        .unwrap()
    }

    /// (user_agent, authenticated within the last minute) of the only session.
    pub async fn session_meta(&self) -> (Option<String>, bool) {
        match self {
            Self::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT user_agent, authenticated_at > now() - interval '1 minute'
                   FROM auth_sessions",
                )
                .fetch_one(pool)
                .await
            }
            Self::Sqlite(pool) => {
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT user_agent, authenticated_at > {SQLITE_NOW} - 60000 FROM auth_sessions"
                )))
                .fetch_one(pool)
                .await
            }
        }
        .unwrap()
    }

    pub async fn password_hash(&self, user: UserId) -> String {
        let sql = "SELECT password_hash FROM auth_users WHERE id = $1";
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).bind(user).fetch_one(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(sql).bind(user).fetch_one(pool).await,
        }
        .unwrap()
    }

    /// The user's `permissions` column and their direct grants, each sorted by byte value.
    pub async fn permissions_column_and_grants(&self, user: UserId) -> (Vec<String>, Vec<String>) {
        let grants_sql = "SELECT permission FROM auth_user_permissions WHERE user_id = $1";
        let (column, mut grants): (Vec<String>, Vec<String>) = match self {
            Self::Postgres(pool) => (
                sqlx::query_scalar("SELECT permissions FROM auth_users WHERE id = $1")
                    .bind(user)
                    .fetch_one(pool)
                    .await
                    .unwrap(),
                sqlx::query_scalar(grants_sql)
                    .bind(user)
                    .fetch_all(pool)
                    .await
                    .unwrap(),
            ),
            Self::Sqlite(pool) => (
                sqlx::query_scalar::<_, String>("SELECT permissions FROM auth_users WHERE id = $1")
                    .bind(user)
                    .fetch_one(pool)
                    .await
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect(),
                sqlx::query_scalar(grants_sql)
                    .bind(user)
                    .fetch_all(pool)
                    .await
                    .unwrap(),
            ),
        };
        grants.sort();
        (column, grants)
    }
}
