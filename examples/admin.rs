//! Admin: an operator's command-line tool for users, roles, grants and sessions, working on the
//! app's own database (`DATABASE_URL`, Postgres or SQLite). Every change takes effect on the
//! user's next request, on every node, without a restart.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@localhost/postgres   # or sqlite://quickstart.db
//! printf '%s\n' "$NEW_PASSWORD" | cargo run --example admin -- create-user carol
//! cargo run --example admin -- grant carol reports:read
//! cargo run --example admin -- sessions bob
//! cargo run --example admin -- revoke-session bob 3q2-7wXo0Vd4JtSgJ0pXkQ
//! cargo run --example admin -- disable bob
//! ```
//!
//! It applies the crate's migrations before anything else (a no-op once applied). It does not
//! create an SQLite file that is not there: a mistyped path is an error, not a new empty
//! database.
//!
//! Commands (`help`, `--help` or `-h` prints this list on stdout; no command at all prints it on
//! stderr and exits 2):
//!
//! ```text
//! create-user <username>              create a user; password: one line on stdin
//! set-password <username>             reset a password (one line on stdin); ends all the
//!                                     user's sessions
//! grant <username> <permission> [<type:id>]   grant a permission to the user directly
//!                                      (on one resource only, such as project:42)
//! revoke <username> <permission> [<type:id>]  revoke a direct grant (a role may still grant it)
//! add-role <username> <role> [<type:id>]     give the user a role (on one resource only)
//! remove-role <username> <role> [<type:id>]  take a role away from the user
//! create-role <role>                  create a role (nothing happens if it exists)
//! role-grant <role> <permission>      add a permission to a role
//! role-revoke <role> <permission>     remove a permission from a role
//! disable <username>                  ban the user and end all their sessions
//! enable <username>                   lift a ban (the user has to log in again)
//! sessions <username>                 list the user's live sessions
//! revoke-session <username> <id>      end one session, by the public id `sessions` lists
//! revoke-all <username>               end all of the user's sessions
//! ```
//!
//! Output for people goes to stdout. An error is one line on stderr, `error: …`, and the exit
//! code says what kind it was:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | database or other runtime failure (cannot connect, migration failed, query failed; for `sessions` and `help`, stdout could not be written) |
//! | 2 | usage error: unknown command, wrong number of arguments, `DATABASE_URL` unset or invalid (or an SQLite file that does not exist), no password on stdin, invalid username, password, permission or role name, malformed session id |
//! | 3 | not found: unknown user or role, or a revoke of a grant, role or session that does not exist |
//! | 4 | conflict: the username is taken |
//!
//! The password is read as one line; the trailing `\n` (or `\r\n`) is not part of it. From a
//! terminal the tool prompts on stderr, and the typed password is visible: pipe it in instead.
//! With `RUST_LOG=axum_live_auth::security=info` the crate's security events (session revoked,
//! password changed, …) are logged to stderr, for an audit trail.

use std::{
    ffi::OsString,
    fmt::Write as _,
    io::{self, BufRead, IsTerminal, Read, Write},
    process::ExitCode,
    str::FromStr,
    time::Duration,
};

use axum_live_auth::{
    Accounts, AuthStore, Error, MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES, Resource, SessionId,
    SessionInfo, UserId,
};
use sqlx::{
    ConnectOptions as _, Connection as _, PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::SqlitePoolOptions,
};
use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};
use tracing_subscriber::EnvFilter;

/// Exit code: success.
const OK: u8 = 0;
/// Exit code: a database or other runtime failure.
const RUNTIME: u8 = 1;
/// Exit code: the command line, `DATABASE_URL` or an input value is wrong.
const USAGE: u8 = 2;
/// Exit code: the user, role, grant or session does not exist.
const NOT_FOUND: u8 = 3;
/// Exit code: the username is taken.
const CONFLICT: u8 = 4;

/// Every command: name, arguments, what it does. The usage text and the argument count check
/// are both made from this table.
const COMMANDS: &[(&str, &[&str], &str)] = &[
    (
        "create-user",
        &["<username>"],
        "create a user; password: one line on stdin",
    ),
    (
        "set-password",
        &["<username>"],
        "reset the password (one line on stdin); ends all the user's sessions",
    ),
    (
        "grant",
        &["<username>", "<permission>", "[<type:id>]"],
        "grant a permission to the user directly (on one resource only, such as project:42)",
    ),
    (
        "revoke",
        &["<username>", "<permission>", "[<type:id>]"],
        "revoke a direct grant (a role of the user may still grant it)",
    ),
    (
        "add-role",
        &["<username>", "<role>", "[<type:id>]"],
        "give the user a role (on one resource only, such as project:42)",
    ),
    (
        "remove-role",
        &["<username>", "<role>", "[<type:id>]"],
        "take a role away from the user",
    ),
    (
        "create-role",
        &["<role>"],
        "create a role (nothing happens if it exists)",
    ),
    (
        "role-grant",
        &["<role>", "<permission>"],
        "add a permission to a role",
    ),
    (
        "role-revoke",
        &["<role>", "<permission>"],
        "remove a permission from a role",
    ),
    (
        "disable",
        &["<username>"],
        "ban the user and end all their sessions",
    ),
    (
        "enable",
        &["<username>"],
        "lift a ban (the user has to log in again)",
    ),
    ("sessions", &["<username>"], "list the user's live sessions"),
    (
        "revoke-session",
        &["<username>", "<session-id>"],
        "end one session, by the public id `sessions` lists",
    ),
    (
        "revoke-all",
        &["<username>"],
        "end all of the user's sessions",
    ),
];

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  database or other runtime failure
  2  usage error: unknown command, wrong arguments, DATABASE_URL unset or invalid
     (or an SQLite file that does not exist), no password on stdin, invalid username,
     password, permission or role name, malformed session id
  3  not found: unknown user or role, or a revoke of a grant, role or session that
     does not exist
  4  conflict: the username is taken";

fn usage() -> String {
    let mut text = String::from(
        "Usage: admin <command> [arguments]\n\n\
         Manages the users, roles, grants and sessions of axum-live-auth in the database\n\
         DATABASE_URL names (postgres://… or sqlite://…). Migrations are applied first.\n\n\
         Commands:\n",
    );
    let width = COMMANDS
        .iter()
        .map(|(name, args, _)| signature(name, args).len())
        .max()
        .unwrap_or(0);
    for (name, args, about) in COMMANDS {
        let _ = writeln!(text, "  {:width$}  {about}", signature(name, args));
    }
    let _ = writeln!(text, "  {:width$}  print this text", "help");
    text.push_str(
        "\nPasswords are read as one line from stdin (the trailing newline is not part of it),\n\
         e.g. printf '%s\\n' \"$PASSWORD\" | admin create-user carol\n\
         RUST_LOG=axum_live_auth::security=info logs the security events to stderr.\n\n",
    );
    text.push_str(EXIT_CODES);
    text.push('\n');
    text
}

fn signature(name: &str, args: &[&str]) -> String {
    std::iter::once(name)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A parsed command line.
#[derive(Debug)]
enum Command {
    CreateUser {
        username: String,
    },
    SetPassword {
        username: String,
    },
    Grant {
        username: String,
        permission: String,
        resource: Option<Resource>,
    },
    Revoke {
        username: String,
        permission: String,
        resource: Option<Resource>,
    },
    AddRole {
        username: String,
        role: String,
        resource: Option<Resource>,
    },
    RemoveRole {
        username: String,
        role: String,
        resource: Option<Resource>,
    },
    CreateRole {
        role: String,
    },
    RoleGrant {
        role: String,
        permission: String,
    },
    RoleRevoke {
        role: String,
        permission: String,
    },
    Disable {
        username: String,
    },
    Enable {
        username: String,
    },
    Sessions {
        username: String,
    },
    RevokeSession {
        username: String,
        session: SessionId,
    },
    RevokeAll {
        username: String,
    },
}

/// Why the tool stops: the exit code and the one line of `error: …` to print.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A library error with no more specific context.
impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::InvalidUsername | Error::InvalidPassword | Error::InvalidName => USAGE,
            Error::UserNotFound | Error::RoleNotFound => NOT_FOUND,
            Error::UsernameTaken => CONFLICT,
            _ => RUNTIME,
        };
        Self::new(code, chain(&error))
    }
}

/// What a successful command prints.
enum Output {
    /// The report of a change: the change is made whether or not it can be printed.
    Done(String),
    /// A listing: the output is the result, so failing to print it is a failure.
    Listing(String),
}

fn main() -> ExitCode {
    // Off unless RUST_LOG asks for it: stderr is for the one-line error.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();

    let outcome = match parse(std::env::args_os().skip(1).collect()) {
        Ok(Parsed::Help) => Ok(Output::Listing(usage())),
        Ok(Parsed::Nothing) => {
            // A script that calls the tool without a command has a bug: usage error.
            let _ = io::stderr().write_all(usage().as_bytes());
            return ExitCode::from(USAGE);
        }
        Ok(Parsed::Run(command)) => run(command),
        Err(failure) => Err(failure),
    };
    let failure = match outcome {
        Ok(Output::Done(text)) => {
            let _ = io::stdout().write_all(text.as_bytes());
            return ExitCode::from(OK);
        }
        Ok(Output::Listing(text)) => match io::stdout().write_all(text.as_bytes()) {
            Ok(()) => return ExitCode::from(OK),
            Err(error) => Failure::new(RUNTIME, format!("cannot write to stdout: {error}")),
        },
        Err(failure) => failure,
    };
    let _ = writeln!(io::stderr(), "error: {}", one_line(&failure.message));
    ExitCode::from(failure.code)
}

enum Parsed {
    Help,
    Nothing,
    Run(Command),
}

fn parse(args: Vec<OsString>) -> Result<Parsed, Failure> {
    let args = args
        .into_iter()
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| Failure::new(USAGE, format!("argument {arg:?} is not valid UTF-8")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some((name, rest)) = args.split_first() else {
        return Ok(Parsed::Nothing);
    };
    if matches!(name.as_str(), "help" | "--help" | "-h") {
        return Ok(Parsed::Help);
    }
    let Some((name, params, _)) = COMMANDS.iter().find(|(known, _, _)| known == name) else {
        return Err(Failure::new(
            USAGE,
            format!("unknown command {}; `admin help` lists them", quote(name)),
        ));
    };
    // A last parameter in brackets is optional.
    let optional = usize::from(params.last().is_some_and(|p| p.starts_with('[')));
    if rest.len() > params.len() || rest.len() + optional < params.len() {
        return Err(Failure::new(
            USAGE,
            format!(
                "{name} takes {} argument{}, got {}: usage: admin {}",
                params.len(),
                if params.len() == 1 { "" } else { "s" },
                rest.len(),
                signature(name, params),
            ),
        ));
    }
    let arg = |i: usize| rest.get(i).cloned().unwrap_or_default();
    let resource = rest.get(2).map(|r| resource(r)).transpose()?;
    let command = match *name {
        "create-user" => Command::CreateUser { username: arg(0) },
        "set-password" => Command::SetPassword { username: arg(0) },
        "grant" => Command::Grant {
            username: arg(0),
            permission: arg(1),
            resource,
        },
        "revoke" => Command::Revoke {
            username: arg(0),
            permission: arg(1),
            resource,
        },
        "add-role" => Command::AddRole {
            username: arg(0),
            role: arg(1),
            resource,
        },
        "remove-role" => Command::RemoveRole {
            username: arg(0),
            role: arg(1),
            resource,
        },
        "create-role" => Command::CreateRole { role: arg(0) },
        "role-grant" => Command::RoleGrant {
            role: arg(0),
            permission: arg(1),
        },
        "role-revoke" => Command::RoleRevoke {
            role: arg(0),
            permission: arg(1),
        },
        "disable" => Command::Disable { username: arg(0) },
        "enable" => Command::Enable { username: arg(0) },
        "sessions" => Command::Sessions { username: arg(0) },
        "revoke-session" => Command::RevokeSession {
            username: arg(0),
            session: session_id(&arg(1))?,
        },
        "revoke-all" => Command::RevokeAll { username: arg(0) },
        other => {
            return Err(Failure::new(
                RUNTIME,
                format!("command {other} is listed but not implemented"),
            ));
        }
    };
    Ok(Parsed::Run(command))
}

/// A resource as `type:id`, such as `project:42`.
fn resource(arg: &str) -> Result<Resource, Failure> {
    arg.parse().map_err(|_| {
        Failure::new(
            USAGE,
            format!(
                "{} is not a resource: use type:id, such as project:42",
                quote(arg)
            ),
        )
    })
}

/// Where a grant applies, as the tool says it.
fn scope(resource: Option<&Resource>) -> String {
    resource.map_or_else(String::new, |r| format!(" on {}", quote(&r.to_string())))
}

/// A public session id as `sessions` lists it. A whole token is refused without echoing it:
/// its part after the dot is a credential.
fn session_id(arg: &str) -> Result<SessionId, Failure> {
    if arg.contains('.') {
        return Err(Failure::new(
            USAGE,
            "that is a whole session token; pass only its public id, the part before the dot",
        ));
    }
    SessionId::parse(arg).ok_or_else(|| {
        Failure::new(
            USAGE,
            // Not echoed: an operator who pasted the token's secret part alone would have it
            // written to a log.
            format!(
                "the argument of {} characters is not a session id (22 characters, as \
                 `admin sessions <username>` lists them)",
                arg.chars().count()
            ),
        )
    })
}

/// Connects, migrates, runs the command, and closes the pool.
fn run(command: Command) -> Result<Output, Failure> {
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .ok_or_else(|| {
            Failure::new(
                USAGE,
                "DATABASE_URL is not set: set it to the app's database \
                 (postgres://user@host/db or sqlite://path/to/app.db)",
            )
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            Failure::new(RUNTIME, format!("cannot start the async runtime: {error}"))
        })?;
    runtime.block_on(async {
        let db = connect(&url).await?;
        let accounts = Accounts::new(db.store());
        let outcome = async {
            axum_live_auth::migrate(accounts.store().clone())
                .await
                .map_err(|error| {
                    Failure::new(
                        RUNTIME,
                        format!("applying the migrations: {}", chain(&error)),
                    )
                })?;
            execute(&accounts, command).await
        }
        .await;
        db.close().await;
        outcome
    })
}

/// The pool, kept to close it when done (SQLite then checkpoints its WAL).
enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    fn store(&self) -> AuthStore {
        match self {
            Self::Postgres(pool) => pool.into(),
            Self::Sqlite(pool) => pool.into(),
        }
    }

    async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

/// How long to wait for the database before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the database `url` names, as the app does: Postgres for `postgres://` (or
/// `postgresql://`), SQLite for `sqlite:`. Messages never repeat the URL: it may hold a
/// password.
async fn connect(url: &str) -> Result<Db, Failure> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url).map_err(|error| {
            Failure::new(
                USAGE,
                format!("DATABASE_URL is not a valid Postgres URL: {error}"),
            )
        })?;
        // One connection first, for its error: the pool would retry a refused connection
        // until its timeout and then report only the timeout.
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| {
                Failure::new(
                    RUNTIME,
                    format!(
                        "cannot connect to the Postgres database in DATABASE_URL: \
                         no answer within {} seconds",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                )
            })?
            .map_err(|error| {
                Failure::new(
                    RUNTIME,
                    format!("cannot connect to the Postgres database in DATABASE_URL: {error}"),
                )
            })?;
        let _ = probe.close().await;
        // No ping on checkout, like the app (see the quickstart). Two connections are plenty:
        // every command runs its statements one after another.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .max_connections(2)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|error| {
                Failure::new(
                    RUNTIME,
                    format!("cannot connect to the Postgres database in DATABASE_URL: {error}"),
                )
            })?;
        Ok(Db::Postgres(pool))
    } else if url.starts_with("sqlite:") {
        // The crate's SQLite settings (WAL, busy timeout, foreign keys), except that a missing
        // file is an error here: an operator's typo must not create an empty database.
        let options = axum_live_auth::sqlite_connect_options(url)
            .map_err(|error| {
                Failure::new(
                    USAGE,
                    format!("DATABASE_URL is not a valid SQLite URL: {}", chain(&error)),
                )
            })?
            .create_if_missing(false);
        let path = options.get_filename().to_owned();
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|error| {
                if path.exists() {
                    Failure::new(
                        RUNTIME,
                        format!(
                            "cannot open the SQLite database {}: {error}",
                            path.display()
                        ),
                    )
                } else {
                    Failure::new(
                        USAGE,
                        format!(
                            "DATABASE_URL names an SQLite file that does not exist: {} \
                             (this tool does not create databases; run the app once or fix the path)",
                            path.display()
                        ),
                    )
                }
            })?;
        Ok(Db::Sqlite(pool))
    } else {
        // Only what reads as a URL scheme is shown: the rest may hold a password (a libpq
        // `host=db password=…` string has no scheme at all).
        let scheme = url.split_once("://").map(|(scheme, _)| scheme).filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        let shown = scheme.map_or_else(
            || "something else".to_owned(),
            |s| quote(&format!("{s}://")),
        );
        Err(Failure::new(
            USAGE,
            format!(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite:, not {shown}"
            ),
        ))
    }
}

async fn execute(accounts: &Accounts, command: Command) -> Result<Output, Failure> {
    let done = |text: String| Ok(Output::Done(text + "\n"));
    match command {
        Command::CreateUser { username } => {
            let password = read_password(&username)?;
            let id =
                accounts
                    .create_user(&username, &password)
                    .await
                    .map_err(|error| match error {
                        Error::InvalidUsername => invalid_username(&username),
                        Error::InvalidPassword => invalid_password(),
                        Error::UsernameTaken => Failure::new(
                            CONFLICT,
                            format!(
                                "username {} is taken (names are compared case-insensitively)",
                                quote(&username)
                            ),
                        ),
                        error => error.into(),
                    })?;
            done(format!("created user {} (id {id})", shown(&username)))
        }
        Command::SetPassword { username } => {
            let user = find_user(accounts, &username).await?;
            let password = read_password(&username)?;
            accounts
                .reset_password(user, &password)
                .await
                .map_err(|error| match error {
                    Error::InvalidPassword => invalid_password(),
                    error => user_error(error, &username),
                })?;
            done(format!(
                "reset the password of {0}; all of {0}'s sessions have ended, \
                 so they must log in again with the new password",
                shown(&username)
            ))
        }
        Command::Grant {
            username,
            permission,
            resource,
        } => {
            let user = find_user(accounts, &username).await?;
            let granted = match &resource {
                Some(resource) => {
                    accounts
                        .grant_permission_on(user, &permission, resource)
                        .await
                }
                None => accounts.grant_permission(user, &permission).await,
            };
            granted.map_err(|error| match error {
                Error::InvalidName => invalid_name("permission", &permission),
                error => user_error(error, &username),
            })?;
            done(format!(
                "{} has the direct grant {}{}",
                shown(&username),
                quote(&permission),
                scope(resource.as_ref())
            ))
        }
        Command::Revoke {
            username,
            permission,
            resource,
        } => {
            let user = find_user(accounts, &username).await?;
            let revoked = match &resource {
                Some(resource) => {
                    accounts
                        .revoke_permission_on(user, &permission, resource)
                        .await
                }
                None => accounts.revoke_permission(user, &permission).await,
            }
            .map_err(|error| user_error(error, &username))?;
            if !revoked {
                return Err(Failure::new(
                    NOT_FOUND,
                    format!(
                        "{} has no direct grant {}{}",
                        shown(&username),
                        quote(&permission),
                        scope(resource.as_ref())
                    ),
                ));
            }
            done(format!(
                "revoked {}'s direct grant {}{} (a role of theirs may still grant it)",
                shown(&username),
                quote(&permission),
                scope(resource.as_ref())
            ))
        }
        Command::AddRole {
            username,
            role,
            resource,
        } => {
            let user = find_user(accounts, &username).await?;
            let assigned = match &resource {
                Some(resource) => accounts.assign_role_on(user, &role, resource).await,
                None => accounts.assign_role(user, &role).await,
            };
            assigned.map_err(|error| match error {
                Error::RoleNotFound => no_role(&role),
                error => user_error(error, &username),
            })?;
            done(format!(
                "{} has the role {}{}",
                shown(&username),
                quote(&role),
                scope(resource.as_ref())
            ))
        }
        Command::RemoveRole {
            username,
            role,
            resource,
        } => {
            let user = find_user(accounts, &username).await?;
            let removed = match &resource {
                Some(resource) => accounts.unassign_role_on(user, &role, resource).await,
                None => accounts.unassign_role(user, &role).await,
            }
            .map_err(|error| user_error(error, &username))?;
            if !removed {
                return Err(Failure::new(
                    NOT_FOUND,
                    format!(
                        "{} does not have the role {}{}",
                        shown(&username),
                        quote(&role),
                        scope(resource.as_ref())
                    ),
                ));
            }
            done(format!(
                "took the role {}{} away from {}",
                quote(&role),
                scope(resource.as_ref()),
                shown(&username)
            ))
        }
        Command::CreateRole { role } => {
            accounts
                .create_role(&role)
                .await
                .map_err(|error| match error {
                    Error::InvalidName => invalid_name("role", &role),
                    error => error.into(),
                })?;
            done(format!(
                "role {} exists (created unless it already did)",
                quote(&role)
            ))
        }
        Command::RoleGrant { role, permission } => {
            accounts
                .grant_role_permission(&role, &permission)
                .await
                .map_err(|error| match error {
                    Error::InvalidName => invalid_name("permission", &permission),
                    Error::RoleNotFound => no_role(&role),
                    error => error.into(),
                })?;
            done(format!(
                "role {} grants {}",
                quote(&role),
                quote(&permission)
            ))
        }
        Command::RoleRevoke { role, permission } => {
            if !accounts.revoke_role_permission(&role, &permission).await? {
                // `false` both for an unknown role and for one without the permission.
                return Err(Failure::new(
                    NOT_FOUND,
                    format!(
                        "there is no role {} granting {}",
                        quote(&role),
                        quote(&permission)
                    ),
                ));
            }
            done(format!(
                "role {} no longer grants {}",
                quote(&role),
                quote(&permission)
            ))
        }
        Command::Disable { username } => {
            let user = find_user(accounts, &username).await?;
            accounts
                .disable_user(user)
                .await
                .map_err(|error| user_error(error, &username))?;
            done(format!(
                "disabled {}: their sessions have ended and they cannot log in until enabled",
                shown(&username)
            ))
        }
        Command::Enable { username } => {
            let user = find_user(accounts, &username).await?;
            accounts
                .enable_user(user)
                .await
                .map_err(|error| user_error(error, &username))?;
            done(format!(
                "enabled {}: they can log in again",
                shown(&username)
            ))
        }
        Command::Sessions { username } => {
            let user = find_user(accounts, &username).await?;
            let sessions = accounts.list_sessions(user).await?;
            Ok(Output::Listing(session_table(&username, &sessions)))
        }
        Command::RevokeSession { username, session } => {
            let user = find_user(accounts, &username).await?;
            if !accounts.revoke_session(user, &session).await? {
                return Err(Failure::new(
                    NOT_FOUND,
                    format!(
                        "{} has no session {}",
                        shown(&username),
                        quote(session.as_str())
                    ),
                ));
            }
            done(format!(
                "ended session {} of {}",
                session.as_str(),
                shown(&username)
            ))
        }
        Command::RevokeAll { username } => {
            let user = find_user(accounts, &username).await?;
            let count = accounts.revoke_all_sessions(user).await?;
            done(format!(
                "ended {count} session{} of {}",
                if count == 1 { "" } else { "s" },
                shown(&username)
            ))
        }
    }
}

/// The id of the user called `username` (case-insensitive), or a not-found failure.
async fn find_user(accounts: &Accounts, username: &str) -> Result<UserId, Failure> {
    accounts
        .user_id(username)
        .await?
        .ok_or_else(|| no_user(username))
}

/// A library error of an operation on a user found a moment ago: `UserNotFound` then means
/// the user was deleted in between.
fn user_error(error: Error, username: &str) -> Failure {
    match error {
        Error::UserNotFound => no_user(username),
        error => error.into(),
    }
}

fn no_user(username: &str) -> Failure {
    Failure::new(NOT_FOUND, format!("no user named {}", quote(username)))
}

fn no_role(role: &str) -> Failure {
    Failure::new(NOT_FOUND, format!("no role named {}", quote(role)))
}

fn invalid_username(username: &str) -> Failure {
    Failure::new(
        USAGE,
        format!(
            "invalid username {}: it must be 1 to 64 characters, \
             without control characters or surrounding spaces",
            quote(username)
        ),
    )
}

fn invalid_password() -> Failure {
    Failure::new(
        USAGE,
        format!(
            "invalid password: it must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes long"
        ),
    )
}

fn invalid_name(what: &str, name: &str) -> Failure {
    Failure::new(
        USAGE,
        format!(
            "invalid {what} name {}: it must be 1 to 128 visible characters without whitespace",
            quote(name)
        ),
    )
}

/// Reads the password: one line from stdin, without its line ending.
fn read_password(username: &str) -> Result<String, Failure> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        let mut stderr = io::stderr();
        let _ = write!(
            stderr,
            "Password for {} (visible as you type; pipe it in to avoid that): ",
            shown(username)
        );
        let _ = stderr.flush();
    }
    // Enough for the longest password, its line ending, and one byte to notice a longer one.
    let limit = u64::try_from(MAX_PASSWORD_BYTES + 3).unwrap_or(u64::MAX);
    let mut line = Vec::new();
    stdin
        .lock()
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(|error| {
            Failure::new(
                RUNTIME,
                format!("cannot read the password from stdin: {error}"),
            )
        })?;
    if line.is_empty() {
        return Err(Failure::new(
            USAGE,
            "no password on stdin: pipe one line in, \
             e.g. printf '%s\\n' \"$PASSWORD\" | admin create-user <username>",
        ));
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > MAX_PASSWORD_BYTES {
        return Err(invalid_password());
    }
    String::from_utf8(line)
        .map_err(|_| Failure::new(USAGE, "the password on stdin is not valid UTF-8"))
}

/// The user's live sessions as a table, most recently used first.
fn session_table(username: &str, sessions: &[SessionInfo]) -> String {
    if sessions.is_empty() {
        return format!("{} has no live sessions\n", shown(username));
    }
    let mut rows = vec![[
        "SESSION ID".to_owned(),
        "CREATED".to_owned(),
        "LAST SEEN".to_owned(),
        "EXPIRES".to_owned(),
        "IP".to_owned(),
        "USER AGENT".to_owned(),
    ]];
    for session in sessions {
        // The store keeps the idle deadline at or before the absolute one; equal means the
        // absolute deadline is the one that ends the session.
        let (expires, why) = if session.idle_expires_at < session.expires_at {
            (session.idle_expires_at, "idle")
        } else {
            (session.expires_at, "absolute")
        };
        rows.push([
            shown(session.id.as_str()),
            timestamp(session.created_at),
            timestamp(session.last_seen_at),
            format!("{} ({why})", timestamp(expires)),
            session
                .ip
                .map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            session
                .user_agent
                .as_deref()
                .map_or_else(|| "-".to_owned(), shown),
        ]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = format!(
        "{} has {} live session{} (most recently used first):\n",
        shown(username),
        sessions.len(),
        if sessions.len() == 1 { "" } else { "s" }
    );
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:width$}  ");
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// RFC 3339 in UTC, to the second.
fn timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// Text from the database or the command line, safe to print on a terminal: control and
/// bidirectional-override characters are escaped, so a user agent cannot move the cursor or
/// reorder a line.
fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let hidden = c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if hidden {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn quote(text: &str) -> String {
    format!("'{}'", shown(text))
}

/// An error and its sources, as one line: "database error: error returned from database: …".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let _ = write!(text, ": {next}");
        source = next.source();
    }
    text
}

fn one_line(text: &str) -> String {
    shown(&text.replace(['\r', '\n'], " "))
}
