//! Splitting cargo's publish body into its two parts.
//!
//! The body is `u32 LE` metadata length, the JSON metadata, `u32 LE` crate length,
//! the crate file, and nothing after. Each length is checked against its limit before
//! the bytes it announces are looked for, so a request that claims too much is
//! answered 413 whatever it actually carries, as crates.io does.

use crate::error::{BodyPart, PublishError};
use crate::request::Limits;

/// The JSON metadata and the crate file of a publish body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    pub metadata: &'a [u8],
    pub tarball: &'a [u8],
}

/// Splits `body`, enforcing the length limits and refusing truncation and trailing
/// bytes.
pub(crate) fn split_body<'a>(body: &'a [u8], limits: &Limits) -> Result<Parts<'a>, PublishError> {
    let (metadata, rest) = take_part(
        body,
        BodyPart::MetadataLength,
        BodyPart::Metadata,
        limits.max_metadata_bytes,
        |size_bytes, max_bytes| PublishError::MetadataTooLarge {
            size_bytes,
            max_bytes,
        },
    )?;
    let (tarball, rest) = take_part(
        rest,
        BodyPart::CrateLength,
        BodyPart::Crate,
        limits.max_crate_bytes,
        |size_bytes, max_bytes| PublishError::CrateTooLarge {
            size_bytes,
            max_bytes,
        },
    )?;
    if !rest.is_empty() {
        return Err(PublishError::TrailingBytes {
            count: rest.len() as u64,
        });
    }
    Ok(Parts { metadata, tarball })
}

/// Reads one length-prefixed part from the front of `bytes`.
fn take_part(
    bytes: &[u8],
    length_part: BodyPart,
    part: BodyPart,
    max_bytes: u64,
    too_large: fn(u64, u64) -> PublishError,
) -> Result<(&[u8], &[u8]), PublishError> {
    let Some((length, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(PublishError::Truncated {
            part: length_part,
            expected_bytes: 4,
            found_bytes: bytes.len() as u64,
        });
    };
    let length = u32::from_le_bytes(*length);
    if u64::from(length) > max_bytes {
        return Err(too_large(u64::from(length), max_bytes));
    }
    let length_usize = usize::try_from(length).map_err(|_| PublishError::LengthOverflow {
        part,
        length_bytes: u64::from(length),
    })?;
    rest.split_at_checked(length_usize)
        .ok_or(PublishError::Truncated {
            part,
            expected_bytes: u64::from(length),
            found_bytes: rest.len() as u64,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(metadata: &[u8], tarball: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
        out.extend_from_slice(metadata);
        out.extend_from_slice(&(tarball.len() as u32).to_le_bytes());
        out.extend_from_slice(tarball);
        out
    }

    fn limits() -> Limits {
        Limits::new(100)
    }

    #[test]
    fn splits_both_parts() {
        let b = body(b"{}", b"tarball");
        assert_eq!(
            split_body(&b, &limits()),
            Ok(Parts {
                metadata: b"{}",
                tarball: b"tarball"
            })
        );
        let empty = body(b"", b"");
        assert!(split_body(&empty, &limits()).is_ok());
    }

    #[test]
    fn every_truncation_is_refused() {
        let b = body(b"{\"a\":1}", b"tarball");
        for len in 0..b.len() {
            let err = split_body(&b[..len], &limits()).unwrap_err();
            assert!(
                matches!(err, PublishError::Truncated { .. }),
                "{len}: {err:?}"
            );
        }
        assert_eq!(
            split_body(&b[..2], &limits()),
            Err(PublishError::Truncated {
                part: BodyPart::MetadataLength,
                expected_bytes: 4,
                found_bytes: 2
            })
        );
        assert_eq!(
            split_body(&b[..b.len() - 1], &limits())
                .unwrap_err()
                .to_string(),
            "the publish request is truncated: expected 7 bytes of crate file, found 6; retry the upload"
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut b = body(b"{}", b"tarball");
        b.extend_from_slice(b"xyz");
        assert_eq!(
            split_body(&b, &limits()),
            Err(PublishError::TrailingBytes { count: 3 })
        );
    }

    #[test]
    fn oversized_parts_are_refused_before_they_are_read() {
        // The crate length claims 4 GiB; only the prefix is sent.
        let mut b = body(b"{}", b"");
        let at = b.len() - 4;
        b[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = split_body(&b, &limits()).unwrap_err();
        assert_eq!(
            err,
            PublishError::CrateTooLarge {
                size_bytes: u64::from(u32::MAX),
                max_bytes: 100
            }
        );
        assert!(err.is_too_large());

        let b = body(b"{}", &[0; 101]);
        assert!(split_body(&b, &limits()).unwrap_err().is_too_large());
        let b = body(b"{}", &[0; 100]);
        assert!(split_body(&b, &limits()).is_ok());

        let big = vec![b' '; (1 << 20) + 1];
        let err = split_body(&body(&big, b""), &limits()).unwrap_err();
        assert!(matches!(err, PublishError::MetadataTooLarge { .. }));
        assert!(err.is_too_large());
    }
}
