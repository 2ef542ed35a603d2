//! Crate names: what characters a name may hold, and how two spellings compare.

use std::fmt;

/// The longest crate name accepted; crates.io's own limit.
pub const MAX_NAME_LEN: usize = 64;

/// A crate name that is safe to use in a URL, a storage key and a file name.
///
/// It keeps the spelling it was given (`Inflector` stays `Inflector`), because
/// crate files are addressed by the name exactly as the index spells it.
/// Two names are the same crate when they agree after lowercasing and folding
/// `-` into `_`; [`CrateName::canonical`] gives that form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrateName(String);

/// Why a string is not a crate name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("crate name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("crate name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// The name holds a character other than ASCII letters, digits, `-` and `_`.
    #[error("crate name may only hold ASCII letters, digits, `-` and `_`")]
    BadChar,
    /// The name does not start with an ASCII letter or digit.
    #[error("crate name must start with an ASCII letter or digit")]
    BadStart,
}

impl CrateName {
    /// Validates `name` and keeps its spelling.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let first = name.bytes().next().ok_or(NameError::Empty)?;
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NameError::BadChar);
        }
        if !first.is_ascii_alphanumeric() {
            return Err(NameError::BadStart);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as it was spelled.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `name` lowercased, as a name (lowercasing keeps a name valid).
    pub(crate) fn lowercase_of(name: &CrateName) -> Self {
        Self(name.lowercase())
    }

    /// The name lowercased: the spelling cargo uses in sparse index paths.
    pub fn lowercase(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    /// The form under which two names are the same crate (lowercase, `-` as `_`).
    pub fn canonical(&self) -> String {
        self.0.to_ascii_lowercase().replace('-', "_")
    }
}

impl fmt::Display for CrateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CrateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for CrateName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names_and_keeps_spelling() {
        let name = CrateName::new("Inflector").unwrap();
        assert_eq!(name.as_str(), "Inflector");
        assert_eq!(name.lowercase(), "inflector");
        assert!(CrateName::new("serde_json").is_ok());
        assert!(CrateName::new("a-b_c9").is_ok());
        assert!(CrateName::new("9lives").is_ok());
    }

    #[test]
    fn rejects_hostile_names() {
        assert_eq!(CrateName::new(""), Err(NameError::Empty));
        assert_eq!(CrateName::new(".."), Err(NameError::BadChar));
        assert_eq!(CrateName::new("a/b"), Err(NameError::BadChar));
        assert_eq!(CrateName::new("a\0b"), Err(NameError::BadChar));
        assert_eq!(CrateName::new("-a"), Err(NameError::BadStart));
        assert_eq!(CrateName::new(&"a".repeat(65)), Err(NameError::TooLong));
        assert_eq!(CrateName::new("é"), Err(NameError::BadChar));
    }

    #[test]
    fn canonical_folds_case_and_dashes() {
        let a = CrateName::new("Foo-Bar").unwrap();
        let b = CrateName::new("foo_bar").unwrap();
        assert_eq!(a.canonical(), b.canonical());
    }
}
