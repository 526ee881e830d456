//! Shared by the benchmarks: the database they create, seeding, a minimal HTTP/1 client over
//! raw hyper connections, statistics and a description of the machine.

// The round-trip counter of the integration tests, shared rather than copied.
#[allow(unreachable_pub)]
#[path = "../../tests/integration/common/wire.rs"]
pub(crate) mod wire;

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::Path,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header},
    routing::post,
};
use axum_live_auth::{Auth, AuthLayer, AuthLayerBuilder, UserId};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Bytes, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use sqlx::{
    AssertSqlSafe, Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// The crate's default session cookie name.
pub(crate) const COOKIE: &str = "__Host-sid";
/// The origin the benchmark apps allow (they are only ever sent safe requests or requests with
/// `Sec-Fetch-Site: same-origin`).
pub(crate) const ORIGIN: &str = "http://127.0.0.1";
/// The route that logs a user in without a password (benchmark seeding only).
pub(crate) const LOGIN_AS: &str = "/bench/login-as";
/// Every seeded user's direct grants.
pub(crate) const PERMISSIONS: [&str; 4] = [
    "billing:read",
    "projects:read",
    "projects:write",
    "reports:read",
];
/// Connections per pool: sqlx's default, the same for every configuration.
pub(crate) const POOL_SIZE: u32 = 10;

// --- the principal cache ------------------------------------------------------------------------

/// The layer builder with the principal cache on, default options.
pub(crate) fn with_cache(builder: AuthLayerBuilder) -> AuthLayerBuilder {
    builder.principal_cache(axum_live_auth::CacheOptions::default())
}

/// The layer's cache counters; `None` when its cache is off.
/// Waits until the layer's cache listens for changes (at most 10 s); returns at once without
/// a cache.
pub(crate) async fn wait_listening(layer: &AuthLayer) {
    for _ in 0..200 {
        match layer.cache_status() {
            None => return,
            Some(status) if status.listening => return,
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("the principal cache did not start listening within 10 s");
}

// --- running ------------------------------------------------------------------------------------

/// Whether to run: `cargo bench` passes `--bench`; `cargo test --all-targets` builds and runs
/// bench targets without it, and must not start a benchmark.
pub(crate) fn should_run(bench: &str) -> bool {
    if std::env::args().any(|arg| arg == "--bench") {
        return true;
    }
    println!("{bench}: not run; run it with `cargo bench --bench {bench}`");
    false
}

/// A numeric setting from the environment.
pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {value:?}")),
        _ => default,
    }
}

/// The command that was run, with the settings that were taken from the environment.
pub(crate) fn command(bench: &str, vars: &[&str]) -> String {
    let mut words: Vec<String> = vars
        .iter()
        .filter_map(|var| {
            std::env::var(var)
                .ok()
                .map(|value| format!("{var}={value}"))
        })
        .collect();
    words.push(format!("cargo bench --bench {bench}"));
    words.join(" ")
}

// --- the database -------------------------------------------------------------------------------

/// The server to create benchmark databases on: `BENCH_DATABASE_URL`, by default
/// `postgres://postgres@127.0.0.1:5432/postgres`. Only a loopback server is accepted.
pub(crate) fn admin_options() -> PgConnectOptions {
    let url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let options: PgConnectOptions = url.parse().expect("BENCH_DATABASE_URL");
    let host = options.get_host();
    let local = host == "localhost"
        || host.starts_with('/')
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    assert!(
        local,
        "the benchmarks only talk to a Postgres on loopback, not {host}"
    );
    options
}

/// Drops (if it exists) and creates database `name`; returns options that connect to it.
pub(crate) async fn fresh_database(name: &str) -> PgConnectOptions {
    let mut admin = PgConnection::connect_with(&admin_options()).await.unwrap();
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    admin.close().await.unwrap();
    admin_options().database(name)
}

/// Drops database `name`.
pub(crate) async fn drop_database(name: &str) {
    let mut admin = PgConnection::connect_with(&admin_options()).await.unwrap();
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
}

/// A pool built as the crate asks: no ping on checkout.
pub(crate) async fn pool(options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(POOL_SIZE)
        .connect_with(options)
        .await
        .unwrap()
}

/// Creates `n` users named `{prefix}{i}`, each with the direct grants `permissions`; returns
/// their ids in order.
///
/// Plain SQL, which the crate supports (its tables are a contract; triggers keep
/// `auth_users.permissions`): `Accounts::create_user` would spend an Argon2 hash on each, and
/// nobody logs in with a password here.
pub(crate) async fn seed_users(
    pool: &PgPool,
    prefix: &str,
    n: usize,
    permissions: &[&str],
) -> Vec<UserId> {
    let mut ids: Vec<UserId> = sqlx::query_scalar(
        "INSERT INTO auth_users (username) \
         SELECT $1 || g FROM generate_series(1, $2) AS g RETURNING id",
    )
    .bind(prefix)
    .bind(i64::try_from(n).unwrap())
    .fetch_all(pool)
    .await
    .unwrap();
    ids.sort_unstable();
    let permissions: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
    sqlx::query(
        "INSERT INTO auth_user_permissions (user_id, permission) \
         SELECT u, p FROM unnest($1::bigint[]) AS u CROSS JOIN unnest($2::text[]) AS p",
    )
    .bind(&ids)
    .bind(&permissions)
    .execute(pool)
    .await
    .unwrap();
    ids
}

/// `POST /bench/login-as/{id}`: starts a session for the user with [`Auth::login`] (the call an
/// app makes after checking credentials; no Argon2 here) and sets its cookie.
pub(crate) fn login_route() -> Router {
    async fn login_as(
        auth: Auth,
        Path(id): Path<UserId>,
    ) -> Result<StatusCode, axum_live_auth::Error> {
        auth.login(id).await?;
        Ok(StatusCode::NO_CONTENT)
    }
    Router::new().route(&format!("{LOGIN_AS}/{{id}}"), post(login_as))
}

/// Logs each user in through `auth` (in-process, no HTTP) and returns their session tokens.
pub(crate) async fn log_in_all(auth: &AuthLayer, users: &[UserId]) -> Vec<String> {
    let app = login_route().layer(auth.clone());
    let mut tokens = Vec::with_capacity(users.len());
    for user in users {
        let request = Request::post(format!("{LOGIN_AS}/{user}"))
            .header("sec-fetch-site", "same-origin")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "login of {user}");
        tokens.push(session_token(response.headers()));
    }
    tokens
}

/// The session token a response's `Set-Cookie` carries.
pub(crate) fn session_token(headers: &HeaderMap) -> String {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookie| {
            let (pair, _) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=')?;
            (name.trim() == COOKIE && !value.is_empty()).then(|| value.trim().to_owned())
        })
        .expect("a session cookie")
}

/// The `Cookie` header that presents `token`.
pub(crate) fn cookie_header(token: &str) -> (HeaderName, HeaderValue) {
    (
        header::COOKIE,
        HeaderValue::from_str(&format!("{COOKIE}={token}")).unwrap(),
    )
}

/// Serves `app` on a fresh loopback port (with connect info, as an app would), on the current
/// runtime; returns the address.
pub(crate) async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

// --- HTTP client --------------------------------------------------------------------------------

/// One keep-alive HTTP/1.1 connection (hyper's low-level client: no pool, no extra task per
/// request). The connection's driver is spawned on the current runtime.
pub(crate) struct Http {
    sender: SendRequest<Empty<Bytes>>,
    host: HeaderValue,
}

/// A response, body read in full.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Http {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Self {
            sender,
            host: HeaderValue::from_str(&addr.to_string()).unwrap(),
        }
    }

    /// Sends `method path` with the given headers and reads the whole response.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        let map = request.headers_mut().unwrap();
        map.insert(header::HOST, self.host.clone());
        for (name, value) in headers {
            map.insert(name, value.clone());
        }
        let request = request.body(Empty::new()).unwrap();
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

// --- statistics ---------------------------------------------------------------------------------

/// The `q` quantile (0..=1) of sorted microsecond samples, in milliseconds (nearest rank).
pub(crate) fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted_us.len() as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
}

/// The `q` quantile (nearest rank) of sorted values.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of some values (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Milliseconds, as a float.
pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

// --- the machine --------------------------------------------------------------------------------

/// What the results were measured on, and when.
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) uname: String,
    pub(crate) postgres: String,
    pub(crate) date: String,
    pub(crate) command: String,
    pub(crate) loadavg: String,
}

impl Machine {
    pub(crate) async fn describe(pool: &PgPool, command: String) -> Self {
        let postgres: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(pool)
            .await
            .unwrap();
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            uname: run("uname", &["-srm"]),
            postgres,
            date: run("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
            command,
            loadavg: loadavg(),
        }
    }

    pub(crate) fn print(&self) {
        println!("machine:  nproc {}, {}", self.nproc, self.uname);
        println!("postgres: {}", self.postgres);
        println!("date:     {}", self.date);
        println!("command:  {}", self.command);
        println!("load average before the run: {}", self.loadavg);
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "nproc": self.nproc,
            "uname": self.uname,
            "postgres": self.postgres,
            "date": self.date,
            "command": self.command,
            "loadavg_before": self.loadavg,
            "loadavg_after": loadavg(),
        })
    }
}

/// The first three fields of `/proc/loadavg`, when there is one.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn run(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |out| String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
}

/// Writes `value` as pretty JSON to `benches/results/{file}`; returns the path.
pub(crate) fn write_result(file: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, contents).unwrap();
    path
}
