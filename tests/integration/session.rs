//! Tokens, cookies, login, logout, expiry and touch.

use axum::{body::Body, http::Request};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{StatusCode, header};
use sha2::{Digest as _, Sha256};

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, COOKIE, TestApp, app, app_with, both_stores,
    login_request, post_form, secs, send,
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

/// Alice's session rotated by sudo mode: the replaced token and the copy's.
async fn rotated(app: &TestApp) -> (String, String) {
    let old = app.login(ALICE, ALICE_PASSWORD).await;
    let reauth = post_form(
        "/account/reauth",
        &old,
        &format!("password={ALICE_PASSWORD}"),
    );
    let rotated = send(&app.router, reauth).await;
    assert_eq!(rotated.status, StatusCode::NO_CONTENT);
    (old, rotated.session_cookie().unwrap())
}

both_stores! {
/// Every name `build()` takes works: the cookie comes back as the browser stores it. A name
/// with a character the cookie library percent-encodes (`|`, `^`, `#`, `%`, `` ` ``) was set
/// encoded and read raw, so every login looked fine and the next request was anonymous.
/// (Before: `401` for each of these names.)
async fn every_cookie_name_build_takes_comes_back(db: Db) {
    for name in ["__Host-a|b", "__Host-a^b", "__Host-a#b", "__Host-a%b", "__Host-a`b"] {
        let app = app_with(db.clone(), |b| b.cookie_name(name)).await;
        let login = send(&app.router, login_request(ALICE, ALICE_PASSWORD)).await;
        let set = login.set_cookies();
        let pair = set.first().and_then(|c| c.split(';').next()).unwrap_or_default();
        assert!(pair.starts_with(&format!("{name}=")), "{name}: {set:?}");
        let me = Request::get("/me").header(header::COOKIE, pair).body(Body::empty()).unwrap();
        assert_eq!(send(&app.router, me).await.status, StatusCode::OK, "{name}");
    }
}


async fn login_sets_exactly_the_secure_cookie(db: Db) {
    let app = app(db).await;
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

async fn a_session_works_and_names_its_user(db: Db) {
    let app = app(db).await;
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

async fn every_login_makes_an_unrelated_token(db: Db) {
    let app = app(db).await;
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

async fn the_database_holds_only_a_hash_of_the_secret(db: Db) {
    let app = app(db).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    let (id, secret) = token.split_once('.').unwrap();
    let secret_bytes = URL_SAFE_NO_PAD.decode(secret).unwrap();
    let hex: String = secret_bytes.iter().map(|b| format!("{b:02x}")).collect();

    let row = app.db.session_row_text().await;
    assert!(!row.contains(secret), "{row}");
    assert!(!row.contains(&hex), "{row}");
    assert!(!row.contains(&token));

    let (stored_id, hash) = app.db.session_id_and_hash().await;
    assert_eq!(stored_id, id);
    assert_eq!(hash, Sha256::digest(&secret_bytes).to_vec());
    // The stored hash is not a credential: presenting it instead of the secret fails.
    let forged = format!("{id}.{}", URL_SAFE_NO_PAD.encode(&hash));
    assert_eq!(app.status("/me", &forged).await, StatusCode::UNAUTHORIZED);
}

async fn flipping_any_character_of_the_token_is_401(db: Db) {
    let app = app(db).await;
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

async fn an_unknown_well_formed_token_is_401_and_cleared(db: Db) {
    let app = app(db).await;
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
    let (stored_id, _) = app.db.session_id_and_hash().await;
    assert_ne!(stored_id, planted_id);
    assert_eq!(app.sessions().await, 1);
}

/// A request sent with the cookie a rotation (sudo mode here) replaced is refused but does not
/// clear the cookie: the browser may already hold the new one, and an answer that arrives after
/// the rotation's would delete it. Once the session has ended, the old token is cleared like any
/// other. (Before: `Set-Cookie: session=; Max-Age=0` at once.)
async fn a_token_a_rotation_replaced_is_refused_without_clearing_the_cookie(db: Db) {
    let app = app(db).await;
    let (old, new) = rotated(&app).await;
    assert_ne!(new, old);

    let late = app.get("/me", &old).await;
    assert_eq!(late.status, StatusCode::UNAUTHORIZED);
    assert_eq!(late.set_cookies(), Vec::<String>::new(), "the cookie is left alone");
    assert_eq!(app.status("/me", &new).await, StatusCode::OK);

    let logout = post_form("/logout", &new, "");
    assert_eq!(send(&app.router, logout).await.status, StatusCode::SEE_OTHER);
    let ended = app.get("/me", &old).await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED);
    assert_eq!(ended.session_cookie().as_deref(), Some(""), "cleared once the session ended");
}

/// A logout sent with the cookie a rotation replaced (another tab's sudo mode committed while
/// it was on its way) ends the rotation's copy: the browser is signed out whichever answer it
/// takes last. Only with the replaced token's secret: the same id with another secret is an
/// unknown token, and its cookie is cleared. (Before: the logout was anonymous, ended nothing,
/// and the copy stayed signed in.)
async fn a_logout_with_the_token_a_rotation_replaced_ends_the_copy(db: Db) {
    let app = app(db).await;
    let (old, copy) = rotated(&app).await;

    let other_secret = axum_live_auth::SessionToken::generate().unwrap().to_string();
    let forged = format!("{}.{}", old.split_once('.').unwrap().0, other_secret.split_once('.').unwrap().1);
    let refused = app.get("/me", &forged).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.session_cookie().as_deref(), Some(""), "an unknown token: cleared");
    send(&app.router, post_form("/logout", &forged, "")).await;
    assert_eq!(app.status("/me", &copy).await, StatusCode::OK, "a forged secret ends nothing");

    let logout = send(&app.router, post_form("/logout", &old, "")).await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER);
    assert_eq!(app.status("/me", &copy).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.sessions().await, 0);
}

/// The replaced token is told apart from an unknown one only until the copy's first touch (a
/// touch interval at the earliest): after it, its cookie is cleared as any unknown one, and a logout
/// with it ends nothing. (Before: for the copy's whole life, so that a token an app rotated
/// away because it may have leaked could still end the new session.)
async fn a_replaced_token_is_told_apart_only_until_the_copys_first_touch(db: Db) {
    let app = app_with(db, |b| b.touch_interval(std::time::Duration::from_secs(1))).await;
    let (old, copy) = rotated(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.status("/me", &copy).await, StatusCode::OK); // its first touch
    let late = app.get("/me", &old).await;
    assert_eq!(late.session_cookie().as_deref(), Some(""), "now an unknown token");
    send(&app.router, post_form("/logout", &old, "")).await;
    assert_eq!(app.status("/me", &copy).await, StatusCode::OK, "the old token ends nothing");
}

/// Nor for longer than a touch interval after the rotation, when the copy is never used (the
/// user left): a token rotated away then cannot end the new session hours later. (Before: the
/// copy kept the replaced hash until its first touch, however late, and a logout with the old
/// token signed the user out.)
async fn a_replaced_token_is_told_apart_for_a_touch_interval_only(db: Db) {
    let app = app_with(db, |b| b.touch_interval(std::time::Duration::from_secs(1))).await;
    let (old, copy) = rotated(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let late = app.get("/me", &old).await;
    assert_eq!(late.session_cookie().as_deref(), Some(""), "now an unknown token");
    send(&app.router, post_form("/logout", &old, "")).await;
    assert_eq!(app.status("/me", &copy).await, StatusCode::OK, "the old token ends nothing");
}

async fn login_over_a_live_session_replaces_it(db: Db) {
    let app = app(db).await;
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

/// A login sent with a token another tab's rotation just replaced ends the rotation's copy, as
/// a logout does: on a shared computer, the next user's login leaves no session of the last one,
/// whichever answer the browser takes last. (Before: the copy stayed live.)
async fn a_login_over_a_token_a_rotation_replaced_ends_the_copy(db: Db) {
    let app = app(db).await;
    let (old, copy) = rotated(&app).await;
    let mut request = login_request(BOB, BOB_PASSWORD);
    request
        .headers_mut()
        .insert(header::COOKIE, format!("{COOKIE}={old}").parse().unwrap());
    let bob = send(&app.router, request).await.session_cookie().unwrap();
    assert_eq!(app.status("/me", &copy).await, StatusCode::UNAUTHORIZED);
    assert!(app.get("/me", &bob).await.body.contains(BOB));
    assert_eq!(app.sessions().await, 1);
}

async fn failed_logins_look_the_same_for_unknown_user_and_wrong_password(db: Db) {
    let app = app(db).await;
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

async fn logout_deletes_the_session_and_clears_the_cookie(db: Db) {
    let app = app(db).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
let request = Request::post("/logout")
        .header("sec-fetch-site", "same-origin")
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

async fn idle_expiry_is_enforced_by_the_server(db: Db) {
    let app = app(db).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    app.db.expire_idle().await;
    let reply = app.get("/me", &token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.session_cookie().as_deref(), Some(""));
}

async fn absolute_expiry_is_enforced_even_for_an_active_session(db: Db) {
    let app = app(db).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    app.db.expire_absolute_keep_active().await;
    assert_eq!(app.status("/me", &token).await, StatusCode::UNAUTHORIZED);
}

async fn default_deadlines_are_thirty_minutes_and_twelve_hours(db: Db) {
    let app = app(db).await;
    app.login(ALICE, ALICE_PASSWORD).await;
    let (idle, absolute) = app.db.lifetimes().await;
    assert!((idle - 1800.0).abs() < 5.0, "{idle}");
    assert!((absolute - 43200.0).abs() < 5.0, "{absolute}");
}

async fn the_idle_deadline_moves_at_most_once_per_touch_interval(db: Db) {
    let app = app(db).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    let before = app.db.deadlines().await;
    for _ in 0..5 {
        assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    }
    assert_eq!(
        app.db.deadlines().await,
        before,
        "no write within the interval"
    );

    // Pretend the last touch was four minutes ago (default interval: three minutes).
    app.db.age_sessions(240, true).await;
    let aged = app.db.deadlines().await;
    assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    let touched = app.db.deadlines().await;
    assert!(touched.0 > aged.0 + 200.0, "last_seen_at moved");
    assert!(touched.1 > aged.1 + 200.0, "idle deadline moved");
    assert!((touched.1 - touched.0 - 1800.0).abs() < 1.0);
    assert_eq!(touched.2, before.2, "the absolute deadline never moves");
    for _ in 0..5 {
        assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    }
    assert_eq!(
        app.db.deadlines().await,
        touched,
        "one write per interval"
    );
}

/// Durations that are no whole number of microseconds (a third of a second) work: the
/// database keeps them to its own precision. (Before, Postgres refused to take them: every login
/// answered `503`, and with such a touch interval no session was ever touched.)
async fn durations_finer_than_the_database_keeps_work(db: Db) {
    let third = std::time::Duration::from_secs(1000) / 3;
    let app = app_with(db, |b| b.idle_timeout(third * 6).touch_interval(third)).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    app.db.age_sessions(400, true).await;
    let aged = app.db.deadlines().await;
    assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    let touched = app.db.deadlines().await;
    assert!(touched.1 > aged.1 + 300.0, "idle deadline moved: {aged:?} {touched:?}");
}

async fn a_wrong_secret_never_touches_the_session(db: Db) {
    let app = app(db).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    app.db.age_sessions(600, false).await;
    let before = app.db.deadlines().await;
    let (id, _) = token.split_once('.').unwrap();
    let other = axum_live_auth::SessionToken::generate()
        .unwrap()
        .to_string();
    let wrong = format!("{id}.{}", other.split_once('.').unwrap().1);
    assert_eq!(app.status("/me", &wrong).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.db.deadlines().await, before);
}

async fn the_idle_deadline_never_passes_the_absolute_one(db: Db) {
    let app = app(db).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    // Ten minutes of absolute lifetime left, touch due.
    app.db.near_absolute_deadline().await;
    assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    let (_, idle, absolute) = app.db.deadlines().await;
    assert_eq!(idle, absolute);
}

async fn configured_timeouts_are_used(db: Db) {
    let app = app_with(db, |b| {
        b.idle_timeout(secs(600))
            .absolute_timeout(secs(3600))
            .touch_interval(secs(30))
    })
    .await;
    app.login(ALICE, ALICE_PASSWORD).await;
    let (idle, absolute) = app.db.lifetimes().await;
    assert!((idle - 600.0).abs() < 5.0, "{idle}");
    assert!((absolute - 3600.0).abs() < 5.0, "{absolute}");
}

async fn sessions_record_user_agent_and_start_authenticated(db: Db) {
    let app = app(db).await;
    app.login(ALICE, ALICE_PASSWORD).await;
    let (agent, fresh) = app.db.session_meta().await;
    assert_eq!(agent.as_deref(), Some("integration-test/1.0"));
    assert!(fresh);
}

async fn browser_pages_are_redirected_to_login_when_configured(db: Db) {
    let app = app_with(db, |b| b.login_redirect("/login")).await;
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
        .header("sec-fetch-site", "same-origin")
        .header(header::ACCEPT, "text/html")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app.router, post).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn deleting_the_user_ends_their_sessions(db: Db) {
    let app = app(db).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    app.db.exec("DELETE FROM auth_users WHERE username = 'bob'").await;
    assert_eq!(app.status("/me", &token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.sessions().await, 0);
}

async fn the_token_is_only_read_from_the_cookie(db: Db) {
    let app = app(db).await;
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
}
