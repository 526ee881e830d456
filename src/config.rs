//! The layer's configuration and its builder.

use std::{collections::HashSet, net::IpAddr, sync::Arc, time::Duration};

pub use tower_cookies::cookie::SameSite;

use crate::{
    AuthLayer, AuthStore, ConfigError,
    csrf::{Csrf, normalize_origin},
    layer::Shared,
    throttle::{InvalidTokens, LoginThrottle},
};

const DEFAULT_COOKIE_NAME: &str = "__Host-sid";
const DEV_COOKIE_NAME: &str = "sid";
const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);
const DEFAULT_ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
const MAX_TOUCH: Duration = Duration::from_secs(60 * 60);
const MAX_TIMEOUT: Duration = Duration::from_secs(400 * 24 * 60 * 60);
const DEFAULT_REAUTH_WINDOW: Duration = Duration::from_secs(15 * 60);
const DEFAULT_MAX_SESSIONS: u32 = 100;
const DEFAULT_INVALID_TOKENS: (u32, Duration) = (50, Duration::from_secs(5 * 60));

/// The validated configuration of an [`AuthLayer`].
#[derive(Debug, Clone)]
pub(crate) struct AuthConfig {
    pub(crate) cookie: CookieConfig,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    pub(crate) touch_interval: Duration,
    pub(crate) reauth_window: Duration,
    pub(crate) max_sessions_per_user: u32,
    pub(crate) login_redirect: Option<Arc<str>>,
    /// `None` when switched off with `dangerous_disable_csrf_protection`.
    pub(crate) csrf: Option<Csrf>,
    pub(crate) bearer: bool,
    pub(crate) trusted_proxies: Vec<IpAddr>,
    pub(crate) login_throttle: LoginThrottle,
}

/// Attributes of the session cookie.
#[derive(Debug, Clone)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
}

/// Builds an [`AuthLayer`]. Start with [`AuthLayer::builder`].
///
/// Every setting has a secure default; [`build`](Self::build) refuses combinations that browsers
/// would silently drop or that weaken the session cookie.
///
/// ```
/// use std::time::Duration;
/// use axum_live_auth::AuthLayer;
/// use sqlx::postgres::PgPoolOptions;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let pool = PgPoolOptions::new()
///     .test_before_acquire(false)
///     .connect_lazy("postgres://localhost/app")?;
/// let auth = AuthLayer::builder(pool)
///     .allowed_origin("https://app.example.com")
///     .idle_timeout(Duration::from_secs(15 * 60))
///     .absolute_timeout(Duration::from_secs(8 * 60 * 60))
///     .login_redirect("/login")
///     .build()?;
/// # let _ = auth;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use]
pub struct AuthLayerBuilder {
    store: AuthStore,
    cookie_name: Option<String>,
    domain: Option<String>,
    same_site: SameSite,
    idle_timeout: Duration,
    absolute_timeout: Duration,
    touch_interval: Option<Duration>,
    reauth_window: Duration,
    max_sessions_per_user: u32,
    purge_every: Option<Duration>,
    insecure_dev_mode: bool,
    login_redirect: Option<String>,
    allowed_origins: Vec<String>,
    allow_without_origin_headers: bool,
    csrf_exempt: Vec<String>,
    csrf_disabled: bool,
    bearer: bool,
    trusted_proxies: Vec<IpAddr>,
    login_throttle: LoginThrottle,
    invalid_tokens: (u32, Duration),
    #[cfg(feature = "postgres")]
    cache: Option<crate::CacheOptions>,
}

impl AuthLayerBuilder {
    pub(crate) fn new(store: AuthStore) -> Self {
        Self {
            store,
            cookie_name: None,
            domain: None,
            same_site: SameSite::Lax,
            idle_timeout: DEFAULT_IDLE,
            absolute_timeout: DEFAULT_ABSOLUTE,
            touch_interval: None,
            reauth_window: DEFAULT_REAUTH_WINDOW,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS,
            purge_every: None,
            insecure_dev_mode: false,
            login_redirect: None,
            allowed_origins: Vec::new(),
            allow_without_origin_headers: false,
            csrf_exempt: Vec::new(),
            csrf_disabled: false,
            bearer: false,
            trusted_proxies: Vec::new(),
            login_throttle: LoginThrottle::default(),
            invalid_tokens: DEFAULT_INVALID_TOKENS,
            #[cfg(feature = "postgres")]
            cache: None,
        }
    }

    /// The session cookie's name. Default `__Host-sid` (`sid` in
    /// [`insecure_dev_mode`](Self::insecure_dev_mode)).
    ///
    /// The `__Host-` prefix makes browsers insist on `Secure`, `Path=/` and no `Domain`, so a
    /// sibling subdomain cannot plant or overwrite the cookie. Keep it unless you need a Domain.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .cookie_name("__Host-app")
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = Some(name.into());
        self
    }

    /// Sends the cookie to subdomains of `domain` too. Default: none (this host only).
    ///
    /// Not allowed with a `__Host-` cookie name; pick another name, such as `__Secure-sid`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use axum_live_auth::{AuthLayer, ConfigError, Error};
    ///
    /// let refused = AuthLayer::builder(pool.clone())
    ///     .allowed_origin("https://app.example.com")
    ///     .domain("example.com")
    ///     .build();
    /// assert!(matches!(refused, Err(ConfigError::HostPrefixWithDomain)));
    ///
    /// let auth = AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .cookie_name("__Secure-sid")
    ///     .domain("example.com")
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// The cookie's `SameSite` attribute: `Lax` (default) or `Strict`. `None` is refused.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use axum_live_auth::{AuthLayer, SameSite};
    /// let auth = AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .same_site(SameSite::Strict)
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// A session unused for this long ends. Default 30 minutes.
    ///
    /// The deadline moves forward when the session is used, at most once per
    /// [`touch_interval`](Self::touch_interval), so the effective idle time may be shorter by up
    /// to one touch interval.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .idle_timeout(Duration::from_secs(5 * 60))
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// A session ends this long after login, however active. Default 12 hours. Never extended.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .absolute_timeout(Duration::from_secs(8 * 60 * 60))
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.absolute_timeout = timeout;
        self
    }

    /// How often, at most, a session's idle deadline is written back. Default
    /// `min(idle_timeout / 10, 1 hour)`; it must be shorter than the idle timeout.
    ///
    /// Requests in between make no write at all.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .touch_interval(Duration::from_secs(60))
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = Some(interval);
        self
    }

    /// How long after proving the password (login or
    /// [`Auth::reauthenticate`](crate::Auth::reauthenticate)) a session counts as recently
    /// authenticated for [`RecentAuth`](crate::RecentAuth). Default 15 minutes; it does not
    /// slide with activity.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .reauth_window(Duration::from_secs(5 * 60))
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn reauth_window(mut self, window: Duration) -> Self {
        self.reauth_window = window;
        self
    }

    /// The most sessions one user may have at once. Default 100. A login beyond it ends the
    /// user's least recently used sessions (a `session_revoked` event with reason
    /// `session_cap` for each).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .max_sessions_per_user(10)
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn max_sessions_per_user(mut self, max: u32) -> Self {
        self.max_sessions_per_user = max;
        self
    }

    /// Starts a background task that deletes expired sessions every `interval` (expired
    /// sessions are refused anyway; this keeps the table small). Default: no task; call
    /// [`Accounts::purge_expired_sessions`](crate::Accounts::purge_expired_sessions) yourself,
    /// or use it.
    ///
    /// The task logs a database error and tries again at the next interval; it never stops on
    /// an error. It stops when the layer and every router holding it are dropped, or when the
    /// runtime shuts down. [`build`](Self::build) must run inside a tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .purge_expired_every(Duration::from_secs(15 * 60))
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn purge_expired_every(mut self, interval: Duration) -> Self {
        self.purge_every = Some(interval);
        self
    }

    /// Adds an origin the app is served from, such as `https://app.example.com`. Required while
    /// CSRF protection is on (the default); call it once per origin.
    ///
    /// CSRF protection refuses, with `403` and before any handler or password check runs,
    /// every request with an unsafe method (anything but `GET`, `HEAD`, `OPTIONS`) or a
    /// WebSocket upgrade that a browser may have sent on another site's behalf: with
    /// `Sec-Fetch-Site` other than `same-origin` or `none`; or, without that header, with an
    /// `Origin` that is not exactly one of these (scheme, host and port); or with neither header
    /// (see [`allow_requests_without_origin_headers`](Self::allow_requests_without_origin_headers)).
    /// It guards the login route too (login CSRF). Requests that carry an
    /// `Authorization: Bearer` token are not checked: a browser never adds that header on its
    /// own, so another site cannot make one send it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .allowed_origin("https://admin.example.com")
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn allowed_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins.push(origin.into());
        self
    }

    /// Lets unsafe requests with neither `Sec-Fetch-Site` nor `Origin` through the CSRF check.
    /// Default: refused. Browsers send at least one of them on every cross-site request, so
    /// this only admits non-browser clients (and very old browsers); the checks on requests
    /// that do carry the headers are unchanged.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .allow_requests_without_origin_headers()
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn allow_requests_without_origin_headers(mut self) -> Self {
        self.allow_without_origin_headers = true;
        self
    }

    /// Exempts one exact path (such as a payment provider's webhook, which authenticates by
    /// its own signature) from the CSRF check. A request to it with the session cookie is still
    /// authenticated by it, so exempt only routes that do not act on the session's user.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .csrf_exempt("/webhooks/payments")
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn csrf_exempt(mut self, path: impl Into<String>) -> Self {
        self.csrf_exempt.push(path.into());
        self
    }

    /// # ⚠️ Insecure: no CSRF protection
    ///
    /// Turns the CSRF check off entirely: any site can then make a signed-in user's browser
    /// send forms to this app with their session. Only for apps that do their own CSRF
    /// protection.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .dangerous_disable_csrf_protection()
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn dangerous_disable_csrf_protection(mut self) -> Self {
        self.csrf_disabled = true;
        self
    }

    /// Also accepts the session token in an `Authorization: Bearer <token>` header, for clients
    /// that cannot keep cookies (mobile apps, command-line tools, SPAs on another domain). Same
    /// tokens, same table, same live permissions and revocation. Default: off. Issue tokens
    /// with [`token_routes`](crate::token_routes). A request whose cookie and bearer token
    /// disagree is refused with `400`; a token in a query string or form field is never read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .bearer_tokens()
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn bearer_tokens(mut self) -> Self {
        self.bearer = true;
        self
    }

    /// Reverse proxies whose `X-Forwarded-For` is believed. Default: none, so the client's
    /// address is the socket's peer (serve with `into_make_service_with_connect_info`) and a
    /// forged `X-Forwarded-For` is ignored. Behind trusted proxies the client is the nearest
    /// address in `X-Forwarded-For` that is not one of them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .trusted_proxies(["10.0.0.1".parse().unwrap()])
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        self.trusted_proxies.extend(proxies);
        self
    }

    /// Failed logins allowed from one client address within `window` before further attempts
    /// from it are answered `429` (with `Retry-After`, without checking any password) until
    /// the window ends. Default: 10 in 3 minutes. Independently, each username (known or not)
    /// gets 5 free failures in a row, then a wait doubling with each failure up to one hour,
    /// and after 100 in a row no attempt until its password is reset.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .login_failures_per_ip(20, Duration::from_secs(10 * 60))
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn login_failures_per_ip(mut self, failures: u32, window: Duration) -> Self {
        self.login_throttle.ip_failures = failures;
        self.login_throttle.ip_window = window;
        self
    }

    /// Invalid session tokens (unknown, expired, malformed) accepted from one client address
    /// within `window`; past that, requests carrying a token from it are answered `429` until
    /// the window ends, and an `invalid_tokens_throttled` event is logged. Counted per node.
    /// Default: 50 in 5 minutes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .invalid_token_limit(100, Duration::from_secs(60))
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn invalid_token_limit(mut self, tokens: u32, window: Duration) -> Self {
        self.invalid_tokens = (tokens, window);
        self
    }

    /// Keeps recently used principals (session, user, permissions, deadlines) in this node's
    /// memory, so that most requests need no database round trip. Off by default. Postgres
    /// store only; [`build`](Self::build) must run inside a tokio runtime.
    ///
    /// The cache stays as live as the database: triggers on every auth table notify each change
    /// that can make an entry wrong (a session ended, a user disabled, a grant or role changed,
    /// also by plain SQL), and each node's listener, on a connection of its own, evicts what
    /// the notification names. **Without the cache a change is enforced on the very next
    /// request; with it, within the notification delay** (a few milliseconds; see the README's
    /// revocation benchmark). When the listener's connection drops, the node empties its cache
    /// and reads the database on every request until it listens again, so notifications lost
    /// meanwhile can never leave a stale entry; entries older than
    /// [`max_age`](crate::CacheOptions::max_age) are read again regardless. Deadlines are
    /// still enforced on cached entries, and the idle deadline is still written back once per
    /// touch interval.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use axum_live_auth::CacheOptions;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .principal_cache(CacheOptions::default())
    ///     .build()?;
    /// assert!(auth.cache_status().is_some());
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn principal_cache(mut self, options: crate::CacheOptions) -> Self {
        self.cache = Some(options);
        self
    }

    /// # ⚠️ Insecure: session cookies over plain HTTP
    ///
    /// Drops the cookie's `Secure` attribute (and, unless a name was set, uses `sid` instead of
    /// `__Host-sid`), so that browsers send the session over unencrypted HTTP, where anyone on
    /// the network can read and reuse it. Only for local development over plain http on a host
    /// other than `localhost`, or for Safari, which unlike Chrome, Firefox and curl does not
    /// send `Secure` cookies to `http://localhost`. Logs a warning each time a layer is built
    /// with it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .insecure_dev_mode()
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn insecure_dev_mode(mut self) -> Self {
        self.insecure_dev_mode = true;
        self
    }

    /// Where to send unauthenticated browser page requests (a `GET` or `HEAD` that accepts
    /// `text/html`): `303 See Other` to this local path instead of `401`. Default: none.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .login_redirect("/login")
    ///     .build()?;
    /// # let _ = auth; Ok(())
    /// # }
    /// ```
    pub fn login_redirect(mut self, path: impl Into<String>) -> Self {
        self.login_redirect = Some(path.into());
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a combination browsers would drop (a `__Host-` name with a domain
    /// or without `Secure`), `SameSite=None`, an invalid name, domain or redirect, or timeouts
    /// that cannot work together.
    pub fn build(self) -> Result<AuthLayer, ConfigError> {
        let csrf = if self.csrf_disabled {
            tracing::warn!(
                "axum-live-auth: CSRF protection is off (dangerous_disable_csrf_protection)"
            );
            None
        } else {
            Some(self.csrf()?)
        };
        let secure = !self.insecure_dev_mode;
        let default_name = if secure {
            DEFAULT_COOKIE_NAME
        } else {
            DEV_COOKIE_NAME
        };
        let name = self.cookie_name.unwrap_or_else(|| default_name.to_owned());
        validate_cookie(&name, self.domain.as_deref(), secure, self.same_site)?;

        for (what, value) in [
            ("idle_timeout", self.idle_timeout),
            ("absolute_timeout", self.absolute_timeout),
            ("reauth_window", self.reauth_window),
        ] {
            if value < Duration::from_secs(1) || value > MAX_TIMEOUT {
                return Err(ConfigError::InvalidTimeout(what));
            }
        }
        let touch_interval = self
            .touch_interval
            .unwrap_or_else(|| (self.idle_timeout / 10).min(MAX_TOUCH));
        if touch_interval >= self.idle_timeout {
            return Err(ConfigError::TouchIntervalTooLong);
        }
        if self.max_sessions_per_user == 0 {
            return Err(ConfigError::InvalidSessionCap);
        }
        let runtime = match self.purge_every {
            Some(interval) if interval.is_zero() => {
                return Err(ConfigError::InvalidTimeout("purge_expired_every"));
            }
            Some(_) => {
                let runtime = tokio::runtime::Handle::try_current();
                Some(runtime.map_err(|_| ConfigError::NoRuntime)?)
            }
            None => None,
        };
        let login_redirect = self.login_redirect.map(validate_redirect).transpose()?;
        for (what, value) in [
            ("login_failures_per_ip", self.login_throttle.ip_window),
            ("invalid_token_limit", self.invalid_tokens.1),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                return Err(ConfigError::InvalidTimeout(what));
            }
        }

        if !secure {
            tracing::warn!(
                cookie = %name,
                "axum-live-auth: insecure_dev_mode is on: the session cookie is sent over plain \
                 HTTP without the Secure attribute; never use this in production"
            );
        }
        if self.store.pings_on_checkout() {
            tracing::warn!(
                "axum-live-auth: the pool pings each connection on checkout \
                 (test_before_acquire), which adds a database round trip to every \
                 authenticated request; build it with PgPoolOptions::test_before_acquire(false)"
            );
        }

        let config = AuthConfig {
            cookie: CookieConfig {
                name,
                domain: self.domain,
                secure,
                same_site: self.same_site,
            },
            idle_timeout: self.idle_timeout,
            absolute_timeout: self.absolute_timeout,
            touch_interval,
            reauth_window: self.reauth_window,
            max_sessions_per_user: self.max_sessions_per_user,
            login_redirect,
            csrf,
            bearer: self.bearer,
            trusted_proxies: self.trusted_proxies,
            login_throttle: self.login_throttle,
        };
        let (tokens, window) = self.invalid_tokens;
        #[cfg(feature = "postgres")]
        let cache = match self.cache {
            Some(options) => {
                let pool = self
                    .store
                    .postgres_pool()
                    .ok_or(ConfigError::CacheNeedsPostgres)?;
                let runtime =
                    tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
                let cache = Arc::new(crate::cache::PrincipalCache::new(options));
                crate::cache::spawn_listener(&runtime, &cache, pool);
                Some(cache)
            }
            None => None,
        };
        let layer = AuthLayer::from_shared(Shared {
            config,
            store: self.store,
            invalid_tokens: InvalidTokens::new(tokens, window),
            #[cfg(feature = "postgres")]
            cache,
        });
        if let (Some(interval), Some(runtime)) = (self.purge_every, runtime) {
            layer.spawn_purge_task(&runtime, interval);
        }
        Ok(layer)
    }
}

impl AuthLayerBuilder {
    fn csrf(&self) -> Result<Csrf, ConfigError> {
        if self.allowed_origins.is_empty() {
            return Err(ConfigError::NoAllowedOrigins);
        }
        let origins = self
            .allowed_origins
            .iter()
            .map(|o| normalize_origin(o))
            .collect::<Result<HashSet<_>, _>>()?;
        for path in &self.csrf_exempt {
            if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(ConfigError::InvalidExemption(path.clone()));
            }
        }
        let exempt = self.csrf_exempt.iter().cloned().collect();
        Ok(Csrf::new(
            origins,
            self.allow_without_origin_headers,
            exempt,
        ))
    }
}

fn validate_cookie(
    name: &str,
    domain: Option<&str>,
    secure: bool,
    same_site: SameSite,
) -> Result<(), ConfigError> {
    // RFC 6265 cookie-name is an RFC 7230 token.
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(ConfigError::InvalidCookieName(name.to_owned()));
    }
    // Browsers match the prefixes case-insensitively.
    let lower = name.to_ascii_lowercase();
    let host_prefix = lower.starts_with("__host-");
    if (host_prefix || lower.starts_with("__secure-")) && !secure {
        return Err(ConfigError::PrefixWithoutSecure);
    }
    if let Some(domain) = domain {
        if host_prefix {
            return Err(ConfigError::HostPrefixWithDomain);
        }
        let valid = !domain.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !domain.starts_with('.')
            && !domain.ends_with('.');
        if !valid {
            return Err(ConfigError::InvalidDomain(domain.to_owned()));
        }
    }
    if same_site == SameSite::None {
        return Err(ConfigError::SameSiteNone);
    }
    Ok(())
}

/// Only local paths: `/login` is fine; `//evil.example`, `https://…` and `/\evil` are open
/// redirects and are refused.
fn validate_redirect(path: String) -> Result<Arc<str>, ConfigError> {
    let bytes = path.as_bytes();
    let local = bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && bytes.iter().all(|b| b.is_ascii_graphic());
    if local {
        Ok(path.into())
    } else {
        Err(ConfigError::InvalidRedirect(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> AuthStore {
        sqlx::PgPool::connect_lazy("postgres://127.0.0.1:1/none")
            .unwrap()
            .into()
    }

    /// A builder with the one setting that has no default: the app's origin.
    fn builder() -> AuthLayerBuilder {
        AuthLayerBuilder::new(pool()).allowed_origin("https://app.example.com")
    }

    #[tokio::test]
    async fn defaults_are_the_secure_ones() {
        let layer = builder().build().unwrap();
        let config = &layer.shared().config;
        assert_eq!(config.cookie.name, "__Host-sid");
        assert!(config.cookie.secure);
        assert_eq!(config.cookie.same_site, SameSite::Lax);
        assert!(config.cookie.domain.is_none());
        assert_eq!(config.idle_timeout, Duration::from_secs(1800));
        assert_eq!(config.absolute_timeout, Duration::from_secs(43200));
        assert_eq!(config.touch_interval, Duration::from_secs(180));
        assert!(config.login_redirect.is_none());
    }

    #[tokio::test]
    async fn touch_interval_default_is_capped_at_one_hour() {
        let day = Duration::from_secs(86_400);
        let layer = builder()
            .idle_timeout(day)
            .absolute_timeout(day * 30)
            .build()
            .unwrap();
        assert_eq!(layer.shared().config.touch_interval, MAX_TOUCH);
    }

    #[tokio::test]
    async fn refuses_what_browsers_would_drop() {
        let err = |b: AuthLayerBuilder| b.build().unwrap_err();
        let b = || builder();
        assert_eq!(
            err(b().domain("example.com")),
            ConfigError::HostPrefixWithDomain
        );
        assert_eq!(
            err(b().cookie_name("__host-x").domain("example.com")),
            ConfigError::HostPrefixWithDomain
        );
        assert_eq!(
            err(b().cookie_name("__Host-sid").insecure_dev_mode()),
            ConfigError::PrefixWithoutSecure
        );
        assert_eq!(
            err(b().cookie_name("__Secure-sid").insecure_dev_mode()),
            ConfigError::PrefixWithoutSecure
        );
        assert_eq!(
            err(b().same_site(SameSite::None)),
            ConfigError::SameSiteNone
        );
        assert!(matches!(
            err(b().cookie_name("a b")),
            ConfigError::InvalidCookieName(_)
        ));
        assert!(matches!(
            err(b().cookie_name("")),
            ConfigError::InvalidCookieName(_)
        ));
        assert!(matches!(
            err(b().cookie_name("sid").domain("a;b")),
            ConfigError::InvalidDomain(_)
        ));
    }

    #[tokio::test]
    async fn dev_mode_drops_secure_and_the_prefix() {
        let layer = builder().insecure_dev_mode().build().unwrap();
        assert_eq!(layer.shared().config.cookie.name, "sid");
        assert!(!layer.shared().config.cookie.secure);
    }

    #[tokio::test]
    async fn refuses_timeouts_that_cannot_work() {
        let b = || builder();
        let second = Duration::from_secs(1);
        assert_eq!(
            b().idle_timeout(Duration::ZERO).build().unwrap_err(),
            ConfigError::InvalidTimeout("idle_timeout")
        );
        assert_eq!(
            b().absolute_timeout(MAX_TIMEOUT + second)
                .build()
                .unwrap_err(),
            ConfigError::InvalidTimeout("absolute_timeout")
        );
        assert_eq!(
            b().touch_interval(DEFAULT_IDLE).build().unwrap_err(),
            ConfigError::TouchIntervalTooLong
        );
    }

    #[test]
    fn the_purge_task_needs_a_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = runtime.block_on(async { pool() });
        let builder = AuthLayerBuilder::new(store)
            .allowed_origin("https://app.example.com")
            .purge_expired_every(Duration::from_secs(60));
        assert_eq!(builder.build().unwrap_err(), ConfigError::NoRuntime);
    }

    #[tokio::test]
    async fn refuses_a_zero_session_cap_and_purge_interval() {
        let b = || builder();
        assert_eq!(
            b().max_sessions_per_user(0).build().unwrap_err(),
            ConfigError::InvalidSessionCap
        );
        assert_eq!(
            b().purge_expired_every(Duration::ZERO).build().unwrap_err(),
            ConfigError::InvalidTimeout("purge_expired_every")
        );
        assert_eq!(
            b().reauth_window(Duration::ZERO).build().unwrap_err(),
            ConfigError::InvalidTimeout("reauth_window")
        );
    }

    #[tokio::test]
    async fn csrf_protection_needs_origins_and_takes_only_valid_ones() {
        let bare = || AuthLayerBuilder::new(pool());
        assert_eq!(bare().build().unwrap_err(), ConfigError::NoAllowedOrigins);
        assert!(matches!(
            bare().allowed_origin("app.example.com").build(),
            Err(ConfigError::InvalidOrigin(_))
        ));
        assert!(matches!(
            builder().csrf_exempt("webhooks").build(),
            Err(ConfigError::InvalidExemption(_))
        ));
        let layer = bare().dangerous_disable_csrf_protection().build().unwrap();
        assert!(layer.shared().config.csrf.is_none());
        assert!(builder().shared_csrf_is_on());
    }

    impl AuthLayerBuilder {
        fn shared_csrf_is_on(self) -> bool {
            self.build().unwrap().shared().config.csrf.is_some()
        }
    }

    #[tokio::test]
    async fn refuses_open_redirects() {
        for bad in [
            "login",
            "//evil.example",
            "/\\evil",
            "https://evil.example",
            "/a b",
            "",
        ] {
            assert!(
                matches!(
                    builder().login_redirect(bad).build(),
                    Err(ConfigError::InvalidRedirect(_))
                ),
                "{bad}"
            );
        }
        assert!(builder().login_redirect("/login?next=1").build().is_ok());
    }
}
