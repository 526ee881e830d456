#![allow(
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

//! Integration tests against a real Postgres (`DATABASE_URL`, a superuser; `scripts/test`
//! provides one). Each `#[sqlx::test]` gets a fresh database with the crate's migrations.

mod account;
mod admin_cli;
mod adversarial;
mod browser;
mod cache;
mod common;
mod events;
mod failure;
mod forward_auth;
mod hardening;
mod hostile;
mod kept;
mod live;
mod migrations;
mod pgbouncer;
mod quickstart;
mod readme;
mod recovery;
mod resources;
mod scale;
mod session;
mod sqlite;
