//! Failed logins counted in the database, so that instances sharing it
//! share one count: N instances behind a load balancer do not give an
//! attacker N times the attempts. An attempt is counted as failed before
//! it is checked (and given back when it succeeds), in windows of
//! [`WINDOW`]; more than [`MAX_FAILURES`] in a window locks the subject out
//! for [`LOCKOUT`]. Only password attempts not verified lately come here: a
//! client whose credentials work costs nothing.

use std::time::{Duration, SystemTime};

use sqlx::Row;

use crate::db::{Db, from_ms, on_backend, to_ms};
use crate::error::DbError;

/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Failures allowed in a window.
pub const MAX_FAILURES: i64 = 10;

/// How long a subject that failed more is refused.
pub const LOCKOUT: Duration = Duration::from_secs(60);

/// The failed logins of one registry. Made by [`Db::login_failures`].
pub struct LoginFailures<'a> {
    db: &'a Db,
    registry: &'a str,
}

impl<'a> LoginFailures<'a> {
    pub(crate) fn new(db: &'a Db, registry: &'a str) -> Self {
        Self { db, registry }
    }

    /// Counts an attempt by `subject` (an address and user name) as failed
    /// until [`succeeded`](Self::succeeded) says otherwise; `Some(until)`
    /// when the subject is locked out and the attempt must not be checked.
    pub async fn begin(&self, subject: &str) -> Result<Option<SystemTime>, DbError> {
        let now = to_ms(SystemTime::now());
        let window_start = now - WINDOW.as_millis() as i64;
        let lock_until = now + LOCKOUT.as_millis() as i64;
        // One statement: concurrent attempts on several instances each see
        // the count with the others in it.
        let locked_until = on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "INSERT INTO login_failures (registry, subject, window_start, failures) \
                 VALUES ($1, $2, $3, 1) \
                 ON CONFLICT (registry, subject) DO UPDATE SET \
                 failures = CASE \
                   WHEN login_failures.locked_until > $3 THEN login_failures.failures \
                   WHEN login_failures.window_start < $4 THEN 1 \
                   ELSE login_failures.failures + 1 END, \
                 window_start = CASE \
                   WHEN login_failures.locked_until > $3 THEN login_failures.window_start \
                   WHEN login_failures.window_start < $4 THEN $3 \
                   ELSE login_failures.window_start END, \
                 locked_until = CASE \
                   WHEN login_failures.locked_until > $3 THEN login_failures.locked_until \
                   WHEN login_failures.window_start >= $4 AND login_failures.failures + 1 > $5 THEN $6 \
                   ELSE NULL END \
                 RETURNING locked_until",
            )
            .bind(self.registry)
            .bind(subject)
            .bind(now)
            .bind(window_start)
            .bind(MAX_FAILURES)
            .bind(lock_until)
            .fetch_one(conn)
            .await?
            .try_get::<Option<i64>, _>(0)
        })?;
        Ok(locked_until.filter(|until| *until > now).map(from_ms))
    }

    /// The attempt `begin` counted was right: its failure is given back.
    pub async fn succeeded(&self, subject: &str) -> Result<(), DbError> {
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "UPDATE login_failures SET failures = failures - 1 \
                 WHERE registry = $1 AND subject = $2 AND failures > 0",
            )
            .bind(self.registry)
            .bind(subject)
            .execute(conn)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }
}
