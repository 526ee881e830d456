//! Reading a session token from `Authorization: Bearer`, strictly.

use http::{HeaderMap, header};

use crate::{
    SessionToken,
    cookie::{Invalid, Presented},
};

/// The token of an `Authorization: Bearer <token>` header. Another scheme (say `Basic`) is
/// not this crate's business and reads as no token; a malformed bearer token or several
/// `Authorization` headers are invalid. Decided without any I/O.
pub(crate) fn read(headers: &HeaderMap) -> Presented {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Presented::None;
    };
    if values.next().is_some() {
        return Presented::Invalid(Invalid::Duplicate);
    }
    let bytes = value.as_bytes();
    let Some((scheme, token)) = bytes.split_at_checked(7) else {
        return Presented::None;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return Presented::None;
    }
    match SessionToken::parse(token) {
        Some(token) => Presented::Token(token),
        None => Presented::Invalid(Invalid::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_value(values: &[&str]) -> Presented {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        read(&map)
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
}
