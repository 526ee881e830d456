//! The crate's error type, and how an error becomes a response.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Seconds a client is told to wait (`Retry-After`) when the database is unavailable.
pub(crate) const RETRY_AFTER_SECS: u32 = 5;

/// Everything that can go wrong in this crate.
///
/// Sources are kept: [`std::error::Error::source`] leads to the underlying `sqlx`, migration,
/// password-hash or random-source error. As a response (handlers may return it with `?`), a
/// database failure is `503 Service Unavailable` with `Retry-After`, bad input is `400` or
/// `409`, and anything else is a generic `500`; the body never carries details.
///
/// ```
/// use axum_live_auth::Error;
/// use axum::response::IntoResponse;
///
/// let response = Error::UsernameTaken.into_response();
/// assert_eq!(response.status(), 409);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed or could not be reached.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Applying the crate's migrations failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The layer's configuration is invalid.
    #[error("invalid auth configuration")]
    Config(#[from] ConfigError),
    /// The operating system's random source failed.
    #[error("the operating system's random source failed")]
    Random(#[source] rand::rngs::SysError),
    /// Hashing a password failed.
    #[error("password hashing failed")]
    PasswordHash(#[source] argon2::password_hash::Error),
    /// A blocking task (password hashing) could not finish.
    #[error("background task failed")]
    Task(#[from] tokio::task::JoinError),
    /// Too many failed logins from this address or for this username: try again after
    /// `retry_after`. As a response: `429 Too Many Requests` with `Retry-After`.
    #[error("too many failed attempts; retry after {retry_after:?}")]
    Throttled {
        /// How long to wait.
        retry_after: std::time::Duration,
    },
    /// The request has no session, and the operation needs one.
    #[error("not authenticated")]
    Unauthenticated,
    /// No user with that id or name exists (or, for login, the user is disabled).
    #[error("no such user")]
    UserNotFound,
    /// No role with that name exists.
    #[error("no such role")]
    RoleNotFound,
    /// A user with that name (compared case-insensitively) already exists.
    #[error("username already taken")]
    UsernameTaken,
    /// A username must be 1 to 64 characters, without control characters or surrounding spaces.
    #[error("invalid username")]
    InvalidUsername,
    /// A new password must be 8 to [`MAX_PASSWORD_BYTES`](crate::MAX_PASSWORD_BYTES) bytes.
    #[error("invalid password")]
    InvalidPassword,
    /// A permission or role name must be 1 to 128 visible characters without whitespace.
    #[error("invalid permission or role name")]
    InvalidName,
    /// A new session id collided with existing ones several times in a row. With 128 random
    /// bits this does not happen unless the random source is broken.
    #[error("could not allocate a unique session id")]
    SessionIdCollision,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Self::Database(_) => {
                tracing::error!(
                    error = &self as &dyn std::error::Error,
                    "database unavailable"
                );
                let mut response =
                    (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable").into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
                response
            }
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
            Self::Throttled { retry_after } => too_many_requests(*retry_after),
            Self::UsernameTaken => (StatusCode::CONFLICT, "Conflict").into_response(),
            Self::UserNotFound | Self::RoleNotFound => {
                (StatusCode::NOT_FOUND, "Not found").into_response()
            }
            Self::InvalidUsername | Self::InvalidPassword | Self::InvalidName => {
                (StatusCode::BAD_REQUEST, "Bad request").into_response()
            }
            _ => {
                tracing::error!(error = &self as &dyn std::error::Error, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error").into_response()
            }
        }
    }
}

/// `429 Too Many Requests` with `Retry-After` in whole seconds (at least one).
pub(crate) fn too_many_requests(retry_after: std::time::Duration) -> Response {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut response = (StatusCode::TOO_MANY_REQUESTS, "Too many requests").into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

/// Why [`AuthLayerBuilder::build`](crate::AuthLayerBuilder::build) refused a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cookie name is empty or has characters not allowed in a cookie name.
    #[error("invalid cookie name {0:?}")]
    InvalidCookieName(String),
    /// A `__Host-` cookie must not have a `Domain`; browsers drop it.
    #[error("a __Host- cookie cannot have a Domain attribute")]
    HostPrefixWithDomain,
    /// A `__Host-` or `__Secure-` cookie must be `Secure`; browsers drop it otherwise. Use a
    /// name without the prefix together with `insecure_dev_mode()`.
    #[error("a __Host- or __Secure- cookie requires the Secure attribute")]
    PrefixWithoutSecure,
    /// The cookie domain is empty or not a plain host name.
    #[error("invalid cookie domain {0:?}")]
    InvalidDomain(String),
    /// `SameSite=None` would send the session cookie on cross-site requests.
    #[error("SameSite=None is not allowed for a session cookie")]
    SameSiteNone,
    /// A timeout is zero or longer than 400 days (the longest cookie lifetime browsers keep).
    #[error("{0} must be between one second and 400 days")]
    InvalidTimeout(&'static str),
    /// The touch interval must be shorter than the idle timeout, or active sessions would expire.
    #[error("the touch interval must be shorter than the idle timeout")]
    TouchIntervalTooLong,
    /// The most sessions per user must be at least one.
    #[error("max_sessions_per_user must be at least 1")]
    InvalidSessionCap,
    /// The purge task needs a tokio runtime to run on: build the layer inside one.
    #[error("purge_expired_every needs to be called inside a tokio runtime")]
    NoRuntime,
    /// CSRF protection is on (the default) and no allowed origin is configured: add the
    /// origins the app is served from with `allowed_origin`.
    #[error(
        "CSRF protection needs the app's origins: call allowed_origin(\"https://app.example.com\")"
    )]
    NoAllowedOrigins,
    /// An allowed origin must be `http(s)://host[:port]`, without a path.
    #[error("invalid origin {0:?}: use scheme://host[:port], such as https://app.example.com")]
    InvalidOrigin(String),
    /// A CSRF exemption must be a path such as `/webhooks/payments`.
    #[error("invalid CSRF exemption {0:?}: use a path such as /webhooks/payments")]
    InvalidExemption(String),
    /// The principal cache works with the Postgres store only (it listens for notifications).
    #[error("the principal cache needs the Postgres store")]
    CacheNeedsPostgres,
    /// The login redirect must be a local absolute path such as `/login`.
    #[error("invalid login redirect {0:?}: use a local path such as /login")]
    InvalidRedirect(String),
}
