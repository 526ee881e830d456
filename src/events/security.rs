//! Security events, as `tracing` events with stable names and fields.
//!
//! Every event has target `axum_live_auth::security`, level INFO (WARN for refusals and alerts),
//! and the field `event` set to one of: `login`, `login_failed`, `login_throttled`, `logout`,
//! `session_revoked`, `sessions_revoked_all`, `every_session_revoked`, `rotated`,
//! `password_changed`, `password_reset_requested`, `password_reset`, `email_change_requested`,
//! `email_changed`, `password_reset_throttled`, `email_change_throttled`, `invalid_link`,
//! `signed_up`, `sign_up_throttled`, `reauth`, `expired`, `csrf_rejected`, `invalid_token`,
//! `unknown_session`, `invalid_tokens_alert`.
//! Other fields, where known: `user_id`, `session_id` (the public id, never the token),
//! `previous_session_id` (rotation), `ip`, `user_agent`, `reason`, `count`, `username` (failed
//! or throttled logins), `retry_after_secs`, `path`. Header values are fields (Debug-formatted,
//! so control characters are escaped), never spliced into the message.

use std::time::Duration;

use crate::{SessionId, UserId, client::Client};

macro_rules! security_event {
    ($name:literal, $client:expr, $($fields:tt)*) => {
        security_event!(info, $name, $client, $($fields)*)
    };
    ($level:ident, $name:literal, $client:expr, $($fields:tt)*) => {
        tracing::$level!(
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

/// A username as logged: whatever was typed, cut to 64 characters.
fn logged(username: &str) -> String {
    username.chars().take(64).collect()
}

pub(crate) fn login_failed(client: &Client, username: &str) {
    security_event!("login_failed", client, username = ?logged(username), "login failed");
}

pub(crate) fn login_throttled(client: &Client, username: &str, retry_after: Duration) {
    security_event!(
        warn,
        "login_throttled",
        client,
        username = ?logged(username),
        retry_after_secs = retry_after.as_secs(),
        "login throttled"
    );
}

pub(crate) fn csrf_rejected(client: &Client, reason: &str, path: &str) {
    security_event!(
        warn,
        "csrf_rejected",
        client,
        reason,
        path = ?path,
        "cross-site request refused"
    );
}

/// A token that can never be valid: malformed, a duplicate cookie, an oversized header.
pub(crate) fn invalid_token(client: &Client, reason: &str) {
    security_event!(
        warn,
        "invalid_token",
        client,
        reason,
        "invalid session token"
    );
}

/// A well-formed token of no live session: unknown, expired, revoked, of a disabled user, or
/// with a wrong secret.
pub(crate) fn unknown_session(client: &Client, session: &SessionId, reason: &str) {
    security_event!(
        "unknown_session",
        client,
        session_id = %session,
        reason,
        "unknown or expired session"
    );
}

/// An address presented many invalid tokens within the alert window.
pub(crate) fn invalid_tokens_alert(client: &Client, count: u32) {
    security_event!(
        warn,
        "invalid_tokens_alert",
        client,
        count,
        "many invalid session tokens from one address"
    );
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

pub(crate) fn every_session_revoked(reason: &str) {
    security_event!(
        warn,
        "every_session_revoked",
        Client::default(),
        reason,
        "every session of every user revoked"
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

pub(crate) fn password_reset_requested(client: &Client, user: UserId) {
    security_event!(
        "password_reset_requested",
        client,
        user_id = user,
        "password reset link sent"
    );
}

pub(crate) fn password_reset(client: &Client, user: UserId) {
    security_event!(
        "password_reset",
        client,
        user_id = user,
        "password reset by link"
    );
}

pub(crate) fn email_change_requested(client: &Client, user: UserId) {
    security_event!(
        "email_change_requested",
        client,
        user_id = user,
        "email address change requested; a link went to the new address"
    );
}

pub(crate) fn email_changed(client: &Client, user: UserId) {
    security_event!(
        "email_changed",
        client,
        user_id = user,
        "email address changed by its verification link"
    );
}

/// A reset or verification link refused: unknown, spent, expired, or no longer valid.
pub(crate) fn invalid_link(client: &Client, purpose: &str) {
    security_event!(
        warn,
        "invalid_link",
        client,
        reason = purpose,
        "invalid or spent link"
    );
}

pub(crate) fn signed_up(client: &Client, user: UserId) {
    security_event!("signed_up", client, user_id = user, "user signed up");
}

/// Password-reset requests over a limit: of the address, or of the account asked for (never
/// named here, since the name may be an email address; and the answer does not say which).
pub(crate) fn password_reset_throttled(client: &Client, retry_after: Duration) {
    security_event!(
        warn,
        "password_reset_throttled",
        client,
        retry_after_secs = retry_after.as_secs(),
        "password-reset requests throttled"
    );
}

pub(crate) fn sign_up_throttled(client: &Client, retry_after: Duration) {
    security_event!(
        warn,
        "sign_up_throttled",
        client,
        retry_after_secs = retry_after.as_secs(),
        "sign-ups throttled"
    );
}

pub(crate) fn email_change_throttled(client: &Client, user: UserId, retry_after: Duration) {
    security_event!(
        warn,
        "email_change_throttled",
        client,
        user_id = user,
        retry_after_secs = retry_after.as_secs(),
        "email address changes throttled"
    );
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
