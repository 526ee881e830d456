//! The tower layer and the per-request path, read top to bottom in [`AuthService::call`]: the
//! client and its credential, CSRF, the session lookup, the request's extensions, the handler,
//! and the response headers the outcome calls for.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::ConnectInfo,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use tower::{Layer, Service};

use crate::{
    Accounts, Auth, AuthLayerBuilder, AuthRejection, AuthState, CacheStatus, ConfigError,
    IntoAuthStore,
    client::{self, Client},
    credential::{self, Source},
    events::security,
    lookup,
    principal::LoginRedirect,
    shared::Shared,
};

/// Authenticates every request from its session cookie (or bearer token) against the store.
///
/// One `.layer(auth)` on the router is all it needs (it manages the cookie itself). Build it
/// with [`AuthLayer::builder`]; run its [`background`](Self::background) work if you use the
/// principal cache, event streams on Postgres, or the purge of expired sessions:
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
/// tokio::spawn(auth.background());
///
/// let app: Router = Router::new()
///     .route("/me", get(|user: CurrentUser| async move { user.username().to_owned() }))
///     .layer(auth);
/// # let _ = app; Ok(()) }
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
    pub fn builder(store: impl IntoAuthStore) -> AuthLayerBuilder {
        AuthLayerBuilder::new(store.into_auth_store())
    }

    /// [`Accounts`] on the layer's database, sharing the layer's password hasher and limits,
    /// and telling the layer's open event streams of every change it makes.
    pub fn accounts(&self) -> Accounts {
        Accounts::of_layer(&self.shared)
    }

    /// The state of the principal cache, `None` when it is off. See
    /// [`AuthLayerBuilder::principal_cache`].
    pub fn cache_status(&self) -> Option<CacheStatus> {
        self.shared.cache.as_ref().map(|cache| cache.status())
    }

    /// How many event streams ([`account_routes`](crate::account_routes)' `GET /events`) are open
    /// on this node.
    pub fn open_event_streams(&self) -> usize {
        self.shared.hub.open_streams()
    }

    /// Ends every open event stream on this node with `event: reconnect` and refuses new ones
    /// (`503`). Call it when the server starts its graceful shutdown: an event stream never
    /// ends by itself, so the shutdown would otherwise wait for its clients to leave. The
    /// browsers reconnect, to another node or to this one once it is back.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .build()?;
    /// let app = axum::Router::new()
    ///     .nest("/account", axum_live_auth::account_routes())
    ///     .layer(auth.clone());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(async move {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///         auth.close_event_streams();
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn close_event_streams(&self) {
        self.shared.hub.close();
    }

    /// The layer's background work, for the app to run (`tokio::spawn(auth.background())`): on
    /// Postgres, the node's one LISTEN connection, which keeps the principal cache and the event
    /// streams live; the closing of [kept](AuthLayerBuilder::lookup_connections) connections idle
    /// past the pool's limits when no request comes; and the purge of expired sessions, if
    /// [configured](AuthLayerBuilder::purge_expired_every). It ends, and its connection closes,
    /// when the layer and every router holding it are dropped; abort its task to stop it sooner.
    /// Without it the cache stays bypassed (correct, only slower), and event streams on Postgres
    /// are refused.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// use std::time::Duration;
    /// let auth = axum_live_auth::AuthLayer::builder(pool)
    ///     .allowed_origin("https://app.example.com")
    ///     .purge_expired_every(Duration::from_secs(600))
    ///     .build()?;
    /// let background = tokio::spawn(auth.background());
    /// // … serve the app …
    /// drop(auth);
    /// background.await.expect("ends once the layer is gone");
    /// # Ok(()) }
    /// ```
    pub fn background(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = &self.shared;
        let stopped = shared.stopped();
        #[cfg(feature = "postgres")]
        let listen = match &shared.config.listen_pool {
            Some(direct) => Some(direct),
            // LISTEN through a transaction pooler would hear nothing: no listener at all.
            None if shared.store.through_pooler() => None,
            None => shared.store.postgres_pool(),
        }
        .zip(shared.store.postgres_pool())
        .map(|(pool, requests)| {
            let options = crate::listener::listener_options(pool);
            let probes = crate::listener::probe_options(requests);
            crate::listener::listen(options, probes, shared.subscribers())
        });
        #[cfg(feature = "postgres")]
        let reap = shared.store.reaping_kept();
        #[cfg(not(feature = "postgres"))]
        let [listen, reap] = [None::<std::future::Pending<()>>, None];
        let purge =
            (shared.config.purge_every).map(|every| purge_loop(Accounts::of_layer(shared), every));
        async move {
            tokio::select! {
                () = stopped => {}
                () = run_if_some(purge) => {}
                () = run_if_some(listen) => {}
                () = run_if_some(reap) => {}
            }
            tracing::debug!("axum-live-auth: the layer is gone; background work stops");
        }
    }

    /// A new session for `user`, as a login would start it (for the testing kit).
    #[cfg(feature = "testing")]
    pub(crate) async fn start_session_for_test(
        &self,
        user: crate::UserId,
    ) -> Result<crate::SessionToken, crate::Error> {
        crate::auth::start_session(&self.shared, &Client::default(), user, None).await
    }

    #[cfg(feature = "testing")]
    pub(crate) fn cookie_name(&self) -> &str {
        &self.shared.config.cookie.name
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

impl AuthLayerBuilder {
    /// Validates the configuration and builds the layer. Starts nothing: background work is
    /// [`AuthLayer::background`], for the app to run.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a combination browsers would drop (a `__Host-` name with a domain
    /// or without `Secure`), `SameSite=None`, an invalid name, domain, origin or redirect,
    /// durations or limits that cannot work, or the principal cache on SQLite.
    pub fn build(self) -> Result<AuthLayer, ConfigError> {
        let (config, store) = self.validate()?;
        Ok(AuthLayer {
            shared: Arc::new(Shared::new(config, store)),
        })
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

impl<S, ReqBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

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
            credential::hide_tokens(req.headers_mut());
            let client = client_of(&shared, &req);
            let credential =
                match credential::read(req.headers(), &config.cookie.name, config.bearer) {
                    Ok(credential) => credential,
                    Err(rejection) => {
                        tracing::warn!("session cookie and bearer token disagree");
                        return Ok(rejection.into_response());
                    }
                };
            // Cross-site request forgery rides on the cookie a browser attaches by itself: a
            // cookie request is checked before its session is looked up. A browser cannot add an
            // Authorization header cross-site without the app's consent (CORS), so a bearer
            // token of a live session needs no check; any other bearer request (a header with
            // no token, or a token of no session) is no credential, and what a browser says of
            // the request's site still counts.
            let path = req.uri().path();
            let csrf = (config.csrf.as_ref())
                .filter(|csrf| csrf.applies(req.method(), req.headers(), path));
            if let Some(csrf) = csrf
                && !credential.source.bearer()
                && let Err(reason) = csrf.check(req.headers())
            {
                return Ok(cross_site(&client, reason, path));
            }
            let source = credential.source;
            let decided = lookup::authenticate(&shared, credential, &client).await;
            let state = decided.state.clone();
            let authenticated = matches!(state, AuthState::Authenticated(_));
            if let Some(csrf) = csrf
                && source.bearer()
                && !authenticated
                && let Err(reason) = csrf.check_browser(req.headers())
            {
                return Ok(cross_site(&client, reason, path));
            }
            let auth = Auth::new(Arc::clone(&shared), decided, client, source);
            let extensions = req.extensions_mut();
            if let (AuthState::Anonymous, Some(path)) = (&state, &config.login_redirect) {
                extensions.insert(LoginRedirect(Arc::clone(path)));
            }
            extensions.insert(state);
            extensions.insert(auth.clone());

            let mut response = inner.call(req).await?;
            if config.bearer {
                challenge(&mut response, source.bearer());
            }
            let headers = response.headers_mut();
            if authenticated && config.private_responses {
                make_private(headers, source);
            }
            auth.write_response_headers(headers);
            Ok(response)
        })
    }
}

/// The challenge on a `401` for want of a session ([`AuthRejection::Unauthenticated`]), where
/// bearer tokens are on (RFC 6750): `Bearer`, with `error="invalid_token"` when the request
/// presented one.
fn challenge(response: &mut Response, presented: bool) {
    let unauthenticated = Some(&AuthRejection::Unauthenticated);
    if response.status() == StatusCode::UNAUTHORIZED
        && response.extensions().get::<AuthRejection>() == unauthenticated
    {
        let value = if presented {
            r#"Bearer error="invalid_token""#
        } else {
            "Bearer"
        };
        (response.headers_mut().entry(header::WWW_AUTHENTICATE))
            .or_insert(HeaderValue::from_static(value));
    }
}

/// The refusal of a request a browser says came from another site.
fn cross_site(client: &Client, reason: &str, path: &str) -> Response {
    security::csrf_rejected(client, reason, path);
    AuthRejection::CrossSite.into_response()
}

/// Who sent the request: the peer address (through trusted proxies only) and user agent.
fn client_of<B>(shared: &Shared, req: &Request<B>) -> Client {
    let config = &shared.config;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if peer.is_none() {
        shared.warn_no_peer_address();
    }
    let ip = client::client_ip(peer, req.headers(), &config.trusted_proxies);
    let user_agent = req.headers().get(header::USER_AGENT).cloned();
    Client::new(ip, config.ipv6_prefix, user_agent)
}

/// Keeps an authenticated response out of shared caches: `Cache-Control: private, no-store`
/// unless the handler chose its own, and `Vary` on the credential.
fn make_private(headers: &mut HeaderMap, source: Source) {
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-store"));
    let vary = match source {
        Source::Cookie => "Cookie",
        Source::Bearer => "Authorization",
        Source::Both => "Cookie, Authorization",
    };
    headers.append(header::VARY, HeaderValue::from_static(vary));
}

/// Runs `work`, or never ends when there is none.
async fn run_if_some(work: Option<impl Future<Output = ()>>) {
    match work {
        Some(work) => work.await,
        None => std::future::pending().await,
    }
}

/// Runs `every` forever: one purge of expired sessions per interval, errors logged.
async fn purge_loop(accounts: Accounts, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate
    loop {
        ticks.tick().await;
        // A statement stuck longer than the interval is given up, so the next purge starts on
        // time, on another connection.
        let bound = every.min(crate::accounts::PURGE_STATEMENT_BOUND);
        match accounts.purge_within(bound).await {
            Ok(count) => tracing::debug!(count, "purged expired sessions"),
            Err(error) => tracing::warn!(
                error = &error as &dyn std::error::Error,
                "purging expired sessions failed; trying again at the next interval"
            ),
        }
    }
}
