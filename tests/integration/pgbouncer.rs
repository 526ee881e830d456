//! The behaviour suite's core through a real PgBouncer in transaction mode: login, a live
//! revocation, the cache kept coherent across two nodes (their listeners on direct
//! connections), and concurrent requests from both nodes over two server connections.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use axum_live_auth::CacheOptions;
use futures_util::future::join_all;
use http::StatusCode;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tower::ServiceExt as _;

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, COOKIE, TestApp, app_on,
    example::{free_port, wait_for_port},
};

/// PgBouncer on a free loopback port, in front of the test's Postgres; stopped when dropped.
struct Bouncer {
    process: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Bouncer {
    /// `None` when PgBouncer is not installed.
    async fn start(upstream: &PgConnectOptions) -> Option<Self> {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())?;
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("axum-live-auth-pgbouncer-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let user = upstream.get_username();
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        // Two server connections for every client of both nodes: clients share them.
        let config = format!(
            "[databases]\n* = host={} port={}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {}\npool_mode = transaction\n\
             default_pool_size = 2\nmax_client_conn = 100\n",
            upstream.get_host(),
            upstream.get_port(),
            dir.join("users.txt").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).unwrap();
        // PgBouncer refuses to run as root: it drops to the postgres user (or nobody) then.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n");
        let mut command = Command::new(binary);
        if root {
            let user = if Command::new("id")
                .arg("postgres")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                "postgres"
            } else {
                "nobody"
            };
            command.args(["-u", user]);
        }
        let process = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, Duration::from_secs(20)).await;
        Some(Self { process, port, dir })
    }

    fn options(&self, upstream: &PgConnectOptions) -> PgConnectOptions {
        upstream.clone().host("127.0.0.1").port(self.port)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node whose request pool goes through the bouncer and whose listener connects directly.
async fn node(bouncer: &Bouncer, upstream: &PgConnectOptions) -> TestApp {
    let requests = axum_live_auth::through_transaction_pooler(
        PgPoolOptions::new().max_connections(8),
        bouncer.options(upstream),
    );
    let direct = PgPoolOptions::new().connect_lazy_with(upstream.clone());
    let app = app_on(direct.clone().into(), requests.into(), |b| {
        b.principal_cache(CacheOptions::default().max_age(Duration::from_secs(600)))
            .listen_pool(direct)
            // Concurrent logins of one account below: not this test's business to throttle.
            .login_backoff(1000, Duration::from_secs(1))
            .password_hashing(8, 8)
    })
    .await;
    app.listen().await;
    app
}

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn the_core_holds_through_pgbouncer_in_transaction_mode(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let Some(bouncer) = Bouncer::start(&options).await else {
        eprintln!("NOT RUN: pgbouncer is not installed (apt-get install pgbouncer)");
        return;
    };
    let a = node(&bouncer, &options).await;
    let b = node(&bouncer, &options).await;

    // Login through node A; the session works on both.
    let bob = a.login(BOB, BOB_PASSWORD).await;
    let alice = b.login(ALICE, ALICE_PASSWORD).await;
    for node in [&a, &b] {
        assert_eq!(node.status("/reports", &bob).await, StatusCode::OK);
        assert_eq!(node.status("/me", &alice).await, StatusCode::OK);
    }

    // Many requests at once from both nodes, over two server connections.
    let requests = (0..60).map(|i| {
        let (node, token) = if i % 2 == 0 { (&a, &bob) } else { (&b, &alice) };
        async move { node.status("/me", token).await }
    });
    let statuses = join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // Logins too (a transaction of their own, inside the checkout's).
    let logins = (0..6).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        async move { node.login(BOB, BOB_PASSWORD).await }
    });
    join_all(logins).await;

    // A live revocation through A: refused on B (cached there) within the cache's bound.
    a.accounts
        .revoke_permission(a.bob, "reports:read")
        .await
        .unwrap();
    b.until("/reports", &bob, StatusCode::FORBIDDEN).await;
    a.until("/reports", &bob, StatusCode::FORBIDDEN).await;
    b.accounts.disable_user(b.alice).await.unwrap();
    a.until("/me", &alice, StatusCode::UNAUTHORIZED).await;
}

/// A change made through the pooler's store is committed when the call returns: the next
/// statement, on another connection, sees it. (When the `COMMIT` went out only as the connection
/// went back to the pool, a role just created was often not there yet for the grant that
/// followed.) Against Postgres directly: the property is the store's, not PgBouncer's.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_change_through_the_pooler_is_committed_when_the_call_returns(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let accounts = axum_live_auth::Accounts::new(axum_live_auth::through_transaction_pooler(
        PgPoolOptions::new().max_connections(4),
        options.clone(),
    ));
    let direct = PgPoolOptions::new().connect_with(options).await.unwrap();
    for i in 0..100 {
        let role = format!("role{i}");
        accounts.create_role(&role).await.unwrap();
        accounts.grant_role_permission(&role, "p").await.unwrap();
        let granted: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM auth_role_permissions p JOIN auth_roles r ON r.id = p.role_id
              WHERE r.name = $1",
        )
        .bind(&role)
        .fetch_one(&direct)
        .await
        .unwrap();
        assert_eq!(granted, 1, "{role}");
    }
}

/// Through the pooler a request's lookup and touch share one transaction, committed after the
/// touch: the idle deadline moves (a transaction only dropped would roll the touch back).
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_touch_through_the_pooler_is_committed(_: PgPoolOptions, options: PgConnectOptions) {
    let pooled = axum_live_auth::through_transaction_pooler(
        PgPoolOptions::new().max_connections(4),
        options.clone(),
    );
    let direct = PgPoolOptions::new().connect_with(options).await.unwrap();
    let app = app_on(direct.clone().into(), pooled.into(), |b| b).await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    // Seen ten minutes ago, idle deadline in twenty: past the touch interval.
    app.db.age_sessions(600, true).await;
    let deadline = || async {
        sqlx::query_scalar::<_, f64>(
            "SELECT extract(epoch FROM idle_expires_at - now())::float8 FROM auth_sessions",
        )
        .fetch_one(&direct)
        .await
        .unwrap()
    };
    assert!(deadline().await < 25.0 * 60.0);
    assert_eq!(app.status("/me", &bob).await, StatusCode::OK);
    assert!(deadline().await > 29.0 * 60.0, "the touch was committed");
}

/// A lookup through the pooler that gives up while its `BEGIN` is unanswered (the pooler queued
/// it) leaves no transaction behind on the connection: in one, `now()` stands still at the
/// `BEGIN`, and a session ended since still passes. (sqlx 0.9.0 queues no `ROLLBACK` for a
/// `BEGIN` cancelled before its answer; before the store's own transaction type, the next
/// request on that connection answered `200` for an ended session.) Against Postgres directly,
/// through a route that holds the `BEGIN` as a queueing pooler would.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_lookup_that_gave_up_on_its_begin_leaves_no_transaction_behind(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (route, routed) = crate::common::wire::Route::to(&options).await;
    let pooled = axum_live_auth::through_transaction_pooler(
        PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false),
        routed,
    );
    let direct = PgPoolOptions::new().connect_with(options).await.unwrap();
    let app = app_on(direct.clone().into(), pooled.into(), |b| {
        b.lookup_timeout(Duration::from_millis(300))
    })
    .await;
    let bob = app.login(BOB, BOB_PASSWORD).await;
    assert_eq!(app.status("/me", &bob).await, StatusCode::OK);
    // The connection back in the pool (its release runs after the answer).
    tokio::time::sleep(Duration::from_millis(200)).await;
    route.hold();
    assert_eq!(
        app.status("/me", &bob).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    route.resume();
    // A `BEGIN` left open would now be 1.5 s old; the session ends after it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query("UPDATE auth_sessions SET idle_expires_at = now() - interval '1 second'")
        .execute(&direct)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(app.status("/me", &bob).await, StatusCode::UNAUTHORIZED);
    }
}

/// The crate's migrations run on a new database through a real PgBouncer (the quickstart does
/// this when `AUTH_LISTEN_URL` is set). This does not show that `migrate` must pin its
/// statements in one transaction: with one client, the bouncer hands it the same server
/// connection each time, and the migrations pass without the pinning too.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn migrations_run_through_pgbouncer(_: PgPoolOptions, options: PgConnectOptions) {
    let Some(bouncer) = Bouncer::start(&options).await else {
        eprintln!("NOT RUN: pgbouncer is not installed (apt-get install pgbouncer)");
        return;
    };
    let pool = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    let fresh = format!("axum_live_auth_migrate_{}", bouncer.port);
    let create = format!("CREATE DATABASE \"{fresh}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&pool)
        .await
        .unwrap();
    let through = bouncer.options(&options).database(&fresh);
    let migrated = axum_live_auth::migrate(axum_live_auth::through_transaction_pooler(
        PgPoolOptions::new().max_connections(2),
        through,
    ))
    .await;
    let direct = PgPoolOptions::new()
        .connect_with(options.clone().database(&fresh))
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'auth_sessions'",
    )
    .fetch_one(&direct)
    .await
    .unwrap();
    direct.close().await;
    let drop = format!("DROP DATABASE \"{fresh}\" WITH (FORCE)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
        .execute(&pool)
        .await
        .unwrap();
    migrated.unwrap();
    assert_eq!(tables, 1);
}

/// Through a pooler too, a failed `migrate` leaves no lock behind. (Before, sqlx's
/// session-level lock stayed on a server connection the bouncer hands to every client.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_failed_migrate_through_pgbouncer_leaves_no_lock_behind(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let Some(bouncer) = Bouncer::start(&options).await else {
        eprintln!("NOT RUN: pgbouncer is not installed (apt-get install pgbouncer)");
        return;
    };
    let direct = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    crate::migrations::tamper_with_the_last_migration(&direct).await;
    let failed = axum_live_auth::migrate(axum_live_auth::through_transaction_pooler(
        PgPoolOptions::new().max_connections(2),
        bouncer.options(&options),
    ))
    .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(crate::migrations::advisory_locks(&direct).await, 0);
}

/// `migrate` stays a `Send` future through a pooler too, so that an app can spawn it.
#[tokio::test]
async fn migrating_through_a_pooler_is_a_send_future() {
    fn send<T: Send>(_: T) {}
    let pooled = axum_live_auth::through_transaction_pooler(
        PgPoolOptions::new(),
        "postgres://localhost/app".parse().unwrap(),
    );
    send(axum_live_auth::migrate(pooled));
}

/// Through a transaction pooler LISTEN hears nothing, so the principal cache needs a direct
/// listener pool: without one the layer does not build (the cache would never hear of a
/// revocation), and without the cache no listener runs, so event streams are refused.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn through_a_pooler_only_a_direct_pool_listens(_: PgPoolOptions, options: PgConnectOptions) {
    use axum_live_auth::{AuthLayer, ConfigError};
    let pooled = || {
        axum_live_auth::through_transaction_pooler(
            PgPoolOptions::new().max_connections(2),
            options.clone(),
        )
    };
    let with_cache = |store| {
        AuthLayer::builder(store)
            .allowed_origin(crate::common::ORIGIN)
            .principal_cache(CacheOptions::default())
    };
    assert!(matches!(
        with_cache(pooled()).build(),
        Err(ConfigError::NeedsListenPool)
    ));
    let direct = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    assert!(
        with_cache(pooled())
            .listen_pool(direct.clone())
            .build()
            .is_ok()
    );

    let app = app_on(direct.clone().into(), pooled().into(), |b| b).await;
    // The same pooled store given a direct listener pool: its streams open once it listens.
    let twin = AuthLayer::builder(pooled())
        .allowed_origin(crate::common::ORIGIN)
        .listen_pool(direct)
        .build()
        .unwrap();
    let twin_router =
        crate::common::router(twin.accounts(), Default::default()).layer(twin.clone());
    tokio::spawn(app.layer.background());
    tokio::spawn(twin.background());
    let bob = app.login(BOB, BOB_PASSWORD).await;
    // Only the answer's status: a stream that opened would not end.
    let events = |router: axum::Router| {
        let request = http::Request::get("/account/events")
            .header(http::header::COOKIE, format!("{COOKIE}={bob}"))
            .body(axum::body::Body::empty())
            .unwrap();
        async move { router.oneshot(request).await.unwrap().status() }
    };
    let started = std::time::Instant::now();
    while events(twin_router.clone()).await != StatusCode::OK {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the direct listener never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // By now a listener started beside the twin's would listen too.
    for _ in 0..5 {
        assert_eq!(
            events(app.router.clone()).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A listener that can hear only itself is never trusted: with the listener pool pointed at a
/// transaction pooler by mistake, LISTEN lands on a server connection the bouncer lends to
/// others, and changes from any other session never reach it. Its probe now comes from a
/// connection of its own opened as the request pool's are, as changes do, so the cache stays
/// bypassed and a ban is enforced at once.
/// (Before: the probe was sent on the listener's own connection, which Postgres always echoes;
/// the node trusted the listener, and a banned user's cached principal kept answering `200`.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_listener_that_hears_only_itself_is_not_trusted(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let Some(bouncer) = Bouncer::start(&options).await else {
        eprintln!("NOT RUN: pgbouncer is not installed (apt-get install pgbouncer)");
        return;
    };
    let direct = PgPoolOptions::new().connect_lazy_with(options.clone());
    // A plain pool sends extra_float_digits, which PgBouncer refuses unless told to ignore it.
    let deaf =
        PgPoolOptions::new().connect_lazy_with(bouncer.options(&options).extra_float_digits(None));
    let app = app_on(direct.clone().into(), direct.into(), |b| {
        b.principal_cache(CacheOptions::default().max_age(Duration::from_secs(600)))
            .listen_pool(deaf)
    })
    .await;
    tokio::spawn(app.layer.background());
    let bob = app.login(BOB, BOB_PASSWORD).await;
    // Two probe intervals and a reconnection: long enough for a first probe to come back.
    for _ in 0..60 {
        assert_eq!(app.status("/me", &bob).await, StatusCode::OK);
        assert!(
            !app.layer.cache_status().unwrap().listening,
            "trusted a deaf listener"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.db
        .exec("UPDATE auth_users SET disabled_at = now() WHERE username = 'bob'")
        .await;
    assert_eq!(app.status("/me", &bob).await, StatusCode::UNAUTHORIZED);
}
