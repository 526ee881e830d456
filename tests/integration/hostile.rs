//! Statements per request, malformed cookies, and (Postgres only) round trips at the wire.

use axum::{body::Body, http::Request};
use http::{HeaderValue, StatusCode, header};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, COOKIE, Reply, TestApp, app, app_with, both_stores,
    counted_app, get_with_cookie, quiet_pool, send,
    wire::{RoundTrips, Seen},
};

/// Sends `request` and returns how many statements the app's store sent for it.
async fn statements(app: &TestApp, request: Request<Body>) -> (u64, Reply) {
    let before = app.statements();
    let reply = send(&app.router, request).await;
    (app.statements() - before, reply)
}

fn with_cookie_header(value: &[u8]) -> Request<Body> {
    let mut request = Request::get("/me").body(Body::empty()).unwrap();
    request
        .headers_mut()
        .append(header::COOKIE, HeaderValue::from_bytes(value).unwrap());
    request
}

fn wrong_secret(token: &str) -> String {
    let other = axum_live_auth::SessionToken::generate()
        .unwrap()
        .to_string();
    format!("{}{}", &token[..23], &other[23..])
}

both_stores! {
    async fn one_statement_with_a_token_and_none_without(db: Db) {
        let app = counted_app(db).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        warm_up(&app, &token).await;
        let anonymous = |path: &str| Request::get(path).body(Body::empty()).unwrap();

        let (n, reply) = statements(&app, anonymous("/public")).await;
        assert_eq!((n, reply.status), (0, StatusCode::OK), "no cookie: no query");
        let (n, reply) = statements(&app, anonymous("/me")).await;
        assert_eq!((n, reply.status), (0, StatusCode::UNAUTHORIZED));

        for path in ["/me", "/reports", "/maybe", "/public"] {
            let (n, reply) = statements(&app, get_with_cookie(path, &token)).await;
            assert_eq!((n, reply.status), (1, StatusCode::OK), "{path}: exactly one query");
        }
        let (n, reply) = statements(&app, get_with_cookie("/me", &wrong_secret(&token))).await;
        assert_eq!((n, reply.status), (1, StatusCode::UNAUTHORIZED), "a wrong secret: one lookup");

        // Once the touch interval has passed: the lookup plus one write, then one again.
        app.db.age_sessions(600, false).await;
        let (n, _) = statements(&app, get_with_cookie("/me", &token)).await;
        assert_eq!(n, 2, "lookup + touch");
        let (n, _) = statements(&app, get_with_cookie("/me", &token)).await;
        assert_eq!(n, 1, "no second touch within the interval");
    }

    async fn malformed_cookies_are_anonymous_without_a_query(db: Db) {
        let app = counted_app(db).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let other = app.login(ALICE, ALICE_PASSWORD).await;

        let long = "A".repeat(5000);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", format!("{COOKIE}=").into_bytes()),
            ("name only", COOKIE.as_bytes().to_vec()),
            ("too long", format!("{COOKIE}={token}{long}").into_bytes()),
            ("one short", format!("{COOKIE}={}", &token[..65]).into_bytes()),
            ("bad alphabet", format!("{COOKIE}={}+{}", &token[..10], &token[11..]).into_bytes()),
            ("padding", format!("{COOKIE}={}=", &token[..65]).into_bytes()),
            ("missing dot", format!("{COOKIE}={}A{}", &token[..22], &token[23..]).into_bytes()),
            ("quoted", format!("{COOKIE}=\"{token}\"").into_bytes()),
            ("sql", format!("{COOKIE}=' OR 1=1 --").into_bytes()),
            ("duplicate", format!("{COOKIE}={token}; {COOKIE}={other}").into_bytes()),
            ("duplicate same", format!("{COOKIE}={token}; {COOKIE}={token}").into_bytes()),
            (
                "non-utf8",
                [format!("{COOKIE}=").as_bytes(), b"\xff\xfe\xfd", &token.as_bytes()[3..]].concat(),
            ),
            (
                "oversized header",
                format!("{COOKIE}={token}; pad={}", "x".repeat(20_000)).into_bytes(),
            ),
        ];
        for (what, value) in cases {
            let (n, reply) = statements(&app, with_cookie_header(&value)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
            assert_eq!(n, 0, "{what}: no query");
        }
        // Duplicates in two header fields (as HTTP/2 sends them) are refused too.
        let mut split = Request::get("/me").body(Body::empty()).unwrap();
        for t in [&token, &other] {
            split
                .headers_mut()
                .append(header::COOKIE, format!("{COOKIE}={t}").parse().unwrap());
        }
        let (n, reply) = statements(&app, split).await;
        assert_eq!((n, reply.status), (0, StatusCode::UNAUTHORIZED));
        // ... while the cookie in a second header field, alone, is found.
        let mut second = Request::get("/me").body(Body::empty()).unwrap();
        second.headers_mut().append(header::COOKIE, "a=1".parse().unwrap());
        second
            .headers_mut()
            .append(header::COOKIE, format!("b=2; {COOKIE}={token}").parse().unwrap());
        assert_eq!(send(&app.router, second).await.status, StatusCode::OK);
    }

    async fn every_kind_of_invalid_session_gets_the_same_401(db: Db) {
        let app = app(db).await;
        let mut replies = vec![
            app.get("/me", "").await,
            app.get("/me", "garbage").await,
            app.get("/me", &axum_live_auth::SessionToken::generate().unwrap().to_string())
                .await,
        ];
        let expired = app.login(ALICE, ALICE_PASSWORD).await;
        app.db.expire_idle().await;
        replies.push(app.get("/me", &expired).await);
        let banned = app.login(BOB, BOB_PASSWORD).await;
        app.accounts.disable_user(app.bob).await.unwrap();
        replies.push(app.get("/me", &banned).await);
        for reply in &replies {
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            assert_eq!(reply.body, replies[0].body);
        }
    }
}

// --- Postgres only: round trips on the network ----------------------------------------------
//
// SQLite runs in the process, so there is no wire to count on; the store's statement count
// above covers it. On Postgres a proxy reads the protocol messages and also sees sqlx's pool
// pings, which no statement count can.

/// Sends `request` and returns the round trips it caused.
///
/// sqlx pings a connection when it goes back into the pool, in a task of its own after the
/// query: the count is read once every connection is idle again, so that ping is always
/// counted with the request that caused it.
async fn round_trips(trips: &RoundTrips, app: &TestApp, request: Request<Body>) -> (Seen, Reply) {
    settle(app).await;
    let before = trips.get();
    let reply = send(&app.router, request).await;
    settle(app).await;
    (trips.get() - before, reply)
}

async fn settle(app: &TestApp) {
    let pool = app.db.postgres();
    for _ in 0..5000 {
        if pool.num_idle() == pool.size() as usize {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("connections did not return to the pool");
}

/// sqlx prepares a statement on a connection's first use of it (one more round trip at the
/// wire) and caches it for the connection's life: counts are taken in that steady state.
async fn warm_up(app: &TestApp, token: &str) {
    for _ in 0..2 {
        app.db.age_sessions(600, false).await;
        assert_eq!(app.status("/me", token).await, StatusCode::OK);
    }
}

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn one_round_trip_per_authenticated_request_at_the_wire(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    // The lookup's connection is kept by the layer for the next request: no release ping.
    assert_round_trips(options, 1, 0).await;
}

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn without_kept_connections_sqlx_pings_on_release(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    assert_round_trips(options, 0, 1).await;
}

/// Round trips of each kind of request, with `kept` lookup connections: no cookie or a malformed
/// one, none; a lookup, one statement and `release_pings`; a due touch, two statements sharing
/// one checkout.
async fn assert_round_trips(options: PgConnectOptions, kept: usize, release_pings: usize) {
    let (trips, proxied) = RoundTrips::proxy(&options).await;
    let app = app_with(quiet_pool(proxied).await, |b| b.lookup_connections(kept)).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    warm_up(&app, &token).await;

    // One statement on the request path; no ping when the connection leaves the pool; sqlx's
    // own ping when it goes back, unless the layer keeps it.
    let one = Seen {
        statements: 1,
        pings: release_pings,
    };
    let none = Seen {
        statements: 0,
        pings: 0,
    };
    let (n, _) = round_trips(
        &trips,
        &app,
        Request::get("/public").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(n, none, "no cookie: no round trip");
    let (n, _) = round_trips(&trips, &app, with_cookie_header(b"__Host-sid=garbage")).await;
    assert_eq!(n, none, "malformed cookie: no round trip");
    for path in ["/me", "/reports", "/maybe"] {
        let (n, reply) = round_trips(&trips, &app, get_with_cookie(path, &token)).await;
        assert_eq!((n, reply.status), (one, StatusCode::OK), "{path}");
    }
    // Refused lookups keep their connection too: unknown tokens cannot churn connections.
    let (n, reply) = round_trips(&trips, &app, get_with_cookie("/me", &wrong_secret(&token))).await;
    assert_eq!((n, reply.status), (one, StatusCode::UNAUTHORIZED));
    let unknown = axum_live_auth::SessionToken::generate()
        .unwrap()
        .to_string();
    let (n, reply) = round_trips(&trips, &app, get_with_cookie("/me", &unknown)).await;
    assert_eq!((n, reply.status), (one, StatusCode::UNAUTHORIZED));

    // A due touch: lookup and write share one checkout.
    settle(&app).await;
    app.db.age_sessions(600, false).await;
    let (n, _) = round_trips(&trips, &app, get_with_cookie("/me", &token)).await;
    assert_eq!(
        n,
        Seen {
            statements: 2,
            pings: release_pings
        },
        "lookup + touch"
    );
    let (n, _) = round_trips(&trips, &app, get_with_cookie("/me", &token)).await;
    assert_eq!(n, one, "no second touch within the interval");
    app.db.close().await;
}

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn the_proxy_sees_pool_pings(_: PgPoolOptions, options: PgConnectOptions) {
    // The counter would be worthless if it missed sqlx's ping on checkout: prove it sees it.
    let (trips, proxied) = RoundTrips::proxy(&options).await;
    let pinging = PgPoolOptions::new()
        .test_before_acquire(true)
        .max_connections(1)
        .connect_with(proxied)
        .await
        .unwrap();
    let app = app_with(pinging, |b| b.lookup_connections(0)).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    warm_up(&app, &token).await;
    let (n, _) = round_trips(&trips, &app, get_with_cookie("/me", &token)).await;
    assert_eq!(
        n,
        Seen {
            statements: 1,
            pings: 2
        },
        "checkout ping + lookup + release ping"
    );
    app.db.close().await;
}
