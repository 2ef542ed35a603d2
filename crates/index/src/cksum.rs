//! The sha256 checksum that an index line records for its crate file.

use std::fmt;

use sha2::{Digest, Sha256};

/// A sha256 digest, as the `cksum` field of an index line spells it (64 hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cksum([u8; 32]);

/// Why a string is not a checksum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checksum must be 64 hexadecimal digits")]
pub struct CksumError;

impl Cksum {
    /// Parses 64 hex digits (either case).
    pub fn parse(hex_digits: &str) -> Result<Self, CksumError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut out).map_err(|_| CksumError)?;
        Ok(Self(out))
    }

    /// The checksum of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Wraps a finished digest.
    pub fn from_bytes(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Cksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Cksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cksum({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Cksum::of(b"hello");
        assert_eq!(
            c.to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Cksum::parse(&c.to_hex().to_uppercase()), Ok(c));
        assert_eq!(Cksum::parse("abc"), Err(CksumError));
    }
}
