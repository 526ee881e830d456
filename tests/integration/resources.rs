//! Permissions on a resource: scoped grants and roles, checked live, through the API, the route
//! guard and the cache.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use axum_live_auth::{CacheOptions, Resource};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, COOKIE, ORIGIN, TestApp, app, app_with, both_stores,
    get_with_cookie, send,
};

fn project(id: &str) -> Resource {
    Resource::new("project", id).unwrap()
}

async fn edit(app: &TestApp, token: &str, id: &str) -> StatusCode {
    let request = Request::post(format!("/projects/{id}/edit"))
        .header(header::COOKIE, format!("{COOKIE}={token}"))
        .header(header::ORIGIN, ORIGIN)
        .body(Body::empty())
        .unwrap();
    send(&app.router, request).await.status
}

both_stores! {
    async fn a_scoped_grant_covers_its_resource_only(db: Db) {
        let app = app(db).await;
        let bob = app.login(BOB, BOB_PASSWORD).await;
        assert_eq!(app.status("/projects/42", &bob).await, StatusCode::FORBIDDEN);
        app.accounts.grant_permission_on(app.bob, "project:read", &project("42")).await.unwrap();
        assert_eq!(app.status("/projects/42", &bob).await, StatusCode::OK);
        assert_eq!(app.status("/projects/43", &bob).await, StatusCode::FORBIDDEN);
        // A permission on a project does not cover another permission on it.
        assert_eq!(edit(&app, &bob, "42").await, StatusCode::FORBIDDEN);
        // Revoked: refused on the next request.
        assert!(app.accounts.revoke_permission_on(app.bob, "project:read", &project("42")).await.unwrap());
        assert_eq!(app.status("/projects/42", &bob).await, StatusCode::FORBIDDEN);
        assert!(!app.accounts.revoke_permission_on(app.bob, "project:read", &project("42")).await.unwrap());
    }

    async fn a_role_on_a_resource_gives_the_roles_permissions_there(db: Db) {
        let app = app(db).await;
        let bob = app.login(BOB, BOB_PASSWORD).await;
        app.accounts.create_role("manager").await.unwrap();
        app.accounts.grant_role_permission("manager", "project:write").await.unwrap();
        app.accounts.assign_role_on(app.bob, "manager", &project("42")).await.unwrap();
        assert_eq!(edit(&app, &bob, "42").await, StatusCode::OK);
        assert_eq!(edit(&app, &bob, "43").await, StatusCode::FORBIDDEN);
        // The role loses the permission: every scoped holder loses it at once.
        app.accounts.revoke_role_permission("manager", "project:write").await.unwrap();
        assert_eq!(edit(&app, &bob, "42").await, StatusCode::FORBIDDEN);
        app.accounts.grant_role_permission("manager", "project:write").await.unwrap();
        assert_eq!(edit(&app, &bob, "42").await, StatusCode::OK);
        assert!(app.accounts.unassign_role_on(app.bob, "manager", &project("42")).await.unwrap());
        assert_eq!(edit(&app, &bob, "42").await, StatusCode::FORBIDDEN);
        // Errors name what is missing.
        let missing = app.accounts.assign_role_on(app.bob, "nobody", &project("1")).await;
        assert!(matches!(missing, Err(axum_live_auth::Error::RoleNotFound)));
        let missing = app.accounts.grant_permission_on(9999, "p", &project("1")).await;
        assert!(matches!(missing, Err(axum_live_auth::Error::UserNotFound)));
    }

    async fn a_global_grant_covers_every_resource(db: Db) {
        let app = app(db).await;
        app.accounts.grant_permission(app.alice, "project:read").await.unwrap();
        let alice = app.login(ALICE, ALICE_PASSWORD).await;
        for id in ["1", "42", "anything-at-all"] {
            assert_eq!(app.status(&format!("/projects/{id}"), &alice).await, StatusCode::OK);
        }
    }

    async fn scoped_grants_by_plain_sql_are_enforced_on_the_next_request(db: Db) {
        let app = app(db).await;
        let bob = app.login(BOB, BOB_PASSWORD).await;
        app.db.exec(&format!(
            "INSERT INTO auth_user_resource_permissions (user_id, permission, resource_type, resource_id)
             VALUES ({}, 'project:read', 'project', '7')", app.bob
        )).await;
        assert_eq!(app.status("/projects/7", &bob).await, StatusCode::OK);
        app.db.exec("DELETE FROM auth_user_resource_permissions").await;
        assert_eq!(app.status("/projects/7", &bob).await, StatusCode::FORBIDDEN);
    }

    async fn the_guard_answers_401_403_400_and_503(db: Db) {
        let app = app(db).await;
        let anonymous = send(&app.router, Request::get("/projects/42").body(Body::empty()).unwrap()).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        let bob = app.login(BOB, BOB_PASSWORD).await;
        // The same 403 whether or not such a project exists: the crate never knows.
        let absent = app.get("/projects/does-not-exist", &bob).await;
        let present = app.get("/projects/42", &bob).await;
        assert_eq!((absent.status, &absent.body), (present.status, &present.body));
        assert_eq!(present.status, StatusCode::FORBIDDEN);
        // An id that cannot name a resource: a clean 400.
        assert_eq!(app.status("/projects/a%20b", &bob).await, StatusCode::BAD_REQUEST);
        let long = "x".repeat(200);
        assert_eq!(app.status(&format!("/projects/{long}"), &bob).await, StatusCode::BAD_REQUEST);
        // An id with an invisible character, which would look like `42` in every listing.
        assert_eq!(app.status("/projects/42%E2%80%8B", &bob).await, StatusCode::BAD_REQUEST);
        assert!(Resource::new("project", "42\u{202E}").is_err());
        // Bytes that are not UTF-8: the client's mistake too, not a 500.
        assert_eq!(app.status("/projects/%FF", &bob).await, StatusCode::BAD_REQUEST);
        // The database gone: 503, never allowed. (The session's lookup fails first here, so the
        // guard's own check is not reached: `the_guards_own_check_failing_answers_503` covers it.)
        app.db.close().await;
        let reply = app.get("/projects/42", &bob).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// Nested routers may repeat a parameter's name; the guard does not pick one of them, since
    /// the handler may read the other. (Before, it checked the first, the organisation's id:
    /// bob, with a grant on project 7, passed for project 99 of organisation 7.)
    async fn a_guard_on_a_repeated_parameter_name_refuses(db: Db) {
        let app = app(db).await;
        let bob = app.login(BOB, BOB_PASSWORD).await;
        app.accounts.grant_permission_on(app.bob, "project:read", &project("7")).await.unwrap();
        let projects = axum::Router::new()
            .route("/projects/{id}", axum::routing::get(|| async { "project" }))
            .route_layer(axum_live_auth::require_permission_on("project:read", "project", "id"));
        let router = axum::Router::new().nest("/orgs/{id}", projects).layer(app.layer.clone());
        let request = |path: &str| {
            Request::get(path)
                .header(header::COOKIE, format!("{COOKIE}={bob}"))
                .body(Body::empty())
                .unwrap()
        };
        for path in ["/orgs/7/projects/99", "/orgs/7/projects/7"] {
            assert_eq!(send(&router, request(path)).await.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        }
        // Also for a global holder, so that an administrator trying the route sees the fault.
        // (Before: `200` for him.)
        app.accounts.grant_permission(app.bob, "project:read").await.unwrap();
        let global = send(&router, request("/orgs/7/projects/99")).await;
        assert_eq!(global.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// Listings come in byte order, as documented, also where the database's collation is a
    /// language's (Postgres); what no resource can hold is refused or names none, without an
    /// error from the database. (Before, on Postgres: `["a", "B"]`, and a NUL in the cursor an
    /// infrastructure error.)
    async fn listings_are_in_byte_order_and_take_any_text(db: Db) {
        db.exec_each(
            r#"ALTER TABLE auth_user_resource_permissions ALTER resource_id TYPE text COLLATE "und-x-icu""#,
            "SELECT 1",
        )
        .await;
        let app = app(db).await;
        for id in ["a", "B", "b"] {
            app.accounts.grant_permission_on(app.bob, "project:read", &project(id)).await.unwrap();
        }
        let ids = app.accounts.resource_ids(app.bob, "project:read", "project", None, 10).await.unwrap();
        assert_eq!(ids, ["B", "a", "b"]);
        let after = app.accounts.resource_ids(app.bob, "project:read", "project", Some("B"), 10).await.unwrap();
        assert_eq!(after, ["a", "b"]);
        for (kind, after) in [("project", Some("a\0")), ("pro\0ject", None)] {
            let asked = app.accounts.resource_ids(app.bob, "project:read", kind, after, 10).await;
            assert!(matches!(asked, Err(axum_live_auth::Error::InvalidResource)), "{kind:?} {after:?}: {asked:?}");
        }
        let none = app.accounts.resource_ids(app.bob, "project\0read", "project", None, 10).await.unwrap();
        assert!(none.is_empty());
    }

    async fn listings_are_paginated(db: Db) {
        let app = app(db).await;
        for id in ["01", "02", "03", "04", "05"] {
            app.accounts.grant_permission_on(app.bob, "project:read", &project(id)).await.unwrap();
        }
        app.accounts.create_role("viewer").await.unwrap();
        app.accounts.grant_role_permission("viewer", "project:read").await.unwrap();
        app.accounts.assign_role_on(app.bob, "viewer", &project("06")).await.unwrap();
        app.accounts.assign_role_on(app.bob, "viewer", &project("01")).await.unwrap();
        let first = app.accounts.resource_ids(app.bob, "project:read", "project", None, 4).await.unwrap();
        assert_eq!(first, ["01", "02", "03", "04"]);
        let next = app.accounts.resource_ids(app.bob, "project:read", "project", Some("04"), 4).await.unwrap();
        assert_eq!(next, ["05", "06"]);
        assert!(app.accounts.resource_ids(app.bob, "project:write", "project", None, 4).await.unwrap().is_empty());

        // Holders of a permission on a resource: scoped, through a role, and global.
        app.accounts.grant_permission(app.alice, "project:read").await.unwrap();
        let carol = app.accounts.create_user("carol", "carol-password").await.unwrap();
        app.accounts.grant_permission_on(carol, "project:read", &project("06")).await.unwrap();
        let all = app.accounts.holders("project:read", &project("06"), 0, 10).await.unwrap();
        let mut expected = vec![app.alice, app.bob, carol];
        expected.sort_unstable();
        assert_eq!(all, expected);
        let page = app.accounts.holders("project:read", &project("06"), 0, 2).await.unwrap();
        assert_eq!(page, &expected[..2]);
        let rest = app.accounts.holders("project:read", &project("06"), page[1], 2).await.unwrap();
        assert_eq!(rest, &expected[2..]);
        // A disabled user holds nothing, whatever their grants say.
        app.accounts.disable_user(carol).await.unwrap();
        let enabled = app.accounts.holders("project:read", &project("06"), 0, 10).await.unwrap();
        assert!(!enabled.contains(&carol), "{enabled:?}");
        assert_eq!(enabled.len(), 2);
        // A name no permission can have is refused, on both stores alike (SQLite once matched
        // it against its lines of text: "" named everyone without a global permission).
        for name in ["", "project:read\nadmin"] {
            let asked = app.accounts.holders(name, &project("06"), 0, 10).await;
            assert!(matches!(asked, Err(axum_live_auth::Error::InvalidName)), "{name:?}: {asked:?}");
        }
    }

    /// Each page is read a page at a time from each way of holding: one held several ways
    /// (two roles, and a direct grant) is listed once and still leaves a full page.
    async fn pages_are_full_when_grants_overlap(db: Db) {
        let app = app(db).await;
        for role in ["viewer", "reader"] {
            app.accounts.create_role(role).await.unwrap();
            app.accounts.grant_role_permission(role, "project:read").await.unwrap();
        }
        let carol = app.accounts.create_user("carol", "carol-password").await.unwrap();
        let mut users = vec![app.alice, app.bob, carol];
        users.sort_unstable();
        for id in ["01", "02", "03", "04", "05"] {
            for user in &users {
                for role in ["viewer", "reader"] {
                    app.accounts.assign_role_on(*user, role, &project(id)).await.unwrap();
                }
            }
        }
        app.accounts.grant_permission_on(carol, "project:read", &project("03")).await.unwrap();
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = app.accounts.resource_ids(app.bob, "project:read", "project", after.as_deref(), 2).await.unwrap();
            let Some(last) = page.last().cloned() else { break };
            after = Some(last);
            pages.push(page);
        }
        assert_eq!(pages, [vec!["01", "02"], vec!["03", "04"], vec!["05"]]);
        let first = app.accounts.holders("project:read", &project("03"), 0, 2).await.unwrap();
        assert_eq!(first, &users[..2]);
        let rest = app.accounts.holders("project:read", &project("03"), first[1], 2).await.unwrap();
        assert_eq!(rest, &users[2..]);
    }
}

/// Two nodes with the cache: a scoped answer is served from memory, and a revoked scoped grant
/// (through the API or by plain SQL) is refused on the other node within the cache's latency.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn cached_scoped_answers_stay_live_across_nodes(_: PgPoolOptions, options: PgConnectOptions) {
    let cached = |b: axum_live_auth::AuthLayerBuilder| {
        b.principal_cache(CacheOptions::default().max_age(Duration::from_secs(600)))
    };
    let a = app_with(crate::common::node_pool(&options).await, cached).await;
    let b = crate::common::counted_app_with(crate::common::node_pool(&options).await, cached).await;
    a.listen().await;
    b.listen().await;
    a.accounts
        .grant_permission_on(a.bob, "project:read", &project("42"))
        .await
        .unwrap();
    let bob = b.login(BOB, BOB_PASSWORD).await;
    assert_eq!(b.status("/projects/42", &bob).await, StatusCode::OK);
    let before = b.statements();
    assert_eq!(b.status("/projects/42", &bob).await, StatusCode::OK);
    assert_eq!(b.statements(), before, "principal and answer from memory");
    assert!(b.layer.cache_status().unwrap().answers >= 1);

    a.accounts
        .revoke_permission_on(a.bob, "project:read", &project("42"))
        .await
        .unwrap();
    assert!(b.until("/projects/42", &bob, StatusCode::FORBIDDEN).await < Duration::from_secs(1));
    sqlx::query(
        "INSERT INTO auth_user_resource_permissions VALUES ($1, 'project:read', 'project', '42')",
    )
    .bind(a.bob)
    .execute(&crate::common::node_pool(&options).await)
    .await
    .unwrap();
    assert!(b.until("/projects/42", &bob, StatusCode::OK).await < Duration::from_secs(1));
}

/// The guard's own check failing, not the session's lookup: the lookup (which reads no grant
/// table) succeeds while the scoped check waits on a locked `auth_user_resource_permissions`
/// past the lookup's bound, which also bounds that check: `503` with `Retry-After`, and the
/// handler does not run. (A guard failing open on a database error: `200`.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn the_guards_own_check_failing_answers_503(_: PgPoolOptions, options: PgConnectOptions) {
    let bound = Duration::from_millis(300);
    let app = app_with(crate::common::node_pool(&options).await, |b| {
        b.lookup_timeout(bound)
    })
    .await;
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            "project"
        }
    };
    let router = axum::Router::new()
        .route("/projects/{id}", axum::routing::get(handler))
        .route_layer(axum_live_auth::require_permission_on(
            "project:read",
            "project",
            "id",
        ))
        .layer(app.layer.clone());
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let get = |path: &str| send(&router, get_with_cookie(path, &bob));
    assert_eq!(get("/projects/42").await.status, StatusCode::FORBIDDEN);

    let (lock, tx) =
        crate::events::lock_table(options.clone(), "auth_user_resource_permissions").await;
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(10), get("/projects/42"))
        .await
        .expect("the guard's check is bounded");
    let elapsed = started.elapsed();
    // The check given up is still at the lock (Postgres does not see a client leave while its
    // statement waits): the `503` came from the guard's query, not from the session's lookup.
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'
            AND query LIKE '%FROM auth_user_resource_permissions%'",
    )
    .fetch_one(&lock)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the handler ran");
    assert!(waiting >= 1, "the scoped check never waited at the lock");
    assert!(
        elapsed >= bound && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );

    // The lock gone: the guard answers again, and lets the holder through.
    app.accounts
        .grant_permission_on(app.bob, "project:read", &project("42"))
        .await
        .unwrap();
    assert_eq!(get("/projects/42").await.status, StatusCode::OK);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    lock.close().await;
}

/// A resource type no resource can have is the app's mistake: the guard is refused when built,
/// rather than answer `400` to every request as if the client's. (Before: built, and every
/// request, a global holder's too, got `400`.)
#[test]
#[should_panic(expected = "cannot name a resource type")]
fn a_guard_on_a_type_no_resource_can_have_is_refused_when_built() {
    let _ = axum_live_auth::require_permission_on("project:read", "project type", "id");
}
