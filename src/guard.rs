//! A route-level permission guard, for `Router::route_layer`.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::response::{IntoResponse, Response};
use http::Request;
use tower::{Layer, Service};

use crate::extract::check_permission;

/// Requires `permission` for every route the returned layer wraps: `401` when anonymous (or
/// the login redirect for a browser page), `403` without the permission, `503` when the
/// database is unavailable; the handler runs only for a user with the permission.
///
/// Apply it with `route_layer`, under the [`AuthLayer`](crate::AuthLayer):
///
/// ```
/// use axum::{Router, routing::get};
/// use axum_live_auth::require_permission;
///
/// let admin: Router = Router::new()
///     .route("/admin", get(|| async { "admin area" }))
///     .route_layer(require_permission("admin"));
/// ```
pub fn require_permission(permission: impl Into<Arc<str>>) -> RequirePermissionLayer {
    RequirePermissionLayer {
        permission: permission.into(),
    }
}

/// Layer of [`require_permission`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RequirePermissionLayer {
    permission: Arc<str>,
}

impl<S> Layer<S> for RequirePermissionLayer {
    type Service = RequirePermission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePermission {
            inner,
            permission: Arc::clone(&self.permission),
        }
    }
}

/// Service of [`require_permission`].
#[derive(Debug, Clone)]
pub struct RequirePermission<S> {
    inner: S,
    permission: Arc<str>,
}

impl<S, B> Service<Request<B>> for RequirePermission<S>
where
    S: Service<Request<B>, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        if let Err(rejection) = check_permission(&parts, &self.permission) {
            return Box::pin(async move { Ok(rejection.into_response()) });
        }
        Box::pin(self.inner.call(Request::from_parts(parts, body)))
    }
}
