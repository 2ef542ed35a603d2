//! Who owns a crate. Owners publish new versions, yank, and change the owners;
//! the first publisher of a crate is its first owner, and a crate never loses
//! its last owner who can act.
//!
//! Only users the registry knows (a live token or a client) can be made
//! owners, at most [`MAX_OWNERS_PER_CHANGE`] in one call, and a removal must
//! leave at least one owner who can act (a live token, or a client allowed to
//! publish that has not expired): otherwise a crate could be handed to nobody.

use wharf_index::CrateName;

use crate::db::{Db, Tx, now_ms};
use crate::error::{DbError, NotAnOwner, OwnersError, PublishError, YankError};
use crate::sql::CrateRow;
use crate::user::User;

/// The most users one call may add or remove (`cargo owner` sends a handful).
pub const MAX_OWNERS_PER_CHANGE: usize = 100;

/// The owners of the crates of one registry. Made by [`Db::owners`].
///
/// Crate names may be spelled in any case or with `-`/`_` swapped, as
/// `cargo owner` users type them.
pub struct Owners<'a> {
    db: &'a Db,
    registry: &'a str,
}

impl<'a> Owners<'a> {
    pub(crate) fn new(db: &'a Db, registry: &'a str) -> Self {
        Self { db, registry }
    }

    /// The crate's owners, in the order they became owners.
    pub async fn list(&self, krate: &str) -> Result<Vec<User>, OwnersError> {
        let canonical = canonical(krate)?;
        let mut tx = self.db.read().await?;
        let row = tx
            .find_crate(self.registry, &canonical)
            .await?
            .ok_or_else(|| not_found(krate))?;
        let owners = tx.owners(row.id).await?;
        tx.commit().await?;
        Ok(owners)
    }

    /// Makes `users` owners of the crate, as `by`, who must own it. Each must be
    /// a user the registry knows (a live token or a client), and there may be at
    /// most [`MAX_OWNERS_PER_CHANGE`]; otherwise nothing changes. Returns those
    /// who were not owners already.
    pub async fn add(
        &self,
        krate: &str,
        users: &[User],
        by: &User,
    ) -> Result<Vec<User>, OwnersError> {
        check_count(users)?;
        let canonical = canonical(krate)?;
        let mut tx = self.db.write().await?;
        let row = lock(&mut tx, self.registry, &canonical, krate).await?;
        require_owner(&mut tx, &row, by).await?;
        for user in users {
            if !tx.is_known_user(self.registry, user).await? {
                return Err(OwnersError::UnknownUser {
                    user: user.clone(),
                    registry: self.registry.to_owned(),
                });
            }
        }
        let now = now_ms();
        let mut added = Vec::new();
        for user in users {
            if tx.add_owner(row.id, user, by, now).await? {
                added.push(user.clone());
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Removes `users` from the crate's owners, as `by`, who must own it. Every
    /// one of them must be an owner, there may be at most
    /// [`MAX_OWNERS_PER_CHANGE`], and at least one owner who can act must
    /// remain; otherwise nothing changes.
    pub async fn remove(&self, krate: &str, users: &[User], by: &User) -> Result<(), OwnersError> {
        check_count(users)?;
        let canonical = canonical(krate)?;
        let mut tx = self.db.write().await?;
        let row = lock(&mut tx, self.registry, &canonical, krate).await?;
        let owners = require_owner(&mut tx, &row, by).await?;
        if let Some(user) = users.iter().find(|u| !owners.contains(u)) {
            return Err(OwnersError::NotListed {
                krate: row.name,
                user: user.clone(),
            });
        }
        let now = now_ms();
        let mut active_left = false;
        for owner in owners.iter().filter(|owner| !users.contains(owner)) {
            if tx.is_active_user(self.registry, owner, now).await? {
                active_left = true;
                break;
            }
        }
        if !active_left {
            return Err(OwnersError::LastOwner { krate: row.name });
        }
        for user in users {
            tx.remove_owner(row.id, user).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Refuses a change of more than [`MAX_OWNERS_PER_CHANGE`] users.
fn check_count(users: &[User]) -> Result<(), OwnersError> {
    if users.len() > MAX_OWNERS_PER_CHANGE {
        return Err(OwnersError::TooMany { count: users.len() });
    }
    Ok(())
}

fn not_found(krate: &str) -> OwnersError {
    OwnersError::CrateNotFound {
        krate: krate.to_owned(),
    }
}

fn canonical(krate: &str) -> Result<String, OwnersError> {
    CrateName::new(krate)
        .map(|name| name.canonical())
        .map_err(|_| not_found(krate))
}

async fn lock(
    tx: &mut Tx,
    registry: &str,
    canonical: &str,
    krate: &str,
) -> Result<CrateRow, OwnersError> {
    tx.lock_crate(registry, canonical)
        .await?
        .ok_or_else(|| not_found(krate))
}

/// Refuses `user` unless they own `krate`; returns the owners.
pub(crate) async fn require_owner(
    tx: &mut Tx,
    krate: &CrateRow,
    user: &User,
) -> Result<Vec<User>, OwnerCheck> {
    let owners = tx.owners(krate.id).await.map_err(DbError::from)?;
    if owners.contains(user) {
        Ok(owners)
    } else {
        Err(OwnerCheck::NotAnOwner(NotAnOwner {
            krate: krate.name.clone(),
            user: user.clone(),
            owners,
        }))
    }
}

/// How an owner check fails; each aggregate's error takes both ways.
pub(crate) enum OwnerCheck {
    NotAnOwner(NotAnOwner),
    Db(DbError),
}

impl From<DbError> for OwnerCheck {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}

macro_rules! from_owner_check {
    ($($error:ty),*) => {$(
        impl From<OwnerCheck> for $error {
            fn from(e: OwnerCheck) -> Self {
                match e {
                    OwnerCheck::NotAnOwner(e) => Self::NotAnOwner(e),
                    OwnerCheck::Db(e) => Self::Db(e),
                }
            }
        }
    )*};
}
from_owner_check!(PublishError, YankError, OwnersError);
