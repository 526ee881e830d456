//! Every answer the crate gives on its own, and the one function that turns it into a response.

use std::{sync::Arc, time::Duration};

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Why the crate answered a request itself: the layer (CSRF, a cookie and a bearer token that
/// disagree), an extractor or guard (401, 403, 503), or a ready-made route.
///
/// Bodies are short and generic: the same `401` whatever made the session invalid (unknown,
/// expired, revoked, banned, malformed), the same `403` whatever permission was missing; the
/// reason goes to the logs only. Every such response carries the rejection in its extensions,
/// so logging middleware can see it and an app can render its own page for it:
///
/// ```
/// use axum::{Router, middleware::map_response, response::{IntoResponse, Response}};
/// use axum_live_auth::AuthRejection;
///
/// async fn friendly(response: Response) -> Response {
///     match response.extensions().get::<AuthRejection>() {
///         Some(AuthRejection::Forbidden) => {
///             (response.status(), "You may not see this page.").into_response()
///         }
///         _ => response,
///     }
/// }
/// let app: Router = Router::new().layer(map_response(friendly));
/// # let _ = app;
/// let response = AuthRejection::Unavailable.into_response();
/// assert_eq!(response.status(), 503);
/// assert!(response.headers().contains_key("retry-after"));
/// assert_eq!(response.extensions().get(), Some(&AuthRejection::Unavailable));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRejection {
    /// No valid session: `401 Unauthorized`.
    Unauthenticated,
    /// No valid session on a browser page request, with a login page configured:
    /// `303 See Other` to it.
    LoginRedirect(Arc<str>),
    /// A valid session without the permission needed: `403 Forbidden`.
    Forbidden,
    /// A valid session whose password check is older than the reauthentication window:
    /// `403` with the JSON body `{"error":"reauth_required"}`. See
    /// [`RecentAuth`](crate::RecentAuth).
    ReauthRequired,
    /// A wrong password on a ready-made route: `403` (or `401` on the token route) with
    /// `{"error":"invalid_credentials"}`.
    InvalidCredentials(StatusCode),
    /// An unsafe request that a browser may have sent on another site's behalf (CSRF):
    /// `403 Forbidden`.
    CrossSite,
    /// The session cookie and the bearer token name different sessions: `400 Bad Request`.
    ConflictingCredentials,
    /// Input the crate cannot accept (a name, a password length, a resource): `400`.
    BadRequest,
    /// No such user, role or session: `404 Not Found`.
    NotFound,
    /// The name is taken: `409 Conflict`.
    Conflict,
    /// Too many failed attempts: `429 Too Many Requests` with `Retry-After`.
    Throttled(Duration),
    /// The server is at a bound it keeps (password hashes at once, open event streams):
    /// `503` with `Retry-After`.
    Busy(Duration),
    /// The database could not be asked in time: `503 Service Unavailable` with `Retry-After`.
    /// Never treated as anonymous.
    Unavailable,
    /// The route has no [`AuthLayer`](crate::AuthLayer): `500`, a programming error.
    MissingLayer,
    /// Something failed that a client cannot fix (the random source, a hashing task, a database
    /// error a retry does not mend, such as a missing table): `500`.
    Internal,
}

impl AuthRejection {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::LoginRedirect(_) => StatusCode::SEE_OTHER,
            Self::Forbidden | Self::ReauthRequired | Self::CrossSite => StatusCode::FORBIDDEN,
            Self::InvalidCredentials(status) => *status,
            Self::ConflictingCredentials | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict => StatusCode::CONFLICT,
            Self::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Busy(_) | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::MissingLayer | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The generic body: text, or a JSON error code where a client acts on it.
    fn body(&self) -> (&'static str, &'static str) {
        const TEXT: &str = "text/plain; charset=utf-8";
        const JSON: &str = "application/json";
        match self {
            Self::Unauthenticated => (TEXT, "Unauthorized"),
            Self::LoginRedirect(_) => (TEXT, ""),
            Self::Forbidden | Self::CrossSite => (TEXT, "Forbidden"),
            Self::ReauthRequired => (JSON, r#"{"error":"reauth_required"}"#),
            Self::InvalidCredentials(_) => (JSON, r#"{"error":"invalid_credentials"}"#),
            Self::ConflictingCredentials | Self::BadRequest => (TEXT, "Bad request"),
            Self::NotFound => (TEXT, "Not found"),
            Self::Conflict => (TEXT, "Conflict"),
            Self::Throttled(_) => (TEXT, "Too many requests"),
            Self::Busy(_) | Self::Unavailable => (TEXT, "Service unavailable"),
            // A mistake in the app's code, which its developer sees first.
            Self::MissingLayer => (
                TEXT,
                "Internal server error: AuthLayer is not installed on this route",
            ),
            Self::Internal => (TEXT, "Internal server error"),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled(wait) | Self::Busy(wait) => Some(*wait),
            Self::Unavailable => Some(Duration::from_secs(5)),
            _ => None,
        }
    }
}

impl std::fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unauthenticated | Self::LoginRedirect(_) => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::ReauthRequired => "reauthentication required",
            Self::InvalidCredentials(_) => "invalid credentials",
            Self::CrossSite => "cross-site request refused",
            Self::ConflictingCredentials => "cookie and bearer token disagree",
            Self::BadRequest => "bad request",
            Self::NotFound => "not found",
            Self::Conflict => "conflict",
            Self::Throttled(_) => "too many attempts",
            Self::Busy(_) => "busy",
            Self::Unavailable => "authentication unavailable",
            Self::MissingLayer => "AuthLayer missing",
            Self::Internal => "internal error",
        })
    }
}

impl std::error::Error for AuthRejection {}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        if self == Self::MissingLayer {
            tracing::error!(
                "axum-live-auth: a handler needs the current user but the route has no \
                 AuthLayer; add it with Router::layer"
            );
        }
        let (content_type, body) = self.body();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(wait) = self.retry_after() {
            let secs = wait
                .as_secs()
                .saturating_add(u64::from(wait.subsec_nanos() > 0));
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let Self::LoginRedirect(location) = &self
            && let Ok(location) = HeaderValue::from_str(location)
        {
            headers.insert(header::LOCATION, location);
        }
        response.extensions_mut().insert(self);
        response
    }
}
