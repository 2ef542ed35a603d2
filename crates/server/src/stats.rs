//! Traffic statistics and per-client download counts, counted in memory on
//! the request path and written to each registry's database in batches:
//! every `[stats] flush_interval`, and once more when the server stops.
//!
//! Counting a download is one probe of a hash table and an addition, under
//! the lock of the counting thread's shard, which other threads seldom take;
//! nothing on the request path waits for the database.
//! Requests and bytes per day cost nothing more: a flush reads how far the
//! request metrics' counters moved since the last one.

use std::{
    collections::BTreeMap,
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

/// One shard of a registry's counts, on cache lines of its own: two threads
/// counting into neighbouring shards would otherwise pass one line back and
/// forth on every download.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<BTreeMap<u64, DayPending>>);

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
    registries: foldhash::HashMap<String, RegistryStats>,
}

struct RegistryStats {
    db: Db,
    /// What was counted since the last flush, by day number; a thread
    /// always counts into the same shard.
    pending: [Shard; SHARDS],
    /// The request metrics' (requests, bytes) of the registry at the last flush.
    requests_seen: Mutex<(u64, u64)>,
}

/// What one registry counted on one day (by day number) since the last flush.
/// Its tables hash with foldhash: keys are hashed on every download, and a
/// flood of made-up keys is bounded before it gets here (only crate files
/// that exist are counted, and addresses are the peers' own).
#[derive(Default)]
struct DayPending {
    /// Each version's downloads, found by one probe: an entry keeps its
    /// key's hash, so a lookup reads the key's bytes only on a match.
    versions: hashbrown::HashTable<Counted>,
    /// Who downloaded: the named principals and the anonymous addresses.
    names: foldhash::HashSet<String>,
    addresses: foldhash::HashSet<IpAddr>,
}

/// The downloads of one version.
struct Counted {
    hash: u64,
    /// `{crate} {version}`, one allocation.
    key: Box<str>,
    crate_len: usize,
    downloads: u64,
    bytes: u64,
    /// The downloads among them by each client (`wharf clients add`), for
    /// `wharf clients downloads`; a version has few clients in one flush.
    by_client: Vec<(User, u64)>,
}

impl Counted {
    fn new(hash: u64, krate: &str, vers: &str) -> Self {
        Self {
            hash,
            key: format!("{krate} {vers}").into_boxed_str(),
            crate_len: krate.len(),
            downloads: 0,
            bytes: 0,
            by_client: Vec::new(),
        }
    }

    fn is(&self, hash: u64, krate: &str, vers: &str) -> bool {
        self.hash == hash
            && self.crate_len == krate.len()
            && self.key.len() == krate.len() + 1 + vers.len()
            && self.key.starts_with(krate)
            && self.key.ends_with(vers)
    }

    fn krate(&self) -> &str {
        &self.key[..self.crate_len]
    }

    fn vers(&self) -> &str {
        &self.key[self.crate_len + 1..]
    }

    /// Counts `downloads` more by `user`.
    fn add_client(&mut self, user: &User, downloads: u64) {
        match self.by_client.iter_mut().find(|(u, _)| u == user) {
            Some((_, count)) => *count += downloads,
            None => self.by_client.push((user.clone(), downloads)),
        }
    }
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
                            pending: std::array::from_fn(|_| Shard::default()),
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
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let today = pending.entry(day).or_default();
        let counted = today.version(krate, vers);
        counted.downloads += 1;
        counted.bytes += bytes;
        if let Downloader::Named { user, client: true } = who {
            counted.add_client(user, 1);
        }
        if !self.enabled {
            return;
        }
        match who {
            // Looked up before inserting, so that a name counted already
            // costs no allocation.
            Downloader::Named { user, .. } => {
                if !today.names.contains(user.as_str()) {
                    today.names.insert(user.as_str().to_owned());
                }
            }
            Downloader::Anonymous(Some(addr)) => {
                today.addresses.insert(addr);
            }
            Downloader::Anonymous(None) => {}
        }
    }

    /// Writes what was counted since the last flush; what a database
    /// refused is logged and dropped.
    pub async fn flush(&self, requests: Option<&RequestMetrics>) {
        for (name, stats) in &self.registries {
            let mut pending: BTreeMap<u64, DayPending> = BTreeMap::new();
            for shard in &stats.pending {
                let taken = std::mem::take(&mut *shard.0.lock().unwrap_or_else(|e| e.into_inner()));
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
                let day_name = wharf_db::day_name(day);
                for version in &counted.versions {
                    for (user, count) in &version.by_client {
                        if let Err(e) = stats
                            .db
                            .clients(name)
                            .add_downloads(user, version.krate(), version.vers(), &day_name, *count)
                            .await
                        {
                            warn!(registry = name, client = %user, krate.name = version.krate(), error = %e, "could not count a client's downloads");
                        }
                    }
                }
                let counts = days.entry(day).or_default();
                counts.downloads = counted
                    .versions
                    .into_iter()
                    .map(|version| VersionCount {
                        krate: version.krate().to_owned(),
                        vers: version.vers().to_owned(),
                        downloads: version.downloads,
                        bytes: version.bytes,
                    })
                    .collect();
                counts.clients = (counted.names.into_iter().map(ClientId::Named))
                    .chain(counted.addresses.into_iter().map(ClientId::Address))
                    .collect();
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
    /// The counts of `krate` `vers`, new when not counted yet.
    fn version(&mut self, krate: &str, vers: &str) -> &mut Counted {
        use std::hash::BuildHasher;
        let hash = foldhash::fast::FixedState::default().hash_one((krate, vers));
        self.versions
            .entry(hash, |c| c.is(hash, krate, vers), |c| c.hash)
            .or_insert_with(|| Counted::new(hash, krate, vers))
            .into_mut()
    }

    /// Adds what another shard counted.
    fn merge(&mut self, other: DayPending) {
        for theirs in other.versions {
            let mine = self.version(theirs.krate(), theirs.vers());
            mine.downloads += theirs.downloads;
            mine.bytes += theirs.bytes;
            for (user, count) in &theirs.by_client {
                mine.add_client(user, *count);
            }
        }
        self.names.extend(other.names);
        self.addresses.extend(other.addresses);
    }
}

/// The day number of `at`: whole days since 1970-01-01, UTC.
fn day_number(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_told_apart_by_crate_and_version_and_shards_add_up() {
        let alice = User::new("alice").unwrap();
        let bob = User::new("bob").unwrap();
        let mut first = DayPending::default();
        // `ab 1` and `a b1` would be one key if the split were not kept.
        first.version("ab", "1").downloads += 1;
        first.version("a", "b1").downloads += 10;
        let counted = first.version("ab", "1");
        counted.downloads += 1;
        counted.add_client(&alice, 1);
        let mut second = DayPending::default();
        let counted = second.version("ab", "1");
        counted.downloads += 100;
        counted.bytes += 7;
        counted.add_client(&alice, 2);
        counted.add_client(&bob, 5);
        second.version("c", "1.0.0").downloads += 1000;
        first.merge(second);
        let mut totals: Vec<_> = first
            .versions
            .iter()
            .map(|c| {
                (
                    c.krate(),
                    c.vers(),
                    c.downloads,
                    c.bytes,
                    c.by_client.clone(),
                )
            })
            .collect();
        totals.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(
            totals,
            [
                ("a", "b1", 10, 0, vec![]),
                ("ab", "1", 102, 7, vec![(alice, 3), (bob, 5)]),
                ("c", "1.0.0", 1000, 0, vec![]),
            ]
        );
    }
}
