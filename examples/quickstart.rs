//! Quickstart: a complete small app with login, logout, permission-guarded routes and admin
//! routes that ban users and change grants, enforced on the user's next request.
//!
//! Run it with no setup at all: without `DATABASE_URL` it keeps everything in an SQLite file,
//! `quickstart.db` in the working directory, created on first run:
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Or against Postgres (the crate creates its `auth_*` tables there), with no code change;
//! `DATABASE_URL=sqlite://other.db` picks another SQLite file:
//!
//! ```text
//! DEMO_USERS=on DATABASE_URL=postgres://postgres@localhost/postgres cargo run --example quickstart
//! ```
//!
//! It seeds `alice` / `alice-password` (role `admin`: permissions `admin` and `reports:read`)
//! and `bob` / `bob-password` (permission `reports:read`, and `project:read` on project 42)
//! in its own SQLite file, or in the database `DATABASE_URL` names if `DEMO_USERS=on`, and
//! listens on
//! <http://localhost:3000> (set `PORT` to change). Then, with one cookie jar per user:
//!
//! ```text
//! ORIGIN="Origin: http://localhost:3000"   # the CSRF check wants it on every POST
//! curl -i -H "$ORIGIN" -c alice.txt -b alice.txt -d username=alice -d password=alice-password http://localhost:3000/login
//! curl -b alice.txt http://localhost:3000/me        # {"id":1,"username":"alice","permissions":["admin","reports:read"],"email":null,"email_verified":false}
//! curl -H "$ORIGIN" -c bob.txt -b bob.txt -d username=bob -d password=bob-password http://localhost:3000/login
//! curl -i -b bob.txt http://localhost:3000/reports  # 200 OK
//! curl -i -H "$ORIGIN" -b alice.txt -X POST http://localhost:3000/admin/users/bob/disable   # 204 No Content
//! curl -i -b bob.txt http://localhost:3000/me       # 401 Unauthorized: banned at once
//! curl -i -H "$ORIGIN" -b alice.txt -X POST http://localhost:3000/admin/users/bob/enable    # 204 No Content
//! ```
//!
//! The README's "Try it" section walks through all of it with real output.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Form, Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_live_auth::{
    Accounts, Auth, AuthLayer, AuthRejection, AuthStore, CacheOptions, CurrentUser, Error, Message,
    MessageKind, Messenger, MessengerError, RecentAuth, Resource, UserId, require_permission,
    require_permission_on,
};
use serde::{Deserialize, Serialize};
use sqlx::{postgres::PgPoolOptions, sqlite::SqlitePoolOptions};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT must be a port number, not {port:?}"))?,
        Err(_) => 3000,
    };
    let database_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty());
    // The demo users have published passwords (alice is an admin): they are created in the
    // quickstart's own file, and in a database named by DATABASE_URL only when asked for, so
    // that pointing the quickstart at a real database never adds a known admin login there.
    let demo_users = database_url.is_none() || std::env::var("DEMO_USERS").is_ok_and(|v| v == "on");
    let database_url = database_url.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    let (store, listen_pool) = connect(&database_url).await?;
    axum_live_auth::migrate(store.clone()).await?;

    // The session cookie keeps its production attributes (`__Host-sid`, Secure, HttpOnly,
    // SameSite=Lax). Browsers and curl treat http://localhost as a secure context, so this
    // Secure cookie works there without TLS (Safari is the exception: use another browser).
    // `insecure_dev_mode(true)` is only for plain-HTTP development on another host name; this
    // example does not need it.
    let cache = std::env::var("AUTH_CACHE").is_ok_and(|v| v == "on");
    let mail_dir = std::path::PathBuf::from(
        std::env::var("MAIL_DIR")
            .ok()
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "mail".to_owned()),
    );
    let mut builder = AuthLayer::builder(store);
    if cache {
        // Two quickstarts on one Postgres (different PORTs) show the cache by hand: a ban
        // through one is enforced by the other within milliseconds.
        tracing::info!("principal cache on (AUTH_CACHE=on)");
        builder = builder.principal_cache(CacheOptions::default());
    }
    if let Some(listen_pool) = listen_pool {
        // Behind PgBouncer in transaction mode (DATABASE_URL), the node's one LISTEN connection
        // goes to Postgres directly (AUTH_LISTEN_URL).
        builder = builder.listen_pool(listen_pool);
    }
    let auth = builder
        // CSRF protection: unsafe requests must come from the app's own pages (a browser says
        // so in Sec-Fetch-Site or Origin). curl sends neither: the README passes an Origin.
        .allowed_origin(format!("http://localhost:{port}"))
        .allowed_origin(format!("http://127.0.0.1:{port}"))
        // API clients may send `Authorization: Bearer <token>` instead of the cookie; they get
        // a token from POST /auth/token, which sets no cookie and so needs no CSRF check.
        .bearer_tokens(true)
        .csrf_exempt("/auth/token")
        // Anonymous browser page requests are sent to the login form instead of getting a 401.
        .login_redirect("/login")
        // Password-reset and email-verification links go to files in MAIL_DIR.
        .messenger(FileMessenger {
            dir: mail_dir.clone(),
        })
        // Delete expired sessions now and then (in the background work below), in batches.
        .purge_expired_every(Duration::from_secs(10 * 60))
        .build()?;
    // The layer's background work: the purge, and on Postgres the one LISTEN connection that
    // keeps the principal cache and the event streams live. It ends with the layer.
    tokio::spawn(auth.background());
    if demo_users {
        seed(&auth.accounts()).await?;
    }
    let streams = auth.clone();
    let app = app(auth);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("Listening on http://localhost:{port}");
    if demo_users {
        println!("Log in as alice / alice-password (admin) or bob / bob-password (reports:read)");
    } else {
        // The URL is not repeated: it may hold a password.
        println!("No demo users in DATABASE_URL's database (DEMO_USERS=on creates alice and bob)");
    }
    println!(
        "Password-reset and email-verification links go to {}",
        mail_dir.display()
    );
    // With connect info the layer records the client's IP address in each new session.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        ctrl_c().await;
        // Open event streams never end by themselves: the shutdown would wait for them.
        streams.close_event_streams();
    })
    .await?;
    Ok(())
}

/// Where the example keeps its data when `DATABASE_URL` is not set.
const DEFAULT_DATABASE_URL: &str = "sqlite://quickstart.db";

/// Opens the database `url` names: Postgres for `postgres://` (or `postgresql://`), SQLite for
/// `sqlite:`. The rest of the app does not know which one it got. With `AUTH_LISTEN_URL` set
/// (Postgres), also a pool for the node's listener.
async fn connect(
    url: &str,
) -> Result<(AuthStore, Option<sqlx::PgPool>), Box<dyn std::error::Error>> {
    let listen_pool = match std::env::var("AUTH_LISTEN_URL") {
        Ok(listen) if !listen.is_empty() => Some(PgPoolOptions::new().connect_lazy(&listen)?),
        _ => None,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        tracing::info!("using Postgres from DATABASE_URL");
        // `test_before_acquire(false)`: by default sqlx pings every connection as it leaves
        // the pool, which would be a second database round trip on every request. Without the
        // ping a dead connection fails its query, and that one request answers 503 instead.
        // The short acquire timeout makes requests answer 503 after 2 s, not 30, while the
        // database is down.
        let options = PgPoolOptions::new()
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(2));
        let store = if listen_pool.is_some() {
            // DATABASE_URL is PgBouncer in transaction mode: each statement in a transaction of
            // its own, no prepared statement left for another client (see the crate's docs).
            axum_live_auth::through_transaction_pooler(options, url.parse()?).into()
        } else {
            options
                .connect(url)
                .await
                .map_err(|error| {
                    format!("cannot connect to DATABASE_URL ({error}); is Postgres running?")
                })?
                .into()
        };
        Ok((store, listen_pool))
    } else if url.starts_with("sqlite:") {
        tracing::info!(
            url,
            "using the embedded SQLite store (set DATABASE_URL=postgres://… for Postgres)"
        );
        // WAL, a busy timeout and foreign keys: concurrent requests wait for SQLite's one
        // writer instead of failing.
        let options = axum_live_auth::sqlite_connect_options(url)?;
        let pool = SqlitePoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await?;
        Ok((pool.into(), None))
    } else {
        // Not repeated: the URL may hold a password.
        Err("DATABASE_URL must start with postgres:// or sqlite:".into())
    }
}

/// The quickstart's routes behind the auth layer (the integration tests drive this router).
pub(crate) fn app(auth: AuthLayer) -> Router {
    // Each guarded group is a small router of its own: `route_layer` wraps only the routes
    // added before it (and only requests that match one, so unknown paths stay 404).
    let reports_routes = Router::new()
        .route("/reports", get(reports))
        .route_layer(require_permission("reports:read"));
    // Permissions on one project: `project:read` on project 42 (or on every project) lets a
    // user see /projects/42.
    let project_routes = Router::new()
        .route("/projects/{id}", get(project))
        .route_layer(require_permission_on("project:read", "project", "id"))
        .route("/projects/{id}/edit", post(edit_project));
    let admin_routes = Router::new()
        .route("/admin", get(admin))
        .route("/admin/users/{username}/disable", post(disable_user))
        .route("/admin/users/{username}/enable", post(enable_user))
        .route("/admin/users/{username}/grant", post(grant_permission))
        .route("/admin/users/{username}/revoke", post(revoke_permission))
        .route_layer(require_permission("admin"));
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/signup", get(signup_form).post(signup))
        .route("/logout", post(logout))
        .route("/me", get(me))
        // A page that draws its menu from the live event stream: no reload, no polling.
        .route("/app", get(app_page))
        // The user's devices, "log out other devices", password change and reauthentication.
        .nest("/account", axum_live_auth::account_routes())
        // POST /auth/token: a bearer token for a username and password (JSON or form).
        // GET /auth/check: forward auth for a reverse proxy in front of other services.
        .nest(
            "/auth",
            axum_live_auth::token_routes().merge(axum_live_auth::forward_auth_routes()),
        )
        .merge(reports_routes)
        .merge(project_routes)
        .merge(admin_routes)
        .with_state(auth.accounts())
        // Outermost: authenticates every request from its session cookie.
        .layer(auth)
}

/// Creates the demo users unless they exist (a restart keeps whatever the walkthrough changed).
/// Several nodes may start at once on one database: whichever creates a user seeds its grants.
pub(crate) async fn seed(accounts: &Accounts) -> Result<(), Error> {
    if let Some(alice) = created(accounts.create_user("alice", "alice-password").await)? {
        accounts.create_role("admin").await?;
        accounts.grant_role_permission("admin", "admin").await?;
        accounts
            .grant_role_permission("admin", "reports:read")
            .await?;
        accounts.assign_role(alice, "admin").await?;
    }
    if let Some(bob) = created(accounts.create_user("bob", "bob-password").await)? {
        accounts.grant_permission(bob, "reports:read").await?;
        accounts
            .grant_permission_on(bob, "project:read", &"project:42".parse()?)
            .await?;
    }
    Ok(())
}

/// The new user, or `None` if the name was taken already.
fn created(result: Result<UserId, Error>) -> Result<Option<UserId>, Error> {
    match result {
        Ok(user) => Ok(Some(user)),
        Err(Error::UsernameTaken) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Public. `Option<CurrentUser>` is `None` for anonymous requests instead of refusing them.
async fn home(user: Option<CurrentUser>) -> Html<&'static str> {
    Html(match user {
        Some(_) => {
            r#"<h1>axum-live-auth quickstart</h1>
<p><a href="/me">/me</a> · <a href="/reports">/reports</a> · <a href="/admin">/admin</a></p>
<form method="post" action="/logout"><button>Log out</button></form>"#
        }
        None => {
            r#"<h1>axum-live-auth quickstart</h1>
<p><a href="/login">Log in</a> · <a href="/me">/me</a></p>"#
        }
    })
}

async fn login_form() -> Html<&'static str> {
    Html(
        r#"<h1>Log in</h1>
<form method="post" action="/login">
  <label>Username <input name="username" autocomplete="username" required></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button>Log in</button>
</form>"#,
    )
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(auth: Auth, Form(form): Form<Credentials>) -> Result<Response, Error> {
    // Checks the password and, if right, starts a new session and sets its cookie on this
    // response. `None` alike for an unknown user, a wrong password and a disabled user.
    match auth
        .login_with_password(&form.username, &form.password)
        .await?
    {
        Some(_) => Ok(Redirect::to("/me").into_response()),
        None => Ok((StatusCode::UNAUTHORIZED, "Invalid username or password").into_response()),
    }
}

async fn signup_form() -> Html<&'static str> {
    Html(
        r#"<h1>Sign up</h1>
<form method="post" action="/signup">
  <label>Username <input name="username" autocomplete="username" required></label>
  <label>Password <input name="password" type="password" autocomplete="new-password" required></label>
  <button>Sign up</button>
</form>"#,
    )
}

/// Self-service sign-up: creates the user and logs them in (replacing whatever session this
/// browser had), throttled per client address, since each answer tells whether a name is
/// taken. An admin page that creates users for others calls `Accounts::create_user`: logging
/// in there would end the admin's own session.
async fn signup(auth: Auth, Form(form): Form<Credentials>) -> Result<Response, Error> {
    auth.sign_up(&form.username, &form.password).await?;
    Ok(Redirect::to("/app").into_response())
}

async fn logout(auth: Auth) -> Result<Redirect, Error> {
    // Deletes the session row (its cookie is worthless from now on) and clears the cookie.
    auth.logout().await?;
    Ok(Redirect::to("/"))
}

#[derive(Serialize)]
struct Me {
    id: UserId,
    username: String,
    permissions: Vec<String>,
    email: Option<String>,
    email_verified: bool,
}

/// `CurrentUser` refuses anonymous requests: 401, or 303 to /login for a browser page request.
async fn me(user: CurrentUser) -> Json<Me> {
    Json(Me {
        id: user.id(),
        username: user.username().to_owned(),
        // Sorted, and as they are in the database for this very request.
        permissions: user.permissions().to_vec(),
        email: user.email().map(str::to_owned),
        email_verified: user.email_verified(),
    })
}

async fn reports(user: CurrentUser) -> String {
    format!("Reports for {}", user.username())
}

async fn admin() -> &'static str {
    "Admin area: POST /admin/users/{username}/disable, /enable, /grant, /revoke \
     (form permission=…, and resource=type:id to grant on one resource)"
}

#[derive(Deserialize)]
struct PermissionForm {
    permission: String,
    /// `type:id`, such as `project:42`, to grant or revoke on that resource only. Left out for
    /// every resource; given but empty (a form's field left blank) is refused, never taken as
    /// every resource.
    resource: Option<String>,
}

impl PermissionForm {
    fn resource(&self) -> Result<Option<Resource>, Error> {
        self.resource.as_deref().map(str::parse).transpose()
    }
}

// The admin actions take effect on the user's next request: no cache, no new login needed.
// Those that give access (enable, grant) also need the admin's password proven within the
// reauthentication window (`RecentAuth`, 15 minutes by default; `POST /account/reauth`), so a
// stolen or forgotten admin session cannot hand out access.
// `Error` is a response: 404 for an unknown user, 400 for an invalid name, 503 for a database
// failure.

async fn disable_user(
    State(accounts): State<Accounts>,
    Path(username): Path<String>,
) -> Result<StatusCode, Error> {
    // Also deletes all of the user's sessions.
    accounts
        .disable_user(find_user(&accounts, &username).await?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enable_user(
    _: RecentAuth,
    State(accounts): State<Accounts>,
    Path(username): Path<String>,
) -> Result<StatusCode, Error> {
    accounts
        .enable_user(find_user(&accounts, &username).await?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn grant_permission(
    _: RecentAuth,
    State(accounts): State<Accounts>,
    Path(username): Path<String>,
    Form(form): Form<PermissionForm>,
) -> Result<StatusCode, Error> {
    let user = find_user(&accounts, &username).await?;
    match form.resource()? {
        Some(resource) => {
            accounts
                .grant_permission_on(user, &form.permission, &resource)
                .await?;
        }
        None => accounts.grant_permission(user, &form.permission).await?,
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `204` once the grant is gone; `404` when the user had no such grant to revoke, so that an
/// admin is not told "done" while the access stays.
async fn revoke_permission(
    State(accounts): State<Accounts>,
    Path(username): Path<String>,
    Form(form): Form<PermissionForm>,
) -> Result<(StatusCode, &'static str), Error> {
    // Only a direct grant is revoked; a permission that also comes from a role stays.
    let user = find_user(&accounts, &username).await?;
    let revoked = match form.resource()? {
        Some(resource) => {
            accounts
                .revoke_permission_on(user, &form.permission, &resource)
                .await?
        }
        None => accounts.revoke_permission(user, &form.permission).await?,
    };
    Ok(if revoked {
        (StatusCode::NO_CONTENT, "")
    } else {
        (
            StatusCode::NOT_FOUND,
            "no such grant to revoke (a role may give the permission)",
        )
    })
}

/// Only a user with `project:read` on this project (or on every project) gets here.
async fn project(Path(id): Path<String>) -> String {
    format!("Project {id}")
}

/// `project:write` on this very project, checked in the handler.
async fn edit_project(user: CurrentUser, Path(id): Path<String>) -> Result<String, AuthRejection> {
    let project = Resource::new("project", id.as_str()).map_err(|e| AuthRejection::from(&e))?;
    user.require_on("project:write", &project).await?;
    Ok(format!("Project {id} edited by {}", user.username()))
}

/// The page's script: the menu follows the `principal` events; `ended` goes to the login form.
const APP_SCRIPT: &str = r#"
const events = new EventSource("/account/events");
events.addEventListener("principal", (event) => {
  const me = JSON.parse(event.data);
  document.getElementById("name").textContent = me.username;
  const menu = document.getElementById("menu");
  menu.replaceChildren();
  const link = (id, href, text) => {
    const a = document.createElement("a");
    a.id = id; a.href = href; a.textContent = text;
    menu.append(a, " ");
  };
  if (me.permissions.includes("reports:read")) link("reports", "/reports", "Reports");
  if (me.permissions.includes("admin")) link("admin", "/admin", "Admin");
});
events.addEventListener("ended", () => { events.close(); location.href = "/login"; });
// The server can no longer vouch for the picture, or refused the stream: start afresh, after a
// wait that doubles with each failure in a row (about a second, up to a minute, with jitter),
// so that pages neither come back all at once nor hammer a server that refuses them.
events.addEventListener("principal", () => sessionStorage.removeItem("eventFailures"));
const again = () => {
  events.close();
  const failures = Number(sessionStorage.getItem("eventFailures") || 0);
  sessionStorage.setItem("eventFailures", String(failures + 1));
  const wait = Math.min(60000, 1000 * 2 ** failures) * (0.5 + Math.random());
  setTimeout(() => location.reload(), wait);
};
events.addEventListener("reconnect", again);
events.onerror = () => { if (events.readyState === EventSource.CLOSED) again(); };
"#;

/// `GET /app`: a page whose menu follows the user's live permissions. The inline script is
/// allowed by its hash in the page's Content-Security-Policy.
async fn app_page(user: CurrentUser) -> Response {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(APP_SCRIPT));
    let csp = format!(
        "default-src 'self'; script-src 'sha256-{hash}'; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'"
    );
    let page = format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<title>App</title>\n\
         <h1>Hello <span id=\"name\">{}</span></h1>\n<nav id=\"menu\"></nav>\n\
         <form method=\"post\" action=\"/logout\"><button>Log out</button></form>\n\
         <script>{APP_SCRIPT}</script>\n",
        escape(user.username())
    );
    (
        [(axum::http::header::CONTENT_SECURITY_POLICY, csp)],
        Html(page),
    )
        .into_response()
}

/// HTML-escapes text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The id of the user called `username`, or `Error::UserNotFound` (a 404).
async fn find_user(accounts: &Accounts, username: &str) -> Result<UserId, Error> {
    accounts.user_id(username).await?.ok_or(Error::UserNotFound)
}

/// Delivers the crate's messages (password-reset and email-verification links) as files, one
/// per message, in a folder (`MAIL_DIR`, default `./mail`): like Django's file-based email
/// backend, for development. A real app sends mail instead.
#[derive(Debug, Clone)]
pub(crate) struct FileMessenger {
    pub(crate) dir: std::path::PathBuf,
}

impl Messenger for FileMessenger {
    async fn send(&self, message: Message) -> Result<(), MessengerError> {
        private_dir(&self.dir).await?;
        let subject = match message.kind {
            MessageKind::PasswordReset => "Reset your password",
            MessageKind::EmailVerification => "Verify your email address",
            MessageKind::EmailChangeRequested => {
                "A change of your email address was asked for (if not by you, reset your password)"
            }
            _ => "A message from the quickstart",
        };
        // A real messenger sends to `message.email` only: a message without one must go
        // nowhere (never to the username, which anyone may pick). Here, for development, the
        // file says so.
        let to = message
            .email
            .as_deref()
            .unwrap_or("(no address: not to be sent)");
        let body = format!(
            "To: {to}\nSubject: {subject}\n\nHello {},\n\nFollow this link within {} minutes:\n{}\n",
            message.username,
            message.expires_in.as_secs() / 60,
            message.link,
        );
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        // The kind too: a verification link and its notice are written back to back.
        let file = self.dir.join(format!(
            "{stamp}-{}-{:?}.eml",
            message.user_id, message.kind
        ));
        // Written under another name and renamed, so a reader never sees half a message.
        let part = file.with_extension("eml.part");
        write_private(&part, body.as_bytes()).await?;
        tokio::fs::rename(&part, &file).await?;
        println!("mail for {to}: {}", file.display());
        Ok(())
    }
}

/// `dir`, created if need be, readable by this user alone: the messages in it carry reset
/// links, which are credentials.
async fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await?;
    }
    Ok(())
}

/// Writes `contents` to a new file `path` that only this user can read.
async fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await?;
    file.write_all(contents).await?;
    file.flush().await
}

/// Resolves on Ctrl-C; the server then finishes the requests in flight and exits.
async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(%error, "cannot listen for Ctrl-C; stop the server another way");
        std::future::pending::<()>().await;
    }
    tracing::info!("shutting down");
}
