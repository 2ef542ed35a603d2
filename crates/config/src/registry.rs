//! The registries a server mounts: what each kind is configured with
//! (cache, mirror, hosted), and their defaults.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{CRATES_IO_SPARSE, CrateDownloads, Policy};

/// One registry: what it is and where its content comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
// Parsed once at start; the size of a variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Registry {
    /// A pull-through cache of one or more upstream sparse indexes.
    Cache(CacheRegistry),
    /// A copy of (a selection of) an upstream, kept up to date by `wharf sync`.
    Mirror(MirrorRegistry),
    /// A private registry that cargo publishes to: its metadata in a database.
    Hosted(HostedRegistry),
}

/// A hosted (private) registry: `cargo publish`, `yank`, `owner`, `search`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostedRegistry {
    /// Where its metadata lives: `postgres://user@host/db`, or
    /// `sqlite:///path/wharf.db`. Defaults to `{data_dir}/wharf.db`, a
    /// database shared by every hosted registry of this server.
    #[serde(default)]
    pub database_url: Option<String>,
    /// The largest `.crate` accepted by `cargo publish` (crates.io's limit
    /// is 10 MiB); a larger one is refused with 413.
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: u64,
    /// Every request (index, downloads, API) needs a token; without one the
    /// answer is 401, which starts cargo's login flow.
    #[serde(default)]
    pub auth_required: bool,
    /// `redirect` answers crate downloads with a redirect to the object in
    /// the bucket instead of sending its bytes (`[storage] kind = "s3"`
    /// only); `stream` (the default) sends them.
    #[serde(default)]
    pub crate_downloads: CrateDownloads,
    /// How long a presigned download URL stays valid (redirects of a
    /// registry that requires credentials are always presigned).
    #[serde(default = "default_download_url_expiry", with = "humantime_serde")]
    pub download_url_expiry: Duration,
}

fn default_download_url_expiry() -> Duration {
    Duration::from_secs(300)
}

fn default_max_upload_bytes() -> u64 {
    10 << 20
}

impl HostedRegistry {
    /// The database URL, with the default filled in for `data_dir`.
    pub fn database_url(&self, data_dir: &Path) -> String {
        database_url_or_default(self.database_url.as_deref(), data_dir)
    }
}

/// `url`, or the embedded database of `data_dir` that every registry shares
/// when none is configured.
fn database_url_or_default(url: Option<&str>, data_dir: &Path) -> String {
    url.map(str::to_owned)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("wharf.db").display()))
}

impl Registry {
    /// The database of its tokens, clients, approvals (and, hosted, crates),
    /// with the default filled in for `data_dir`.
    pub fn database_url(&self, data_dir: &Path) -> String {
        let url = match self {
            Self::Cache(cache) => cache.database_url.as_deref(),
            Self::Mirror(mirror) => mirror.database_url.as_deref(),
            Self::Hosted(hosted) => hosted.database_url.as_deref(),
        };
        database_url_or_default(url, data_dir)
    }

    /// Whether every request needs credentials.
    pub fn auth_required(&self) -> bool {
        match self {
            Self::Cache(cache) => cache.auth_required,
            Self::Mirror(mirror) => mirror.auth_required,
            Self::Hosted(hosted) => hosted.auth_required,
        }
    }

    /// How it answers crate downloads, and how long a presigned URL lasts.
    pub fn crate_downloads(&self) -> (CrateDownloads, Duration) {
        match self {
            Self::Cache(cache) => (cache.crate_downloads, cache.download_url_expiry),
            Self::Mirror(mirror) => (mirror.crate_downloads, mirror.download_url_expiry),
            Self::Hosted(hosted) => (hosted.crate_downloads, hosted.download_url_expiry),
        }
    }

    /// Its policy; hosted registries have none (their owners decide what is
    /// published).
    pub fn policy(&self) -> Option<&Policy> {
        match self {
            Self::Cache(cache) => cache.policy.as_ref(),
            Self::Mirror(mirror) => mirror.policy.as_ref(),
            Self::Hosted(_) => None,
        }
    }

    /// Whether it needs the database: hosted registries always, others for
    /// clients or approvals, and a mirror with a `database_url` for the lease
    /// of its passes.
    pub fn needs_database(&self) -> bool {
        matches!(self, Self::Hosted(_))
            || matches!(self, Self::Mirror(m) if m.database_url.is_some())
            || self.auth_required()
            || self
                .policy()
                .is_some_and(|p| p.approval || p.judges_owners())
    }
}

/// A mirror registry: a tree of index and crate files written by `wharf sync`
/// and served read-only (by wharf, or by any static file server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorRegistry {
    /// Sparse index URLs tried in order.
    #[serde(default = "default_upstreams")]
    pub upstreams: Vec<String>,
    /// Bound on connecting and receiving the first byte, per attempt.
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// First wait before probing an upstream that was marked down.
    #[serde(default = "default_probe_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// A git index to enumerate every crate from and follow changes with
    /// (`https://github.com/rust-lang/crates.io-index`). With it, a mirror
    /// without plain names in `include` holds every crate the globs in
    /// `include` match (all crates when `include` is empty).
    #[serde(default)]
    pub index_git: Option<String>,
    /// Bound on connecting to `index_git`, on the wait for each of its
    /// responses and on each read of a body. Longer than `upstream_timeout`:
    /// a git host may think for seconds before it starts sending a first
    /// clone of a large index.
    #[serde(default = "default_git_timeout", with = "humantime_serde")]
    pub git_timeout: Duration,
    /// Crates to mirror: plain names are mirrored with their dependencies;
    /// globs (`serde*`) filter the crates found that way (or, with
    /// `index_git` and no plain names, select crates from the whole index).
    #[serde(default)]
    pub include: Vec<String>,
    /// Crates never mirrored (globs), even as dependencies.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// A file with one crate name per line (`#` starts a comment).
    #[serde(default)]
    pub list_file: Option<PathBuf>,
    /// `Cargo.lock` files whose crates.io packages are mirrored (at least
    /// their locked versions), with their dependencies.
    #[serde(default)]
    pub lockfiles: Vec<PathBuf>,
    /// Keep only the newest N versions of each crate (locked versions are
    /// always kept). All versions when absent.
    #[serde(default)]
    pub keep_versions: Option<usize>,
    /// How often `wharf serve` runs a sync pass; never when absent.
    #[serde(default, with = "humantime_serde")]
    pub sync_interval: Option<Duration>,
    /// An RSS feed of recent updates (`https://static.crates.io/rss/updates.xml`),
    /// polled between passes: the crates it names are revalidated with
    /// conditional requests.
    #[serde(default)]
    pub feed_url: Option<String>,
    /// An ed25519 key made by `wharf keys generate`: each pass then writes a
    /// signed `manifest.json` of the tree, so clients that pin the public
    /// key can tell a tampered mirror from a stale one.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// How often `wharf serve` polls `feed_url`; never when absent.
    #[serde(default, with = "humantime_serde")]
    pub feed_interval: Option<Duration>,
    /// How often `wharf serve` revalidates every index file with conditional
    /// requests (at the request rate), so that nothing missed stays missed.
    #[serde(default = "default_reconcile_interval", with = "humantime_serde")]
    pub reconcile_interval: Option<Duration>,
    /// The URL the tree is served at, for `dl` in config.json
    /// (`https://mirror.example.org/crates-io`). Defaults to `{public_url}/{name}`.
    #[serde(default)]
    pub static_url: Option<String>,
    /// A contact (email or URL) sent in the User-Agent, so the upstream's
    /// operators can reach the mirror's.
    #[serde(default)]
    pub contact: Option<String>,
    /// At most this many upstream requests at once.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// At most this many upstream requests per second.
    #[serde(default = "default_max_requests_per_sec")]
    pub max_requests_per_sec: f64,
    /// At most this many bytes per second from upstream; unlimited when absent.
    #[serde(default)]
    pub max_bytes_per_sec: Option<u64>,
    /// Every request (index, downloads) needs credentials of a client made
    /// with `wharf clients add`; without them the answer is 401, which
    /// starts cargo's login flow.
    #[serde(default)]
    pub auth_required: bool,
    /// Where clients and approvals live: `postgres://user@host/db`, or
    /// `sqlite:///path/wharf.db`. Defaults to `{data_dir}/wharf.db`. When
    /// set, every instance (and `wharf sync`) on it runs this mirror's
    /// passes one at a time, under a lease kept in it.
    #[serde(default)]
    pub database_url: Option<String>,
    /// How often the instance running a pass renews its lease; another
    /// instance takes over a lease not renewed for twice this.
    #[serde(default = "default_lease_heartbeat", with = "humantime_serde")]
    pub lease_heartbeat: Duration,
    /// What gets through to cargo: allow and deny rules, licences, approval.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// `redirect` answers crate downloads with a redirect to the object in
    /// the bucket instead of sending its bytes (`[storage] kind = "s3"`
    /// only); `stream` (the default) sends them.
    #[serde(default)]
    pub crate_downloads: CrateDownloads,
    /// How long a presigned download URL stays valid (redirects of a
    /// registry that requires credentials are always presigned).
    #[serde(default = "default_download_url_expiry", with = "humantime_serde")]
    pub download_url_expiry: Duration,
}

fn default_lease_heartbeat() -> Duration {
    Duration::from_secs(5)
}

fn default_hedge_after() -> Option<Duration> {
    Some(Duration::from_millis(500))
}

fn default_reconcile_interval() -> Option<Duration> {
    Some(Duration::from_secs(7 * 24 * 3600))
}

fn default_max_concurrency() -> usize {
    8
}
fn default_max_requests_per_sec() -> f64 {
    20.0
}

/// A pull-through cache registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRegistry {
    /// Sparse index URLs tried in order (`sparse+https://index.crates.io/`).
    #[serde(default = "default_upstreams")]
    pub upstreams: Vec<String>,
    /// Bound on connecting and receiving the first byte, per attempt.
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// How long a cached index file is served without asking upstream.
    #[serde(default = "default_index_ttl", with = "humantime_serde")]
    pub index_ttl: Duration,
    /// How long "no such crate" from upstream is remembered.
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// First wait before probing an upstream that was marked down; it doubles
    /// up to a minute while the upstream stays down.
    #[serde(default = "default_probe_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// When the first upstream has not answered within this, the next one
    /// is asked too and the first answer wins (a dead or slow first mirror
    /// then costs this once, not a timeout). Leave out for strict order.
    #[serde(default = "default_hedge_after", with = "humantime_serde")]
    pub hedge_after: Option<Duration>,
    /// Every request (index, downloads) needs credentials of a client made
    /// with `wharf clients add`; without them the answer is 401, which
    /// starts cargo's login flow.
    #[serde(default)]
    pub auth_required: bool,
    /// Where clients and approvals live: `postgres://user@host/db`, or
    /// `sqlite:///path/wharf.db`. Defaults to `{data_dir}/wharf.db`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// What gets through to cargo: allow and deny rules, licences, approval.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// At most this many requests to the upstreams at once; more wait.
    #[serde(default = "default_upstream_max_concurrency")]
    pub upstream_max_concurrency: usize,
    /// At most this many requests to the upstreams per second; a request
    /// that would wait more than a few seconds for its turn is answered 429.
    #[serde(default = "default_upstream_requests_per_sec")]
    pub upstream_requests_per_sec: f64,
    /// How many requests to the upstreams may start at once after a quiet
    /// spell before `upstream_requests_per_sec` spaces them: enough for one
    /// cold `cargo fetch` of a large project to go as fast as cargo would
    /// straight from the upstream.
    #[serde(default = "default_upstream_requests_burst")]
    pub upstream_requests_burst: u32,
    /// How many fetches from upstream one client address may cause at once
    /// by asking for what is not cached (index files and crate files not in
    /// memory or storage, names not remembered as missing). Over it, the
    /// answer is 429 with `Retry-After`. Hits and remembered 404s are never
    /// counted. 0 turns the budget off.
    #[serde(default = "default_client_miss_burst")]
    pub client_miss_burst: u32,
    /// How fast a client address's budget of misses refills, per second.
    #[serde(default = "default_client_misses_per_sec")]
    pub client_misses_per_sec: f64,
    /// `redirect` answers crate downloads with a redirect to the object in
    /// the bucket instead of sending its bytes (`[storage] kind = "s3"`
    /// only); `stream` (the default) sends them.
    #[serde(default)]
    pub crate_downloads: CrateDownloads,
    /// How long a presigned download URL stays valid (redirects of a
    /// registry that requires credentials are always presigned).
    #[serde(default = "default_download_url_expiry", with = "humantime_serde")]
    pub download_url_expiry: Duration,
}

fn default_upstream_max_concurrency() -> usize {
    32
}
fn default_upstream_requests_per_sec() -> f64 {
    100.0
}
fn default_upstream_requests_burst() -> u32 {
    1000
}
fn default_client_miss_burst() -> u32 {
    1000
}
fn default_client_misses_per_sec() -> f64 {
    10.0
}

impl Default for CacheRegistry {
    fn default() -> Self {
        Self {
            upstreams: default_upstreams(),
            upstream_timeout: default_upstream_timeout(),
            index_ttl: default_index_ttl(),
            negative_ttl: default_negative_ttl(),
            probe_interval: default_probe_interval(),
            hedge_after: default_hedge_after(),
            auth_required: false,
            database_url: None,
            policy: None,
            upstream_max_concurrency: default_upstream_max_concurrency(),
            upstream_requests_per_sec: default_upstream_requests_per_sec(),
            upstream_requests_burst: default_upstream_requests_burst(),
            client_miss_burst: default_client_miss_burst(),
            client_misses_per_sec: default_client_misses_per_sec(),
            crate_downloads: CrateDownloads::Stream,
            download_url_expiry: default_download_url_expiry(),
        }
    }
}

fn default_upstreams() -> Vec<String> {
    vec![CRATES_IO_SPARSE.to_owned()]
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_git_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_index_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_negative_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_probe_interval() -> Duration {
    Duration::from_secs(5)
}
