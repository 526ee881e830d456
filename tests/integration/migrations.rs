//! The crate's migrations live beside the application's own.

use crate::common::Db;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{
    SqlSafeStr as _,
    migrate::{Migration, MigrationType, Migrator},
};

fn app_migrator() -> Migrator {
    // An application's own migrations, tracked in sqlx's default `_sqlx_migrations` table. The
    // second one references the crate's table, as an app's profile table would.
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "app notes".into(),
            MigrationType::Simple,
            "CREATE TABLE app_notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)".into_sql_str(),
            false,
        ),
        Migration::new(
            20261129000001, // the same version number as the crate's first migration
            "app profiles".into(),
            MigrationType::Simple,
            "CREATE TABLE app_profiles (user_id BIGINT PRIMARY KEY REFERENCES auth_users (id))"
                .into_sql_str(),
            false,
        ),
    ])
}

#[sqlx::test(migrations = false)]
async fn postgres_the_crate_and_the_app_migrate_one_database_independently(pool: sqlx::PgPool) {
    migrate_side_by_side(pool.into()).await;
}

#[sqlx::test(migrations = false)]
async fn sqlite_the_crate_and_the_app_migrate_one_database_independently(pool: sqlx::SqlitePool) {
    migrate_side_by_side(pool.into()).await;
}

async fn migrate_side_by_side(db: Db) {
    axum_live_auth::migrate(db.store()).await.unwrap();
    let app = app_migrator();
    db.run(&app).await;
    // Both again: each knows what it has applied, neither trips over the other.
    axum_live_auth::migrate(db.store()).await.unwrap();
    db.run(&app).await;

    assert_eq!(db.count("SELECT count(*) FROM _sqlx_migrations").await, 2);
    let shipped = if db.is_sqlite() {
        axum_live_auth::SQLITE_MIGRATOR.iter().count()
    } else {
        axum_live_auth::POSTGRES_MIGRATOR.iter().count()
    };
    assert_eq!(
        db.count("SELECT count(*) FROM _axum_live_auth_migrations")
            .await,
        i64::try_from(shipped).unwrap()
    );
    for table in [
        "auth_users",
        "auth_roles",
        "auth_role_permissions",
        "auth_user_roles",
        "auth_user_permissions",
        "auth_sessions",
        "app_notes",
        "app_profiles",
    ] {
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table} exists"
        );
    }
}

/// Makes the next `migrate` fail once it holds its lock: the last applied migration's checksum
/// no longer matches the shipped one.
pub(crate) async fn tamper_with_the_last_migration(pool: &sqlx::PgPool) {
    sqlx::query(
        "UPDATE _axum_live_auth_migrations SET checksum = '\\x00'
          WHERE version = (SELECT max(version) FROM _axum_live_auth_migrations)",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Advisory locks held in the pool's database, by any session.
pub(crate) async fn advisory_locks(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks
          WHERE locktype = 'advisory'
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A failed `migrate` leaves no lock behind. (Before, sqlx's session-level lock stayed on the
/// connection the failure happened on, back in the pool, and a `migrate` on any other
/// connection waited for as long as that one lived.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_failed_migrate_leaves_no_lock_behind(pool: sqlx::PgPool) {
    tamper_with_the_last_migration(&pool).await;
    let failed = axum_live_auth::migrate(&pool).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(advisory_locks(&pool).await, 0);
}

/// Nodes starting together: each migration is applied once, and every `migrate` succeeds (the
/// ones that waited for the lock read what the first applied), even where the database's
/// default isolation would take their snapshot before the wait.
#[sqlx::test(migrations = false)]
async fn concurrent_migrates_all_succeed(_: PgPoolOptions, options: PgConnectOptions) {
    let pool = PgPoolOptions::new()
        .connect_with(options.options([("default_transaction_isolation", "repeatable read")]))
        .await
        .unwrap();
    let runs = (0..4).map(|_| axum_live_auth::migrate(&pool));
    let results = futures_util::future::join_all(runs).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _axum_live_auth_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        applied,
        i64::try_from(axum_live_auth::POSTGRES_MIGRATOR.iter().count()).unwrap()
    );
}

/// An upgrade leaves an app's views on the crate's tables working: the README's schema is a
/// contract apps may query. (Before, migration `20261208000001_grant_pages` changed the type of
/// `resource_id`, which a view on it refuses: `migrate` failed, and the app could not start.)
#[sqlx::test(migrations = false)]
async fn an_upgrade_keeps_an_apps_views_on_the_grant_tables(pool: sqlx::PgPool) {
    let shipped = &*axum_live_auth::POSTGRES_MIGRATOR;
    let earlier = shipped.iter().filter(|m| m.version < 20261208000001);
    let mut before = Migrator::with_migrations(earlier.cloned().collect());
    before.dangerous_set_table_name("_axum_live_auth_migrations");
    before.run(&pool).await.unwrap();
    sqlx::raw_sql(
        "CREATE VIEW app_project_members AS
             SELECT user_id, resource_id AS project FROM auth_user_resource_roles;
         CREATE VIEW app_project_grants AS
             SELECT user_id, resource_id AS project FROM auth_user_resource_permissions",
    )
    .execute(&pool)
    .await
    .unwrap();
    axum_live_auth::migrate(&pool).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _axum_live_auth_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, i64::try_from(shipped.iter().count()).unwrap());
}
