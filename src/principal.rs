//! Who the request is: its [`AuthState`], the [`CurrentUser`] with live permissions, the
//! extractors handlers take, and the route guards.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    extract::{
        FromRequestParts, OptionalFromRequestParts, RawPathParams,
        rejection::RawPathParamsRejection,
    },
    response::{IntoResponse, Response},
};
use http::{Method, Request, header, request::Parts};
use time::OffsetDateTime;
use tower::{Layer, Service};

use crate::{AuthRejection, Error, Resource, SessionId, UserId, store::SessionRow};

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
///         _ => "unknown",
///     }
/// }
/// # let _ = axum::Router::<()>::new().route("/", axum::routing::get(handler));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AuthState {
    /// A live session of an enabled user.
    Authenticated(CurrentUser),
    /// No session, or one that is unknown, expired, revoked, of a disabled user, or malformed.
    Anonymous,
    /// The database failed or did not answer in time, so the session could not be checked.
    /// Never treated as anonymous.
    Unavailable,
}

/// Where the layer sends anonymous browser page requests: a request extension, on anonymous
/// requests when a login page is configured.
#[derive(Debug, Clone)]
pub(crate) struct LoginRedirect(pub(crate) Arc<str>);

/// Who a session belongs to and what they may do globally: what the principal cache keeps.
#[derive(Debug)]
pub(crate) struct Principal {
    pub(crate) id: UserId,
    pub(crate) username: String,
    /// Sorted and distinct.
    pub(crate) permissions: Vec<String>,
    pub(crate) session_id: SessionId,
    pub(crate) authenticated_at: OffsetDateTime,
    pub(crate) email: Option<String>,
    pub(crate) email_verified: bool,
}

impl Principal {
    pub(crate) fn from_row(row: SessionRow, session_id: SessionId) -> Self {
        let mut permissions = row.permissions.0;
        // The column is kept sorted by the database; sorting again is linear on sorted input
        // and keeps `has` correct even if someone wrote the column by hand.
        permissions.sort_unstable();
        permissions.dedup();
        Self {
            id: row.user_id,
            username: row.username,
            permissions,
            session_id,
            authenticated_at: row.authenticated_at.0,
            email: row.email,
            email_verified: row.email_verified,
        }
    }
}

/// Answers whether a user holds a permission on a resource through a scoped grant: the layer's
/// store and cache, behind a trait so that this module needs neither.
pub(crate) trait ScopedGrants: Send + Sync {
    fn holds<'a>(
        &'a self,
        user: UserId,
        permission: &'a str,
        resource: &'a Resource,
    ) -> Pin<Box<dyn Future<Output = Result<bool, Error>> + Send + 'a>>;
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
pub struct CurrentUser {
    pub(crate) principal: Arc<Principal>,
    /// Whether its password was proved within the reauthentication window.
    pub(crate) recently_authenticated: bool,
    pub(crate) scoped: Arc<dyn ScopedGrants>,
}

impl CurrentUser {
    /// The user's id (`auth_users.id`).
    pub fn id(&self) -> UserId {
        self.principal.id
    }

    /// The user's name as stored.
    pub fn username(&self) -> &str {
        &self.principal.username
    }

    /// The user's effective global permissions (direct and through roles), sorted, as read from
    /// the database for this request.
    pub fn permissions(&self) -> &[String] {
        &self.principal.permissions
    }

    /// Whether the user has `permission` globally right now.
    pub fn has(&self, permission: &str) -> bool {
        self.principal
            .permissions
            .binary_search_by(|p| p.as_str().cmp(permission))
            .is_ok()
    }

    /// `Ok` if the user has `permission` globally, else [`AuthRejection::Forbidden`] (a `403`),
    /// for `?` in handlers.
    ///
    /// # Errors
    ///
    /// [`AuthRejection::Forbidden`] when the permission is missing.
    pub fn require(&self, permission: &str) -> Result<(), AuthRejection> {
        if self.has(permission) {
            Ok(())
        } else {
            tracing::debug!(user_id = self.id(), permission, "permission missing");
            Err(AuthRejection::Forbidden)
        }
    }

    /// Whether the user may `permission` on `resource` right now: a global grant of it covers
    /// every resource (no query); otherwise a grant scoped to the resource, direct or through a
    /// role assigned on it, decides — one indexed query, or none when the node's principal
    /// cache holds the answer (kept coherent by the same notifications as everything else: a
    /// revoked grant is refused on the next request on the node that made the change, and on
    /// other nodes once its notification reaches them, within a millisecond or so).
    ///
    /// ```no_run
    /// # async fn f(user: axum_live_auth::CurrentUser) -> Result<(), axum_live_auth::Error> {
    /// let project = axum_live_auth::Resource::new("project", "42")?;
    /// if user.can("project:write", &project).await? {
    ///     // …
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Infrastructure`] when the database fails (answer with it: `503`, or `500` for a
    /// fault a retry does not mend; never "allowed").
    pub async fn can(&self, permission: &str, resource: &Resource) -> Result<bool, Error> {
        if self.has(permission) {
            return Ok(true);
        }
        // A name no grant can hold (a proxy may pass on a client's header): no query, and no
        // place in the cache.
        if !crate::accounts::grantable(permission) {
            return Ok(false);
        }
        self.scoped.holds(self.id(), permission, resource).await
    }

    /// `Ok` if the user [`can`](Self::can) `permission` on `resource`, else the refusal: `403`,
    /// or `503` when the database is unavailable (`500` for a fault a retry does not mend).
    ///
    /// # Errors
    ///
    /// [`AuthRejection::Forbidden`], [`AuthRejection::Unavailable`] or
    /// [`AuthRejection::Internal`].
    pub async fn require_on(
        &self,
        permission: &str,
        resource: &Resource,
    ) -> Result<(), AuthRejection> {
        match self.can(permission, resource).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::debug!(user_id = self.id(), permission, %resource, "permission missing");
                Err(AuthRejection::Forbidden)
            }
            Err(error) => {
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "permission check failed"
                );
                Err(AuthRejection::from(&error))
            }
        }
    }

    /// The user's email address, if they gave one.
    pub fn email(&self) -> Option<&str> {
        self.principal.email.as_deref()
    }

    /// Whether the user proved they receive mail at [`email`](Self::email) (by following the
    /// verification link sent to it).
    pub fn email_verified(&self) -> bool {
        self.principal.email_verified
    }

    /// The public id of the request's session (the token's part before the dot).
    pub fn session_id(&self) -> &SessionId {
        &self.principal.session_id
    }

    /// When the user last proved their password in this session.
    pub fn authenticated_at(&self) -> OffsetDateTime {
        self.principal.authenticated_at
    }

    /// Whether the user proved their password in this session within the reauthentication
    /// window (by the database's clock, as of this request). See [`RecentAuth`].
    pub fn is_recently_authenticated(&self) -> bool {
        self.recently_authenticated
    }
}

impl std::fmt::Debug for CurrentUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentUser")
            .field("id", &self.principal.id)
            .field("username", &self.principal.username)
            .field("permissions", &self.principal.permissions)
            .field("session_id", &self.principal.session_id)
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

/// The request's user, or why there is none: every extractor and guard decides through this.
fn current_user(parts: &Parts) -> Result<&CurrentUser, AuthRejection> {
    match parts.extensions.get::<AuthState>() {
        Some(AuthState::Authenticated(user)) => Ok(user),
        Some(AuthState::Anonymous) => match parts.extensions.get::<LoginRedirect>() {
            Some(LoginRedirect(path)) if wants_html_page(parts) => {
                Err(AuthRejection::LoginRedirect(Arc::clone(path)))
            }
            _ => Err(AuthRejection::Unauthenticated),
        },
        Some(AuthState::Unavailable) => Err(AuthRejection::Unavailable),
        None => Err(AuthRejection::MissingLayer),
    }
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
        match current_user(parts) {
            Ok(user) => Ok(Some(user.clone())),
            Err(AuthRejection::Unauthenticated | AuthRejection::LoginRedirect(_)) => Ok(None),
            Err(rejection) => Err(rejection),
        }
    }
}

/// The current user, only if they proved their password recently ("sudo mode").
///
/// For sensitive actions (changing a password or an email address, revoking other devices, deleting
/// the account): answers `403` with the JSON body `{"error":"reauth_required"}` when the session's
/// last password check (login or [`Auth::reauthenticate`](crate::Auth::reauthenticate)) is older
/// than the layer's reauthentication window (default 15 minutes, not sliding); otherwise it refuses
/// like [`CurrentUser`]. A session the app started with [`Auth::login`](crate::Auth::login) after
/// checking credentials of its own counts as checked when it started.
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

// --- route guards ---------------------------------------------------------------------------

/// Requires `permission` (globally) for every route the returned layer wraps: `401` when
/// anonymous (or the login redirect for a browser page), `403` without the permission, `503`
/// when the database is unavailable; the handler runs only for a user with the permission.
///
/// Apply it with `route_layer`, under the [`AuthLayer`](crate::AuthLayer):
///
/// ```
/// use axum::{Router, routing::get};
/// use axum_live_auth::require_permission;
///
/// let admin: Router = Router::new()
///     .route("/admin", get(|| async { "admin area" }))
///     .route_layer(require_permission("admin"));
/// ```
pub fn require_permission(permission: impl Into<Arc<str>>) -> RequirePermissionLayer {
    RequirePermissionLayer::new(permission.into(), None)
}

/// Requires `permission` on the resource of type `kind` whose id is the path parameter
/// `param`, for every route the returned layer wraps: `401` anonymous, `403` without the grant
/// (the same `403` whether or not such a resource exists), `400` for an id that cannot name a
/// resource, `503` when the database is unavailable. A global grant of the permission passes
/// without a query; see [`CurrentUser::can`]. A route with no path parameter called `param`,
/// or with more than one (nested routers may repeat a name, as in
/// `/orgs/{id}/projects/{id}`), is refused with `500`: name each parameter once.
///
/// # Panics
///
/// When `kind` cannot name a resource type (see [`Resource::new`]): a mistake in the app's
/// code, which would otherwise answer `400` to every request, as if the client's.
///
/// ```
/// use axum::{Router, routing::get};
/// use axum_live_auth::require_permission_on;
///
/// let projects: Router = Router::new()
///     .route("/projects/{id}", get(|| async { "project" }))
///     .route_layer(require_permission_on("project:read", "project", "id"));
/// ```
pub fn require_permission_on(
    permission: impl Into<Arc<str>>,
    kind: impl Into<Arc<str>>,
    param: impl Into<Arc<str>>,
) -> RequirePermissionLayer {
    let kind = kind.into();
    assert!(
        Resource::new(&*kind, "0").is_ok(),
        "require_permission_on: {kind:?} cannot name a resource type"
    );
    RequirePermissionLayer::new(permission.into(), Some((kind, param.into())))
}

/// What a guard requires: a permission, globally or on the resource a path parameter names.
#[derive(Debug)]
struct Rule {
    permission: Arc<str>,
    /// The resource type and the path parameter holding its id.
    on: Option<(Arc<str>, Arc<str>)>,
}

impl Rule {
    async fn check(&self, parts: &mut Parts) -> Result<(), AuthRejection> {
        let user = current_user(parts)?.clone();
        let Some((kind, param)) = &self.on else {
            return user.require(&self.permission);
        };
        // The parameter is read even for a global holder (who then passes without a query): a
        // route that names no such parameter fails for everyone, not only for the others.
        let params = RawPathParams::from_request_parts(parts, &())
            .await
            .map_err(|rejection| match rejection {
                // `%FF` in the path: the client's mistake, not the route's.
                RawPathParamsRejection::InvalidUtf8InPathParam(_) => AuthRejection::BadRequest,
                _ => AuthRejection::Internal,
            })?;
        // Exactly one: nested routers may repeat a name (`/orgs/{id}/projects/{id}`), and the
        // handler may read another of them than the one checked.
        let mut named = params.iter().filter(|(name, _)| *name == &**param);
        let (Some((_, id)), None) = (named.next(), named.next()) else {
            tracing::error!(
                param = &**param,
                "require_permission_on: the route has no path parameter of that name, or more \
                 than one"
            );
            return Err(AuthRejection::Internal);
        };
        let resource = Resource::new(&**kind, id).map_err(|_| AuthRejection::BadRequest)?;
        user.require_on(&self.permission, &resource).await
    }
}

/// Layer of [`require_permission`] and [`require_permission_on`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RequirePermissionLayer {
    rule: Arc<Rule>,
}

impl RequirePermissionLayer {
    fn new(permission: Arc<str>, on: Option<(Arc<str>, Arc<str>)>) -> Self {
        let rule = Arc::new(Rule { permission, on });
        Self { rule }
    }
}

impl<S> Layer<S> for RequirePermissionLayer {
    type Service = RequirePermission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePermission {
            inner,
            rule: Arc::clone(&self.rule),
        }
    }
}

/// Service of [`require_permission`] and [`require_permission_on`].
#[derive(Debug, Clone)]
pub struct RequirePermission<S> {
    inner: S,
    rule: Arc<Rule>,
}

impl<S, B> Service<Request<B>> for RequirePermission<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The service driven to readiness handles the request; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let rule = Arc::clone(&self.rule);
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            match rule.check(&mut parts).await {
                Ok(()) => inner.call(Request::from_parts(parts, body)).await,
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}
