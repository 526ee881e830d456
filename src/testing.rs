//! A kit for testing an app's own handlers (feature `testing`): a user with a live session in
//! one call, and requests that carry it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use axum_live_auth::{AuthLayer, CurrentUser, require_permission, testing};
//! use tower::ServiceExt as _;
//!
//! let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
//! axum_live_auth::migrate(&pool).await?;
//! let auth = AuthLayer::builder(pool).allowed_origin("http://localhost").build()?;
//! let app: Router = Router::new()
//!     .route("/reports", get(|user: CurrentUser| async move { format!("hi {}", user.username()) }))
//!     .route_layer(require_permission("reports:read"))
//!     .layer(auth.clone());
//!
//! let alice = testing::signed_in(&auth, "alice", &["reports:read"]).await?;
//! let response = app.oneshot(alice.get("/reports")).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```

use axum::body::Body;
use http::{HeaderValue, Method, Request, header, request::Builder};

use crate::{AuthLayer, Error, SessionToken, UserId};

/// A user created for a test, with a live session.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// The user's id.
    pub id: UserId,
    /// The user's name.
    pub username: String,
    /// The user's password (random), for tests of a login form.
    pub password: String,
    token: SessionToken,
    cookie_name: String,
}

/// Creates `username` (with a random password) with the global `permissions`, and a session
/// for them, in the layer's database. For tests only: it skips the login route and its
/// throttling (the session's start is logged as a `login` event, as a login's is).
///
/// # Errors
///
/// As [`Accounts::create_user`](crate::Accounts::create_user) and
/// [`Accounts::grant_permission`](crate::Accounts::grant_permission).
pub async fn signed_in(
    layer: &AuthLayer,
    username: &str,
    permissions: &[&str],
) -> Result<TestUser, Error> {
    let accounts = layer.accounts();
    let password = SessionToken::generate()?.id().to_string();
    let id = accounts.create_user(username, &password).await?;
    for permission in permissions {
        accounts.grant_permission(id, permission).await?;
    }
    let token = layer.start_session_for_test(id).await?;
    Ok(TestUser {
        id,
        username: username.to_owned(),
        password,
        token,
        cookie_name: layer.cookie_name().to_owned(),
    })
}

impl TestUser {
    /// The session token, as a bearer client sends it.
    pub fn token(&self) -> String {
        self.token.to_string()
    }

    /// The `Cookie` header value that carries the session.
    pub fn cookie(&self) -> HeaderValue {
        header_value(format!("{}={}", self.cookie_name, self.token))
    }

    /// The `Authorization` header value for a bearer request (with
    /// [`bearer_tokens`](crate::AuthLayerBuilder::bearer_tokens) on).
    pub fn bearer(&self) -> HeaderValue {
        header_value(format!("Bearer {}", self.token))
    }

    /// A request builder with the session cookie and `Sec-Fetch-Site: same-origin` (as a
    /// browser sends on the app's own pages, so that unsafe methods pass the CSRF check).
    pub fn request(&self, method: Method, uri: &str) -> Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::COOKIE, self.cookie())
            .header("sec-fetch-site", "same-origin")
    }

    /// `GET uri` with the session.
    ///
    /// # Panics
    ///
    /// If `uri` does not parse.
    pub fn get(&self, uri: &str) -> Request<Body> {
        self.body(self.request(Method::GET, uri), Body::empty())
    }

    /// `POST uri` with the session and a form body (`a=1&b=2`).
    ///
    /// # Panics
    ///
    /// If `uri` does not parse.
    pub fn post_form(&self, uri: &str, form: &str) -> Request<Body> {
        let builder = self
            .request(Method::POST, uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        self.body(builder, Body::from(form.to_owned()))
    }

    /// Panics on a request that cannot be built (a URI that does not parse): a test that went
    /// on would check another request than the one it names.
    fn body(&self, builder: Builder, body: Body) -> Request<Body> {
        #[allow(clippy::expect_used)] // a test's mistake, shown where it is made
        builder
            .body(body)
            .expect("axum-live-auth testing: the request cannot be built")
    }
}

fn header_value(text: String) -> HeaderValue {
    // Cookie names were validated by the builder and tokens are base64url.
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static(""))
}
