//! Session tokens: generation, strict parsing and hashing.
//!
//! A token is `<public id>.<secret>`: 16 random bytes and 32 random bytes from the operating
//! system's random source, each encoded as base64url without padding (22 + 1 + 43 = 66
//! characters). The token means nothing by itself: no user id, role or expiry is in it. The
//! database keeps only the public id and SHA-256 of the secret.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{TryRng as _, rngs::SysRng};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::{Error, error::InfrastructureError};

const ID_BYTES: usize = 16;
const SECRET_BYTES: usize = 32;
const ID_CHARS: usize = 22;
const SECRET_CHARS: usize = 43;
/// Length of an encoded token: `<22 chars>.<43 chars>`.
pub(crate) const TOKEN_CHARS: usize = ID_CHARS + 1 + SECRET_CHARS;

/// The public id of a session: the part of its token before the dot.
///
/// It names a session in listings, logs and routes. It is not a credential: knowing it does not
/// let anyone use the session.
///
/// ```
/// use axum_live_auth::SessionId;
///
/// let id = SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA").expect("22 base64url characters");
/// assert_eq!(id.as_str(), "AAAAAAAAAAAAAAAAAAAAAA");
/// assert!(SessionId::parse("not an id").is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// Parses a public session id: exactly 22 base64url characters encoding 16 bytes.
    pub fn parse(s: &str) -> Option<Self> {
        decode_exact::<ID_BYTES>(s.as_bytes(), ID_CHARS).map(|_| Self(s.to_owned()))
    }

    /// The id as text, as stored in `auth_sessions.id`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a session secret, as stored in `auth_sessions.secret_hash`.
///
/// Deliberately not `PartialEq`: the only comparison is [`SecretHash::matches`], which runs in
/// constant time.
#[derive(Clone)]
pub(crate) struct SecretHash([u8; 32]);

impl SecretHash {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time comparison with a hash read from the database.
    pub(crate) fn matches(&self, stored: &[u8]) -> bool {
        // `ct_eq` on slices of different lengths is false without looking at the contents.
        bool::from(self.0.as_slice().ct_eq(stored))
    }
}

/// A session token as presented by a client or issued at login.
///
/// `Debug` shows the public id only; the secret is never printed.
///
/// ```
/// use axum_live_auth::SessionToken;
///
/// let token = SessionToken::generate()?;
/// let text = token.to_string();
/// assert_eq!(text.len(), 66);
/// let parsed = SessionToken::parse(text.as_bytes()).expect("well-formed");
/// assert_eq!(parsed.id(), token.id());
/// assert!(!format!("{token:?}").contains(&text[23..]));
/// # Ok::<_, axum_live_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct SessionToken {
    id: SessionId,
    secret: [u8; SECRET_BYTES],
}

impl SessionToken {
    /// Generates a new token from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`Error::Infrastructure`] when the operating system cannot supply random bytes.
    pub fn generate() -> Result<Self, Error> {
        Ok(Self {
            id: SessionId(URL_SAFE_NO_PAD.encode(random_bytes::<ID_BYTES>()?)),
            secret: random_bytes()?,
        })
    }

    /// Parses a token strictly: exactly 66 bytes, `<22 base64url>.<43 base64url>`, canonical
    /// encoding (no padding, no stray bits). Anything else is `None`.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != TOKEN_CHARS || bytes[ID_CHARS] != b'.' {
            return None;
        }
        let (id, rest) = bytes.split_at(ID_CHARS);
        let id = SessionId::parse(std::str::from_utf8(id).ok()?)?;
        let secret = decode_exact::<SECRET_BYTES>(&rest[1..], SECRET_CHARS)?;
        Some(Self { id, secret })
    }

    /// The public id of the session this token names.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    pub(crate) fn secret_hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.secret).into())
    }
}

impl fmt::Display for SessionToken {
    /// The token as the client presents it: in the session cookie, or as a bearer token (the
    /// token routes' answer, the `X-Session-Token` header). Never logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, URL_SAFE_NO_PAD.encode(self.secret))
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionToken")
            .field("id", &self.id.0)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `N` bytes from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(InfrastructureError::Random)?;
    Ok(bytes)
}

/// Decodes exactly `chars` base64url characters into exactly `N` bytes. The base64 engine
/// rejects padding, characters outside the alphabet and non-zero trailing bits, so every
/// accepted string has exactly one byte value and every byte value exactly one string.
fn decode_exact<const N: usize>(input: &[u8], chars: usize) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let exact = input.len() == chars
        && URL_SAFE_NO_PAD
            .decode_slice(input, &mut out)
            .is_ok_and(|n| n == N);
    exact.then_some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_tokens_have_the_documented_shape_and_do_not_repeat() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let text = SessionToken::generate().unwrap().to_string();
            assert_eq!(text.len(), TOKEN_CHARS);
            let (id, secret) = text.split_once('.').unwrap();
            assert_eq!(id.len(), ID_CHARS);
            assert_eq!(URL_SAFE_NO_PAD.decode(secret).unwrap().len(), SECRET_BYTES);
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            );
            assert!(seen.insert(text));
        }
    }

    #[test]
    fn parse_round_trips() {
        let token = SessionToken::generate().unwrap();
        let parsed = SessionToken::parse(token.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.id(), token.id());
        assert!(parsed.secret_hash().matches(token.secret_hash().as_bytes()));
    }

    #[test]
    fn parse_rejects_anything_but_the_exact_shape() {
        let good = SessionToken::generate().unwrap().to_string();
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            good.as_bytes()[..65].to_vec(),
            format!("{good}A").into_bytes(),
            good.replace('.', "A").into_bytes(),
            format!("{}={}", &good[..22], &good[23..]).into_bytes(),
            format!("{}+{}", &good[..21], &good[22..]).into_bytes(),
            format!("{}/{}", &good[..30], &good[31..]).into_bytes(),
            format!("{}={}", &good[..65], "").into_bytes(),
            [&good.as_bytes()[..10], &[0xff], &good.as_bytes()[11..]].concat(),
            [&good.as_bytes()[..10], &[0], &good.as_bytes()[11..]].concat(),
            b"' OR 1=1 --".to_vec(),
        ];
        for case in cases {
            assert!(SessionToken::parse(&case).is_none(), "accepted {case:?}");
        }
    }

    #[test]
    fn parse_rejects_non_canonical_trailing_bits() {
        // 'B' after 21 'A's sets a bit that 16 bytes cannot hold.
        let secret = URL_SAFE_NO_PAD.encode([0u8; 32]);
        let text = format!("{}B.{secret}", "A".repeat(21));
        assert!(SessionToken::parse(text.as_bytes()).is_none());
        let text = format!("{}A.{secret}", "A".repeat(21));
        assert!(SessionToken::parse(text.as_bytes()).is_some());
    }

    /// A small deterministic generator (xorshift64), so that a failing case can be replayed.
    pub(crate) struct Bytes(u64);

    impl Bytes {
        pub(crate) fn new(seed: u64) -> Self {
            Self(seed | 1)
        }

        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }

        /// Random bytes, a mutation of `near`, or a string over the token alphabet.
        pub(crate) fn case(&mut self, near: &[u8]) -> Vec<u8> {
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/";
            match self.below(3) {
                0 => (0..self.below(100)).map(|_| self.next() as u8).collect(),
                1 => {
                    let mut bytes = near.to_vec();
                    for _ in 0..=self.below(3) {
                        let at = self.below(bytes.len() + 1);
                        match self.below(3) {
                            0 if at < bytes.len() => bytes[at] = self.next() as u8,
                            1 => bytes.insert(at, ALPHABET[self.below(ALPHABET.len())]),
                            _ if at < bytes.len() => {
                                bytes.remove(at);
                            }
                            _ => {}
                        }
                    }
                    bytes
                }
                _ => (0..60 + self.below(12))
                    .map(|_| ALPHABET[self.below(ALPHABET.len())])
                    .collect(),
            }
        }
    }

    #[test]
    fn any_bytes_are_a_canonical_token_or_nothing() {
        let good = SessionToken::generate().unwrap().to_string().into_bytes();
        let mut cases = Bytes::new(0x005e_ed0f_70c3);
        let mut accepted = 0;
        for _ in 0..200_000 {
            let bytes = cases.case(&good);
            if let Some(token) = SessionToken::parse(&bytes) {
                // Whatever parses is exactly what it encodes back to: one token, one text.
                assert_eq!(token.to_string().as_bytes(), &bytes[..]);
                accepted += 1;
            }
        }
        assert!(
            accepted > 0,
            "the generator never hit a valid token: it tests too little"
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = SessionToken::generate().unwrap();
        let text = token.to_string();
        let secret = &text[23..];
        let debug = format!("{token:?} {token:#?}");
        assert!(!debug.contains(secret));
        assert!(debug.contains(token.id().as_str()));
    }

    #[test]
    fn hash_comparison_needs_the_exact_hash() {
        let token = SessionToken::generate().unwrap();
        let hash = token.secret_hash();
        let mut other = *hash.as_bytes().first_chunk::<32>().unwrap();
        assert!(hash.matches(&other));
        other[31] ^= 1;
        assert!(!hash.matches(&other));
        assert!(!hash.matches(&other[..31]));
        assert!(!hash.matches(&[]));
    }
}
