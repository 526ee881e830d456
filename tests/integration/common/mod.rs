//! The app the integration tests drive, and helpers to send requests and read cookies.

pub mod db;
pub mod example;
pub mod http;
#[allow(dead_code)]
#[path = "../../../examples/quickstart.rs"]
pub mod quickstart;
pub mod statements;
pub mod wire;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Form, Json, Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_live_auth::{
    Accounts, Auth, AuthLayer, AuthLayerBuilder, CurrentUser, UserId, require_permission,
};
use http_body_util::BodyExt;
use serde::Deserialize;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tower::ServiceExt;

pub use self::db::Db;

pub const ALICE: &str = "alice";
pub const ALICE_PASSWORD: &str = "alice-password";
pub const BOB: &str = "bob";
pub const BOB_PASSWORD: &str = "bob-password";
pub const COOKIE: &str = "__Host-sid";
/// The origin the test app is served from, as a browser would send it.
pub const ORIGIN: &str = "http://localhost:3000";

/// The app under test, its database and two users: alice (role `admin` with `admin` and
/// `reports:read`) and bob (`reports:read` directly).
#[derive(Clone)]
pub struct TestApp {
    pub db: Db,
    pub layer: AuthLayer,
    pub accounts: Accounts,
    pub router: Router,
    pub alice: UserId,
    pub bob: UserId,
    /// How many times a protected handler body ran.
    pub handler_runs: Arc<AtomicUsize>,
    /// Counts the app's statements, for an app built with [`counted_app`].
    pub counter: Option<statements::Counter>,
}

/// Builds the app on the test database with the default layer configuration.
pub async fn app(db: impl Into<Db>) -> TestApp {
    app_with(db, |b| b).await
}

/// Builds the app on a pool whose statements are counted ([`TestApp::statements`]).
pub async fn counted_app(db: impl Into<Db>) -> TestApp {
    counted_app_with(db, |b| b).await
}

/// [`counted_app`] with a customised layer.
pub async fn counted_app_with(
    db: impl Into<Db>,
    configure: impl FnOnce(AuthLayerBuilder) -> AuthLayerBuilder,
) -> TestApp {
    let (db, counter) = statements::counted(&db.into()).await;
    TestApp {
        counter: Some(counter),
        ..app_with(db, configure).await
    }
}

/// Creates alice and bob, unless another node of the test created them already.
async fn seed(accounts: &Accounts) -> (UserId, UserId) {
    if let (Some(alice), Some(bob)) = (
        accounts.user_id(ALICE).await.unwrap(),
        accounts.user_id(BOB).await.unwrap(),
    ) {
        return (alice, bob);
    }
    let alice = accounts.create_user(ALICE, ALICE_PASSWORD).await.unwrap();
    let bob = accounts.create_user(BOB, BOB_PASSWORD).await.unwrap();
    accounts.create_role("admin").await.unwrap();
    for permission in ["admin", "reports:read"] {
        accounts
            .grant_role_permission("admin", permission)
            .await
            .unwrap();
    }
    accounts.assign_role(alice, "admin").await.unwrap();
    accounts
        .grant_permission(bob, "reports:read")
        .await
        .unwrap();
    (alice, bob)
}

/// Builds the app with a customised layer (a second node of a test reuses the users).
pub async fn app_with(
    db: impl Into<Db>,
    configure: impl FnOnce(AuthLayerBuilder) -> AuthLayerBuilder,
) -> TestApp {
    let db = db.into();
    let store = db.store();
    app_on(db, store, configure).await
}

/// [`app_with`] whose layer uses `store` (a pool through a pooler, say), while the test's own
/// queries use `db`.
pub async fn app_on(
    db: Db,
    store: axum_live_auth::AuthStore,
    configure: impl FnOnce(AuthLayerBuilder) -> AuthLayerBuilder,
) -> TestApp {
    let accounts = Accounts::new(store.clone());
    let (alice, bob) = seed(&accounts).await;
    let layer = configure(AuthLayer::builder(store.clone()).allowed_origin(ORIGIN))
        .build()
        .unwrap();
    let handler_runs = Arc::new(AtomicUsize::new(0));
    // From here on, the layer's accounts: they tell the layer's event streams of changes.
    let accounts = layer.accounts();
    let router = router(accounts.clone(), Arc::clone(&handler_runs)).layer(layer.clone());
    TestApp {
        db,
        layer,
        accounts,
        router,
        alice,
        bob,
        handler_runs,
        counter: None,
    }
}

/// A node's own pool on the test database (no ping on checkout, as a production node).
pub async fn node_pool(options: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .connect_with(options.clone())
        .await
        .unwrap()
}

/// A pool on the same database that never pings on checkout and has one connection, so that
/// every round trip of a request shows up at the wire, in order.
pub async fn quiet_pool(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap()
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

pub fn router(accounts: Accounts, runs: Arc<AtomicUsize>) -> Router {
    let counted = move || {
        let runs = Arc::clone(&runs);
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
        }
    };
    let on_me = counted();
    let on_reports = counted();
    let on_maybe = counted();
    let on_post = counted();
    Router::new()
        .route(
            "/reports",
            get(move || async move {
                on_reports();
                "reports"
            }),
        )
        .route_layer(require_permission("reports:read"))
        .route("/public", get(|| async { "public" }))
        .route(
            "/me",
            get(move |user: CurrentUser| async move {
                on_me();
                Json(serde_json::json!({
                    "id": user.id(),
                    "username": user.username(),
                    "permissions": user.permissions(),
                    "session": user.session_id().as_str(),
                }))
            })
            .post(move |user: CurrentUser| async move {
                on_post();
                user.username().to_owned()
            }),
        )
        .route(
            "/maybe",
            get(move |user: Option<CurrentUser>| async move {
                on_maybe();
                user.map_or_else(|| "anonymous".to_owned(), |u| u.username().to_owned())
            }),
        )
        .route(
            "/admin-check",
            get(|user: CurrentUser| async move {
                user.require("admin")?;
                Ok::<_, axum_live_auth::AuthRejection>("admin")
            }),
        )
        .merge(
            Router::new()
                .route("/projects/{id}", get(|| async { "project" }))
                .route_layer(axum_live_auth::require_permission_on(
                    "project:read",
                    "project",
                    "id",
                )),
        )
        .route(
            "/projects/{id}/edit",
            post(
                |user: CurrentUser, axum::extract::Path(id): axum::extract::Path<String>| async move {
                    let project = axum_live_auth::Resource::new("project", id)
                        .map_err(|e| axum_live_auth::AuthRejection::from(&e))?;
                    user.require_on("project:write", &project).await?;
                    Ok::<_, axum_live_auth::AuthRejection>("edited")
                },
            ),
        )
        .route("/login", post(login))
        .route("/signup", post(sign_up))
        .route("/logout", post(logout))
        .route("/reauth-and-revoke", post(reauth_and_revoke))
        .nest("/account", axum_live_auth::account_routes())
        .nest(
            "/auth",
            axum_live_auth::token_routes().merge(axum_live_auth::forward_auth_routes()),
        )
        .with_state(accounts)
}

async fn login(auth: Auth, Form(form): Form<LoginForm>) -> Result<Response, axum_live_auth::Error> {
    match auth
        .login_with_password(&form.username, &form.password)
        .await?
    {
        Some(_) => Ok(Redirect::to("/me").into_response()),
        None => Ok((StatusCode::UNAUTHORIZED, "Invalid username or password").into_response()),
    }
}

async fn sign_up(
    auth: Auth,
    Form(form): Form<LoginForm>,
) -> Result<Redirect, axum_live_auth::Error> {
    auth.sign_up(&form.username, &form.password).await?;
    Ok(Redirect::to("/me"))
}

/// "Enter your password to sign out your other devices": sudo mode (which rotates the
/// session), then every other session ends (form `revoke=others`; the count, and the sessions
/// listed as current), or the request's own by the id it came with (`revoke=own`).
async fn reauth_and_revoke(
    auth: Auth,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Result<String, axum_live_auth::Error> {
    let came_with = auth.current_user().map(|u| u.session_id().clone());
    let password = form.get("password").map_or("", String::as_str);
    if !auth.reauthenticate(password).await? {
        return Err(axum_live_auth::Error::Unauthenticated);
    }
    if form.get("revoke").is_some_and(|r| r == "own") {
        let id = came_with.ok_or(axum_live_auth::Error::Unauthenticated)?;
        return Ok(auth.revoke_session(&id).await?.to_string());
    }
    let ended = auth.revoke_other_sessions().await?;
    let current = auth.sessions().await?.iter().filter(|s| s.current).count();
    Ok(format!("{ended} {current}"))
}

async fn logout(auth: Auth) -> Result<Redirect, axum_live_auth::Error> {
    auth.logout().await?;
    Ok(Redirect::to("/"))
}

/// A response with its body read.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The value of the session cookie this response sets (`Some("")` when it clears it).
    pub fn session_cookie(&self) -> Option<String> {
        self.set_cookies().into_iter().find_map(|c| {
            c.strip_prefix(&format!("{COOKIE}="))
                .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
        })
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

pub async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub fn get_with_cookie(path: &str, token: &str) -> Request<Body> {
    Request::get(path)
        .header(header::COOKIE, format!("{COOKIE}={token}"))
        .body(Body::empty())
        .unwrap()
}

/// A same-origin form `POST` to `path` with the session cookie `token`.
pub fn post_form(path: &str, token: &str, form: &str) -> Request<Body> {
    Request::post(path)
        .header(header::COOKIE, format!("{COOKIE}={token}"))
        .header("sec-fetch-site", "same-origin")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap()
}

pub fn login_request(username: &str, password: &str) -> Request<Body> {
    let body = format!(
        "username={}&password={}",
        urlencode(username),
        urlencode(password)
    );
    Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header(header::USER_AGENT, "integration-test/1.0")
        .body(Body::from(body))
        .unwrap()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl TestApp {
    /// Logs in through `POST /login` and returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let reply = send(&self.router, login_request(username, password)).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "login of {username}");
        reply
            .session_cookie()
            .expect("login sets the session cookie")
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        send(&self.router, get_with_cookie(path, token)).await
    }

    pub async fn status(&self, path: &str, token: &str) -> StatusCode {
        self.get(path, token).await.status
    }

    /// How long until `path` with `token` answers `expected` (polled, at most 3 s): a change
    /// that reaches this node by notification.
    pub async fn until(&self, path: &str, token: &str, expected: StatusCode) -> Duration {
        let started = std::time::Instant::now();
        while self.status(path, token).await != expected {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{path} never {expected}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        started.elapsed()
    }

    /// The number of rows in `auth_sessions`.
    pub async fn sessions(&self) -> i64 {
        self.db.count("SELECT count(*) FROM auth_sessions").await
    }

    /// Statements the app has sent so far (an app built with [`counted_app`]).
    pub fn statements(&self) -> u64 {
        self.counter.as_ref().expect("a counted app").get()
    }

    pub fn runs(&self) -> usize {
        self.handler_runs.load(Ordering::SeqCst)
    }
}

impl TestApp {
    /// Starts the layer's background work and waits until its principal cache listens.
    pub async fn listen(&self) {
        tokio::spawn(self.layer.background());
        wait_listening(|| self.layer.cache_status().unwrap()).await;
    }
}

/// Waits (at most 5 s) until a principal cache says it listens for changes.
pub async fn wait_listening(status: impl Fn() -> axum_live_auth::CacheStatus) {
    for _ in 0..500 {
        if status().listening {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cache never started listening");
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Writes each test once and runs it against both stores: `async fn name(db: Db) { … }`
/// becomes `postgres::name` on a fresh Postgres database and `sqlite::name` on a fresh SQLite
/// file, each with the crate's migrations applied.
macro_rules! both_stores {
    ($(
        $(#[doc = $doc:literal])*
        async fn $name:ident($db:ident: Db) $body:block
    )*) => {
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[doc = $doc])*
                #[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
                async fn $name(pool: sqlx::PgPool) {
                    let $db = crate::common::Db::from(pool);
                    $body
                }
            )*
        }
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[doc = $doc])*
                #[sqlx::test(migrator = "axum_live_auth::SQLITE_MIGRATOR")]
                async fn $name(pool: sqlx::SqlitePool) {
                    let $db = crate::common::Db::from(pool);
                    $body
                }
            )*
        }
    };
}
pub(crate) use both_stores;
