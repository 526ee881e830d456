//! Users, roles and grants: the library functions apps, examples and tests manage them with.
//!
//! Every change here is enforced on the next request of the user concerned, on every node,
//! without logging in again. The same holds for changes made with plain SQL on the tables.

use crate::{
    AuthStore, Error, SessionInfo, UserId,
    client::Client,
    events,
    password::{self, MAX_PASSWORD_BYTES},
    throttle::{LoginThrottle, username_key},
};

/// Manages users, roles and grants in the crate's tables.
///
/// ```no_run
/// use axum_live_auth::Accounts;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), axum_live_auth::Error> {
/// let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
/// let accounts = Accounts::new(pool);
/// let alice = accounts.create_user("alice", "alice-password").await?;
/// accounts.create_role("admin").await?;
/// accounts.grant_role_permission("admin", "reports:read").await?;
/// accounts.assign_role(alice, "admin").await?;
/// accounts.grant_permission(alice, "billing:write").await?;
/// assert_eq!(
///     accounts.verify_password("Alice", "alice-password").await?,
///     Some(alice)
/// );
/// accounts.disable_user(alice).await?; // her sessions end now, everywhere
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Accounts {
    store: AuthStore,
}

impl Accounts {
    /// Works on the crate's tables in a Postgres or SQLite pool's database.
    pub fn new(store: impl Into<AuthStore>) -> Self {
        Self {
            store: store.into(),
        }
    }

    /// The store these accounts live in.
    pub fn store(&self) -> &AuthStore {
        &self.store
    }

    /// Creates a user with an Argon2id hash of `password`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUsername`], [`Error::InvalidPassword`] (shorter than
    /// [`MIN_PASSWORD_BYTES`](crate::MIN_PASSWORD_BYTES) or longer than
    /// [`MAX_PASSWORD_BYTES`](crate::MAX_PASSWORD_BYTES)), [`Error::UsernameTaken`] (names are
    /// compared case-insensitively), or a database error.
    pub async fn create_user(&self, username: &str, password: &str) -> Result<UserId, Error> {
        validate_username(username)?;
        password::validate_new(password)?;
        let hash = password::hash(password).await?;
        self.store.create_user(username, Some(&hash)).await
    }

    /// The id of the user called `username` (case-insensitive), if any.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn user_id(&self, username: &str) -> Result<Option<UserId>, Error> {
        Ok(self.store.user_id(username).await?)
    }

    /// Checks a username and password; `Some(id)` only for the right password of an enabled
    /// user.
    ///
    /// Takes the same time whether or not the user exists, has a password or is disabled: one
    /// Argon2 verification always runs (against a dummy hash when there is nothing to check).
    /// Input longer than the limits is refused without hashing.
    ///
    /// # Errors
    ///
    /// A database error, or a failure of the hashing task. A wrong password is `Ok(None)`.
    pub async fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<UserId>, Error> {
        // No user can have such a name (and Postgres text cannot even hold NUL): refused
        // without a query.
        if username.len() > MAX_USERNAME_BYTES
            || password.len() > MAX_PASSWORD_BYTES
            || username.contains(char::is_control)
        {
            return Ok(None);
        }
        let row = self.store.login_row(username).await?;
        let (id, stored, enabled) = match row {
            Some(row) => (Some(row.id), row.password_hash, !row.disabled),
            None => (None, None, false),
        };
        let ok = password::verify(password, stored).await?;
        Ok(id.filter(|_| ok && enabled))
    }

    /// Replaces the user's password.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPassword`], [`Error::UserNotFound`], or a database error.
    pub async fn set_password(&self, user: UserId, password: &str) -> Result<(), Error> {
        password::validate_new(password)?;
        let hash = password::hash(password).await?;
        found(self.store.set_password_hash(user, &hash).await?)
    }

    /// Resets the user's password (an administrator's or a recovery flow's action) and ends
    /// every session of the user: whoever held one must log in with the new password. Does
    /// not log anyone in.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPassword`], [`Error::UserNotFound`], or a database error.
    pub async fn reset_password(&self, user: UserId, password: &str) -> Result<(), Error> {
        password::validate_new(password)?;
        let hash = password::hash(password).await?;
        found(
            self.store
                .set_password_ending_sessions(user, &hash, None)
                .await?,
        )?;
        // A reset lifts the lock of a username at the hard stop of failed logins.
        if let Some(username) = self.store.username(user).await? {
            self.store
                .clear_login_failures(&username_key(&username))
                .await?;
        }
        events::password_changed(&Client::default(), user, None, "reset");
        Ok(())
    }

    /// The user's live sessions, most recently used first: public id, times, user agent and
    /// IP address. Never the secret or its hash.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn list_sessions(&self, user: UserId) -> Result<Vec<SessionInfo>, Error> {
        self.store.list_sessions(user).await
    }

    /// Ends one session of the user by public id; `false` if the user has no such session.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn revoke_session(&self, user: UserId, session_id: &str) -> Result<bool, Error> {
        let ended = self.store.delete_user_session(user, session_id).await?;
        if ended {
            events::session_revoked(&Client::default(), user, session_id, "admin");
        }
        Ok(ended)
    }

    /// Ends every session of the user ("log out everywhere"); returns how many ended.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn revoke_all_sessions(&self, user: UserId) -> Result<u64, Error> {
        let count = self.store.delete_user_sessions(user, None).await?;
        events::sessions_revoked_all(&Client::default(), user, None, count, "admin");
        Ok(count)
    }

    /// Deletes every session past its idle or absolute deadline (they are refused anyway;
    /// this keeps the table small) and returns how many. Also forgets failed-login counters
    /// older than a day (except usernames locked after too many failures). See also the layer's
    /// [`purge_expired_every`](crate::AuthLayerBuilder::purge_expired_every).
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn purge_expired_sessions(&self) -> Result<u64, Error> {
        let purged = self.store.purge_expired().await?;
        for session in &purged {
            events::expired(
                session.user_id,
                &session.id,
                session.ip.as_deref(),
                session.user_agent.as_deref(),
            );
        }
        let throttle = LoginThrottle::default();
        let horizon = throttle.ip_window.max(FAILURE_HORIZON);
        self.store
            .purge_login_failures(horizon, throttle.user_hard_stop)
            .await?;
        Ok(purged.len() as u64)
    }

    /// Bans the user: sets `disabled_at` and deletes all their sessions. Their next request, on
    /// any node, is unauthenticated, and they cannot log in until [enabled](Self::enable_user).
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], or a database error.
    pub async fn disable_user(&self, user: UserId) -> Result<(), Error> {
        found(self.store.disable_user(user).await?)
    }

    /// Lifts a ban. The user has to log in again (their sessions were deleted on disable).
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], or a database error.
    pub async fn enable_user(&self, user: UserId) -> Result<(), Error> {
        found(self.store.enable_user(user).await?)
    }

    /// Grants a permission to the user directly. Granting one the user has is a no-op.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::UserNotFound`], or a database error.
    pub async fn grant_permission(&self, user: UserId, permission: &str) -> Result<(), Error> {
        validate_name(permission)?;
        self.store.grant_permission(user, permission).await
    }

    /// Revokes a direct grant; `false` if the user had no such direct grant. The user keeps the
    /// permission if a role of theirs grants it.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn revoke_permission(&self, user: UserId, permission: &str) -> Result<bool, Error> {
        self.store.revoke_permission(user, permission).await
    }

    /// Creates a role if no role of that name exists.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], or a database error.
    pub async fn create_role(&self, role: &str) -> Result<(), Error> {
        validate_name(role)?;
        self.store.ensure_role(role).await
    }

    /// Adds a permission to a role, and so to every user who has the role.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::RoleNotFound`], or a database error.
    pub async fn grant_role_permission(&self, role: &str, permission: &str) -> Result<(), Error> {
        validate_name(permission)?;
        self.store.grant_role_permission(role, permission).await
    }

    /// Removes a permission from a role; `false` if the role did not have it.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn revoke_role_permission(
        &self,
        role: &str,
        permission: &str,
    ) -> Result<bool, Error> {
        self.store.revoke_role_permission(role, permission).await
    }

    /// Gives the user a role.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], [`Error::RoleNotFound`], or a database error.
    pub async fn assign_role(&self, user: UserId, role: &str) -> Result<(), Error> {
        self.store.assign_role(user, role).await
    }

    /// Takes a role away from the user; `false` if they did not have it.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn unassign_role(&self, user: UserId, role: &str) -> Result<bool, Error> {
        self.store.unassign_role(user, role).await
    }
}

const MAX_USERNAME_BYTES: usize = 256;
/// Failed-login counters older than this are purged.
const FAILURE_HORIZON: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

fn found(exists: bool) -> Result<(), Error> {
    if exists {
        Ok(())
    } else {
        Err(Error::UserNotFound)
    }
}

fn validate_username(username: &str) -> Result<(), Error> {
    let chars = username.chars().count();
    let ok = (1..=64).contains(&chars)
        && username.len() <= MAX_USERNAME_BYTES
        && username.trim() == username
        && !username.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidUsername)
    }
}

/// Permission and role names: 1 to 128 visible characters, no whitespace.
fn validate_name(name: &str) -> Result<(), Error> {
    let ok = (1..=128).contains(&name.chars().count())
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(()) } else { Err(Error::InvalidName) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("Ålice Smith").is_ok());
        for bad in ["", " alice", "alice ", "a\nb", "a\0b", &"x".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("reports:read").is_ok());
        for bad in ["", "a b", "a\tb", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_passwords() {
        assert!(password::validate_new("12345678").is_ok());
        assert!(password::validate_new("1234567").is_err());
        assert!(password::validate_new(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
