//! Forward authentication (`GET /auth/check`): every answer through the router on both stores,
//! its cost at the wire, and a real nginx in front of an upstream that is not this crate.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, COOKIE, Reply, TestApp, app, app_with, both_stores,
    counted_app_with,
    example::{free_port, wait_for_port},
    http::{client, send_from, serve},
    login_request, send,
};

/// A check as a proxy sends it, for an original `GET` unless `headers` say otherwise.
fn check(query: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get(format!("/auth/check{query}"));
    if !headers.iter().any(|(name, _)| name.ends_with("-method")) {
        request = request.header("x-original-method", "GET");
    }
    if let Some(token) = token {
        request = request.header(header::COOKIE, format!("{COOKIE}={token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

async fn ask(app: &TestApp, query: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Reply {
    send(&app.router, check(query, token, headers)).await
}

both_stores! {
    /// A refused cross-site request logs every path the headers name, so that a client's own
    /// `X-Forwarded-Uri` beside the proxy's `X-Original-URI` cannot hide which one it was.
    /// (Before: the first header only, the client's.)
    async fn a_cross_site_refusal_logs_every_path_named(db: Db) {
        let logs = crate::account::Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let app = app(db).await;
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let headers = [
            ("x-original-method", "POST"),
            ("x-original-uri", "/service/admin/wipe?all=1"),
            ("x-forwarded-uri", "/harmless"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert_eq!(ask(&app, "", Some(&token), &headers).await.status, StatusCode::FORBIDDEN);
        let text = logs.text();
        assert!(text.contains("event=\"csrf_rejected\""), "{text}");
        assert!(text.contains("/service/admin/wipe") && !text.contains("all=1"), "{text}");
        assert!(text.contains("/harmless"), "{text}");
        // A path that is not UTF-8 (nginx passes its bytes on) is logged too.
        let raw = axum::http::HeaderValue::from_bytes(b"/service/caf\xe9").unwrap();
        let request = check("", Some(&token), &[("x-original-method", "POST"), ("sec-fetch-site", "cross-site")]);
        let (mut parts, body) = request.into_parts();
        parts.headers.insert("x-original-uri", raw);
        parts.headers.insert("x-forwarded-uri", "/harmless-too".parse().unwrap());
        let reply = send(&app.router, Request::from_parts(parts, body)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(logs.text().contains("/service/caf"), "{}", logs.text());
    }

    async fn the_check_names_the_user_and_refuses_without_a_session(db: Db) {
        let app = app(db).await;
        assert_eq!(ask(&app, "", None, &[]).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(ask(&app, "", Some("garbage"), &[]).await.status, StatusCode::UNAUTHORIZED);
        let token = app.login(ALICE, ALICE_PASSWORD).await;
        let reply = ask(&app, "", Some(&token), &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        let h = |name: &str| reply.headers[name].to_str().unwrap().to_owned();
        assert_eq!(h("x-auth-user-id"), app.alice.to_string());
        assert_eq!(h("x-auth-username"), ALICE);
        assert_eq!(h("x-auth-permissions"), "admin,reports:read");
        assert_eq!(h("x-auth-session-id"), token.split_once('.').unwrap().0);
        assert_eq!(h("cache-control"), "no-store");
        // A disabled user's next check is refused.
        app.accounts.disable_user(app.alice).await.unwrap();
        assert_eq!(ask(&app, "", Some(&token), &[]).await.status, StatusCode::UNAUTHORIZED);
    }

    async fn the_proxy_can_require_permissions(db: Db) {
        let app = app(db).await;
        let bob = app.login(BOB, BOB_PASSWORD).await;
        let status = |query: &'static str, headers: &'static [(&'static str, &'static str)]| {
            let (app, bob) = (app.clone(), bob.clone());
            async move { ask(&app, query, Some(&bob), headers).await.status }
        };
        assert_eq!(status("?permission=reports:read", &[]).await, StatusCode::OK);
        assert_eq!(status("?permission=admin", &[]).await, StatusCode::FORBIDDEN);
        assert_eq!(status("", &[("x-auth-require-permission", "admin")]).await, StatusCode::FORBIDDEN);
        assert_eq!(
            status("?permission=reports:read", &[("x-auth-require-permission", "admin")]).await,
            StatusCode::FORBIDDEN,
            "every permission named anywhere is required"
        );
        assert_eq!(
            status("?permission=reports:read&permission=admin", &[]).await,
            StatusCode::FORBIDDEN
        );
        // On a resource.
        let project: axum_live_auth::Resource = "project:42".parse().unwrap();
        app.accounts.grant_permission_on(app.bob, "project:read", &project).await.unwrap();
        assert_eq!(status("?permission=project:read&resource=project:42", &[]).await, StatusCode::OK);
        assert_eq!(status("?permission=project:read&resource=project:43", &[]).await, StatusCode::FORBIDDEN);
        assert_eq!(status("?permission=project:read&resource=project", &[]).await, StatusCode::BAD_REQUEST);
        // A resource the client adds to a query the proxy passes on (Caddy's `uri /auth/check`
        // keeps it) does not narrow the proxy's header to the one project bob holds it on.
        // (Before, this answered 200.)
        assert_eq!(
            status("?resource=project:42", &[("x-auth-require-permission", "project:read")]).await,
            StatusCode::FORBIDDEN
        );
        // A query whose bytes are not UTF-8 once decoded: refused, not read with U+FFFD in their
        // place, which would answer for every id those bytes stand for. (Before, bob's grant on
        // `x\u{FFFD}` answered 200 for `x%FF`, `x%FE`, ….)
        let replaced: axum_live_auth::Resource = "project:x\u{FFFD}".parse().unwrap();
        app.accounts.grant_permission_on(app.bob, "project:read", &replaced).await.unwrap();
        assert_eq!(status("?permission=project:read&resource=project:x%FF", &[]).await, StatusCode::BAD_REQUEST);
        assert_eq!(status("?permission=reports:read%FF", &[]).await, StatusCode::BAD_REQUEST);
        // Two resources: refused, not the first one checked and the second ignored.
        assert_eq!(status("?permission=project:read&resource=project:42&resource=project:43", &[]).await, StatusCode::BAD_REQUEST);
        // What the check cannot read is refused, never skipped: a misspelt key, or a permission
        // header that is not ASCII (which `to_str` cannot read) or not UTF-8. (Before, each was
        // ignored and bob, who holds none of these, was let through.)
        assert_eq!(status("?permissions=admin", &[]).await, StatusCode::BAD_REQUEST);
        assert_eq!(status("?Permission=admin", &[]).await, StatusCode::BAD_REQUEST);
        for raw in ["rapports:créer".as_bytes(), b"admin\xff"] {
            let mut request = check("", Some(&bob), &[]);
            request.headers_mut().append(
                "x-auth-require-permission",
                http::HeaderValue::from_bytes(raw).unwrap(),
            );
            let status = send(&app.router, request).await.status;
            assert_ne!(status, StatusCode::OK, "{raw:?}");
        }
        app.accounts.grant_permission(app.bob, "rapports:créer").await.unwrap();
        let mut request = check("", Some(&bob), &[]);
        request.headers_mut().append(
            "x-auth-require-permission",
            http::HeaderValue::from_bytes("rapports:créer".as_bytes()).unwrap(),
        );
        assert_eq!(send(&app.router, request).await.status, StatusCode::OK, "a UTF-8 permission bob holds");
    }

    async fn an_unsafe_original_request_gets_the_csrf_check(db: Db) {
        let app = app(db).await;
        let bob = app.login(BOB, BOB_PASSWORD).await;
        let status = |headers: Vec<(&'static str, &'static str)>| {
            let (app, bob) = (app.clone(), bob.clone());
            async move { ask(&app, "", Some(&bob), &headers).await.status }
        };
        let cross = ("sec-fetch-site", "cross-site");
        let same = ("sec-fetch-site", "same-origin");
        assert_eq!(status(vec![("x-forwarded-method", "POST"), cross]).await, StatusCode::FORBIDDEN);
        assert_eq!(status(vec![("x-original-method", "DELETE"), cross]).await, StatusCode::FORBIDDEN);
        assert_eq!(status(vec![("x-forwarded-method", "POST"), same]).await, StatusCode::OK);
        assert_eq!(
            status(vec![("x-forwarded-method", "POST"), ("origin", crate::common::ORIGIN)]).await,
            StatusCode::OK
        );
        assert_eq!(status(vec![("x-forwarded-method", "GET"), cross]).await, StatusCode::OK);
        // A WebSocket handshake is checked, also when the proxy dropped its `Upgrade` header.
        let handshake = ("sec-fetch-mode", "websocket");
        assert_eq!(status(vec![("x-forwarded-method", "GET"), handshake, cross]).await, StatusCode::FORBIDDEN);
        assert_eq!(status(vec![("x-forwarded-method", "GET"), handshake, same]).await, StatusCode::OK);
        // No method given: the request may be unsafe, so it is checked.
        let no_method = Request::get("/auth/check")
            .header(header::COOKIE, format!("{COOKIE}={bob}"))
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app.router, no_method).await.status, StatusCode::FORBIDDEN);
        // Two method headers that disagree: checked if either is unsafe.
        assert_eq!(
            status(vec![("x-forwarded-method", "GET"), ("x-original-method", "POST"), cross]).await,
            StatusCode::FORBIDDEN
        );
    }

    /// The app's CSRF-exempt paths name its own routes, not those of the services behind the
    /// proxy: a cross-site POST to a service's `/auth/token` (or with no path given) is refused.
    async fn the_apps_exempt_paths_exempt_nothing_behind_the_proxy(db: Db) {
        let app = app_with(db, |b| b.csrf_exempt("/auth/token").csrf_exempt("/")).await;
        let bob = app.login(BOB, BOB_PASSWORD).await;
        let post = [("x-original-method", "POST"), ("sec-fetch-site", "same-site")];
        for uri in [Some("/auth/token"), Some("/auth/token?next=1"), None] {
            let mut headers = post.to_vec();
            headers.extend(uri.map(|uri| ("x-original-uri", uri)));
            assert_eq!(ask(&app, "", Some(&bob), &headers).await.status, StatusCode::FORBIDDEN, "{uri:?}");
        }
        let same = [("x-original-method", "POST"), ("x-original-uri", "/auth/token"), ("sec-fetch-site", "same-origin")];
        assert_eq!(ask(&app, "", Some(&bob), &same).await.status, StatusCode::OK);
    }

    async fn an_unavailable_database_is_503_never_200(db: Db) {
        let app = app(db).await;
        let bob = app.login(BOB, BOB_PASSWORD).await;
        app.db.close().await;
        let reply = ask(&app, "", Some(&bob), &[]).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.headers.contains_key(header::RETRY_AFTER));
    }
}

/// A bearer client (`Authorization` is not something a cross-site page can send) is checked
/// without CSRF.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_bearer_token_is_checked_like_a_cookie(pool: sqlx::PgPool) {
    let app = app_with(pool, |b| b.bearer_tokens(true)).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    let bearer = format!("Bearer {token}");
    let request = Request::get("/auth/check")
        .header(header::AUTHORIZATION, &bearer)
        .header("x-forwarded-method", "POST")
        .header("sec-fetch-site", "cross-site")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app.router, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-auth-username"], BOB);
}

/// With the principal cache a check costs no round trip; without it, one.
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_check_costs_one_round_trip_or_none_with_the_cache(pool: sqlx::PgPool) {
    let uncached = counted_app_with(pool.clone(), |b| b).await;
    let token = uncached.login(BOB, BOB_PASSWORD).await;
    for _ in 0..2 {
        ask(&uncached, "", Some(&token), &[]).await; // prepares the statement
    }
    let before = uncached.statements();
    assert_eq!(
        ask(&uncached, "", Some(&token), &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(uncached.statements() - before, 1);

    let cached = counted_app_with(pool, |b| {
        b.principal_cache(axum_live_auth::CacheOptions::default())
    })
    .await;
    cached.listen().await;
    ask(&cached, "", Some(&token), &[]).await; // fills the cache
    let before = cached.statements();
    for _ in 0..10 {
        assert_eq!(
            ask(&cached, "?permission=reports:read", Some(&token), &[])
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(cached.statements() - before, 0, "served from memory");
}

/// A permission no grant can hold (longer than the 128 characters a grant may have) is refused
/// without asking the database or taking a place in the cache: a proxy that passes on a
/// client's header cannot make each request cost a query and a cache entry of its size.
/// (Before: one statement, and one cached answer keyed by the whole header, per request.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_permission_no_grant_can_hold_costs_no_round_trip(pool: sqlx::PgPool) {
    let app = counted_app_with(pool.clone(), |b| b).await;
    // The longest a grant may have is still looked up.
    let longest = "p".repeat(128);
    let project = "project:42".parse().unwrap();
    (app.accounts
        .grant_permission_on(app.bob, &longest, &project))
    .await
    .unwrap();
    let token = app.login(BOB, BOB_PASSWORD).await;
    let held = format!("?permission={longest}&resource=project:42");
    assert_eq!(
        ask(&app, &held, Some(&token), &[]).await.status,
        StatusCode::OK
    );

    let long = "p".repeat(129);
    let query = format!("?permission={long}&resource=project:42");
    ask(&app, &query, Some(&token), &[]).await; // prepares the lookup
    let before = app.statements();
    let reply = ask(&app, &query, Some(&token), &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(app.statements() - before, 1, "the session lookup alone");

    // With the cache: no cached answer, where a permission a grant can hold takes one.
    let cached = counted_app_with(pool, |b| {
        b.principal_cache(axum_live_auth::CacheOptions::default())
    })
    .await;
    cached.listen().await;
    for _ in 0..3 {
        assert_eq!(
            ask(&cached, &query, Some(&token), &[]).await.status,
            StatusCode::FORBIDDEN
        );
    }
    let answers = || cached.layer.cache_status().unwrap().answers;
    assert_eq!(answers(), 0);
    assert_eq!(
        ask(&cached, &held, Some(&token), &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(answers(), 1);
}

/// A permission holding a NUL (which no Postgres text can hold) is refused without asking the
/// database: `403`, not the `503` of a database that did not answer, and no error logged.
/// (Before: Postgres refused the parameter, and every such request answered `503`.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_permission_with_a_nul_is_refused_without_asking(pool: sqlx::PgPool) {
    let app = counted_app_with(pool, |b| b).await;
    let token = app.login(BOB, BOB_PASSWORD).await;
    let query = "?permission=project%00read&resource=project:42";
    ask(&app, query, Some(&token), &[]).await; // prepares the lookup
    let before = app.statements();
    let reply = ask(&app, query, Some(&token), &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(app.statements() - before, 1, "the session lookup alone");
    let global = ask(&app, "?permission=project%00read", Some(&token), &[]).await;
    assert_eq!(global.status, StatusCode::FORBIDDEN);
}

/// A permission named many times in one check is looked up once, and more than 16 distinct
/// ones are refused: a client whose query the proxy passes on (or who calls the check itself)
/// cannot make one request cost a round trip per name. (Before: 1 000 repeats, 1 001
/// statements, one after another on one connection.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_check_looks_each_permission_up_once_and_only_a_few(pool: sqlx::PgPool) {
    let app = counted_app_with(pool, |b| b).await;
    app.accounts
        .grant_permission_on(app.bob, "project:read", &"project:42".parse().unwrap())
        .await
        .unwrap();
    let token = app.login(BOB, BOB_PASSWORD).await;
    let once = "?permission=project:read&resource=project:42";
    for _ in 0..2 {
        ask(&app, once, Some(&token), &[]).await; // prepares the statements
    }
    let repeated = format!(
        "{}&resource=project:42",
        vec!["permission=project:read"; 1000].join("&")
    );
    let before = app.statements();
    let reply = ask(&app, &format!("?{repeated}"), Some(&token), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        app.statements() - before,
        2,
        "the session lookup and one `can`"
    );

    let distinct: Vec<String> = (0..17).map(|i| format!("permission=p{i}")).collect();
    let before = app.statements();
    let reply = ask(
        &app,
        &format!("?{}&resource=project:42", distinct.join("&")),
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.statements() - before, 1, "the session lookup alone");
    let sixteen = distinct[..16].join("&");
    let reply = ask(
        &app,
        &format!("?{sixteen}&resource=project:42"),
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "16 are asked about");
}

// --- through a real nginx ------------------------------------------------------------------

/// An upstream that is not this crate: a few lines of Python's `http.server` that answer every
/// request with the `X-Auth-*` headers it received, and its `Cookie` and `Authorization`, as
/// JSON.
const UPSTREAM: &str = r#"
import http.server, json, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def answer(self):
        seen = {k.lower(): v for k, v in self.headers.items()
                if k.lower().replace("_", "-").startswith("x-auth-")}
        body = json.dumps({"method": self.command, "path": self.path, "auth": seen,
                           "cookie": self.headers.get_all("Cookie"),
                           "authorization": self.headers.get_all("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_DELETE = answer
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"#;

/// [`UPSTREAM`] running on a free port, once it accepts connections.
async fn upstream() -> (Process, u16) {
    let port = free_port();
    let process = Process(
        Command::new("python3")
            .args(["-c", UPSTREAM, &port.to_string()])
            .spawn()
            .expect("python3"),
    );
    wait_for_port(port, Duration::from_secs(20)).await;
    (process, port)
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx as the README configures it, in front of `upstream`, asking `auth` about each request.
fn nginx_config(dir: &std::path::Path, port: u16, auth: SocketAddr, upstream: u16) -> String {
    let readme = include_str!("../../README.md");
    // The README's nginx blocks: the forward-auth site, and the access-log format that keeps
    // recovery tokens out of the log (included as well, so that nginx checks it).
    let blocks: Vec<&str> = readme
        .split("```nginx\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .collect();
    let site = blocks
        .iter()
        .find(|block| block.contains("auth_request"))
        .expect("the README has an nginx block for forward auth");
    let log_format = blocks
        .iter()
        .find(|block| block.contains("log_format"))
        .expect("the README has an nginx block for the access log");
    let site = format!("{log_format}{site}")
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("http://127.0.0.1:3000", &format!("http://{auth}"))
        .replace(
            "http://127.0.0.1:8000",
            &format!("http://127.0.0.1:{upstream}"),
        );
    let d = dir.display();
    format!(
        // One process (no master), so that killing it leaves no worker behind.
        "master_process off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         daemon off;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           {site}\n\
         }}\n"
    )
}

/// nginx in `dir` on `port`, once it accepts connections; `None` when nginx is not installed.
async fn start_nginx(dir: &std::path::Path, config: &str, port: u16) -> Option<Process> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())?;
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config).unwrap();
    let process = Process(
        Command::new(nginx)
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, Duration::from_secs(20)).await;
    Some(process)
}

/// nginx and the upstream service, stopped (and nginx's folder removed) when dropped.
struct Running {
    _nginx: Process,
    _upstream: Process,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `app` served behind nginx as the README configures it, with an upstream service; nginx's
/// address and what keeps them running. `None` when nginx is not installed.
async fn behind_nginx(app: &TestApp) -> Option<(SocketAddr, Running)> {
    let auth = serve(app.router.clone()).await;
    let dir = std::env::temp_dir().join(format!("axum-live-auth-nginx-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (upstream, upstream_port) = upstream().await;
    let port = free_port();
    let config = nginx_config(&dir, port, auth, upstream_port);
    let Some(nginx) = start_nginx(&dir, &config, port).await else {
        eprintln!("NOT RUN: nginx is not installed (apt-get install nginx)");
        return None;
    };
    let running = Running {
        _nginx: nginx,
        _upstream: upstream,
        dir,
    };
    Some((SocketAddr::from(([127, 0, 0, 1], port)), running))
}

/// With nginx trusted as a proxy, the check counts and logs the address nginx saw, never one
/// the client wrote in `X-Forwarded-For`. (Before, the README's check locations passed the
/// client's header on untouched, so a client chose the address its invalid tokens were counted
/// and logged under.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn nginx_passes_on_the_address_it_saw_not_one_the_client_wrote(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let logs = crate::account::Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let pool = PgPoolOptions::new().connect_with(options).await.unwrap();
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    let app = app_with(pool, |b| b.trusted_proxies([localhost])).await;
    let Some((nginx, _running)) = behind_nginx(&app).await else {
        return;
    };
    let forged = [("x-forwarded-for", "203.0.113.99")];
    let request = through("/service/hello", Some("not-a-token"), &forged);
    let reply = send_from(nginx, client(3), request).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let text = logs.text();
    let seen = format!("ip=Some({})", client(3));
    assert!(
        text.contains("event=\"invalid_token\"") && text.contains(&seen),
        "{text}"
    );
    assert!(!text.contains("203.0.113.99"), "{text}");
}

fn through(path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(header::COOKIE, format!("{COOKIE}={token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

/// Through `proxy`, from client `from`: the service behind it gets the client's other cookies
/// and never `token`, whether the session cookie comes first, in the middle, last or alone,
/// nor the bearer token.
async fn service_gets_no_session_token(proxy: SocketAddr, from: u32, token: &str) {
    for (cookies, left) in [
        (
            format!("theme=dark; {COOKIE}={token}; lang=en"),
            "theme=dark; lang=en",
        ),
        (format!("{COOKIE}={token}; lang=en"), "lang=en"),
        (format!("theme=dark; {COOKIE}={token}"), "theme=dark"),
        (format!("{COOKIE}={token}"), ""),
    ] {
        let (mut parts, body) = through("/service/hello", None, &[]).into_parts();
        parts
            .headers
            .insert(header::COOKIE, cookies.parse().unwrap());
        parts.headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let reply = send_from(proxy, client(from), Request::from_parts(parts, body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        // No header, or an empty one, when only the session cookie was sent.
        let cookie = seen["cookie"].as_array().map_or(String::new(), |values| {
            values
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        });
        assert_eq!(cookie, left, "{cookies}: {seen}");
        assert_eq!(seen["authorization"], serde_json::Value::Null, "{seen}");
    }
}

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn nginx_forwards_live_sessions_to_a_service_in_another_language(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = PgPoolOptions::new().connect_with(options).await.unwrap();
    let app = app(pool).await;
    let Some((nginx, _running)) = behind_nginx(&app).await else {
        return;
    };
    let get = |path: &'static str,
               token: Option<String>,
               headers: &'static [(&'static str, &'static str)]| async move {
        send_from(nginx, client(3), through(path, token.as_deref(), headers)).await
    };

    // Anonymous: 401 from nginx, the upstream never asked.
    assert_eq!(
        get("/service/hello", None, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Bob: the upstream sees bob and his permissions, never a forged id.
    let login = send(&app.router, login_request(BOB, BOB_PASSWORD)).await;
    let bob = login.session_cookie().unwrap();
    let reply = get(
        "/service/hello",
        Some(bob.clone()),
        &[("x-auth-user-id", "1"), ("x-auth_user-id", "1")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        seen["auth"].as_object().unwrap().len(),
        4,
        "nginx drops a name with `_`: {seen}"
    );
    assert_eq!(
        seen["auth"]["x-auth-user-id"],
        app.bob.to_string(),
        "{seen}"
    );
    assert_eq!(seen["auth"]["x-auth-username"], BOB);
    assert_eq!(seen["auth"]["x-auth-permissions"], "reports:read");
    assert_ne!(
        app.bob, 1,
        "the forged id would be indistinguishable otherwise"
    );
    // The service gets the client's other cookies, never the session's token.
    assert_eq!(seen["cookie"], serde_json::Value::Null, "{seen}");
    service_gets_no_session_token(nginx, 3, &bob).await;

    // A location that requires reports:read: bob passes, alice without it does not.
    assert_eq!(
        get("/reports/q1", Some(bob.clone()), &[]).await.status,
        StatusCode::OK
    );
    app.accounts
        .revoke_permission(app.bob, "reports:read")
        .await
        .unwrap();
    // Nor past the location by a path that nginx reads as another one and a service (Express,
    // Spring) as the same. (Before: `location /reports/` left these to `location /`, 200.)
    for path in [
        "/reports/q1",
        "/REPORTS/q1",
        "/Reports;v=1/q1",
        "/reports;x",
        "/reports",
    ] {
        assert_eq!(
            get(path, Some(bob.clone()), &[]).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    assert_eq!(
        get("/service/hello", Some(bob.clone()), &[]).await.status,
        StatusCode::OK
    );

    // A cross-site POST through nginx is refused; a same-origin one passes.
    let post = |headers: &'static [(&'static str, &'static str)]| {
        let bob = bob.clone();
        async move {
            let mut request = through("/service/act", Some(&bob), headers);
            *request.method_mut() = http::Method::POST;
            send_from(nginx, client(4), request).await.status
        }
    };
    assert_eq!(
        post(&[("sec-fetch-site", "cross-site")]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(&[("sec-fetch-site", "same-origin")]).await,
        StatusCode::OK
    );

    // A WebSocket handshake from another site is refused, from a browser that sends Fetch
    // Metadata or from one that sends only `Origin` (the check needs `Upgrade` passed on).
    let handshake = |headers: &'static [(&'static str, &'static str)]| {
        let bob = bob.clone();
        async move {
            let mut request = through("/service/socket", Some(&bob), headers);
            let h = request.headers_mut();
            h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
            h.insert(header::UPGRADE, "websocket".parse().unwrap());
            h.insert("sec-websocket-version", "13".parse().unwrap());
            h.insert(
                "sec-websocket-key",
                "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
            );
            send_from(nginx, client(4), request).await.status
        }
    };
    assert_eq!(
        handshake(&[
            ("sec-fetch-mode", "websocket"),
            ("sec-fetch-site", "same-site")
        ])
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        handshake(&[("origin", "https://evil.example")]).await,
        StatusCode::FORBIDDEN
    );
    assert_ne!(
        handshake(&[("origin", crate::common::ORIGIN)]).await,
        StatusCode::FORBIDDEN
    );

    // Bob is disabled: his very next request through nginx is refused.
    app.accounts.disable_user(app.bob).await.unwrap();
    assert_eq!(
        get("/service/hello", Some(bob), &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
}

// --- through a real Caddy ------------------------------------------------------------------

/// Caddy as the README configures it, on `port` (loopback only), in front of `upstream`,
/// asking `auth` about each request; its admin endpoint and automatic HTTPS off.
fn caddy_config(port: u16, auth: SocketAddr, upstream: u16) -> String {
    let readme = include_str!("../../README.md");
    let (site, _) = readme
        .split_once("```caddy\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the README has a Caddy block");
    let site = site
        .replace(
            "example.com {",
            &format!("http://:{port} {{\n    bind 127.0.0.1"),
        )
        .replace("127.0.0.1:3000", &auth.to_string())
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{upstream}"));
    format!("{{\n    admin off\n    auto_https off\n}}\n{site}")
}

/// The README's Caddy block, run by Caddy: the service behind it sees who is signed in, and
/// never an `X-Auth-*` header the client sent, also where the answer leaves one empty (a user
/// without permissions). (Before, the README's block let Caddy sort `request_header` after
/// `forward_auth`: the service saw no `X-Auth-*` header at all.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn caddy_forwards_live_sessions_and_no_header_the_client_sent(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let Some(caddy) = ["/usr/bin/caddy", "/usr/sbin/caddy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        eprintln!("NOT RUN: caddy is not installed (apt-get install caddy)");
        return;
    };
    let pool = PgPoolOptions::new().connect_with(options).await.unwrap();
    let app = app(pool).await;
    let carol = app
        .accounts
        .create_user("carol", "carol-password")
        .await
        .unwrap();
    let auth = serve(app.router.clone()).await;
    let dir = std::env::temp_dir().join(format!("axum-live-auth-caddy-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_upstream, upstream_port) = upstream().await;
    let port = free_port();
    let file = dir.join("Caddyfile");
    std::fs::write(&file, caddy_config(port, auth, upstream_port)).unwrap();
    let _caddy = Process(
        Command::new(caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", &dir)
            .env("XDG_CONFIG_HOME", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, Duration::from_secs(20)).await;
    let caddy = SocketAddr::from(([127, 0, 0, 1], port));
    // Also spelled with `_`, which many services read as the same header.
    let forged = &[
        ("x-auth-user-id", "1"),
        ("x-auth-permissions", "admin"),
        ("x-auth_user-id", "1"),
        ("x_auth_permissions", "admin"),
        ("X_Auth-Username", "alice"),
    ];
    let get = |token: Option<String>| async move {
        send_from(
            caddy,
            client(5),
            through("/service/hello", token.as_deref(), forged),
        )
        .await
    };
    let seen = |reply: Reply| {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let auth = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["auth"].clone();
        let names: Vec<&String> = auth.as_object().unwrap().keys().collect();
        assert!(names.iter().all(|name| !name.contains('_')), "{names:?}");
        auth
    };

    assert_eq!(get(None).await.status, StatusCode::UNAUTHORIZED);
    let bob = app.login(BOB, BOB_PASSWORD).await;
    let auth_headers = seen(get(Some(bob.clone())).await);
    assert_eq!(
        auth_headers["x-auth-user-id"],
        app.bob.to_string(),
        "{auth_headers}"
    );
    assert_eq!(auth_headers["x-auth-username"], BOB);
    assert_eq!(auth_headers["x-auth-permissions"], "reports:read");
    let carol_token = app.login("carol", "carol-password").await;
    let auth_headers = seen(get(Some(carol_token)).await);
    assert_eq!(
        auth_headers["x-auth-user-id"],
        carol.to_string(),
        "{auth_headers}"
    );
    assert!(
        auth_headers
            .get("x-auth-permissions")
            .is_none_or(|p| p == ""),
        "the client's permissions passed on: {auth_headers}"
    );
    // The service gets the client's other cookies, never the session's token.
    service_gets_no_session_token(caddy, 5, &bob).await;
    app.accounts.disable_user(app.bob).await.unwrap();
    assert_eq!(get(Some(bob)).await.status, StatusCode::UNAUTHORIZED);
    let _ = std::fs::remove_dir_all(dir);
}
