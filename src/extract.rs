//! What handlers receive: the request's [`AuthState`], the [`CurrentUser`], and
//! [`RecentAuth`] for sensitive actions.

use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::{Method, header, request::Parts};
use time::OffsetDateTime;

use crate::{Auth, AuthRejection, SessionId, UserId, store::SessionRow};

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
pub struct CurrentUser(Arc<Principal>, bool);

/// Who a session belongs to and what they may do: what the principal cache keeps.
#[derive(Debug)]
pub(crate) struct Principal {
    pub(crate) id: UserId,
    pub(crate) username: String,
    pub(crate) permissions: Vec<String>,
    pub(crate) session_id: SessionId,
    pub(crate) authenticated_at: OffsetDateTime,
}

impl Principal {
    pub(crate) fn from_row(row: SessionRow, session_id: SessionId) -> Self {
        let mut permissions = row.permissions;
        // The column is kept sorted by the database; sorting again is linear on sorted input
        // and keeps `has` correct even if someone wrote the column by hand.
        permissions.sort_unstable();
        permissions.dedup();
        Self {
            id: row.user_id,
            username: row.username,
            permissions,
            session_id,
            authenticated_at: row.authenticated_at,
        }
    }
}

impl CurrentUser {
    /// The principal as of this request; `recently_authenticated` is whether its password was
    /// proved within the reauthentication window.
    pub(crate) fn new(principal: Arc<Principal>, recently_authenticated: bool) -> Self {
        Self(principal, recently_authenticated)
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

    /// Whether the user proved their password in this session within the reauthentication
    /// window (by the database's clock, as of this request). See [`RecentAuth`].
    pub fn is_recently_authenticated(&self) -> bool {
        self.1
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

/// The rejection for a request that needs a user but has none: the login redirect for a
/// browser page, if one is configured, else `401`.
fn unauthenticated(auth: &Auth, parts: &Parts) -> AuthRejection {
    match auth.login_redirect() {
        Some(path) if wants_html_page(parts) => AuthRejection::LoginRedirect(path.clone()),
        _ => AuthRejection::Unauthenticated,
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

/// The request's user, or why there is none: 401 (or the login redirect), 503, or 500 for a
/// route without the layer.
fn current_user(parts: &Parts) -> Result<&CurrentUser, AuthRejection> {
    let auth = auth_from_parts(parts)?;
    match auth.state() {
        AuthState::Authenticated(user) => Ok(user),
        AuthState::Anonymous => Err(unauthenticated(auth, parts)),
        AuthState::Unavailable => Err(AuthRejection::Unavailable),
    }
}

/// The layer's handle from the request, or the 500 for a route without the layer.
pub(crate) fn auth_from_parts(parts: &Parts) -> Result<&Auth, AuthRejection> {
    parts
        .extensions
        .get::<Auth>()
        .ok_or(AuthRejection::MissingLayer)
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        current_user(parts).cloned()
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

/// The current user, only if they proved their password recently ("sudo mode").
///
/// For sensitive actions (changing a password or an email address, revoking other devices,
/// deleting the account): answers `403` with the JSON body `{"error":"reauth_required"}` when
/// the session's last password check (login or [`Auth::reauthenticate`]) is older than the
/// layer's reauthentication window (default 15 minutes, not sliding); otherwise it refuses
/// like [`CurrentUser`].
///
/// ```
/// use axum::{Router, routing::post};
/// use axum_live_auth::RecentAuth;
///
/// async fn delete_account(RecentAuth(user): RecentAuth) -> String {
///     format!("deleting {}", user.username())
/// }
/// let app: Router = Router::new().route("/account/delete", post(delete_account));
/// ```
#[derive(Debug, Clone)]
pub struct RecentAuth(pub CurrentUser);

impl<S: Send + Sync> FromRequestParts<S> for RecentAuth {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let user = current_user(parts)?;
        if user.is_recently_authenticated() {
            Ok(Self(user.clone()))
        } else {
            Err(AuthRejection::ReauthRequired)
        }
    }
}

/// Decides a request for a permission guard: `Ok` to go on, or the refusal.
pub(crate) fn check_permission(parts: &Parts, permission: &str) -> Result<(), AuthRejection> {
    current_user(parts)?.require(permission)
}
