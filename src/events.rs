//! Security events, as `tracing` events with stable names and fields.
//!
//! Every event has target `axum_live_auth::security`, level INFO, and the field `event` set to
//! one of: `login`, `login_failed`, `logout`, `session_revoked`, `sessions_revoked_all`,
//! `rotated`, `password_changed`, `reauth`, `expired`. Other fields, where known: `user_id`,
//! `session_id` (the public id, never the token), `previous_session_id` (rotation), `ip`,
//! `user_agent`, `reason`, `count`, `username` (failed logins). Header values are fields
//! (Debug-formatted, so control characters are escaped), never spliced into the message.

use std::net::IpAddr;

use http::HeaderValue;

use crate::{SessionId, UserId};

/// Where a request came from, as far as the layer can tell.
#[derive(Debug, Clone, Default)]
pub(crate) struct Client {
    pub(crate) ip: Option<IpAddr>,
    pub(crate) user_agent: Option<HeaderValue>,
}

/// User agents are kept (and logged) cut to this many bytes.
const MAX_USER_AGENT_BYTES: usize = 512;

impl Client {
    /// The user agent as text: lossy UTF-8, cut to a bounded length.
    pub(crate) fn user_agent(&self) -> Option<String> {
        self.user_agent.as_ref().map(|value| {
            let bytes = value.as_bytes();
            let cut = &bytes[..bytes.len().min(MAX_USER_AGENT_BYTES)];
            String::from_utf8_lossy(cut).into_owned()
        })
    }
}

macro_rules! security_event {
    ($name:literal, $client:expr, $($fields:tt)*) => {
        tracing::info!(
            target: "axum_live_auth::security",
            event = $name,
            ip = ?$client.ip,
            user_agent = ?$client.user_agent(),
            $($fields)*
        )
    };
}

pub(crate) fn login(client: &Client, user: UserId, session: &SessionId) {
    security_event!("login", client, user_id = user, session_id = %session, "login");
}

pub(crate) fn login_failed(client: &Client, username: &str) {
    let username: String = username.chars().take(64).collect();
    security_event!("login_failed", client, username = ?username, "login failed");
}

pub(crate) fn logout(client: &Client, user: UserId, session: &SessionId) {
    security_event!("logout", client, user_id = user, session_id = %session, "logout");
}

pub(crate) fn session_revoked(client: &Client, user: UserId, session: &str, reason: &str) {
    security_event!(
        "session_revoked",
        client,
        user_id = user,
        session_id = %session,
        reason,
        "session revoked"
    );
}

pub(crate) fn sessions_revoked_all(
    client: &Client,
    user: UserId,
    kept: Option<&SessionId>,
    count: u64,
    reason: &str,
) {
    security_event!(
        "sessions_revoked_all",
        client,
        user_id = user,
        session_id = kept.map(tracing::field::display),
        count,
        reason,
        "sessions revoked"
    );
}

pub(crate) fn rotated(client: &Client, user: UserId, previous: &SessionId, session: &SessionId) {
    security_event!(
        "rotated",
        client,
        user_id = user,
        previous_session_id = %previous,
        session_id = %session,
        "session rotated"
    );
}

pub(crate) fn password_changed(
    client: &Client,
    user: UserId,
    session: Option<&SessionId>,
    reason: &str,
) {
    security_event!(
        "password_changed",
        client,
        user_id = user,
        session_id = session.map(tracing::field::display),
        reason,
        "password changed"
    );
}

pub(crate) fn reauth(client: &Client, user: UserId, session: &SessionId) {
    security_event!("reauth", client, user_id = user, session_id = %session, "reauthenticated");
}

pub(crate) fn expired(user: UserId, session: &str, ip: Option<&str>, user_agent: Option<&str>) {
    tracing::info!(
        target: "axum_live_auth::security",
        event = "expired",
        user_id = user,
        session_id = %session,
        ip = ?ip,
        user_agent = ?user_agent,
        "session expired"
    );
}
