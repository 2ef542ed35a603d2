//! Politeness and budgets, with `governor`'s GCRA limiters: a cap on
//! concurrent requests and rates of requests and bytes per second, shared by
//! every request of one upstream set; and [`ClientBudget`], the misses one
//! client address may send upstream.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits on what one upstream set asks of its upstreams.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// At most this many requests at once.
    pub max_concurrency: usize,
    /// At most this many requests per second, once the burst is spent.
    pub requests_per_sec: f64,
    /// How many requests may start at once after a quiet spell, before the
    /// rate spaces them: 1 spaces every request evenly (no window of one
    /// second holds more than the rate); a cache allows what one cold
    /// `cargo fetch` asks, so that it goes as fast as cargo would straight.
    pub requests_burst: u32,
    /// At most this many body bytes per second; unlimited when `None`.
    pub bytes_per_sec: Option<u64>,
    /// When a request would wait longer than this for a slot or for the
    /// rate, it is refused instead ([`crate::FetchError::Busy`]): a cache
    /// answers its client 429 rather than queueing without end. `None`:
    /// always wait (a mirror's sync, which has nobody waiting on it).
    pub max_wait: Option<Duration>,
}

/// The enforcement of [`Limits`].
pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    requests: DefaultDirectRateLimiter,
    bytes: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    max_wait: Option<Duration>,
}

/// A quota of `rate` cells per second with a burst of `burst` cells.
fn quota(rate: f64, burst: u32) -> Quota {
    // Rates below one per hour, or not numbers, are read as one per hour: the
    // configuration refuses them, so this only keeps the arithmetic safe.
    let rate = if rate.is_finite() && rate > 1.0 / 3600.0 {
        rate
    } else {
        1.0 / 3600.0
    };
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// How many requests `rate` allows within one tick of tokio's timer (1 ms),
/// at least one. A wait is a sleep, which lasts at least a tick: with a
/// smaller burst, a rate above 1,000/s is never reached (at 1,000,000/s and
/// a burst of one, every request that met another waited a whole tick, and
/// a mirror pass of 40,000 crate files took half as long again).
fn per_tick(rate: f64) -> u32 {
    let per_tick = (rate / 1000.0).ceil();
    if per_tick.is_finite() && per_tick >= 1.0 {
        per_tick.min(f64::from(u32::MAX)) as u32
    } else {
        1
    }
}

impl Gate {
    pub(crate) fn new(limits: &Limits) -> Self {
        let bytes = limits.bytes_per_sec.map(|rate| {
            // One second's worth of bytes may come at once.
            let burst =
                NonZeroU32::new(u32::try_from(rate).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
            (RateLimiter::direct(quota(rate as f64, burst.get())), burst)
        });
        Self {
            slots: Arc::new(Semaphore::new(limits.max_concurrency.max(1))),
            requests: RateLimiter::direct(quota(
                limits.requests_per_sec,
                limits.requests_burst.max(per_tick(limits.requests_per_sec)),
            )),
            bytes,
            max_wait: limits.max_wait,
        }
    }

    /// Waits for a slot; the request holds it until the permit is dropped.
    /// `Err(wait)` when none came within `max_wait`.
    pub(crate) async fn slot(&self) -> Result<Option<OwnedSemaphorePermit>, Duration> {
        let acquire = self.slots.clone().acquire_owned();
        match self.max_wait {
            None => Ok(acquire.await.ok()),
            Some(max) => match tokio::time::timeout(max, acquire).await {
                Ok(permit) => Ok(permit.ok()),
                Err(_) => Err(max),
            },
        }
    }

    /// Waits until one more request may start. `Err(wait)` when that would
    /// take longer than `max_wait`: nothing is taken from the rate then.
    pub(crate) async fn request(&self) -> Result<(), Duration> {
        loop {
            let wait = match self.requests.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => not_until.wait_time_from(self.requests.clock().now()),
            };
            if self.max_wait.is_some_and(|max| wait > max) {
                return Err(wait);
            }
            // Another request may take the cell first; then wait again.
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// [`Gate::request`] for a caller on a thread of its own (gix's HTTP
    /// transport): blocks the thread until one more request may start.
    pub(crate) fn request_blocking(&self) {
        while let Err(not_until) = self.requests.check() {
            let wait = not_until.wait_time_from(self.requests.clock().now());
            std::thread::sleep(wait.max(Duration::from_millis(1)));
        }
    }

    /// Accounts for `n` body bytes received, waiting when over the rate.
    pub(crate) async fn bytes(&self, n: usize) {
        let Some((limiter, burst)) = &self.bytes else {
            return;
        };
        let mut left = u32::try_from(n).unwrap_or(u32::MAX);
        // A chunk larger than a second's worth is taken in parts.
        while let Some(part) = NonZeroU32::new(left.min(burst.get())) {
            loop {
                match limiter.check_n(part) {
                    Ok(Ok(())) | Err(_) => break,
                    Ok(Err(not_until)) => {
                        let wait = not_until.wait_time_from(limiter.clock().now());
                        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                    }
                }
            }
            left -= part.get();
        }
    }
}

/// How many misses each client address may send upstream: a burst, then a
/// steady rate. Keyed by address, so one client's flood of made-up names
/// spends its own budget and nobody else's.
pub struct ClientBudget {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

impl ClientBudget {
    /// A budget of `burst` misses per address, refilled at `per_sec`.
    pub fn new(burst: u32, per_sec: f64) -> Self {
        Self {
            limiter: RateLimiter::keyed(quota(per_sec, burst)),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one miss from `addr`'s budget. `Err(wait)` when it is spent:
    /// the time until the next miss would be allowed.
    pub fn take(&self, addr: IpAddr) -> Result<(), Duration> {
        // Addresses whose budget is full again hold no state worth keeping;
        // forget them now and then, so a scan of many addresses costs no
        // lasting memory.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&addr)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

impl std::fmt::Debug for ClientBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBudget")
            .field("addresses", &self.limiter.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests_per_sec: f64, max_wait: Option<Duration>) -> Limits {
        Limits {
            max_concurrency: 4,
            requests_per_sec,
            requests_burst: 1,
            bytes_per_sec: None,
            max_wait,
        }
    }

    #[tokio::test]
    async fn requests_are_spaced_at_the_rate() {
        let gate = Gate::new(&limits(40.0, None));
        let started = std::time::Instant::now();
        for _ in 0..21 {
            gate.request().await.unwrap();
        }
        // One free cell, then 20 at 40/s.
        assert!(
            started.elapsed() >= Duration::from_millis(480),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_burst_goes_at_once_then_the_rate_spaces_requests() {
        let gate = Gate::new(&Limits {
            requests_burst: 30,
            ..limits(10.0, None)
        });
        let started = std::time::Instant::now();
        for _ in 0..30 {
            gate.request().await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_millis(90),
            "the burst waited {:?}",
            started.elapsed()
        );
        for _ in 0..3 {
            gate.request().await.unwrap();
        }
        // Three more at 10/s.
        assert!(
            started.elapsed() >= Duration::from_millis(280),
            "{:?}",
            started.elapsed()
        );
    }

    /// A wait is a sleep of at least one timer tick (1 ms), so a rate above
    /// 1,000/s with a burst of one was never reached: each request that met
    /// another waited a whole tick.
    #[tokio::test]
    async fn a_rate_above_the_timer_s_resolution_is_reached() {
        let gate = Gate::new(&limits(100_000.0, None));
        let started = std::time::Instant::now();
        for _ in 0..2_000 {
            gate.request().await.unwrap();
        }
        // 20 ms at the rate; a tick per request would be 2 s.
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "2,000 requests at 100,000/s took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_request_that_would_wait_too_long_is_refused() {
        let gate = Gate::new(&limits(1.0, Some(Duration::from_millis(100))));
        gate.request().await.unwrap();
        let wait = gate.request().await.unwrap_err();
        assert!(wait > Duration::from_millis(100), "{wait:?}");
    }

    #[tokio::test]
    async fn bytes_over_a_second_s_worth_are_taken_in_parts() {
        let gate = Gate::new(&Limits {
            bytes_per_sec: Some(1000),
            ..limits(100.0, None)
        });
        let started = std::time::Instant::now();
        gate.bytes(2500).await;
        assert!(started.elapsed() >= Duration::from_millis(1400));
    }

    #[test]
    fn each_address_has_its_own_budget() {
        let budget = ClientBudget::new(3, 0.5);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            budget.take(a).unwrap();
        }
        let wait = budget.take(a).unwrap_err();
        assert!(wait > Duration::from_millis(1000), "{wait:?}");
        budget.take(b).unwrap();
    }
}
