//! The crate's migrations live beside the application's own.

use crate::common::Db;
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
