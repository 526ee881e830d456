//! Quickstart: a complete small app with login, logout, permission-guarded routes and admin
//! routes that ban users and change grants, enforced on the user's next request.
//!
//! Run it with no setup at all: without `DATABASE_URL` it keeps everything in an SQLite file,
//! `quickstart.db` in the working directory, created on first run:
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Or against Postgres (the crate creates its `auth_*` tables there), with no code change;
//! `DATABASE_URL=sqlite://other.db` picks another SQLite file:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@localhost/postgres cargo run --example quickstart
//! ```
//!
//! It seeds `alice` / `alice-password` (role `admin`: permissions `admin` and `reports:read`)
//! and `bob` / `bob-password` (permission `reports:read`), and listens on
//! <http://localhost:3000> (set `PORT` to change). Then, with one cookie jar per user:
//!
//! ```text
//! curl -i -c alice.txt -b alice.txt -d username=alice -d password=alice-password http://localhost:3000/login
//! curl -b alice.txt http://localhost:3000/me        # {"id":1,"username":"alice","permissions":["admin","reports:read"]}
//! curl -c bob.txt -b bob.txt -d username=bob -d password=bob-password http://localhost:3000/login
//! curl -i -b bob.txt http://localhost:3000/reports  # 200 OK
//! curl -i -b alice.txt -X POST http://localhost:3000/admin/users/bob/disable   # 204 No Content
//! curl -i -b bob.txt http://localhost:3000/me       # 401 Unauthorized: banned at once
//! curl -i -b alice.txt -X POST http://localhost:3000/admin/users/bob/enable    # 204 No Content
//! ```
//!
//! The README's "Try it" section walks through all of it with real output.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Form, Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_live_auth::{
    Accounts, Auth, AuthLayer, AuthStore, CacheOptions, CurrentUser, Error, UserId,
    require_permission,
};
use serde::{Deserialize, Serialize};
use sqlx::{postgres::PgPoolOptions, sqlite::SqlitePoolOptions};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT must be a port number, not {port:?}"))?,
        Err(_) => 3000,
    };
    let database_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let store = connect(&database_url).await?;
    axum_live_auth::migrate(store.clone()).await?;

    // The session cookie keeps its production attributes (`__Host-sid`, Secure, HttpOnly,
    // SameSite=Lax). Browsers and curl treat http://localhost as a secure context, so this
    // Secure cookie works there without TLS (Safari is the exception: use another browser).
    // `insecure_dev_mode(true)` is only for plain-HTTP development on another host name; this
    // example does not need it.
    let cache = std::env::var("AUTH_CACHE").is_ok_and(|v| v == "on");
    let mut builder = AuthLayer::builder(store);
    if cache {
        // Two quickstarts on one Postgres (different PORTs) show the cache by hand: a ban
        // through one is enforced by the other within milliseconds.
        tracing::info!("principal cache on (AUTH_CACHE=on)");
        builder = builder.principal_cache(CacheOptions::default());
    }
    let auth = builder
        // CSRF protection: unsafe requests must come from the app's own pages (a browser says
        // so in Sec-Fetch-Site or Origin). curl sends neither: the README passes an Origin.
        .allowed_origin(format!("http://localhost:{port}"))
        .allowed_origin(format!("http://127.0.0.1:{port}"))
        // API clients may send `Authorization: Bearer <token>` instead of the cookie; they get
        // a token from POST /auth/token, which sets no cookie and so needs no CSRF check.
        .bearer_tokens(true)
        .csrf_exempt("/auth/token")
        // Anonymous browser page requests are sent to the login form instead of getting a 401.
        .login_redirect("/login")
        // Delete expired sessions now and then (in the background work below), in batches.
        .purge_expired_every(Duration::from_secs(10 * 60))
        .build()?;
    // The layer's background work: the purge, and on Postgres the one LISTEN connection that
    // keeps the principal cache and the event streams live. It ends with the layer.
    tokio::spawn(auth.background());
    seed(&auth.accounts()).await?;
    let app = app(auth);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("Listening on http://localhost:{port}");
    println!("Log in as alice / alice-password (admin) or bob / bob-password (reports:read)");
    // With connect info the layer records the client's IP address in each new session.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(ctrl_c())
    .await?;
    Ok(())
}

/// Where the example keeps its data when `DATABASE_URL` is not set.
const DEFAULT_DATABASE_URL: &str = "sqlite://quickstart.db";

/// Opens the database `url` names: Postgres for `postgres://` (or `postgresql://`), SQLite for
/// `sqlite:`. The rest of the app does not know which one it got.
async fn connect(url: &str) -> Result<AuthStore, Box<dyn std::error::Error>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        tracing::info!("using Postgres from DATABASE_URL");
        // `test_before_acquire(false)`: by default sqlx pings every connection as it leaves
        // the pool, which would be a second database round trip on every request. Without the
        // ping a dead connection fails its query, and that one request answers 503 instead.
        // The short acquire timeout makes requests answer 503 after 2 s, not 30, while the
        // database is down.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(|error| {
                format!("cannot connect to DATABASE_URL ({error}); is Postgres running?")
            })?;
        Ok(pool.into())
    } else if url.starts_with("sqlite:") {
        tracing::info!(
            url,
            "using the embedded SQLite store (set DATABASE_URL=postgres://… for Postgres)"
        );
        // WAL, a busy timeout and foreign keys: concurrent requests wait for SQLite's one
        // writer instead of failing.
        let options = axum_live_auth::sqlite_connect_options(url)?;
        let pool = SqlitePoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await?;
        Ok(pool.into())
    } else {
        Err(format!("DATABASE_URL must start with postgres:// or sqlite:, not {url:?}").into())
    }
}

/// The quickstart's routes behind the auth layer (the integration tests drive this router).
pub(crate) fn app(auth: AuthLayer) -> Router {
    // Each guarded group is a small router of its own: `route_layer` wraps only the routes
    // added before it (and only requests that match one, so unknown paths stay 404).
    let reports_routes = Router::new()
        .route("/reports", get(reports))
        .route_layer(require_permission("reports:read"));
    let admin_routes = Router::new()
        .route("/admin", get(admin))
        .route("/admin/users/{username}/disable", post(disable_user))
        .route("/admin/users/{username}/enable", post(enable_user))
        .route("/admin/users/{username}/grant", post(grant_permission))
        .route("/admin/users/{username}/revoke", post(revoke_permission))
        .route_layer(require_permission("admin"));
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        // The user's devices, "log out other devices", password change and reauthentication.
        .nest("/account", axum_live_auth::account_routes())
        // POST /auth/token: a bearer token for a username and password (JSON).
        .nest("/auth", axum_live_auth::token_routes())
        .merge(reports_routes)
        .merge(admin_routes)
        .with_state(auth.accounts())
        // Outermost: authenticates every request from its session cookie.
        .layer(auth)
}

/// Creates the demo users unless they exist (a restart keeps whatever the walkthrough changed).
pub(crate) async fn seed(accounts: &Accounts) -> Result<(), Error> {
    if accounts.user_id("alice").await?.is_none() {
        let alice = accounts.create_user("alice", "alice-password").await?;
        accounts.create_role("admin").await?;
        accounts.grant_role_permission("admin", "admin").await?;
        accounts
            .grant_role_permission("admin", "reports:read")
            .await?;
        accounts.assign_role(alice, "admin").await?;
    }
    if accounts.user_id("bob").await?.is_none() {
        let bob = accounts.create_user("bob", "bob-password").await?;
        accounts.grant_permission(bob, "reports:read").await?;
    }
    Ok(())
}

/// Public. `Option<CurrentUser>` is `None` for anonymous requests instead of refusing them.
async fn home(user: Option<CurrentUser>) -> Html<&'static str> {
    Html(match user {
        Some(_) => {
            r#"<h1>axum-live-auth quickstart</h1>
<p><a href="/me">/me</a> · <a href="/reports">/reports</a> · <a href="/admin">/admin</a></p>
<form method="post" action="/logout"><button>Log out</button></form>"#
        }
        None => {
            r#"<h1>axum-live-auth quickstart</h1>
<p><a href="/login">Log in</a> · <a href="/me">/me</a></p>"#
        }
    })
}

async fn login_form() -> Html<&'static str> {
    Html(
        r#"<h1>Log in</h1>
<form method="post" action="/login">
  <label>Username <input name="username" autocomplete="username" required></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button>Log in</button>
</form>"#,
    )
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(auth: Auth, Form(form): Form<Credentials>) -> Result<Response, Error> {
    // Checks the password and, if right, starts a new session and sets its cookie on this
    // response. `None` alike for an unknown user, a wrong password and a disabled user.
    match auth
        .login_with_password(&form.username, &form.password)
        .await?
    {
        Some(_) => Ok(Redirect::to("/me").into_response()),
        None => Ok((StatusCode::UNAUTHORIZED, "Invalid username or password").into_response()),
    }
}

async fn logout(auth: Auth) -> Result<Redirect, Error> {
    // Deletes the session row (its cookie is worthless from now on) and clears the cookie.
    auth.logout().await?;
    Ok(Redirect::to("/"))
}

#[derive(Serialize)]
struct Me {
    id: UserId,
    username: String,
    permissions: Vec<String>,
}

/// `CurrentUser` refuses anonymous requests: 401, or 303 to /login for a browser page request.
async fn me(user: CurrentUser) -> Json<Me> {
    Json(Me {
        id: user.id(),
        username: user.username().to_owned(),
        // Sorted, and as they are in the database for this very request.
        permissions: user.permissions().to_vec(),
    })
}

async fn reports(user: CurrentUser) -> String {
    format!("Reports for {}", user.username())
}

async fn admin() -> &'static str {
    "Admin area: POST /admin/users/{username}/disable, /enable, /grant, /revoke"
}

#[derive(Deserialize)]
struct PermissionForm {
    permission: String,
}

// The admin actions take effect on the user's next request: no cache, no new login needed.
// `Error` is a response: 404 for an unknown user, 400 for an invalid name, 503 for a database
// failure.

async fn disable_user(
    State(accounts): State<Accounts>,
    Path(username): Path<String>,
) -> Result<StatusCode, Error> {
    // Also deletes all of the user's sessions.
    accounts
        .disable_user(find_user(&accounts, &username).await?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enable_user(
    State(accounts): State<Accounts>,
    Path(username): Path<String>,
) -> Result<StatusCode, Error> {
    accounts
        .enable_user(find_user(&accounts, &username).await?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn grant_permission(
    State(accounts): State<Accounts>,
    Path(username): Path<String>,
    Form(form): Form<PermissionForm>,
) -> Result<StatusCode, Error> {
    let user = find_user(&accounts, &username).await?;
    accounts.grant_permission(user, &form.permission).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_permission(
    State(accounts): State<Accounts>,
    Path(username): Path<String>,
    Form(form): Form<PermissionForm>,
) -> Result<StatusCode, Error> {
    // Only a direct grant is revoked; a permission that also comes from a role stays.
    let user = find_user(&accounts, &username).await?;
    accounts.revoke_permission(user, &form.permission).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The id of the user called `username`, or `Error::UserNotFound` (a 404).
async fn find_user(accounts: &Accounts, username: &str) -> Result<UserId, Error> {
    accounts.user_id(username).await?.ok_or(Error::UserNotFound)
}

/// Resolves on Ctrl-C; the server then finishes the requests in flight and exits.
async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(%error, "cannot listen for Ctrl-C; stop the server another way");
        std::future::pending::<()>().await;
    }
    tracing::info!("shutting down");
}
