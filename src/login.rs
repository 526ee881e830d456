//! Every password check the crate offers, in one place, throttled atomically: the attempt is
//! reserved in the database (per client address, then per account or name) before any hash is
//! computed, refused there when over the limit, and given back when the password was right.

use std::borrow::Cow;

use crate::{
    AuthStore, Error, UserId,
    client::Client,
    events::security,
    password::{self, Admission, Hasher, MAX_PASSWORD_BYTES},
    store::{AttemptKey, Reservation, Reserved, ThrottleLimits},
};

/// The longest username accepted at login, in bytes; longer input is refused without a query.
pub(crate) const MAX_USERNAME_BYTES: usize = 256;

/// A right password of an enabled user, and the credential version it was checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verified {
    pub(crate) user: UserId,
    pub(crate) credential_epoch: i64,
}

/// What a password check needs: where the users are, who hashes, and the limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PasswordCheck<'a> {
    pub(crate) store: &'a AuthStore,
    pub(crate) hasher: &'a Hasher,
    pub(crate) limits: &'a ThrottleLimits,
}

impl PasswordCheck<'_> {
    /// Checks `username` and `password` for `client`: `Some` only for the right password of an
    /// enabled user. Unknown, password-less and disabled users cost the same as a wrong password
    /// (one Argon2 verification always runs), and each failure is a `login_failed` security event.
    /// A right password checked against a hash with other parameters than the crate's is
    /// stored again with the crate's (a second hash, and a write), keeping the credential epoch.
    ///
    /// # Errors
    ///
    /// [`Error::Throttled`] when the address or the account is over its limit (no hash is
    /// computed), [`Error::Busy`] when too many hashes are running or waiting (the attempt is
    /// given back), or an infrastructure error.
    pub(crate) async fn check(
        &self,
        client: &Client,
        username: &str,
        password: &str,
    ) -> Result<Option<Verified>, Error> {
        // One name, one account: the decomposed spelling of a name (accounts hold names in
        // composed form, NFC) finds the account and spends its failures. A name no user can
        // have is refused without a query.
        let typed = typed_name(username).filter(|_| password.len() <= MAX_PASSWORD_BYTES);
        let Some(composed) = typed else {
            security::login_failed(client, username);
            return Ok(None);
        };
        // A name stored as typed, before names had to be composed, is found as it is first.
        let mut row = self.store.login_row(username).await?;
        if row.id.is_none() && composed != username {
            row = self.store.login_row(&composed).await?;
        }
        let username = &*composed;
        let account = match row.id {
            Some(id) => AttemptKey::user(id),
            None => AttemptKey::unknown_name(&row.folded),
        };
        let (address, account, admission) = self.reserve(client, username, &account).await?;
        // A hash with other parameters than the crate's, kept to be replaced if it verifies.
        let outdated = (row.password_hash.as_deref())
            .filter(|hash| !password::is_current(hash))
            .map(str::to_owned);
        let verified = self
            .hasher
            .verify(password, row.password_hash, admission)
            .await;
        let enabled = row.disabled == Some(false);
        match (verified, row.id, row.credential_epoch) {
            (Ok(true), Some(user), Some(credential_epoch)) if enabled => {
                // A success is not a failure: give back what was reserved.
                if let Some(address) = &address {
                    self.store.release_attempt(address).await?;
                }
                self.store.clear_attempts(account.key()).await?;
                if let Some(outdated) = outdated {
                    self.rehash(client, user, credential_epoch, password, &outdated)
                        .await;
                }
                Ok(Some(Verified {
                    user,
                    credential_epoch,
                }))
            }
            (Ok(_), _, _) => {
                security::login_failed(client, username);
                Ok(None)
            }
            (Err(error), _, _) => {
                // The check did not finish (its hashing task failed, or the runtime is
                // shutting down): no password was judged, so the address and the account get
                // their attempts back. (A block this attempt started, past the free failures,
                // stays: it errs closed.) A refusal for load comes earlier, at admission.
                if let Some(address) = &address {
                    self.store.release_attempt(address).await?;
                }
                self.store.release_attempt(&account).await?;
                Err(error)
            }
        }
    }

    /// Stores the right `password` of `user` again with the crate's parameters, in place of
    /// the `outdated` hash, keeping the credential epoch. Best effort: only when a hash can run
    /// at once (the login never waits in the hasher's queue for it); when the hasher is busy or
    /// the database fails, the login goes on and a later one tries again.
    async fn rehash(
        &self,
        client: &Client,
        user: UserId,
        epoch: i64,
        password: &str,
        outdated: &str,
    ) {
        let hashed = match self.hasher.admit_now(client.address) {
            Ok(admission) => self.hasher.hash_admitted(password, admission).await,
            Err(busy) => Err(busy),
        };
        let stored = match hashed {
            Ok(hash) => (self.store)
                .rehash_password(user, epoch, outdated, &hash)
                .await
                .map(|_| ()),
            Err(error) => Err(error),
        };
        if let Err(error) = stored {
            tracing::debug!(user = %user, %error, "password hash not renewed");
        }
    }

    /// Reserves the attempt for the address (if known), is admitted to the hasher, then
    /// reserves the attempt for the account. A throttled address never reaches the hasher; a
    /// refusal for load comes before the account's attempt, so it starts no block of the
    /// account (and gives the address its attempt back, as a refusal of the account does).
    async fn reserve(
        &self,
        client: &Client,
        username: &str,
        account: &AttemptKey,
    ) -> Result<(Option<Reserved>, Reserved, Admission), Error> {
        let refused = |retry_after| {
            security::login_throttled(client, username, retry_after);
            Error::Throttled { retry_after }
        };
        let address = match client.address.map(|ip| AttemptKey::address(ip.to_string())) {
            Some(key) => match self.store.reserve_attempt(&key, self.limits).await? {
                Reservation::Granted(reserved) => Some(reserved),
                Reservation::Refused(wait) => return Err(refused(wait)),
            },
            None => None,
        };
        let give_back = async |address: &Option<Reserved>| match address {
            Some(address) => self.store.release_attempt(address).await,
            None => Ok(()),
        };
        let admission = match self.hasher.admit(client.address) {
            Ok(admission) => admission,
            Err(busy) => {
                give_back(&address).await?;
                return Err(busy);
            }
        };
        match self.store.reserve_attempt(account, self.limits).await? {
            Reservation::Granted(reserved) => Ok((address, reserved, admission)),
            Reservation::Refused(wait) => {
                // No hash: its place goes back before the database work below.
                drop(admission);
                give_back(&address).await?;
                Err(refused(wait))
            }
        }
    }
}

/// A name (or address) as typed, in the form accounts hold names in, if a user could have it:
/// no control character (Postgres text cannot even hold NUL), and at most
/// [`MAX_USERNAME_BYTES`] once composed. The decomposed spelling of a name may take three times
/// the bytes (a Hangul syllable), so the length that counts is the composed one; input over
/// four times the bound is refused before any work.
pub(crate) fn typed_name(name: &str) -> Option<Cow<'_, str>> {
    use unicode_normalization::UnicodeNormalization as _;
    if name.len() > 4 * MAX_USERNAME_BYTES || name.contains(char::is_control) {
        return None;
    }
    // Composed (NFC): borrowed when it already is.
    let composed = if unicode_normalization::is_nfc(name) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.nfc().collect())
    };
    Some(composed).filter(|name| name.len() <= MAX_USERNAME_BYTES)
}
