//! The approval queue of a registry's policy: requests for crates whose
//! versions the policy holds, and the operator's decisions on them.
//!
//! Crates are keyed by their canonical name (lowercase, `-` as `_`), as
//! crates.io compares them; the spelling first seen is kept for display. A
//! decision covers a whole crate (`vers` = `None`) or one version; a later
//! decision on the same thing replaces the earlier one. The statements are
//! kept here, beside the only code that runs them.

use std::time::SystemTime;

use sqlx::Row;

use crate::db::{Db, from_ms, on_backend, to_ms};
use crate::error::DbError;

/// The longest requester or decider text kept.
const MAX_WHO_LEN: usize = 200;

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through.
    Approved,
    /// Kept out.
    Rejected,
}

/// A crate someone needed while versions of it were held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    /// The crate, as first spelled.
    pub krate: String,
    /// The newest version held when last requested.
    pub newest_held: String,
    /// How many versions were held then.
    pub held_versions: u32,
    /// Who asked last (a client, or an address).
    pub requested_by: String,
    /// When it was first asked for.
    pub first_requested_at: SystemTime,
    /// When it was last asked for.
    pub last_requested_at: SystemTime,
    /// How many times it was asked for (at most once a minute per requester
    /// is written).
    pub requests: u64,
    /// Its owners when last held by an owner rule (`github:alice, github:bob`).
    pub owners: Option<String>,
    /// Who published its newest held version, when an owner rule needed it.
    pub publisher: Option<String>,
}

/// A decision on a crate or one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionInfo {
    /// The crate, as spelled in the decision.
    pub krate: String,
    /// The version; `None` for the whole crate.
    pub vers: Option<String>,
    /// What was decided.
    pub decision: Decision,
    /// Who decided.
    pub decided_by: String,
    /// When.
    pub decided_at: SystemTime,
    /// Why, if said.
    pub note: Option<String>,
}

/// The approval queue of one registry. Made by [`Db::approvals`].
pub struct Approvals<'a> {
    db: &'a Db,
    registry: &'a str,
}

impl<'a> Approvals<'a> {
    pub(crate) fn new(db: &'a Db, registry: &'a str) -> Self {
        Self { db, registry }
    }

    /// Records that `requested_by` needed `krate`, of which `held_versions`
    /// versions are held, the newest `newest_held`.
    pub async fn request(
        &self,
        krate: &str,
        newest_held: &str,
        held_versions: u32,
        requested_by: &str,
        at: SystemTime,
    ) -> Result<(), DbError> {
        let at = to_ms(at);
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "INSERT INTO approval_requests (registry, canonical_name, name, newest_held, \
                 held_versions, requested_by, first_requested_at, last_requested_at, requests) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 1) \
                 ON CONFLICT (registry, canonical_name) DO UPDATE SET \
                 newest_held = $4, held_versions = $5, requested_by = $6, last_requested_at = $7, \
                 requests = approval_requests.requests + 1",
            )
            .bind(self.registry)
            .bind(canonical(krate))
            .bind(krate)
            .bind(newest_held)
            .bind(i64::from(held_versions))
            .bind(bounded(requested_by))
            .bind(at)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Notes who owns `krate` and who published its newest held version, as
    /// an owner rule saw them, on its request.
    pub async fn note_owners(
        &self,
        krate: &str,
        owners: &[String],
        publisher: Option<&str>,
    ) -> Result<(), DbError> {
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "UPDATE approval_requests SET owners = $3, publisher = $4 \
                 WHERE registry = $1 AND canonical_name = $2",
            )
            .bind(self.registry)
            .bind(canonical(krate))
            .bind(owners.join(", ").chars().take(2_000).collect::<String>())
            .bind(publisher.map(bounded))
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Requests no decision covers (none on the crate, none on its newest
    /// held version), oldest first.
    pub async fn pending(&self) -> Result<Vec<ApprovalRequest>, DbError> {
        self.select_requests(
            "SELECT r.name, r.newest_held, r.held_versions, r.requested_by, r.first_requested_at, \
             r.last_requested_at, r.requests, r.owners, r.publisher FROM approval_requests r \
             WHERE r.registry = $1 AND NOT EXISTS (SELECT 1 FROM approval_decisions d \
             WHERE d.registry = r.registry AND d.canonical_name = r.canonical_name \
             AND (d.vers = '' OR d.vers = r.newest_held)) \
             ORDER BY r.first_requested_at, r.canonical_name",
        )
        .await
    }

    /// Every request, decided or not, oldest first.
    pub async fn requests(&self) -> Result<Vec<ApprovalRequest>, DbError> {
        self.select_requests(
            "SELECT name, newest_held, held_versions, requested_by, first_requested_at, \
             last_requested_at, requests, owners, publisher FROM approval_requests WHERE registry = $1 \
             ORDER BY first_requested_at, canonical_name",
        )
        .await
    }

    /// Records a decision on `krate` (every version when `vers` is `None`),
    /// replacing an earlier one on the same thing.
    pub async fn decide(
        &self,
        krate: &str,
        vers: Option<&str>,
        decision: Decision,
        by: &str,
        note: Option<&str>,
        at: SystemTime,
    ) -> Result<(), DbError> {
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "INSERT INTO approval_decisions (registry, canonical_name, name, vers, approved, \
                 decided_by, decided_at, note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (registry, canonical_name, vers) DO UPDATE SET \
                 name = $3, approved = $5, decided_by = $6, decided_at = $7, note = $8",
            )
            .bind(self.registry)
            .bind(canonical(krate))
            .bind(krate)
            .bind(vers.unwrap_or(""))
            .bind(decision == Decision::Approved)
            .bind(bounded(by))
            .bind(to_ms(at))
            .bind(note.map(bounded))
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// The decisions on one crate: what the server's filter reads for a file
    /// with held versions (one lookup by primary-key prefix).
    pub async fn decisions_for(&self, krate: &str) -> Result<Vec<DecisionInfo>, DbError> {
        self.select_decisions(
            "SELECT name, vers, approved, decided_by, decided_at, note FROM approval_decisions \
             WHERE registry = $1 AND canonical_name = $2",
            Some(&canonical(krate)),
        )
        .await
    }

    /// Every decision, newest first.
    pub async fn decisions(&self) -> Result<Vec<DecisionInfo>, DbError> {
        self.select_decisions(
            "SELECT name, vers, approved, decided_by, decided_at, note FROM approval_decisions \
             WHERE registry = $1 ORDER BY decided_at DESC",
            None,
        )
        .await
    }

    async fn select_requests(&self, sql: &'static str) -> Result<Vec<ApprovalRequest>, DbError> {
        on_backend!(pool self.db.pool(), conn => {
            let rows = sqlx::query(sql).bind(self.registry).fetch_all(conn).await?;
            rows.iter().map(|r| Ok(ApprovalRequest {
                krate: r.try_get(0)?,
                newest_held: r.try_get(1)?,
                held_versions: u32::try_from(r.try_get::<i64, _>(2)?).unwrap_or(u32::MAX),
                requested_by: r.try_get(3)?,
                first_requested_at: from_ms(r.try_get(4)?),
                last_requested_at: from_ms(r.try_get(5)?),
                requests: u64::try_from(r.try_get::<i64, _>(6)?).unwrap_or(0),
                owners: r.try_get(7)?,
                publisher: r.try_get(8)?,
            })).collect::<Result<Vec<_>, sqlx::Error>>()
        })
        .map_err(DbError::Query)
    }

    async fn select_decisions(
        &self,
        sql: &'static str,
        canonical_name: Option<&str>,
    ) -> Result<Vec<DecisionInfo>, DbError> {
        on_backend!(pool self.db.pool(), conn => {
            let mut query = sqlx::query(sql).bind(self.registry);
            if let Some(name) = canonical_name {
                query = query.bind(name);
            }
            let rows = query.fetch_all(conn).await?;
            rows.iter().map(|r| Ok(DecisionInfo {
                krate: r.try_get("name")?,
                vers: Some(r.try_get::<String, _>("vers")?).filter(|v| !v.is_empty()),
                decision: if r.try_get("approved")? { Decision::Approved } else { Decision::Rejected },
                decided_by: r.try_get("decided_by")?,
                decided_at: from_ms(r.try_get("decided_at")?),
                note: r.try_get("note")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>()
        })
        .map_err(DbError::Query)
    }
}

/// The name crates.io compares by: lowercase, `-` as `_`.
fn canonical(krate: &str) -> String {
    krate.to_ascii_lowercase().replace('-', "_")
}

fn bounded(text: &str) -> String {
    text.chars().take(MAX_WHO_LEN).collect()
}
