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
    time::Instant,
};

use bytes::Bytes;
use futures::{StreamExt, stream};
use gix::ObjectId;
use serde::Serialize;
use tracing::{info, warn};
use wharf_config::{MirrorRegistry, sparse_base};
use wharf_index::{CrateName, IndexPath, RegistryConfig, Version, parse_line, same_registry_deps};
use wharf_storage::{BlobKey, BlobStore, Layout, StoreError};
use wharf_upstream::{
    FetchError, IndexFetch, Limits, UpstreamSet, UpstreamSettings, Validators, redact, redact_in,
};

use crate::{
    feed,
    git::{GitHttp, GitIndex},
    selection::Selection,
};

mod lag;
mod one_crate;
mod record;
#[cfg(test)]
mod testing;
mod waves;
mod work;

use record::{Delta, State, count_lines};
pub use work::work_dir;
use work::{GitRemote, blocking, read_git};

/// Keys made of a validated registry name, sparse path, crate name and
/// version are always valid.
const VALID: &str = "validated parts make a valid key";

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
    /// When upstream's newest change was made, as upstream says (its git
    /// head's commit time, its feed's newest item), if this pass could tell.
    pub upstream_time: Option<i64>,
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

/// Where a crate's upstream index file comes from when its turn comes.
enum Origin {
    /// What was read of the git index: the file, `None` when it has no
    /// such file, or why it could not be read.
    Git(Result<Option<Vec<u8>>, String>),
    /// A conditional request to the sparse upstreams.
    Sparse,
}

/// Whether a crate whose upstream file equals its cursor is looked at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Only when upstream's file changed (the cursor makes the rest free).
    IfChanged,
    /// Always: its crate files are checked whatever the cursor says (a first
    /// pass, or a changed selection).
    Always,
}

/// Which dependencies of the crates of a wave make the next wave.
#[derive(Clone, Copy)]
enum Follow {
    /// None: each crate on its own.
    Nothing,
    /// Those the mirror does not hold yet, over the sparse upstreams.
    NotHeld,
    /// Every one the selection follows, from this source.
    All(Source),
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
                requests_burst: 1,
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
                    timeout: config.git_timeout,
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
        self.put_if_changed(
            &self.layout().config_json().expect(VALID),
            self.config_json.clone(),
        )
        .await?;

        let state_key = self.layout().sync_state().expect(VALID);
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
        let look = if fresh_start {
            Look::Always
        } else {
            Look::IfChanged
        };
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
        if let Some((index, _)) = &git {
            summary.upstream_time = lag::git_head_time(index, &self.name).await;
        }
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
                    .sync_roots(source, look, progress, &mut summary)
                    .await?;
                delta.totals()
            }
            None => {
                let delta = self
                    .sync_roots(Source::Sparse, look, progress, &mut summary)
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

    fn layout(&self) -> Layout {
        Layout::new(&self.name)
    }
}
