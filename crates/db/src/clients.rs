//! Clients: identities a registry's operator gives out (`wharf clients add`),
//! each with its own credential, grants and expiry, and their downloads.
//!
//! A client has a token (`wharf_` and 64 hex digits, stored as its sha256
//! like API tokens, so looking it up compares no secret in wharf) or a
//! password: 24 random letters and digits, stored as an argon2id PHC string
//! and checked with argon2's constant-time verification. A lookup of a name
//! that has no password still runs one argon2 verification, so the time taken
//! does not tell which names exist. The statements are kept here, beside the
//! only code that runs them.

use std::fmt;
use std::time::SystemTime;

use argon2::{Argon2, password_hash::PasswordHasher};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{Db, from_ms, now_ms, on_backend, to_ms, utc_day};
use crate::error::DbError;
use crate::tokens::TOKEN_PREFIX;
use crate::user::User;

/// How stale `last_used` may get (written at most once per interval).
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// The length of a generated password.
const PASSWORD_LEN: usize = 24;

/// A client to add.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// Its name (the user name of `Basic` credentials).
    pub name: User,
    /// A generated password rather than a token.
    pub password: bool,
    /// Crate-name globs it may see; empty for every crate.
    pub grants: Vec<String>,
    /// Whether it may publish.
    pub publish: bool,
    /// When its credential stops working.
    pub expires_at: Option<SystemTime>,
}

/// A client's credential, shown once. Its `Debug` does not show the secret.
#[derive(Clone)]
pub struct ClientCredential {
    name: User,
    secret: String,
    password: bool,
}

impl ClientCredential {
    /// The client's name.
    pub fn name(&self) -> &User {
        &self.name
    }

    /// Whether the secret is a password (sent as `Basic`) rather than a token.
    pub fn is_password(&self) -> bool {
        self.password
    }

    /// The secret alone, for the one time it is shown.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// What cargo must send in `Authorization`, and so what its token
    /// setting holds: the token, or `Basic base64(name:password)`.
    pub fn authorization(&self) -> String {
        use base64::Engine;
        if self.password {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", self.name, self.secret))
            )
        } else {
            self.secret.clone()
        }
    }
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredential")
            .field("name", &self.name)
            .field("password", &self.password)
            .finish_non_exhaustive()
    }
}

/// A stored client, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: User,
    /// Whether it has a password (else a token).
    pub password: bool,
    /// Crate-name globs it may see; empty for every crate.
    pub grants: Vec<String>,
    /// Whether it may publish.
    pub publish: bool,
    /// When it was added.
    pub created_at: SystemTime,
    /// When its credential stops working.
    pub expires_at: Option<SystemTime>,
    /// When it last authenticated, to the minute.
    pub last_used: Option<SystemTime>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// Downloads of one version by one client on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadCount {
    /// The client.
    pub client: User,
    /// The crate.
    pub krate: String,
    /// The version.
    pub vers: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// How many times.
    pub count: u64,
}

/// Why a [`Clients`] call refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The name is taken.
    #[error(
        "client `{name}` already exists in this registry; use `wharf clients rotate {name}` for a new secret"
    )]
    Exists {
        /// The name.
        name: String,
    },
    /// No such client.
    #[error("there is no client `{name}` in this registry; `wharf clients list` shows them")]
    NotFound {
        /// The name.
        name: String,
    },
    /// A revoked client gets no new secret.
    #[error("client `{name}` is revoked; add a client under another name")]
    Revoked {
        /// The name.
        name: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl ClientError {
    /// The kind of failure, for the HTTP status.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Self::Exists { .. } => crate::ErrorKind::Conflict,
            Self::NotFound { .. } => crate::ErrorKind::NotFound,
            Self::Revoked { .. } => crate::ErrorKind::Forbidden,
            Self::Db(_) => crate::ErrorKind::Internal,
        }
    }
}

impl From<sqlx::Error> for ClientError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// The columns of a [`ClientInfo`], for `concat!` into each statement (sqlx
/// takes only static SQL).
macro_rules! client_columns {
    () => {
        "id, name, password_hash IS NOT NULL AS has_password, grants, publish, \
         created_at, expires_at, last_used_at, revoked_at"
    };
}

/// The [`ClientInfo`] of a row selected with `client_columns!()`, on either
/// backend's row type (a macro, as each arm of `on_backend!` has its own).
macro_rules! client_info {
    ($r:expr) => {
        ClientInfo {
            id: $r.try_get("id")?,
            name: User::from_db($r.try_get("name")?),
            password: $r.try_get("has_password")?,
            grants: serde_json::from_str(&$r.try_get::<String, _>("grants")?).unwrap_or_default(),
            publish: $r.try_get("publish")?,
            created_at: from_ms($r.try_get("created_at")?),
            expires_at: $r.try_get::<Option<i64>, _>("expires_at")?.map(from_ms),
            last_used: $r.try_get::<Option<i64>, _>("last_used_at")?.map(from_ms),
            revoked: $r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        }
    };
}

/// The clients of one registry. Made by [`Db::clients`].
pub struct Clients<'a> {
    db: &'a Db,
    registry: &'a str,
}

impl<'a> Clients<'a> {
    pub(crate) fn new(db: &'a Db, registry: &'a str) -> Self {
        Self { db, registry }
    }

    /// Adds a client; its credential is returned, the only time it exists
    /// outside the client's hands.
    pub async fn add(&self, new: &NewClient) -> Result<ClientCredential, ClientError> {
        let (secret, token_sha256, password_hash) = fresh_secret(new.password).await?;
        let grants = serde_json::to_string(&new.grants).unwrap_or_else(|_| "[]".to_owned());
        let inserted: Option<i64> = on_backend!(pool self.db.pool(), conn => {
            sqlx::query_scalar(
                "INSERT INTO clients (registry, name, token_sha256, password_hash, grants, publish, \
                 created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (registry, name) DO NOTHING RETURNING id",
            )
            .bind(self.registry)
            .bind(new.name.as_str())
            .bind(token_sha256)
            .bind(password_hash)
            .bind(grants)
            .bind(new.publish)
            .bind(now_ms())
            .bind(new.expires_at.map(to_ms))
            .fetch_optional(conn)
            .await
        })?;
        if inserted.is_none() {
            return Err(ClientError::Exists {
                name: new.name.to_string(),
            });
        }
        self.db.bump_auth_generation(self.registry).await?;
        Ok(ClientCredential {
            name: new.name.clone(),
            secret,
            password: new.password,
        })
    }

    /// Every client, revoked ones too, oldest first.
    pub async fn list(&self) -> Result<Vec<ClientInfo>, DbError> {
        const SQL: &str = concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients WHERE registry = $1 ORDER BY id"
        );
        on_backend!(pool self.db.pool(), conn => {
            let rows = sqlx::query(SQL).bind(self.registry).fetch_all(conn).await?;
            rows.iter().map(|r| Ok(client_info!(r))).collect::<Result<Vec<_>, sqlx::Error>>()
        })
        .map_err(DbError::Query)
    }

    /// One client by name.
    pub async fn get(&self, name: &User) -> Result<Option<ClientInfo>, DbError> {
        Ok(self.list().await?.into_iter().find(|c| c.name == *name))
    }

    /// Revokes a client: it authenticates nothing from its next request on.
    /// Revoking a revoked client is not an error.
    pub async fn revoke(&self, name: &User) -> Result<(), ClientError> {
        let done = on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "UPDATE clients SET revoked_at = COALESCE(revoked_at, $3) \
                 WHERE registry = $1 AND name = $2",
            )
            .bind(self.registry)
            .bind(name.as_str())
            .bind(now_ms())
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        if done == 0 {
            return Err(ClientError::NotFound {
                name: name.to_string(),
            });
        }
        self.db.bump_auth_generation(self.registry).await?;
        Ok(())
    }

    /// Gives a client a new secret of the same kind; the old one stops working.
    pub async fn rotate(&self, name: &User) -> Result<ClientCredential, ClientError> {
        let Some(client) = self.get(name).await? else {
            return Err(ClientError::NotFound {
                name: name.to_string(),
            });
        };
        if client.revoked {
            return Err(ClientError::Revoked {
                name: name.to_string(),
            });
        }
        let (secret, token_sha256, password_hash) = fresh_secret(client.password).await?;
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "UPDATE clients SET token_sha256 = $3, password_hash = $4 \
                 WHERE registry = $1 AND name = $2",
            )
            .bind(self.registry)
            .bind(name.as_str())
            .bind(token_sha256)
            .bind(password_hash)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        self.db.bump_auth_generation(self.registry).await?;
        Ok(ClientCredential {
            name: name.clone(),
            secret,
            password: client.password,
        })
    }

    /// The client whose token `secret` is, revoked or expired ones included
    /// (the caller words the refusal); `None` when there is none.
    pub async fn authenticate_token(&self, secret: &str) -> Result<Option<ClientInfo>, DbError> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        const SQL: &str = concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients WHERE registry = $1 AND token_sha256 = $2"
        );
        let found = self.one(SQL, &sha256_hex(secret)).await?;
        if let Some((client, _)) = &found {
            self.touch(client).await?;
        }
        Ok(found.map(|(client, _)| client))
    }

    /// The client `name` when `password` is its password, revoked or expired
    /// ones included; `None` otherwise. One argon2 verification runs whether
    /// or not the name exists.
    pub async fn authenticate_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<ClientInfo>, DbError> {
        const SQL: &str = concat!(
            "SELECT ",
            client_columns!(),
            ", password_hash FROM clients WHERE registry = $1 AND name = $2"
        );
        let found = self.one(SQL, name).await?;
        let stored = found
            .as_ref()
            .and_then(|(_, hash)| hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.to_owned());
        let matches = crate::password::verify(password.to_owned(), stored).await?;
        match found {
            Some((client, Some(_))) if matches => {
                self.touch(&client).await?;
                Ok(Some(client))
            }
            _ => Ok(None),
        }
    }

    /// Adds one download of `krate` `vers` by `client` on the UTC day of `at`.
    pub async fn record_download(
        &self,
        client: &User,
        krate: &str,
        vers: &str,
        at: SystemTime,
    ) -> Result<(), DbError> {
        self.add_downloads(client, krate, vers, &utc_day(at), 1)
            .await
    }

    /// Adds `count` downloads of `krate` `vers` by `client` on `day`
    /// (`YYYY-MM-DD`): what the server counted in memory since it last wrote.
    pub async fn add_downloads(
        &self,
        client: &User,
        krate: &str,
        vers: &str,
        day: &str,
        count: u64,
    ) -> Result<(), DbError> {
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query(
                "INSERT INTO client_downloads (registry, client, crate, vers, day, count) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (registry, client, crate, vers, day) \
                 DO UPDATE SET count = client_downloads.count + excluded.count",
            )
            .bind(self.registry)
            .bind(client.as_str())
            .bind(krate)
            .bind(vers)
            .bind(day)
            .bind(i64::try_from(count).unwrap_or(i64::MAX))
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Download counts, newest day first, then by crate and version; of one
    /// client, and from the day of `since` on, when given.
    pub async fn downloads(
        &self,
        client: Option<&User>,
        since: Option<SystemTime>,
    ) -> Result<Vec<DownloadCount>, DbError> {
        let since_day = since.map(utc_day).unwrap_or_default();
        on_backend!(pool self.db.pool(), conn => {
            let rows = sqlx::query(
                "SELECT client, crate, vers, day, count FROM client_downloads \
                 WHERE registry = $1 AND ($2 = '' OR client = $2) AND day >= $3 \
                 ORDER BY day DESC, crate, vers, client",
            )
            .bind(self.registry)
            .bind(client.map(User::as_str).unwrap_or(""))
            .bind(since_day)
            .fetch_all(conn)
            .await?;
            rows.iter().map(|r| Ok(DownloadCount {
                client: User::from_db(r.try_get("client")?),
                krate: r.try_get("crate")?,
                vers: r.try_get("vers")?,
                day: r.try_get("day")?,
                count: u64::try_from(r.try_get::<i64, _>("count")?).unwrap_or(0),
            })).collect::<Result<Vec<_>, sqlx::Error>>()
        })
        .map_err(DbError::Query)
    }

    /// The one client `sql` selects with `key` as `$2`, and its password hash
    /// when the query selects it.
    async fn one(
        &self,
        sql: &'static str,
        key: &str,
    ) -> Result<Option<(ClientInfo, Option<String>)>, DbError> {
        on_backend!(pool self.db.pool(), conn => {
            let row = sqlx::query(sql).bind(self.registry).bind(key).fetch_optional(conn).await?;
            row.map(|r| Ok((
                client_info!(r),
                r.try_get::<Option<String>, _>("password_hash").ok().flatten(),
            ))).transpose()
        })
        .map_err(DbError::Query)
    }

    /// Records a use, at most once per [`LAST_USED_RESOLUTION_MS`].
    async fn touch(&self, client: &ClientInfo) -> Result<(), DbError> {
        let now = now_ms();
        let last = client.last_used.map(to_ms);
        if last.is_some_and(|last| now.saturating_sub(last) < LAST_USED_RESOLUTION_MS) {
            return Ok(());
        }
        on_backend!(pool self.db.pool(), conn => {
            sqlx::query("UPDATE clients SET last_used_at = $2 WHERE id = $1")
                .bind(client.id)
                .bind(now)
                .execute(conn)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(DbError::Query)?;
        Ok(())
    }
}

/// An argon2id hash of a password nobody has, verified against when a name
/// has no password, so that unknown names take as long as known ones.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$W1ZsS3N3qfmcl4kQ2IB8xpvR3H3mRbVQxm0wfcD4f4A";

/// A new secret: (shown secret, token sha256, password hash).
async fn fresh_secret(password: bool) -> Result<(String, Option<String>, Option<String>), DbError> {
    if !password {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| DbError::Random(e.to_string()))?;
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let digest = sha256_hex(&secret);
        return Ok((secret, Some(digest), None));
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut secret = String::with_capacity(PASSWORD_LEN);
    while secret.len() < PASSWORD_LEN {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| DbError::Random(e.to_string()))?;
        // Rejection sampling keeps every character equally likely.
        for b in bytes {
            let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
            if b < limit && secret.len() < PASSWORD_LEN {
                secret.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
    }
    let plain = secret.clone();
    let hash = tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(plain.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| DbError::Random(format!("hashing the password did not finish: {e}")))?
    .map_err(|e| DbError::Random(format!("cannot hash the password: {e}")))?;
    Ok((secret, None, Some(hash)))
}

fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    #[test]
    fn the_dummy_hash_is_a_valid_argon2_hash() {
        assert!(
            Argon2::default()
                .verify_password(b"anything", DUMMY_HASH)
                .is_err_and(|e| e == argon2::password_hash::Error::PasswordInvalid),
        );
    }
}
