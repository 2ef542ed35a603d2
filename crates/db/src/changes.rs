//! Changes other wharf processes made, as they are committed: on PostgreSQL,
//! a publish or yank notifies [`CHANNEL`] in its transaction, and every
//! instance that listens drops its rendered copy of that index file at once,
//! instead of at its next revision check.

use sqlx::postgres::PgListener;

use crate::{DbError, db::Pool};

/// The notification channel of changed index files; the payload is
/// `{registry}/{crate name}`.
pub(crate) const CHANNEL: &str = "wharf_index";

/// What another process changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The index file of crate `name` in `registry`.
    IndexFile {
        /// The registry.
        registry: String,
        /// The crate, as the registry spells it.
        name: String,
    },
    /// The connection to the database was lost and made again: anything may
    /// have changed meanwhile.
    Unknown,
}

/// A subscription to [`Change`]s, on its own connection.
pub struct Changes {
    listener: PgListener,
}

impl Changes {
    /// Listens on the database of `pool`; `None` for SQLite, whose writers
    /// share one machine and whose readers check revisions instead.
    pub(crate) async fn listen(pool: &Pool) -> Result<Option<Changes>, DbError> {
        let Pool::Postgres(pool) = pool else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Changes { listener }))
    }

    /// The next change; waits for one. After an error (the database is
    /// unreachable), the next call connects again; after a lost connection
    /// it reports [`Change::Unknown`] first.
    pub async fn next(&mut self) -> Result<Change, DbError> {
        loop {
            match self.listener.try_recv().await? {
                Some(notification) => {
                    if let Some((registry, name)) = notification.payload().split_once('/') {
                        return Ok(Change::IndexFile {
                            registry: registry.to_owned(),
                            name: name.to_owned(),
                        });
                    }
                }
                // Closed: the next call connects again and listens anew.
                None => return Ok(Change::Unknown),
            }
        }
    }
}
