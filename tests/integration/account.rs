//! Session and account management: devices, log out everywhere, password change, sudo mode,
//! the session cap, the purge and the security events.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, http::Request};
use http::{StatusCode, header};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, Reply, TestApp, app, app_with, both_stores,
    login_request, post_form as post, send,
};

const NEW_PASSWORD: &str = "a-brand-new-password";

fn public_id(token: &str) -> &str {
    token.split_once('.').unwrap().0
}

async fn call(app: &TestApp, path: &str, token: &str, form: &str) -> Reply {
    send(&app.router, post(path, token, form)).await
}

/// An Argon2id hash of `password` with far weaker parameters than the crate's (m=1024, t=1),
/// as an import from another system might hold.
fn weak_hash(password: &str) -> String {
    use argon2::{Algorithm, Argon2, Params, Version};
    use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
    let salt = b"an-imported-salt";
    let mut out = [0u8; 32];
    let params = Params::new(1024, 1, 1, Some(32)).unwrap();
    (Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
        .hash_password_into(password.as_bytes(), salt, &mut out)
        .unwrap();
    let (salt, out) = (STANDARD_NO_PAD.encode(salt), STANDARD_NO_PAD.encode(out));
    format!("$argon2id$v=19$m=1024,t=1,p=1${salt}${out}")
}

both_stores! {
    /// A login whose password verifies against a hash with other parameters than the crate's
    /// (an imported one) stores it again with the crate's: the user's sessions stay (same
    /// password, same credential epoch), and the new hash logs in. A hash changed by hand
    /// still ends them. (Before: a weak hash stayed for good, and its logins answered faster
    /// than any other account's.)
    async fn a_login_stores_an_outdated_hash_again_and_keeps_the_sessions(db: Db) {
        let app = app(db).await;
        // Imported as a rehash would store it, so that the session below survives the import.
        let weak = weak_hash(BOB_PASSWORD);
        let import = format!(
            "UPDATE auth_users SET password_hash = '{weak}', password_rehashes = password_rehashes + 1
              WHERE id = {}",
            app.bob
        );
        let before = app.login(BOB, BOB_PASSWORD).await;
        app.db.exec(&import).await;
        assert_eq!(app.status("/me", &before).await, StatusCode::OK);

        let rehashing = app.login(BOB, BOB_PASSWORD).await;
        let stored = app.db.password_hash(app.bob).await;
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert_ne!(stored, weak);
        assert_eq!(app.status("/me", &before).await, StatusCode::OK, "the other session stays");
        assert_eq!(app.status("/me", &rehashing).await, StatusCode::OK);
        let again = app.login(BOB, BOB_PASSWORD).await;
        assert_eq!(app.db.password_hash(app.bob).await, stored, "a current hash stays");
        assert_eq!(app.status("/me", &again).await, StatusCode::OK);

        // Restored from a backup, the count with it: not a renewal, every session ends.
        let restore = format!(
            "UPDATE auth_users SET password_hash = '{weak}', password_rehashes = 0 WHERE id = {}",
            app.bob
        );
        app.db.exec(&restore).await;
        assert_eq!(app.status("/me", &before).await, StatusCode::UNAUTHORIZED);
    }

    /// Names given before the rules were this strict (0.1.0 took decomposed names and
    /// invisible characters), or by SQL: a user stored decomposed is found and logs in as
    /// stored, also once the composed spelling is another user's; a role with an invisible
    /// character can still be taken away; a typo in a revoke is still refused as invalid.
    /// (Before, the decomposed user was not found, and the role could not be unassigned.)
    async fn names_given_before_the_rules_can_still_be_found_and_revoked(db: Db) {
        let app = crate::common::app(db).await;
        app.db
            .exec_each(
                "INSERT INTO auth_users (username, password_hash)
                 SELECT 'Jose' || chr(769), password_hash FROM auth_users WHERE username = 'bob'",
                "INSERT INTO auth_users (username, password_hash)
                 SELECT 'Jose' || char(769), password_hash FROM auth_users WHERE username = 'bob'",
            )
            .await;
        let legacy = app.accounts.user_id("Jose\u{301}").await.unwrap().expect("found as stored");
        let composed = app.accounts.create_user("Jos\u{e9}", "jose-password-1").await.unwrap();
        assert_eq!(app.accounts.user_id("Jose\u{301}").await.unwrap(), Some(legacy));
        assert_eq!(app.accounts.user_id("Jos\u{e9}").await.unwrap(), Some(composed));
        let login = crate::common::send(&app.router, login_request("Jose\u{301}", BOB_PASSWORD)).await;
        assert_eq!(login.status, StatusCode::SEE_OTHER, "the stored spelling logs in");

        app.db
            .exec_each(
                "INSERT INTO auth_roles (name) VALUES ('ops' || chr(8203))",
                "INSERT INTO auth_roles (name) VALUES ('ops' || char(8203))",
            )
            .await;
        app.db
            .exec(&format!(
                "INSERT INTO auth_user_roles (user_id, role_id)
                 SELECT {}, id FROM auth_roles WHERE name LIKE 'ops%'",
                app.alice
            ))
            .await;
        assert!(app.accounts.unassign_role(app.alice, "ops\u{200B}").await.unwrap());
        assert!(matches!(
            app.accounts.unassign_role(app.alice, "two words").await,
            Err(axum_live_auth::Error::InvalidName)
        ));
        // A NUL is refused alike on both stores (Postgres could not even be asked: `503`).
        assert!(matches!(
            app.accounts.revoke_permission(app.alice, "a\0b").await,
            Err(axum_live_auth::Error::InvalidName)
        ));
        assert!(matches!(
            app.accounts.revoke_role_permission("ops\0", "p").await,
            Err(axum_live_auth::Error::InvalidName)
        ));
    }

    /// "Enter your password to sign out your other devices": the reauthentication rotates the
    /// session, and the revocation that follows in the same request keeps the new session, not
    /// the old one, and lists it as current. (Before, the handle still acted as the replaced
    /// session: the revocation ended the new session too, while the response set its cookie.)
    async fn a_revocation_after_a_rotation_in_one_request_keeps_the_new_session(db: Db) {
        let app = crate::common::app(db).await;
        let phone = app.login(BOB, BOB_PASSWORD).await;
        let laptop = app.login(BOB, BOB_PASSWORD).await;
        let form = format!("password={BOB_PASSWORD}&revoke=others");
        let reply = crate::common::send(
            &app.router,
            crate::common::post_form("/reauth-and-revoke", &phone, &form),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body, "1 1", "one other session ended; the new one is current");
        let renewed = reply.session_cookie().expect("the rotated session's cookie");
        assert_eq!(app.status("/me", &renewed).await, StatusCode::OK);
        assert_eq!(app.status("/me", &laptop).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.status("/me", &phone).await, StatusCode::UNAUTHORIZED);

        // Revoking the request's own session by the id it came with, after a rotation in the
        // same request, is a logout: the cookie is cleared, not set to the ended session.
        let form = format!("password={BOB_PASSWORD}&revoke=own");
        let reply = crate::common::send(
            &app.router,
            crate::common::post_form("/reauth-and-revoke", &renewed, &form),
        )
        .await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "true"));
        assert_eq!(reply.session_cookie().as_deref(), Some(""), "the cookie is cleared");
        assert_eq!(app.sessions().await, 0);
    }

    /// Without a messenger a reset link cannot be sent: the route says so (`500`), as its
    /// documentation does. (Before: `202`, and the error only in the log.)
    async fn a_reset_request_without_a_messenger_is_an_error(db: Db) {
        let app = app(db).await;
        let request = Request::post("/account/password-reset")
            .header("sec-fetch-site", "same-origin")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("username=alice"))
            .unwrap();
        assert_eq!(send(&app.router, request).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    async fn revoke_others_ends_the_other_device_and_keeps_this_one(db: Db) {
        let app = app(db).await;
        let first = app.login(ALICE, ALICE_PASSWORD).await;
        let second = app.login(ALICE, ALICE_PASSWORD).await;
        let bob = app.login(BOB, BOB_PASSWORD).await;
        let reply = call(&app, "/account/sessions/revoke-others", &first, "").await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(app.status("/me", &second).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.status("/me", &first).await, StatusCode::OK);
        assert_eq!(app.status("/me", &bob).await, StatusCode::OK, "other users untouched");
    }

    async fn the_session_list_names_devices_and_never_a_secret(db: Db) {
        let app = app(db).await;
        let first = app.login(ALICE, ALICE_PASSWORD).await;
        let second = app.login(ALICE, ALICE_PASSWORD).await;
        app.login(BOB, BOB_PASSWORD).await;
        let reply = app.get("/account/sessions", &first).await;
        assert_eq!(reply.status, StatusCode::OK);
        let list: Vec<serde_json::Value> = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(list.len(), 2, "alice's sessions only: {list:?}");
        let ids: Vec<&str> = list.iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert!(ids.contains(&public_id(&first)) && ids.contains(&public_id(&second)));
        for session in &list {
            let current = session["id"] == public_id(&first);
            assert_eq!(session["current"], current);
            assert_eq!(session["user_agent"], "integration-test/1.0");
            for field in ["created_at", "last_seen_at", "idle_expires_at", "expires_at"] {
                assert!(session[field].as_str().unwrap().ends_with('Z'), "{field}: {session}");
            }
        }
        for token in [&first, &second] {
            let secret = token.split_once('.').unwrap().1;
            assert!(!reply.body.contains(secret));
        }
        assert!(!reply.body.contains("hash"));
    }

    async fn revoking_another_device_needs_recent_authentication(db: Db) {
        let app = app(db).await;
        let phone = app.login(ALICE, ALICE_PASSWORD).await;
        let laptop = app.login(ALICE, ALICE_PASSWORD).await;
        let path = format!("/account/sessions/{}/revoke", public_id(&laptop));
        // Sixteen minutes after login the default fifteen-minute window has closed.
        app.db.age_authentication(public_id(&phone), 16 * 60).await;
        let refused = call(&app, &path, &phone, "").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.body, r#"{"error":"reauth_required"}"#);
        assert_eq!(app.status("/me", &laptop).await, StatusCode::OK);

        let wrong = call(&app, "/account/reauth", &phone, "password=wrong-password").await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN);
        assert_eq!(wrong.body, r#"{"error":"invalid_credentials"}"#);
        let reauth = call(&app, "/account/reauth", &phone, "password=alice-password").await;
        assert_eq!(reauth.status, StatusCode::NO_CONTENT);
        let phone2 = reauth.session_cookie().expect("reauthentication rotates the token");
        assert_ne!(phone2, phone);
        assert_eq!(app.status("/me", &phone).await, StatusCode::UNAUTHORIZED, "old token dead");

        let revoked = call(&app, &path, &phone2, "").await;
        assert_eq!(revoked.status, StatusCode::NO_CONTENT);
        assert_eq!(app.status("/me", &laptop).await, StatusCode::UNAUTHORIZED);
        let unknown = call(&app, &path, &phone2, "").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        // Another user's session id is "not found" too, and stays alive.
        let bob = app.login(BOB, BOB_PASSWORD).await;
        let other = format!("/account/sessions/{}/revoke", public_id(&bob));
        assert_eq!(call(&app, &other, &phone2, "").await.status, StatusCode::NOT_FOUND);
        assert_eq!(app.status("/me", &bob).await, StatusCode::OK);

        // Ending one's own session needs no reauthentication: it is a logout.
        app.db.age_authentication(public_id(&phone2), 16 * 60).await;
        let own = format!("/account/sessions/{}/revoke", public_id(&phone2));
        let logout = call(&app, &own, &phone2, "").await;
        assert_eq!(logout.status, StatusCode::NO_CONTENT);
        assert_eq!(logout.session_cookie().as_deref(), Some(""));
        assert_eq!(app.status("/me", &phone2).await, StatusCode::UNAUTHORIZED);
    }

    async fn the_sudo_window_is_fifteen_minutes_and_does_not_slide(db: Db) {
        let app = app(db).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let revoke_others = |token: String| {
            let app = app.clone();
            async move { call(&app, "/account/sessions/revoke-others", &token, "").await.status }
        };
        assert_eq!(revoke_others(token.clone()).await, StatusCode::NO_CONTENT);
        app.db.age_authentication(public_id(&token), 14 * 60).await;
        assert_eq!(revoke_others(token.clone()).await, StatusCode::NO_CONTENT);
        // Using the session does not extend the window: not even a use that touches it (a
        // touch that set `authenticated_at` too would reopen the window here).
        app.db.age_authentication(public_id(&token), 16 * 60).await;
        app.db.age_sessions(600, false).await;
        let before = app.db.deadlines().await;
        assert_eq!(app.status("/me", &token).await, StatusCode::OK);
        assert!(app.db.deadlines().await.0 > before.0, "the use touched the session");
        assert_eq!(revoke_others(token.clone()).await, StatusCode::FORBIDDEN);
        let reauth = call(&app, "/account/reauth", &token, "password=alice-password").await;
        let token = reauth.session_cookie().unwrap();
        assert_eq!(revoke_others(token.clone()).await, StatusCode::NO_CONTENT);
        app.db.age_authentication(public_id(&token), 16 * 60).await;
        assert_eq!(revoke_others(token).await, StatusCode::FORBIDDEN);
    }

    async fn changing_the_password_ends_every_other_session_and_the_old_cookie(db: Db) {
        let app = app(db).await;
        let this = app.login(ALICE, ALICE_PASSWORD).await;
        let other = app.login(ALICE, ALICE_PASSWORD).await;
        let third = app.login(ALICE, ALICE_PASSWORD).await;
        let (created, expires) = app.db.created_and_expires(public_id(&this)).await;

        let form = format!("current_password=wrong-password&new_password={NEW_PASSWORD}");
        let refused = call(&app, "/account/password", &this, &form).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(app.status("/me", &other).await, StatusCode::OK, "nothing changed");
        let short = call(&app, "/account/password", &this, "current_password=alice-password&new_password=short").await;
        assert_eq!(short.status, StatusCode::BAD_REQUEST);

        let form = format!("current_password=alice-password&new_password={NEW_PASSWORD}");
        let changed = call(&app, "/account/password", &this, &form).await;
        assert_eq!(changed.status, StatusCode::NO_CONTENT);
        let rotated = changed.session_cookie().expect("the current session is rotated");
        for dead in [&this, &other, &third] {
            assert_eq!(app.status("/me", dead).await, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(app.status("/me", &rotated).await, StatusCode::OK);
        // Rotation keeps the login time and the absolute deadline.
        assert_eq!(app.db.created_and_expires(public_id(&rotated)).await, (created, expires));

        let old = send(&app.router, login_request(ALICE, ALICE_PASSWORD)).await;
        assert_eq!(old.status, StatusCode::UNAUTHORIZED);
        app.login(ALICE, NEW_PASSWORD).await;
    }

    async fn resetting_a_password_ends_every_session(db: Db) {
        let app = app(db).await;
        let tokens = [
            app.login(ALICE, ALICE_PASSWORD).await,
            app.login(ALICE, ALICE_PASSWORD).await,
        ];
        let bob = app.login(BOB, BOB_PASSWORD).await;
        app.accounts.reset_password(app.alice, NEW_PASSWORD).await.unwrap();
        for token in &tokens {
            assert_eq!(app.status("/me", token).await, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(app.status("/me", &bob).await, StatusCode::OK);
        app.login(ALICE, NEW_PASSWORD).await;
    }

    async fn the_library_lists_and_revokes_sessions(db: Db) {
        let app = app(db).await;
        let a = app.login(ALICE, ALICE_PASSWORD).await;
        let b = app.login(ALICE, ALICE_PASSWORD).await;
        let sessions = app.accounts.list_sessions(app.alice).await.unwrap();
        assert_eq!(sessions.len(), 2);
        assert!(sessions.iter().all(|s| !s.current));
        assert!(app.accounts.revoke_session(app.alice, &axum_live_auth::SessionId::parse(public_id(&a)).unwrap()).await.unwrap());
        assert!(!app.accounts.revoke_session(app.bob, &axum_live_auth::SessionId::parse(public_id(&b)).unwrap()).await.unwrap());
        assert_eq!(app.status("/me", &a).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.status("/me", &b).await, StatusCode::OK);
        assert_eq!(app.accounts.revoke_all_sessions(app.alice).await.unwrap(), 1);
        assert_eq!(app.status("/me", &b).await, StatusCode::UNAUTHORIZED);
    }

    async fn the_session_cap_ends_the_least_recently_used(db: Db) {
        let app = app_with(db, |b| b.max_sessions_per_user(3)).await;
        let t1 = app.login(ALICE, ALICE_PASSWORD).await;
        let t2 = app.login(ALICE, ALICE_PASSWORD).await;
        let t3 = app.login(ALICE, ALICE_PASSWORD).await;
        // t1 is the oldest, but used again after a touch interval: t2 is now the least recent.
        app.db.age_sessions(600, false).await;
        assert_eq!(app.status("/me", &t1).await, StatusCode::OK);
        let t4 = app.login(ALICE, ALICE_PASSWORD).await;
        assert_eq!(app.status("/me", &t2).await, StatusCode::UNAUTHORIZED);
        for live in [&t1, &t3, &t4] {
            assert_eq!(app.status("/me", live).await, StatusCode::OK);
        }
        assert_eq!(app.sessions().await, 3);
        let bob = app.login(BOB, BOB_PASSWORD).await;
        assert_eq!(app.status("/me", &bob).await, StatusCode::OK, "the cap is per user");
        // And bob's login ended none of alice's (a cap counted across users would have).
        for live in [&t1, &t3, &t4] {
            assert_eq!(app.status("/me", live).await, StatusCode::OK, "alice's session ended");
        }
        assert_eq!(app.sessions().await, 4);
    }

    async fn the_purge_deletes_only_expired_sessions(db: Db) {
        let app = app(db).await;
        let live = app.login(ALICE, ALICE_PASSWORD).await;
        let idle = app.login(BOB, BOB_PASSWORD).await;
        let absolute = app.login(BOB, BOB_PASSWORD).await;
        app.db
            .exec_each(
                &format!("UPDATE auth_sessions SET idle_expires_at = now() - interval '1 second' WHERE id = '{}'", public_id(&idle)),
                &format!("UPDATE auth_sessions SET idle_expires_at = NOW - 1000 WHERE id = '{}'", public_id(&idle)),
            )
            .await;
        app.db
            .exec_each(
                &format!("UPDATE auth_sessions SET expires_at = now() - interval '1 second', idle_expires_at = now() - interval '1 second' WHERE id = '{}'", public_id(&absolute)),
                &format!("UPDATE auth_sessions SET expires_at = NOW - 1000, idle_expires_at = NOW - 1000 WHERE id = '{}'", public_id(&absolute)),
            )
            .await;
        assert_eq!(app.accounts.purge_expired_sessions().await.unwrap(), 2);
        assert_eq!(app.sessions().await, 1);
        assert_eq!(app.status("/me", &live).await, StatusCode::OK);
    }

    async fn security_events_name_sessions_by_public_id_and_never_leak_a_token(db: Db) {
        let logs = Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let app = app(db).await;
        let mut request = login_request(ALICE, ALICE_PASSWORD);
        request.headers_mut().insert(
            header::USER_AGENT,
            http::HeaderValue::from_bytes(b"evil\xff\"} forged=1").unwrap(),
        );
        let first = send(&app.router, request).await.session_cookie().unwrap();
        let second = app.login(ALICE, ALICE_PASSWORD).await;
        send(&app.router, login_request(ALICE, "wrong-password")).await;
        let reauth = call(&app, "/account/reauth", &first, "password=alice-password").await;
        let first2 = reauth.session_cookie().unwrap();
        let path = format!("/account/sessions/{}/revoke", public_id(&second));
        call(&app, &path, &first2, "").await;
        let third = app.login(ALICE, ALICE_PASSWORD).await;
        call(&app, "/account/sessions/revoke-others", &first2, "").await;
        let form = format!("current_password=alice-password&new_password={NEW_PASSWORD}");
        let changed = call(&app, "/account/password", &first2, &form).await;
        let first3 = changed.session_cookie().unwrap();
        call(&app, "/logout", &first3, "").await;
        let expiring = app.login(BOB, BOB_PASSWORD).await;
        app.db.expire_idle().await;
        app.accounts.purge_expired_sessions().await.unwrap();

        let text = logs.text();
        for event in [
            "login", "login_failed", "logout", "session_revoked", "sessions_revoked_all",
            "rotated", "password_changed", "reauth", "expired",
        ] {
            assert!(text.contains(&format!("event=\"{event}\"")), "no {event} event in:\n{text}");
        }
        assert!(text.contains(&format!("session_id={}", public_id(&first))));
        assert!(text.contains(&format!("user_id={}", app.alice)));
        for token in [&first, &second, &third, &first2, &first3, &expiring] {
            let secret = token.split_once('.').unwrap().1;
            assert!(!text.contains(secret), "a secret leaked into the logs");
        }
        // A user agent is a field, escaped: its quote cannot end the field and forge another.
        assert!(text.contains("user_agent=Some(\"evil\u{fffd}\\\"} forged=1\")"), "{text}");
    }
}

/// Captures every event, from this crate and its dependencies, as formatted text.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// A subscriber for this thread (`tracing::subscriber::set_default`).
    ///
    /// Tests run in parallel threads, and tracing caches per call site whether anyone listens:
    /// a process-wide subscriber that listens to everything keeps that cache from switching
    /// events off while a thread without a subscriber of its own runs them.
    pub(crate) fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        crate::common::statements::install_global();
        let logs = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// --- Postgres only: a database that goes away and comes back ----------------------------------
//
// Terminating the pool's server connections needs a server; SQLite in the process cannot lose
// its connection that way.

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn the_purge_survives_lost_connections_and_stops_with_the_layer(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let pool = PgPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(2)
        .connect_with(options.clone())
        .await
        .unwrap();
    let app = app_with(pool.clone(), |b| {
        b.purge_expired_every(Duration::from_millis(50))
    })
    .await;
    let background = tokio::spawn(app.layer.background());
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.database("postgres"))
        .await
        .unwrap();
    let expire_one = || {
        let app = app.clone();
        async move {
            app.login(BOB, BOB_PASSWORD).await;
            app.db.expire_idle().await;
        }
    };
    let purged = || {
        let app = app.clone();
        async move {
            for _ in 0..200 {
                if app.sessions().await == 0 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        }
    };

    expire_one().await;
    assert!(purged().await, "the task purges");

    // Kill every server connection of the pool: the task's next purge fails on a dead
    // connection, and a later one succeeds on a new connection.
    for round in 0..3 {
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(&database)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert!(killed > 0, "round {round}: nothing to kill");
        tokio::time::sleep(Duration::from_millis(120)).await;
        expire_one().await;
        assert!(
            purged().await,
            "round {round}: the task still purges after losing its connection"
        );
    }
    assert!(
        logs.text().contains("purging expired sessions failed"),
        "the task saw the lost connection (else this test proves nothing)"
    );

    // Drop the app (and with it the layer): the background work ends.
    app.login(ALICE, ALICE_PASSWORD).await;
    let db = app.db.clone();
    drop(app);
    tokio::time::timeout(Duration::from_secs(5), background)
        .await
        .expect("the background work ends with the layer")
        .unwrap();
    db.expire_idle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM auth_sessions").await,
        1,
        "nothing purges once the layer is gone"
    );
    pool.close().await;
    admin.close().await;
}

/// Requests behind `RecentAuth` and the account routes also need a session at all.
#[tokio::test]
async fn account_routes_need_a_session() {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(axum_live_auth::sqlite_connect_options("sqlite::memory:").unwrap())
        .await
        .unwrap();
    axum_live_auth::migrate(&pool).await.unwrap();
    let app = app(pool).await;
    for (method, path) in [
        ("GET", "/account/sessions"),
        ("POST", "/account/sessions/revoke-others"),
        ("POST", "/account/sessions/AAAAAAAAAAAAAAAAAAAAAA/revoke"),
        ("POST", "/account/password"),
        ("POST", "/account/reauth"),
    ] {
        let request = Request::builder()
            .method(method)
            .header("sec-fetch-site", "same-origin")
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("password=x&current_password=x&new_password=x"))
            .unwrap();
        assert_eq!(
            send(&app.router, request).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
}

/// Holds every commit that inserted a session for `ms`, after the rest of its transaction ran.
async fn slow_commits(pool: &sqlx::PgPool, ms: u32) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep({ms} / 1000.0); RETURN NEW; END $$;
         CREATE CONSTRAINT TRIGGER slow_insert AFTER INSERT ON auth_sessions
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_insert();"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// Six logins of one user at once, with a cap of three, leave three sessions. Each new session
/// sleeps 200 ms as its transaction commits (a deferred trigger of this test), after it ended
/// the least recently used ones: the logins' transactions overlap there, and each must still
/// count the others' sessions.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn the_session_cap_holds_when_logins_overlap(pool: sqlx::PgPool) {
    slow_commits(&pool, 200).await;
    let app = app_with(pool, |b| {
        // Not this test's business: more than five logins of one account at once.
        b.max_sessions_per_user(3)
            .password_hashing(6, 6)
            .login_backoff(1000, Duration::from_secs(1))
    })
    .await;
    let logins = (0..6).map(|_| app.login(ALICE, ALICE_PASSWORD));
    futures_util::future::join_all(logins).await;
    assert_eq!(app.sessions().await, 3);
}

/// A database whose default isolation is stricter than read committed (some shops set
/// `serializable`) changes nothing: overlapping logins, failed logins and rotations answer as
/// under the default. (Before, overlapping logins answered 503: "could not serialize access".)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_stricter_default_isolation_changes_nothing(_: PgPoolOptions, options: PgConnectOptions) {
    for level in ["repeatable read", "serializable"] {
        let pool = PgPoolOptions::new()
            .connect_with(
                options
                    .clone()
                    .options([("default_transaction_isolation", level)]),
            )
            .await
            .unwrap();
        sqlx::query("TRUNCATE auth_sessions, auth_login_attempts")
            .execute(&pool)
            .await
            .unwrap();
        let app = app_with(pool.clone(), |b| {
            b.max_sessions_per_user(3)
                .password_hashing(6, 6)
                .login_backoff(1000, Duration::from_secs(1))
        })
        .await;
        slow_commits(&pool, 100).await;
        let logins = (0..6).map(|_| send(&app.router, login_request(ALICE, ALICE_PASSWORD)));
        let replies = futures_util::future::join_all(logins).await;
        let statuses: Vec<_> = replies.iter().map(|r| r.status).collect();
        assert!(
            statuses.iter().all(|s| *s == StatusCode::SEE_OTHER),
            "{level}: {statuses:?}"
        );
        assert_eq!(app.sessions().await, 3, "{level}");
        let wrong = (0..6).map(|_| send(&app.router, login_request(BOB, "wrong-password")));
        let replies = futures_util::future::join_all(wrong).await;
        let statuses: Vec<_> = replies.iter().map(|r| r.status).collect();
        assert!(
            statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
            "{level}: {statuses:?}"
        );
        let phone = app.login(ALICE, ALICE_PASSWORD).await;
        let reauths =
            (0..6).map(|_| call(&app, "/account/reauth", &phone, "password=alice-password"));
        let replies = futures_util::future::join_all(reauths).await;
        let successors = replies.iter().filter_map(Reply::session_cookie).count();
        let statuses: Vec<_> = replies.iter().map(|r| r.status).collect();
        assert_eq!(successors, 1, "{level}: {statuses:?}");
        assert!(
            statuses
                .iter()
                .all(|s| [StatusCode::NO_CONTENT, StatusCode::UNAUTHORIZED].contains(s)),
            "{level}: {statuses:?}"
        );
        sqlx::raw_sql("DROP TRIGGER slow_insert ON auth_sessions; DROP FUNCTION slow_insert()")
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// Under a stricter default isolation, an account change that waits for another change of the
/// same user (an uncommitted grant holds the user's row) is applied once that one commits, not
/// refused: each single-statement write repeats a serialization failure. (Before: each failed
/// with "could not serialize access due to concurrent update".)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn account_changes_that_wait_apply_under_a_stricter_default_isolation(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let strict = options.options([("default_transaction_isolation", "repeatable read")]);
    let pool = PgPoolOptions::new().connect_with(strict).await.unwrap();
    let app = app_with(pool.clone(), |b| b).await;
    let (accounts, bob) = (&app.accounts, app.bob);
    accounts.create_role("auditor").await.unwrap();
    accounts.assign_role(bob, "auditor").await.unwrap();
    type Change<'a> = futures_util::future::BoxFuture<'a, Result<(), axum_live_auth::Error>>;
    let changes: Vec<(&str, Change<'_>)> = vec![
        (
            "grant_permission",
            Box::pin(accounts.grant_permission(bob, "billing:write")),
        ),
        (
            "revoke_permission",
            Box::pin(async {
                accounts
                    .revoke_permission(bob, "reports:read")
                    .await
                    .map(drop)
            }),
        ),
        (
            "unassign_role",
            Box::pin(async { accounts.unassign_role(bob, "auditor").await.map(drop) }),
        ),
        ("enable_user", Box::pin(accounts.enable_user(bob))),
        ("delete_user", Box::pin(accounts.delete_user(bob))),
    ];
    for (i, (name, change)) in changes.into_iter().enumerate() {
        let mut holder = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO auth_user_permissions (user_id, permission) VALUES ($1, $2)")
            .bind(bob)
            .bind(format!("held:{i}"))
            .execute(&mut *holder)
            .await
            .unwrap();
        let release = async {
            assert!(
                wait_for_backends(&pool, "wait_event_type = 'Lock'", 1).await,
                "{name} waits"
            );
            holder.commit().await.unwrap();
        };
        let (done, ()) = tokio::join!(change, release);
        assert!(done.is_ok(), "{name}: {done:?}");
    }
}

/// A successful login gives back its address's attempt only in the window it was counted in:
/// one that reserved just before the window ended and finished after the next one began must
/// not take a failure off the new window. (Before: it did, so that logins to one's own account
/// held across a window's end let the next window check twice its limit of guesses.) The login
/// is held between its two reservations by an uncommitted row of its account's counter.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_login_gives_back_its_attempt_only_in_its_own_window(pool: sqlx::PgPool) {
    let app = app_with(pool.clone(), |b| b).await;
    let from = |mut request: Request<Body>| {
        let address = std::net::SocketAddr::from(([192, 0, 2, 7], 40_000));
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(address));
        request
    };
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO auth_login_attempts (kind, key, failures) VALUES ('user', $1, 0)")
        .bind(format!("id:{}", app.bob))
        .execute(&mut *holder)
        .await
        .unwrap();
    let own = send(&app.router, from(login_request(BOB, BOB_PASSWORD)));
    let next_window = async {
        assert!(wait_for_backends(&pool, "wait_event_type = 'Lock'", 1).await);
        // The address's window, in which the login was counted, ends...
        sqlx::query("UPDATE auth_login_attempts SET window_start = now() - interval '1 day'")
            .execute(&pool)
            .await
            .unwrap();
        // ...a guess starts the next one, and the login goes on.
        let guess = send(&app.router, from(login_request(ALICE, "wrong-password"))).await;
        assert_eq!(guess.status, StatusCode::UNAUTHORIZED);
        holder.rollback().await.unwrap();
    };
    let (own, ()) = tokio::join!(own, next_window);
    assert_eq!(own.status, StatusCode::SEE_OTHER);
    let failures: i32 =
        sqlx::query_scalar("SELECT failures FROM auth_login_attempts WHERE kind = 'ip'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failures, 1, "the guess still counts in its window");
}

/// Six reauthentications of one session at once (each rotates it) leave one successor, not
/// six: only the rotation that ends the old session may create a new one. As above, a deferred
/// trigger holds each commit for 200 ms, so that the rotations overlap.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_session_rotated_at_once_many_times_has_one_successor(pool: sqlx::PgPool) {
    let app = app_with(pool.clone(), |b| {
        b.password_hashing(6, 6)
            .login_backoff(1000, Duration::from_secs(1))
    })
    .await;
    let phone = app.login(ALICE, ALICE_PASSWORD).await;
    slow_commits(&pool, 200).await;
    let reauths = (0..6).map(|_| call(&app, "/account/reauth", &phone, "password=alice-password"));
    let replies = futures_util::future::join_all(reauths).await;
    let successors: Vec<_> = replies.iter().filter_map(Reply::session_cookie).collect();
    assert_eq!(
        successors.len(),
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(app.sessions().await, 1);
    assert_eq!(app.status("/me", &successors[0]).await, StatusCode::OK);
}

/// A ban that lands while the user's session is being rotated ends the new session too (it
/// would live on, refused while the user is disabled and valid again once enabled). The
/// rotation's commit is held for 500 ms; the ban is sent once it is held, and the rotation
/// still succeeds (`204`), so that the ban really raced a rotation that went through.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_ban_during_a_rotation_ends_the_new_session_too(pool: sqlx::PgPool) {
    let app = app_with(pool.clone(), |b| b).await;
    let phone = app.login(ALICE, ALICE_PASSWORD).await;
    slow_commits(&pool, 500).await;
    let reauth = call(&app, "/account/reauth", &phone, "password=alice-password");
    let ban = async {
        wait_for_held_commit(&pool).await;
        app.accounts.disable_user(app.alice).await.unwrap();
    };
    let (rotated, ()) = tokio::join!(reauth, ban);
    assert_eq!(rotated.status, StatusCode::NO_CONTENT, "{}", rotated.body);
    assert!(
        rotated.session_cookie().is_some(),
        "the rotation made a new session"
    );
    assert_eq!(
        app.sessions().await,
        0,
        "every session of a banned user ends"
    );
}

/// The same for a login: a ban that lands while the login's session is being created (its
/// commit held) ends it; the login itself went through (`303`).
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_ban_during_a_login_ends_the_new_session_too(pool: sqlx::PgPool) {
    let app = app_with(pool.clone(), |b| b).await;
    slow_commits(&pool, 500).await;
    let login = send(&app.router, login_request(ALICE, ALICE_PASSWORD));
    let ban = async {
        wait_for_held_commit(&pool).await;
        app.accounts.disable_user(app.alice).await.unwrap();
    };
    let (logged_in, ()) = tokio::join!(login, ban);
    assert_eq!(
        logged_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        logged_in.body
    );
    assert!(
        logged_in.session_cookie().is_some(),
        "the login made a session"
    );
    assert_eq!(
        app.sessions().await,
        0,
        "every session of a banned user ends"
    );
}

/// Logging out in one tab while another tab's reauthentication rotates the same session (its
/// commit held for 500 ms; the logout comes while it is held) ends the rotation's copy too:
/// the browser is signed out whichever answer it takes last. (Before, the logout found the old
/// row gone once the rotation committed, and the copy lived on.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn logging_out_during_a_rotation_ends_the_new_session_too(pool: sqlx::PgPool) {
    let app = app_with(pool.clone(), |b| b).await;
    let tab = app.login(ALICE, ALICE_PASSWORD).await;
    let laptop = app.login(ALICE, ALICE_PASSWORD).await;
    slow_commits(&pool, 500).await;
    let reauth = call(&app, "/account/reauth", &tab, "password=alice-password");
    let logout = async {
        wait_for_held_commit(&pool).await;
        call(&app, "/logout", &tab, "").await
    };
    let (rotated, logged_out) = tokio::join!(reauth, logout);
    assert_eq!(rotated.status, StatusCode::NO_CONTENT);
    assert!(logged_out.status.is_success() || logged_out.status.is_redirection());
    let copy = rotated.session_cookie().unwrap();
    assert_eq!(app.status("/me", &copy).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.status("/me", &laptop).await, StatusCode::OK);
    assert_eq!(app.sessions().await, 1);
}

/// A password change in one tab while another tab's reauthentication rotates the same session
/// (its commit held for 500 ms; the change is sent while it is held and writes after it): the
/// change answers `204`, since the password did change, and the rotation's copy ends with the
/// other sessions (whoever rotated it may be whom the change is to shut out); the user logs in
/// with the new password. (Before: `401`, although the password had changed.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_password_change_during_a_rotation_answers_that_it_changed(pool: sqlx::PgPool) {
    let app = app_with(pool.clone(), |b| b).await;
    let tab = app.login(ALICE, ALICE_PASSWORD).await;
    let laptop = app.login(ALICE, ALICE_PASSWORD).await;
    slow_commits(&pool, 500).await;
    let form = format!("current_password={ALICE_PASSWORD}&new_password={NEW_PASSWORD}");
    let reauth = call(&app, "/account/reauth", &tab, "password=alice-password");
    let change = async {
        wait_for_held_commit(&pool).await;
        call(&app, "/account/password", &tab, &form).await
    };
    let (rotated, changed) = tokio::join!(reauth, change);
    assert_eq!(rotated.status, StatusCode::NO_CONTENT);
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.body);
    let copy = rotated.session_cookie().unwrap();
    assert_eq!(
        app.status("/me", &copy).await,
        StatusCode::UNAUTHORIZED,
        "the copy ended"
    );
    assert_eq!(app.status("/me", &laptop).await, StatusCode::UNAUTHORIZED);
    let old = send(&app.router, login_request(ALICE, ALICE_PASSWORD)).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    app.login(ALICE, NEW_PASSWORD).await;
}

/// A password change renews the session it keeps in its own transaction: when the renewal
/// fails (here a trigger refuses the new session's row), nothing changes, instead of a changed
/// password with the old token (and whoever else holds it) still valid under it. (Before: the
/// password changed in one transaction, the token was renewed in a second; `503`, and both the
/// new password and the old cookie worked.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_password_change_never_leaves_the_old_token_valid_under_the_new_password(
    pool: sqlx::PgPool,
) {
    let app = app_with(pool.clone(), |b| b).await;
    let this = app.login(ALICE, ALICE_PASSWORD).await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_copy() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'no copy'; END $$;
         CREATE TRIGGER refuse_copy BEFORE INSERT ON auth_sessions
             FOR EACH ROW WHEN (NEW.rotated_from IS NOT NULL) EXECUTE FUNCTION refuse_copy();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let form = format!("current_password={ALICE_PASSWORD}&new_password={NEW_PASSWORD}");
    let changed = call(&app, "/account/password", &this, &form).await;
    assert!(changed.status.is_server_error(), "{}", changed.status);
    let old_token_works = app.status("/me", &this).await == StatusCode::OK;
    let new_password = send(&app.router, login_request(ALICE, NEW_PASSWORD)).await;
    assert!(
        !(old_token_works && new_password.status == StatusCode::SEE_OTHER),
        "the old token is valid under the new password"
    );
    assert!(old_token_works, "nothing changed: the session goes on");
}

/// The token a password change replaced is not told apart from an unknown one: whoever else
/// held it (whom the change may be shutting out) cannot end the owner's new session with a
/// logout. (Before: the copy remembered the old secret until its first touch, and a logout with
/// the old token ended it.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn the_token_a_password_change_replaced_cannot_end_the_new_session(pool: sqlx::PgPool) {
    let app = app_with(pool, |b| b).await;
    let old = app.login(ALICE, ALICE_PASSWORD).await;
    let form = format!("current_password={ALICE_PASSWORD}&new_password={NEW_PASSWORD}");
    let changed = call(&app, "/account/password", &old, &form).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.body);
    let new = changed.session_cookie().unwrap();
    send(&app.router, post("/logout", &old, "")).await;
    assert_eq!(app.status("/me", &new).await, StatusCode::OK);
}

/// A reauthentication with the old password while another tab's password change commits (held
/// for 500 ms; the reauthentication checks the password meanwhile and rotates after it) does
/// not count: the session is not made "recently authenticated" by a password that is no
/// longer the user's. (Before: `204`, and sudo mode from the old password.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_reauthentication_with_the_password_a_change_replaced_does_not_count(pool: sqlx::PgPool) {
    let app = app_with(pool.clone(), |b| b).await;
    let tab = app.login(ALICE, ALICE_PASSWORD).await;
    sqlx::raw_sql(
        "CREATE FUNCTION slow_update() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;
         CREATE CONSTRAINT TRIGGER slow_update AFTER UPDATE ON auth_users
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_update();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let form = format!("current_password={ALICE_PASSWORD}&new_password={NEW_PASSWORD}");
    let change = call(&app, "/account/password", &tab, &form);
    let reauth = async {
        wait_for_held_commit(&pool).await;
        call(&app, "/account/reauth", &tab, "password=alice-password").await
    };
    let (changed, reauthed) = tokio::join!(change, reauth);
    assert_ne!(reauthed.status, StatusCode::NO_CONTENT, "{}", reauthed.body);
    assert_eq!(reauthed.session_cookie(), None);
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    let current = changed.session_cookie().unwrap();
    assert_eq!(app.status("/me", &current).await, StatusCode::OK);
}

/// Waits (at most 5 s) until `n` backends of the test database match `condition` (a predicate
/// on `pg_stat_activity`); whether they did.
async fn wait_for_backends(pool: &sqlx::PgPool, condition: &str, n: i64) -> bool {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND {condition}"
    );
    for _ in 0..250 {
        let matching: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
            .fetch_one(pool)
            .await
            .unwrap();
        if matching >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits (at most 5 s) until a commit is held by the test's trigger (see `slow_commits`);
/// fails the test if none ever is (the race it sets up did not happen).
async fn wait_for_held_commit(pool: &sqlx::PgPool) {
    let held = wait_for_backends(pool, "wait_event = 'PgSleep'", 1).await;
    assert!(held, "no commit was ever held by the test's trigger");
}

/// Revoking one device while its session is being rotated (its commit held for 500 ms; the
/// revoke comes while it is held) ends the rotation's copy: the device is signed out, and
/// the revoke says so. (Before, the revoke found the old row gone once the rotation committed,
/// answered `false`, and the copy lived on.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn revoking_a_device_during_its_rotation_ends_the_new_session_too(pool: sqlx::PgPool) {
    let app = app_with(pool.clone(), |b| b).await;
    let phone = app.login(ALICE, ALICE_PASSWORD).await;
    let laptop = app.login(ALICE, ALICE_PASSWORD).await;
    let id = axum_live_auth::SessionId::parse(public_id(&phone)).unwrap();
    slow_commits(&pool, 500).await;
    let reauth = call(&app, "/account/reauth", &phone, "password=alice-password");
    let revoke = async {
        // Once the rotation commits (its held commit sleeps in the test's trigger).
        wait_for_held_commit(&pool).await;
        app.accounts.revoke_session(app.alice, &id).await.unwrap()
    };
    let (rotated, revoked) = tokio::join!(reauth, revoke);
    assert_eq!(rotated.status, StatusCode::NO_CONTENT);
    assert!(revoked, "the revoke found the device");
    let copy = rotated.session_cookie().unwrap();
    assert_eq!(app.status("/me", &copy).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.status("/me", &laptop).await, StatusCode::OK);
    assert_eq!(app.sessions().await, 1);
}

/// Waits until `n` statements of the test database wait for a lock.
async fn wait_for_lock_waiters(pool: &sqlx::PgPool, n: i64) {
    let waiting = wait_for_backends(pool, "wait_event_type = 'Lock'", n).await;
    assert!(waiting, "{n} statements never waited for a lock");
}

/// A password change whose current password was checked before a ban, and whose write lands
/// after it, sets nothing: lifting the ban later does not hand the account to whoever changed
/// it. The test holds bob's row, so that the ban queues first and the change's write second.
/// (Before, the change's write landed after the ban, and the new password logged in once bob
/// was enabled again.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_password_change_racing_a_ban_sets_nothing(pool: sqlx::PgPool) {
    let app = app_with(pool.clone(), |b| b).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let mut hold = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM auth_users WHERE id = $1 FOR UPDATE")
        .bind(app.bob)
        .execute(&mut *hold)
        .await
        .unwrap();
    let ban = {
        let accounts = app.accounts.clone();
        let user = app.bob;
        tokio::spawn(async move { accounts.disable_user(user).await })
    };
    wait_for_lock_waiters(&pool, 1).await;
    let change = {
        let app = app.clone();
        let form = format!("current_password={BOB_PASSWORD}&new_password={NEW_PASSWORD}");
        tokio::spawn(async move { call(&app, "/account/password", &bob, &form).await })
    };
    wait_for_lock_waiters(&pool, 2).await;
    hold.commit().await.unwrap();
    ban.await.unwrap().unwrap();
    let reply = change.await.unwrap();
    assert_ne!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    app.accounts.enable_user(app.bob).await.unwrap();
    let new = send(&app.router, login_request(BOB, NEW_PASSWORD)).await;
    assert_eq!(
        new.status,
        StatusCode::UNAUTHORIZED,
        "the change landed after the ban"
    );
    let old = send(&app.router, login_request(BOB, BOB_PASSWORD)).await;
    assert!(old.session_cookie().is_some(), "{}", old.status);
}
