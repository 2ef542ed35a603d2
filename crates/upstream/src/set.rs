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
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tracing::{info, warn};
use wharf_index::{Cksum, DlTemplate, is_well_formed};
use wharf_storage::{BlobKey, BlobStore, StoreError};

use crate::{
    decode,
    health::{Health, HealthReport},
    limits::{Gate, Limits},
    redact,
};

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

/// The validators an upstream gave for an index file. They are only ever sent
/// back to the upstream that issued them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// The base URL of the upstream that answered, as shown ([`redact`]ed:
    /// validators are stored, and secrets must not be).
    pub upstream: String,
    /// Its `ETag`, if any.
    pub etag: Option<String>,
    /// Its `Last-Modified`, if any.
    pub last_modified: Option<String>,
}

/// The answer to a conditional index fetch.
#[derive(Debug)]
pub enum IndexFetch {
    /// New content.
    Modified {
        /// The file, byte for byte as the upstream sent it.
        body: Bytes,
        /// The gzip form the upstream sent it in, when it sent one: `body`
        /// is what it decodes to, so a cache can hand it on as it is.
        gzip: Option<Bytes>,
        /// Validators for the next conditional request.
        validators: Validators,
    },
    /// The copy the caller holds is still current.
    NotModified {
        /// Validators for the next conditional request.
        validators: Validators,
    },
    /// The upstream says there is no such crate.
    NotFound,
}

/// A crate file that was downloaded, verified and committed to storage.
#[derive(Debug)]
pub struct Downloaded {
    /// Its size.
    pub size_bytes: u64,
    /// Its bytes, when its size was known and small enough to hold in memory.
    pub bytes: Option<Bytes>,
    /// The base URL of the upstream it came from, as shown ([`redact`]ed).
    pub upstream: String,
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

    /// Fetches the index file at `path` (`se/rd/serde`), conditionally when
    /// `validators` came from an upstream in the list.
    pub async fn fetch_index(
        &self,
        path: &str,
        validators: Option<&Validators>,
    ) -> Result<IndexFetch, FetchError> {
        let up: Vec<usize> = (0..self.inner.upstreams.len())
            .filter(|i| self.inner.upstreams[*i].health.is_up())
            .collect();
        let mut failures = Vec::new();
        let (Some(hedge_after), [first, rest @ ..]) = (self.inner.settings.hedge_after, &up[..])
        else {
            return self.fetch_in_turn(&up, path, validators, failures).await;
        };
        if rest.is_empty() {
            return self.fetch_in_turn(&up, path, validators, failures).await;
        }
        // The first upstream alone for `hedge_after`; then the others too.
        let own = |i: usize| validators.filter(|v| v.upstream == self.inner.upstreams[i].display);
        let first_try =
            self.inner
                .fetch_index_once(&self.inner.upstreams[*first], path, own(*first));
        tokio::pin!(first_try);
        tokio::select! {
            result = &mut first_try => {
                match result {
                    Ok(fetch) => return Ok(fetch),
                    Err(Failure { busy: Some(wait), .. }) => return Err(FetchError::Busy(wait)),
                    Err(failure) => failures.push(self.inner.record(*first, failure)),
                }
                return self.fetch_in_turn(rest, path, validators, failures).await;
            }
            () = tokio::time::sleep(hedge_after) => {}
        }
        let others = self.fetch_in_turn(rest, path, validators, Vec::new());
        tokio::pin!(others);
        tokio::select! {
            result = &mut first_try => match result {
                Ok(fetch) => Ok(fetch),
                Err(failure) => {
                    failures.push(self.inner.record(*first, failure));
                    others.await.map_err(|e| match e {
                        FetchError::Unavailable(more) => FetchError::Unavailable(format!("{}; {more}", failures.join("; "))),
                        other => other,
                    })
                }
            },
            result = &mut others => match result {
                Ok(fetch) => {
                    // The next upstream answered while the first still had
                    // not: take the first out of rotation until a probe finds
                    // it well, so the next requests do not wait for it.
                    self.inner.record(
                        *first,
                        Failure::down(format!(
                            "slower than the next upstream (no answer within {})",
                            humanize(hedge_after)
                        )),
                    );
                    Ok(fetch)
                }
                Err(_) => first_try.await.map_err(|failure| {
                    FetchError::Unavailable(self.inner.record(*first, failure))
                }),
            },
        }
    }

    /// Asks the upstreams `order` one after another.
    async fn fetch_in_turn(
        &self,
        order: &[usize],
        path: &str,
        validators: Option<&Validators>,
        mut failures: Vec<String>,
    ) -> Result<IndexFetch, FetchError> {
        for &i in order {
            let up = &self.inner.upstreams[i];
            if !up.health.is_up() {
                continue;
            }
            let own = validators.filter(|v| v.upstream == up.display);
            match self.inner.fetch_index_once(up, path, own).await {
                Ok(fetch) => return Ok(fetch),
                // The limits are the set's: the next upstream would wait as long.
                Err(Failure {
                    busy: Some(wait), ..
                }) => return Err(FetchError::Busy(wait)),
                Err(failure) => failures.push(self.inner.record(i, failure)),
            }
        }
        Err(FetchError::Unavailable(summary(failures)))
    }

    /// Fetches a document that is not an index file (an RSS feed of
    /// updates) from an absolute URL, made conditional by `validators`,
    /// under the same limits and User-Agent as every other request. It does
    /// not touch the upstreams' health: a feed is a hint, not the index.
    pub async fn fetch_document(
        &self,
        url: &str,
        validators: Option<&Validators>,
    ) -> Result<IndexFetch, FetchError> {
        self.inner
            .conditional_get(None, url, &redact(url), validators, None)
            .await
            .map_err(|failure| {
                FetchError::Unavailable(format!("{}: {}", redact(url), failure.reason))
            })
    }

    /// Downloads a crate file into `store` under `key`, verified against
    /// `cksum`. Upstreams are tried in order; bytes that do not match the
    /// checksum are discarded and the next upstream is tried.
    pub async fn download_crate(
        &self,
        name: &str,
        vers: &str,
        cksum: &Cksum,
        store: &dyn BlobStore,
        key: &BlobKey,
    ) -> Result<Downloaded, FetchError> {
        let mut failures = Vec::new();
        let mut corrupt = None;
        let mut missing = None;
        for (i, up) in self.inner.upstreams.iter().enumerate() {
            if !up.health.is_up() {
                continue;
            }
            match self
                .inner
                .download_once(up, name, vers, cksum, store, key)
                .await
            {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(Outcome::Corrupt(message))) => {
                    warn!(krate.name = name, krate.vers = vers, upstream.url = %up.display, "{message}");
                    corrupt = Some(message);
                }
                Ok(Err(Outcome::Missing(message))) => missing = Some(message),
                Ok(Err(Outcome::Store(e))) => return Err(FetchError::Store(e)),
                Err(Failure {
                    busy: Some(wait), ..
                }) => return Err(FetchError::Busy(wait)),
                Err(failure) => failures.push(self.inner.record(i, failure)),
            }
        }
        if let Some(message) = corrupt {
            Err(FetchError::Corrupt(message))
        } else if let Some(message) = missing {
            Err(FetchError::Missing(message))
        } else {
            Err(FetchError::Unavailable(summary(failures)))
        }
    }
}

fn summary(failures: Vec<String>) -> String {
    if failures.is_empty() {
        "every upstream is marked down and waiting for a probe to succeed".to_owned()
    } else {
        failures.join("; ")
    }
}

/// A download attempt that reached the upstream but produced no usable file.
enum Outcome {
    Corrupt(String),
    Missing(String),
    /// Storing it failed: the server's problem, so no other upstream is
    /// tried and this one is not blamed.
    Store(StoreError),
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

    async fn fetch_index_once(
        &self,
        up: &Upstream,
        path: &str,
        validators: Option<&Validators>,
    ) -> Result<IndexFetch, Failure> {
        let url = format!("{}{}", up.base, path);
        let fetch = self
            .conditional_get(Some(up.index), &url, &up.display, validators, Some(path))
            .await?;
        if let IndexFetch::Modified { body, .. } = &fetch
            && !body.is_empty()
            && !is_well_formed(body)
        {
            // An HTML error page from a proxy, or a cut file, must not
            // replace a good copy: refuse it and try the next upstream.
            // It is this file's failure; only several files failing mark
            // the upstream down.
            return Err(Failure::bad_file(
                path,
                format!(
                    "{} is not an index file (not lines of JSON objects)",
                    redact(&url)
                ),
            ));
        }
        Ok(fetch)
    }

    /// A GET of `url` made conditional by `validators`, under the limits.
    /// The validators it returns are labelled `label`.
    /// `path` names the file, so that its failures count as the file's;
    /// `None` for a document that is not an index file.
    async fn conditional_get(
        &self,
        index: Option<usize>,
        url: &str,
        label: &str,
        validators: Option<&Validators>,
        path: Option<&str>,
    ) -> Result<IndexFetch, Failure> {
        let _slot = self.slot().await?;
        let mut request = self.client.get(url).header(header::ACCEPT_ENCODING, "gzip");
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &v.last_modified {
                request = request.header(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let response = self.send(index, request).await?;
        let status = response.status();
        match status {
            StatusCode::OK => {
                let validators = validators_of(label, response.headers());
                let gzipped = decode::is_gzip(response.headers()).map_err(|encoding| {
                    Failure::bad_file(
                        path.unwrap_or(label),
                        format!(
                            "{} answered in an encoding that was not asked for ({encoding})",
                            redact(url)
                        ),
                    )
                })?;
                let limit = self.settings.max_index_bytes;
                let raw = self.read_limited(response, limit).await?;
                if !gzipped {
                    return Ok(IndexFetch::Modified {
                        body: raw,
                        gzip: None,
                        validators,
                    });
                }
                let body = decode::gunzip(&raw, limit).map_err(|reason| {
                    Failure::bad_file(path.unwrap_or(label), format!("{}: {reason}", redact(url)))
                })?;
                Ok(IndexFetch::Modified {
                    body,
                    gzip: Some(raw),
                    validators,
                })
            }
            StatusCode::NOT_MODIFIED => {
                let mut fresh = validators_of(label, response.headers());
                if let Some(old) = validators {
                    // A 304 need not repeat the validators; keep the old ones then.
                    fresh.etag = fresh.etag.or_else(|| old.etag.clone());
                    fresh.last_modified = fresh.last_modified.or_else(|| old.last_modified.clone());
                }
                Ok(IndexFetch::NotModified { validators: fresh })
            }
            // The statuses cargo itself reads as "no such crate".
            StatusCode::NOT_FOUND
            | StatusCode::GONE
            | StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS => Ok(IndexFetch::NotFound),
            other => Err(status_failure(other, response.headers(), path)),
        }
    }

    async fn download_once(
        &self,
        up: &Upstream,
        name: &str,
        vers: &str,
        cksum: &Cksum,
        store: &dyn BlobStore,
        key: &BlobKey,
    ) -> Result<Result<Downloaded, Outcome>, Failure> {
        let _slot = self.slot().await?;
        let dl = self.dl_template(up).await?;
        let url = dl.render(name, vers, cksum);
        let response = self.send(Some(up.index), self.client.get(&url)).await?;
        let file = format!("{name}-{vers}.crate");
        // The template comes from upstream and may hold a signed URL.
        let url = redact(&url);
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::FORBIDDEN => {
                return Ok(Err(Outcome::Missing(format!(
                    "{url} answered {} for {name} {vers}, which its index lists",
                    response.status()
                ))));
            }
            other => return Err(status_failure(other, response.headers(), Some(&file))),
        }
        if let Some(len) = response.content_length()
            && len > self.settings.max_crate_bytes
        {
            return Ok(Err(Outcome::Corrupt(format!(
                "{name} {vers} from {url} is {len} bytes, over the limit of {}",
                self.settings.max_crate_bytes
            ))));
        }
        // A file of known, small size is held once in memory and stored in one
        // write, and returned to the caller; anything else streams to storage.
        let in_memory = response
            .content_length()
            .is_some_and(|len| len <= self.settings.keep_in_memory_bytes);
        let mut response = response;
        let mut stage = if in_memory {
            None
        } else {
            match store.stage(key).await {
                Ok(stage) => Some(stage),
                Err(e) => return Ok(Err(Outcome::Store(e))),
            }
        };
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut kept = BytesMut::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(Failure::down(format!(
                        "download cut short: {}",
                        describe(&e)
                    )));
                }
            };
            size += chunk.len() as u64;
            if let Some(gate) = &self.gate {
                gate.bytes(chunk.len()).await;
            }
            if size > self.settings.max_crate_bytes {
                return Ok(Err(Outcome::Corrupt(format!(
                    "{name} {vers} from {url} is over the limit of {} bytes",
                    self.settings.max_crate_bytes
                ))));
            }
            hasher.update(&chunk);
            match &mut stage {
                Some(stage) => {
                    if let Err(e) = stage.write(&chunk).await {
                        return Ok(Err(Outcome::Store(e)));
                    }
                }
                None => kept.extend_from_slice(&chunk),
            }
        }
        let got = Cksum::from_bytes(hasher.finalize().into());
        if got != *cksum {
            // Nothing was stored: a stage is discarded when dropped.
            return Ok(Err(Outcome::Corrupt(format!(
                "checksum mismatch for {name} {vers} from {url}: the index says sha256 {cksum}, the upstream sent {size} bytes with sha256 {got}"
            ))));
        }
        let bytes = match stage {
            Some(stage) => {
                if let Err(e) = stage.commit().await {
                    return Ok(Err(Outcome::Store(e)));
                }
                None
            }
            None => {
                let bytes = kept.freeze();
                if let Err(e) = store.put(key, bytes.clone()).await {
                    return Ok(Err(Outcome::Store(e)));
                }
                Some(bytes)
            }
        };
        Ok(Ok(Downloaded {
            size_bytes: size,
            bytes,
            upstream: up.display.clone(),
        }))
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

    /// The upstream's `dl` template, fetched from its `config.json` once.
    async fn dl_template(&self, up: &Upstream) -> Result<DlTemplate, Failure> {
        up.dl
            .get_or_try_init(|| async {
                // Callers that waited for a failed first attempt see the
                // upstream marked down and give up at once.
                if !up.health.is_up() {
                    return Err(Failure::file("marked down"));
                }
                let url = format!("{}config.json", up.base);
                let response = self.send(Some(up.index), self.client.get(&url)).await?;
                if response.status() != StatusCode::OK {
                    return Err(status_failure(response.status(), response.headers(), None));
                }
                let body = self.read_limited(response, 1 << 20).await?;
                let config: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| Failure::down(format!("{} is not JSON: {e}", redact(&url))))?;
                let dl = config
                    .get("dl")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| Failure::down(format!("{} has no `dl` field", redact(&url))))?;
                Ok(DlTemplate::new(dl))
            })
            .await
            .cloned()
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

fn validators_of(base: &str, headers: &HeaderMap) -> Validators {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    Validators {
        upstream: base.to_owned(),
        etag: text(header::ETAG),
        last_modified: text(header::LAST_MODIFIED),
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
