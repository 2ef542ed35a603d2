//! Index files as an upstream sends them: asked for in gzip, decoded here,
//! so that the gzip form can be kept beside the file and handed on.

use std::io::Read;

use bytes::Bytes;
use http::{HeaderMap, header};

/// Whether an answer with `headers` is in gzip; `Err` names an encoding
/// that was not asked for.
pub(crate) fn is_gzip(headers: &HeaderMap) -> Result<bool, String> {
    let Some(encoding) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let is = |token: &[u8]| encoding.as_bytes().eq_ignore_ascii_case(token);
    if is(b"identity") {
        Ok(false)
    } else if is(b"gzip") || is(b"x-gzip") {
        Ok(true)
    } else {
        Err(String::from_utf8_lossy(encoding.as_bytes()).into_owned())
    }
}

/// What a gzip body `raw` decodes to, if that is at most `limit` bytes.
pub(crate) fn gunzip(raw: &[u8], limit: u64) -> Result<Bytes, String> {
    let mut body = Vec::with_capacity(raw.len().saturating_mul(8).min(limit as usize));
    flate2::read::MultiGzDecoder::new(raw)
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("its gzip body does not decode ({e})"))?;
    if body.len() as u64 > limit {
        return Err(format!(
            "its gzip body is over the limit of {limit} bytes once decoded"
        ));
    }
    Ok(body.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// A gzip body is decoded up to the index file limit and no further (a
    /// few KB that decode to gigabytes are refused after the limit), and
    /// one with a byte changed is refused.
    #[test]
    fn a_gzip_body_is_decoded_within_the_limit() {
        let body = b"{\"name\":\"a\",\"vers\":\"1.0.0\"}\n".repeat(100);
        assert_eq!(gunzip(&gzip(&body), body.len() as u64).unwrap(), body);
        let error = gunzip(&gzip(&body), body.len() as u64 - 1).unwrap_err();
        assert!(error.contains("over the limit"), "{error}");
        let bomb = gzip(&vec![b' '; 64 << 20]);
        assert!(bomb.len() < 100_000);
        assert!(gunzip(&bomb, 1 << 20).is_err());
        let mut changed = gzip(&body);
        let middle = changed.len() / 2;
        changed[middle] ^= 0x55;
        let error = gunzip(&changed, 1 << 20).unwrap_err();
        assert!(error.contains("does not decode"), "{error}");
    }

    #[test]
    fn only_gzip_or_nothing_is_taken() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_ENCODING, value.parse().unwrap());
            is_gzip(&headers)
        };
        assert_eq!(is_gzip(&HeaderMap::new()), Ok(false));
        assert_eq!(with("identity"), Ok(false));
        assert_eq!(with("gzip"), Ok(true));
        assert_eq!(with("X-Gzip"), Ok(true));
        assert_eq!(with("br"), Err("br".to_owned()));
    }
}
