//! Server-side sessions for axum, with live permissions from Postgres.
//!
//! The session cookie holds nothing but a random token (`__Host-sid`, `HttpOnly`, `Secure`,
//! `SameSite=Lax`). On every request the [`AuthLayer`] looks the session up in Postgres in one
//! round trip and hands handlers the [`CurrentUser`] with their permissions as they are *now*:
//! a ban, a logout, a revoked session or a removed permission is enforced on the next request,
//! on every node, also when the change is made with plain SQL.
//!
//! # Quick start
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use axum_live_auth::{AuthLayer, CurrentUser, require_permission};
//! use sqlx::postgres::PgPoolOptions;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // No ping on checkout: it would be a second database round trip on every request.
//! let pool = PgPoolOptions::new()
//!     .test_before_acquire(false)
//!     .connect("postgres://localhost/app")
//!     .await?;
//! axum_live_auth::migrate(&pool).await?;
//!
//! let auth = AuthLayer::builder(pool)
//!     .allowed_origin("https://app.example.com")
//!     .build()?;
//! let app = Router::new()
//!     .route("/reports", get(|| async { "reports" }))
//!     .route_layer(require_permission("reports:read"))
//!     .route("/me", get(|user: CurrentUser| async move { user.username().to_owned() }))
//!     .layer(auth);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Log users in and out, and manage the current user's sessions and password, with the
//! [`Auth`] handle; guard sensitive routes with [`RecentAuth`]; manage users, roles, grants and
//! sessions with [`Accounts`]; mount [`account_routes`] and [`token_routes`] for ready-made
//! endpoints. `examples/quickstart.rs` is a complete app, `examples/admin.rs` an operator's tool.
//!
//! # What each request costs
//!
//! A request without a session cookie, or with a malformed one, makes no query. A request
//! with a well-formed token makes one query, plus one small write at most once per touch
//! interval to move the idle deadline. With the principal cache (Postgres)
//! most requests make none.
//!
//! # Secure by default
//!
//! The cookie is `__Host-sid; HttpOnly; Secure; SameSite=Lax`. CSRF protection (Fetch Metadata,
//! then an exact `Origin`) is on and needs the app's origins
//! ([`allowed_origin`](AuthLayerBuilder::allowed_origin)). Failed logins are throttled per client
//! address and per username in the database. Insecure settings carry loud names
//! (`insecure_dev_mode`, `dangerous_disable_csrf_protection`).
//!
//! # Features
//!
//! - `postgres` (default): the Postgres store, `MIGRATOR`, the principal cache.
//! - `sqlite`: the bundled SQLite store, `SQLITE_MIGRATOR`, `sqlite_connect_options`.

mod admin;
mod auth;
mod bearer;
#[cfg(feature = "postgres")]
mod cache;
mod client;
mod config;
mod cookie;
mod csrf;
mod error;
mod events;
mod extract;
mod guard;
mod layer;
mod password;
mod rejection;
mod routes;
mod store;
mod throttle;
mod token;

pub use crate::{
    admin::Accounts,
    auth::{Auth, SESSION_TOKEN_HEADER},
    config::{AuthLayerBuilder, SameSite},
    cookie::MAX_COOKIE_HEADER_BYTES,
    error::{ConfigError, Error},
    extract::{AuthState, CurrentUser, RecentAuth},
    guard::{RequirePermission, RequirePermissionLayer, require_permission},
    layer::{AuthLayer, AuthService},
    password::{MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES},
    rejection::AuthRejection,
    routes::{account_routes, token_routes},
    store::{AuthStore, SessionInfo, migrate},
    token::{SessionId, SessionToken},
};

#[cfg(feature = "sqlite")]
pub use crate::store::{SQLITE_MIGRATOR, sqlite_connect_options};
#[cfg(feature = "postgres")]
pub use crate::{
    cache::{CacheOptions, CacheStatus},
    store::MIGRATOR,
};

/// A user's id: `auth_users.id`.
pub type UserId = i64;
