//! An app as an adopter writes it, from the README's "Use it in your app": its own `projects`
//! table and migration beside the crate's, state wiring with `FromRef`, sign-up, a login form,
//! logout, JSON routes guarded by a permission, an admin route that grants, account recovery;
//! and tests of its own handlers with the testing kit (`cargo test --example adopter`).
//!
//! ```text
//! cargo run --example adopter            # SQLite in adopter.db
//! ```
//!
//! The README quotes the parts between `// README: <name>` and `// README: end` lines; a test
//! checks that they are the same, so the README's snippets cannot rot.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Form, Json, Router,
    extract::{FromRef, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_live_auth::{
    Accounts, Auth, AuthLayer, AuthRejection, CurrentUser, Error, Message, Messenger,
    MessengerError, RecentAuth, require_permission, sqlx,
};
use serde::{Deserialize, Serialize};
use sqlx::{SqlitePool, sqlite::SqlitePoolOptions};

// README: state
/// What every handler can ask for: the app's own pool, and the crate's accounts.
#[derive(Clone)]
struct AppState {
    db: SqlitePool,
    accounts: Accounts,
}

// `State<Accounts>` in a handler reads the accounts out of the app's state.
impl FromRef<AppState> for Accounts {
    fn from_ref(state: &AppState) -> Self {
        state.accounts.clone()
    }
}
// README: end

// README: setup
/// The app's router on `pool`: the crate's tables and the app's own in one database. Reset and
/// verification links go to `messenger` (the app's mailer; the tests' own collects them).
async fn build(
    pool: SqlitePool,
    messenger: impl Messenger,
) -> Result<(Router, AuthLayer), Box<dyn std::error::Error>> {
    // The crate's migrations keep their own bookkeeping table: both migrators can run.
    axum_live_auth::migrate(&pool).await?;
    // The app's own migrations (in your crate, usually `sqlx::migrate!()`, from `migrations/`).
    sqlx::migrate!("examples/adopter_migrations")
        .run(&pool)
        .await?;

    let auth = AuthLayer::builder(pool.clone())
        // The site's origin: links in messages start with it. In production, `https://…`.
        .allowed_origin("http://localhost:3000")
        .login_redirect("/login")
        .messenger(messenger)
        // Expired sessions and old throttle counters go (in `background()`), not pile up.
        .purge_expired_every(Duration::from_secs(15 * 60))
        .build()?;
    let state = AppState {
        db: pool,
        accounts: auth.accounts(),
    };
    let projects = Router::new()
        .route("/projects", get(list_projects).post(create_project))
        .route_layer(require_permission("projects:read"));
    let admin = Router::new()
        .route("/admin/grant", post(grant))
        .route_layer(require_permission("admin"));
    let router = Router::new()
        .route("/signup", post(signup))
        .route("/login", get(login_page).post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .merge(projects)
        .merge(admin)
        .nest("/account", axum_live_auth::account_routes())
        .with_state(state)
        .layer(auth.clone());
    Ok((router, auth))
}
// README: end

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = axum_live_auth::sqlite_connect_options("sqlite://adopter.db")?;
    let pool = SqlitePoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options)
        .await?;
    let (app, auth) = build(pool, Stdout).await?;
    tokio::spawn(auth.background());
    // README: serve
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    // With connect info the per-address login limits know each client's address.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    // README: end
    Ok(())
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

// README: signup
/// Self-service sign-up: creates the user and logs them in, throttled per client address (each
/// answer tells whether a name is taken). An admin page that creates users for others calls
/// `Accounts::create_user`: logging in there would end the admin's own session.
async fn signup(auth: Auth, Form(form): Form<Credentials>) -> Result<Redirect, Error> {
    auth.sign_up(&form.username, &form.password).await?;
    Ok(Redirect::to("/me"))
}

/// The login form: where `login_redirect` sends a browser that is not signed in, and where
/// logout and a completed password reset land.
async fn login_page() -> Html<&'static str> {
    Html(
        r#"<!doctype html><title>Log in</title>
<form method="post" action="/login">
<input name="username" autocomplete="username" required>
<input name="password" type="password" autocomplete="current-password" required>
<button>Log in</button>
</form>"#,
    )
}

/// `None` for a wrong password, an unknown and a disabled user alike.
async fn login(auth: Auth, Form(form): Form<Credentials>) -> Result<Response, Error> {
    Ok(
        match auth
            .login_with_password(&form.username, &form.password)
            .await?
        {
            Some(_) => Redirect::to("/me").into_response(),
            None => AuthRejection::Unauthenticated.into_response(),
        },
    )
}

async fn logout(auth: Auth) -> Result<Redirect, Error> {
    auth.logout().await?;
    Ok(Redirect::to("/login"))
}

/// Where sign-up and login land: any signed-in user may see it. The project pages need
/// `projects:read`, which a new user holds only once an admin grants it.
async fn me(user: CurrentUser) -> String {
    format!("Signed in as {}\n", user.username())
}
// README: end

#[derive(Serialize, sqlx::FromRow)]
struct Project {
    id: i64,
    name: String,
}

#[derive(Deserialize)]
struct NewProject {
    name: String,
}

// README: handlers
/// The app's own table, for a user with `projects:read` (the route guard checked it).
async fn list_projects(State(state): State<AppState>) -> Result<Json<Vec<Project>>, StatusCode> {
    sqlx::query_as("SELECT id, name FROM projects ORDER BY id")
        .fetch_all(&state.db)
        .await
        .map(Json)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}

/// Writing needs `projects:write` too, checked in the handler with the live permissions.
async fn create_project(
    State(state): State<AppState>,
    user: CurrentUser,
    Form(form): Form<NewProject>,
) -> Result<StatusCode, Response> {
    user.require("projects:write")
        .map_err(IntoResponse::into_response)?;
    sqlx::query("INSERT INTO projects (name, owner) VALUES ($1, $2)")
        .bind(&form.name)
        .bind(user.id())
        .execute(&state.db)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())?;
    Ok(StatusCode::CREATED)
}
// README: end

// README: grant
#[derive(Deserialize)]
struct Grant {
    username: String,
    permission: String,
}

/// An admin grants a permission; the user has it on their very next request. Giving access
/// needs the admin's password proven recently (`RecentAuth`): a stolen admin session alone
/// cannot hand it out.
async fn grant(
    _: RecentAuth,
    State(accounts): State<Accounts>,
    Form(form): Form<Grant>,
) -> Result<StatusCode, Error> {
    let user = accounts
        .user_id(&form.username)
        .await?
        .ok_or(Error::UserNotFound)?;
    accounts.grant_permission(user, &form.permission).await?;
    Ok(StatusCode::NO_CONTENT)
}
// README: end

// README: messenger
/// Where password-reset and email-verification links go. A real app hands them to its mailer;
/// this one prints the recipient (never the link: it is a credential).
struct Stdout;

impl Messenger for Stdout {
    async fn send(&self, message: Message) -> Result<(), MessengerError> {
        println!("a {:?} message for {}", message.kind, message.username);
        Ok(())
    }
}
// README: end

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    // README: testing
    use axum::{body::Body, http::Request};
    use axum_live_auth::testing;
    use tower::ServiceExt as _;

    use super::*;

    async fn app() -> (Router, AuthLayer) {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        build(pool, Stdout).await.unwrap()
    }

    #[tokio::test]
    async fn a_reader_lists_projects_and_cannot_create_one() {
        let (app, auth) = app().await;
        let bob = testing::signed_in(&auth, "bob", &["projects:read"])
            .await
            .unwrap();

        let listed = app.clone().oneshot(bob.get("/projects")).await.unwrap();
        assert_eq!(listed.status(), StatusCode::OK);
        let created = app
            .oneshot(bob.post_form("/projects", "name=Bridge"))
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_writer_creates_one_and_an_anonymous_request_is_401() {
        let (app, auth) = app().await;
        let alice = testing::signed_in(&auth, "alice", &["projects:read", "projects:write"])
            .await
            .unwrap();
        let created = app
            .clone()
            .oneshot(alice.post_form("/projects", "name=Bridge"))
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let anonymous = Request::get("/projects").body(Body::empty()).unwrap();
        let refused = app.oneshot(anonymous).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    // README: end

    /// A browser that is not signed in is sent to the login form, which is there.
    #[tokio::test]
    async fn a_page_request_without_a_session_lands_on_the_login_form() {
        let (app, _) = app().await;
        let page = Request::get("/projects")
            .header("accept", "text/html")
            .body(Body::empty())
            .unwrap();
        let sent = app.clone().oneshot(page).await.unwrap();
        assert_eq!(sent.status(), StatusCode::SEE_OTHER);
        assert_eq!(sent.headers()["location"], "/login");
        let form = Request::get("/login").body(Body::empty()).unwrap();
        assert_eq!(app.oneshot(form).await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_grant_by_an_admin_is_live_on_the_next_request() {
        let (app, auth) = app().await;
        let admin = testing::signed_in(&auth, "root", &["admin"]).await.unwrap();
        let carol = testing::signed_in(&auth, "carol", &[]).await.unwrap();
        let before = app.clone().oneshot(carol.get("/projects")).await.unwrap();
        assert_eq!(before.status(), StatusCode::FORBIDDEN);
        let form = "username=carol&permission=projects:read";
        let granted = app
            .clone()
            .oneshot(admin.post_form("/admin/grant", form))
            .await
            .unwrap();
        assert_eq!(granted.status(), StatusCode::NO_CONTENT);
        let after = app.oneshot(carol.get("/projects")).await.unwrap();
        assert_eq!(after.status(), StatusCode::OK);
    }

    /// A sign-up form post from the app's own page, as `name` with the password `name-password`.
    fn signup(name: &str) -> Request<Body> {
        Request::post("/signup")
            .header("origin", "http://localhost:3000")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "username={name}&password={name}-password"
            )))
            .unwrap()
    }

    #[tokio::test]
    async fn sign_up_logs_the_new_user_in_without_touching_other_sessions() {
        let (app, auth) = app().await;
        let admin = testing::signed_in(&auth, "root", &["admin"]).await.unwrap();
        let reply = app.clone().oneshot(signup("dave")).await.unwrap();
        assert_eq!(reply.status(), StatusCode::SEE_OTHER);
        assert!(reply.headers().contains_key("set-cookie"));
        let still = app.oneshot(admin.get("/account/sessions")).await.unwrap();
        assert_eq!(
            still.status(),
            StatusCode::OK,
            "the admin's session is untouched"
        );
    }

    /// A new user lands on a page they may see, not on a `403`: they hold no permission yet.
    /// (Before: sign-up and login sent them to `/projects`, which needs `projects:read`.)
    #[tokio::test]
    async fn a_new_user_lands_on_a_page_they_may_see() {
        let (app, _) = app().await;
        let reply = app.clone().oneshot(signup("erin")).await.unwrap();
        let cookie = reply.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let landing = reply.headers()["location"].to_str().unwrap().to_owned();
        let page = Request::get(landing)
            .header("cookie", cookie)
            .body(Body::empty());
        let page = app.oneshot(page.unwrap()).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
    }

    /// Collects the app's messages, links included, for a test to follow.
    struct Collect(tokio::sync::mpsc::UnboundedSender<Message>);

    impl Messenger for Collect {
        async fn send(&self, message: Message) -> Result<(), MessengerError> {
            self.0
                .send(message)
                .map_err(|_| "the test stopped listening")?;
            Ok(())
        }
    }

    /// The app on a fresh database, with its pool and the messages it sends.
    async fn app_with_messages() -> (
        Router,
        AuthLayer,
        SqlitePool,
        tokio::sync::mpsc::UnboundedReceiver<Message>,
    ) {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let (sent, received) = tokio::sync::mpsc::unbounded_channel();
        let (app, auth) = build(pool.clone(), Collect(sent)).await.unwrap();
        (app, auth, pool, received)
    }

    /// The next message's token (its link's `token` parameter), waiting at most 5 s.
    async fn next_token(messages: &mut tokio::sync::mpsc::UnboundedReceiver<Message>) -> String {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.recv())
            .await
            .expect("a message within 5 s")
            .unwrap();
        let (_, token) = message.link.split_once("token=").unwrap();
        token.to_owned()
    }

    /// A form post from the app's own page, without a session.
    fn form(uri: &str, body: &str) -> Request<Body> {
        Request::post(uri)
            .header("origin", "http://localhost:3000")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    /// Only an admin grants, and only with their password proven in the last 15 minutes: a
    /// user cannot make themself admin, and a stolen admin session alone cannot either.
    #[tokio::test]
    async fn a_grant_needs_an_admin_who_proved_their_password_recently() {
        let (app, auth, pool, _) = app_with_messages().await;
        let carol = testing::signed_in(&auth, "carol", &[]).await.unwrap();
        let own = carol.post_form("/admin/grant", "username=carol&permission=admin");
        let own = app.clone().oneshot(own).await.unwrap();
        assert_eq!(own.status(), StatusCode::FORBIDDEN);

        let admin = testing::signed_in(&auth, "root", &["admin"]).await.unwrap();
        sqlx::query(
            "UPDATE auth_sessions SET authenticated_at = authenticated_at - 16 * 60 * 1000",
        )
        .execute(&pool)
        .await
        .unwrap();
        let form = "username=carol&permission=projects:read";
        let stale = app
            .clone()
            .oneshot(admin.post_form("/admin/grant", form))
            .await
            .unwrap();
        assert_eq!(stale.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(stale.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"error":"reauth_required"}"#);
        let after = app.oneshot(carol.get("/projects")).await.unwrap();
        assert_eq!(
            after.status(),
            StatusCode::FORBIDDEN,
            "carol was granted nothing"
        );
    }

    /// The login form starts a session only for the right password; logout ends it; a ban
    /// ends a session on its next request.
    #[tokio::test]
    async fn login_logout_and_a_ban_take_effect_at_once() {
        let (app, auth, _, _) = app_with_messages().await;
        let bob = testing::signed_in(&auth, "bob", &[]).await.unwrap();
        let wrong = app
            .clone()
            .oneshot(form("/login", "username=bob&password=wrong-password"));
        let wrong = wrong.await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert!(!wrong.headers().contains_key("set-cookie"));
        let right = format!("username=bob&password={}", bob.password);
        let right = app.clone().oneshot(form("/login", &right)).await.unwrap();
        assert_eq!(right.status(), StatusCode::SEE_OTHER);
        assert_eq!(right.headers()["location"], "/me");
        let cookie = right.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let me = |cookie: &str| {
            let request = Request::get("/me").header("cookie", cookie);
            app.clone().oneshot(request.body(Body::empty()).unwrap())
        };
        assert_eq!(me(&cookie).await.unwrap().status(), StatusCode::OK);

        let out = app
            .clone()
            .oneshot(bob.post_form("/logout", ""))
            .await
            .unwrap();
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        assert_eq!(out.headers()["location"], "/login");
        let ended = app.clone().oneshot(bob.get("/me")).await.unwrap();
        assert_eq!(ended.status(), StatusCode::UNAUTHORIZED);

        auth.accounts().disable_user(bob.id).await.unwrap();
        assert_eq!(
            me(&cookie).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }

    /// Account recovery as a user meets it: they add an address and confirm it from the mail,
    /// later ask for a reset by that address and set a new password from the mail; every
    /// session ends, and the new password logs them in.
    #[tokio::test]
    async fn a_user_adds_an_address_and_resets_their_password() {
        let (app, auth, _, mut messages) = app_with_messages().await;
        let bob = testing::signed_in(&auth, "bob", &[]).await.unwrap();
        let asked = bob.post_form("/account/email", "email=bob%40example.com");
        assert_eq!(
            app.clone().oneshot(asked).await.unwrap().status(),
            StatusCode::ACCEPTED
        );
        let token = next_token(&mut messages).await;
        let verify = bob.post_form("/account/email/verify", &format!("token={token}"));
        let verified = app.clone().oneshot(verify).await.unwrap();
        assert!(verified.status().is_success(), "{}", verified.status());

        let reset = form("/account/password-reset", "username=bob%40example.com");
        assert_eq!(
            app.clone().oneshot(reset).await.unwrap().status(),
            StatusCode::ACCEPTED
        );
        let token = next_token(&mut messages).await;
        let confirm = format!("token={token}&new_password=a-new-password");
        let confirmed = app
            .clone()
            .oneshot(form("/account/password-reset/confirm", &confirm));
        let confirmed = confirmed.await.unwrap();
        assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
        assert_eq!(confirmed.headers()["location"], "/login");

        let ended = app.clone().oneshot(bob.get("/me")).await.unwrap();
        assert_eq!(ended.status(), StatusCode::UNAUTHORIZED);
        let old = format!("username=bob&password={}", bob.password);
        let old = app.clone().oneshot(form("/login", &old)).await.unwrap();
        assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
        let new = form("/login", "username=bob&password=a-new-password");
        assert_eq!(
            app.oneshot(new).await.unwrap().status(),
            StatusCode::SEE_OTHER
        );
    }
}
