//! How an authentication or authorization refusal becomes a response.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::error::RETRY_AFTER_SECS;

/// Why an extractor or guard refused a request.
///
/// Bodies are short and generic: the same `401` whatever made the session invalid (unknown,
/// expired, revoked, banned, malformed), the same `403` whatever permission was missing. The
/// reason goes to the logs only.
///
/// ```
/// use axum::response::IntoResponse;
/// use axum_live_auth::AuthRejection;
///
/// let response = AuthRejection::Unavailable.into_response();
/// assert_eq!(response.status(), 503);
/// assert!(response.headers().contains_key("retry-after"));
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
    /// `403 Forbidden` with the JSON body `{"error":"reauth_required"}`. See
    /// [`RecentAuth`](crate::RecentAuth).
    ReauthRequired,
    /// The database could not be asked: `503 Service Unavailable` with `Retry-After`. Never
    /// treated as anonymous.
    Unavailable,
    /// The route has no [`AuthLayer`](crate::AuthLayer): `500`, a programming error.
    MissingLayer,
}

impl AuthRejection {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::LoginRedirect(_) => StatusCode::SEE_OTHER,
            Self::Forbidden | Self::ReauthRequired => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unauthenticated | Self::LoginRedirect(_) => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::ReauthRequired => "reauthentication required",
            Self::Unavailable => "authentication unavailable",
            Self::MissingLayer => "AuthLayer missing",
        })
    }
}

impl std::error::Error for AuthRejection {}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::Unauthenticated => (status, "Unauthorized").into_response(),
            Self::Forbidden => (status, "Forbidden").into_response(),
            Self::ReauthRequired => (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":"reauth_required"}"#,
            )
                .into_response(),
            Self::LoginRedirect(location) => {
                let mut response = status.into_response();
                if let Ok(location) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                response
            }
            Self::Unavailable => {
                let mut response = (status, "Service unavailable").into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
                response
            }
            Self::MissingLayer => {
                tracing::error!(
                    "axum-live-auth: a handler needs the current user but the route has no \
                     AuthLayer; add it with Router::layer"
                );
                (
                    status,
                    "Internal server error: AuthLayer is not installed on this route",
                )
                    .into_response()
            }
        }
    }
}
