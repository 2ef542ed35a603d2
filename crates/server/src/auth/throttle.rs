//! Failed password attempts counted per (address, user name) before they
//! are checked, lockouts, and password checks in flight per address (see the
//! parent module for why tokens are not throttled).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tracing::{info, warn};

use crate::metrics::Counter;

/// Failed password attempts an (address, user name) pair may make in a row.
const FAILURE_BURST: f64 = 10.0;

/// How fast a pair earns failed attempts back.
const FAILURES_PER_MINUTE: f64 = 10.0;

/// How long a pair that used up its failures is refused.
const LOCKOUT: Duration = Duration::from_secs(60);

/// Password checks one address may have in flight; more are refused (429)
/// rather than queued, so one address cannot fill the process's few slots.
pub const PASSWORD_CHECKS_PER_ADDRESS: usize = 2;

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
    /// [`PASSWORD_CHECKS_PER_ADDRESS`], but for tests.
    checks_per_address: usize,
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
            checks_per_address: PASSWORD_CHECKS_PER_ADDRESS,
            metrics: AuthMetrics::default(),
        }
    }
}

/// Why a password attempt may not be checked now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The pair is locked out for this many more seconds.
    LockedOut(u64),
    /// The address already has its password checks in flight.
    InFlight,
}

/// A password attempt under way: it holds one of its address's in-flight
/// checks, and one of its pair's failures until [`Attempt::succeeded`]
/// gives that back.
pub(super) struct Attempt<'a> {
    throttle: &'a Throttle,
    addr: IpAddr,
    allowance: Arc<Mutex<Allowance>>,
}

impl Attempt<'_> {
    /// The password was right: the failure counted in advance is returned.
    pub(super) fn succeeded(self) {
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
    pub(super) fn begin(
        &self,
        addr: IpAddr,
        user: &str,
        registry: &str,
    ) -> Result<Attempt<'_>, Refused> {
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
            if *n >= self.checks_per_address {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_attempt_counts_as_failed_while_it_is_checked() {
        // However many checks an address may have in flight, attempts that
        // have not finished count against the pair: the burst is used up
        // by attempts under way, and the next is locked out unchecked.
        let throttle = Throttle {
            checks_per_address: 1000,
            ..Throttle::default()
        };
        let addr: IpAddr = "127.0.0.9".parse().unwrap();
        let under_way: Vec<_> = (0..64)
            .filter_map(|_| throttle.begin(addr, "acme", "r").ok())
            .collect();
        assert_eq!(under_way.len(), FAILURE_BURST as usize);
        assert_eq!(throttle.metrics.lockouts.get(), 1);
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
