//! Counters for `/metrics` (Prometheus text format) and `/status.json`.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one registry.
#[derive(Default)]
pub struct Metrics {
    /// Index files served from memory while fresh.
    pub index_memory_hits: Counter,
    /// Index files found fresh in storage.
    pub index_store_hits: Counter,
    /// Index files fetched (200) from upstream.
    pub index_upstream_fetches: Counter,
    /// Index files confirmed by upstream (304).
    pub index_revalidations: Counter,
    /// Index files served stale because every upstream failed.
    pub index_stale_served: Counter,
    /// Crate files served from memory.
    pub crate_memory_hits: Counter,
    /// Crate files read from storage.
    pub crate_store_hits: Counter,
    /// Crate files downloaded and verified.
    pub crate_downloads: Counter,
    /// Downloads refused because their sha256 did not match the index.
    pub crate_corrupt: Counter,
    /// Requests that failed because no upstream could serve them.
    pub upstream_failures: Counter,
    /// Misses answered 429 instead of going upstream: the client address's
    /// budget was spent, or the registry's limit toward its upstreams.
    pub upstream_budget_refused: Counter,
}

impl Metrics {
    /// Every counter with its Prometheus name and help text.
    pub fn counters(&self) -> [(&'static str, &'static str, u64); 11] {
        [
            (
                "wharf_index_memory_hits_total",
                "Index files served from memory while fresh.",
                self.index_memory_hits.get(),
            ),
            (
                "wharf_index_store_hits_total",
                "Index files found fresh in storage.",
                self.index_store_hits.get(),
            ),
            (
                "wharf_index_upstream_fetches_total",
                "Index files fetched from upstream (200).",
                self.index_upstream_fetches.get(),
            ),
            (
                "wharf_index_revalidations_total",
                "Index files confirmed by upstream (304).",
                self.index_revalidations.get(),
            ),
            (
                "wharf_index_stale_served_total",
                "Index files served stale because every upstream failed.",
                self.index_stale_served.get(),
            ),
            (
                "wharf_crate_memory_hits_total",
                "Crate files served from memory.",
                self.crate_memory_hits.get(),
            ),
            (
                "wharf_crate_store_hits_total",
                "Crate files read from storage.",
                self.crate_store_hits.get(),
            ),
            (
                "wharf_crate_downloads_total",
                "Crate files downloaded from upstream and verified.",
                self.crate_downloads.get(),
            ),
            (
                "wharf_crate_corrupt_total",
                "Crate downloads refused: sha256 differed from the index.",
                self.crate_corrupt.get(),
            ),
            (
                "wharf_upstream_failures_total",
                "Requests no upstream could serve.",
                self.upstream_failures.get(),
            ),
            (
                "wharf_upstream_budget_refused_total",
                "Misses answered 429 instead of going upstream (a client's budget or the registry's limit).",
                self.upstream_budget_refused.get(),
            ),
        ]
    }
}
