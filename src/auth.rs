//! The [`Auth`] handle: log in and out, and manage the current user's sessions and password.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::FromRequestParts;
use http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts};

use crate::{
    AuthRejection, AuthState, CurrentUser, Error, SessionId, SessionInfo, SessionToken, UserId,
    client::Client,
    credential::{self, CookieChange, Source},
    error::InfrastructureError,
    events::security,
    login::{PasswordCheck, Verified},
    lookup::Decided,
    password,
    shared::Shared,
    store::{AddressChanges, Created, NewSession, PasswordSet, Renewal},
};

/// The response header that carries a rotated token back to a bearer client.
pub const SESSION_TOKEN_HEADER: &str = "x-session-token";

/// How many fresh ids to try when a new session id is already taken.
const SESSION_ID_ATTEMPTS: usize = 3;

/// Handle for logging in and out and for managing the current user's sessions, available to
/// every handler behind the layer.
///
/// Every change it makes is enforced on the next request (with the principal cache, on other
/// nodes once the change's notification reaches them). It sets or clears the
/// session cookie on the response as needed (with `Cache-Control: no-store`).
///
/// ```
/// use axum::{Form, response::{IntoResponse, Redirect, Response}};
/// use axum_live_auth::{Auth, AuthRejection};
///
/// #[derive(serde::Deserialize)]
/// struct Login { username: String, password: String }
///
/// async fn login(auth: Auth, Form(form): Form<Login>) -> Result<Response, axum_live_auth::Error> {
///     match auth.login_with_password(&form.username, &form.password).await? {
///         Some(_) => Ok(Redirect::to("/me").into_response()),
///         None => Ok(AuthRejection::Unauthenticated.into_response()),
///     }
/// }
///
/// async fn logout(auth: Auth) -> Result<Redirect, axum_live_auth::Error> {
///     auth.logout().await?;
///     Ok(Redirect::to("/"))
/// }
/// # let _ = axum::Router::<()>::new()
/// #     .route("/login", axum::routing::post(login))
/// #     .route("/logout", axum::routing::post(logout));
/// ```
#[derive(Clone)]
pub struct Auth(Arc<AuthInner>);

struct AuthInner {
    shared: Arc<Shared>,
    state: AuthState,
    /// See [`Decided::replaced_by`].
    replaced_by: Option<(UserId, SessionId)>,
    client: Client,
    source: Source,
    response: Mutex<ResponseChanges>,
}

/// What the handler decided about the response's cookie and site data, and the request's
/// session as the handler left it.
#[derive(Debug)]
struct ResponseChanges {
    cookie: CookieChange,
    clear_site_data: bool,
    current: Current,
}

/// The request's session as the handler left it: what the session calls that follow act on.
#[derive(Debug)]
enum Current {
    /// As the layer looked it up.
    LookedUp,
    /// Gone on under this id (a rotation, a password change): same user.
    Renewed(SessionId),
    /// Replaced by a login, of this user: the handle holds no picture of them.
    Replaced(UserId, SessionId),
}

impl Auth {
    pub(crate) fn new(
        shared: Arc<Shared>,
        decided: Decided,
        client: Client,
        source: Source,
    ) -> Self {
        Self(Arc::new(AuthInner {
            shared,
            state: decided.state,
            replaced_by: decided.replaced_by,
            client,
            source,
            response: Mutex::new(ResponseChanges {
                cookie: decided.cookie,
                clear_site_data: false,
                current: Current::LookedUp,
            }),
        }))
    }

    /// The request's authentication state.
    pub fn state(&self) -> &AuthState {
        &self.0.state
    }

    /// The current user, if the request is authenticated.
    pub fn current_user(&self) -> Option<&CurrentUser> {
        self.session().ok().flatten()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.0.shared
    }

    pub(crate) fn source(&self) -> Source {
        self.0.source
    }

    pub(crate) fn client(&self) -> &Client {
        &self.0.client
    }

    /// Checks `username` and `password` and, if they are right, [logs the user in](Self::login).
    /// `Ok(None)` for a wrong password, an unknown or a disabled user alike, at the same cost
    /// (one Argon2 verification always runs), with a `login_failed` security event.
    ///
    /// Failed logins are throttled per client address and per account (see
    /// [`login_failures_per_ip`](crate::AuthLayerBuilder::login_failures_per_ip) and
    /// [`login_backoff`](crate::AuthLayerBuilder::login_backoff)); the attempt is counted before
    /// the password is checked, and a throttled attempt checks none. A session is only created
    /// if the user's password has not changed since it was checked.
    ///
    /// # Errors
    ///
    /// [`Error::Throttled`] (a `429` with `Retry-After`), [`Error::Busy`] (a `503`: too many
    /// password hashes at once); an infrastructure error.
    pub async fn login_with_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<UserId>, Error> {
        let Some(verified) = self.check_password(username, password).await? else {
            return Ok(None);
        };
        let epoch = Some(verified.credential_epoch);
        match self.replace_session(epoch, verified.user).await {
            Ok(_) => Ok(Some(verified.user)),
            // The password changed (or the user was disabled) while it was being checked.
            Err(Error::UserNotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Self-service sign-up: creates a user with `username` and `password`, as
    /// [`Accounts::create_user`](crate::Accounts::create_user) does, and [logs them
    /// in](Self::login), replacing the session the request came with, if any.
    ///
    /// Throttled per client address: at most 10 sign-ups in a quarter of an hour, whether the
    /// name was free or taken, so that one client can neither create accounts in bulk nor find
    /// out at speed which names are taken (each [`Error::UsernameTaken`] tells one). Input
    /// refused as such (an invalid name or password) and a sign-up refused for load
    /// ([`Error::Busy`]) count for nothing. Sign-ups without the client's address (see
    /// [`trusted_proxies`](crate::AuthLayerBuilder::trusted_proxies) and connect info) all
    /// share one such budget, never an unlimited one, which one client can use up for all. An admin page that creates users for others calls
    /// `create_user` instead: logging in there would end the admin's own session.
    ///
    /// ```
    /// use axum::{Form, response::Redirect};
    /// use axum_live_auth::{Auth, Error};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct SignUp { username: String, password: String }
    ///
    /// async fn sign_up(auth: Auth, Form(form): Form<SignUp>) -> Result<Redirect, Error> {
    ///     auth.sign_up(&form.username, &form.password).await?;
    ///     Ok(Redirect::to("/me"))
    /// }
    /// # let _ = axum::Router::<()>::new().route("/signup", axum::routing::post(sign_up));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Throttled`] (a `429` with `Retry-After`); as `create_user`:
    /// [`Error::InvalidUsername`], [`Error::InvalidPassword`], [`Error::UsernameTaken`] (`409`),
    /// [`Error::Busy`]; an infrastructure error.
    pub async fn sign_up(&self, username: &str, password: &str) -> Result<UserId, Error> {
        let accounts = crate::Accounts::of_layer(&self.0.shared);
        let user = accounts.sign_up(&self.0.client, username, password).await?;
        self.login(user).await?;
        Ok(user)
    }

    /// Like [`login_with_password`](Self::login_with_password), but sets no cookie: the new
    /// session's token is returned, for a client to send as `Authorization: Bearer <token>`
    /// (see [`bearer_tokens`](crate::AuthLayerBuilder::bearer_tokens)). The session the request
    /// came with, if any, is left alone.
    ///
    /// # Errors
    ///
    /// As for `login_with_password`.
    pub async fn issue_token(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<SessionToken>, Error> {
        let Some(verified) = self.check_password(username, password).await? else {
            return Ok(None);
        };
        let epoch = Some(verified.credential_epoch);
        match start_session(&self.0.shared, &self.0.client, verified.user, epoch).await {
            Ok(token) => Ok(Some(token)),
            Err(Error::UserNotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn check_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Verified>, Error> {
        let shared = &self.0.shared;
        PasswordCheck {
            store: &shared.store,
            hasher: &shared.hasher,
            limits: &shared.config.login,
        }
        .check(&self.0.client, username, password)
        .await
    }

    /// Starts a new session for `user` and sets its cookie on the response. For credentials the
    /// app checked itself (single sign-on, a magic link); for passwords use
    /// [`login_with_password`](Self::login_with_password), which is throttled and safe against
    /// a password change racing the login.
    ///
    /// The new session counts as just authenticated: [`RecentAuth`](crate::RecentAuth) admits
    /// it for the reauthentication window. Call it only after a check the app would accept in
    /// place of the password (never to impersonate a user, say).
    ///
    /// Always a new session with a fresh token: a token the client sent is never reused (no
    /// session fixation), and the session the request was authenticated with, if any, is
    /// deleted (so is the copy, when another tab's rotation replaced that session since the
    /// request left the browser). If the user now has more sessions than the layer's cap
    /// (default 100), the least recently used ones end. Later calls on this `Auth` that act on
    /// the request's user ([`sessions`](Self::sessions), [`rotate`](Self::rotate), …) answer
    /// [`Error::Unauthenticated`]: it holds no picture of whoever logged in; a
    /// [`logout`](Self::logout) ends the new session.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`] when the user does not exist or is disabled; an infrastructure
    /// error.
    pub async fn login(&self, user: UserId) -> Result<SessionId, Error> {
        self.replace_session(None, user).await
    }

    /// Deletes the request's session, if any, and starts a new one whose cookie the response sets.
    async fn replace_session(&self, epoch: Option<i64>, user: UserId) -> Result<SessionId, Error> {
        // A previous session the layer could not look up is left to expire: its cookie is
        // replaced below, so no one keeps its token (and the login still works).
        if let Some((user, session)) = self.ending(self.current_user()) {
            let shared = &self.0.shared;
            shared
                .store
                .delete_user_session(user, &session, AddressChanges::Kept)
                .await?;
            // Its streams, and any of the copy's, end (on SQLite nothing else would tell them).
            shared.user_changed(user);
        }
        let token = start_session(&self.0.shared, &self.0.client, user, epoch).await?;
        let id = token.id().clone();
        let mut response = self.response();
        response.current = Current::Replaced(user, id.clone());
        response.cookie = CookieChange::Set(token);
        Ok(id)
    }

    /// The session a logout, or a login over it, ends: the request's own (`user`, as this
    /// request left it), or the copy a rotation (another tab's reauthentication) made of it
    /// since the request left the browser. The copy's own deletion also ends a copy a rotation
    /// may be committing meanwhile: the browser ends up with no session of the old user,
    /// whichever answer it takes last.
    fn ending(&self, user: Option<&CurrentUser>) -> Option<(UserId, SessionId)> {
        match (&self.response().current, user, &self.0.replaced_by) {
            (Current::Replaced(user, id), ..) => Some((*user, id.clone())),
            (Current::Renewed(id), Some(user), _) => Some((user.id(), id.clone())),
            (Current::LookedUp, Some(user), _) => Some((user.id(), user.session_id().clone())),
            (_, None, replaced_by) => replaced_by.clone(),
        }
    }

    /// Ends the request's session: deletes its row, clears the cookie (same name, `Path`, `Domain`
    /// and `Secure` as when it was set) and, unless switched off, tells the browser to drop what it
    /// cached (`Clear-Site-Data: "cache"`). Replaying the old cookie afterwards is `401`.
    ///
    /// # Errors
    ///
    /// An infrastructure error, also when the layer could not look the session up
    /// ([`AuthState::Unavailable`](crate::AuthState::Unavailable)); the cookie is then left in
    /// place, since the session may still exist.
    pub async fn logout(&self) -> Result<(), Error> {
        let shared = &self.0.shared;
        if let Some((user, session)) = self.ending(self.session()?) {
            shared
                .store
                .delete_user_session(user, &session, AddressChanges::Kept)
                .await?;
            security::logout(&self.0.client, user, &session);
            // Its streams, and any of the copy's, look again (on SQLite nothing else tells them).
            shared.user_changed(user);
        }
        let mut response = self.response();
        if self.0.source.cookie() {
            response.cookie = CookieChange::Clear;
        }
        response.clear_site_data = shared.config.clear_site_data;
        Ok(())
    }

    /// The current user's live sessions, most recently used first, with the request's own
    /// marked [`current`](SessionInfo::current).
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] without a session; an infrastructure error.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        let user = self.user()?;
        let mut sessions = self.0.shared.store.list_sessions(user.id()).await?;
        let current = self.session_id(user);
        for session in &mut sessions {
            session.current = session.id == current;
        }
        Ok(sessions)
    }

    /// Ends one of the current user's sessions; `false` if they have no such session. Ending
    /// the request's own session is a [logout](Self::logout). Ending another one also cancels
    /// the address changes the user asked for and has not confirmed (their links are spent):
    /// whoever held that session may have asked for one.
    ///
    /// Ending *another* device's session is sensitive: put it behind [`RecentAuth`], as the
    /// [account routes](crate::account_routes) do.
    ///
    /// [`RecentAuth`]: crate::RecentAuth
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] without a session; an infrastructure error.
    pub async fn revoke_session(&self, id: &SessionId) -> Result<bool, Error> {
        let user = self.user()?;
        // The request's own, also by the id it had before a rotation in this request.
        if *id == self.session_id(user) || id == user.session_id() {
            self.logout().await?;
            return Ok(true);
        }
        let shared = &self.0.shared;
        let ended = shared
            .store
            .delete_user_session(user.id(), id, AddressChanges::Spent)
            .await?;
        if ended {
            security::session_revoked(&self.0.client, user.id(), id.as_str(), "user");
            shared.user_changed(user.id());
        }
        Ok(ended)
    }

    /// Ends every session of the current user but this one ("log out other devices"); returns
    /// how many ended. Address changes the user asked for and has not confirmed are cancelled
    /// too (their links are spent): whoever held another session may have asked for one, to
    /// take the account over by its reset links.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] without a session; an infrastructure error.
    pub async fn revoke_other_sessions(&self) -> Result<u64, Error> {
        self.end_other_sessions(AddressChanges::Spent).await
    }

    /// [`revoke_other_sessions`](Self::revoke_other_sessions), doing `changes` to the pending
    /// address changes (sparing the one this session has just asked for).
    pub(crate) async fn end_other_sessions(
        &self,
        changes: AddressChanges<'_>,
    ) -> Result<u64, Error> {
        let user = self.user()?;
        let kept = self.session_id(user);
        let shared = &self.0.shared;
        let count = shared
            .store
            .delete_user_sessions(user.id(), Some(&kept), changes)
            .await?;
        security::sessions_revoked_all(&self.0.client, user.id(), Some(&kept), count, "others");
        shared.user_changed(user.id());
        Ok(count)
    }

    /// Replaces the current session by a new one with a new token: the old token is refused at
    /// once, the new one is set on the response, and the absolute deadline does not move. Use it
    /// when the session's privileges change. Later calls on this `Auth` act on the new session (a
    /// [`revoke_other_sessions`](Self::revoke_other_sessions) keeps it, and
    /// [`sessions`](Self::sessions) lists it as current). For at most a touch interval, and until
    /// the new session's first touch, a request still carrying the old token (sent before the
    /// answer came back) leaves the cookie alone, and a logout with it ends the new session.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] without a session, or when the session ended meanwhile; an
    /// infrastructure error.
    pub async fn rotate(&self) -> Result<SessionId, Error> {
        self.rotate_with(false, None).await
    }

    /// Proves the current user's password again ("sudo mode"): on success the session counts
    /// as recently authenticated for the layer's reauthentication window and its token is
    /// [rotated](Self::rotate). `Ok(false)` for a wrong password. Throttled like logins.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] without a session, or when the session ended or the password
    /// changed while it was checked (the session does not count a password that is no longer
    /// the user's); [`Error::Throttled`], [`Error::Busy`]; an infrastructure error.
    pub async fn reauthenticate(&self, password: &str) -> Result<bool, Error> {
        let user = self.user()?;
        let Some(epoch) = self.verify_current(user, password).await? else {
            return Ok(false);
        };
        let id = self.rotate_with(true, Some(epoch)).await?;
        security::reauth(&self.0.client, user.id(), &id);
        Ok(true)
    }

    /// Changes the current user's password after checking the current one: stores the new hash,
    /// moves the user to a new credential epoch (no session whose password check predates this one
    /// is valid afterwards), ends every other session of the user and rotates this one (which then
    /// counts as recently authenticated), all in one transaction: the old token is never valid
    /// under the new password, and the new session does not answer to it (no logout with it ends
    /// the new session). `Ok(false)` if `current` is wrong, or stopped being the password while the
    /// new one was hashed (a reset landed meanwhile); nothing changes then. If the session was
    /// rotated meanwhile (another tab's reauthentication), its copy ends with the other sessions:
    /// the password is changed all the same (`Ok(true)`), and the user logs in with it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPassword`] for a new password outside the length limits,
    /// [`Error::Unauthenticated`] without a session, [`Error::Throttled`], [`Error::Busy`]; an
    /// infrastructure error.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<bool, Error> {
        let user = self.user()?;
        password::validate_new(new)?;
        let Some(epoch) = self.verify_current(user, current).await? else {
            return Ok(false);
        };
        let shared = &self.0.shared;
        let hash = shared.hasher.hash(new, self.0.client.address).await?;
        let token = SessionToken::generate()?;
        let old = self.session_id(user);
        let renewal = self.renewal(&old, &token, true);
        // Only over the password just checked: a reset that landed meanwhile wins. The session
        // goes on under a new token in the same transaction: its old one (whoever else holds
        // it) is never valid under the new password, whatever happens to this request.
        let PasswordSet::Set { renewed } = shared
            .store
            .set_password(user.id(), &hash, Some(renewal), Some(epoch), None)
            .await?
        else {
            return Ok(false);
        };
        security::password_changed(&self.0.client, user.id(), Some(&old), "change");
        shared.user_changed(user.id());
        // Not renewed: rotated away meanwhile, or ended; the password is changed all the same.
        if renewed {
            self.renewed(user.id(), &old, token);
        }
        Ok(true)
    }

    /// Rotates the request's session; `epoch`: only if it is still at that credential epoch.
    async fn rotate_with(
        &self,
        reauthenticated: bool,
        epoch: Option<i64>,
    ) -> Result<SessionId, Error> {
        let user = self.user()?;
        let token = SessionToken::generate()?;
        let old = self.session_id(user);
        let renewal = self.renewal(&old, &token, reauthenticated);
        if !self.0.shared.store.rotate_session(renewal, epoch).await? {
            return Err(Error::Unauthenticated);
        }
        let id = token.id().clone();
        self.renewed(user.id(), &old, token);
        Ok(id)
    }

    /// The request's session to go on under `token`.
    fn renewal<'a>(
        &self,
        old: &'a SessionId,
        token: &'a SessionToken,
        reauthenticated: bool,
    ) -> Renewal<'a> {
        Renewal {
            old,
            new: token,
            idle_timeout: self.0.shared.config.idle_timeout,
            reauthenticated,
        }
    }

    /// The request's session `old` went on under `token`: acts on the new session from now on.
    fn renewed(&self, user: UserId, old: &SessionId, token: SessionToken) {
        let inner = &self.0;
        security::rotated(&inner.client, user, old, token.id());
        inner.shared.session_ended(old.as_str());
        let mut response = self.response();
        response.current = Current::Renewed(token.id().clone());
        response.cookie = CookieChange::Set(token);
    }

    /// Checks the current user's password, throttled and counted like a login: the user's
    /// credential epoch, if `password` is their password.
    async fn verify_current(
        &self,
        user: &CurrentUser,
        password: &str,
    ) -> Result<Option<i64>, Error> {
        let verified = self.check_password(user.username(), password).await?;
        Ok(verified
            .filter(|v| v.user == user.id())
            .map(|v| v.credential_epoch))
    }

    /// The request's user; `Unauthenticated` once a login in this request replaced their session.
    fn user(&self) -> Result<&CurrentUser, Error> {
        if let Current::Replaced(..) = self.response().current {
            return Err(Error::Unauthenticated);
        }
        self.session()?.ok_or(Error::Unauthenticated)
    }

    /// The request's session id as this request left it: after a rotation, the new one.
    fn session_id(&self, user: &CurrentUser) -> SessionId {
        match &self.response().current {
            Current::Renewed(id) => id.clone(),
            _ => user.session_id().clone(),
        }
    }

    /// The request's session, if it has one; an error if the layer could not look it up, so
    /// that nothing acts as if it had none.
    fn session(&self) -> Result<Option<&CurrentUser>, Error> {
        match &self.0.state {
            AuthState::Authenticated(user) => Ok(Some(user)),
            AuthState::Unavailable => Err(InfrastructureError::SessionUnavailable.into()),
            _ => Ok(None),
        }
    }

    fn response(&self) -> std::sync::MutexGuard<'_, ResponseChanges> {
        self.0
            .response
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what the handler decided (the cookie, a rotated bearer token, site data to clear)
    /// into the response headers.
    pub(crate) fn write_response_headers(&self, headers: &mut HeaderMap) {
        let mut response = self.response();
        let cookie = std::mem::replace(&mut response.cookie, CookieChange::Keep);
        if std::mem::take(&mut response.clear_site_data) {
            headers.insert(
                HeaderName::from_static("clear-site-data"),
                HeaderValue::from_static("\"cache\""),
            );
        }
        let config = &self.0.shared.config.cookie;
        let source = self.0.source;
        let changes = match cookie {
            CookieChange::Keep => return,
            // A bearer client gets a rotated token back in a header, a cookie in the cookie.
            CookieChange::Set(token) => [
                source.bearer().then(|| {
                    let value = HeaderValue::try_from(token.to_string())
                        .ok()
                        .map(credential::sensitive);
                    (HeaderName::from_static(SESSION_TOKEN_HEADER), value)
                }),
                source
                    .cookie()
                    .then(|| (header::SET_COOKIE, credential::set_cookie(config, &token))),
            ],
            CookieChange::Clear => [
                Some((header::SET_COOKIE, credential::clear_cookie(config))),
                None,
            ],
        };
        for (name, value) in changes.into_iter().flatten() {
            match value {
                Some(value) => {
                    headers.append(name, value);
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                }
                None => tracing::error!("axum-live-auth: could not encode the session token"),
            }
        }
    }
}

/// Inserts a new session for `user` and returns its token.
pub(crate) async fn start_session(
    shared: &Shared,
    client: &Client,
    user: UserId,
    epoch: Option<i64>,
) -> Result<SessionToken, Error> {
    let config = &shared.config;
    let user_agent = client.user_agent();
    for _ in 0..SESSION_ID_ATTEMPTS {
        let token = SessionToken::generate()?;
        let secret_hash = token.secret_hash();
        let new = NewSession {
            id: token.id(),
            secret_hash: secret_hash.as_bytes(),
            user_id: user,
            credential_epoch: epoch,
            idle_timeout: config.idle_timeout,
            absolute_timeout: config.absolute_timeout,
            user_agent: user_agent.as_deref(),
            ip: client.ip,
            max_sessions: config.max_sessions_per_user,
        };
        match shared.store.create_session(&new).await? {
            Created::Yes { evicted } => {
                security::login(client, user, token.id());
                for old in &evicted {
                    security::session_revoked(client, user, old, "session_cap");
                    shared.session_ended(old);
                }
                return Ok(token);
            }
            Created::Refused => return Err(Error::UserNotFound),
            Created::IdTaken => {
                tracing::warn!(session_id = %token.id(), "new session id already taken");
            }
        }
    }
    Err(InfrastructureError::SessionIdCollision.into())
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("state", &self.0.state)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(AuthRejection::MissingLayer)
    }
}
