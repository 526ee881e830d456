//! The [`Auth`] handle: log in and out, and manage the current user's sessions and password.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::FromRequestParts;
use http::{HeaderMap, HeaderValue, header, request::Parts};

use crate::{
    AuthRejection, AuthState, CurrentUser, Error, SessionId, SessionInfo, SessionToken, UserId,
    client::Client,
    cookie, events,
    extract::auth_from_parts,
    layer::{Shared, Source},
    password::{self, MAX_PASSWORD_BYTES},
    store::{Created, NewSession},
    throttle::username_key,
};

/// The response header that carries a rotated token back to a bearer client.
pub const SESSION_TOKEN_HEADER: &str = "x-session-token";

/// How many fresh ids to try when a new session id is already taken.
const SESSION_ID_ATTEMPTS: usize = 3;

/// The cookie the response should carry, decided during the request.
#[derive(Debug)]
pub(crate) enum CookieChange {
    Keep,
    Set(SessionToken),
    Clear,
}

/// Handle for logging in and out and for managing the current user's sessions, available to
/// every handler behind the layer.
///
/// Every change it makes is enforced on the next request, on every node. It sets or clears the
/// session cookie on the response as needed (with `Cache-Control: no-store`).
///
/// ```
/// use axum::{Form, http::StatusCode, response::{IntoResponse, Redirect, Response}};
/// use axum_live_auth::Auth;
///
/// #[derive(serde::Deserialize)]
/// struct Login { username: String, password: String }
///
/// async fn login(auth: Auth, Form(form): Form<Login>) -> Result<Response, axum_live_auth::Error> {
///     match auth.login_with_password(&form.username, &form.password).await? {
///         Some(_) => Ok(Redirect::to("/me").into_response()),
///         None => Ok((StatusCode::UNAUTHORIZED, "Invalid username or password").into_response()),
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
    client: Client,
    source: Source,
    cookie: Mutex<CookieChange>,
}

impl Auth {
    pub(crate) fn new(
        shared: Arc<Shared>,
        state: AuthState,
        cookie: CookieChange,
        client: Client,
        source: Source,
    ) -> Self {
        Self(Arc::new(AuthInner {
            shared,
            state,
            client,
            source,
            cookie: Mutex::new(cookie),
        }))
    }

    /// The request's authentication state.
    pub fn state(&self) -> &AuthState {
        &self.0.state
    }

    /// The current user, if the request is authenticated.
    pub fn current_user(&self) -> Option<&CurrentUser> {
        match &self.0.state {
            AuthState::Authenticated(user) => Some(user),
            _ => None,
        }
    }

    /// Checks `username` and `password` and, if they are right, [logs the user in](Self::login).
    /// `Ok(None)` for a wrong password, an unknown or a disabled user alike, at the same cost
    /// (one Argon2 verification always runs), with a `login_failed` security event.
    ///
    /// Failed logins are throttled per client address and per username (see
    /// [`login_failures_per_ip`](crate::AuthLayerBuilder::login_failures_per_ip)); a throttled
    /// attempt is refused before any password check.
    ///
    /// # Errors
    ///
    /// [`Error::Throttled`] (a `429` with `Retry-After`); a database, hashing or random-source
    /// error.
    pub async fn login_with_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<UserId>, Error> {
        let Some(user) = self.check_credentials(username, password).await? else {
            return Ok(None);
        };
        self.login(user).await?;
        Ok(Some(user))
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
        match self.check_credentials(username, password).await? {
            Some(user) => Ok(Some(self.start_session(user).await?)),
            None => Ok(None),
        }
    }

    /// Throttles, then checks a username and password; records the outcome.
    async fn check_credentials(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<UserId>, Error> {
        let key = username_key(username);
        self.refuse_if_throttled(&key, username).await?;
        let user = crate::Accounts::new(self.0.shared.store.clone())
            .verify_password(username, password)
            .await?;
        self.record_attempt(&key, username, user.is_some()).await?;
        Ok(user)
    }

    /// `Err(Throttled)` if too many attempts failed lately from this address or for this
    /// username; no password is checked then.
    async fn refuse_if_throttled(&self, key: &str, username: &str) -> Result<(), Error> {
        let inner = &self.0;
        let throttle = inner.shared.config.login_throttle;
        let ip = inner.client.ip.map(|ip| ip.to_string());
        let failures = inner
            .shared
            .store
            .login_failures(ip.as_deref(), key, throttle.ip_window)
            .await?;
        match throttle.refuse(&failures) {
            Some(retry_after) => {
                events::login_throttled(&inner.client, username, retry_after);
                Err(Error::Throttled { retry_after })
            }
            None => Ok(()),
        }
    }

    async fn record_attempt(&self, key: &str, username: &str, ok: bool) -> Result<(), Error> {
        let inner = &self.0;
        let store = &inner.shared.store;
        if ok {
            store.clear_login_failures(key).await
        } else {
            events::login_failed(&inner.client, username);
            let ip = inner.client.ip.map(|ip| ip.to_string());
            let window = inner.shared.config.login_throttle.ip_window;
            store.record_login_failure(ip.as_deref(), key, window).await
        }
    }

    /// Starts a new session for `user` and sets its cookie on the response. Call it after
    /// checking the user's credentials (or use [`login_with_password`](Self::login_with_password)).
    ///
    /// Always a new session with a fresh token: a token the client sent is never reused (no
    /// session fixation), and the session the request was authenticated with, if any, is
    /// deleted. If the user now has more sessions than the layer's cap (default 100), the least
    /// recently used ones end.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`] when the user does not exist or is disabled; a database or
    /// random-source error.
    pub async fn login(&self, user: UserId) -> Result<SessionId, Error> {
        if let Some(previous) = self.current_user() {
            self.0
                .shared
                .store
                .delete_session(previous.session_id())
                .await?;
        }
        let token = self.start_session(user).await?;
        let id = token.id().clone();
        self.set_cookie(CookieChange::Set(token));
        Ok(id)
    }

    /// Inserts a new session for `user` and returns its token.
    async fn start_session(&self, user: UserId) -> Result<SessionToken, Error> {
        let inner = &self.0;
        let config = &inner.shared.config;
        let store = &inner.shared.store;
        let user_agent = inner.client.user_agent();
        for _ in 0..SESSION_ID_ATTEMPTS {
            let token = SessionToken::generate()?;
            let secret_hash = token.secret_hash();
            let new = NewSession {
                id: token.id(),
                secret_hash: secret_hash.as_bytes(),
                user_id: user,
                idle_timeout: config.idle_timeout,
                absolute_timeout: config.absolute_timeout,
                user_agent: user_agent.as_deref(),
                ip: inner.client.ip,
                max_sessions: config.max_sessions_per_user,
            };
            match store.create_session(&new).await? {
                Created::Yes { evicted } => {
                    events::login(&inner.client, user, token.id());
                    for old in evicted {
                        events::session_revoked(&inner.client, user, &old, "session_cap");
                    }
                    return Ok(token);
                }
                Created::UserInactive => return Err(Error::UserNotFound),
                Created::IdTaken => {
                    tracing::warn!(session.id = %token.id(), "new session id already taken");
                }
            }
        }
        Err(Error::SessionIdCollision)
    }

    /// Ends the request's session: deletes its row and clears the cookie (same name, `Path`,
    /// `Domain` and `Secure` as when it was set). Replaying the old cookie afterwards is `401`.
    ///
    /// # Errors
    ///
    /// A database error; the cookie is then left in place, since the session still exists.
    pub async fn logout(&self) -> Result<(), Error> {
        if let Some(user) = self.current_user() {
            self.0
                .shared
                .store
                .delete_session(user.session_id())
                .await?;
            events::logout(&self.0.client, user.id(), user.session_id());
        }
        if self.0.source == Source::Cookie {
            self.set_cookie(CookieChange::Clear);
        }
        Ok(())
    }

    /// The current user's live sessions, most recently used first, with the request's own
    /// marked [`current`](SessionInfo::current).
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] without a session; a database error.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        let user = self.user()?;
        let mut sessions = self.0.shared.store.list_sessions(user.id()).await?;
        for session in &mut sessions {
            session.current = session.id == user.session_id().as_str();
        }
        Ok(sessions)
    }

    /// Ends one of the current user's sessions by public id; `false` if they have no such
    /// session. Ending the request's own session is a [logout](Self::logout).
    ///
    /// Ending *another* device's session is sensitive: put it behind [`RecentAuth`], as the
    /// [account routes](crate::account_routes) do.
    ///
    /// [`RecentAuth`]: crate::RecentAuth
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] without a session; a database error.
    pub async fn revoke_session(&self, id: &str) -> Result<bool, Error> {
        let user = self.user()?;
        if id == user.session_id().as_str() {
            self.logout().await?;
            return Ok(true);
        }
        let ended = self
            .0
            .shared
            .store
            .delete_user_session(user.id(), id)
            .await?;
        if ended {
            events::session_revoked(&self.0.client, user.id(), id, "user");
        }
        Ok(ended)
    }

    /// Ends every session of the current user but this one ("log out other devices"); returns
    /// how many ended.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] without a session; a database error.
    pub async fn revoke_other_sessions(&self) -> Result<u64, Error> {
        let user = self.user()?;
        let kept = user.session_id();
        let count = self
            .0
            .shared
            .store
            .delete_user_sessions(user.id(), Some(kept))
            .await?;
        events::sessions_revoked_all(&self.0.client, user.id(), Some(kept), count, "others");
        Ok(count)
    }

    /// Replaces the current session by a new one with a new token: the old token is dead at
    /// once, the new one is set on the response, and the absolute deadline does not move. Use
    /// it when the session's privileges change.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] without a session, or when the session ended meanwhile; a
    /// database or random-source error.
    pub async fn rotate(&self) -> Result<SessionId, Error> {
        self.rotate_with(false).await
    }

    /// Proves the current user's password again ("sudo mode"): on success the session counts
    /// as recently authenticated for the layer's reauthentication window and its token is
    /// [rotated](Self::rotate). `Ok(false)` for a wrong password.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] without a session; a database, hashing or random-source
    /// error.
    pub async fn reauthenticate(&self, password: &str) -> Result<bool, Error> {
        let user = self.user()?;
        if !self.verify_password_of(user, password).await? {
            return Ok(false);
        }
        let id = self.rotate_with(true).await?;
        events::reauth(&self.0.client, user.id(), &id);
        Ok(true)
    }

    /// Changes the current user's password after checking the current one: stores the new
    /// hash, ends every other session of the user and rotates this one (which then counts as
    /// recently authenticated). `Ok(false)` if `current` is wrong; nothing changes then.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPassword`] for a new password outside the length limits,
    /// [`Error::Unauthenticated`] without a session; a database, hashing or random-source
    /// error.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<bool, Error> {
        let user = self.user()?;
        password::validate_new(new)?;
        if !self.verify_password_of(user, current).await? {
            return Ok(false);
        }
        let hash = password::hash(new).await?;
        let store = &self.0.shared.store;
        let kept = user.session_id();
        if !store
            .set_password_ending_sessions(user.id(), &hash, Some(kept))
            .await?
        {
            return Err(Error::UserNotFound);
        }
        events::password_changed(&self.0.client, user.id(), Some(kept), "change");
        self.rotate_with(true).await?;
        Ok(true)
    }

    async fn rotate_with(&self, reauthenticated: bool) -> Result<SessionId, Error> {
        let user = self.user()?;
        let inner = &self.0;
        let token = SessionToken::generate()?;
        let rotated = inner
            .shared
            .store
            .rotate_session(
                user.session_id(),
                token.id(),
                token.secret_hash().as_bytes(),
                inner.shared.config.idle_timeout,
                reauthenticated,
            )
            .await?;
        if !rotated {
            return Err(Error::Unauthenticated);
        }
        let id = token.id().clone();
        events::rotated(&inner.client, user.id(), user.session_id(), &id);
        self.set_cookie(CookieChange::Set(token));
        Ok(id)
    }

    /// Verifies the current user's password (one Argon2 verification always), throttled and
    /// counted like logins under the user's name.
    async fn verify_password_of(&self, user: &CurrentUser, password: &str) -> Result<bool, Error> {
        let key = username_key(user.username());
        self.refuse_if_throttled(&key, user.username()).await?;
        let ok = password.len() <= MAX_PASSWORD_BYTES && {
            let stored = self.0.shared.store.password_hash(user.id()).await?;
            password::verify(password, stored).await?
        };
        self.record_attempt(&key, user.username(), ok).await?;
        Ok(ok)
    }

    fn user(&self) -> Result<&CurrentUser, Error> {
        self.current_user().ok_or(Error::Unauthenticated)
    }

    pub(crate) fn bearer_enabled(&self) -> bool {
        self.0.shared.config.bearer
    }

    pub(crate) fn login_redirect(&self) -> Option<&Arc<str>> {
        self.0.shared.config.login_redirect.as_ref()
    }

    fn set_cookie(&self, change: CookieChange) {
        *self.0.cookie.lock().unwrap_or_else(PoisonError::into_inner) = change;
    }

    /// Writes the decided cookie change into the response headers.
    pub(crate) fn write_cookie(&self, headers: &mut HeaderMap) {
        let change = std::mem::replace(
            &mut *self.0.cookie.lock().unwrap_or_else(PoisonError::into_inner),
            CookieChange::Keep,
        );
        let config = &self.0.shared.config.cookie;
        let (name, value) = match (change, self.0.source) {
            (CookieChange::Keep, _) => return,
            // A bearer client gets a rotated token back in a header, not a cookie.
            (CookieChange::Set(token), Source::Bearer) => (
                http::HeaderName::from_static(SESSION_TOKEN_HEADER),
                HeaderValue::try_from(token.to_string()).ok(),
            ),
            (CookieChange::Set(token), Source::Cookie) => {
                (header::SET_COOKIE, cookie::set(config, &token))
            }
            (CookieChange::Clear, _) => (header::SET_COOKIE, cookie::clear(config)),
        };
        match value {
            Some(value) => {
                headers.append(name, value);
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            None => tracing::error!("axum-live-auth: could not encode the session token"),
        }
    }
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
        auth_from_parts(parts).cloned()
    }
}
