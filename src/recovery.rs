//! Account recovery and email verification: one-time tokens sent to the user through the app's
//! [`Messenger`], and what using one does.
//!
//! A token is a credential like a session token (`<public id>.<secret>`, 16 + 32 random bytes,
//! only the public id and the secret's SHA-256 stored), single use, short-lived, and valid only
//! while the user's credentials are those it was issued under.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use crate::{
    Accounts, ConfigError, Error, SessionId, SessionToken, UserId,
    accounts::has_space_or_invisible,
    client::Client,
    csrf::link_base,
    error::InfrastructureError,
    events::security,
    login::typed_name,
    password,
    store::{AttemptKey, Purpose, Recipient, Reservation, ThrottleLimits, TokenRow},
};

/// Password-reset requests allowed per client address, and per account, per [`WINDOW`] (per
/// account: per reset lifetime if shorter).
const RESET_PER_ADDRESS: u32 = 5;
const RESET_PER_ACCOUNT: u32 = 3;
/// The window of the counts of sign-ups, reset requests and address changes.
pub(crate) const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Address changes allowed per user per window: each sends a verification message, and each
/// answer says whether another user has the address. Per client address too, so that accounts
/// signed up for the purpose do not multiply the answers one client gets.
const EMAIL_CHANGES_PER_USER: u32 = 5;
const EMAIL_CHANGES_PER_ADDRESS: u32 = 10;

/// The error a [`Messenger`] reports.
pub type MessengerError = Box<dyn std::error::Error + Send + Sync>;

/// Delivers the crate's messages to users (a password-reset link, an email-verification link):
/// the app decides how (SMTP, an email API, a file in development). The crate never formats
/// email transport itself.
///
/// ```
/// use axum_live_auth::{Message, Messenger, MessengerError};
///
/// struct Log;
///
/// impl Messenger for Log {
///     async fn send(&self, message: Message) -> Result<(), MessengerError> {
///         // A real app hands this to its mailer; the link is a credential: never log it.
///         println!("to {:?}: {:?}", message.email, message.kind);
///         Ok(())
///     }
/// }
/// ```
pub trait Messenger: Send + Sync + 'static {
    /// Delivers `message`. An error is logged; the user can ask again.
    fn send(&self, message: Message) -> impl Future<Output = Result<(), MessengerError>> + Send;
}

/// What a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// A link to choose a new password (`GET …/password-reset/confirm?token=…`).
    PasswordReset,
    /// A link that proves the user receives mail at an address (`GET …/email/verify?token=…`).
    EmailVerification,
    /// To the user's current address when a change to another is asked for: if the user did
    /// not ask, its link (a password reset, `GET …/password-reset/confirm?token=…`) ends every
    /// session and spends the change, unless the new address was confirmed first.
    EmailChangeRequested,
}

/// A message for one user. Its [`link`](Self::link) carries a one-time credential: send it
/// only to the user, and never log it (`Debug` does not show it).
#[derive(Clone)]
#[non_exhaustive]
pub struct Message {
    /// What it is for.
    pub kind: MessageKind,
    /// The user's id.
    pub user_id: UserId,
    /// The user's name.
    pub username: String,
    /// Where to send it: the user's address (for a verification, the address to verify);
    /// `None` for a password reset of a user without one (reach them another way, or not).
    pub email: Option<String>,
    /// The absolute link to follow.
    pub link: String,
    /// How long the link works.
    pub expires_in: Duration,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("kind", &self.kind)
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("email", &self.email)
            .field("link", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// [`Messenger`] behind a pointer.
trait DynMessenger: Send + Sync {
    fn send(
        &self,
        message: Message,
    ) -> Pin<Box<dyn Future<Output = Result<(), MessengerError>> + Send + '_>>;
}

impl<T: Messenger> DynMessenger for T {
    fn send(
        &self,
        message: Message,
    ) -> Pin<Box<dyn Future<Output = Result<(), MessengerError>> + Send + '_>> {
        Box::pin(Messenger::send(self, message))
    }
}

impl std::fmt::Debug for dyn DynMessenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt("<messenger>", f)
    }
}

/// How recovery messages are made and delivered.
#[derive(Debug, Clone)]
pub(crate) struct Recovery {
    messenger: Option<Arc<dyn DynMessenger>>,
    /// Where the account routes are mounted, such as `https://app.example.com/account`.
    pub(crate) account_url: String,
    pub(crate) reset_lifetime: Duration,
    pub(crate) verification_lifetime: Duration,
    /// How long a send may take before it is given up.
    pub(crate) send_timeout: Duration,
    /// Places for reset requests handled after their answer ([`RESETS_IN_FLIGHT`]).
    in_flight: Arc<Semaphore>,
}

/// Reset requests handled at once after their answer (looked up, counted, sent): beyond, a
/// request is answered alike and dropped, so that a flood (from clients without an address, which
/// no per-address limit holds back) cannot queue work for the pool, or messages, without bound.
const RESETS_IN_FLIGHT: usize = 16;

impl Default for Recovery {
    fn default() -> Self {
        Self {
            messenger: None,
            account_url: String::new(),
            reset_lifetime: Duration::from_secs(30 * 60),
            verification_lifetime: Duration::from_secs(24 * 60 * 60),
            send_timeout: Duration::from_secs(30),
            in_flight: Arc::new(Semaphore::new(RESETS_IN_FLIGHT)),
        }
    }
}

impl Recovery {
    pub(crate) fn set_messenger(&mut self, messenger: impl Messenger) {
        self.messenger = Some(Arc::new(messenger));
    }
}

impl Accounts {
    /// These accounts with a [`Messenger`] for recovery messages, whose links start with
    /// `account_url` (where the [account routes](crate::account_routes) are mounted, such as
    /// `https://app.example.com/account`). Accounts from
    /// [`AuthLayer::accounts`](crate::AuthLayer::accounts) have the layer's.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), axum_live_auth::Error> {
    /// # struct Mailer;
    /// # impl axum_live_auth::Messenger for Mailer {
    /// #     async fn send(&self, _: axum_live_auth::Message) -> Result<(), axum_live_auth::MessengerError> { Ok(()) }
    /// # }
    /// let pool = sqlx::PgPool::connect_lazy("postgres://localhost/app")?;
    /// let accounts = axum_live_auth::Accounts::new(pool.clone())
    ///     .with_messenger(Mailer, "https://app.example.com/account")?;
    ///
    /// // Links that carry their token in the clear, across the network: refused.
    /// let clear = axum_live_auth::Accounts::new(pool)
    ///     .with_messenger(Mailer, "http://app.example.com/account");
    /// assert!(matches!(clear, Err(axum_live_auth::ConfigError::PlainHttp(_))));
    /// # let _ = accounts; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::PlainHttp`](crate::ConfigError::PlainHttp) for a plain `http://` URL on
    /// a host other than this machine's, and
    /// [`ConfigError::InvalidAccountUrl`](crate::ConfigError::InvalidAccountUrl) for one that
    /// is not an absolute URL without user info, query or fragment, as
    /// [`AuthLayerBuilder::build`](crate::AuthLayerBuilder::build) refuses them.
    pub fn with_messenger(
        mut self,
        messenger: impl Messenger,
        account_url: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let account_url = link_base(&account_url.into(), false)?;
        let recovery = Arc::make_mut(&mut self.recovery);
        recovery.set_messenger(messenger);
        recovery.account_url = account_url;
        Ok(self)
    }

    /// Sends a password-reset link to the user called `name_or_email` (a username, or the
    /// address of a user), if there is such an enabled user; does nothing otherwise, and says
    /// nothing about which it was. The link works once, for 30 minutes
    /// ([configurable](crate::AuthLayerBuilder::password_reset_lifetime)), and only while the
    /// user's password is unchanged. The `POST /password-reset` route answers before this
    /// finishes, so that its timing says nothing either, and throttles requests per address and
    /// per account.
    ///
    /// # Errors
    ///
    /// [`Error::NoMessenger`], or an infrastructure error (the messenger's included).
    pub async fn request_password_reset(&self, name_or_email: &str) -> Result<(), Error> {
        self.send_reset(name_or_email, None).await
    }

    /// Uses a password-reset token: sets the new password, ends every session of the user and
    /// moves them to a new credential epoch (no login whose password check ran before can
    /// create a session), and returns the user. The token is then spent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`] for an unknown, used or expired token (or one issued before the
    /// password changed), [`Error::InvalidPassword`], or an infrastructure error.
    pub async fn reset_password_with_token(
        &self,
        token: &str,
        new_password: &str,
    ) -> Result<UserId, Error> {
        self.reset_password_from(token, new_password, &Client::default())
            .await
    }

    /// [`reset_password_with_token`](Self::reset_password_with_token) for `client`, whose hash
    /// takes no more than its address's share of the hasher (many posts of one live link at
    /// once cannot fill it), and whom the security events name.
    pub(crate) async fn reset_password_from(
        &self,
        token: &str,
        new_password: &str,
        client: &Client,
    ) -> Result<UserId, Error> {
        password::validate_new(new_password)?;
        let (token, row) = self
            .check_token(token, Purpose::PasswordReset, client)
            .await?;
        // Hashed before the token is spent, so that a hash refused for load leaves the link
        // working; then the token is spent and the password set in one transaction, only if no
        // other password was set since the token was checked.
        let hash = self.hasher.hash(new_password, client.address).await?;
        let epoch = Some(row.credential_epoch);
        if !self
            .store_password(row.user_id, &hash, epoch, Some(token.id()))
            .await?
        {
            return Err(Error::InvalidToken);
        }
        security::password_reset(client, row.user_id);
        Ok(row.user_id)
    }

    /// Asks to change the user's email address to `email`: sends a link to it, and the address
    /// becomes the user's (verified) only when that link is confirmed. Until then the user's
    /// address stays what it was, and so does where reset links go: an address nobody has
    /// proved to receive mail at (a typo, or one given by whoever held a session for a moment)
    /// never receives one. The user's current address, if any, is told
    /// ([`MessageKind::EmailChangeRequested`]), with a reset link to undo a change they did not
    /// ask for. The address must be unique among users, compared case-insensitively.
    ///
    /// This is the step alone: `POST /account/email` in
    /// [`account_routes`](crate::account_routes) also requires a recent password check, limits
    /// requests per user, and ends the user's other sessions, which an app that serves this
    /// itself must do too, before calling this
    /// ([`Auth::revoke_other_sessions`](crate::Auth::revoke_other_sessions) cancels pending
    /// changes, this one included); and it makes the link only while the asking session is
    /// still live (a request whose body comes after a reset changes nothing), which only the
    /// route does.
    /// Prefer the route.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEmail`], [`Error::EmailTaken`], [`Error::UserNotFound`],
    /// [`Error::NoMessenger`], or an infrastructure error.
    pub async fn request_email_change(&self, user: UserId, email: &str) -> Result<(), Error> {
        let (messages, _) = self
            .email_change_messages(user, email, None, &Client::default())
            .await?;
        for message in messages {
            self.send(message).await?;
        }
        Ok(())
    }

    /// The first half of [`request_email_change`](Self::request_email_change): checks the
    /// address and makes its messages, without sending them. The notice to the current address
    /// comes first, so that a request dropped between the two sends (or a failed send) never
    /// delivers the link without it. With `session`, the link is made only while that session
    /// still holds at the user's credential epoch (else [`Error::Unauthenticated`]). Also
    /// returns the link's token id, which ending the other sessions spares. `client` is who
    /// asked, for the security event.
    pub(crate) async fn email_change_messages(
        &self,
        user: UserId,
        email: &str,
        session: Option<&SessionId>,
        client: &Client,
    ) -> Result<(Vec<Message>, SessionId), Error> {
        self.messenger()?;
        validate_email(email)?;
        let recipient = self
            .store()
            .recipient_by_id(user)
            .await?
            .ok_or(Error::UserNotFound)?;
        if self.store().email_taken(user, email).await? {
            return Err(Error::EmailTaken);
        }
        let (link, id) = self
            .issue(&recipient, Purpose::EmailVerification, Some(email), session)
            .await?;
        let mut messages = Vec::with_capacity(2);
        if let Some(current) = recipient.email.as_deref() {
            let (mut notice, _) = self
                .issue(&recipient, Purpose::PasswordReset, Some(current), None)
                .await?;
            notice.kind = MessageKind::EmailChangeRequested;
            messages.push(notice);
        }
        messages.push(link);
        security::email_change_requested(client, user);
        Ok((messages, id))
    }

    /// Hands `message` to the messenger, for at most the send timeout: a send that never
    /// finishes would keep its place among the [`RESETS_IN_FLIGHT`] for good.
    pub(crate) async fn send(&self, message: Message) -> Result<(), Error> {
        let sent = self.messenger()?.send(message);
        match tokio::time::timeout(self.recovery.send_timeout, sent).await {
            Ok(sent) => sent.map_err(|e| InfrastructureError::Messenger(e).into()),
            Err(_) => {
                let late = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the messenger did not finish in time",
                );
                Err(InfrastructureError::Messenger(late.into()).into())
            }
        }
    }

    /// Uses an email-verification token: the address it was sent to becomes the user's,
    /// verified, if the user's credentials are those it was issued under; every other link sent
    /// to the user before (a reset link to the old address) is spent. Returns the user.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`] for an unknown, used or expired token, or one issued before the
    /// user's password changed; [`Error::EmailTaken`] if another user has the address by now;
    /// or an infrastructure error.
    pub async fn verify_email(&self, token: &str) -> Result<UserId, Error> {
        self.verify_email_from(token, &Client::default()).await
    }

    /// [`verify_email`](Self::verify_email) for `client`, whom the security events name.
    pub(crate) async fn verify_email_from(
        &self,
        token: &str,
        client: &Client,
    ) -> Result<UserId, Error> {
        let (token, row) = self
            .check_token(token, Purpose::EmailVerification, client)
            .await?;
        let email = row.email.ok_or(Error::InvalidToken)?;
        let user = row.user_id;
        if !self
            .store()
            .adopt_email(user, &email, row.credential_epoch, token.id())
            .await?
        {
            return Err(Error::InvalidToken);
        }
        security::email_changed(client, user);
        self.changed(user);
        Ok(user)
    }

    /// Counts a password-reset request against the client's address: `Err(Throttled)` past the
    /// limit, which says nothing about any account. `POST /password-reset` answers after this,
    /// and sends the link afterwards ([`send_reset`](Self::send_reset)).
    pub(crate) async fn reserve_reset(&self, client: &Client) -> Result<(), Error> {
        if let Some(address) = client.address {
            let key = AttemptKey::reset(&AttemptKey::address(address.to_string()));
            if let Reservation::Refused(retry_after) = self
                .reserve_in_window(&key, RESET_PER_ADDRESS, WINDOW)
                .await?
            {
                security::password_reset_throttled(client, retry_after);
                return Err(Error::Throttled { retry_after });
            }
        }
        Ok(())
    }

    /// Handles a reset request after its answer ([`send_reset`](Self::send_reset), throttled
    /// for `client`), in a task of its own, if one of the [`RESETS_IN_FLIGHT`] places is free;
    /// else drops it.
    pub(crate) fn send_reset_later(&self, client: Client, name_or_email: String) {
        let Ok(place) = Arc::clone(&self.recovery.in_flight).try_acquire_owned() else {
            tracing::warn!("axum-live-auth: too many password-reset requests at once; one dropped");
            return;
        };
        let accounts = self.clone();
        tokio::spawn(async move {
            let _place = place;
            if let Err(error) = accounts.send_reset(&name_or_email, Some(&client)).await {
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "axum-live-auth: sending a password-reset link failed"
                );
            }
        });
    }

    /// [`request_password_reset`](Self::request_password_reset), counted against the account
    /// (by username or address alike) when `throttled_for` a client: past the account's limit
    /// nothing is sent. The route runs this after its answer, so that neither the answer nor
    /// its timing says whether the account exists or has reached its limit (a refusal would
    /// tell whoever asked by username and then by address whether the two are one account).
    pub(crate) async fn send_reset(
        &self,
        name_or_email: &str,
        throttled_for: Option<&Client>,
    ) -> Result<(), Error> {
        self.messenger()?;
        // As at login: the decomposed spelling of a name is the same name.
        let Some(composed) = typed_name(name_or_email) else {
            return Ok(());
        };
        let Some(user) = self.recipient(name_or_email, &composed).await? else {
            return Ok(());
        };
        if let Some(client) = throttled_for {
            // No longer than a link lives: whenever the account's limit refuses, the links its
            // requests mailed are still live, so a limit used up by someone else leaves the
            // user one.
            let window = WINDOW.min(self.recovery.reset_lifetime);
            let key = AttemptKey::reset(&AttemptKey::user(user.id));
            if let Reservation::Refused(retry_after) = self
                .reserve_in_window(&key, RESET_PER_ACCOUNT, window)
                .await?
            {
                security::password_reset_throttled(client, retry_after);
                return Ok(());
            }
        }
        let (message, _) = self
            .issue(&user, Purpose::PasswordReset, user.email.as_deref(), None)
            .await?;
        security::password_reset_requested(throttled_for.unwrap_or(&Client::default()), user.id);
        self.send(message).await
    }

    /// The enabled user named `given` (a username or an address), found as the login finds a
    /// name: as given (a name stored decomposed, before names had to be composed), else as
    /// `composed`, its [`typed_name`]. Both are looked up whenever they differ, so that the
    /// time taken depends on the input alone.
    async fn recipient(&self, given: &str, composed: &str) -> Result<Option<Recipient>, Error> {
        let as_composed = self.store().recipient(composed).await?;
        if given == composed {
            return Ok(as_composed);
        }
        Ok(self.store().recipient(given).await?.or(as_composed))
    }

    /// Counts a change of the user's address (`POST /email`) against the user and the client's
    /// address; `Err(Throttled)` past either limit.
    pub(crate) async fn reserve_email_change(
        &self,
        client: &Client,
        user: UserId,
    ) -> Result<(), Error> {
        let from = client.address.map(|address| {
            let key = AttemptKey::email_change_from(address.to_string());
            (key, EMAIL_CHANGES_PER_ADDRESS)
        });
        let of_user = (AttemptKey::email_change(user), EMAIL_CHANGES_PER_USER);
        for (key, count) in from.into_iter().chain([of_user]) {
            if let Reservation::Refused(retry_after) =
                self.reserve_in_window(&key, count, WINDOW).await?
            {
                security::email_change_throttled(client, user, retry_after);
                return Err(Error::Throttled { retry_after });
            }
        }
        Ok(())
    }

    /// Counts one request under `key`, at most `count` a `window`.
    pub(crate) async fn reserve_in_window(
        &self,
        key: &AttemptKey,
        count: u32,
        window: Duration,
    ) -> Result<Reservation, Error> {
        let limits = ThrottleLimits {
            ip_failures: count,
            ip_window: window,
            ..self.limits
        };
        self.store().reserve_attempt(key, &limits).await
    }

    /// `Err(NoMessenger)` when no messages can be sent.
    pub(crate) fn can_send(&self) -> Result<(), Error> {
        self.messenger().map(drop)
    }

    fn messenger(&self) -> Result<&Arc<dyn DynMessenger>, Error> {
        self.recovery.messenger.as_ref().ok_or(Error::NoMessenger)
    }

    /// Stores a new token for `user` and makes the message that carries it; and the token's id.
    async fn issue(
        &self,
        user: &Recipient,
        purpose: Purpose,
        email: Option<&str>,
        session: Option<&SessionId>,
    ) -> Result<(Message, SessionId), Error> {
        let recovery = &self.recovery;
        let (kind, lifetime, path) = match purpose {
            Purpose::PasswordReset => (
                MessageKind::PasswordReset,
                recovery.reset_lifetime,
                "password-reset/confirm",
            ),
            Purpose::EmailVerification => (
                MessageKind::EmailVerification,
                recovery.verification_lifetime,
                "email/verify",
            ),
        };
        let token = SessionToken::generate()?;
        let stored = self
            .store()
            .create_token(&token, user.id, purpose, email, lifetime, session)
            .await?;
        if !stored {
            return Err(session.map_or(Error::UserNotFound, |_| Error::Unauthenticated));
        }
        let message = Message {
            kind,
            user_id: user.id,
            username: user.username.clone(),
            email: email.map(str::to_owned),
            link: format!("{}/{path}?token={token}", recovery.account_url),
            expires_in: lifetime,
        };
        Ok((message, token.id().clone()))
    }

    /// The live token of `purpose` that `token` is, secret checked; not spent yet.
    /// A refusal is logged as `client`'s.
    async fn check_token(
        &self,
        token: &str,
        purpose: Purpose,
        client: &Client,
    ) -> Result<(SessionToken, TokenRow), Error> {
        let live = match SessionToken::parse(token.as_bytes()) {
            Some(token) => self
                .store()
                .find_token(token.id(), purpose)
                .await?
                .filter(|row| token.secret_hash().matches(&row.secret_hash))
                .map(|row| (token, row)),
            None => None,
        };
        live.ok_or_else(|| {
            security::invalid_link(client, purpose.as_str());
            Error::InvalidToken
        })
    }
}

/// An address: 3 to 254 characters, one `@` with something on each side, no whitespace,
/// control or invisible characters.
fn validate_email(email: &str) -> Result<(), Error> {
    let ok = (3..=254).contains(&email.len())
        && email.split('@').count() == 2
        && !email.starts_with('@')
        && !email.ends_with('@')
        && !has_space_or_invisible(email)
        // Composed (NFC), as names are: one address in two spellings is never held twice, and
        // a reset asked for by it (typed input is composed) finds it.
        && unicode_normalization::is_nfc(email);
    if ok { Ok(()) } else { Err(Error::InvalidEmail) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(validate_email("bob@example.com").is_ok());
        for bad in [
            "",
            "bob",
            "@example.com",
            "bob@",
            "a@b@c",
            "bob @example.com",
            "b\0@x.y",
            "bob\u{200B}@example.com",
            "jose\u{301}@example.com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_message_never_shows_its_link() {
        let message = Message {
            kind: MessageKind::PasswordReset,
            user_id: 1,
            username: "bob".into(),
            email: None,
            link: "https://x/account/password-reset/confirm?token=SECRET".into(),
            expires_in: Duration::from_secs(60),
        };
        assert!(!format!("{message:?}").contains("SECRET"));
    }
}
