//! Failed-login counters, shared by every node: an attempt is *reserved* (counted as a failure)
//! in one atomic statement before any password hash is computed, and refused there when over the
//! limit; a success gives back what it reserved.
//!
//! Kinds of row: `ip` counts failures of one client address (a /64 for IPv6) within a fixed
//! window; `user` counts the failures in a row of one account (`id:<user id>`) or of one name no
//! account has (`name:<the database's case folding of it>`, or `name#<its SHA-256>` when that is
//! longer than 200 bytes), and after the free ones blocks further attempts until
//! `blocked_until`, a wait that doubles with each failure up to a cap; `reset` counts, within a
//! window like `ip`, password-reset requests per address (`ip:…`) or account, address changes
//! per user (`email:…`) and sign-ups per address (`signup:…`).

use std::time::Duration;

use super::{
    AuthStore, Dialects, affected, execute, on_pool, repeating_conflicts,
    types::{Span, Timestamp},
};
use crate::{Error, UserId};

/// Reserves one attempt for key ($1 kind, $2 key), unless it is over its limit: an address
/// with $4 failures in its current window of length $3, or a user row still blocked. A user
/// row's block after $5 free failures is $6 × 2^(failures − $5 + 1), at most $7. Returns a row
/// exactly when the attempt may go on: the start of the window it was counted in (a user row's
/// first failure), by which it is given back.
///
/// A row that does not block keeps a `blocked_until` in the past (never `now()`): a concurrent
/// reservation that waited for this one's row lock compares with its own `now()`, its
/// transaction's start, which may be earlier, and must not be refused for it.
const RESERVE: Dialects = Dialects {
    postgres: "\
INSERT INTO auth_login_attempts AS a
       (kind, key, failures, window_start, last_failure_at, blocked_until)
VALUES ($1, $2, 1, now(), now(),
        CASE WHEN $1 = 'user' AND $5 <= 1 THEN now() + LEAST($6 * 2, $7) ELSE '-infinity' END)
ON CONFLICT (kind, key) DO UPDATE
   SET failures = CASE WHEN a.kind <> 'user' AND a.window_start <= now() - $3
                       THEN 1 ELSE a.failures + 1 END,
       window_start = CASE WHEN a.kind <> 'user' AND a.window_start <= now() - $3
                           THEN now() ELSE a.window_start END,
       last_failure_at = now(),
       blocked_until = CASE WHEN a.kind = 'user' AND a.failures + 1 >= $5
                            THEN now() + LEAST($6 * (1::bigint << LEAST(a.failures + 2 - $5, 40)::int), $7)
                            ELSE a.blocked_until END
 WHERE (a.kind <> 'user' AND (a.window_start <= now() - $3 OR a.failures < $4))
    OR (a.kind = 'user' AND a.blocked_until <= now())
RETURNING window_start",
    sqlite: "\
INSERT INTO auth_login_attempts AS a
       (kind, key, failures, window_start, last_failure_at, blocked_until)
SELECT $1, $2, 1, n.now, n.now,
       CASE WHEN $1 = 'user' AND $5 <= 1 THEN n.now + min($6 * 2, $7) ELSE 0 END
  FROM (SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER) AS now) n
 WHERE true
ON CONFLICT (kind, key) DO UPDATE
   SET failures = CASE WHEN a.kind <> 'user' AND a.window_start <= excluded.window_start - $3
                       THEN 1 ELSE a.failures + 1 END,
       window_start = CASE WHEN a.kind <> 'user' AND a.window_start <= excluded.window_start - $3
                           THEN excluded.window_start ELSE a.window_start END,
       last_failure_at = excluded.last_failure_at,
       blocked_until = CASE WHEN a.kind = 'user' AND a.failures + 1 >= $5
                            THEN excluded.last_failure_at
                                 + min($6 * (1 << min(a.failures + 2 - $5, 40)), $7)
                            ELSE a.blocked_until END
 WHERE (a.kind <> 'user' AND (a.window_start <= excluded.window_start - $3 OR a.failures < $4))
    OR (a.kind = 'user' AND a.blocked_until <= excluded.last_failure_at)
RETURNING window_start",
};

/// How long a refused key ($1 kind, $2 key; window $3) stays refused, in seconds. The row may
/// have changed since the refusal (cleared, then written again by a failure that does not
/// block): a time already past, `-infinity` included, reads as no wait.
const WAIT: Dialects = Dialects {
    postgres: "\
SELECT extract(epoch FROM GREATEST(CASE WHEN kind <> 'user' THEN window_start + $3
                                        ELSE blocked_until END, now())
                         - now())::float8
  FROM auth_login_attempts WHERE kind = $1 AND key = $2",
    sqlite: "\
SELECT (CASE WHEN kind <> 'user' THEN window_start + $3 ELSE blocked_until END
        - CAST(unixepoch('subsec') * 1000 AS INTEGER)) / 1000.0
  FROM auth_login_attempts WHERE kind = $1 AND key = $2",
};

const PURGE: Dialects = Dialects {
    postgres: "\
DELETE FROM auth_login_attempts
 WHERE last_failure_at <= now() - $1 AND blocked_until <= now()",
    sqlite: "\
DELETE FROM auth_login_attempts
 WHERE last_failure_at <= CAST(unixepoch('subsec') * 1000 AS INTEGER) - $1
   AND blocked_until <= CAST(unixepoch('subsec') * 1000 AS INTEGER)",
};

const MAX_KEY_BYTES: usize = 200;

/// What a login attempt is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttemptKey {
    kind: &'static str,
    key: String,
}

impl AttemptKey {
    fn new(kind: &'static str, key: String) -> Self {
        Self { kind, key }
    }

    /// A client address, as the layer aggregates it (see `client::address_key`).
    pub(crate) fn address(key: String) -> Self {
        Self::new("ip", key)
    }

    /// Password-reset requests of one address, or of one account (the key of
    /// [`user`](Self::user)).
    pub(crate) fn reset(of: &Self) -> Self {
        let prefix = if of.kind == "ip" { "ip:" } else { "" };
        Self::new("reset", format!("{prefix}{}", of.key))
    }

    /// Sign-ups from one client address (as [`address`](Self::address) takes it), counted with
    /// the reset requests' windows.
    pub(crate) fn sign_up(address: String) -> Self {
        Self::new("reset", format!("signup:ip:{address}"))
    }

    /// Address changes of one user (each sends a verification message), counted with the
    /// reset requests' windows.
    pub(crate) fn email_change(user: UserId) -> Self {
        Self::new("reset", format!("email:id:{user}"))
    }

    /// Address changes asked for from one client address (as [`address`](Self::address) takes
    /// it), by any user.
    pub(crate) fn email_change_from(address: String) -> Self {
        Self::new("reset", format!("email:ip:{address}"))
    }

    /// An existing account.
    pub(crate) fn user(id: UserId) -> Self {
        Self::new("user", format!("id:{id}"))
    }

    /// A name no account has, folded (by the database, for logins). Each name counts apart: a
    /// long one under its hash (`name#`, which no name as it is starts with), never under a
    /// start it shares with others, which would tell a name with an account (never blocked by
    /// another name's failures) from one without.
    pub(crate) fn unknown_name(folded: &str) -> Self {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        use sha2::{Digest as _, Sha256};
        if folded.len() <= MAX_KEY_BYTES {
            return Self::new("user", format!("name:{folded}"));
        }
        let hash = URL_SAFE_NO_PAD.encode(Sha256::digest(folded.as_bytes()));
        Self::new("user", format!("name#{hash}"))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.key
    }
}

/// The limits a reservation enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThrottleLimits {
    /// Failures allowed from one address within `ip_window`.
    pub(crate) ip_failures: u32,
    pub(crate) ip_window: Duration,
    /// Failures in a row of one account or name before it waits.
    pub(crate) user_free_failures: u32,
    /// The first wait is twice this; each further failure doubles it.
    pub(crate) user_base_wait: Duration,
    /// The longest wait.
    pub(crate) user_max_wait: Duration,
}

/// The outcome of reserving an attempt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reservation {
    Granted(Reserved),
    /// Over the limit: no attempt now, for this long.
    Refused(Duration),
}

/// A granted attempt: its key and the window it was counted in, so that giving it back never
/// takes from a later window (which would let that window hold more than its limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reserved {
    key: AttemptKey,
    window: Timestamp,
}

impl Reserved {
    pub(crate) fn key(&self) -> &AttemptKey {
        &self.key
    }
}

impl AuthStore {
    /// Reserves one attempt under `key`, atomically: at most the limit's number of concurrent
    /// reservations succeed.
    pub(crate) async fn reserve_attempt(
        &self,
        key: &AttemptKey,
        limits: &ThrottleLimits,
    ) -> Result<Reservation, Error> {
        let granted: Option<Timestamp> = on_pool!(self, |pool| {
            repeating_conflicts(|| async {
                Ok(sqlx::query_scalar(RESERVE.of(pool))
                    .bind(key.kind)
                    .bind(&key.key)
                    .bind(Span(limits.ip_window))
                    .bind(i64::from(limits.ip_failures))
                    .bind(i64::from(limits.user_free_failures))
                    .bind(Span(limits.user_base_wait))
                    .bind(Span(limits.user_max_wait))
                    .fetch_optional(pool)
                    .await?)
            })
            .await?
        });
        if let Some(window) = granted {
            return Ok(Reservation::Granted(Reserved {
                key: key.clone(),
                window,
            }));
        }
        let seconds: Option<f64> = on_pool!(self, |pool| {
            sqlx::query_scalar(WAIT.of(pool))
                .bind(key.kind)
                .bind(&key.key)
                .bind(Span(limits.ip_window))
                .fetch_optional(pool)
                .await?
        });
        let wait = Duration::try_from_secs_f64(seconds.unwrap_or(1.0).max(1.0))
            .unwrap_or(Duration::from_secs(1));
        Ok(Reservation::Refused(wait))
    }

    /// Gives back one reserved attempt (the attempt succeeded, or never ran), unless its window
    /// has passed (it then no longer counts) or its row was cleared.
    pub(crate) async fn release_attempt(&self, reserved: &Reserved) -> Result<(), Error> {
        let key = &reserved.key;
        repeating_conflicts(|| async {
            affected!(
                self,
                "UPDATE auth_login_attempts SET failures = failures - 1
              WHERE kind = $1 AND key = $2 AND failures > 0 AND window_start = $3",
                key.kind,
                &key.key,
                reserved.window,
            );
            Ok(())
        })
        .await
    }

    /// Forgets an account's or a name's failures in a row (after a successful login).
    pub(crate) async fn clear_attempts(&self, key: &AttemptKey) -> Result<(), Error> {
        repeating_conflicts(|| async {
            affected!(
                self,
                "DELETE FROM auth_login_attempts WHERE kind = $1 AND key = $2",
                key.kind,
                &key.key,
            );
            Ok(())
        })
        .await
    }

    /// Deletes counters idle for longer than `horizon` (and no longer blocking).
    pub(crate) async fn purge_attempts(&self, horizon: Duration) -> Result<u64, Error> {
        Ok(on_pool!(self, |pool| execute!(
            pool,
            PURGE.of(pool),
            Span(horizon)
        )))
    }
}
