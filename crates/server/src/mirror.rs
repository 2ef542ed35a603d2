//! A mirror registry as served by wharf: its tree, read-only, from storage.
//!
//! `wharf sync` (or the schedule in `wharf serve`) writes the tree; this only
//! reads it. Index files are re-read from storage at most every
//! [`REREAD`], so a pass by another process shows within that time, and
//! keep their tag and compressed forms while their bytes do not change.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use tracing::{info, warn};
use wharf_index::{CrateName, IndexPath, Version};
use wharf_storage::{BlobStore, Layout};
use wharf_sync::{Mirror, PassKind, SilentProgress};

use crate::{
    PassLease,
    cache::{IndexEntry, Lookup},
    error::ApiError,
    flight::Flights,
    registry::Access,
    stored::{Stored, Verified},
};

/// How long an index file read from storage is served before reading it again.
const REREAD: Duration = Duration::from_secs(2);

/// A mirror registry mounted by the server.
pub struct MirrorRegistry {
    /// Its name.
    pub name: String,
    /// The `config.json` served (the same the sync writes into the tree).
    pub config_json: Bytes,
    /// The sync engine, for scheduled passes.
    pub mirror: Arc<Mirror>,
    store: Arc<dyn BlobStore>,
    memory: crate::cache::HotFiles,
    flights: Arc<Flights<String, Lookup>>,
    verified: Verified,
    /// Who may read it, and its policy.
    pub access: Access,
    /// The lease its passes run under, when instances share its database.
    lease: Option<PassLease>,
    /// Why the last pass this process ran could not run at all (its
    /// `status.json` is not written then), for the alert watcher.
    pub last_pass_error: std::sync::Mutex<Option<String>>,
}

impl MirrorRegistry {
    /// Serves the tree of `mirror` from `store`.
    pub fn new(
        mirror: Arc<Mirror>,
        store: Arc<dyn BlobStore>,
        memory_bytes: u64,
        access: Access,
        lease: Option<PassLease>,
    ) -> Self {
        let mut config_json = mirror.config_json().clone();
        if access.auth_required {
            // The tree's own config.json is for static servers; served by
            // wharf, it says that reading needs credentials.
            if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&config_json)
                && let Some(object) = value.as_object_mut()
            {
                object.insert("auth-required".to_owned(), serde_json::Value::Bool(true));
                config_json = Bytes::from(value.to_string());
            }
        }
        Self {
            name: mirror.name().to_owned(),
            config_json,
            access,
            mirror,
            store,
            memory: IndexEntry::memory(memory_bytes),
            flights: Flights::new(),
            verified: Verified::new(),
            lease,
            last_pass_error: std::sync::Mutex::new(None),
        }
    }

    /// Index files held in memory now.
    pub fn in_memory(&self) -> u64 {
        self.memory.entry_count()
    }

    /// The index file at sparse path `path` when memory holds it fresh.
    pub fn hot(&self, path: &str) -> Option<Arc<IndexEntry>> {
        self.memory.fresh(path)
    }

    /// An index file of the tree.
    pub async fn index_file(self: &Arc<Self>, path: &IndexPath) -> Result<Lookup, ApiError> {
        if let Some(entry) = self.hot(path.as_str()) {
            return Ok(Lookup::Found(entry));
        }
        let this = Arc::clone(self);
        let path = path.clone();
        self.flights
            .run(path.to_string(), move || async move {
                this.read_index(&path).await
            })
            .await
    }

    async fn read_index(&self, path: &IndexPath) -> Result<Lookup, ApiError> {
        let key = Layout::new(&self.name)
            .index_file(path.as_str())
            .expect("a sparse path makes a valid key");
        let body = self.store.get(&key).await?;
        let Some(body) = body else {
            self.memory.invalidate(path.as_str());
            return Ok(Lookup::NotFound);
        };
        let fresh_until = Instant::now() + REREAD;
        let entry = match self.memory.get(path.as_str()) {
            Some(old) if old.body == body => old.confirmed(fresh_until, None),
            _ => {
                let now = SystemTime::now();
                IndexEntry::new(body, now, now, fresh_until, None)
            }
        };
        let entry = Arc::new(entry);
        self.memory.insert(path.to_string(), entry.clone());
        Ok(Lookup::Found(entry))
    }

    /// A crate file of the tree; a mirror never asks upstream on request.
    /// Checked against its index line before it is served (once per file
    /// per process): a damaged one is removed, with the sync's copy of its
    /// index file, so that the next pass looks at that file afresh and
    /// downloads the crate file again.
    pub async fn crate_file(
        self: &Arc<Self>,
        krate: &CrateName,
        vers: &Version,
    ) -> Result<Bytes, ApiError> {
        let layout = Layout::new(&self.name);
        let key = layout
            .crate_file(krate.as_str(), vers.as_str())
            .expect("a crate name and version make a valid key");
        let bytes = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("this mirror has no {krate} {vers}")))?;
        let path = IndexPath::for_name(krate);
        let index = self.index_file(&path).await?;
        match self.verified.check(&key, &bytes, &index, vers.as_str()) {
            Stored::Good | Stored::Unlisted => Ok(bytes),
            Stored::Damaged { expected, found } => {
                warn!(registry = %self.name, krate.name = %krate, krate.vers = %vers, %expected, %found, "stored crate file is damaged; removed, the next sync pass downloads it again");
                self.store.delete(&key).await?;
                for cursor in [
                    layout.sync_upstream(path.as_str()),
                    layout.sync_upstream_validators(path.as_str()),
                ]
                .into_iter()
                .flatten()
                {
                    self.store.delete(&cursor).await?;
                }
                Err(ApiError::internal(format!(
                    "the stored file of {krate} {vers} is damaged (sha256 {found}, the index says {expected}); it was removed and the next sync pass downloads it again"
                )))
            }
        }
    }

    /// A file at the top of the tree (`status.json`, `manifest.json`), if a
    /// pass has written it.
    pub async fn tree_file(&self, file: &str) -> Result<Option<Bytes>, ApiError> {
        let key = Layout::new(&self.name)
            .top_file(file)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(self.store.get(&key).await?)
    }

    /// Runs sync passes on their schedules: a full pass every `full`, the
    /// first one at once; a feed poll every `feed`; a reconciliation every
    /// `reconcile`. When two fall due together the broader one runs.
    pub fn schedule(
        self: &Arc<Self>,
        full: Duration,
        feed: Option<Duration>,
        reconcile: Option<Duration>,
    ) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut next_full = start;
            let mut next_feed = feed.filter(|_| this.mirror.has_feed()).map(|f| start + f);
            let mut next_reconcile = reconcile.map(|r| start + r);
            loop {
                let now = tokio::time::Instant::now();
                let kind = if next_reconcile.is_some_and(|t| t <= now) {
                    next_reconcile = reconcile.map(|r| now + r);
                    next_full = now + full;
                    PassKind::Reconcile
                } else if next_full <= now {
                    next_full = now + full;
                    PassKind::Full
                } else if next_feed.is_some_and(|t| t <= now) {
                    next_feed = feed.map(|f| now + f);
                    PassKind::Feed
                } else {
                    let due = [Some(next_full), next_feed, next_reconcile]
                        .into_iter()
                        .flatten()
                        .min()
                        .unwrap_or(next_full);
                    tokio::time::sleep_until(due).await;
                    continue;
                };
                let outcome = match &this.lease {
                    None => this.mirror.sync(kind, &SilentProgress).await,
                    Some(lease) => match this.under_lease(lease, kind, full).await {
                        Ok(Some(summary)) => Ok(summary),
                        Ok(None) => continue,
                        Err(e) => Err(e),
                    },
                };
                if let Ok(mut last) = this.last_pass_error.lock() {
                    // Another process running a pass of the tree is no failure.
                    *last = match &outcome {
                        Err(e) if !matches!(e, wharf_sync::SyncError::Busy(..)) => {
                            Some(e.to_string())
                        }
                        _ => None,
                    };
                }
                match outcome {
                    Ok(summary) if summary.failures.is_empty() => {}
                    Ok(summary) => {
                        warn!(registry = %this.name, kind = ?kind, failures = summary.failures.len(), first = %summary.failures[0], "sync pass finished with failures; they are retried next pass")
                    }
                    Err(e) => {
                        warn!(registry = %this.name, kind = ?kind, error = %e, "sync pass failed")
                    }
                }
                info!(registry = %this.name, next_full_in_secs = next_full.saturating_duration_since(tokio::time::Instant::now()).as_secs(), "sync pass done");
            }
        });
    }

    /// Runs a scheduled pass under the lease, waiting while another instance
    /// holds it (so that one takes over a dead holder's lease once it
    /// expires). `None` when another instance ended a full pass recently
    /// enough that this one is not due.
    async fn under_lease(
        &self,
        lease: &PassLease,
        kind: PassKind,
        full: Duration,
    ) -> Result<Option<wharf_sync::Summary>, wharf_sync::SyncError> {
        let mut waiting_since = None;
        loop {
            let leased = lease
                .run(kind, |info| {
                    (kind != PassKind::Full || crate::lease::full_pass_due(info, full))
                        .then(|| self.mirror.sync(kind, &SilentProgress))
                })
                .await?;
            match leased {
                crate::Leased::Ran(summary) => return Ok(Some(summary)),
                crate::Leased::Skipped(_) => {
                    info!(registry = %self.name, "a full pass ended recently on another instance; not repeated");
                    return Ok(None);
                }
                crate::Leased::Busy(held) => {
                    if waiting_since.is_none() {
                        info!(registry = %self.name, holder = %held.holder, "another instance runs this mirror's passes; waiting for its lease");
                        waiting_since = Some(Instant::now());
                    }
                    tokio::time::sleep(lease.poll_interval()).await;
                }
            }
        }
    }
}
