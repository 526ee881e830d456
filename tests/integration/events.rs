//! The client event stream, `GET /account/events`, read over real HTTP as a browser's
//! `EventSource` reads it.

use std::time::Duration;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, COOKIE, TestApp, app_with, both_stores,
    http::{Event, EventStream, client, open_events, send_from, serve},
};

/// Events arrive within this (a change is pushed in milliseconds; the bound only keeps a
/// broken test from hanging).
const SOON: Duration = Duration::from_secs(10);

async fn stream(app: &TestApp, token: &str) -> (EventStream, std::net::SocketAddr) {
    let server = serve(app.router.clone()).await;
    let cookie = (header::COOKIE, format!("{COOKIE}={token}"));
    let stream = open_events(server, client(1), "/account/events", &[cookie]).await;
    (stream, server)
}

fn principal(event: &Option<Event>) -> Value {
    let event = event.as_ref().expect("an event, not the end of the stream");
    assert_eq!(event.name, "principal", "{event:?}");
    serde_json::from_str(&event.data).unwrap()
}

async fn ended(stream: &mut EventStream) {
    let event = stream.next(SOON).await.expect("an `ended` event");
    assert_eq!(event.name, "ended", "{event:?}");
    assert_eq!(stream.next(SOON).await, None, "then the stream closes");
}

/// The layer used by these tests: Postgres streams need the background listener.
async fn events_app(db: impl Into<crate::common::Db>) -> TestApp {
    let app = app_with(db, |b| b).await;
    tokio::spawn(app.layer.background());
    wait_until_streams_open(&app).await;
    app
}

/// On Postgres, streams open once the node listens; SQLite always hears its own changes.
async fn wait_until_streams_open(app: &TestApp) {
    let token = app.login(BOB, BOB_PASSWORD).await;
    for _ in 0..200 {
        let (stream, _) = stream(app, &token).await;
        if stream.status == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("event streams never opened");
}

/// A node whose pool has `connections` (a quarter of them the streams' turns to read) and no
/// kept connections, listening, and a session of bob's on it.
async fn node(options: PgConnectOptions, connections: u32) -> (TestApp, String) {
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .unwrap();
    let app = app_with(pool, |b| b.lookup_connections(0)).await;
    tokio::spawn(app.layer.background());
    wait_until_streams_open(&app).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    (app, token)
}

/// A pool of its own (two connections), and a transaction on it that holds `table` against
/// every read until it ends.
pub(crate) async fn lock_table(
    options: PgConnectOptions,
    table: &str,
) -> (sqlx::PgPool, sqlx::Transaction<'static, sqlx::Postgres>) {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    (pool, tx)
}

both_stores! {
    async fn the_first_event_is_the_user_and_their_sorted_permissions(db: Db) {
        let app = events_app(db).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let (mut events, _) = stream(&app, &token).await;
        assert_eq!(events.status, StatusCode::OK);
        assert_eq!(events.headers[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(events.headers[header::CACHE_CONTROL], "no-store");
        let first = principal(&events.next(SOON).await);
        assert_eq!(
            first,
            json!({"id": app.alice, "username": ALICE, "permissions": ["admin", "reports:read"]})
        );
        assert!(events.quiet_for(Duration::from_millis(300)).await, "nothing else until a change");
    }

    async fn grants_and_revocations_each_send_one_new_picture(db: Db) {
        let app = events_app(db).await;
        let token = app.login(BOB, BOB_PASSWORD).await;
        let (mut events, _) = stream(&app, &token).await;
        assert_eq!(principal(&events.next(SOON).await)["permissions"], json!(["reports:read"]));

        app.accounts.grant_permission(app.bob, "billing:write").await.unwrap();
        let next = principal(&events.next(SOON).await);
        assert_eq!(next["permissions"], json!(["billing:write", "reports:read"]));

        app.accounts.revoke_permission(app.bob, "reports:read").await.unwrap();
        assert_eq!(principal(&events.next(SOON).await)["permissions"], json!(["billing:write"]));

        // Through a role: granting the role to bob, then a permission to the role.
        app.accounts.create_role("auditor").await.unwrap();
        app.accounts.assign_role(app.bob, "auditor").await.unwrap();
        app.accounts.grant_role_permission("auditor", "audit:read").await.unwrap();
        let next = principal(&events.next(SOON).await);
        assert_eq!(next["permissions"], json!(["audit:read", "billing:write"]));
        // A change of someone else's permissions sends nothing.
        app.accounts.grant_permission(app.alice, "other").await.unwrap();
        assert!(events.quiet_for(Duration::from_millis(300)).await);
    }

    async fn logout_elsewhere_ends_the_stream(db: Db) {
        let app = events_app(db).await;
        let token = app.login(BOB, BOB_PASSWORD).await;
        let (mut events, server) = stream(&app, &token).await;
        principal(&events.next(SOON).await);
        let logout = Request::post("/logout")
            .header(header::COOKIE, format!("{COOKIE}={token}"))
            .header("sec-fetch-site", "same-origin")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send_from(server, client(2), logout).await.status, StatusCode::SEE_OTHER);
        ended(&mut events).await;
    }

    /// Someone logs in on the same browser: the session the cookie held ends, and so do its
    /// streams. (Before, on SQLite, nothing told them: the stream went on showing the old user
    /// until the idle deadline.)
    async fn logging_in_over_a_session_ends_its_stream(db: Db) {
        let app = events_app(db).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let (mut events, server) = stream(&app, &token).await;
        principal(&events.next(SOON).await);
        let mut login = crate::common::login_request(BOB, BOB_PASSWORD);
        login.headers_mut().insert(header::COOKIE, format!("{COOKIE}={token}").parse().unwrap());
        assert_eq!(send_from(server, client(2), login).await.status, StatusCode::SEE_OTHER);
        ended(&mut events).await;
    }

    /// Sudo mode rotates the token: the old token's stream says `reconnect`, since the browser
    /// holds the new cookie and the session goes on. (Before: `ended`, and the page went to the
    /// login form.)
    async fn a_rotation_tells_the_stream_to_reconnect(db: Db) {
        let app = events_app(db).await;
        let token = app.login(BOB, BOB_PASSWORD).await;
        let (mut events, server) = stream(&app, &token).await;
        principal(&events.next(SOON).await);
        let reauth = Request::post("/account/reauth")
            .header(header::COOKIE, format!("{COOKIE}={token}"))
            .header("sec-fetch-site", "same-origin")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("password={BOB_PASSWORD}")))
            .unwrap();
        assert_eq!(send_from(server, client(2), reauth).await.status, StatusCode::NO_CONTENT);
        let event = events.next(SOON).await.expect("a `reconnect` event");
        assert_eq!(event.name, "reconnect", "{event:?}");
        assert_eq!(events.next(SOON).await, None, "then the stream closes");
    }

    /// A graceful shutdown waits for open connections, and an event stream never ends by
    /// itself: `close_event_streams`, called as the shutdown starts, ends it with `reconnect`
    /// and refuses new ones, and the server stops. (Before there was no way: the server waited
    /// for the browser to leave.)
    async fn closing_the_streams_lets_a_graceful_shutdown_finish(db: Db) {
        let app = events_app(db).await;
        let token = app.login(BOB, BOB_PASSWORD).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let (shut_down, shutdown) = tokio::sync::oneshot::channel::<()>();
        let layer = app.layer.clone();
        let serving = tokio::spawn(
            axum::serve(
                listener,
                app.router.clone().into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = shutdown.await;
                layer.close_event_streams();
            })
            .into_future(),
        );
        let cookie = (header::COOKIE, format!("{COOKIE}={token}"));
        let mut events = open_events(server, client(1), "/account/events", &[cookie]).await;
        principal(&events.next(SOON).await);
        shut_down.send(()).unwrap();
        let event = events.next(SOON).await.expect("a `reconnect` event");
        assert_eq!(event.name, "reconnect", "{event:?}");
        assert_eq!(events.next(SOON).await, None, "then the stream closes");
        let stopped = tokio::time::timeout(SOON, serving).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "the server stops: {stopped:?}");
        let (refused, _) = stream(&app, &token).await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "no new stream");
    }

    async fn revoking_the_session_ends_the_stream(db: Db) {
        let app = events_app(db).await;
        let token = app.login(BOB, BOB_PASSWORD).await;
        let (mut events, _) = stream(&app, &token).await;
        principal(&events.next(SOON).await);
        let id = axum_live_auth::SessionId::parse(token.split_once('.').unwrap().0).unwrap();
        assert!(app.accounts.revoke_session(app.bob, &id).await.unwrap());
        ended(&mut events).await;
    }

    async fn disabling_the_user_ends_the_stream(db: Db) {
        let app = events_app(db).await;
        let token = app.login(BOB, BOB_PASSWORD).await;
        let (mut events, _) = stream(&app, &token).await;
        principal(&events.next(SOON).await);
        app.accounts.disable_user(app.bob).await.unwrap();
        ended(&mut events).await;
    }

    async fn a_password_reset_ends_the_stream(db: Db) {
        let app = events_app(db).await;
        let token = app.login(BOB, BOB_PASSWORD).await;
        let (mut events, _) = stream(&app, &token).await;
        principal(&events.next(SOON).await);
        app.accounts.reset_password(app.bob, "bob-new-password").await.unwrap();
        ended(&mut events).await;
    }

    async fn expiry_ends_the_stream(db: Db) {
        let app = app_with(db, |b| {
            b.idle_timeout(Duration::from_secs(2)).touch_interval(Duration::from_secs(1))
        })
        .await;
        tokio::spawn(app.layer.background());
        wait_until_streams_open(&app).await;
        let token = app.login(BOB, BOB_PASSWORD).await;
        let (mut events, _) = stream(&app, &token).await;
        principal(&events.next(SOON).await);
        // Nothing uses the session: at its idle deadline the stream checks it and ends.
        ended(&mut events).await;
    }

    async fn a_session_has_a_bounded_number_of_streams(db: Db) {
        let app = app_with(db, |b| b.event_streams(Duration::from_secs(15), 2, 100, 100)).await;
        tokio::spawn(app.layer.background());
        wait_until_streams_open(&app).await;
        let token = app.login(BOB, BOB_PASSWORD).await;
        let (mut one, _) = stream(&app, &token).await;
        let (two, _) = stream(&app, &token).await;
        let (three, _) = stream(&app, &token).await;
        assert_eq!((one.status, two.status), (StatusCode::OK, StatusCode::OK));
        assert_eq!(three.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(three.headers.contains_key(header::RETRY_AFTER));
        principal(&one.next(SOON).await);
        assert_eq!(app.layer.open_event_streams(), 2);
        drop((one, two));
        for _ in 0..100 {
            if app.layer.open_event_streams() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("closed streams were not released");
    }

    async fn a_user_has_a_bounded_number_of_streams(db: Db) {
        // Two per session, three per user: a user's sessions together cannot fill the node.
        let app = app_with(db, |b| b.event_streams(Duration::from_secs(15), 2, 3, 100)).await;
        tokio::spawn(app.layer.background());
        wait_until_streams_open(&app).await;
        let (phone, laptop) = (
            app.login(BOB, BOB_PASSWORD).await,
            app.login(BOB, BOB_PASSWORD).await,
        );
        let alice = app.login(ALICE, ALICE_PASSWORD).await;
        let (one, _) = stream(&app, &phone).await;
        let (two, _) = stream(&app, &phone).await;
        let (three, _) = stream(&app, &laptop).await;
        assert_eq!(
            (one.status, two.status, three.status),
            (StatusCode::OK, StatusCode::OK, StatusCode::OK)
        );
        // The laptop's session is under its own cap; bob is at his.
        let (four, _) = stream(&app, &laptop).await;
        assert_eq!(four.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(four.headers.contains_key(header::RETRY_AFTER));
        // Another user is not held back by bob's streams.
        let (mut other, _) = stream(&app, &alice).await;
        assert_eq!(other.status, StatusCode::OK);
        principal(&other.next(SOON).await);
        // A stream of bob's closed gives him his place back.
        drop(one);
        let mut reopened = None;
        for _ in 0..100 {
            let (again, _) = stream(&app, &laptop).await;
            if again.status == StatusCode::OK {
                reopened = Some(again);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        principal(&reopened.expect("a place given back").next(SOON).await);
    }

    async fn a_node_has_a_bounded_number_of_streams(db: Db) {
        let app = app_with(db, |b| b.event_streams(Duration::from_secs(15), 2, 100, 3)).await;
        tokio::spawn(app.layer.background());
        wait_until_streams_open(&app).await;
        // The probe's stream is released once its connection is seen closed.
        for _ in 0..100 {
            if app.layer.open_event_streams() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let bob = app.login(BOB, BOB_PASSWORD).await;
        let alice = app.login(ALICE, ALICE_PASSWORD).await;
        let (one, _) = stream(&app, &bob).await;
        let (two, _) = stream(&app, &bob).await;
        let (three, _) = stream(&app, &alice).await;
        let (four, _) = stream(&app, &alice).await;
        assert_eq!(
            (one.status, two.status, three.status),
            (StatusCode::OK, StatusCode::OK, StatusCode::OK)
        );
        // Alice's session is under its own cap; the node is full.
        assert_eq!(four.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(four.headers.contains_key(header::RETRY_AFTER));
        assert_eq!(app.layer.open_event_streams(), 3);
    }

    async fn a_stream_needs_a_session(db: Db) {
        let app = events_app(db).await;
        let server = serve(app.router.clone()).await;
        let events = open_events(server, client(1), "/account/events", &[]).await;
        assert_eq!(events.status, StatusCode::UNAUTHORIZED);
    }
}

/// Postgres: changes made by plain SQL, and through another node, reach the stream.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn plain_sql_and_other_nodes_reach_the_stream(_: PgPoolOptions, options: PgConnectOptions) {
    let pool = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    let b = events_app(pool.clone()).await;
    // Node A: a layer of its own on its own pool.
    let a = axum_live_auth::AuthLayer::builder(
        PgPoolOptions::new().connect_with(options).await.unwrap(),
    )
    .allowed_origin("http://localhost:3000")
    .build()
    .unwrap()
    .accounts();
    let token = b.login(BOB, BOB_PASSWORD).await;
    let (mut events, _) = stream(&b, &token).await;
    principal(&events.next(SOON).await);

    sqlx::query(
        "INSERT INTO auth_user_permissions (user_id, permission) VALUES ($1, 'sql:granted')",
    )
    .bind(b.bob)
    .execute(&pool)
    .await
    .unwrap();
    let next = principal(&events.next(SOON).await);
    assert_eq!(next["permissions"], json!(["reports:read", "sql:granted"]));

    // Node A (its own layer, no stream hub of B's) revokes: B's stream hears it by NOTIFY.
    a.revoke_permission(b.bob, "sql:granted").await.unwrap();
    assert_eq!(
        principal(&events.next(SOON).await)["permissions"],
        json!(["reports:read"])
    );

    sqlx::query("DELETE FROM auth_sessions")
        .execute(&pool)
        .await
        .unwrap();
    ended(&mut events).await;
}

/// Postgres: a session whose secret or user is replaced by hand is another session, which the
/// stream's token no longer opens: its stream ends rather than go on with the row's new picture.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_session_replaced_by_hand_ends_its_stream(_: PgPoolOptions, options: PgConnectOptions) {
    let pool = PgPoolOptions::new().connect_with(options).await.unwrap();
    let app = events_app(pool.clone()).await;
    for change in [
        "UPDATE auth_sessions SET secret_hash = sha256(secret_hash)",
        "UPDATE auth_sessions SET user_id = (SELECT id FROM auth_users WHERE username = 'alice')",
    ] {
        sqlx::query("DELETE FROM auth_sessions")
            .execute(&pool)
            .await
            .unwrap();
        let token = app.login(BOB, BOB_PASSWORD).await;
        let (mut events, _) = stream(&app, &token).await;
        principal(&events.next(SOON).await);
        sqlx::query(change).execute(&pool).await.unwrap();
        ended(&mut events).await;
    }
}

/// Postgres: when the node's listener connection is lost, open streams are told to reconnect.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_lost_listener_tells_open_streams(_: PgPoolOptions, options: PgConnectOptions) {
    let pool = PgPoolOptions::new().connect_with(options).await.unwrap();
    let app = events_app(pool.clone()).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    let (mut events, _) = stream(&app, &token).await;
    principal(&events.next(SOON).await);
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'axum-live-auth-listener' AND datname = current_database()) t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(killed, 1);
    let event = events.next(SOON).await.expect("an event");
    assert_eq!(event.name, "reconnect");
    assert_eq!(events.next(SOON).await, None);
    // Once the listener is back, a new stream opens and reads a fresh picture.
    wait_until_streams_open(&app).await;
    let (mut again, _) = stream(&app, &token).await;
    principal(&again.next(SOON).await);
}

/// Postgres: a change that wakes many streams at once queues their database reads on the node,
/// a quarter of the pool at a time, so that requests still find connections. Seen at the
/// database: with the sessions table locked, 8 woken streams on a pool of 8 have 2 reads
/// waiting there. (Before: 8, the whole pool.) Once the lock goes, every stream is updated.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn woken_streams_read_a_quarter_of_the_pool_at_a_time(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (app, token) = node(options.clone().application_name("woken-node"), 8).await;
    let server = serve(app.router.clone()).await;
    let cookie = || (header::COOKIE, format!("{COOKIE}={token}"));
    let mut streams = Vec::new();
    for i in 0..8 {
        let mut stream = open_events(server, client(i + 1), "/account/events", &[cookie()]).await;
        principal(&stream.next(SOON).await);
        streams.push(stream);
    }
    let (lock, tx) = lock_table(options, "auth_sessions").await;
    app.accounts
        .grant_permission(app.bob, "woken:read")
        .await
        .unwrap();
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name = 'woken-node' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&lock)
        .await
        .unwrap()
    };
    let mut most = 0;
    for _ in 0..40 {
        most = most.max(waiting().await);
        if most > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.rollback().await.unwrap();
    assert_eq!(most, 2, "reads waiting at the database at once");
    for stream in &mut streams {
        let next = principal(&stream.next(SOON).await);
        assert_eq!(next["permissions"], json!(["reports:read", "woken:read"]));
    }
    lock.close().await;
}

/// Postgres: a stream whose client stops reading holds no turn to read. The body of stream A
/// is polled only until its read after a change is waiting (at a lock on the sessions table),
/// as a server stops polling a body whose client does not read; stream B, read normally on a
/// node with one turn, must still get each new picture. (Before: A's read kept the node's one
/// turn once it had it, unpolled, and B's second picture never came.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_stream_nobody_reads_keeps_no_turn_from_the_others(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    // A pool of 4: one turn to read for the node's streams.
    let (app, token) = node(options.clone(), 4).await;
    let request = Request::get("/account/events")
        .header(header::COOKIE, format!("{COOKIE}={token}"))
        .body(Body::empty())
        .unwrap();
    let mut unread = app
        .router
        .clone()
        .oneshot(request)
        .await
        .unwrap()
        .into_body();
    let first = tokio::time::timeout(SOON, unread.frame()).await.unwrap();
    assert!(
        first.is_some_and(|frame| frame.is_ok()),
        "A's first picture"
    );
    let (mut events, _) = stream(&app, &token).await;
    principal(&events.next(SOON).await);

    let (lock, tx) = lock_table(options, "auth_sessions").await;
    app.accounts
        .grant_permission(app.bob, "first:read")
        .await
        .unwrap();
    // A wakes and waits for its read (its turn, or the lock); then nothing polls it again.
    let polled = tokio::time::timeout(Duration::from_millis(500), unread.frame()).await;
    assert!(polled.is_err(), "A's read waits at the lock");
    tx.rollback().await.unwrap();
    let next = principal(&events.next(SOON).await);
    assert_eq!(next["permissions"], json!(["first:read", "reports:read"]));

    app.accounts
        .grant_permission(app.bob, "second:read")
        .await
        .unwrap();
    let next = principal(&events.next(SOON).await);
    assert_eq!(
        next["permissions"],
        json!(["first:read", "reports:read", "second:read"]),
        "B's read had a turn"
    );
    drop(unread);
    lock.close().await;
}

/// Postgres: a stream whose first read of the session was slow (held 1.5 s by a lock on the
/// sessions table; the request itself is served by the principal cache) still ends at the
/// session's idle deadline, measured from before the read: a deleted expired session notifies
/// no one, so the stream's own timer is what ends it. (Before: the timer started after the
/// read, and `ended` came the read's time late.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_slow_read_does_not_push_the_streams_end_later(pool: sqlx::PgPool) {
    let app = app_with(pool.clone(), |b| {
        b.idle_timeout(Duration::from_secs(4))
            .touch_interval(Duration::from_secs(2))
            .principal_cache(axum_live_auth::CacheOptions::default())
    })
    .await;
    tokio::spawn(app.layer.background());
    wait_until_streams_open(&app).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    assert_eq!(app.status("/me", &token).await, StatusCode::OK); // now in the cache
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE auth_sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let (mut events, _) = stream(&app, &token).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    lock.rollback().await.unwrap();
    principal(&events.next(SOON).await);
    let left: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM idle_expires_at - now())::float8 FROM auth_sessions",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let waited = std::time::Instant::now();
    ended(&mut events).await;
    let late = waited.elapsed().as_secs_f64() - left;
    assert!(
        late < 0.75,
        "`ended` came {late:.2} s after the idle deadline"
    );
}

/// On SQLite nothing tells the node of a change written by plain SQL, or by a request dropped
/// while its write committed (the write commits; the wake after it never runs): each heartbeat
/// reads the session again, so such a change reaches the stream within one. (Before, the
/// stream showed the old picture until the session's idle deadline, 30 minutes.)
#[sqlx::test(migrator = "axum_live_auth::SQLITE_MIGRATOR")]
async fn on_sqlite_a_change_by_hand_reaches_the_stream_within_a_heartbeat(pool: sqlx::SqlitePool) {
    let heartbeat = Duration::from_millis(200);
    let app = app_with(pool, |b| b.event_streams(heartbeat, 8, 32, 10_000)).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    let (mut events, _) = stream(&app, &token).await;
    assert_eq!(
        principal(&events.next(SOON).await)["permissions"],
        json!(["reports:read"])
    );
    let within = Duration::from_secs(3);
    app.db
        .exec(&format!(
            "INSERT INTO auth_user_permissions (user_id, permission) VALUES ({}, 'x')",
            app.bob
        ))
        .await;
    let granted = principal(&events.next(within).await);
    assert_eq!(granted["permissions"], json!(["reports:read", "x"]));
    app.db
        .exec("UPDATE auth_users SET disabled_at = 1 WHERE username = 'bob'")
        .await;
    let event = events.next(within).await.expect("an `ended` event");
    assert_eq!(event.name, "ended", "{event:?}");
}
