//! What every request of a layer shares: the validated configuration, the store, the principal
//! cache, the password hasher and the node's event-stream hub. Built by `build()` without
//! starting anything; background work runs in the future `AuthLayer::background` returns.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::watch;

use crate::{
    AuthStore, Error, Resource, StoreKind, UserId,
    cache::PrincipalCache,
    config::AuthConfig,
    events::{Hub, TokenAlerts},
    password::Hasher,
    principal::ScopedGrants,
    store::by,
};

/// Who hears of a change: the principal cache and the open event streams. The listener tells
/// them of every notification; a change made in-process tells them at once as well, so that
/// this node refuses on its next request without waiting for the notification to come back.
#[derive(Debug, Clone)]
pub(crate) struct Subscribers {
    pub(crate) cache: Option<Arc<PrincipalCache>>,
    pub(crate) hub: Arc<Hub>,
}

impl Subscribers {
    /// A notification's payload: `s:<session>`, `u:<user>`, `r:<user>`, `r:*`, or anything
    /// else for "everything may have changed".
    pub(crate) fn apply(&self, payload: &str) {
        self.apply_all(&[payload]);
    }

    /// Payloads that arrived together, applied together (see [`PrincipalCache::apply_all`]).
    pub(crate) fn apply_all(&self, payloads: &[&str]) {
        if let Some(cache) = &self.cache {
            cache.apply_all(payloads);
        }
        for payload in payloads {
            self.hub.apply(payload);
        }
    }

    /// Whatever of `user` changed: their principal, their answers on resources, their streams.
    pub(crate) fn user_changed(&self, user: UserId) {
        self.apply_all(&[&format!("u:{user}"), &format!("r:{user}")]);
    }

    // Called by the listener, which is Postgres only.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn set_listening(&self, listening: bool) {
        if let Some(cache) = &self.cache {
            cache.set_listening(listening);
        }
        self.hub.set_listening(listening);
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: AuthConfig,
    pub(crate) store: AuthStore,
    pub(crate) cache: Option<Arc<PrincipalCache>>,
    pub(crate) hasher: Arc<Hasher>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) alerts: TokenAlerts,
    /// Dropped with the last clone of the layer: tells the background work to stop.
    stop: watch::Sender<()>,
    warned_no_peer: AtomicBool,
}

impl Shared {
    pub(crate) fn new(config: AuthConfig, store: AuthStore) -> Self {
        let store = store.keeping_lookup_connections(config.lookup_connections);
        let (tokens, window) = config.invalid_token_alert;
        Self {
            cache: config.cache.map(PrincipalCache::new).map(Arc::new),
            hasher: Arc::new(match config.hashing {
                Some((at_once, queue)) => Hasher::new(at_once, queue),
                None => Hasher::default(),
            }),
            hub: Arc::new(Hub::new(
                config.streams.limits,
                store.kind() == StoreKind::Postgres,
                // The streams' reads get a quarter of the pool (at least one), requests the rest.
                usize::try_from(store.max_connections() / 4).unwrap_or(usize::MAX),
            )),
            alerts: TokenAlerts::new(tokens, window),
            config,
            store,
            stop: watch::Sender::new(()),
            warned_no_peer: AtomicBool::new(false),
        }
    }

    /// The cache and the streams, to tell of a change.
    pub(crate) fn subscribers(&self) -> Subscribers {
        Subscribers {
            cache: self.cache.clone(),
            hub: Arc::clone(&self.hub),
        }
    }

    /// See [`Subscribers::user_changed`].
    pub(crate) fn user_changed(&self, user: UserId) {
        self.subscribers().user_changed(user);
    }

    /// One session ended here (a logout, a rotation, a login over it, an eviction): this node's
    /// cache forgets it and its streams look again, before the notification comes back. Only
    /// that session: forgetting the user would scan the whole cache.
    pub(crate) fn session_ended(&self, session: &str) {
        self.subscribers().apply(&format!("s:{session}"));
    }

    /// Resolves when the layer (every clone of it) is gone.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move { while stop.changed().await.is_ok() {} }
    }

    /// Logs, once per layer, that a request came without its peer address, which turns the
    /// per-address limits off.
    pub(crate) fn warn_no_peer_address(&self) {
        if !self.warned_no_peer.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "axum-live-auth: a request came without the client's address, so per-address \
                 login and reset limits do not apply to it, and sign-ups without an address \
                 share one budget (10 in 15 minutes); serve the app with \
                 `into_make_service_with_connect_info::<SocketAddr>()`"
            );
        }
    }
}

impl ScopedGrants for Shared {
    fn holds<'a>(
        &'a self,
        user: UserId,
        permission: &'a str,
        resource: &'a Resource,
    ) -> Pin<Box<dyn Future<Output = Result<bool, Error>> + Send + 'a>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + self.config.lookup_timeout;
            let ask = by(deadline, self.store.can(user, permission, resource));
            Ok(match &self.cache {
                Some(cache) => {
                    let now = std::time::Instant::now();
                    cache.answer(user, permission, resource, now, ask).await?
                }
                None => ask.await?,
            })
        })
    }
}
