//! Crate files of a cache registry: downloaded once, verified, kept forever.

use std::{net::IpAddr, sync::Arc};

use bytes::Bytes;
use tracing::{info, warn};
use wharf_index::{Cksum, CrateName, IndexPath, Version, find_version};
use wharf_storage::{BlobKey, BlobStore, Layout};
use wharf_upstream::{FetchError, UpstreamSet};

use crate::{
    cache::{IndexCache, Lookup, MissBudget},
    error::ApiError,
    flight::Flights,
    metrics::Metrics,
};

/// Crate files larger than this are read from storage per request instead of
/// being held in memory.
const MAX_MEMORY_ITEM: u64 = 16 << 20;

/// The crate files of one cache registry.
pub struct CrateFiles {
    registry: String,
    store: Arc<dyn BlobStore>,
    upstreams: UpstreamSet,
    index: Arc<IndexCache>,
    memory: moka::sync::Cache<String, Bytes>,
    flights: Arc<Flights<String, Bytes>>,
    metrics: Arc<Metrics>,
    budget: Arc<MissBudget>,
}

impl CrateFiles {
    /// Crate files, holding up to `memory_bytes` of hot ones in memory.
    pub fn new(
        registry: &str,
        store: Arc<dyn BlobStore>,
        upstreams: UpstreamSet,
        index: Arc<IndexCache>,
        memory_bytes: u64,
        metrics: Arc<Metrics>,
        budget: Arc<MissBudget>,
    ) -> Self {
        Self {
            registry: registry.to_owned(),
            store,
            upstreams,
            index,
            memory: moka::sync::Cache::builder()
                .max_capacity(memory_bytes)
                .weigher(|_, b: &Bytes| u32::try_from(b.len()).unwrap_or(u32::MAX))
                .build(),
            flights: Flights::new(),
            metrics,
            budget,
        }
    }

    /// Crate files held in memory now.
    pub fn in_memory(&self) -> u64 {
        self.memory.entry_count()
    }

    /// The storage key of a crate file: `{R}/crates/{name}/{name}-{version}.crate`.
    fn key(&self, krate: &CrateName, vers: &Version) -> BlobKey {
        Layout::new(&self.registry)
            .crate_file(krate.as_str(), vers.as_str())
            .expect("a crate name and version make a valid key")
    }

    /// The bytes of a crate file, from memory, storage, or upstream. What
    /// must come from upstream is charged to `client`'s budget.
    pub async fn get(
        self: &Arc<Self>,
        krate: &CrateName,
        vers: &Version,
        client: Option<IpAddr>,
    ) -> Result<Bytes, ApiError> {
        let key = self.key(krate, vers);
        if let Some(bytes) = self.memory.get(key.as_str()) {
            self.metrics.crate_memory_hits.inc();
            return Ok(bytes);
        }
        let this = Arc::clone(self);
        let (krate, vers) = (krate.clone(), vers.clone());
        let flight_key = key.as_str().to_owned();
        self.flights
            .run(flight_key, move || async move {
                this.fetch(&krate, &vers, &key, client).await
            })
            .await
    }

    async fn fetch(
        &self,
        krate: &CrateName,
        vers: &Version,
        key: &BlobKey,
        client: Option<IpAddr>,
    ) -> Result<Bytes, ApiError> {
        let path = IndexPath::for_name(krate);
        if let Some(bytes) = self.store.get(key).await.map_err(ApiError::from)? {
            // Checked against the index on every read from storage: what a
            // power loss or a disk may have damaged is never served.
            let expected = self
                .index
                .peek(&path)
                .await
                .and_then(|entry| find_version(&entry.body, vers.as_str()))
                .map(|line| line.cksum);
            match expected {
                Some(cksum) if Cksum::of(&bytes) != cksum => {
                    warn!(registry = %self.registry, krate.name = %krate, krate.vers = %vers, "stored crate file does not match its checksum; removing it and downloading it again");
                    self.store.delete(key).await.map_err(ApiError::from)?;
                }
                // Without an index line to check against (upstream says the
                // crate is gone, or no index was ever kept), the file that was
                // verified when it was stored is still served.
                _ => {
                    self.metrics.crate_store_hits.inc();
                    self.remember(key, &bytes);
                    return Ok(bytes);
                }
            }
        }
        let entry = match self.index.get(&path, client).await? {
            Lookup::Found(entry) => entry,
            Lookup::NotFound => {
                return Err(ApiError::not_found(format!("no crate named `{krate}`")));
            }
        };
        let Some(line) = find_version(&entry.body, vers.as_str()) else {
            return Err(ApiError::not_found(format!(
                "crate `{krate}` has no version `{vers}`"
            )));
        };
        if line.name != krate.as_str() {
            return Err(ApiError::not_found(format!(
                "crate files are named as the index spells the crate: `{}`, not `{krate}`",
                line.name
            )));
        }
        self.budget.charge(client)?;
        let started = std::time::Instant::now();
        let downloaded = self
            .upstreams
            .download_crate(
                krate.as_str(),
                vers.as_str(),
                &line.cksum,
                self.store.as_ref(),
                key,
            )
            .await
            .map_err(|e| {
                if let FetchError::Busy(wait) = e {
                    return self.budget.busy(wait);
                }
                self.metrics.upstream_failures.inc();
                match e {
                    FetchError::Corrupt(message) => {
                        self.metrics.crate_corrupt.inc();
                        ApiError::bad_gateway(format!("{message}; nothing was stored"))
                    }
                    FetchError::Store(e) => ApiError::from(e),
                    other => {
                        ApiError::bad_gateway(format!("cannot download {krate} {vers}: {other}"))
                    }
                }
            })?;
        self.metrics.crate_downloads.inc();
        info!(
            registry = %self.registry,
            krate.name = %krate,
            krate.vers = %vers,
            size_bytes = downloaded.size_bytes,
            upstream.url = %downloaded.upstream,
            duration_ms = started.elapsed().as_millis() as u64,
            "crate file downloaded, verified and stored"
        );
        let bytes = match downloaded.bytes {
            Some(bytes) => bytes,
            None => self
                .store
                .get(key)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| {
                    ApiError::internal(format!("{key} vanished right after it was stored"))
                })?,
        };
        self.remember(key, &bytes);
        Ok(bytes)
    }

    fn remember(&self, key: &BlobKey, bytes: &Bytes) {
        if bytes.len() as u64 <= MAX_MEMORY_ITEM {
            self.memory.insert(key.as_str().to_owned(), bytes.clone());
        }
    }
}
