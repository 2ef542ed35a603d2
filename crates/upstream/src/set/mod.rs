//! An ordered list of upstream sparse registries, tried in order.

use std::{
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};
use tokio::sync::OnceCell;
use tracing::{info, warn};
use wharf_index::DlTemplate;
use wharf_storage::StoreError;

use crate::{
    health::{Health, HealthReport},
    limits::{Gate, Limits},
    redact,
};

mod download;
mod index;

pub use download::Downloaded;
pub use index::{IndexFetch, Validators};

/// How an [`UpstreamSet`] behaves.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// HTTP bases of the sparse indexes (ending in `/`), in order of preference.
    pub bases: Vec<String>,
    /// Bound on connect + first byte, and on each later read, per attempt.
    pub timeout: Duration,
    /// First wait before probing a down upstream.
    pub probe_interval: Duration,
    /// The `User-Agent` sent with every request.
    pub user_agent: String,
    /// The largest index file accepted.
    pub max_index_bytes: u64,
    /// The largest crate file accepted.
    pub max_crate_bytes: u64,
    /// Downloads of a known size up to this are held in memory, stored in
    /// one write and returned; larger ones stream to storage.
    pub keep_in_memory_bytes: u64,
    /// Politeness limits; none for a cache, which only forwards demand.
    pub limits: Option<Limits>,
    /// When the first upstream has not answered an index request within
    /// this, the next one is asked too, and the first answer wins; an
    /// upstream that lost such a race to the next one is marked down. `None`:
    /// strictly one upstream after another (a mirror's sync, to be polite).
    pub hedge_after: Option<Duration>,
}

/// Why a fetch from the upstreams failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No upstream gave a usable answer.
    #[error("no upstream could serve it: {0}")]
    Unavailable(String),
    /// An upstream served bytes whose sha256 differs from the index checksum.
    #[error("{0}")]
    Corrupt(String),
    /// The upstream has no file for a version its index lists.
    #[error("{0}")]
    Missing(String),
    /// Storing the download failed: the server's problem (503), never a
    /// reason to try the next upstream or to mark one down.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// wharf's own limits on requests to its upstreams (concurrency, rate)
    /// would have made this wait longer than it may; nothing was asked.
    #[error("this registry's limit on requests to its upstreams is reached; try again in {}s", .0.as_secs().max(1))]
    Busy(Duration),
}

/// One of the set's concurrency slots, taken by work that makes its own
/// HTTP requests; given back when dropped.
pub struct Slot {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Told how long each HTTP request to an upstream took, for metrics; the
/// server implements it, so this crate needs no metrics library.
pub trait RequestObserver: Send + Sync {
    /// A request to the upstream at `index` (its place in
    /// [`UpstreamSettings::bases`]) got the head of its answer, or failed,
    /// after `elapsed`. Requests that wharf's own limits refused are not told.
    fn request_done(&self, index: usize, elapsed: Duration);
}

/// The ordered upstreams of one registry. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamSet {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    upstreams: Vec<Upstream>,
    settings: UpstreamSettings,
    gate: Option<Gate>,
    requests: AtomicU64,
    observer: OnceLock<Arc<dyn RequestObserver>>,
}

struct Upstream {
    /// Its place in the list, for the observer.
    index: usize,
    base: String,
    /// `base` as it may be shown and logged: without credentials. Every
    /// message and report uses this, never `base`.
    display: String,
    health: Health,
    /// The `dl` template from the upstream's `config.json`, learned once.
    dl: OnceCell<DlTemplate>,
}

/// What went wrong with one attempt.
struct Failure {
    reason: String,
    /// Whose failure it is: that decides whether the upstream is marked down.
    blame: Blame,
    retry_after: Option<Duration>,
    /// wharf's own limits refused the attempt; it never reached upstream.
    busy: Option<Duration>,
}

/// Whose failure an attempt's is.
enum Blame {
    /// The upstream's as a whole (no connection, reset, timeout, 429, a bad
    /// `config.json`): mark it down at once.
    Upstream,
    /// One file's (an answer that is not an index file, a 5xx): it counts
    /// toward marking the upstream down only when files at distinct paths
    /// fail within a window (`health::FILE_FAILURES_TO_DOWN`).
    File(String),
    /// Nobody upstream's (storage, size limits, wharf's own limits).
    Nobody,
}

impl Failure {
    fn down(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            blame: Blame::Upstream,
            retry_after: None,
            busy: None,
        }
    }
    fn file(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            blame: Blame::Nobody,
            retry_after: None,
            busy: None,
        }
    }
    fn bad_file(path: &str, reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            blame: Blame::File(path.to_owned()),
            retry_after: None,
            busy: None,
        }
    }
    fn busy(wait: Duration) -> Self {
        Self {
            reason: "this registry's limit on requests to its upstreams is reached".to_owned(),
            blame: Blame::Nobody,
            retry_after: None,
            busy: Some(wait),
        }
    }
}

impl UpstreamSet {
    /// Builds the HTTP client and the upstream list.
    pub fn new(settings: UpstreamSettings) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .user_agent(settings.user_agent.clone())
            // Index files are asked for in gzip and decoded here, so that
            // their gzip form is kept (`IndexFetch::Modified::gzip`).
            .no_gzip()
            .connect_timeout(settings.timeout)
            .read_timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let upstreams = settings
            .bases
            .iter()
            .enumerate()
            .map(|(index, base)| Upstream {
                index,
                base: base.clone(),
                display: redact(base),
                health: Health::new(),
                dl: OnceCell::new(),
            })
            .collect();
        let gate = settings.limits.as_ref().map(Gate::new);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                upstreams,
                settings,
                gate,
                requests: AtomicU64::new(0),
                observer: OnceLock::new(),
            }),
        })
    }

    /// How many HTTP requests this set has sent (probes included, and those
    /// of work that makes its own, reported with [`Self::before_own_request`]).
    pub fn requests_made(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Tells `observer` of every request made from now on. Only the first
    /// observer set is kept: a set belongs to one registry.
    pub fn observe(&self, observer: Arc<dyn RequestObserver>) {
        let _ = self.inner.observer.set(observer);
    }

    /// A concurrency slot for work that makes its own HTTP requests (a git
    /// fetch through gix), held for as long as the work runs.
    pub async fn own_slot(&self) -> Result<Slot, FetchError> {
        let permit = self
            .inner
            .slot()
            .await
            .map_err(|failure| FetchError::Busy(failure.busy.unwrap_or_default()))?;
        Ok(Slot { _permit: permit })
    }

    /// Called by work that makes its own HTTP requests, before each one:
    /// blocks the calling thread until the request rate lets it start, and
    /// counts it. Not for async tasks: call it on a thread of its own.
    pub fn before_own_request(&self) {
        if let Some(gate) = &self.inner.gate {
            gate.request_blocking();
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The state of every upstream, in order.
    pub fn health(&self) -> Vec<HealthReport> {
        self.inner
            .upstreams
            .iter()
            .map(|u| u.health.report(&u.display))
            .collect()
    }
}

fn summary(failures: Vec<String>) -> String {
    if failures.is_empty() {
        "every upstream is marked down and waiting for a probe to succeed".to_owned()
    } else {
        failures.join("; ")
    }
}

impl Inner {
    /// Records a failed attempt: marks the upstream down when the failure is
    /// the upstream's, starts its prober, and returns a line for the summary.
    fn record(self: &Arc<Self>, index: usize, failure: Failure) -> String {
        let up = &self.upstreams[index];
        let down = match &failure.blame {
            Blame::Upstream => true,
            Blame::File(path) => up.health.file_failed(path),
            Blame::Nobody => false,
        };
        if down
            && up
                .health
                .mark_down(failure.reason.clone(), failure.retry_after)
        {
            warn!(upstream.url = %up.display, reason = %failure.reason, "upstream marked down; skipping it until a probe succeeds");
            tokio::spawn(probe(Arc::downgrade(self), index));
        }
        format!("{}: {}", up.display, failure.reason)
    }

    /// Sends `request` to the upstream at `index` (`None`: a document at a
    /// URL of its own) under the limits and the timeout.
    async fn send(
        &self,
        index: Option<usize>,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        if let Some(gate) = &self.gate {
            gate.request().await.map_err(Failure::busy)?;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let timeout = self.settings.timeout;
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout, request.send()).await;
        if let (Some(index), Some(observer)) = (index, self.observer.get()) {
            observer.request_done(index, started.elapsed());
        }
        match answer {
            Err(_) => Err(Failure::down(format!(
                "no response within {}",
                humanize(timeout)
            ))),
            Ok(Err(e)) => Err(Failure::down(describe(&e))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Waits for a concurrency slot when limits apply.
    async fn slot(&self) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Failure> {
        match &self.gate {
            Some(gate) => gate.slot().await.map_err(Failure::busy),
            None => Ok(None),
        }
    }

    async fn read_limited(
        &self,
        mut response: reqwest::Response,
        limit: u64,
    ) -> Result<Bytes, Failure> {
        let mut body = BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if let Some(gate) = &self.gate {
                        gate.bytes(chunk.len()).await;
                    }
                    if body.len() as u64 + chunk.len() as u64 > limit {
                        return Err(Failure::file(format!(
                            "response is over the limit of {limit} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => {
                    return Err(Failure::down(format!(
                        "response cut short: {}",
                        describe(&e)
                    )));
                }
            }
        }
    }
}

/// Probes a down upstream until it answers, with growing waits.
async fn probe(inner: Weak<Inner>, index: usize) {
    let mut attempt = 0u32;
    loop {
        let wait = {
            let Some(inner) = inner.upgrade() else { return };
            let up = &inner.upstreams[index];
            match up
                .health
                .next_probe_wait(attempt, inner.settings.probe_interval)
            {
                Some(wait) => wait,
                None => return,
            }
        };
        tokio::time::sleep(wait).await;
        let Some(inner) = inner.upgrade() else { return };
        let up = &inner.upstreams[index];
        let started = Instant::now();
        let url = format!("{}config.json", up.base);
        let ok = matches!(
            inner.send(Some(index), inner.client.get(&url)).await,
            Ok(r) if r.status() == StatusCode::OK
        );
        if ok {
            if up.health.mark_up() {
                info!(upstream.url = %up.display, probe_ms = started.elapsed().as_millis() as u64, "upstream answers again; trying it first once more");
            }
            return;
        }
        attempt += 1;
    }
}

/// The failure an unexpected status is. `path` names the file asked for;
/// `None` for `config.json`, whose failure is always the upstream's.
fn status_failure(status: StatusCode, headers: &HeaderMap, path: Option<&str>) -> Failure {
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_secs)
                .ok()
                .or_else(|| {
                    httpdate::parse_http_date(v)
                        .ok()
                        .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
                })
        });
    // 429 is about everything wharf asks; a 5xx for one file may be that
    // file's (a broken object behind a CDN) and counts as the file's.
    let blame = match path {
        _ if status == StatusCode::TOO_MANY_REQUESTS => Blame::Upstream,
        None if status.is_server_error() => Blame::Upstream,
        Some(path) if status.is_server_error() => Blame::File(path.to_owned()),
        _ => Blame::Nobody,
    };
    Failure {
        reason: format!("answered {status}"),
        blame,
        retry_after,
        busy: None,
    }
}

/// A one-line description of a transport error, with its causes.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
