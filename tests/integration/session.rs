//! Tokens, cookies, login, logout, expiry and touch.

use axum::{body::Body, http::Request};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{StatusCode, header};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, COOKIE, app, app_with, login_request, secs, send,
};

fn is_token(value: &str) -> bool {
    let Some((id, secret)) = value.split_once('.') else {
        return false;
    };
    let b64 = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    id.len() == 22 && secret.len() == 43 && b64(id) && b64(secret)
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn login_sets_exactly_the_secure_cookie(pool: PgPool) {
    let app = app(pool).await;
    let reply = send(&app.router, login_request(ALICE, ALICE_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.headers[header::LOCATION], "/me");
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let token = reply.session_cookie().unwrap();
    assert!(is_token(&token), "{token}");
    assert_eq!(
        cookies[0],
        format!("{COOKIE}={token}; HttpOnly; SameSite=Lax; Secure; Path=/")
    );
    assert!(!cookies[0].to_ascii_lowercase().contains("domain"));
    assert!(!cookies[0].to_ascii_lowercase().contains("max-age"));
    assert!(COOKIE.len() + 1 + token.len() < 100);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn a_session_works_and_names_its_user(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    let reply = app.get("/me", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let me: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(me["username"], ALICE);
    assert_eq!(me["id"], app.alice);
    assert_eq!(
        me["permissions"],
        serde_json::json!(["admin", "reports:read"])
    );
    assert_eq!(me["session"], token.split_once('.').unwrap().0);
    // A valid session is not re-set or cleared on ordinary requests.
    assert!(reply.set_cookies().is_empty());
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn every_login_makes_an_unrelated_token(pool: PgPool) {
    let app = app(pool).await;
    let a = app.login(ALICE, ALICE_PASSWORD).await;
    let b = app.login(ALICE, ALICE_PASSWORD).await;
    assert_ne!(a, b);
    assert_ne!(a[..8], b[..8]);
    assert_ne!(a[23..31], b[23..31]);
    // The token carries nothing about the user.
    for part in a.split('.') {
        let bytes = URL_SAFE_NO_PAD.decode(part).unwrap();
        assert!(!bytes.windows(ALICE.len()).any(|w| w == ALICE.as_bytes()));
    }
    assert_eq!(app.status("/me", &a).await, StatusCode::OK);
    assert_eq!(app.status("/me", &b).await, StatusCode::OK);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn the_database_holds_only_a_hash_of_the_secret(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    let (id, secret) = token.split_once('.').unwrap();
    let secret_bytes = URL_SAFE_NO_PAD.decode(secret).unwrap();
    let hex: String = secret_bytes.iter().map(|b| format!("{b:02x}")).collect();

    let row: String = sqlx::query_scalar("SELECT row_to_json(s)::text FROM auth_sessions s")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!row.contains(secret), "{row}");
    assert!(!row.contains(&hex), "{row}");
    assert!(!row.contains(&token));

    let (stored_id, hash): (String, Vec<u8>) =
        sqlx::query_as("SELECT id, secret_hash FROM auth_sessions")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored_id, id);
    assert_eq!(hash, Sha256::digest(&secret_bytes).to_vec());
    // The stored hash is not a credential: presenting it instead of the secret fails.
    let forged = format!("{id}.{}", URL_SAFE_NO_PAD.encode(&hash));
    assert_eq!(app.status("/me", &forged).await, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn flipping_any_character_of_the_token_is_401(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    for i in (0..token.len()).filter(|&i| i != 22) {
        let mut bytes = token.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(
            app.status("/me", &flipped).await,
            StatusCode::UNAUTHORIZED,
            "position {i}"
        );
    }
    assert_eq!(app.status("/me", &token).await, StatusCode::OK);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn an_unknown_well_formed_token_is_401_and_cleared(pool: PgPool) {
    let app = app(pool).await;
    let planted = axum_live_auth::SessionToken::generate()
        .unwrap()
        .to_string();
    let reply = app.get("/me", &planted).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.session_cookie().as_deref(), Some(""));
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    // Logging in with the planted cookie never adopts it.
    let mut request = login_request(ALICE, ALICE_PASSWORD);
    request.headers_mut().insert(
        header::COOKIE,
        format!("{COOKIE}={planted}").parse().unwrap(),
    );
    let token = send(&app.router, request).await.session_cookie().unwrap();
    assert_ne!(token, planted);
    let planted_id = planted.split_once('.').unwrap().0;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM auth_sessions WHERE id = $1")
        .bind(planted_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn login_over_a_live_session_replaces_it(pool: PgPool) {
    let app = app(pool).await;
    let first = app.login(ALICE, ALICE_PASSWORD).await;
    let mut request = login_request(BOB, BOB_PASSWORD);
    request
        .headers_mut()
        .insert(header::COOKIE, format!("{COOKIE}={first}").parse().unwrap());
    let second = send(&app.router, request).await.session_cookie().unwrap();
    assert_ne!(first, second);
    assert_eq!(app.status("/me", &first).await, StatusCode::UNAUTHORIZED);
    let me = app.get("/me", &second).await;
    assert!(me.body.contains(BOB));
    assert_eq!(app.sessions().await, 1);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn failed_logins_look_the_same_for_unknown_user_and_wrong_password(pool: PgPool) {
    let app = app(pool).await;
    let unknown = send(&app.router, login_request("nobody", ALICE_PASSWORD)).await;
    let wrong = send(&app.router, login_request(ALICE, "wrong-password")).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.body, wrong.body);
    assert!(unknown.set_cookies().is_empty() && wrong.set_cookies().is_empty());
    // Usernames are case-insensitive.
    let token = app.login("ALICE", ALICE_PASSWORD).await;
    assert_eq!(app.status("/me", &token).await, StatusCode::OK);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn logout_deletes_the_session_and_clears_the_cookie(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    let request = Request::post("/logout")
        .header(header::COOKIE, format!("{COOKIE}={token}"))
        .body(Body::empty())
        .unwrap();
    let reply = send(&app.router, request).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1);
    assert!(
        cookies[0].starts_with(&format!(
            "{COOKIE}=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0"
        )),
        "{}",
        cookies[0]
    );
    assert_eq!(app.sessions().await, 0);
    // Replaying the old cookie is refused.
    assert_eq!(app.status("/me", &token).await, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn idle_expiry_is_enforced_by_the_server(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    sqlx::query("UPDATE auth_sessions SET idle_expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let reply = app.get("/me", &token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.session_cookie().as_deref(), Some(""));
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn absolute_expiry_is_enforced_even_for_an_active_session(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    sqlx::query(
        "UPDATE auth_sessions SET created_at = now() - interval '13 hours',
                expires_at = now() - interval '1 second', idle_expires_at = now() - interval '1 second',
                last_seen_at = now()",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.status("/me", &token).await, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn default_deadlines_are_thirty_minutes_and_twelve_hours(pool: PgPool) {
    let app = app(pool).await;
    app.login(ALICE, ALICE_PASSWORD).await;
    let (idle, absolute): (f64, f64) = sqlx::query_as(
        "SELECT extract(epoch FROM idle_expires_at - created_at)::float8,
                extract(epoch FROM expires_at - created_at)::float8 FROM auth_sessions",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!((idle - 1800.0).abs() < 5.0, "{idle}");
    assert!((absolute - 43200.0).abs() < 5.0, "{absolute}");
}

/// Reads (last_seen_at, idle_expires_at, expires_at) of the only session, as epoch seconds.
async fn deadlines(pool: &PgPool) -> (f64, f64, f64) {
    sqlx::query_as(
        "SELECT extract(epoch FROM last_seen_at)::float8, extract(epoch FROM idle_expires_at)::float8,
                extract(epoch FROM expires_at)::float8 FROM auth_sessions",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn the_idle_deadline_moves_at_most_once_per_touch_interval(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    let before = deadlines(&app.pool).await;
    for _ in 0..5 {
        assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    }
    assert_eq!(
        deadlines(&app.pool).await,
        before,
        "no write within the interval"
    );

    // Pretend the last touch was four minutes ago (default interval: three minutes).
    sqlx::query(
        "UPDATE auth_sessions SET last_seen_at = last_seen_at - $1,
                idle_expires_at = idle_expires_at - $1",
    )
    .bind(secs(240))
    .execute(&app.pool)
    .await
    .unwrap();
    let aged = deadlines(&app.pool).await;
    assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    let touched = deadlines(&app.pool).await;
    assert!(touched.0 > aged.0 + 200.0, "last_seen_at moved");
    assert!(touched.1 > aged.1 + 200.0, "idle deadline moved");
    assert!((touched.1 - touched.0 - 1800.0).abs() < 1.0);
    assert_eq!(touched.2, before.2, "the absolute deadline never moves");
    for _ in 0..5 {
        assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    }
    assert_eq!(
        deadlines(&app.pool).await,
        touched,
        "one write per interval"
    );
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn a_wrong_secret_never_touches_the_session(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    sqlx::query("UPDATE auth_sessions SET last_seen_at = last_seen_at - $1")
        .bind(secs(600))
        .execute(&app.pool)
        .await
        .unwrap();
    let before = deadlines(&app.pool).await;
    let (id, _) = token.split_once('.').unwrap();
    let other = axum_live_auth::SessionToken::generate()
        .unwrap()
        .to_string();
    let wrong = format!("{id}.{}", other.split_once('.').unwrap().1);
    assert_eq!(app.status("/me", &wrong).await, StatusCode::UNAUTHORIZED);
    assert_eq!(deadlines(&app.pool).await, before);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn the_idle_deadline_never_passes_the_absolute_one(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    // Ten minutes of absolute lifetime left, touch due.
    sqlx::query(
        "UPDATE auth_sessions SET expires_at = now() + interval '10 minutes',
                idle_expires_at = now() + interval '5 minutes',
                last_seen_at = now() - interval '25 minutes'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    let (_, idle, absolute) = deadlines(&app.pool).await;
    assert_eq!(idle, absolute);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn configured_timeouts_are_used(pool: PgPool) {
    let app = app_with(pool, |b| {
        b.idle_timeout(secs(600))
            .absolute_timeout(secs(3600))
            .touch_interval(secs(30))
    })
    .await;
    app.login(ALICE, ALICE_PASSWORD).await;
    let (idle, absolute): (f64, f64) = sqlx::query_as(
        "SELECT extract(epoch FROM idle_expires_at - created_at)::float8,
                extract(epoch FROM expires_at - created_at)::float8 FROM auth_sessions",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!((idle - 600.0).abs() < 5.0, "{idle}");
    assert!((absolute - 3600.0).abs() < 5.0, "{absolute}");
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn sessions_record_user_agent_and_start_authenticated(pool: PgPool) {
    let app = app(pool).await;
    app.login(ALICE, ALICE_PASSWORD).await;
    let (agent, fresh): (Option<String>, bool) = sqlx::query_as(
        "SELECT user_agent, authenticated_at > now() - interval '1 minute' FROM auth_sessions",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(agent.as_deref(), Some("integration-test/1.0"));
    assert!(fresh);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn browser_pages_are_redirected_to_login_when_configured(pool: PgPool) {
    let app = app_with(pool, |b| b.login_redirect("/login")).await;
    let page = Request::get("/me")
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app.router, page).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.headers[header::LOCATION], "/login");
    // API clients still get 401.
    let api = Request::get("/me")
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app.router, api).await.status,
        StatusCode::UNAUTHORIZED
    );
    let post = Request::post("/me")
        .header(header::ACCEPT, "text/html")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app.router, post).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn deleting_the_user_ends_their_sessions(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    sqlx::query("DELETE FROM auth_users WHERE id = $1")
        .bind(app.bob)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.status("/me", &token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.sessions().await, 0);
}

#[sqlx::test(migrator = "axum_live_auth::MIGRATOR")]
async fn the_token_is_only_read_from_the_cookie(pool: PgPool) {
    let app = app(pool).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    for request in [
        Request::get(format!("/me?sid={token}")).body(Body::empty()),
        Request::get("/me")
            .header("x-session", &token)
            .body(Body::empty()),
        Request::get("/me")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty()),
    ] {
        assert_eq!(
            send(&app.router, request.unwrap()).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}
