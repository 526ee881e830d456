//! The crate's migrations, embedded at compile time, and [`migrate`], which applies them.

use std::sync::LazyLock;

use sqlx::migrate::Migrator;

use super::{Backend, IntoAuthStore};
use crate::Error;

/// The bookkeeping table of the crate's migrations (see [`migrate`]).
const MIGRATIONS_TABLE: &str = "_axum_live_auth_migrations";

/// The Postgres store's migrations (`migrations/postgres`), embedded at compile time.
///
/// Usually applied with [`migrate`](crate::migrate); a test can name it in
/// `#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]`.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
/// axum_live_auth::POSTGRES_MIGRATOR.run(&pool).await?;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "postgres")]
pub static POSTGRES_MIGRATOR: LazyLock<Migrator> = LazyLock::new(postgres_migrator);

#[cfg(feature = "postgres")]
fn postgres_migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    // Set once, before the first run; changing it on a deployed database would make the
    // migrations run again, which is what the "dangerous" in the name warns about.
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// The SQLite store's migrations (`migrations/sqlite`), embedded at compile time, with the same
/// tables and columns as `POSTGRES_MIGRATOR` where SQLite allows.
/// Usually applied with [`migrate`](crate::migrate).
#[cfg(feature = "sqlite")]
pub static SQLITE_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
});

/// Applies the crate's migrations to the store's database:
/// `POSTGRES_MIGRATOR` (feature `postgres`) or `SQLITE_MIGRATOR` (feature `sqlite`).
///
/// Their bookkeeping table is `_axum_live_auth_migrations`, separate from the application's
/// own `_sqlx_migrations`, so both migrators run on one database without seeing each other.
/// On Postgres they are applied in one transaction, under a transaction-level advisory lock on
/// the key sqlx's migrator locks: nodes starting together apply each migration once, and a
/// failed run leaves neither part of the migrations nor the lock behind. On SQLite one run at
/// a time applies them, under an operating-system lock on a file beside the database
/// (`<database>-migrate-lock`), so that processes starting together (the app and the admin
/// tool) apply each migration once.
///
/// # Errors
///
/// [`Error::Infrastructure`] when a migration fails, the applied ones differ from the shipped
/// ones, or (SQLite) the lock file cannot be opened or locked.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
/// axum_live_auth::migrate(&pool).await?;
/// # Ok(())
/// # }
/// ```
pub async fn migrate(store: impl IntoAuthStore) -> Result<(), Error> {
    let store = store.into_auth_store();
    match &store.backend {
        // One transaction, in READ COMMITTED: a node that waited for the lock then reads what
        // the node before it applied. Through a pooler, one that pins its server connection,
        // since the migrator's statements must share one.
        #[cfg(feature = "postgres")]
        Backend::Postgres(store) => {
            let mut transaction = store.transaction(super::BEGIN.postgres).await?;
            if let Err(error) = migrate_postgres(&mut transaction).await {
                // At once, not when the connection is next used: the lock goes with it.
                let _ = transaction.rollback().await;
                return Err(error);
            }
            transaction.commit().await?;
        }
        // One SQLite migration switches foreign keys off on its connection and runs its own
        // transaction, which sqlx does not know of: a connection the migrator did not finish
        // on (it failed, or the caller gave up and dropped this future) is closed, never
        // handed back to the pool, where it would go on holding the database's write lock.
        // One it finished on goes back (an in-memory database lives only as long as its
        // connections).
        //
        // sqlx takes no lock on SQLite, and reads which migrations are applied once, before
        // the first: two runs at once would both apply the pending ones, and the second run
        // of a migration with its own transaction (the rebuild of `auth_users`) would succeed,
        // dropping the triggers made after it. So one run at a time, under a lock on a file
        // beside the database.
        #[cfg(feature = "sqlite")]
        Backend::Sqlite(pool) => {
            let mut migration = ClosedUnlessFinished {
                connection: pool.acquire().await?,
                finished: false,
            };
            let _one_at_a_time = lock_beside(&mut migration.connection).await?;
            SQLITE_MIGRATOR
                .run_direct(None, &mut *migration.connection, false)
                .await?;
            migration.finished = true;
        }
    }
    Ok(())
}

/// An exclusive lock on `<database>-migrate-lock`, beside the database `connection` is on,
/// once no other `migrate` (of this process or another) holds it; the operating system lets go
/// of it when the file is dropped or the process ends. `None` for a database without a file
/// (in memory), which no other process can open.
#[cfg(feature = "sqlite")]
async fn lock_beside(
    connection: &mut sqlx::SqliteConnection,
) -> Result<Option<std::fs::File>, Error> {
    // The main database's file, as SQLite resolved it: empty for one in memory.
    let (_, _, file): (i64, String, String) = sqlx::query_as("PRAGMA database_list")
        .fetch_one(connection)
        .await?;
    if file.is_empty() {
        return Ok(None);
    }
    let io = |error| sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(error));
    let path = format!("{file}-migrate-lock");
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path);
    // Made by another user (the admin tool run as root): a lock needs no write access.
    let locked = match opened {
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            std::fs::File::open(&path)
        }
        opened => opened,
    }
    .map_err(io)?;
    // Tried again every 50 ms rather than waited for on a blocking thread, so that a caller
    // who gives up on `migrate` stops waiting.
    loop {
        match locked.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io(error).into()),
        }
    }
    Ok(Some(locked))
}

/// A connection closed when dropped, rather than handed back to its pool, unless the work on
/// it finished.
#[cfg(feature = "sqlite")]
struct ClosedUnlessFinished {
    connection: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    finished: bool,
}

#[cfg(feature = "sqlite")]
impl Drop for ClosedUnlessFinished {
    fn drop(&mut self) {
        if !self.finished {
            self.connection.close_on_drop();
        }
    }
}

/// Applies the Postgres migrations on `conn`, in its transaction (each migration a savepoint),
/// under a transaction-level advisory lock on the key sqlx's migrator uses, so that another
/// node's `migrate`, one of an earlier version of this crate, or the app's own migrator waits.
/// sqlx's own lock belongs to the session and is released only after success: a failed
/// migration left it on its connection, and every later `migrate` waited for as long as that
/// connection lived (through a pooler, a server connection other clients share).
#[cfg(feature = "postgres")]
async fn migrate_postgres(conn: &mut sqlx::PgConnection) -> Result<(), Error> {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(migration_lock_key(&database))
        .execute(&mut *conn)
        .await?;
    // `run` takes an `Acquire`, and with a connection its future is not provably `Send` for
    // every lifetime (nor would `migrate` be): sqlx's `run_direct` is for this.
    let mut migrator = postgres_migrator();
    migrator.set_locking(false);
    Ok(migrator.run_direct(None, conn, false).await?)
}

/// The advisory lock key of sqlx's migrator for `database`: `0x3d32ad9e` × its CRC-32.
#[cfg(feature = "postgres")]
fn migration_lock_key(database: &str) -> i64 {
    0x3d32_ad9e * i64::from(crc32(database.as_bytes()))
}

/// CRC-32 (ISO-HDLC, as zlib and Ethernet), bit by bit: it runs once per `migrate`.
#[cfg(feature = "postgres")]
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    #[test]
    fn the_lock_key_is_the_one_sqlx_takes() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(migration_lock_key("postgres"), 0x3d32_ad9e * 0x156a_8775);
    }
}
