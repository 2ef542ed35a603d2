//! API tokens: created for a user, shown once, stored as a hash, revoked by id.
//!
//! A secret is `wharf_` and 64 hex digits: 32 bytes from the operating system's
//! random source. Only its sha256 is stored. A slow password hash (argon2) would
//! add nothing: it protects guessable secrets, and 256 random bits are not
//! guessable. Looking a token up by its hash also means no comparison of secrets
//! happens in wharf, so there is no timing to leak.

use std::fmt;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::db::{Db, from_ms, now_ms};
use crate::error::{DbError, TokenError};
use crate::user::User;

/// What every secret starts with, so that a leaked one is recognisable (secret
/// scanners) and a wrong string is refused without a database lookup.
pub const TOKEN_PREFIX: &str = "wharf_";

/// How stale `last_used` may get: a token is written back at most once per
/// interval, so authentication stays a read on a busy registry.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// The id of a token, unique in the database; what `revoke` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(pub i64);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Delegated, so that width and alignment (`{:>4}`) apply.
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for TokenId {
    type Err = std::num::ParseIntError;

    /// Reads an id as `list` shows it, for a command line.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(TokenId)
    }
}

/// A token's secret, as given to its user once. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// The secret, for the one time it is shown.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(***)")
    }
}

/// A token just created: its id and, the only time it exists outside the
/// user's hands, its secret.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The id, for listing and revoking.
    pub id: TokenId,
    /// The secret, for `cargo login`.
    pub secret: TokenSecret,
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The id.
    pub id: TokenId,
    /// Whom it authenticates.
    pub user: User,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it last authenticated a request, to the minute; `None` if never.
    pub last_used: Option<SystemTime>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// The API tokens of one registry. Made by [`Db::tokens`].
pub struct Tokens<'a> {
    db: &'a Db,
    registry: &'a str,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(db: &'a Db, registry: &'a str) -> Self {
        Self { db, registry }
    }

    /// Creates a token for `user`.
    pub async fn create(&self, user: &User) -> Result<NewToken, DbError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| DbError::Random(e.to_string()))?;
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let id = self
            .db
            .pool()
            .insert_token(self.registry, user.as_str(), &hash(&secret), now_ms())
            .await?;
        Ok(NewToken {
            id: TokenId(id),
            secret: TokenSecret(secret),
        })
    }

    /// Every token of the registry, revoked ones too, oldest first.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, DbError> {
        let rows = self.db.pool().list_tokens(self.registry).await?;
        Ok(rows
            .into_iter()
            .map(|r| TokenInfo {
                id: TokenId(r.id),
                user: User::from_db(r.login),
                created_at: from_ms(r.created_at_ms),
                last_used: r.last_used_at_ms.map(from_ms),
                revoked: r.revoked_at_ms.is_some(),
            })
            .collect())
    }

    /// Revokes a token: it authenticates nothing from now on. Revoking a revoked
    /// token is not an error.
    pub async fn revoke(&self, id: TokenId) -> Result<(), TokenError> {
        if self
            .db
            .pool()
            .revoke_token(self.registry, id.0, now_ms())
            .await?
        {
            // Servers that remember verified tokens verify again.
            self.db.bump_auth_generation(self.registry).await?;
            Ok(())
        } else {
            Err(TokenError::NotFound { id: id.0 })
        }
    }

    /// The user whose live token `secret` is, if any. `secret` is the token
    /// alone: the caller strips `Bearer ` or decodes `Basic` first.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<User>, DbError> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let pool = self.db.pool();
        let Some((id, login, last_used_ms)) = pool.find_token(self.registry, &hash(secret)).await?
        else {
            return Ok(None);
        };
        let now = now_ms();
        if last_used_ms.is_none_or(|last| now.saturating_sub(last) >= LAST_USED_RESOLUTION_MS) {
            pool.touch_token(id, now).await?;
        }
        Ok(Some(User::from_db(login)))
    }
}

/// The stored form of a secret: its sha256, in hex.
fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
