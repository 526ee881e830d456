//! One LISTEN connection per node (Postgres), fanned out to everything that must hear of a
//! change: the principal cache and the open event streams. While the connection is down,
//! everyone is told (the cache empties and is bypassed, streams end), so no notification lost
//! meanwhile can leave a stale picture behind.

use std::{future::Future, pin::Pin, time::Duration};

use futures_util::FutureExt as _;
use sqlx::{
    Connection as _,
    postgres::{PgConnectOptions, PgConnection, PgListener, PgNotification, PgPool},
};

use crate::{shared::Subscribers, token::random_bytes};

/// The LISTEN channel the triggers notify on.
pub(crate) const CHANNEL: &str = "axum_live_auth";
/// The listener's connect options: those of the app's pool (or of `listen_pool` on the
/// builder), under the application name `axum-live-auth-listener` (visible in
/// `pg_stat_activity`).
pub(crate) fn listener_options(pool: &PgPool) -> PgConnectOptions {
    named(pool, "axum-live-auth-listener")
}

/// The probe connection's connect options (see [`PROBE_EVERY`]): those of the app's request
/// pool, under the application name `axum-live-auth-probe`.
pub(crate) fn probe_options(requests: &PgPool) -> PgConnectOptions {
    named(requests, "axum-live-auth-probe")
}

fn named(pool: &PgPool, application_name: &str) -> PgConnectOptions {
    pool.connect_options()
        .as_ref()
        .clone()
        .application_name(application_name)
}

/// A pool of one connection for one listener connection's life, outside the app's pool.
fn listener_pool(options: &PgConnectOptions) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.clone())
}

/// Listens for good: connects, LISTENs, applies notifications; on any loss, tells the
/// subscribers and reconnects after a short, growing pause (see [`jitter`]). Each connection
/// gets a pool of its own: one given up on may hang while sqlx says `UNLISTEN` on it (on a
/// half-open socket, until TCP gives up), and must not hold the next one's place. Dropping the
/// future lets its connection go once sqlx has said `UNLISTEN`. Probes: see [`PROBE_EVERY`].
pub(crate) async fn listen(
    options: PgConnectOptions,
    probe_options: PgConnectOptions,
    subscribers: Subscribers,
) {
    // However this future ends (the layer gone, or its task aborted), nothing keeps trusting
    // a listener that no longer runs.
    let _stops = StopsListening(&subscribers);
    let mut backoff = Duration::from_millis(50);
    loop {
        match listen_once(&listener_pool(&options), &probe_options, &subscribers).await {
            Ok(true) => backoff = Duration::from_millis(50),
            Ok(false) => backoff = (backoff * 2).min(Duration::from_secs(5)),
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "axum-live-auth listener cannot connect; the cache stays bypassed"
                );
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
    }
}

/// How often the listener proves that notifications still reach it: it notifies a channel of
/// its own from a connection of its own, opened as the request pool opens its connections (so
/// a probe travels as a change from any node does), and must hear that back before the next
/// probe. A connection that died without closing (a half-open socket, a path that went
/// silent) or one that cannot hear other sessions (LISTEN through a transaction pooler, or on
/// another database) is found out within two intervals and a timeout, instead of leaving the
/// node listening to nothing. (A probe sent on the listener's own connection would prove
/// nothing of the sort: Postgres always hands a session its own notifications.)
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// The longest a probe's statement may take (and its connection's opening).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A probe on its way: the probe connection, handed back with whether the probe went out.
type Probe = Pin<Box<dyn Future<Output = (PgConnection, bool)> + Send>>;

/// One connection's life: listen, probe at once, and trust the connection (tell the
/// subscribers it listens) only once the first probe is heard back; then apply notifications
/// until the connection is lost or stops hearing its probes. `Ok(true)` if it was trusted.
async fn listen_once(
    pool: &PgPool,
    probe_options: &PgConnectOptions,
    subscribers: &Subscribers,
) -> Result<bool, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    let mut prober = Some(bounded(PgConnection::connect_with(probe_options)).await??);
    // Sent beside the loop, not in it: notifications go on being applied while a probe is on
    // its way.
    let mut in_flight: Option<Probe> = None;
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    let probe_channel = probe_channel();
    // Bounded as a probe is: on a path gone silent the answer would never come.
    bounded(listener.listen_all([CHANNEL, probe_channel.as_str()])).await??;
    let mut probes = tokio::time::interval(PROBE_EVERY);
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `true` at first: the first tick sends the first probe, with nothing to have heard yet.
    let mut heard = true;
    let mut trusted = false;
    let lost = loop {
        tokio::select! {
            // Notifications first: a probe's echo already received is counted before the next
            // probe asks whether it came. `try_recv` is cancel-safe: a probe's turn loses none.
            biased;
            received = listener.try_recv() => {
                let Ok(Some(first)) = received else { break "lost its connection" };
                // What has arrived with it is applied with it, in one pass over the cache: a
                // role's change notifies each of its holders at once.
                let (batch, connected) = arrived_with(&mut listener, first);
                let echoed = batch.iter().any(|n| n.channel() == probe_channel);
                let payloads: Vec<_> = batch
                    .iter()
                    .filter(|n| n.channel() != probe_channel)
                    .map(PgNotification::payload)
                    .collect();
                subscribers.apply_all(&payloads);
                heard |= echoed;
                // Trusted on a probe's echo only: a change notification before it proves less
                // (through a transaction pooler one may arrive, and the next ones not).
                if echoed && !trusted {
                    trusted = true;
                    subscribers.set_listening(true);
                    tracing::debug!("axum-live-auth listener listening");
                }
                if !connected {
                    break "lost its connection";
                }
            }
            (connection, sent) = async {
                match in_flight.as_mut() {
                    Some(probe) => probe.await,
                    None => std::future::pending().await,
                }
            } => {
                in_flight = None;
                if !sent {
                    break "could not send its probe";
                }
                prober = Some(connection);
            }
            _ = probes.tick() => {
                if !heard {
                    break "did not hear its probe back";
                }
                // Still on its way after a whole interval: as good as not sent.
                let Some(mut connection) = prober.take() else {
                    break "could not send its probe";
                };
                heard = false;
                let channel = probe_channel.clone();
                in_flight = Some(Box::pin(async move {
                    let sent = bounded(crate::store::notify(&mut connection, &channel)).await;
                    (connection, matches!(sent, Ok(Ok(()))))
                }));
            }
        }
    };
    subscribers.set_listening(false);
    tracing::warn!(
        reason = lost,
        "axum-live-auth listener lost; bypassing the cache until it listens again"
    );
    Ok(trusted)
}

/// `work`, given up after [`PROBE_TIMEOUT`] with an I/O error (on a path gone silent the
/// answer would never come).
async fn bounded<T>(work: impl Future<Output = T>) -> Result<T, sqlx::Error> {
    tokio::time::timeout(PROBE_TIMEOUT, work)
        .await
        .map_err(|_| {
            let silent = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time");
            sqlx::Error::Io(silent)
        })
}

/// The most notifications applied in one pass.
const MAX_BATCH: usize = 4096;

/// `first` and the notifications already received after it (up to [`MAX_BATCH`]), without
/// waiting for more; `false` if the connection was lost meanwhile. `try_recv` is cancel-safe:
/// one not ready loses nothing.
fn arrived_with(listener: &mut PgListener, first: PgNotification) -> (Vec<PgNotification>, bool) {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match listener.try_recv().now_or_never() {
            Some(Ok(Some(next))) => batch.push(next),
            Some(Ok(None) | Err(_)) => return (batch, false),
            None => break,
        }
    }
    (batch, true)
}

/// A channel only this listener listens on: the fixed prefix and 64 random bits (the process
/// id, should the random source fail).
fn probe_channel() -> String {
    let random = random_bytes().map_or_else(|_| u64::from(std::process::id()), u64::from_le_bytes);
    format!("{CHANNEL}_probe_{random:016x}")
}

/// Tells the subscribers, when dropped, that nothing listens any more.
struct StopsListening<'a>(&'a Subscribers);

impl Drop for StopsListening<'_> {
    fn drop(&mut self) {
        self.0.set_listening(false);
    }
}

/// `pause` plus up to half of it again, at random, so that nodes that all lost their connection
/// at once do not come back in lockstep.
fn jitter(pause: Duration) -> Duration {
    let random = random_bytes().map_or(0, |[byte]| byte);
    pause + pause * u32::from(random) / 512
}
