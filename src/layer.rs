//! The tower layer and the per-request path.
//!
//! For every request: read the session cookie strictly (no I/O), and only for a well-formed
//! token make one database round trip that returns session, user and effective permissions;
//! compare the secret's hash in constant time; write the idle deadline back if the touch
//! interval has passed; put the outcome into the request; after the handler, write the cookie
//! the handler decided on. The layer never refuses a request itself: extractors and guards do.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

#[cfg(feature = "postgres")]
use crate::cache::{CacheStatus, Deadlines, Entry, PrincipalCache};
use crate::{
    Accounts, Auth, AuthLayerBuilder, AuthState, AuthStore, CurrentUser, SessionToken,
    auth::CookieChange,
    bearer,
    client::{self, Client},
    config::AuthConfig,
    cookie::{self, Invalid, Presented},
    events,
    extract::Principal,
    store::{RequestConnection, SessionRow},
    throttle::InvalidTokens,
};

/// Configuration and store, shared by every clone of the layer and every request.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: AuthConfig,
    pub(crate) store: AuthStore,
    pub(crate) invalid_tokens: InvalidTokens,
    /// The principal cache, when on (Postgres only).
    #[cfg(feature = "postgres")]
    pub(crate) cache: Option<Arc<PrincipalCache>>,
}

/// Authenticates every request from its session cookie against Postgres.
///
/// One `.layer(auth)` on the router is all it needs (it manages the cookie itself). Build it
/// with [`AuthLayer::builder`]:
///
/// ```
/// use axum::{Router, routing::get};
/// use axum_live_auth::{AuthLayer, CurrentUser};
/// use sqlx::postgres::PgPoolOptions;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let pool = PgPoolOptions::new()
///     // No ping on checkout: it would add a second round trip to every request.
///     .test_before_acquire(false)
///     .connect_lazy("postgres://localhost/app")?;
/// let auth = AuthLayer::builder(pool)
///     .allowed_origin("https://app.example.com")
///     .build()?;
///
/// let app: Router = Router::new()
///     .route("/me", get(|user: CurrentUser| async move { user.username().to_owned() }))
///     .layer(auth);
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

impl AuthLayer {
    /// Starts configuring a layer that keeps its sessions in a Postgres or SQLite pool's
    /// database (migrated with [`migrate`](crate::migrate)).
    ///
    /// Build a Postgres pool with `PgPoolOptions::test_before_acquire(false)`: sqlx otherwise
    /// pings each connection as it leaves the pool, a second round trip on every request. A
    /// dead connection then fails its query instead, and that request answers `503`. Build an
    /// SQLite pool with `sqlite_connect_options` (feature `sqlite`).
    pub fn builder(store: impl Into<AuthStore>) -> AuthLayerBuilder {
        AuthLayerBuilder::new(store.into())
    }

    /// [`Accounts`] on the layer's database, to manage users and grants.
    pub fn accounts(&self) -> Accounts {
        Accounts::new(self.shared.store.clone())
    }

    /// The state of the principal cache, `None` when it is off. See
    /// [`AuthLayerBuilder::principal_cache`].
    #[cfg(feature = "postgres")]
    pub fn cache_status(&self) -> Option<CacheStatus> {
        self.shared.cache.as_ref().map(|cache| cache.status())
    }

    /// The layer's store, for example to read its
    /// [`statement_count`](AuthStore::statement_count).
    pub fn store(&self) -> &AuthStore {
        &self.shared.store
    }

    pub(crate) fn from_shared(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
        }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Purges expired sessions every `interval` until the layer is gone. A failed purge is
    /// logged and tried again at the next interval.
    pub(crate) fn spawn_purge_task(&self, runtime: &tokio::runtime::Handle, interval: Duration) {
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate
            loop {
                ticks.tick().await;
                let Some(shared) = shared.upgrade() else {
                    tracing::debug!("axum-live-auth: layer dropped, purge task stops");
                    return;
                };
                let accounts = Accounts::new(shared.store.clone());
                drop(shared);
                match accounts.purge_expired_sessions().await {
                    Ok(count) => tracing::debug!(count, "purged expired sessions"),
                    Err(error) => tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "purging expired sessions failed; trying again at the next interval"
                    ),
                }
            }
        });
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        // Call the service that was driven to readiness and leave a fresh clone in its place
        // (https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);

        Box::pin(async move {
            let config = &shared.config;
            let headers = req.headers();
            let client = Client {
                ip: client::client_ip(peer_ip(&req), headers, &config.trusted_proxies),
                user_agent: headers.get(header::USER_AGENT).cloned(),
            };
            let Some((presented, source)) = read_credential(config, headers) else {
                tracing::warn!("session cookie and bearer token disagree");
                return Ok(refusal(StatusCode::BAD_REQUEST, None));
            };
            // Cross-site request forgery rides on the cookie a browser attaches by itself; it
            // cannot add an Authorization header, so bearer requests need no check.
            let path = req.uri().path();
            if let Some(csrf) = &config.csrf
                && source == Source::Cookie
                && csrf.applies(req.method(), headers, path)
                && let Err(reason) = csrf.check(headers)
            {
                events::csrf_rejected(&client, reason, path);
                return Ok(refusal(StatusCode::FORBIDDEN, None));
            }
            let carries_token = !matches!(presented, Presented::None);
            if carries_token
                && let Some(ip) = client.ip
                && let Some(left) = shared.invalid_tokens.blocked(ip)
            {
                return Ok(refusal(StatusCode::TOO_MANY_REQUESTS, Some(left)));
            }

            let (state, cookie) = authenticate(&shared, presented, source).await;
            if carries_token
                && matches!(state, AuthState::Anonymous)
                && let Some(ip) = client.ip
                && shared.invalid_tokens.record(ip)
            {
                events::invalid_tokens_throttled(&client, shared.invalid_tokens.limit());
            }
            let auth = Auth::new(Arc::clone(&shared), state.clone(), cookie, client, source);
            req.extensions_mut().insert(state);
            req.extensions_mut().insert(auth.clone());

            let mut response = inner.call(req).await?;
            auth.write_cookie(response.headers_mut());
            Ok(response)
        })
    }
}

/// Where the request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Cookie,
    Bearer,
}

/// The request's token from the cookie or, when enabled, the bearer header. `None` when both
/// are present and are not the same token: such a request is refused, never resolved to one.
fn read_credential(config: &AuthConfig, headers: &HeaderMap) -> Option<(Presented, Source)> {
    let from_cookie = cookie::read(headers, &config.cookie.name);
    let from_bearer = if config.bearer {
        bearer::read(headers)
    } else {
        Presented::None
    };
    match (from_cookie, from_bearer) {
        (cookie, Presented::None) => Some((cookie, Source::Cookie)),
        (Presented::None, bearer) => Some((bearer, Source::Bearer)),
        (Presented::Token(a), Presented::Token(b)) if a.to_string() == b.to_string() => {
            Some((Presented::Token(b), Source::Bearer))
        }
        _ => None,
    }
}

/// A response the layer gives itself, before any handler runs.
fn refusal<B: Default>(status: StatusCode, retry_after: Option<Duration>) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    if let Some(wait) = retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

/// Decides the request's [`AuthState`], and whether the response should clear the cookie
/// (for a cookie that can never become valid again).
async fn authenticate(
    shared: &Shared,
    presented: Presented,
    source: Source,
) -> (AuthState, CookieChange) {
    // Only a cookie can be cleared; a bearer client keeps its token itself.
    let clear = match source {
        Source::Cookie => CookieChange::Clear,
        Source::Bearer => CookieChange::Keep,
    };
    let token = match presented {
        Presented::None => return (AuthState::Anonymous, CookieChange::Keep),
        Presented::Invalid(reason) => {
            tracing::warn!(reason = reason.as_str(), "invalid session token");
            // A duplicate may be a planted cookie next to the real one: clearing could delete
            // the real one, so only a single malformed cookie is cleared.
            let change = if reason == Invalid::Malformed {
                clear
            } else {
                CookieChange::Keep
            };
            return (AuthState::Anonymous, change);
        }
        Presented::Token(token) => token,
    };
    match resolve(shared, &token).await {
        Ok(Some(user)) => (AuthState::Authenticated(user), CookieChange::Keep),
        Ok(None) => {
            tracing::info!(session.id = %token.id(), "unknown or expired session");
            (AuthState::Anonymous, clear)
        }
        Err(error) => {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                session.id = %token.id(),
                "session lookup failed; answering as unavailable"
            );
            (AuthState::Unavailable, CookieChange::Keep)
        }
    }
}

/// The session's principal: from the cache when it holds a fresh entry, else with one round
/// trip; a second, once per touch interval, pushes the idle deadline forward after the secret
/// has been verified.
async fn resolve(
    shared: &Shared,
    token: &SessionToken,
) -> Result<Option<CurrentUser>, sqlx::Error> {
    let config = &shared.config;
    let hash = token.secret_hash();
    #[cfg(feature = "postgres")]
    if let Some(cache) = &shared.cache {
        let now = Instant::now();
        if let Some(entry) = cache.get(token.id(), now) {
            if !hash.matches(&entry.secret_hash) {
                tracing::warn!(session.id = %token.id(), "session secret mismatch");
                return Ok(None);
            }
            if entry.touch_due(now) {
                touch(shared, None, token).await;
                cache.replace(
                    token.id(),
                    entry.touched(now, config.idle_timeout, config.touch_interval),
                );
            }
            let recent = entry.recently_authenticated(now, config.reauth_window);
            return Ok(Some(CurrentUser::new(Arc::clone(&entry.principal), recent)));
        }
    }

    #[cfg(feature = "postgres")]
    let fill = shared.cache.as_ref().and_then(|cache| cache.begin_fill());
    // Before the query, so that deadlines derived from it err on the early side.
    let now = Instant::now();
    let mut db = shared.store.connection().await?;
    let Some(row) = db.lookup_session(token.id()).await? else {
        return Ok(None);
    };
    if !hash.matches(&row.secret_hash) {
        tracing::warn!(session.id = %token.id(), "session secret mismatch");
        return Ok(None);
    }
    let db_now = row.now;
    let mut since_seen = SessionRow::between(row.last_seen_at, db_now);
    let mut idle_left = SessionRow::between(db_now, row.idle_expires_at);
    let absolute_left = SessionRow::between(db_now, row.expires_at);
    let since_authenticated = SessionRow::between(row.authenticated_at, db_now);
    if since_seen >= config.touch_interval {
        touch(shared, Some(&mut db), token).await;
        since_seen = Duration::ZERO;
        idle_left = config.idle_timeout.min(absolute_left);
    }
    let recent = since_authenticated < config.reauth_window;
    #[cfg(feature = "postgres")]
    let secret_hash = row.secret_hash.clone();
    let principal = Arc::new(Principal::from_row(row, token.id().clone()));
    #[cfg(feature = "postgres")]
    if let (Some(cache), Some(fill)) = (&shared.cache, fill) {
        let deadlines = Deadlines {
            now,
            since_seen,
            idle_left,
            absolute_left,
            since_authenticated,
        };
        let entry = Entry::new(
            secret_hash,
            Arc::clone(&principal),
            deadlines,
            config.touch_interval,
        );
        cache.finish_fill(fill, token.id(), entry);
    }
    #[cfg(not(feature = "postgres"))]
    let _ = (since_seen, idle_left, now);
    Ok(Some(CurrentUser::new(principal, recent)))
}

/// Writes the idle deadline back, on the request's connection if it has one. The request is
/// authenticated either way; a failed touch only means the deadline moves on a later request.
async fn touch(shared: &Shared, db: Option<&mut RequestConnection>, token: &SessionToken) {
    let config = &shared.config;
    let mut own;
    let db = match db {
        Some(db) => db,
        None => match shared.store.connection().await {
            Ok(conn) => {
                own = conn;
                &mut own
            }
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "session touch failed"
                );
                return;
            }
        },
    };
    let touched = db
        .touch_session(token.id(), config.idle_timeout, config.touch_interval)
        .await;
    if let Err(error) = touched {
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            "session touch failed"
        );
    }
}

/// The peer address, when the server was started with `into_make_service_with_connect_info`.
fn peer_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}
