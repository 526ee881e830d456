//! The node's fan-out of changes to open event streams: one wake-up channel per user with open
//! streams, woken by the listener's notifications (Postgres) or by the crate's own writes
//! (in-process, both stores). No database connection per stream.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::{Semaphore, SemaphorePermit, watch};

use crate::{AuthRejection, SessionId, UserId};

/// Bounds on open event streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamLimits {
    pub(crate) per_session: usize,
    pub(crate) per_user: usize,
    pub(crate) per_node: usize,
}

/// Streams of one user: the channel that wakes them, and how many there are.
#[derive(Debug, Default)]
struct UserStreams {
    wake: watch::Sender<()>,
    streams: usize,
}

#[derive(Debug, Default)]
struct Open {
    users: HashMap<UserId, UserStreams>,
    /// Open streams per session, and whose the session is (to route `s:` notifications).
    sessions: HashMap<SessionId, (UserId, usize)>,
    total: usize,
}

/// The node's open event streams.
#[derive(Debug)]
pub(crate) struct Hub {
    open: Mutex<Open>,
    /// Wakes every stream: a change of everything (`*`), or the listener lost or back.
    everyone: watch::Sender<()>,
    /// Whether changes reach this node now. Without a listener to wait for (SQLite), always.
    listening: AtomicBool,
    /// Whether the app closed the streams (its server is shutting down).
    closed: AtomicBool,
    /// Turns to read the database for a stream: a change that wakes many streams at once (a
    /// permission of a role many users hold, `*`) queues their reads here, not in the pool
    /// ahead of the requests.
    reads: Semaphore,
    limits: StreamLimits,
}

/// Why a stream woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Something about the user or the session may have changed: check again.
    Changed,
    /// The node no longer hears of changes, or the app closed the streams: end the stream,
    /// the client will reconnect.
    Lost,
}

impl Hub {
    /// `needs_listener`: changes made elsewhere arrive only through the listener (Postgres), so
    /// streams are refused until it listens. `reads`: how many streams may read the database
    /// at once (at least one).
    pub(crate) fn new(limits: StreamLimits, needs_listener: bool, reads: usize) -> Self {
        Self {
            open: Mutex::default(),
            everyone: watch::Sender::new(()),
            listening: AtomicBool::new(!needs_listener),
            closed: AtomicBool::new(false),
            reads: Semaphore::new(reads.max(1)),
            limits,
        }
    }

    /// Waits for a turn to read the database for a stream; the turn ends when dropped.
    pub(crate) async fn read_turn(&self) -> Option<SemaphorePermit<'_>> {
        // Never closed: `None` cannot happen, and a stream would then read without a turn.
        self.reads.acquire().await.ok()
    }

    /// Registers a stream of `session` of `user`; refused past the bounds (`429` for the
    /// session's or the user's, which one client can reach; `503` for the node's), while
    /// changes cannot reach the node, or once the streams are closed.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        user: UserId,
        session: &SessionId,
    ) -> Result<Subscription, AuthRejection> {
        let busy = AuthRejection::Busy(std::time::Duration::from_secs(5));
        // Receivers start with what was sent before as seen. `everyone` is subscribed before
        // `listening` and `closed` are read: a loss or a close signalled after the read wakes
        // this stream, and one signalled before it is seen by the read.
        let everyone = self.everyone.subscribe();
        if !self.live() {
            return Err(busy);
        }
        let mut open = self.lock();
        if open.total >= self.limits.per_node {
            return Err(busy);
        }
        let per_session = open.sessions.get(session).map_or(0, |(_, n)| *n);
        let per_user = open.users.get(&user).map_or(0, |u| u.streams);
        if per_session >= self.limits.per_session || per_user >= self.limits.per_user {
            return Err(AuthRejection::Throttled(std::time::Duration::from_secs(5)));
        }
        open.total += 1;
        open.sessions.entry(session.clone()).or_insert((user, 0)).1 += 1;
        let streams = open.users.entry(user).or_default();
        streams.streams += 1;
        let user_wake = streams.wake.subscribe();
        drop(open);
        Ok(Subscription {
            hub: Arc::clone(self),
            user,
            session: session.clone(),
            user_wake,
            everyone,
        })
    }

    /// Applies a notification payload: `s:<session>`, `u:<user>`, `r:…` (scoped grants, which
    /// streams do not show) or anything else (everyone).
    pub(crate) fn apply(&self, payload: &str) {
        if let Some(session) = payload.strip_prefix("s:") {
            let open = self.lock();
            let user = SessionId::parse(session).and_then(|s| open.sessions.get(&s).map(|e| e.0));
            if let Some(streams) = user.and_then(|user| open.users.get(&user)) {
                streams.wake.send_replace(());
            }
        } else if let Some(user) = payload.strip_prefix("u:") {
            if let Ok(user) = user.parse::<UserId>() {
                self.user_changed(user);
            }
        } else if !payload.starts_with("r:") {
            self.everyone.send_replace(());
        }
    }

    /// The crate itself changed something of `user` (in-process, both stores).
    pub(crate) fn user_changed(&self, user: UserId) {
        if let Some(streams) = self.lock().users.get(&user) {
            streams.wake.send_replace(());
        }
    }

    // Called by the listener, which is Postgres only.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
        if !listening {
            self.everyone.send_replace(());
        }
    }

    /// Ends every open stream (with `reconnect`) and refuses new ones.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.everyone.send_replace(());
    }

    /// Whether streams may run: changes reach the node, and the app has not closed them.
    fn live(&self) -> bool {
        self.listening.load(Ordering::Acquire) && !self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn open_streams(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open stream's registration; unregisters when dropped.
#[derive(Debug)]
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    user: UserId,
    session: SessionId,
    user_wake: watch::Receiver<()>,
    everyone: watch::Receiver<()>,
}

impl Subscription {
    /// Waits for the next change that may concern this stream.
    pub(crate) async fn changed(&mut self) -> Wake {
        tokio::select! {
            _ = self.user_wake.changed() => {}
            _ = self.everyone.changed() => {}
        }
        if self.hub.live() {
            Wake::Changed
        } else {
            Wake::Lost
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut open = self.hub.lock();
        open.total = open.total.saturating_sub(1);
        if let Entry::Occupied(mut session) = open.sessions.entry(self.session.clone()) {
            session.get_mut().1 -= 1;
            if session.get().1 == 0 {
                session.remove();
            }
        }
        if let Entry::Occupied(mut user) = open.users.entry(self.user) {
            user.get_mut().streams -= 1;
            if user.get().streams == 0 {
                user.remove();
            }
        }
    }
}
