//! One sync pass of a mirror registry.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use wharf_config::{MirrorRegistry, sparse_base};
use wharf_index::{CrateName, IndexPath, RegistryConfig, Version, parse_line, same_registry_deps};
use wharf_storage::{BlobKey, BlobStore, StoreError};
use wharf_upstream::{FetchError, IndexFetch, Limits, UpstreamSet, UpstreamSettings, Validators};

use crate::selection::Selection;

/// Why a sync pass could not run at all. Failures of single crates are not
/// errors: they are listed in the [`Summary`] and retried next pass.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A selection file could not be read.
    #[error("cannot use {path}: {message}")]
    Selection {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The upstream set could not be built.
    #[error("{0}")]
    Setup(String),
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Crates whose index file was brought up to date.
    pub crates: usize,
    /// Index lines published (versions served).
    pub versions: usize,
    /// Crate files downloaded in this pass.
    pub downloaded: usize,
    /// Bytes of crate files downloaded in this pass.
    pub downloaded_bytes: u64,
    /// HTTP requests sent upstream.
    pub requests: u64,
    /// One line per failure (crate, version, what happened).
    pub failures: Vec<String>,
    /// How long the pass took, in milliseconds.
    pub duration_ms: u64,
}

/// Where a long pass reports how far it is.
pub trait Progress: Send + Sync {
    /// `n` more crates are known to need syncing.
    fn add_total(&self, n: usize);
    /// One crate is done.
    fn crate_done(&self, name: &str);
}

/// Progress that goes nowhere.
pub struct SilentProgress;

impl Progress for SilentProgress {
    fn add_total(&self, _: usize) {}
    fn crate_done(&self, _: &str) {}
}

/// The `status.json` at the root of a mirror's tree.
#[derive(Debug, Serialize, Deserialize)]
struct Status {
    /// When the last pass ended (seconds since the epoch).
    last_sync: u64,
    /// When the last pass without failures ended.
    last_success: Option<u64>,
    /// Crates and versions served.
    crates: usize,
    versions: usize,
    /// Failures of the last pass.
    failures: usize,
    /// Where the mirror syncs from, and how far it got.
    upstreams: Vec<String>,
    cursor: Option<String>,
    /// The wharf that wrote it.
    generator: String,
}

/// A mirror registry and how to sync it.
pub struct Mirror {
    name: String,
    store: Arc<dyn BlobStore>,
    upstreams: UpstreamSet,
    selection: Selection,
    upstream_urls: Vec<String>,
    config_json: Bytes,
    concurrency: usize,
}

/// What syncing one crate produced.
#[derive(Default)]
struct CrateOutcome {
    deps: BTreeSet<String>,
    published: usize,
    downloaded: usize,
    downloaded_bytes: u64,
    failures: Vec<String>,
    synced: bool,
}

impl Mirror {
    /// A mirror named `name` configured by `config`; its tree is served at
    /// `static_url`, or `{public_url}/{name}`.
    pub fn from_config(
        name: &str,
        config: &MirrorRegistry,
        store: Arc<dyn BlobStore>,
        public_url: &str,
    ) -> Result<Self, SyncError> {
        let bases = config
            .upstreams
            .iter()
            .map(|u| sparse_base(u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(SyncError::Setup)?;
        let user_agent = match &config.contact {
            Some(contact) => format!("wharf/{} (mirror; +{contact})", env!("CARGO_PKG_VERSION")),
            None => format!("wharf/{} (mirror)", env!("CARGO_PKG_VERSION")),
        };
        let upstreams = UpstreamSet::new(UpstreamSettings {
            bases,
            timeout: config.upstream_timeout,
            probe_interval: config.probe_interval,
            user_agent,
            max_index_bytes: 64 << 20,
            max_crate_bytes: 1 << 30,
            keep_in_memory_bytes: 0,
            limits: Some(Limits {
                max_concurrency: config.max_concurrency,
                requests_per_sec: config.max_requests_per_sec,
                bytes_per_sec: config.max_bytes_per_sec,
            }),
        })
        .map_err(SyncError::Setup)?;
        let base = config
            .static_url
            .clone()
            .unwrap_or_else(|| format!("{}/{name}", public_url.trim_end_matches('/')));
        Ok(Self {
            name: name.to_owned(),
            store,
            upstreams,
            selection: Selection::from_config(config)?,
            upstream_urls: config.upstreams.clone(),
            config_json: Bytes::from(RegistryConfig::for_base(&base).to_json()),
            concurrency: config.max_concurrency.max(1),
        })
    }

    /// The registry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `config.json` of the tree (its `dl` names where the tree is served).
    pub fn config_json(&self) -> &Bytes {
        &self.config_json
    }

    /// Runs one pass: every selected crate's files, then its index file, then
    /// `config.json` and `status.json`.
    pub async fn sync_once(&self, progress: &dyn Progress) -> Result<Summary, SyncError> {
        let started = Instant::now();
        let requests_before = self.upstreams.requests_made();
        let mut summary = Summary::default();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut frontier: Vec<String> = self
            .selection
            .roots
            .iter()
            .filter(|r| self.selection.keeps_root(r))
            .cloned()
            .collect();
        seen.extend(frontier.iter().cloned());
        self.put_if_changed(&self.key("index/config.json"), self.config_json.clone())
            .await?;
        // Breadth first: each wave's dependencies make the next wave.
        while !frontier.is_empty() {
            progress.add_total(frontier.len());
            let outcomes: Vec<(String, Result<CrateOutcome, SyncError>)> = stream::iter(frontier)
                .map(|name| async move {
                    let outcome = self.sync_crate(&name).await;
                    progress.crate_done(&name);
                    (name, outcome)
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            let mut next = Vec::new();
            for (_, outcome) in outcomes {
                let outcome = outcome?;
                summary.crates += usize::from(outcome.synced);
                summary.versions += outcome.published;
                summary.downloaded += outcome.downloaded;
                summary.downloaded_bytes += outcome.downloaded_bytes;
                summary.failures.extend(outcome.failures);
                for dep in outcome.deps {
                    let dep = dep.to_ascii_lowercase();
                    if self.selection.follows(&dep) && seen.insert(dep.clone()) {
                        next.push(dep);
                    }
                }
            }
            frontier = next;
        }
        summary.requests = self.upstreams.requests_made() - requests_before;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        self.write_status(&summary).await?;
        info!(
            registry = %self.name,
            crates = summary.crates,
            versions = summary.versions,
            downloaded = summary.downloaded,
            downloaded_bytes = summary.downloaded_bytes,
            requests = summary.requests,
            failures = summary.failures.len(),
            duration_ms = summary.duration_ms,
            "sync pass finished"
        );
        Ok(summary)
    }

    fn key(&self, rest: &str) -> BlobKey {
        BlobKey::new(format!("{}/{rest}", self.name)).expect("validated parts make a valid key")
    }

    async fn put_if_changed(&self, key: &BlobKey, bytes: Bytes) -> Result<bool, SyncError> {
        if self.store.get(key).await?.as_ref() == Some(&bytes) {
            return Ok(false);
        }
        self.store.put(key, bytes).await?;
        Ok(true)
    }

    async fn sync_crate(&self, name: &str) -> Result<CrateOutcome, SyncError> {
        let mut outcome = CrateOutcome::default();
        let krate = match CrateName::new(name) {
            Ok(krate) => krate,
            Err(e) => {
                outcome.failures.push(format!("{name}: {e}"));
                return Ok(outcome);
            }
        };
        let path = IndexPath::for_name(&krate);
        // The upstream's file as it was last seen, and its validators: the
        // cursor of a sparse mirror, one per index file.
        let raw_key = self.key(&format!(".sync/upstream/{path}"));
        let meta_key = self.key(&format!(".sync/upstream/{path}.validators.json"));
        let previous = self.store.get(&raw_key).await?;
        let validators: Option<Validators> = match &previous {
            Some(_) => self
                .store
                .get(&meta_key)
                .await?
                .and_then(|raw| serde_json::from_slice(&raw).ok()),
            None => None,
        };
        let (raw, fresh_validators, raw_changed) = match self
            .upstreams
            .fetch_index(path.as_str(), validators.as_ref())
            .await
        {
            Ok(IndexFetch::Modified { body, validators }) => {
                let changed = previous.as_ref() != Some(&body);
                (body, validators, changed)
            }
            Ok(IndexFetch::NotModified { validators }) => match previous {
                Some(previous) => (previous, validators, false),
                None => {
                    outcome.failures.push(format!(
                        "{name}: upstream answered 304 to an unconditional request"
                    ));
                    return Ok(outcome);
                }
            },
            Ok(IndexFetch::NotFound) => {
                outcome
                    .failures
                    .push(format!("{name}: upstream has no such crate"));
                return Ok(outcome);
            }
            Err(e) => {
                outcome.failures.push(format!("{name}: index file: {e}"));
                return Ok(outcome);
            }
        };

        let lines: Vec<&[u8]> = raw
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let parsed: Vec<_> = lines.iter().map(|l| parse_line(l)).collect();
        let versions: Vec<&str> = parsed
            .iter()
            .map(|p| p.as_ref().map_or("", |p| p.vers.as_str()))
            .collect();
        let mut published = Vec::new();
        for i in self.selection.pick(name, &versions) {
            let (Some(line), raw_line) = (&parsed[i], lines[i]) else {
                // A line wharf cannot read cannot be verified: left out.
                continue;
            };
            if !self.selection.is_exact(name) {
                outcome.deps.extend(same_registry_deps(raw_line));
            }
            // Upstream text becomes a storage key only once it is a valid
            // name and version, of the crate this index file is for.
            let valid = CrateName::new(&line.name)
                .ok()
                .filter(|n| n.lowercase() == krate.lowercase())
                .zip(Version::new(&line.vers).ok());
            let Some((line_name, line_vers)) = valid else {
                outcome.failures.push(format!(
                    "{name}: the index holds a line for `{}` `{}`, which is not a version of this crate; left out",
                    line.name.escape_debug(),
                    line.vers.escape_debug()
                ));
                continue;
            };
            let key = BlobKey::new(format!(
                "{}/crates/{line_name}/{line_name}-{line_vers}.crate",
                self.name
            ))
            .expect("validated parts make a valid key");
            if !self.store.exists(&key).await? {
                match self
                    .upstreams
                    .download_crate(
                        &line.name,
                        &line.vers,
                        &line.cksum,
                        self.store.as_ref(),
                        &key,
                    )
                    .await
                {
                    Ok(done) => {
                        outcome.downloaded += 1;
                        outcome.downloaded_bytes += done.size_bytes;
                    }
                    Err(FetchError::Store(e)) => return Err(e.into()),
                    Err(e) => {
                        warn!(registry = %self.name, krate.name = %line.name, krate.vers = %line.vers, error = %e, "crate file not mirrored");
                        outcome
                            .failures
                            .push(format!("{} {}: {e}", line.name, line.vers));
                        continue;
                    }
                }
            }
            published.push(raw_line);
        }

        // Only now, with every crate file it names in place, the index file.
        if !published.is_empty() {
            let mut file = Vec::with_capacity(raw.len());
            for line in &published {
                file.extend_from_slice(line);
                file.push(b'\n');
            }
            self.put_if_changed(&self.key(&format!("index/{path}")), Bytes::from(file))
                .await?;
        }
        // The cursor moves last: a crash before this re-reads the same file.
        // A pass where nothing changed upstream writes nothing here.
        if raw_changed {
            self.store.put(&raw_key, raw.clone()).await?;
        }
        if validators.as_ref() != Some(&fresh_validators) {
            let v = serde_json::to_vec(&fresh_validators).expect("validators serialise");
            self.store.put(&meta_key, Bytes::from(v)).await?;
        }
        outcome.published = published.len();
        outcome.synced = true;
        Ok(outcome)
    }

    async fn write_status(&self, summary: &Summary) -> Result<(), SyncError> {
        let key = self.key("status.json");
        let previous: Option<Status> = self
            .store
            .get(&key)
            .await?
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let status = Status {
            last_sync: now,
            last_success: if summary.failures.is_empty() {
                Some(now)
            } else {
                previous.and_then(|p| p.last_success)
            },
            crates: summary.crates,
            versions: summary.versions,
            failures: summary.failures.len(),
            upstreams: self.upstream_urls.clone(),
            cursor: None,
            generator: format!("wharf {}", env!("CARGO_PKG_VERSION")),
        };
        let body = serde_json::to_vec_pretty(&status).expect("status serialises");
        self.store.put(&key, Bytes::from(body)).await?;
        Ok(())
    }
}
