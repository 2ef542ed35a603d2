//! What one client address may make a cache ask its upstreams.
//!
//! Hits and remembered 404s cost nothing; a miss (nothing in memory or
//! storage, a name not remembered as missing) takes one from the address's
//! budget before it goes upstream. A spent budget, or the registry's own
//! limit toward its upstreams, is answered 429 with `Retry-After`, so made-up
//! names cannot turn wharf into an amplifier toward crates.io.

use std::{net::IpAddr, sync::Arc, time::Duration};

use wharf_upstream::ClientBudget;

use crate::{error::ApiError, metrics::Metrics};

/// The miss budget of one cache registry.
pub struct MissBudget {
    per_client: Option<ClientBudget>,
    burst: u32,
    per_sec: f64,
    metrics: Arc<Metrics>,
}

impl MissBudget {
    /// `burst` misses per client address, refilled at `per_sec`; no budget
    /// per address when `burst` is 0.
    pub fn new(burst: u32, per_sec: f64, metrics: Arc<Metrics>) -> Self {
        Self {
            per_client: (burst > 0).then(|| ClientBudget::new(burst, per_sec)),
            burst,
            per_sec,
            metrics,
        }
    }

    /// Takes one miss from `client`'s budget, or answers why not. A request
    /// without a known address (never the case behind [`crate::serve`]) is
    /// not counted.
    pub(crate) fn charge(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(budget), Some(addr)) = (&self.per_client, client) else {
            return Ok(());
        };
        budget.take(addr).map_err(|wait| {
            self.metrics.upstream_budget_refused.inc();
            ApiError::too_many_requests(
                format!(
                    "too many requests from {addr} for files this cache does not hold yet: each address may make it fetch {} from upstream at once and {} per second after that; try again in {}s",
                    self.burst,
                    self.per_sec,
                    retry_secs(wait)
                ),
                retry_secs(wait),
            )
        })
    }

    /// The answer when the registry's own limit toward its upstreams (not
    /// the client's budget) refused a miss.
    pub(crate) fn busy(&self, wait: Duration) -> ApiError {
        self.metrics.upstream_budget_refused.inc();
        ApiError::too_many_requests(
            format!(
                "this cache is fetching as much from its upstreams as it may; try again in {}s",
                retry_secs(wait)
            ),
            retry_secs(wait),
        )
    }
}

/// Whole seconds to wait, rounded up, at least one.
fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_secs(Duration::from_millis(2100)), 3);
    }
}
