//! Traffic statistics and per-client download counts, counted in memory on
//! the request path and written to each registry's database in batches:
//! every `[stats] flush_interval`, and once more when the server stops.
//!
//! Counting a download is a map lookup and an addition under a short
//! uncontended lock; nothing on the request path waits for the database.
//! Requests and bytes per day cost nothing more: a flush reads how far the
//! request metrics' counters moved since the last one.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing::warn;
use wharf_db::{ClientId, DayCounts, Db, User, VersionCount};

use crate::metrics::RequestMetrics;

/// The environment variable that fixes the time statistics are counted at,
/// for tests only: an RFC 3339 time (`2026-11-30T12:00:00Z`). `wharf serve`
/// and `wharf stats` read it; a server never needs it.
pub const TEST_NOW_VAR: &str = "WHARF_TEST_NOW";

/// How many maps a registry's counts are spread over, each under its own
/// lock, so that the threads serving downloads rarely wait for each other.
const SHARDS: usize = 8;

/// How often days past the retention (and past day keys) are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The time statistics are counted at: the system's, or one a test set.
#[derive(Debug)]
pub struct Clock {
    /// A fixed time in Unix milliseconds, or `i64::MIN` for the system's.
    fixed_ms: AtomicI64,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            fixed_ms: AtomicI64::new(i64::MIN),
        }
    }
}

impl Clock {
    /// Now.
    pub fn now(&self) -> SystemTime {
        match self.fixed_ms.load(Ordering::Relaxed) {
            i64::MIN => SystemTime::now(),
            ms => UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
        }
    }

    /// Fixes the time (tests).
    pub fn set(&self, at: SystemTime) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX - 1));
        self.fixed_ms.store(ms, Ordering::Relaxed);
    }
}

/// The time [`TEST_NOW_VAR`] names, if it is set.
pub fn test_now_from_env() -> anyhow::Result<Option<SystemTime>> {
    match std::env::var(TEST_NOW_VAR) {
        Ok(text) => humantime::parse_rfc3339_weak(&text).map(Some).map_err(|e| {
            anyhow::anyhow!("{TEST_NOW_VAR} `{text}` is not a time like 2026-11-30T12:00:00Z: {e}")
        }),
        Err(_) => Ok(None),
    }
}

/// Who downloaded a crate file.
pub enum Downloader<'a> {
    /// A principal of a registry that checks credentials; `client` when it
    /// is a client (`wharf clients add`), whose downloads are counted per
    /// client too.
    Named {
        /// The user or client name.
        user: &'a User,
        /// Whether it is a client.
        client: bool,
    },
    /// Anyone, from this address (unknown when the server cannot tell).
    Anonymous(Option<IpAddr>),
}

/// The counts and database of every registry, and when to write them.
pub struct StatsRecorder {
    clock: Clock,
    enabled: bool,
    retention_days: u64,
    flush_interval: Duration,
    registries: HashMap<String, RegistryStats>,
}

struct RegistryStats {
    db: Db,
    /// What was counted since the last flush, by day number; a thread
    /// always counts into the same shard.
    pending: [Mutex<BTreeMap<u64, DayPending>>; SHARDS],
    /// The request metrics' (requests, bytes) of the registry at the last flush.
    requests_seen: Mutex<(u64, u64)>,
}

/// What one registry counted on one day (by day number) since the last flush.
/// Its maps hash with foldhash: keys are hashed on every download, and a
/// flood of made-up keys is bounded before it gets here (only crate files
/// that exist are counted, and addresses are the peers' own).
#[derive(Default)]
struct DayPending {
    /// Crate → version → (downloads, bytes).
    versions: foldhash::HashMap<String, foldhash::HashMap<String, (u64, u64)>>,
    clients: foldhash::HashSet<ClientId>,
    /// (client, crate, version) → downloads, for `wharf clients downloads`.
    by_client: foldhash::HashMap<(User, String, String), u64>,
}

impl StatsRecorder {
    /// A recorder for the registries of `databases` (each with its
    /// database), under `config`.
    pub fn new(config: &wharf_config::Stats, databases: Vec<(String, Db)>) -> Self {
        Self {
            clock: Clock::default(),
            enabled: config.enabled,
            retention_days: config.retention.as_secs().div_ceil(86_400),
            flush_interval: config.flush_interval,
            registries: databases
                .into_iter()
                .map(|(name, db)| {
                    (
                        name,
                        RegistryStats {
                            db,
                            pending: std::array::from_fn(|_| Mutex::default()),
                            requests_seen: Mutex::default(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Whether traffic statistics are kept.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The clock days are counted by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The database registry `name`'s statistics are in, when kept.
    pub fn db(&self, name: &str) -> Option<&Db> {
        self.registries
            .get(name)
            .filter(|_| self.enabled)
            .map(|r| &r.db)
    }

    /// Today, as a day number since 1970-01-01.
    pub fn today(&self) -> u64 {
        day_number(self.clock.now())
    }

    /// Counts one download of `krate` `vers` (`bytes` long) from `registry`.
    pub fn count_download(
        &self,
        registry: &str,
        krate: &str,
        vers: &str,
        bytes: u64,
        who: Downloader<'_>,
    ) {
        let per_client = matches!(who, Downloader::Named { client: true, .. });
        if !self.enabled && !per_client {
            return;
        }
        let Some(stats) = self.registries.get(registry) else {
            return;
        };
        let day = self.today();
        let mut pending = stats.pending[crate::shards::thread_number() % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let today = pending.entry(day).or_default();
        if let Downloader::Named { user, client: true } = who {
            *today
                .by_client
                .entry((user.clone(), krate.to_owned(), vers.to_owned()))
                .or_default() += 1;
        }
        if !self.enabled {
            return;
        }
        // Looked up before inserting, so that a crate counted already
        // costs no allocation.
        let counts = match today.versions.get_mut(krate) {
            Some(versions) => versions,
            None => today.versions.entry(krate.to_owned()).or_default(),
        };
        let count = match counts.get_mut(vers) {
            Some(count) => count,
            None => counts.entry(vers.to_owned()).or_default(),
        };
        count.0 += 1;
        count.1 += bytes;
        let client = match who {
            Downloader::Named { user, .. } => Some(ClientId::Named(user.as_str().to_owned())),
            Downloader::Anonymous(addr) => addr.map(ClientId::Address),
        };
        if let Some(client) = client {
            today.clients.insert(client);
        }
    }

    /// Writes what was counted since the last flush; what a database
    /// refused is logged and dropped.
    pub async fn flush(&self, requests: Option<&RequestMetrics>) {
        for (name, stats) in &self.registries {
            let mut pending: BTreeMap<u64, DayPending> = BTreeMap::new();
            for shard in &stats.pending {
                let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
                for (day, counted) in taken {
                    pending.entry(day).or_default().merge(counted);
                }
            }
            let mut days: BTreeMap<u64, DayCounts> = BTreeMap::new();
            if self.enabled
                && let Some((requests, bytes)) = requests.and_then(|r| r.totals(name))
            {
                let mut seen = stats
                    .requests_seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let delta = (
                    requests.saturating_sub(seen.0),
                    bytes.saturating_sub(seen.1),
                );
                *seen = (requests, bytes);
                if delta != (0, 0) {
                    let today = days.entry(self.today()).or_default();
                    today.requests = delta.0;
                    today.request_bytes = delta.1;
                }
            }
            for (day, counted) in pending {
                for ((user, krate, vers), count) in &counted.by_client {
                    if let Err(e) = stats
                        .db
                        .clients(name)
                        .add_downloads(user, krate, vers, &wharf_db::day_name(day), *count)
                        .await
                    {
                        warn!(registry = name, client = %user, krate.name = krate, error = %e, "could not count a client's downloads");
                    }
                }
                let counts = days.entry(day).or_default();
                counts.downloads = counted
                    .versions
                    .into_iter()
                    .flat_map(|(krate, versions)| {
                        versions
                            .into_iter()
                            .map(move |(vers, (downloads, bytes))| VersionCount {
                                krate: krate.clone(),
                                vers,
                                downloads,
                                bytes,
                            })
                    })
                    .collect();
                counts.clients = counted.clients.into_iter().collect();
            }
            if !self.enabled {
                continue;
            }
            for (day, mut counts) in days {
                counts.day = wharf_db::day_name(day);
                if let Err(e) = stats.db.stats(name).record(&counts).await {
                    warn!(registry = name, day = counts.day, error = %e, "could not write traffic statistics");
                }
            }
        }
    }

    /// Deletes days past the retention, and day keys of days that are over.
    pub async fn prune(&self) {
        if !self.enabled {
            return;
        }
        let today = self.today();
        let before = wharf_db::day_name(today.saturating_sub(self.retention_days));
        let yesterday = wharf_db::day_name(today.saturating_sub(1));
        for (name, stats) in &self.registries {
            if let Err(e) = stats.db.stats(name).prune(&before, &yesterday).await {
                warn!(registry = name, error = %e, "could not delete old traffic statistics");
            }
        }
    }

    /// Flushes every `flush_interval` and prunes every hour until `stop`
    /// is cancelled, then flushes once more. A flush under way is never cut.
    pub async fn run(
        self: Arc<Self>,
        requests: Option<Arc<RequestMetrics>>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut flush = tokio::time::interval(self.flush_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = flush.tick() => {}
                () = stop.cancelled() => break,
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.prune().await;
                last_prune = Some(tokio::time::Instant::now());
            }
            self.flush(requests.as_deref()).await;
        }
        self.flush(requests.as_deref()).await;
    }
}

impl DayPending {
    /// Adds what another shard counted.
    fn merge(&mut self, other: DayPending) {
        for (krate, versions) in other.versions {
            let mine = self.versions.entry(krate).or_default();
            for (vers, (downloads, bytes)) in versions {
                let count = mine.entry(vers).or_default();
                count.0 += downloads;
                count.1 += bytes;
            }
        }
        self.clients.extend(other.clients);
        for (key, count) in other.by_client {
            *self.by_client.entry(key).or_default() += count;
        }
    }
}

/// The day number of `at`: whole days since 1970-01-01, UTC.
fn day_number(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}
