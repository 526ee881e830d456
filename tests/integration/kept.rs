//! The connections a layer keeps for its lookups (Postgres): bounded, outside the pool's count,
//! and never kept after a statement that was cut short.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use http::StatusCode;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, TestApp, app_with, get_with_cookie,
    http::{client, send_from, serve},
};

const NAME: &str = "kept-connections-test";

/// The app's pool: `max` connections, named so that `pg_stat_activity` tells them apart.
async fn named_pool(options: &PgConnectOptions, max: u32) -> PgPool {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(max)
        .connect_with(options.clone().application_name(NAME))
        .await
        .unwrap()
}

/// The backends of the app's connections: to this test's database only, since the other tests
/// of this file name their pools the same and run side by side.
async fn backends(watch: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(NAME)
    .fetch_all(watch)
    .await
    .unwrap()
}

/// Bursts of 64 authenticated requests at once, over HTTP from 64 addresses, on a pool of 4 with
/// 2 kept connections: every one is answered, and the app never has more than 4 + 2 connections.
/// (Unbounded, each burst would take a connection from the pool for every request in flight.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn kept_connections_are_bounded(watch: PgPool) {
    let options = watch.connect_options();
    let app = app_with(named_pool(&options, 4).await, |b| b.lookup_connections(2)).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    let server = serve(app.router.clone()).await;

    let most = Arc::new(AtomicUsize::new(0));
    let sampling = tokio::spawn({
        let (watch, most) = (watch.clone(), Arc::clone(&most));
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                most.fetch_max(backends(&watch).await.len(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    for _ in 0..5 {
        let replies =
            join_all((0..64).map(|i| send_from(server, client(i), get_with_cookie("/me", &token))))
                .await;
        assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    }
    sampling.abort();
    let after = backends(&watch).await.len();
    let most = most.load(Ordering::Relaxed).max(after);
    assert!(most <= 6, "{most} connections");
    assert!(after > 4, "the layer kept none: {after} connections");
}

/// The app closing its pool does not wait for the layer's kept connections, and the layer then
/// answers 503 rather than serving on from them.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn closing_the_pool_does_not_wait_for_kept_connections(watch: PgPool) {
    let pool = named_pool(&watch.connect_options(), 2).await;
    let app = app_with(pool.clone(), |b| b.lookup_connections(2)).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(app.status("/me", &token).await, StatusCode::OK);
    }
    tokio::time::timeout(Duration::from_secs(10), pool.close())
        .await
        .expect("closing the pool waited for the layer's kept connections");
    assert_eq!(
        app.status("/me", &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// A lookup cut short by its timeout (the table locked meanwhile) closes its connection: it is
/// not kept for the next request, whose answer could otherwise start with the rest of the cut
/// conversation. The kept connection's backend goes away; later requests get their own user.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_lookup_cut_short_does_not_keep_its_connection(watch: PgPool) {
    let app = app_with(named_pool(&watch.connect_options(), 1).await, |b| {
        b.lookup_connections(1)
            .lookup_timeout(Duration::from_millis(300))
    })
    .await;
    let alice = app.login(ALICE, ALICE_PASSWORD).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    // Logins used the pool; the first lookup keeps the pool's connection.
    assert_eq!(app.status("/me", &alice).await, StatusCode::OK);
    let before = backends(&watch).await;

    let mut lock = watch.begin().await.unwrap();
    sqlx::query("LOCK TABLE auth_sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    assert_eq!(
        app.status("/me", &alice).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    lock.commit().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while backends(&watch).await.len() >= before.len() {
        assert!(
            Instant::now() < deadline,
            "no backend went away: the cut connection was kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (token, name) in [(&bob, BOB), (&alice, ALICE), (&bob, BOB)] {
        let reply = app.get("/me", token).await;
        assert_eq!(reply.status, StatusCode::OK);
        let me: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(me["username"], name);
    }
}

/// The server ends the kept connections while they sit idle (a restart, a failover, an
/// operator's `pg_terminate_backend`, `idle_session_timeout`): the next requests are answered
/// on other connections, none with `503`. (Before: each dead kept connection cost one request a
/// `503`.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn kept_connections_ended_by_the_server_cost_no_request(watch: PgPool) {
    let app = app_with(named_pool(&watch.connect_options(), 4).await, |b| {
        b.lookup_connections(2)
    })
    .await;
    let alice = app.login(ALICE, ALICE_PASSWORD).await;
    let server = serve(app.router.clone()).await;
    for _ in 0..3 {
        let replies =
            join_all((0..8).map(|i| send_from(server, client(i), get_with_cookie("/me", &alice))))
                .await;
        assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    }
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = $1 AND datname = current_database()) t",
    )
    .bind(NAME)
    .fetch_one(&watch)
    .await
    .unwrap();
    assert!(ended >= 2, "{ended} connections ended");
    for i in 0..6 {
        assert_eq!(
            app.status("/me", &alice).await,
            StatusCode::OK,
            "request {i}"
        );
    }
}

/// Lookups given up while a table lock holds them (a migration, `VACUUM FULL`): Postgres does
/// not see a client leave while its statement waits for a lock, so each closed connection's
/// server process stays, and the pool opens another. With a `lock_timeout` under the lookup's
/// bound on the layer's pool, as the README advises, each statement ends with its request and
/// the server processes stay within the pool and the kept connections. (Without it: one more
/// for every request, 20 here.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_lock_timeout_bounds_lookups_held_up_by_a_table_lock(watch: PgPool) {
    let options = watch
        .connect_options()
        .as_ref()
        .clone()
        .application_name(NAME)
        .options([("lock_timeout", "250ms")]);
    let pool = PgPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let app = app_with(pool, |b| {
        b.lookup_connections(1)
            .lookup_timeout(Duration::from_millis(300))
    })
    .await;
    let alice = app.login(ALICE, ALICE_PASSWORD).await;
    let mut lock = watch.begin().await.unwrap();
    sqlx::query("LOCK TABLE auth_sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    for _ in 0..20 {
        assert_eq!(
            app.status("/me", &alice).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let held = backends(&watch).await.len();
    lock.commit().await.unwrap();
    assert!(
        held <= 3,
        "{held} server processes for a pool of 2 and 1 kept"
    );
    assert_eq!(app.status("/me", &alice).await, StatusCode::OK);
}

/// A session whose row someone holds locked (an operator's transaction left open): its requests'
/// touches skip the row instead of waiting on it, so they neither wait out the lookup's bound
/// nor leave a backend behind each time. (Before, each touch waited 300 ms, was given up, and
/// its closed connection's backend stayed, waiting on the lock: a new one for every request.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_locked_session_row_holds_up_no_touch(watch: PgPool) {
    let options = watch.connect_options();
    let app = app_with(named_pool(&options, 4).await, |b| {
        b.lookup_connections(2)
            .lookup_timeout(Duration::from_millis(300))
    })
    .await;
    let alice = app.login(ALICE, ALICE_PASSWORD).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    // Seen ten minutes ago: every request of alice's is due to touch the row.
    app.db.age_sessions(600, false).await;
    let mut lock = watch.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM auth_sessions WHERE user_id = $1 FOR UPDATE")
        .bind(app.alice)
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..15 {
        for token in [&alice, &bob] {
            assert_eq!(app.status("/me", token).await, StatusCode::OK);
        }
    }
    let elapsed = started.elapsed();
    let count = backends(&watch).await.len();
    lock.rollback().await.unwrap();
    assert!(count <= 6, "{count} backends for a pool of 4 and 2 kept");
    assert!(
        elapsed < Duration::from_secs(4),
        "30 requests took {elapsed:?}"
    );
}

/// An app keeping up to four connections from a pool whose idle timeout is one second (with
/// its background work running, if `background`), after a burst of 16 requests at once that
/// keeps four; and its user's token.
async fn after_a_burst(watch: &PgPool, background: bool) -> (TestApp, String) {
    let pool = PgPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(8)
        .idle_timeout(Duration::from_secs(1))
        .connect_with(
            watch
                .connect_options()
                .as_ref()
                .clone()
                .application_name(NAME),
        )
        .await
        .unwrap();
    let app = app_with(pool, |b| b.lookup_connections(4)).await;
    if background {
        tokio::spawn(app.layer.background());
    }
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    let server = serve(app.router.clone()).await;
    // How many of a burst's lookups overlap varies from run to run (at times one connection
    // served them all): a lock holds them at the database until four wait (at most 1 s, within
    // the lookup's bound of 2 s), so that the burst takes, and keeps, four.
    let mut lock = watch.begin().await.unwrap();
    sqlx::query("LOCK TABLE auth_sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let release = async {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE application_name = $1 AND datname = current_database()
                    AND wait_event_type = 'Lock'",
            )
            .bind(NAME)
            .fetch_one(watch)
            .await
            .unwrap();
            if waiting >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lock.rollback().await.unwrap();
    };
    let (burst, ()) = tokio::join!(
        join_all((0..16).map(|i| send_from(server, client(i), get_with_cookie("/me", &token)))),
        release
    );
    assert!(burst.iter().all(|r| r.status == StatusCode::OK));
    // The precondition of the tests below: four kept, outside the pool's count (else their
    // `open <= 2` would hold with none ever kept).
    let pooled = app.db.postgres().size() as usize;
    let kept = backends(watch).await.len().saturating_sub(pooled);
    assert!(
        kept >= 4,
        "the burst kept {kept} connections ({pooled} in the pool)"
    );
    (app, token)
}

/// Kept connections follow the pool's idle timeout even when light traffic only ever takes the
/// most recently used one: a burst keeps four, then one request at a time for 2.5 s, and the
/// three that sat idle past the pool's 1 s are closed. (Before: only the connection on top was
/// ever looked at, and the others stayed open for good.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn kept_connections_idle_past_the_pools_timeout_are_closed(watch: PgPool) {
    let (app, token) = after_a_burst(&watch, false).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(app.status("/me", &token).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open = backends(&watch).await.len();
    assert!(open <= 2, "{open} connections still open");
}

/// With no request after a burst, the layer's background work closes the kept connections once
/// they are idle past the pool's timeout. (Before, they stayed open until the next request,
/// however long.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn kept_connections_close_on_time_without_requests(watch: PgPool) {
    let (_app, _) = after_a_burst(&watch, true).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let open = backends(&watch).await.len();
    assert!(
        open <= 2,
        "{open} connections still open after the pool's idle timeout"
    );
}

/// The `Accounts` taken from a layer hold none of the layer's kept connections: once the layer
/// is gone and the pool closed, no connection of the app is open. (Before, the kept ones stayed
/// open as long as such an `Accounts` lived.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn kept_connections_close_with_the_layer(watch: PgPool) {
    let pool = named_pool(watch.connect_options().as_ref(), 8).await;
    let app = app_with(pool.clone(), |b| b.lookup_connections(4)).await;
    let token = app.login(ALICE, ALICE_PASSWORD).await;
    let statuses = join_all((0..8).map(|_| app.status("/me", &token))).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    let accounts = app.layer.accounts();
    drop(app);
    pool.close().await;
    let started = Instant::now();
    while !backends(&watch).await.is_empty() && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = backends(&watch).await.len();
    assert_eq!(
        open, 0,
        "connections still open while an `Accounts` of the layer lives"
    );
    drop(accounts);
}
