//! The principal cache across two nodes on one Postgres (LISTEN/NOTIFY is Postgres only).

use std::time::{Duration, Instant};

use axum_live_auth::CacheOptions;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::StatusCode;
use sha2::{Digest as _, Sha256};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, Db, ORIGIN, TestApp, app_with, get_with_cookie,
    node_pool, router, send,
    statements::{Counter, counted},
    wait_listening,
};

/// A long maximum age, so that only notifications can explain a refusal within the tests'
/// bounds.
fn options() -> CacheOptions {
    CacheOptions::default().max_age(Duration::from_secs(600))
}

/// Node A (with the test users) and node B, each with its own pool, layer and cache.
async fn two_nodes(options: &PgConnectOptions) -> (TestApp, Node) {
    let a = app_with(node_pool(options).await, |b| {
        b.principal_cache(self::options())
    })
    .await;
    tokio::spawn(a.layer.background());
    let b = Node::new(node_pool(options).await, |b| b).await;
    wait_listening(|| a.layer.cache_status().unwrap()).await;
    wait_listening(|| b.status()).await;
    (a, b)
}

/// A second node: the same routes on its own layer.
struct Node {
    router: axum::Router,
    layer: axum_live_auth::AuthLayer,
    counter: Counter,
}

impl Node {
    async fn new(
        pool: PgPool,
        configure: impl FnOnce(axum_live_auth::AuthLayerBuilder) -> axum_live_auth::AuthLayerBuilder,
    ) -> Self {
        let (db, counter) = counted(&Db::Postgres(pool)).await;
        let store = db.store();
        let layer = configure(
            axum_live_auth::AuthLayer::builder(store.clone())
                .allowed_origin(ORIGIN)
                .principal_cache(options()),
        )
        .build()
        .unwrap();
        let runs = std::sync::Arc::default();
        let router = router(axum_live_auth::Accounts::new(store), runs).layer(layer.clone());
        tokio::spawn(layer.background());
        Self {
            router,
            layer,
            counter,
        }
    }

    fn status(&self) -> axum_live_auth::CacheStatus {
        self.layer.cache_status().unwrap()
    }

    fn statements(&self) -> u64 {
        self.counter.get()
    }

    async fn status_of(&self, path: &str, token: &str) -> StatusCode {
        send(&self.router, get_with_cookie(path, token))
            .await
            .status
    }

    /// How long until `path` with `token` answers `expected` on this node (polled), at most 3 s.
    async fn until(&self, path: &str, token: &str, expected: StatusCode) -> Duration {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if self.status_of(path, token).await == expected {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{path} never answered {expected} on node B");
    }
}

/// Node B must refuse within this after the change committed: far below the entries' maximum
/// age (10 minutes here), so only a notification can explain it.
const BOUND: Duration = Duration::from_secs(1);

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn changes_through_node_a_are_refused_on_node_b(_: PgPoolOptions, options: PgConnectOptions) {
    let (a, b) = two_nodes(&options).await;
    let bob = a.login(BOB, BOB_PASSWORD).await;

    // B caches: after the first request, none reaches the database.
    assert_eq!(b.status_of("/reports", &bob).await, StatusCode::OK);
    let before = b.statements();
    for _ in 0..20 {
        assert_eq!(b.status_of("/reports", &bob).await, StatusCode::OK);
    }
    assert_eq!(b.statements(), before, "served from memory");
    assert!(b.status().hits >= 20);

    // A permission removed through A: B answers 403 within the bound.
    a.accounts
        .revoke_permission(a.bob, "reports:read")
        .await
        .unwrap();
    assert!(b.until("/reports", &bob, StatusCode::FORBIDDEN).await < BOUND);
    a.accounts
        .grant_permission(a.bob, "reports:read")
        .await
        .unwrap();
    assert!(b.until("/reports", &bob, StatusCode::OK).await < BOUND);

    // The user disabled through A.
    let alice = a.login(ALICE, ALICE_PASSWORD).await;
    assert_eq!(b.status_of("/me", &alice).await, StatusCode::OK);
    a.accounts.disable_user(a.alice).await.unwrap();
    assert!(b.until("/me", &alice, StatusCode::UNAUTHORIZED).await < BOUND);

    // The session revoked through A.
    assert_eq!(b.status_of("/me", &bob).await, StatusCode::OK);
    let id = bob.split_once('.').unwrap().0;
    assert!(
        a.accounts
            .revoke_session(a.bob, &axum_live_auth::SessionId::parse(id).unwrap())
            .await
            .unwrap()
    );
    assert!(b.until("/me", &bob, StatusCode::UNAUTHORIZED).await < BOUND);
}

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_change_made_by_hand_in_sql_reaches_the_cache(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (a, b) = two_nodes(&options).await;
    let bob = a.login(BOB, BOB_PASSWORD).await;
    let alice = a.login(ALICE, ALICE_PASSWORD).await;
    for token in [&bob, &alice] {
        assert_eq!(b.status_of("/reports", token).await, StatusCode::OK);
    }
    a.db.exec("DELETE FROM auth_user_permissions WHERE permission = 'reports:read'")
        .await;
    assert!(b.until("/reports", &bob, StatusCode::FORBIDDEN).await < BOUND);
    // A role change reaches every member through their effective permissions.
    a.db.exec("DELETE FROM auth_role_permissions WHERE permission = 'reports:read'")
        .await;
    assert!(b.until("/reports", &alice, StatusCode::FORBIDDEN).await < BOUND);
    a.db.exec("UPDATE auth_users SET disabled_at = now() WHERE username = 'alice'")
        .await;
    assert!(b.until("/me", &alice, StatusCode::UNAUTHORIZED).await < BOUND);
    a.db.exec("UPDATE auth_sessions SET expires_at = now() - interval '1 second', idle_expires_at = now() - interval '1 second'").await;
    assert!(b.until("/me", &bob, StatusCode::UNAUTHORIZED).await < BOUND);
    // A TRUNCATE by an operator empties every cache.
    let bob = a.login(BOB, BOB_PASSWORD).await;
    assert_eq!(b.status_of("/me", &bob).await, StatusCode::OK);
    a.db.exec("TRUNCATE auth_sessions").await;
    assert!(b.until("/me", &bob, StatusCode::UNAUTHORIZED).await < BOUND);
}

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_lost_listener_means_database_lookups_until_it_listens_again(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (a, b) = two_nodes(&options).await;
    let bob = a.login(BOB, BOB_PASSWORD).await;
    let alice = a.login(ALICE, ALICE_PASSWORD).await;
    for token in [&bob, &alice] {
        assert_eq!(b.status_of("/me", token).await, StatusCode::OK);
    }
    assert!(b.status().entries >= 2);

    // Kill both nodes' listener connections (only this test's: tests run side by side).
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'axum-live-auth-listener' AND datname = current_database()) t",
    )
    .fetch_one(a.db.postgres())
    .await
    .unwrap();
    assert_eq!(killed, 2, "both listeners found");
    for _ in 0..500 {
        if !b.status().listening {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Bypassed and empty at once: each request reads the database.
    let status = b.status();
    assert!(!status.listening || status.entries == 0, "{status:?}");
    // A change made while B cannot hear it: B must not serve the cached session.
    a.db.exec("DELETE FROM auth_sessions WHERE user_id = (SELECT id FROM auth_users WHERE username = 'bob')").await;
    assert_eq!(b.status_of("/me", &bob).await, StatusCode::UNAUTHORIZED);

    // B listens again and caches again.
    wait_listening(|| b.status()).await;
    assert_eq!(b.status_of("/me", &alice).await, StatusCode::OK);
    let before = b.statements();
    assert_eq!(b.status_of("/me", &alice).await, StatusCode::OK);
    assert_eq!(b.statements(), before, "cached again");
    // And hears notifications again.
    a.accounts.disable_user(a.alice).await.unwrap();
    assert!(b.until("/me", &alice, StatusCode::UNAUTHORIZED).await < BOUND);
}

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn memory_stays_within_the_bound_with_many_sessions(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = node_pool(&options).await;
    let b = Node::new(pool.clone(), |builder| {
        builder.principal_cache(
            CacheOptions::default()
                .max_entries(100)
                .max_bytes(64 * 1024),
        )
    })
    .await;
    wait_listening(|| b.status()).await;
    let user: i64 =
        sqlx::query_scalar("INSERT INTO auth_users (username) VALUES ('many') RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    // 1000 sessions, made directly in the table: a token is an id and a secret whose
    // SHA-256 is stored.
    let mut tokens = Vec::new();
    for i in 0..1000u32 {
        let id = URL_SAFE_NO_PAD.encode([&i.to_be_bytes()[..], &[0u8; 12]].concat());
        let secret = [7u8; 32];
        sqlx::query(
            "INSERT INTO auth_sessions (id, secret_hash, user_id, idle_expires_at, expires_at)
             VALUES ($1, $2, $3, now() + interval '1 hour', now() + interval '2 hours')",
        )
        .bind(&id)
        .bind(Sha256::digest(secret).to_vec())
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
        tokens.push(format!("{id}.{}", URL_SAFE_NO_PAD.encode(secret)));
    }
    for token in &tokens {
        assert_eq!(b.status_of("/me", token).await, StatusCode::OK);
    }
    let status = b.status();
    assert!(status.entries <= 100, "{status:?}");
    assert!(status.weight_bytes <= 64 * 1024, "{status:?}");
    assert!(status.entries > 0, "{status:?}");
}

/// A cached session ends at its absolute deadline, with no notification and well within the
/// entry's `max_age`, also after a touch of the entry (which moves its idle deadline, never
/// past the absolute one). (With the entry's absolute check removed and its touch not capped:
/// `200`.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_cached_session_ends_at_its_absolute_deadline(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = node_pool(&options).await;
    let absolute = |builder: axum_live_auth::AuthLayerBuilder| {
        builder
            .absolute_timeout(Duration::from_secs(3))
            .touch_interval(Duration::from_secs(1))
    };
    let b = Node::new(pool.clone(), absolute).await;
    wait_listening(|| b.status()).await;
    let a = app_with(pool, absolute).await;
    let token = a.login(BOB, BOB_PASSWORD).await;
    assert_eq!(b.status_of("/me", &token).await, StatusCode::OK);
    let before = b.statements();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(b.status_of("/me", &token).await, StatusCode::OK);
    assert_eq!(b.statements(), before + 1, "cached, and touched once");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(b.status_of("/me", &token).await, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn cached_sessions_still_expire_and_are_still_touched(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = node_pool(&options).await;
    let b = Node::new(pool.clone(), |builder| {
        builder
            .idle_timeout(Duration::from_secs(5))
            .touch_interval(Duration::from_secs(2))
    })
    .await;
    wait_listening(|| b.status()).await;
    // Node A with the same timeouts: a touch by B then never moves the deadline earlier (which
    // would rightly notify and evict).
    let a = app_with(pool, |builder| {
        builder
            .idle_timeout(Duration::from_secs(5))
            .touch_interval(Duration::from_secs(2))
    })
    .await;
    let token = a.login(BOB, BOB_PASSWORD).await;
    assert_eq!(b.status_of("/me", &token).await, StatusCode::OK);
    let before = b.statements();
    assert_eq!(b.status_of("/me", &token).await, StatusCode::OK);
    assert_eq!(b.statements(), before, "cached");

    // After the touch interval the cached entry writes the idle deadline back, once.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (seen_before, ..) = a.db.deadlines().await;
    assert_eq!(b.status_of("/me", &token).await, StatusCode::OK);
    assert_eq!(b.statements(), before + 1, "one touch write");
    let (seen_after, ..) = a.db.deadlines().await;
    assert!(seen_after > seen_before);
    assert_eq!(b.status_of("/me", &token).await, StatusCode::OK);
    assert_eq!(b.statements(), before + 1, "not twice");

    // Unused for longer than the idle timeout, the cached session has expired.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    assert_eq!(b.status_of("/me", &token).await, StatusCode::UNAUTHORIZED);
}

/// The listener's connections of this test's database.
async fn listeners(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE application_name = 'axum-live-auth-listener' AND datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until the count of listener connections is `expected` (at most 5 s).
async fn until_listeners(pool: &PgPool, expected: i64) {
    for _ in 0..250 {
        if listeners(pool).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("listener connections never became {expected}");
}

/// `build()` starts nothing; the background work holds the one listener connection, and
/// dropping the layer (or aborting the task) releases it.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn the_listener_connection_lives_exactly_as_long_as_the_layer(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = node_pool(&options).await;
    let build = || {
        axum_live_auth::AuthLayer::builder(pool.clone())
            .allowed_origin(ORIGIN)
            .principal_cache(self::options())
            .build()
            .unwrap()
    };
    let layer = build();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(listeners(&pool).await, 0, "build() connects nothing");
    let background = tokio::spawn(layer.background());
    wait_listening(|| layer.cache_status().unwrap()).await;
    until_listeners(&pool, 1).await;
    drop(layer);
    tokio::time::timeout(Duration::from_secs(5), background)
        .await
        .expect("the background work ends with the layer")
        .unwrap();
    until_listeners(&pool, 0).await;

    // Aborting the task releases it too.
    let layer = build();
    let background = tokio::spawn(layer.background());
    wait_listening(|| layer.cache_status().unwrap()).await;
    until_listeners(&pool, 1).await;
    background.abort();
    until_listeners(&pool, 0).await;
}

/// The node that makes a change through its `Accounts` refuses on its very next request, without
/// waiting for its own notification to come back: here it never comes, since the listener's
/// connection has just gone silent and the node does not know yet. (Before, the node served
/// the cached principal and the cached scoped answer until the probe found the silence out.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn the_node_that_makes_a_change_refuses_at_once(_: PgPoolOptions, options: PgConnectOptions) {
    let (route, through_route) = crate::common::wire::Route::to(&options).await;
    let listen = PgPoolOptions::new().connect_lazy_with(through_route);
    let app = app_with(node_pool(&options).await, |b| {
        b.principal_cache(self::options()).listen_pool(listen)
    })
    .await;
    app.listen().await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let project: axum_live_auth::Resource = "project:42".parse().unwrap();
    app.accounts
        .grant_permission_on(app.bob, "project:read", &project)
        .await
        .unwrap();
    app.until("/projects/42", &bob, StatusCode::OK).await;
    for path in ["/reports", "/projects/42"] {
        for _ in 0..2 {
            assert_eq!(app.status(path, &bob).await, StatusCode::OK, "{path}");
        }
    }
    let hits = app.layer.cache_status().unwrap().hits;
    assert_eq!(app.status("/reports", &bob).await, StatusCode::OK);
    assert!(
        app.layer.cache_status().unwrap().hits > hits,
        "served from the cache"
    );

    route.freeze();
    app.accounts
        .revoke_permission(app.bob, "reports:read")
        .await
        .unwrap();
    assert_eq!(app.status("/reports", &bob).await, StatusCode::FORBIDDEN);
    app.accounts
        .revoke_permission_on(app.bob, "project:read", &project)
        .await
        .unwrap();
    assert_eq!(
        app.status("/projects/42", &bob).await,
        StatusCode::FORBIDDEN
    );
    app.accounts.create_role("viewer").await.unwrap();
    app.accounts
        .grant_role_permission("viewer", "reports:read")
        .await
        .unwrap();
    app.accounts.assign_role(app.bob, "viewer").await.unwrap();
    assert_eq!(app.status("/reports", &bob).await, StatusCode::OK);
    app.accounts
        .revoke_role_permission("viewer", "reports:read")
        .await
        .unwrap();
    assert_eq!(app.status("/reports", &bob).await, StatusCode::FORBIDDEN);
    app.accounts.disable_user(app.bob).await.unwrap();
    assert_eq!(app.status("/me", &bob).await, StatusCode::UNAUTHORIZED);
    // The silent connection holds its server session open: end it, so the database can go.
    app.db
        .exec(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name = 'axum-live-auth-listener' AND datname = current_database()",
        )
        .await;
}

/// A listener whose connection goes silent without closing (a half-open socket, a blackholed
/// path: no error ever reaches it) is found out by its own probes: the node stops trusting its
/// cache, so a ban it could not hear of is enforced within seconds, not after the entries'
/// maximum age (ten minutes here); and it listens again on a new connection.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_listener_connection_gone_silent_is_found_out(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (route, through_route) = crate::common::wire::Route::to(&options).await;
    let listen = PgPoolOptions::new().connect_lazy_with(through_route);
    let app = app_with(node_pool(&options).await, |b| {
        b.principal_cache(CacheOptions::default().max_age(Duration::from_secs(600)))
            .listen_pool(listen)
    })
    .await;
    app.listen().await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    assert_eq!(app.status("/me", &bob).await, StatusCode::OK);
    assert_eq!(app.status("/me", &bob).await, StatusCode::OK);
    assert!(
        app.layer.cache_status().unwrap().hits >= 1,
        "served from the cache"
    );

    route.freeze();
    app.db
        .exec("UPDATE auth_users SET disabled_at = now() WHERE username = 'bob'")
        .await;
    let start = Instant::now();
    while app.status("/me", &bob).await == StatusCode::OK {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the silent listener was never found out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The ban could not be heard, and the entry had ten minutes to live: the database was asked
    // because the node stopped trusting its listener. (Whether it already listens again on a
    // new connection by now is a race, which failed this test once in a full run: the next loop
    // waits for that.)
    // It comes back on a new connection (new ones go through), although the silent one still
    // hangs: that one does not hold the next one's place.
    let start = Instant::now();
    while !app.layer.cache_status().unwrap().listening {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the listener never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The silent connection holds its server session open: end it, so the database can go.
    app.db
        .exec(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name = 'axum-live-auth-listener' AND datname = current_database()",
        )
        .await;
}

/// Aborting the background task, as its docs allow, leaves nothing trusting a listener that no
/// longer runs: the cache is bypassed and event streams are refused, as when the listener's
/// connection is lost.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn aborting_the_background_work_stops_trusting_its_listener(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let app = app_with(node_pool(&options).await, |b| {
        b.principal_cache(self::options())
    })
    .await;
    let background = tokio::spawn(app.layer.background());
    wait_listening(|| app.layer.cache_status().unwrap()).await;
    background.abort();
    assert!(background.await.unwrap_err().is_cancelled());
    assert!(!app.layer.cache_status().unwrap().listening);
    let bob = app.login(BOB, BOB_PASSWORD).await;
    // A stream that opened would not end: bounded, a timeout counts as opened.
    let answer =
        tokio::time::timeout(Duration::from_secs(5), app.status("/account/events", &bob)).await;
    assert_eq!(answer.ok(), Some(StatusCode::SERVICE_UNAVAILABLE));
}

/// A request pool held whole (a burst, slow queries) neither delays the notifications the
/// listener receives nor drops it: its probes go out on a connection of their own. So a ban is
/// enforced at once on the node's cached sessions, and the node keeps listening. (Before: the
/// probe waited for the pool, notifications waited for the probe, the banned user's cached
/// session answered `200`, and then the listener was dropped.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_busy_request_pool_delays_no_notification(_: PgPoolOptions, options: PgConnectOptions) {
    let pool = node_pool(&options).await;
    let requests = PgPoolOptions::new()
        .max_connections(2)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .unwrap();
    let app = crate::common::app_on(Db::from(pool), requests.clone().into(), |b| {
        b.principal_cache(self::options())
            .lookup_connections(0)
            .lookup_timeout(Duration::from_millis(300))
    })
    .await;
    app.listen().await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    for _ in 0..2 {
        assert_eq!(app.status("/me", &bob).await, StatusCode::OK);
    }
    let held = (
        requests.acquire().await.unwrap(),
        requests.acquire().await.unwrap(),
    );
    // A probe falls due while the pool is held.
    tokio::time::sleep(Duration::from_secs(6)).await;
    app.db
        .exec("UPDATE auth_users SET disabled_at = now() WHERE username = 'bob'")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(
        app.status("/me", &bob).await,
        StatusCode::OK,
        "a banned user served from cache"
    );
    assert!(
        app.layer.cache_status().unwrap().listening,
        "the listener was dropped"
    );
    drop(held);
    assert_eq!(app.status("/me", &bob).await, StatusCode::UNAUTHORIZED);
}
