//! The client event stream (`GET /account/events`, Server-Sent Events): the user's picture
//! (`principal`) at once and after every change, `ended` when the session stops being valid,
//! and `reconnect` when the client should open the stream again (the session went on under a
//! rotated token, or this node may have missed a change). Every event is decided by a fresh
//! read of the session from the database; the node's hub only says when to read, and on SQLite
//! so does every heartbeat (see [`Open::next_read`]).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::response::{
    IntoResponse, Response,
    sse::{Event, KeepAlive, Sse},
};
use futures_util::stream::{self, Stream};
use http::{HeaderValue, header};
use serde::Serialize;

use super::{Subscription, Wake};
use crate::{
    CurrentUser, SessionId, UserId,
    shared::Shared,
    store::{Missed, StoreKind, by},
};

/// How long a browser waits before reconnecting a closed stream.
const RETRY: Duration = Duration::from_secs(3);

/// What a `principal` event carries: the user and their permissions, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Picture {
    id: UserId,
    username: String,
    permissions: Vec<String>,
}

/// A task aborted when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The stream's state between events.
struct Open {
    shared: Arc<Shared>,
    session: SessionId,
    subscription: Subscription,
    /// What the client was last told.
    sent: Option<Picture>,
    /// The session's secret (hashed) and user at the first read: a row found later with
    /// another one is another session (its secret or user replaced by hand), which the
    /// stream's token no longer opens.
    opened: Option<(Vec<u8>, UserId)>,
    /// When the session expires unless something changes (idle or absolute deadline).
    expires: Instant,
    done: bool,
}

/// The event stream of the request's session, or the refusal past the stream bounds.
pub(crate) fn open(shared: &Arc<Shared>, user: &CurrentUser) -> Response {
    let subscription = match shared.hub.subscribe(user.id(), user.session_id()) {
        Ok(subscription) => subscription,
        Err(rejection) => return rejection.into_response(),
    };
    let state = Open {
        shared: Arc::clone(shared),
        session: user.session_id().clone(),
        subscription,
        sent: None,
        opened: None,
        expires: Instant::now(),
        done: false,
    };
    let mut response = Sse::new(events(state))
        .keep_alive(KeepAlive::new().interval(shared.config.streams.heartbeat))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies such as nginx would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn events(state: Open) -> impl Stream<Item = Result<Event, std::convert::Infallible>> + Send {
    stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        Some((Ok(state.next().await), state))
    })
}

impl Open {
    /// The next event to send: the first picture at once, then whatever a change or a deadline
    /// brings (waiting until one does).
    async fn next(&mut self) -> Event {
        loop {
            if self.sent.is_some() {
                let deadline = tokio::time::sleep_until(self.next_read().into());
                tokio::select! {
                    wake = self.subscription.changed() => {
                        if wake == Wake::Lost {
                            // This node no longer hears of changes: the client must not trust
                            // its picture; it reconnects and reads a fresh one.
                            return self.end("reconnect");
                        }
                    }
                    () = deadline => {}
                }
            }
            // Boxed: the read's state lives on the heap only while it runs, so an idle stream
            // stays small.
            match Box::pin(self.read()).await {
                Ok(Ok(picture)) if self.sent.as_ref() == Some(&picture) => {}
                Ok(Ok(picture)) => {
                    let first = self.sent.is_none();
                    let event = Event::default()
                        .event("principal")
                        .json_data(&picture)
                        .unwrap_or_else(|_| Event::default().event("principal"));
                    self.sent = Some(picture);
                    return if first { event.retry(RETRY) } else { event };
                }
                // The session goes on under a new token, which a rotation set in the browser:
                // reconnecting opens the new session's stream.
                Ok(Err(Missed::Rotated(_))) => return self.end("reconnect"),
                Ok(Err(Missed::Unknown)) => return self.end("ended"),
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "event stream: session check failed; closing the stream"
                    );
                    return self.end("reconnect");
                }
            }
        }
    }

    /// When to read again if nothing wakes the stream first: when the session expires. On
    /// SQLite also at the next heartbeat: nothing there tells the node of a change written by
    /// plain SQL, or by a request dropped while its write committed (the write still commits;
    /// the wake after it never runs).
    fn next_read(&self) -> Instant {
        match self.shared.store.kind() {
            StoreKind::Postgres => self.expires,
            StoreKind::Sqlite => self
                .expires
                .min(Instant::now() + self.shared.config.streams.heartbeat),
        }
    }

    /// The session's picture as the database has it now (never the cache), or why it is no
    /// longer valid.
    ///
    /// The read runs as a task of its own, aborted if the stream is dropped first. The stream
    /// runs only while the server polls its body, and a server stops polling a body its client
    /// does not read (a full HTTP/2 window, full socket buffers); a read made inside the
    /// stream would then keep its turn, and every other stream of the node would wait for it
    /// forever. The task finishes and gives its turn back, polled or not.
    async fn read(&mut self) -> Result<Result<Picture, Missed>, sqlx::Error> {
        let shared = Arc::clone(&self.shared);
        let session = self.session.clone();
        let mut read = AbortOnDrop(tokio::spawn(async move {
            // The wait for a turn is not the database's: the deadline starts after it.
            let _turn = shared.hub.read_turn().await;
            // Deadlines count from before the read: the database's clock was read during it,
            // and a slow answer must not push the end of the session later.
            let now = Instant::now();
            let deadline = tokio::time::Instant::from_std(now + shared.config.lookup_timeout);
            by(deadline, shared.store.lookup(&session))
                .await
                .map(|row| (now, row))
        }));
        // Only a panic in the read (or the runtime shutting down) fails the join.
        let (now, row) = (&mut read.0)
            .await
            .map_err(|_| sqlx::Error::WorkerCrashed)??;
        Ok(row.and_then(|row| {
            let (secret_hash, user) = self
                .opened
                .get_or_insert_with(|| (row.secret_hash.clone(), row.user_id));
            if *secret_hash != row.secret_hash || *user != row.user_id {
                return Err(Missed::Unknown);
            }
            let left = row
                .now
                .until(row.idle_expires_at)
                .min(row.now.until(row.expires_at));
            self.expires = now + left;
            let mut permissions = row.permissions.0;
            permissions.sort_unstable();
            permissions.dedup();
            Ok(Picture {
                id: row.user_id,
                username: row.username,
                permissions,
            })
        }))
    }

    /// The last event: `ended` (the session is over) or `reconnect` (the picture may be stale).
    /// Its data is `{}`: a browser's `EventSource` never dispatches an event without data.
    fn end(&mut self, event: &'static str) -> Event {
        self.done = true;
        Event::default().event(event).data("{}")
    }
}
