//! Server-side sessions for axum, with live permissions, kept in Postgres or an embedded SQLite.
//!
//! The session cookie holds nothing but a random token (`__Host-sid`, `HttpOnly`, `Secure`,
//! `SameSite=Lax`). On every request the [`AuthLayer`] looks the session up in the database in
//! one round trip and hands handlers the [`CurrentUser`] with their permissions as they are
//! *now*: a ban, a logout, a revoked session or a removed permission is enforced on the next
//! request, on every node, also when the change is made with plain SQL (Postgres). With the
//! [principal cache](AuthLayerBuilder::principal_cache), other nodes (and plain SQL) reach a
//! node once the change's notification does, within a millisecond or so, and a node that
//! cannot be sure it hears them reads the database.
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
//! // The per-address limits (logins, resets, sign-ups) need each client's address.
//! let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Log users in and out, and manage the current user's sessions and password, with the
//! [`Auth`] handle; guard sensitive routes with [`RecentAuth`]; manage users, roles, grants and
//! sessions with [`Accounts`]; mount [`account_routes`] (with the event stream) and
//! [`token_routes`] for ready-made endpoints, and [`forward_auth_routes`] for a reverse proxy's
//! auth requests. `examples/adopter.rs` is the README's app with its tests,
//! `examples/quickstart.rs` a complete app, `examples/admin.rs` an operator's tool.
//!
//! # What each request costs
//!
//! A request without a session cookie, or with a malformed one, makes no query. A request
//! with a well-formed token makes one query, plus one small write at most once per touch
//! interval to move the idle deadline. With the principal cache (Postgres) most requests make
//! none.
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
//! - `postgres` (default): the Postgres store, `POSTGRES_MIGRATOR`, the principal cache, the
//!   node's listener, `through_transaction_pooler`.
//! - `sqlite`: the bundled SQLite store, `SQLITE_MIGRATOR`, `sqlite_connect_options`.
//! - `testing`: `axum_live_auth::testing`, a signed-in user in one call for an app's tests.

mod accounts;
mod auth;
mod cache;
mod client;
mod config;
mod credential;
mod csrf;
mod error;
mod events;
#[cfg(feature = "postgres")]
mod listener;
mod login;
mod lookup;
mod password;
mod principal;
mod recovery;
mod rejection;
mod resource;
mod routes;
mod service;
mod shared;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod token;

pub use crate::{
    accounts::Accounts,
    auth::{Auth, SESSION_TOKEN_HEADER},
    cache::{CacheOptions, CacheStatus},
    config::{AuthLayerBuilder, SameSite},
    credential::MAX_COOKIE_HEADER_BYTES,
    error::{ConfigError, Error, InfrastructureError},
    password::{MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES},
    principal::{
        AuthState, CurrentUser, RecentAuth, RequirePermission, RequirePermissionLayer,
        require_permission, require_permission_on,
    },
    recovery::{Message, MessageKind, Messenger, MessengerError},
    rejection::AuthRejection,
    resource::Resource,
    routes::{account_routes, forward_auth_routes, token_routes},
    service::{AuthLayer, AuthService},
    store::{AuthStore, IntoAuthStore, Pool, SessionInfo, StoreKind, migrate},
    token::{SessionId, SessionToken},
};

#[cfg(feature = "postgres")]
pub use crate::store::{POSTGRES_MIGRATOR, ThroughPooler, through_transaction_pooler};
#[cfg(feature = "sqlite")]
pub use crate::store::{SQLITE_MIGRATOR, sqlite_connect_options};

/// The sqlx this crate is built on (0.9): pools given to the crate must be of this version.
/// An app that uses another sqlx for its own queries uses this one for the crate's pool.
pub use sqlx;

/// A user's id: `auth_users.id`.
pub type UserId = i64;
