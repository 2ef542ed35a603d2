//! Crate downloads answered with a redirect into the bucket
//! (`crate_downloads = "redirect"`), so that the bytes go from the bucket
//! (or the CDN in front of it) to cargo without passing through wharf.
//!
//! A file is handed out by URL only once this process has served it the
//! usual way at least internally: fetched if a cache does not hold it yet,
//! read back from storage and checked against its index line's `cksum`
//! (`stored.rs`), its licence judged. That read happens once per file per
//! process, exactly when a streamed download would have checked it; after
//! it, a download costs a URL (a presignature is local work, no request).

use std::sync::Arc;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use wharf_storage::{BlobKey, BlobStore, Handout};

use crate::error::ApiError;

/// How one registry redirects its crate downloads.
pub struct Redirects {
    store: Arc<dyn BlobStore>,
    handout: Handout,
    /// Crate files already checked by this process: redirected at once.
    /// Files checked by this process, with their sizes.
    checked: moka::sync::Cache<BlobKey, u64>,
}

impl Redirects {
    /// Redirects into `store`: to URLs anyone may use, or (`private`) to
    /// presigned URLs valid for `expires_in` only.
    pub fn new(store: Arc<dyn BlobStore>, private: bool, expires_in: std::time::Duration) -> Self {
        let handout = if private {
            Handout::Private { expires_in }
        } else {
            Handout::Anyone { expires_in }
        };
        Self {
            store,
            handout,
            checked: moka::sync::Cache::new(1_000_000),
        }
    }

    /// The size of the file under `key`, if this process checked it already.
    pub fn checked_size(&self, key: &BlobKey) -> Option<u64> {
        self.checked.get(key)
    }

    /// Remembers that the file under `key` is stored and good, and its size.
    pub fn checked(&self, key: &BlobKey, size: u64) {
        self.checked.insert(key.clone(), size);
    }

    /// The redirect to the file under `key`. Never cached by anyone on the
    /// way: a presigned URL expires, and a client's grants may change.
    pub async fn redirect(&self, key: &BlobKey) -> Result<Response, ApiError> {
        let url = self.store.download_url(key, self.handout).await?.ok_or_else(|| {
            ApiError::internal(format!(
                "crate_downloads = \"redirect\", but {} has no URL for `{key}`; configure [storage] kind = \"s3\"",
                self.store.describe()
            ))
        })?;
        let location = HeaderValue::from_str(&url).map_err(|_| {
            ApiError::internal(format!("the store made an invalid URL for `{key}`"))
        })?;
        Ok((
            StatusCode::FOUND,
            [
                (header::LOCATION, location),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, no-store"),
                ),
            ],
        )
            .into_response())
    }
}
