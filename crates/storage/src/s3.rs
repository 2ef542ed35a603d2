//! Any S3-compatible object store (AWS S3, Cloudflare R2, Garage, SeaweedFS,
//! MinIO) through the `object_store` crate, the one the Arrow project keeps
//! for exactly this (its S3 client signs requests, retries with backoff,
//! streams multipart uploads and speaks conditional puts).
//!
//! A key `K` is the object `{prefix}K` in the bucket, so a mirror's tree is
//! laid out in the bucket exactly as on disk and can be served by the
//! bucket's static website. A staged write is held in memory up to
//! [`MULTIPART_BYTES`], then streamed as a multipart upload that is aborted
//! when the stage is dropped; an object is visible only once whole. A
//! create-only put is `If-None-Match: *`.
//!
//! Every served object is written with its `Content-Type` and
//! `Cache-Control` ([`crate::served_as`]), so the bucket alone serves cargo
//! as wharf would. [`BlobStore::download_url`] hands out an object's public
//! URL (`public_url`, or an open bucket's own) or a presigned one.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
    aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut},
    path::Path,
    signer::{Method, Signer},
};

use crate::{BlobKey, BlobStore, Handout, StagedBlob, StoreError, served_as};

/// A staged write up to this size is one PUT; a larger one a multipart
/// upload in parts of this size.
pub const MULTIPART_BYTES: usize = 8 << 20;

/// Where an S3-compatible store is and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// Prepended to every key (`prod/`); empty for none.
    pub prefix: String,
    /// The service's URL, for anything but AWS (`http://127.0.0.1:8333`).
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when the service does not care).
    pub region: String,
    /// Allow a plain-HTTP endpoint (a loopback or private network).
    pub allow_http: bool,
    /// Send unsigned requests: for a bucket open to anonymous writes (a test
    /// server). Otherwise credentials come from the usual AWS chain.
    pub anonymous: bool,
    /// Bound on connecting and on each request.
    pub timeout: Duration,
    /// `Cache-Control` of the served files a sync pass rewrites (index
    /// files, `config.json`, `status.json`, the manifest).
    pub fresh_for: String,
    /// The URL the bucket's objects are read at by anyone (a CDN, or the
    /// bucket's website), such that key `K` is `{public_url}/K`: the
    /// prefix, if any, is part of it. Redirects point there when they may.
    pub public_url: Option<String>,
}

/// Blobs as objects in an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    store: Arc<AmazonS3>,
    prefix: String,
    described: String,
    fresh_for: String,
    /// Where anyone reads key `K`: `{public}/K`.
    public: Option<String>,
}

impl S3Store {
    /// A client for `settings`. Nothing is asked of the service yet: see
    /// [`crate::check`] for the start-up probe.
    pub fn new(settings: &S3Settings) -> Result<Self, StoreError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_skip_signature(settings.anonymous)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(settings.timeout)
                    .with_timeout(settings.timeout.max(Duration::from_secs(30))),
            )
            // After the client options, which would otherwise reset it.
            .with_allow_http(settings.allow_http)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: settings.timeout,
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder.build().map_err(|e| StoreError::Unavailable {
            op: "configure",
            key: settings.bucket.clone(),
            reason: e.to_string(),
        })?;
        let prefix = settings.prefix.trim_matches('/').to_owned();
        let described = format!(
            "bucket `{}`{} at {}",
            settings.bucket,
            if prefix.is_empty() {
                String::new()
            } else {
                format!(" under `{prefix}/`")
            },
            settings.endpoint.as_deref().unwrap_or("AWS S3")
        );
        let public = match &settings.public_url {
            Some(url) => Some(url.trim_end_matches('/').to_owned()),
            // An open bucket's objects are read at their own URL, path-style
            // as the client addresses them.
            None if settings.anonymous => {
                let endpoint = match &settings.endpoint {
                    Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
                    None => format!("https://s3.{}.amazonaws.com", settings.region),
                };
                let mut base = format!("{endpoint}/{}", settings.bucket);
                if !prefix.is_empty() {
                    base = format!("{base}/{}", encoded(&prefix));
                }
                Some(base)
            }
            None => None,
        };
        Ok(Self {
            store: Arc::new(store),
            prefix,
            described,
            fresh_for: settings.fresh_for.clone(),
            public,
        })
    }

    /// The attributes a blob under `key` is written with.
    fn attributes(&self, key: &BlobKey) -> Attributes {
        let mut attributes = Attributes::new();
        if let Some(served) = served_as(key, &self.fresh_for) {
            attributes.insert(Attribute::ContentType, served.content_type.into());
            attributes.insert(Attribute::CacheControl, served.cache_control.into());
        }
        attributes
    }

    fn path(&self, key: &BlobKey) -> Path {
        if self.prefix.is_empty() {
            Path::from(key.as_str())
        } else {
            Path::from(format!("{}/{}", self.prefix, key.as_str()))
        }
    }

    fn key_of(&self, path: &Path) -> Option<BlobKey> {
        let text = path.as_ref();
        let rest = if self.prefix.is_empty() {
            text
        } else {
            text.strip_prefix(&self.prefix)?.strip_prefix('/')?
        };
        BlobKey::new(rest).ok()
    }
}

/// An `object_store` failure of `op` on `key`. Everything but a refused
/// precondition is the service's: unreachable, refusing our credentials,
/// no such bucket, failing. They are all "storage unavailable".
fn failure(op: &'static str, key: &str, e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            StoreError::AlreadyExists {
                key: key.to_owned(),
            }
        }
        e => StoreError::Unavailable {
            op,
            key: key.to_owned(),
            reason: diagnosed(&one_line(&e)),
        },
    }
}

/// `detail` led by what it means in plain words, when the service's
/// answer says: the operator reads the first words.
fn diagnosed(detail: &str) -> String {
    let meaning = if detail.contains("NoSuchBucket") {
        "no such bucket"
    } else if [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "403 Forbidden",
    ]
    .iter()
    .any(|code| detail.contains(code))
    {
        "the service refused wharf's credentials"
    } else {
        return detail.to_owned();
    };
    format!("{meaning} ({detail})")
}

/// The error and its causes on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}

#[async_trait]
impl BlobStore for S3Store {
    async fn get(&self, key: &BlobKey) -> Result<Option<Bytes>, StoreError> {
        let got = match self.store.get(&self.path(key)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(failure("read", key.as_str(), e)),
        };
        got.bytes()
            .await
            .map(Some)
            .map_err(|e| failure("read", key.as_str(), e))
    }

    async fn put(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError> {
        let options = PutOptions {
            attributes: self.attributes(key),
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.path(key), PutPayload::from(bytes), options)
            .await
            .map(|_| ())
            .map_err(|e| failure("write", key.as_str(), e))
    }

    async fn put_if_absent(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError> {
        let options = PutOptions {
            mode: PutMode::Create,
            attributes: self.attributes(key),
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.path(key), PutPayload::from(bytes), options)
            .await
            .map(|_| ())
            .map_err(|e| failure("write", key.as_str(), e))
    }

    async fn list(&self, prefix: &BlobKey) -> Result<Vec<BlobKey>, StoreError> {
        let mut listing = self.store.list(Some(&self.path(prefix)));
        let mut keys = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| failure("list", prefix.as_str(), e))?;
            if let Some(key) = self.key_of(&meta.location) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    async fn stage(&self, key: &BlobKey) -> Result<Box<dyn StagedBlob>, StoreError> {
        Ok(Box::new(S3Stage {
            store: self.store.clone(),
            path: self.path(key),
            key: key.clone(),
            attributes: self.attributes(key),
            buffer: Vec::new(),
            upload: None,
        }))
    }

    async fn exists(&self, key: &BlobKey) -> Result<bool, StoreError> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(failure("read", key.as_str(), e)),
        }
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failure("delete", key.as_str(), e)),
        }
    }

    fn describe(&self) -> String {
        self.described.clone()
    }

    async fn download_url(
        &self,
        key: &BlobKey,
        handout: Handout,
    ) -> Result<Option<String>, StoreError> {
        let expires_in = match handout {
            Handout::Anyone { expires_in } => match &self.public {
                Some(public) => return Ok(Some(format!("{public}/{}", encoded(key.as_str())))),
                None => expires_in,
            },
            Handout::Private { expires_in } => expires_in,
        };
        self.store
            .signed_url(Method::GET, &self.path(key), expires_in)
            .await
            .map(|url| Some(url.to_string()))
            .map_err(|e| failure("sign", key.as_str(), e))
    }
}

/// `path` with everything but unreserved characters and `/` escaped, as
/// S3 expects a key in a URL (`+` would otherwise read as a space).
fn encoded(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A write in progress: in memory, then a multipart upload.
struct S3Stage {
    store: Arc<AmazonS3>,
    path: Path,
    key: BlobKey,
    attributes: Attributes,
    buffer: Vec<u8>,
    upload: Option<WriteMultipart>,
}

#[async_trait]
impl StagedBlob for S3Stage {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        if self.upload.is_none() {
            self.buffer.extend_from_slice(chunk);
            if self.buffer.len() < MULTIPART_BYTES {
                return Ok(());
            }
            let options = PutMultipartOptions {
                attributes: self.attributes.clone(),
                ..PutMultipartOptions::default()
            };
            let upload = self
                .store
                .put_multipart_opts(&self.path, options)
                .await
                .map_err(|e| failure("write", self.key.as_str(), e))?;
            let mut upload = WriteMultipart::new_with_chunk_size(upload, MULTIPART_BYTES);
            upload.write(&std::mem::take(&mut self.buffer));
            self.upload = Some(upload);
            return Ok(());
        }
        if let Some(upload) = &mut self.upload {
            // At most a few parts in flight: memory stays bounded.
            upload
                .wait_for_capacity(2)
                .await
                .map_err(|e| failure("write", self.key.as_str(), e))?;
            upload.write(chunk);
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        match self.upload.take() {
            Some(upload) => upload
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| failure("write", self.key.as_str(), e)),
            None => self
                .store
                .put_opts(
                    &self.path,
                    PutPayload::from(std::mem::take(&mut self.buffer)),
                    PutOptions {
                        attributes: std::mem::take(&mut self.attributes),
                        ..PutOptions::default()
                    },
                )
                .await
                .map(|_| ())
                .map_err(|e| failure("write", self.key.as_str(), e)),
        }
    }
}

impl Drop for S3Stage {
    fn drop(&mut self) {
        // An upload never completed is aborted, so its parts are not kept
        // (and billed); a process killed before this leaves them to the
        // bucket's lifecycle rule for incomplete uploads.
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(public_url: Option<&str>, endpoint: Option<&str>, prefix: &str) -> S3Store {
        S3Store::new(&S3Settings {
            bucket: "b".into(),
            prefix: prefix.into(),
            endpoint: endpoint.map(str::to_owned),
            region: "eu-west-1".into(),
            allow_http: true,
            anonymous: true,
            timeout: Duration::from_secs(1),
            fresh_for: crate::DEFAULT_FRESH_FOR.into(),
            public_url: public_url.map(str::to_owned),
        })
        .unwrap()
    }

    async fn url_of(store: &S3Store) -> Option<String> {
        let key = BlobKey::new("m/crates/a/a-1.0.0+meta.crate").unwrap();
        let anyone = Handout::Anyone {
            expires_in: Duration::from_secs(60),
        };
        store.download_url(&key, anyone).await.unwrap()
    }

    #[tokio::test]
    async fn public_urls_are_the_configured_one_or_the_open_buckets_own() {
        let cdn = store(
            Some("https://cdn.example.org/mirror/"),
            Some("http://127.0.0.1:9"),
            "p",
        );
        assert_eq!(
            url_of(&cdn).await.as_deref(),
            Some("https://cdn.example.org/mirror/m/crates/a/a-1.0.0%2Bmeta.crate")
        );
        let open = store(None, Some("http://127.0.0.1:9/"), "/p/q/");
        assert_eq!(
            url_of(&open).await.as_deref(),
            Some("http://127.0.0.1:9/b/p/q/m/crates/a/a-1.0.0%2Bmeta.crate")
        );
        let aws = store(None, None, "");
        assert_eq!(
            url_of(&aws).await.as_deref(),
            Some("https://s3.eu-west-1.amazonaws.com/b/m/crates/a/a-1.0.0%2Bmeta.crate")
        );
    }

    #[test]
    fn the_services_codes_are_said_in_plain_words() {
        assert!(diagnosed("... <Code>NoSuchBucket</Code> ...").starts_with("no such bucket ("));
        assert!(
            diagnosed("status 403 Forbidden: <Code>SignatureDoesNotMatch</Code>")
                .starts_with("the service refused wharf's credentials (")
        );
        assert_eq!(diagnosed("connection refused"), "connection refused");
    }
}
