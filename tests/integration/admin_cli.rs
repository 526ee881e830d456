//! The operator's tool, `examples/admin.rs`, run as a subprocess the way an operator or a script
//! runs it: arguments, password on stdin, `DATABASE_URL`, stdout, one `error: …` line on stderr
//! and the exit code.
//!
//! SQLite only: a subprocess needs a database URL it can open, and a fresh SQLite file in a
//! temporary directory is one with no server and no cleanup of shared state. The behaviour under
//! test is the tool's (parsing, messages, exit codes), not the store's; the library's store
//! behaviour behind each command is covered on both stores elsewhere.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use axum_live_auth::Accounts;
use http::StatusCode;
use sqlx::{SqlitePool, sqlite::SqlitePoolOptions};

use crate::common::{ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, Db, app};

/// The example's binary, built (or found up to date) once per test run.
fn admin_binary() -> &'static Path {
    crate::common::example::binary("admin")
}

/// One run of the tool.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the exit code; a failure must be exactly one `error: …` line on stderr and
    /// nothing on stdout.
    #[track_caller]
    fn code(&self, expected: i32) -> &Self {
        assert_eq!(self.code, expected, "exit code of {self:#?}");
        if expected == 0 {
            assert_eq!(self.stderr, "", "stderr of a success: {self:#?}");
        } else {
            assert!(
                self.stderr.starts_with("error: ")
                    && self.stderr.ends_with('\n')
                    && self.stderr.lines().count() == 1,
                "a failure must print one `error: …` line: {self:#?}"
            );
            assert_eq!(self.stdout, "", "stdout of a failure: {self:#?}");
        }
        self
    }
}

/// Runs the tool with `DATABASE_URL` set to `url` (unset for `None`), `args`, and `stdin`
/// (empty for `None`).
fn cli(url: Option<&str>, args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = Command::new(admin_binary());
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = url {
        command.env("DATABASE_URL", url);
    }
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(stdin) = stdin {
        input.write_all(stdin.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().expect("the tool exited, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A fresh SQLite file in its own temporary directory, removed again on drop.
struct TempDb {
    dir: PathBuf,
    url: String,
    pool: SqlitePool,
}

impl TempDb {
    /// Creates the file; with `migrate`, also the crate's tables (otherwise the tool makes
    /// them).
    async fn new(name: &str, migrate: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "axum-live-auth-admin-cli-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("app.db").display());
        let options = axum_live_auth::sqlite_connect_options(&url).unwrap();
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .unwrap();
        if migrate {
            axum_live_auth::migrate(&pool).await.unwrap();
        }
        Self { dir, url, pool }
    }

    fn run(&self, args: &[&str]) -> Run {
        cli(Some(&self.url), args, None)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        cli(Some(&self.url), args, Some(stdin))
    }

    fn accounts(&self) -> Accounts {
        Accounts::new(&self.pool)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn usage_errors_exit_2_without_touching_a_database() {
    let dir = std::env::temp_dir().join(format!(
        "axum-live-auth-admin-cli-{}-usage",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.db");
    let missing_url = format!("sqlite://{}", missing.display());
    let url = Some(missing_url.as_str());

    // Help: usage with the exit codes on stdout.
    for help in ["help", "--help", "-h"] {
        let run = cli(None, &[help], None);
        run.code(0);
        assert!(
            run.stdout
                .contains("revoke-session <username> <session-id>")
        );
        assert!(run.stdout.contains("Exit codes:"), "{}", run.stdout);
    }
    // No command: the usage, on stderr, as a usage error.
    let run = cli(None, &[], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("Usage: admin"), "{run:#?}");
    assert_eq!(run.stdout, "");

    let run = cli(url, &["frobnicate", "bob"], None);
    run.code(2);
    assert!(
        run.stderr.contains("unknown command 'frobnicate'"),
        "{run:#?}"
    );
    let run = cli(url, &["grant", "bob"], None);
    run.code(2);
    assert!(
        run.stderr
            .contains("usage: admin grant <username> <permission>"),
        "{run:#?}"
    );
    cli(url, &["sessions", "bob", "extra"], None).code(2);
    // A whole token is refused without being echoed (its secret part is a credential).
    let run = cli(
        url,
        &[
            "revoke-session",
            "bob",
            "AAAAAAAAAAAAAAAAAAAAAA.the-secret-part",
        ],
        None,
    );
    run.code(2);
    assert!(!run.stderr.contains("the-secret-part"), "{run:#?}");
    cli(url, &["revoke-session", "bob", "not-an-id"], None).code(2);
    // So is a token's secret part pasted alone.
    let token = axum_live_auth::SessionToken::generate()
        .unwrap()
        .to_string();
    let (_, secret) = token.split_once('.').unwrap();
    let run = cli(url, &["revoke-session", "bob", secret], None);
    run.code(2);
    assert!(run.stderr.contains("not a session id"), "{run:#?}");
    assert!(!run.stderr.contains(secret), "{run:#?}");

    // DATABASE_URL: unset, empty, another database, an SQLite file that is not there.
    let run = cli(None, &["sessions", "bob"], None);
    run.code(2);
    assert!(run.stderr.contains("DATABASE_URL is not set"), "{run:#?}");
    cli(Some(""), &["sessions", "bob"], None).code(2);
    let run = cli(
        Some("mysql://root:hunter2@localhost/app"),
        &["sessions", "bob"],
        None,
    );
    run.code(2);
    assert!(
        !run.stderr.contains("hunter2"),
        "the URL's password leaked: {run:#?}"
    );
    // A libpq key=value string has no scheme: nothing of it is shown.
    let run = cli(Some("host=db password=se:cret"), &["sessions", "bob"], None);
    run.code(2);
    assert!(
        !run.stderr.contains("password=se"),
        "the password leaked: {run:#?}"
    );
    let run = cli(url, &["sessions", "bob"], None);
    run.code(2);
    assert!(run.stderr.contains("does not exist"), "{run:#?}");
    assert!(!missing.exists(), "the tool created an SQLite file");

    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn users_grants_and_roles() {
    // Not migrated: the tool applies the migrations itself.
    let db = TempDb::new("accounts", false).await;

    let run = db.run_with_stdin(&["create-user", "carol"], "carol-password\n");
    run.code(0);
    assert!(run.stdout.starts_with("created user carol"), "{run:#?}");
    let accounts = db.accounts();
    let carol = accounts
        .verify_password("carol", "carol-password")
        .await
        .unwrap()
        .expect("the password from stdin, without its newline");
    // Taken, also in another case: a conflict.
    let run = db.run_with_stdin(&["create-user", "Carol"], "another-password\n");
    run.code(4);
    assert!(run.stderr.contains("taken"), "{run:#?}");
    // Invalid input and no input: usage errors.
    db.run_with_stdin(&["create-user", "dave"], "short\n")
        .code(2);
    db.run_with_stdin(&["create-user", " dave"], "dave-password\n")
        .code(2);
    let run = db.run(&["create-user", "dave"]);
    run.code(2);
    assert!(run.stderr.contains("no password on stdin"), "{run:#?}");
    assert_eq!(accounts.user_id("dave").await.unwrap(), None);
    // A name typed with decomposed accents finds the account, as the login does.
    db.run_with_stdin(&["create-user", "\u{c9}mile"], "emile-password\n")
        .code(0);
    db.run(&["grant", "E\u{301}mile", "reports:read"]).code(0);

    // Direct grants.
    db.run(&["grant", "carol", "reports:write"]).code(0);
    db.run(&["grant", "carol", "reports:write"]).code(0); // a no-op
    let run = db.run(&["grant", "carol", "reports write"]);
    run.code(2);
    assert!(run.stderr.contains("invalid permission name"), "{run:#?}");
    assert_eq!(
        Db::from(db.pool.clone())
            .permissions_column_and_grants(carol)
            .await,
        (
            vec!["reports:write".to_owned()],
            vec!["reports:write".to_owned()]
        )
    );
    let run = db.run(&["revoke", "carol", "reports:write"]);
    run.code(0);
    assert!(run.stdout.contains("revoked"), "{run:#?}");
    let run = db.run(&["revoke", "carol", "reports:write"]);
    run.code(3);
    assert_eq!(
        run.stderr,
        "error: carol has no direct grant 'reports:write'\n"
    );
    let run = db.run(&["grant", "nobody", "reports:write"]);
    run.code(3);
    assert_eq!(run.stderr, "error: no user named 'nobody'\n");
    db.run(&["revoke", "nobody", "reports:write"]).code(3);
    db.run(&["sessions", "nobody"]).code(3);
    // A name no grant can have is a usage error, not "no such grant": a deprovisioning script
    // must not read a quoting mistake as "already revoked".
    db.run(&["revoke", "carol", "reports:read project:42"])
        .code(2);

    // Roles.
    db.run(&["create-role", "auditor"]).code(0);
    db.run(&["create-role", "auditor"]).code(0); // exists already: fine
    db.run(&["create-role", "two words"]).code(2);
    db.run(&["role-grant", "auditor", "reports:read"]).code(0);
    let run = db.run(&["role-grant", "ghost", "reports:read"]);
    run.code(3);
    assert_eq!(run.stderr, "error: no role named 'ghost'\n");
    db.run(&["add-role", "carol", "auditor"]).code(0);
    db.run(&["add-role", "carol", "ghost"]).code(3);
    db.run(&["add-role", "carol", "two words"]).code(2);
    db.run(&["remove-role", "carol", "two words"]).code(2);
    db.run(&["role-revoke", "auditor", "two words"]).code(2);
    db.run(&["add-role", "nobody", "auditor"]).code(3);
    assert_eq!(
        Db::from(db.pool.clone())
            .permissions_column_and_grants(carol)
            .await
            .0,
        ["reports:read"]
    );
    db.run(&["remove-role", "carol", "auditor"]).code(0);
    let run = db.run(&["remove-role", "carol", "auditor"]);
    run.code(3);
    assert_eq!(
        run.stderr,
        "error: carol does not have the role 'auditor'\n"
    );
    assert!(
        Db::from(db.pool.clone())
            .permissions_column_and_grants(carol)
            .await
            .0
            .is_empty()
    );
    db.run(&["role-revoke", "auditor", "reports:read"]).code(0);
    let run = db.run(&["role-revoke", "auditor", "reports:read"]);
    run.code(3);
    assert!(run.stderr.contains("'reports:read'"), "{run:#?}");
    db.run(&["role-revoke", "ghost", "reports:read"]).code(3);

    // Grants and roles on one resource.
    let run = db.run(&["grant", "carol", "project:read", "project:42"]);
    run.code(0);
    assert_eq!(
        run.stdout,
        "carol has the direct grant 'project:read' on 'project:42'\n"
    );
    let ids = |permission: &'static str| {
        let accounts = accounts.clone();
        async move {
            accounts
                .resource_ids(carol, permission, "project", None, 10)
                .await
                .unwrap()
        }
    };
    assert_eq!(ids("project:read").await, ["42"]);
    let run = db.run(&["grant", "carol", "project:read", "project"]);
    run.code(2);
    assert!(run.stderr.contains("not a resource"), "{run:#?}");
    db.run(&["grant", "carol", "a", "b", "c", "d"]).code(2);
    db.run(&["role-grant", "auditor", "project:write"]).code(0);
    db.run(&["add-role", "carol", "auditor", "project:7"])
        .code(0);
    assert_eq!(ids("project:write").await, ["7"]);
    db.run(&["remove-role", "carol", "auditor", "project:7"])
        .code(0);
    db.run(&["remove-role", "carol", "auditor", "project:7"])
        .code(3);
    db.run(&["revoke", "carol", "project:read", "project:42"])
        .code(0);
    let run = db.run(&["revoke", "carol", "project:read", "project:42"]);
    run.code(3);
    assert_eq!(
        run.stderr,
        "error: carol has no direct grant 'project:read' on 'project:42'\n"
    );
    assert!(ids("project:read").await.is_empty());
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_and_bans_take_effect_at_once() {
    let db = TempDb::new("sessions", true).await;
    let app = app(db.pool.clone()).await;
    let bob_1 = app.login(BOB, BOB_PASSWORD).await;
    let bob_2 = app.login(BOB, BOB_PASSWORD).await;
    let alice = app.login(ALICE, ALICE_PASSWORD).await;
    let (bob_1_id, bob_1_secret) = bob_1.split_once('.').unwrap();
    let (bob_2_id, bob_2_secret) = bob_2.split_once('.').unwrap();
    // bob_1 last seen a minute ago: the listing puts bob_2 first.
    sqlx::query("UPDATE auth_sessions SET last_seen_at = last_seen_at - 60000 WHERE id = $1")
        .bind(bob_1_id)
        .execute(&db.pool)
        .await
        .unwrap();

    // The listing: public ids, never secrets.
    let run = db.run(&["sessions", BOB]);
    run.code(0);
    assert!(
        run.stdout
            .starts_with("bob has 2 live sessions (most recently used first):\n"),
        "{}",
        run.stdout
    );
    let header = run.stdout.lines().nth(1).unwrap();
    for column in [
        "SESSION ID",
        "CREATED",
        "LAST SEEN",
        "EXPIRES",
        "IP",
        "USER AGENT",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert_eq!(run.stdout.lines().count(), 4, "{}", run.stdout);
    let rows: Vec<&str> = run.stdout.lines().skip(2).collect();
    assert!(
        rows[0].starts_with(bob_2_id) && rows[1].starts_with(bob_1_id),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains(bob_1_secret) && !run.stdout.contains(bob_2_secret));
    assert!(!run.stdout.contains(alice.split_once('.').unwrap().0));
    assert!(
        run.stdout.contains("integration-test/1.0"),
        "{}",
        run.stdout
    );
    // RFC 3339 in UTC, e.g. 2026-11-29T11:52:09Z.
    let row = run.stdout.lines().nth(2).unwrap();
    let created = row.split_whitespace().nth(1).unwrap();
    assert!(
        created.len() == 20 && created.ends_with('Z') && &created[10..11] == "T",
        "{row}"
    );

    // One session ends, at once; the other stays.
    let run = db.run(&["revoke-session", BOB, bob_1_id]);
    run.code(0);
    assert!(run.stdout.contains(bob_1_id), "{run:#?}");
    assert_eq!(app.status("/me", &bob_1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.status("/me", &bob_2).await, StatusCode::OK);
    let run = db.run(&["sessions", BOB]);
    run.code(0);
    assert!(!run.stdout.contains(bob_1_id) && run.stdout.contains(bob_2_id));
    let run = db.run(&["revoke-session", BOB, bob_1_id]);
    run.code(3);
    assert!(run.stderr.contains(bob_1_id), "{run:#?}");
    // Another user's session is not bob's to end.
    db.run(&["revoke-session", BOB, alice.split_once('.').unwrap().0])
        .code(3);
    assert_eq!(app.status("/me", &alice).await, StatusCode::OK);

    // All of them, with a count.
    let run = db.run(&["revoke-all", BOB]);
    run.code(0);
    assert_eq!(run.stdout, "ended 1 session of bob\n");
    assert_eq!(app.status("/me", &bob_2).await, StatusCode::UNAUTHORIZED);
    let run = db.run(&["revoke-all", BOB]);
    run.code(0);
    assert_eq!(run.stdout, "ended 0 sessions of bob\n");
    let run = db.run(&["sessions", BOB]);
    run.code(0);
    assert_eq!(run.stdout, "bob has no live sessions\n");

    // A password reset ends the user's sessions; the new password works, the old one not.
    let run = db.run_with_stdin(&["set-password", ALICE], "alice-new-password\r\n");
    run.code(0);
    assert!(run.stdout.contains("sessions have ended"), "{run:#?}");
    assert_eq!(app.status("/me", &alice).await, StatusCode::UNAUTHORIZED);
    let accounts = db.accounts();
    assert_eq!(
        accounts
            .verify_password(ALICE, ALICE_PASSWORD)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        accounts
            .verify_password(ALICE, "alice-new-password")
            .await
            .unwrap(),
        Some(app.alice)
    );
    db.run_with_stdin(&["set-password", ALICE], "short\n")
        .code(2);
    db.run_with_stdin(&["set-password", "nobody"], "long-enough\n")
        .code(3);

    // A ban ends the sessions at once and keeps the user out until lifted.
    let bob_3 = app.login(BOB, BOB_PASSWORD).await;
    db.run(&["disable", BOB]).code(0);
    assert_eq!(app.status("/me", &bob_3).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        accounts.verify_password(BOB, BOB_PASSWORD).await.unwrap(),
        None
    );
    db.run(&["disable", "nobody"]).code(3);
    db.run(&["enable", BOB]).code(0);
    assert_eq!(
        accounts.verify_password(BOB, BOB_PASSWORD).await.unwrap(),
        Some(app.bob)
    );
    db.run(&["enable", "nobody"]).code(3);
}
