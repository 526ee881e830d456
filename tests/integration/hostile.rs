//! Round trips per request, counted at the wire, and malformed cookies.

use axum::{body::Body, http::Request};
use http::{HeaderValue, StatusCode, header};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    ALICE, ALICE_PASSWORD, COOKIE, app, quiet_pool, secs, send, wire::RoundTrips,
};

/// Runs `request` and returns the round trips it made and its reply.
async fn counted(
    trips: &RoundTrips,
    router: &axum::Router,
    request: Request<Body>,
) -> (usize, crate::common::Reply) {
    let before = trips.get();
    let reply = send(router, request).await;
    (trips.get() - before, reply)
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

    let (n, reply) = counted(&trips, &app.router, Request::get("/public").body(Body::empty()).unwrap()).await;
    assert_eq!((n, reply.status), (0, StatusCode::OK), "no cookie: no query");
    let (n, reply) = counted(&trips, &app.router, Request::get("/me").body(Body::empty()).unwrap()).await;
    assert_eq!((n, reply.status), (0, StatusCode::UNAUTHORIZED));

    for path in ["/me", "/reports", "/maybe", "/public"] {
        let request = crate::common::get_with_cookie(path, &token);
        let (n, reply) = counted(&trips, &app.router, request).await;
        assert_eq!((n, reply.status), (1, StatusCode::OK), "{path}: exactly one round trip");
    }
    // A wrong secret for a real id: one lookup, nothing else.
    let wrong = format!("{}{}", &token[..23], &axum_live_auth::SessionToken::generate().unwrap().to_string()[23..]);
    let (n, reply) = counted(&trips, &app.router, crate::common::get_with_cookie("/me", &wrong)).await;
    assert_eq!((n, reply.status), (1, StatusCode::UNAUTHORIZED));

    // Once the touch interval has passed: the lookup plus one write, then one again.
    sqlx::query("UPDATE auth_sessions SET last_seen_at = last_seen_at - $1")
        .bind(secs(600))
        .execute(&app.pool)
        .await
        .unwrap();
    let (n, _) = counted(&trips, &app.router, crate::common::get_with_cookie("/me", &token)).await;
    assert_eq!(n, 2, "lookup + touch");
    let (n, _) = counted(&trips, &app.router, crate::common::get_with_cookie("/me", &token)).await;
    assert_eq!(n, 1, "no second touch within the interval");
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
    let (n, _) = counted(&trips, &app.router, crate::common::get_with_cookie("/me", &token)).await;
    assert_eq!(n, 2, "ping + lookup");
    app.pool.close().await;
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn malformed_cookies_are_anonymous_without_a_query(_: PgPoolOptions, options: PgConnectOptions) {
    let (trips, proxied) = RoundTrips::proxy(&options).await;
    let app = app(quiet_pool(proxied).await).await;
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
        ("non-utf8", [format!("{COOKIE}=").as_bytes(), b"\xff\xfe\xfd", &token.as_bytes()[3..]].concat()),
        ("oversized header", format!("{COOKIE}={token}; pad={}", "x".repeat(20_000)).into_bytes()),
    ];
    for (what, value) in cases {
        let (n, reply) = counted(&trips, &app.router, with_cookie_header(&value)).await;
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
    let (n, reply) = counted(&trips, &app.router, split).await;
    assert_eq!((n, reply.status), (0, StatusCode::UNAUTHORIZED));
    // ... while the cookie in a second header field, alone, is found.
    let mut second = Request::get("/me").body(Body::empty()).unwrap();
    second.headers_mut().append(header::COOKIE, "a=1".parse().unwrap());
    second
        .headers_mut()
        .append(header::COOKIE, format!("b=2; {COOKIE}={token}").parse().unwrap());
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
        app.get("/me", &axum_live_auth::SessionToken::generate().unwrap().to_string())
            .await,
    );
    let expired = app.login(ALICE, ALICE_PASSWORD).await;
    sqlx::query("UPDATE auth_sessions SET idle_expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    bodies.push(app.get("/me", &expired).await);
    let banned = app.login(crate::common::BOB, crate::common::BOB_PASSWORD).await;
    app.accounts.disable_user(app.bob).await.unwrap();
    bodies.push(app.get("/me", &banned).await);
    for reply in &bodies {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.body, bodies[0].body);
    }
}
