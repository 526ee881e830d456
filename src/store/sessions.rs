//! Sessions: the per-request lookup and touch, creation, rotation, listing, revocation and the
//! purge of expired rows.

use std::{net::IpAddr, time::Duration};

use serde::Serialize;
use time::OffsetDateTime;

use super::{
    AuthStore, BEGIN, Backend, Dialects, StoreKind, execute, on_pool,
    tokens::{AddressChanges, FORGET_ADDRESS_CHANGES},
    types::{Names, Span, Timestamp},
};
#[cfg(feature = "postgres")]
use super::{PgStore, held::Held};
use crate::{Error, SessionId, SessionToken, UserId};

/// [`LOOKUP`]'s second branch, the same on both databases but for the clock (`$now`): the copy
/// a rotation made of the session, if any, with the time it was made (its `last_seen_at` until
/// its first touch, which also drops the replaced secret's hash).
macro_rules! rotated_branch {
    ($now:literal) => {
        concat!(
            "
 UNION ALL
SELECT true, rotated_from_secret_hash, user_id, NULL, NULL, NULL, NULL, NULL, last_seen_at, NULL,
       NULL, ",
            $now,
            ", id
  FROM auth_sessions WHERE rotated_from = $1
 LIMIT 1"
        )
    };
}

/// The one query of every authenticated request: session, user and effective permissions, only
/// if neither deadline has passed, the user is enabled and the session was created under the
/// user's current credentials. It reads `auth_users.permissions`, which triggers keep up to
/// date, instead of joining the grant tables; and returns the database's clock, against which
/// every deadline is measured.
///
/// With no live session, the second branch tells whether a rotation copied it into a new one
/// (index `auth_sessions_rotated_from`): one row flagged `rotated`, with the copy's user and id
/// and the hash of the replaced secret, in the same round trip. A live session is at most one
/// row, after which `LIMIT 1` stops: the hot path never runs the second branch. Both branches
/// cannot yield a row at once: a rotation deletes the row it copies in the same transaction.
const LOOKUP: Dialects = Dialects {
    postgres: concat!(
        "\
SELECT false AS rotated, s.secret_hash, s.user_id, u.username, u.permissions, u.email,
       u.email_verified_at IS NOT NULL AS email_verified, s.authenticated_at,
       s.last_seen_at, s.idle_expires_at, s.expires_at, now() AS now, NULL AS successor
  FROM auth_sessions s
  JOIN auth_users u ON u.id = s.user_id
 WHERE s.id = $1
   AND s.expires_at > now()
   AND s.idle_expires_at > now()
   AND u.disabled_at IS NULL
   AND u.credential_epoch = s.credential_epoch",
        rotated_branch!("now()")
    ),
    sqlite: concat!(
        "\
SELECT false AS rotated, s.secret_hash, s.user_id, u.username, u.permissions, u.email,
       u.email_verified_at IS NOT NULL AS email_verified, s.authenticated_at,
       s.last_seen_at, s.idle_expires_at, s.expires_at, n.now, NULL AS successor
  FROM (SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER) AS now) n,
       auth_sessions s
  JOIN auth_users u ON u.id = s.user_id
 WHERE s.id = $1
   AND s.expires_at > n.now
   AND s.idle_expires_at > n.now
   AND u.disabled_at IS NULL
   AND u.credential_epoch = s.credential_epoch",
        rotated_branch!("CAST(unixepoch('subsec') * 1000 AS INTEGER)")
    ),
};

/// Pushes the idle deadline forward, never past the absolute one. The `last_seen_at` condition
/// makes concurrent touches of one session write once. A rotation's copy forgets the replaced
/// secret at its first touch: the token it replaced is told apart from an unknown one only for
/// requests that were on their way (and never more than a touch interval after the rotation,
/// which the lookup checks), not for the copy's whole life.
///
/// Only a session still live is touched: a touch that waited for the row while someone ended
/// the session by moving a deadline into the past must not move it back. Live as of the touch
/// (`clock_timestamp()`), not as of its transaction's start: through a transaction pooler the
/// lookup and the touch share one transaction. On Postgres a row another transaction holds is
/// skipped, not waited for: the touch is only a hint, and a wait would hold the request up to
/// the lookup's bound and leave, once given up, a backend waiting on the lock for every request
/// of the session.
const TOUCH: Dialects = Dialects {
    postgres: "\
UPDATE auth_sessions s
   SET last_seen_at = now(), idle_expires_at = LEAST(now() + $2, s.expires_at),
       rotated_from_secret_hash = NULL
  FROM (SELECT id FROM auth_sessions
         WHERE id = $1 AND last_seen_at <= now() - $3
           AND idle_expires_at > clock_timestamp() AND expires_at > clock_timestamp()
           FOR NO KEY UPDATE SKIP LOCKED) due
 WHERE s.id = due.id",
    sqlite: "\
UPDATE auth_sessions
   SET last_seen_at = n.now, idle_expires_at = min(n.now + $2, expires_at),
       rotated_from_secret_hash = NULL
  FROM (SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER) AS now) n
 WHERE id = $1 AND last_seen_at <= n.now - $3
   AND idle_expires_at > n.now AND expires_at > n.now",
};

/// Inserts a session for an enabled user whose credentials are still those that were checked
/// ($8, the credential epoch read before the password check; NULL when the app checked them
/// itself). A colliding id inserts nothing and is retried by the caller with a new token. The
/// address is bound as text (Postgres casts it to `inet`). On Postgres the user's row stays
/// locked until the transaction ends, so that logins of one user take turns and each one's
/// eviction counts the sessions of the others (SQLite's `BEGIN IMMEDIATE` already serializes).
const CREATE_SESSION: Dialects = Dialects {
    postgres: "\
INSERT INTO auth_sessions
       (id, secret_hash, user_id, idle_expires_at, expires_at, user_agent, ip, credential_epoch)
SELECT $1, $2, u.id, now() + LEAST($4, $5), now() + $5, $6, $7::inet, u.credential_epoch
  FROM auth_users u
 WHERE u.id = $3 AND u.disabled_at IS NULL AND ($8::bigint IS NULL OR u.credential_epoch = $8)
   FOR NO KEY UPDATE OF u
ON CONFLICT (id) DO NOTHING
RETURNING 1",
    sqlite: "\
INSERT INTO auth_sessions
       (id, secret_hash, user_id, idle_expires_at, expires_at, user_agent, ip, credential_epoch)
SELECT $1, $2, u.id, n.now + min($4, $5), n.now + $5, $6, $7, u.credential_epoch
  FROM auth_users u, (SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER) AS now) n
 WHERE u.id = $3 AND u.disabled_at IS NULL AND ($8 IS NULL OR u.credential_epoch = $8)
ON CONFLICT (id) DO NOTHING
RETURNING 1",
};

/// After a new session $3 of user $1: ends the user's least recently used other sessions so
/// that at most $2 remain with the new one.
const EVICT: &str = "\
DELETE FROM auth_sessions
 WHERE user_id = $1 AND id <> $3
   AND id NOT IN (SELECT id FROM auth_sessions WHERE user_id = $1 AND id <> $3
                   ORDER BY last_seen_at DESC, created_at DESC, id LIMIT $2 - 1)
RETURNING id";

/// Copies a live session $1 into a new one $2: same user, creation time, absolute deadline,
/// credential epoch, user agent and address; a fresh idle deadline; `authenticated_at` now if
/// $5; only if the session is still at credential epoch $6 when given (the epoch of the
/// password just checked: a password change committed meanwhile wins). The old row is deleted
/// in the same transaction. On Postgres the user's row stays locked until then, as in
/// [`CREATE_SESSION`], so that a ban or a password reset that ends the user's sessions cannot
/// miss the copy; the old session's row too, so that a change to it committed meanwhile (its
/// deadline moved into the past) is read, not copied over. Liveness is judged on Postgres by
/// `clock_timestamp()`, the time when the row is read (again, after a wait for a lock), never by
/// `now()`, when the transaction began: a deadline that someone moved into the past while this
/// waited for the user's row, or earlier in a password change's transaction, would be later than
/// that, and the ended session would be copied.
pub(super) const ROTATE: Dialects = Dialects {
    postgres: "\
INSERT INTO auth_sessions (id, secret_hash, user_id, created_at, last_seen_at, idle_expires_at,
                           expires_at, authenticated_at, user_agent, ip, credential_epoch,
                           rotated_from, rotated_from_secret_hash)
SELECT $2, $3, s.user_id, s.created_at, now(), LEAST(now() + $4, s.expires_at), s.expires_at,
       CASE WHEN $5 THEN now() ELSE s.authenticated_at END, s.user_agent, s.ip, s.credential_epoch,
       s.id, s.secret_hash
  FROM auth_sessions s JOIN auth_users u ON u.id = s.user_id
 WHERE s.id = $1 AND s.expires_at > clock_timestamp() AND s.idle_expires_at > clock_timestamp()
   AND u.disabled_at IS NULL AND ($6::bigint IS NULL OR s.credential_epoch = $6)
   FOR NO KEY UPDATE OF u, s",
    sqlite: "\
INSERT INTO auth_sessions (id, secret_hash, user_id, created_at, last_seen_at, idle_expires_at,
                           expires_at, authenticated_at, user_agent, ip, credential_epoch,
                           rotated_from, rotated_from_secret_hash)
SELECT $2, $3, user_id, created_at, n.now, min(n.now + $4, expires_at), expires_at,
       CASE WHEN $5 THEN n.now ELSE authenticated_at END, user_agent, ip, credential_epoch, id,
       secret_hash
  FROM auth_sessions, (SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER) AS now) n
 WHERE id = $1 AND expires_at > n.now AND idle_expires_at > n.now
   AND ($6 IS NULL OR credential_epoch = $6)
   AND user_id IN (SELECT id FROM auth_users WHERE disabled_at IS NULL)",
};

/// The user's live sessions, as [`LOOKUP`] would accept them: unexpired, of an enabled user,
/// created under the user's current credentials (a password set by hand ends sessions by moving
/// the epoch, a ban set by hand by `disabled_at`, neither by deleting them).
const LIST_SESSIONS: Dialects = Dialects {
    postgres: "\
SELECT s.id, s.created_at, s.last_seen_at, s.idle_expires_at, s.expires_at, s.user_agent,
       host(s.ip) AS ip
  FROM auth_sessions s
  JOIN auth_users u ON u.id = s.user_id AND u.credential_epoch = s.credential_epoch
 WHERE s.user_id = $1 AND s.expires_at > now() AND s.idle_expires_at > now()
   AND u.disabled_at IS NULL
 ORDER BY s.last_seen_at DESC, s.created_at DESC, s.id",
    sqlite: "\
SELECT s.id, s.created_at, s.last_seen_at, s.idle_expires_at, s.expires_at, s.user_agent, s.ip
  FROM (SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER) AS now) n, auth_sessions s
  JOIN auth_users u ON u.id = s.user_id AND u.credential_epoch = s.credential_epoch
 WHERE s.user_id = $1 AND s.expires_at > n.now AND s.idle_expires_at > n.now
   AND u.disabled_at IS NULL
 ORDER BY s.last_seen_at DESC, s.created_at DESC, s.id",
};

/// Deletes at most $1 expired sessions, the longest expired first: one bounded batch, so that no
/// statement holds its locks for long however many rows have expired. A session is expired
/// exactly when its idle deadline passed (a CHECK keeps it at or before the absolute one), so
/// each batch is one range of the idle-deadline index: no batch scans what earlier ones
/// deleted, and the last one, which finds little or nothing, is as cheap as the others.
const PURGE_BATCH: Dialects = Dialects {
    postgres: "\
DELETE FROM auth_sessions
 WHERE id IN (SELECT id FROM auth_sessions
               WHERE idle_expires_at <= now()
               ORDER BY idle_expires_at
               LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, user_id, user_agent, host(ip) AS ip",
    sqlite: "\
DELETE FROM auth_sessions
 WHERE id IN (SELECT id FROM auth_sessions
               WHERE idle_expires_at <= CAST(unixepoch('subsec') * 1000 AS INTEGER)
               ORDER BY idle_expires_at
               LIMIT $1)
RETURNING id, user_id, user_agent, ip",
};

/// Ends every session of user $1 but $2 (none if $2 is NULL).
pub(super) const END_OTHER_SESSIONS: &str =
    "DELETE FROM auth_sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2";

/// Locks the user's row until the transaction ends, as [`CREATE_SESSION`] and [`ROTATE`] do
/// (SQLite's `BEGIN IMMEDIATE` already serializes writers: a plain read there).
const LOCK_USER: Dialects = Dialects {
    postgres: "SELECT 1 FROM auth_users WHERE id = $1 FOR NO KEY UPDATE",
    sqlite: "SELECT 1 FROM auth_users WHERE id = $1",
};

/// Ends every session: `TRUNCATE` on Postgres (one statement, one notification to every node,
/// whatever the number of rows), `DELETE` on SQLite.
const DELETE_ALL: Dialects = Dialects {
    postgres: "TRUNCATE auth_sessions",
    sqlite: "DELETE FROM auth_sessions",
};

/// Postgres, before [`DELETE_ALL`]: `TRUNCATE` needs the table to itself, and while it waits
/// for a transaction that reads the table (a backup, a report), every lookup waits behind it.
/// It gives up after this, and nothing changed.
const TRUNCATE_LOCK_WAIT: &str = "SET LOCAL lock_timeout = '1s'";

/// How many connections found closed one lookup passes over before it gives up.
const LOST_CONNECTION_RETRIES: usize = 8;

/// Whether `error` says that the connection itself is gone (its socket broken, or the server
/// ending it: SQLSTATE classes 08 and 57P), so that another connection may well work. Not
/// `08P01`, a protocol violation, which a pooler also sends when it is overloaded (PgBouncer's
/// `query_wait_timeout`): another connection would only add to its load.
fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        #[cfg(feature = "postgres")]
        sqlx::Error::Database(error) => error
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some_and(|error| {
                let code = error.code();
                (code.starts_with("08") && code != "08P01") || code.starts_with("57P")
            }),
        _ => false,
    }
}

/// What the per-request lookup returns for a live session of an enabled user.
#[derive(Debug)]
pub(crate) struct SessionRow {
    pub(crate) secret_hash: Vec<u8>,
    pub(crate) user_id: UserId,
    pub(crate) username: String,
    /// Effective permissions, sorted by byte value and distinct.
    pub(crate) permissions: Names,
    pub(crate) email: Option<String>,
    pub(crate) email_verified: bool,
    pub(crate) authenticated_at: Timestamp,
    pub(crate) last_seen_at: Timestamp,
    pub(crate) idle_expires_at: Timestamp,
    pub(crate) expires_at: Timestamp,
    /// The database's clock at the lookup: every deadline is measured against it, never
    /// against the application server's clock.
    pub(crate) now: Timestamp,
}

/// Why [`LOOKUP`] found no live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Missed {
    /// No such session, or it ended.
    Unknown,
    /// A rotation copied it into a new session, which goes on under a new token: the client
    /// holds it already or is about to. `None` for a copy made before copies kept the replaced
    /// secret's hash.
    Rotated(Option<Successor>),
}

/// The session a rotation made of the one looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Successor {
    pub(crate) user: UserId,
    pub(crate) id: SessionId,
    /// The hash of the replaced session's secret, which a request must present to be told
    /// apart from one with an unknown token.
    pub(crate) replaced_secret_hash: Vec<u8>,
    /// How long ago the rotation was, by the database's clock.
    pub(crate) age: Duration,
}

/// A row of [`LOOKUP`].
struct Looked(Result<SessionRow, Missed>);

/// Decodes [`LOOKUP`]'s columns by position, in the order it selects them: by name, each column
/// would cost a search of the row's column names, on every request.
macro_rules! session_row_by_position {
    ($row:ty) => {
        impl sqlx::FromRow<'_, $row> for Looked {
            fn from_row(row: &$row) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                if row.try_get(0)? {
                    let successor = match (row.try_get(1)?, SessionId::parse(row.try_get(12)?)) {
                        (Some(replaced_secret_hash), Some(id)) => Some(Successor {
                            user: row.try_get(2)?,
                            id,
                            replaced_secret_hash,
                            age: Timestamp::until(row.try_get(8)?, row.try_get(11)?),
                        }),
                        _ => None,
                    };
                    return Ok(Self(Err(Missed::Rotated(successor))));
                }
                Ok(Self(Ok(SessionRow {
                    secret_hash: row.try_get(1)?,
                    user_id: row.try_get(2)?,
                    username: row.try_get(3)?,
                    permissions: row.try_get(4)?,
                    email: row.try_get(5)?,
                    email_verified: row.try_get(6)?,
                    authenticated_at: row.try_get(7)?,
                    last_seen_at: row.try_get(8)?,
                    idle_expires_at: row.try_get(9)?,
                    expires_at: row.try_get(10)?,
                    now: row.try_get(11)?,
                })))
            }
        }
    };
}
#[cfg(feature = "postgres")]
session_row_by_position!(sqlx::postgres::PgRow);
#[cfg(feature = "sqlite")]
session_row_by_position!(sqlx::sqlite::SqliteRow);

/// One of a user's sessions, as listed to them or to an operator. Never the secret or its
/// hash. Serializes with RFC 3339 times, as the [account routes](crate::account_routes) send it.
///
/// ```
/// # fn show(session: &axum_live_auth::SessionInfo) {
/// println!("{} from {:?}, last seen {}", session.id, session.ip, session.last_seen_at);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The public session id (the token's part before the dot).
    pub id: SessionId,
    /// When the user logged in (kept across rotations).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the session was last written back (at most one touch interval stale).
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    /// When it ends unless used.
    #[serde(with = "time::serde::rfc3339")]
    pub idle_expires_at: OffsetDateTime,
    /// When it ends however it is used.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The user agent at login.
    pub user_agent: Option<String>,
    /// The client address at login.
    pub ip: Option<IpAddr>,
    /// Whether this is the session of the request that listed it.
    pub current: bool,
}

#[derive(sqlx::FromRow)]
struct InfoRow {
    id: String,
    created_at: Timestamp,
    last_seen_at: Timestamp,
    idle_expires_at: Timestamp,
    expires_at: Timestamp,
    user_agent: Option<String>,
    ip: Option<String>,
}

/// A session removed by the purge.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Expired {
    pub(crate) id: String,
    pub(crate) user_id: UserId,
    pub(crate) user_agent: Option<String>,
    pub(crate) ip: Option<String>,
}

/// A live session to go on under a new token: its copy takes the new id and secret, with a
/// fresh idle deadline, and `authenticated_at` now if `reauthenticated`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Renewal<'a> {
    pub(crate) old: &'a SessionId,
    pub(crate) new: &'a SessionToken,
    pub(crate) idle_timeout: Duration,
    pub(crate) reauthenticated: bool,
}

/// In transaction `$tx` on `$pool`: copies the renewal's old session into its new one
/// ([`ROTATE`], only at credential epoch `$epoch` when given) and deletes the old; evaluates to
/// whether both happened. Written once for a rotation and for a password change, which renews
/// the session it keeps in its own transaction.
macro_rules! renew {
    ($tx:expr, $pool:expr, $renewal:expr, $epoch:expr) => {{
        let renewal: $crate::store::Renewal<'_> = $renewal;
        let copied = $crate::store::execute!(
            &mut *$tx,
            $crate::store::sessions::ROTATE.of($pool),
            renewal.old.as_str(),
            renewal.new.id().as_str(),
            renewal.new.secret_hash().as_bytes(),
            $crate::store::types::Span(renewal.idle_timeout),
            renewal.reauthenticated,
            $epoch,
        );
        // Only the rotation that ends the old session keeps its copy: a concurrent one waits
        // here for the first to commit, finds the row gone, and rolls back.
        copied == 1
            && $crate::store::execute!(
                &mut *$tx,
                "DELETE FROM auth_sessions WHERE id = $1",
                renewal.old.as_str()
            ) == 1
    }};
}
pub(super) use renew;

/// A session about to be inserted.
#[derive(Debug)]
pub(crate) struct NewSession<'a> {
    pub(crate) id: &'a SessionId,
    pub(crate) secret_hash: &'a [u8],
    pub(crate) user_id: UserId,
    /// The user's credential epoch when their password was checked; `None` when the app checked
    /// the credentials itself.
    pub(crate) credential_epoch: Option<i64>,
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
    /// The user is missing or disabled, or their credentials changed since they were checked.
    Refused,
}

/// One connection, held for the statements of one request, so that the lookup and the touch
/// that may follow it share it; handed back by [`AuthStore::release`] or [`AuthStore::commit`]
/// once they completed. Dropped when they failed or were cut short: a Postgres connection is
/// then closed (see [`held`](super::held)).
#[derive(Debug)]
pub(crate) enum RequestConnection {
    /// A pool connection; through a transaction pooler, the request's statements in one
    /// transaction, which keeps the server connection.
    #[cfg(feature = "postgres")]
    Postgres(Held),
    /// One the layer keeps between requests (see [`kept`](super::kept)).
    #[cfg(feature = "postgres")]
    PostgresKept(super::kept::Kept),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

/// Runs `$body` with `$conn` bound to the request's connection, whichever database it is.
macro_rules! on_connection {
    ($connection:expr, |$conn:ident| $body:expr) => {
        match $connection {
            #[cfg(feature = "postgres")]
            RequestConnection::Postgres($conn) => $body,
            #[cfg(feature = "postgres")]
            RequestConnection::PostgresKept($conn) => $body,
            #[cfg(feature = "sqlite")]
            RequestConnection::Sqlite($conn) => $body,
        }
    };
}

impl RequestConnection {
    /// The session, its user and their permissions, if it is live; else why not.
    pub(crate) async fn lookup(
        &mut self,
        id: &SessionId,
    ) -> Result<Result<SessionRow, Missed>, sqlx::Error> {
        let row: Option<Looked> = on_connection!(self, |conn| {
            sqlx::query_as(LOOKUP.of(conn))
                .bind(id.as_str())
                .fetch_optional(&mut **conn)
                .await
        })?;
        Ok(row.map_or(Err(Missed::Unknown), |row| row.0))
    }

    /// Pushes the idle deadline forward if the touch interval has passed since the last write;
    /// `true` if it did.
    pub(crate) async fn touch(
        &mut self,
        id: &SessionId,
        idle_timeout: Duration,
        touch_interval: Duration,
    ) -> Result<bool, sqlx::Error> {
        on_connection!(self, |conn| {
            sqlx::query(TOUCH.of(conn))
                .bind(id.as_str())
                .bind(Span(idle_timeout))
                .bind(Span(touch_interval))
                .execute(&mut **conn)
                .await
                .map(|done| done.rows_affected() == 1)
        })
    }
}

impl AuthStore {
    /// A connection for the statements of one request.
    pub(crate) async fn connection(&self) -> Result<RequestConnection, sqlx::Error> {
        // sqlx's checkout future is several KiB: boxed, a request's future stays small.
        Ok(match &self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres(PgStore {
                kept: Some(kept),
                pool,
                ..
            }) => match kept.take(pool) {
                Some(conn) => RequestConnection::PostgresKept(conn),
                // Kept from now on if there is room; else the pool's, for this request.
                None => match kept.adopt(Box::pin(pool.acquire()).await?, pool) {
                    Ok(conn) => RequestConnection::PostgresKept(conn),
                    Err(conn) => RequestConnection::Postgres(Held::from(conn)),
                },
            },
            #[cfg(feature = "postgres")]
            Backend::Postgres(store) => RequestConnection::Postgres(Box::pin(store.held()).await?),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => RequestConnection::Sqlite(Box::pin(pool.acquire()).await?),
        })
    }

    /// Ends a request's use of its connection once its statements completed: keeps it for a
    /// later request (see [`kept`](super::kept)) or lets it go back to the pool. A pinned
    /// transaction is rolled back: it only read (a touch [`commit`](Self::commit)s its own).
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub(crate) fn release(&self, conn: RequestConnection) {
        // An SQLite connection goes back into its pool when dropped here.
        #[cfg(feature = "postgres")]
        match conn {
            RequestConnection::Postgres(held) => held.release(),
            RequestConnection::PostgresKept(conn) => {
                if let Some(store) = self.postgres()
                    && let Some(kept) = &store.kept
                {
                    kept.put_back(conn, &store.pool);
                }
            }
            #[cfg(feature = "sqlite")]
            RequestConnection::Sqlite(_) => {}
        }
    }

    /// Ends a request's use of its connection after a write: commits a pinned transaction,
    /// otherwise as [`release`](Self::release).
    pub(crate) async fn commit(&self, conn: RequestConnection) -> Result<(), sqlx::Error> {
        match conn {
            #[cfg(feature = "postgres")]
            RequestConnection::Postgres(held) => held.commit().await,
            conn => {
                self.release(conn);
                Ok(())
            }
        }
    }

    /// The session, its user and their permissions, if it is live; else why not: one round
    /// trip.
    pub(crate) async fn lookup(
        &self,
        id: &SessionId,
    ) -> Result<Result<SessionRow, Missed>, sqlx::Error> {
        let (conn, row) = self.connection_with_lookup(id).await?;
        self.release(conn);
        Ok(row)
    }

    /// A connection for a request's statements, and the session `id` read on it. A connection
    /// the server closed while it sat idle (a restart, a failover, `idle_session_timeout`)
    /// shows only when used: it is dropped and the lookup tried on another, a few times at
    /// most, so that such connections cost no request a `503`.
    pub(crate) async fn connection_with_lookup(
        &self,
        id: &SessionId,
    ) -> Result<(RequestConnection, Result<SessionRow, Missed>), sqlx::Error> {
        let mut tries = 0;
        loop {
            let mut conn = self.connection().await?;
            match conn.lookup(id).await {
                Ok(row) => return Ok((conn, row)),
                Err(error) if tries < LOST_CONNECTION_RETRIES && connection_lost(&error) => {
                    tries += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Inserts a session and ends the user's least recently used ones beyond the cap, in one
    /// transaction.
    pub(crate) async fn create_session(&self, new: &NewSession<'_>) -> Result<Created, Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(BEGIN.of(pool)).await?;
            let inserted = sqlx::query(CREATE_SESSION.of(pool))
                .bind(new.id.as_str())
                .bind(new.secret_hash)
                .bind(new.user_id)
                .bind(Span(new.idle_timeout))
                .bind(Span(new.absolute_timeout))
                .bind(new.user_agent)
                .bind(new.ip.map(|ip| ip.to_string()))
                .bind(new.credential_epoch)
                .fetch_optional(&mut *tx)
                .await?;
            if inserted.is_none() {
                tx.rollback().await?;
                // Nothing inserted: the id exists, or the user may not log in.
                let taken: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_sessions WHERE id = $1)")
                        .bind(new.id.as_str())
                        .fetch_one(pool)
                        .await?;
                return Ok(if taken {
                    Created::IdTaken
                } else {
                    Created::Refused
                });
            }
            let evicted = sqlx::query_scalar(EVICT)
                .bind(new.user_id)
                .bind(i64::from(new.max_sessions))
                .bind(new.id.as_str())
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Created::Yes { evicted })
        })
    }

    /// Replaces a live session by a new one with the same user and absolute deadline, in one
    /// transaction; `false` if the old one is gone or expired.
    pub(crate) async fn rotate_session(
        &self,
        renewal: Renewal<'_>,
        epoch: Option<i64>,
    ) -> Result<bool, Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(BEGIN.of(pool)).await?;
            if !renew!(tx, pool, renewal, epoch) {
                tx.rollback().await?;
                return Ok(false);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// The user's live sessions, most recently used first.
    pub(crate) async fn list_sessions(&self, user: UserId) -> Result<Vec<SessionInfo>, Error> {
        let rows: Vec<InfoRow> = on_pool!(self, |pool| {
            sqlx::query_as(LIST_SESSIONS.of(pool))
                .bind(user)
                .fetch_all(pool)
                .await?
        });
        // A row whose id is not a session id (written by hand) is left out.
        let info = |row: InfoRow| {
            Some(SessionInfo {
                id: SessionId::parse(&row.id)?,
                created_at: row.created_at.0,
                last_seen_at: row.last_seen_at.0,
                idle_expires_at: row.idle_expires_at.0,
                expires_at: row.expires_at.0,
                user_agent: row.user_agent,
                ip: row.ip.and_then(|ip| ip.parse().ok()),
                current: false,
            })
        };
        Ok(rows.into_iter().filter_map(info).collect())
    }

    /// Deletes one session of `user`, and the copy a rotation made of it, doing `changes` to
    /// the user's pending address changes; `false` if the user has neither.
    pub(crate) async fn delete_user_session(
        &self,
        user: UserId,
        id: &SessionId,
        changes: AddressChanges<'_>,
    ) -> Result<bool, Error> {
        let sql = "DELETE FROM auth_sessions WHERE user_id = $1 AND (id = $2 OR rotated_from = $2)";
        Ok(self
            .end_sessions_locked(sql, user, Some(id), changes)
            .await?
            > 0)
    }

    /// Deletes every session of `user` except `keep`, doing `changes` to the user's pending
    /// address changes; returns how many ended.
    pub(crate) async fn delete_user_sessions(
        &self,
        user: UserId,
        keep: Option<&SessionId>,
        changes: AddressChanges<'_>,
    ) -> Result<u64, Error> {
        self.end_sessions_locked(END_OTHER_SESSIONS, user, keep, changes)
            .await
    }

    /// Runs `sql`, a delete of sessions of user $1 given a session id $2, and does `changes` to
    /// the user's pending address changes, in one transaction; returns how many sessions ended.
    /// The user's row is locked first, as [`ROTATE`] locks it, so that a rotation committing
    /// meanwhile is waited for and its copy seen by the delete (and ended); and so is the
    /// making of a link for a session of the user, which holds that row until it commits.
    async fn end_sessions_locked(
        &self,
        sql: &'static str,
        user: UserId,
        id: Option<&SessionId>,
        changes: AddressChanges<'_>,
    ) -> Result<u64, Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(BEGIN.of(pool)).await?;
            execute!(&mut *tx, LOCK_USER.of(pool), user);
            let ended = execute!(&mut *tx, sql, user, id.map(SessionId::as_str));
            let spared = match changes {
                AddressChanges::Kept => None,
                AddressChanges::Spent => Some(None),
                AddressChanges::SpentBut(link) => Some(Some(link.as_str())),
            };
            if let Some(spared) = spared {
                execute!(&mut *tx, FORGET_ADDRESS_CHANGES, user, spared);
            }
            tx.commit().await?;
            Ok(ended)
        })
    }

    /// Ends every session of every user.
    pub(crate) async fn delete_all_sessions(&self) -> Result<(), Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(BEGIN.of(pool)).await?;
            if self.kind() == StoreKind::Postgres {
                execute!(&mut *tx, TRUNCATE_LOCK_WAIT);
            }
            execute!(&mut *tx, DELETE_ALL.of(pool));
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes one batch of at most `batch` expired sessions and says which.
    pub(crate) async fn purge_expired_batch(&self, batch: u32) -> Result<Vec<Expired>, Error> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(PURGE_BATCH.of(pool))
                .bind(i64::from(batch))
                .fetch_all(pool)
                .await?
        }))
    }
}
