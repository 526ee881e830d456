//! `GET /check`: forward authentication for reverse proxies (nginx `auth_request`, Traefik
//! `ForwardAuth`, Caddy `forward_auth`), so that services not written with this crate get the
//! same live sessions. (Envoy's `ext_authz` sends the original method and path to the check
//! itself, which this route does not read.)

use axum::{
    Router,
    extract::Query,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::{
    Auth, AuthRejection, AuthState, CurrentUser, Resource, csrf::may_act, events::security,
};

/// The most distinct permissions one check on a resource may name in its query.
const MAX_PERMISSIONS: usize = 16;

/// The forward-auth route, to nest under a path of the app's choosing (the quickstart serves
/// it at `/auth/check`). A reverse proxy asks it about each request it forwards; the request
/// is authenticated exactly as the [`AuthLayer`](crate::AuthLayer) authenticates any (the
/// session cookie, or a bearer token), and the answer is:
///
/// | answer | when | headers |
/// |---|---|---|
/// | `200` | a valid session with every permission asked for | `X-Auth-User-Id`, `X-Auth-Username`, `X-Auth-Permissions` (sorted, comma-separated), `X-Auth-Session-Id` (the public id) |
/// | `401` | no valid session | |
/// | `403` | a permission asked for is missing, or the original request fails the CSRF check | |
/// | `400` | a query key other than `permission` and `resource` (a misspelt one would otherwise be ignored), a query whose bytes are not UTF-8 once decoded, a `resource` that cannot name one, more than one `resource`, more than 16 distinct permissions in the query with a `resource`, or an `X-Auth-Require-Permission` that is not UTF-8 | |
/// | `503` | the database did not answer (never a `200`) | `Retry-After` |
///
/// Permissions are asked for with `?permission=reports:read` on the check URL (repeatable)
/// or an `X-Auth-Require-Permission` header. Every permission named anywhere is required. With
/// `&resource=project:42` the permissions named in the query are checked on that resource
/// ([`CurrentUser::can`]); those in headers are always checked on every resource, so that a
/// `resource` the client adds to a query the proxy passes on cannot narrow them.
///
/// The original request's method and URI come from `X-Forwarded-Method` / `X-Original-Method`
/// and `X-Forwarded-Uri` / `X-Original-URI`; an unsafe method (or none given) gets the same CSRF
/// check the layer applies to its own routes, on the browser's `Origin` and `Sec-Fetch-Site`,
/// which proxies pass on. So does a WebSocket handshake: `Sec-Fetch-Mode: websocket`, or
/// `Upgrade: websocket` where the proxy passes it on (nginx needs
/// `proxy_set_header Upgrade $http_upgrade` in the check's location). Username and permissions
/// are percent-encoded where they are not plain ASCII (or contain `,`, `%` or `+`: decode them as
/// a path, not as a form, which would read `+` as a space). With the
/// principal cache a check makes no database round trip; without it, one. The proxy must
/// overwrite every `X-Auth-*` header a client sends: the README's configurations for nginx,
/// Traefik and Caddy do.
///
/// ```
/// use axum::Router;
/// let app: Router = Router::new().nest("/auth", axum_live_auth::forward_auth_routes());
/// ```
pub fn forward_auth_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/check", get(check))
}

async fn check(auth: Auth, uri: Uri, headers: HeaderMap) -> Result<Response, AuthRejection> {
    // A query that does not parse may have asked for something: refused, never ignored. So
    // is one whose bytes are not UTF-8 once decoded, which the parser would read with U+FFFD
    // in their place: one answer for every id those bytes stand for.
    if !uri.query().is_none_or(decodes_as_utf8) {
        return Err(AuthRejection::BadRequest);
    }
    let Query(query) = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map_err(|_| AuthRejection::BadRequest)?;
    if query
        .iter()
        .any(|(key, _)| key != "permission" && key != "resource")
    {
        return Err(AuthRejection::BadRequest);
    }
    // Permissions the proxy names in headers, as UTF-8 (a header may carry any bytes).
    let in_headers = headers
        .get_all("x-auth-require-permission")
        .iter()
        .map(|v| std::str::from_utf8(v.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AuthRejection::BadRequest)?;
    let asked = |name: &'static str| {
        query
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let user = match auth.state() {
        AuthState::Authenticated(user) => user.clone(),
        AuthState::Unavailable => return Err(AuthRejection::Unavailable),
        _ => return Err(AuthRejection::Unauthenticated),
    };
    original_request_is_same_site(&auth, &headers)?;
    // One resource at most: a second one would otherwise go unchecked.
    let mut resources = asked("resource");
    let resource = match (
        resources.next().map(str::parse::<Resource>),
        resources.next(),
    ) {
        (Some(Ok(resource)), None) => Some(resource),
        (None, _) => None,
        _ => return Err(AuthRejection::BadRequest),
    };
    // The resource scopes the query's permissions only, never the proxy's own in headers: a
    // proxy may pass the client's query on (Caddy's `uri /auth/check` keeps it).
    // Each permission on a resource may cost a round trip: named twice, checked once; more
    // than a few distinct ones are refused, never looked up one after another.
    let mut permissions: Vec<&str> = asked("permission").collect();
    permissions.sort_unstable();
    permissions.dedup();
    if resource.is_some() && permissions.len() > MAX_PERMISSIONS {
        return Err(AuthRejection::BadRequest);
    }
    for permission in permissions {
        match &resource {
            Some(resource) => user.require_on(permission, resource).await?,
            None => user.require(permission)?,
        }
    }
    in_headers.into_iter().try_for_each(|p| user.require(p))?;
    Ok(identity(&user))
}

/// Whether every key and value of `query` is UTF-8 once percent-decoded.
fn decodes_as_utf8(query: &str) -> bool {
    query.split(['&', '=']).all(|part| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .is_ok()
    })
}

/// The CSRF check of the original request: needed unless every method the proxy names is safe
/// (and none names a WebSocket upgrade). The app's exempt paths name its own routes, not those
/// of the services behind the proxy, so they exempt nothing here. A bearer request needs none,
/// as on the layer's own routes.
fn original_request_is_same_site(auth: &Auth, headers: &HeaderMap) -> Result<(), AuthRejection> {
    let csrf = match &auth.shared().config.csrf {
        Some(csrf) if !auth.source().bearer() => csrf,
        _ => return Ok(()),
    };
    let values = |names: [&str; 2]| -> Vec<&str> {
        names
            .iter()
            .flat_map(|name| headers.get_all(*name).iter())
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    let methods = values(["x-forwarded-method", "x-original-method"]);
    // Without a method the request may be unsafe: check it.
    let applies = methods.is_empty()
        || methods.iter().any(|method| {
            let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::POST);
            may_act(&method, headers)
        });
    if !applies {
        return Ok(());
    }
    csrf.check(headers).map_err(|reason| {
        // Every path the headers name (a proxy sets one of the two, and the client may have
        // sent the other), read lossily: nginx passes a path's bytes as the client sent them.
        let uris = ["x-forwarded-uri", "x-original-uri"].into_iter();
        let paths: Vec<String> = (uris.flat_map(|name| headers.get_all(name).iter()))
            .map(|uri| String::from_utf8_lossy(uri.as_bytes()))
            .filter_map(|uri| uri.split(['?', '#']).next().map(str::to_owned))
            .collect();
        let path = if paths.is_empty() {
            "/".to_owned()
        } else {
            paths.join(", ")
        };
        security::csrf_rejected(auth.client(), reason, &path);
        AuthRejection::CrossSite
    })
}

/// `200` with the user's identity in headers.
fn identity(user: &CurrentUser) -> Response {
    let permissions = user
        .permissions()
        .iter()
        .map(|p| encode(p))
        .collect::<Vec<_>>()
        .join(",");
    let pairs = [
        ("x-auth-user-id", user.id().to_string()),
        ("x-auth-username", encode(user.username())),
        ("x-auth-permissions", permissions),
        ("x-auth-session-id", user.session_id().to_string()),
    ];
    let mut response = ().into_response();
    let headers = response.headers_mut();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Percent-encodes what is not plain visible ASCII, and `,`, `%` and `+`, so that a header value
/// is always valid, a comma always separates, and a decoder that reads `+` as a space (form
/// decoding: Java's `URLDecoder`, PHP's `urldecode`) cannot turn `John+Smith` into another
/// user's `John Smith`.
fn encode(text: &str) -> String {
    const ENCODED: &AsciiSet = &CONTROLS.add(b' ').add(b',').add(b'%').add(b'+');
    utf8_percent_encode(text, ENCODED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_always_valid_and_commas_always_separate() {
        assert_eq!(encode("reports:read"), "reports:read");
        assert_eq!(encode("Ålice"), "%C3%85lice");
        assert_eq!(encode("a,b c%"), "a%2Cb%20c%25");
        assert_eq!(encode("John+Smith"), "John%2BSmith");
    }
}
