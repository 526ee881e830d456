//! Password hashing with Argon2id (RustCrypto `argon2`, its default parameters: 19 MiB, two
//! passes, one lane, as recommended by OWASP). Hashing runs on tokio's blocking pool.

use std::sync::OnceLock;

use argon2::{
    Argon2,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};

use crate::Error;

/// The longest password accepted, in bytes. Longer input is refused before any hashing, so a
/// huge password cannot make the server hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The shortest password [`Accounts::create_user`](crate::Accounts::create_user) and
/// [`Accounts::set_password`](crate::Accounts::set_password) accept, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;

/// Checks a new password's length: [`MIN_PASSWORD_BYTES`] to [`MAX_PASSWORD_BYTES`].
pub(crate) fn validate_new(password: &str) -> Result<(), Error> {
    if (MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&password.len()) {
        Ok(())
    } else {
        Err(Error::InvalidPassword)
    }
}

/// Hashes a new password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub(crate) async fn hash(password: &str) -> Result<String, Error> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let hash: PasswordHash = Argon2::default()
            .hash_password(password.as_bytes())
            .map_err(Error::PasswordHash)?;
        Ok(hash.to_string())
    })
    .await?
}

/// Verifies `password` against `stored`. A missing hash, or one that does not parse (written by
/// hand, say), is checked against a dummy hash and fails, so that an unknown user costs the same
/// time as a wrong password.
pub(crate) async fn verify(password: &str, stored: Option<String>) -> Result<bool, Error> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || match stored.as_deref().map(PasswordHash::new) {
        Some(Ok(hash)) => Ok(matches(&password, &hash)),
        _ => {
            let dummy =
                PasswordHash::new(dummy_hash()?).map_err(|e| Error::PasswordHash(e.into()))?;
            std::hint::black_box(matches(&password, &dummy));
            Ok(false)
        }
    })
    .await?
}

fn matches(password: &str, hash: &PasswordHash) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A hash of a random password with the same parameters as real hashes, made once.
fn dummy_hash() -> Result<&'static str, Error> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let mut random = [0u8; 32];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut random).map_err(Error::Random)?;
    let hash: PasswordHash = Argon2::default()
        .hash_password(&random)
        .map_err(Error::PasswordHash)?;
    Ok(DUMMY.get_or_init(|| hash.to_string()))
}
