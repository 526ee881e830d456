//! Round trips per request, counted at the wire, and malformed cookies.

use crate::common::Reply;
use axum::{body::Body, http::Request};
use http::{HeaderValue, StatusCode, header};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    ALICE, ALICE_PASSWORD, COOKIE, TestApp, app, get_with_cookie, quiet_pool, secs, send,
    wire::{RoundTrips, Seen},
};

/// Runs `request` and returns the round trips it caused and its reply.
///
/// sqlx pings a connection when it goes back into the pool, in a task of its own after the
/// query: the count is read once every connection is idle again, so that ping is always
/// counted with the request that caused it.
async fn counted(trips: &RoundTrips, app: &TestApp, request: Request<Body>) -> (Seen, Reply) {
    settle(app).await;
    let before = trips.get();
    let reply = send(&app.router, request).await;
    settle(app).await;
    (trips.get() - before, reply)
}

async fn settle(app: &TestApp) {
    for _ in 0..5000 {
        if app.pool.num_idle() == app.pool.size() as usize {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("connections did not return to the pool");
}

/// One statement on the request path; no ping when the connection leaves the pool; sqlx's own
/// ping when it goes back.
const ONE_QUERY: Seen = Seen {
    statements: 1,
    pings: 1,
};
const NO_QUERY: Seen = Seen {
    statements: 0,
    pings: 0,
};

/// sqlx prepares a statement on a connection's first use of it (one more round trip) and
/// caches it for the connection's life: counts are taken in that steady state.
async fn warm_up(app: &TestApp, token: &str) {
    assert_eq!(app.status("/me", token).await, StatusCode::OK);
}

fn with_cookie_header(value: &[u8]) -> Request<Body> {
    let mut request = Request::get("/me").body(Body::empty()).unwrap();
    request
        .headers_mut()
        .append(header::COOKIE, HeaderValue::from_bytes(value).unwrap());
    request
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn one_round_trip_with_a_token_and_none_without(_: PgPoolOptions, options: PgConnectOptions) {
    let (trips, proxied) = RoundTrips::proxy(&options).await;
    let app = app(quiet_pool(proxied).await).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    warm_up(&app, &token).await;

    let (n, reply) = counted(
        &trips,
        &app,
        Request::get("/public").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        (n, reply.status),
        (NO_QUERY, StatusCode::OK),
        "no cookie: no query"
    );
    let (n, reply) = counted(
        &trips,
        &app,
        Request::get("/me").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((n, reply.status), (NO_QUERY, StatusCode::UNAUTHORIZED));

    for path in ["/me", "/reports", "/maybe", "/public"] {
        let request = get_with_cookie(path, &token);
        let (n, reply) = counted(&trips, &app, request).await;
        assert_eq!(
            (n, reply.status),
            (ONE_QUERY, StatusCode::OK),
            "{path}: exactly one query"
        );
    }
    // A wrong secret for a real id: one lookup, nothing else.
    let wrong = format!(
        "{}{}",
        &token[..23],
        &axum_live_auth::SessionToken::generate()
            .unwrap()
            .to_string()[23..]
    );
    let (n, reply) = counted(&trips, &app, get_with_cookie("/me", &wrong)).await;
    assert_eq!((n, reply.status), (ONE_QUERY, StatusCode::UNAUTHORIZED));

    // Once the touch interval has passed: the lookup plus one write on the same connection,
    // then one statement again. The first touch prepares its statement: count the second.
    for round in 0..2 {
        settle(&app).await;
        sqlx::query("UPDATE auth_sessions SET last_seen_at = last_seen_at - $1")
            .bind(secs(600))
            .execute(&app.pool)
            .await
            .unwrap();
        let (n, _) = counted(&trips, &app, get_with_cookie("/me", &token)).await;
        if round == 1 {
            assert_eq!(
                n,
                Seen {
                    statements: 2,
                    pings: 1
                },
                "lookup + touch"
            );
        }
    }
    let (n, _) = counted(&trips, &app, get_with_cookie("/me", &token)).await;
    assert_eq!(n, ONE_QUERY, "no second touch within the interval");
    app.pool.close().await;
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn the_proxy_sees_pool_pings(_: PgPoolOptions, options: PgConnectOptions) {
    // The counter would be worthless if it missed sqlx's ping on checkout: prove it sees it.
    let (trips, proxied) = RoundTrips::proxy(&options).await;
    let pinging = PgPoolOptions::new()
        .test_before_acquire(true)
        .max_connections(1)
        .connect_with(proxied)
        .await
        .unwrap();
    let app = app(pinging).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    warm_up(&app, &token).await;
    let (n, _) = counted(&trips, &app, get_with_cookie("/me", &token)).await;
    assert_eq!(
        n,
        Seen {
            statements: 1,
            pings: 2
        },
        "checkout ping + lookup + release ping"
    );
    app.pool.close().await;
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn malformed_cookies_are_anonymous_without_a_query(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (trips, proxied) = RoundTrips::proxy(&options).await;
    let app = app(quiet_pool(proxied).await).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    let other = app.login(ALICE, ALICE_PASSWORD).await;

    let long = "A".repeat(5000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", format!("{COOKIE}=").into_bytes()),
        ("name only", COOKIE.as_bytes().to_vec()),
        ("too long", format!("{COOKIE}={token}{long}").into_bytes()),
        (
            "one short",
            format!("{COOKIE}={}", &token[..65]).into_bytes(),
        ),
        (
            "bad alphabet",
            format!("{COOKIE}={}+{}", &token[..10], &token[11..]).into_bytes(),
        ),
        (
            "padding",
            format!("{COOKIE}={}=", &token[..65]).into_bytes(),
        ),
        (
            "missing dot",
            format!("{COOKIE}={}A{}", &token[..22], &token[23..]).into_bytes(),
        ),
        ("quoted", format!("{COOKIE}=\"{token}\"").into_bytes()),
        ("sql", format!("{COOKIE}=' OR 1=1 --").into_bytes()),
        (
            "duplicate",
            format!("{COOKIE}={token}; {COOKIE}={other}").into_bytes(),
        ),
        (
            "duplicate same",
            format!("{COOKIE}={token}; {COOKIE}={token}").into_bytes(),
        ),
        (
            "non-utf8",
            [
                format!("{COOKIE}=").as_bytes(),
                b"\xff\xfe\xfd",
                &token.as_bytes()[3..],
            ]
            .concat(),
        ),
        (
            "oversized header",
            format!("{COOKIE}={token}; pad={}", "x".repeat(20_000)).into_bytes(),
        ),
    ];
    for (what, value) in cases {
        let (n, reply) = counted(&trips, &app, with_cookie_header(&value)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(n, NO_QUERY, "{what}: no query");
    }
    // Duplicates in two header fields (as HTTP/2 sends them) are refused too.
    let mut split = Request::get("/me").body(Body::empty()).unwrap();
    for t in [&token, &other] {
        split
            .headers_mut()
            .append(header::COOKIE, format!("{COOKIE}={t}").parse().unwrap());
    }
    let (n, reply) = counted(&trips, &app, split).await;
    assert_eq!((n, reply.status), (NO_QUERY, StatusCode::UNAUTHORIZED));
    // ... while the cookie in a second header field, alone, is found.
    let mut second = Request::get("/me").body(Body::empty()).unwrap();
    second
        .headers_mut()
        .append(header::COOKIE, "a=1".parse().unwrap());
    second.headers_mut().append(
        header::COOKIE,
        format!("b=2; {COOKIE}={token}").parse().unwrap(),
    );
    assert_eq!(send(&app.router, second).await.status, StatusCode::OK);
    app.pool.close().await;
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn every_kind_of_invalid_session_gets_the_same_401(pool: sqlx::PgPool) {
    let app = app(pool).await;
    let mut bodies = Vec::new();
    bodies.push(app.get("/me", "").await);
    bodies.push(app.get("/me", "garbage").await);
    bodies.push(
        app.get(
            "/me",
            &axum_live_auth::SessionToken::generate()
                .unwrap()
                .to_string(),
        )
        .await,
    );
    let expired = app.login(ALICE, ALICE_PASSWORD).await;
    sqlx::query("UPDATE auth_sessions SET idle_expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    bodies.push(app.get("/me", &expired).await);
    let banned = app
        .login(crate::common::BOB, crate::common::BOB_PASSWORD)
        .await;
    app.accounts.disable_user(app.bob).await.unwrap();
    bodies.push(app.get("/me", &banned).await);
    for reply in &bodies {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.body, bodies[0].body);
    }
}
