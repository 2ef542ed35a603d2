//! Leases on a mirror's passes, so that of several instances on one
//! database exactly one runs them at a time: the holder renews its lease
//! while a pass runs; once it stops renewing (killed, cut off), another
//! instance takes the lease over when it expires.
//!
//! Expiry is judged by the clocks of the instances, which must agree (NTP)
//! to well within the lease's length.

use std::time::{Duration, SystemTime};

use sqlx::Row;

use crate::db::{Db, from_ms, on_backend, to_ms};
use crate::error::DbError;

/// Who holds a mirror's lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holder's name (`host:pid:…`).
    pub holder: String,
    /// When it expires unless renewed.
    pub expires_at: SystemTime,
    /// When a full pass last ended, under any holder.
    pub last_full_pass: Option<SystemTime>,
}

/// The leases of one registry's passes. Made by [`Db::leases`].
pub struct Leases<'a> {
    db: &'a Db,
    registry: &'a str,
}

impl<'a> Leases<'a> {
    pub(crate) fn new(db: &'a Db, registry: &'a str) -> Self {
        Self { db, registry }
    }

    /// Takes the lease for `holder` until `ttl` from now, when it is free,
    /// expired or `holder`'s already: `Ok` with the lease; `Err` with who
    /// holds it otherwise.
    pub async fn acquire(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> Result<Result<LeaseInfo, LeaseInfo>, DbError> {
        let now = to_ms(SystemTime::now());
        let until = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let taken = on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "INSERT INTO mirror_leases (registry, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (registry) DO UPDATE SET holder = $2, expires_at = $3 \
                 WHERE mirror_leases.expires_at < $4 OR mirror_leases.holder = $2",
            )
            .bind(self.registry)
            .bind(holder)
            .bind(until)
            .bind(now)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        let info = self.info().await?.ok_or_else(|| {
            DbError::Corrupt(format!(
                "the lease of `{}` vanished as it was taken",
                self.registry
            ))
        })?;
        Ok(if taken == 1 && info.holder == holder {
            Ok(info)
        } else {
            Err(info)
        })
    }

    /// Extends `holder`'s lease to `ttl` from now; `false` when it is no
    /// longer `holder`'s (it expired and was taken over).
    pub async fn renew(&self, holder: &str, ttl: Duration) -> Result<bool, DbError> {
        let until = to_ms(SystemTime::now() + ttl);
        let renewed = on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "UPDATE mirror_leases SET expires_at = $3 WHERE registry = $1 AND holder = $2",
            )
            .bind(self.registry)
            .bind(holder)
            .bind(until)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(renewed == 1)
    }

    /// Ends `holder`'s lease at once (if it is still `holder`'s), noting a
    /// full pass that just ended.
    pub async fn release(&self, holder: &str, full_pass_ended: bool) -> Result<(), DbError> {
        let now = to_ms(SystemTime::now());
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "UPDATE mirror_leases SET expires_at = 0, \
                 last_full_pass = CASE WHEN $3 THEN $4 ELSE last_full_pass END \
                 WHERE registry = $1 AND holder = $2",
            )
            .bind(self.registry)
            .bind(holder)
            .bind(full_pass_ended)
            .bind(now)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// The lease as it stands, if it was ever taken.
    pub async fn info(&self) -> Result<Option<LeaseInfo>, DbError> {
        let row = on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "SELECT holder, expires_at, last_full_pass FROM mirror_leases WHERE registry = $1",
            )
            .bind(self.registry)
            .fetch_optional(conn)
            .await?
            .map(|r| -> Result<_, sqlx::Error> {
                Ok((
                    r.try_get::<String, _>(0)?,
                    r.try_get::<i64, _>(1)?,
                    r.try_get::<Option<i64>, _>(2)?,
                ))
            })
            .transpose()
        })?;
        Ok(row.map(|(holder, expires_at, last)| LeaseInfo {
            holder,
            expires_at: from_ms(expires_at),
            last_full_pass: last.map(from_ms),
        }))
    }
}
