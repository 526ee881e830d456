//! The account routes: a user's sessions, password and reauthentication.

use axum::{
    Form, Json, Router,
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use crate::{Auth, AuthRejection, CurrentUser, Error, RecentAuth, SessionId};

/// The account routes, to nest under a path of the app's choosing (behind the
/// [`AuthLayer`](crate::AuthLayer)):
///
/// | route | does | answers |
/// |---|---|---|
/// | `GET /sessions` | the user's live sessions, most recent first | `200` JSON list |
/// | `POST /sessions/{id}/revoke` | ends one session; another device's only with [`RecentAuth`] | `204`; `404` unknown id; `403 reauth_required` |
/// | `POST /sessions/revoke-others` | ends every other session (needs [`RecentAuth`]) | `204`; `403 reauth_required` |
/// | `POST /password` | form `current_password`, `new_password`: changes the password, ends the other sessions, rotates this one | `204`; `403 invalid_credentials`; `400` new password too short or long |
/// | `POST /reauth` | form `password`: proves the password again and rotates the session | `204`; `403 invalid_credentials` |
/// | `GET /events` | the session's live picture as Server-Sent Events (below) | `200 text/event-stream`; `429` too many streams of this session; `503` too many on this node, or changes cannot reach it |
///
/// Each session in the list is a [`SessionInfo`](crate::SessionInfo):
/// `{"id", "created_at", "last_seen_at", "idle_expires_at", "expires_at", "user_agent", "ip", "current"}`
/// with RFC 3339 times; never a token or a hash. All routes need a session (`401` without).
///
/// The event stream sends, at once, `event: principal` with
/// `{"id": …, "username": …, "permissions": [… sorted …]}`, then a new `principal` event
/// whenever the user's permissions change (grants, roles, role assignments; through the crate
/// or, on Postgres, by plain SQL), and `event: ended` when the session stops being valid for any
/// reason (logout elsewhere, revocation, a disabled user, a password change, expiry), after
/// which it closes. Every event comes from a fresh read of the session in the database. When the
/// node stops hearing of changes (its listener lost), the stream ends with `event: reconnect`:
/// reconnect and read a fresh picture. A comment line every 15 seconds
/// ([configurable](crate::AuthLayerBuilder::event_streams)) keeps proxies from closing it. On
/// Postgres the streams need the layer's [background work](crate::AuthLayer::background); on
/// SQLite they hear of changes made through the crate in this process, not of plain SQL.
///
/// ```
/// use axum::Router;
/// let app: Router = Router::new().nest("/account", axum_live_auth::account_routes());
/// ```
pub fn account_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/sessions", get(list_sessions))
        .route("/sessions/revoke-others", post(revoke_others))
        .route("/sessions/{id}/revoke", post(revoke_session))
        .route("/password", post(change_password))
        .route("/reauth", post(reauthenticate))
        .route("/events", get(events))
}

async fn events(auth: Auth, user: CurrentUser) -> Response {
    crate::events::stream::open(auth.shared(), &user)
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

#[derive(Deserialize)]
struct Reauth {
    password: String,
}

async fn list_sessions(auth: Auth, _user: CurrentUser) -> Result<Response, Error> {
    let sessions = auth.sessions().await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(sessions)).into_response())
}

async fn revoke_session(
    auth: Auth,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, Response> {
    let id = SessionId::parse(&id).ok_or_else(|| AuthRejection::NotFound.into_response())?;
    if &id != user.session_id() && !user.is_recently_authenticated() {
        return Err(AuthRejection::ReauthRequired.into_response());
    }
    match auth.revoke_session(&id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(AuthRejection::NotFound.into_response()),
        Err(error) => Err(error.into_response()),
    }
}

async fn revoke_others(auth: Auth, _user: RecentAuth) -> Result<StatusCode, Error> {
    auth.revoke_other_sessions().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change_password(
    auth: Auth,
    _user: CurrentUser,
    Form(form): Form<PasswordChange>,
) -> Result<Response, Error> {
    let changed = auth
        .change_password(&form.current_password, &form.new_password)
        .await?;
    Ok(credentials_checked(changed))
}

async fn reauthenticate(
    auth: Auth,
    _user: CurrentUser,
    Form(form): Form<Reauth>,
) -> Result<Response, Error> {
    let ok = auth.reauthenticate(&form.password).await?;
    Ok(credentials_checked(ok))
}

/// `204`, or `403` with `{"error":"invalid_credentials"}` for a wrong password.
fn credentials_checked(ok: bool) -> Response {
    if ok {
        StatusCode::NO_CONTENT.into_response()
    } else {
        AuthRejection::InvalidCredentials(StatusCode::FORBIDDEN).into_response()
    }
}
