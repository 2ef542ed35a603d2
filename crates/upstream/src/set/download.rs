//! Crate files from the upstreams: streamed, hashed against the index
//! checksum, and committed to storage only when they match.

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use sha2::{Digest, Sha256};
use tracing::warn;
use wharf_index::{Cksum, DlTemplate};
use wharf_storage::{BlobKey, BlobStore, StoreError};

use super::{Failure, FetchError, Inner, Upstream, UpstreamSet, describe, status_failure, summary};
use crate::redact;

/// A crate file that was downloaded, verified and committed to storage.
#[derive(Debug)]
pub struct Downloaded {
    /// Its size.
    pub size_bytes: u64,
    /// Its bytes, when its size was known and small enough to hold in memory.
    pub bytes: Option<Bytes>,
    /// The base URL of the upstream it came from, as shown ([`redact`]ed).
    pub upstream: String,
}

impl UpstreamSet {
    /// Downloads a crate file into `store` under `key`, verified against
    /// `cksum`. Upstreams are tried in order; bytes that do not match the
    /// checksum are discarded and the next upstream is tried.
    pub async fn download_crate(
        &self,
        name: &str,
        vers: &str,
        cksum: &Cksum,
        store: &dyn BlobStore,
        key: &BlobKey,
    ) -> Result<Downloaded, FetchError> {
        let mut failures = Vec::new();
        let mut corrupt = None;
        let mut missing = None;
        for (i, up) in self.inner.upstreams.iter().enumerate() {
            if !up.health.is_up() {
                continue;
            }
            match self
                .inner
                .download_once(up, name, vers, cksum, store, key)
                .await
            {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(Outcome::Corrupt(message))) => {
                    warn!(krate.name = name, krate.vers = vers, upstream.url = %up.display, "{message}");
                    corrupt = Some(message);
                }
                Ok(Err(Outcome::Missing(message))) => missing = Some(message),
                Ok(Err(Outcome::Store(e))) => return Err(FetchError::Store(e)),
                Err(Failure {
                    busy: Some(wait), ..
                }) => return Err(FetchError::Busy(wait)),
                Err(failure) => failures.push(self.inner.record(i, failure)),
            }
        }
        if let Some(message) = corrupt {
            Err(FetchError::Corrupt(message))
        } else if let Some(message) = missing {
            Err(FetchError::Missing(message))
        } else {
            Err(FetchError::Unavailable(summary(failures)))
        }
    }
}

/// A download attempt that reached the upstream but produced no usable file.
enum Outcome {
    Corrupt(String),
    Missing(String),
    /// Storing it failed: the server's problem, so no other upstream is
    /// tried and this one is not blamed.
    Store(StoreError),
}

impl Inner {
    async fn download_once(
        &self,
        up: &Upstream,
        name: &str,
        vers: &str,
        cksum: &Cksum,
        store: &dyn BlobStore,
        key: &BlobKey,
    ) -> Result<Result<Downloaded, Outcome>, Failure> {
        let _slot = self.slot().await?;
        let dl = self.dl_template(up).await?;
        let url = dl.render(name, vers, cksum);
        let response = self.send(Some(up.index), self.client.get(&url)).await?;
        let file = format!("{name}-{vers}.crate");
        // The template comes from upstream and may hold a signed URL.
        let url = redact(&url);
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::FORBIDDEN => {
                return Ok(Err(Outcome::Missing(format!(
                    "{url} answered {} for {name} {vers}, which its index lists",
                    response.status()
                ))));
            }
            other => return Err(status_failure(other, response.headers(), Some(&file))),
        }
        if let Some(len) = response.content_length()
            && len > self.settings.max_crate_bytes
        {
            return Ok(Err(Outcome::Corrupt(format!(
                "{name} {vers} from {url} is {len} bytes, over the limit of {}",
                self.settings.max_crate_bytes
            ))));
        }
        // A file of known, small size is held once in memory and stored in one
        // write, and returned to the caller; anything else streams to storage.
        let in_memory = response
            .content_length()
            .is_some_and(|len| len <= self.settings.keep_in_memory_bytes);
        let mut response = response;
        let mut stage = if in_memory {
            None
        } else {
            match store.stage(key).await {
                Ok(stage) => Some(stage),
                Err(e) => return Ok(Err(Outcome::Store(e))),
            }
        };
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut kept = BytesMut::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(Failure::down(format!(
                        "download cut short: {}",
                        describe(&e)
                    )));
                }
            };
            size += chunk.len() as u64;
            if let Some(gate) = &self.gate {
                gate.bytes(chunk.len()).await;
            }
            if size > self.settings.max_crate_bytes {
                return Ok(Err(Outcome::Corrupt(format!(
                    "{name} {vers} from {url} is over the limit of {} bytes",
                    self.settings.max_crate_bytes
                ))));
            }
            hasher.update(&chunk);
            match &mut stage {
                Some(stage) => {
                    if let Err(e) = stage.write(&chunk).await {
                        return Ok(Err(Outcome::Store(e)));
                    }
                }
                None => kept.extend_from_slice(&chunk),
            }
        }
        let got = Cksum::from_bytes(hasher.finalize().into());
        if got != *cksum {
            // Nothing was stored: a stage is discarded when dropped.
            return Ok(Err(Outcome::Corrupt(format!(
                "checksum mismatch for {name} {vers} from {url}: the index says sha256 {cksum}, the upstream sent {size} bytes with sha256 {got}"
            ))));
        }
        let bytes = match stage {
            Some(stage) => {
                if let Err(e) = stage.commit().await {
                    return Ok(Err(Outcome::Store(e)));
                }
                None
            }
            None => {
                let bytes = kept.freeze();
                if let Err(e) = store.put(key, bytes.clone()).await {
                    return Ok(Err(Outcome::Store(e)));
                }
                Some(bytes)
            }
        };
        Ok(Ok(Downloaded {
            size_bytes: size,
            bytes,
            upstream: up.display.clone(),
        }))
    }

    /// The upstream's `dl` template, fetched from its `config.json` once.
    async fn dl_template(&self, up: &Upstream) -> Result<DlTemplate, Failure> {
        up.dl
            .get_or_try_init(|| async {
                // Callers that waited for a failed first attempt see the
                // upstream marked down and give up at once.
                if !up.health.is_up() {
                    return Err(Failure::file("marked down"));
                }
                let url = format!("{}config.json", up.base);
                let response = self.send(Some(up.index), self.client.get(&url)).await?;
                if response.status() != StatusCode::OK {
                    return Err(status_failure(response.status(), response.headers(), None));
                }
                let body = self.read_limited(response, 1 << 20).await?;
                let config: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| Failure::down(format!("{} is not JSON: {e}", redact(&url))))?;
                let dl = config
                    .get("dl")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| Failure::down(format!("{} has no `dl` field", redact(&url))))?;
                Ok(DlTemplate::new(dl))
            })
            .await
            .cloned()
    }
}
