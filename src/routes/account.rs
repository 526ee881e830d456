//! The account routes: a user's sessions, password and reauthentication.

use axum::{
    Form, Json, Router,
    extract::{Path, Query},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;

use crate::{
    Accounts, Auth, AuthRejection, CurrentUser, Error, RecentAuth, SessionId, store::AddressChanges,
};

/// The account routes, to nest under a path of the app's choosing (behind the
/// [`AuthLayer`](crate::AuthLayer)):
///
/// | route | does | answers |
/// |---|---|---|
/// | `GET /sessions` | the user's live sessions, most recent first | `200` JSON list |
/// | `POST /sessions/{id}/revoke` | ends one session; another device's only with [`RecentAuth`] | `204`; `404` unknown id; `403 reauth_required` |
/// | `POST /sessions/revoke-others` | ends every other session (needs [`RecentAuth`]) and cancels an address change not yet confirmed | `204`; `403 reauth_required` |
/// | `POST /password` | form `current_password`, `new_password`: changes the password, ends the other sessions, rotates this one | `204`; `403 invalid_credentials`; `400` new password too short or long |
/// | `POST /reauth` | form `password`: proves the password again and rotates the session | `204`; `403 invalid_credentials` |
/// | `GET /events` | the session's live picture as Server-Sent Events (below) | `200 text/event-stream`; `429` too many streams of this session, or of this user on this node; `503` too many on this node, or changes cannot reach it |
/// | `POST /password-reset` | form `username` (a username or an email address): sends a reset link through the [`Messenger`](crate::Messenger), if there is such a user; no session needed | `202` whatever the account, also past the account's limit (3 in 15 minutes, or per link lifetime if shorter), when no message is sent; `429` too many requests from this address (5 in 15 minutes) |
/// | `GET /password-reset/confirm?token=…` | the form to choose a new password (`Referrer-Policy: strict-origin`, `Cache-Control: no-store`) | `200` HTML |
/// | `POST /password-reset/confirm` | form `token`, `new_password`: sets it, ends every session of the user | `303` to the login page; `400` used, expired or unknown token, or a new password too short or long |
/// | `POST /email` | form `email`: asks to change the user's address, sends a verification link to the new one (and to the current one, if any, a notice with a reset link) and ends the user's other sessions (needs [`RecentAuth`]); the address changes only when the link is confirmed; 5 requests a user and 10 a client address per 15 minutes | `202`; `400` invalid; `409` taken; `403 reauth_required`; `429` too many requests |
/// | `GET /email/verify?token=…` | the page that confirms the new address (`Referrer-Policy: strict-origin`, `Cache-Control: no-store`); it changes nothing, so a mail scanner that follows the link confirms nothing | `200` HTML |
/// | `POST /email/verify` | form `token`: the address the link was sent to becomes the user's, verified; every link sent to the user before is spent | `200` HTML; `400` used, expired or unknown token; `409` taken meanwhile |
///
/// Each session in the list is a [`SessionInfo`](crate::SessionInfo):
/// `{"id", "created_at", "last_seen_at", "idle_expires_at", "expires_at", "user_agent", "ip", "current"}`
/// with RFC 3339 times; never a token or a hash. Every route but the password-reset and address
/// verification ones needs a session (`401` without).
///
/// The event stream sends, at once, `event: principal` with
/// `{"id": …, "username": …, "permissions": [… sorted …]}`, then a new `principal` event
/// whenever the user's permissions change (grants, roles, role assignments; through the crate
/// or, on Postgres, by plain SQL), and `event: ended` when the session stops being valid for any
/// reason (logout elsewhere, revocation, a disabled user, a password change, expiry), after
/// which it closes. Every event comes from a fresh read of the session in the database. When the
/// session goes on under a rotated token (sudo mode, the password changed from this session),
/// or the node stops hearing of changes (its listener lost), the stream ends with
/// `event: reconnect`: reconnect and read a fresh picture. A comment line every 15 seconds
/// ([configurable](crate::AuthLayerBuilder::event_streams)) keeps proxies from closing it. On
/// Postgres the streams need the layer's [background work](crate::AuthLayer::background); on
/// SQLite they hear of changes made through the layer in this process (its [`Auth`] and the
/// [`Accounts`] of [`AuthLayer::accounts`](crate::AuthLayer::accounts), not an
/// [`Accounts::new`] of its own), not of plain SQL.
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
        .route("/password-reset", post(request_reset))
        .route(
            "/password-reset/confirm",
            get(reset_form).post(confirm_reset),
        )
        .route("/email", post(request_email_change))
        .route("/email/verify", get(verify_form).post(verify_email))
}

#[derive(Deserialize)]
struct ResetRequest {
    username: String,
}

#[derive(Deserialize)]
struct ResetConfirmation {
    token: String,
    new_password: String,
}

#[derive(Deserialize)]
struct EmailForm {
    email: String,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: String,
}

/// Counts the request, then answers `202` at once: the message is made and sent after, so
/// neither the answer nor its timing says whether the account exists (counting it looks the
/// name up once, as for an unknown name). Without a messenger nothing could be sent: `500`.
async fn request_reset(auth: Auth, Form(form): Form<ResetRequest>) -> Result<StatusCode, Error> {
    let accounts = Accounts::of_layer(auth.shared());
    accounts.can_send()?;
    accounts.reserve_reset(auth.client()).await?;
    accounts.send_reset_later(auth.client().clone(), form.username);
    Ok(StatusCode::ACCEPTED)
}

/// The form that posts the token from the link with a new password.
async fn reset_form(Query(query): Query<TokenQuery>) -> Response {
    let field = format!(
        "<label>New password <input name=\"new_password\" type=\"password\" \
         autocomplete=\"new-password\" required minlength=\"{}\"></label>\n",
        crate::MIN_PASSWORD_BYTES
    );
    token_form(
        "Choose a new password",
        "confirm",
        &query.token,
        &field,
        "Set password",
    )
}

/// A page that posts the token from its link back to `action`, with `fields`.
fn token_form(title: &str, action: &str, token: &str, fields: &str, button: &str) -> Response {
    let token = html_escape(token);
    let page = format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<h1>{title}</h1>\n\
         <form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\n\
         {fields}<button>{button}</button>\n</form>\n"
    );
    (secret_page_headers(), Html(page)).into_response()
}

async fn confirm_reset(auth: Auth, Form(form): Form<ResetConfirmation>) -> Result<Redirect, Error> {
    Accounts::of_layer(auth.shared())
        .reset_password_from(&form.token, &form.new_password, auth.client())
        .await?;
    let login = auth
        .shared()
        .config
        .login_redirect
        .as_deref()
        .unwrap_or("/login");
    Ok(Redirect::to(login))
}

/// The address a reset link goes to is a credential: asking to change it needs the password
/// proven recently, and ends the user's other sessions (whoever else holds one cannot keep it),
/// with the changes they asked for: only this request's stays pending.
async fn request_email_change(
    auth: Auth,
    RecentAuth(user): RecentAuth,
    Form(form): Form<EmailForm>,
) -> Result<StatusCode, Error> {
    let accounts = Accounts::of_layer(auth.shared());
    accounts
        .reserve_email_change(auth.client(), user.id())
        .await?;
    // Once the links are issued, the other sessions end, whether or not the messages then go
    // out.
    let (messages, link) = accounts
        .email_change_messages(
            user.id(),
            &form.email,
            Some(user.session_id()),
            auth.client(),
        )
        .await?;
    auth.end_other_sessions(AddressChanges::SpentBut(&link))
        .await?;
    for message in messages {
        accounts.send(message).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

/// The form that posts the token from the link: following the link changes nothing.
async fn verify_form(Query(query): Query<TokenQuery>) -> Response {
    token_form(
        "Confirm your email address",
        "verify",
        &query.token,
        "",
        "Confirm this address",
    )
}

async fn verify_email(auth: Auth, Form(form): Form<TokenQuery>) -> Result<Response, Error> {
    Accounts::of_layer(auth.shared())
        .verify_email_from(&form.token, auth.client())
        .await?;
    let page = "<!doctype html>\n<meta charset=\"utf-8\">\n<title>Address verified</title>\n\
                <h1>Your email address is verified.</h1>\n";
    Ok((secret_page_headers(), Html(page)).into_response())
}

/// A page reached by a link with a token in it: the token must not leak through the
/// `Referer` of the page's links and requests, nor stay in a cache. `strict-origin`, not
/// `no-referrer`: under `no-referrer` a browser sends `Origin: null` with the form's post,
/// which a browser without `Sec-Fetch-Site` (or any browser on plain HTTP away from
/// localhost) then has refused as cross-site.
fn secret_page_headers() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::REFERRER_POLICY, "strict-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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
    let checked = auth.reauthenticate(&form.password).await?;
    Ok(credentials_checked(checked))
}

/// `204`, or `403` with `{"error":"invalid_credentials"}` for a wrong password.
fn credentials_checked(ok: bool) -> Response {
    if ok {
        StatusCode::NO_CONTENT.into_response()
    } else {
        AuthRejection::InvalidCredentials(StatusCode::FORBIDDEN).into_response()
    }
}
