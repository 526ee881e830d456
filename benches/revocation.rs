//! Revocation latency across nodes: how long after a revocation commits on node A does node B,
//! with its own principal cache, refuse the revoked user?
//!
//! Two `AuthLayer`s with the cache on (separate caches, separate pools, one Postgres), each
//! served on its own loopback port, in one process. For each trial: a fresh user logs in on
//! node B; a client keeps requesting node B in a tight loop on one keep-alive connection (its
//! first requests fill B's cache); the user is revoked through node A's `Accounts`; the instant
//! the revoking call returns (it has committed) and the instant B's first refusal arrives are
//! recorded. Kinds:
//!
//! - (a) the session revoked: `Accounts::revoke_session`, client on `GET /me` (401 expected);
//! - (b) the user disabled: `Accounts::disable_user`, client on `GET /me` (401 expected);
//! - (c) a permission removed: `Accounts::revoke_permission`, client on `GET /reports`, which
//!   requires it with `require_permission` (403 expected).
//!
//! A smaller reference series runs the same trials on two nodes without the cache. Optionally,
//! other users keep node B busy meanwhile (`BENCH_BACKGROUND` connections, one user each).
//!
//! `cargo bench --bench revocation`; `BENCH_TRIALS` (500 per kind), `BENCH_REFERENCE_TRIALS`
//! (100 per kind, 0 to skip), `BENCH_BACKGROUND` (0), `BENCH_DATABASE_URL`
//! (`postgres://postgres@127.0.0.1:5432/postgres`; the benchmark creates and drops the database
//! `bench_revocation` there). Results go to `benches/results/revocation.json`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)] // each bench uses a part of it
mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    http::{HeaderName, HeaderValue, Method, StatusCode},
    routing::get,
};
use axum_live_auth::{AuthLayer, CurrentUser, UserId, require_permission};
use serde_json::json;
use sqlx::{PgPool, postgres::PgConnectOptions};
use tokio::{runtime::Runtime, sync::oneshot};

use crate::common::{Http, LOGIN_AS, Machine, ORIGIN, PERMISSIONS, ms, quantile};

const DB: &str = "bench_revocation";
const PERMISSION: &str = "reports:read";
/// Answers B must give before the revocation: enough for its cache to hold the principal.
const WARM_REQUESTS: usize = 20;
/// A trial whose refusal has not come this long after the revocation has failed.
const GIVE_UP: Duration = Duration::from_secs(10);
/// The p99 target, milliseconds.
const TARGET_P99_MS: f64 = 50.0;
const ENV: [&str; 4] = [
    "BENCH_TRIALS",
    "BENCH_REFERENCE_TRIALS",
    "BENCH_BACKGROUND",
    "BENCH_DATABASE_URL",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Session,
    Disable,
    Permission,
}

impl Kind {
    const ALL: [Self; 3] = [Self::Session, Self::Disable, Self::Permission];

    fn key(self) -> &'static str {
        match self {
            Self::Session => "a",
            Self::Disable => "b",
            Self::Permission => "c",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Session => "session revoked",
            Self::Disable => "user disabled",
            Self::Permission => "permission removed",
        }
    }

    fn label(self) -> String {
        format!("({}) {}", self.key(), self.name())
    }

    fn path(self) -> &'static str {
        match self {
            Self::Permission => "/reports",
            Self::Session | Self::Disable => "/me",
        }
    }

    fn refusal(self) -> StatusCode {
        match self {
            Self::Permission => StatusCode::FORBIDDEN,
            Self::Session | Self::Disable => StatusCode::UNAUTHORIZED,
        }
    }
}

/// One node: a layer of its own, a pool of its own, a port of its own.
struct Node {
    addr: SocketAddr,
    layer: AuthLayer,
    pool: PgPool,
}

async fn node(options: PgConnectOptions, cached: bool) -> Node {
    async fn me(user: CurrentUser) -> Json<serde_json::Value> {
        Json(json!({ "id": user.id(), "permissions": user.permissions() }))
    }
    let pool = common::pool(options).await;
    let builder = AuthLayer::builder(pool.clone()).allowed_origin(ORIGIN);
    let builder = if cached {
        common::with_cache(builder)
    } else {
        builder
    };
    let layer = builder.build().unwrap();
    tokio::spawn(layer.background());
    let reports = Router::new()
        .route("/reports", get(me))
        .route_layer(require_permission(PERMISSION));
    let app = Router::new()
        .route("/me", get(me))
        .merge(reports)
        .merge(common::login_route())
        .layer(layer.clone());
    Node {
        addr: common::serve(app).await,
        layer,
        pool,
    }
}

/// What one trial saw.
#[derive(Debug)]
struct Trial {
    kind: Kind,
    /// From the revoking call's return to the arrival of B's first refusal; negative when the
    /// refusal arrived first (the commit precedes the call's return).
    latency_ms: f64,
    /// How long the revoking call took.
    call_ms: f64,
    /// Requests sent to B after the revoking call returned that were still answered 200.
    stale: usize,
    /// The first refusal's status.
    status: StatusCode,
    timed_out: bool,
}

/// Requests B in a tight loop on one connection until the first non-200 answer (or
/// [`GIVE_UP`]); says `warm` once [`WARM_REQUESTS`] have been answered 200. Returns every
/// request's (sent, received, status).
async fn probe(
    addr: SocketAddr,
    path: &'static str,
    headers: Vec<(HeaderName, HeaderValue)>,
    warm: oneshot::Sender<()>,
) -> Vec<(Instant, Instant, StatusCode)> {
    let mut http = Http::connect(addr).await;
    let mut log = Vec::with_capacity(1024);
    let mut warm = Some(warm);
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let sent = Instant::now();
        let reply = http.send(Method::GET, path, &headers).await;
        let received = Instant::now();
        log.push((sent, received, reply.status));
        if reply.status != StatusCode::OK || received > deadline {
            return log;
        }
        if log.len() >= WARM_REQUESTS
            && let Some(warm) = warm.take()
        {
            let _ = warm.send(());
        }
    }
}

async fn trial(client_rt: &Runtime, a: &Node, b: &Node, user: UserId, kind: Kind) -> Trial {
    // Log in on B, over HTTP.
    let b_addr = b.addr;
    let token = client_rt
        .spawn(async move {
            let mut http = Http::connect(b_addr).await;
            let reply = http
                .send(
                    Method::POST,
                    &format!("{LOGIN_AS}/{user}"),
                    &[(
                        HeaderName::from_static("sec-fetch-site"),
                        HeaderValue::from_static("same-origin"),
                    )],
                )
                .await;
            assert_eq!(reply.status, StatusCode::NO_CONTENT, "login on B");
            common::session_token(&reply.headers)
        })
        .await
        .unwrap();
    let session_id = token.split_once('.').unwrap().0.to_owned();

    let (warm_tx, warm_rx) = oneshot::channel();
    let prober = client_rt.spawn(probe(
        b.addr,
        kind.path(),
        vec![common::cookie_header(&token)],
        warm_tx,
    ));
    if warm_rx.await.is_err() {
        let log = prober.await.unwrap();
        let statuses: Vec<u16> = log.iter().map(|(_, _, s)| s.as_u16()).collect();
        panic!("B refused user {user} ({kind:?}) before the revocation: answers {statuses:?}");
    }

    let accounts = a.layer.accounts();
    let called = Instant::now();
    match kind {
        Kind::Session => {
            let id = axum_live_auth::SessionId::parse(&session_id).unwrap();
            assert!(accounts.revoke_session(user, &id).await.unwrap());
        }
        Kind::Disable => accounts.disable_user(user).await.unwrap(),
        Kind::Permission => assert!(accounts.revoke_permission(user, PERMISSION).await.unwrap()),
    }
    let committed = Instant::now();

    let log = prober.await.unwrap();
    let &(_, refused_at, status) = log.last().unwrap();
    let timed_out = status == StatusCode::OK;
    let latency_ms = if timed_out {
        f64::INFINITY
    } else if refused_at >= committed {
        ms(refused_at - committed)
    } else {
        -ms(committed - refused_at)
    };
    let stale = log
        .iter()
        .filter(|(sent, _, status)| *sent >= committed && *status == StatusCode::OK)
        .count();
    Trial {
        kind,
        latency_ms,
        call_ms: ms(committed - called),
        stale,
        status,
        timed_out,
    }
}

/// Runs `per_kind` trials of each kind, kinds interleaved, on nodes `a` and `b`, with users
/// from `users`, while one connection per `background` session keeps requesting B's `/me`.
/// Returns the trials and the background requests/s.
#[allow(clippy::too_many_arguments)]
fn series(
    server_rt: &Runtime,
    client_rt: &Runtime,
    a: &Node,
    b: &Node,
    users: &mut impl Iterator<Item = UserId>,
    per_kind: usize,
    background: &[String],
    title: &str,
) -> (Vec<Trial>, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = background
        .iter()
        .map(|token| {
            let (addr, stop) = (b.addr, Arc::clone(&stop));
            let headers = vec![common::cookie_header(token)];
            client_rt.spawn(async move {
                let mut http = Http::connect(addr).await;
                let mut answered = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let reply = http.send(Method::GET, "/me", &headers).await;
                    assert_eq!(reply.status, StatusCode::OK, "background request");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let mut trials = Vec::with_capacity(per_kind * Kind::ALL.len());
    let started = Instant::now();
    for i in 0..per_kind {
        for kind in Kind::ALL {
            let user = users.next().unwrap();
            trials.push(server_rt.block_on(trial(client_rt, a, b, user, kind)));
        }
        if (i + 1) % 50 == 0 || i + 1 == per_kind {
            println!(
                "  {title}: {} of {per_kind} trials per kind done ({:.1} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let answered: u64 = server_rt.block_on(async {
        let mut answered = 0;
        for task in load {
            answered += task.await.unwrap();
        }
        answered
    });
    (trials, answered as f64 / started.elapsed().as_secs_f64())
}

/// Per kind: trials, p50, p99, max (ms), refusals with the wrong status, timeouts, trials with
/// stale answers, the most stale answers in one trial, median revoking-call time.
struct Summary {
    kind: Kind,
    trials: usize,
    p50: f64,
    p99: f64,
    max: f64,
    min: f64,
    wrong_status: usize,
    timeouts: usize,
    stale_trials: usize,
    stale_max: usize,
    call_p50: f64,
    latencies: Vec<f64>,
}

fn summarize(trials: &[Trial]) -> Vec<Summary> {
    Kind::ALL
        .into_iter()
        .map(|kind| {
            let of_kind: Vec<&Trial> = trials.iter().filter(|t| t.kind == kind).collect();
            let mut latencies: Vec<f64> = of_kind.iter().map(|t| t.latency_ms).collect();
            latencies.sort_by(f64::total_cmp);
            let mut calls: Vec<f64> = of_kind.iter().map(|t| t.call_ms).collect();
            calls.sort_by(f64::total_cmp);
            Summary {
                kind,
                trials: of_kind.len(),
                p50: quantile(&latencies, 0.50),
                p99: quantile(&latencies, 0.99),
                max: latencies.last().copied().unwrap_or(f64::NAN),
                min: latencies.first().copied().unwrap_or(f64::NAN),
                wrong_status: of_kind
                    .iter()
                    .filter(|t| !t.timed_out && t.status != kind.refusal())
                    .count(),
                timeouts: of_kind.iter().filter(|t| t.timed_out).count(),
                stale_trials: of_kind.iter().filter(|t| t.stale > 0).count(),
                stale_max: of_kind.iter().map(|t| t.stale).max().unwrap_or(0),
                call_p50: quantile(&calls, 0.5),
                latencies,
            }
        })
        .collect()
}

fn print_table(title: &str, summaries: &[Summary], target: bool) {
    println!("\n{title}");
    println!(
        "{:<24} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10} {:>16} {:>9}{}",
        "kind",
        "trials",
        "p50 ms",
        "p99 ms",
        "max ms",
        "min ms",
        "call p50",
        "stale (trials/max)",
        "bad",
        if target { "  p99 < 50 ms" } else { "" }
    );
    for s in summaries {
        println!(
            "{:<24} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10.2} {:>16} {:>9}{}",
            s.kind.label(),
            s.trials,
            s.p50,
            s.p99,
            s.max,
            s.min,
            s.call_p50,
            format!("{}/{}", s.stale_trials, s.stale_max),
            s.wrong_status + s.timeouts,
            if target {
                if met(s) { "  met" } else { "  NOT MET" }
            } else {
                ""
            }
        );
    }
}

fn met(s: &Summary) -> bool {
    s.p99 < TARGET_P99_MS && s.timeouts == 0 && s.wrong_status == 0
}

fn summary_json(summaries: &[Summary], target: bool) -> serde_json::Value {
    json!(
        summaries
            .iter()
            .map(|s| {
                let mut value = json!({
                    "kind": s.kind.key(),
                    "name": s.kind.name(),
                    "path": s.kind.path(),
                    "expected_status": s.kind.refusal().as_u16(),
                    "trials": s.trials,
                    "p50_ms": s.p50,
                    "p99_ms": s.p99,
                    "max_ms": s.max,
                    "min_ms": s.min,
                    "revoking_call_p50_ms": s.call_p50,
                    "trials_with_stale_answers": s.stale_trials,
                    "max_stale_answers_in_a_trial": s.stale_max,
                    "wrong_status": s.wrong_status,
                    "timeouts": s.timeouts,
                    "latencies_ms": s.latencies.iter().map(|l| (l * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
                });
                if target {
                    value["p99_below_50_ms"] = json!(met(s));
                }
                value
            })
            .collect::<Vec<_>>()
    )
}

fn main() {
    if !common::should_run("revocation") {
        return;
    }
    let per_kind = usize::try_from(common::env_u64("BENCH_TRIALS", 500).max(1)).unwrap();
    let reference = usize::try_from(common::env_u64("BENCH_REFERENCE_TRIALS", 100)).unwrap();
    let background = usize::try_from(common::env_u64("BENCH_BACKGROUND", 0)).unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-server")
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-client")
        .enable_all()
        .build()
        .unwrap();

    let (machine, users, background, a, b) = server_rt.block_on(async {
        let options = common::fresh_database(DB).await;
        let pool = common::pool(options.clone()).await;
        axum_live_auth::migrate(&pool).await.unwrap();
        let machine = Machine::describe(&pool, common::command("revocation", &ENV)).await;
        let count = (per_kind + reference) * Kind::ALL.len();
        let users = common::seed_users(&pool, "user", count, &PERMISSIONS).await;
        let others = common::seed_users(&pool, "other", background, &PERMISSIONS).await;
        pool.close().await;
        let a = node(options.clone(), true).await;
        let b = node(options, true).await;
        for node in [&a, &b] {
            common::wait_listening(&node.layer).await;
        }
        // The background sessions (rows in the shared database: valid on every node).
        let background = common::log_in_all(&a.layer, &others).await;
        (machine, users, background, a, b)
    });
    machine.print();
    println!(
        "settings: {per_kind} trials per kind on two cached nodes, then {reference} per kind on \
         two nodes without the cache; a fresh user per trial, {WARM_REQUESTS} answers from B \
         before the revocation; {} background connections on B",
        background.len()
    );
    let mut users = users.into_iter();

    println!("\nnodes with the principal cache:");
    let (cached, cached_rps) = series(
        &server_rt,
        &client_rt,
        &a,
        &b,
        &mut users,
        per_kind,
        &background,
        "cache",
    );
    let cache_a = a.layer.cache_status();
    let cache_b = b.layer.cache_status();

    let uncached = if reference > 0 {
        println!("\nreference, nodes without the cache:");
        let (a0, b0) = server_rt.block_on(async {
            let options = common::admin_options().database(DB);
            (
                node(options.clone(), false).await,
                node(options, false).await,
            )
        });
        let result = series(
            &server_rt,
            &client_rt,
            &a0,
            &b0,
            &mut users,
            reference,
            &background,
            "no cache",
        );
        server_rt.block_on(async {
            a0.pool.close().await;
            b0.pool.close().await;
        });
        result
    } else {
        (Vec::new(), 0.0)
    };
    let (uncached, uncached_rps) = uncached;

    // --- report ---
    let with_cache = summarize(&cached);
    println!();
    machine.print();
    print_table(
        "commit -> first refusal on the other node, with the principal cache (ms):",
        &with_cache,
        true,
    );
    let without_cache = (!uncached.is_empty()).then(|| summarize(&uncached));
    if let Some(summaries) = &without_cache {
        print_table(
            "reference: the same without the cache (every request queries Postgres) (ms):",
            summaries,
            false,
        );
    }
    println!(
        "\nlatency: from the return of the revoking call on node A (after its commit) to the \
         arrival of node B's first 401/403; negative when the refusal arrived before the call \
         returned. call p50: the revoking call's own duration. stale: requests sent to B after \
         the call returned that were still answered 200 (trials with any / most in one trial). \
         bad: refusals with an unexpected status, or none within {} s.",
        GIVE_UP.as_secs()
    );
    for (name, status) in [("A", &cache_a), ("B", &cache_b)] {
        if let Some(s) = status {
            println!(
                "cache of node {name} at the end: listening {}, {} entries, {} hits, {} misses",
                s.listening, s.entries, s.hits, s.misses
            );
        }
    }
    if !background.is_empty() {
        println!(
            "background load on B: {} connections, {:.0} req/s during the cached series, {:.0} \
             req/s during the reference series",
            background.len(),
            cached_rps,
            uncached_rps
        );
    }
    let all_met = with_cache.iter().all(met);
    println!(
        "\ntarget p99 < {TARGET_P99_MS} ms for every kind: {}",
        if all_met { "met" } else { "NOT MET" }
    );

    let cache_json = |s: &Option<axum_live_auth::CacheStatus>| {
        s.as_ref().map(|s| {
            json!({
                "listening": s.listening,
                "entries": s.entries,
                "weight_bytes": s.weight_bytes,
                "hits": s.hits,
                "misses": s.misses,
            })
        })
    };
    let result = json!({
        "benchmark": "revocation",
        "what": "two nodes (AuthLayers with separate principal caches) on one Postgres; \
                 latency from the revoking call's return on node A to node B's first refusal",
        "machine": machine.json(),
        "settings": {
            "trials_per_kind": per_kind,
            "reference_trials_per_kind": reference,
            "warm_requests": WARM_REQUESTS,
            "background_connections": background.len(),
            "background_rps_cached": cached_rps,
            "background_rps_reference": uncached_rps,
            "pool_size": common::POOL_SIZE,
        },
        "with_cache": summary_json(&with_cache, true),
        "without_cache_reference": without_cache.as_ref().map(|s| summary_json(s, false)),
        "cache_status": { "node_a": cache_json(&cache_a), "node_b": cache_json(&cache_b) },
        "target": {
            "p99_below_ms": TARGET_P99_MS,
            "met": all_met,
        },
    });
    let path = common::write_result(
        "revocation.json",
        &(serde_json::to_string_pretty(&result).unwrap() + "\n"),
    );
    println!("wrote {}", path.display());

    server_rt.block_on(async {
        a.pool.close().await;
        b.pool.close().await;
        common::drop_database(DB).await;
    });
    drop(client_rt);
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
