//! Password hashing with Argon2id (RustCrypto `argon2`, its default parameters: 19 MiB, two
//! passes, one lane, as recommended by OWASP), bounded: at most a fixed number of hashes run at
//! once on tokio's blocking pool, a short queue waits for them, and anything beyond the queue is
//! refused at once ([`Error::Busy`]) instead of piling up 19 MiB per request.
//!
//! One client address gets a share of that: past a quarter of the places (running and waiting),
//! its hashes run only when a place is free at once, never waiting in the queue, so that one
//! address looping logins with a password it knows keeps nobody else out.
//!
//! Each running hash works in one of a fixed set of memory buffers, allocated once and reused:
//! the hashes' memory is `running × 19 MiB` for the life of the process, however many logins
//! come, instead of allocations that the allocator keeps per thread after a burst.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroize;

use crate::{Error, error::InfrastructureError, token::random_bytes};

/// The longest password accepted, in bytes. Longer input is refused before any hashing, so a
/// huge password cannot make the server hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The shortest new password accepted, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;

/// Checks a new password's length: [`MIN_PASSWORD_BYTES`] to [`MAX_PASSWORD_BYTES`].
pub(crate) fn validate_new(password: &str) -> Result<(), Error> {
    if (MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&password.len()) {
        Ok(())
    } else {
        Err(Error::InvalidPassword)
    }
}

/// Runs password hashes, at most `running` at once with at most `queue` more admitted (waiting,
/// or on their way to the hash: a login's account is counted in between).
pub(crate) struct Hasher {
    /// Held by each running hash until its blocking work ends, also when the request that
    /// asked for it is cancelled meanwhile.
    permits: Arc<Semaphore>,
    /// Running and queue together: the most hashes admitted and not finished.
    places: usize,
    admitted: Arc<AtomicUsize>,
    /// Hashes of one client address, running or waiting, past which it may not wait.
    share: usize,
    by_address: ByAddress,
    /// Argon2 working memory, one buffer per hash that may run at once.
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl std::fmt::Debug for Hasher {
    /// The bounds only: the working memory is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("free", &self.permits.available_permits())
            .field("places", &self.places)
            .field("admitted", &self.admitted)
            .field("share", &self.share)
            .finish_non_exhaustive()
    }
}

impl Default for Hasher {
    /// As many at once as the machine has CPUs, and four times as many waiting.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        Self::new(cpus, cpus * 4)
    }
}

impl Hasher {
    pub(crate) fn new(running: usize, queue: usize) -> Self {
        let running = running.max(1);
        Self {
            permits: Arc::new(Semaphore::new(running)),
            places: running.saturating_add(queue),
            admitted: Arc::default(),
            share: (running.saturating_add(queue) / 4).max(1),
            by_address: Arc::default(),
            buffers: Arc::default(),
        }
    }

    /// Admits a hash for a client at address `from` (`None`: the app's own call, not counted
    /// per address): refused at once when every place (running and queue) is taken, or when
    /// the address has its share and no hash can run at once (it then holds that running
    /// place). A login is admitted after its address's attempt is reserved and before its
    /// account's, so that a refusal for load writes nothing for the account; a running place
    /// is taken only when the hash is about to run, so none sits idle meanwhile.
    pub(crate) fn admit(&self, from: Option<IpAddr>) -> Result<Admission, Error> {
        let (share, before) = Share::join(&self.by_address, from);
        let place = Place::take(&self.admitted, self.places)?;
        let permit = (before >= self.share)
            .then(|| Arc::clone(&self.permits).try_acquire_owned())
            .transpose()
            .map_err(|_| busy())?;
        Ok(Admission {
            share,
            place,
            permit,
        })
    }

    /// Admits a hash only if it can run at once (a running place is free): for work that may
    /// as well wait for a quieter moment, such as renewing an outdated hash.
    pub(crate) fn admit_now(&self, from: Option<IpAddr>) -> Result<Admission, Error> {
        let (share, _) = Share::join(&self.by_address, from);
        let place = Place::take(&self.admitted, self.places)?;
        let permit = Arc::clone(&self.permits).try_acquire_owned();
        Ok(Admission {
            share,
            place,
            permit: Some(permit.map_err(|_| busy())?),
        })
    }

    /// Hashes a new password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`), for a
    /// client at address `from` (see [`admit`](Self::admit)).
    pub(crate) async fn hash(&self, password: &str, from: Option<IpAddr>) -> Result<String, Error> {
        self.hash_admitted(password, self.admit(from)?).await
    }

    /// [`hash`](Self::hash), once `admission` is granted.
    pub(crate) async fn hash_admitted(
        &self,
        password: &str,
        admission: Admission,
    ) -> Result<String, Error> {
        let password = password.to_owned();
        let salt = random_bytes::<16>()?;
        self.run(admission, move |memory| {
            let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
            argon2id()
                .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory)
                .map_err(phc_error)?;
            phc_string(&salt, &out)
        })
        .await
    }

    /// Verifies `password` against `stored`. A missing hash, or one this hasher cannot check
    /// (written by hand, another algorithm's, Argon2 asking for more than
    /// [`MAX_IMPORTED_MEMORY_KIB`] or [`MAX_IMPORTED_PASSES`]), is checked against a dummy hash
    /// and fails, so that an unknown user costs the same time as a wrong password.
    pub(crate) async fn verify(
        &self,
        password: &str,
        stored: Option<String>,
        admission: Admission,
    ) -> Result<bool, Error> {
        let password = password.to_owned();
        self.run(admission, move |memory| {
            if let Some(Ok(hash)) = stored.as_deref().map(PasswordHash::new)
                && let Some(matched) = matches(&password, &hash, memory)
            {
                return Ok(matched);
            }
            let dummy = PasswordHash::new(DUMMY_HASH).map_err(phc_error)?;
            std::hint::black_box(matches(&password, &dummy, memory));
            Ok(false)
        })
        .await
    }

    /// Runs `work` on the blocking pool once a running place is the admission's: at once if it
    /// holds one, else after a wait in the queue (in order).
    async fn run<T: Send + 'static>(
        &self,
        Admission {
            share,
            place,
            permit,
        }: Admission,
        work: impl FnOnce(&mut [Block]) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let permit = match permit {
            Some(permit) => permit,
            None => Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| busy())?,
        };
        let buffers = Arc::clone(&self.buffers);
        // The permit goes with the work: a request cancelled while its hash runs (the client
        // went away) does not free a place for another hash before this one ends.
        tokio::task::spawn_blocking(move || {
            // A permit holder always finds a buffer (or makes the one it is owed).
            let taken = buffers.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let mut memory =
                taken.unwrap_or_else(|| vec![Block::default(); Params::DEFAULT.block_count()]);
            let done = work(&mut memory);
            // Nothing of the password stays in memory between hashes.
            memory.fill(Block::new());
            buffers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(memory);
            drop(permit);
            drop(place);
            drop(share);
            done
        })
        .await?
    }
}

/// One of the hasher's places (running or queue), given back when dropped: when the hash ends,
/// or when the request is cancelled before.
#[derive(Debug)]
struct Place(Arc<AtomicUsize>);

impl Place {
    fn take(admitted: &Arc<AtomicUsize>, places: usize) -> Result<Self, Error> {
        admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < places).then_some(n + 1)
            })
            .map(|_| Self(Arc::clone(admitted)))
            .map_err(|_| busy())
    }
}

/// A refused hash: the client is told to retry in a second.
fn busy() -> Error {
    Error::Busy {
        retry_after: Duration::from_secs(1),
    }
}

/// A hash [admitted](Hasher::admit): counted for its address, holding its place, and its
/// running place at once if the address is past its share.
#[derive(Debug)]
pub(crate) struct Admission {
    share: Share,
    place: Place,
    permit: Option<OwnedSemaphorePermit>,
}

/// A hash of one client address, counted until dropped: with the work, when it runs, so that a
/// cancelled request's hash counts until it ends.
#[derive(Debug)]
struct Share(Option<(ByAddress, IpAddr)>);

/// How many hashes of each client address are running or waiting.
type ByAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

impl Share {
    /// Counts a hash of `from`; also says how many of its hashes were running or waiting.
    fn join(by_address: &ByAddress, from: Option<IpAddr>) -> (Self, usize) {
        let Some(address) = from else {
            return (Self(None), 0);
        };
        let mut counts = by_address.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(address).or_default();
        *count += 1;
        (Self(Some((Arc::clone(by_address), address))), *count - 1)
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Some((by_address, address)) = &self.0 {
            let mut counts = by_address.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = counts.get_mut(address) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(address);
                }
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether `stored` is an Argon2id hash with the crate's parameters; any other hash that
/// verifies is stored again with them at the next login.
pub(crate) fn is_current(stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        let params = Params::try_from(&hash);
        hash.algorithm == Algorithm::Argon2id.ident()
            && hash.version == Some(Version::V0x13.into())
            && params.is_ok_and(|p| {
                (p.m_cost(), p.t_cost(), p.p_cost())
                    == (
                        Params::DEFAULT.m_cost(),
                        Params::DEFAULT.t_cost(),
                        Params::DEFAULT.p_cost(),
                    )
            })
            && hash
                .hash
                .is_some_and(|out| out.len() == Params::DEFAULT_OUTPUT_LEN)
    })
}

/// Argon2id with the crate's parameters.
fn argon2id() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

/// The PHC string of `out`, the [`argon2id`] hash of a password with `salt`.
fn phc_string(salt: &[u8], out: &[u8]) -> Result<String, Error> {
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&Params::DEFAULT).map_err(phc_error)?,
        salt: Some(Salt::new(salt).map_err(phc_error)?),
        hash: Some(Output::new(out).map_err(phc_error)?),
    };
    Ok(hash.to_string())
}

fn phc_error(error: impl Into<argon2::password_hash::Error>) -> Error {
    InfrastructureError::PasswordHash(error.into()).into()
}

/// The most memory (256 MiB) and passes an imported Argon2 hash may ask for: each check of it
/// allocates that much and holds a place at the hasher that long, and any client can ask for
/// one by trying the account's name.
const MAX_IMPORTED_MEMORY_KIB: u32 = 256 * 1024;
const MAX_IMPORTED_PASSES: u32 = 64;

/// Whether `password` hashes to `hash`, computed in `memory` (or, for a hash made with larger
/// parameters than the crate's, in memory of its own); compared in constant time. `None` for a
/// hash this cannot check.
fn matches(password: &str, hash: &PasswordHash, memory: &mut [Block]) -> Option<bool> {
    let algorithm = Algorithm::try_from(hash.algorithm.as_str()).ok()?;
    let version = match hash.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(hash)
        .ok()
        .filter(|p| p.m_cost() <= MAX_IMPORTED_MEMORY_KIB && p.t_cost() <= MAX_IMPORTED_PASSES)?;
    let (salt, expected) = (hash.salt.as_ref()?, hash.hash.as_ref()?);
    let mut own = Vec::new();
    let memory = if params.block_count() <= memory.len() {
        &mut memory[..params.block_count()]
    } else {
        own = vec![Block::default(); params.block_count()];
        &mut own[..]
    };
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        &mut out,
        memory,
    );
    // Volatile writes: `own` is freed next, and a plain fill of it may be left out.
    own.iter_mut().for_each(Zeroize::zeroize);
    hashed.ok()?;
    Some(out.ct_eq(expected.as_bytes()).into())
}

/// What a missing hash, or one that cannot be checked, is checked against: the crate's
/// parameters, so that it costs what a real check costs, from the first one on. Whatever it
/// matches, the check fails.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$\
                          AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_standard_phc_strings() {
        let hasher = Hasher::new(1, 1);
        let hash = hasher.hash("correct horse", None).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let hasher = &hasher;
        let verify = |password: &'static str, stored: Option<String>| {
            let admission = hasher.admit(None).unwrap();
            async move { hasher.verify(password, stored, admission).await.unwrap() }
        };
        assert!(verify("correct horse", Some(hash.clone())).await);
        assert!(!verify("wrong horse", Some(hash.clone())).await);
        assert!(!verify("x", None).await);
        assert!(!verify("x", Some("not a hash".into())).await);
        // Hashes made by the argon2 crate itself (as earlier versions of this crate did) verify.
        use argon2::password_hash::PasswordHasher as _;
        let theirs = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        assert!(verify("correct horse", Some(theirs)).await);
    }

    /// The crate's own hashes, and the argon2 crate's defaults (which earlier versions wrote),
    /// are current; weaker or other parameters, another algorithm or version are not.
    #[tokio::test]
    async fn only_the_crates_parameters_are_current() {
        let ours = Hasher::new(1, 1).hash("correct horse", None).await.unwrap();
        assert!(is_current(&ours));
        use argon2::password_hash::PasswordHasher as _;
        let theirs = Argon2::default().hash_password(b"correct horse").unwrap();
        assert!(is_current(&theirs.to_string()));
        let salt_and_hash = ours.rsplitn(3, '$').take(2).collect::<Vec<_>>();
        let (hash, salt) = (salt_and_hash[0], salt_and_hash[1]);
        for head in [
            "$argon2id$v=19$m=1024,t=1,p=1",
            "$argon2id$v=19$m=19456,t=3,p=1",
            "$argon2i$v=19$m=19456,t=2,p=1",
            "$argon2id$v=16$m=19456,t=2,p=1",
        ] {
            assert!(!is_current(&format!("{head}${salt}${hash}")), "{head}");
        }
        assert!(!is_current("not a hash"));
    }

    /// A renewal is admitted only when a hash can run at once: never to wait in the queue.
    #[test]
    fn admit_now_takes_a_free_running_place_or_none() {
        let hasher = Hasher::new(1, 4);
        let running = hasher.admit_now(None).unwrap();
        assert!(
            hasher.admit_now(None).is_err(),
            "the one running place is taken"
        );
        assert!(
            hasher.admit(None).is_ok(),
            "a login may still wait in the queue"
        );
        drop(running);
        assert!(hasher.admit_now(None).is_ok());
    }

    /// A stored hash this hasher cannot check (another algorithm's, or Argon2 asking for 4 GiB)
    /// costs what a missing one does: a dummy hash, not an instant `false` that tells the
    /// account exists, and never an allocation of what the hash asks for.
    #[tokio::test]
    async fn a_hash_that_cannot_be_checked_costs_a_dummy_hash() {
        let hasher = Hasher::new(1, 1);
        let time = |stored: Option<&str>| {
            let stored = stored.map(str::to_owned);
            let hasher = &hasher;
            async move {
                let mut fastest = Duration::MAX;
                for _ in 0..3 {
                    let started = std::time::Instant::now();
                    let admission = hasher.admit(None).unwrap();
                    let ok = hasher.verify("x", stored.clone(), admission).await.unwrap();
                    assert!(!ok);
                    fastest = fastest.min(started.elapsed());
                }
                fastest
            }
        };
        let missing = time(None).await;
        for stored in [
            "$scrypt$ln=16,r=8,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2id$v=19$m=8,t=100000,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let unusable = time(Some(stored)).await;
            assert!(
                unusable * 2 > missing,
                "{stored}: {unusable:?}, missing: {missing:?}"
            );
            let hash = PasswordHash::new(stored).unwrap();
            assert_eq!(matches("x", &hash, &mut []), None, "not checked: {stored}");
        }
    }

    /// The hasher's `Debug` (reached from `Accounts` and `AuthLayer`, which an app may log)
    /// shows its bounds, never the working memory; and no hash leaves anything of its password
    /// there. (Before: tens of megabytes of the last hashes' memory.)
    #[tokio::test]
    async fn no_password_stays_in_the_working_memory_or_its_debug() {
        let hasher = Hasher::new(1, 1);
        let hash = hasher.hash("correct horse", None).await.unwrap();
        let admission = hasher.admit(None).unwrap();
        assert!(
            hasher
                .verify("correct horse", Some(hash), admission)
                .await
                .unwrap()
        );
        let shown = format!("{hasher:?}");
        assert!(shown.len() < 200, "{} bytes", shown.len());
        let zero = format!("{:?}", Block::new());
        let buffers = hasher.buffers.lock().unwrap();
        assert_eq!(buffers.len(), 1);
        assert!(buffers[0].iter().all(|block| format!("{block:?}") == zero));
    }

    /// The dummy costs what a real check costs: the crate's parameters, parsed without a hash
    /// made at the first use (which cost the first unknown name of a process two hashes).
    #[test]
    fn the_dummy_hash_has_the_crates_parameters() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let made = phc_string(&[1; 16], &[2; Params::DEFAULT_OUTPUT_LEN]).unwrap();
        let made = PasswordHash::new(&made).unwrap();
        assert_eq!(
            Params::try_from(&dummy).unwrap(),
            Params::try_from(&made).unwrap()
        );
        assert_eq!(
            (dummy.algorithm, dummy.version),
            (made.algorithm, made.version)
        );
        assert_eq!(dummy.salt.unwrap().len(), made.salt.unwrap().len());
    }

    #[test]
    fn new_passwords() {
        assert!(validate_new("12345678").is_ok());
        assert!(validate_new("1234567").is_err());
        assert!(validate_new(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    /// A request given up while its hash runs keeps its place until the hash ends: cancelled
    /// requests cannot start more hashes (or buffers) than the bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_request_holds_its_place_until_its_hash_ends() {
        let hasher = Arc::new(Hasher::new(1, 4));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let work = |running: Arc<AtomicUsize>, most: Arc<AtomicUsize>| {
            move |_: &mut [Block]| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        };
        for _ in 0..3 {
            let given_up = tokio::time::timeout(
                Duration::from_millis(20),
                hasher.run(
                    hasher.admit(None).unwrap(),
                    work(running.clone(), most.clone()),
                ),
            )
            .await;
            assert!(given_up.is_err(), "the request was cancelled mid-hash");
        }
        hasher
            .run(
                hasher.admit(None).unwrap(),
                work(running.clone(), most.clone()),
            )
            .await
            .unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 1, "one at a time");
        let buffers = hasher.buffers.lock().unwrap().len();
        assert_eq!(buffers, 1, "one buffer for one hash at a time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_the_bound_run_and_the_queue_overflow_is_refused() {
        let hasher = Arc::new(Hasher::new(1, 2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (hasher, running, most) = (hasher.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    hasher
                        .run(hasher.admit(None)?, move |_| {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50));
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        let mut busy = 0;
        for task in tasks {
            if let Err(Error::Busy { .. }) = task.await.unwrap() {
                busy += 1;
            }
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "one at a time");
        assert_eq!(busy, 7, "one running, two queued, the rest refused");
        assert_eq!(hasher.admitted.load(Ordering::SeqCst), 0);
    }
}
