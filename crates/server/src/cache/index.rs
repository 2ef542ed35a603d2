//! Index files of a cache registry: relayed byte for byte, kept, revalidated.
//!
//! A file is looked up in memory, then in storage, then upstream. A copy is
//! fresh for `index_ttl` after upstream last confirmed it; after that the next
//! request revalidates it with the upstream's own validators. When every
//! upstream fails, the copy is served stale. Concurrent misses for one file
//! share one upstream request.

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use axum::http::HeaderValue;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use wharf_index::{IndexPath, is_well_formed};
use wharf_storage::{BlobKey, BlobStore, Layout};
use wharf_upstream::{FetchError, IndexFetch, UpstreamSet, Validators};

use crate::{
    cache::MissBudget, encoding::Encoding, error::ApiError, flight::Flights, metrics::Metrics,
    zero_copy,
};

/// After every upstream failed, a stale copy is served without asking again
/// for this long, so an outage costs one attempt per file per interval.
const STALE_RETRY: Duration = Duration::from_secs(5);

/// One index file as wharf serves it.
pub struct IndexEntry {
    /// The file, byte for byte as upstream sent it.
    pub body: Bytes,
    /// wharf's own entity tag for the content (hex, without quotes).
    pub tag: String,
    /// When the content last changed here.
    pub modified: SystemTime,
    /// `modified` as an HTTP date.
    pub last_modified: HeaderValue,
    /// Served without asking upstream until then.
    fresh_until: Instant,
    /// When upstream last confirmed the content.
    checked: SystemTime,
    /// The upstream's validators, for the next conditional request.
    validators: Option<Validators>,
    /// The sha256 of `body`, which its compressed forms are kept by.
    pub sha256: [u8; 32],
    /// The quoted entity tag of each encoding, made once: a hit formats
    /// nothing.
    etags: [HeaderValue; Encoding::ALL.len()],
    /// The gzip form (what cargo asks for): the upstream's, or once made
    /// when it is at most [`HELD_GZIP_SHARE`] of the body and
    /// [`HELD_GZIP_SLACK`]. A hit then asks no second cache for it. The
    /// entry's weight counts that much for it, or the upstream's form.
    gzip: OnceLock<Bytes>,
}

/// The largest gzip form an entry holds, as a share of its body (1/4:
/// index files compress 5 to 15 times)...
const HELD_GZIP_SHARE: usize = 4;

/// ... and bytes more, for small files, which compress less: of 435 real
/// index files, 62 (most under 8 KB) compressed less than 4 times, and all
/// but one fit this.
const HELD_GZIP_SLACK: usize = 256;

impl IndexEntry {
    pub(crate) fn new(
        body: Bytes,
        modified: SystemTime,
        checked: SystemTime,
        fresh_until: Instant,
        validators: Option<Validators>,
    ) -> Self {
        let digest: [u8; 32] = Sha256::digest(&body).into();
        let tag = hex::encode(&digest[..16]);
        Self {
            etags: Encoding::ALL.map(|encoding| encoding.etag(&tag)),
            gzip: OnceLock::new(),
            tag,
            sha256: digest,
            last_modified: http_date(modified),
            // Sent as it is to clients that do not take gzip.
            body: zero_copy::file_backed(body),
            modified,
            fresh_until,
            checked,
            validators,
        }
    }

    /// The same content, confirmed again: only freshness and validators change.
    pub(crate) fn confirmed(&self, fresh_until: Instant, validators: Option<Validators>) -> Self {
        Self {
            body: self.body.clone(),
            tag: self.tag.clone(),
            etags: self.etags.clone(),
            gzip: self.gzip.clone(),
            modified: self.modified,
            last_modified: self.last_modified.clone(),
            fresh_until,
            checked: SystemTime::now(),
            validators,
            sha256: self.sha256,
        }
    }

    /// The `ETag` header of this content served in `encoding`.
    pub fn etag(&self, encoding: Encoding) -> &HeaderValue {
        &self.etags[encoding as usize]
    }

    /// Whether it may be served without asking upstream.
    pub fn is_fresh(&self) -> bool {
        Instant::now() < self.fresh_until
    }

    /// A memory cache of entries by path, bounded by their weight in bytes.
    pub(crate) fn memory(max_bytes: u64) -> HotFiles {
        HotFiles::new(max_bytes)
    }

    /// The gzip form, when this entry holds it.
    pub fn held_gzip(&self) -> Option<&Bytes> {
        self.gzip.get()
    }

    /// The same entry holding `form`, the gzip form the upstream sent the
    /// body in, whatever its size: the weight the entry is admitted with
    /// counts it.
    pub(crate) fn with_gzip(self, form: Bytes) -> Self {
        Self {
            gzip: OnceLock::from(zero_copy::file_backed(form)),
            ..self
        }
    }

    /// Keeps `form`, the gzip form of the body, when it is small enough for
    /// the weight this entry was admitted with.
    pub fn hold_gzip(&self, form: &Bytes) {
        if form.len() <= self.body.len() / HELD_GZIP_SHARE + HELD_GZIP_SLACK
            && self.gzip.get().is_none()
        {
            let _ = self.gzip.set(zero_copy::file_backed(form.clone()));
        }
    }

    fn weight(&self) -> u64 {
        // Its other compressed forms are weighed where they are kept
        // (`Compressed`); room for a gzip form made later is counted at
        // most, or the upstream's, held from the start. Either way the
        // weight never changes once the entry is admitted.
        let room = self.body.len() / HELD_GZIP_SHARE + HELD_GZIP_SLACK;
        let gzip = self.gzip.get().map_or(0, Bytes::len).max(room);
        (self.body.len() + gzip + 256) as u64
    }
}

/// Index files held in memory by path, bounded by their weight in bytes:
/// the lookup of every index hit.
///
/// `quick_cache` rather than moka, which keeps the other caches: a hit's
/// lookup in moka (hashing with SipHash, an epoch pin, a read recorded in a
/// channel for its frequency sketch, and now and then the pending upkeep run
/// on the reader's thread) was 3–4% of a hit's time, the largest piece of
/// wharf's own; `quick_cache` finds an entry under a shard's read lock and
/// marks it with one atomic store, and is as scan-resistant (S3-FIFO).
pub(crate) struct HotFiles(quick_cache::sync::Cache<String, Arc<IndexEntry>, ByWeight>);

#[derive(Clone)]
struct ByWeight;

impl quick_cache::Weighter<String, Arc<IndexEntry>> for ByWeight {
    fn weight(&self, _: &String, entry: &Arc<IndexEntry>) -> u64 {
        entry.weight()
    }
}

impl HotFiles {
    fn new(max_bytes: u64) -> Self {
        // Room for files of a few KB each; the table grows past that.
        let items = usize::try_from(max_bytes / 4096)
            .unwrap_or(usize::MAX)
            .clamp(64, 1 << 20);
        Self(quick_cache::sync::Cache::with_weighter(
            items,
            max_bytes.max(1),
            ByWeight,
        ))
    }

    /// The entry at `path`.
    pub(crate) fn get(&self, path: &str) -> Option<Arc<IndexEntry>> {
        self.0.get(path)
    }

    /// The entry at `path` while it is fresh: what a hit serves.
    pub(crate) fn fresh(&self, path: &str) -> Option<Arc<IndexEntry>> {
        self.get(path).filter(|entry| entry.is_fresh())
    }

    /// Holds `entry` at `path`, unless it alone outweighs the whole cache.
    pub(crate) fn insert(&self, path: String, entry: Arc<IndexEntry>) {
        self.0.insert(path, entry);
    }

    /// Forgets the entry at `path`.
    pub(crate) fn invalidate(&self, path: &str) {
        self.0.remove(path);
    }

    /// Forgets every entry.
    pub(crate) fn invalidate_all(&self) {
        self.0.clear();
    }

    /// Entries held now.
    pub(crate) fn entry_count(&self) -> u64 {
        self.0.len() as u64
    }
}

fn http_date(t: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(t))
        .expect("an HTTP date is a valid header value")
}

/// The result of looking up an index file.
#[derive(Clone)]
pub enum Lookup {
    /// The file.
    Found(Arc<IndexEntry>),
    /// Upstream says there is no such crate.
    NotFound,
}

/// What is stored next to an index file: where it came from and when.
#[derive(Serialize, Deserialize)]
struct Meta {
    /// sha256 of the stored body, so a body without matching meta is noticed.
    sha256: String,
    modified_unix: u64,
    checked_unix: u64,
    validators: Option<Validators>,
}

/// The index files of one cache registry.
pub struct IndexCache {
    registry: String,
    store: Arc<dyn BlobStore>,
    upstreams: UpstreamSet,
    ttl: Duration,
    memory: HotFiles,
    missing: moka::sync::Cache<String, ()>,
    flights: Arc<Flights<String, Lookup>>,
    metrics: Arc<Metrics>,
    budget: Arc<MissBudget>,
}

impl IndexCache {
    /// An index cache holding up to `memory_bytes` of hot files in memory.
    // Each argument is one of the registry's parts, built once in
    // `AppState::build`; a struct of them would be built only there.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        registry: &str,
        store: Arc<dyn BlobStore>,
        upstreams: UpstreamSet,
        ttl: Duration,
        negative_ttl: Duration,
        memory_bytes: u64,
        metrics: Arc<Metrics>,
        budget: Arc<MissBudget>,
    ) -> Self {
        Self {
            registry: registry.to_owned(),
            store,
            upstreams,
            ttl,
            memory: IndexEntry::memory(memory_bytes),
            missing: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(negative_ttl.max(Duration::from_millis(1)))
                .build(),
            flights: Flights::new(),
            metrics,
            budget,
        }
    }

    /// Index files held in memory now.
    pub fn in_memory(&self) -> u64 {
        self.memory.entry_count()
    }

    /// The copy held in memory or storage, fresh or not, without asking
    /// upstream. `None` when there is none (or storage fails).
    pub async fn peek(&self, path: &IndexPath) -> Option<Arc<IndexEntry>> {
        if let Some(entry) = self.memory.get(path.as_str()) {
            return Some(entry);
        }
        self.load(path).await.ok().flatten().map(Arc::new)
    }

    /// The file at sparse path `path` when memory holds it fresh.
    pub fn hot(&self, path: &str) -> Option<Arc<IndexEntry>> {
        let entry = self.memory.fresh(path)?;
        self.metrics.index_memory_hits.inc();
        Some(entry)
    }

    /// Looks up the index file at `path`, from memory, storage or upstream.
    /// A miss that must go upstream is charged to `client`'s budget.
    pub async fn get(
        self: &Arc<Self>,
        path: &IndexPath,
        client: Option<IpAddr>,
    ) -> Result<Lookup, ApiError> {
        let key = path.as_str();
        if let Some(entry) = self.hot(key) {
            return Ok(Lookup::Found(entry));
        }
        if self.missing.contains_key(key) {
            return Ok(Lookup::NotFound);
        }
        let this = Arc::clone(self);
        let path = path.clone();
        self.flights
            .run(
                key.to_owned(),
                // Requests that join a flight under way cost upstream
                // nothing more: only the one that starts it is charged.
                move || async move { this.refresh(&path, client).await },
            )
            .await
    }

    fn body_key(&self, path: &IndexPath) -> BlobKey {
        Layout::new(&self.registry)
            .index_file(path.as_str())
            .expect("a sparse path makes a valid key")
    }

    fn meta_key(&self, path: &IndexPath) -> BlobKey {
        Layout::new(&self.registry)
            .cache_meta(path.as_str())
            .expect("a sparse path makes a valid key")
    }

    /// Reads a stored copy. A body whose meta is missing or does not match (a
    /// crash between the two writes, or a power loss) is used only if every
    /// line is well-formed, and then as stale, with no validators.
    async fn load(&self, path: &IndexPath) -> Result<Option<IndexEntry>, ApiError> {
        let storage = ApiError::from;
        let Some(body) = self
            .store
            .get(&self.body_key(path))
            .await
            .map_err(storage)?
        else {
            return Ok(None);
        };
        let meta = self
            .store
            .get(&self.meta_key(path))
            .await
            .map_err(storage)?
            .and_then(|raw| serde_json::from_slice::<Meta>(&raw).ok())
            .filter(|meta| meta.sha256 == hex::encode(Sha256::digest(&body)));
        let now = Instant::now();
        Ok(Some(match meta {
            Some(meta) => {
                let checked = unix_to_time(meta.checked_unix);
                let age = SystemTime::now()
                    .duration_since(checked)
                    .unwrap_or_default();
                let fresh_until = now + self.ttl.saturating_sub(age);
                IndexEntry::new(
                    body,
                    unix_to_time(meta.modified_unix),
                    checked,
                    fresh_until,
                    meta.validators,
                )
            }
            None if is_well_formed(&body) => {
                IndexEntry::new(body, SystemTime::now(), SystemTime::UNIX_EPOCH, now, None)
            }
            None => {
                warn!(registry = %self.registry, index.path = %path, "stored index file is damaged; ignoring it");
                return Ok(None);
            }
        }))
    }

    async fn persist(&self, path: &IndexPath, entry: &IndexEntry, body_changed: bool) {
        let meta = Meta {
            sha256: hex::encode(Sha256::digest(&entry.body)),
            modified_unix: time_to_unix(entry.modified),
            checked_unix: time_to_unix(entry.checked),
            validators: entry.validators.clone(),
        };
        let meta = Bytes::from(serde_json::to_vec(&meta).expect("meta serialises"));
        // The body first: a crash between the two leaves a body whose meta
        // does not match, which `load` treats as stale, never as wrong.
        let result = async {
            if body_changed {
                self.store
                    .put(&self.body_key(path), entry.body.clone())
                    .await?;
            }
            self.store.put(&self.meta_key(path), meta).await
        }
        .await;
        if let Err(e) = result {
            warn!(registry = %self.registry, index.path = %path, error = %e, "cannot store index file; serving it from memory only");
        }
    }

    async fn refresh(
        self: &Arc<Self>,
        path: &IndexPath,
        client: Option<IpAddr>,
    ) -> Result<Lookup, ApiError> {
        let current = match self.memory.get(path.as_str()) {
            Some(entry) => Some(entry),
            None => self.load(path).await?.map(Arc::new),
        };
        if let Some(entry) = &current
            && entry.is_fresh()
        {
            self.memory.insert(path.to_string(), entry.clone());
            self.metrics.index_store_hits.inc();
            return Ok(Lookup::Found(entry.clone()));
        }
        // Nothing held at all: this is a miss, paid for by the client. A
        // stale copy's revalidation is the cache's own upkeep, not charged.
        if current.is_none() {
            self.budget.charge(client)?;
        }
        let started = Instant::now();
        let validators = current.as_ref().and_then(|e| e.validators.as_ref());
        let fresh_until = Instant::now() + self.ttl;
        match self.upstreams.fetch_index(path.as_str(), validators).await {
            Ok(IndexFetch::Modified {
                body,
                gzip,
                validators,
            }) => {
                self.metrics.index_upstream_fetches.inc();
                let (mut entry, changed) = match &current {
                    Some(old) if old.body == body => {
                        (old.confirmed(fresh_until, Some(validators)), false)
                    }
                    _ => {
                        let now = SystemTime::now();
                        (
                            IndexEntry::new(body, now, now, fresh_until, Some(validators)),
                            true,
                        )
                    }
                };
                // The upstream's own gzip form: the first request for the
                // file then waits for no compression of wharf's.
                if let Some(gzip) = gzip {
                    entry = entry.with_gzip(gzip);
                }
                self.persist(path, &entry, changed).await;
                let entry = Arc::new(entry);
                self.memory.insert(path.to_string(), entry.clone());
                info!(registry = %self.registry, index.path = %path, changed, duration_ms = started.elapsed().as_millis() as u64, "index file fetched from upstream");
                Ok(Lookup::Found(entry))
            }
            Ok(IndexFetch::NotModified { validators }) => {
                self.metrics.index_revalidations.inc();
                let Some(old) = current else {
                    return Err(ApiError::bad_gateway(format!(
                        "upstream answered 304 Not Modified for `{path}` to an unconditional request"
                    )));
                };
                let entry = old.confirmed(fresh_until, Some(validators));
                self.persist(path, &entry, false).await;
                let entry = Arc::new(entry);
                self.memory.insert(path.to_string(), entry.clone());
                Ok(Lookup::Found(entry))
            }
            Ok(IndexFetch::NotFound) => {
                self.memory.invalidate(path.as_str());
                self.missing.insert(path.to_string(), ());
                if current.is_some() {
                    // Upstream removed the crate: follow it, so cargo sees what upstream says.
                    let _ = self.store.delete(&self.body_key(path)).await;
                    let _ = self.store.delete(&self.meta_key(path)).await;
                    info!(registry = %self.registry, index.path = %path, "upstream no longer has this crate; cached index file removed");
                }
                Ok(Lookup::NotFound)
            }
            // wharf's own limit toward its upstreams: a stale copy is still
            // served as it is, and retried on the next request.
            Err(FetchError::Busy(wait)) => match current {
                Some(old) => Ok(Lookup::Found(old)),
                None => Err(self.budget.busy(wait)),
            },
            Err(e) => match current {
                Some(old) => {
                    self.metrics.index_stale_served.inc();
                    warn!(registry = %self.registry, index.path = %path, error = %e, "every upstream failed; serving the cached index file stale");
                    let retry_at = Instant::now() + STALE_RETRY.min(self.ttl);
                    let entry = Arc::new(old.confirmed(retry_at, old.validators.clone()));
                    self.memory.insert(path.to_string(), entry.clone());
                    Ok(Lookup::Found(entry))
                }
                None => {
                    self.metrics.upstream_failures.inc();
                    Err(ApiError::bad_gateway(format!(
                        "cannot fetch the index file of `{}`: {e}",
                        path.name()
                    )))
                }
            },
        }
    }
}

fn time_to_unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_to_time(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_of(bytes: usize) -> Arc<IndexEntry> {
        let now = SystemTime::now();
        let body = Bytes::from(vec![b'x'; bytes]);
        Arc::new(IndexEntry::new(body, now, now, Instant::now(), None))
    }

    /// Files are held by path up to their weight in bytes: what outweighs
    /// the whole memory is not held, and older files make room for newer.
    #[test]
    fn hot_files_are_held_up_to_their_weight() {
        let hot = HotFiles::new(100_000);
        hot.insert("se/rd/serde".to_owned(), entry_of(1000));
        assert_eq!(hot.get("se/rd/serde").map(|e| e.body.len()), Some(1000));
        assert!(hot.get("3/s/syn").is_none());
        hot.insert("hu/ge/huge".to_owned(), entry_of(200_000));
        assert!(hot.get("hu/ge/huge").is_none(), "heavier than the memory");
        hot.invalidate("se/rd/serde");
        assert!(hot.get("se/rd/serde").is_none());
        // 100 files of 5 KB (6.5 KB weighed) in 100 KB: at most 15 stay.
        for i in 0..100 {
            hot.insert(format!("fi/le/file-{i}"), entry_of(5000));
        }
        let held = (0..100)
            .filter(|i| hot.get(&format!("fi/le/file-{i}")).is_some())
            .count();
        assert!((1..=15).contains(&held), "{held} held");
        assert_eq!(hot.entry_count(), held as u64);
        hot.invalidate_all();
        assert_eq!(hot.entry_count(), 0);
    }

    /// An entry's weight counts a quarter of its body and some slack for a
    /// held gzip form, so a larger form is left to `Compressed` alone.
    #[test]
    fn an_entry_holds_only_a_gzip_form_its_weight_counted() {
        let now = SystemTime::now();
        let entry = IndexEntry::new(
            Bytes::from(vec![b'x'; 1000]),
            now,
            now,
            Instant::now(),
            None,
        );
        assert_eq!(entry.weight(), 1000 + 250 + 256 + 256);
        entry.hold_gzip(&Bytes::from(vec![0; 507]));
        assert!(entry.held_gzip().is_none());
        entry.hold_gzip(&Bytes::from(vec![1; 506]));
        assert_eq!(entry.held_gzip().map(|b| b.len()), Some(506));
        // A confirmed copy is the same content: it keeps the form.
        let confirmed = entry.confirmed(Instant::now(), None);
        assert_eq!(confirmed.held_gzip(), entry.held_gzip());
        assert_eq!(confirmed.etag(Encoding::Gzip), entry.etag(Encoding::Gzip));
        // The upstream's form is held whatever its size, and weighed.
        let upstream = confirmed.with_gzip(Bytes::from(vec![2; 900]));
        assert_eq!(upstream.held_gzip().map(|b| b.len()), Some(900));
        assert_eq!(upstream.weight(), 1000 + 900 + 256);
    }
}
