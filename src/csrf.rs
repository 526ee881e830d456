//! Cross-site request forgery protection for cookie-authenticated requests, without tokens:
//! Fetch Metadata (`Sec-Fetch-Site`) first, the exact `Origin` as a fallback; and the rules for
//! the origins and URLs it and the recovery links name.

use std::collections::HashSet;

use http::{HeaderMap, Method, header};

use crate::ConfigError;

/// The CSRF policy of a layer.
#[derive(Debug, Clone)]
pub(crate) struct Csrf {
    origins: HashSet<String>,
    allow_without_headers: bool,
    exempt: HashSet<String>,
}

impl Csrf {
    pub(crate) fn new(
        origins: HashSet<String>,
        allow_without_headers: bool,
        exempt: HashSet<String>,
    ) -> Self {
        Self {
            origins,
            allow_without_headers,
            exempt,
        }
    }

    /// Whether the request must pass the check: an unsafe method or a WebSocket handshake, on a
    /// path not exempted.
    pub(crate) fn applies(&self, method: &Method, headers: &HeaderMap, path: &str) -> bool {
        may_act(method, headers) && !self.exempt.contains(path)
    }

    /// `Err(reason)` for a request a browser may have sent on another site's behalf.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        self.check_with(headers, self.allow_without_headers)
    }

    /// `Err(reason)` for a request a browser says came from another site; a request with
    /// neither header (not from a browser) passes. For routes a non-browser client must reach
    /// through an exempt path, that a cross-site page must not drive in a visitor's browser.
    pub(crate) fn check_browser(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        self.check_with(headers, true)
    }

    fn check_with(
        &self,
        headers: &HeaderMap,
        allow_without_headers: bool,
    ) -> Result<(), &'static str> {
        let mut fetch_site = headers.get_all("sec-fetch-site").iter();
        if let Some(site) = fetch_site.next() {
            if fetch_site.next().is_some() {
                return Err("duplicate Sec-Fetch-Site");
            }
            return match site.as_bytes() {
                b"same-origin" | b"none" => Ok(()),
                _ => Err("Sec-Fetch-Site is not same-origin"),
            };
        }
        let mut origin = headers.get_all(header::ORIGIN).iter();
        match (origin.next(), origin.next()) {
            (Some(origin), None) if origin.to_str().is_ok_and(|o| self.origins.contains(o)) => {
                Ok(())
            }
            (Some(_), None) => Err("Origin not allowed"),
            (Some(_), Some(_)) => Err("duplicate Origin"),
            (None, _) if allow_without_headers => Ok(()),
            (None, _) => Err("neither Sec-Fetch-Site nor Origin"),
        }
    }
}

/// Whether a request may act on the session's behalf: an unsafe method (anything but `GET`,
/// `HEAD`, `OPTIONS`) or a WebSocket handshake.
pub(crate) fn may_act(method: &Method, headers: &HeaderMap) -> bool {
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    !safe || is_websocket_upgrade(headers)
}

/// A WebSocket handshake: `Upgrade: websocket`, or `Sec-Fetch-Mode: websocket`, which browsers
/// send on the handshake and which, unlike `Upgrade` (hop-by-hop), a proxy passes on to a
/// forward-auth check.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let says_websocket = |name| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
    };
    says_websocket(header::UPGRADE)
        || says_websocket(http::HeaderName::from_static("sec-fetch-mode"))
}

/// Normalises a configured origin to what browsers send: `scheme://host[:port]`, lowercase,
/// without the scheme's default port, without a path.
pub(crate) fn normalize_origin(origin: &str) -> Result<String, ConfigError> {
    let invalid = || ConfigError::InvalidOrigin(origin.to_owned());
    let lower = origin.trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").ok_or_else(invalid)?;
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return Err(invalid()),
    };
    let host_ok = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
    };
    if rest.contains(['/', '?', '#', '@']) || !host_ok(rest) {
        return Err(invalid());
    }
    // An IPv6 host is bracketed; a port follows the last ':' outside the brackets.
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    match port {
        Some(p) if p.parse::<u16>().is_err() || host.is_empty() => Err(invalid()),
        Some(p) if p == default_port => Ok(format!("{scheme}://{host}")),
        _ => Ok(format!("{scheme}://{rest}")),
    }
}

/// Checks the URL the links sent to users start with (where the account routes are): an
/// origin as [`normalize_origin`] takes it, then a path without a query, fragment, backslash,
/// whitespace or control character. A browser reads `http://localhost:x@evil.example/` as a
/// link to `evil.example` and `http:/\evil.example/` as `http://evil.example/`, so no
/// looser form is taken. Plain `http://` only on this machine, unless `plain_http_anywhere`.
/// Returns it normalised, without a trailing `/`.
pub(crate) fn link_base(url: &str, plain_http_anywhere: bool) -> Result<String, ConfigError> {
    let invalid = || ConfigError::InvalidAccountUrl(url.to_owned());
    let base = url.trim_end_matches('/');
    let origin_ends = base
        .find("://")
        .map(|scheme| {
            base[scheme + 3..]
                .find('/')
                .map_or(base.len(), |p| scheme + 3 + p)
        })
        .ok_or_else(invalid)?;
    let (origin, path) = base.split_at(origin_ends);
    let origin = normalize_origin(origin).map_err(|_| invalid())?;
    let odd = |c: char| c.is_whitespace() || c.is_control() || "?#\\".contains(c);
    if path.contains(odd) {
        return Err(invalid());
    }
    if !plain_http_anywhere && plain_http_elsewhere(&origin) {
        return Err(ConfigError::PlainHttp(url.to_owned()));
    }
    Ok(format!("{origin}{path}"))
}

/// Whether `url` is `http://` on a host other than this machine's.
pub(crate) fn plain_http_elsewhere(url: &str) -> bool {
    let Some(rest) = url
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    }
    .to_ascii_lowercase();
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csrf(allow_without_headers: bool) -> Csrf {
        let origins = [normalize_origin("https://app.example.com").unwrap()].into();
        Csrf::new(
            origins,
            allow_without_headers,
            ["/webhooks/pay".to_owned()].into(),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        let c = csrf(false);
        assert!(
            c.check(&headers(&[("sec-fetch-site", "same-origin")]))
                .is_ok()
        );
        assert!(c.check(&headers(&[("sec-fetch-site", "none")])).is_ok());
        for bad in ["same-site", "cross-site", "garbage", ""] {
            let h = headers(&[
                ("sec-fetch-site", bad),
                ("origin", "https://app.example.com"),
            ]);
            assert!(c.check(&h).is_err(), "{bad}");
        }
    }

    #[test]
    fn origin_must_match_exactly() {
        let c = csrf(false);
        assert!(
            c.check(&headers(&[("origin", "https://app.example.com")]))
                .is_ok()
        );
        for bad in [
            "https://app.example.com.evil.example",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://evil.example",
            "null",
            "https://APP.example.com/",
        ] {
            assert!(c.check(&headers(&[("origin", bad)])).is_err(), "{bad}");
        }
        let two = headers(&[
            ("origin", "https://app.example.com"),
            ("origin", "https://x.y"),
        ]);
        assert!(c.check(&two).is_err());
    }

    #[test]
    fn no_header_at_all_is_refused_unless_allowed() {
        assert!(csrf(false).check(&HeaderMap::new()).is_err());
        assert!(csrf(true).check(&HeaderMap::new()).is_ok());
        // The switch does not weaken the checks on headers that are present.
        assert!(csrf(true).check(&headers(&[("origin", "null")])).is_err());
    }

    #[test]
    fn unsafe_methods_and_websocket_upgrades_are_checked_except_exempt_paths() {
        let c = csrf(false);
        let none = HeaderMap::new();
        let ws = headers(&[("upgrade", "websocket"), ("connection", "Upgrade")]);
        assert!(!c.applies(&Method::GET, &none, "/x"));
        assert!(!c.applies(&Method::HEAD, &none, "/x"));
        assert!(!c.applies(&Method::OPTIONS, &none, "/x"));
        assert!(c.applies(&Method::GET, &ws, "/ws"));
        let fetch_mode = headers(&[("sec-fetch-mode", "websocket")]);
        assert!(c.applies(&Method::GET, &fetch_mode, "/ws"));
        assert!(!c.applies(
            &Method::GET,
            &headers(&[("sec-fetch-mode", "navigate")]),
            "/x"
        ));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(c.applies(&m, &none, "/x"), "{m}");
        }
        assert!(!c.applies(&Method::POST, &none, "/webhooks/pay"));
        assert!(c.applies(&Method::POST, &none, "/webhooks/pay/"));
    }

    #[test]
    fn configured_origins_are_normalised_as_browsers_send_them() {
        let n = |s| normalize_origin(s).unwrap();
        assert_eq!(n("https://App.Example.com"), "https://app.example.com");
        assert_eq!(n("https://app.example.com:443"), "https://app.example.com");
        assert_eq!(n("http://localhost:3000/"), "http://localhost:3000");
        assert_eq!(n("http://[::1]:8080"), "http://[::1]:8080");
        for bad in [
            "app.example.com",
            "ftp://x",
            "https://a/b",
            "https://u@a",
            "https://a:x",
            "https://",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
    }
}
