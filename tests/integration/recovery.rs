//! Account recovery and email verification through the quickstart's own routes, with its
//! file messenger: the whole reset flow, single use, expiry, an unknown account that looks the
//! same, throttling, email verification, and deleting a user.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use axum_live_auth::{AuthLayer, Message, MessageKind, Messenger, MessengerError};

use crate::common::{
    COOKIE, Db, Reply, both_stores,
    http::{client, send_from, serve},
    login_request, send,
};

use crate::common::quickstart as example;

const ORIGIN: &str = "http://localhost:3000";

/// The quickstart's router with its file messenger writing to a fresh directory.
async fn quickstart(db: &Db) -> (Router, std::path::PathBuf, AuthLayer) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "axum-live-auth-mail-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let auth = AuthLayer::builder(db.store())
        .allowed_origin(ORIGIN)
        .login_redirect("/login")
        .bearer_tokens(true)
        .csrf_exempt("/auth/token")
        .messenger(example::FileMessenger { dir: dir.clone() })
        .build()
        .unwrap();
    example::seed(&auth.accounts()).await.unwrap();
    (example::app(auth.clone()), dir, auth)
}

fn post(path: &str, form: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::post(path)
        .header(header::ORIGIN, ORIGIN)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(token) = token {
        request = request.header(header::COOKIE, format!("{COOKIE}={token}"));
    }
    request.body(Body::from(form.to_owned())).unwrap()
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header(header::COOKIE, format!("{COOKIE}={token}"));
    }
    request.body(Body::empty()).unwrap()
}

/// The messages in `dir`, oldest first.
fn mails(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

/// Waits for the `n`th message and returns it with the path of its link.
async fn mail(dir: &std::path::Path, n: usize) -> (String, String) {
    for _ in 0..200 {
        if let Some(mail) = mails(dir).get(n - 1) {
            let link = mail
                .lines()
                .find(|l| l.starts_with("http"))
                .expect("a link in the message");
            let path = link
                .strip_prefix(ORIGIN)
                .expect("an absolute link to the app");
            return (mail.clone(), path.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no message {n} in {}", dir.display());
}

async fn login(app: &Router, username: &str, password: &str) -> Reply {
    send(app, login_form(username, password)).await
}

/// The login form posted from the app's origin.
fn login_form(username: &str, password: &str) -> Request<Body> {
    let mut request = login_request(username, password);
    request
        .headers_mut()
        .insert(header::ORIGIN, ORIGIN.parse().unwrap());
    request
}

fn form_token(link_path: &str) -> String {
    link_path.split_once("token=").unwrap().1.to_owned()
}

/// Confirms an email-verification link as its page does: the token, posted.
/// Alice logs in and asks for her address to become `email` (form-encoded): her session, and
/// the verification link that went out as the `n`th message in `dir`.
async fn ask_for_address(
    app: &Router,
    dir: &std::path::Path,
    email: &str,
    n: usize,
) -> (String, String) {
    let session = login(app, "alice", "alice-password")
        .await
        .session_cookie()
        .unwrap();
    let body = format!("email={email}");
    let reply = send(app, post("/account/email", &body, Some(&session))).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let (_, pending) = mail(dir, n).await;
    (session, pending)
}

async fn confirm_address(app: &Router, link_path: &str) -> Reply {
    let body = format!("token={}", form_token(link_path));
    send(app, post("/account/email/verify", &body, None)).await
}

/// A messenger that records what it is given and holds the first message forever, after
/// telling the test it has it.
struct HeldAfterFirst {
    sent: Arc<Mutex<Vec<MessageKind>>>,
    first: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Messenger for HeldAfterFirst {
    async fn send(&self, message: Message) -> Result<(), MessengerError> {
        self.sent.lock().unwrap().push(message.kind);
        let first = self.first.lock().unwrap().take();
        if let Some(first) = first {
            let _ = first.send(());
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// A reset asked for as `Jose` and a combining accent (`Jose%CC%81`), answered `202`; the
/// message it sends.
async fn reset_for_jose_typed_decomposed(app: &Router, dir: &std::path::Path) -> String {
    let requested = send(
        app,
        post("/account/password-reset", "username=Jose%CC%81", None),
    )
    .await;
    assert_eq!(requested.status, StatusCode::ACCEPTED);
    mail(dir, 1).await.0
}

/// A messenger that counts the messages it is given and never finishes sending one.
struct NeverDone(Arc<std::sync::atomic::AtomicUsize>);

impl Messenger for NeverDone {
    async fn send(&self, _: Message) -> Result<(), MessengerError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending().await
    }
}

/// The quickstart's routes with a [`NeverDone`] messenger, as `configure` leaves the builder,
/// and `users` users named `user0`, `user1`, …; and how many messages the messenger was given.
async fn with_a_messenger_never_done(
    db: &Db,
    users: usize,
    configure: impl FnOnce(axum_live_auth::AuthLayerBuilder) -> axum_live_auth::AuthLayerBuilder,
) -> (Router, Arc<std::sync::atomic::AtomicUsize>) {
    let given = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let builder = AuthLayer::builder(db.store())
        .allowed_origin(ORIGIN)
        .messenger(NeverDone(given.clone()));
    let auth = configure(builder).build().unwrap();
    let accounts = auth.accounts();
    for i in 0..users {
        accounts
            .create_user(&format!("user{i}"), "user-password")
            .await
            .unwrap();
    }
    (example::app(auth), given)
}

/// `counter` once it reaches `n`, or after 10 seconds.
async fn reaches(counter: &std::sync::atomic::AtomicUsize, n: usize) -> usize {
    let started = std::time::Instant::now();
    while counter.load(std::sync::atomic::Ordering::SeqCst) < n
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    counter.load(std::sync::atomic::Ordering::SeqCst)
}

/// Waits (at most 10 s) until `logs` show `n` reset requests for an account handled after their
/// answer: each ends in a link sent (`password_reset_requested`, logged before the send) or in
/// its account's refusal (`password_reset_throttled`; an address's refusal comes before the
/// answer, and a client without an address has none). Returns (sent, refused); fails the test
/// if fewer than `n` ever come. A request for no account logs neither: see
/// [`spawned_work_ended`].
async fn resets_handled(logs: &crate::account::Logs, n: usize) -> (usize, usize) {
    let started = std::time::Instant::now();
    loop {
        let text = logs.text();
        let sent = text.matches("event=\"password_reset_requested\"").count();
        let refused = text.matches("event=\"password_reset_throttled\"").count();
        if sent + refused >= n {
            return (sent, refused);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{n} reset requests never handled: {sent} sent, {refused} refused"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The tasks alive on this test's runtime (its own), once those a finished statement leaves
/// behind (a connection on its way back to its pool) are done: the baseline for
/// [`spawned_work_ended`].
async fn settled_tasks() -> usize {
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (at most 10 s) until no more tasks are alive than `before` ([`settled_tasks`], taken
/// before the requests): the reset work the requests spawned after their answers has ended,
/// also that of a request for no account, which ends without an event or a message. Fails the
/// test if it never does.
async fn spawned_work_ended(before: usize) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let started = std::time::Instant::now();
    while metrics.num_alive_tasks() > before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the reset work never ended: {} tasks alive, {before} before",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The address `/me` shows for `session`, and whether it is verified.
async fn address_of(app: &Router, session: &str) -> (Option<String>, bool) {
    let reply = send(app, get("/me", Some(session))).await;
    let me = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap();
    (
        me["email"].as_str().map(str::to_owned),
        me["email_verified"].as_bool().unwrap(),
    )
}

both_stores! {
    /// Eight confirmations of one reset link at once, each with its own new password: exactly
    /// one wins, and the password is the winner's.
    async fn a_reset_link_is_spent_once_under_concurrent_use(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let requested = send(&app, post("/account/password-reset", "username=bob", None)).await;
        assert_eq!(requested.status, StatusCode::ACCEPTED);
        let token = form_token(&mail(&dir, 1).await.1);
        let confirms = (0..8).map(|i| {
            let body = format!("token={token}&new_password=bob-new-password-{i}");
            send(&app, post("/account/password-reset/confirm", &body, None))
        });
        let statuses: Vec<_> = futures_util::future::join_all(confirms)
            .await
            .into_iter()
            .map(|r| r.status)
            .collect();
        let won: Vec<_> = (0..8).filter(|&i| statuses[i] == StatusCode::SEE_OTHER).collect();
        assert_eq!(won.len(), 1, "{statuses:?}");
        assert!(
            statuses.iter().all(|s| [StatusCode::SEE_OTHER, StatusCode::BAD_REQUEST].contains(s)),
            "{statuses:?}"
        );
        let winner = format!("bob-new-password-{}", won[0]);
        let loser = format!("bob-new-password-{}", (won[0] + 1) % 8);
        assert_eq!(login(&app, "bob", &winner).await.status, StatusCode::SEE_OTHER);
        assert_eq!(login(&app, "bob", &loser).await.status, StatusCode::UNAUTHORIZED);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Two reset links of one user confirmed at once: the second password never overwrites
    /// the first, since a token is good only while the password it was issued under is.
    async fn two_reset_links_confirmed_at_once_set_one_password(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        for _ in 0..2 {
            let requested = send(&app, post("/account/password-reset", "username=bob", None)).await;
            assert_eq!(requested.status, StatusCode::ACCEPTED);
        }
        let first = form_token(&mail(&dir, 1).await.1);
        let second = form_token(&mail(&dir, 2).await.1);
        let confirm = |token: String, password: &'static str| {
            let body = format!("token={token}&new_password={password}");
            let app = app.clone();
            async move { send(&app, post("/account/password-reset/confirm", &body, None)).await.status }
        };
        let (a, b) = tokio::join!(
            confirm(first, "bob-first-password"),
            confirm(second, "bob-second-password")
        );
        let mut statuses = [a, b];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::SEE_OTHER, StatusCode::BAD_REQUEST]);
        let winner = if a == StatusCode::SEE_OTHER { "bob-first-password" } else { "bob-second-password" };
        let loser = if a == StatusCode::SEE_OTHER { "bob-second-password" } else { "bob-first-password" };
        assert_eq!(login(&app, "bob", winner).await.status, StatusCode::SEE_OTHER);
        assert_eq!(login(&app, "bob", loser).await.status, StatusCode::UNAUTHORIZED);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The address reset links go to is a credential: changing it needs a recent password
    /// check, and ends every other session of the user.
    async fn changing_the_address_needs_recent_authentication_and_ends_other_sessions(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let alice = login(&app, "alice", "alice-password").await.session_cookie().unwrap();
        let other = login(&app, "alice", "alice-password").await.session_cookie().unwrap();
        let id = alice.split('.').next().unwrap();
        db.age_authentication(id, 16 * 60).await;
        let stale = send(&app, post("/account/email", "email=thief%40evil.example", Some(&alice))).await;
        assert_eq!(stale.status, StatusCode::FORBIDDEN);
        assert!(stale.body.contains("reauth_required"), "{}", stale.body);
        assert!(mails(&dir).is_empty(), "no message for a refused change");

        let reauth = send(&app, post("/account/reauth", "password=alice-password", Some(&alice))).await;
        assert_eq!(reauth.status, StatusCode::NO_CONTENT);
        let alice = reauth.session_cookie().unwrap();
        let changed = send(&app, post("/account/email", "email=alice%40example.com", Some(&alice))).await;
        assert_eq!(changed.status, StatusCode::ACCEPTED);
        assert_eq!(send(&app, get("/me", Some(&other))).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(send(&app, get("/me", Some(&alice))).await.status, StatusCode::OK);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Logging out the other devices, or an operator's "log out everywhere", cancels an address
    /// change not confirmed yet: whoever held another session may have asked for it, to take
    /// the account over by the reset links that would then go there. (Before: the link still
    /// confirmed, `200`.)
    async fn ending_the_other_sessions_cancels_a_pending_address_change(db: Db) {
        let (app, dir, auth) = quickstart(&db).await;
        let (_, pending) = ask_for_address(&app, &dir, "thief%40evil.example", 1).await;
        let owner = login(&app, "alice", "alice-password").await.session_cookie().unwrap();
        let revoked = send(&app, post("/account/sessions/revoke-others", "", Some(&owner))).await;
        assert_eq!(revoked.status, StatusCode::NO_CONTENT);
        assert_eq!(confirm_address(&app, &pending).await.status, StatusCode::BAD_REQUEST);

        let (_, pending) = ask_for_address(&app, &dir, "thief2%40evil.example", 2).await;
        let accounts = auth.accounts();
        let alice = accounts.user_id("alice").await.unwrap().unwrap();
        accounts.revoke_all_sessions(alice).await.unwrap();
        assert_eq!(confirm_address(&app, &pending).await.status, StatusCode::BAD_REQUEST);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Ending one session (the thief's, from the sessions list) also cancels a pending address
    /// change: which session asked is not recorded, and the one ended may have. By the owner
    /// and by an operator alike. (Before: the link still confirmed, `200`.)
    async fn ending_one_session_cancels_a_pending_address_change(db: Db) {
        let (app, dir, auth) = quickstart(&db).await;
        let (thief, pending) = ask_for_address(&app, &dir, "thief%40evil.example", 1).await;
        let owner = login(&app, "alice", "alice-password").await.session_cookie().unwrap();
        let thiefs = thief.split_once('.').unwrap().0;
        let path = format!("/account/sessions/{thiefs}/revoke");
        assert_eq!(send(&app, post(&path, "", Some(&owner))).await.status, StatusCode::NO_CONTENT);
        assert_eq!(confirm_address(&app, &pending).await.status, StatusCode::BAD_REQUEST);

        let (thief, pending) = ask_for_address(&app, &dir, "thief2%40evil.example", 2).await;
        let accounts = auth.accounts();
        let alice = accounts.user_id("alice").await.unwrap().unwrap();
        let thiefs = axum_live_auth::SessionId::parse(thief.split_once('.').unwrap().0).unwrap();
        assert!(accounts.revoke_session(alice, &thiefs).await.unwrap());
        assert_eq!(confirm_address(&app, &pending).await.status, StatusCode::BAD_REQUEST);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Asking for an address change ends the user's other sessions, and so cancels what they
    /// asked for: a thief's pending change does not outlive the owner's own request, which
    /// ends the thief's session from the list and leaves the owner no reason to look further.
    /// The owner's new link still confirms. (Before: the thief's link confirmed, `200`.)
    async fn a_new_address_change_cancels_the_pending_ones(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let (_, thiefs) = ask_for_address(&app, &dir, "thief%40evil.example", 1).await;
        let (_, owners) = ask_for_address(&app, &dir, "alice-new%40example.com", 2).await;
        assert_eq!(confirm_address(&app, &thiefs).await.status, StatusCode::BAD_REQUEST);
        assert_eq!(confirm_address(&app, &owners).await.status, StatusCode::OK);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Recovery's security events name the client that asked and the one that used the link,
    /// and a refused link is logged: after a takeover by a reset link or a confirmed address
    /// change, the logs say where it came from. (Before: `ip=None` on each, and no event for
    /// the refused link.)
    async fn recovery_events_name_the_client(db: Db) {
        let logs = crate::account::Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let (app, dir, _) = quickstart(&db).await;
        let server = serve(app).await;
        let from = |n: u32, request| send_from(server, client(n), request);
        let asked = from(11, post("/account/password-reset", "username=bob", None)).await;
        assert_eq!(asked.status, StatusCode::ACCEPTED);
        let token = form_token(&mail(&dir, 1).await.1);
        let confirm = "/account/password-reset/confirm";
        let form = "token=bogus&new_password=bob-new-password";
        assert_eq!(from(12, post(confirm, form, None)).await.status, StatusCode::BAD_REQUEST);
        let form = format!("token={token}&new_password=bob-new-password");
        let mut used = post(confirm, &form, None);
        used.headers_mut().insert(header::USER_AGENT, "link-user/1.0".parse().unwrap());
        assert_eq!(from(13, used).await.status, StatusCode::SEE_OTHER);
        let alice = from(14, login_form("alice", "alice-password")).await.session_cookie().unwrap();
        let ask = post("/account/email", "email=alice-new%40example.com", Some(&alice));
        assert_eq!(from(14, ask).await.status, StatusCode::ACCEPTED);
        let form = format!("token={}", form_token(&mail(&dir, 2).await.1));
        assert_eq!(from(15, post("/account/email/verify", &form, None)).await.status, StatusCode::OK);

        let text = logs.text();
        for (event, n) in [
            ("password_reset_requested", 11),
            ("invalid_link", 12),
            ("password_reset", 13),
            ("email_change_requested", 14),
            ("email_changed", 15),
        ] {
            let (event, ip) = (format!("event=\"{event}\""), format!("ip=Some({})", client(n)));
            let logged = text.lines().any(|l| l.contains(&event) && l.contains(&ip));
            assert!(logged, "no {event} with {ip} in:\n{text}");
        }
        let by_agent = |l: &&str| l.contains("user_agent=Some(\"link-user/1.0\")");
        let used = text.lines().find(by_agent).unwrap_or_default();
        assert!(used.contains("event=\"password_reset\""), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Logging out, or logging in again, ends the request's own session, not another's: the
    /// address change it asked for stays pending, and its link confirms without a session.
    async fn logging_out_keeps_the_pending_address_change(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let (alice, pending) = ask_for_address(&app, &dir, "alice-new%40example.com", 1).await;
        assert_eq!(send(&app, post("/logout", "", Some(&alice))).await.status, StatusCode::SEE_OTHER);
        assert_eq!(login(&app, "alice", "alice-password").await.status, StatusCode::SEE_OTHER);
        assert_eq!(confirm_address(&app, &pending).await.status, StatusCode::OK);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Each address change sends a message and tells whether the address is taken: five a
    /// user per window, whatever the addresses; another user is not affected.
    async fn address_changes_are_limited_per_user(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let alice = login(&app, "alice", "alice-password").await.session_cookie().unwrap();
        for i in 0..5 {
            let reply = send(&app, post("/account/email", &format!("email=a{i}%40example.com"), Some(&alice))).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "change {i}");
        }
        let sixth = send(&app, post("/account/email", "email=a5%40example.com", Some(&alice))).await;
        assert_eq!(sixth.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(sixth.headers.contains_key(header::RETRY_AFTER));
        let bob = login(&app, "bob", "bob-password").await.session_cookie().unwrap();
        assert_eq!(send(&app, post("/account/email", "email=b%40example.com", Some(&bob))).await.status, StatusCode::ACCEPTED);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Address changes are counted per client address too: accounts signed up for the purpose
    /// do not multiply the answers (`409` taken, `202` free) one client gets. (Before: each
    /// account had 5 of its own, and requests 11 and 12 from one address answered `202`.)
    async fn address_changes_are_limited_per_client_address(db: Db) {
        let (app, dir, auth) = quickstart(&db).await;
        let server = serve(app).await;
        let log_in = |name: String, from| async move {
            let login = login_form(&name, "prober-password");
            send_from(server, client(from), login).await.session_cookie().unwrap()
        };
        let ask = |session: &str, email: String, from| {
            let request = post("/account/email", &format!("email={email}%40example.com"), Some(session));
            send_from(server, client(from), request)
        };
        let mut answered = Vec::new();
        for i in 0..3 {
            auth.accounts().create_user(&format!("prober-{i}"), "prober-password").await.unwrap();
            let session = log_in(format!("prober-{i}"), 31).await;
            for j in 0..4 {
                answered.push(ask(&session, format!("p{i}-{j}"), 31).await.status);
            }
        }
        assert_eq!(answered[..10], [StatusCode::ACCEPTED; 10]);
        assert_eq!(answered[10..], [StatusCode::TOO_MANY_REQUESTS; 2]);
        let elsewhere = log_in("prober-0".into(), 32).await;
        assert_eq!(ask(&elsewhere, "p0-4".into(), 32).await.status, StatusCode::ACCEPTED);
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn the_reset_flow_end_to_end(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let old = login(&app, "bob", "bob-password").await.session_cookie().unwrap();

        let requested = send(&app, post("/account/password-reset", "username=bob", None)).await;
        assert_eq!(requested.status, StatusCode::ACCEPTED);
        let (message, link) = mail(&dir, 1).await;
        assert!(message.contains("Subject: Reset your password"), "{message}");
        assert!(link.starts_with("/account/password-reset/confirm?token="), "{link}");

        // The form: no referrer, not cached, the token posted back.
        let form = send(&app, get(&link, None)).await;
        assert_eq!(form.status, StatusCode::OK);
        assert_eq!(form.headers[header::REFERRER_POLICY], "strict-origin");
        assert_eq!(form.headers[header::CACHE_CONTROL], "no-store");
        let token = form_token(&link);
        assert!(form.body.contains(&token));

        let body = format!("token={token}&new_password=bob-new-password");
        let done = send(&app, post("/account/password-reset/confirm", &body, None)).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER);
        assert_eq!(done.headers[header::LOCATION], "/login");

        // Every old session is over; the old password is dead, the new one works.
        assert_eq!(send(&app, get("/me", Some(&old))).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(login(&app, "bob", "bob-password").await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(login(&app, "bob", "bob-new-password").await.status, StatusCode::SEE_OTHER);

        // Single use.
        let body = format!("token={token}&new_password=bob-third-password");
        let again = send(&app, post("/account/password-reset/confirm", &body, None)).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The decomposed spelling of a name (`e` + a combining accent) asks for the same
    /// account's link, as it logs in to that account. (Before: no link was sent.)
    /// The quickstart's mail folder and files are readable by their owner alone: each message
    /// carries a live reset link. (Before: 0755 and 0644, readable by every local user.)
    async fn the_quickstarts_mail_is_private(db: Db) {
        use std::os::unix::fs::PermissionsExt as _;
        let (app, dir, _) = quickstart(&db).await;
        let requested = send(&app, post("/account/password-reset", "username=bob", None)).await;
        assert_eq!(requested.status, StatusCode::ACCEPTED);
        mail(&dir, 1).await;
        let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn a_reset_by_the_decomposed_spelling_reaches_the_account(db: Db) {
        let (app, dir, auth) = quickstart(&db).await;
        auth.accounts().create_user("Jos\u{e9}", "jose-password").await.unwrap();
        let message = reset_for_jose_typed_decomposed(&app, &dir).await;
        assert!(message.contains("Hello Jos\u{e9},"), "{message}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A name stored decomposed (before names had to be composed, or by SQL) is found as it
    /// is typed, as the login finds it. (Before: only the composed spelling was looked up, and
    /// nothing was sent.)
    async fn a_reset_reaches_a_name_stored_decomposed(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        db.exec_each(
            "INSERT INTO auth_users (username, password_hash)
             SELECT 'Jose' || chr(769), password_hash FROM auth_users WHERE username = 'bob'",
            "INSERT INTO auth_users (username, password_hash)
             SELECT 'Jose' || char(769), password_hash FROM auth_users WHERE username = 'bob'",
        )
        .await;
        let message = reset_for_jose_typed_decomposed(&app, &dir).await;
        assert!(message.contains("Hello Jose\u{301},"), "{message}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// With links that live less than the account's quarter of an hour, the account's limit
    /// lasts no longer than its links: someone who used it up leaves the user a live link,
    /// and once those are dead the user's own request is sent. (Before: no message until the
    /// quarter of an hour was over.)
    async fn an_accounts_reset_limit_lasts_no_longer_than_its_links(db: Db) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "axum-live-auth-mail-short-{:?}",
            std::time::SystemTime::now()
        ));
        let auth = AuthLayer::builder(db.store())
            .allowed_origin(ORIGIN)
            .password_reset_lifetime(Duration::from_secs(2))
            .messenger(example::FileMessenger { dir: dir.clone() })
            .build()
            .unwrap();
        example::seed(&auth.accounts()).await.unwrap();
        let app = example::app(auth);
        for i in 0..3 {
            let reply = send(&app, post("/account/password-reset", "username=bob", None)).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "request {i}");
        }
        mail(&dir, 3).await;
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let after = send(&app, post("/account/password-reset", "username=bob", None)).await;
        assert_eq!(after.status, StatusCode::ACCEPTED);
        let (_, link) = mail(&dir, 4).await;
        let body = format!("token={}&new_password=bob-new-password", form_token(&link));
        let reset = send(&app, post("/account/password-reset/confirm", &body, None)).await;
        assert_eq!(reset.status, StatusCode::SEE_OTHER, "the fourth link is live");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Reset requests handled after their answer are bounded: with a messenger that never
    /// finishes, 24 requests for 24 accounts from clients without an address (which no
    /// per-address limit holds back) reach it 16 times, and each is still answered `202`.
    /// (Before: every request started a task, 24 messages.) The sends never end, so the check
    /// waits for every request to be accounted for instead: dropped for load (logged before
    /// its answer), or handled after it (logged before its send), and each send so logged to
    /// have reached the messenger.
    async fn reset_work_after_the_answer_is_bounded(db: Db) {
        let logs = crate::account::Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let (app, given) = with_a_messenger_never_done(&db, 24, |b| b).await;
        for i in 0..24 {
            let body = format!("username=user{i}");
            assert_eq!(send(&app, post("/account/password-reset", &body, None)).await.status, StatusCode::ACCEPTED);
        }
        reaches(&given, 16).await;
        let dropped = logs.text().matches("password-reset requests at once; one dropped").count();
        let (sent, refused) = resets_handled(&logs, 24 - dropped).await;
        assert_eq!((sent, refused, dropped), (16, 0, 8), "(sent, refused, dropped for load)");
        reaches(&given, sent).await;
        assert_eq!(given.load(std::sync::atomic::Ordering::SeqCst), 16);
    }

    /// A send that never finishes is given up after `messenger_timeout`, and gives its place
    /// back: once 16 such sends have filled the places for reset work, a later request reaches
    /// the messenger again. (Without a bound, the 17th was dropped, and every later one.)
    async fn a_send_that_never_finishes_gives_its_place_back(db: Db) {
        let timeout = |b: axum_live_auth::AuthLayerBuilder| b.messenger_timeout(Duration::from_millis(300));
        let (app, given) = with_a_messenger_never_done(&db, 17, timeout).await;
        for i in 0..16 {
            let body = format!("username=user{i}");
            assert_eq!(send(&app, post("/account/password-reset", &body, None)).await.status, StatusCode::ACCEPTED);
        }
        assert_eq!(reaches(&given, 16).await, 16);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let late = send(&app, post("/account/password-reset", "username=user16", None)).await;
        assert_eq!(late.status, StatusCode::ACCEPTED);
        assert_eq!(reaches(&given, 17).await, 17);
    }

    /// The decomposed spelling of a name counts against the same account as the composed one:
    /// it cannot buy three more messages. (Before: it counted apart, and a fourth link went
    /// out.) The fourth request is waited for until its account refused it: the refusal also
    /// shows that the decomposed spelling reached the account (a name of no account is refused
    /// by nothing).
    async fn another_spelling_of_a_name_counts_against_the_same_account(db: Db) {
        let logs = crate::account::Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let (app, dir, auth) = quickstart(&db).await;
        auth.accounts().create_user("Jos\u{e9}", "jose-password").await.unwrap();
        for i in 0..3 {
            let reply = send(&app, post("/account/password-reset", "username=Jos%C3%A9", None)).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "request {i}");
        }
        mail(&dir, 3).await;
        let fourth = send(&app, post("/account/password-reset", "username=Jose%CC%81", None)).await;
        assert_eq!(fourth.status, StatusCode::ACCEPTED);
        assert_eq!(
            resets_handled(&logs, 4).await,
            (3, 1),
            "(sent, refused): the decomposed spelling reached Jos\u{e9}'s account, past its limit"
        );
        assert_eq!(mails(&dir).len(), 3, "no fourth message for Jos\u{e9}");
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn an_expired_or_unknown_token_is_refused(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        send(&app, post("/account/password-reset", "username=alice", None)).await;
        let (_, link) = mail(&dir, 1).await;
        db.exec_each(
            "UPDATE auth_tokens SET expires_at = now() - interval '1 second'",
            "UPDATE auth_tokens SET expires_at = NOW - 1000",
        )
        .await;
        let body = format!("token={}&new_password=alice-new-password", form_token(&link));
        let expired = send(&app, post("/account/password-reset/confirm", &body, None)).await;
        assert_eq!(expired.status, StatusCode::BAD_REQUEST);
        let made_up = axum_live_auth::SessionToken::generate().unwrap();
        let body = format!("token={made_up}&new_password=alice-new-password");
        let unknown = send(&app, post("/account/password-reset/confirm", &body, None)).await;
        assert_eq!((unknown.status, &unknown.body), (expired.status, &expired.body));
        let garbage = send(&app, post("/account/password-reset/confirm", "token=x&new_password=alice-new-password", None)).await;
        assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
        assert_eq!(login(&app, "alice", "alice-password").await.status, StatusCode::SEE_OTHER);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The two answers are alike, and only bob gets a message: checked once the work both
    /// requests spawned after their answers has ended (the unknown name's ends with nothing to
    /// wait for).
    async fn an_unknown_account_is_indistinguishable(db: Db) {
        let logs = crate::account::Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let (app, dir, _) = quickstart(&db).await;
        let before = settled_tasks().await;
        let known = send(&app, post("/account/password-reset", "username=bob", None)).await;
        let unknown = send(&app, post("/account/password-reset", "username=nobody", None)).await;
        assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));
        let headers = |r: &Reply| {
            let mut names: Vec<_> = r.headers.keys().map(|k| k.as_str().to_owned()).collect();
            names.sort();
            names
        };
        assert_eq!(headers(&known), headers(&unknown));
        mail(&dir, 1).await;
        spawned_work_ended(before).await;
        assert_eq!(resets_handled(&logs, 1).await, (1, 0), "(sent, refused): bob's only");
        assert_eq!(mails(&dir).len(), 1, "a message for bob only");
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn reset_requests_are_throttled_per_account(db: Db) {
        let logs = crate::account::Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let (app, dir, _) = quickstart(&db).await;
        for i in 0..3 {
            let reply = send(&app, post("/account/password-reset", "username=bob", None)).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "request {i}");
        }
        mail(&dir, 3).await;
        // Past the account's limit the answer is the same, and no message goes out.
        let fourth = send(&app, post("/account/password-reset", "username=bob", None)).await;
        assert_eq!(fourth.status, StatusCode::ACCEPTED);
        // Once the fourth request's work after its answer is over: refused for bob's account.
        assert_eq!(resets_handled(&logs, 4).await, (3, 1), "(sent, refused)");
        assert_eq!(mails(&dir).len(), 3, "no fourth message for bob");
        // Another account is not affected.
        let other = send(&app, post("/account/password-reset", "username=alice", None)).await;
        assert_eq!(other.status, StatusCode::ACCEPTED);
        mail(&dir, 4).await;
        // A cross-site form cannot ask for a reset.
        let mut cross = post("/account/password-reset", "username=alice", None);
        cross.headers_mut().insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(send(&app, cross).await.status, StatusCode::FORBIDDEN);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Resets asked for one account count together, by name or by address, and past its limit
    /// the answer is the one any address gets, so that it does not tell whether a username and
    /// an address are one account; whoever takes a user's verified address as a username does
    /// not receive the resets asked for by it.
    ///
    /// The last two requests are checked once their work after the answer is over: the one by
    /// alice's address refused for her account (not sent to the squatter), the one by an address
    /// nobody has ended.
    async fn an_account_counts_once_for_resets_and_its_verified_address_is_its_own(db: Db) {
        let logs = crate::account::Logs::default();
        let _guard = tracing::subscriber::set_default(logs.subscriber());
        let (app, dir, auth) = quickstart(&db).await;
        let accounts = auth.accounts();
        let alice = accounts.user_id("alice").await.unwrap().unwrap();
        accounts.request_email_change(alice, "alice@example.com").await.unwrap();
        let (_, link) = mail(&dir, 1).await;
        assert_eq!(confirm_address(&app, &link).await.status, StatusCode::OK);
        accounts.create_user("Alice@Example.com", "squatter-password").await.unwrap();
        let reset = |name: &'static str| {
            let app = app.clone();
            async move { send(&app, post("/account/password-reset", &format!("username={name}"), None)).await.status }
        };
        assert_eq!(reset("alice%40example.com").await, StatusCode::ACCEPTED);
        let (message, _) = mail(&dir, 2).await;
        assert!(message.contains("Hello alice,"), "{message}");
        for _ in 0..2 {
            assert_eq!(reset("alice").await, StatusCode::ACCEPTED);
        }
        mail(&dir, 4).await;
        let before = settled_tasks().await;
        let linked = send(&app, post("/account/password-reset", "username=ALICE%40example.com", None)).await;
        let unlinked = send(&app, post("/account/password-reset", "username=carol%40example.com", None)).await;
        assert_eq!(linked.status, StatusCode::ACCEPTED);
        assert_eq!((linked.status, &linked.body), (unlinked.status, &unlinked.body));
        assert_eq!(resets_handled(&logs, 4).await, (3, 1), "(sent, refused): alice's limit held");
        spawned_work_ended(before).await;
        assert_eq!(resets_handled(&logs, 4).await, (3, 1), "(sent, refused): carol's went nowhere");
        assert_eq!(mails(&dir).len(), 4, "no message past alice's limit");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A name no user can have (a NUL, which Postgres text cannot hold) is counted against the
    /// client's address like any other and never reaches the database: `202`, then `429`,
    /// never a `503`. No message is checked for once the work the requests spawned after their
    /// answers (and their connections) has ended.
    async fn a_reset_for_an_impossible_name_is_counted_and_never_fails(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let server = serve(app).await;
        let before = settled_tasks().await;
        let long = "x".repeat(300);
        for (i, name) in ["a%00b", long.as_str(), "a%00b", "a%00b", "a%00b"].into_iter().enumerate() {
            let request = post("/account/password-reset", &format!("username={name}"), None);
            assert_eq!(send_from(server, client(7), request).await.status, StatusCode::ACCEPTED, "request {i}");
        }
        let request = post("/account/password-reset", "username=a%00b", None);
        assert_eq!(send_from(server, client(7), request).await.status, StatusCode::TOO_MANY_REQUESTS);
        spawned_work_ended(before).await;
        assert!(mails(&dir).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A reset link goes to an address; once the user has moved to another, the link sent to
    /// the old one (a mailbox they may have left for a reason) no longer sets a password, nor
    /// again when the user comes back to that address. A link sent to the address the user has
    /// works.
    async fn a_reset_link_dies_with_the_address_it_was_sent_to(db: Db) {
        let (app, dir, auth) = quickstart(&db).await;
        let accounts = auth.accounts();
        let alice = accounts.user_id("alice").await.unwrap().unwrap();
        // The link to the new address is message `n` (a notice to the current one, if any, comes
        // just before it).
        let move_to = |address: &'static str, n: usize| {
            let (app, dir, accounts) = (app.clone(), dir.clone(), accounts.clone());
            async move {
                accounts.request_email_change(alice, address).await.unwrap();
                let (_, link) = mail(&dir, n).await;
                assert_eq!(confirm_address(&app, &link).await.status, StatusCode::OK, "{address}");
            }
        };
        move_to("alice@old.example", 1).await;
        assert_eq!(send(&app, post("/account/password-reset", "username=alice", None)).await.status, StatusCode::ACCEPTED);
        let (message, link) = mail(&dir, 2).await;
        assert!(message.contains("alice@old.example"), "{message}");
        let stale = || {
            let body = format!("token={}&new_password=taken-over-password", form_token(&link));
            let app = app.clone();
            async move { send(&app, post("/account/password-reset/confirm", &body, None)).await.status }
        };
        // An address changed by hand (no link spent): the link still checks where it was sent.
        db.exec("UPDATE auth_users SET email = 'alice@elsewhere.example' WHERE username = 'alice'").await;
        assert_eq!(stale().await, StatusCode::BAD_REQUEST, "the address it was sent to is gone");
        db.exec("UPDATE auth_users SET email = 'alice@old.example' WHERE username = 'alice'").await;
        move_to("alice@new.example", 4).await;
        assert_eq!(stale().await, StatusCode::BAD_REQUEST);
        move_to("alice@old.example", 6).await;
        assert_eq!(stale().await, StatusCode::BAD_REQUEST, "back at the old address");
        assert_eq!(login(&app, "alice", "alice-password").await.status, StatusCode::SEE_OTHER);
        // A link sent to the address the user has works.
        assert_eq!(send(&app, post("/account/password-reset", "username=alice", None)).await.status, StatusCode::ACCEPTED);
        let (_, link) = mail(&dir, 7).await;
        let body = format!("token={}&new_password=alice-new-password", form_token(&link));
        assert_eq!(send(&app, post("/account/password-reset/confirm", &body, None)).await.status, StatusCode::SEE_OTHER);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// An address change checked when its request's head came, whose body comes only after a
    /// reset ended the session (and a new login), mints no link and ends no session: the link
    /// is made only while the request's session still holds at the user's credential epoch.
    /// (Before: `202`, a live link to the thief's address under the new epoch, and the owner's
    /// new session ended.)
    async fn an_address_change_whose_body_comes_after_a_reset_changes_nothing(db: Db) {
        let (app, dir, auth) = quickstart(&db).await;
        let accounts = auth.accounts();
        let alice = accounts.user_id("alice").await.unwrap().unwrap();
        let thief = login(&app, "alice", "alice-password").await.session_cookie().unwrap();
        let before = settled_tasks().await;
        let (reading, read) = tokio::sync::oneshot::channel();
        let (body, held_back) = tokio::sync::oneshot::channel::<&'static str>();
        let stream = futures_util::stream::once(async move {
            let _ = reading.send(());
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(held_back.await.unwrap()))
        });
        let mut request = post("/account/email", "", Some(&thief));
        *request.body_mut() = Body::from_stream(stream);
        let change = tokio::spawn({
            let app = app.clone();
            async move { send(&app, request).await }
        });
        read.await.unwrap(); // the head has passed every check; the handler reads the body
        accounts.reset_password(alice, "alice-new-password").await.unwrap();
        let owner = login(&app, "alice", "alice-new-password").await.session_cookie().unwrap();
        body.send("email=thief%40evil.example").unwrap();
        assert_eq!(change.await.unwrap().status, StatusCode::UNAUTHORIZED);
        assert_eq!(send(&app, get("/me", Some(&owner))).await.status, StatusCode::OK, "the owner's session lives");
        // The route sends before it answers; whatever it left running after (a transaction
        // rolled back in a task of its own) has ended too.
        spawned_work_ended(before).await;
        assert!(mails(&dir).iter().all(|m| !m.contains("thief@evil.example")), "no link to the thief");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The current address is told before the link goes to the new one: a client that drops
    /// its request between the two messages (or a send that fails) never gets the link out
    /// without the notice. (Before: the link went first.)
    async fn the_notice_of_an_address_change_goes_out_before_the_link(db: Db) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (first, first_sent) = tokio::sync::oneshot::channel();
        let messenger = HeldAfterFirst { sent: sent.clone(), first: Mutex::new(Some(first)) };
        let auth = AuthLayer::builder(db.store())
            .allowed_origin(ORIGIN)
            .messenger(messenger)
            .build()
            .unwrap();
        example::seed(&auth.accounts()).await.unwrap();
        let app = example::app(auth);
        db.exec("UPDATE auth_users SET email = 'alice@example.com' WHERE username = 'alice'").await;
        let alice = login(&app, "alice", "alice-password").await.session_cookie().unwrap();
        let change = tokio::spawn({
            let app = app.clone();
            async move { send(&app, post("/account/email", "email=new%40example.com", Some(&alice))).await }
        });
        first_sent.await.unwrap();
        change.abort(); // the client goes away while the first message is on its way
        let _ = change.await;
        assert_eq!(*sent.lock().unwrap(), [MessageKind::EmailChangeRequested]);
    }

    /// An address an operator set by hand spends the links sent before: a pending change to
    /// another address can no longer undo the fix. (Before: the link still confirmed, `200`.)
    async fn an_address_set_by_hand_spends_the_pending_links(db: Db) {
        let (app, dir, auth) = quickstart(&db).await;
        let accounts = auth.accounts();
        let alice = accounts.user_id("alice").await.unwrap().unwrap();
        accounts.request_email_change(alice, "thief@evil.example").await.unwrap();
        let (_, pending) = mail(&dir, 1).await;
        db.exec("UPDATE auth_users SET email = 'alice@fixed.example' WHERE username = 'alice'").await;
        assert_eq!(confirm_address(&app, &pending).await.status, StatusCode::BAD_REQUEST);
        // A link to the address set is left for its confirmation, which changes nothing.
        accounts.request_email_change(alice, "alice@new.example").await.unwrap();
        let (_, link) = mail(&dir, 3).await;
        db.exec("UPDATE auth_users SET email = 'alice@new.example' WHERE username = 'alice'").await;
        assert_eq!(confirm_address(&app, &link).await.status, StatusCode::OK);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// An address set by hand is not verified (nobody proved they receive mail there), and an
    /// address is taken only in its composed form (NFC), as names are, so that one address in
    /// two spellings is never held twice. (Before, a hand-set address kept the old address's
    /// verification, and a decomposed address was stored as typed: resets asked for by it,
    /// which look up the composed form, went nowhere.)
    async fn an_address_set_by_hand_is_not_verified_and_addresses_are_composed(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let alice = login(&app, "alice", "alice-password").await.session_cookie().unwrap();
        let decomposed = send(&app, post("/account/email", "email=jose%CC%81%40example.com", Some(&alice))).await;
        assert_eq!(decomposed.status, StatusCode::BAD_REQUEST);
        assert_eq!(send(&app, post("/account/email", "email=jos%C3%A9%40example.com", Some(&alice))).await.status, StatusCode::ACCEPTED);
        let (_, link) = mail(&dir, 1).await;
        assert_eq!(confirm_address(&app, &link).await.status, StatusCode::OK);
        assert_eq!(address_of(&app, &alice).await, (Some("jos\u{e9}@example.com".into()), true));
        db.exec("UPDATE auth_users SET email = 'alice@typo.example' WHERE username = 'alice'").await;
        assert_eq!(address_of(&app, &alice).await, (Some("alice@typo.example".into()), false));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A user disabled and enabled again does not get back the links sent before: a ban spends
    /// them.
    async fn a_ban_spends_the_links_sent_before(db: Db) {
        let (app, dir, auth) = quickstart(&db).await;
        let accounts = auth.accounts();
        let bob = accounts.user_id("bob").await.unwrap().unwrap();
        assert_eq!(send(&app, post("/account/password-reset", "username=bob", None)).await.status, StatusCode::ACCEPTED);
        let (_, link) = mail(&dir, 1).await;
        accounts.disable_user(bob).await.unwrap();
        accounts.enable_user(bob).await.unwrap();
        let body = format!("token={}&new_password=taken-over-password", form_token(&link));
        assert_eq!(send(&app, post("/account/password-reset/confirm", &body, None)).await.status, StatusCode::BAD_REQUEST);
        assert_eq!(login(&app, "bob", "bob-password").await.status, StatusCode::SEE_OTHER);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Two users who ask for one new address both get a link; the first to confirm gets the
    /// address, the other is told it is taken, also when both confirm at once.
    async fn an_address_confirmed_by_two_users_at_once_goes_to_one(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        for (n, (name, password)) in [("alice", "alice-password"), ("bob", "bob-password")].into_iter().enumerate() {
            let session = login(&app, name, password).await.session_cookie().unwrap();
            let asked = send(&app, post("/account/email", "email=shared%40example.com", Some(&session))).await;
            assert_eq!(asked.status, StatusCode::ACCEPTED, "{name}");
            mail(&dir, n + 1).await;
        }
        let (_, first) = mail(&dir, 1).await;
        let (_, second) = mail(&dir, 2).await;
        let (a, b) = tokio::join!(confirm_address(&app, &first), confirm_address(&app, &second));
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
        assert_eq!(db.count("SELECT count(*) FROM auth_users WHERE email = 'shared@example.com'").await, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Requests refused for their address are not counted against the account they name: one
    /// address cannot use up another user's resets. The request from another address is
    /// answered `202` whatever the account's count (that limit drops the message later, after
    /// the answer): bob's message must arrive, and it is the only one.
    async fn an_address_over_its_reset_limit_does_not_use_up_an_account(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let server = serve(app).await;
        let reset = |from: u32, name: String| async move {
            let request = post("/account/password-reset", &format!("username={name}"), None);
            send_from(server, client(from), request).await.status
        };
        for i in 0..5 {
            assert_eq!(reset(1, format!("nobody-{i}")).await, StatusCode::ACCEPTED);
        }
        for _ in 0..3 {
            assert_eq!(reset(1, "bob".into()).await, StatusCode::TOO_MANY_REQUESTS);
        }
        assert_eq!(reset(2, "bob".into()).await, StatusCode::ACCEPTED);
        let (message, _) = mail(&dir, 1).await;
        assert!(message.contains("Hello bob,"), "bob's reset reaches him: {message}");
        assert_eq!(mails(&dir).len(), 1, "one message: bob's");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A new address becomes the user's only when the link sent to it is confirmed, by a form
    /// the link's page posts: following the link (as a mail scanner does) changes nothing.
    /// Until then the user's address, and where resets go, stay as they were.
    async fn an_email_address_is_the_users_once_its_link_is_confirmed(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let alice = login(&app, "alice", "alice-password").await.session_cookie().unwrap();
        assert_eq!(send(&app, post("/account/email", "email=Alice%40Example.com", Some(&alice))).await.status, StatusCode::ACCEPTED);
        let (message, link) = mail(&dir, 1).await;
        assert!(message.starts_with("To: Alice@Example.com"), "{message}");
        assert_eq!(address_of(&app, &alice).await, (None, false), "nothing changes before the link is confirmed");
        // Nobody has the address yet: a reset asked for by it goes nowhere, checked once the
        // work it spawned after its answer has ended (it ends with no event or message).
        let before = settled_tasks().await;
        send(&app, post("/account/password-reset", "username=Alice%40Example.com", None)).await;
        spawned_work_ended(before).await;
        assert_eq!(mails(&dir).len(), 1, "no reset goes to an address nobody has");

        let page = send(&app, get(&link, None)).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.headers[header::REFERRER_POLICY], "strict-origin");
        assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
        assert!(page.body.contains(&form_token(&link)));
        assert_eq!(address_of(&app, &alice).await, (None, false), "following the link changes nothing");
        let confirmed = confirm_address(&app, &link).await;
        assert_eq!(confirmed.status, StatusCode::OK);
        assert_eq!(confirmed.headers[header::REFERRER_POLICY], "strict-origin");
        assert_eq!(address_of(&app, &alice).await, (Some("Alice@Example.com".into()), true));
        assert_eq!(confirm_address(&app, &link).await.status, StatusCode::BAD_REQUEST, "single use");

        // Taken by alice (in any case); invalid addresses; a session is needed.
        let bob = login(&app, "bob", "bob-password").await.session_cookie().unwrap();
        assert_eq!(send(&app, post("/account/email", "email=alice%40example.COM", Some(&bob))).await.status, StatusCode::CONFLICT);
        assert_eq!(send(&app, post("/account/email", "email=not-an-address", Some(&bob))).await.status, StatusCode::BAD_REQUEST);
        assert_eq!(send(&app, post("/account/email", "email=b%40x.y", None)).await.status, StatusCode::UNAUTHORIZED);

        // A reset asked for by address reaches the address.
        send(&app, post("/account/password-reset", "username=ALICE%40example.com", None)).await;
        let (message, _) = mail(&dir, 2).await;
        assert!(message.contains("Reset your password") && message.contains("To: Alice@Example.com"), "{message}");

        // A change asked for and not confirmed leaves the address, and resets, where they were.
        assert_eq!(send(&app, post("/account/email", "email=alice2%40example.com", Some(&alice))).await.status, StatusCode::ACCEPTED);
        let (message, change) = mail(&dir, 4).await;
        assert!(message.starts_with("To: alice2@example.com"), "{message}");
        assert_eq!(address_of(&app, &alice).await, (Some("Alice@Example.com".into()), true));
        send(&app, post("/account/password-reset", "username=alice", None)).await;
        let (message, _) = mail(&dir, 5).await;
        assert!(message.contains("To: Alice@Example.com"), "{message}");

        // The current address is told, with a reset link: a user who did not ask for the change
        // undoes it (every session ends, and the link to the new address dies).
        let (notice, undo) = mail(&dir, 3).await;
        assert!(notice.starts_with("To: Alice@Example.com") && notice.contains("change of your email address"), "{notice}");
        let body = format!("token={}&new_password=alice-new-password", form_token(&undo));
        assert_eq!(send(&app, post("/account/password-reset/confirm", &body, None)).await.status, StatusCode::SEE_OTHER);
        assert_eq!(send(&app, get("/me", Some(&alice))).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(confirm_address(&app, &change).await.status, StatusCode::BAD_REQUEST, "the change is undone");
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn deleting_a_user_ends_their_sessions_and_grants(db: Db) {
        let (app, dir, auth) = quickstart(&db).await;
        let bob = login(&app, "bob", "bob-password").await.session_cookie().unwrap();
        let accounts = auth.accounts();
        let id = accounts.user_id("bob").await.unwrap().unwrap();
        accounts.delete_user(id).await.unwrap();
        assert_eq!(send(&app, get("/me", Some(&bob))).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(accounts.user_id("bob").await.unwrap(), None);
        assert_eq!(db.count("SELECT count(*) FROM auth_user_permissions").await, 0);
        assert_eq!(db.count("SELECT count(*) FROM auth_user_resource_permissions").await, 0);
        assert!(matches!(accounts.delete_user(id).await, Err(axum_live_auth::Error::UserNotFound)));
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn the_token_route_takes_a_form_too(db: Db) {
        let (app, dir, _) = quickstart(&db).await;
        let request = Request::post("/auth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("username=bob&password=bob-password"))
            .unwrap();
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let token = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let me = Request::get("/me")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, me).await.status, StatusCode::OK);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Alice's session ends while her address change waits for her row, which another transaction
/// holds: deleted in that transaction, or (`by_hand`) its deadline moved into the past in a
/// statement of its own more than a second after the change began waiting. The change's answer,
/// and how many verification links exist afterwards.
async fn address_change_while_its_session_ends(
    pool: &sqlx::PgPool,
    by_hand: bool,
) -> (StatusCode, i64) {
    let db = Db::from(pool.clone());
    let (app, dir, _) = quickstart(&db).await;
    let thief = login(&app, "alice", "alice-password")
        .await
        .session_cookie()
        .unwrap();
    let id = thief.split('.').next().unwrap().to_owned();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM auth_users WHERE username = 'alice' FOR NO KEY UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    if !by_hand {
        sqlx::query("DELETE FROM auth_sessions WHERE id = $1")
            .bind(&id)
            .execute(&mut *holder)
            .await
            .unwrap();
    }
    let change = tokio::spawn({
        let app = app.clone();
        async move {
            send(
                &app,
                post("/account/email", "email=thief%40evil.example", Some(&thief)),
            )
            .await
        }
    });
    if by_hand {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        sqlx::query("UPDATE auth_sessions SET idle_expires_at = now() - interval '1 second'")
            .execute(pool)
            .await
            .unwrap();
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    holder.commit().await.unwrap();
    let status = change.await.unwrap().status;
    let links: i64 =
        sqlx::query_scalar("SELECT count(*) FROM auth_tokens WHERE purpose = 'email_verification'")
            .fetch_one(pool)
            .await
            .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    (status, links)
}

/// An address change whose session is being ended meanwhile (a logout still committing when the
/// change asks for its link) makes no link: the link's insert waits for the ending and finds the
/// session gone. (Before: it read the session from before the ending, `202`, and a live link.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn an_address_change_racing_the_end_of_its_session_makes_no_link(pool: sqlx::PgPool) {
    let (status, links) = address_change_while_its_session_ends(&pool, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(links, 0);
}

/// The same with the session ended by hand: its deadline is later than the `now()` of the
/// change's transaction, yet the session is over. (Before: `202` and a live link.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn an_address_change_racing_an_ending_by_hand_makes_no_link(pool: sqlx::PgPool) {
    let (status, links) = address_change_while_its_session_ends(&pool, true).await;
    assert_ne!(status, StatusCode::ACCEPTED);
    assert_eq!(links, 0);
}

/// The answer to a reset request reads nothing of the account: with the users table locked,
/// requests for an account within its limit, past it, and for no account are all answered
/// `202` at once, and the link goes out once the lock is gone. So neither the answer nor its
/// timing can say whether the account exists or has used up its limit. (Before: the answer
/// waited for the name's lookup and counted the account first, a round trip more past the
/// limit: the request was still waiting after 3 s.)
#[sqlx::test(migrator = "axum_live_auth::POSTGRES_MIGRATOR")]
async fn a_reset_request_is_answered_without_reading_the_account(pool: sqlx::PgPool) {
    let logs = crate::account::Logs::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let db = Db::from(pool.clone());
    let (app, dir, _) = quickstart(&db).await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE auth_users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let before = settled_tasks().await;
    for name in ["bob", "bob", "bob", "bob", "nobody"] {
        let request = send(
            &app,
            post("/account/password-reset", &format!("username={name}"), None),
        );
        let reply = tokio::time::timeout(Duration::from_secs(3), request)
            .await
            .expect("answered while the users table is locked");
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    lock.rollback().await.unwrap();
    mail(&dir, 3).await;
    // Checked once the work after the answers is over: bob's fourth refused for his account,
    // nobody's ended.
    assert_eq!(
        resets_handled(&logs, 4).await,
        (3, 1),
        "(sent, refused): bob's limit held"
    );
    spawned_work_ended(before).await;
    assert_eq!(mails(&dir).len(), 3, "bob's limit holds");
    let _ = std::fs::remove_dir_all(dir);
}
