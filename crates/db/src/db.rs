//! The connection: opening either backend, migrating it, and the transactions every
//! aggregate runs its statements in.
//!
//! Two backends, one code path: [`Pool`] and [`Tx`] are enums over sqlx's SQLite and
//! PostgreSQL types, and [`on_backend!`] expands one block of code once per variant.
//! The block is the same text in both arms, so every statement is written once and
//! compiled against each driver's own types. The README says why this and not
//! sqlx's `Any` driver.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, SqlSafeStr, SqlitePool};

use crate::error::DbError;
use crate::{Approvals, Clients, Crates, OwnerFacts, Owners, Stats, Tokens};

/// How long a SQLite writer waits for another one before failing. Writes are short
/// (a publish is a handful of statements), so this is only ever reached when
/// something is badly wrong.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections per pool. SQLite in WAL mode reads concurrently and serialises
/// writers; PostgreSQL's default limit is 100 connections per server, shared by
/// every wharf instance.
const MAX_CONNECTIONS: u32 = 10;

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file: the default, for one `wharf serve`.
    Sqlite,
    /// A PostgreSQL server: for several `wharf serve` instances sharing metadata.
    Postgres,
}

/// The metadata database of every hosted registry of one wharf.
///
/// Cheap to clone (the connection pool is shared). Each aggregate has its own
/// handle, scoped to one registry: [`Db::tokens`], [`Db::crates`], [`Db::owners`].
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// The connection pool of one backend.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open transaction of one backend. Dropping it rolls it back.
pub(crate) enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs `$body` with `$conn` bound to the backend's connection: `&mut
/// SqliteConnection` or `&mut PgConnection`. `$on` is a [`Tx`] or a [`Pool`]
/// (for a pool, `$conn` is `&SqlitePool` or `&PgPool`, also an executor).
macro_rules! on_backend {
    ($on:expr, $conn:ident => $body:expr) => {
        match $on {
            $crate::db::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::db::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
    (pool $on:expr, $conn:ident => $body:expr) => {
        match $on {
            $crate::db::Pool::Sqlite(pool) => {
                let $conn = pool;
                $body
            }
            $crate::db::Pool::Postgres(pool) => {
                let $conn = pool;
                $body
            }
        }
    };
}
pub(crate) use on_backend;

impl Db {
    /// Opens (and creates, for SQLite) the database at `url` and brings its schema
    /// up to date.
    ///
    /// - `sqlite:///absolute/path/wharf.db`: the file and its directory are created
    ///   when missing; WAL mode, so readers never wait for the writer.
    /// - `postgres://user:password@host:port/database` (or `postgresql://`): the
    ///   database must exist; the schema is created in it.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url).map_err(|source| DbError::Open {
                url: redact(url),
                source,
            })?;
            Self::open_sqlite(options, url).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url).await
        } else {
            Err(DbError::UnsupportedUrl { url: redact(url) })
        }
    }

    /// Changes other processes commit to this database, as they commit them
    /// (PostgreSQL); `None` for SQLite. See [`crate::Changes`].
    pub async fn listen_for_changes(&self) -> Result<Option<crate::Changes>, DbError> {
        crate::changes::Changes::listen(&self.pool).await
    }

    /// Opens (and creates) the SQLite database file at `path`: wharf's embedded
    /// default, `{data_dir}/wharf.db`.
    pub async fn connect_sqlite_file(path: &Path) -> Result<Db, DbError> {
        let shown = format!("sqlite://{}", path.display());
        Self::open_sqlite(SqliteConnectOptions::new().filename(path), &shown).await
    }

    async fn open_sqlite(options: SqliteConnectOptions, url: &str) -> Result<Db, DbError> {
        let open_error = |source| DbError::Open {
            url: redact(url),
            source,
        };
        let options = options
            .create_if_missing(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        }
        make_private(options.get_filename()).map_err(|e| open_error(sqlx::Error::Io(e)))?;

        // WAL is a property of the file, set once. Switching to it takes a lock
        // that the busy timeout cannot wait for, so it is done here, on one
        // connection, before the pool opens more; the migrations share it.
        // (A pool of one rather than a bare connection: the migrator's future
        // over `&mut SqliteConnection` is not `Send`, and `connect` must be.)
        let first = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().journal_mode(SqliteJournalMode::Wal))
            .await
            .map_err(open_error)?;
        migrator(Backend::Sqlite)
            .run(&first)
            .await
            .map_err(|source| DbError::Migrate {
                url: redact(url),
                source,
            })?;
        first.close().await;

        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Ok(Db {
            pool: Pool::Sqlite(pool),
        })
    }

    async fn open_postgres(url: &str) -> Result<Db, DbError> {
        let open_error = |source| DbError::Open {
            url: redact(url),
            source,
        };
        let options = PgConnectOptions::from_str(url).map_err(open_error)?;
        // One connection first: a pool retries a refused connection until its
        // acquire timeout (30 s) and then reports only the timeout, while this
        // fails at once with the reason (refused, authentication, TLS, no such
        // database).
        options
            .connect()
            .await
            .map_err(open_error)?
            .close()
            .await
            .map_err(open_error)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        // The migrator takes an advisory lock, so instances starting together
        // migrate once.
        migrator(Backend::Postgres)
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate {
                url: redact(url),
                source,
            })?;
        Ok(Db {
            pool: Pool::Postgres(pool),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The API tokens of `registry`.
    pub fn tokens<'a>(&'a self, registry: &'a str) -> Tokens<'a> {
        Tokens::new(self, registry)
    }

    /// The crates of `registry`: publish, yank, index files and search.
    pub fn crates<'a>(&'a self, registry: &'a str) -> Crates<'a> {
        Crates::new(self, registry)
    }

    /// The owners of the crates of `registry`.
    pub fn owners<'a>(&'a self, registry: &'a str) -> Owners<'a> {
        Owners::new(self, registry)
    }

    /// The clients of `registry`: who may read it, with what credentials.
    pub fn clients<'a>(&'a self, registry: &'a str) -> Clients<'a> {
        Clients::new(self, registry)
    }

    /// The approval queue and decisions of `registry`'s policy.
    pub fn approvals<'a>(&'a self, registry: &'a str) -> Approvals<'a> {
        Approvals::new(self, registry)
    }

    /// Failed logins, counted for every instance on this database.
    pub fn login_failures<'a>(&'a self, registry: &'a str) -> crate::LoginFailures<'a> {
        crate::LoginFailures::new(self, registry)
    }

    /// The lease on a mirror's passes.
    pub fn leases<'a>(&'a self, registry: &'a str) -> crate::Leases<'a> {
        crate::Leases::new(self, registry)
    }

    /// What is known of the owners and publishers of registry `registry`'s
    /// upstream crates.
    pub fn owner_facts<'a>(&'a self, registry: &'a str) -> OwnerFacts<'a> {
        OwnerFacts::new(self, registry)
    }

    /// The traffic statistics of `registry`.
    pub fn stats<'a>(&'a self, registry: &'a str) -> Stats<'a> {
        Stats::new(self, registry)
    }

    /// The credentials generation of `registry`: a number that every
    /// revocation, rotation and new client moves, so that a server which
    /// remembers verified credentials knows to verify them again. 0 before
    /// any such change.
    pub async fn auth_generation(&self, registry: &str) -> Result<i64, DbError> {
        let generation: Option<i64> = on_backend!(pool self.pool(), conn => {
            sqlx::query_scalar("SELECT generation FROM auth_generations WHERE registry = $1")
                .bind(registry)
                .fetch_optional(conn)
                .await
        })
        .map_err(DbError::Query)?;
        Ok(generation.unwrap_or(0))
    }

    /// Moves the credentials generation of `registry`.
    pub(crate) async fn bump_auth_generation(&self, registry: &str) -> Result<(), DbError> {
        on_backend!(pool self.pool(), conn => {
            sqlx::query(
                "INSERT INTO auth_generations (registry, generation) VALUES ($1, 1) \
                 ON CONFLICT (registry) DO UPDATE SET generation = auth_generations.generation + 1",
            )
            .bind(registry)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(DbError::Query)?;
        Ok(())
    }

    /// Waits for every connection to be returned, then closes them.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Begins a transaction that will write.
    ///
    /// On SQLite it is `BEGIN IMMEDIATE`: it takes the write lock at once (waiting
    /// for the busy timeout), so two writers never both read and then fail to
    /// upgrade. On PostgreSQL it is READ COMMITTED: each writer first locks the
    /// row of the crate it changes (see `Tx::lock_crate`), which serialises
    /// writers of one crate, and later statements see what earlier writers
    /// committed.
    pub(crate) async fn write(&self) -> Result<Tx, DbError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Begins a transaction that only reads, and sees one snapshot throughout
    /// (a search's count and its page agree).
    pub(crate) async fn read(&self) -> Result<Tx, DbError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
        })
    }
}

/// Creates the SQLite file at `path` readable by its owner only (0600,
/// whatever the umask) before SQLite opens it, and tightens an existing one
/// and its `-wal` and `-shm` files: they hold token and password hashes.
/// SQLite gives the `-wal` and `-shm` files it creates the mode of the main
/// file, so they follow. An in-memory database has no file.
fn make_private(path: &Path) -> std::io::Result<()> {
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

impl Tx {
    /// Makes the transaction's changes permanent.
    pub(crate) async fn commit(self) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// The embedded schema of `backend`. The two directories hold the same tables
/// in each dialect; versions must stay in step.
fn migrator(backend: Backend) -> Migrator {
    let files: &[(i64, &str, &'static str)] = match backend {
        Backend::Sqlite => &[
            (
                1,
                "init",
                include_str!("../migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "clients and approvals",
                include_str!("../migrations/sqlite/0002_clients_and_approvals.sql"),
            ),
            (
                3,
                "owner facts",
                include_str!("../migrations/sqlite/0003_owner_facts.sql"),
            ),
            (
                4,
                "traffic statistics",
                include_str!("../migrations/sqlite/0004_stats.sql"),
            ),
            (
                5,
                "instances",
                include_str!("../migrations/sqlite/0005_instances.sql"),
            ),
        ],
        Backend::Postgres => &[
            (
                1,
                "init",
                include_str!("../migrations/postgres/0001_init.sql"),
            ),
            (
                2,
                "clients and approvals",
                include_str!("../migrations/postgres/0002_clients_and_approvals.sql"),
            ),
            (
                3,
                "owner facts",
                include_str!("../migrations/postgres/0003_owner_facts.sql"),
            ),
            (
                4,
                "traffic statistics",
                include_str!("../migrations/postgres/0004_stats.sql"),
            ),
            (
                5,
                "instances",
                include_str!("../migrations/postgres/0005_instances.sql"),
            ),
        ],
    };
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// `url` with its password, if any, replaced by `***`, for error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Now, in the Unix milliseconds the tables store.
pub(crate) fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// `time` in Unix milliseconds (0 before 1970, which a clock never says).
pub(crate) fn to_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Unix milliseconds back to a time.
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The UTC calendar day of `at`, `YYYY-MM-DD`: the key of every per-day
/// count (downloads per client, traffic statistics).
pub fn utc_day(at: SystemTime) -> String {
    let days = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400;
    day_name(days)
}

/// The calendar day `days` after 1970-01-01, `YYYY-MM-DD`.
pub fn day_name(days: u64) -> String {
    // Howard Hinnant's days-from-civil, inverted.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        assert_eq!(utc_day(UNIX_EPOCH), "1970-01-01");
        assert_eq!(
            utc_day(UNIX_EPOCH + Duration::from_secs(1_764_000_000)),
            "2025-11-24"
        );
        assert_eq!(
            utc_day(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29"
        );
    }

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://wharf:s3cret@db.internal:5432/wharf?sslmode=require"),
            "postgres://wharf:***@db.internal:5432/wharf?sslmode=require"
        );
        assert_eq!(
            redact("postgres://wharf@db/wharf"),
            "postgres://wharf@db/wharf"
        );
        assert_eq!(
            redact("sqlite:///var/lib/wharf.db"),
            "sqlite:///var/lib/wharf.db"
        );
        assert_eq!(redact("p://u:a@b@h/x"), "p://u:***@h/x");
    }

    #[test]
    fn times_round_trip_in_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_ms(to_ms(t)), t);
    }
}
