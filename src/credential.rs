//! The request's credential: the session cookie (read strictly, across every `Cookie` field),
//! the `Authorization: Bearer` header when enabled, and which one wins; and the `Set-Cookie`
//! values that set and clear the cookie. Everything here is decided without any I/O.

use http::{HeaderMap, HeaderValue, header};
use tower_cookies::cookie::{Cookie, time::Duration as CookieDuration};

use crate::{AuthRejection, SessionToken, config::CookieConfig};

/// Cookie headers larger than this (all `Cookie` fields together) are not searched: the request
/// is anonymous. Browsers keep at most 4 KiB per cookie; 16 KiB leaves room for an app's own.
pub const MAX_COOKIE_HEADER_BYTES: usize = 16 * 1024;

/// The cookie the response should carry, decided during the request.
#[derive(Debug)]
pub(crate) enum CookieChange {
    Keep,
    Set(SessionToken),
    Clear,
}

/// Where the request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Cookie,
    Bearer,
    /// The same token in both: a new token goes back in both, and a logout clears the cookie.
    Both,
}

impl Source {
    /// Whether the request carried the token in a bearer header, which a cross-site page
    /// cannot add.
    pub(crate) fn bearer(self) -> bool {
        self != Self::Cookie
    }

    /// Whether the request carried the token in the cookie, which the answer then keeps up.
    pub(crate) fn cookie(self) -> bool {
        self != Self::Bearer
    }
}

/// The request's credential: what it presented, and where.
#[derive(Debug)]
pub(crate) struct Credential {
    pub(crate) presented: Presented,
    pub(crate) source: Source,
}

/// The request's token from the cookie or, when `bearer` is on, the bearer header. Both present
/// and not the same token is refused ([`AuthRejection::ConflictingCredentials`]), never
/// resolved to one of them.
pub(crate) fn read(
    headers: &HeaderMap,
    cookie_name: &str,
    bearer: bool,
) -> Result<Credential, AuthRejection> {
    let from_bearer = if bearer {
        read_bearer(headers)
    } else {
        Presented::None
    };
    let (presented, source) = match (read_cookie(headers, cookie_name), from_bearer) {
        (cookie, Presented::None) => (cookie, Source::Cookie),
        (Presented::None, bearer) => (bearer, Source::Bearer),
        (Presented::Token(a), Presented::Token(b)) if a.to_string() == b.to_string() => {
            (Presented::Token(b), Source::Both)
        }
        _ => return Err(AuthRejection::ConflictingCredentials),
    };
    Ok(Credential { presented, source })
}

/// What a request presented as its session token.
#[derive(Debug)]
pub(crate) enum Presented {
    /// No session cookie.
    None,
    /// One session cookie holding a well-formed token.
    Token(SessionToken),
    /// Something that cannot be a valid session: reason for the logs.
    Invalid(Invalid),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// One session cookie whose value is not a well-formed token.
    Malformed,
    /// The session cookie name appears more than once (possible cookie tossing).
    Duplicate,
    /// The cookie headers are too large to search.
    Oversized,
}

impl Invalid {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Duplicate => "duplicate_cookie",
            Self::Oversized => "oversized_cookie_header",
        }
    }
}

/// Finds the session cookie in every `Cookie` header field (HTTP/2 splits them), byte by byte so
/// that non-UTF-8 in other cookies does not matter.
fn read_cookie(headers: &HeaderMap, name: &str) -> Presented {
    let fields = headers.get_all(header::COOKIE);
    let total: usize = fields.iter().map(|v| v.as_bytes().len()).sum();
    if total > MAX_COOKIE_HEADER_BYTES {
        return Presented::Invalid(Invalid::Oversized);
    }
    let mut found: Option<&[u8]> = None;
    for pair in fields
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
    {
        let pair = pair.trim_ascii();
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()),
            None => (pair, &b""[..]),
        };
        if key != name.as_bytes() {
            continue;
        }
        if found.is_some() {
            return Presented::Invalid(Invalid::Duplicate);
        }
        found = Some(value);
    }
    match found.map(SessionToken::parse) {
        None => Presented::None,
        Some(Some(token)) => Presented::Token(token),
        Some(None) => Presented::Invalid(Invalid::Malformed),
    }
}

/// The token of an `Authorization: Bearer <token>` header. Another scheme (say `Basic`) is
/// not this crate's business and reads as no token; a malformed bearer token or several
/// `Authorization` headers are invalid.
fn read_bearer(headers: &HeaderMap) -> Presented {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Presented::None;
    };
    if values.next().is_some() {
        return Presented::Invalid(Invalid::Duplicate);
    }
    let token = match value.as_bytes().split_at_checked(7) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => token,
        _ => return Presented::None,
    };
    match SessionToken::parse(token) {
        Some(token) => Presented::Token(token),
        None => Presented::Invalid(Invalid::Malformed),
    }
}

/// `Set-Cookie` for a new session: `<name>=<token>; HttpOnly; SameSite=…; Secure; Path=/`.
/// No `Max-Age`: the cookie ends with the browser session, and the server enforces both
/// deadlines whatever the browser keeps.
pub(crate) fn set_cookie(config: &CookieConfig, token: &SessionToken) -> Option<HeaderValue> {
    header_value(base(config, token.to_string()))
}

/// `Set-Cookie` that deletes the session cookie. It repeats the name, `Path`, `Domain` and `Secure`
/// of the cookie it deletes: browsers ignore a deletion of a `__Host-` cookie without them.
pub(crate) fn clear_cookie(config: &CookieConfig) -> Option<HeaderValue> {
    let mut cookie = base(config, String::new());
    cookie.set_max_age(CookieDuration::ZERO);
    cookie.set_expires(tower_cookies::cookie::time::OffsetDateTime::UNIX_EPOCH);
    header_value(cookie)
}

fn base(config: &CookieConfig, value: String) -> Cookie<'static> {
    let mut cookie = Cookie::build((config.name.clone(), value))
        .path("/")
        .http_only(true)
        .secure(config.secure)
        .same_site(config.same_site)
        .build();
    if let Some(domain) = &config.domain {
        cookie.set_domain(domain.clone());
    }
    cookie
}

fn header_value(cookie: Cookie<'_>) -> Option<HeaderValue> {
    // Names and domains were validated by the builder and tokens are base64url, so this holds;
    // a failure would drop the header rather than panic. Not percent-encoded: a name is read
    // back as configured, and some characters a name may have (`|`, `^`, `#`) would be encoded.
    HeaderValue::try_from(cookie.to_string())
        .ok()
        .map(sensitive)
}

/// `value` marked sensitive, so that logging middleware (tower-http's `Trace`) prints
/// `Sensitive` instead of the token, and HTTP/2 never indexes it.
pub(crate) fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// Marks every header of the request that may carry a token (`Cookie`, `Authorization`) as
/// sensitive, for the layers and handlers inside this one.
pub(crate) fn hide_tokens(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if name == header::COOKIE || name == header::AUTHORIZATION {
            value.set_sensitive(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use tower_cookies::cookie::SameSite;

    use super::*;

    const NAME: &str = "__Host-sid";

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    fn token() -> String {
        SessionToken::generate().unwrap().to_string()
    }

    #[test]
    fn finds_the_cookie_among_others_and_across_fields() {
        let t = token();
        let one = format!("a=1; {NAME}={t}; b=2");
        assert!(matches!(
            read_cookie(&headers(&[one.as_bytes()]), NAME),
            Presented::Token(_)
        ));
        let second = format!("{NAME}={t}");
        let split = headers(&[b"a=1", second.as_bytes()]);
        assert!(matches!(read_cookie(&split, NAME), Presented::Token(_)));
        let non_utf8 = [b"x=\xff\xfe; ".as_slice(), second.as_bytes()].concat();
        assert!(matches!(
            read_cookie(&headers(&[&non_utf8]), NAME),
            Presented::Token(_)
        ));
    }

    #[test]
    fn absent_cookie_is_none() {
        assert!(matches!(
            read_cookie(&HeaderMap::new(), NAME),
            Presented::None
        ));
        assert!(matches!(
            read_cookie(&headers(&[b"sid=1; __host-sid=2"]), NAME),
            Presented::None
        ));
    }

    #[test]
    fn duplicates_are_invalid_whatever_their_values() {
        let (a, b) = (token(), token());
        let same_field = format!("{NAME}={a}; {NAME}={b}");
        let dup = |h: HeaderMap| {
            matches!(
                read_cookie(&h, NAME),
                Presented::Invalid(Invalid::Duplicate)
            )
        };
        assert!(dup(headers(&[same_field.as_bytes()])));
        let (fa, fb) = (format!("{NAME}={a}"), format!("{NAME}={a}"));
        assert!(dup(headers(&[fa.as_bytes(), fb.as_bytes()])));
        assert!(dup(headers(&[format!("{NAME}=; {NAME}={b}").as_bytes()])));
    }

    #[test]
    fn malformed_values_are_invalid() {
        let t = token();
        for value in [
            String::new(),
            "x".into(),
            format!("\"{t}\""),
            t[..65].to_string(),
            t.replace('.', "-"),
            "' OR 1=1 --".into(),
        ] {
            let h = headers(&[format!("{NAME}={value}").as_bytes()]);
            assert!(
                matches!(
                    read_cookie(&h, NAME),
                    Presented::Invalid(Invalid::Malformed)
                ),
                "{value:?}"
            );
        }
        let h = headers(&[NAME.as_bytes()]);
        assert!(matches!(
            read_cookie(&h, NAME),
            Presented::Invalid(Invalid::Malformed)
        ));
    }

    #[test]
    fn oversized_headers_are_invalid_before_searching() {
        let t = token();
        let big = format!("{NAME}={t}; pad={}", "x".repeat(MAX_COOKIE_HEADER_BYTES));
        assert!(matches!(
            read_cookie(&headers(&[big.as_bytes()]), NAME),
            Presented::Invalid(Invalid::Oversized)
        ));
    }

    #[test]
    fn any_cookie_header_is_read_without_panicking() {
        let t = token();
        let near = format!("a=1; {NAME}={t}; b=2");
        let mut cases = crate::token::tests::Bytes::new(0x00c0_0c1e);
        let mut found = 0;
        for _ in 0..100_000 {
            let bytes = cases.case(near.as_bytes());
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                continue; // not a header value hyper would ever hand over
            };
            let mut map = HeaderMap::new();
            map.append(header::COOKIE, value);
            if let Presented::Token(token) = read_cookie(&map, NAME) {
                // A token is only ever one that stands, whole, in the header.
                let text = token.to_string();
                assert!(bytes.windows(text.len()).any(|w| w == text.as_bytes()));
                found += 1;
            }
        }
        assert!(
            found > 0,
            "the generator never kept a valid cookie: it tests too little"
        );
    }

    #[test]
    fn set_and_clear_carry_the_same_attributes() {
        let config = CookieConfig {
            name: NAME.into(),
            domain: None,
            secure: true,
            same_site: SameSite::Lax,
        };
        let t = SessionToken::generate().unwrap();
        let set = set_cookie(&config, &t).unwrap();
        let set = set.to_str().unwrap();
        assert_eq!(
            set,
            format!("{NAME}={t}; HttpOnly; SameSite=Lax; Secure; Path=/")
        );
        let clear = clear_cookie(&config).unwrap();
        let clear = clear.to_str().unwrap();
        assert!(clear.starts_with(&format!("{NAME}=; HttpOnly; SameSite=Lax; Secure; Path=/")));
        assert!(clear.contains("Max-Age=0"));

        // With a Domain, the clearing cookie names it too: a browser keeps a cookie set for a
        // domain when told to clear the host-only one.
        let config = CookieConfig {
            name: "__Secure-sid".into(),
            domain: Some("example.com".into()),
            ..config
        };
        let set = set_cookie(&config, &t).unwrap();
        assert!(
            set.to_str().unwrap().contains("; Domain=example.com"),
            "{set:?}"
        );
        let clear = clear_cookie(&config).unwrap();
        assert!(
            clear.to_str().unwrap().contains("; Domain=example.com"),
            "{clear:?}"
        );
    }

    fn read_value(values: &[&str]) -> Presented {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        read_bearer(&map)
    }

    #[test]
    fn reads_a_bearer_token_strictly() {
        let t = SessionToken::generate().unwrap().to_string();
        assert!(matches!(
            read_value(&[&format!("Bearer {t}")]),
            Presented::Token(_)
        ));
        assert!(matches!(
            read_value(&[&format!("bearer {t}")]),
            Presented::Token(_)
        ));
        assert!(matches!(read_value(&[]), Presented::None));
        assert!(matches!(
            read_value(&["Basic dXNlcjpwYXNz"]),
            Presented::None
        ));
        for bad in [
            format!("Bearer  {t}"),
            format!("Bearer {t} "),
            "Bearer x".into(),
            "Bearer ".into(),
        ] {
            assert!(
                matches!(read_value(&[&bad]), Presented::Invalid(Invalid::Malformed)),
                "{bad:?}"
            );
        }
        let dup = format!("Bearer {t}");
        assert!(matches!(
            read_value(&[&dup, &dup]),
            Presented::Invalid(Invalid::Duplicate)
        ));
    }

    #[test]
    fn a_cookie_and_a_bearer_token_must_agree() {
        let t = SessionToken::generate().unwrap().to_string();
        let mut h = headers(&[format!("{NAME}={t}").as_bytes()]);
        h.append(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        let same = read(&h, NAME, true).unwrap();
        assert_eq!(same.source, Source::Both);
        let other = SessionToken::generate().unwrap().to_string();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {other}").parse().unwrap(),
        );
        assert_eq!(
            read(&h, NAME, true).unwrap_err(),
            AuthRejection::ConflictingCredentials
        );
        // With bearer tokens off, the header is not this crate's business.
        assert_eq!(read(&h, NAME, false).unwrap().source, Source::Cookie);
    }
}
