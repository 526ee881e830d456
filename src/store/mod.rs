//! The only place with SQL. The rest of the crate talks to the database through [`PgStore`].

mod postgres;

use std::{net::IpAddr, time::Duration};

use time::OffsetDateTime;

pub(crate) use self::postgres::{Created, PgStore};
pub use self::postgres::{MIGRATOR, migrate};
use crate::{SessionId, UserId};

/// What the per-request lookup returns for a live session of an enabled user.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SessionRow {
    pub(crate) secret_hash: Vec<u8>,
    pub(crate) user_id: UserId,
    pub(crate) username: String,
    /// Effective permissions, sorted by byte value and distinct.
    pub(crate) permissions: Vec<String>,
    pub(crate) authenticated_at: OffsetDateTime,
    /// The idle deadline is due to be written back (the touch interval has passed).
    pub(crate) touch_due: bool,
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
}
