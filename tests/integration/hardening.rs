//! The edges: CSRF, bearer tokens, login throttling, invalid-token throttling, hostile input.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode, header},
};

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, COOKIE, ORIGIN, Reply, TestApp, app, app_with,
    both_stores, counted_app, counted_app_with, login_request, send,
};

fn from_ip(mut request: Request<Body>, ip: &str) -> Request<Body> {
    let addr = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 40_000);
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

/// A POST to `/me` with the session cookie and the given headers.
fn post_me(token: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::post("/me").header(header::COOKIE, format!("{COOKIE}={token}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

fn login_from(ip: &str, username: &str, password: &str) -> Request<Body> {
    from_ip(login_request(username, password), ip)
}

async fn statements(app: &TestApp, request: Request<Body>) -> (u64, Reply) {
    let before = app.statements();
    let reply = send(&app.router, request).await;
    (app.statements() - before, reply)
}

/// Password checks the logs show: every check ends in `login` or `login_failed`.
fn password_checks(logs: &crate::account::Logs) -> usize {
    let text = logs.text();
    text.matches("event=\"login_failed\"").count() + text.matches("event=\"login\"").count()
}

fn bearer(path: &str, token: &str) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

async fn issue_token(app: &TestApp, username: &str, password: &str) -> Reply {
    let body = serde_json::json!({ "username": username, "password": password }).to_string();
    let request = Request::post("/auth/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    send(&app.router, request).await
}

/// Twelve failed logins through the trusted proxy at 10.0.0.1 (configured as `proxy`), each
/// for a client of its own in `X-Forwarded-For`: none is throttled, as none is over its limit.
async fn forwarded_clients_count_apart(db: crate::common::Db, proxy: &str) {
    let proxy: IpAddr = proxy.parse().unwrap();
    let app = app_with(db, move |b| b.trusted_proxies([proxy])).await;
    for i in 0..12 {
        let mut request = login_from("10.0.0.1", &format!("user{i}"), "wrong-password");
        let client = format!("198.51.100.{i}");
        request
            .headers_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        let reply = send(&app.router, request).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "attempt {i}: a client of its own"
        );
    }
}

/// A token issued to `username`, and the answer to a reauthentication with it as a bearer.
async fn bearer_reauth(app: &TestApp, username: &str, password: &str) -> (String, Reply) {
    let issued = issue_token(app, username, password).await;
    let body: serde_json::Value = serde_json::from_str(&issued.body).unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let reauth = Request::post("/account/reauth")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("password={password}")))
        .unwrap();
    (token, send(&app.router, reauth).await)
}

async fn bearer_app(db: crate::common::Db) -> TestApp {
    app_with(db, |b| b.bearer_tokens(true).csrf_exempt("/auth/token")).await
}

both_stores! {
    async fn cross_site_posts_are_refused_before_the_handler_runs(db: Db) {
        let app = app(db).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let runs = app.runs();
        let refused = [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("sec-fetch-site", "cross-site"), ("origin", ORIGIN)],
            vec![("origin", "http://localhost:3000.evil.example")],
            vec![("origin", "https://localhost:3000")],
            vec![("origin", "http://localhost:3001")],
            vec![("origin", "null")],
            vec![],
        ];
        for headers in refused {
            let reply = send(&app.router, post_me(&token, &headers)).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{headers:?}");
        }
        assert_eq!(app.runs(), runs, "no refused request reached its handler");
        for headers in [
            vec![("sec-fetch-site", "same-origin")],
            vec![("sec-fetch-site", "none")],
            vec![("origin", ORIGIN)],
        ] {
            let reply = send(&app.router, post_me(&token, &headers)).await;
            assert_eq!(reply.status, StatusCode::OK, "{headers:?}");
        }
        // Safe methods are not checked.
        let get = Request::get("/me")
            .header(header::COOKIE, format!("{COOKIE}={token}"))
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app.router, get).await.status, StatusCode::OK);
    }

    async fn requests_without_origin_headers_pass_only_when_allowed(db: Db) {
        let app = app_with(db, |b| b.allow_requests_without_origin_headers(true)).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        assert_eq!(send(&app.router, post_me(&token, &[])).await.status, StatusCode::OK);
        let cross = post_me(&token, &[("sec-fetch-site", "cross-site")]);
        assert_eq!(send(&app.router, cross).await.status, StatusCode::FORBIDDEN);
        let null = post_me(&token, &[("origin", "null")]);
        assert_eq!(send(&app.router, null).await.status, StatusCode::FORBIDDEN);
    }

    async fn a_cross_site_login_checks_no_password(db: Db) {
        let app = counted_app(db).await;
        let mut request = login_request(ALICE, ALICE_PASSWORD);
        request.headers_mut().insert("sec-fetch-site", "cross-site".parse().unwrap());
        let (n, reply) = statements(&app, request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(n, 0, "not even the throttle was asked, let alone the password");
        assert!(reply.set_cookies().is_empty());
        assert_eq!(app.sessions().await, 0);
    }

    /// The token route is exempt so that clients without Origin headers reach it, but a form a
    /// page elsewhere posts to it in a visitor's browser is refused before the throttle or the
    /// hasher is asked: it cannot spend the visitor's address on failed logins. (Before, ten
    /// such posts answered 401 and the visitor's own login then answered 429.)
    async fn a_cross_site_token_request_spends_no_login_attempt(db: Db) {
        let app = counted_app_with(db, |b| b.bearer_tokens(true).csrf_exempt("/auth/token")).await;
        let visitor = "192.0.2.20";
        for site in ["cross-site", "same-site"] {
            for _ in 0..5 {
                let post = Request::post("/auth/token")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header("sec-fetch-site", site)
                    .body(Body::from("username=alice&password=wrong-password"))
                    .unwrap();
                let (n, reply) = statements(&app, from_ip(post, visitor)).await;
                assert_eq!(reply.status, StatusCode::FORBIDDEN, "{site}");
                assert_eq!(n, 0, "neither the throttle nor the password was asked");
            }
        }
        let evil_origin = Request::post("/auth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, "https://evil.example")
            .body(Body::from("username=alice&password=wrong-password"))
            .unwrap();
        assert_eq!(send(&app.router, from_ip(evil_origin, visitor)).await.status, StatusCode::FORBIDDEN);
        let own = send(&app.router, login_from(visitor, ALICE, ALICE_PASSWORD)).await;
        assert_eq!(own.status, StatusCode::SEE_OTHER);
        // A client that sends neither header (curl, a mobile app) still gets its token.
        assert_eq!(issue_token(&app, ALICE, ALICE_PASSWORD).await.status, StatusCode::OK);
    }

    async fn websocket_upgrades_are_checked_like_unsafe_requests(db: Db) {
        let app = app(db).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let upgrade = |origin: &str| {
            Request::get("/me")
                .header(header::COOKIE, format!("{COOKIE}={token}"))
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header(header::ORIGIN, origin)
                .body(Body::empty())
                .unwrap()
        };
        let runs = app.runs();
        let evil = send(&app.router, upgrade("https://evil.example")).await;
        assert_eq!(evil.status, StatusCode::FORBIDDEN);
        assert_eq!(app.runs(), runs);
        let own = send(&app.router, upgrade(ORIGIN)).await;
        assert_ne!(own.status, StatusCode::FORBIDDEN);
    }

    async fn an_exempt_path_skips_the_check_and_only_that_path(db: Db) {
        let app = app_with(db, |b| b.csrf_exempt("/me")).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let cross = post_me(&token, &[("sec-fetch-site", "cross-site")]);
        assert_eq!(send(&app.router, cross).await.status, StatusCode::OK);
        let logout = Request::post("/logout")
            .header(header::COOKIE, format!("{COOKIE}={token}"))
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app.router, logout).await.status, StatusCode::FORBIDDEN);
    }

    async fn bearer_tokens_authenticate_live_and_die_on_revocation(db: Db) {
        let app = bearer_app(db).await;
        let issued = issue_token(&app, ALICE, ALICE_PASSWORD).await;
        assert_eq!(issued.status, StatusCode::OK);
        assert!(issued.set_cookies().is_empty(), "the token route sets no cookie");
        assert_eq!(issued.headers[header::CACHE_CONTROL], "no-store");
        let body: serde_json::Value = serde_json::from_str(&issued.body).unwrap();
        let token = body["token"].as_str().unwrap().to_owned();
        assert_eq!(body["session_id"], token.split_once('.').unwrap().0);

        let me = send(&app.router, bearer("/me", &token)).await;
        assert_eq!(me.status, StatusCode::OK);
        assert!(me.body.contains("\"admin\""));
        app.accounts.revoke_role_permission("admin", "admin").await.unwrap();
        let me = send(&app.router, bearer("/me", &token)).await;
        assert!(!me.body.contains("\"admin\""), "live permissions: {}", me.body);

        // No CSRF check for bearer requests: a browser cannot attach the header by itself.
        let post = Request::post("/me")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app.router, post).await.status, StatusCode::OK);

        app.accounts.revoke_all_sessions(app.alice).await.unwrap();
        let revoked = send(&app.router, bearer("/me", &token)).await;
        assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
        assert!(revoked.set_cookies().is_empty(), "no cookie to clear for a bearer client");

        let wrong = issue_token(&app, ALICE, "wrong-password").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert_eq!(wrong.body, r#"{"error":"invalid_credentials"}"#);
    }

    /// An `Authorization` header that names no live session (no token in it, or a token of no
    /// session) is no credential: a cross-site login with one is refused as any cross-site
    /// login is. (Before: the header exempted it from the check, and the login went through.)
    /// A non-browser client sending one is not refused.
    async fn an_authorization_header_without_a_session_exempts_nothing_from_the_csrf_check(db: Db) {
        let app = bearer_app(db).await;
        let unknown = axum_live_auth::SessionToken::generate().unwrap().to_string();
        for bearer in ["not-a-token", unknown.as_str()] {
            let login = |site: Option<&str>| {
                let mut request = crate::common::login_request(ALICE, ALICE_PASSWORD);
                let headers = request.headers_mut();
                headers.remove("sec-fetch-site");
                headers.remove(header::ORIGIN);
                headers.insert(header::AUTHORIZATION, format!("Bearer {bearer}").parse().unwrap());
                if let Some(site) = site {
                    headers.insert("sec-fetch-site", site.parse().unwrap());
                }
                request
            };
            let cross = send(&app.router, login(Some("cross-site"))).await;
            assert_eq!(cross.status, StatusCode::FORBIDDEN, "{bearer}");
            assert!(cross.set_cookies().is_empty());
            let same = send(&app.router, login(Some("same-origin"))).await;
            assert_eq!(same.status, StatusCode::SEE_OTHER, "{bearer}");
            let not_a_browser = send(&app.router, login(None)).await;
            assert_ne!(not_a_browser.status, StatusCode::FORBIDDEN, "{bearer}");
        }
    }

    async fn a_bearer_client_gets_its_rotated_token_in_a_header(db: Db) {
        let app = bearer_app(db).await;
        let (token, reply) = bearer_reauth(&app, ALICE, ALICE_PASSWORD).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(reply.set_cookies().is_empty());
        let rotated = reply.headers[axum_live_auth::SESSION_TOKEN_HEADER].to_str().unwrap();
        assert_eq!(send(&app.router, bearer("/me", rotated)).await.status, StatusCode::OK);
        assert_eq!(send(&app.router, bearer("/me", &token)).await.status, StatusCode::UNAUTHORIZED);
    }

    /// Every header that carries a token is marked sensitive, so that logging middleware
    /// (tower-http's `Trace` with headers on) prints `Sensitive`, never the token: the
    /// `Set-Cookie` of a login, the `x-session-token` of a bearer rotation, and, for the layers
    /// and handlers inside the layer, the request's `Cookie` and `Authorization`. (Before:
    /// none was, and `{:?}` of the headers printed the token.)
    async fn headers_that_carry_a_token_are_marked_sensitive(db: Db) {
        let app = bearer_app(db).await;
        let login = send(&app.router, login_request(ALICE, ALICE_PASSWORD)).await;
        let set_cookie = &login.headers[header::SET_COOKIE];
        assert!(set_cookie.is_sensitive());
        let cookie = login.session_cookie().unwrap();
        assert!(!format!("{:?}", login.headers).contains(&cookie), "{:?}", login.headers);

        let (_, reply) = bearer_reauth(&app, BOB, BOB_PASSWORD).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        let rotated = &reply.headers[axum_live_auth::SESSION_TOKEN_HEADER];
        assert!(rotated.is_sensitive());
        assert!(!format!("{:?}", reply.headers).contains(rotated.to_str().unwrap()));

        // What a handler (or a layer inside this one) sees of the request.
        let probe = axum::Router::new()
            .route(
                "/probe",
                axum::routing::get(|headers: axum::http::HeaderMap| async move {
                    let sensitive = |name| headers.get_all(name).iter().all(|v| v.is_sensitive());
                    let present = headers.contains_key(header::COOKIE)
                        && headers.contains_key(header::AUTHORIZATION);
                    format!("{present} {} {}", sensitive(header::COOKIE), sensitive(header::AUTHORIZATION))
                }),
            )
            .layer(app.layer.clone());
        let request = Request::get("/probe")
            .header(header::COOKIE, "theme=dark")
            .header(header::COOKIE, format!("{COOKIE}={cookie}"))
            .header(header::AUTHORIZATION, format!("Bearer {cookie}"))
            .body(Body::empty())
            .unwrap();
        let reply = send(&probe, request).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "true true true");
    }

    /// A client that sends its token both in the cookie and in the bearer header (one HTTP
    /// client with a cookie jar and an `Authorization` header) gets a rotated token back in
    /// both, and its logout clears the cookie. (Before: in the header only, so that the jar
    /// kept the old token and every later request was refused `400` as conflicting.)
    async fn a_client_sending_both_gets_a_rotated_token_in_both(db: Db) {
        let app = bearer_app(db).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let both = |method: &str, path: &str, token: &str, body: &'static str| {
            Request::builder()
                .method(method)
                .uri(path)
                .header(header::COOKIE, format!("{COOKIE}={token}"))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap()
        };
        let reauth = both("POST", "/account/reauth", &token, "password=alice-password");
        let reply = send(&app.router, reauth).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        let in_header = reply.headers[axum_live_auth::SESSION_TOKEN_HEADER].to_str().unwrap();
        let in_cookie = reply.session_cookie().expect("the new token in a cookie too");
        assert_eq!(in_header, in_cookie);
        assert_eq!(send(&app.router, both("GET", "/me", &in_cookie, "")).await.status, StatusCode::OK);
        let logout = send(&app.router, both("POST", "/logout", &in_cookie, "")).await;
        assert_eq!(logout.session_cookie().as_deref(), Some(""), "the cookie cleared");
    }

    async fn a_cookie_and_a_bearer_token_that_disagree_are_refused(db: Db) {
        let app = bearer_app(db).await;
        let cookie = app.login(ALICE, ALICE_PASSWORD).await;
        let body: serde_json::Value =
            serde_json::from_str(&issue_token(&app, BOB, BOB_PASSWORD).await.body).unwrap();
        let token = body["token"].as_str().unwrap().to_owned();
        let both = |bearer: &str| {
            Request::get("/me")
                .header(header::COOKIE, format!("{COOKIE}={cookie}"))
                .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(send(&app.router, both(&token)).await.status, StatusCode::BAD_REQUEST);
        assert_eq!(send(&app.router, both("garbage")).await.status, StatusCode::BAD_REQUEST);
        let same = send(&app.router, both(&cookie)).await;
        assert_eq!(same.status, StatusCode::OK);
        assert!(same.body.contains(ALICE));
    }

/// With bearer tokens on, a `401` for want of a session carries the challenge RFC 6750 asks
    /// for: `Bearer`, with `error="invalid_token"` when a token was presented; the token
    /// route's `401` for a wrong password is left as it is, and with bearer tokens off there is
    /// no challenge. (Before: no `WWW-Authenticate`, which RFC 9110 requires on a `401`.)
    async fn a_401_challenges_bearer_clients(db: Db) {
        let app = bearer_app(db).await;
        let anonymous = Request::get("/me").body(Body::empty()).unwrap();
        let anonymous = send(&app.router, anonymous).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert_eq!(anonymous.headers[header::WWW_AUTHENTICATE], "Bearer");
        let stale = axum_live_auth::SessionToken::generate().unwrap().to_string();
        let stale = send(&app.router, bearer("/me", &stale)).await;
        assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
        assert_eq!(stale.headers[header::WWW_AUTHENTICATE], r#"Bearer error="invalid_token""#);
        let wrong = issue_token(&app, ALICE, "wrong-password").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(!wrong.headers.contains_key(header::WWW_AUTHENTICATE));

        let cookies_only = app_with(app.db.clone(), |b| b).await;
        let anonymous = Request::get("/me").body(Body::empty()).unwrap();
        let anonymous = send(&cookies_only.router, anonymous).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert!(!anonymous.headers.contains_key(header::WWW_AUTHENTICATE));
    }

    async fn bearer_headers_are_ignored_unless_enabled(db: Db) {
        let app = app_with(db, |b| b.csrf_exempt("/auth/token")).await;
        let issued = issue_token(&app, ALICE, ALICE_PASSWORD).await;
        assert_eq!(issued.status, StatusCode::NOT_FOUND);
        let cookie = app.login(ALICE, ALICE_PASSWORD).await;
        assert_eq!(send(&app.router, bearer("/me", &cookie)).await.status, StatusCode::UNAUTHORIZED);
    }

    async fn the_eleventh_failure_from_one_ip_is_429_without_a_password_check(db: Db) {
        let logs = crate::account::Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let app = app(db).await;
        for i in 0..10 {
            let reply = send(&app.router, login_from("192.0.2.10", &format!("user{i}"), "wrong-password")).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        }
        let checks = password_checks(&logs);
        let reply = send(&app.router, login_from("192.0.2.10", ALICE, ALICE_PASSWORD)).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "even the right password");
        let retry: u64 = reply.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=180).contains(&retry), "{retry}");
        assert_eq!(password_checks(&logs), checks, "no password check while throttled");
        assert!(reply.set_cookies().is_empty());
        // Another address is not affected.
        let other = send(&app.router, login_from("192.0.2.11", ALICE, ALICE_PASSWORD)).await;
        assert_eq!(other.status, StatusCode::SEE_OTHER);
    }

    /// A per-address window longer than the purge's day holds across a purge: its counter is
    /// not forgotten while it still refuses. (Before: the purge forgot it after a day idle, and
    /// the address got a fresh budget: `401`.)
    async fn a_long_address_window_outlives_the_purge(db: Db) {
        let app = app_with(db, |b| b.login_failures_per_ip(2, Duration::from_secs(2 * 24 * 60 * 60))).await;
        for i in 0..2 {
            let reply = send(&app.router, login_from("192.0.2.60", &format!("user{i}"), "wrong-password")).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        }
        let refused = send(&app.router, login_from("192.0.2.60", "user2", "wrong-password")).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        app.db
            .exec_each(
                "UPDATE auth_login_attempts SET window_start = now() - interval '25 hours',
                        last_failure_at = now() - interval '25 hours' WHERE kind = 'ip'",
                "UPDATE auth_login_attempts SET window_start = NOW - 90000000,
                        last_failure_at = NOW - 90000000 WHERE kind = 'ip'",
            )
            .await;
        app.layer.accounts().purge_expired_sessions().await.unwrap();
        let still = send(&app.router, login_from("192.0.2.60", "user3", "wrong-password")).await;
        assert_eq!(still.status, StatusCode::TOO_MANY_REQUESTS, "the window has a day to go");
    }

    async fn a_forged_forwarded_for_does_not_escape_the_ip_limit(db: Db) {
        let app = app(db).await;
        for i in 0..11 {
            let mut request = login_from("192.0.2.20", &format!("user{i}"), "wrong-password");
            let forged = format!("198.51.100.{i}");
            request.headers_mut().insert("x-forwarded-for", forged.parse().unwrap());
            let reply = send(&app.router, request).await;
            let expected = if i < 10 { StatusCode::UNAUTHORIZED } else { StatusCode::TOO_MANY_REQUESTS };
            assert_eq!(reply.status, expected, "attempt {i}");
        }
    }

    async fn behind_a_trusted_proxy_the_forwarded_client_is_counted(db: Db) {
        forwarded_clients_count_apart(db, "10.0.0.1").await;
    }

    /// A proxy configured in its IPv4-mapped form is the same proxy. (Before, it never matched
    /// the peer, taken as IPv4, so every client counted as the proxy and the 11th was `429`.)
    async fn a_trusted_proxy_written_ipv4_mapped_is_recognised(db: Db) {
        forwarded_clients_count_apart(db, "::ffff:10.0.0.1").await;
    }

    async fn a_username_backs_off_exponentially_known_or_not(db: Db) {
        let logs = crate::account::Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let app = app(db).await;
        for name in [ALICE, "nobody"] {
            for i in 0..5 {
                let reply = send(&app.router, login_from(&format!("192.0.2.{}", 30 + i), name, "wrong-password")).await;
                assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{name} attempt {i}");
            }
            let checks = password_checks(&logs);
            let reply = send(&app.router, login_from("192.0.2.99", name, "wrong-password")).await;
            assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{name}: the sixth must wait");
            assert_eq!(password_checks(&logs), checks, "{name}: no hash while throttled");
        }
        // Once the wait has passed, the right password works and clears the count.
        app.db
            .exec_each(
                "UPDATE auth_login_attempts SET blocked_until = now() - interval '1 minute'",
                "UPDATE auth_login_attempts SET blocked_until = NOW - 60000",
            )
            .await;
        let ok = send(&app.router, login_from("192.0.2.98", ALICE, ALICE_PASSWORD)).await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER);
        assert_eq!(
            app.db.count(&format!("SELECT count(*) FROM auth_login_attempts WHERE kind = 'user' AND key = 'id:{}'", app.alice)).await,
            0
        );
    }

    async fn a_hundred_failures_wait_at_most_the_cap_and_a_reset_lifts_it(db: Db) {
        let app = app(db).await;
        let key = format!("id:{}", app.alice);
        app.db
            .exec_each(
                &format!("INSERT INTO auth_login_attempts (kind, key, failures, blocked_until)
                          VALUES ('user', '{key}', 100, now() + interval '15 minutes')"),
                &format!("INSERT INTO auth_login_attempts (kind, key, failures, blocked_until)
                          VALUES ('user', '{key}', 100, NOW + 900000)"),
            )
            .await;
        let locked = send(&app.router, login_from("192.0.2.40", ALICE, ALICE_PASSWORD)).await;
        assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = locked.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!(retry <= 15 * 60, "capped at 15 minutes, not permanent: {retry}");
        app.accounts.purge_expired_sessions().await.unwrap();
        let still = send(&app.router, login_from("192.0.2.41", ALICE, ALICE_PASSWORD)).await;
        assert_eq!(still.status, StatusCode::TOO_MANY_REQUESTS, "the purge keeps a wait");
        // Once the wait is over, the right password works again, whatever the count.
        app.db
            .exec_each(
                "UPDATE auth_login_attempts SET blocked_until = now() - interval '1 second'",
                "UPDATE auth_login_attempts SET blocked_until = NOW - 1000",
            )
            .await;
        let ok = send(&app.router, login_from("192.0.2.42", ALICE, ALICE_PASSWORD)).await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER);
        // And a reset lifts a wait at once.
        app.db
            .exec_each(
                &format!("INSERT INTO auth_login_attempts (kind, key, failures, blocked_until)
                          VALUES ('user', '{key}', 100, now() + interval '15 minutes')"),
                &format!("INSERT INTO auth_login_attempts (kind, key, failures, blocked_until)
                          VALUES ('user', '{key}', 100, NOW + 900000)"),
            )
            .await;
        app.accounts.reset_password(app.alice, "alice-new-password").await.unwrap();
        let ok = send(&app.router, login_from("192.0.2.43", ALICE, "alice-new-password")).await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER);
    }

    /// The wait after a failure is the one the statement computes, not only "some wait": with
    /// the defaults (5 free failures, a base of 1 s, a cap of 15 minutes) the `k`th failure in
    /// a row (k ≥ 5) blocks for min(1 s × 2^(k − 4), 900 s). Seeded with `k − 1` failures and a
    /// wait already over, one wrong password makes the `k`th: 4 seeded → 2 s, 5 → 4 s, 6 → 8 s,
    /// and 100 → the cap, 900 s (uncapped it would be 2^40 s). The next attempt's
    /// `Retry-After` says so (rounded up, so `w` or, on a slow run, `w − 1`).
    async fn the_backoff_doubles_per_failure_up_to_its_cap(db: Db) {
        let app = app(db).await;
        let key = format!("id:{}", app.alice);
        for (i, (seeded, wait)) in [(4, 2), (5, 4), (6, 8), (100, 900)].into_iter().enumerate() {
            app.db.exec("DELETE FROM auth_login_attempts WHERE kind = 'user'").await;
            app.db
                .exec_each(
                    &format!("INSERT INTO auth_login_attempts (kind, key, failures, blocked_until)
                              VALUES ('user', '{key}', {seeded}, now() - interval '1 second')"),
                    &format!("INSERT INTO auth_login_attempts (kind, key, failures, blocked_until)
                              VALUES ('user', '{key}', {seeded}, NOW - 1000)"),
                )
                .await;
            let wrong = send(&app.router, login_from(&format!("192.0.2.{}", 70 + 2 * i), ALICE, "wrong-password")).await;
            assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{seeded} seeded: the wait was over");
            let next = send(&app.router, login_from(&format!("192.0.2.{}", 71 + 2 * i), ALICE, ALICE_PASSWORD)).await;
            assert_eq!(next.status, StatusCode::TOO_MANY_REQUESTS, "{seeded} seeded: failure {} waits", seeded + 1);
            let retry: u64 = next.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
            assert!(
                (wait - 1..=wait).contains(&retry),
                "failure {} in a row: a wait of {wait} s expected, Retry-After {retry}",
                seeded + 1
            );
        }
    }

    async fn invalid_tokens_from_one_address_raise_one_alert_and_refuse_nothing(db: Db) {
        let logs = crate::account::Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let app = app_with(db, |b| b.invalid_token_alert(5, Duration::from_secs(60))).await;
        let good = app.login(ALICE, ALICE_PASSWORD).await;
        let probe = |token: String, ip: &'static str| {
            let app = app.clone();
            async move {
                let request = Request::get("/me")
                    .header(header::COOKIE, format!("{COOKIE}={token}"))
                    .body(Body::empty())
                    .unwrap();
                send(&app.router, from_ip(request, ip)).await
            }
        };
        for i in 0..20 {
            let guess = axum_live_auth::SessionToken::generate().unwrap().to_string();
            let status = probe(guess, "192.0.2.50").await.status;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {i}");
        }
        assert_eq!(probe("garbage".into(), "192.0.2.50").await.status, StatusCode::UNAUTHORIZED);
        let events = logs.text().matches("event=\"invalid_tokens_alert\"").count();
        assert_eq!(events, 1, "one alert when the threshold is reached");
        assert_eq!(probe(good.clone(), "192.0.2.50").await.status, StatusCode::OK, "valid from the same address");
    }

    async fn hostile_login_input_gets_a_4xx_and_leaves_nothing_behind(db: Db) {
        let app = app(db).await;
        let huge = "x".repeat(100_000);
        let cases: Vec<(String, Vec<u8>)> = vec![
            ("huge username".into(), format!("username={huge}&password=p").into_bytes()),
            ("huge password".into(), format!("username=alice&password={huge}").into_bytes()),
            ("NUL username".into(), b"username=al%00ice&password=alice-password".to_vec()),
            ("NUL password".into(), b"username=alice&password=alice%00password".to_vec()),
            ("SQL".into(), b"username=%27%20OR%201%3D1%20--&password=%27%20OR%20%271%27%3D%271".to_vec()),
            ("non-UTF-8 percent-encoded".into(), b"username=%ff%fe&password=%c3%28".to_vec()),
            ("non-UTF-8 raw".into(), b"username=\xff\xfe&password=x".to_vec()),
            ("missing field".into(), b"username=alice".to_vec()),
            ("garbage".into(), b"\x00\x01\x02=&&&==".to_vec()),
            ("control characters".into(), b"username=a%0D%0Ab&password=%1B%5B31m".to_vec()),
            ("body over the limit".into(), vec![b'a'; 3 * 1024 * 1024]),
        ];
        for (what, body) in cases {
            let request = Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header("sec-fetch-site", "same-origin")
                .body(Body::from(body))
                .unwrap();
            let reply = send(&app.router, from_ip(request, "192.0.2.60")).await;
            assert!(reply.status.is_client_error(), "{what}: {}", reply.status);
        }
        let cookies = [
            "x".repeat(50_000),
            (0..300).map(|i| format!("c{i}=v")).collect::<Vec<_>>().join("; "),
            "__Host-sid=%00%00".to_owned(),
            "__Host-sid=' OR 1=1; DROP TABLE auth_users; --".to_owned(),
        ];
        for cookie in cookies {
            let request = Request::get("/me")
                .header(header::COOKIE, cookie.as_str())
                .body(Body::empty())
                .unwrap();
            assert_eq!(send(&app.router, request).await.status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(app.sessions().await, 0, "no session from a rejected request");
        assert_eq!(app.db.count("SELECT count(*) FROM auth_users").await, 2, "no user either");
    }
}

/// A refused login reads how long to wait in a second statement; by then the account's row may
/// have been cleared by a success in flight and written again by a new failure, which does not
/// block (`blocked_until` is `-infinity` on Postgres). A trigger forces that interleaving. The
/// refusal still says when to come back. (Before, Postgres before 17 could not subtract the
/// infinite time: `503`.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_refusal_whose_row_changed_before_its_wait_was_read_still_says_when(pool: sqlx::PgPool) {
    let app = app(pool.clone()).await;
    let key = format!("id:{}", app.alice);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO auth_login_attempts (kind, key, failures, blocked_until)
         VALUES ('user', '{key}', 100, now() + interval '15 minutes');
         CREATE FUNCTION test_clear_block() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             -- Only after the reservation that inserted nothing: the refused one.
             IF NOT EXISTS (SELECT 1 FROM inserted) THEN
                 UPDATE auth_login_attempts SET failures = 1, blocked_until = '-infinity'
                  WHERE kind = 'user';
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER test_clear_block AFTER INSERT ON auth_login_attempts
            REFERENCING NEW TABLE AS inserted
            FOR EACH STATEMENT EXECUTE FUNCTION test_clear_block();"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let refused = send(&app.router, login_from("192.0.2.50", ALICE, ALICE_PASSWORD)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
}

/// A rejection an app builds with the longest wait still answers, with the longest
/// `Retry-After`. (Before: an overflow, which panics in a debug build.)
#[test]
fn a_rejection_with_the_longest_wait_answers() {
    use axum::response::IntoResponse as _;
    let longest = axum_live_auth::AuthRejection::Throttled(Duration::MAX).into_response();
    assert_eq!(
        longest.headers()[header::RETRY_AFTER],
        u64::MAX.to_string().as_str()
    );
}
