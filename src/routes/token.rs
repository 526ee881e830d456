//! `POST /token`: a bearer token for a username and password.

use axum::{
    Form, Json, Router,
    extract::{FromRequest, Request},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::{Deserialize, Serialize};

use crate::{Auth, AuthRejection, events::security};

/// The token route, for clients that cannot keep cookies (with
/// [`bearer_tokens`](crate::AuthLayerBuilder::bearer_tokens) on):
///
/// `POST /token` with the JSON body `{"username": "…", "password": "…"}` (or the same fields
/// as a form) answers `200` with `{"token": "…", "session_id": "…"}`: send the token as
/// `Authorization: Bearer <token>`. A wrong password is `401` with
/// `{"error":"invalid_credentials"}`, a throttled attempt `429` with `Retry-After`, and the
/// route is `404` while bearer tokens are off. The response is `Cache-Control: no-store`.
///
/// A client without `Origin` headers (a mobile app, curl) can use it when the path is
/// exempted with [`csrf_exempt`](crate::AuthLayerBuilder::csrf_exempt), as the quickstart does.
/// Exempt or not, the route answers `403` to a request a browser marks as sent from another
/// site (`Sec-Fetch-Site` other than `same-origin` or `none`, or an `Origin` not allowed)
/// before it counts an attempt or checks a password: a page elsewhere must not spend the
/// visitor's login attempts.
///
/// ```
/// use axum::Router;
/// let app: Router = Router::new().nest("/auth", axum_live_auth::token_routes());
/// ```
pub fn token_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/token", post(issue_token))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct IssuedToken {
    token: String,
    session_id: String,
}

/// The credentials as JSON or as a form, whichever the request's content type says.
async fn credentials(request: Request) -> Result<Credentials, Response> {
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        Json::from_request(request, &())
            .await
            .map(|Json(c)| c)
            .map_err(IntoResponse::into_response)
    } else {
        Form::from_request(request, &())
            .await
            .map(|Form(c)| c)
            .map_err(IntoResponse::into_response)
    }
}

async fn issue_token(auth: Auth, request: Request) -> Result<Response, Response> {
    if !auth.shared().config.bearer {
        return Err(AuthRejection::NotFound.into_response());
    }
    // Cross-site refused even where exempt from the layer's check: a page elsewhere could
    // otherwise spend the visitor's address on failed logins (its throttle) and password hashes.
    if let Some(csrf) = &auth.shared().config.csrf
        && let Err(reason) = csrf.check_browser(request.headers())
    {
        security::csrf_rejected(auth.client(), reason, request.uri().path());
        return Err(AuthRejection::CrossSite.into_response());
    }
    let credentials = credentials(request).await?;
    let token = auth
        .issue_token(&credentials.username, &credentials.password)
        .await
        .map_err(IntoResponse::into_response)?
        .ok_or_else(|| {
            AuthRejection::InvalidCredentials(StatusCode::UNAUTHORIZED).into_response()
        })?;
    let body = IssuedToken {
        session_id: token.id().to_string(),
        token: token.to_string(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}
