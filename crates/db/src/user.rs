//! User names: who holds a token, who owns a crate, who published a version.

use std::fmt;

/// The longest user name accepted.
pub const MAX_USER_LEN: usize = 64;

/// A user name: 1 to 64 ASCII letters, digits, `-`, `_`, `.` and `@`, starting
/// with a letter or digit.
///
/// wharf has no accounts of its own: a user exists because a token names it. Names
/// compare exactly (`Alice` and `alice` are two users), like Unix user names. The
/// alphabet keeps names safe inside error messages and `cargo owner` output.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct User(String);

/// Why a string is not a user name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid user name `{0}`: use 1 to {MAX_USER_LEN} ASCII letters, digits, `-`, `_`, `.` or `@`, starting with a letter or digit"
)]
pub struct UserError(String);

impl User {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, UserError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_USER_LEN
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            // Only a printable, bounded excerpt goes into the message.
            let shown: String = name
                .chars()
                .take(MAX_USER_LEN)
                .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                .collect();
            Err(UserError(shown))
        }
    }

    /// A name read back from the database, which only ever stores valid names.
    pub(crate) fn from_db(name: String) -> Self {
        Self(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for User {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_logins_and_emails() {
        for name in ["alice", "Bob", "ci-bot_2", "a.b@example.com", "7"] {
            assert_eq!(User::new(name).map(|u| u.to_string()), Ok(name.to_owned()));
        }
    }

    #[test]
    fn rejects_names_that_would_confuse_messages() {
        for name in ["", "-x", "a b", "a,b", "a\nb", "é", &"a".repeat(65)] {
            assert!(User::new(name).is_err(), "{name:?}");
        }
        let err = User::new("a\nb")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.contains('\n'));
    }
}
