//! Content encodings for index files: chosen from `Accept-Encoding`, made once.

use bytes::Bytes;
use std::io::Write;

/// An encoding wharf can serve an index file in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As is.
    Identity,
    /// gzip (every HTTP client, cargo included).
    Gzip,
    /// zstd.
    Zstd,
    /// brotli.
    Brotli,
}

/// Below this size compression does not pay for its header.
pub const MIN_COMPRESS_BYTES: usize = 256;

impl Encoding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Brotli => "br",
        }
    }

    /// The preferred encoding the client accepts: zstd, then brotli, then gzip.
    pub fn negotiate(accept_encoding: Option<&[u8]>) -> Self {
        let Some(header) = accept_encoding else {
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
        if zstd {
            Self::Zstd
        } else if br {
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
        if body.len() < MIN_COMPRESS_BYTES {
            return None;
        }
        let out = match self {
            Self::Identity => return None,
            Self::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(Encoding::negotiate(None), Encoding::Identity);
        assert_eq!(Encoding::negotiate(Some(b"gzip, deflate")), Encoding::Gzip);
        assert_eq!(Encoding::negotiate(Some(b"gzip, br")), Encoding::Brotli);
        assert_eq!(
            Encoding::negotiate(Some(b"br;q=1.0, zstd, gzip")),
            Encoding::Zstd
        );
        assert_eq!(Encoding::negotiate(Some(b"zstd;q=0, gzip")), Encoding::Gzip);
        assert_eq!(Encoding::negotiate(Some(b"deflate")), Encoding::Identity);
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
}
