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
//! Failed attempts are counted per client address: an address gets
//! [`FAILURE_BURST`] failures, refilled at [`FAILURES_PER_MINUTE`] a minute;
//! past that it is locked out for [`LOCKOUT`] and its credentials are not even
//! looked at (429). Another address, with the right credentials, is unaffected.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use sha2::{Digest, Sha256};
use tracing::{info, warn};
use wharf_db::{ClientInfo, Db, TOKEN_PREFIX, User};

use crate::{error::ApiError, metrics::Counter};

/// How often the credentials generation is read from the database.
const GENERATION_RECHECK: Duration = Duration::from_millis(100);

/// How many verified `Authorization` values are remembered at most.
const MAX_VERIFIED: usize = 100_000;

/// How long a verified `Authorization` value is remembered at most.
const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// Failed attempts an address may make in a row.
const FAILURE_BURST: f64 = 10.0;

/// How fast an address earns failed attempts back.
const FAILURES_PER_MINUTE: f64 = 10.0;

/// How long an address that used up its failures is refused.
const LOCKOUT: Duration = Duration::from_secs(60);

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

/// Failed attempts per client address, for all registries of a server.
pub struct Throttle {
    addresses: moka::sync::Cache<IpAddr, Arc<Mutex<Allowance>>>,
    /// Whether any attempt ever failed: until then there is nothing to look up.
    any_failed: AtomicBool,
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
            addresses: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            any_failed: AtomicBool::new(false),
            metrics: AuthMetrics::default(),
        }
    }
}

impl Throttle {
    /// The seconds an address must still wait, if it is locked out.
    fn locked(&self, addr: IpAddr) -> Option<u64> {
        if !self.any_failed.load(Ordering::Relaxed) {
            return None;
        }
        let allowance = self.addresses.get(&addr)?;
        let mut allowance = allowance.lock().unwrap_or_else(|e| e.into_inner());
        let until = allowance.locked_until?;
        let now = Instant::now();
        if now >= until {
            info!(client.addr = %addr, refused = allowance.refused, "lock-out over");
            allowance.locked_until = None;
            allowance.refused = 0;
            allowance.failures_left = FAILURE_BURST;
            allowance.refilled = now;
            return None;
        }
        allowance.refused += 1;
        self.metrics.throttled.inc();
        Some((until - now).as_secs().max(1))
    }

    /// Counts a failed attempt; locks the address out when it has none left.
    fn failed(&self, addr: IpAddr, registry: &str) {
        self.metrics.failures.inc();
        self.any_failed.store(true, Ordering::Relaxed);
        let allowance = self.addresses.get_with(addr, || {
            Arc::new(Mutex::new(Allowance {
                failures_left: FAILURE_BURST,
                refilled: Instant::now(),
                locked_until: None,
                refused: 0,
            }))
        });
        let mut allowance = allowance.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned =
            now.duration_since(allowance.refilled).as_secs_f64() * FAILURES_PER_MINUTE / 60.0;
        allowance.failures_left = (allowance.failures_left + earned).min(FAILURE_BURST) - 1.0;
        allowance.refilled = now;
        if allowance.failures_left < 0.0 {
            allowance.locked_until = Some(now + LOCKOUT);
            self.metrics.lockouts.inc();
            warn!(
                client.addr = %addr,
                registry,
                burst = FAILURE_BURST,
                per_minute = FAILURES_PER_MINUTE,
                lockout_secs = LOCKOUT.as_secs(),
                "too many failed logins: address locked out"
            );
        }
    }

    /// Addresses locked out now.
    pub fn locked_addresses(&self) -> u64 {
        let now = Instant::now();
        self.addresses
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
    /// Verified headers by their sha256: who, under which generation, when.
    /// A plain map under a read lock: a hit is the hot path of every request
    /// to an auth-required registry, and a handful of clients make few keys.
    verified: RwLock<HashMap<[u8; 32], Verified>>,
    generation: AtomicI64,
    /// When the generation was last read, in milliseconds since `started`
    /// (`u64::MAX`: never, or read again).
    generation_read_ms: AtomicU64,
    started: Instant,
    throttle: Arc<Throttle>,
}

struct Verified {
    principal: Arc<Principal>,
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
    /// 403 when it does not verify, a 429 when `addr` is locked out.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        addr: Option<IpAddr>,
    ) -> Result<Arc<Principal>, ApiError> {
        let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
            return Err(ApiError::unauthorized(self.hint.clone(), &self.login_url));
        };
        if let Some(addr) = addr
            && let Some(wait_secs) = self.throttle.locked(addr)
        {
            return Err(ApiError::too_many_requests(
                format!("too many failed logins from {addr}; try again in {wait_secs} s"),
                wait_secs,
            ));
        }
        let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        let now = Instant::now();
        let generation = self.generation(now).await?;
        let remembered = self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|v| v.generation == generation && now.duration_since(v.at) < VERIFIED_TTL)
            .map(|v| v.principal.clone());
        let principal = match remembered {
            Some(principal) => principal,
            None => {
                let principal = match self.verify(value).await {
                    Ok(principal) => Arc::new(principal),
                    Err(refusal) => {
                        if let Some(addr) = addr {
                            self.throttle.failed(addr, &self.registry);
                        }
                        info!(registry = %self.registry, client.addr = ?addr, reason = %refusal.detail, "authentication failed");
                        return Err(refusal);
                    }
                };
                let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
                if verified.len() >= MAX_VERIFIED {
                    // Many distinct headers (a scan, or churn): start again
                    // rather than track recency on the hot path.
                    verified.clear();
                }
                verified.insert(
                    key,
                    Verified {
                        principal: principal.clone(),
                        generation,
                        at: now,
                    },
                );
                principal
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

    /// Checks `value` against the database.
    async fn verify(&self, value: &str) -> Result<Principal, ApiError> {
        let internal = |e: wharf_db::DbError| ApiError::internal(e.to_string());
        let credential = Credential::parse(value);
        let client = match &credential {
            Credential::Token(secret) => {
                if let Some(user) = self
                    .db
                    .tokens(&self.registry)
                    .authenticate(secret)
                    .await
                    .map_err(internal)?
                {
                    return Ok(Principal {
                        user,
                        client: false,
                        grants: Vec::new(),
                        publish: true,
                        expires_at: None,
                    });
                }
                self.db
                    .clients(&self.registry)
                    .authenticate_token(secret)
                    .await
                    .map_err(internal)?
            }
            Credential::Password { user, password } => self
                .db
                .clients(&self.registry)
                .authenticate_password(user, password)
                .await
                .map_err(internal)?,
            Credential::Malformed => None,
        };
        match client {
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
        }
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
            return Self::Token(rest.trim().to_owned());
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Self::Token(value.to_owned());
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
            Self::Token(password)
        } else if user.is_empty() || password.is_empty() {
            Self::Malformed
        } else {
            Self::Password { user, password }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_raw_bearer_and_basic() {
        assert_eq!(
            Credential::parse("wharf_abc"),
            Credential::Token("wharf_abc".into())
        );
        assert_eq!(
            Credential::parse("Bearer wharf_abc"),
            Credential::Token("wharf_abc".into())
        );
        // base64("alice:wharf_abc")
        assert_eq!(
            Credential::parse("Basic YWxpY2U6d2hhcmZfYWJj"),
            Credential::Token("wharf_abc".into())
        );
        // base64("acme:hunter2")
        assert_eq!(
            Credential::parse("Basic YWNtZTpodW50ZXIy"),
            Credential::Password {
                user: "acme".into(),
                password: "hunter2".into()
            }
        );
        assert_eq!(Credential::parse("Basic !!!"), Credential::Malformed);
    }

    #[test]
    fn an_address_is_locked_out_after_its_burst() {
        let throttle = Throttle::default();
        let addr: IpAddr = "127.0.0.9".parse().unwrap();
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        for _ in 0..FAILURE_BURST as usize {
            assert_eq!(throttle.locked(addr), None);
            throttle.failed(addr, "r");
        }
        assert_eq!(throttle.locked(addr), None);
        throttle.failed(addr, "r");
        assert!(throttle.locked(addr).is_some());
        assert_eq!(throttle.locked(other), None);
        assert_eq!(throttle.metrics.lockouts.get(), 1);
        assert_eq!(throttle.locked_addresses(), 1);
    }
}
