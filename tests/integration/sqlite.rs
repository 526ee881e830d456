//! SQLite only: one writer at a time is SQLite's nature, so concurrency is its own test here.

use std::{sync::Arc, time::Duration};

use axum::{body::Body, http::Request};
use http::{StatusCode, header};
use sqlx::sqlite::SqlitePoolOptions;

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, COOKIE, app_with, login_request, send,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_never_see_a_locked_database() {
    let dir = std::env::temp_dir().join(format!("axum-live-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("concurrency.db");
    let _ = std::fs::remove_file(&path);
    let options =
        axum_live_auth::sqlite_connect_options(&format!("sqlite://{}", path.display())).unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(16)
        .connect_with(options)
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(timeout, 5000);
    // FULL: a reported commit survives a power loss.
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(synchronous, 2);
    axum_live_auth::migrate(&pool).await.unwrap();
    // Fifty logins of one account at once: each reserves a failure before its check, so the
    // per-account backoff must allow them all (this test is about the database, not the limit).
    let app = Arc::new(
        app_with(pool, |b| {
            b.login_backoff(1000, Duration::from_secs(1))
                .password_hashing(64, 64)
        })
        .await,
    );

    // Tokens to read and to log out with, made up front.
    let mut tokens = Vec::new();
    for _ in 0..50 {
        tokens.push(app.login(BOB, BOB_PASSWORD).await);
    }

    let mut tasks = Vec::new();
    for i in 0..200 {
        let app = Arc::clone(&app);
        let token = tokens[i / 4].clone();
        tasks.push(tokio::spawn(async move {
            let request = match i % 4 {
                0 => login_request(ALICE, ALICE_PASSWORD),
                1 => Request::post("/logout")
                    .header("sec-fetch-site", "same-origin")
                    .header(header::COOKIE, format!("{COOKIE}={token}"))
                    .body(Body::empty())
                    .unwrap(),
                _ => Request::get("/me")
                    .header(header::COOKIE, format!("{COOKIE}={token}"))
                    .body(Body::empty())
                    .unwrap(),
            };
            (i, send(&app.router, request).await)
        }));
    }
    for task in tasks {
        let (i, reply) = task.await.unwrap();
        let ok = match i % 4 {
            0 | 1 => reply.status == StatusCode::SEE_OTHER,
            // A session may be logged out by a concurrent request: 401 then, never a 5xx.
            _ => matches!(reply.status, StatusCode::OK | StatusCode::UNAUTHORIZED),
        };
        assert!(ok, "request {i}: {} {}", reply.status, reply.body);
    }
    let sessions = app.sessions().await;
    assert_eq!(sessions, 50 + 50 - 50, "50 made, 50 logins, 50 logouts");
    app.db.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A user and a role deleted from a connection with foreign keys off (the sqlite3 shell's
/// default) take their sessions and grants with them: the old session cookie reaches no one,
/// the next user inherits no grant (nor the deleted user's id), and the deleted role's
/// permissions leave its members. (Before, bob's cookie answered as eve, who had been given
/// bob's id, and alice kept the deleted role's permissions.)
#[sqlx::test(migrator = "axum_live_auth::SQLITE_MIGRATOR")]
async fn deleting_with_foreign_keys_off_leaves_nothing_behind(pool: sqlx::SqlitePool) {
    let app = crate::common::app(pool.clone()).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let shell = shell(&pool).await;
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&shell)
        .await
        .unwrap();
    assert_eq!(fk, 0);
    for sql in [
        "DELETE FROM auth_users WHERE username = 'bob'",
        "DELETE FROM auth_roles WHERE name = 'admin'",
    ] {
        sqlx::query(sql).execute(&shell).await.unwrap();
    }
    let eve = app
        .accounts
        .create_user("eve", "eve-password-1")
        .await
        .unwrap();
    assert_ne!(eve, app.bob, "a deleted user's id is never given again");
    assert_eq!(app.status("/me", &bob).await, StatusCode::UNAUTHORIZED);
    let left =
        "SELECT count(*) FROM auth_sessions WHERE user_id NOT IN (SELECT id FROM auth_users)";
    assert_eq!(app.db.count(left).await, 0);
    let (eve_permissions, _) = app.db.permissions_column_and_grants(eve).await;
    assert!(eve_permissions.is_empty(), "{eve_permissions:?}");
    let (alice_permissions, _) = app.db.permissions_column_and_grants(app.alice).await;
    assert!(alice_permissions.is_empty(), "{alice_permissions:?}");
}

/// Rows replaced from the sqlite3 shell (foreign keys off, and `REPLACE` fires no delete
/// trigger there) take what named them along, as a delete does: a replaced role's members no
/// longer hold its permissions, and a user row replaced by id, with a password set that way,
/// keeps none of its sessions. The SQL an app may run on these tables (upserts by id,
/// `INSERT OR IGNORE`, a duplicate name refused) behaves as it did. (Before: alice kept the
/// replaced role's permissions, which `unassign_role` could no longer take away; bob's cookie
/// still answered `200`.)
#[sqlx::test(migrator = "axum_live_auth::SQLITE_MIGRATOR")]
async fn replacing_rows_from_the_shell_keeps_revocations(pool: sqlx::SqlitePool) {
    let app = crate::common::app(pool.clone()).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let shell = shell(&pool).await;
    let (alice_before, _) = app.db.permissions_column_and_grants(app.alice).await;
    assert!(!alice_before.is_empty());
    sqlx::query("INSERT OR REPLACE INTO auth_roles (name) VALUES ('admin')")
        .execute(&shell)
        .await
        .unwrap();
    let (alice_permissions, _) = app.db.permissions_column_and_grants(app.alice).await;
    assert!(alice_permissions.is_empty(), "{alice_permissions:?}");
    assert_no_broken_reference(&pool).await;

    // A password set by hand ends every session: replacing the row is no way around that.
    let replaced = sqlx::query(
        "REPLACE INTO auth_users (id, username, password_hash)
         SELECT id, username, 'set by hand' FROM auth_users WHERE username = 'bob'",
    )
    .execute(&shell)
    .await;
    let status = app.status("/me", &bob).await;
    assert!(
        replaced.is_err() || status == StatusCode::UNAUTHORIZED,
        "{replaced:?}, then {status}"
    );

    // An app's own SQL on these tables is left as it was.
    for sql in [
        "INSERT INTO auth_users (id, username) SELECT id, 'bob' FROM auth_users
          WHERE username = 'bob' ON CONFLICT (id) DO UPDATE SET username = excluded.username",
        "INSERT OR IGNORE INTO auth_users (id, username)
         SELECT id, 'bob' FROM auth_users WHERE username = 'bob'",
        "INSERT OR IGNORE INTO auth_roles (name) VALUES ('admin')",
    ] {
        sqlx::query(sql).execute(&shell).await.unwrap();
    }
    let duplicate = sqlx::query("INSERT INTO auth_roles (name) VALUES ('admin')")
        .execute(&shell)
        .await;
    assert!(duplicate.is_err(), "{duplicate:?}");
    let new_password = "a-new-long-password";
    app.accounts
        .reset_password(app.bob, new_password)
        .await
        .unwrap();
    let bob_again = app.login(BOB, new_password).await;
    app.accounts
        .grant_permission(app.bob, "reports:read")
        .await
        .unwrap();
    assert_eq!(app.status("/reports", &bob_again).await, StatusCode::OK);
}

/// A session is ended by moving its idle deadline into the past, in a write transaction still
/// open while a request of that session, which read it as live, writes its due touch: the touch
/// waits for the writer, then finds the session ended and leaves it so. (Without the touch's
/// liveness condition it matched on `last_seen_at` alone and brought the session back.)
#[sqlx::test(migrator = "axum_live_auth::SQLITE_MIGRATOR")]
async fn a_touch_waiting_on_a_session_being_ended_does_not_bring_it_back(pool: sqlx::SqlitePool) {
    let app = crate::common::app(pool.clone()).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    app.db.age_sessions(600, false).await; // a touch is due
    let mut end = pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE auth_sessions
            SET idle_expires_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) - 1000",
    )
    .execute(&mut *end)
    .await
    .unwrap();
    let request = {
        let app = app.clone();
        let bob = bob.clone();
        tokio::spawn(async move { app.status("/me", &bob).await })
    };
    // The request reads (WAL lets it), then its touch waits for the write lock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    end.commit().await.unwrap();
    assert_eq!(
        request.await.unwrap(),
        StatusCode::OK,
        "it read the session as live"
    );
    assert_eq!(app.status("/me", &bob).await, StatusCode::UNAUTHORIZED);
}

/// The version of the migration that made SQLite's ids never reused.
const IDS_NEVER_REUSED: i64 = 20261203000001;

/// One connection to `pool`'s database with foreign keys off, as the sqlite3 shell opens one.
async fn shell(pool: &sqlx::SqlitePool) -> sqlx::SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(pool.connect_options().as_ref().clone().foreign_keys(false))
        .await
        .unwrap()
}

/// No row of `pool`'s database names a row that does not exist.
async fn assert_no_broken_reference(pool: &sqlx::SqlitePool) {
    let broken = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(pool)
        .await
        .unwrap();
    assert!(
        broken.is_empty(),
        "rows whose reference is broken: {}",
        broken.len()
    );
}

/// Adds `count` users (`user1`, `user2`, …) by SQL.
async fn add_users(pool: &sqlx::SqlitePool, count: u32) {
    sqlx::query(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $1)
         INSERT INTO auth_users (username) SELECT 'user' || n FROM g",
    )
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}

/// Runs the crate's migrations older than `version` on `pool`, as a database made before it.
async fn migrate_before(pool: &sqlx::SqlitePool, version: i64) {
    let mut before = sqlx::migrate::Migrator::with_migrations(
        axum_live_auth::SQLITE_MIGRATOR
            .iter()
            .filter(|migration| migration.version < version)
            .cloned()
            .collect(),
    );
    before.dangerous_set_table_name("_axum_live_auth_migrations");
    before.run(pool).await.unwrap();
}

/// `migrate` given up (its future dropped) while the migration that rebuilds the users table
/// runs its own transaction: the connection is closed, so the write lock goes with it, and the
/// database takes writes again. (Before: the connection went back to the pool inside that
/// transaction, and every other writer got "database is locked" until the pool closed it.)
#[sqlx::test(migrations = false)]
async fn a_migrate_given_up_mid_rebuild_leaves_no_write_lock(pool: sqlx::SqlitePool) {
    migrate_before(&pool, IDS_NEVER_REUSED).await;
    // Enough users that the rebuild takes far longer than the caller waits.
    add_users(&pool, 300000).await;
    let cut =
        tokio::time::timeout(Duration::from_millis(100), axum_live_auth::migrate(&pool)).await;
    assert!(
        cut.is_err(),
        "the migration ended within 100 ms: seed more users"
    );
    let writer = sqlx::SqlitePool::connect_with(
        pool.connect_options()
            .as_ref()
            .clone()
            .busy_timeout(Duration::ZERO),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let write = sqlx::query("UPDATE auth_users SET username = username WHERE id = 1")
            .execute(&writer)
            .await;
        match write {
            Ok(_) => break,
            Err(error) => assert!(
                tokio::time::Instant::now() < deadline,
                "still no write after 10 s: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    axum_live_auth::migrate(&pool).await.unwrap();
}

/// Four `migrate` at once (the app and the admin tool starting together) on a database made
/// before the users table was rebuilt: every run succeeds and each migration runs once, so the
/// triggers made after the rebuild stay. (Before: sqlx takes no lock on SQLite; a second run
/// rebuilt `auth_users` and `auth_roles` again, which dropped four triggers (and the id
/// counter, for a user deleted meanwhile), and the runs that lost failed.)
#[sqlx::test(migrations = false)]
async fn concurrent_migrates_apply_each_migration_once(pool: sqlx::SqlitePool) {
    migrate_before(&pool, IDS_NEVER_REUSED).await;
    // Enough users that the rebuild takes a while, and the runs overlap.
    add_users(&pool, 20000).await;
    let runs = futures_util::future::join_all((0..4).map(|_| axum_live_auth::migrate(&pool))).await;

    let triggers = async |pool: &sqlx::SqlitePool| -> Vec<String> {
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
            .fetch_all(pool)
            .await
            .unwrap()
    };
    let fresh = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    axum_live_auth::migrate(fresh.clone()).await.unwrap();
    assert_eq!(triggers(&pool).await, triggers(&fresh).await);
    for run in runs {
        run.unwrap();
    }
    // No run left the database locked: another connection writes.
    let other = SqlitePoolOptions::new()
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    sqlx::query("UPDATE auth_users SET username = username WHERE id = 1")
        .execute(&other)
        .await
        .unwrap();
}

/// `migrate` waits while another process holds the migration lock, applying nothing; a caller
/// may give up meanwhile; once the lock is free, it migrates.
#[sqlx::test(migrations = false)]
async fn a_migrate_waits_for_the_lock_and_can_be_given_up(pool: sqlx::SqlitePool) {
    let (_, _, file): (i64, String, String) = sqlx::query_as("PRAGMA database_list")
        .fetch_one(&pool)
        .await
        .unwrap();
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{file}-migrate-lock"))
        .unwrap();
    held.lock().unwrap();
    let waited =
        tokio::time::timeout(Duration::from_millis(300), axum_live_auth::migrate(&pool)).await;
    assert!(waited.is_err(), "migrate ran beside the lock's holder");
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 'auth_users'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tables, 0, "nothing was applied");
    held.unlock().unwrap();
    axum_live_auth::migrate(&pool).await.unwrap();
}

/// A database made before ids were never reused, upgraded: every row stays (a session goes on
/// working, a role's permissions stay with its members), an app's table that references
/// `auth_users` still cascades, foreign keys stay on, and a deleted user's id is not given to
/// the next user. (Before the upgrade, eve took bob's id.)
#[sqlx::test(migrations = false)]
async fn an_upgraded_database_keeps_its_rows_and_gives_no_id_twice(pool: sqlx::SqlitePool) {
    migrate_before(&pool, IDS_NEVER_REUSED).await;
    let app = crate::common::app(pool.clone()).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    for sql in [
        "CREATE TABLE app_profiles (
             user_id INTEGER PRIMARY KEY REFERENCES auth_users (id) ON DELETE CASCADE,
             bio TEXT NOT NULL)",
        "INSERT INTO app_profiles (user_id, bio) SELECT id, username FROM auth_users",
    ] {
        app.db.exec(sql).await;
    }
    let (alice_before, _) = app.db.permissions_column_and_grants(app.alice).await;

    // On one connection, so that what the migration leaves set on its connection is what the
    // checks read.
    let one = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    axum_live_auth::migrate(one.clone()).await.unwrap();
    for (pragma, expected) in [("foreign_keys", 1), ("legacy_alter_table", 0)] {
        let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {pragma}")))
            .fetch_one(&one)
            .await
            .unwrap();
        assert_eq!(value, expected, "{pragma}");
    }
    assert_no_broken_reference(&one).await;
    one.close().await;
    assert_eq!(app.status("/me", &bob).await, StatusCode::OK);
    let (alice_after, _) = app.db.permissions_column_and_grants(app.alice).await;
    assert_eq!(alice_after, alice_before);
    assert!(!alice_after.is_empty());

    app.accounts.delete_user(app.bob).await.unwrap();
    assert_eq!(app.status("/me", &bob).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.db.count("SELECT count(*) FROM app_profiles").await, 1);
    let eve = app
        .accounts
        .create_user("eve", "eve-password-1")
        .await
        .unwrap();
    assert_ne!(eve, app.bob, "a deleted user's id is never given again");
    app.accounts.delete_user(eve).await.unwrap();
    let carol = app
        .accounts
        .create_user("carol", "carol-password-1")
        .await
        .unwrap();
    assert_ne!(carol, eve);
}

/// A permission ending in a carriage return, granted in SQL, is read back as it is: the
/// effective permissions are split on their separator alone. (Before: `admin\r` followed by
/// another permission read back as `admin`, and passed an `admin` guard.)
#[sqlx::test(migrator = "axum_live_auth::SQLITE_MIGRATOR")]
async fn a_permission_ending_in_a_carriage_return_is_not_another(pool: sqlx::SqlitePool) {
    let app = app_with(pool, |b| b).await;
    app.db
        .exec(&format!(
            "INSERT INTO auth_user_permissions (user_id, permission) VALUES ({}, 'admin' || char(13))",
            app.bob
        ))
        .await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let me = app.get("/me", &bob).await;
    assert!(!me.body.contains("\"admin\""), "{}", me.body);
    assert!(me.body.contains("reports:read"), "{}", me.body);
}

/// Deletes made with foreign keys off before the dependents trigger existed left the rows of a
/// deleted user and role behind. The upgrade removes them: a user and a role created after it
/// take neither a deleted one's id nor its grants, and the deleted role's permissions leave its
/// members. (Before, alice kept the deleted role's permission, and the next user got the
/// deleted user's id and grant.)
#[sqlx::test(migrations = false)]
async fn an_upgrade_removes_what_deletes_without_foreign_keys_left_behind(pool: sqlx::SqlitePool) {
    const DELETE_DEPENDENTS: i64 = 20261202000001;
    migrate_before(&pool, DELETE_DEPENDENTS).await;
    let shell = shell(&pool).await;
    for sql in [
        "INSERT INTO auth_users (username) VALUES ('alice'), ('zed')",
        "INSERT INTO auth_user_permissions (user_id, permission)
         SELECT id, 'zed:secret' FROM auth_users WHERE username = 'zed'",
        "INSERT INTO auth_roles (name) VALUES ('ops')",
        "INSERT INTO auth_role_permissions (role_id, permission)
         SELECT id, 'ops:run' FROM auth_roles WHERE name = 'ops'",
        "INSERT INTO auth_user_roles (user_id, role_id)
         SELECT u.id, r.id FROM auth_users u, auth_roles r
          WHERE u.username = 'alice' AND r.name = 'ops'",
    ] {
        sqlx::query(sql).execute(&shell).await.unwrap();
    }
    let zed: i64 = sqlx::query_scalar("SELECT id FROM auth_users WHERE username = 'zed'")
        .fetch_one(&shell)
        .await
        .unwrap();
    let ops: i64 = sqlx::query_scalar("SELECT id FROM auth_roles WHERE name = 'ops'")
        .fetch_one(&shell)
        .await
        .unwrap();
    for sql in [
        "DELETE FROM auth_users WHERE username = 'zed'",
        "DELETE FROM auth_roles WHERE name = 'ops'",
    ] {
        sqlx::query(sql).execute(&shell).await.unwrap();
    }
    shell.close().await;

    axum_live_auth::migrate(pool.clone()).await.unwrap();
    assert_no_broken_reference(&pool).await;
    let alice: String =
        sqlx::query_scalar("SELECT permissions FROM auth_users WHERE username = 'alice'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(alice, "", "the deleted role's permission left its member");
    let accounts = axum_live_auth::Accounts::new(pool.clone());
    let eve = accounts.create_user("eve", "eve-password-1").await.unwrap();
    assert_ne!(eve, zed, "a deleted user's id is never given again");
    accounts.grant_permission(eve, "eve:own").await.unwrap();
    let eve_permissions: String =
        sqlx::query_scalar("SELECT permissions FROM auth_users WHERE username = 'eve'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(eve_permissions, "eve:own");
    let dev: i64 = sqlx::query_scalar("INSERT INTO auth_roles (name) VALUES ('dev') RETURNING id")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(dev, ops, "a deleted role's id is never given again");
}
