//! A real browser (headless Chromium, driven through ChromeDriver's WebDriver API) on the
//! quickstart's `/app` page: the menu follows bob's live permissions without a reload, and the
//! page leaves for the login form the moment bob is disabled.

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{
    COOKIE,
    example::{Quickstart, free_port, wait_for_port},
    http::{client, open_events, send_from},
    quickstart,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A ChromeDriver process and one browser session in it; both end when dropped.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: std::path::PathBuf,
}

impl Browser {
    /// `None` when Chromium or ChromeDriver is not installed.
    async fn start() -> Option<Self> {
        Self::start_with(&[]).await
    }

    /// [`start`](Self::start), with more command-line switches for Chromium.
    async fn start_with(switches: &[&str]) -> Option<Self> {
        if !std::path::Path::new(CHROMIUM).is_file()
            || !std::path::Path::new(CHROMEDRIVER).is_file()
        {
            return None;
        }
        let port = free_port();
        // Its own process group, so that dropping the browser ends Chromium too.
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .env("TMPDIR", env!("CARGO_TARGET_TMPDIR"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, Duration::from_secs(20)).await;
        let profile =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromium-{port}"));
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            _profile: profile.clone(),
        };
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(switches.iter().map(|&s| s.to_owned()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = browser.call("POST", "/session", Some(capabilities)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Some(browser)
    }

    /// One WebDriver command; its `value`.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("127.0.0.1:{}", self.port))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        value["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(
            "POST",
            &format!("/session/{}/url", self.session),
            Some(json!({"url": url})),
        )
        .await;
    }

    /// Runs `script` in the page and returns its result.
    async fn run(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call("POST", &path, Some(json!({"script": script, "args": []})))
            .await
    }

    /// Waits until `script` returns `true` in the page (at most 15 s).
    async fn until(&self, what: &str, script: &str) {
        let started = Instant::now();
        while self.run(script).await != Value::Bool(true) {
            assert!(started.elapsed() < Duration::from_secs(15), "never: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Browser {
    /// Ends the WebDriver session: Chromium exits and removes its own temporary files.
    async fn quit(&self) {
        self.call("DELETE", &format!("/session/{}", self.session), None)
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self._profile);
    }
}

/// A Postgres URL for the quickstart, from the test database's options (trust auth).
fn database_url(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

/// Logs in to the quickstart with `form` from client address `n`, outside the browser; the
/// session token.
async fn log_in(quickstart: &Quickstart, n: u32, form: &'static str) -> String {
    let origin = format!("http://localhost:{}", quickstart.addr.port());
    let request = Request::post("/login")
        .header(header::ORIGIN, origin)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    let reply = send_from(quickstart.addr, client(n), request).await;
    reply.session_cookie().expect("logged in")
}

#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn the_menu_follows_live_permissions_in_a_real_browser(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let Some(browser) = Browser::start().await else {
        eprintln!(
            "NOT RUN: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let url = database_url(&options);
    let quickstart =
        Quickstart::start(&[("DATABASE_URL", url.as_str()), ("AUTH_CACHE", "on")]).await;
    let port = quickstart.addr.port();
    let origin = format!("http://localhost:{port}");

    // Bob logs in through the form, as a person would.
    browser.go(&format!("{origin}/login")).await;
    browser
        .run(
            "document.querySelector('input[name=username]').value = 'bob';
             document.querySelector('input[name=password]').value = 'bob-password';
             document.querySelector('form').submit(); return true;",
        )
        .await;
    browser
        .until("logged in", "return location.pathname === '/me'")
        .await;

    browser.go(&format!("{origin}/app")).await;
    browser
        .until(
            "the reports link",
            "return document.getElementById('reports') !== null",
        )
        .await;
    assert_eq!(
        browser
            .run("return document.getElementById('admin') === null")
            .await,
        true
    );
    browser.run("window.notReloaded = true; return true;").await;

    // Alice, an admin, changes bob's grants through the admin routes.
    let alice = log_in(&quickstart, 1, "username=alice&password=alice-password").await;
    let admin = |path: &str, form: &'static str| {
        Request::post(path)
            .header(header::ORIGIN, &origin)
            .header(header::COOKIE, format!("{COOKIE}={alice}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap()
    };
    let revoke = admin("/admin/users/bob/revoke", "permission=reports:read");
    assert_eq!(
        send_from(quickstart.addr, client(1), revoke).await.status,
        StatusCode::NO_CONTENT
    );
    browser
        .until(
            "the link gone",
            "return document.getElementById('reports') === null",
        )
        .await;

    let grant = admin("/admin/users/bob/grant", "permission=reports:read");
    assert_eq!(
        send_from(quickstart.addr, client(1), grant).await.status,
        StatusCode::NO_CONTENT
    );
    browser
        .until(
            "the link back",
            "return document.getElementById('reports') !== null",
        )
        .await;
    assert_eq!(
        browser.run("return window.notReloaded === true").await,
        true,
        "no reload"
    );

    // Alice disables bob: his page goes to the login form at once.
    let disable = admin("/admin/users/bob/disable", "");
    assert_eq!(
        send_from(quickstart.addr, client(1), disable).await.status,
        StatusCode::NO_CONTENT
    );
    browser
        .until("on the login page", "return location.pathname === '/login'")
        .await;
    // By the `ended` event, not by the page's fallback (a failed stream reloads the page, which
    // the layer then sends to the login form too), which counts its failures. (Before: `"1"`,
    // since Chromium dropped `ended`, sent without data, as every browser does.)
    assert_eq!(
        browser
            .run("return sessionStorage.getItem('eventFailures')")
            .await,
        serde_json::Value::Null,
        "the page left by a failed stream, not by its ended event"
    );
    browser.quit().await;
}

/// A page whose stream is refused (here its session already holds the most streams it may)
/// tries again after a wait that doubles, not every second: pages whose streams a node refuses
/// (a lost listener, a shutdown, a cap) must not hammer it. Over six seconds: at most three
/// reloads. (Before: one a second, five or more.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_refused_stream_is_tried_again_later_and_later(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let Some(browser) = Browser::start().await else {
        eprintln!(
            "NOT RUN: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let url = database_url(&options);
    let quickstart = Quickstart::start(&[("DATABASE_URL", url.as_str())]).await;
    let origin = format!("http://localhost:{}", quickstart.addr.port());
    let bob = log_in(&quickstart, 2, "username=bob&password=bob-password").await;
    let cookie = [(header::COOKIE, format!("{COOKIE}={bob}"))];
    let mut held = Vec::new();
    for _ in 0..8 {
        let stream = open_events(quickstart.addr, client(2), "/account/events", &cookie).await;
        held.push(stream);
    }

    browser.go(&format!("{origin}/login")).await;
    let add_cookie = json!({"cookie": {
        "name": COOKIE, "value": bob, "path": "/", "secure": true, "httpOnly": true
    }});
    let path = format!("/session/{}/cookie", browser.session);
    browser.call("POST", &path, Some(add_cookie)).await;
    browser.go(&format!("{origin}/app")).await;
    browser.run("window.marker = true; return true;").await;
    let mut reloads = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        if browser.run("return window.marker === true").await != Value::Bool(true) {
            reloads += 1;
            browser.run("window.marker = true; return true;").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!((1..=3).contains(&reloads), "{reloads} reloads in 6 s");
    drop(held);
    browser.quit().await;
}

/// A reset link followed in a browser that sends no `Sec-Fetch-Site` (Chromium sends none to
/// a plain-HTTP site other than localhost; older browsers send none at all): the form on the
/// link's page posts the new password, and the CSRF check must find the site's `Origin` on that
/// post. (Before: the page's `Referrer-Policy: no-referrer` made the browser send `Origin:
/// null`, the post was refused `403`, and the password stayed as it was.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_reset_link_completes_in_a_browser_without_fetch_metadata(pool: sqlx::PgPool) {
    let Some(browser) =
        Browser::start_with(&["--host-resolver-rules=MAP app.test 127.0.0.1"]).await
    else {
        eprintln!(
            "NOT RUN: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = format!("http://app.test:{}", addr.port());
    let mail = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("axum-live-auth-mail-browser-{}", addr.port()));
    let auth = axum_live_auth::AuthLayer::builder(axum_live_auth::AuthStore::from(pool))
        .allowed_origin(&origin)
        // Plain http on a host other than localhost: development only.
        .insecure_dev_mode(true)
        .login_redirect("/login")
        .messenger(quickstart::FileMessenger { dir: mail.clone() })
        .build()
        .unwrap();
    quickstart::seed(&auth.accounts()).await.unwrap();
    let app = quickstart::app(auth.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    auth.accounts().request_password_reset("bob").await.unwrap();
    let started = Instant::now();
    let link = loop {
        let found = std::fs::read_dir(&mail).ok().and_then(|entries| {
            let file = entries.flatten().next()?.path();
            let text = std::fs::read_to_string(file).ok()?;
            text.lines()
                .find(|l| l.starts_with("http"))
                .map(str::to_owned)
        });
        if let Some(link) = found {
            break link;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no reset message"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(link.starts_with(&origin), "{link}");

    browser.go(&link).await;
    browser
        .run(
            "document.querySelector('input[name=new_password]').value = 'bob-browser-password';
             document.querySelector('form').submit(); return true;",
        )
        .await;
    browser
        .until("on the login page", "return location.pathname === '/login'")
        .await;
    let login = Request::post("/login")
        .header(header::ORIGIN, &origin)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=bob&password=bob-browser-password"))
        .unwrap();
    let reply = send_from(addr, client(1), login).await;
    let cookies = reply.set_cookies();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("sid=") && !c.starts_with("sid=;")),
        "the new password works: {cookies:?}"
    );
    browser.quit().await;
    let _ = std::fs::remove_dir_all(mail);
}
