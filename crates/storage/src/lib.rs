#![doc = include_str!("../README.md")]

mod fs;
mod key;

use async_trait::async_trait;
use bytes::Bytes;

pub use fs::{FsStore, create_private_dir};
pub use key::{BlobKey, KeyError};

/// A storage failure. A missing blob is not an error: reads return `Ok(None)`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed to read or write.
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

    /// Whether a blob exists under `key`.
    async fn exists(&self, key: &BlobKey) -> Result<bool, StoreError>;

    /// Removes a blob; removing a missing blob is not an error.
    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError>;

    /// A short description for logs (`files under ./wharf-data`).
    fn describe(&self) -> String;
}

/// A blob being written. Nothing of it is visible until [`StagedBlob::commit`].
#[async_trait]
pub trait StagedBlob: Send {
    /// Appends bytes.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError>;

    /// Makes the blob visible under its key, atomically.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}
