//! What handlers receive: the request's [`AuthState`], the [`CurrentUser`] and the [`Auth`]
//! handle for logging in and out.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::{HeaderMap, HeaderValue, Method, header, request::Parts};
use time::OffsetDateTime;

use crate::{
    AuthRejection, Error, SessionId, SessionToken, UserId, cookie,
    layer::Shared,
    store::{Created, NewSession, SessionRow},
};

/// How many fresh ids to try when a new session id is already taken.
const SESSION_ID_ATTEMPTS: usize = 3;
/// User agents are stored cut to this many bytes.
const MAX_USER_AGENT_BYTES: usize = 512;

/// The outcome of authentication for one request, inserted by the layer into the request's
/// extensions. Handlers usually take [`CurrentUser`] or `Option<CurrentUser>` instead.
///
/// ```
/// use axum_live_auth::AuthState;
///
/// async fn handler(axum::Extension(state): axum::Extension<AuthState>) -> &'static str {
///     match state {
///         AuthState::Authenticated(_) => "signed in",
///         AuthState::Anonymous => "anonymous",
///         AuthState::Unavailable => "cannot tell right now",
///     }
/// }
/// # let _ = axum::Router::<()>::new().route("/", axum::routing::get(handler));
/// ```
#[derive(Debug, Clone)]
pub enum AuthState {
    /// A live session of an enabled user.
    Authenticated(CurrentUser),
    /// No session, or one that is unknown, expired, revoked, of a disabled user, or malformed.
    Anonymous,
    /// The database failed, so the session could not be checked. Never treated as anonymous.
    Unavailable,
}

/// The user of the request's session, with their permissions as of this request.
///
/// As an extractor it answers `401` when the request is anonymous (or `303` to the configured
/// login page for a browser page request), `503` when the database is unavailable and `500`
/// when the route has no [`AuthLayer`](crate::AuthLayer). `Option<CurrentUser>` is `None` when
/// anonymous and refuses the same way otherwise.
///
/// ```
/// use axum::{Router, routing::get};
/// use axum_live_auth::{AuthRejection, CurrentUser};
///
/// async fn report(user: CurrentUser) -> Result<String, AuthRejection> {
///     user.require("reports:read")?;
///     Ok(format!("report for {}", user.username()))
/// }
///
/// async fn home(user: Option<CurrentUser>) -> String {
///     match user {
///         Some(user) => format!("hello {}", user.username()),
///         None => "hello stranger".to_owned(),
///     }
/// }
///
/// let app: Router = Router::new()
///     .route("/report", get(report))
///     .route("/", get(home));
/// ```
#[derive(Clone)]
pub struct CurrentUser(Arc<Principal>);

struct Principal {
    id: UserId,
    username: String,
    permissions: Vec<String>,
    session_id: SessionId,
    authenticated_at: OffsetDateTime,
}

impl CurrentUser {
    pub(crate) fn from_row(row: SessionRow, session_id: SessionId) -> Self {
        let mut permissions = row.permissions;
        // The column is kept sorted by the database; sorting again is linear on sorted input
        // and keeps `has` correct even if someone wrote the column by hand.
        permissions.sort_unstable();
        permissions.dedup();
        Self(Arc::new(Principal {
            id: row.user_id,
            username: row.username,
            permissions,
            session_id,
            authenticated_at: row.authenticated_at,
        }))
    }

    /// The user's id (`auth_users.id`).
    pub fn id(&self) -> UserId {
        self.0.id
    }

    /// The user's name as stored.
    pub fn username(&self) -> &str {
        &self.0.username
    }

    /// The user's effective permissions (direct and through roles), sorted, as read from the
    /// database for this request.
    pub fn permissions(&self) -> &[String] {
        &self.0.permissions
    }

    /// Whether the user has `permission` right now.
    pub fn has(&self, permission: &str) -> bool {
        self.0
            .permissions
            .binary_search_by(|p| p.as_str().cmp(permission))
            .is_ok()
    }

    /// `Ok` if the user has `permission`, else [`AuthRejection::Forbidden`] (a `403`), for `?`
    /// in handlers.
    ///
    /// # Errors
    ///
    /// [`AuthRejection::Forbidden`] when the permission is missing.
    pub fn require(&self, permission: &str) -> Result<(), AuthRejection> {
        if self.has(permission) {
            Ok(())
        } else {
            tracing::debug!(user.id = self.0.id, permission, "permission missing");
            Err(AuthRejection::Forbidden)
        }
    }

    /// The public id of the request's session (the token's part before the dot).
    pub fn session_id(&self) -> &SessionId {
        &self.0.session_id
    }

    /// When the user last proved their password in this session.
    pub fn authenticated_at(&self) -> OffsetDateTime {
        self.0.authenticated_at
    }
}

impl std::fmt::Debug for CurrentUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentUser")
            .field("id", &self.0.id)
            .field("username", &self.0.username)
            .field("permissions", &self.0.permissions)
            .field("session_id", &self.0.session_id)
            .finish_non_exhaustive()
    }
}

/// The cookie the response should carry, decided during the request.
#[derive(Debug)]
pub(crate) enum CookieChange {
    Keep,
    Set(SessionToken),
    Clear,
}

/// Handle for logging in and out, available to every handler behind the layer.
///
/// ```
/// use axum::{Form, http::StatusCode, response::{IntoResponse, Redirect}};
/// use axum_live_auth::{Accounts, Auth};
///
/// #[derive(serde::Deserialize)]
/// struct Login { username: String, password: String }
///
/// async fn login(
///     axum::extract::State(accounts): axum::extract::State<Accounts>,
///     auth: Auth,
///     Form(form): Form<Login>,
/// ) -> Result<axum::response::Response, axum_live_auth::Error> {
///     match accounts.verify_password(&form.username, &form.password).await? {
///         Some(user) => {
///             auth.login(user).await?;
///             Ok(Redirect::to("/me").into_response())
///         }
///         None => Ok((StatusCode::UNAUTHORIZED, "Invalid username or password").into_response()),
///     }
/// }
///
/// async fn logout(auth: Auth) -> Result<Redirect, axum_live_auth::Error> {
///     auth.logout().await?;
///     Ok(Redirect::to("/"))
/// }
/// # let _ = axum::Router::<Accounts>::new()
/// #     .route("/login", axum::routing::post(login))
/// #     .route("/logout", axum::routing::post(logout));
/// ```
#[derive(Clone)]
pub struct Auth(Arc<AuthInner>);

struct AuthInner {
    shared: Arc<Shared>,
    state: AuthState,
    user_agent: Option<HeaderValue>,
    ip: Option<IpAddr>,
    cookie: Mutex<CookieChange>,
}

impl Auth {
    pub(crate) fn new(
        shared: Arc<Shared>,
        state: AuthState,
        cookie: CookieChange,
        user_agent: Option<HeaderValue>,
        ip: Option<IpAddr>,
    ) -> Self {
        Self(Arc::new(AuthInner {
            shared,
            state,
            user_agent,
            ip,
            cookie: Mutex::new(cookie),
        }))
    }

    /// The request's authentication state.
    pub fn state(&self) -> &AuthState {
        &self.0.state
    }

    /// The current user, if the request is authenticated.
    pub fn current_user(&self) -> Option<&CurrentUser> {
        match &self.0.state {
            AuthState::Authenticated(user) => Some(user),
            _ => None,
        }
    }

    /// Starts a new session for `user` and sets its cookie on the response (with
    /// `Cache-Control: no-store`). Call it after checking the user's credentials.
    ///
    /// Always a new session with a fresh token: a token the client sent is never reused (no
    /// session fixation), and the session the request was authenticated with, if any, is
    /// deleted.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`] when the user does not exist or is disabled; a database or
    /// random-source error.
    pub async fn login(&self, user: UserId) -> Result<SessionId, Error> {
        let inner = &self.0;
        let config = &inner.shared.config;
        let user_agent = inner.user_agent.as_ref().map(user_agent_text);
        if let Some(previous) = self.current_user() {
            inner
                .shared
                .store
                .delete_session(previous.session_id())
                .await?;
        }
        for _ in 0..SESSION_ID_ATTEMPTS {
            let token = SessionToken::generate()?;
            let secret_hash = token.secret_hash();
            let new = NewSession {
                id: token.id(),
                secret_hash: secret_hash.as_bytes(),
                user_id: user,
                idle_timeout: config.idle_timeout,
                absolute_timeout: config.absolute_timeout,
                user_agent: user_agent.as_deref(),
                ip: inner.ip,
            };
            match inner.shared.store.create_session(&new).await? {
                Created::Yes => {
                    let id = token.id().clone();
                    tracing::info!(user.id = user, session.id = %id, "session created");
                    self.set_cookie(CookieChange::Set(token));
                    return Ok(id);
                }
                Created::UserInactive => return Err(Error::UserNotFound),
                Created::IdTaken => {
                    tracing::warn!(session.id = %token.id(), "new session id already taken");
                }
            }
        }
        Err(Error::SessionIdCollision)
    }

    /// Ends the request's session: deletes its row and clears the cookie (same name, `Path`,
    /// `Domain` and `Secure` as when it was set, with `Cache-Control: no-store`). Replaying the
    /// old cookie afterwards is `401`.
    ///
    /// # Errors
    ///
    /// A database error; the cookie is then left in place, since the session still exists.
    pub async fn logout(&self) -> Result<(), Error> {
        if let Some(user) = self.current_user() {
            self.0
                .shared
                .store
                .delete_session(user.session_id())
                .await?;
            tracing::info!(user.id = user.id(), session.id = %user.session_id(), "logout");
        }
        self.set_cookie(CookieChange::Clear);
        Ok(())
    }

    fn set_cookie(&self, change: CookieChange) {
        *self.0.cookie.lock().unwrap_or_else(PoisonError::into_inner) = change;
    }

    /// Writes the decided cookie change into the response headers.
    pub(crate) fn write_cookie(&self, headers: &mut HeaderMap) {
        let change = std::mem::replace(
            &mut *self.0.cookie.lock().unwrap_or_else(PoisonError::into_inner),
            CookieChange::Keep,
        );
        let config = &self.0.shared.config.cookie;
        let value = match change {
            CookieChange::Keep => return,
            CookieChange::Set(token) => cookie::set(config, &token),
            CookieChange::Clear => cookie::clear(config),
        };
        match value {
            Some(value) => {
                headers.append(header::SET_COOKIE, value);
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            None => tracing::error!("axum-live-auth: could not encode the session cookie"),
        }
    }

    /// The rejection for a request that needs a user but has none.
    fn unauthenticated(&self, parts: &Parts) -> AuthRejection {
        match &self.0.shared.config.login_redirect {
            Some(path) if wants_html_page(parts) => AuthRejection::LoginRedirect(path.clone()),
            _ => AuthRejection::Unauthenticated,
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("state", &self.0.state)
            .finish_non_exhaustive()
    }
}

/// A `GET`/`HEAD` whose `Accept` names `text/html`: a browser navigating to a page.
fn wants_html_page(parts: &Parts) -> bool {
    (parts.method == Method::GET || parts.method == Method::HEAD)
        && parts.headers.get_all(header::ACCEPT).iter().any(|v| {
            v.as_bytes()
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"text/html"))
        })
}

/// The user agent as stored: lossy UTF-8, cut to a bounded length on a character boundary.
fn user_agent_text(value: &HeaderValue) -> String {
    let bytes = value.as_bytes();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_USER_AGENT_BYTES)]);
    text.into_owned()
}

/// The layer's handle from the request, or the 500 for a route without the layer.
pub(crate) fn auth_from_parts(parts: &Parts) -> Result<&Auth, AuthRejection> {
    parts
        .extensions
        .get::<Auth>()
        .ok_or(AuthRejection::MissingLayer)
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        auth_from_parts(parts).cloned()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let auth = auth_from_parts(parts)?;
        match auth.state() {
            AuthState::Authenticated(user) => Ok(user.clone()),
            AuthState::Anonymous => Err(auth.unauthenticated(parts)),
            AuthState::Unavailable => Err(AuthRejection::Unavailable),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CurrentUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match auth_from_parts(parts)?.state() {
            AuthState::Authenticated(user) => Ok(Some(user.clone())),
            AuthState::Anonymous => Ok(None),
            AuthState::Unavailable => Err(AuthRejection::Unavailable),
        }
    }
}

/// Decides a request for a permission guard: `Ok` to go on, or the refusal.
pub(crate) fn check_permission(parts: &Parts, permission: &str) -> Result<(), AuthRejection> {
    let auth = auth_from_parts(parts)?;
    match auth.state() {
        AuthState::Authenticated(user) => user.require(permission),
        AuthState::Anonymous => Err(auth.unauthenticated(parts)),
        AuthState::Unavailable => Err(AuthRejection::Unavailable),
    }
}
