//! Errors: [`DbError`] when the database itself fails, and one enum per aggregate
//! for the refusals a cargo user can act on.
//!
//! Every message is one lowercase line that says what to do, ready for cargo's
//! `{"errors":[{"detail":…}]}`. [`ErrorKind`] tells the server which status fits.

use crate::user::User;

/// What kind of failure an error is, so the server picks a status in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such crate, version or token (404).
    NotFound,
    /// The user may not do this (403).
    Forbidden,
    /// The request contradicts what is stored (409 or 400; crates.io answers 400).
    Conflict,
    /// The request is malformed (400).
    Invalid,
    /// The database failed; the user can only retry (500).
    Internal,
}

/// The database failed or could not be opened. Never the user's fault.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no backend wharf supports.
    #[error(
        "unsupported database url `{url}`: use sqlite:///absolute/path/wharf.db or postgres://user@host/database"
    )]
    UnsupportedUrl {
        /// The URL, password removed.
        url: String,
    },
    /// The database could not be opened or created.
    #[error("cannot open database {url}: {source}")]
    Open {
        /// The URL, password removed.
        url: String,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate database {url}: {source}")]
    Migrate {
        /// The URL, password removed.
        url: String,
        /// What the migrator said.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored record is not what wharf writes.
    #[error("the database holds a damaged record: {0}")]
    Corrupt(String),
    /// A row lock could not be had after retries (a crate created and rolled back
    /// again and again under our feet).
    #[error("crate `{0}` is being changed by other requests; try again")]
    Contention(String),
    /// The operating system could not supply random bytes for a token.
    #[error("cannot generate a token secret: {0}")]
    Random(String),
    /// Too much work of one kind is waiting (password checks); the caller
    /// should answer 503 and the client retry.
    #[error("{0}")]
    Busy(String),
}

/// A user acted on a crate they do not own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{user}` is not an owner of crate `{krate}`; its owners are {}: ask one of them to run `cargo owner --add {user} {krate}`",
    join(owners)
)]
pub struct NotAnOwner {
    /// The crate, spelled as stored.
    pub krate: String,
    /// Who tried.
    pub user: User,
    /// Who may.
    pub owners: Vec<User>,
}

fn join(users: &[User]) -> String {
    users
        .iter()
        .map(User::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why [`Crates::publish`](crate::Crates::publish) refused a version.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The name is another spelling (case, `-`/`_`) of an existing crate.
    #[error(
        "crate name `{requested}` is taken by the existing crate `{existing}` (names that differ only in case or `-`/`_` are the same crate); publish as `{existing}` or choose another name"
    )]
    NameTaken {
        /// The name as the publish spelled it.
        requested: String,
        /// The name as the registry spells it.
        existing: String,
    },
    /// The version exists already, perhaps with other build metadata.
    #[error(
        "crate `{krate}` already has version {existing}, which {vers} {}; bump the version in Cargo.toml",
        if existing == vers { "is" } else { "equals but for build metadata" }
    )]
    VersionExists {
        /// The crate, spelled as stored.
        krate: String,
        /// The version being published.
        vers: String,
        /// The stored version it collides with.
        existing: String,
    },
    /// The publisher does not own the existing crate.
    #[error(transparent)]
    NotAnOwner(#[from] NotAnOwner),
    /// The index line does not describe the version (a bug of the caller).
    #[error("the index line does not match the version being published: {0}")]
    InvalidIndexLine(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl PublishError {
    /// The kind of failure, for the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NameTaken { .. } | Self::VersionExists { .. } => ErrorKind::Conflict,
            Self::NotAnOwner(_) => ErrorKind::Forbidden,
            Self::InvalidIndexLine(_) => ErrorKind::Invalid,
            Self::Db(_) => ErrorKind::Internal,
        }
    }
}

/// Why [`Crates::set_yanked`](crate::Crates::set_yanked) refused.
#[derive(Debug, thiserror::Error)]
pub enum YankError {
    /// No crate of that name (in any spelling).
    #[error("crate `{krate}` does not exist in this registry")]
    CrateNotFound {
        /// The name as asked for.
        krate: String,
    },
    /// The crate has no such version.
    #[error("crate `{krate}` has no version {vers}; check `cargo yank --version`")]
    VersionNotFound {
        /// The crate, spelled as stored.
        krate: String,
        /// The version as asked for.
        vers: String,
    },
    /// The user does not own the crate.
    #[error(transparent)]
    NotAnOwner(#[from] NotAnOwner),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl YankError {
    /// The kind of failure, for the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::CrateNotFound { .. } | Self::VersionNotFound { .. } => ErrorKind::NotFound,
            Self::NotAnOwner(_) => ErrorKind::Forbidden,
            Self::Db(_) => ErrorKind::Internal,
        }
    }
}

/// Why an [`Owners`](crate::Owners) call refused.
#[derive(Debug, thiserror::Error)]
pub enum OwnersError {
    /// No crate of that name (in any spelling).
    #[error("crate `{krate}` does not exist in this registry")]
    CrateNotFound {
        /// The name as asked for.
        krate: String,
    },
    /// The acting user does not own the crate.
    #[error(transparent)]
    NotAnOwner(#[from] NotAnOwner),
    /// A user to remove is not an owner.
    #[error(
        "`{user}` is not an owner of crate `{krate}`; `cargo owner --list {krate}` shows who is"
    )]
    NotListed {
        /// The crate, spelled as stored.
        krate: String,
        /// The user who is not an owner.
        user: User,
    },
    /// The removal would leave the crate without an owner who can act.
    #[error(
        "crate `{krate}` must keep at least one owner who can publish (a live token, or a client allowed to publish); add such an owner before removing the last one"
    )]
    LastOwner {
        /// The crate, spelled as stored.
        krate: String,
    },
    /// A user to add has no live token and no client in the registry.
    #[error(
        "user `{user}` is unknown to registry `{registry}`: only users with a token or a client can own crates; create one first (`wharf token create --registry {registry} --user {user}`)"
    )]
    UnknownUser {
        /// The user asked for.
        user: User,
        /// The registry.
        registry: String,
    },
    /// Too many users in one change.
    #[error(
        "{count} users in one owners change; send at most {max} at a time",
        max = crate::owners::MAX_OWNERS_PER_CHANGE
    )]
    TooMany {
        /// How many were sent.
        count: usize,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl OwnersError {
    /// The kind of failure, for the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::CrateNotFound { .. } => ErrorKind::NotFound,
            Self::NotAnOwner(_) => ErrorKind::Forbidden,
            Self::NotListed { .. } | Self::LastOwner { .. } => ErrorKind::Conflict,
            Self::UnknownUser { .. } | Self::TooMany { .. } => ErrorKind::Invalid,
            Self::Db(_) => ErrorKind::Internal,
        }
    }
}

/// Why a [`Tokens`](crate::Tokens) call refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No token with that id in this registry.
    #[error("there is no token {id} in this registry; list the tokens to see their ids")]
    NotFound {
        /// The id asked for.
        id: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl TokenError {
    /// The kind of failure, for the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Db(_) => ErrorKind::Internal,
        }
    }
}

impl From<sqlx::Error> for PublishError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

impl From<sqlx::Error> for YankError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

impl From<sqlx::Error> for OwnersError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

impl From<sqlx::Error> for TokenError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}
