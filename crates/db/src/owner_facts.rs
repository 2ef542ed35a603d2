//! What the upstream registry says of its crates' owners and its versions'
//! publishers, for policies with owner rules.
//!
//! Facts come from the registry's web API (one crate or version at a time,
//! kept with the time they were asked) or from its database dump (every crate
//! at once, kept with the dump's date). A dump replaces every fact of the
//! registry in one transaction, so a server never sees half of one. Crates
//! are keyed by their canonical name (lowercase, `-` as `_`).

use std::time::SystemTime;

use sqlx::Row;

use crate::db::{Db, from_ms, on_backend, to_ms};
use crate::error::DbError;

/// Where a fact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactSource {
    /// The registry's web API, asked at the fact's time.
    Api,
    /// The registry's database dump of the fact's date.
    Dump,
}

impl FactSource {
    /// `api` or `dump`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Dump => "dump",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "dump" {
            Self::Dump
        } else {
            Self::Api
        }
    }
}

/// A crate's owners as last learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnersFact {
    /// The crate, as spelled where it was learnt.
    pub krate: String,
    /// `github:LOGIN` for users, `github:ORG:TEAM` for teams.
    pub owners: Vec<String>,
    /// Where it came from.
    pub source: FactSource,
    /// When the API answered, or the dump's date.
    pub at: SystemTime,
}

/// Who published one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherFact {
    /// The version.
    pub vers: String,
    /// `github:LOGIN`, or `None` when the registry does not say.
    pub publisher: Option<String>,
    /// Where it came from.
    pub source: FactSource,
    /// When the API answered, or the dump's date.
    pub at: SystemTime,
}

/// One crate of a dump: its owners and its versions' publishers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpCrate {
    /// The crate's name.
    pub name: String,
    /// Its owners (`github:LOGIN`, `github:ORG:TEAM`).
    pub owners: Vec<String>,
    /// Each version with its publisher (`github:LOGIN`), if known.
    pub versions: Vec<(String, Option<String>)>,
}

/// What a dump import wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpCounts {
    /// Crates with their owners.
    pub crates: u64,
    /// Versions with their publishers.
    pub versions: u64,
}

/// The dump last imported from a URL, for a conditional fetch of the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpState {
    /// Where it was fetched from.
    pub url: String,
    /// Its `ETag`, if any.
    pub etag: Option<String>,
    /// Its `Last-Modified`, if any.
    pub last_modified: Option<String>,
    /// The dump's date.
    pub dump_date: SystemTime,
    /// When it was imported.
    pub imported_at: SystemTime,
}

/// The owner facts of one registry. Made by [`Db::owner_facts`].
pub struct OwnerFacts<'a> {
    db: &'a Db,
    registry: &'a str,
}

impl<'a> OwnerFacts<'a> {
    pub(crate) fn new(db: &'a Db, registry: &'a str) -> Self {
        Self { db, registry }
    }

    /// The crate's owners, if known.
    pub async fn owners(&self, krate: &str) -> Result<Option<OwnersFact>, DbError> {
        let row = on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "SELECT name, owners, source, fetched_at FROM owner_facts \
                 WHERE registry = $1 AND canonical_name = $2",
            )
            .bind(self.registry)
            .bind(canonical(krate))
            .fetch_optional(conn)
            .await
            .and_then(|row| row.map(|r| Ok::<_, sqlx::Error>((
                r.try_get::<String, _>(0)?,
                r.try_get::<String, _>(1)?,
                r.try_get::<String, _>(2)?,
                r.try_get::<i64, _>(3)?,
            ))).transpose())
        })
        .map_err(DbError::Query)?;
        Ok(row.map(|(name, owners, source, at)| OwnersFact {
            krate: name,
            // A row is only ever written from a list, so this cannot fail;
            // an unreadable one counts as no owners (nothing is allowed by it).
            owners: serde_json::from_str(&owners).unwrap_or_default(),
            source: FactSource::parse(&source),
            at: from_ms(at),
        }))
    }

    /// The publishers known of the crate's versions.
    pub async fn publishers(&self, krate: &str) -> Result<Vec<PublisherFact>, DbError> {
        on_backend!(pool self.db.pool(), conn => {
            let rows = sqlx::query(
                "SELECT vers, publisher, source, fetched_at FROM publisher_facts \
                 WHERE registry = $1 AND canonical_name = $2",
            )
            .bind(self.registry)
            .bind(canonical(krate))
            .fetch_all(conn)
            .await?;
            rows.iter().map(|r| Ok(PublisherFact {
                vers: r.try_get(0)?,
                publisher: r.try_get(1)?,
                source: FactSource::parse(&r.try_get::<String, _>(2)?),
                at: from_ms(r.try_get(3)?),
            })).collect::<Result<Vec<_>, sqlx::Error>>()
        })
        .map_err(DbError::Query)
    }

    /// Records the crate's owners as the API said them at `at`.
    pub async fn put_owners(
        &self,
        krate: &str,
        owners: &[String],
        at: SystemTime,
    ) -> Result<(), DbError> {
        let owners = serde_json::to_string(owners).unwrap_or_else(|_| "[]".to_owned());
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "INSERT INTO owner_facts (registry, canonical_name, name, owners, source, fetched_at) \
                 VALUES ($1, $2, $3, $4, 'api', $5) \
                 ON CONFLICT (registry, canonical_name) DO UPDATE SET \
                 name = $3, owners = $4, source = 'api', fetched_at = $5",
            )
            .bind(self.registry)
            .bind(canonical(krate))
            .bind(krate)
            .bind(owners)
            .bind(to_ms(at))
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Records who published a version, as the API said at `at`.
    pub async fn put_publisher(
        &self,
        krate: &str,
        vers: &str,
        publisher: Option<&str>,
        at: SystemTime,
    ) -> Result<(), DbError> {
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "INSERT INTO publisher_facts (registry, canonical_name, vers, publisher, source, fetched_at) \
                 VALUES ($1, $2, $3, $4, 'api', $5) \
                 ON CONFLICT (registry, canonical_name, vers) DO UPDATE SET \
                 publisher = $4, source = 'api', fetched_at = $5",
            )
            .bind(self.registry)
            .bind(canonical(krate))
            .bind(vers)
            .bind(publisher)
            .bind(to_ms(at))
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// The dump last fetched from a URL, if any.
    pub async fn dump_state(&self) -> Result<Option<DumpState>, DbError> {
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "SELECT url, etag, last_modified, dump_date, imported_at FROM owner_dumps \
                 WHERE registry = $1",
            )
            .bind(self.registry)
            .fetch_optional(conn)
            .await
            .and_then(|row| row.map(|r| Ok::<_, sqlx::Error>(DumpState {
                url: r.try_get(0)?,
                etag: r.try_get(1)?,
                last_modified: r.try_get(2)?,
                dump_date: from_ms(r.try_get(3)?),
                imported_at: from_ms(r.try_get(4)?),
            })).transpose())
        })
        .map_err(DbError::Query)
    }

    /// Records the dump just imported from a URL.
    pub async fn set_dump_state(&self, state: &DumpState) -> Result<(), DbError> {
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "INSERT INTO owner_dumps (registry, url, etag, last_modified, dump_date, imported_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (registry) DO UPDATE SET \
                 url = $2, etag = $3, last_modified = $4, dump_date = $5, imported_at = $6",
            )
            .bind(self.registry)
            .bind(&state.url)
            .bind(state.etag.as_deref())
            .bind(state.last_modified.as_deref())
            .bind(to_ms(state.dump_date))
            .bind(to_ms(state.imported_at))
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Replaces every fact of the registry with a dump's, dated `dump_date`,
    /// in one transaction: a server sees the old facts or the new ones.
    pub async fn replace_with_dump(
        &self,
        crates: impl IntoIterator<Item = DumpCrate>,
        dump_date: SystemTime,
    ) -> Result<DumpCounts, DbError> {
        let at = to_ms(dump_date);
        let mut counts = DumpCounts::default();
        let mut tx = self.db.write().await?;
        on_backend!(&mut tx, conn => {
            sqlx::query("DELETE FROM owner_facts WHERE registry = $1")
                .bind(self.registry)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM publisher_facts WHERE registry = $1")
                .bind(self.registry)
                .execute(&mut *conn)
                .await?;
            for krate in crates {
                let canonical_name = canonical(&krate.name);
                let owners = serde_json::to_string(&krate.owners).unwrap_or_else(|_| "[]".to_owned());
                sqlx::query(
                    "INSERT INTO owner_facts (registry, canonical_name, name, owners, source, fetched_at) \
                     VALUES ($1, $2, $3, $4, 'dump', $5) \
                     ON CONFLICT (registry, canonical_name) DO UPDATE SET owners = $4",
                )
                .bind(self.registry)
                .bind(&canonical_name)
                .bind(&krate.name)
                .bind(owners)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                counts.crates += 1;
                for (vers, publisher) in &krate.versions {
                    sqlx::query(
                        "INSERT INTO publisher_facts (registry, canonical_name, vers, publisher, source, fetched_at) \
                         VALUES ($1, $2, $3, $4, 'dump', $5) \
                         ON CONFLICT (registry, canonical_name, vers) DO UPDATE SET publisher = $4",
                    )
                    .bind(self.registry)
                    .bind(&canonical_name)
                    .bind(vers)
                    .bind(publisher.as_deref())
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                    counts.versions += 1;
                }
            }
            Ok::<_, sqlx::Error>(())
        })?;
        tx.commit().await?;
        Ok(counts)
    }
}

/// The name crates.io compares by: lowercase, `-` as `_`.
fn canonical(krate: &str) -> String {
    krate.to_ascii_lowercase().replace('-', "_")
}
