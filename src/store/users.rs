//! Users, roles, global grants and passwords.

use super::{
    AuthStore, BEGIN, Dialects, affected, execute, on_pool,
    sessions::{END_OTHER_SESSIONS, Renewal, renew},
    tokens::{CONSUME_TOKEN, FORGET_TOKENS},
    unique_or,
};
use crate::{Error, SessionId, UserId};

/// Bans the user (`disabled_at` kept if already set) and moves their credential epoch, so that a
/// password change or reset checked before the ban cannot land after it.
const DISABLE: Dialects = Dialects {
    postgres: "UPDATE auth_users SET disabled_at = coalesce(disabled_at, now()),
                      credential_epoch = credential_epoch + 1
                WHERE id = $1",
    sqlite: "UPDATE auth_users SET disabled_at = coalesce(disabled_at, \
             CAST(unixepoch('subsec') * 1000 AS INTEGER)), \
             credential_epoch = credential_epoch + 1 WHERE id = $1",
};

/// Makes `$2` the user's verified address, if the user is enabled and their credentials are
/// still at epoch `$3`.
const ADOPT_EMAIL: Dialects = Dialects {
    postgres: "UPDATE auth_users SET email = $2, email_verified_at = now()
                WHERE id = $1 AND credential_epoch = $3 AND disabled_at IS NULL",
    sqlite: "UPDATE auth_users SET email = $2,
                    email_verified_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
              WHERE id = $1 AND credential_epoch = $3 AND disabled_at IS NULL",
};

/// An enabled user by name or address, for a recovery request: a verified address first, then
/// a name, then an unverified address. (A name first would let anyone who takes another user's
/// verified address as a username receive the resets that user asks for by address.)
const BY_NAME_OR_EMAIL: &str = "\
SELECT id, username, email FROM auth_users
 WHERE (lower(username) = lower($1) OR lower(email) = lower($1)) AND disabled_at IS NULL
 ORDER BY coalesce(lower(email) = lower($1) AND email_verified_at IS NOT NULL, false) DESC,
          lower(username) = lower($1) DESC
 LIMIT 1";

/// What [`AuthStore::set_password`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordSet {
    /// Nothing: the user is gone, their credentials moved on, or the token was spent.
    Refused,
    /// The password is set; `renewed`: the kept session goes on under its new token (`false`
    /// when it had ended meanwhile, or none was kept).
    Set { renewed: bool },
}

/// A user as a message addresses them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Recipient {
    pub(crate) id: UserId,
    pub(crate) username: String,
    pub(crate) email: Option<String>,
}

/// What a password check needs to know about a name as typed: the database's case folding of
/// it (the one fold for lookup and throttling), and the user it names, if any. Always one row.
const LOGIN_ROW: &str = "\
SELECT lower($1) AS folded, u.id, u.password_hash, u.disabled_at IS NOT NULL AS disabled,
       u.credential_epoch
  FROM (SELECT 1) one
  LEFT JOIN auth_users u ON lower(u.username) = lower($1)";

/// What a password check needs to know about a user.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LoginRow {
    /// The name as the database folds it (`lower`), user or not.
    pub(crate) folded: String,
    pub(crate) id: Option<UserId>,
    pub(crate) password_hash: Option<String>,
    pub(crate) disabled: Option<bool>,
    /// The user's credential version when the row was read.
    pub(crate) credential_epoch: Option<i64>,
}

impl AuthStore {
    pub(crate) async fn create_user(
        &self,
        username: &str,
        password_hash: Option<&str>,
    ) -> Result<UserId, Error> {
        on_pool!(self, |pool| {
            sqlx::query_scalar(
                "INSERT INTO auth_users (username, password_hash) VALUES ($1, $2) RETURNING id",
            )
            .bind(username)
            .bind(password_hash)
            .fetch_one(pool)
            .await
            .map_err(|e| unique_or(e, Error::UsernameTaken))
        })
    }

    /// The id of the user called `username`, case-folded as the database folds it.
    pub(crate) async fn user_id(&self, username: &str) -> Result<Option<UserId>, sqlx::Error> {
        on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT id FROM auth_users WHERE lower(username) = lower($1)")
                .bind(username)
                .fetch_optional(pool)
                .await
        })
    }

    pub(crate) async fn login_row(&self, username: &str) -> Result<LoginRow, sqlx::Error> {
        on_pool!(self, |pool| {
            sqlx::query_as(LOGIN_ROW)
                .bind(username)
                .fetch_one(pool)
                .await
        })
    }

    /// Replaces the user's password hash `old` with `new`, a hash of the same password with the
    /// crate's parameters, if it is still `old` at credential epoch `epoch`; `false` if the
    /// password changed meanwhile. The epoch stays (the `auth_users_password_epoch` trigger
    /// leaves a counted rehash alone): the sessions and links issued under it go on.
    pub(crate) async fn rehash_password(
        &self,
        user: UserId,
        epoch: i64,
        old: &str,
        new: &str,
    ) -> Result<bool, Error> {
        let rehashed = affected!(
            self,
            "UPDATE auth_users
                SET password_hash = $4, password_rehashes = password_rehashes + 1
              WHERE id = $1 AND credential_epoch = $2 AND password_hash = $3",
            user,
            epoch,
            old,
            new
        );
        Ok(rehashed == 1)
    }

    pub(crate) async fn recipient(&self, name_or_email: &str) -> Result<Option<Recipient>, Error> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(BY_NAME_OR_EMAIL)
                .bind(name_or_email)
                .fetch_optional(pool)
                .await?
        }))
    }

    pub(crate) async fn recipient_by_id(&self, user: UserId) -> Result<Option<Recipient>, Error> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_as("SELECT id, username, email FROM auth_users WHERE id = $1")
                .bind(user)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Whether a user other than `user` has the address (compared case-insensitively).
    pub(crate) async fn email_taken(&self, user: UserId, email: &str) -> Result<bool, Error> {
        let taken: Option<i32> = on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT 1 FROM auth_users WHERE lower(email) = lower($2) AND id <> $1 LIMIT 1",
            )
            .bind(user)
            .bind(email)
            .fetch_optional(pool)
            .await?
        });
        Ok(taken.is_some())
    }

    /// Makes `email` the user's verified address and spends `token`, in one transaction, if the
    /// user is enabled and their credentials are still at `epoch`; every other link sent to the
    /// user (a reset link to the old address) dies with it. `false` if the user changed or the
    /// token was spent already; [`Error::EmailTaken`] if another user has the address now.
    pub(crate) async fn adopt_email(
        &self,
        user: UserId,
        email: &str,
        epoch: i64,
        token: &SessionId,
    ) -> Result<bool, Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(BEGIN.of(pool)).await?;
            let adopted = sqlx::query(ADOPT_EMAIL.of(pool))
                .bind(user)
                .bind(email)
                .bind(epoch)
                .execute(&mut *tx)
                .await;
            let adopted = match adopted {
                Ok(adopted) => adopted,
                // Expected (another user confirmed first): the connection stays usable.
                Err(error) => {
                    tx.rollback().await?;
                    return Err(unique_or(error, Error::EmailTaken));
                }
            };
            // After the user's row, as deleting a user reaches its tokens: one lock order.
            if adopted.rows_affected() != 1
                || execute!(&mut *tx, CONSUME_TOKEN, token.as_str()) != 1
            {
                tx.rollback().await?;
                return Ok(false);
            }
            execute!(&mut *tx, FORGET_TOKENS, user);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Stores a new password hash, bumps the user's credential epoch (so that no session whose
    /// password check predates this one becomes or stays valid), ends every session of the
    /// user but the one `keep` renews (which goes on at the new epoch under its new token only:
    /// at no moment is its old token valid under the new password; a copy a rotation made of
    /// it meanwhile ends too, since whoever rotated it may be whom the change shuts out) and
    /// forgets the user's failed logins, in one transaction. Refused if the user does not
    /// exist, if `epoch` is given and the user's credentials are no longer at it (they changed
    /// since they were checked), or if `token` is given and was spent already: the one-time
    /// token the write spends, in the same transaction.
    pub(crate) async fn set_password(
        &self,
        user: UserId,
        hash: &str,
        keep: Option<Renewal<'_>>,
        epoch: Option<i64>,
        token: Option<&SessionId>,
    ) -> Result<PasswordSet, Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(BEGIN.of(pool)).await?;
            let epoch: Option<i64> = sqlx::query_scalar(
                "UPDATE auth_users SET password_hash = $2, credential_epoch = credential_epoch + 1
                  WHERE id = $1 AND credential_epoch = coalesce($3, credential_epoch)
                 RETURNING credential_epoch",
            )
            .bind(user)
            .bind(hash)
            .bind(epoch)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(epoch) = epoch else {
                tx.rollback().await?;
                return Ok(PasswordSet::Refused);
            };
            // After the user's row, as deleting a user reaches its tokens: one lock order.
            if let Some(token) = token
                && execute!(&mut *tx, CONSUME_TOKEN, token.as_str()) != 1
            {
                tx.rollback().await?;
                return Ok(PasswordSet::Refused);
            }
            execute!(
                &mut *tx,
                END_OTHER_SESSIONS,
                user,
                keep.map(|keep| keep.old.as_str())
            );
            let renewed = match keep {
                Some(keep) => {
                    let moved = "UPDATE auth_sessions SET credential_epoch = $2
                                  WHERE user_id = $3 AND id = $1";
                    execute!(&mut *tx, moved, keep.old.as_str(), epoch, user);
                    let renewed = renew!(tx, pool, keep, None::<i64>);
                    // The old token is what the change may be shutting out: the copy does not
                    // remember it, so no request with it is told apart from an unknown token,
                    // and no logout with it ends the copy.
                    if renewed {
                        let forget = "UPDATE auth_sessions SET rotated_from_secret_hash = NULL WHERE id = $1";
                        execute!(&mut *tx, forget, keep.new.id().as_str());
                    }
                    renewed
                }
                None => false,
            };
            let attempts = super::AttemptKey::user(user);
            let forget = "DELETE FROM auth_login_attempts WHERE kind = 'user' AND key = $1";
            execute!(&mut *tx, forget, attempts.as_str());
            tx.commit().await?;
            Ok(PasswordSet::Set { renewed })
        })
    }

    /// Sets `disabled_at`, ends every session of the user and spends every link sent to them,
    /// in one transaction.
    pub(crate) async fn disable_user(&self, user: UserId) -> Result<bool, Error> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_with(BEGIN.of(pool)).await?;
            let done = execute!(&mut *tx, DISABLE.of(pool), user);
            execute!(
                &mut *tx,
                "DELETE FROM auth_sessions WHERE user_id = $1",
                user
            );
            // Links sent before do not come back to life if the user is enabled again.
            execute!(&mut *tx, FORGET_TOKENS, user);
            tx.commit().await?;
            Ok(done == 1)
        })
    }

    /// Lifts a ban, moving the credential epoch if there was one: whatever a ban made by hand
    /// left behind (sessions, links) stays ended.
    pub(crate) async fn enable_user(&self, user: UserId) -> Result<bool, Error> {
        Ok(affected!(
            self,
            "UPDATE auth_users
                SET disabled_at = NULL,
                    credential_epoch = credential_epoch
                        + CASE WHEN disabled_at IS NULL THEN 0 ELSE 1 END
              WHERE id = $1",
            user
        ) == 1)
    }

    /// Deletes the user; their sessions and grants go with them (foreign keys cascade).
    pub(crate) async fn delete_user(&self, user: UserId) -> Result<bool, Error> {
        Ok(affected!(self, "DELETE FROM auth_users WHERE id = $1", user) == 1)
    }

    pub(crate) async fn grant_permission(
        &self,
        user: UserId,
        permission: &str,
    ) -> Result<(), Error> {
        let done = affected!(
            self,
            "INSERT INTO auth_user_permissions (user_id, permission)
             SELECT id, $2 FROM auth_users WHERE id = $1
             ON CONFLICT DO NOTHING",
            user,
            permission
        );
        if done == 0 && !self.user_exists(user).await? {
            return Err(Error::UserNotFound);
        }
        Ok(())
    }

    pub(crate) async fn revoke_permission(
        &self,
        user: UserId,
        permission: &str,
    ) -> Result<bool, Error> {
        Ok(affected!(
            self,
            "DELETE FROM auth_user_permissions WHERE user_id = $1 AND permission = $2",
            user,
            permission
        ) > 0)
    }

    /// Creates the role if it does not exist yet.
    pub(crate) async fn ensure_role(&self, name: &str) -> Result<(), Error> {
        affected!(
            self,
            "INSERT INTO auth_roles (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            name
        );
        Ok(())
    }

    pub(crate) async fn grant_role_permission(
        &self,
        role: &str,
        permission: &str,
    ) -> Result<(), Error> {
        let done = affected!(
            self,
            "INSERT INTO auth_role_permissions (role_id, permission)
             SELECT id, $2 FROM auth_roles WHERE name = $1
             ON CONFLICT DO NOTHING",
            role,
            permission
        );
        if done == 0 && !self.role_exists(role).await? {
            return Err(Error::RoleNotFound);
        }
        Ok(())
    }

    pub(crate) async fn revoke_role_permission(
        &self,
        role: &str,
        permission: &str,
    ) -> Result<bool, Error> {
        Ok(affected!(
            self,
            "DELETE FROM auth_role_permissions
              WHERE permission = $2 AND role_id IN (SELECT id FROM auth_roles WHERE name = $1)",
            role,
            permission
        ) > 0)
    }

    /// Gives the user the role. `Err(RoleNotFound)` / `Err(UserNotFound)` when either is missing.
    pub(crate) async fn assign_role(&self, user: UserId, role: &str) -> Result<(), Error> {
        let done = affected!(
            self,
            "INSERT INTO auth_user_roles (user_id, role_id)
             SELECT u.id, r.id FROM auth_users u, auth_roles r WHERE u.id = $1 AND r.name = $2
             ON CONFLICT DO NOTHING",
            user,
            role
        );
        if done == 0 {
            self.user_and_role_exist(user, role).await?;
        }
        Ok(())
    }

    pub(crate) async fn unassign_role(&self, user: UserId, role: &str) -> Result<bool, Error> {
        Ok(affected!(
            self,
            "DELETE FROM auth_user_roles
              WHERE user_id = $1 AND role_id IN (SELECT id FROM auth_roles WHERE name = $2)",
            user,
            role
        ) > 0)
    }

    /// `Err(UserNotFound)` or `Err(RoleNotFound)` for whichever is missing.
    pub(crate) async fn user_and_role_exist(&self, user: UserId, role: &str) -> Result<(), Error> {
        if !self.user_exists(user).await? {
            return Err(Error::UserNotFound);
        }
        if !self.role_exists(role).await? {
            return Err(Error::RoleNotFound);
        }
        Ok(())
    }

    pub(crate) async fn user_exists(&self, user: UserId) -> Result<bool, sqlx::Error> {
        on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_users WHERE id = $1)")
                .bind(user)
                .fetch_one(pool)
                .await
        })
    }

    async fn role_exists(&self, role: &str) -> Result<bool, sqlx::Error> {
        on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_roles WHERE name = $1)")
                .bind(role)
                .fetch_one(pool)
                .await
        })
    }
}
