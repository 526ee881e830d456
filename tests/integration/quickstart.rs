//! The README's curl walkthrough, against the quickstart example's own router.

use crate::common::{COOKIE, Reply, both_stores, login_request, send};
use axum::{body::Body, http::Request};
use axum_live_auth::AuthLayer;
use http::{StatusCode, header};

use crate::common::quickstart as example;

fn request(method: &str, path: &str, token: Option<&str>, form: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::ORIGIN, "http://localhost:3000");
    if let Some(token) = token {
        builder = builder.header(header::COOKIE, format!("{COOKIE}={token}"));
    }
    if form.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    builder
        .body(Body::from(form.unwrap_or_default().to_owned()))
        .unwrap()
}

both_stores! {
async fn the_readme_walkthrough(db: Db) {
    axum_live_auth::migrate(db.store()).await.unwrap(); // already applied: a no-op
let auth = AuthLayer::builder(db.store())
        .allowed_origin("http://localhost:3000")
        .login_redirect("/login")
        .build()
        .unwrap();
    example::seed(&auth.accounts()).await.unwrap();
    example::seed(&auth.accounts()).await.unwrap(); // seeding twice is harmless
    let app = example::app(auth);
    let call = |method: &'static str,
                path: &'static str,
                token: Option<String>,
                form: Option<&'static str>| {
        let app = app.clone();
        async move { send(&app, request(method, path, token.as_deref(), form)).await }
    };
    let login = |user: &'static str, password: &'static str| {
        let app = app.clone();
        async move { send(&app, login_request(user, password)).await }
    };
    let status = |reply: Reply| reply.status;

    assert_eq!(status(call("GET", "/", None, None).await), StatusCode::OK);
    assert_eq!(
        status(call("GET", "/me", None, None).await),
        StatusCode::UNAUTHORIZED
    );

    let alice = login("alice", "alice-password").await;
    assert_eq!(alice.status, StatusCode::SEE_OTHER);
    assert_eq!(alice.headers[header::LOCATION], "/me");
    let alice = alice.session_cookie().unwrap();
    let me = call("GET", "/me", Some(alice.clone()), None).await;
    assert_eq!(
        me.body,
        r#"{"id":1,"username":"alice","permissions":["admin","reports:read"],"email":null,"email_verified":false}"#
    );

    let wrong = login("alice", "wrong-password").await;
    let unknown = login("nobody", "wrong-password").await;
    assert_eq!(
        (wrong.status, unknown.status),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(wrong.body, unknown.body);

    let bob = login("bob", "bob-password").await.session_cookie().unwrap();
    assert_eq!(
        status(call("GET", "/reports", Some(bob.clone()), None).await),
        StatusCode::OK
    );
    assert_eq!(
        status(call("GET", "/admin", Some(bob.clone()), None).await),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(
            call(
                "POST",
                "/admin/users/alice/disable",
                Some(bob.clone()),
                None
            )
            .await
        ),
        StatusCode::FORBIDDEN
    );

    let a = || Some(alice.clone());
    assert_eq!(
        status(call("POST", "/admin/users/bob/disable", a(), None).await),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(call("GET", "/me", Some(bob.clone()), None).await),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login("bob", "bob-password").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(call("POST", "/admin/users/bob/enable", a(), None).await),
        StatusCode::NO_CONTENT
    );
    let bob = login("bob", "bob-password").await.session_cookie().unwrap();
    assert_eq!(
        status(call("GET", "/reports", Some(bob.clone()), None).await),
        StatusCode::OK
    );

    let revoke = call(
        "POST",
        "/admin/users/bob/revoke",
        a(),
        Some("permission=reports%3Aread"),
    )
    .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    assert_eq!(
        status(call("GET", "/reports", Some(bob.clone()), None).await),
        StatusCode::FORBIDDEN
    );
    let grant = call(
        "POST",
        "/admin/users/bob/grant",
        a(),
        Some("permission=reports%3Aread"),
    )
    .await;
    assert_eq!(grant.status, StatusCode::NO_CONTENT);
    assert_eq!(
        status(call("GET", "/reports", Some(bob.clone()), None).await),
        StatusCode::OK
    );

    assert_eq!(
        status(call("POST", "/admin/users/carol/disable", a(), None).await),
        StatusCode::NOT_FOUND
    );

    // Projects: bob may read project 42 (seeded), not 7; alice grants him 7, then writing it.
    let b = || Some(bob.clone());
    assert_eq!(status(call("GET", "/projects/42", b(), None).await), StatusCode::OK);
    assert_eq!(status(call("GET", "/projects/7", b(), None).await), StatusCode::FORBIDDEN);
    assert_eq!(status(call("POST", "/projects/7/edit", b(), None).await), StatusCode::FORBIDDEN);
    let form = Some("permission=project%3Aread&resource=project%3A7");
    assert_eq!(status(call("POST", "/admin/users/bob/grant", a(), form).await), StatusCode::NO_CONTENT);
    assert_eq!(status(call("GET", "/projects/7", b(), None).await), StatusCode::OK);
    let form = Some("permission=project%3Awrite&resource=project%3A7");
    assert_eq!(status(call("POST", "/admin/users/bob/grant", a(), form).await), StatusCode::NO_CONTENT);
    let edited = call("POST", "/projects/7/edit", b(), None).await;
    assert_eq!((edited.status, edited.body.as_str()), (StatusCode::OK, "Project 7 edited by bob"));
    assert_eq!(status(call("POST", "/admin/users/bob/revoke", a(), form).await), StatusCode::NO_CONTENT);
    assert_eq!(status(call("POST", "/projects/7/edit", b(), None).await), StatusCode::FORBIDDEN);
    // Nothing left to revoke (or a permission that comes from a role): not "done".
    assert_eq!(status(call("POST", "/admin/users/bob/revoke", a(), form).await), StatusCode::NOT_FOUND);
    let by_role = Some("permission=admin");
    assert_eq!(status(call("POST", "/admin/users/alice/revoke", a(), by_role).await), StatusCode::NOT_FOUND);
    // A resource field left blank is refused, never a grant on every resource.
    let blank = Some("permission=project%3Awrite&resource=");
    assert_eq!(status(call("POST", "/admin/users/bob/grant", a(), blank).await), StatusCode::BAD_REQUEST);
    assert_eq!(status(call("POST", "/projects/7/edit", b(), None).await), StatusCode::FORBIDDEN);
    // A resource that is not `type:id`: a clean 400.
    for bad in ["project", "project%3A", "pro%20ject%3A1", "%3A1"] {
        let form = format!("permission=project%3Aread&resource={bad}");
        let reply = send(&app, request("POST", "/admin/users/bob/grant", a().as_deref(), Some(&form))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Admin is not a wildcard: alice holds no project:read at all.
    assert_eq!(status(call("GET", "/projects/7", a(), None).await), StatusCode::FORBIDDEN);

    // Devices: alice on a second client, listed, then logged out from the first.
    let laptop = login("alice", "alice-password").await.session_cookie().unwrap();
    let list = call("GET", "/account/sessions", a(), None).await;
    assert_eq!(list.status, StatusCode::OK);
    let sessions: Vec<serde_json::Value> = serde_json::from_str(&list.body).unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let others = call("POST", "/account/sessions/revoke-others", a(), None).await;
    assert_eq!(others.status, StatusCode::NO_CONTENT);
    assert_eq!(
        status(call("GET", "/me", Some(laptop), None).await),
        StatusCode::UNAUTHORIZED
    );
    // Password change: the session is rotated, the old cookie is dead.
    let form = "current_password=alice-password&new_password=alice-new-password";
    let changed = call("POST", "/account/password", a(), Some(form)).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    assert_eq!(status(call("GET", "/me", a(), None).await), StatusCode::UNAUTHORIZED);
    let alice = changed.session_cookie().unwrap();
    let a = || Some(alice.clone());
    assert_eq!(status(call("GET", "/me", a(), None).await), StatusCode::OK);

    let logout = call("POST", "/logout", a(), None).await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER);
    assert_eq!(logout.session_cookie().as_deref(), Some(""));
    assert_eq!(
        status(call("GET", "/me", a(), None).await),
        StatusCode::UNAUTHORIZED
    );
}

/// The quickstart's admin actions that give access (enable, grant) need the admin's password
/// proven within the reauthentication window; taking access away (disable, revoke) does not.
async fn giving_access_needs_a_recent_password_check(db: Db) {
    let auth = AuthLayer::builder(db.store())
        .allowed_origin("http://localhost:3000")
        .build()
        .unwrap();
    example::seed(&auth.accounts()).await.unwrap();
    let app = example::app(auth);
    let call = |path: &'static str, token: String, form: Option<&'static str>| {
        let app = app.clone();
        async move { send(&app, request("POST", path, Some(&token), form)).await }
    };
    let alice = send(&app, login_request("alice", "alice-password")).await.session_cookie().unwrap();
    db.age_authentication(alice.split('.').next().unwrap(), 16 * 60).await;
    let grant = call("/admin/users/bob/grant", alice.clone(), Some("permission=admin")).await;
    assert_eq!(grant.status, StatusCode::FORBIDDEN);
    assert!(grant.body.contains("reauth_required"), "{}", grant.body);
    assert_eq!(call("/admin/users/bob/disable", alice.clone(), None).await.status, StatusCode::NO_CONTENT);
    let revoke = call("/admin/users/bob/revoke", alice.clone(), Some("permission=reports%3Aread")).await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    let enable = call("/admin/users/bob/enable", alice.clone(), None).await;
    assert_eq!(enable.status, StatusCode::FORBIDDEN);

    let reauth = call("/account/reauth", alice, Some("password=alice-password")).await;
    assert_eq!(reauth.status, StatusCode::NO_CONTENT);
    let alice = reauth.session_cookie().unwrap();
    assert_eq!(call("/admin/users/bob/enable", alice.clone(), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(call("/admin/users/bob/grant", alice, Some("permission=admin")).await.status, StatusCode::NO_CONTENT);
}
}

/// The quickstart never repeats `DATABASE_URL`, which may hold a password, in what it prints.
/// (Before: a URL of another scheme came back whole in the error.)
#[test]
fn the_quickstart_does_not_print_the_database_url() {
    let output = std::process::Command::new(crate::common::example::binary("quickstart"))
        .env("DATABASE_URL", "mysql://root:hunter2@127.0.0.1/app")
        .env("PORT", crate::common::example::free_port().to_string())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("DATABASE_URL must start with"),
        "{printed}"
    );
    assert!(!printed.contains("hunter2"), "{printed}");
}
