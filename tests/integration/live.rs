//! Bans, revocations and grants are enforced on the next request, whoever makes them.

use crate::common::{ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, COOKIE, app, both_stores, send};
use http::StatusCode;

both_stores! {

async fn disable_is_enforced_on_the_next_request(db: Db) {
    let app = app(db).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    app.accounts.disable_user(app.bob).await.unwrap();
    assert_eq!(app.status("/me", &token).await, StatusCode::UNAUTHORIZED);
    // Disabling ends the sessions: enabling does not bring the old cookie back.
    app.accounts.enable_user(app.bob).await.unwrap();
    assert_eq!(app.status("/me", &token).await, StatusCode::UNAUTHORIZED);
    let token = app.login(BOB, BOB_PASSWORD).await;
    assert_eq!(app.status("/me", &token).await, StatusCode::OK);
}

/// A password set by hand in the database ends the user's sessions, as one set through the
/// crate does. (Before, bob's session outlived it.)
async fn a_password_set_by_plain_sql_ends_the_sessions(db: Db) {
    let app = app(db).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let alice = app.login(ALICE, ALICE_PASSWORD).await;
    app.db
        .exec(
            "UPDATE auth_users SET password_hash =
                    (SELECT password_hash FROM auth_users WHERE username = 'alice')
              WHERE username = 'bob'",
        )
        .await;
    assert_eq!(app.status("/me", &bob).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.status("/me", &alice).await, StatusCode::OK);
    let reply =
        crate::common::send(&app.router, crate::common::login_request(BOB, ALICE_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    // Rewriting the same hash changes nothing.
    let bob = reply.session_cookie().unwrap();
    // The session the hand-set hash ended is not listed as one of Bob's.
    assert_eq!(app.accounts.list_sessions(app.bob).await.unwrap().len(), 1);
    app.db
        .exec("UPDATE auth_users SET password_hash = password_hash WHERE username = 'bob'")
        .await;
    assert_eq!(app.status("/me", &bob).await, StatusCode::OK);
}

async fn a_disabled_user_cannot_log_in(db: Db) {
    let app = app(db).await;
    app.accounts.disable_user(app.bob).await.unwrap();
    let reply =
        crate::common::send(&app.router, crate::common::login_request(BOB, BOB_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(
        app.accounts
            .verify_password(BOB, BOB_PASSWORD)
            .await
            .unwrap(),
        None
    );
}

async fn disable_by_plain_sql_is_enforced_on_the_next_request(db: Db) {
    let app = app(db).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    app.db
        .exec_each(
            "UPDATE auth_users SET disabled_at = now() WHERE username = 'bob'",
            "UPDATE auth_users SET disabled_at = NOW WHERE username = 'bob'",
        )
        .await;
    assert_eq!(app.status("/me", &token).await, StatusCode::UNAUTHORIZED);
    app.db
        .exec("UPDATE auth_users SET disabled_at = NULL WHERE username = 'bob'")
        .await;
    // The session row was never deleted, so lifting the ban by hand restores it.
    assert_eq!(app.status("/me", &token).await, StatusCode::OK);
}

/// A ban set by hand leaves the sessions in place; `enable_user` lifting it ends them, as its
/// documentation says (the user logs in again). Before, the session came back to life.
async fn enable_user_ends_what_a_ban_by_hand_left_behind(db: Db) {
    let app = app(db).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    let alice = app.login(ALICE, ALICE_PASSWORD).await;
    app.db
        .exec_each(
            "UPDATE auth_users SET disabled_at = now() WHERE username = 'bob'",
            "UPDATE auth_users SET disabled_at = NOW WHERE username = 'bob'",
        )
        .await;
    assert_eq!(app.status("/me", &token).await, StatusCode::UNAUTHORIZED);
    // While banned, Bob has no session to list.
    assert!(app.accounts.list_sessions(app.bob).await.unwrap().is_empty());
    app.accounts.enable_user(app.bob).await.unwrap();
    assert_eq!(app.status("/me", &token).await, StatusCode::UNAUTHORIZED);
    let again = app.login(BOB, BOB_PASSWORD).await;
    assert_eq!(app.status("/me", &again).await, StatusCode::OK);
    // Nor is the session the ban ended listed as one of Bob's.
    assert_eq!(app.accounts.list_sessions(app.bob).await.unwrap().len(), 1);
    // Enabling a user who is not banned ends nothing.
    app.accounts.enable_user(app.alice).await.unwrap();
    assert_eq!(app.status("/me", &alice).await, StatusCode::OK);
}

async fn revoke_and_grant_are_enforced_on_the_next_request(db: Db) {
    let app = app(db).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    assert_eq!(app.status("/reports", &token).await, StatusCode::OK);
    app.accounts
        .revoke_permission(app.bob, "reports:read")
        .await
        .unwrap();
    assert_eq!(app.status("/reports", &token).await, StatusCode::FORBIDDEN);
    app.accounts
        .grant_permission(app.bob, "reports:read")
        .await
        .unwrap();
    assert_eq!(app.status("/reports", &token).await, StatusCode::OK);
    // Through a role.
    app.accounts
        .revoke_permission(app.bob, "reports:read")
        .await
        .unwrap();
    app.accounts.assign_role(app.bob, "admin").await.unwrap();
    assert_eq!(app.status("/reports", &token).await, StatusCode::OK);
    assert_eq!(app.status("/admin-check", &token).await, StatusCode::OK);
    app.accounts.unassign_role(app.bob, "admin").await.unwrap();
    assert_eq!(app.status("/reports", &token).await, StatusCode::FORBIDDEN);
    assert_eq!(
        app.status("/admin-check", &token).await,
        StatusCode::FORBIDDEN
    );
}

async fn role_changes_reach_every_member_on_the_next_request(db: Db) {
    let app = app(db).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    app.accounts
        .revoke_role_permission("admin", "reports:read")
        .await
        .unwrap();
    assert_eq!(app.status("/reports", &token).await, StatusCode::FORBIDDEN);
    assert_eq!(app.status("/admin-check", &token).await, StatusCode::OK);
    app.accounts
        .grant_role_permission("admin", "reports:read")
        .await
        .unwrap();
    assert_eq!(app.status("/reports", &token).await, StatusCode::OK);
}

async fn grants_by_plain_sql_are_enforced_on_the_next_request(db: Db) {
    let app = app(db).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let alice = app.login(ALICE, ALICE_PASSWORD).await;
    let sql = |q: &'static str| {
        let db = app.db.clone();
        async move { db.exec(q).await }
    };

    sql("DELETE FROM auth_user_permissions WHERE permission = 'reports:read'").await;
    assert_eq!(app.status("/reports", &bob).await, StatusCode::FORBIDDEN);
    sql("INSERT INTO auth_user_permissions (user_id, permission)
         SELECT id, 'reports:read' FROM auth_users WHERE username = 'bob'")
    .await;
    assert_eq!(app.status("/reports", &bob).await, StatusCode::OK);

    sql("DELETE FROM auth_role_permissions WHERE permission = 'admin'").await;
    assert_eq!(
        app.status("/admin-check", &alice).await,
        StatusCode::FORBIDDEN
    );
    sql("INSERT INTO auth_role_permissions (role_id, permission)
         SELECT id, 'admin' FROM auth_roles WHERE name = 'admin'")
    .await;
    assert_eq!(app.status("/admin-check", &alice).await, StatusCode::OK);

    sql("DELETE FROM auth_user_roles").await;
    assert_eq!(
        app.status("/admin-check", &alice).await,
        StatusCode::FORBIDDEN
    );
    sql("INSERT INTO auth_user_roles (user_id, role_id)
         SELECT u.id, r.id FROM auth_users u, auth_roles r WHERE u.username = 'alice'")
    .await;
    assert_eq!(app.status("/admin-check", &alice).await, StatusCode::OK);

    sql("DELETE FROM auth_roles WHERE name = 'admin'").await;
    assert_eq!(
        app.status("/admin-check", &alice).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.status("/reports", &alice).await, StatusCode::FORBIDDEN);

    sql("DELETE FROM auth_sessions WHERE user_id = (SELECT id FROM auth_users WHERE username = 'bob')")
        .await;
    assert_eq!(app.status("/me", &bob).await, StatusCode::UNAUTHORIZED);
}

async fn the_permission_guard_answers_401_403_or_runs_the_handler(db: Db) {
    let app = app(db).await;
    let runs = app.runs();
    assert_eq!(app.status("/reports", "").await, StatusCode::UNAUTHORIZED);
    app.accounts
        .revoke_permission(app.bob, "reports:read")
        .await
        .unwrap();
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let denied = app.get("/reports", &bob).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(app.runs(), runs, "the guarded handler did not run");
    let alice = app.login(ALICE, ALICE_PASSWORD).await;
    assert_eq!(app.status("/reports", &alice).await, StatusCode::OK);
    assert_eq!(app.runs(), runs + 1);
    // 403 bodies do not depend on which permission is missing.
    let other = app.get("/admin-check", &bob).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.body, denied.body);
}

async fn concurrent_grants_to_one_user_are_never_lost(db: Db) {
    let app = app(db).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let accounts = app.accounts.clone();
        let bob = app.bob;
        tasks.push(tokio::spawn(async move {
            accounts
                .grant_permission(bob, &format!("p:{i:02}"))
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (column, union) = app.db.permissions_column_and_grants(app.bob).await;
    assert_eq!(column.len(), 41);
    assert_eq!(column, union);
}

async fn accounts_report_unknown_users_and_roles(db: Db) {
    use axum_live_auth::Error;
    let app = app(db).await;
    let missing = 999_999;
    assert!(matches!(
        app.accounts.disable_user(missing).await,
        Err(Error::UserNotFound)
    ));
    assert!(matches!(
        app.accounts.grant_permission(missing, "x").await,
        Err(Error::UserNotFound)
    ));
    assert!(matches!(
        app.accounts.assign_role(app.bob, "nope").await,
        Err(Error::RoleNotFound)
    ));
    assert!(matches!(
        app.accounts.grant_role_permission("nope", "x").await,
        Err(Error::RoleNotFound)
    ));
    assert!(matches!(
        app.accounts.create_user("Alice", "whatever-password").await,
        Err(Error::UsernameTaken)
    ));
    assert!(matches!(
        app.accounts.grant_permission(app.bob, "has space").await,
        Err(Error::InvalidName)
    ));
    assert!(matches!(
        app.accounts.create_user("carol", "short").await,
        Err(Error::InvalidPassword)
    ));
    // Granting twice is a no-op, not an error.
    app.accounts
        .grant_permission(app.bob, "reports:read")
        .await
        .unwrap();
    app.accounts.create_role("admin").await.unwrap();
}

async fn reset_password_replaces_the_old_one(db: Db) {
    let app = app(db).await;
    app.accounts
        .reset_password(app.bob, "new-bob-password")
        .await
        .unwrap();
    assert_eq!(
        app.accounts
            .verify_password(BOB, BOB_PASSWORD)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        app.accounts
            .verify_password(BOB, "new-bob-password")
            .await
            .unwrap(),
        Some(app.bob)
    );
    let hash = app.db.password_hash(app.bob).await;
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
}

async fn verification_costs_the_same_whether_or_not_the_user_exists(db: Db) {
    // Not a speed target: without the dummy hash an unknown user would answer about a hundred
    // times faster than a known one. Medians over a few runs keep noise out of the comparison.
    let app = app(db).await;
    app.db
        .exec("INSERT INTO auth_users (username) VALUES ('nopassword')")
        .await;
    let median = |mut v: Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    // Interleaved, so that a busy moment of the machine slows all three alike; five rounds,
    // the failures an account may have before it waits.
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (username, samples) in [ALICE, "nobody", "nopassword"].into_iter().zip(&mut samples) {
            let start = std::time::Instant::now();
            let user = app
                .accounts
                .verify_password(username, "wrong-password")
                .await
                .unwrap();
            samples.push(start.elapsed());
            assert_eq!(user, None);
        }
    }
    let [known, unknown, no_hash] = samples.map(median);
    assert!(
        unknown * 3 > known,
        "unknown {unknown:?} vs known {known:?}"
    );
    assert!(
        no_hash * 3 > known,
        "no hash {no_hash:?} vs known {known:?}"
    );
}
}

/// Waits until `task` has finished or some connection of this test's database waits for a
/// lock (at most 2 seconds): as far as a statement racing an open transaction can get.
/// `true` if a connection was seen waiting while `task` had not finished: the task is held up
/// by the open transaction (nothing else of the test runs), so the race is really run.
async fn finished_or_waiting<T>(pool: &sqlx::PgPool, task: &tokio::task::JoinHandle<T>) -> bool {
    for _ in 0..100 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE NOT l.granted AND a.datname = current_database()",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if task.is_finished() {
            return false;
        }
        if waiting > 0 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// A role's permissions change in a transaction that stays open while bob is given the role:
/// bob ends with the role's new permissions, neither keeping the revoked one nor missing the
/// granted one. (Without the role's lock the assignment read the old permissions, and the
/// change's trigger did not see the uncommitted assignment.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_role_change_racing_an_assignment_reaches_the_new_member(pool: sqlx::PgPool) {
    let app = app(pool.clone()).await;
    let mut change = pool.begin().await.unwrap();
    for sql in [
        "DELETE FROM auth_role_permissions WHERE permission = 'admin'",
        "INSERT INTO auth_role_permissions (role_id, permission)
         SELECT id, 'reports:export' FROM auth_roles WHERE name = 'admin'",
    ] {
        sqlx::query(sql).execute(&mut *change).await.unwrap();
    }
    let accounts = app.accounts.clone();
    let bob = app.bob;
    let assign = tokio::spawn(async move { accounts.assign_role(bob, "admin").await });
    assert!(
        finished_or_waiting(&pool, &assign).await,
        "the assignment did not wait for the role's change"
    );
    change.commit().await.unwrap();
    assign.await.unwrap().unwrap();
    let (column, _) = app.db.permissions_column_and_grants(bob).await;
    assert_eq!(column, ["reports:export", "reports:read"]);
}

/// A transaction, left open, that takes the permission `admin` from the role `admin`.
async fn revoking_admin_from_its_role(
    pool: &sqlx::PgPool,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut change = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM auth_role_permissions WHERE permission = 'admin'")
        .execute(&mut *change)
        .await
        .unwrap();
    change
}

/// Bob's permissions as his grants and roles make them, sorted.
async fn effective_permissions(pool: &sqlx::PgPool, user: axum_live_auth::UserId) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT coalesce(array_agg(p ORDER BY p), '{}') FROM (
             SELECT permission AS p FROM auth_user_permissions WHERE user_id = $1
             UNION
             SELECT rp.permission FROM auth_user_roles ur
               JOIN auth_role_permissions rp USING (role_id) WHERE ur.user_id = $1) x",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A pool whose transactions are REPEATABLE READ unless they say otherwise, as with a database
/// configured `default_transaction_isolation = 'repeatable read'`.
async fn repeatable_read_pool(pool: &sqlx::PgPool) -> sqlx::PgPool {
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .options([("default_transaction_isolation", "repeatable read")]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap()
}

/// The role race again, with the assignment made by a node whose database runs transactions
/// in REPEATABLE READ: the lock alone made it wait, but it then read the role's permissions
/// from its snapshot, older than the change it waited for, and bob kept the revoked permission
/// for good. Now the assignment either sees the change or fails as a serialization failure
/// (SQLSTATE 40001, to be retried); bob's column is never stale.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_snapshot_assignment_racing_a_role_change_is_never_stale(pool: sqlx::PgPool) {
    let app = app(pool.clone()).await;
    let snapshot_node = crate::common::app(repeatable_read_pool(&pool).await).await;
    let change = revoking_admin_from_its_role(&pool).await;
    let accounts = snapshot_node.accounts.clone();
    let bob = app.bob;
    let assign = tokio::spawn(async move { accounts.assign_role(bob, "admin").await });
    assert!(
        finished_or_waiting(&pool, &assign).await,
        "the snapshot assignment did not wait for the role's change"
    );
    change.commit().await.unwrap();
    let assigned = assign.await.unwrap();
    let (column, _) = app.db.permissions_column_and_grants(bob).await;
    assert_eq!(
        column,
        effective_permissions(&pool, bob).await,
        "assignment: {assigned:?}"
    );
    assert!(!column.contains(&"admin".to_owned()));
}

/// Under REPEATABLE READ, assignments of one role write its row and so conflict with each
/// other (the price of the test above): the crate's own calls repeat what the database refused
/// as a serialization failure. Eight users given one role at once all get it.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn concurrent_assignments_of_one_role_all_land_under_repeatable_read(pool: sqlx::PgPool) {
    let app = app(pool.clone()).await;
    let snapshot_node = crate::common::app(repeatable_read_pool(&pool).await).await;
    let accounts = &snapshot_node.accounts;
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(
            accounts
                .create_user(&format!("user{i}"), "user-password")
                .await
                .unwrap(),
        );
    }
    let assignments = users
        .iter()
        .map(|user| accounts.assign_role(*user, "admin"));
    let results = futures_util::future::join_all(assignments).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for user in users {
        let (column, _) = app.db.permissions_column_and_grants(user).await;
        assert_eq!(column, ["admin", "reports:read"]);
    }
}

/// The other way round: the role is being given to bob when a REPEATABLE READ transaction
/// revokes one of its permissions; it must not miss bob as a member.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_snapshot_role_change_racing_an_assignment_is_never_stale(pool: sqlx::PgPool) {
    let app = app(pool.clone()).await;
    let mut assign = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO auth_user_roles (user_id, role_id)
         SELECT $1, id FROM auth_roles WHERE name = 'admin'",
    )
    .bind(app.bob)
    .execute(&mut *assign)
    .await
    .unwrap();
    let snapshot = repeatable_read_pool(&pool).await;
    let change = tokio::spawn(async move {
        let mut tx = snapshot.begin().await?;
        sqlx::query("DELETE FROM auth_role_permissions WHERE permission = 'admin'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    });
    assert!(
        finished_or_waiting(&pool, &change).await,
        "the snapshot role change did not wait for the assignment"
    );
    assign.commit().await.unwrap();
    let changed = change.await.unwrap();
    let (column, _) = app.db.permissions_column_and_grants(app.bob).await;
    assert_eq!(
        column,
        effective_permissions(&pool, app.bob).await,
        "change: {changed:?}"
    );
}

/// The same race with a role given on one resource: a node that asks in between may cache the
/// answer, so a notification for bob's scoped answers must follow the change's commit (here
/// marked by a notification of its own).
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_role_change_racing_a_scoped_assignment_is_notified_after_it(pool: sqlx::PgPool) {
    let app = app(pool.clone()).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen("axum_live_auth").await.unwrap();
    let mut change = revoking_admin_from_its_role(&pool).await;
    sqlx::query("SELECT pg_notify('axum_live_auth', 'test:change-committed')")
        .execute(&mut *change)
        .await
        .unwrap();
    let accounts = app.accounts.clone();
    let bob = app.bob;
    let resource = axum_live_auth::Resource::new("project", "42").unwrap();
    let assign =
        tokio::spawn(async move { accounts.assign_role_on(bob, "admin", &resource).await });
    assert!(
        finished_or_waiting(&pool, &assign).await,
        "the scoped assignment did not wait for the role's change"
    );
    change.commit().await.unwrap();
    assign.await.unwrap().unwrap();
    let mut after_commit = Vec::new();
    let mut committed = false;
    while let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), listener.recv()).await
    {
        if committed {
            after_commit.push(n.payload().to_owned());
        }
        committed |= n.payload() == "test:change-committed";
    }
    assert!(committed);
    assert!(
        after_commit
            .iter()
            .any(|p| p == "r:*" || *p == format!("r:{bob}")),
        "no notification for bob's scoped answers after the change: {after_commit:?}"
    );
}

/// How many sessions are live now (neither deadline passed).
async fn live_sessions(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM auth_sessions WHERE idle_expires_at > now() AND expires_at > now()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A transaction, left open, that ends every session by moving its idle deadline into the past.
async fn ending_every_session(pool: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut end = pool.begin().await.unwrap();
    sqlx::query("UPDATE auth_sessions SET idle_expires_at = now() - interval '1 second'")
        .execute(&mut *end)
        .await
        .unwrap();
    end
}

/// A session is ended by moving its idle deadline into the past, in a transaction still open
/// while a request of that session, which read it as live, writes its due touch: the touch
/// (made to wait by a lock on the table, as it would skip the locked row) finds the session
/// ended and must not move the deadline forward again. (Before, it waited, matched on
/// `last_seen_at` alone and brought the session back for another 30 minutes.) SQLite's touch
/// waits for the writer: see
/// `sqlite::a_touch_waiting_on_a_session_being_ended_does_not_bring_it_back`.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_touch_waiting_on_a_session_being_ended_does_not_bring_it_back(pool: sqlx::PgPool) {
    let app = app(pool.clone()).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    app.db.age_sessions(600, false).await; // a touch is due
    let mut end = ending_every_session(&pool).await;
    // The touch skips a locked row: a table lock, which the lookup's read does not need but
    // the touch's UPDATE does, makes it wait for the ending, then evaluate its deadline check
    // against the ended row.
    sqlx::query("LOCK TABLE auth_sessions IN SHARE MODE")
        .execute(&mut *end)
        .await
        .unwrap();
    let request = {
        let app = app.clone();
        let bob = bob.clone();
        tokio::spawn(async move { app.status("/me", &bob).await })
    };
    assert!(
        finished_or_waiting(&pool, &request).await,
        "the request's touch did not wait for the ending"
    );
    end.commit().await.unwrap();
    assert_eq!(
        request.await.unwrap(),
        StatusCode::OK,
        "it read the session as live"
    );
    assert_eq!(app.status("/me", &bob).await, StatusCode::UNAUTHORIZED);
}

/// The same with a rotation (a reauthentication rotates the session): the copy is not made
/// from the session as it was before it ended.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_rotation_waiting_on_a_session_being_ended_does_not_copy_it(pool: sqlx::PgPool) {
    let app = app(pool.clone()).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let end = ending_every_session(&pool).await;
    let request = {
        let app = app.clone();
        let bob = bob.clone();
        let reauth = axum::http::Request::post("/account/reauth")
            .header(http::header::COOKIE, format!("{COOKIE}={bob}"))
            .header("sec-fetch-site", "same-origin")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(axum::body::Body::from(format!("password={BOB_PASSWORD}")))
            .unwrap();
        tokio::spawn(async move { send(&app.router, reauth).await })
    };
    assert!(
        finished_or_waiting(&pool, &request).await,
        "the rotation did not wait for the ending"
    );
    end.commit().await.unwrap();
    let rotated = request.await.unwrap();
    let live = live_sessions(&pool).await;
    assert_eq!(live, 0, "the rotation answered {}", rotated.status);
    // The session ended before it could be copied: the reauthentication has none to go on.
    assert_eq!(rotated.status, StatusCode::UNAUTHORIZED);
}

/// An operator ends bob's session by moving its deadline into the past while a rotation (a
/// reauthentication), or a password change that keeps the session, waits for bob's row: the
/// session is not copied. The ending comes more than a second after the waiting transaction
/// began, so its deadline is later than that transaction's `now()`. (Before: both copied the
/// ended session, live for another 30 minutes.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_session_ended_by_hand_while_its_renewal_waits_is_not_copied(pool: sqlx::PgPool) {
    let app = app(pool.clone()).await;
    // With what each answers once the session ended under it: the reauthentication has no
    // session to go on; the password is changed all the same, the session not renewed.
    let renewals = [
        (
            "/account/reauth",
            format!("password={BOB_PASSWORD}"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "/account/password",
            format!("current_password={BOB_PASSWORD}&new_password=a-new-long-password"),
            StatusCode::NO_CONTENT,
        ),
    ];
    for (path, form, answer) in renewals {
        sqlx::query("DELETE FROM auth_sessions")
            .execute(&pool)
            .await
            .unwrap();
        let bob = app.login(BOB, BOB_PASSWORD).await;
        let mut holder = pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM auth_users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(app.bob)
            .execute(&mut *holder)
            .await
            .unwrap();
        let request = {
            let renewal = axum::http::Request::post(path)
                .header(http::header::COOKIE, format!("{COOKIE}={bob}"))
                .header("sec-fetch-site", "same-origin")
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(axum::body::Body::from(form))
                .unwrap();
            let app = app.clone();
            tokio::spawn(async move { send(&app.router, renewal).await })
        };
        assert!(
            finished_or_waiting(&pool, &request).await,
            "{path} did not wait for bob's row"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        // Committed before the renewal goes on: it waits on the user's row, holding no lock on
        // the session, so the ending does not wait (a timeout fails the test).
        let ending =
            sqlx::query("UPDATE auth_sessions SET idle_expires_at = now() - interval '1 second'")
                .execute(&pool);
        tokio::time::timeout(std::time::Duration::from_secs(2), ending)
            .await
            .unwrap()
            .unwrap();
        assert!(!request.is_finished(), "{path} did not wait for bob's row");
        holder.commit().await.unwrap();
        let renewed = request.await.unwrap();
        let live = live_sessions(&pool).await;
        assert_eq!(live, 0, "{path} answered {}", renewed.status);
        assert_eq!(renewed.status, answer, "{path}");
    }
}

/// Every session of a user ends while one of them is being rotated: the rotation's copy ends
/// too. (Without the user's lock, the delete's snapshot did not hold the uncommitted copy, and
/// the copy outlived "log out everywhere".)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn ending_every_session_while_one_rotates_ends_the_copy_too(pool: sqlx::PgPool) {
    let app = app(pool.clone()).await;
    app.login(BOB, BOB_PASSWORD).await;
    let copy = axum_live_auth::SessionToken::generate().unwrap();
    // The rotation as the store runs it: the user's row locked, the session copied under a new
    // id, the old one deleted; not committed yet.
    let mut rotation = pool.begin().await.unwrap();
    for sql in [
        "SELECT 1 FROM auth_users WHERE id = $2 FOR NO KEY UPDATE",
        "INSERT INTO auth_sessions (id, secret_hash, user_id, idle_expires_at, expires_at,
                                    credential_epoch)
         SELECT $1, secret_hash, user_id, idle_expires_at, expires_at, credential_epoch
           FROM auth_sessions WHERE user_id = $2",
        "DELETE FROM auth_sessions WHERE user_id = $2 AND id <> $1",
    ] {
        sqlx::query(sql)
            .bind(copy.id().as_str())
            .bind(app.bob)
            .execute(&mut *rotation)
            .await
            .unwrap();
    }
    let accounts = app.accounts.clone();
    let bob = app.bob;
    let everywhere = tokio::spawn(async move { accounts.revoke_all_sessions(bob).await });
    assert!(
        finished_or_waiting(&pool, &everywhere).await,
        "the revocation did not wait for the rotation"
    );
    rotation.commit().await.unwrap();
    everywhere.await.unwrap().unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM auth_sessions WHERE user_id = $1")
        .bind(bob)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the rotation's copy outlived the revocation");
}
