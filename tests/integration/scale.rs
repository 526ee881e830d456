//! Small versions of the scale properties that `benches/scale.rs` measures large: the purge
//! deletes in bounded batches and leaves live sessions alone; one change sends one notification,
//! however many nodes listen, and purging expired sessions sends none.

use std::time::Duration;

use axum::http::StatusCode;
use axum_live_auth::UserId;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::common::{BOB, BOB_PASSWORD, Db, both_stores, counted_app};

/// `count` sessions of bob whose idle deadline passed a minute ago.
async fn seed_expired(db: &Db, count: u32) {
    db.exec_each(
        &format!(
            "INSERT INTO auth_sessions (id, secret_hash, user_id, idle_expires_at, expires_at)
             SELECT lpad(g::text, 22, 'x'), sha256(convert_to(g::text, 'UTF8')),
                    (SELECT id FROM auth_users WHERE username = 'bob'),
                    now() - interval '1 minute', now() + interval '1 hour'
               FROM generate_series(1, {count}) g"
        ),
        &format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {count})
             INSERT INTO auth_sessions (id, secret_hash, user_id, idle_expires_at, expires_at)
             SELECT substr('xxxxxxxxxxxxxxxxxxxxxx' || n, -22, 22), randomblob(32),
                    (SELECT id FROM auth_users WHERE username = 'bob'),
                    NOW - 60000, NOW + 3600000
               FROM g"
        ),
    )
    .await;
}

/// `count` users `u1` … (no password), inserted in one statement.
async fn seed_users(db: &Db, count: u32) {
    db.exec_each(
        &format!(
            "INSERT INTO auth_users (username) SELECT 'u' || g FROM generate_series(1, {count}) g"
        ),
        &format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {count})
             INSERT INTO auth_users (username) SELECT 'u' || n FROM g"
        ),
    )
    .await;
}

/// Every page of the global holders of `permission`, `size` at a time; each page but the last is
/// full.
async fn every_holder(
    accounts: &axum_live_auth::Accounts,
    permission: &str,
    size: u32,
) -> Vec<UserId> {
    let project = axum_live_auth::Resource::new("project", "1").unwrap();
    let (mut all, mut after, mut full) = (Vec::new(), 0, true);
    loop {
        let page = accounts
            .holders(permission, &project, after, size)
            .await
            .unwrap();
        assert!(page.len() <= size as usize, "{page:?}");
        let Some(&last) = page.last() else { return all };
        // Only the last page may be short.
        assert!(full, "a short page before {page:?}");
        full = page.len() == size as usize;
        all.extend_from_slice(&page);
        after = last;
    }
}

both_stores! {
    /// 1 100 expired sessions go in five statements of at most 250 rows; a live session stays.
    async fn the_purge_deletes_in_bounded_batches(db: Db) {
        let app = counted_app(db).await;
        let bob = app.login(BOB, BOB_PASSWORD).await;
        seed_expired(&app.db, 1100).await;
        let before = app.statements();
        assert_eq!(app.accounts.purge_expired_sessions().await.unwrap(), 1100);
        // Five batches (4 × 250, then 100), then the login counters and the spent tokens.
        assert_eq!(app.statements() - before, 5 + 2);
        assert_eq!(app.sessions().await, 1);
        assert_eq!(app.status("/me", &bob).await, StatusCode::OK);
        assert_eq!(app.accounts.purge_expired_sessions().await.unwrap(), 0);
    }

    /// The holders of a permission on a resource, paged: a page of a global permission most
    /// users hold is found among the next users in id order; one that few hold, farther apart
    /// than that walk reaches, is found all the same; a scoped holder is listed among them.
    /// Disabled users are left out either way.
    async fn global_holders_are_paged_however_many_hold_the_permission(db: Db) {
        let app = counted_app(db).await;
        seed_users(&app.db, 1_300).await;
        // Most users hold `common:read`; `rare:read` is held by one user in 400.
        app.db.exec(
            "INSERT INTO auth_user_permissions (user_id, permission)
             SELECT id, 'common:read' FROM auth_users WHERE id % 7 <> 0
             UNION ALL
             SELECT id, 'rare:read' FROM auth_users WHERE id % 400 = 0",
        )
        .await;
        app.db.exec("UPDATE auth_users SET disabled_at = created_at WHERE id IN (8, 800)").await;
        // Rows out of id order in the table, and one scoped holder of each among the pages.
        app.db.exec("UPDATE auth_users SET username = username || '' WHERE id % 2 = 0").await;
        app.db.exec(
            "INSERT INTO auth_user_resource_permissions
                    (user_id, permission, resource_type, resource_id)
             VALUES (14, 'common:read', 'project', '1'), (401, 'rare:read', 'project', '1')",
        )
        .await;
        for (permission, held) in [("common:read", "id % 7 <> 0"), ("rare:read", "id % 400 = 0")] {
            let expected = 1 + app.db.count(&format!(
                "SELECT count(*) FROM auth_users WHERE {held} AND disabled_at IS NULL"
            )).await;
            for size in [1, 50, 1_000] {
                let all = every_holder(&app.accounts, permission, size).await;
                assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
                assert_eq!(all.len() as i64, expected, "{permission}, pages of {size}");
                assert!(!all.contains(&8) && !all.contains(&800), "{permission}: {all:?}");
            }
        }
    }
}

/// Two nodes listening: revoking a session and revoking a permission each send exactly one
/// notification (not one per node); purging 2 500 expired sessions sends none, and the nodes still
/// refuse them (three that b cached while live, past their idle deadline without a
/// notification; with the cache's deadline check gone: `200`).
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn one_change_sends_one_notification_and_the_purge_none(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    // Entries kept far longer than the test runs, so that only their deadline check can
    // refuse the purged tokens (the default 5 s age would refuse them on a slow run too).
    let cached = |b: axum_live_auth::AuthLayerBuilder| {
        b.principal_cache(axum_live_auth::CacheOptions::default().max_age(Duration::from_secs(600)))
    };
    let a = crate::common::app_with(crate::common::node_pool(&options).await, cached).await;
    let b = crate::common::app_with(crate::common::node_pool(&options).await, cached).await;
    a.listen().await;
    b.listen().await;
    let mut listener = PgListener::connect_with(&crate::common::node_pool(&options).await)
        .await
        .unwrap();
    listener.listen("axum_live_auth").await.unwrap();
    let mut heard = async || {
        let mut payloads = Vec::new();
        while let Ok(Ok(Some(n))) =
            tokio::time::timeout(Duration::from_millis(300), listener.try_recv()).await
        {
            payloads.push(n.payload().to_owned());
        }
        payloads
    };

    let bob = b.login(BOB, BOB_PASSWORD).await;
    // Three of the 2 500 with known tokens, live for a second: b caches them meanwhile.
    let mut tokens = Vec::new();
    for i in 1..=3u8 {
        let (id, secret) = (URL_SAFE_NO_PAD.encode([i; 16]), [i; 32]);
        sqlx::query(
            "INSERT INTO auth_sessions (id, secret_hash, user_id, idle_expires_at, expires_at)
             VALUES ($1, $2, $3, now() + interval '1 second', now() + interval '1 hour')",
        )
        .bind(&id)
        .bind(Sha256::digest(secret).to_vec())
        .bind(a.bob)
        .execute(a.db.postgres())
        .await
        .unwrap();
        let token = format!("{id}.{}", URL_SAFE_NO_PAD.encode(secret));
        assert_eq!(b.status("/me", &token).await, StatusCode::OK);
        tokens.push(token);
    }
    seed_expired(&a.db, 2497).await;
    assert_eq!(
        heard().await,
        Vec::<String>::new(),
        "logins and new sessions notify no one"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(a.accounts.purge_expired_sessions().await.unwrap(), 2500);
    assert_eq!(
        heard().await,
        Vec::<String>::new(),
        "the purge notifies no one"
    );
    for token in &tokens {
        assert_eq!(b.status("/me", token).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(b.status("/me", &bob).await, StatusCode::OK);

    let session = a.accounts.list_sessions(a.bob).await.unwrap()[0].id.clone();
    assert!(a.accounts.revoke_session(a.bob, &session).await.unwrap());
    assert_eq!(heard().await, [format!("s:{session}")]);
    assert_eq!(b.status("/me", &bob).await, StatusCode::UNAUTHORIZED);

    let bob = b.login(BOB, BOB_PASSWORD).await;
    assert_eq!(b.status("/reports", &bob).await, StatusCode::OK);
    assert!(
        a.accounts
            .revoke_permission(a.bob, "reports:read")
            .await
            .unwrap()
    );
    assert_eq!(heard().await, [format!("u:{}", a.bob)]);
    assert_eq!(b.status("/reports", &bob).await, StatusCode::FORBIDDEN);
}
