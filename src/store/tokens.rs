//! One-time tokens sent to a user (password reset, email verification): stored as the public
//! id and the SHA-256 of the secret, like sessions; deleted when used.

use std::time::Duration;

use super::{AuthStore, Dialects, execute, on_pool, types::Span, unique_or};
use crate::{Error, SessionId, SessionToken, UserId};

/// Inserts a token for an enabled user, under the user's current credential epoch, expiring
/// after $6, given the database's time now and the rows it reads (`$from`: the user $3, and
/// in [`CREATE_FOR_SESSION`] a session of theirs).
macro_rules! create {
    ($now:literal, $from:literal) => {
        concat!(
            "INSERT INTO auth_tokens
       (id, secret_hash, user_id, purpose, email, credential_epoch, expires_at)
SELECT $1, $2, u.id, $4, $5, u.credential_epoch, ",
            $now,
            " + $6
  FROM ",
            $from,
            "
RETURNING 1"
        )
    };
}

/// [`create!`] for an enabled user. On Postgres the user's row is held (`FOR SHARE`) until
/// commit, so a ban or an adopted address that spends the user's tokens waits for it and
/// spends it too (SQLite writes one at a time).
const CREATE: Dialects = Dialects {
    postgres: create!(
        "now()",
        "auth_users u WHERE u.id = $3 AND u.disabled_at IS NULL FOR SHARE"
    ),
    sqlite: create!(
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
        "auth_users u WHERE u.id = $3 AND u.disabled_at IS NULL"
    ),
};

/// [`CREATE`] only while session $7 of the user is live at the user's current credential
/// epoch. A request checked when its head came can send its body much later: a reset, a ban,
/// a revocation or a logout in between must not let it mint a link. On Postgres the session's
/// row is held too: an ending still committing is waited for, and its deleted row then yields
/// nothing (a moved epoch, re-read with the user's row, no longer matches the session's), and
/// its deadlines are compared with the clock when they are read (`clock_timestamp()`, as in
/// the sessions' `ROTATE`).
const CREATE_FOR_SESSION: Dialects = Dialects {
    postgres: create!(
        "now()",
        "auth_users u
  JOIN auth_sessions s ON s.id = $7 AND s.user_id = u.id
                      AND s.credential_epoch = u.credential_epoch
                      AND s.expires_at > clock_timestamp()
                      AND s.idle_expires_at > clock_timestamp()
 WHERE u.id = $3 AND u.disabled_at IS NULL
   FOR SHARE OF u, s"
    ),
    sqlite: create!(
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
        "auth_users u
  JOIN auth_sessions s ON s.id = $7 AND s.user_id = u.id
                      AND s.credential_epoch = u.credential_epoch
                      AND s.expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER)
                      AND s.idle_expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER)
 WHERE u.id = $3 AND u.disabled_at IS NULL"
    ),
};

/// A live token of purpose $2: not expired, of an enabled user whose credentials have not
/// changed since it was issued (the epoch it returns); a reset link only while the user's
/// address is still the one it was sent to (a link in a mailbox the user has since left proves
/// nothing). A verification link carries the new address, which is not the user's yet.
const FIND: Dialects = Dialects {
    postgres: "\
SELECT t.secret_hash, t.user_id, t.email, t.credential_epoch
  FROM auth_tokens t JOIN auth_users u ON u.id = t.user_id
 WHERE t.id = $1 AND t.purpose = $2 AND t.expires_at > now()
   AND u.disabled_at IS NULL AND u.credential_epoch = t.credential_epoch
   AND (t.purpose = 'email_verification' OR u.email IS NOT DISTINCT FROM t.email)",
    sqlite: "\
SELECT t.secret_hash, t.user_id, t.email, t.credential_epoch
  FROM auth_tokens t JOIN auth_users u ON u.id = t.user_id
 WHERE t.id = $1 AND t.purpose = $2 AND t.expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER)
   AND u.disabled_at IS NULL AND u.credential_epoch = t.credential_epoch
   AND (t.purpose = 'email_verification' OR u.email IS t.email)",
};

/// Spends token $1: one row deleted for exactly one of any number of concurrent uses.
pub(super) const CONSUME_TOKEN: &str = "DELETE FROM auth_tokens WHERE id = $1";

/// Spends the pending address changes of user $1 (the verification links sent to new
/// addresses) but link $2, when given.
pub(super) const FORGET_ADDRESS_CHANGES: &str = "\
DELETE FROM auth_tokens
 WHERE user_id = $1 AND purpose = 'email_verification' AND id <> coalesce($2, '')";

/// What ending sessions does to the user's pending address changes. Which session asked for a
/// change is not recorded, so ending another session than the request's spends them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AddressChanges<'a> {
    /// Kept: only the request's own session ends.
    Kept,
    /// Spent.
    Spent,
    /// Spent, but the link the request's session has just asked for.
    SpentBut(&'a SessionId),
}

/// Spends every token of user $1.
pub(super) const FORGET_TOKENS: &str = "DELETE FROM auth_tokens WHERE user_id = $1";

const PURGE: Dialects = Dialects {
    postgres: "DELETE FROM auth_tokens WHERE expires_at <= now()",
    sqlite: "DELETE FROM auth_tokens WHERE expires_at <= CAST(unixepoch('subsec') * 1000 AS INTEGER)",
};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    PasswordReset,
    EmailVerification,
}

impl Purpose {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
        }
    }
}

/// A live token as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TokenRow {
    pub(crate) secret_hash: Vec<u8>,
    pub(crate) user_id: UserId,
    pub(crate) email: Option<String>,
    /// The user's credential epoch, then and now.
    pub(crate) credential_epoch: i64,
}

impl AuthStore {
    /// Stores a token; `Ok(false)` if the user is missing or disabled or `session`, when given,
    /// is no longer live ([`CREATE_FOR_SESSION`]). `IdTaken`-like collisions surface as a conflict.
    pub(crate) async fn create_token(
        &self,
        token: &SessionToken,
        user: UserId,
        purpose: Purpose,
        email: Option<&str>,
        lifetime: Duration,
        session: Option<&SessionId>,
    ) -> Result<bool, Error> {
        Ok(on_pool!(self, |pool| {
            let query = |statement: Dialects| {
                sqlx::query(statement.of(pool))
                    .bind(token.id().as_str())
                    .bind(token.secret_hash().as_bytes())
                    .bind(user)
                    .bind(purpose.as_str())
                    .bind(email)
                    .bind(Span(lifetime))
            };
            match session {
                Some(session) => query(CREATE_FOR_SESSION).bind(session.as_str()),
                None => query(CREATE),
            }
            .fetch_optional(pool)
            .await
            .map_err(|e| unique_or(e, Error::Conflict))?
            .is_some()
        }))
    }

    pub(crate) async fn find_token(
        &self,
        id: &SessionId,
        purpose: Purpose,
    ) -> Result<Option<TokenRow>, Error> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(FIND.of(pool))
                .bind(id.as_str())
                .bind(purpose.as_str())
                .fetch_optional(pool)
                .await?
        }))
    }

    pub(crate) async fn purge_tokens(&self) -> Result<u64, Error> {
        Ok(on_pool!(self, |pool| execute!(pool, PURGE.of(pool))))
    }
}
