//! From the request's token to its principal: the principal cache when it holds a fresh entry, else
//! one round trip; the secret's hash compared in constant time; the idle deadline written back at
//! most once per touch interval, after the secret matched. The wait for the database is bounded.

use std::{sync::Arc, time::Instant};

use crate::{
    AuthState, CurrentUser, SessionId, SessionToken, UserId,
    cache::{Deadlines, Entry},
    client::Client,
    credential::{CookieChange, Credential, Invalid, Presented},
    events::security,
    principal::Principal,
    shared::Shared,
    store::{Missed, RequestConnection, by},
};

/// What the layer decided about a request's credential.
#[derive(Debug)]
pub(crate) struct Decided {
    pub(crate) state: AuthState,
    /// Whether the response clears the cookie: a cookie that can never become valid again and
    /// that no rotation replaced.
    pub(crate) cookie: CookieChange,
    /// The session (and its user) a rotation replaced the presented one with, the presented
    /// secret being the replaced one's: the request went out before the rotation's answer came
    /// back, and a logout it asks for ends that session.
    pub(crate) replaced_by: Option<(UserId, SessionId)>,
}

impl Decided {
    pub(crate) fn anonymous(cookie: CookieChange) -> Self {
        Self {
            state: AuthState::Anonymous,
            cookie,
            replaced_by: None,
        }
    }
}

/// Decides the request's [`AuthState`], and what goes with it.
pub(crate) async fn authenticate(
    shared: &Arc<Shared>,
    credential: Credential,
    client: &Client,
) -> Decided {
    // Only a cookie can be cleared; a bearer client keeps its token itself.
    let clear = if credential.source.cookie() {
        CookieChange::Clear
    } else {
        CookieChange::Keep
    };
    let token = match credential.presented {
        Presented::None => return Decided::anonymous(CookieChange::Keep),
        Presented::Invalid(reason) => {
            security::invalid_token(client, reason.as_str());
            alert(shared, client);
            // A duplicate may be a planted cookie next to the real one: clearing could delete
            // the real one, so only a single malformed cookie is cleared.
            return Decided::anonymous(match reason {
                Invalid::Malformed => clear,
                _ => CookieChange::Keep,
            });
        }
        Presented::Token(token) => token,
    };
    match resolve(shared, &token, client).await {
        Ok(Ok(user)) => Decided {
            state: AuthState::Authenticated(user),
            ..Decided::anonymous(CookieChange::Keep)
        },
        Ok(Err(Missed::Unknown)) => {
            alert(shared, client);
            Decided::anonymous(clear)
        }
        // A request sent with the cookie a rotation replaced: its answer may reach the client
        // after the rotation's, and clearing would then delete the new cookie.
        Ok(Err(Missed::Rotated(successor))) => Decided {
            replaced_by: successor.map(|s| (s.user, s.id)),
            ..Decided::anonymous(CookieChange::Keep)
        },
        Err(error) => {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                session_id = %token.id(),
                "session lookup failed; answering as unavailable"
            );
            Decided {
                state: AuthState::Unavailable,
                ..Decided::anonymous(CookieChange::Keep)
            }
        }
    }
}

/// Counts an invalid token of the client's address towards the alert.
fn alert(shared: &Shared, client: &Client) {
    if let Some(address) = client.address
        && let Some(count) = shared.alerts.record(address)
    {
        security::invalid_tokens_alert(client, count);
    }
}

/// The session's user, if the token names a live session; else why not.
async fn resolve(
    shared: &Arc<Shared>,
    token: &SessionToken,
    client: &Client,
) -> Result<Result<CurrentUser, Missed>, sqlx::Error> {
    let config = &shared.config;
    let now = Instant::now();
    let deadline = tokio::time::Instant::from_std(now + config.lookup_timeout);
    // Boxed once here, then handed on by pointer (to the cache).
    let read = Box::pin(read(shared, token, now, deadline));
    let resolved = match &shared.cache {
        Some(cache) => cache.get_or_fill(token.id(), now, read).await?,
        None => read
            .await?
            .map(|(entry, conn)| (Arc::new(entry), Some(conn))),
    };
    let (entry, conn) = match resolved {
        Ok(resolved) => resolved,
        Err(missed) => {
            // A replaced token is told apart from an unknown one only with the replaced
            // secret, and only for requests on their way: for a touch interval after the
            // rotation, and until the copy's first touch drops the hash. A token rotated away
            // because it may have leaked cannot end the copy later on.
            let (missed, reason) = match missed {
                Missed::Rotated(Some(successor))
                    if token.secret_hash().matches(&successor.replaced_secret_hash)
                        && successor.age <= config.touch_interval =>
                {
                    (Missed::Rotated(Some(successor)), "rotated")
                }
                Missed::Rotated(Some(_)) => (Missed::Unknown, "secret_mismatch"),
                Missed::Rotated(None) | Missed::Unknown => (Missed::Unknown, "unknown_or_expired"),
            };
            security::unknown_session(client, token.id(), reason);
            return Ok(Err(missed));
        }
    };
    let matches = token.secret_hash().matches(&entry.secret_hash);
    if matches && entry.claim_touch(now, config.touch_interval) {
        // Boxed: a touch is rare (once a touch interval), and its state would otherwise
        // double the size of every request's future.
        // The entry's deadlines move only with the database's: after a failed write, the
        // cached idle deadline would outlive the stored one.
        let deadline = tokio::time::Instant::now() + config.lookup_timeout;
        if Box::pin(touch(shared, conn, token, deadline)).await {
            entry.touched(now, config.idle_timeout);
        }
    } else if let Some(conn) = conn {
        shared.store.release(conn);
    }
    if !matches {
        security::unknown_session(client, token.id(), "secret_mismatch");
        return Ok(Err(Missed::Unknown));
    }
    Ok(Ok(CurrentUser {
        principal: Arc::clone(&entry.principal),
        recently_authenticated: entry.recently_authenticated(now, config.reauth_window),
        scoped: Arc::clone(shared) as _,
    }))
}

/// One round trip, by `deadline`: the session row, as an entry with deadlines measured on the
/// database's clock, and the connection, kept for a touch; or why there is none.
async fn read(
    shared: &Shared,
    token: &SessionToken,
    now: Instant,
    deadline: tokio::time::Instant,
) -> Result<Result<(Entry, RequestConnection), Missed>, sqlx::Error> {
    // Given up on, the connection is closed when dropped, never handed back mid-statement.
    let (conn, row) = by(deadline, shared.store.connection_with_lookup(token.id())).await?;
    let mut row = match row {
        Ok(row) => row,
        Err(missed) => {
            shared.store.release(conn);
            return Ok(Err(missed));
        }
    };
    let deadlines = Deadlines {
        now,
        since_seen: row.last_seen_at.until(row.now),
        idle_left: row.now.until(row.idle_expires_at),
        absolute_left: row.now.until(row.expires_at),
        since_authenticated: row.authenticated_at.until(row.now),
    };
    let secret_hash = std::mem::take(&mut row.secret_hash);
    let principal = Arc::new(Principal::from_row(row, token.id().clone()));
    let entry = Entry::new(
        secret_hash,
        principal,
        deadlines,
        shared.config.touch_interval,
    );
    Ok(Ok((entry, conn)))
}

/// Writes the idle deadline back, on the request's connection if it has one. The request is
/// authenticated either way; a failed or skipped touch only means the deadline moves on a later
/// request. `true` if the deadline was written.
async fn touch(
    shared: &Shared,
    conn: Option<RequestConnection>,
    token: &SessionToken,
    deadline: tokio::time::Instant,
) -> bool {
    let config = &shared.config;
    let write = async {
        let mut conn = match conn {
            Some(conn) => conn,
            None => by(deadline, shared.store.connection()).await?,
        };
        let touch = conn.touch(token.id(), config.idle_timeout, config.touch_interval);
        let written = by(deadline, touch).await?;
        by(deadline, shared.store.commit(conn))
            .await
            .map(|()| written)
    };
    match write.await {
        Ok(written) => written,
        Err(error) => {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "session touch failed"
            );
            false
        }
    }
}
