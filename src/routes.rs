//! Ready-made routes: a user's sessions, password and reauthentication; bearer tokens.

use axum::{
    Form, Json, Router,
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{Auth, AuthRejection, CurrentUser, Error, RecentAuth, SessionInfo};

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
///
/// Each session in the list is
/// `{"id", "created_at", "last_seen_at", "idle_expires_at", "expires_at", "user_agent", "ip", "current"}`
/// with RFC 3339 times; never a token or a hash. All routes need a session (`401` without).
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
}

/// The token route, for clients that cannot keep cookies (with
/// [`bearer_tokens`](crate::AuthLayerBuilder::bearer_tokens) on):
///
/// `POST /token` with the JSON body `{"username": "…", "password": "…"}` answers `200` with
/// `{"token": "…", "session_id": "…"}`: send the token as `Authorization: Bearer <token>`.
/// A wrong password is `401` with `{"error":"invalid_credentials"}`, a throttled attempt `429`
/// with `Retry-After`, and the route is `404` while bearer tokens are off. The response is
/// `Cache-Control: no-store`.
///
/// The route sets no cookie, so it needs no CSRF protection (a cross-site page cannot read the
/// token it would obtain, and nothing changes in the victim's browser); a client without
/// `Origin` headers (a mobile app, curl) can use it when the path is exempted with
/// [`csrf_exempt`](crate::AuthLayerBuilder::csrf_exempt), as the quickstart does.
///
/// To render menus from live permissions instead of decoding a JWT, an SPA calls a route such
/// as the quickstart's `GET /me`, which returns [`CurrentUser::permissions`].
///
/// ```
/// use axum::Router;
/// let app: Router = Router::new().nest("/auth", axum_live_auth::token_routes());
/// ```
pub fn token_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/token", post(issue_token))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct IssuedToken {
    token: String,
    session_id: String,
}

async fn issue_token(auth: Auth, Json(credentials): Json<Credentials>) -> Result<Response, Error> {
    if !auth.bearer_enabled() {
        return Ok((StatusCode::NOT_FOUND, "Not found").into_response());
    }
    let issued = auth
        .issue_token(&credentials.username, &credentials.password)
        .await?;
    let Some(token) = issued else {
        return Ok((
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"invalid_credentials"}"#,
        )
            .into_response());
    };
    let body = IssuedToken {
        session_id: token.id().to_string(),
        token: token.to_string(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

#[derive(Serialize)]
struct SessionJson {
    id: String,
    created_at: String,
    last_seen_at: String,
    idle_expires_at: String,
    expires_at: String,
    user_agent: Option<String>,
    ip: Option<String>,
    current: bool,
}

impl From<SessionInfo> for SessionJson {
    fn from(s: SessionInfo) -> Self {
        Self {
            id: s.id,
            created_at: rfc3339(s.created_at),
            last_seen_at: rfc3339(s.last_seen_at),
            idle_expires_at: rfc3339(s.idle_expires_at),
            expires_at: rfc3339(s.expires_at),
            user_agent: s.user_agent,
            ip: s.ip,
            current: s.current,
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
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
    let sessions: Vec<SessionJson> = auth.sessions().await?.into_iter().map(Into::into).collect();
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(sessions)).into_response())
}

async fn revoke_session(auth: Auth, user: CurrentUser, Path(id): Path<String>) -> Response {
    let own = id == user.session_id().as_str();
    if !own && !user.is_recently_authenticated() {
        return AuthRejection::ReauthRequired.into_response();
    }
    match auth.revoke_session(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "Not found").into_response(),
        Err(error) => error.into_response(),
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
        (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"invalid_credentials"}"#,
        )
            .into_response()
    }
}
