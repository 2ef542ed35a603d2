//! Traffic statistics of one registry: downloads per crate version per UTC
//! day, requests and bytes per day, and distinct clients per day.
//!
//! The server counts in memory and hands over one [`DayCounts`] per
//! registry and day every few seconds; [`Stats::record`] adds it in one
//! transaction, so several instances sharing the database add up.
//!
//! A client is a name where the registry checks credentials, and otherwise
//! an address. Addresses never reach a table: each is replaced here by the
//! HMAC-SHA256 of the address under a random key of the day, kept in the
//! database (so instances sharing it count an address once) and deleted
//! when the day is over, after which no hash can be tied to an address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sqlx::Row;

use crate::db::{Db, on_backend};
use crate::error::DbError;

/// Rows written by one statement of [`Stats::record`].
const ROWS_PER_STATEMENT: usize = 500;

/// Who downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientId {
    /// A client or token user of a registry that checks credentials.
    Named(String),
    /// An anonymous client's address; stored only as a keyed hash.
    Address(IpAddr),
}

/// Downloads of one crate version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCount {
    /// The crate, as its file name spells it.
    pub krate: String,
    /// The version.
    pub vers: String,
    /// How many times it was downloaded.
    pub downloads: u64,
    /// The bytes those downloads took.
    pub bytes: u64,
}

/// What one registry counted on one day since the last flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayCounts {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Requests of every kind (index, crate, API).
    pub requests: u64,
    /// Bytes of the responses to them.
    pub request_bytes: u64,
    /// Crate downloads, by version.
    pub downloads: Vec<VersionCount>,
    /// Who downloaded (each once).
    pub clients: Vec<ClientId>,
}

/// The totals of one day.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DayTotals {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Crate downloads.
    pub downloads: u64,
    /// Bytes of crate downloads.
    pub download_bytes: u64,
    /// Distinct clients that downloaded.
    pub clients: u64,
    /// Requests of every kind.
    pub requests: u64,
    /// Bytes of every response.
    pub request_bytes: u64,
}

/// The totals of one crate over a span of days.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CrateTotals {
    /// The crate.
    #[serde(rename = "crate")]
    pub krate: String,
    /// Downloads of all its versions.
    pub downloads: u64,
    /// Bytes of those downloads.
    pub bytes: u64,
    /// How many of its versions were downloaded.
    pub versions: u64,
}

/// The statistics of one registry. Made by [`Db::stats`].
pub struct Stats<'a> {
    db: &'a Db,
    registry: &'a str,
}

impl<'a> Stats<'a> {
    pub(crate) fn new(db: &'a Db, registry: &'a str) -> Self {
        Self { db, registry }
    }

    /// Adds `counts` to what is stored, in one transaction.
    pub async fn record(&self, counts: &DayCounts) -> Result<(), DbError> {
        let key = if counts
            .clients
            .iter()
            .any(|c| matches!(c, ClientId::Address(_)))
        {
            Some(self.day_key(&counts.day).await?)
        } else {
            None
        };
        // Each once, as each version below: one statement may not write a
        // row twice.
        let clients: BTreeSet<String> = counts
            .clients
            .iter()
            .map(|client| match client {
                ClientId::Named(name) => format!("client:{name}"),
                ClientId::Address(addr) => {
                    // `key` is set whenever there is an address.
                    let key = key.as_ref().expect("a key for a day with addresses");
                    format!("addr:{}", address_hash(key, addr))
                }
            })
            .collect();
        let clients: Vec<String> = clients.into_iter().collect();
        let mut downloads: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
        for version in &counts.downloads {
            let row = downloads
                .entry((version.krate.as_str(), version.vers.as_str()))
                .or_default();
            row.0 += version.downloads;
            row.1 += version.bytes;
        }
        let downloads: Vec<_> = downloads.into_iter().collect();
        let mut tx = self.db.write().await?;
        on_backend!(&mut tx, conn => {
            if counts.requests > 0 || counts.request_bytes > 0 {
                sqlx::query(
                    "INSERT INTO stats_days (registry, day, requests, bytes) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (registry, day) DO UPDATE SET \
                     requests = stats_days.requests + excluded.requests, \
                     bytes = stats_days.bytes + excluded.bytes",
                )
                .bind(self.registry)
                .bind(&counts.day)
                .bind(to_i64(counts.requests))
                .bind(to_i64(counts.request_bytes))
                .execute(&mut *conn)
                .await?;
            }
            // A few hundred rows a statement: one round trip each instead
            // of one a row, well under either backend's limit of parameters.
            for chunk in downloads.chunks(ROWS_PER_STATEMENT) {
                let mut query = sqlx::QueryBuilder::new(
                    "INSERT INTO stats_downloads (registry, day, crate, vers, downloads, bytes) ",
                );
                query.push_values(chunk, |mut row, ((krate, vers), (count, bytes))| {
                    row.push_bind(self.registry)
                        .push_bind(&counts.day)
                        .push_bind(*krate)
                        .push_bind(*vers)
                        .push_bind(to_i64(*count))
                        .push_bind(to_i64(*bytes));
                });
                query.push(
                    " ON CONFLICT (registry, day, crate, vers) DO UPDATE SET \
                     downloads = stats_downloads.downloads + excluded.downloads, \
                     bytes = stats_downloads.bytes + excluded.bytes",
                );
                query.build().execute(&mut *conn).await?;
            }
            for chunk in clients.chunks(ROWS_PER_STATEMENT) {
                let mut query =
                    sqlx::QueryBuilder::new("INSERT INTO stats_clients (registry, day, client) ");
                query.push_values(chunk, |mut row, client| {
                    row.push_bind(self.registry)
                        .push_bind(&counts.day)
                        .push_bind(client);
                });
                query.push(" ON CONFLICT (registry, day, client) DO NOTHING");
                query.build().execute(&mut *conn).await?;
            }
            Ok::<(), sqlx::Error>(())
        })?;
        tx.commit().await
    }

    /// The totals of each day from `since_day` (`YYYY-MM-DD`) on, oldest
    /// first; days without traffic are left out.
    pub async fn days(&self, since_day: &str) -> Result<Vec<DayTotals>, DbError> {
        let mut days: BTreeMap<String, DayTotals> = BTreeMap::new();
        let mut tx = self.db.read().await?;
        on_backend!(&mut tx, conn => {
            let rows = sqlx::query(
                "SELECT day, CAST(SUM(downloads) AS BIGINT) AS downloads, \
                 CAST(SUM(bytes) AS BIGINT) AS bytes FROM stats_downloads \
                 WHERE registry = $1 AND day >= $2 GROUP BY day",
            )
            .bind(self.registry)
            .bind(since_day)
            .fetch_all(&mut *conn)
            .await?;
            for r in &rows {
                let day: String = r.try_get("day")?;
                let totals = days.entry(day.clone()).or_insert_with(|| DayTotals { day, ..DayTotals::default() });
                totals.downloads = to_u64(r.try_get("downloads")?);
                totals.download_bytes = to_u64(r.try_get("bytes")?);
            }
            let rows = sqlx::query(
                "SELECT day, requests, bytes FROM stats_days WHERE registry = $1 AND day >= $2",
            )
            .bind(self.registry)
            .bind(since_day)
            .fetch_all(&mut *conn)
            .await?;
            for r in &rows {
                let day: String = r.try_get("day")?;
                let totals = days.entry(day.clone()).or_insert_with(|| DayTotals { day, ..DayTotals::default() });
                totals.requests = to_u64(r.try_get("requests")?);
                totals.request_bytes = to_u64(r.try_get("bytes")?);
            }
            let rows = sqlx::query(
                "SELECT day, COUNT(*) AS clients FROM stats_clients \
                 WHERE registry = $1 AND day >= $2 GROUP BY day",
            )
            .bind(self.registry)
            .bind(since_day)
            .fetch_all(&mut *conn)
            .await?;
            for r in &rows {
                let day: String = r.try_get("day")?;
                let totals = days.entry(day.clone()).or_insert_with(|| DayTotals { day, ..DayTotals::default() });
                totals.clients = to_u64(r.try_get("clients")?);
            }
            Ok::<(), sqlx::Error>(())
        })?;
        Ok(days.into_values().collect())
    }

    /// The `limit` most downloaded crates from `since_day` on, most
    /// downloaded first (ties by name).
    pub async fn top_crates(
        &self,
        since_day: &str,
        limit: u32,
    ) -> Result<Vec<CrateTotals>, DbError> {
        on_backend!(pool self.db.pool(), conn => {
            let rows = sqlx::query(
                "SELECT crate, CAST(SUM(downloads) AS BIGINT) AS downloads, \
                 CAST(SUM(bytes) AS BIGINT) AS bytes, COUNT(DISTINCT vers) AS versions \
                 FROM stats_downloads WHERE registry = $1 AND day >= $2 \
                 GROUP BY crate ORDER BY downloads DESC, crate LIMIT $3",
            )
            .bind(self.registry)
            .bind(since_day)
            .bind(i64::from(limit))
            .fetch_all(conn)
            .await?;
            rows.iter().map(|r| Ok(CrateTotals {
                krate: r.try_get("crate")?,
                downloads: to_u64(r.try_get("downloads")?),
                bytes: to_u64(r.try_get("bytes")?),
                versions: to_u64(r.try_get("versions")?),
            })).collect::<Result<Vec<_>, sqlx::Error>>()
        })
        .map_err(DbError::Query)
    }

    /// Deletes the registry's days before `before_day`, and every day key
    /// older than `yesterday` (a flush just after midnight may still need
    /// yesterday's). Returns the rows deleted.
    pub async fn prune(&self, before_day: &str, yesterday: &str) -> Result<u64, DbError> {
        let mut tx = self.db.write().await?;
        let deleted = on_backend!(&mut tx, conn => {
            let mut deleted = 0;
            for sql in [
                "DELETE FROM stats_downloads WHERE registry = $1 AND day < $2",
                "DELETE FROM stats_days WHERE registry = $1 AND day < $2",
                "DELETE FROM stats_clients WHERE registry = $1 AND day < $2",
            ] {
                deleted += sqlx::query(sql)
                    .bind(self.registry)
                    .bind(before_day)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
            }
            sqlx::query("DELETE FROM stats_keys WHERE day < $1")
                .bind(yesterday)
                .execute(&mut *conn)
                .await?;
            Ok::<u64, sqlx::Error>(deleted)
        })?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// The key of `day`'s address hashes: made by the first writer of the
    /// day, read by every other.
    async fn day_key(&self, day: &str) -> Result<Vec<u8>, DbError> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| DbError::Random(e.to_string()))?;
        let key: String = on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "INSERT INTO stats_keys (day, key) VALUES ($1, $2) ON CONFLICT (day) DO NOTHING",
            )
            .bind(day)
            .bind(hex::encode(fresh))
            .execute(conn)
            .await?;
            sqlx::query_scalar("SELECT key FROM stats_keys WHERE day = $1")
                .bind(day)
                .fetch_one(conn)
                .await
        })
        .map_err(DbError::Query)?;
        hex::decode(key)
            .map_err(|e| DbError::Random(format!("the stored key of {day} is not hex: {e}")))
    }
}

/// The hex HMAC-SHA256 of `addr` (its text form) under `key`.
fn address_hash(key: &[u8], addr: &IpAddr) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    hex::encode(ring::hmac::sign(&key, addr.to_string().as_bytes()).as_ref())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_hashes_depend_on_the_key_and_hide_the_address() {
        let addr: IpAddr = "203.0.113.7".parse().unwrap();
        let a = address_hash(&[1; 32], &addr);
        assert_eq!(a.len(), 64);
        assert!(!a.contains("203"));
        assert_eq!(a, address_hash(&[1; 32], &addr));
        assert_ne!(a, address_hash(&[2; 32], &addr));
    }
}
