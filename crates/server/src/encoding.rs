//! Content encodings for index files: chosen from `Accept-Encoding`, made
//! once per content.
//!
//! Compressed forms are kept by the sha256 of what they compress, not with
//! the entry that served it: entries come and go (re-read from storage after
//! eviction, a policy's filtered copy, a revalidation), and a 50 MB index
//! file revalidated every 2 s was compressed again, 2.9 s of zstd, for every
//! request that asked for zstd. Concurrent requests for one form wait for
//! the one compression under way. Above [`LARGE_BYTES`] only gzip is made
//! (zstd at level 19 and brotli take seconds there), off the request path:
//! until it is ready the file is served as is.

use std::io::Write;

use axum::http::HeaderValue;
use bytes::Bytes;
use moka::{future::Cache, policy::EvictionPolicy};

use crate::metrics::Counter;

/// An encoding wharf can serve an index file in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// As is.
    Identity = 0,
    /// gzip (every HTTP client, cargo included).
    Gzip,
    /// zstd.
    Zstd,
    /// brotli.
    Brotli,
}

/// Below this size compression does not pay for its header.
pub const MIN_COMPRESS_BYTES: usize = 256;

/// Above this size a body is only gzipped, in the background.
pub const LARGE_BYTES: usize = 1 << 20;

/// Compressions run by this process, for `/metrics`.
static COMPRESSIONS: std::sync::LazyLock<Counter> = std::sync::LazyLock::new(Counter::default);

/// The compressions this process has run.
pub fn compressions() -> &'static Counter {
    &COMPRESSIONS
}

impl Encoding {
    /// Every encoding, each at its own number as an index.
    pub const ALL: [Self; 4] = [Self::Identity, Self::Gzip, Self::Zstd, Self::Brotli];

    /// The quoted entity tag of content tagged `tag` (hex) served in this
    /// encoding: each form of one content has its own, as a cache between
    /// wharf and cargo needs.
    pub fn etag(self, tag: &str) -> HeaderValue {
        let quoted = match self {
            Self::Identity => format!("\"{tag}\""),
            other => format!("\"{tag}-{}\"", other.token()),
        };
        HeaderValue::from_str(&quoted).expect("hex is a valid header")
    }

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Brotli => "br",
        }
    }

    /// The preferred encoding the client accepts for a body of `len` bytes:
    /// zstd, then brotli, then gzip; only gzip above [`LARGE_BYTES`], none
    /// below [`MIN_COMPRESS_BYTES`].
    pub fn negotiate(accept_encoding: Option<&[u8]>, len: usize) -> Self {
        let Some(header) = accept_encoding.filter(|_| len >= MIN_COMPRESS_BYTES) else {
            return Self::Identity;
        };
        let Ok(header) = std::str::from_utf8(header) else {
            return Self::Identity;
        };
        let (mut gzip, mut zstd, mut br) = (false, false, false);
        for item in header.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
                gzip = true;
            } else if token.eq_ignore_ascii_case("zstd") {
                zstd = true;
            } else if token.eq_ignore_ascii_case("br") {
                br = true;
            }
        }
        let large = len > LARGE_BYTES;
        if zstd && !large {
            Self::Zstd
        } else if br && !large {
            Self::Brotli
        } else if gzip {
            Self::Gzip
        } else {
            Self::Identity
        }
    }

    /// Compresses `body`; `None` when the result would not be smaller. CPU
    /// heavy: run it off the async threads.
    pub fn compress(self, body: &[u8]) -> Option<Bytes> {
        if body.len() < MIN_COMPRESS_BYTES || self == Self::Identity {
            return None;
        }
        COMPRESSIONS.inc();
        let out = match self {
            Self::Identity => return None,
            Self::Gzip => {
                // Level 6, not 9: the first request for each index file waits
                // for it, and on the 26 MB of real index files a cold `cargo
                // fetch` of this workspace asks for, 9 took 2.2x as long for
                // 6% fewer bytes.
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                enc.write_all(body).ok()?;
                enc.finish().ok()?
            }
            Self::Zstd => zstd::bulk::compress(body, 19).ok()?,
            Self::Brotli => {
                let mut out = Vec::new();
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 9,
                    lgwin: 22,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &body[..], &mut out, &params).ok()?;
                out
            }
        };
        (out.len() < body.len()).then(|| Bytes::from(out))
    }
}

/// Compressed forms of index files by (sha256 of the body, encoding),
/// bounded by their size in bytes.
pub struct Compressed {
    forms: Cache<([u8; 32], Encoding), Option<Bytes>>,
}

impl Compressed {
    /// A store of at most `max_bytes` of compressed bodies. Least recently
    /// used forms go first; every form is admitted (a frequency filter would
    /// turn away exactly the large, rarely asked-for forms that are most
    /// expensive to make again).
    pub fn new(max_bytes: u64) -> Self {
        Self {
            forms: Cache::builder()
                .max_capacity(max_bytes)
                .eviction_policy(EvictionPolicy::lru())
                .weigher(|_, form: &Option<Bytes>| {
                    u32::try_from(form.as_ref().map_or(0, Bytes::len) + 64).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// `body` (whose sha256 is `sha256`) in `encoding`, or as is with
    /// [`Encoding::Identity`] when compression does not make it smaller or,
    /// for a large body, is not done yet.
    pub async fn variant(
        &self,
        sha256: [u8; 32],
        body: &Bytes,
        encoding: Encoding,
    ) -> (Bytes, Encoding) {
        if encoding == Encoding::Identity {
            return (body.clone(), Encoding::Identity);
        }
        let key = (sha256, encoding);
        let make = {
            let body = body.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    encoding.compress(&body).map(crate::zero_copy::file_backed)
                })
                .await
                .ok()
                .flatten()
            }
        };
        let form = if body.len() > LARGE_BYTES {
            match self.forms.get(&key).await {
                Some(form) => form,
                None => {
                    // Made once in the background; this request does not wait.
                    let forms = self.forms.clone();
                    tokio::spawn(async move { forms.get_with(key, make).await });
                    None
                }
            }
        } else {
            self.forms.get_with(key, make).await
        };
        match form {
            Some(bytes) => (bytes, encoding),
            None => (body.clone(), Encoding::Identity),
        }
    }

    /// How many compressed forms are kept.
    #[cfg(test)]
    async fn len(&self) -> u64 {
        self.forms.run_pending_tasks().await;
        self.forms.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let small = 1000;
        assert_eq!(Encoding::negotiate(None, small), Encoding::Identity);
        assert_eq!(
            Encoding::negotiate(Some(b"gzip, deflate"), small),
            Encoding::Gzip
        );
        assert_eq!(
            Encoding::negotiate(Some(b"gzip, br"), small),
            Encoding::Brotli
        );
        assert_eq!(
            Encoding::negotiate(Some(b"br;q=1.0, zstd, gzip"), small),
            Encoding::Zstd
        );
        assert_eq!(
            Encoding::negotiate(Some(b"zstd;q=0, gzip"), small),
            Encoding::Gzip
        );
        assert_eq!(
            Encoding::negotiate(Some(b"deflate"), small),
            Encoding::Identity
        );
        // Tiny bodies: nothing.
        assert_eq!(
            Encoding::negotiate(Some(b"gzip"), MIN_COMPRESS_BYTES - 1),
            Encoding::Identity
        );
        // Large bodies: gzip only.
        let large = LARGE_BYTES + 1;
        assert_eq!(
            Encoding::negotiate(Some(b"zstd, br, gzip"), large),
            Encoding::Gzip
        );
        assert_eq!(
            Encoding::negotiate(Some(b"zstd, br"), large),
            Encoding::Identity
        );
    }

    #[test]
    fn compresses_and_round_trips() {
        let body: Vec<u8> = (0..200)
            .flat_map(|i| {
                format!(
                    "{{\"name\":\"serde\",\"vers\":\"1.0.{i}\",\"deps\":[],\"cksum\":\"00\"}}\n"
                )
                .into_bytes()
            })
            .collect();
        let gz = Encoding::Gzip.compress(&body).unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert_eq!(back, body);
        let zs = Encoding::Zstd.compress(&body).unwrap();
        assert_eq!(zstd::decode_all(&zs[..]).unwrap(), body);
        let br = Encoding::Brotli.compress(&body).unwrap();
        let mut back = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut back).unwrap();
        assert_eq!(back, body);
        assert!(Encoding::Gzip.compress(b"tiny").is_none());
    }

    fn index_body(versions: usize) -> Bytes {
        (0..versions)
            .flat_map(|i| {
                format!(
                    "{{\"name\":\"big\",\"vers\":\"1.0.{i}\",\"deps\":[],\"cksum\":\"{i:064x}\",\"features\":{{}},\"yanked\":false}}\n"
                )
                .into_bytes()
            })
            .collect::<Vec<u8>>()
            .into()
    }

    fn sha256(body: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(body).into()
    }

    /// Regression for compressing the same content again for every entry
    /// that held it (a revalidated or re-read file): many requests for one
    /// content, through copies of its bytes, make one compression.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_content_is_compressed_once_however_many_ask() {
        let store = std::sync::Arc::new(Compressed::new(64 << 20));
        let body = index_body(2_000);
        let key = sha256(&body);
        let before = compressions().get();
        let answers = futures::future::join_all((0..16).map(|_| {
            // A fresh copy each time, as a new entry would hold.
            let (store, body) = (store.clone(), Bytes::from(body.to_vec()));
            tokio::spawn(async move { store.variant(key, &body, Encoding::Zstd).await })
        }))
        .await;
        for answer in answers {
            let (bytes, encoding) = answer.unwrap();
            assert_eq!(encoding, Encoding::Zstd);
            assert_eq!(zstd::decode_all(&bytes[..]).unwrap(), body);
        }
        assert_eq!(compressions().get() - before, 1);
        assert_eq!(store.len().await, 1);
    }

    /// A large body is not compressed on the request path: the first request
    /// is answered as is at once, and gzip is made once in the background.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_body_is_gzipped_once_in_the_background() {
        let store = Compressed::new(64 << 20);
        let body = index_body(30_000);
        assert!(body.len() > LARGE_BYTES);
        let key = sha256(&body);
        let before = compressions().get();
        let (first, encoding) = store.variant(key, &body, Encoding::Gzip).await;
        assert_eq!(encoding, Encoding::Identity);
        assert_eq!(first, body);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (bytes, encoding) = store.variant(key, &body, Encoding::Gzip).await;
            if encoding == Encoding::Gzip {
                let mut back = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&bytes[..]),
                    &mut back,
                )
                .unwrap();
                assert_eq!(back, body);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "gzip never came");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(compressions().get() - before, 1);
    }
}
