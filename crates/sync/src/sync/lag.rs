//! How far a mirror's tree is behind its upstream, by the upstream's clock.
//!
//! The upstream says when its newest change was made: the commit time of
//! the git index's head, or the newest `<pubDate>` of its feed. A pass that
//! ends without failures holds everything upstream had at that time, so the
//! tree's lag at any later moment is `now − synced_upstream_time`: it grows
//! while passes fail or do not run, and drops when one catches up. The time
//! comes from the upstream, not from when wharf last ran, so a pass that
//! "succeeds" against a stale upstream mirror still shows as lagging.
//!
//! An upstream with no change for a while looks as lagging as a mirror that
//! is behind: for crates.io, whose index moves every few minutes, that is
//! not a concern. A mirror that reads neither a git index nor a feed has no
//! upstream time, and no lag here (its freshness is `last_success`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::git::GitIndex;

/// The lag fields of a mirror's `status.json` (flattened into it).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct Lag {
    /// When upstream's newest change was made, as the last pass that could
    /// tell saw it (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream_time: Option<u64>,
    /// The upstream time the tree holds everything up to: `upstream_time` of
    /// the last pass without failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    synced_upstream_time: Option<u64>,
    /// `now − synced_upstream_time` when the pass ended; readers compute it
    /// again from `synced_upstream_time` (wharf's `/metrics`, `wharf check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lag_seconds: Option<u64>,
}

impl Lag {
    /// The lag after a pass that saw upstream's newest change at `seen`
    /// (`None`: this pass could not tell, such as an unchanged feed) and
    /// ended at `now`, with or without failures.
    pub(super) fn after_pass(
        previous: Option<&Lag>,
        seen: Option<i64>,
        succeeded: bool,
        now: u64,
    ) -> Self {
        let previous = previous.cloned().unwrap_or_default();
        // A commit dated before 1970 is no time at all.
        let seen = seen.and_then(|t| u64::try_from(t).ok());
        let upstream_time = seen.or(previous.upstream_time);
        let synced_upstream_time = match (succeeded, seen) {
            // Never backwards: a feed's newest item may fall off the feed.
            (true, Some(seen)) => Some(previous.synced_upstream_time.map_or(seen, |p| p.max(seen))),
            _ => previous.synced_upstream_time,
        };
        Self {
            upstream_time,
            synced_upstream_time,
            lag_seconds: synced_upstream_time.map(|t| now.saturating_sub(t)),
        }
    }
}

/// The commit time of the git index's head as last fetched, or `None` when
/// it cannot be read (logged: the pass goes on without a lag).
pub(super) async fn git_head_time(index: &Arc<GitIndex>, registry: &str) -> Option<i64> {
    let index = Arc::clone(index);
    match tokio::task::spawn_blocking(move || index.head_time()).await {
        Ok(Ok(time)) => time,
        Ok(Err(e)) => {
            tracing::warn!(registry, error = %e, "cannot read the git index's head commit time; the mirror's lag is not updated");
            None
        }
        Err(_) => None,
    }
}

/// The newest publication time among a feed's items.
pub(super) fn newest_item(items: &[crate::feed::FeedItem]) -> Option<i64> {
    items.iter().filter_map(|item| item.published).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_without_failures_catches_up_to_what_it_saw() {
        let lag = Lag::after_pass(None, Some(1_000), true, 1_060);
        assert_eq!(lag.synced_upstream_time, Some(1_000));
        assert_eq!(lag.lag_seconds, Some(60));
    }

    #[test]
    fn a_failed_pass_keeps_the_old_synced_time_and_the_lag_grows() {
        let first = Lag::after_pass(None, Some(1_000), true, 1_010);
        let failed = Lag::after_pass(Some(&first), Some(5_000), false, 5_100);
        assert_eq!(failed.upstream_time, Some(5_000));
        assert_eq!(failed.synced_upstream_time, Some(1_000));
        assert_eq!(failed.lag_seconds, Some(4_100));
    }

    #[test]
    fn a_pass_that_cannot_tell_keeps_what_was_known() {
        let first = Lag::after_pass(None, Some(1_000), true, 1_010);
        let unchanged = Lag::after_pass(Some(&first), None, true, 2_000);
        assert_eq!(unchanged.synced_upstream_time, Some(1_000));
        assert_eq!(unchanged.lag_seconds, Some(1_000));
        assert_eq!(Lag::after_pass(None, None, true, 5).lag_seconds, None);
    }

    #[test]
    fn the_synced_time_never_goes_backwards_nor_the_lag_below_zero() {
        let first = Lag::after_pass(None, Some(2_000), true, 1_000);
        assert_eq!(
            first.lag_seconds,
            Some(0),
            "an upstream clock ahead of ours"
        );
        let older = Lag::after_pass(Some(&first), Some(1_500), true, 3_000);
        assert_eq!(older.synced_upstream_time, Some(2_000));
    }
}
