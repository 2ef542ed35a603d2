//! The registries one server mounts, each at `/{name}/`.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use anyhow::Context;
use bytes::Bytes;
use wharf_config::{Config, Registry as RegistryConfig, sparse_base};
use wharf_index::RegistryConfig as ConfigJson;
use wharf_storage::{BlobStore, FsStore};
use wharf_upstream::{Limits, UpstreamSet, UpstreamSettings};

use wharf_index::{CrateName, IndexPath, Version};
use wharf_sync::Mirror;

use crate::{
    auth::{Gate, Principal, Throttle},
    cache::{CrateFiles, IndexCache, IndexEntry, Lookup, MissBudget},
    error::ApiError,
    hosted::HostedRegistry,
    metrics::{Metrics, RequestMetrics, ServerMetrics},
    mirror::MirrorRegistry,
    policy::PolicyGate,
};

/// The longest a cache's miss waits for its turn under the registry's limits
/// toward its upstreams before it is answered 429 instead.
const UPSTREAM_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The `User-Agent` wharf sends upstream.
pub const USER_AGENT: &str = concat!("wharf/", env!("CARGO_PKG_VERSION"));

/// One mounted registry.
#[derive(Clone)]
pub enum Registry {
    /// A pull-through cache.
    Cache(Arc<CacheRegistry>),
    /// A mirror's tree, read-only.
    Mirror(Arc<MirrorRegistry>),
    /// A private registry cargo publishes to.
    Hosted(Arc<HostedRegistry>),
}

impl Registry {
    /// The `config.json` served to cargo.
    pub fn config_json(&self) -> &Bytes {
        match self {
            Self::Cache(cache) => &cache.config_json,
            Self::Mirror(mirror) => &mirror.config_json,
            Self::Hosted(hosted) => &hosted.config_json,
        }
    }

    /// The index file at sparse path `path` when memory holds it fresh: a
    /// hit, found without a future. Memory holds files under valid paths
    /// only, so a path found here needs no parsing.
    pub fn hot_index_file(&self, path: &str) -> Option<Arc<IndexEntry>> {
        match self {
            Self::Cache(cache) => cache.index.hot(path),
            Self::Mirror(mirror) => mirror.hot(path),
            Self::Hosted(hosted) => hosted.hot(path),
        }
    }

    /// An index file; what a cache must fetch for it is charged to `client`.
    pub async fn index_file(
        &self,
        path: &IndexPath,
        client: Option<std::net::IpAddr>,
    ) -> Result<Lookup, ApiError> {
        match self {
            Self::Cache(cache) => cache.index.get(path, client).await,
            Self::Mirror(mirror) => mirror.index_file(path).await,
            Self::Hosted(hosted) => hosted.index_file(path).await,
        }
    }

    /// Who may read it, and what its policy lets through.
    pub fn access(&self) -> &Access {
        match self {
            Self::Cache(cache) => &cache.access,
            Self::Mirror(mirror) => &mirror.access,
            Self::Hosted(hosted) => &hosted.access,
        }
    }

    /// Whether what it serves is for its clients only: shared caches (a CDN,
    /// a proxy) must then not keep it (`Cache-Control: private`).
    pub fn is_private(&self) -> bool {
        self.access().auth_required
    }

    /// Checks the credentials of a read, for a registry that requires them:
    /// who is reading, or `None` when anyone may.
    pub async fn authorize(
        &self,
        headers: &axum::http::HeaderMap,
        addr: Option<std::net::IpAddr>,
    ) -> Result<Option<Arc<Principal>>, ApiError> {
        let access = self.access();
        match &access.gate {
            Some(gate) if access.auth_required => {
                let authorization = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                // Boxed: a read of an open registry, the most common, then
                // carries no room for the check in its future.
                Box::pin(gate.authenticate(authorization, addr))
                    .await
                    .map(Some)
            }
            _ => Ok(None),
        }
    }

    /// A crate file; what a cache must fetch for it is charged to `client`.
    pub async fn crate_file(
        &self,
        krate: &CrateName,
        vers: &Version,
        client: Option<std::net::IpAddr>,
    ) -> Result<Bytes, ApiError> {
        match self {
            Self::Cache(cache) => cache.crates.get(krate, vers, client).await,
            Self::Mirror(mirror) => mirror.crate_file(krate, vers).await,
            Self::Hosted(hosted) => hosted.crate_file(krate, vers).await,
        }
    }
}

/// A pull-through cache registry and everything it serves.
pub struct CacheRegistry {
    /// Its name, the first path segment.
    pub name: String,
    /// The `config.json` served to cargo.
    pub config_json: Bytes,
    /// Its index files.
    pub index: Arc<IndexCache>,
    /// Its crate files.
    pub crates: Arc<CrateFiles>,
    /// Its upstreams.
    pub upstreams: UpstreamSet,
    /// Its counters.
    pub metrics: Arc<Metrics>,
    /// Who may read it, and its policy.
    pub access: Access,
}

/// Who may read a registry, and what its policy lets through to cargo.
#[derive(Default)]
pub struct Access {
    /// Checks credentials (hosted registries always have one: writes need it).
    pub gate: Option<Gate>,
    /// Whether reads need credentials too.
    pub auth_required: bool,
    /// What a cache or mirror lets through.
    pub policy: Option<PolicyGate>,
}

impl Access {
    /// The gate, policy and flag of registry `name` as configured, over `db`
    /// (which a registry that needs a database always has).
    fn of(
        name: &str,
        config: &RegistryConfig,
        login_url: &str,
        db: Option<&wharf_db::Db>,
        throttle: &Arc<Throttle>,
    ) -> Self {
        let hint = match config {
            RegistryConfig::Hosted(_) => format!(
                "registry `{name}` needs a token: the server's operator makes one with `wharf token create --registry {name} --user NAME` (or a client with `wharf clients add NAME --registry {name}`); then run `cargo login --registry {name}`"
            ),
            _ => format!(
                "registry `{name}` needs credentials: ask its operator for a client (`wharf clients add NAME --registry {name}`) and give cargo the token it prints (`cargo login --registry {name}`)"
            ),
        };
        // Hosted registries always check credentials: writes need them.
        let gate = db
            .filter(|_| matches!(config, RegistryConfig::Hosted(_)) || config.auth_required())
            .map(|db| Gate::new(name, login_url, hint, db.clone(), throttle.clone()));
        Self {
            gate,
            auth_required: config.auth_required(),
            policy: config.policy().map(|policy| {
                PolicyGate::new(
                    name,
                    policy.clone(),
                    db.filter(|_| policy.approval || policy.judges_owners())
                        .cloned(),
                    owners_api(name, config, policy),
                )
            }),
        }
    }
}

/// The web API a policy with owner rules asks: the configured one, else
/// the one the first upstream's `config.json` names.
fn owners_api(
    name: &str,
    config: &RegistryConfig,
    policy: &wharf_config::Policy,
) -> Option<wharf_upstream::OwnersApi> {
    if !policy.judges_owners() {
        return None;
    }
    let upstreams = match config {
        RegistryConfig::Cache(cache) => &cache.upstreams,
        RegistryConfig::Mirror(mirror) => &mirror.upstreams,
        RegistryConfig::Hosted(_) => return None,
    };
    let index_base = upstreams
        .first()
        .and_then(|u| sparse_base(u).ok())
        .unwrap_or_default();
    let lookup = &policy.owners_lookup;
    match wharf_upstream::OwnersApi::new(wharf_upstream::OwnersApiSettings {
        api: lookup.api.clone(),
        index_base,
        requests_per_sec: lookup.requests_per_sec,
        user_agent: lookup.user_agent.clone(),
        timeout: lookup.timeout,
    }) {
        Ok(api) => Some(api),
        Err(e) => {
            tracing::warn!(registry = name, error = %e, "owner lookups have no API");
            None
        }
    }
}

/// What every request handler can reach.
pub struct AppState {
    /// The registries by name.
    pub registries: BTreeMap<String, Registry>,
    /// The URL clients reach this server at (no trailing `/`).
    pub public_url: String,
    /// When the server started.
    pub started: Instant,
    /// The mirror list published at `/.well-known/wharf-mirrors.toml`.
    pub mirror_list: Option<Bytes>,
    /// Failed logins per client address, across registries.
    pub throttle: Arc<Throttle>,
    /// Reverse proxies whose forwarding headers name the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Bounds on client connections.
    pub connection_limits: wharf_config::Connections,
    /// Connections open, refused and timed out.
    pub connections: Arc<crate::listen::ConnectionStats>,
    /// Compressed forms of index files, by content.
    pub compressed: crate::encoding::Compressed,
    /// Where every registry's files are, for `/readyz`'s probe.
    pub store: Arc<dyn BlobStore>,
    /// Every metric at `/metrics`.
    pub metrics: ServerMetrics,
    /// How each registry with `crate_downloads = "redirect"` redirects.
    pub redirects: BTreeMap<String, crate::redirect::Redirects>,
    /// Traffic statistics and per-client downloads, counted in memory and
    /// written to each registry's database in batches.
    pub stats: Arc<crate::stats::StatsRecorder>,
    /// The request counters the request middleware records into; `None`
    /// records nothing (the benchmark sets it, to measure what recording costs).
    pub requests: Option<Arc<RequestMetrics>>,
    /// The dashboard as last rendered.
    pub dashboard: crate::actions::show_dashboard::Rendered,
}

/// How long the start-up probe of a bucket may take.
const STORE_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// The store `[storage]` names: files under `data_dir`, or an S3-compatible
/// bucket, which is checked at once (a marker written, read and deleted
/// within 10 s) so that a wrong endpoint, refused credentials or a missing
/// bucket stop the start with the service's words.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    let storage = &config.storage;
    match storage.kind {
        wharf_config::StorageKind::Fs => Ok(Arc::new(
            FsStore::open(&config.data_dir)
                .await
                .with_context(|| format!("cannot use data_dir {}", config.data_dir.display()))?,
        )),
        wharf_config::StorageKind::S3 => {
            let settings = wharf_storage::S3Settings {
                bucket: storage.bucket.clone().unwrap_or_default(),
                prefix: storage.prefix.clone().unwrap_or_default(),
                endpoint: storage.endpoint.clone(),
                region: storage
                    .region
                    .clone()
                    .unwrap_or_else(|| "us-east-1".to_owned()),
                allow_http: storage.allow_http,
                anonymous: storage.anonymous,
                timeout: storage.timeout,
                fresh_for: storage.index_cache_control.clone(),
                public_url: storage.public_url.clone(),
            };
            let store = wharf_storage::S3Store::new(&settings)?;
            wharf_storage::check(&store, STORE_CHECK).await.with_context(|| {
                format!(
                    "cannot use {} ([storage]): check the endpoint, the bucket's name and region, and the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or anonymous = true for an open bucket)",
                    store.describe()
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

impl AppState {
    /// Builds every configured registry over a store under `config.data_dir`.
    pub async fn build(config: &Config, public_url: &str) -> anyhow::Result<Self> {
        let store = open_store(config).await?;
        let public_url = public_url.trim_end_matches('/').to_owned();
        let share = config.registries.len().max(1) as u64;
        let mut registries = BTreeMap::new();
        let throttle = Arc::new(Throttle::default());
        let mut metrics = ServerMetrics::new();
        // One connection pool per database, shared by the registries in it.
        let mut databases: BTreeMap<String, wharf_db::Db> = BTreeMap::new();
        let mut hosted_by_database: BTreeMap<String, Vec<Arc<HostedRegistry>>> = BTreeMap::new();
        // Every registry with a database, for statistics and client counts.
        let mut stats_databases = Vec::new();
        for (name, registry) in &config.registries {
            // Statistics are kept in the registry's database (by default the
            // server's `wharf.db`), so with them every registry has one.
            let db = if registry.needs_database() || config.stats.enabled {
                let url = registry.database_url(&config.data_dir);
                Some(match databases.get(&url) {
                    Some(db) => db.clone(),
                    None => {
                        let db = wharf_db::Db::connect(&url)
                            .await
                            .with_context(|| format!("registry `{name}`"))?;
                        databases.insert(url, db.clone());
                        db
                    }
                })
            } else {
                None
            };
            if let Some(db) = &db {
                stats_databases.push((name.clone(), db.clone()));
            }
            let access = Access::of(
                name,
                registry,
                &format!("{public_url}/{name}/me"),
                db.as_ref(),
                &throttle,
            );
            match registry {
                RegistryConfig::Hosted(hosted) => {
                    let db = db.context("a hosted registry has a database")?;
                    let hosted = Arc::new(HostedRegistry::new(
                        name,
                        &format!("{public_url}/{name}"),
                        db,
                        store.clone(),
                        hosted.max_upload_bytes,
                        access,
                        (config.memory_index_mb << 20) / share,
                    ));
                    hosted_by_database
                        .entry(registry.database_url(&config.data_dir))
                        .or_default()
                        .push(hosted.clone());
                    registries.insert(name.clone(), Registry::Hosted(hosted));
                }
                RegistryConfig::Cache(cache) => {
                    let bases = cache
                        .upstreams
                        .iter()
                        .map(|u| sparse_base(u).map_err(anyhow::Error::msg))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let upstreams = UpstreamSet::new(UpstreamSettings {
                        bases,
                        timeout: cache.upstream_timeout,
                        probe_interval: cache.probe_interval,
                        user_agent: USER_AGENT.to_owned(),
                        max_index_bytes: 64 << 20,
                        max_crate_bytes: 1 << 30,
                        keep_in_memory_bytes: 16 << 20,
                        limits: Some(Limits {
                            max_concurrency: cache.upstream_max_concurrency,
                            requests_per_sec: cache.upstream_requests_per_sec,
                            requests_burst: cache.upstream_requests_burst,
                            bytes_per_sec: None,
                            max_wait: Some(UPSTREAM_QUEUE_WAIT),
                        }),
                        hedge_after: cache.hedge_after,
                    })
                    .map_err(anyhow::Error::msg)?;
                    metrics.observe_upstreams(name, &upstreams);
                    let counters = Arc::new(metrics.cache(name));
                    let budget = Arc::new(MissBudget::new(
                        cache.client_miss_burst,
                        cache.client_misses_per_sec,
                        counters.clone(),
                    ));
                    let index = Arc::new(IndexCache::new(
                        name,
                        store.clone(),
                        upstreams.clone(),
                        cache.index_ttl,
                        cache.negative_ttl,
                        (config.memory_index_mb << 20) / share,
                        counters.clone(),
                        budget.clone(),
                    ));
                    let crates = Arc::new(CrateFiles::new(
                        name,
                        store.clone(),
                        upstreams.clone(),
                        index.clone(),
                        (config.memory_crates_mb << 20) / share,
                        counters.clone(),
                        budget,
                    ));
                    let mut config_json = ConfigJson::for_base(&format!("{public_url}/{name}"));
                    config_json.auth_required = cache.auth_required;
                    let config_json = Bytes::from(config_json.to_json());
                    registries.insert(
                        name.clone(),
                        Registry::Cache(Arc::new(CacheRegistry {
                            name: name.clone(),
                            config_json,
                            index,
                            crates,
                            upstreams,
                            metrics: counters,
                            access,
                        })),
                    );
                }
                RegistryConfig::Mirror(mirror_config) => {
                    let mirror = Arc::new(Mirror::from_config(
                        name,
                        mirror_config,
                        store.clone(),
                        &public_url,
                        &wharf_sync::work_dir(config.work_dir(), name),
                    )?);
                    // With a database of its own, instances that share it run
                    // the passes one at a time.
                    let lease =
                        mirror_config.database_url.as_ref().and(db).map(|db| {
                            crate::PassLease::new(db, name, mirror_config.lease_heartbeat)
                        });
                    let registry = Arc::new(MirrorRegistry::new(
                        mirror,
                        store.clone(),
                        (config.memory_index_mb << 20) / share,
                        access,
                        lease,
                    ));
                    if let Some(interval) = mirror_config.sync_interval {
                        registry.schedule(
                            interval,
                            mirror_config.feed_interval,
                            mirror_config.reconcile_interval,
                        );
                    }
                    registries.insert(name.clone(), Registry::Mirror(registry));
                }
            }
        }
        let mirror_list = match &config.mirror_list {
            Some(path) => {
                Some(Bytes::from(std::fs::read(path).with_context(|| {
                    format!("cannot read mirror_list {}", path.display())
                })?))
            }
            None => None,
        };
        let connections = Arc::new(crate::listen::ConnectionStats::default());
        for (name, help, counter) in [
            (
                "wharf_auth_failures",
                "Credentials that did not verify",
                &throttle.metrics.failures,
            ),
            (
                "wharf_auth_throttled",
                "Requests refused because their address was locked out after failed logins",
                &throttle.metrics.throttled,
            ),
            (
                "wharf_auth_lockouts",
                "Lockouts of a user name from an address after too many failed logins",
                &throttle.metrics.lockouts,
            ),
            (
                "wharf_index_compressions",
                "Index file bodies compressed (each content once per encoding while it is kept)",
                crate::encoding::compressions(),
            ),
            (
                "wharf_response_sendfile_bytes",
                "Response body bytes sent with sendfile(2) from memory files, without a copy",
                crate::zero_copy::bytes_sent(),
            ),
            (
                "wharf_connections_refused",
                "Connections closed at once because [connections] max were open",
                &connections.refused,
            ),
            (
                "wharf_connections_timed_out",
                "Connections closed because a request head or body did not arrive in time",
                &connections.timed_out,
            ),
        ] {
            metrics.register_counter(name, help, counter);
        }
        for (url, hosted) in hosted_by_database {
            crate::hosted::follow_changes(&databases[&url], hosted)
                .await
                .context("cannot listen for changes on the database")?;
        }
        let requests = Some(metrics.requests(registries.keys()));
        let redirects = config
            .registries
            .iter()
            .filter_map(|(name, registry)| {
                let (downloads, expires_in) = registry.crate_downloads();
                (downloads == wharf_config::CrateDownloads::Redirect).then(|| {
                    let redirects = crate::redirect::Redirects::new(
                        store.clone(),
                        registry.auth_required(),
                        expires_in,
                    );
                    (name.clone(), redirects)
                })
            })
            .collect();
        if let Some(webhook) = &config.alert_webhook {
            crate::alerts::spawn(
                crate::alerts::AlertSettings {
                    webhook: webhook.clone(),
                    interval: config.alert_interval,
                    max_lag: config.alert_max_lag,
                    check_interval: config.alert_check_interval,
                    server: public_url.clone(),
                },
                registries.clone(),
                store.clone(),
            );
        }
        Ok(Self {
            registries,
            public_url,
            stats: Arc::new(crate::stats::StatsRecorder::new(
                &config.stats,
                stats_databases,
            )),
            started: Instant::now(),
            mirror_list,
            throttle,
            trusted_proxies: config.trusted_proxies.clone(),
            connection_limits: config.connections.clone(),
            connections,
            metrics,
            requests,
            redirects,
            // Beside the files themselves: each form is a fraction of its file.
            compressed: crate::encoding::Compressed::new((config.memory_index_mb << 20) / 4),
            store,
            dashboard: Default::default(),
        })
    }

    /// The registry mounted at `/{name}/`, or a 404 that lists the ones there are.
    pub fn registry(&self, name: &str) -> Result<&Registry, ApiError> {
        self.registries.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.registries.keys().map(String::as_str).collect();
            ApiError::not_found(format!(
                "no registry named `{}` here; this server has: {}",
                name.escape_debug(),
                known.join(", ")
            ))
        })
    }

    /// A hosted registry, or 404 naming what `name` is instead.
    pub fn hosted(&self, name: &str) -> Result<&Arc<HostedRegistry>, ApiError> {
        match self.registry(name)? {
            Registry::Hosted(hosted) => Ok(hosted),
            _ => Err(ApiError::not_found(format!(
                "registry `{}` is not a hosted registry: only hosted registries take `cargo publish`, `yank`, `owner` and `search`",
                name.escape_debug()
            ))),
        }
    }

    /// The sparse index URL of a registry, as cargo is configured with it.
    pub fn index_url(&self, name: &str) -> String {
        format!("sparse+{}/{name}/index/", self.public_url)
    }
}
