//! The crate's migrations live beside the application's own.

use sqlx::{
    PgPool, SqlSafeStr as _,
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
            "CREATE TABLE app_notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)".into_sql_str(),
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
async fn the_crate_and_the_app_migrate_one_database_independently(pool: PgPool) {
    axum_live_auth::migrate(&pool).await.unwrap();
    let app = app_migrator();
    app.run(&pool).await.unwrap();
    // Both again: each knows what it has applied, neither trips over the other.
    axum_live_auth::migrate(&pool).await.unwrap();
    app.run(&pool).await.unwrap();

    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table}"
            )))
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(count("_sqlx_migrations").await, 2);
    assert_eq!(
        count("_axum_live_auth_migrations").await,
        axum_live_auth::MIGRATOR.iter().count() as i64
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
        assert_eq!(count(table).await, 0, "{table} exists");
    }
}
