//! Load benchmark: `GET /me` (the current user's id and permissions as JSON) over real HTTP on
//! loopback against one Postgres, under six configurations of the same tiny axum app:
//!
//! - (1) no authentication (a fixed JSON answer);
//! - (2) a stateless HS256 JWT (id and permissions in the claims) verified on every request;
//! - (2b) the same JWT plus one query per request checking that the user is not banned;
//! - (2c) the same JWT plus one query per request loading the user's current permissions
//!   (users joined with the grant tables, `array_agg`): what a JWT app does to be live;
//! - (3) this crate, without the principal cache;
//! - (4) this crate with `principal_cache(CacheOptions::default())`.
//!
//! The servers run on one tokio runtime and the load generator (raw hyper HTTP/1.1 keep-alive
//! connections, one user per connection) on another, in this process. The servers are measured
//! in alternation, for several rounds. A separate pass routes fresh copies of the database-backed
//! servers through a TCP proxy that counts Postgres round trips at the wire.
//!
//! `cargo bench --bench load`; `BENCH_ROUNDS` (5), `BENCH_SECS` (4), `BENCH_WARMUP_SECS` (1),
//! `BENCH_CONCURRENCY` (32), `BENCH_USERS` (1000), `BENCH_SERVER_THREADS` (the number of CPUs),
//! `BENCH_CLIENT_THREADS` (the number of CPUs), `BENCH_DATABASE_URL` (`postgres://postgres@127.0.0.1:5432/postgres`;
//! the benchmark creates and drops the database `bench_load` there). Results go to
//! `benches/results/load.json` and `benches/results/load.svg`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)] // each bench uses a part of it
mod common;

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    routing::get,
};
use axum_live_auth::{AuthLayer, CurrentUser, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgConnectOptions};
use tokio::runtime::Runtime;

use crate::common::{
    Http, Machine, ORIGIN, PERMISSIONS, POOL_SIZE, median, quantile_ms,
    wire::{RoundTrips, Seen},
};

const DB: &str = "bench_load";
const JWT_SECRET: &[u8] = b"bench-load-hs256-secret-32-bytes";
/// Requests per connection in the round-trip counting pass.
const COUNTED_PER_CONNECTION: usize = 50;
const ENV: [&str; 8] = [
    "BENCH_ROUNDS",
    "BENCH_SECS",
    "BENCH_WARMUP_SECS",
    "BENCH_CONCURRENCY",
    "BENCH_USERS",
    "BENCH_SERVER_THREADS",
    "BENCH_CLIENT_THREADS",
    "BENCH_DATABASE_URL",
];

// --- the configurations -------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    NoAuth,
    Jwt,
    JwtBanCheck,
    JwtPermissions,
    Crate,
    CrateCached,
}

impl Config {
    const ALL: [Self; 6] = [
        Self::NoAuth,
        Self::Jwt,
        Self::JwtBanCheck,
        Self::JwtPermissions,
        Self::Crate,
        Self::CrateCached,
    ];

    fn key(self) -> &'static str {
        match self {
            Self::NoAuth => "1",
            Self::Jwt => "2",
            Self::JwtBanCheck => "2b",
            Self::JwtPermissions => "2c",
            Self::Crate => "3",
            Self::CrateCached => "4",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::NoAuth => "no authentication",
            Self::Jwt => "JWT HS256, stateless",
            Self::JwtBanCheck => "JWT + ban-check query",
            Self::JwtPermissions => "JWT + permissions query",
            Self::Crate => "axum-live-auth",
            Self::CrateCached => "axum-live-auth + cache",
        }
    }

    fn label(self) -> String {
        format!("({}) {}", self.key(), self.name())
    }

    fn uses_database(self) -> bool {
        matches!(
            self,
            Self::JwtBanCheck | Self::JwtPermissions | Self::Crate | Self::CrateCached
        )
    }
}

/// What every configuration answers to `GET /me`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Me {
    id: UserId,
    permissions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    perms: Vec<String>,
    exp: u64,
}

#[derive(Clone)]
struct JwtState {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
    /// What each request asks the database, if anything.
    check: Check,
}

/// The per-request query of a JWT configuration.
#[derive(Clone)]
enum Check {
    /// (2): none.
    None,
    /// (2b): is the user still enabled?
    Ban(PgPool),
    /// (2c): the user's current permissions (and whether they are enabled), in one query.
    Permissions(PgPool),
}

/// (2c)'s query: the user joined with their direct and role grants, aggregated.
const PERMISSIONS_QUERY: &str = "\
SELECT u.disabled_at IS NULL,
       coalesce(array_agg(g.permission ORDER BY g.permission) FILTER (WHERE g.permission IS NOT NULL),
                '{}')
  FROM auth_users u
  LEFT JOIN (SELECT user_id, permission FROM auth_user_permissions
             UNION
             SELECT ur.user_id, rp.permission
               FROM auth_user_roles ur JOIN auth_role_permissions rp ON rp.role_id = ur.role_id) g
         ON g.user_id = u.id
 WHERE u.id = $1
 GROUP BY u.id";

/// (2), (2b), (2c): verify the bearer JWT; for (2b) also check the user is not banned; for (2c)
/// read their current permissions instead of the token's.
async fn jwt_me(State(state): State<JwtState>, headers: HeaderMap) -> Result<Json<Me>, StatusCode> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let claims = jsonwebtoken::decode::<Claims>(token, &state.key, &state.validation)
        .map_err(|_| StatusCode::UNAUTHORIZED)?
        .claims;
    let id: UserId = claims.sub.parse().map_err(|_| StatusCode::UNAUTHORIZED)?;
    let permissions = match &state.check {
        Check::None => claims.perms,
        Check::Ban(pool) => {
            let enabled: Option<bool> =
                sqlx::query_scalar("SELECT disabled_at IS NULL FROM auth_users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
            if enabled != Some(true) {
                return Err(StatusCode::UNAUTHORIZED);
            }
            claims.perms
        }
        Check::Permissions(pool) => {
            let row: Option<(bool, Vec<String>)> = sqlx::query_as(PERMISSIONS_QUERY)
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
            match row {
                Some((true, permissions)) => permissions,
                _ => return Err(StatusCode::UNAUTHORIZED),
            }
        }
    };
    Ok(Json(Me { id, permissions }))
}

/// (3) and (4): the crate's current user.
async fn crate_me(user: CurrentUser) -> Json<Me> {
    Json(Me {
        id: user.id(),
        permissions: user.permissions().to_vec(),
    })
}

/// One running server of a configuration.
struct Server {
    addr: SocketAddr,
    /// The crate's layer, for (3) and (4).
    layer: Option<AuthLayer>,
    pool: Option<PgPool>,
}

/// Builds and serves `config`'s app; `db` connects its pool (for (2b), (3), (4)).
async fn start(config: Config, db: Option<PgConnectOptions>) -> Server {
    let pool = match db {
        Some(options) if config.uses_database() => Some(common::pool(options).await),
        _ => None,
    };
    let jwt = |check: Check| JwtState {
        key: Arc::new(DecodingKey::from_secret(JWT_SECRET)),
        validation: Arc::new(Validation::new(Algorithm::HS256)),
        check,
    };
    let mut layer = None;
    let app: Router = match config {
        Config::NoAuth => {
            let fixed = Me {
                id: 0,
                permissions: PERMISSIONS.iter().map(|p| (*p).to_owned()).collect(),
            };
            Router::new().route("/me", get(move || async move { Json(fixed) }))
        }
        Config::Jwt => Router::new()
            .route("/me", get(jwt_me))
            .with_state(jwt(Check::None)),
        Config::JwtBanCheck => Router::new()
            .route("/me", get(jwt_me))
            .with_state(jwt(Check::Ban(pool.clone().unwrap()))),
        Config::JwtPermissions => Router::new()
            .route("/me", get(jwt_me))
            .with_state(jwt(Check::Permissions(pool.clone().unwrap()))),
        Config::Crate | Config::CrateCached => {
            let builder = AuthLayer::builder(pool.clone().unwrap()).allowed_origin(ORIGIN);
            let builder = if config == Config::CrateCached {
                common::with_cache(builder)
            } else {
                builder
            };
            let auth = builder.build().unwrap();
            tokio::spawn(auth.background());
            layer = Some(auth.clone());
            Router::new().route("/me", get(crate_me)).layer(auth)
        }
    };
    Server {
        addr: common::serve(app).await,
        layer,
        pool,
    }
}

// --- the load generator -------------------------------------------------------------------------

/// How long a load run goes on.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Requests for `warmup`, not recorded, then recorded for `measure`.
    Timed { warmup: Duration, measure: Duration },
    /// Exactly this many requests on each connection, all recorded.
    Count(usize),
}

/// The outcome of one load run.
#[derive(Debug, Default)]
struct Run {
    /// Latencies of the recorded successful requests, microseconds, sorted.
    latencies_us: Vec<u32>,
    /// Non-200 answers (any phase).
    errors: u64,
    /// Every 200 answer, warm-up and each connection's checked first request included.
    answered: u64,
    /// From the first connection attempt to the last answer.
    wall: Duration,
}

impl Run {
    fn rps(&self, measure: Duration) -> f64 {
        self.latencies_us.len() as f64 / measure.as_secs_f64()
    }
}

/// Runs `plan` against `addr` with one connection per entry of `credentials` (that
/// connection's request headers). Each connection first sends one request whose answer is
/// checked against `expect` (the id it must get), then the measured ones.
async fn load(
    addr: SocketAddr,
    credentials: &[Vec<(HeaderName, HeaderValue)>],
    expect: &[Option<UserId>],
    plan: Plan,
) -> Run {
    let began = Instant::now();
    let mut connections = Vec::with_capacity(credentials.len());
    for (headers, expect) in credentials.iter().zip(expect) {
        let mut http = Http::connect(addr).await;
        let reply = http.send(Method::GET, "/me", headers).await;
        assert_eq!(reply.status, StatusCode::OK, "first answer from {addr}");
        let me: Me = serde_json::from_slice(&reply.body).unwrap();
        if let Some(id) = expect {
            assert_eq!(me.id, *id, "the answer is the connection's own user");
            assert_eq!(me.permissions.len(), PERMISSIONS.len());
        }
        connections.push((http, headers.clone()));
    }

    let start = Instant::now();
    let (record_from, until) = match plan {
        Plan::Timed { warmup, measure } => (start + warmup, Some(start + warmup + measure)),
        Plan::Count(_) => (start, None),
    };
    let count = match plan {
        Plan::Count(n) => n,
        Plan::Timed { .. } => usize::MAX,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (mut http, headers) in connections {
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(count.min(1 << 16));
            let mut errors = 0u64;
            let mut answered = 0u64;
            for _ in 0..count {
                let sent = Instant::now();
                if until.is_some_and(|until| sent >= until) {
                    break;
                }
                let reply = http.send(Method::GET, "/me", &headers).await;
                let done = Instant::now();
                if reply.status != StatusCode::OK {
                    errors += 1;
                    continue;
                }
                answered += 1;
                if sent >= record_from && until.is_none_or(|until| done <= until) {
                    let us = done.duration_since(sent).as_micros();
                    latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            (latencies, errors, answered)
        });
    }
    let mut run = Run {
        answered: credentials.len() as u64,
        ..Run::default()
    };
    while let Some(result) = tasks.join_next().await {
        let (latencies, errors, answered) = result.unwrap();
        run.latencies_us.extend(latencies);
        run.errors += errors;
        run.answered += answered;
    }
    run.latencies_us.sort_unstable();
    run.wall = began.elapsed();
    run
}

// --- CPU accounting -----------------------------------------------------------------------------

/// CPU time, in clock ticks, from `/proc` (Linux only; zeros elsewhere).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// All CPUs, idle included.
    total: u64,
    busy: u64,
    server: u64,
    client: u64,
    postgres: u64,
}

impl Cpu {
    fn now() -> Self {
        let mut cpu = Self::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/stat")
            && let Some(line) = stat.lines().next()
        {
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|f| f.parse().ok())
                .collect();
            if fields.len() == 8 {
                cpu.total = fields.iter().sum();
                cpu.busy = cpu.total - fields[3] - fields[4];
            }
        }
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let path = task.path();
                let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                let ticks = process_ticks(&path);
                if comm.starts_with("bench-server") {
                    cpu.server += ticks;
                } else if comm.starts_with("bench-client") {
                    cpu.client += ticks;
                }
            }
        }
        if let Ok(processes) = std::fs::read_dir("/proc") {
            for process in processes.flatten() {
                let path = process.path();
                let numeric = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
                if numeric
                    && std::fs::read_to_string(path.join("comm"))
                        .is_ok_and(|comm| comm.trim() == "postgres")
                {
                    cpu.postgres += process_ticks(&path);
                }
            }
        }
        cpu
    }

    /// Shares of the machine's capacity between `before` and `self`: (server, client,
    /// postgres, everything else), each 0..=1.
    fn shares(self, before: Self) -> [f64; 4] {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let server = self.server.saturating_sub(before.server) as f64;
        let client = self.client.saturating_sub(before.client) as f64;
        let postgres = self.postgres.saturating_sub(before.postgres) as f64;
        let busy = self.busy.saturating_sub(before.busy) as f64;
        let other = (busy - server - client - postgres).max(0.0);
        [server, client, postgres, other].map(|ticks| ticks / total)
    }
}

/// utime + stime of a `/proc` process or task directory.
fn process_ticks(path: &std::path::Path) -> u64 {
    let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

// --- results ------------------------------------------------------------------------------------

/// One configuration's results.
#[derive(Debug)]
struct Outcome {
    config: Config,
    /// Requests/s, p50 and p99 (ms), errors, of each round.
    rounds: Vec<(f64, f64, f64, u64)>,
    /// Every recorded latency of every round, sorted.
    latencies_us: Vec<u32>,
    /// Mean CPU shares over the rounds: server, client, postgres, other.
    cpu: [f64; 4],
    /// The same as CPU time per answered request, microseconds.
    cpu_us: [f64; 4],
    /// From the counting pass: per request, at the wire.
    wire: Option<Trips>,
}

#[derive(Debug, Clone, Copy)]
struct Trips {
    requests: usize,
    statements: f64,
    pings: f64,
}

impl Outcome {
    fn rps(&self) -> f64 {
        median(&self.rounds.iter().map(|r| r.0).collect::<Vec<_>>())
    }
    fn rps_min(&self) -> f64 {
        self.rounds
            .iter()
            .map(|r| r.0)
            .fold(f64::INFINITY, f64::min)
    }
    fn rps_max(&self) -> f64 {
        self.rounds.iter().map(|r| r.0).fold(0.0, f64::max)
    }
    fn p50(&self) -> f64 {
        quantile_ms(&self.latencies_us, 0.50)
    }
    fn p99(&self) -> f64 {
        quantile_ms(&self.latencies_us, 0.99)
    }
    fn errors(&self) -> u64 {
        self.rounds.iter().map(|r| r.3).sum()
    }
}

struct Settings {
    rounds: u64,
    secs: u64,
    warmup_secs: u64,
    concurrency: usize,
    users: usize,
    server_threads: usize,
    client_threads: usize,
}

fn main() {
    if !common::should_run("load") {
        return;
    }
    let nproc = std::thread::available_parallelism().map_or(2, usize::from);
    let settings = Settings {
        rounds: common::env_u64("BENCH_ROUNDS", 5).max(1),
        secs: common::env_u64("BENCH_SECS", 4).max(1),
        warmup_secs: common::env_u64("BENCH_WARMUP_SECS", 1),
        concurrency: usize::try_from(common::env_u64("BENCH_CONCURRENCY", 32).max(1)).unwrap(),
        users: usize::try_from(common::env_u64("BENCH_USERS", 1000).max(1)).unwrap(),
        server_threads: usize::try_from(common::env_u64("BENCH_SERVER_THREADS", nproc as u64))
            .unwrap()
            .max(1),
        client_threads: usize::try_from(common::env_u64("BENCH_CLIENT_THREADS", nproc as u64))
            .unwrap()
            .max(1),
    };
    let server_rt = runtime("bench-server", settings.server_threads);
    let client_rt = runtime("bench-client", settings.client_threads);

    // --- database, users, credentials ---
    let (options, machine, users, cookies, jwts) = server_rt.block_on(async {
        let options = common::fresh_database(DB).await;
        let pool = common::pool(options.clone()).await;
        axum_live_auth::migrate(&pool).await.unwrap();
        let machine = Machine::describe(&pool, common::command("load", &ENV)).await;
        let users = common::seed_users(&pool, "user", settings.users, &PERMISSIONS).await;
        // Sessions through the crate's own login (on a layer of its own), JWTs with the
        // permissions the database holds.
        let seeder = AuthLayer::builder(pool.clone())
            .allowed_origin(ORIGIN)
            .build()
            .unwrap();
        let cookies = common::log_in_all(&seeder, &users).await;
        let rows: Vec<(UserId, Vec<String>)> =
            sqlx::query_as("SELECT id, permissions FROM auth_users ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 24 * 3600;
        let key = EncodingKey::from_secret(JWT_SECRET);
        let jwts: Vec<String> = rows
            .into_iter()
            .map(|(id, perms)| {
                let claims = Claims {
                    sub: id.to_string(),
                    perms,
                    exp,
                };
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
            })
            .collect();
        pool.close().await;
        (options, machine, users, cookies, jwts)
    });
    machine.print();
    println!(
        "settings: {} rounds x {} s (+{} s warm-up) per configuration, {} connections, {} users \
         ({} permissions each, one session and one JWT each), pools of {POOL_SIZE}, server \
         runtime {} threads, load generator runtime {} thread(s)",
        settings.rounds,
        settings.secs,
        settings.warmup_secs,
        settings.concurrency,
        settings.users,
        PERMISSIONS.len(),
        settings.server_threads,
        settings.client_threads,
    );

    // Connection i is user i's.
    let credentials = |config: Config| -> Vec<Vec<(HeaderName, HeaderValue)>> {
        (0..settings.concurrency)
            .map(|i| {
                let i = i % users.len();
                match config {
                    Config::NoAuth => Vec::new(),
                    Config::Jwt | Config::JwtBanCheck | Config::JwtPermissions => vec![(
                        header::AUTHORIZATION,
                        HeaderValue::from_str(&format!("Bearer {}", jwts[i])).unwrap(),
                    )],
                    Config::Crate | Config::CrateCached => vec![common::cookie_header(&cookies[i])],
                }
            })
            .collect()
    };
    let expected = |config: Config| -> Vec<Option<UserId>> {
        (0..settings.concurrency)
            .map(|i| (config != Config::NoAuth).then(|| users[i % users.len()]))
            .collect()
    };

    // --- round trips at the wire, on servers of their own behind the counting proxy ---
    // First, while no session is due for its touch (sessions are minutes old at most).
    println!("\ncounting round trips at the wire...");
    let mut wire: Vec<(Config, Trips)> = Vec::new();
    for config in Config::ALL.into_iter().filter(|c| c.uses_database()) {
        let (trips, server) = server_rt.block_on(async {
            let (trips, proxied) = RoundTrips::proxy(&options).await;
            (trips, start(config, Some(proxied)).await)
        });
        wait_for_cache(&server_rt, &server);
        let creds = credentials(config);
        let expect = expected(config);
        let counted = client_rt.block_on(async {
            // Warm up: every pool connection open, every principal cached (for (4)).
            load(server.addr, &creds, &expect, Plan::Count(20)).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = trips.get();
            let run = load(
                server.addr,
                &creds,
                &expect,
                Plan::Count(COUNTED_PER_CONNECTION),
            )
            .await;
            // sqlx pings a connection when it goes back into the pool, after the answer.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = trips.get();
            (run, before, after)
        });
        let (run, before, after) = counted;
        assert_eq!(run.errors, 0, "errors in the counting pass of {config:?}");
        // The checked first request of each connection is counted too.
        let requests = usize::try_from(run.answered).unwrap();
        let seen: Seen = after - before;
        let trips = Trips {
            requests,
            statements: seen.statements as f64 / requests as f64,
            pings: seen.pings as f64 / requests as f64,
        };
        println!(
            "  {:<28} {requests} requests: {:.3} statements + {:.3} pings per request",
            config.label(),
            trips.statements,
            trips.pings,
        );
        wire.push((config, trips));
        server_rt.block_on(async {
            if let Some(pool) = &server.pool {
                pool.close().await;
            }
        });
    }

    // --- throughput and latency, configurations in alternation ---
    let servers: Vec<(Config, Server)> = Config::ALL
        .into_iter()
        .map(|config| {
            let server = server_rt.block_on(start(config, Some(options.clone())));
            wait_for_cache(&server_rt, &server);
            (config, server)
        })
        .collect();
    let warmup = Duration::from_secs(settings.warmup_secs);
    let measure = Duration::from_secs(settings.secs);
    let mut outcomes: Vec<Outcome> = Config::ALL
        .into_iter()
        .map(|config| Outcome {
            config,
            rounds: Vec::new(),
            latencies_us: Vec::new(),
            cpu: [0.0; 4],
            cpu_us: [0.0; 4],
            wire: wire.iter().find(|(c, _)| *c == config).map(|(_, t)| *t),
        })
        .collect();
    for round in 1..=settings.rounds {
        println!("\nround {round}/{}", settings.rounds);
        for (i, (config, server)) in servers.iter().enumerate() {
            let creds = credentials(*config);
            let expect = expected(*config);
            let cpu_before = Cpu::now();
            let run = client_rt.block_on(load(
                server.addr,
                &creds,
                &expect,
                Plan::Timed { warmup, measure },
            ));
            let cpu = Cpu::now().shares(cpu_before);
            let outcome = &mut outcomes[i];
            let rps = run.rps(measure);
            let (p50, p99) = (
                quantile_ms(&run.latencies_us, 0.5),
                quantile_ms(&run.latencies_us, 0.99),
            );
            println!(
                "  {:<28} {:>9} req/s   p50 {p50:.2} ms   p99 {p99:.2} ms   errors {}   CPU: \
                 server {:.0}%, load generator {:.0}%, postgres {:.0}%, other {:.0}%",
                config.label(),
                thousands(rps),
                run.errors,
                cpu[0] * 100.0,
                cpu[1] * 100.0,
                cpu[2] * 100.0,
                cpu[3] * 100.0,
            );
            outcome.rounds.push((rps, p50, p99, run.errors));
            outcome.latencies_us.extend(run.latencies_us);
            // Shares are of the whole machine (all CPUs) over the whole run.
            let capacity_us = run.wall.as_secs_f64() * 1e6 * nproc as f64;
            for (k, share) in cpu.into_iter().enumerate() {
                outcome.cpu[k] += share / settings.rounds as f64;
                outcome.cpu_us[k] +=
                    share * capacity_us / run.answered.max(1) as f64 / settings.rounds as f64;
            }
        }
    }
    for outcome in &mut outcomes {
        outcome.latencies_us.sort_unstable();
    }
    let cache = servers
        .iter()
        .find(|(c, _)| *c == Config::CrateCached)
        .and_then(|(_, s)| s.layer.as_ref())
        .and_then(AuthLayer::cache_status);

    // --- report ---
    let report = report(&settings, &outcomes);
    println!("\n{report}");
    if let Some(status) = &cache {
        println!(
            "cache of (4) at the end: listening {}, {} entries, {} bytes, {} hits, {} misses",
            status.listening, status.entries, status.weight_bytes, status.hits, status.misses
        );
    }
    let targets = targets(&outcomes);
    println!("\ntargets:");
    for (name, met, detail) in &targets {
        println!(
            "  [{}] {name}: {detail}",
            if *met { "met" } else { "NOT MET" }
        );
    }

    let json = json(&settings, &machine, &outcomes, &targets, cache.as_ref());
    let json_path = common::write_result(
        "load.json",
        &(serde_json::to_string_pretty(&json).unwrap() + "\n"),
    );
    let svg_path = common::write_result("load.svg", &svg(&settings, &machine, &outcomes));
    println!("\nwrote {} and {}", json_path.display(), svg_path.display());

    server_rt.block_on(async {
        for (_, server) in &servers {
            if let Some(pool) = &server.pool {
                pool.close().await;
            }
        }
        common::drop_database(DB).await;
    });
    drop(client_rt);
    server_rt.shutdown_timeout(Duration::from_secs(1));
}

fn runtime(name: &str, threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits until a cached server's cache is listening for changes.
fn wait_for_cache(rt: &Runtime, server: &Server) {
    let Some(layer) = &server.layer else {
        return;
    };
    rt.block_on(common::wait_listening(layer));
}

/// 12345.6 → "12,346".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn find(outcomes: &[Outcome], config: Config) -> &Outcome {
    outcomes.iter().find(|o| o.config == config).unwrap()
}

fn report(settings: &Settings, outcomes: &[Outcome]) -> String {
    let jwt = find(outcomes, Config::Jwt).rps();
    let none = find(outcomes, Config::NoAuth).rps();
    let mut out = String::new();
    writeln!(
        out,
        "GET /me, {} connections, {} rounds x {} s; req/s is the median of the rounds (min-max), \
         latencies over all rounds' requests",
        settings.concurrency, settings.rounds, settings.secs
    )
    .unwrap();
    writeln!(
        out,
        "{:<28} {:>9} {:>17} {:>6} {:>6} {:>7} {:>7} {:>11} {:>9}",
        "configuration",
        "req/s",
        "(min-max)",
        "x(2)",
        "x(1)",
        "p50 ms",
        "p99 ms",
        "stmts/req",
        "pings/req",
    )
    .unwrap();
    for o in outcomes {
        let (statements, pings) = match o.wire {
            Some(t) => (format!("{:.3}", t.statements), format!("{:.3}", t.pings)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        writeln!(
            out,
            "{:<28} {:>9} {:>17} {:>6.2} {:>6.2} {:>7.2} {:>7.2} {:>11} {:>9}",
            o.config.label(),
            thousands(o.rps()),
            format!("({}-{})", thousands(o.rps_min()), thousands(o.rps_max())),
            o.rps() / jwt,
            o.rps() / none,
            o.p50(),
            o.p99(),
            statements,
            pings,
        )
        .unwrap();
    }
    writeln!(
        out,
        "stmts/req and pings/req: Postgres round trips per request at the wire (counting pass, \
         steady state): statements, and sqlx's pings of a connection going back into the pool."
    )
    .unwrap();
    writeln!(
        out,
        "CPU (from /proc), mean over the rounds, as a share of the whole machine and as CPU time \
         per request: server / load generator / postgres / other processes"
    )
    .unwrap();
    for o in outcomes {
        writeln!(
            out,
            "  {:<28} {:>3.0}% / {:>3.0}% / {:>3.0}% / {:>3.0}%    {:>5.1} / {:>5.1} / {:>5.1} / {:>5.1} us",
            o.config.label(),
            o.cpu[0] * 100.0,
            o.cpu[1] * 100.0,
            o.cpu[2] * 100.0,
            o.cpu[3] * 100.0,
            o.cpu_us[0],
            o.cpu_us[1],
            o.cpu_us[2],
            o.cpu_us[3],
        )
        .unwrap();
    }
    let errors: u64 = outcomes.iter().map(Outcome::errors).sum();
    if errors > 0 {
        writeln!(out, "WARNING: {errors} requests were not answered 200").unwrap();
    }
    out
}

/// (name, met, detail) of each target.
fn targets(outcomes: &[Outcome]) -> Vec<(String, bool, String)> {
    let jwt = find(outcomes, Config::Jwt);
    let ban = find(outcomes, Config::JwtBanCheck);
    let plain = find(outcomes, Config::Crate);
    let cached = find(outcomes, Config::CrateCached);
    let mut targets = Vec::new();

    let ratio = cached.rps() / jwt.rps();
    let (paired, paired_min, paired_max) = paired_ratios(cached, jwt);
    targets.push((
        "(4) >= 0.9x the throughput of (2)".to_owned(),
        ratio >= 0.9,
        format!(
            "{} vs {} req/s = {ratio:.2}x (per round, measured back to back: median \
             {paired:.2}x, {paired_min:.2}x-{paired_max:.2}x); server CPU per request {:.1} vs \
             {:.1} us = {:.2}x",
            thousands(cached.rps()),
            thousands(jwt.rps()),
            cached.cpu_us[0],
            jwt.cpu_us[0],
            cached.cpu_us[0] / jwt.cpu_us[0],
        ),
    ));

    let faster = plain.rps() >= ban.rps();
    let one = plain
        .wire
        .is_some_and(|t| (t.statements - 1.0).abs() < 1e-9);
    let (statements, pings) = plain
        .wire
        .map_or((f64::NAN, f64::NAN), |t| (t.statements, t.pings));
    let (paired, paired_min, paired_max) = paired_ratios(plain, ban);
    targets.push((
        "(3) >= (2b) with exactly one round trip per authenticated request".to_owned(),
        faster && one,
        format!(
            "{} vs {} req/s = {:.2}x (per round: median {paired:.2}x, {paired_min:.2}x-\
             {paired_max:.2}x); {statements:.3} statements per request at the wire, plus \
             {pings:.3} sqlx release pings per request (also {:.3} for (2b)), which follow the \
             answer and are not on the request's path; CPU per request, server + postgres: \
             {:.1} + {:.1} us vs {:.1} + {:.1} us",
            thousands(plain.rps()),
            thousands(ban.rps()),
            plain.rps() / ban.rps(),
            ban.wire.map_or(f64::NAN, |t| t.pings),
            plain.cpu_us[0],
            plain.cpu_us[2],
            ban.cpu_us[0],
            ban.cpu_us[2],
        ),
    ));

    let live = find(outcomes, Config::JwtPermissions);
    let (paired, paired_min, paired_max) = paired_ratios(plain, live);
    targets.push((
        "(3) >= 1.1x the throughput of (2c)".to_owned(),
        plain.rps() >= 1.1 * live.rps(),
        format!(
            "{} vs {} req/s = {:.2}x (per round: median {paired:.2}x, {paired_min:.2}x-\
             {paired_max:.2}x)",
            thousands(plain.rps()),
            thousands(live.rps()),
            plain.rps() / live.rps(),
        ),
    ));
    targets.push((
        "(3) server CPU per request <= (2c)'s".to_owned(),
        plain.cpu_us[0] <= live.cpu_us[0],
        format!(
            "{:.1} vs {:.1} us per request in the server; postgres {:.1} vs {:.1} us",
            plain.cpu_us[0], live.cpu_us[0], plain.cpu_us[2], live.cpu_us[2],
        ),
    ));

    let (statements, pings) = cached
        .wire
        .map_or((f64::NAN, f64::NAN), |t| (t.statements, t.pings));
    targets.push((
        "(4) zero round trips in steady state".to_owned(),
        statements == 0.0 && pings == 0.0,
        format!(
            "{statements:.3} statements + {pings:.3} pings per request at the wire over {} \
             requests",
            cached.wire.map_or(0, |t| t.requests),
        ),
    ));
    targets
}

/// Median, min and max over the rounds of `a`'s requests/s over `b`'s in the same round.
fn paired_ratios(a: &Outcome, b: &Outcome) -> (f64, f64, f64) {
    let ratios: Vec<f64> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .map(|(a, b)| a.0 / b.0)
        .collect();
    (
        median(&ratios),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    )
}

fn json(
    settings: &Settings,
    machine: &Machine,
    outcomes: &[Outcome],
    targets: &[(String, bool, String)],
    cache: Option<&axum_live_auth::CacheStatus>,
) -> serde_json::Value {
    let jwt = find(outcomes, Config::Jwt).rps();
    let none = find(outcomes, Config::NoAuth).rps();
    let configs: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            serde_json::json!({
                "key": o.config.key(),
                "name": o.config.name(),
                "rps_median": o.rps(),
                "rps_min": o.rps_min(),
                "rps_max": o.rps_max(),
                "vs_jwt": o.rps() / jwt,
                "vs_no_auth": o.rps() / none,
                "p50_ms": o.p50(),
                "p99_ms": o.p99(),
                "requests_measured": o.latencies_us.len(),
                "errors": o.errors(),
                "rounds": o.rounds.iter().map(|(rps, p50, p99, errors)| serde_json::json!({
                    "rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors,
                })).collect::<Vec<_>>(),
                "cpu_share": {
                    "server": o.cpu[0],
                    "load_generator": o.cpu[1],
                    "postgres": o.cpu[2],
                    "other": o.cpu[3],
                },
                "cpu_us_per_request": {
                    "server": o.cpu_us[0],
                    "load_generator": o.cpu_us[1],
                    "postgres": o.cpu_us[2],
                    "other": o.cpu_us[3],
                },
                "wire": o.wire.map(|t| serde_json::json!({
                    "requests": t.requests,
                    "statements_per_request": t.statements,
                    "release_pings_per_request": t.pings,
                })),
            })
        })
        .collect();
    serde_json::json!({
        "benchmark": "load",
        "what": "GET /me over HTTP/1.1 keep-alive on loopback; one user per connection",
        "machine": machine.json(),
        "settings": {
            "rounds": settings.rounds,
            "secs": settings.secs,
            "warmup_secs": settings.warmup_secs,
            "concurrency": settings.concurrency,
            "users": settings.users,
            "permissions_per_user": PERMISSIONS.len(),
            "pool_size": POOL_SIZE,
            "server_threads": settings.server_threads,
            "load_generator_threads": settings.client_threads,
            "load_generator": "in-process hyper 1 HTTP/1.1 client connections on their own tokio runtime",
        },
        "configs": configs,
        "cache_status_of_4": cache.map(|s| serde_json::json!({
            "listening": s.listening,
            "entries": s.entries,
            "weight_bytes": s.weight_bytes,
            "hits": s.hits,
            "misses": s.misses,
        })),
        "targets": targets.iter().map(|(name, met, detail)| serde_json::json!({
            "target": name, "met": met, "detail": detail,
        })).collect::<Vec<_>>(),
    })
}

/// A hand-written SVG bar chart: median requests/s per configuration, one dot per round, a
/// min-max whisker, and p50/p99 as labels.
fn svg(settings: &Settings, machine: &Machine, outcomes: &[Outcome]) -> String {
    const W: f64 = 860.0;
    const H: f64 = 470.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 70.0;
    const BOTTOM: f64 = 100.0;
    const COLORS: [&str; 5] = ["#9e9e9e", "#4e79a7", "#8fb0d6", "#59a14f", "#1f6f3a"];
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let top_value = outcomes
        .iter()
        .flat_map(|o| o.rounds.iter().map(|r| r.0))
        .fold(1.0, f64::max);
    let step = nice_step(top_value / 5.0);
    let y_max = (top_value * 1.12 / step).ceil() * step;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let slot = plot_w / outcomes.len() as f64;
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };

    let mut s = String::new();
    writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    )
    .unwrap();
    writeln!(s, r##"<rect width="{W}" height="{H}" fill="#ffffff"/>"##).unwrap();
    writeln!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">GET /me over HTTP on loopback: requests/s (higher is better)</text>"#
    )
    .unwrap();
    writeln!(
        s,
        r##"<text x="{LEFT}" y="44" fill="#444">{} connections, {} rounds x {} s; bar: median, dots: rounds, whisker: min-max; labels: p50 / p99 latency</text>"##,
        settings.concurrency, settings.rounds, settings.secs
    )
    .unwrap();
    writeln!(
        s,
        r##"<text x="{LEFT}" y="60" fill="#666" font-size="11">{}</text>"##,
        esc(&format!(
            "{} CPUs, {}; {}; {}",
            machine.nproc,
            machine.uname,
            machine.postgres.split(" on ").next().unwrap_or(""),
            machine.date
        ))
    )
    .unwrap();
    // Grid and y axis.
    let mut tick = 0.0;
    while tick <= y_max + step / 2.0 {
        let ty = y(tick);
        writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#e0e0e0"/>"##,
            W - RIGHT
        )
        .unwrap();
        writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text>"##,
            LEFT - 8.0,
            ty + 4.0,
            thousands(tick)
        )
        .unwrap();
        tick += step;
    }
    writeln!(
        s,
        r##"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle" fill="#444">requests/s</text>"##,
        TOP + plot_h / 2.0
    )
    .unwrap();
    writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#444"/>"##,
        TOP + plot_h,
        W - RIGHT,
        TOP + plot_h
    )
    .unwrap();
    for (i, o) in outcomes.iter().enumerate() {
        let cx = LEFT + slot * (i as f64 + 0.5);
        let bw = slot * 0.55;
        let rps = o.rps();
        let color = COLORS[i % COLORS.len()];
        writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{color}"><title>{}: median {} req/s</title></rect>"#,
            cx - bw / 2.0,
            y(rps),
            (TOP + plot_h - y(rps)).max(0.0),
            esc(&o.config.label()),
            thousands(rps)
        )
        .unwrap();
        // Whisker: min-max of the rounds.
        let (lo, hi) = (y(o.rps_min()), y(o.rps_max()));
        writeln!(
            s,
            r##"<g stroke="#222" stroke-width="1.5"><line x1="{cx:.1}" y1="{lo:.1}" x2="{cx:.1}" y2="{hi:.1}"/><line x1="{:.1}" y1="{lo:.1}" x2="{:.1}" y2="{lo:.1}"/><line x1="{:.1}" y1="{hi:.1}" x2="{:.1}" y2="{hi:.1}"/></g>"##,
            cx - 6.0,
            cx + 6.0,
            cx - 6.0,
            cx + 6.0
        )
        .unwrap();
        // One dot per round, spread a little sideways.
        let n = o.rounds.len().max(1) as f64;
        for (r, round) in o.rounds.iter().enumerate() {
            let dx = (r as f64 - (n - 1.0) / 2.0) * 9.0;
            writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3.2" fill="#ffffff" stroke="#222" stroke-width="1.2"><title>round {}: {} req/s</title></circle>"##,
                cx + 18.0 + dx,
                y(round.0),
                r + 1,
                thousands(round.0)
            )
            .unwrap();
        }
        let label_y = hi.min(y(rps)) - 22.0;
        writeln!(
            s,
            r#"<text x="{cx:.1}" y="{label_y:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
            thousands(rps)
        )
        .unwrap();
        writeln!(
            s,
            r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#333" font-size="11">p50 {:.2} / p99 {:.2} ms</text>"##,
            label_y + 14.0,
            o.p50(),
            o.p99()
        )
        .unwrap();
        writeln!(
            s,
            r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">({})</text>"#,
            TOP + plot_h + 20.0,
            o.config.key()
        )
        .unwrap();
        writeln!(
            s,
            r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            TOP + plot_h + 36.0,
            esc(o.config.name())
        )
        .unwrap();
        if let Some(t) = o.wire {
            writeln!(
                s,
                r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#555" font-size="11">round trips per request:</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#555" font-size="11">{:.2} queries + {:.2} pings</text>"##,
                TOP + plot_h + 54.0,
                TOP + plot_h + 68.0,
                t.statements,
                t.pings
            )
            .unwrap();
        }
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let power = 10f64.powf(raw.max(1.0).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * power)
}
