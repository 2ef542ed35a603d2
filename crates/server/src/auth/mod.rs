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
        Arc, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use sha2::{Digest, Sha256};
use tracing::info;
use wharf_db::{ClientInfo, Db, MAX_USER_LEN, TOKEN_PREFIX, User};

use crate::error::ApiError;

mod throttle;

use throttle::Refused;
pub use throttle::{PASSWORD_CHECKS_PER_ADDRESS, Throttle};

/// How often the credentials generation is read from the database.
const GENERATION_RECHECK: Duration = Duration::from_millis(100);

/// How many verified `Authorization` values are remembered at most.
const MAX_VERIFIED: usize = 100_000;

/// How long a verified `Authorization` value is remembered at most.
const VERIFIED_TTL: Duration = Duration::from_secs(60);

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
        let db_error = |e: wharf_db::DbError| match e {
            wharf_db::DbError::Busy(detail) => ApiError::unavailable(detail, 5),
            e => ApiError::internal(e.to_string()),
        };
        // The same count in the database, which every instance on it shares.
        let shared = match (&credential, addr) {
            (Credential::Password { user, .. }, Some(addr)) => {
                let subject = format!("{addr} {}", user.to_lowercase());
                let failures = self.db.login_failures(&self.registry);
                if let Some(until) = failures.begin(&subject).await.map_err(db_error)? {
                    self.throttle.metrics.throttled.inc();
                    let wait_secs = until
                        .duration_since(SystemTime::now())
                        .map_or(1, |d| d.as_secs().max(1));
                    return Err(ApiError::too_many_requests(
                        format!(
                            "too many failed logins as `{user}` from {addr}; try again in {wait_secs} s"
                        ),
                        wait_secs,
                    ));
                }
                Some(subject)
            }
            _ => None,
        };
        let verdict = self.verify(credential).await.map_err(db_error)?;
        if let (Ok(_), Some(attempt)) = (&verdict, attempt) {
            attempt.succeeded();
            if let Some(subject) = shared {
                self.db
                    .login_failures(&self.registry)
                    .succeeded(&subject)
                    .await
                    .map_err(db_error)?;
            }
        }
        Ok(verdict.map(Arc::new))
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
}
