//! Politeness: a cap on concurrent requests and token buckets for requests
//! and bytes per second, shared by every request of one upstream set.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// Limits on what one upstream set asks of its upstreams.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// At most this many requests at once.
    pub max_concurrency: usize,
    /// At most this many requests per second.
    pub requests_per_sec: f64,
    /// At most this many body bytes per second; unlimited when `None`.
    pub bytes_per_sec: Option<u64>,
}

/// The enforcement of [`Limits`].
pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    requests: Bucket,
    bytes: Option<Bucket>,
}

impl Gate {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_concurrency.max(1))),
            // A burst of one: requests are spaced evenly, so no window of one
            // second ever holds more than the rate (plus the one in flight).
            requests: Bucket::new(limits.requests_per_sec, 1.0),
            bytes: limits
                .bytes_per_sec
                .map(|rate| Bucket::new(rate as f64, rate as f64)),
        }
    }

    /// Waits for a slot; the request holds it until the permit is dropped.
    pub(crate) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Waits until one more request may start.
    pub(crate) async fn request(&self) {
        self.requests.take(1.0).await;
    }

    /// Accounts for `n` body bytes received, waiting when over the rate.
    pub(crate) async fn bytes(&self, n: usize) {
        if let Some(bucket) = &self.bytes {
            bucket.take(n as f64).await;
        }
    }
}

/// A token bucket that may go into debt: a taker waits until the debt is
/// paid back at the refill rate.
struct Bucket {
    rate: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: f64, capacity: f64) -> Self {
        Self {
            rate,
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    async fn take(&self, n: f64) {
        let wait = {
            let mut state = self.state.lock().await;
            let now = Instant::now();
            let (tokens, last) = *state;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate)
                .min(self.capacity)
                - n;
            *state = (tokens, now);
            if tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-tokens / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_at_the_rate() {
        let gate = Gate::new(&Limits {
            max_concurrency: 4,
            requests_per_sec: 10.0,
            bytes_per_sec: None,
        });
        let started = tokio::time::Instant::now();
        for _ in 0..21 {
            gate.request().await;
        }
        // One free token, then 20 at 10/s.
        assert!(
            started.elapsed() >= Duration::from_millis(1900),
            "{:?}",
            started.elapsed()
        );
    }
}
