//! The layer's configuration: the builder's setters, and their validation into the
//! [`AuthConfig`] every request reads. Nothing here starts a task or touches the database.

use std::{collections::HashSet, net::IpAddr, sync::Arc, time::Duration};

pub use tower_cookies::cookie::SameSite;

use crate::{
    AuthStore, CacheOptions, ConfigError, Messenger, StoreKind,
    csrf::{Csrf, link_base, normalize_origin, plain_http_elsewhere},
    events::StreamLimits,
    recovery::Recovery,
    store::ThrottleLimits,
};

const MAX_TOUCH: Duration = Duration::from_secs(60 * 60);
const MAX_TIMEOUT: Duration = Duration::from_secs(400 * 24 * 60 * 60);
/// The most password hashes at once, and waiting, that [`AuthLayerBuilder::password_hashing`]
/// takes: far beyond any machine, within what a semaphore can count.
const MAX_HASHES: usize = 1 << 16;
const MAX_HASH_QUEUE: usize = 1 << 20;

/// The validated configuration of an [`AuthLayer`](crate::AuthLayer).
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
    pub(crate) ipv6_prefix: u8,
    pub(crate) login: ThrottleLimits,
    pub(crate) invalid_token_alert: (u32, Duration),
    /// Password hashes at once and waiting; `None` for the machine's defaults.
    pub(crate) hashing: Option<(usize, usize)>,
    pub(crate) lookup_timeout: Duration,
    pub(crate) lookup_connections: usize,
    pub(crate) private_responses: bool,
    pub(crate) clear_site_data: bool,
    pub(crate) streams: StreamSettings,
    pub(crate) cache: Option<CacheOptions>,
    pub(crate) purge_every: Option<Duration>,
    #[cfg(feature = "postgres")]
    pub(crate) listen_pool: Option<sqlx::PgPool>,
    pub(crate) recovery: Recovery,
}

/// Attributes of the session cookie.
#[derive(Debug, Clone)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamSettings {
    pub(crate) heartbeat: Duration,
    pub(crate) limits: StreamLimits,
}

impl Default for AuthConfig {
    /// The secure defaults, before validation.
    fn default() -> Self {
        Self {
            cookie: CookieConfig {
                name: String::new(),
                domain: None,
                secure: true,
                same_site: SameSite::Lax,
            },
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 60 * 60),
            touch_interval: Duration::ZERO,
            reauth_window: Duration::from_secs(15 * 60),
            max_sessions_per_user: 100,
            login_redirect: None,
            csrf: None,
            bearer: false,
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
            login: ThrottleLimits {
                ip_failures: 10,
                ip_window: Duration::from_secs(3 * 60),
                user_free_failures: 5,
                user_base_wait: Duration::from_secs(1),
                user_max_wait: Duration::from_secs(15 * 60),
            },
            invalid_token_alert: (50, Duration::from_secs(5 * 60)),
            hashing: None,
            lookup_timeout: Duration::from_secs(2),
            lookup_connections: 4,
            private_responses: true,
            clear_site_data: true,
            streams: StreamSettings {
                heartbeat: Duration::from_secs(15),
                limits: StreamLimits {
                    per_session: 8,
                    per_user: 32,
                    per_node: 10_000,
                },
            },
            cache: None,
            purge_every: None,
            #[cfg(feature = "postgres")]
            listen_pool: None,
            recovery: Recovery::default(),
        }
    }
}

/// Builds an [`AuthLayer`](crate::AuthLayer). Start with
/// [`AuthLayer::builder`](crate::AuthLayer::builder).
///
/// Every setting has a secure default; [`build`](Self::build) refuses combinations that browsers
/// would silently drop or that weaken the session cookie. Switches take a `bool`, so they can be
/// driven from configuration.
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
/// # let _ = auth; Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct AuthLayerBuilder {
    store: AuthStore,
    config: AuthConfig,
    cookie_name: Option<String>,
    touch_interval: Option<Duration>,
    insecure_dev_mode: bool,
    login_redirect: Option<String>,
    allowed_origins: Vec<String>,
    allow_without_origin_headers: bool,
    csrf_exempt: Vec<String>,
    csrf_disabled: bool,
}

impl AuthLayerBuilder {
    pub(crate) fn new(store: AuthStore) -> Self {
        Self {
            store,
            config: AuthConfig::default(),
            cookie_name: None,
            touch_interval: None,
            insecure_dev_mode: false,
            login_redirect: None,
            allowed_origins: Vec::new(),
            allow_without_origin_headers: false,
            csrf_exempt: Vec::new(),
            csrf_disabled: false,
        }
    }

    /// Applies one setting and hands the builder back: what most setters do.
    fn with(mut self, set: impl FnOnce(&mut Self)) -> Self {
        set(&mut self);
        self
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn cookie_name(self, name: impl Into<String>) -> Self {
        self.with(|b| b.cookie_name = Some(name.into()))
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn domain(self, domain: impl Into<String>) -> Self {
        self.with(|b| b.config.cookie.domain = Some(domain.into()))
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn same_site(self, same_site: SameSite) -> Self {
        self.with(|b| b.config.cookie.same_site = same_site)
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn idle_timeout(self, timeout: Duration) -> Self {
        self.with(|b| b.config.idle_timeout = timeout)
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn absolute_timeout(self, timeout: Duration) -> Self {
        self.with(|b| b.config.absolute_timeout = timeout)
    }

    /// How often, at most, a session's idle deadline is written back; requests in between make
    /// no write. At least 1 ms and shorter than the idle timeout; default
    /// `min(idle_timeout / 10, 1 hour)`. It is also how long after a
    /// [rotation](crate::Auth::rotate) a request still carrying the replaced token (sent before
    /// the new cookie arrived) is told apart from an unknown token, and its cookie left alone.
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn touch_interval(self, interval: Duration) -> Self {
        self.with(|b| b.touch_interval = Some(interval))
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn reauth_window(self, window: Duration) -> Self {
        self.with(|b| b.config.reauth_window = window)
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn max_sessions_per_user(self, max: u32) -> Self {
        self.with(|b| b.config.max_sessions_per_user = max)
    }

    /// Makes the layer's [background work](crate::AuthLayer::background) delete expired sessions
    /// every `interval`, in bounded batches (expired sessions are refused anyway; this keeps the
    /// table small). Default: never; call
    /// [`Accounts::purge_expired_sessions`](crate::Accounts::purge_expired_sessions) yourself,
    /// or use it.
    ///
    /// A failed purge is logged and tried again at the next interval; it never stops the
    /// background work. A statement of the purge that has no answer within the interval (or 30
    /// seconds, if shorter) is given up, so a connection gone silent stalls no later purge.
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn purge_expired_every(self, interval: Duration) -> Self {
        self.with(|b| b.config.purge_every = Some(interval))
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn allowed_origin(self, origin: impl Into<String>) -> Self {
        self.with(|b| b.allowed_origins.push(origin.into()))
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
    ///     .allow_requests_without_origin_headers(true)
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn allow_requests_without_origin_headers(self, allow: bool) -> Self {
        self.with(|b| b.allow_without_origin_headers = allow)
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn csrf_exempt(self, path: impl Into<String>) -> Self {
        self.with(|b| b.csrf_exempt.push(path.into()))
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
    ///     .dangerous_disable_csrf_protection(true)
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn dangerous_disable_csrf_protection(self, disable: bool) -> Self {
        self.with(|b| b.csrf_disabled = disable)
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
    ///     .bearer_tokens(true)
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn bearer_tokens(self, enabled: bool) -> Self {
        self.with(|b| b.config.bearer = enabled)
    }

    /// Reverse proxies whose `X-Forwarded-For` is believed. Default: none, so the client's
    /// address is the socket's peer (serve with `into_make_service_with_connect_info`) and a
    /// forged `X-Forwarded-For` is ignored. Behind trusted proxies the client is the nearest
    /// address in `X-Forwarded-For` that is not one of them.
    ///
    /// Each proxy must add the address it received the request from to `X-Forwarded-For` (nginx:
    /// `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`), or overwrite it: a proxy
    /// that passes on the client's own header lets the client choose its address. IPv4-mapped
    /// addresses (`::ffff:10.0.0.1`) are taken as the IPv4 address they carry.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .trusted_proxies(["10.0.0.1".parse().unwrap()])
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn trusted_proxies(self, proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        let proxies = proxies.into_iter().map(|ip| ip.to_canonical());
        self.with(|b| b.config.trusted_proxies.extend(proxies))
    }

    /// Failed logins allowed from one client address within `window` before further attempts
    /// from it are answered `429` (with `Retry-After`, without checking any password) until
    /// the window ends. Default: 10 in 3 minutes. IPv6 clients count per /64 (see
    /// [`ipv6_prefix`](Self::ipv6_prefix)).
    ///
    /// Each attempt is counted *before* its password is checked, in one atomic statement
    /// shared by every node; a successful login gives its count back. So no burst of concurrent
    /// attempts runs more password checks than the limit, and a right password past the limit
    /// is refused like a wrong one.
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn login_failures_per_ip(mut self, failures: u32, window: Duration) -> Self {
        self.config.login.ip_failures = failures;
        self.config.login.ip_window = window;
        self
    }

    /// Per account (or, for a name no account has, per name as the database folds it):
    /// `free_failures` failures in a row, then a wait that doubles with each further failure
    /// (2 s, 4 s, 8 s, …) up to `max_wait`, during which attempts for it are answered `429`
    /// without a password check. Default: 5 free failures, waits up to 15 minutes. A successful
    /// login or a password reset ends the streak.
    ///
    /// Failures alone never lock an account for good: someone who knows a username can keep
    /// its owner waiting at most `max_wait` at a time, at the price of one failed attempt per
    /// wait, while guessing gets a handful of tries per `max_wait`. A shorter `max_wait` favours
    /// the owner, a longer one slows guessing further; disabling an account stays an
    /// administrator's decision ([`Accounts::disable_user`](crate::Accounts::disable_user)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .login_backoff(10, Duration::from_secs(5 * 60))
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn login_backoff(mut self, free_failures: u32, max_wait: Duration) -> Self {
        self.config.login.user_free_failures = free_failures;
        self.config.login.user_max_wait = max_wait;
        self
    }

    /// How many leading bits of an IPv6 address name one client for every per-address limit.
    /// Default 64: one attacker usually holds a whole /64, and counting each address apart
    /// would give them 2^64 fresh budgets. 32 to 128.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .ipv6_prefix(56)
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn ipv6_prefix(self, bits: u8) -> Self {
        self.with(|b| b.config.ipv6_prefix = bits)
    }

    /// Logs an `invalid_tokens_alert` security event (WARN) when one client address presents
    /// `tokens` invalid session tokens (malformed, unknown, expired) within `window`, counted
    /// per node in bounded memory. Default: 50 in 5 minutes; `build()` refuses 0 tokens (an
    /// alert that could never fire).
    ///
    /// Nothing is refused for it: stale cookies of expired sessions are everyday traffic, and an
    /// office behind one NAT address must not lock out its own valid sessions. Guessing a token
    /// is hopeless (2^256 secrets); to shed the load of a flood of bogus tokens, put a rate
    /// limiter in front of the app (the README shows one).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .invalid_token_alert(100, Duration::from_secs(60))
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn invalid_token_alert(self, tokens: u32, window: Duration) -> Self {
        self.with(|b| b.config.invalid_token_alert = (tokens, window))
    }

    /// At most `at_once` password hashes (Argon2id, 19 MiB each) run at the same time, and at
    /// most `queue` more wait for a turn; a login beyond that is answered `503` with
    /// `Retry-After` at once. Default: as many at once as the machine has CPUs, and four times
    /// as many waiting. This bounds the memory and CPU that unauthenticated requests can take.
    /// One client address gets a quarter of these places (running and waiting together); past
    /// that its hashes run only when a place is free at once, never waiting in the queue, so
    /// that one address cannot keep everyone else's logins out. `build()` refuses `at_once` of
    /// 0 or over 65 536, and `queue` over 1 048 576.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .password_hashing(4, 32)
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn password_hashing(self, at_once: usize, queue: usize) -> Self {
        self.with(|b| b.config.hashing = Some((at_once, queue)))
    }

    /// The longest a request waits for a database connection and its session lookup; past
    /// it the request goes on as [`AuthState::Unavailable`](crate::AuthState::Unavailable)
    /// (never as anonymous), which the extractors and guards answer `503` with `Retry-After`.
    /// Default 2 seconds, whatever the pool's own acquire timeout.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .lookup_timeout(Duration::from_millis(500))
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn lookup_timeout(self, timeout: Duration) -> Self {
        self.with(|b| b.config.lookup_timeout = timeout)
    }

    /// How many Postgres connections the layer keeps between requests for their session
    /// lookups, outside the pool. Default: 4; 0 for none.
    ///
    /// sqlx pings every connection that goes back into its pool, a second round trip on every
    /// request. A lookup that finds a kept connection free uses it and keeps it again afterwards:
    /// no checkout, no ping. The first lookups take their connection from the pool and keep it (the
    /// pool may open a replacement), so a node holds up to this many connections on top of the
    /// pool's. They follow the pool's idle timeout and lifetime (one past them is closed by the
    /// next lookup, or by the layer's [background work](crate::AuthLayer::background)), and close
    /// when the layer is dropped. None are kept through a transaction pooler
    /// (`through_transaction_pooler`) or on SQLite.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .lookup_connections(8) // a busy node with a large pool
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn lookup_connections(self, connections: usize) -> Self {
        self.with(|b| b.config.lookup_connections = connections)
    }

    /// Whether responses to authenticated requests get `Cache-Control: private, no-store`
    /// (unless the handler set its own `Cache-Control`) and `Vary: Cookie` (or `Authorization`
    /// for a bearer request), so that no shared cache keeps one user's page for another.
    /// Default: on. Switched off, `build()` logs a warning.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .private_responses(false) // the app sets its own caching headers
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn private_responses(self, private: bool) -> Self {
        self.with(|b| b.config.private_responses = private)
    }

    /// Whether logout responses carry `Clear-Site-Data: "cache"`, so the browser drops pages it
    /// cached during the session. Default: on. (`"cookies"` is never sent: it would delete
    /// every cookie of the origin, not only the session's.)
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .clear_site_data_on_logout(false)
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn clear_site_data_on_logout(self, clear: bool) -> Self {
        self.with(|b| b.config.clear_site_data = clear)
    }

    /// Settings of the event streams served by [`account_routes`](crate::account_routes) at
    /// `GET /events`: a comment line every `heartbeat` (default 15 s) so that proxies keep the
    /// stream open (on SQLite each stream also reads its session again then, since nothing tells
    /// the node of a change written by plain SQL); at most `per_session` streams open per session
    /// (default 8) and `per_user` per user on this node (default 32), `429` beyond, so that no one
    /// account (or its sessions, up to [`max_sessions_per_user`](Self::max_sessions_per_user)) can
    /// fill the node; and at most `per_node` on this node (default 10 000; `503` beyond).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .event_streams(Duration::from_secs(30), 4, 16, 50_000)
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn event_streams(
        mut self,
        heartbeat: Duration,
        per_session: usize,
        per_user: usize,
        per_node: usize,
    ) -> Self {
        self.config.streams = StreamSettings {
            heartbeat,
            limits: StreamLimits {
                per_session,
                per_user,
                per_node,
            },
        };
        self
    }

    /// Keeps recently used principals (session, user, permissions, deadlines) and answers to
    /// scoped permission checks in this node's memory, so that most requests need no database
    /// round trip. Off by default. Postgres store only; it is in use while the layer's
    /// [background work](crate::AuthLayer::background) listens for changes.
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
    /// tokio::spawn(auth.background()); // listens for changes
    /// assert!(auth.cache_status().is_some());
    /// # Ok(()) }
    /// ```
    pub fn principal_cache(self, options: CacheOptions) -> Self {
        self.with(|b| b.config.cache = Some(options))
    }

    /// The Postgres pool the node's listener takes its one connection from, when the request
    /// pool cannot LISTEN: behind PgBouncer in transaction mode, give the request pool the
    /// bouncer's address and this pool a direct one. Default: the request pool's settings;
    /// through a [transaction pooler](crate::through_transaction_pooler), none: the principal
    /// cache then does not build
    /// ([`ConfigError::NeedsListenPool`](crate::ConfigError::NeedsListenPool)), and event
    /// streams are refused (`503`), since no change made elsewhere could reach them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// use sqlx::postgres::PgPoolOptions;
    /// let bouncer = "postgres://app@pgbouncer:6432/app".parse()?;
    /// let requests = axum_live_auth::through_transaction_pooler(PgPoolOptions::new(), bouncer);
    /// let direct = sqlx::PgPool::connect_lazy("postgres://app@db:5432/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(requests)
    ///     .allowed_origin("https://app.example.com")
    ///     .principal_cache(axum_live_auth::CacheOptions::default())
    ///     .listen_pool(direct)
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn listen_pool(self, pool: sqlx::PgPool) -> Self {
        self.with(|b| b.config.listen_pool = Some(pool))
    }

    /// Delivers account-recovery messages (password-reset and email-verification links) for the
    /// [account routes](crate::account_routes) and [`Accounts`](crate::Accounts). Default:
    /// none, and those routes answer `500`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use axum_live_auth::{Message, Messenger, MessengerError};
    ///
    /// struct Mailer;
    /// impl Messenger for Mailer {
    ///     async fn send(&self, message: Message) -> Result<(), MessengerError> {
    ///         // hand `message.link` to the mail service for `message.email`
    ///         # let _ = message;
    ///         Ok(())
    ///     }
    /// }
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .messenger(Mailer)
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn messenger(self, messenger: impl Messenger) -> Self {
        self.with(|b| b.config.recovery.set_messenger(messenger))
    }

    /// How long the [`Messenger`] may take to send one message before it is given up (and the
    /// failure logged). Default 30 seconds. Reset messages are sent after the request's answer,
    /// at most 16 at once: a send that never finished would keep its place for good.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .messenger_timeout(Duration::from_secs(10))
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn messenger_timeout(self, timeout: Duration) -> Self {
        self.with(|b| b.config.recovery.send_timeout = timeout)
    }

    /// Where the [account routes](crate::account_routes) are reachable, as the links in
    /// recovery messages start: default the first [allowed origin](Self::allowed_origin) and
    /// `/account`, such as `https://app.example.com/account`. An absolute `https://` URL (plain
    /// `http://` only on this machine, or in [`insecure_dev_mode`](Self::insecure_dev_mode))
    /// without user info, query or fragment; else [`build`](Self::build) refuses it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use axum_live_auth::{AuthLayer, ConfigError};
    ///
    /// let auth = AuthLayer::builder(pool.clone())
    ///     .allowed_origin("https://app.example.com")
    ///     .account_url("https://app.example.com/me/account")
    ///     .build()?;
    ///
    /// // Mail clients would take it to `evil.example`, over plain http.
    /// let refused = AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .account_url("http://localhost:1@evil.example/account")
    ///     .build();
    /// assert!(matches!(refused, Err(ConfigError::InvalidAccountUrl(_))));
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn account_url(mut self, url: impl Into<String>) -> Self {
        self.config.recovery.account_url = url.into();
        self
    }

    /// How long a password-reset link works. Default 30 minutes. (An email-verification link
    /// works 24 hours.)
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .password_reset_lifetime(Duration::from_secs(15 * 60))
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn password_reset_lifetime(self, lifetime: Duration) -> Self {
        self.with(|b| b.config.recovery.reset_lifetime = lifetime)
    }

    /// # ⚠️ Insecure: session cookies over plain HTTP
    ///
    /// Drops the cookie's `Secure` attribute (and, unless a name was set, uses `sid` instead of
    /// `__Host-sid`), so that browsers send the session over unencrypted HTTP, where anyone on
    /// the network can read and reuse it. Only for local development over plain http on a host
    /// other than `localhost`, or for Safari, which unlike Chrome, Firefox and curl does not
    /// send `Secure` cookies to `http://localhost`. Without it, `build()` refuses an `http://`
    /// origin or account URL on a host other than this machine's ([`ConfigError::PlainHttp`]).
    /// Logs a warning each time a layer is built with it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .insecure_dev_mode(true)
    ///     .build()?;
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn insecure_dev_mode(self, insecure: bool) -> Self {
        self.with(|b| b.insecure_dev_mode = insecure)
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
    /// # let _ = auth; Ok(()) }
    /// ```
    pub fn login_redirect(self, path: impl Into<String>) -> Self {
        self.with(|b| b.login_redirect = Some(path.into()))
    }

    /// Checks the settings and resolves the defaults that depend on others; logs a warning for
    /// each insecure switch. The layer is built from what this returns.
    pub(crate) fn validate(mut self) -> Result<(AuthConfig, AuthStore), ConfigError> {
        self.config.csrf = self.csrf()?;
        let mut config = self.config;
        let secure = !self.insecure_dev_mode;
        let default_name = if secure { "__Host-sid" } else { "sid" };
        config.cookie.name = self.cookie_name.unwrap_or_else(|| default_name.to_owned());
        config.cookie.secure = secure;
        validate_cookie(&config.cookie)?;

        let purge_every = config.purge_every.unwrap_or(MAX_TIMEOUT);
        for (what, value) in [
            ("idle_timeout", config.idle_timeout),
            ("absolute_timeout", config.absolute_timeout),
            ("reauth_window", config.reauth_window),
            ("login_failures_per_ip", config.login.ip_window),
            ("login_backoff", config.login.user_max_wait),
            ("invalid_token_alert", config.invalid_token_alert.1),
            ("lookup_timeout", config.lookup_timeout),
            ("event_streams", config.streams.heartbeat),
            ("password_reset_lifetime", config.recovery.reset_lifetime),
            ("messenger_timeout", config.recovery.send_timeout),
            ("purge_expired_every", purge_every),
        ]
        .into_iter()
        .chain(
            config
                .cache
                .as_ref()
                .map(|c| ("principal_cache", c.max_age)),
        ) {
            if value < Duration::from_millis(1) || value > MAX_TIMEOUT {
                return Err(ConfigError::InvalidTimeout(what));
            }
        }
        config.touch_interval = self
            .touch_interval
            .unwrap_or_else(|| (config.idle_timeout / 10).min(MAX_TOUCH));
        if config.touch_interval < Duration::from_millis(1) {
            return Err(ConfigError::InvalidTimeout("touch_interval"));
        }
        if config.touch_interval >= config.idle_timeout {
            return Err(ConfigError::TouchIntervalTooLong);
        }
        let (hashes, queue) = config.hashing.unwrap_or((1, 0));
        if hashes > MAX_HASHES || queue > MAX_HASH_QUEUE {
            return Err(ConfigError::InvalidLimit("password_hashing"));
        }
        for (what, zero) in [
            ("max_sessions_per_user", config.max_sessions_per_user == 0),
            ("login_failures_per_ip", config.login.ip_failures == 0),
            ("login_backoff", config.login.user_free_failures == 0),
            ("password_hashing", hashes == 0),
            ("invalid_token_alert", config.invalid_token_alert.0 == 0),
            ("event_streams", config.streams.limits.per_session == 0),
            ("event_streams", config.streams.limits.per_user == 0),
            ("event_streams", config.streams.limits.per_node == 0),
        ] {
            if zero {
                return Err(ConfigError::InvalidLimit(what));
            }
        }
        if !(32..=128).contains(&config.ipv6_prefix) {
            return Err(ConfigError::InvalidPrefix);
        }
        config.login_redirect = self.login_redirect.map(validate_redirect).transpose()?;
        if config.recovery.account_url.is_empty()
            && let Some(origin) = self.allowed_origins.first()
        {
            config.recovery.account_url = format!("{}/account", normalize_origin(origin)?);
        }
        // Origins and the links' base: https, but on this machine (where browsers treat plain
        // http as secure) or in development.
        if secure
            && let Some(url) = self
                .allowed_origins
                .iter()
                .find(|o| plain_http_elsewhere(o))
        {
            return Err(ConfigError::PlainHttp(url.clone()));
        }
        if !config.recovery.account_url.is_empty() {
            config.recovery.account_url = link_base(&config.recovery.account_url, !secure)?;
        }
        if config.cache.is_some() && self.store.kind() != StoreKind::Postgres {
            return Err(ConfigError::NeedsPostgres("principal_cache"));
        }
        #[cfg(feature = "postgres")]
        if config.cache.is_some() && self.store.through_pooler() && config.listen_pool.is_none() {
            return Err(ConfigError::NeedsListenPool);
        }

        let name = &config.cookie.name;
        if !secure {
            tracing::warn!(
                cookie = %name,
                "axum-live-auth: insecure_dev_mode is on: the session cookie is sent over plain \
                 HTTP without the Secure attribute; never use this in production"
            );
        } else if !name.to_ascii_lowercase().starts_with("__host-") {
            tracing::warn!(
                cookie = %name,
                "axum-live-auth: the session cookie's name has no __Host- prefix, so a sibling \
                 subdomain can set a cookie of that name (fixing a user into its session, or \
                 signing them out); keep the prefix unless the cookie needs a Domain"
            );
        }
        if !config.private_responses {
            tracing::warn!(
                "axum-live-auth: private_responses is off: responses to authenticated requests \
                 get no Cache-Control: private, no-store and no Vary unless the app sets them, so \
                 a shared cache (a CDN, a proxy) may serve one user's page to another"
            );
        }
        if self.store.pings_on_checkout() {
            tracing::warn!(
                "axum-live-auth: the pool pings each connection on checkout \
                 (test_before_acquire), which adds a database round trip to every \
                 authenticated request; build it with PgPoolOptions::test_before_acquire(false)"
            );
        }
        Ok((config, self.store))
    }

    /// The CSRF check, or `None` when it is switched off; logs a warning for each insecure
    /// switch.
    fn csrf(&self) -> Result<Option<Csrf>, ConfigError> {
        if self.csrf_disabled {
            tracing::warn!(
                "axum-live-auth: CSRF protection is off (dangerous_disable_csrf_protection)"
            );
            return Ok(None);
        }
        if self.allow_without_origin_headers {
            tracing::warn!(
                "axum-live-auth: unsafe requests without Sec-Fetch-Site or Origin pass the \
                 CSRF check (allow_requests_without_origin_headers)"
            );
        }
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
        let csrf = Csrf::new(origins, self.allow_without_origin_headers, exempt);
        Ok(Some(csrf))
    }
}

fn validate_cookie(cookie: &CookieConfig) -> Result<(), ConfigError> {
    let (name, secure) = (cookie.name.as_str(), cookie.secure);
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
    if let Some(domain) = &cookie.domain {
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
            return Err(ConfigError::InvalidDomain(domain.clone()));
        }
    }
    if cookie.same_site == SameSite::None {
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
            err(b().cookie_name("__Host-sid").insecure_dev_mode(true)),
            ConfigError::PrefixWithoutSecure
        );
        assert_eq!(
            err(b().cookie_name("__Secure-sid").insecure_dev_mode(true)),
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
        let layer = builder().insecure_dev_mode(true).build().unwrap();
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
            b().touch_interval(Duration::from_secs(1800))
                .build()
                .unwrap_err(),
            ConfigError::TouchIntervalTooLong
        );
        // Zero never told a token a rotation replaced from an unknown one, so the answer to
        // a request on its way cleared the new cookie. (Before: taken.)
        assert_eq!(
            b().touch_interval(Duration::ZERO).build().unwrap_err(),
            ConfigError::InvalidTimeout("touch_interval")
        );
    }

    #[test]
    fn build_starts_nothing_and_needs_no_runtime() {
        // A pool built inside a runtime, the layer outside of any: build() spawns no task.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = runtime.block_on(async { pool() });
        let layer = AuthLayerBuilder::new(store)
            .allowed_origin("https://app.example.com")
            .purge_expired_every(Duration::from_secs(60))
            .principal_cache(CacheOptions::default())
            .build()
            .unwrap();
        assert!(!layer.cache_status().unwrap().listening);
    }

    #[tokio::test]
    async fn refuses_a_zero_session_cap_and_purge_interval() {
        let b = || builder();
        assert_eq!(
            b().max_sessions_per_user(0).build().unwrap_err(),
            ConfigError::InvalidLimit("max_sessions_per_user")
        );
        assert_eq!(
            b().purge_expired_every(Duration::ZERO).build().unwrap_err(),
            ConfigError::InvalidTimeout("purge_expired_every")
        );
        assert_eq!(
            b().reauth_window(Duration::ZERO).build().unwrap_err(),
            ConfigError::InvalidTimeout("reauth_window")
        );
        // A cache whose entries never serve, or serve forever whatever the notifications say.
        for age in [Duration::ZERO, Duration::MAX] {
            let cache = CacheOptions::default().max_age(age);
            assert_eq!(
                b().principal_cache(cache).build().unwrap_err(),
                ConfigError::InvalidTimeout("principal_cache")
            );
        }
        // An alert that could never fire, and hashing bounds no machine has.
        assert_eq!(
            b().invalid_token_alert(0, Duration::from_secs(60))
                .build()
                .unwrap_err(),
            ConfigError::InvalidLimit("invalid_token_alert")
        );
        for (at_once, queue) in [(usize::MAX, 0), (4, usize::MAX)] {
            assert_eq!(
                b().password_hashing(at_once, queue).build().unwrap_err(),
                ConfigError::InvalidLimit("password_hashing")
            );
        }
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
        // Plain http only on this machine, or in development: anywhere else a page the network
        // can rewrite, and reset links carrying their token in the clear.
        let plain = |url: &str| ConfigError::PlainHttp(url.to_owned());
        for origin in ["http://app.example.com", "HTTP://10.0.0.5:8080"] {
            let refused = bare().allowed_origin(origin).build().unwrap_err();
            assert_eq!(refused, plain(origin));
            let dev = bare()
                .allowed_origin(origin)
                .insecure_dev_mode(true)
                .build();
            assert!(dev.is_ok(), "{origin}");
        }
        for origin in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "http://[::1]:8080",
        ] {
            assert!(bare().allowed_origin(origin).build().is_ok(), "{origin}");
        }
        let links = builder()
            .account_url("http://app.example.com/account")
            .build();
        assert_eq!(links.unwrap_err(), plain("http://app.example.com/account"));
        let layer = bare()
            .dangerous_disable_csrf_protection(true)
            .build()
            .unwrap();
        assert!(layer.shared().config.csrf.is_none());
        assert!(builder().shared_csrf_is_on());
    }

    impl AuthLayerBuilder {
        fn shared_csrf_is_on(self) -> bool {
            self.build().unwrap().shared().config.csrf.is_some()
        }
    }

    /// The links' base is read as a browser reads a link: one that would take the user to
    /// another host over plain http, or that is not a URL at all, is refused, in development
    /// too. (Before: each of these was taken.)
    #[tokio::test]
    async fn refuses_an_account_url_that_hides_where_links_go() {
        for url in [
            "http://localhost:x@evil.example/account",
            "http://[::1]@evil.example/account",
            "https://user@app.example.com/account",
            "http:/\\evil.example/account",
            "http:evil.example/account",
            "app.example.com/account",
            "https://app.example.com/account?next=x",
            "https://app.example.com/acc ount",
        ] {
            for dev in [false, true] {
                let built = builder().account_url(url).insecure_dev_mode(dev).build();
                let refused = ConfigError::InvalidAccountUrl(url.to_owned());
                assert_eq!(built.unwrap_err(), refused, "{url}");
            }
        }
        let built = builder()
            .account_url("HTTPS://App.Example.com:443/Account/")
            .build()
            .unwrap();
        let base = &built.shared().config.recovery.account_url;
        assert_eq!(base, "https://app.example.com/Account");
        for url in ["http://localhost:3000/account", "http://127.0.0.1/a/b"] {
            assert!(builder().account_url(url).build().is_ok(), "{url}");
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
