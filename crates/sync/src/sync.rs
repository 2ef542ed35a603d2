//! One sync pass of a mirror registry.
//!
//! A pass finds the index files to look at, then syncs each crate: its
//! selected crate files first, then its index file. Which files it looks at
//! depends on how the mirror follows upstream:
//!
//! - **Roots** (names, a list file, lockfiles): every crate reachable from the
//!   roots, read over the sparse protocol with conditional requests, or from
//!   the git index when `index_git` is set.
//! - **Listing** (`index_git` and no roots): only the files that changed in
//!   the git index since the last complete pass, found by diffing two trees.
//!
//! Per index file, the upstream copy kept under `{R}/.sync/upstream/` is the
//! cursor: it is written only once everything it names has been published,
//! so a crate whose file has not changed since is skipped without a look at
//! its crate files. The git cursor (the synced tree) moves only after a pass
//! without failures.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures::{StreamExt, stream};
use gix::ObjectId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use wharf_config::{MirrorRegistry, sparse_base};
use wharf_index::{CrateName, IndexPath, RegistryConfig, Version, parse_line, same_registry_deps};
use wharf_storage::{BlobKey, BlobStore, StoreError};
use wharf_upstream::{
    FetchError, IndexFetch, Limits, UpstreamSet, UpstreamSettings, Validators, redact, redact_in,
};

use crate::{
    feed,
    git::{GitError, GitHttp, GitIndex},
    selection::Selection,
};

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
    /// Another pass of the same mirror is running.
    #[error("another sync pass of mirror `{0}` is running (its lock is {1}); wait for it to end")]
    Busy(String, PathBuf),
    /// The pass asked for needs something the mirror lacks.
    #[error("{0}")]
    Unsupported(String),
    /// The git index could not be cloned, fetched or read.
    #[error("git index {url}: {message}")]
    Git {
        /// The `index_git` URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// Which kind of pass to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PassKind {
    /// Everything that may have changed: what the git index changed since
    /// the last pass, or every crate reachable from the roots.
    #[default]
    Full,
    /// Only the crates an RSS feed names since the last poll, revalidated
    /// with conditional requests (and the crates that failed last time).
    Feed,
    /// Every index file the mirror holds, revalidated against the sparse
    /// upstreams with conditional requests at the request rate.
    Reconcile,
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The kind of pass.
    pub kind: PassKind,
    /// Index files looked at in this pass.
    pub crates: usize,
    /// Index files whose published content changed (or that were removed).
    pub changed: usize,
    /// Crates and versions the tree serves after the pass.
    pub total_crates: usize,
    /// See `total_crates`.
    pub total_versions: usize,
    /// Crate files downloaded in this pass.
    pub downloaded: usize,
    /// Bytes of crate files downloaded in this pass.
    pub downloaded_bytes: u64,
    /// HTTP requests sent to the sparse upstreams (a git fetch is not counted).
    pub requests: u64,
    /// Whether the git index was fetched.
    pub git_fetched: bool,
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
    /// How long the last pass took (absent in trees of older versions).
    #[serde(default)]
    duration_ms: Option<u64>,
    /// Where the mirror syncs from, and how far it got.
    upstreams: Vec<String>,
    index_git: Option<String>,
    cursor: Option<String>,
    /// The wharf that wrote it.
    generator: String,
}

/// What the engine remembers between passes, in `{R}/.sync/state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The selection the tree was last synced with.
    selection: String,
    /// The git index tree every published file is synced to.
    git_tree: Option<String>,
    /// Crates and versions the tree serves.
    crates: usize,
    versions: usize,
    /// Crates of a listing mirror whose sync failed: looked at again next
    /// pass, whatever the git index says. This journal lets the git cursor
    /// move past a crate file that upstream lost, without losing the crate.
    #[serde(default)]
    retry: BTreeSet<String>,
    /// The items of the feed at its last poll, and its validators.
    #[serde(default)]
    feed_seen: BTreeSet<String>,
    #[serde(default)]
    feed_validators: Option<Validators>,
    /// False while a pass runs: a pass that finds it false knows the last
    /// one was killed, and counts everything again.
    complete: bool,
}

/// Where a crate's upstream index file comes from in this pass.
#[derive(Clone, Copy)]
enum Source {
    /// A conditional request to the sparse upstreams.
    Sparse,
    /// The git index: a blob found by the diff.
    Blob(ObjectId),
    /// The git index: the file at the crate's path in this tree.
    Tree(ObjectId),
}

/// Where a mirror whose tree lives in files under `data_dir` keeps what is
/// not part of the tree (its git clone): `{data_dir}/{name}/.sync`, next to
/// the cursors.
pub fn work_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(name).join(".sync")
}

/// A mirror registry and how to sync it.
pub struct Mirror {
    name: String,
    store: Arc<dyn BlobStore>,
    upstreams: UpstreamSet,
    selection: Selection,
    upstream_urls: Vec<String>,
    git: Option<GitRemote>,
    feed_url: Option<String>,
    work_dir: PathBuf,
    signing_key: Option<PathBuf>,
    config_json: Bytes,
    concurrency: usize,
    /// One pass at a time in this process (the lock file covers others).
    running: tokio::sync::Mutex<()>,
}

/// A git index and where its clone lives.
struct GitRemote {
    url: String,
    dir: PathBuf,
    /// Its requests' agent, timeout and limits.
    http: GitHttp,
    clone: tokio::sync::Mutex<Option<Arc<GitIndex>>>,
}

/// What syncing one crate produced.
#[derive(Default)]
struct CrateOutcome {
    deps: BTreeSet<String>,
    /// Lines served before and after.
    before: usize,
    after: usize,
    changed: bool,
    downloaded: usize,
    downloaded_bytes: u64,
    failures: Vec<String>,
}

/// The upstream file of one crate, as this pass sees it.
struct Fetched {
    body: Bytes,
    /// Validators to keep, for a file from the sparse upstreams.
    validators: Option<Validators>,
}

impl Mirror {
    /// A mirror named `name` configured by `config`; its tree is served at
    /// `static_url`, or `{public_url}/{name}`. `work_dir` holds what is not
    /// part of the tree (the git clone).
    pub fn from_config(
        name: &str,
        config: &MirrorRegistry,
        store: Arc<dyn BlobStore>,
        public_url: &str,
        work_dir: &Path,
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
            user_agent: user_agent.clone(),
            max_index_bytes: 64 << 20,
            max_crate_bytes: 1 << 30,
            keep_in_memory_bytes: 0,
            limits: Some(Limits {
                max_concurrency: config.max_concurrency,
                requests_per_sec: config.max_requests_per_sec,
                bytes_per_sec: config.max_bytes_per_sec,
                max_wait: None,
            }),
            // One upstream after another: a sync never doubles its requests.
            hedge_after: None,
        })
        .map_err(SyncError::Setup)?;
        let base = config
            .static_url
            .clone()
            .unwrap_or_else(|| format!("{}/{name}", public_url.trim_end_matches('/')));
        Ok(Self {
            name: name.to_owned(),
            store,
            upstreams: upstreams.clone(),
            selection: Selection::from_config(config)?,
            upstream_urls: config.upstreams.clone(),
            git: config.index_git.as_ref().map(|url| GitRemote {
                url: url.clone(),
                dir: work_dir.join("git"),
                http: GitHttp {
                    user_agent,
                    timeout: config.upstream_timeout,
                    before_request: {
                        let upstreams = upstreams.clone();
                        Arc::new(move || upstreams.before_own_request())
                    },
                },
                clone: tokio::sync::Mutex::new(None),
            }),
            feed_url: config.feed_url.clone(),
            work_dir: work_dir.to_owned(),
            signing_key: config.signing_key.clone(),
            config_json: Bytes::from(RegistryConfig::for_base(&base).to_json()),
            concurrency: config.max_concurrency.max(1),
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the mirror has a feed to poll.
    pub fn has_feed(&self) -> bool {
        self.feed_url.is_some()
    }

    /// The registry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `config.json` of the tree (its `dl` names where the tree is served).
    pub fn config_json(&self) -> &Bytes {
        &self.config_json
    }

    /// Runs one full pass; see [`Mirror::sync`].
    pub async fn sync_once(&self, progress: &dyn Progress) -> Result<Summary, SyncError> {
        self.sync(PassKind::Full, progress).await
    }

    /// Runs one pass of `kind`: every crate that needs it, its crate files
    /// before its index file; then `config.json` and `status.json`. One pass
    /// of a mirror runs at a time, across processes too.
    pub async fn sync(
        &self,
        kind: PassKind,
        progress: &dyn Progress,
    ) -> Result<Summary, SyncError> {
        let _running = self.running.lock().await;
        let _lock = self.lock_file()?;
        let started = Instant::now();
        let requests_before = self.upstreams.requests_made();
        let mut summary = Summary {
            kind,
            ..Summary::default()
        };
        self.put_if_changed(&self.key("index/config.json"), self.config_json.clone())
            .await?;

        let state_key = self.key(".sync/state.json");
        let mut state: State = self
            .store
            .get(&state_key)
            .await?
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default();
        let selection = self.selection.fingerprint();
        // Everything is looked at again when the selection changed (files
        // skipped as unchanged may now need other versions) or when the last
        // pass was killed (its counts are unknown).
        let fresh_start = state.selection != selection || !state.complete;
        let was = (state.crates, state.versions);
        let was_complete = state.complete;
        state.complete = false;
        self.put_state(&state_key, &state).await?;

        if kind == PassKind::Feed {
            let delta = self.sync_feed(&mut state, progress, &mut summary).await?;
            // A poll sees a few crates: the totals follow its changes, and a
            // recount still owed (after a killed pass) stays owed.
            (state.crates, state.versions) = delta.apply(was);
            state.complete = was_complete;
            return self
                .finish(state_key, state, summary, started, requests_before)
                .await;
        }

        let git = match &self.git {
            Some(remote) => Some(self.fetch_git(remote).await?),
            None => None,
        };
        summary.git_fetched = git.is_some();
        let synced_tree = state
            .git_tree
            .as_deref()
            .and_then(|t| ObjectId::from_hex(t.as_bytes()).ok());
        let listing = self.selection.roots.is_empty();
        let totals = match &git {
            Some((index, _)) if kind == PassKind::Reconcile && listing => {
                // Every file of the last synced tree, asked of the sparse
                // upstreams; a mirror never synced has no tree to ask about.
                let Some(tree) = synced_tree.filter(|t| index.has_tree(*t)) else {
                    return Err(SyncError::Unsupported(format!(
                        "mirror `{}` has no synced git tree to reconcile yet; run a full pass first",
                        self.name
                    )));
                };
                let (delta, failed) = self
                    .sync_listed(
                        index,
                        None,
                        tree,
                        BTreeSet::new(),
                        true,
                        progress,
                        &mut summary,
                    )
                    .await?;
                state.retry.extend(failed);
                delta.totals()
            }
            Some((_, tree))
                if kind == PassKind::Full
                    && !fresh_start
                    && synced_tree == Some(*tree)
                    && state.retry.is_empty() =>
            {
                // The index has not moved since the last complete pass.
                info!(registry = %self.name, tree = %tree, "git index unchanged");
                was
            }
            Some((index, tree)) if listing => {
                let old = synced_tree
                    .filter(|_| !fresh_start)
                    .filter(|t| index.has_tree(*t));
                let retry = std::mem::take(&mut state.retry);
                let (delta, failed) = self
                    .sync_listed(index, old, *tree, retry, false, progress, &mut summary)
                    .await?;
                state.retry = failed;
                match old {
                    None => delta.totals(),
                    Some(_) => delta.apply(was),
                }
            }
            Some((_, tree)) => {
                // Roots read from the git index, or (reconciling) asked of
                // the sparse upstreams.
                let source = match kind {
                    PassKind::Reconcile => Source::Sparse,
                    _ => Source::Tree(*tree),
                };
                let delta = self
                    .sync_roots(source, fresh_start, progress, &mut summary)
                    .await?;
                delta.totals()
            }
            None => {
                let delta = self
                    .sync_roots(Source::Sparse, fresh_start, progress, &mut summary)
                    .await?;
                delta.totals()
            }
        };
        (state.crates, state.versions) = totals;
        // A listing pass journals its failures in `retry`, so its cursor
        // moves; a pass over roots looks at every crate anyway, and moves
        // its cursor only when nothing failed.
        // A reconciliation does not move the git cursor: it saw the sparse
        // upstreams, not the git index.
        if kind == PassKind::Full && (summary.failures.is_empty() || (listing && git.is_some())) {
            state.selection = selection;
            state.git_tree = git.as_ref().map(|(_, tree)| tree.to_string());
        }
        state.complete = kind == PassKind::Full || was_complete;
        self.finish(state_key, state, summary, started, requests_before)
            .await
    }

    /// Writes the state and `status.json` at the end of a pass.
    async fn finish(
        &self,
        state_key: BlobKey,
        state: State,
        mut summary: Summary,
        started: Instant,
        requests_before: u64,
    ) -> Result<Summary, SyncError> {
        self.put_state(&state_key, &state).await?;
        summary.total_crates = state.crates;
        summary.total_versions = state.versions;
        summary.requests = self.upstreams.requests_made() - requests_before;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        self.write_status(&summary, state.git_tree.clone()).await?;
        self.sign(state.git_tree.clone()).await?;
        info!(
            registry = %self.name,
            kind = ?summary.kind,
            crates = summary.crates,
            changed = summary.changed,
            total_crates = summary.total_crates,
            total_versions = summary.total_versions,
            downloaded = summary.downloaded,
            downloaded_bytes = summary.downloaded_bytes,
            requests = summary.requests,
            failures = summary.failures.len(),
            duration_ms = summary.duration_ms,
            "sync pass finished"
        );
        Ok(summary)
    }

    /// Writes the signed manifest of the tree, when the mirror has a key.
    /// The tree is the directory that holds the work dir (`{R}/`).
    async fn sign(&self, cursor: Option<String>) -> Result<(), SyncError> {
        let (Some(key), Some(tree)) = (self.signing_key.clone(), self.work_dir.parent()) else {
            return Ok(());
        };
        let (tree, name) = (tree.to_owned(), self.name.clone());
        tokio::task::spawn_blocking(move || {
            crate::manifest::write_signed(&tree, &name, cursor, &key)
        })
        .await
        .map_err(|e| SyncError::Setup(e.to_string()))?
        .map_err(|e| SyncError::Setup(format!("cannot sign the manifest: {e}")))?;
        Ok(())
    }

    /// Clones the git index on first use, then fetches it; returns the clone
    /// and the tree upstream's `HEAD` points at.
    async fn fetch_git(&self, remote: &GitRemote) -> Result<(Arc<GitIndex>, ObjectId), SyncError> {
        let git_error = |e: GitError| SyncError::Git {
            url: redact(&remote.url),
            message: redact_in(&describe_git(&*e), &remote.url),
        };
        // The fetch holds one of the upstreams' concurrency slots while it
        // runs; each of its requests takes its turn under the request rate.
        let _slot = self
            .upstreams
            .own_slot()
            .await
            .map_err(|e| git_error(e.to_string().into()))?;
        let mut clone = remote.clone.lock().await;
        let index = match clone.as_ref() {
            Some(index) => Arc::clone(index),
            None => {
                let (url, dir) = (remote.url.clone(), remote.dir.clone());
                let http = remote.http.clone();
                let index = blocking(move || GitIndex::open_or_clone(&url, &dir, http))
                    .await
                    .map_err(git_error)?;
                Arc::clone(clone.insert(Arc::new(index)))
            }
        };
        let started = Instant::now();
        let tree = {
            let index = Arc::clone(&index);
            blocking(move || index.fetch()).await.map_err(git_error)?
        };
        info!(registry = %self.name, git.url = %redact(&remote.url), tree = %tree, duration_ms = started.elapsed().as_millis() as u64, "git index fetched");
        Ok((index, tree))
    }

    /// Syncs the index files that differ between the tree `old` (the empty
    /// tree when `None`: every file) and `new`, and the crates in `retry`;
    /// their content is read from the git index, or with `ask_sparse` asked
    /// of the sparse upstreams. Returns the change in totals and the crates
    /// that failed.
    #[allow(clippy::too_many_arguments)]
    async fn sync_listed(
        &self,
        index: &Arc<GitIndex>,
        old: Option<ObjectId>,
        new: ObjectId,
        mut retry: BTreeSet<String>,
        ask_sparse: bool,
        progress: &dyn Progress,
        summary: &mut Summary,
    ) -> Result<(Delta, BTreeSet<String>), SyncError> {
        let changes = {
            let index = Arc::clone(index);
            blocking(move || index.changes(old, new))
                .await
                .map_err(|e| {
                    let url = self.git.as_ref().map_or("", |g| g.url.as_str());
                    SyncError::Git {
                        url: redact(url),
                        message: redact_in(&e.to_string(), url),
                    }
                })?
        };
        let mut delta = Delta::default();
        let mut work = Vec::new();
        for change in changes {
            // Only canonical index paths are crates; `config.json`, READMEs
            // and CI files of the index repository are not.
            let Ok(path) = IndexPath::parse(&change.path) else {
                continue;
            };
            let name = path.name().as_str().to_owned();
            retry.remove(&name);
            if !self.selection.keeps_listed(&name) {
                continue;
            }
            match change.blob {
                Some(_) if ask_sparse => work.push((name, Source::Sparse)),
                Some(blob) => work.push((name, Source::Blob(blob))),
                None => {
                    let before = self.remove_crate(&path).await?;
                    delta.add(before, 0);
                    summary.changed += usize::from(before > 0);
                }
            }
        }
        // Crates that failed last pass and did not change since: from the
        // new tree, or removed if upstream deleted them meanwhile.
        for name in retry {
            let Ok(krate) = CrateName::new(&name) else {
                continue;
            };
            let path = IndexPath::for_name(&krate);
            let exists = {
                let (index, path) = (Arc::clone(index), path.as_str().to_owned());
                blocking(move || index.read(new, &path)).await
            };
            match exists {
                Ok(None) => {
                    let before = self.remove_crate(&path).await?;
                    delta.add(before, 0);
                }
                _ if self.selection.keeps_listed(&name) => work.push((name, Source::Tree(new))),
                _ => {}
            }
        }
        let (each, failed) = self.sync_each(work, progress, summary).await?;
        delta.merge(&each);
        Ok((delta, failed))
    }

    /// Syncs each crate of `work` (no dependencies followed). Returns the
    /// change in totals and the crates that failed.
    async fn sync_each(
        &self,
        work: Vec<(String, Source)>,
        progress: &dyn Progress,
        summary: &mut Summary,
    ) -> Result<(Delta, BTreeSet<String>), SyncError> {
        let mut delta = Delta::default();
        progress.add_total(work.len());
        let mut failed = BTreeSet::new();
        let mut outcomes = stream::iter(work)
            .map(|(name, source)| async move {
                let outcome = self.sync_crate(&name, source, false, false).await;
                progress.crate_done(&name);
                (name, outcome)
            })
            .buffer_unordered(self.concurrency);
        while let Some((name, outcome)) = outcomes.next().await {
            let outcome = outcome?;
            if !outcome.failures.is_empty() {
                failed.insert(name);
            }
            delta.add(outcome.before, outcome.after);
            summary.add(outcome);
        }
        Ok((delta, failed))
    }

    /// Polls the feed and syncs the crates it names that are new since the
    /// last poll, plus the crates that failed last time, over the sparse
    /// upstreams. A mirror of roots takes only crates it already holds, and
    /// the new dependencies those bring.
    async fn sync_feed(
        &self,
        state: &mut State,
        progress: &dyn Progress,
        summary: &mut Summary,
    ) -> Result<Delta, SyncError> {
        let Some(feed_url) = &self.feed_url else {
            return Err(SyncError::Unsupported(format!(
                "mirror `{}` has no feed_url to poll",
                self.name
            )));
        };
        // Shown and logged without credentials.
        let url = &redact(feed_url);
        let (body, validators) = match self
            .upstreams
            .fetch_document(feed_url, state.feed_validators.as_ref())
            .await
        {
            Ok(IndexFetch::Modified { body, validators }) => (body, validators),
            Ok(IndexFetch::NotModified { validators }) => {
                info!(registry = %self.name, feed.url = %url, "feed unchanged");
                (Bytes::new(), validators)
            }
            Ok(IndexFetch::NotFound) => {
                summary.failures.push(format!("feed {url}: not found"));
                return Ok(Delta::default());
            }
            Err(e) => {
                summary.failures.push(format!("feed {url}: {e}"));
                return Ok(Delta::default());
            }
        };
        // An unchanged feed has no body to read; a body that is not a feed
        // fails the poll (its validators are not kept, so the next poll asks
        // again in full).
        let items = if body.is_empty() {
            Vec::new()
        } else {
            match feed::parse(&String::from_utf8_lossy(&body)) {
                Ok(items) => items,
                Err(e) => {
                    summary.failures.push(format!("feed {url}: {e}"));
                    return Ok(Delta::default());
                }
            }
        };
        let fresh: Vec<&feed::FeedItem> = items
            .iter()
            .filter(|item| !state.feed_seen.contains(&item.id))
            .collect();
        if !body.is_empty()
            && !state.feed_seen.is_empty()
            && !items.is_empty()
            && fresh.len() == items.len()
        {
            warn!(registry = %self.name, feed.url = %url, items = items.len(), "every item of the feed is new: updates between two polls may have been missed; the next full pass or reconciliation catches them (poll more often to avoid this)");
        }
        let mut names: BTreeSet<String> = std::mem::take(&mut state.retry);
        let roots = !self.selection.roots.is_empty();
        for item in fresh {
            let name = item.name.to_ascii_lowercase();
            let wanted = if roots {
                self.selection.roots.contains(&name) || self.holds(&name).await?
            } else {
                self.selection.keeps_listed(&name)
            };
            if wanted {
                names.insert(name);
            }
        }
        info!(registry = %self.name, feed.url = %url, items = items.len(), crates = names.len(), "feed polled");
        let work: Vec<(String, Source)> = names.into_iter().map(|n| (n, Source::Sparse)).collect();
        let (delta, failed) = if roots {
            self.sync_new_closure(work, progress, summary).await?
        } else {
            self.sync_each(work, progress, summary).await?
        };
        state.retry = failed;
        if !body.is_empty() {
            state.feed_seen = items.into_iter().map(|item| item.id).collect();
        }
        state.feed_validators = Some(validators);
        Ok(delta)
    }

    /// Whether the mirror holds (has published) the crate `name`.
    async fn holds(&self, name: &str) -> Result<bool, SyncError> {
        let Ok(krate) = CrateName::new(name) else {
            return Ok(false);
        };
        let path = IndexPath::for_name(&krate);
        Ok(self
            .store
            .exists(&self.key(&format!(".sync/upstream/{path}")))
            .await?)
    }

    /// Syncs `work` and, breadth first, the dependencies it brings that the
    /// mirror does not hold yet. Returns the change in totals and the crates
    /// that failed.
    async fn sync_new_closure(
        &self,
        work: Vec<(String, Source)>,
        progress: &dyn Progress,
        summary: &mut Summary,
    ) -> Result<(Delta, BTreeSet<String>), SyncError> {
        let mut delta = Delta::default();
        let mut failed = BTreeSet::new();
        let mut seen: BTreeSet<String> = work.iter().map(|(n, _)| n.clone()).collect();
        let mut frontier = work;
        while !frontier.is_empty() {
            progress.add_total(frontier.len());
            let mut outcomes = stream::iter(frontier)
                .map(|(name, source)| async move {
                    let outcome = self.sync_crate(&name, source, false, true).await;
                    progress.crate_done(&name);
                    (name, outcome)
                })
                .buffer_unordered(self.concurrency);
            let mut next = Vec::new();
            while let Some((name, outcome)) = outcomes.next().await {
                let mut outcome = outcome?;
                for dep in std::mem::take(&mut outcome.deps) {
                    let dep = dep.to_ascii_lowercase();
                    if self.selection.follows(&dep)
                        && seen.insert(dep.clone())
                        && !self.holds(&dep).await?
                    {
                        next.push((dep, Source::Sparse));
                    }
                }
                if !outcome.failures.is_empty() {
                    failed.insert(name);
                }
                delta.add(outcome.before, outcome.after);
                summary.add(outcome);
            }
            frontier = next;
        }
        Ok((delta, failed))
    }

    /// Takes the mirror's lock file, so two processes never sync one tree
    /// at once. The lock goes with the returned file.
    fn lock_file(&self) -> Result<std::fs::File, SyncError> {
        let path = self.work_dir.join("lock");
        let open = || {
            // The work dir (cursors, the git clone, the lock) is never served:
            // private, whatever the umask.
            wharf_storage::create_private_dir(&self.work_dir)?;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        };
        let file =
            open().map_err(|e| SyncError::Setup(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(SyncError::Busy(self.name.clone(), path)),
            Err(std::fs::TryLockError::Error(e)) => Err(SyncError::Setup(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }

    /// Syncs every crate reachable from the selection's roots, breadth first:
    /// each wave's dependencies make the next wave.
    async fn sync_roots(
        &self,
        source: Source,
        force: bool,
        progress: &dyn Progress,
        summary: &mut Summary,
    ) -> Result<Delta, SyncError> {
        let mut delta = Delta::default();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut frontier: Vec<String> = self
            .selection
            .roots
            .iter()
            .filter(|r| self.selection.keeps_root(r))
            .cloned()
            .collect();
        seen.extend(frontier.iter().cloned());
        while !frontier.is_empty() {
            progress.add_total(frontier.len());
            let mut outcomes = stream::iter(frontier)
                .map(|name| async move {
                    let outcome = self.sync_crate(&name, source, force, true).await;
                    progress.crate_done(&name);
                    outcome
                })
                .buffer_unordered(self.concurrency);
            let mut next = Vec::new();
            while let Some(outcome) = outcomes.next().await {
                let mut outcome = outcome?;
                for dep in std::mem::take(&mut outcome.deps) {
                    let dep = dep.to_ascii_lowercase();
                    if self.selection.follows(&dep) && seen.insert(dep.clone()) {
                        next.push(dep);
                    }
                }
                delta.add(outcome.before, outcome.after);
                summary.add(outcome);
            }
            frontier = next;
        }
        Ok(delta)
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

    async fn put_state(&self, key: &BlobKey, state: &State) -> Result<(), SyncError> {
        let body = serde_json::to_vec(state).expect("state serialises");
        self.store.put(key, Bytes::from(body)).await?;
        Ok(())
    }

    /// Removes a crate that upstream deleted: its index file and cursor.
    /// Its crate files stay. Returns how many lines the tree served for it.
    async fn remove_crate(&self, path: &IndexPath) -> Result<usize, SyncError> {
        let index_key = self.key(&format!("index/{path}"));
        let before = self
            .store
            .get(&index_key)
            .await?
            .map_or(0, |file| count_lines(&file));
        self.store.delete(&index_key).await?;
        self.store
            .delete(&self.key(&format!(".sync/upstream/{path}")))
            .await?;
        self.store
            .delete(&self.key(&format!(".sync/upstream/{path}.validators.json")))
            .await?;
        if before > 0 {
            info!(registry = %self.name, krate.path = %path, "crate removed upstream; its index file is removed, its crate files kept");
        }
        Ok(before)
    }

    /// Reads a crate's upstream index file from `source`. `Ok(None)` means
    /// nothing more is to be done for it (a failure is recorded in `outcome`).
    async fn fetch(
        &self,
        name: &str,
        path: &IndexPath,
        source: Source,
        previous: Option<&Bytes>,
        validators_key: &BlobKey,
        outcome: &mut CrateOutcome,
    ) -> Result<Option<Fetched>, SyncError> {
        let mut git_read = |result: Result<Option<Vec<u8>>, GitError>| match result {
            Ok(Some(body)) => Ok(Some(Fetched {
                body: Bytes::from(body),
                validators: None,
            })),
            Ok(None) => {
                outcome
                    .failures
                    .push(format!("{name}: the git index has no such crate"));
                Ok(None)
            }
            Err(e) => {
                outcome
                    .failures
                    .push(format!("{name}: reading the git index: {e}"));
                Ok(None)
            }
        };
        match source {
            Source::Blob(blob) => {
                let index = self.git_clone().await;
                git_read(blocking(move || index.read_blob(blob)).await)
            }
            Source::Tree(tree) => {
                let index = self.git_clone().await;
                let path = path.as_str().to_owned();
                git_read(blocking(move || index.read(tree, &path)).await)
            }
            Source::Sparse => {
                // The validators of the copy kept, for a conditional request.
                let validators: Option<Validators> = match previous {
                    Some(_) => self
                        .store
                        .get(validators_key)
                        .await?
                        .and_then(|raw| serde_json::from_slice(&raw).ok()),
                    None => None,
                };
                match self
                    .upstreams
                    .fetch_index(path.as_str(), validators.as_ref())
                    .await
                {
                    Ok(IndexFetch::Modified { body, validators }) => Ok(Some(Fetched {
                        body,
                        validators: Some(validators),
                    })),
                    Ok(IndexFetch::NotModified { validators }) => match previous {
                        Some(previous) => Ok(Some(Fetched {
                            body: previous.clone(),
                            validators: Some(validators),
                        })),
                        None => {
                            outcome.failures.push(format!(
                                "{name}: upstream answered 304 to an unconditional request"
                            ));
                            Ok(None)
                        }
                    },
                    Ok(IndexFetch::NotFound) => {
                        outcome
                            .failures
                            .push(format!("{name}: upstream has no such crate"));
                        Ok(None)
                    }
                    Err(e) => {
                        outcome.failures.push(format!("{name}: index file: {e}"));
                        Ok(None)
                    }
                }
            }
        }
    }

    /// The git clone, which `fetch_git` opened earlier in the pass.
    async fn git_clone(&self) -> Arc<GitIndex> {
        let remote = self
            .git
            .as_ref()
            .expect("git sources come from a git remote");
        let clone = remote.clone.lock().await;
        Arc::clone(
            clone
                .as_ref()
                .expect("the pass fetched the git index first"),
        )
    }

    /// Brings one crate up to date: the selected crate files it is missing,
    /// then its index file, then its cursor. With `force`, a crate whose
    /// upstream file is unchanged is looked at anyway. With `follow`, its
    /// dependencies are returned for the caller to sync next.
    async fn sync_crate(
        &self,
        name: &str,
        source: Source,
        force: bool,
        follow: bool,
    ) -> Result<CrateOutcome, SyncError> {
        let mut outcome = CrateOutcome::default();
        let krate = match CrateName::new(name) {
            Ok(krate) => krate,
            Err(e) => {
                outcome.failures.push(format!("{name}: {e}"));
                return Ok(outcome);
            }
        };
        let path = IndexPath::for_name(&krate);
        // The upstream's file as it was when everything it names was last
        // published, and its validators: the cursor, one per index file.
        let raw_key = self.key(&format!(".sync/upstream/{path}"));
        let validators_key = self.key(&format!(".sync/upstream/{path}.validators.json"));
        let previous = self.store.get(&raw_key).await?;
        let Some(fetched) = self
            .fetch(
                name,
                &path,
                source,
                previous.as_ref(),
                &validators_key,
                &mut outcome,
            )
            .await?
        else {
            return Ok(outcome);
        };
        let raw = fetched.body;

        let lines: Vec<&[u8]> = raw
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let parsed: Vec<_> = lines.iter().map(|l| parse_line(l)).collect();
        let versions: Vec<&str> = parsed
            .iter()
            .map(|p| p.as_ref().map_or("", |p| p.vers.as_str()))
            .collect();
        let picked = self.selection.pick(name, &versions);
        if follow && !self.selection.is_exact(name) {
            for i in &picked {
                if parsed[*i].is_some() {
                    outcome.deps.extend(same_registry_deps(lines[*i]));
                }
            }
        }

        // Upstream text becomes a storage key only once it is a valid name
        // and version of the crate this index file is for; other lines are
        // left out (and logged), as wharf cannot verify them.
        let mut wanted = Vec::new();
        for i in picked {
            let Some(line) = &parsed[i] else {
                continue;
            };
            let valid = CrateName::new(&line.name)
                .ok()
                .filter(|n| n.lowercase() == krate.lowercase())
                .zip(Version::new(&line.vers).ok());
            match valid {
                Some((line_name, line_vers)) => wanted.push((i, line, line_name, line_vers)),
                None => warn!(
                    registry = %self.name,
                    krate.name = name,
                    "the index holds a line for `{}` `{}`, which is not a version of this crate; left out",
                    line.name.escape_debug(),
                    line.vers.escape_debug()
                ),
            }
        }

        // Unchanged since everything it names was published: nothing to do.
        if !force && previous.as_ref() == Some(&raw) {
            outcome.before = wanted.len();
            outcome.after = wanted.len();
            self.keep_validators(&validators_key, fetched.validators)
                .await?;
            return Ok(outcome);
        }

        let mut published = Vec::new();
        for (i, line, line_name, line_vers) in wanted {
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
            published.push(lines[i]);
        }

        // Only now, with every crate file it names in place, the index file.
        let index_key = self.key(&format!("index/{path}"));
        let old = self.store.get(&index_key).await?;
        outcome.before = old.as_ref().map_or(0, |file| count_lines(file));
        outcome.after = published.len();
        if published.is_empty() {
            // No version is served (any more): no file, so cargo sees a 404.
            if old.is_some() {
                self.store.delete(&index_key).await?;
                outcome.changed = true;
            }
        } else {
            let mut file = Vec::with_capacity(raw.len());
            for line in &published {
                file.extend_from_slice(line);
                file.push(b'\n');
            }
            let file = Bytes::from(file);
            if old.as_ref() != Some(&file) {
                self.store.put(&index_key, file).await?;
                outcome.changed = true;
            }
        }
        // The cursor moves last, and only when nothing failed: a crash or a
        // failure before this looks at the same file again next pass.
        if outcome.failures.is_empty() {
            if previous.as_ref() != Some(&raw) {
                self.store.put(&raw_key, raw.clone()).await?;
            }
            self.keep_validators(&validators_key, fetched.validators)
                .await?;
        }
        Ok(outcome)
    }

    /// Stores the validators of a sparse upstream file, when they changed.
    async fn keep_validators(
        &self,
        key: &BlobKey,
        validators: Option<Validators>,
    ) -> Result<(), SyncError> {
        let Some(validators) = validators else {
            return Ok(());
        };
        let body = Bytes::from(serde_json::to_vec(&validators).expect("validators serialise"));
        self.put_if_changed(key, body).await?;
        Ok(())
    }

    async fn write_status(
        &self,
        summary: &Summary,
        cursor: Option<String>,
    ) -> Result<(), SyncError> {
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
            crates: summary.total_crates,
            versions: summary.total_versions,
            failures: summary.failures.len(),
            duration_ms: Some(summary.duration_ms),
            upstreams: self.upstream_urls.iter().map(|u| redact(u)).collect(),
            index_git: self.git.as_ref().map(|g| redact(&g.url)),
            cursor,
            generator: format!("wharf {}", env!("CARGO_PKG_VERSION")),
        };
        let body = serde_json::to_vec_pretty(&status).expect("status serialises");
        self.store.put(&key, Bytes::from(body)).await?;
        Ok(())
    }
}

impl Summary {
    fn add(&mut self, outcome: CrateOutcome) {
        self.crates += 1;
        self.changed += usize::from(outcome.changed);
        self.downloaded += outcome.downloaded;
        self.downloaded_bytes += outcome.downloaded_bytes;
        self.failures.extend(outcome.failures);
    }
}

/// How the crates and versions served changed over the files a pass saw.
#[derive(Default)]
struct Delta {
    crates_before: usize,
    crates_after: usize,
    versions_before: usize,
    versions_after: usize,
}

impl Delta {
    fn add(&mut self, before: usize, after: usize) {
        self.crates_before += usize::from(before > 0);
        self.crates_after += usize::from(after > 0);
        self.versions_before += before;
        self.versions_after += after;
    }

    fn merge(&mut self, other: &Delta) {
        self.crates_before += other.crates_before;
        self.crates_after += other.crates_after;
        self.versions_before += other.versions_before;
        self.versions_after += other.versions_after;
    }

    /// The totals, when the pass saw every file the tree serves.
    fn totals(&self) -> (usize, usize) {
        (self.crates_after, self.versions_after)
    }

    /// The totals, from the last pass's and this pass's changes.
    fn apply(&self, (crates, versions): (usize, usize)) -> (usize, usize) {
        (
            (crates + self.crates_after).saturating_sub(self.crates_before),
            (versions + self.versions_after).saturating_sub(self.versions_before),
        )
    }
}

fn count_lines(file: &[u8]) -> usize {
    file.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count()
}

/// Runs blocking git work off the async threads.
/// A gix error with its causes, each once (gix's own message is often just
/// the outermost step, such as "Transport handshake failed").
fn describe_git(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, GitError> + Send + 'static,
) -> Result<T, GitError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("git task failed: {e}").into()))
}
