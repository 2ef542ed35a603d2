//! Crate versions as they appear in index lines and crate file names.

use std::fmt;

/// The longest version string accepted.
pub const MAX_VERSION_LEN: usize = 128;

/// A version string that is safe in a URL and a file name.
///
/// wharf does not need semver ordering to relay a registry, so this checks only
/// the characters semver allows (`1.0.0-rc.1+build.5`); the string is compared
/// exactly, as cargo does when it picks a download.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

/// Why a string is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The version is empty or does not start with a digit.
    #[error("version must start with a digit")]
    BadStart,
    /// The version is longer than [`MAX_VERSION_LEN`].
    #[error("version is longer than {MAX_VERSION_LEN} characters")]
    TooLong,
    /// The version holds a character semver does not allow.
    #[error("version may only hold ASCII letters, digits, `.`, `-` and `+`")]
    BadChar,
}

impl Version {
    /// Validates `vers`.
    pub fn new(vers: &str) -> Result<Self, VersionError> {
        if !vers.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            return Err(VersionError::BadStart);
        }
        if vers.len() > MAX_VERSION_LEN {
            return Err(VersionError::TooLong);
        }
        if !vers
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
        {
            return Err(VersionError::BadChar);
        }
        Ok(Self(vers.to_owned()))
    }

    /// The version string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(Version::new("1.0.0").is_ok());
        assert!(Version::new("0.3.0-alpha.1+build-7").is_ok());
        assert_eq!(Version::new(""), Err(VersionError::BadStart));
        assert_eq!(Version::new("../1"), Err(VersionError::BadStart));
        assert_eq!(Version::new("1/../2"), Err(VersionError::BadChar));
        assert_eq!(Version::new(&"1".repeat(200)), Err(VersionError::TooLong));
    }
}
