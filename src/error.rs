//! The crate's error types: infrastructure failures apart from domain failures, sources kept.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::AuthRejection;

/// Everything that can go wrong in this crate.
///
/// [`Error::Infrastructure`] holds what failed underneath (the database, the random source,
/// password hashing), so an app tells "the database is down" from "the name is taken" by type.
/// Sources are kept: [`std::error::Error::source`] leads to the underlying error. As a response
/// (handlers may return it with `?`) it answers through [`AuthRejection`]: an infrastructure
/// failure is `503` with `Retry-After` when the database is unavailable for now (down,
/// unreachable, too slow, overloaded) and `500` otherwise (a missing table, a violated
/// constraint: a retry would not mend it), bad input `400`, a missing user `404`, a taken name
/// `409`; the body never carries details.
///
/// ```
/// use axum::response::IntoResponse;
/// use axum_live_auth::Error;
///
/// fn describe(error: &Error) -> &'static str {
///     match error {
///         Error::Infrastructure(_) => "try again later",
///         Error::UsernameTaken => "pick another name",
///         _ => "something else",
///     }
/// }
/// assert_eq!(describe(&Error::UsernameTaken), "pick another name");
/// assert_eq!(Error::UsernameTaken.into_response().status(), 409);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Something underneath failed: retry later.
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
    /// The layer's configuration is invalid.
    #[error("invalid auth configuration")]
    Config(#[from] ConfigError),
    /// Too many failed attempts from this address or for this account: try again after
    /// `retry_after`. As a response: `429 Too Many Requests` with `Retry-After`.
    #[error("too many failed attempts; retry after {retry_after:?}")]
    Throttled {
        /// How long to wait.
        retry_after: std::time::Duration,
    },
    /// The server is at one of its bounds (password hashes at once, open event streams): try
    /// again after `retry_after`. As a response: `503` with `Retry-After`.
    #[error("busy; retry after {retry_after:?}")]
    Busy {
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
    /// A username must be 1 to 64 characters, without control characters, invisible ones
    /// (zero-width, bidirectional controls) or surrounding spaces, in Unicode's composed form
    /// (NFC).
    #[error("invalid username")]
    InvalidUsername,
    /// A new password must be 8 to [`MAX_PASSWORD_BYTES`](crate::MAX_PASSWORD_BYTES) bytes.
    #[error("invalid password")]
    InvalidPassword,
    /// A permission or role name must be 1 to 128 visible characters without whitespace.
    #[error("invalid permission or role name")]
    InvalidName,
    /// A resource must be `type:id`: see [`Resource`](crate::Resource).
    #[error("invalid resource")]
    InvalidResource,
    /// An email address must be 3 to 254 characters with one `@`, without spaces.
    #[error("invalid email address")]
    InvalidEmail,
    /// Another user has that email address (compared case-insensitively).
    #[error("email address already taken")]
    EmailTaken,
    /// A one-time token (password reset, email verification) that is unknown, used, expired,
    /// or no longer valid because the user's credentials changed.
    #[error("invalid or expired token")]
    InvalidToken,
    /// Account recovery needs a [`Messenger`](crate::Messenger) to deliver its messages.
    #[error("no messenger configured")]
    NoMessenger,
    /// A value the crate made itself collided with an existing one (it does not happen unless
    /// the random source is broken).
    #[error("conflict")]
    Conflict,
}

/// What failed underneath an [`Error::Infrastructure`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InfrastructureError {
    /// The database failed, could not be reached, or did not answer in time. As a response:
    /// `503` when a retry may succeed, `500` when the schema or a statement is at fault.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// Applying the crate's migrations failed.
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The operating system's random source failed.
    #[error("the operating system's random source failed")]
    Random(#[source] rand::rngs::SysError),
    /// Hashing a password failed.
    #[error("password hashing failed")]
    PasswordHash(#[source] argon2::password_hash::Error),
    /// A blocking task (password hashing) could not finish.
    #[error("background task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The app's [`Messenger`](crate::Messenger) could not deliver a message.
    #[error("the messenger failed")]
    Messenger(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A new session id collided with existing ones several times in a row. With 128 random
    /// bits this does not happen unless the random source is broken.
    #[error("could not allocate a unique session id")]
    SessionIdCollision,
    /// The layer could not look the request's session up (the database failed or did not
    /// answer in time, see [`AuthState::Unavailable`](crate::AuthState::Unavailable)), so an
    /// operation on the session (logout, a password change) cannot tell what to act on.
    #[error("the request's session could not be looked up")]
    SessionUnavailable,
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Infrastructure(InfrastructureError::Database(error))
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Self::Infrastructure(InfrastructureError::Migrate(error))
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::Infrastructure(InfrastructureError::Task(error))
    }
}

/// Whether a database error means the database is unavailable for now (down, unreachable,
/// slow, overloaded, shutting down or read-only in a failover, a transaction that lost a race):
/// worth a retry. What a retry does not mend (a missing table or column, a violated constraint,
/// a value that does not decode: the schema or the code is wrong) is not.
fn database_unavailable(error: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match error {
        E::Database(error) => database_code_unavailable(error.as_ref()),
        E::Configuration(_)
        | E::InvalidArgument(_)
        | E::RowNotFound
        | E::TypeNotFound { .. }
        | E::ColumnIndexOutOfBounds { .. }
        | E::ColumnNotFound(_)
        | E::ColumnDecode { .. }
        | E::Encode(_)
        | E::Decode(_)
        | E::Migrate(_)
        | E::InvalidSavePointStatement => false,
        _ => true,
    }
}

/// [`database_unavailable`] for an error the database returned, by its code.
#[cfg_attr(
    not(any(feature = "postgres", feature = "sqlite")),
    allow(unused_variables)
)]
fn database_code_unavailable(error: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "postgres")]
    if let Some(error) = error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        // SQLSTATE classes: connection exception, transaction rollback (serialization failure,
        // deadlock), insufficient resources, object not in prerequisite state (lock not
        // available), operator intervention (statement timeout, shutdown), system error; and a
        // write on a server that has become read-only (a failover).
        let code = error.code();
        return matches!(code.get(..2), Some("08" | "40" | "53" | "55" | "57" | "58"))
            || code == "25006";
    }
    #[cfg(feature = "sqlite")]
    if let Some(error) = error.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        // Primary result codes (the extended code's low byte): BUSY, LOCKED, NOMEM, IOERR,
        // FULL, CANTOPEN, PROTOCOL.
        let code = sqlx::error::DatabaseError::code(error);
        let primary = code
            .and_then(|code| code.parse::<i32>().ok())
            .map(|c| c & 0xff);
        return matches!(primary, Some(5 | 6 | 7 | 10 | 13 | 14 | 15));
    }
    true
}

impl From<&Error> for AuthRejection {
    fn from(error: &Error) -> Self {
        match error {
            Error::Infrastructure(InfrastructureError::Database(error))
                if !database_unavailable(error) =>
            {
                Self::Internal
            }
            Error::Infrastructure(
                InfrastructureError::Database(_) | InfrastructureError::SessionUnavailable,
            ) => Self::Unavailable,
            Error::Infrastructure(_) | Error::Config(_) | Error::NoMessenger => Self::Internal,
            Error::Throttled { retry_after } => Self::Throttled(*retry_after),
            Error::Busy { retry_after } => Self::Busy(*retry_after),
            Error::Unauthenticated => Self::Unauthenticated,
            Error::UserNotFound | Error::RoleNotFound => Self::NotFound,
            Error::UsernameTaken | Error::EmailTaken | Error::Conflict => Self::Conflict,
            Error::InvalidUsername
            | Error::InvalidPassword
            | Error::InvalidName
            | Error::InvalidResource
            | Error::InvalidEmail
            | Error::InvalidToken => Self::BadRequest,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let rejection = AuthRejection::from(&self);
        if rejection.status().is_server_error() {
            tracing::error!(error = &self as &dyn std::error::Error, "{rejection}");
        }
        rejection.into_response()
    }
}

impl Error {
    /// The response status this error answers with.
    pub fn status(&self) -> StatusCode {
        AuthRejection::from(self).status()
    }
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
    /// name without the prefix together with `insecure_dev_mode(true)`.
    #[error("a __Host- or __Secure- cookie requires the Secure attribute")]
    PrefixWithoutSecure,
    /// The cookie domain is empty or not a plain host name.
    #[error("invalid cookie domain {0:?}")]
    InvalidDomain(String),
    /// `SameSite=None` would send the session cookie on cross-site requests.
    #[error("SameSite=None is not allowed for a session cookie")]
    SameSiteNone,
    /// A duration is under a millisecond or longer than 400 days (the longest cookie lifetime
    /// browsers keep).
    #[error("{0} must be between one millisecond and 400 days")]
    InvalidTimeout(&'static str),
    /// The touch interval must be shorter than the idle timeout, or active sessions would expire.
    #[error("the touch interval must be shorter than the idle timeout")]
    TouchIntervalTooLong,
    /// A count that must be at least one is zero: the name says which.
    #[error("{0} must be at least 1")]
    InvalidLimit(&'static str),
    /// CSRF protection is on (the default) and no allowed origin is configured: add the
    /// origins the app is served from with `allowed_origin`.
    #[error(
        "CSRF protection needs the app's origins: call allowed_origin(\"https://app.example.com\")"
    )]
    NoAllowedOrigins,
    /// An allowed origin must be `http(s)://host[:port]`, without a path.
    #[error("invalid origin {0:?}: use scheme://host[:port], such as https://app.example.com")]
    InvalidOrigin(String),
    /// An allowed origin, or the account URL that links in messages start with, is plain
    /// `http://` on a host other than this machine's (`localhost`, `127.0.0.1`, `[::1]`): use
    /// `https://`, or [`insecure_dev_mode`](crate::AuthLayerBuilder::insecure_dev_mode) for
    /// development. Such a page can be rewritten by anyone on the network, and a reset link
    /// to it carries its token in the clear.
    #[error(
        "{0:?} is plain http on a host other than localhost: use https (a layer's \
         insecure_dev_mode(true) allows it for development)"
    )]
    PlainHttp(String),
    /// The account URL that links in messages start with must be an absolute `https://` URL
    /// without user info, query or fragment, such as `https://app.example.com/account`.
    #[error(
        "invalid account URL {0:?}: use an absolute URL such as https://app.example.com/account"
    )]
    InvalidAccountUrl(String),
    /// A CSRF exemption must be a path such as `/webhooks/payments`.
    #[error("invalid CSRF exemption {0:?}: use a path such as /webhooks/payments")]
    InvalidExemption(String),
    /// The principal cache and the event streams' cross-node notifications need the Postgres
    /// store (they listen for notifications).
    #[error("{0} needs the Postgres store")]
    NeedsPostgres(&'static str),
    /// Through a transaction pooler, LISTEN does not reach the node: the principal cache needs
    /// a direct [`listen_pool`](crate::AuthLayerBuilder::listen_pool).
    #[error("principal_cache through a transaction pooler needs a direct listen_pool")]
    NeedsListenPool,
    /// The login redirect must be a local absolute path such as `/login`.
    #[error("invalid login redirect {0:?}: use a local path such as /login")]
    InvalidRedirect(String),
    /// An IPv6 aggregation prefix must be 32 to 128 bits.
    #[error("ipv6_prefix must be between 32 and 128")]
    InvalidPrefix,
}
