#![doc = include_str!("../README.md")]

mod fs;
mod key;
mod layout;
mod s3;
mod served;

use async_trait::async_trait;
use bytes::Bytes;

pub use fs::{FsStore, create_private_dir};
pub use key::{BlobKey, KeyError};
pub use layout::Layout;
pub use s3::{MULTIPART_BYTES, S3Settings, S3Store};
pub use served::{DEFAULT_FRESH_FOR, IMMUTABLE, Served, served_as};

/// A storage failure. A missing blob is not an error: reads return `Ok(None)`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be used now: full, read-only, unreachable, or its
    /// credentials refused. The server's problem, not the data's or an
    /// upstream's: answered 503 and worth trying again later.
    #[error("storage is unavailable: {op} of `{key}` failed: {reason}")]
    Unavailable {
        /// What was being done (`read`, `write`, `list`, `delete`).
        op: &'static str,
        /// The key involved.
        key: String,
        /// What the backend said.
        reason: String,
    },
    /// [`BlobStore::put_if_absent`] found a blob under the key.
    #[error("`{key}` is already in storage")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// Anything else the backend failed at.
    #[error("storage {op} of `{key}` failed: {source}")]
    Io {
        /// What was being done (`read`, `write`, `rename`, `delete`).
        op: &'static str,
        /// The key involved.
        key: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the store as a whole is unusable now (as opposed to one blob).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// A failure of `op` on `key` from an IO error: a full disk, a read-only
    /// filesystem or a refused permission make the store unavailable.
    pub fn from_io(op: &'static str, key: &str, source: std::io::Error) -> Self {
        use std::io::ErrorKind::{
            PermissionDenied, QuotaExceeded, ReadOnlyFilesystem, StorageFull,
        };
        match source.kind() {
            StorageFull | QuotaExceeded | ReadOnlyFilesystem | PermissionDenied => {
                Self::Unavailable {
                    op,
                    key: key.to_owned(),
                    reason: source.to_string(),
                }
            }
            _ => Self::Io {
                op,
                key: key.to_owned(),
                source,
            },
        }
    }
}

/// A place that holds blobs by key.
///
/// Every implementation makes writes atomic: readers see the old blob or the
/// whole new one, never part of it.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Reads a whole blob; `Ok(None)` when there is none.
    async fn get(&self, key: &BlobKey) -> Result<Option<Bytes>, StoreError>;

    /// Writes a whole blob, replacing any previous one atomically.
    async fn put(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError>;

    /// Starts a streamed write that becomes visible only on [`StagedBlob::commit`].
    /// Dropping the stage without committing discards what was written.
    async fn stage(&self, key: &BlobKey) -> Result<Box<dyn StagedBlob>, StoreError>;

    /// Writes a whole blob only if there is none under `key`:
    /// [`StoreError::AlreadyExists`] otherwise, and the existing blob is
    /// left as it is. Two writers racing for one key: exactly one wins.
    async fn put_if_absent(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError>;

    /// Every key that starts with `prefix` followed by `/`, in no particular
    /// order; empty when there is none.
    async fn list(&self, prefix: &BlobKey) -> Result<Vec<BlobKey>, StoreError>;

    /// Whether a blob exists under `key`.
    async fn exists(&self, key: &BlobKey) -> Result<bool, StoreError>;

    /// Removes a blob; removing a missing blob is not an error.
    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError>;

    /// A short description for logs (`files under ./wharf-data`).
    fn describe(&self) -> String;

    /// A URL a client can fetch the blob under `key` from without wharf
    /// (a redirect's target), or `None` when the store has none (files on
    /// disk). `Ok` says nothing of whether the blob exists.
    async fn download_url(
        &self,
        key: &BlobKey,
        handout: Handout,
    ) -> Result<Option<String>, StoreError> {
        let _ = (key, handout);
        Ok(None)
    }
}

/// Who a [`BlobStore::download_url`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handout {
    /// Anyone may read the blob: its public URL when the store has one (a
    /// configured public URL, or an open bucket's own), else a presigned
    /// URL valid this long.
    Anyone {
        /// How long a presigned URL stays valid.
        expires_in: std::time::Duration,
    },
    /// Only the client being answered may: always a presigned URL, valid
    /// this long.
    Private {
        /// How long the URL stays valid.
        expires_in: std::time::Duration,
    },
}

/// Checks at start that `store` takes a write, gives it back and deletes it,
/// within `within`: a wrong endpoint, refused credentials or a missing
/// bucket fail here with the service's words, not on the first request.
pub async fn check(store: &dyn BlobStore, within: std::time::Duration) -> Result<(), StoreError> {
    // A key of this process alone: instances starting together on one
    // bucket must not read each other's marker.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let key = BlobKey::new(format!(".probe/start-{}-{nanos}", std::process::id()))
        .expect("a probe key of digits is valid");
    let unavailable = |reason: String| StoreError::Unavailable {
        op: "check",
        key: key.to_string(),
        reason,
    };
    let marker = Bytes::from(format!("wharf {}", std::process::id()));
    let probe = async {
        store.put(&key, marker.clone()).await?;
        match store.get(&key).await? {
            Some(back) if back == marker => {}
            Some(_) => return Err(unavailable("a marker read back different".into())),
            None => return Err(unavailable("a marker just written is missing".into())),
        }
        store.delete(&key).await
    };
    tokio::time::timeout(within, probe)
        .await
        .map_err(|_| unavailable(format!("no answer within {} s", within.as_secs())))?
}

/// A blob being written. Nothing of it is visible until [`StagedBlob::commit`].
#[async_trait]
pub trait StagedBlob: Send {
    /// Appends bytes.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError>;

    /// Makes the blob visible under its key, atomically.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

#[cfg(test)]
mod invariant {
    //! ARCHITECTURE.md's invariant, checked: outside this crate, no code
    //! touches files except where it handles local state that is not a
    //! registry's bytes. A new file that reads or writes files must be
    //! added here, with its reason, or use [`BlobStore`].

    use std::path::{Path, PathBuf};

    /// The sources allowed to use `std::fs` or `tokio::fs`, and what for.
    const LOCAL_FILES: &[(&str, &str)] = &[
        (
            "crates/cli/src/main.rs",
            "`wharf keys generate` writes a key file",
        ),
        (
            "crates/cli/src/mirrors.rs",
            "reads a mirror list the operator names",
        ),
        (
            "crates/cli/src/run.rs",
            "`wharf run`'s cargo shim and cargo's own config",
        ),
        (
            "crates/cli/src/setup.rs",
            "`wharf setup` edits cargo's config, with a backup",
        ),
        (
            "crates/cli/src/verify.rs",
            "reads the lockfiles the operator names",
        ),
        ("crates/config/src/lib.rs", "reads the configuration file"),
        ("crates/db/src/db.rs", "creates the SQLite file 0600"),
        (
            "crates/server/src/registry.rs",
            "reads the mirror list the operator names",
        ),
        (
            "crates/sync/src/git.rs",
            "the git clone, in the local work_dir",
        ),
        ("crates/sync/src/manifest.rs", "reads the signing key file"),
        (
            "crates/sync/src/selection.rs",
            "reads list files and lockfiles",
        ),
        (
            "crates/sync/src/sync/work.rs",
            "the pass lock, in the local work_dir",
        ),
        (
            "crates/server/src/owner_dump.rs",
            "reads a crates.io database dump",
        ),
        (
            "crates/upstream/src/owners_api.rs",
            "stages a downloaded database dump",
        ),
    ];

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir)
            .expect("a source directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Whether the code of `source` (its unit tests left aside) uses files.
    fn uses_files(source: &str) -> bool {
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        code.contains("std::fs") || code.contains("tokio::fs") || code.contains("use std::{fs")
    }

    #[test]
    fn only_local_state_is_touched_outside_the_store() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut sources = Vec::new();
        for dir in std::fs::read_dir(workspace.join("crates"))
            .unwrap()
            .flatten()
        {
            let name = dir.file_name();
            // This crate is the store; test-support plays the world around it.
            if name != "storage" && name != "test-support" {
                rust_files(&dir.path().join("src"), &mut sources);
            }
        }
        assert!(sources.len() > 50, "found only {} sources", sources.len());
        let mut unexpected = Vec::new();
        let mut used = Vec::new();
        for path in &sources {
            let relative = path
                .strip_prefix(&workspace)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !uses_files(&std::fs::read_to_string(path).unwrap()) {
                continue;
            }
            match LOCAL_FILES.iter().find(|(file, _)| *file == relative) {
                Some(_) => used.push(relative),
                None => unexpected.push(relative),
            }
        }
        assert!(
            unexpected.is_empty(),
            "these sources use std::fs or tokio::fs; registry bytes must go through BlobStore \
             (or, for local state, list the file in LOCAL_FILES with why): {unexpected:?}"
        );
        let stale: Vec<_> = LOCAL_FILES
            .iter()
            .filter(|(file, _)| !used.iter().any(|u| u == file))
            .collect();
        assert!(stale.is_empty(), "no longer use files: {stale:?}");
    }
}
