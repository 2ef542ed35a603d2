//! The circuit breaker of one upstream: up, or down until a probe succeeds.

use std::{
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use serde_json::json;

/// The longest wait between two probes of a down upstream.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// How many distinct files must fail (an answer that is not an index file, a
/// 5xx) within [`FILE_FAILURE_WINDOW`] before the upstream is marked down.
/// One bad file is that file's problem: asking for it again and again must
/// not take every other name down with it.
pub(crate) const FILE_FAILURES_TO_DOWN: usize = 3;

/// The window in which failures of distinct files add up.
pub(crate) const FILE_FAILURE_WINDOW: Duration = Duration::from_secs(30);

/// Whether an upstream should be tried.
#[derive(Debug)]
pub(crate) struct Health {
    state: Mutex<State>,
    /// Files that failed lately, each with when it last failed; at most
    /// [`FILE_FAILURES_TO_DOWN`] of them.
    failed_files: Mutex<Vec<(String, Instant)>>,
}

#[derive(Debug, Clone)]
enum State {
    Up,
    Down {
        since: SystemTime,
        /// Do not retry before this, even with a probe (from `Retry-After`).
        until: Option<Instant>,
        reason: String,
    },
}

/// A snapshot of one upstream's state, for `/status.json`.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// The upstream's index base URL, credentials hidden ([`crate::redact`]).
    pub url: String,
    /// Whether it is being tried.
    pub up: bool,
    /// Why it was marked down.
    pub reason: Option<String>,
    /// When it was marked down (seconds since the epoch).
    pub down_since: Option<u64>,
}

impl HealthReport {
    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "url": self.url,
            "up": self.up,
            "reason": self.reason,
            "down_since": self.down_since,
        })
    }
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State::Up),
            failed_files: Mutex::new(Vec::new()),
        }
    }

    /// Records that the file at `path` failed. Returns true when this makes
    /// [`FILE_FAILURES_TO_DOWN`] distinct files within the window: the
    /// upstream, not the file, is then failing, and the caller marks it down.
    pub(crate) fn file_failed(&self, path: &str) -> bool {
        let now = Instant::now();
        let mut failed = self.failed_files.lock().unwrap_or_else(|e| e.into_inner());
        failed.retain(|(p, at)| p != path && now.duration_since(*at) < FILE_FAILURE_WINDOW);
        failed.push((path.to_owned(), now));
        if failed.len() >= FILE_FAILURES_TO_DOWN {
            failed.clear();
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is still a valid enum.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(*self.lock(), State::Up)
    }

    /// Marks the upstream down. Returns true when it was up (the caller then
    /// starts a prober and logs the outage once).
    pub(crate) fn mark_down(&self, reason: String, retry_after: Option<Duration>) -> bool {
        let mut state = self.lock();
        let until = retry_after.map(|d| Instant::now() + d.min(Duration::from_secs(600)));
        match &mut *state {
            State::Up => {
                *state = State::Down {
                    since: SystemTime::now(),
                    until,
                    reason,
                };
                true
            }
            State::Down {
                until: u,
                reason: r,
                ..
            } => {
                *u = until.or(*u);
                *r = reason;
                false
            }
        }
    }

    pub(crate) fn mark_up(&self) -> bool {
        let mut state = self.lock();
        let was_down = matches!(*state, State::Down { .. });
        *state = State::Up;
        self.failed_files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        was_down
    }

    /// How long the prober should wait before its next probe.
    pub(crate) fn next_probe_wait(&self, attempt: u32, base: Duration) -> Option<Duration> {
        let state = self.lock();
        let State::Down { until, .. } = &*state else {
            return None;
        };
        let backoff = base
            .saturating_mul(1u32 << attempt.min(16))
            .min(MAX_PROBE_INTERVAL);
        let hold = until.map(|u| u.saturating_duration_since(Instant::now()));
        Some(hold.map_or(backoff, |h| h.max(backoff)))
    }

    /// A snapshot for `/status.json`; `url` is the display form (redacted).
    pub(crate) fn report(&self, url: &str) -> HealthReport {
        let state = self.lock().clone();
        match state {
            State::Up => HealthReport {
                url: url.to_owned(),
                up: true,
                reason: None,
                down_since: None,
            },
            State::Down { since, reason, .. } => HealthReport {
                url: url.to_owned(),
                up: false,
                reason: Some(reason),
                down_since: since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_failing_again_and_again_is_not_the_upstream_failing() {
        let health = Health::new();
        for _ in 0..20 {
            assert!(!health.file_failed("3/b/bad"));
        }
        assert!(!health.file_failed("an/ot/another"));
        assert!(health.file_failed("th/ir/third"), "three distinct files");
        assert!(!health.file_failed("3/b/bad"), "counting starts again");
    }
}
