//! Users, roles and grants (global and per resource), and sessions: the library functions apps,
//! operator tools and tests manage them with.
//!
//! Every change here is enforced on the next request of the user concerned, without logging in
//! again: on every node (with the principal cache, on other nodes once the change's
//! notification reaches them, within a millisecond or so). The same holds for changes made with
//! plain SQL on the tables.

use std::{net::IpAddr, sync::Arc, time::Duration};

use crate::{
    AuthStore, Error, IntoAuthStore, Resource, SessionId, SessionInfo, UserId,
    client::Client,
    config::AuthConfig,
    events::security,
    login::{PasswordCheck, typed_name},
    password::{self, Hasher},
    recovery::{Recovery, WINDOW},
    shared::{Shared, Subscribers},
    store::{
        AddressChanges, AttemptKey, GrantRow, PasswordSet, Reservation, ThrottleLimits, by,
        repeating_conflicts,
    },
};

/// Sign-ups allowed per client address per [`WINDOW`], whether the name was free or taken.
const SIGN_UPS_PER_ADDRESS: u32 = 10;

/// Expired sessions deleted per statement by the [purge](Accounts::purge_expired_sessions).
const PURGE_BATCH: u32 = 250;
/// The longest one statement of the purge may take before it is given up and its connection
/// closed. A batch takes milliseconds; this ends a purge stuck on a network gone silent, which
/// would otherwise wait until TCP gives up (about 15 minutes on Linux's defaults).
pub(crate) const PURGE_STATEMENT_BOUND: Duration = Duration::from_secs(30);
/// How long the [purge](Accounts::purge_expired_sessions) keeps an idle failed-login counter.
const ATTEMPTS_HORIZON: Duration = Duration::from_secs(24 * 60 * 60);

/// Manages users, roles, grants and sessions in the crate's tables.
///
/// ```no_run
/// use axum_live_auth::{Accounts, Resource};
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
/// accounts.grant_permission_on(alice, "project:write", &"project:42".parse()?).await?;
/// assert_eq!(accounts.verify_password("Alice", "alice-password").await?, Some(alice));
/// accounts.disable_user(alice).await?; // her sessions end now, everywhere
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Accounts {
    store: AuthStore,
    pub(crate) hasher: Arc<Hasher>,
    pub(crate) limits: ThrottleLimits,
    /// The layer's cache and event streams, told of a change here at once (both stores),
    /// before its notification comes back.
    subscribers: Option<Subscribers>,
    pub(crate) recovery: Arc<Recovery>,
}

impl Accounts {
    /// Works on the crate's tables in a Postgres or SQLite pool's database, with the default
    /// password-hashing bounds and login limits. Inside an app, prefer
    /// [`AuthLayer::accounts`](crate::AuthLayer::accounts), which shares the layer's.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let accounts = axum_live_auth::Accounts::new(pool);
    /// # let _ = accounts; Ok(()) }
    /// ```
    pub fn new(store: impl IntoAuthStore) -> Self {
        Self {
            store: store.into_auth_store(),
            hasher: Arc::new(Hasher::default()),
            limits: AuthConfig::default().login,
            subscribers: None,
            recovery: Arc::default(),
        }
    }

    pub(crate) fn of_layer(shared: &Shared) -> Self {
        Self {
            // Not the layer's kept connections, which close with the layer.
            store: shared.store.clone().keeping_lookup_connections(0),
            hasher: Arc::clone(&shared.hasher),
            limits: shared.config.login,
            subscribers: Some(shared.subscribers()),
            recovery: Arc::new(shared.config.recovery.clone()),
        }
    }

    /// The store these accounts live in.
    pub fn store(&self) -> &AuthStore {
        &self.store
    }

    /// After a change of `user`'s account or grants: this node's cache forgets the user and
    /// the user's streams look again, so that the next request here is answered as the change
    /// says, even before its notification comes back.
    pub(crate) fn changed(&self, user: UserId) {
        if let Some(subscribers) = &self.subscribers {
            subscribers.user_changed(user);
        }
    }

    /// After a change of `user`'s grants on resources: only this node's cached answers of the
    /// user (the principal and the streams do not show them).
    fn scoped_changed(&self, user: UserId) {
        if let Some(subscribers) = &self.subscribers {
            subscribers.apply(&format!("r:{user}"));
        }
    }

    /// After a change of a role's permissions: any principal and answer may hold them.
    fn everyone_changed(&self) {
        if let Some(subscribers) = &self.subscribers {
            subscribers.apply("*");
        }
    }

    /// Creates a user with an Argon2id hash of `password`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUsername`], [`Error::InvalidPassword`] (shorter than
    /// [`MIN_PASSWORD_BYTES`](crate::MIN_PASSWORD_BYTES) or longer than
    /// [`MAX_PASSWORD_BYTES`](crate::MAX_PASSWORD_BYTES)), [`Error::UsernameTaken`] (names are
    /// compared case-insensitively, as the database folds them), [`Error::Busy`], or an
    /// infrastructure error.
    pub async fn create_user(&self, username: &str, password: &str) -> Result<UserId, Error> {
        self.create(username, password, None).await
    }

    /// [`create_user`](Self::create_user), hashing as for a client at address `from`.
    async fn create(
        &self,
        username: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<UserId, Error> {
        validate_username(username)?;
        password::validate_new(password)?;
        let hash = self.hasher.hash(password, from).await?;
        self.store.create_user(username, Some(&hash)).await
    }

    /// [`create_user`](Self::create_user) for a client signing itself up, counted against the
    /// client's address whether the name was free or taken (see
    /// [`Auth::sign_up`](crate::Auth::sign_up)).
    pub(crate) async fn sign_up(
        &self,
        client: &Client,
        username: &str,
        password: &str,
    ) -> Result<UserId, Error> {
        // Only a sign-up that reaches the insert tells anything of names: input refused as
        // such, or a sign-up refused for load, counts for nothing.
        validate_username(username)?;
        password::validate_new(password)?;
        // Without the client's address (an app served without connect info), every such
        // sign-up shares one budget: fewer sign-ups, never unlimited ones.
        let address = client
            .address
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let key = AttemptKey::sign_up(address);
        let reserved = match self
            .reserve_in_window(&key, SIGN_UPS_PER_ADDRESS, WINDOW)
            .await?
        {
            Reservation::Granted(granted) => granted,
            Reservation::Refused(retry_after) => {
                security::sign_up_throttled(client, retry_after);
                return Err(Error::Throttled { retry_after });
            }
        };
        let created = self.create(username, password, client.address).await;
        match &created {
            Ok(user) => security::signed_up(client, *user),
            Err(Error::Busy { .. }) => self.store.release_attempt(&reserved).await?,
            _ => {}
        }
        created
    }

    /// The id of the user called `username` (case-insensitive), if any: the name as given,
    /// else its composed form (NFC), as the login finds it (decomposed accents find the
    /// composed name; a name stored decomposed, before names had to be composed, is found as
    /// it is).
    ///
    /// # Errors
    ///
    /// An infrastructure error.
    pub async fn user_id(&self, username: &str) -> Result<Option<UserId>, Error> {
        if username.contains('\0') {
            return Ok(None);
        }
        if let Some(user) = self.store.user_id(username).await? {
            return Ok(Some(user));
        }
        match typed_name(username) {
            Some(composed) if composed != username => Ok(self.store.user_id(&composed).await?),
            _ => Ok(None),
        }
    }

    /// Checks a username and password; `Some(id)` only for the right password of an enabled
    /// user. Takes the same time whether or not the user exists, has a password or is
    /// disabled (for hashes the crate wrote: a hash imported from elsewhere costs what its own
    /// Argon2 parameters cost, so its account can be told apart by timing until its first right
    /// password, which stores the password again with the crate's parameters, a write to
    /// `auth_users` that keeps the user's sessions), and is throttled per account like logins
    /// (there is no client address here).
    /// To log a user in, use [`Auth::login_with_password`](crate::Auth::login_with_password),
    /// which is also throttled per client address.
    ///
    /// # Errors
    ///
    /// [`Error::Throttled`], [`Error::Busy`], or an infrastructure error. A wrong password is
    /// `Ok(None)`.
    pub async fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<UserId>, Error> {
        let check = PasswordCheck {
            store: &self.store,
            hasher: &self.hasher,
            limits: &self.limits,
        };
        let verified = check.check(&Client::default(), username, password).await?;
        Ok(verified.map(|v| v.user))
    }

    /// Sets the user's password (an administrator's or a recovery flow's action): moves the
    /// user to a new credential epoch, so that every session ends and no login whose password
    /// check ran before this one can create a session; lifts any login backoff of the account.
    /// Does not log anyone in.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPassword`], [`Error::UserNotFound`], [`Error::Busy`], or an
    /// infrastructure error.
    pub async fn reset_password(&self, user: UserId, password: &str) -> Result<(), Error> {
        password::validate_new(password)?;
        let hash = self.hasher.hash(password, None).await?;
        found(self.store_password(user, &hash, None, None).await?)
    }

    /// Stores `hash` as the user's password if their credentials are still at `epoch` (any, for
    /// `None`), spending `token` in the same transaction, as
    /// [`reset_password`](Self::reset_password) describes; `false` if the user is gone, their
    /// credentials moved on, or the token was spent.
    pub(crate) async fn store_password(
        &self,
        user: UserId,
        hash: &str,
        epoch: Option<i64>,
        token: Option<&SessionId>,
    ) -> Result<bool, Error> {
        let set = self.store.set_password(user, hash, None, epoch, token);
        let stored = set.await? != PasswordSet::Refused;
        if stored {
            security::password_changed(&Client::default(), user, None, "reset");
            self.changed(user);
        }
        Ok(stored)
    }

    /// Deletes the user, with their sessions and grants.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], or an infrastructure error.
    pub async fn delete_user(&self, user: UserId) -> Result<(), Error> {
        found(repeating_conflicts(|| self.store.delete_user(user)).await?)?;
        self.changed(user);
        Ok(())
    }

    /// The user's live sessions, most recently used first: public id, times, user agent and
    /// IP address. Never the secret or its hash.
    ///
    /// # Errors
    ///
    /// An infrastructure error.
    pub async fn list_sessions(&self, user: UserId) -> Result<Vec<SessionInfo>, Error> {
        self.store.list_sessions(user).await
    }

    /// Ends one session of the user; `false` if the user has no such session. Address changes
    /// the user asked for and has not confirmed are cancelled too (their links are spent):
    /// whoever held the session may have asked.
    ///
    /// # Errors
    ///
    /// An infrastructure error.
    pub async fn revoke_session(&self, user: UserId, session: &SessionId) -> Result<bool, Error> {
        let ended = self
            .store
            .delete_user_session(user, session, AddressChanges::Spent)
            .await?;
        if ended {
            security::session_revoked(&Client::default(), user, session.as_str(), "admin");
            self.changed(user);
        }
        Ok(ended)
    }

    /// Ends every session of the user ("log out everywhere"); returns how many ended. Address
    /// changes the user asked for and has not confirmed are cancelled too (their links are
    /// spent): whoever held one of the sessions may have asked.
    ///
    /// # Errors
    ///
    /// An infrastructure error.
    pub async fn revoke_all_sessions(&self, user: UserId) -> Result<u64, Error> {
        let count = self
            .store
            .delete_user_sessions(user, None, AddressChanges::Spent)
            .await?;
        security::sessions_revoked_all(&Client::default(), user, None, count, "admin");
        self.changed(user);
        Ok(count)
    }

    /// Ends every session of every user at once, for incident response (a leaked database
    /// backup, a compromised server): everyone must log in again. On Postgres one `TRUNCATE`,
    /// one notification to every node whatever the number of sessions. The `TRUNCATE` needs the
    /// sessions table to itself: it waits at most a second for a transaction that reads it (a
    /// backup, a report), since every request's lookup waits behind it meanwhile.
    ///
    /// # Errors
    ///
    /// An infrastructure error, also when the table was not free within a second; then
    /// nothing changed: end that transaction, or call this again.
    pub async fn revoke_every_session(&self) -> Result<(), Error> {
        self.store.delete_all_sessions().await?;
        security::every_session_revoked("admin");
        self.everyone_changed();
        Ok(())
    }

    /// Deletes every session past its idle or absolute deadline (they are refused anyway;
    /// this keeps the table small), in batches of 250 so that no statement holds its
    /// locks for long, each followed by a pause as long as the batch took (the purge never takes
    /// more than half of one connection's time), and returns how many. Also forgets failed-login
    /// counters idle for a day, or for the per-address window if longer
    /// ([`login_failures_per_ip`](crate::AuthLayerBuilder::login_failures_per_ip): so purge
    /// through the layer's [`accounts`](crate::AuthLayer::accounts) when you set a longer one).
    /// Each statement is given up after 30 seconds without an answer.
    /// See also [`purge_expired_every`](crate::AuthLayerBuilder::purge_expired_every).
    ///
    /// # Errors
    ///
    /// An infrastructure error.
    pub async fn purge_expired_sessions(&self) -> Result<u64, Error> {
        self.purge_within(PURGE_STATEMENT_BOUND).await
    }

    /// [`purge_expired_sessions`](Self::purge_expired_sessions), each statement given up after
    /// `bound`.
    pub(crate) async fn purge_within(&self, bound: Duration) -> Result<u64, Error> {
        let by_then = || tokio::time::Instant::now() + bound;
        let mut purged = 0;
        loop {
            let started = std::time::Instant::now();
            let batch = by(by_then(), self.store.purge_expired_batch(PURGE_BATCH)).await?;
            for session in &batch {
                security::expired(
                    session.user_id,
                    &session.id,
                    session.ip.as_deref(),
                    session.user_agent.as_deref(),
                );
            }
            purged += batch.len() as u64;
            if batch.len() < PURGE_BATCH as usize {
                break;
            }
            // Paced: requests keep at least as much of the database as the purge takes.
            tokio::time::sleep(started.elapsed()).await;
        }
        // A counter whose window still refuses is not forgotten, however idle.
        let horizon = ATTEMPTS_HORIZON.max(self.limits.ip_window);
        by(by_then(), self.store.purge_attempts(horizon)).await?;
        by(by_then(), self.store.purge_tokens()).await?;
        Ok(purged)
    }

    /// Bans the user: sets `disabled_at`, deletes all their sessions and spends every link sent
    /// to them (reset, verification). Their next request, on any node, is unauthenticated, and
    /// they cannot log in until [enabled](Self::enable_user).
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], or an infrastructure error.
    pub async fn disable_user(&self, user: UserId) -> Result<(), Error> {
        found(self.store.disable_user(user).await?)?;
        self.changed(user);
        Ok(())
    }

    /// Lifts a ban. The user has to log in again: their sessions were deleted on disable, and
    /// those a ban set by hand (`disabled_at` written in SQL) left behind end here, as do the
    /// links sent before it. Enabling a user who is not banned changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], or an infrastructure error.
    pub async fn enable_user(&self, user: UserId) -> Result<(), Error> {
        found(repeating_conflicts(|| self.store.enable_user(user)).await?)?;
        self.changed(user);
        Ok(())
    }

    /// Grants a permission to the user directly, on every resource. Granting one the user has
    /// is a no-op.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::UserNotFound`], or an infrastructure error.
    pub async fn grant_permission(&self, user: UserId, permission: &str) -> Result<(), Error> {
        validate_name(permission)?;
        repeating_conflicts(|| self.store.grant_permission(user, permission)).await?;
        self.changed(user);
        Ok(())
    }

    /// Revokes a direct global grant; `false` if the user had no such grant. The user keeps the
    /// permission if a role of theirs grants it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name no grant can have (a typo in a deprovisioning script
    /// is not "no such grant"), or an infrastructure error.
    pub async fn revoke_permission(&self, user: UserId, permission: &str) -> Result<bool, Error> {
        queryable(&[permission])?;
        let revoked =
            repeating_conflicts(|| self.store.revoke_permission(user, permission)).await?;
        self.changed(user);
        refused_if_invalid(revoked, &[permission])
    }

    /// Grants a permission to the user on one resource only.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::UserNotFound`], or an infrastructure error.
    pub async fn grant_permission_on(
        &self,
        user: UserId,
        permission: &str,
        resource: &Resource,
    ) -> Result<(), Error> {
        validate_name(permission)?;
        let grant = GrantRow::Permission(permission);
        repeating_conflicts(|| self.store.grant_on(user, grant, resource)).await?;
        self.scoped_changed(user);
        Ok(())
    }

    /// Revokes a grant scoped to one resource; `false` if there was none.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], or an infrastructure error.
    pub async fn revoke_permission_on(
        &self,
        user: UserId,
        permission: &str,
        resource: &Resource,
    ) -> Result<bool, Error> {
        queryable(&[permission])?;
        let grant = GrantRow::Permission(permission);
        let revoked = repeating_conflicts(|| self.store.revoke_on(user, grant, resource)).await?;
        self.scoped_changed(user);
        refused_if_invalid(revoked, &[permission])
    }

    /// Creates a role if no role of that name exists.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], or an infrastructure error.
    pub async fn create_role(&self, role: &str) -> Result<(), Error> {
        validate_name(role)?;
        self.store.ensure_role(role).await
    }

    /// Adds a permission to a role, and so to every user who has the role (globally or on a
    /// resource).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::RoleNotFound`], or an infrastructure error.
    pub async fn grant_role_permission(&self, role: &str, permission: &str) -> Result<(), Error> {
        validate_name(role)?;
        validate_name(permission)?;
        repeating_conflicts(|| self.store.grant_role_permission(role, permission)).await?;
        self.everyone_changed();
        Ok(())
    }

    /// Removes a permission from a role; `false` if the role did not have it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], or an infrastructure error.
    pub async fn revoke_role_permission(
        &self,
        role: &str,
        permission: &str,
    ) -> Result<bool, Error> {
        queryable(&[role, permission])?;
        let revoked =
            repeating_conflicts(|| self.store.revoke_role_permission(role, permission)).await?;
        self.everyone_changed();
        refused_if_invalid(revoked, &[role, permission])
    }

    /// Gives the user a role, on every resource.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::UserNotFound`], [`Error::RoleNotFound`], or an
    /// infrastructure error.
    pub async fn assign_role(&self, user: UserId, role: &str) -> Result<(), Error> {
        validate_name(role)?;
        repeating_conflicts(|| self.store.assign_role(user, role)).await?;
        self.changed(user);
        Ok(())
    }

    /// Takes a global role away from the user; `false` if they did not have it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], or an infrastructure error.
    pub async fn unassign_role(&self, user: UserId, role: &str) -> Result<bool, Error> {
        queryable(&[role])?;
        let removed = repeating_conflicts(|| self.store.unassign_role(user, role)).await?;
        self.changed(user);
        refused_if_invalid(removed, &[role])
    }

    /// Gives the user a role on one resource: every permission of the role, on that resource
    /// ("bob is manager of project 42").
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::UserNotFound`], [`Error::RoleNotFound`], or an
    /// infrastructure error.
    pub async fn assign_role_on(
        &self,
        user: UserId,
        role: &str,
        resource: &Resource,
    ) -> Result<(), Error> {
        validate_name(role)?;
        let grant = GrantRow::Role(role);
        repeating_conflicts(|| self.store.grant_on(user, grant, resource)).await?;
        self.scoped_changed(user);
        Ok(())
    }

    /// Takes a role on one resource away from the user; `false` if they did not have it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], or an infrastructure error.
    pub async fn unassign_role_on(
        &self,
        user: UserId,
        role: &str,
        resource: &Resource,
    ) -> Result<bool, Error> {
        queryable(&[role])?;
        let grant = GrantRow::Role(role);
        let removed = repeating_conflicts(|| self.store.revoke_on(user, grant, resource)).await?;
        self.scoped_changed(user);
        refused_if_invalid(removed, &[role])
    }

    /// The ids of resources of type `kind` on which the user holds `permission` through a
    /// scoped grant (directly or by a role on the resource), in byte order, at most `limit`
    /// after `after` (the last id of the previous page). A user who holds the permission
    /// globally may see every resource of the type: check
    /// [`CurrentUser::has`](crate::CurrentUser::has) first. The grants are listed whatever the
    /// user's state: a disabled user holds none of them (unlike [`holders`](Self::holders),
    /// this does not check).
    ///
    /// ```no_run
    /// # async fn f(accounts: axum_live_auth::Accounts, bob: i64) -> Result<(), axum_live_auth::Error> {
    /// let first = accounts.resource_ids(bob, "project:read", "project", None, 50).await?;
    /// let second = accounts
    ///     .resource_ids(bob, "project:read", "project", first.last().map(String::as_str), 50)
    ///     .await?;
    /// # let _ = second; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidResource`] when `kind` or `after` holds a NUL (no resource can), or an
    /// infrastructure error.
    pub async fn resource_ids(
        &self,
        user: UserId,
        permission: &str,
        kind: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        if kind.contains('\0') || after.is_some_and(|after| after.contains('\0')) {
            return Err(Error::InvalidResource);
        }
        if !grantable(permission) {
            return Ok(Vec::new());
        }
        self.store
            .resources_of(user, permission, kind, after, limit)
            .await
    }

    /// The ids of users who hold `permission` on `resource` (by a scoped grant, a role on the
    /// resource, or globally), ascending, at most `limit` above `after` (the last id of the
    /// previous page, or 0). A disabled user holds nothing, whatever their grants say, and is
    /// not listed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name no permission can have; an infrastructure error.
    pub async fn holders(
        &self,
        permission: &str,
        resource: &Resource,
        after: UserId,
        limit: u32,
    ) -> Result<Vec<UserId>, Error> {
        // SQLite keeps a user's permissions as lines of text: an empty name or one with a line
        // break would match there what no one holds.
        validate_name(permission)?;
        self.store.holders(permission, resource, after, limit).await
    }
}

fn found(exists: bool) -> Result<(), Error> {
    exists.then_some(()).ok_or(Error::UserNotFound)
}

/// A name of 1 to 64 characters, without control or invisible characters or surrounding
/// spaces, in Unicode's composed form (NFC): `é` as one character, never `e` and a combining
/// accent, so that no two names look the same for that reason alone.
fn validate_username(username: &str) -> Result<(), Error> {
    let chars = username.chars().count();
    let ok = (1..=64).contains(&chars)
        && username.len() <= crate::login::MAX_USERNAME_BYTES
        && username.trim() == username
        && !username.chars().any(|c| c.is_control() || is_invisible(c))
        && unicode_normalization::is_nfc(username);
    ok.then_some(()).ok_or(Error::InvalidUsername)
}

/// Refuses, before any query, a name holding a NUL, which no grant or role can hold (Postgres
/// text cannot even be asked about it).
fn queryable(names: &[&str]) -> Result<(), Error> {
    let ok = !names.iter().any(|name| name.contains('\0'));
    ok.then_some(()).ok_or(Error::InvalidName)
}

/// What a revoke that removed nothing (`removed` false) answers: [`Error::InvalidName`] if one
/// of `names` is no name a grant or role can be given (a typo in a deprovisioning script is not
/// "no such grant"). A revoke that removed something succeeds whatever the name: one given
/// before the rules were this strict, or by SQL, can still be taken away.
fn refused_if_invalid(removed: bool, names: &[&str]) -> Result<bool, Error> {
    if !removed {
        names.iter().try_for_each(|name| validate_name(name))?;
    }
    Ok(removed)
}

/// Permission and role names: 1 to 128 visible characters, no whitespace.
fn validate_name(name: &str) -> Result<(), Error> {
    let ok = grantable(name) && !has_space_or_invisible(name);
    if ok { Ok(()) } else { Err(Error::InvalidName) }
}

/// Whether `text` holds whitespace, a control or an [invisible](is_invisible) character.
pub(crate) fn has_space_or_invisible(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
}

/// Whether a grant can name `permission` at all: 1 to 128 characters, as the grant tables'
/// checks hold (looking at no more than 129 of them), and no NUL, which no Postgres text holds
/// (asked, the database would answer with an error, not with "no").
pub(crate) fn grantable(permission: &str) -> bool {
    !permission.is_empty() && !permission.contains('\0') && permission.chars().nth(128).is_none()
}

/// Characters that show nothing or reorder what follows them (Unicode's default-ignorable code
/// points, bidirectional controls among them): two names that differ only by them look the
/// same on every page and in every log, so no name may hold one.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("Ålice Smith").is_ok());
        let invisible = [
            "alice\u{200B}",  // zero-width space
            "\u{202E}ecila",  // right-to-left override
            "al\u{00AD}ice",  // soft hyphen
            "alice\u{FEFF}",  // byte order mark
            "alice\u{E0041}", // tag character
            "\u{3164}",       // Hangul filler
        ];
        assert!(validate_username("Jos\u{E9}").is_ok(), "composed");
        for bad in [
            "",
            " alice",
            "alice ",
            "a\nb",
            "a\0b",
            &"x".repeat(65),
            "Jose\u{301}",
        ]
        .into_iter()
        .chain(invisible)
        {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("reports:read").is_ok());
        for bad in ["", "a b", "a\tb", "admin\u{200D}", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
