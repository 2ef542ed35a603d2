//! Crate files read back from storage by mirrors and hosted registries,
//! checked against the checksum their index line gives before they are
//! served, once per file per process (then trusted from memory): a disk, a
//! bucket or a hand that damaged a file never gets it to a client.

use wharf_index::{Cksum, find_version};
use wharf_storage::BlobKey;

use crate::cache::Lookup;

/// What a stored crate file is, against its index line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Its sha256 is the index line's `cksum` (or it was, earlier).
    Good,
    /// The index lists no such version: nothing to check against.
    Unlisted,
    /// Its sha256 differs from the index line's.
    Damaged {
        /// What the index says.
        expected: Cksum,
        /// What the bytes hash to.
        found: Cksum,
    },
}

/// The files of one registry already found good.
pub(crate) struct Verified(moka::sync::Cache<BlobKey, ()>);

impl Verified {
    pub(crate) fn new() -> Self {
        Self(moka::sync::Cache::new(1_000_000))
    }

    /// Checks `bytes`, stored under `key`, against version `vers` of the
    /// crate's index file as the registry serves it (`index`).
    pub(crate) fn check(&self, key: &BlobKey, bytes: &[u8], index: &Lookup, vers: &str) -> Stored {
        if self.0.contains_key(key) {
            return Stored::Good;
        }
        let Lookup::Found(entry) = index else {
            return Stored::Unlisted;
        };
        let Some(line) = find_version(&entry.body, vers) else {
            return Stored::Unlisted;
        };
        let found = Cksum::of(bytes);
        if found != line.cksum {
            return Stored::Damaged {
                expected: line.cksum,
                found,
            };
        }
        self.0.insert(key.clone(), ());
        Stored::Good
    }
}
