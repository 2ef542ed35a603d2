//! Every metric at `/metrics`, in one `prometheus-client` registry, and the
//! counters `/status.json` reads from the same objects.
//!
//! Label values are bounded: configured registry names, the redacted URLs of
//! configured upstreams, and fixed route and status classes; never anything
//! taken from a request's URL. Counters a request touches are built at start
//! and held, so recording one is an atomic add, with no lookup by label; the
//! request counters and latencies are kept per thread (`requests.rs`), and
//! only upstream requests, far fewer, go through the library's `Histogram`.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// A monotonically increasing counter (`inc`, `get`); clones share the value.
pub type Counter = prometheus_client::metrics::counter::Counter;

mod requests;

pub use requests::{RequestMetrics, RequestTarget};

/// Histogram buckets, in seconds, from an index hit served from memory
/// (tens of microseconds) to a slow upstream (seconds).
const BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The names (without `_total`) and help of a cache's counters, in the order
/// of [`Metrics::fields`].
const CACHE_COUNTERS: [(&str, &str); 11] = [
    (
        "wharf_index_memory_hits",
        "Index files served from memory while fresh",
    ),
    (
        "wharf_index_store_hits",
        "Index files found fresh in storage",
    ),
    (
        "wharf_index_upstream_fetches",
        "Index files fetched from upstream (200)",
    ),
    (
        "wharf_index_revalidations",
        "Index files confirmed by upstream (304)",
    ),
    (
        "wharf_index_stale_served",
        "Index files served stale because every upstream failed",
    ),
    ("wharf_crate_memory_hits", "Crate files served from memory"),
    ("wharf_crate_store_hits", "Crate files read from storage"),
    (
        "wharf_crate_downloads",
        "Crate files downloaded from upstream and verified",
    ),
    (
        "wharf_crate_corrupt",
        "Crate downloads refused: sha256 differed from the index",
    ),
    (
        "wharf_upstream_failures",
        "Requests no upstream could serve",
    ),
    (
        "wharf_upstream_budget_refused",
        "Misses answered 429 instead of going upstream (a client's budget or the registry's limit)",
    ),
];

/// The counters of one cache registry.
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
    /// Builds the counters, the `i`th of [`CACHE_COUNTERS`] from `counter(i)`.
    fn with(mut counter: impl FnMut(usize) -> Counter) -> Self {
        Self {
            index_memory_hits: counter(0),
            index_store_hits: counter(1),
            index_upstream_fetches: counter(2),
            index_revalidations: counter(3),
            index_stale_served: counter(4),
            crate_memory_hits: counter(5),
            crate_store_hits: counter(6),
            crate_downloads: counter(7),
            crate_corrupt: counter(8),
            upstream_failures: counter(9),
            upstream_budget_refused: counter(10),
        }
    }

    fn fields(&self) -> [&Counter; 11] {
        [
            &self.index_memory_hits,
            &self.index_store_hits,
            &self.index_upstream_fetches,
            &self.index_revalidations,
            &self.index_stale_served,
            &self.crate_memory_hits,
            &self.crate_store_hits,
            &self.crate_downloads,
            &self.crate_corrupt,
            &self.upstream_failures,
            &self.upstream_budget_refused,
        ]
    }

    /// Every counter with its Prometheus name (without `_total`) and value,
    /// for `/status.json`.
    pub fn counters(&self) -> [(&'static str, u64); 11] {
        let fields = self.fields();
        std::array::from_fn(|i| (CACHE_COUNTERS[i].0, fields[i].get()))
    }
}

/// The label of metrics kept per registry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabel {
    registry: String,
}

/// The labels of metrics kept per upstream of a registry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    registry: String,
    upstream: String,
}

/// Times the requests of one registry's upstreams.
struct UpstreamTimer {
    histograms: Vec<Histogram>,
}

impl wharf_upstream::RequestObserver for UpstreamTimer {
    fn request_done(&self, index: usize, elapsed: Duration) {
        if let Some(histogram) = self.histograms.get(index) {
            histogram.observe(elapsed.as_secs_f64());
        }
    }
}

/// What a mirror's tree says of its last pass, for `/metrics`.
pub struct MirrorPass {
    /// Seconds since the last pass without failures, if there was one.
    pub since_success_secs: Option<u64>,
    /// How long the last pass took, when the tree says.
    pub duration_secs: Option<f64>,
    /// Failures of the last pass.
    pub failures: u64,
    /// Seconds between now and the upstream time the tree is synced up to,
    /// when the mirror follows a git index or a feed.
    pub lag_secs: Option<u64>,
}

/// The server's one metrics registry, and the metrics set when it is read.
pub struct ServerMetrics {
    registry: Registry,
    cache_families: Vec<Family<RegistryLabel, Counter>>,
    upstream_durations: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    upstream_up: Family<UpstreamLabels, Gauge>,
    mirror_since_success: Family<RegistryLabel, Gauge>,
    mirror_duration: Family<RegistryLabel, Gauge<f64, AtomicU64>>,
    mirror_failures: Family<RegistryLabel, Gauge>,
    mirror_lag: Family<RegistryLabel, Gauge>,
    locked_addresses: Gauge,
    connections_open: Gauge,
    uptime: Gauge,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    /// Registers every metric family; registries and upstreams are added
    /// with [`Self::cache`] and [`Self::observe_upstreams`].
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let cache_families = CACHE_COUNTERS
            .iter()
            .map(|(name, help)| {
                let family = Family::<RegistryLabel, Counter>::default();
                registry.register(*name, *help, family.clone());
                family
            })
            .collect();
        let upstream_durations: Family<UpstreamLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(histogram);
        registry.register(
            "wharf_upstream_request_duration_seconds",
            "Time from a request to an upstream to the head of its answer (or its failure)",
            upstream_durations.clone(),
        );
        let upstream_up = Family::<UpstreamLabels, Gauge>::default();
        registry.register(
            "wharf_upstream_up",
            "Whether an upstream is being tried (1) or marked down (0)",
            upstream_up.clone(),
        );
        let mirror_since_success = Family::<RegistryLabel, Gauge>::default();
        registry.register(
            "wharf_mirror_seconds_since_success",
            "Seconds since a mirror's last sync pass without failures ended",
            mirror_since_success.clone(),
        );
        let mirror_duration = Family::<RegistryLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "wharf_mirror_last_pass_duration_seconds",
            "How long a mirror's last sync pass took",
            mirror_duration.clone(),
        );
        let mirror_failures = Family::<RegistryLabel, Gauge>::default();
        registry.register(
            "wharf_mirror_last_pass_failures",
            "Failures of a mirror's last sync pass (retried next pass)",
            mirror_failures.clone(),
        );
        let mirror_lag = Family::<RegistryLabel, Gauge>::default();
        registry.register(
            "wharf_mirror_lag_seconds",
            "Seconds since the newest upstream change a mirror holds was made, by the upstream's clock (git head commit time, feed item time)",
            mirror_lag.clone(),
        );
        let locked_addresses = Gauge::default();
        registry.register(
            "wharf_auth_locked_addresses",
            "(Address, user name) pairs locked out now",
            locked_addresses.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "wharf_connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        let uptime = Gauge::default();
        registry.register(
            "wharf_uptime_seconds",
            "Seconds since the server started",
            uptime.clone(),
        );
        Self {
            registry,
            cache_families,
            upstream_durations,
            upstream_up,
            mirror_since_success,
            mirror_duration,
            mirror_failures,
            mirror_lag,
            locked_addresses,
            connections_open,
            uptime,
        }
    }

    /// The counters of cache registry `name`, registered.
    pub fn cache(&self, name: &str) -> Metrics {
        let label = RegistryLabel {
            registry: name.to_owned(),
        };
        Metrics::with(|i| self.cache_families[i].get_or_create_owned(&label))
    }

    /// Times every request `upstreams` (of registry `name`) makes, labelled
    /// with each upstream's URL as shown (redacted).
    pub fn observe_upstreams(&self, name: &str, upstreams: &wharf_upstream::UpstreamSet) {
        let histograms = upstreams
            .health()
            .into_iter()
            .map(|report| {
                self.upstream_durations
                    .get_or_create_owned(&UpstreamLabels {
                        registry: name.to_owned(),
                        upstream: report.url,
                    })
            })
            .collect();
        upstreams.observe(Arc::new(UpstreamTimer { histograms }));
    }

    /// Registers a server-wide counter (`name` without `_total`).
    pub fn register_counter(&mut self, name: &'static str, help: &'static str, counter: &Counter) {
        self.registry.register(name, help, counter.clone());
    }

    /// The request counters for registries `names`, built now so that
    /// recording a request allocates nothing, and registered.
    pub fn requests<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Arc<RequestMetrics> {
        let requests = Arc::new(RequestMetrics::new(names));
        self.registry.register_collector(Box::new(requests.clone()));
        requests
    }

    /// Sets whether an upstream of registry `name` is up.
    pub fn set_upstream_up(&self, name: &str, upstream: &str, up: bool) {
        self.upstream_up
            .get_or_create(&UpstreamLabels {
                registry: name.to_owned(),
                upstream: upstream.to_owned(),
            })
            .set(i64::from(up));
    }

    /// Sets what the tree of mirror `name` says of its last pass.
    pub fn set_mirror_pass(&self, name: &str, pass: &MirrorPass) {
        let label = RegistryLabel {
            registry: name.to_owned(),
        };
        if let Some(secs) = pass.since_success_secs {
            self.mirror_since_success
                .get_or_create(&label)
                .set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
        if let Some(secs) = pass.duration_secs {
            self.mirror_duration.get_or_create(&label).set(secs);
        }
        self.mirror_failures
            .get_or_create(&label)
            .set(i64::try_from(pass.failures).unwrap_or(i64::MAX));
        if let Some(secs) = pass.lag_secs {
            self.mirror_lag
                .get_or_create(&label)
                .set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
    }

    /// Sets the gauges read from the server's state when scraped.
    pub fn set_server(&self, locked_addresses: u64, connections_open: u64, uptime_secs: u64) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.locked_addresses.set(gauge(locked_addresses));
        self.connections_open.set(gauge(connections_open));
        self.uptime.set(gauge(uptime_secs));
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`ServerMetrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cache_counter_is_exported_under_its_own_name() {
        let metrics = ServerMetrics::new();
        let cache = metrics.cache("crates-io");
        for (i, field) in cache.fields().into_iter().enumerate() {
            field.inc_by(i as u64 + 1);
        }
        let text = metrics.encode();
        for (i, (name, _)) in CACHE_COUNTERS.iter().enumerate() {
            let line = format!("{name}_total{{registry=\"crates-io\"}} {}\n", i + 1);
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn requests_are_labelled_by_configured_registry_route_and_status_only() {
        let mut metrics = ServerMetrics::new();
        let requests = metrics.requests([&"crates-io".to_owned()]);
        let ms = Duration::from_millis(1);
        requests.record("/crates-io/index/se/rd/serde", 200, 10, ms);
        requests.record("/crates-io/index/config.json", 200, 5, ms);
        requests.record("/crates-io/crates/serde/1.0.0/download", 404, 7, ms);
        requests.record("/made-up-name/index/se/rd/serde", 404, 3, ms);
        requests.record("/metrics", 200, 1, ms);
        let text = metrics.encode();
        for line in [
            "wharf_http_requests_total{registry=\"crates-io\",route=\"index\",status=\"2xx\"} 1\n",
            "wharf_http_requests_total{registry=\"crates-io\",route=\"config\",status=\"2xx\"} 1\n",
            "wharf_http_requests_total{registry=\"crates-io\",route=\"crate\",status=\"4xx\"} 1\n",
            "wharf_http_requests_total{registry=\"-\",route=\"index\",status=\"4xx\"} 1\n",
            "wharf_http_requests_total{registry=\"-\",route=\"other\",status=\"2xx\"} 1\n",
            "wharf_http_response_bytes_total{registry=\"crates-io\",route=\"index\"} 10\n",
            "wharf_http_response_bytes_total{registry=\"-\",route=\"index\"} 3\n",
            "wharf_http_request_duration_seconds_count{route=\"index\"} 2\n",
            "wharf_http_request_duration_seconds_sum{route=\"index\"} 0.002\n",
            // Cumulative: 1 ms is in the bucket of 1 ms and every one above.
            "wharf_http_request_duration_seconds_bucket{route=\"index\",le=\"0.0005\"} 0\n",
            "wharf_http_request_duration_seconds_bucket{route=\"index\",le=\"0.001\"} 2\n",
            "wharf_http_request_duration_seconds_bucket{route=\"index\",le=\"+Inf\"} 2\n",
            "wharf_http_request_duration_seconds_count{route=\"api\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("made-up-name"), "{text}");
    }
}
