//! Storage keys: relative, `/`-separated paths that cannot escape the store.

use std::fmt;

/// A key in a [`crate::BlobStore`]: `/`-separated segments of ASCII letters,
/// digits, `-`, `_`, `.` and `+`, none of them empty, `.` or `..`.
///
/// Keys are built by wharf from validated names, never taken from a request as
/// is; the check here is the last line of defence for the filesystem.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BlobKey(String);

/// Why a string is not a storage key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid storage key `{0}`")]
pub struct KeyError(pub String);

impl BlobKey {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        let ok = !key.is_empty()
            && key.len() <= 1024
            && key.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+')
                    })
            });
        if ok {
            Ok(Self(key))
        } else {
            Err(KeyError(key))
        }
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(BlobKey::new("crates-io/index/se/rd/serde").is_ok());
        assert!(BlobKey::new("r/crates/a/a-1.0.0+b.crate").is_ok());
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", "a/./b", "a\\b", "a\0b", "a b",
        ] {
            assert!(BlobKey::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
