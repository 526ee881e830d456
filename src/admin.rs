//! Users, roles and grants: the library functions apps, examples and tests manage them with.
//!
//! Every change here is enforced on the next request of the user concerned, on every node,
//! without logging in again. The same holds for changes made with plain SQL on the tables.

use crate::{
    AuthStore, Error, UserId,
    password::{self, MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES},
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
        validate_new_password(password)?;
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
        if username.len() > MAX_USERNAME_BYTES || password.len() > MAX_PASSWORD_BYTES {
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
        validate_new_password(password)?;
        let hash = password::hash(password).await?;
        found(self.store.set_password_hash(user, &hash).await?)
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

    /// Revokes a direct grant. The user keeps the permission if a role of theirs grants it.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn revoke_permission(&self, user: UserId, permission: &str) -> Result<(), Error> {
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

    /// Removes a permission from a role.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn revoke_role_permission(&self, role: &str, permission: &str) -> Result<(), Error> {
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

    /// Takes a role away from the user.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn unassign_role(&self, user: UserId, role: &str) -> Result<(), Error> {
        self.store.unassign_role(user, role).await
    }
}

const MAX_USERNAME_BYTES: usize = 256;

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

fn validate_new_password(password: &str) -> Result<(), Error> {
    if (MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&password.len()) {
        Ok(())
    } else {
        Err(Error::InvalidPassword)
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
        assert!(validate_new_password("12345678").is_ok());
        assert!(validate_new_password("1234567").is_err());
        assert!(validate_new_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
