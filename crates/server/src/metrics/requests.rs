//! Request counts, bytes and latencies, recorded by the request middleware
//! on every request and read at scrape time.
//!
//! Every thread records into a shard of its own, on cache lines no other
//! thread writes, so two cores serving at once never wait for each other or
//! pass a cache line back and forth. A shard that only its own thread
//! writes needs no atomic addition either: its thread loads a cell and
//! stores the sum, and a scrape loads it. The threads beyond the first few
//! (four a core: the runtime's workers are among the first) share one more
//! shard and add atomically. (One shared `prometheus_client` counter per
//! label set and its `Histogram`, which takes a lock per observation, cost
//! 430 ns a request with two threads recording; atomic additions into
//! shards, a tenth of that.) A scrape sums the shards and hands the totals
//! to `prometheus_client`'s encoder as a [`Collector`].

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter},
};

use super::BUCKETS;

/// What a request asked for, by the shape of its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteClass {
    /// `/{R}/index/…` but `config.json`.
    Index = 0,
    /// `/{R}/crates/…`.
    Crate = 1,
    /// Cargo's web API: `/{R}/api/…`, `/{R}/me`.
    Api = 2,
    /// `/{R}/index/config.json`.
    Config = 3,
    /// Everything else: the dashboard, health, metrics, unknown paths.
    Other = 4,
}

const ROUTES: [&str; 5] = ["index", "crate", "api", "config", "other"];
const STATUSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];
/// The registry label of server-wide routes and of names no registry has.
const NO_REGISTRY: &str = "-";

/// The first path segment of `path`, and the class of the route.
pub fn classify(path: &str) -> (&str, RouteClass) {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (first, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let class = if rest == "index/config.json" {
        RouteClass::Config
    } else if rest.starts_with("index/") {
        RouteClass::Index
    } else if rest.starts_with("crates/") {
        RouteClass::Crate
    } else if rest.starts_with("api/") || rest == "me" {
        RouteClass::Api
    } else {
        RouteClass::Other
    };
    (first, class)
}

/// Cells of one registry label in a shard: requests by route and status
/// class, then bytes by route.
const REGISTRY_CELLS: usize = ROUTES.len() * STATUSES.len() + ROUTES.len();
/// Cells of one route's latency histogram in a shard: a count per bucket
/// (the last for `+Inf`), then the sum in nanoseconds.
const HISTOGRAM_CELLS: usize = BUCKETS.len() + 2;

/// The upper bounds of [`BUCKETS`] in nanoseconds, for comparing without
/// floating point on the request path.
const BUCKET_NANOS: [u64; BUCKETS.len()] = {
    let mut nanos = [0; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        nanos[i] = (BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    nanos
};

/// Request counts, bytes and latencies, recorded by the request middleware.
#[derive(Debug)]
pub struct RequestMetrics {
    /// Registry names in label order; the slot after the last is
    /// [`NO_REGISTRY`]'s.
    names: Vec<String>,
    /// The slot of each registry name, found on every request: foldhash,
    /// as the names are the configuration's, not a client's.
    slots: foldhash::HashMap<String, usize>,
    /// Every shard's cells, `stride` apart: `owned` shards, each written by
    /// one thread only, then the shard the other threads share.
    cells: Box<[AtomicU64]>,
    stride: usize,
    owned: usize,
}

impl RequestMetrics {
    /// Counters for registries `names` (and server-wide routes), four
    /// owned shards per core and one shared.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a String>) -> Self {
        let names: Vec<String> = names.into_iter().cloned().collect();
        let slots = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i))
            .collect();
        let used = (names.len() + 1) * REGISTRY_CELLS + ROUTES.len() * HISTOGRAM_CELLS;
        // Shards a whole number of 128-byte lines apart with at least a
        // line's room between them, wherever the allocation starts.
        let stride = (used + 8).next_multiple_of(16);
        // Threads are numbered in the order they first count anything
        // (`shards::thread_number`); the runtime's workers, which answer
        // requests, are among the first, and four shards a core leaves them
        // owned shards even when other threads took numbers between them.
        let owned =
            std::thread::available_parallelism().map_or(16, |n| (n.get() * 4).clamp(4, 256));
        Self {
            names,
            slots,
            cells: (0..stride * (owned + 1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            stride,
            owned,
        }
    }

    /// Where a request for `path` is counted, found before it is answered.
    pub fn target(&self, path: &str) -> RequestTarget<'_> {
        let (first, route) = classify(path);
        RequestTarget {
            metrics: self,
            slot: self.slots.get(first).copied().unwrap_or(self.names.len()),
            route: route as usize,
        }
    }

    /// Records one answered request for `path`.
    pub fn record(&self, path: &str, status: u16, body_bytes: u64, elapsed: Duration) {
        self.target(path).record(status, body_bytes, elapsed);
    }

    /// Every request of registry `name` counted so far, and the bytes of
    /// their bodies; `None` for a name that is not a registry's.
    pub fn totals(&self, name: &str) -> Option<(u64, u64)> {
        let base = self.slots.get(name)? * REGISTRY_CELLS;
        let requests = (0..ROUTES.len() * STATUSES.len())
            .map(|i| self.sum(base + i))
            .sum();
        let bytes = (0..ROUTES.len())
            .map(|route| self.sum(base + ROUTES.len() * STATUSES.len() + route))
            .sum();
        Some((requests, bytes))
    }

    /// The cells of the calling thread's shard, and whether the thread
    /// owns it (no other thread writes it).
    fn shard(&self) -> (&[AtomicU64], bool) {
        let number = crate::shards::thread_number();
        let owned = number < self.owned;
        let start = if owned { number } else { self.owned } * self.stride;
        (&self.cells[start..start + self.stride], owned)
    }

    /// Cell `i` summed over the shards.
    fn sum(&self, i: usize) -> u64 {
        (0..=self.owned)
            .map(|shard| self.cells[shard * self.stride + i].load(Ordering::Relaxed))
            .sum()
    }

    /// Where route `route`'s histogram starts in a shard.
    fn histogram_base(&self, route: usize) -> usize {
        (self.names.len() + 1) * REGISTRY_CELLS + route * HISTOGRAM_CELLS
    }
}

/// Where one request is recorded.
pub struct RequestTarget<'a> {
    metrics: &'a RequestMetrics,
    slot: usize,
    route: usize,
}

impl RequestTarget<'_> {
    /// Records the answer: its status, the bytes of its body as far as
    /// known, and how long it took.
    pub fn record(&self, status: u16, body_bytes: u64, elapsed: Duration) {
        let status = match status / 100 {
            0..=2 => 0,
            3 => 1,
            4 => 2,
            _ => 3,
        };
        let (shard, owned) = self.metrics.shard();
        let base = self.slot * REGISTRY_CELLS;
        let add = |i: usize, n: u64| {
            let cell = &shard[i];
            if owned {
                // Only this thread writes the cell: no lost addition.
                cell.store(
                    cell.load(Ordering::Relaxed).wrapping_add(n),
                    Ordering::Relaxed,
                );
            } else {
                cell.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(base + self.route * STATUSES.len() + status, 1);
        add(
            base + ROUTES.len() * STATUSES.len() + self.route,
            body_bytes,
        );
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        let histogram = self.metrics.histogram_base(self.route);
        add(histogram + bucket, 1);
        add(histogram + BUCKETS.len() + 1, nanos);
    }
}

impl Collector for RequestMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let registries = self
            .names
            .iter()
            .map(String::as_str)
            .chain([NO_REGISTRY])
            .enumerate();
        let mut family = encoder.encode_descriptor(
            "wharf_http_requests",
            "Requests answered, by registry (- for server-wide routes and unknown names), route class and status class",
            None,
            MetricType::Counter,
        )?;
        for (slot, registry) in registries.clone() {
            for (route_index, route) in ROUTES.into_iter().enumerate() {
                for (status_index, status) in STATUSES.into_iter().enumerate() {
                    let cell = slot * REGISTRY_CELLS + route_index * STATUSES.len() + status_index;
                    let labels = [("registry", registry), ("route", route), ("status", status)];
                    ConstCounter::new(self.sum(cell)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "wharf_http_response_bytes",
            "Bytes of response bodies, as far as known when the head was sent",
            None,
            MetricType::Counter,
        )?;
        for (slot, registry) in registries {
            for (route_index, route) in ROUTES.into_iter().enumerate() {
                let cell = slot * REGISTRY_CELLS + ROUTES.len() * STATUSES.len() + route_index;
                let labels = [("registry", registry), ("route", route)];
                ConstCounter::new(self.sum(cell)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "wharf_http_request_duration_seconds",
            "Time from a request to the head of its answer, by route class",
            None,
            MetricType::Histogram,
        )?;
        for (route_index, route) in ROUTES.into_iter().enumerate() {
            let base = self.histogram_base(route_index);
            let counts: Vec<u64> = (0..=BUCKETS.len()).map(|i| self.sum(base + i)).collect();
            let count = counts.iter().sum();
            let sum = self.sum(base + BUCKETS.len() + 1) as f64 / 1e9;
            let buckets: Vec<(f64, u64)> = BUCKETS
                .into_iter()
                .chain([f64::INFINITY])
                .zip(counts)
                .collect();
            family
                .encode_family(&[("route", route)])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_threads_record_in_their_shards_is_summed() {
        // Enough that threads sharing a shard would lose additions if they
        // did not add atomically.
        const PER_THREAD: u64 = 100_000;
        let names = ["crates-io".to_owned()];
        let metrics = RequestMetrics::new(&names);
        std::thread::scope(|scope| {
            for _ in 0..metrics.owned + 3 {
                scope.spawn(|| {
                    for _ in 0..PER_THREAD {
                        metrics.record("/crates-io/crates/a/a-1.0.0.crate", 200, 3, Duration::ZERO);
                    }
                });
            }
        });
        let expected = (metrics.owned as u64 + 3) * PER_THREAD;
        assert_eq!(metrics.totals("crates-io"), Some((expected, expected * 3)));
        assert_eq!(metrics.totals("other"), None);
    }

    #[test]
    fn a_latency_on_a_bound_falls_in_that_bound_s_bucket() {
        let names: [String; 0] = [];
        let metrics = RequestMetrics::new(&names);
        let target = metrics.target("/metrics");
        target.record(200, 0, Duration::from_micros(50));
        target.record(200, 0, Duration::from_nanos(50_001));
        target.record(200, 0, Duration::from_secs(11));
        let base = metrics.histogram_base(RouteClass::Other as usize);
        let counts: Vec<u64> = (0..=BUCKETS.len()).map(|i| metrics.sum(base + i)).collect();
        assert_eq!((counts[0], counts[1], counts[BUCKETS.len()]), (1, 1, 1));
    }
}
