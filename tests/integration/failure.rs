//! Fail closed: a database outage is never anonymous and never a 200; a missing layer is a 500.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body, http::Request, routing::get};
use axum_live_auth::AuthStore;
use axum_live_auth::{Accounts, Auth, AuthLayer, CurrentUser, SessionToken, require_permission};
use http::{StatusCode, header};
use sqlx::{
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
};

use crate::common::{
    ALICE, ALICE_PASSWORD, COOKIE, ORIGIN, app, both_stores, get_with_cookie, login_request,
    router, send,
};

/// An app on a store whose database cannot be reached.
fn unreachable_app(store: AuthStore) -> (Router, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let layer = AuthLayer::builder(store.clone())
        .allowed_origin(crate::common::ORIGIN)
        .build()
        .unwrap();
    (
        router(Accounts::new(store), Arc::clone(&runs)).layer(layer),
        runs,
    )
}

#[tokio::test]
async fn an_unreachable_postgres_answers_503_quickly_and_keeps_the_cookie() {
    // Nothing listens on port 1.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .test_before_acquire(false)
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .unwrap();
    unreachable_answers_503(pool.into()).await;
}

#[tokio::test]
async fn an_unopenable_sqlite_file_answers_503_quickly_and_keeps_the_cookie() {
    let options = SqliteConnectOptions::new()
        .filename("/nonexistent-directory/auth.db")
        .create_if_missing(false);
    let pool = SqlitePoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(options);
    unreachable_answers_503(pool.into()).await;
}

async fn unreachable_answers_503(store: AuthStore) {
    let (router, runs) = unreachable_app(store);
    let token = SessionToken::generate().unwrap().to_string();
    for path in ["/me", "/maybe", "/reports"] {
        let start = Instant::now();
        let reply = send(&router, get_with_cookie(path, &token)).await;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            start.elapsed()
        );
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(reply.headers[header::RETRY_AFTER], "5");
        assert!(
            reply.set_cookies().is_empty(),
            "{path}: the cookie is not cleared"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "no protected handler ran");
    // Public routes keep working, and so do anonymous requests (no query needed).
    let public = send(
        &router,
        Request::get("/public").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(public.status, StatusCode::OK);
    let anonymous = send(&router, Request::get("/maybe").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (anonymous.status, anonymous.body.as_str()),
        (StatusCode::OK, "anonymous")
    );
    // A login attempt cannot succeed either.
    let login = send(&router, login_request(ALICE, ALICE_PASSWORD)).await;
    assert_eq!(login.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(login.set_cookies().is_empty());
    // Nor can a logout claim to have ended a session it could not look up: the cookie stays.
    let logout = Request::post("/logout")
        .header(header::ORIGIN, crate::common::ORIGIN)
        .header(header::COOKIE, format!("{}={token}", crate::common::COOKIE))
        .body(Body::empty())
        .unwrap();
    let logout = send(&router, logout).await;
    assert_eq!(logout.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        logout.set_cookies().is_empty(),
        "{:?}",
        logout.set_cookies()
    );
    assert!(!logout.headers.contains_key("clear-site-data"));
}

both_stores! {
async fn a_database_lost_after_login_is_503_not_anonymous(db: Db) {
    let app = app(db).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    app.db.close().await;
    let runs = app.runs();
    for path in ["/me", "/maybe", "/reports"] {
        let reply = app.get(path, &token).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(reply.set_cookies().is_empty());
    }
    assert_eq!(app.runs(), runs);
    assert_eq!(app.status("/public", &token).await, StatusCode::OK);
}

/// A database error a retry does not mend (here a table gone: the schema is wrong) answers
/// `500`, without `Retry-After`: clients are not told to come back for a fault. (Before: `503`
/// with `Retry-After`.)
async fn a_schema_fault_is_500_not_503(db: Db) {
    let app = app(db).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    app.db.exec("ALTER TABLE auth_user_resource_permissions RENAME TO moved").await;
    let request = Request::post("/projects/7/edit")
        .header(header::COOKIE, format!("{COOKIE}={token}"))
        .header(header::ORIGIN, ORIGIN)
        .body(Body::empty())
        .unwrap();
    let reply = send(&app.router, request).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!reply.headers.contains_key(header::RETRY_AFTER));
}
}

#[tokio::test]
async fn a_route_without_the_layer_is_500_and_never_runs_the_handler() {
    let ran = Arc::new(AtomicUsize::new(0));
    let (a, b, c) = (Arc::clone(&ran), Arc::clone(&ran), Arc::clone(&ran));
    let router = Router::new()
        .route(
            "/guarded",
            get(move || async move {
                a.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .route_layer(require_permission("admin"))
        .route(
            "/user",
            get(move |_: CurrentUser| async move {
                b.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .route(
            "/maybe",
            get(move |_: Option<CurrentUser>| async move {
                c.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .route("/auth", get(|_: Auth| async {}));
    let token = SessionToken::generate().unwrap().to_string();
    for path in ["/guarded", "/user", "/maybe", "/auth"] {
        let reply = send(&router, get_with_cookie(path, &token)).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(reply.body.contains("AuthLayer"), "{path}: {}", reply.body);
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

/// The network to the database goes silent (a failover, a dropped path: nothing closes, nothing
/// answers) while the pool's connections are open. Lookups on them run out of time and answer
/// `503`, and then the pool's new connections, over the path that works, answer again. (Before,
/// a connection whose lookup ran out of time went back to the pool through a check that waited
/// on the silent server for good: both places of the pool stayed taken, and every request
/// answered `503`.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_pool_recovers_from_connections_gone_silent(
    _: PgPoolOptions,
    options: sqlx::postgres::PgConnectOptions,
) {
    let (route, pool) = silenceable_pool(&options).await;
    let db = crate::common::Db::from(pool);
    let store = db.store();
    recovers_from_connections_gone_silent(route, db, store).await;
}

/// The same through a transaction pooler, where each request's statements run in a transaction
/// of their own. (Before, the transaction of a lookup that ran out of time went back to the
/// pool through the same unbounded check.) A pooler queues, so this runs the pooled mode's
/// statements straight against Postgres, where the silence is the route's alone.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_pool_through_a_pooler_recovers_from_connections_gone_silent(
    _: PgPoolOptions,
    options: sqlx::postgres::PgConnectOptions,
) {
    let (route, routed) = crate::common::wire::Route::to(&options).await;
    let pooled =
        axum_live_auth::through_transaction_pooler(PgPoolOptions::new().max_connections(2), routed);
    let direct = PgPoolOptions::new().connect_with(options).await.unwrap();
    recovers_from_connections_gone_silent(route, direct.into(), pooled.into()).await;
}

/// A pool of two connections through a route that can silence them, checked out without a
/// ping.
async fn silenceable_pool(
    options: &sqlx::postgres::PgConnectOptions,
) -> (crate::common::wire::Route, sqlx::PgPool) {
    let (route, routed) = crate::common::wire::Route::to(options).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .test_before_acquire(false)
        .connect_with(routed)
        .await
        .unwrap();
    (route, pool)
}

async fn recovers_from_connections_gone_silent(
    route: crate::common::wire::Route,
    db: crate::common::Db,
    store: AuthStore,
) {
    let app = crate::common::app_on(db, store, |b| {
        b.lookup_connections(0)
            .lookup_timeout(Duration::from_millis(300))
    })
    .await;
    let alice = app.login(ALICE, ALICE_PASSWORD).await;
    // Both of the pool's connections open, then silent.
    let (a, b) = tokio::join!(app.status("/me", &alice), app.status("/me", &alice));
    assert_eq!((a, b), (StatusCode::OK, StatusCode::OK));
    tokio::time::sleep(Duration::from_millis(100)).await;
    route.freeze();
    let started = Instant::now();
    let mut statuses = Vec::new();
    loop {
        let status = app.status("/me", &alice).await;
        statuses.push(status);
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never answered again: {statuses:?}"
        );
    }
}

/// Requests that give up while their statements wait on a network gone silent (their client
/// went away, or the app's own timeout dropped them, sooner than `lookup_timeout`) cost the pool
/// nothing: each connection is closed, not handed back through the pool's check, which waits on
/// the silent server for good. Logins (no `lookup_timeout` bounds their statements) and session
/// lookups; on a plain pool and on one through a transaction pooler. (Before, on the plain pool,
/// each such request kept one of the pool's places for good: logins waited out the pool's
/// acquire timeout, lookups answered `503`.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn requests_given_up_during_a_silent_network_cost_the_pool_nothing(
    _: PgPoolOptions,
    options: sqlx::postgres::PgConnectOptions,
) {
    for pooled in [false, true] {
        let (route, routed) = crate::common::wire::Route::to(&options).await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(2));
        let store: AuthStore = if pooled {
            axum_live_auth::through_transaction_pooler(pool, routed).into()
        } else {
            pool.test_before_acquire(false)
                .connect_with(routed)
                .await
                .unwrap()
                .into()
        };
        let direct = PgPoolOptions::new()
            .connect_with(options.clone())
            .await
            .unwrap();
        let app = crate::common::app_on(direct.into(), store, |b| {
            b.lookup_connections(0)
                .lookup_timeout(Duration::from_secs(5))
        })
        .await;
        let login = || async {
            send(&app.router, login_request(ALICE, ALICE_PASSWORD))
                .await
                .status
        };
        given_up_twice_then_recovered(
            &route,
            &format!("pooled {pooled}, login"),
            login,
            StatusCode::SEE_OTHER,
        )
        .await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let lookup = || app.status("/me", &token);
        given_up_twice_then_recovered(
            &route,
            &format!("pooled {pooled}, lookup"),
            lookup,
            StatusCode::OK,
        )
        .await;
    }
}

/// Opens both of the pool's connections with `request`, silences them, gives up two requests
/// on them, and waits (at most 10 s) until `request` is `answered` again.
async fn given_up_twice_then_recovered<F: Future<Output = StatusCode>>(
    route: &crate::common::wire::Route,
    what: &str,
    request: impl Fn() -> F,
    answered: StatusCode,
) {
    let (a, b) = tokio::join!(request(), request());
    assert_eq!((a, b), (answered, answered), "{what}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    route.freeze();
    let give_up = || tokio::time::timeout(Duration::from_millis(300), request());
    let (a, b) = tokio::join!(give_up(), give_up());
    assert!(
        a.is_err() && b.is_err(),
        "{what}: answered over a silent network"
    );
    let started = Instant::now();
    while tokio::time::timeout(Duration::from_secs(3), request()).await != Ok(answered) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: the pool never recovered"
        );
    }
}

/// The purge's statements have a bound of their own: a purge whose connection goes silent is
/// given up (its connection closed) within the interval, and a later one, on a new connection,
/// deletes what expired. (Before, the purge waited on the silent server until TCP gave up, about
/// 15 minutes on Linux's defaults, and nothing was purged meanwhile.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn the_purge_recovers_from_a_network_gone_silent(
    _: PgPoolOptions,
    options: sqlx::postgres::PgConnectOptions,
) {
    let (route, pool) = silenceable_pool(&options).await;
    let direct = PgPoolOptions::new().connect_with(options).await.unwrap();
    let app = crate::common::app_on(direct.into(), pool.into(), |b| {
        b.lookup_connections(0)
            .purge_expired_every(Duration::from_millis(300))
    })
    .await;
    let background = tokio::spawn(app.layer.background());
    let purged = || async {
        let started = Instant::now();
        while app.sessions().await > 0 {
            if started.elapsed() > Duration::from_secs(10) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    };
    // Both of the pool's connections open (the purge uses them), then silent.
    let (a, b) = tokio::join!(
        app.login(ALICE, ALICE_PASSWORD),
        app.login(ALICE, ALICE_PASSWORD)
    );
    for token in [&a, &b] {
        assert_eq!(app.status("/me", token).await, StatusCode::OK);
    }
    app.db.expire_idle().await;
    assert!(purged().await, "the task purges");
    app.login(ALICE, ALICE_PASSWORD).await;
    route.freeze();
    app.db.expire_idle().await;
    assert!(
        purged().await,
        "nothing purged since the network went silent"
    );
    background.abort();
}

/// The listener's `LISTEN` gets no answer (the path went silent right after connecting): the
/// listener gives up after the probe timeout and connects again, and the cache listens once
/// more. (Before: it waited on that answer until TCP gave up, some fifteen minutes, with the
/// cache bypassed and event streams refused all along.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_listen_that_gets_no_answer_is_tried_again(
    _: PgPoolOptions,
    options: sqlx::postgres::PgConnectOptions,
) {
    let (route, routed) = crate::common::wire::Route::to(&options).await;
    route.freeze_on(b"LISTEN");
    let listen_pool = PgPoolOptions::new().connect_lazy_with(routed);
    let pool = PgPoolOptions::new().connect_with(options).await.unwrap();
    let layer = AuthLayer::builder(pool)
        .allowed_origin(crate::common::ORIGIN)
        .principal_cache(axum_live_auth::CacheOptions::default())
        .listen_pool(listen_pool)
        .build()
        .unwrap();
    tokio::spawn(layer.background());
    let started = Instant::now();
    while !layer.cache_status().is_some_and(|s| s.listening) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the listener never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
