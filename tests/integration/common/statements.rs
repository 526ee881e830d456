//! Counting the statements an app sends, from outside the crate: on Postgres at the wire (a
//! proxy that reads the protocol, see `wire.rs`); on SQLite, which has no wire, by sqlx's own
//! statement log on the pool's worker thread, which this test names uniquely.

use std::{
    collections::HashMap,
    sync::{
        Mutex, Once,
        atomic::{AtomicU64, Ordering},
    },
};

use sqlx::{PgPool, SqlitePool, postgres::PgPoolOptions, sqlite::SqlitePoolOptions};
use tracing_subscriber::{Layer, layer::SubscriberExt};

use super::{Db, wire::RoundTrips};

/// Statements logged by sqlx per SQLite worker thread name.
static BY_THREAD: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// Counts `sqlx::query` events by the name of the thread that logs them.
struct ByThread;

impl<S: tracing::Subscriber> Layer<S> for ByThread {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        if let Some(name) = std::thread::current().name()
            && name.starts_with("counted-")
        {
            let mut map = BY_THREAD.lock().unwrap();
            *map.get_or_insert_with(HashMap::new)
                .entry(name.to_owned())
                .or_default() += 1;
        }
    }
}

/// The process-wide subscriber: counts SQLite statements of counted pools, writes nothing.
/// Tests that read logs add a subscriber of their own for their thread.
pub fn install_global() {
    static GLOBAL: Once = Once::new();
    GLOBAL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(ByThread).with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
        );
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Counts one app's statements.
#[derive(Clone)]
pub enum Counter {
    Wire(RoundTrips),
    Thread(String),
}

impl Counter {
    pub fn get(&self) -> u64 {
        match self {
            Self::Wire(trips) => trips.get().statements as u64,
            Self::Thread(name) => BY_THREAD
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|map| map.get(name).copied())
                .unwrap_or(0),
        }
    }
}

/// A pool on the same database whose statements are counted: through a counting proxy
/// (Postgres, no ping on checkout) or with one worker thread of a unique name (SQLite).
pub async fn counted(db: &Db) -> (Db, Counter) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    install_global();
    match db {
        Db::Postgres(pool) => {
            let (trips, options) = RoundTrips::proxy(&pool.connect_options()).await;
            let pool: PgPool = PgPoolOptions::new()
                .test_before_acquire(false)
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            (Db::Postgres(pool), Counter::Wire(trips))
        }
        Db::Sqlite(pool) => {
            let name = format!("counted-{}", NEXT.fetch_add(1, Ordering::Relaxed));
            let thread = name.clone();
            let options = (*pool.connect_options())
                .clone()
                .thread_name(move |_| thread.clone());
            let pool: SqlitePool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            (Db::Sqlite(pool), Counter::Thread(name))
        }
    }
}
