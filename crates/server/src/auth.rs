//! Who is asking: credentials checked against the database, remembered
//! briefly, and throttled per address when they fail.
//!
//! Cargo sends its configured token verbatim in `Authorization`. Three shapes
//! are accepted: a raw token, `Bearer TOKEN`, and `Basic base64(user:secret)`,
//! where the secret is a token or a client's password. Tokens are looked up by
//! their sha256; passwords are checked with argon2, which is slow on purpose.
//! So a verified header is remembered (by its sha256) for a short while, and
//! index hits cost a hash and a map lookup, not a database round trip or an
//! argon2 run.
//!
//! Revocation must still take effect at once, including from `wharf clients
//! revoke` in another process: the database keeps a per-registry credentials
//! generation that every revoke, rotate and add moves, the server reads it at
//! most every [`GENERATION_RECHECK`] (a tenth of a second), and a remembered
//! header from an older generation is verified again. Reading it on every
//! request would cost a database round trip per index hit, which is what the
//! memory of verified headers is there to avoid; a tenth of a second is the
//! price, and the operator's command has not returned much sooner.
//!
//! Guessing is what the throttle is for, and only passwords can be guessed:
//! tokens are 256 random bits, so a token is checked whenever it has the
//! shape of one wharf issues (one indexed lookup by its sha256), and never
//! locks anybody out. A password attempt is counted against its (address,
//! user name) pair *before* argon2 runs, so parallel guesses cannot overtake
//! the count: a pair gets [`FAILURE_BURST`] attempts that fail, refilled at
//! [`FAILURES_PER_MINUTE`] a minute; past that the pair is locked out for
//! [`LOCKOUT`] and its passwords are not even looked at (429). Other users
//! from the same address, and tokens, are unaffected, so one broken CI job
//! behind an office NAT does not lock out the office. An address may have
//! [`PASSWORD_CHECKS_PER_ADDRESS`] password checks in flight; the process
//! runs a few at once (`wharf_db::max_password_checks_in_flight`), each in
//! memory allocated once, so a flood of guesses costs bounded memory.
//!
//! A refusal is remembered like a success: the same wrong header sent again
//! (a misconfigured job retrying) is refused from memory, without a lookup
//! and without counting as another guess.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use sha2::{Digest, Sha256};
use tracing::{info, warn};
use wharf_db::{ClientInfo, Db, MAX_USER_LEN, TOKEN_PREFIX, User};

use crate::{error::ApiError, metrics::Counter};

/// How often the credentials generation is read from the database.
const GENERATION_RECHECK: Duration = Duration::from_millis(100);

/// How many verified `Authorization` values are remembered at most.
const MAX_VERIFIED: usize = 100_000;

/// How long a verified `Authorization` value is remembered at most.
const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// Failed password attempts an (address, user name) pair may make in a row.
const FAILURE_BURST: f64 = 10.0;

/// How fast a pair earns failed attempts back.
const FAILURES_PER_MINUTE: f64 = 10.0;

/// How long a pair that used up its failures is refused.
const LOCKOUT: Duration = Duration::from_secs(60);

/// Password checks one address may have in flight; more are refused (429)
/// rather than queued, so one address cannot fill the process's few slots.
pub const PASSWORD_CHECKS_PER_ADDRESS: usize = 2;

/// Who a request is from, once its credentials are checked.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user (a token's holder) or client name.
    pub user: User,
    /// Whether this is a client made with `wharf clients add`, whose grants
    /// limit what it sees and whose downloads are counted.
    pub client: bool,
    /// Crate-name globs it may see; empty for every crate.
    pub grants: Vec<String>,
    /// Whether it may publish (hosted registries).
    pub publish: bool,
    /// When its credentials stop working.
    pub expires_at: Option<SystemTime>,
}

impl Principal {
    /// Whether crate `krate` exists for this principal.
    pub fn may_see(&self, krate: &str) -> bool {
        self.grants.is_empty()
            || self
                .grants
                .iter()
                .any(|g| wharf_config::glob::matches(g, krate))
    }

    fn of_client(client: ClientInfo) -> Self {
        Self {
            user: client.name,
            client: true,
            grants: client.grants,
            publish: client.publish,
            expires_at: client.expires_at,
        }
    }
}

/// Authentication counters, server-wide.
#[derive(Default)]
pub struct AuthMetrics {
    /// Credentials that did not verify.
    pub failures: Counter,
    /// Requests refused because their address was locked out.
    pub throttled: Counter,
    /// Addresses locked out.
    pub lockouts: Counter,
}

/// Failed password attempts per (address, user name), and password checks
/// in flight per address, for all registries of a server.
pub struct Throttle {
    pairs: moka::sync::Cache<(IpAddr, String), Arc<Mutex<Allowance>>>,
    in_flight: Mutex<HashMap<IpAddr, usize>>,
    /// Its counters.
    pub metrics: AuthMetrics,
}

struct Allowance {
    failures_left: f64,
    refilled: Instant,
    locked_until: Option<Instant>,
    refused: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            pairs: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            in_flight: Mutex::new(HashMap::new()),
            metrics: AuthMetrics::default(),
        }
    }
}

/// Why a password attempt may not be checked now.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The pair is locked out for this many more seconds.
    LockedOut(u64),
    /// The address already has its password checks in flight.
    InFlight,
}

/// A password attempt under way: it holds one of its address's in-flight
/// checks, and one of its pair's failures until [`Attempt::succeeded`]
/// gives that back.
struct Attempt<'a> {
    throttle: &'a Throttle,
    addr: IpAddr,
    allowance: Arc<Mutex<Allowance>>,
}

impl Attempt<'_> {
    /// The password was right: the failure counted in advance is returned.
    fn succeeded(self) {
        let mut allowance = self.allowance.lock().unwrap_or_else(|e| e.into_inner());
        allowance.failures_left = (allowance.failures_left + 1.0).min(FAILURE_BURST);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .throttle
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = in_flight.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.addr);
            }
        }
    }
}

impl Throttle {
    /// Starts a password attempt by `user` from `addr`, counting it as a
    /// failure until it succeeds; refused when the pair is locked out (or
    /// this attempt uses up its failures) or the address has too many
    /// checks in flight.
    fn begin(&self, addr: IpAddr, user: &str, registry: &str) -> Result<Attempt<'_>, Refused> {
        let allowance = self.pairs.get_with((addr, user.to_lowercase()), || {
            Arc::new(Mutex::new(Allowance {
                failures_left: FAILURE_BURST,
                refilled: Instant::now(),
                locked_until: None,
                refused: 0,
            }))
        });
        {
            let mut a = allowance.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if let Some(until) = a.locked_until {
                if now < until {
                    a.refused += 1;
                    self.metrics.throttled.inc();
                    return Err(Refused::LockedOut((until - now).as_secs().max(1)));
                }
                info!(client.addr = %addr, client.user = user, refused = a.refused, "lock-out over");
                a.locked_until = None;
                a.refused = 0;
                a.failures_left = FAILURE_BURST;
                a.refilled = now;
            }
            let earned = now.duration_since(a.refilled).as_secs_f64() * FAILURES_PER_MINUTE / 60.0;
            a.failures_left = (a.failures_left + earned).min(FAILURE_BURST);
            a.refilled = now;
            if a.failures_left < 1.0 {
                a.locked_until = Some(now + LOCKOUT);
                a.refused += 1;
                self.metrics.lockouts.inc();
                self.metrics.throttled.inc();
                warn!(
                    client.addr = %addr,
                    client.user = user,
                    registry,
                    burst = FAILURE_BURST,
                    per_minute = FAILURES_PER_MINUTE,
                    lockout_secs = LOCKOUT.as_secs(),
                    "too many failed logins: this user name is locked out from this address"
                );
                return Err(Refused::LockedOut(LOCKOUT.as_secs()));
            }
        }
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let n = in_flight.entry(addr).or_default();
            if *n >= PASSWORD_CHECKS_PER_ADDRESS {
                self.metrics.throttled.inc();
                return Err(Refused::InFlight);
            }
            *n += 1;
        }
        // Counted as failed now, so that attempts running in parallel see it.
        allowance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failures_left -= 1.0;
        Ok(Attempt {
            throttle: self,
            addr,
            allowance,
        })
    }

    /// (Address, user name) pairs locked out now.
    pub fn locked_addresses(&self) -> u64 {
        let now = Instant::now();
        self.pairs
            .iter()
            .filter(|(_, a)| {
                a.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .locked_until
                    .is_some_and(|until| until > now)
            })
            .count() as u64
    }
}

/// The credential check of one registry.
pub struct Gate {
    registry: String,
    login_url: String,
    /// How to get credentials, for the 401 message.
    hint: String,
    db: Db,
    /// Checked headers by their sha256: who (or why not), under which
    /// generation, when. A plain map under a read lock: a hit is the hot
    /// path of every request to an auth-required registry, and a handful of
    /// clients make few keys.
    verified: RwLock<HashMap<[u8; 32], Verified>>,
    generation: AtomicI64,
    /// When the generation was last read, in milliseconds since `started`
    /// (`u64::MAX`: never, or read again).
    generation_read_ms: AtomicU64,
    started: Instant,
    throttle: Arc<Throttle>,
}

struct Verified {
    /// Who it is, or the refusal it got.
    outcome: Result<Arc<Principal>, ApiError>,
    generation: i64,
    at: Instant,
}

impl Gate {
    /// The gate of registry `registry`, whose `cargo login` page is `login_url`.
    pub fn new(
        registry: &str,
        login_url: &str,
        hint: String,
        db: Db,
        throttle: Arc<Throttle>,
    ) -> Self {
        Self {
            registry: registry.to_owned(),
            login_url: login_url.to_owned(),
            hint,
            db,
            verified: RwLock::new(HashMap::new()),
            generation: AtomicI64::new(i64::MIN),
            generation_read_ms: AtomicU64::new(u64::MAX),
            started: Instant::now(),
            throttle,
        }
    }

    /// Who sent `authorization` (from `addr`); a 401 when there is nothing, a
    /// 403 when it does not verify, a 429 when its user name is locked out
    /// from `addr` (or `addr` has too many password checks in flight), a 503
    /// when the process has too many password checks waiting.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        addr: Option<IpAddr>,
    ) -> Result<Arc<Principal>, ApiError> {
        let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
            return Err(ApiError::unauthorized(self.hint.clone(), &self.login_url));
        };
        let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        let now = Instant::now();
        let generation = self.generation(now).await?;
        let remembered = self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|v| v.generation == generation && now.duration_since(v.at) < VERIFIED_TTL)
            .map(|v| v.outcome.clone());
        let principal = match remembered {
            Some(outcome) => outcome?,
            None => {
                let outcome = self.check(value, addr).await?;
                if let Err(refusal) = &outcome {
                    self.throttle.metrics.failures.inc();
                    info!(registry = %self.registry, client.addr = ?addr, reason = %refusal.detail, "authentication failed");
                }
                let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
                if verified.len() >= MAX_VERIFIED {
                    // Many distinct headers (a scan, or churn): start again
                    // rather than track recency on the hot path.
                    verified.clear();
                }
                verified.insert(
                    key,
                    Verified {
                        outcome: outcome.clone(),
                        generation,
                        at: now,
                    },
                );
                outcome?
            }
        };
        if let Some(expires_at) = principal.expires_at
            && expires_at <= SystemTime::now()
        {
            return Err(ApiError::forbidden(format!(
                "the credentials of client `{}` expired on {}; ask the operator of registry `{}` for new ones (`wharf clients rotate {}`)",
                principal.user,
                httpdate::fmt_http_date(expires_at),
                self.registry,
                principal.user
            )));
        }
        Ok(principal)
    }

    /// Checks a header not seen lately: `Ok(verdict)` to remember, or an
    /// error that says nothing about the credentials (throttled, busy, the
    /// database failed), which is not remembered.
    async fn check(
        &self,
        value: &str,
        addr: Option<IpAddr>,
    ) -> Result<Result<Arc<Principal>, ApiError>, ApiError> {
        let credential = Credential::parse(value);
        let attempt = match (&credential, addr) {
            (Credential::Password { user, .. }, Some(addr)) => {
                match self.throttle.begin(addr, user, &self.registry) {
                    Ok(attempt) => Some(attempt),
                    Err(Refused::LockedOut(wait_secs)) => {
                        return Err(ApiError::too_many_requests(
                            format!(
                                "too many failed logins as `{user}` from {addr}; try again in {wait_secs} s"
                            ),
                            wait_secs,
                        ));
                    }
                    Err(Refused::InFlight) => {
                        return Err(ApiError::too_many_requests(
                            format!(
                                "{addr} already has {PASSWORD_CHECKS_PER_ADDRESS} logins being checked; wait for them"
                            ),
                            1,
                        ));
                    }
                }
            }
            _ => None,
        };
        let verdict = self.verify(credential).await.map_err(|e| match e {
            wharf_db::DbError::Busy(detail) => ApiError::unavailable(detail, 5),
            e => ApiError::internal(e.to_string()),
        })?;
        if let (Ok(_), Some(attempt)) = (&verdict, attempt) {
            attempt.succeeded();
        }
        Ok(verdict.map(Arc::new))
    }

    /// Counts a download by client `client`, without making the response
    /// wait for the database; a failure is logged, not answered.
    pub fn count_download(&self, client: &User, krate: &str, vers: &str) {
        let db = self.db.clone();
        let (registry, client) = (self.registry.clone(), client.clone());
        let (krate, vers) = (krate.to_owned(), vers.to_owned());
        tokio::spawn(async move {
            if let Err(e) = db
                .clients(&registry)
                .record_download(&client, &krate, &vers, SystemTime::now())
                .await
            {
                warn!(registry, client = %client, krate.name = krate, krate.vers = vers, error = %e, "could not count a download");
            }
        });
    }

    /// The credentials generation, read from the database at most every
    /// [`GENERATION_RECHECK`].
    async fn generation(&self, now: Instant) -> Result<i64, ApiError> {
        let now_ms =
            u64::try_from(now.duration_since(self.started).as_millis()).unwrap_or(u64::MAX - 1);
        let read_ms = self.generation_read_ms.load(Ordering::Acquire);
        let stale = read_ms == u64::MAX
            || now_ms.saturating_sub(read_ms) >= GENERATION_RECHECK.as_millis() as u64;
        // One request claims the read; the others use the value there is
        // (all of them wait for it only before the first read).
        let claimed = stale
            && self
                .generation_read_ms
                .compare_exchange(read_ms, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if claimed || self.generation.load(Ordering::Acquire) == i64::MIN {
            match self.db.auth_generation(&self.registry).await {
                Ok(generation) => self.generation.store(generation, Ordering::Release),
                Err(e) => {
                    self.generation_read_ms.store(u64::MAX, Ordering::Release);
                    return Err(ApiError::internal(e.to_string()));
                }
            }
        }
        Ok(self.generation.load(Ordering::Acquire))
    }

    /// Checks `credential` against the database: the principal, or the
    /// refusal to answer.
    async fn verify(
        &self,
        credential: Credential,
    ) -> Result<Result<Principal, ApiError>, wharf_db::DbError> {
        let client = match &credential {
            Credential::Token(secret) => {
                if let Some(user) = self.db.tokens(&self.registry).authenticate(secret).await? {
                    return Ok(Ok(Principal {
                        user,
                        client: false,
                        grants: Vec::new(),
                        publish: true,
                        expires_at: None,
                    }));
                }
                self.db
                    .clients(&self.registry)
                    .authenticate_token(secret)
                    .await?
            }
            Credential::Password { user, password } => {
                self.db
                    .clients(&self.registry)
                    .authenticate_password(user, password)
                    .await?
            }
            Credential::Malformed => None,
        };
        Ok(match client {
            Some(client) if client.revoked => Err(ApiError::forbidden(format!(
                "the credentials of client `{}` were revoked; ask the operator of registry `{}` for new ones",
                client.name, self.registry
            ))),
            Some(client) => Ok(Principal::of_client(client)),
            None => Err(ApiError::forbidden(match credential {
                Credential::Password { .. } => format!(
                    "wrong user name or password for registry `{}`; check the token cargo sends (`cargo login --registry {}`)",
                    self.registry, self.registry
                ),
                _ => format!(
                    "the token is not valid for registry `{}` (revoked, or never issued); {}",
                    self.registry, self.hint
                ),
            })),
        })
    }
}

/// What an `Authorization` value holds.
#[derive(Debug, PartialEq, Eq)]
enum Credential {
    /// A token: raw, `Bearer`, or the password of `Basic`.
    Token(String),
    /// A client's user name and password, from `Basic`.
    Password { user: String, password: String },
    /// Nothing wharf could have issued.
    Malformed,
}

impl Credential {
    fn parse(value: &str) -> Self {
        use base64::Engine;
        let (scheme, rest) = value.split_once(' ').unwrap_or(("", value));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Self::token(rest.trim());
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Self::token(value);
        }
        let Some((user, password)) = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| {
                text.split_once(':')
                    .map(|(u, p)| (u.to_owned(), p.to_owned()))
            })
        else {
            return Self::Malformed;
        };
        if password.starts_with(TOKEN_PREFIX) {
            Self::token(&password)
        } else if user.is_empty() || password.is_empty() || user.len() > MAX_USER_LEN {
            Self::Malformed
        } else {
            Self::Password { user, password }
        }
    }
}

impl Credential {
    /// A token if `value` has the shape of the ones wharf issues (its prefix
    /// and 64 hex digits), so that anything else costs no lookup.
    fn token(value: &str) -> Self {
        match value.strip_prefix(TOKEN_PREFIX) {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Self::Token(value.to_owned())
            }
            _ => Self::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn credentials_raw_bearer_and_basic() {
        let token = format!("wharf_{}", "ab".repeat(32));
        assert_eq!(Credential::parse(&token), Credential::Token(token.clone()));
        assert_eq!(
            Credential::parse(&format!("Bearer {token}")),
            Credential::Token(token.clone())
        );
        assert_eq!(
            Credential::parse(&basic(&format!("alice:{token}"))),
            Credential::Token(token.clone())
        );
        assert_eq!(
            Credential::parse(&basic("acme:hunter2")),
            Credential::Password {
                user: "acme".into(),
                password: "hunter2".into()
            }
        );
        assert_eq!(Credential::parse("Basic !!!"), Credential::Malformed);
    }

    #[test]
    fn what_is_not_shaped_like_a_token_costs_no_lookup() {
        for value in [
            "wharf_abc".to_owned(),
            format!("wharf_{}", "zz".repeat(32)),
            format!("wharf_{}", "ab".repeat(33)),
            "Bearer secret".to_owned(),
            basic("alice:wharf_abc"),
            basic(&format!("{}:hunter2", "a".repeat(MAX_USER_LEN + 1))),
        ] {
            assert_eq!(Credential::parse(&value), Credential::Malformed, "{value}");
        }
    }

    #[test]
    fn parallel_attempts_are_counted_before_they_are_checked() {
        let throttle = Throttle::default();
        let addr: IpAddr = "127.0.0.9".parse().unwrap();
        // Every attempt holds its failure while it runs, so the burst is
        // used up by attempts still under way, not only by finished ones.
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..64 {
            match throttle.begin(addr, "acme", "r") {
                Ok(attempt) => held.push(attempt),
                Err(_) => refused += 1,
            }
        }
        assert_eq!(held.len(), PASSWORD_CHECKS_PER_ADDRESS);
        assert_eq!(refused, 64 - PASSWORD_CHECKS_PER_ADDRESS);
        drop(held);
        let mut started = PASSWORD_CHECKS_PER_ADDRESS;
        while throttle.begin(addr, "acme", "r").is_ok() {
            started += 1;
        }
        assert_eq!(started, FAILURE_BURST as usize);
        assert!(matches!(
            throttle.begin(addr, "acme", "r"),
            Err(Refused::LockedOut(_))
        ));
        assert_eq!(throttle.metrics.lockouts.get(), 1);
        assert_eq!(throttle.locked_addresses(), 1);
    }

    #[test]
    fn a_lockout_holds_one_user_name_from_one_address() {
        let throttle = Throttle::default();
        let addr: IpAddr = "127.0.0.9".parse().unwrap();
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        while throttle.begin(addr, "mallory", "r").is_ok() {}
        assert!(throttle.begin(addr, "Mallory", "r").is_err());
        throttle
            .begin(addr, "alice", "r")
            .expect("another user, same address")
            .succeeded();
        throttle
            .begin(other, "mallory", "r")
            .expect("same user, another address")
            .succeeded();
    }

    #[test]
    fn a_right_password_gives_its_failure_back() {
        let throttle = Throttle::default();
        let addr: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..100 {
            throttle
                .begin(addr, "alice", "r")
                .expect("never locked out")
                .succeeded();
        }
    }
}
