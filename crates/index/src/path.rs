//! Sparse index paths: where the index file of a crate lives (`se/rd/serde`).

use std::fmt;

use crate::name::{CrateName, NameError};

/// The sparse index path of one crate: `1/a`, `2/ab`, `3/a/abc`, `se/rd/serde`.
///
/// Always built from the lowercased name, as cargo requests it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IndexPath {
    path: String,
    name: CrateName,
}

/// Why a request path is not a sparse index path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The file name is not a crate name.
    #[error("{0}")]
    Name(#[from] NameError),
    /// The directories do not match the file name, or the name is not lowercase.
    #[error(
        "not a sparse index path: the directories must be derived from the lowercase crate name"
    )]
    Layout,
}

/// The directory part of a name's sparse path (`1`, `2`, `3/a`, `se/rd`), in the
/// name's own case. Cargo's `{prefix}` marker; lowercase it for `{lowerprefix}`.
///
/// Crate names are ASCII, where a character is a byte. The layout counts
/// characters, so that a string that is not a crate name (an upstream's `name`
/// field, rendered into a `dl` template) is never split inside a character.
pub fn prefix(name: &str) -> String {
    // The first `n` characters of `name` (all of it if shorter).
    let head = |n: usize| {
        name.char_indices()
            .nth(n)
            .map_or(name, |(at, _)| &name[..at])
    };
    match name.chars().count() {
        0 => String::new(),
        1 => "1".to_owned(),
        2 => "2".to_owned(),
        3 => format!("3/{}", head(1)),
        _ => format!("{}/{}", head(2), &head(4)[head(2).len()..]),
    }
}

impl IndexPath {
    /// The index path of `name`.
    pub fn for_name(name: &CrateName) -> Self {
        let lower = name.lowercase();
        let path = format!("{}/{}", prefix(&lower), lower);
        let name = CrateName::new(&lower).expect("a lowercased valid name is valid");
        Self { path, name }
    }

    /// Parses a request path such as `se/rd/serde`. Only the canonical lowercase
    /// layout is accepted, so one crate has exactly one path (and one cache key).
    pub fn parse(path: &str) -> Result<Self, PathError> {
        let file = path.rsplit('/').next().unwrap_or(path);
        let name = CrateName::new(file)?;
        let this = Self::for_name(&name);
        if this.path == path {
            Ok(this)
        } else {
            Err(PathError::Layout)
        }
    }

    /// The path, relative to the index root.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The lowercased crate name the path is for.
    pub fn name(&self) -> &CrateName {
        &self.name
    }
}

impl fmt::Display for IndexPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

impl fmt::Debug for IndexPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.path, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(name: &str) -> String {
        IndexPath::for_name(&CrateName::new(name).unwrap()).to_string()
    }

    #[test]
    fn layout_matches_cargo() {
        assert_eq!(path_of("a"), "1/a");
        assert_eq!(path_of("ab"), "2/ab");
        assert_eq!(path_of("abc"), "3/a/abc");
        assert_eq!(path_of("serde"), "se/rd/serde");
        assert_eq!(path_of("Inflector"), "in/fl/inflector");
        assert_eq!(prefix("Inflector"), "In/fl");
    }

    /// `prefix` sliced bytes, and panicked on a name whose first characters are
    /// not ASCII; such a name reaches it from an upstream's index line.
    #[test]
    fn prefix_of_a_non_ascii_name_does_not_panic() {
        assert_eq!(prefix("ꪹ"), "1");
        assert_eq!(prefix("éa"), "2");
        assert_eq!(prefix("éab"), "3/é");
        assert_eq!(prefix("𑤑ꪹMx"), "𑤑ꪹ/Mx");
        assert_eq!(prefix("ab𑤑ꪹMx"), "ab/𑤑ꪹ");
    }

    #[test]
    fn parse_accepts_only_canonical_paths() {
        assert_eq!(
            IndexPath::parse("se/rd/serde").unwrap().name().as_str(),
            "serde"
        );
        assert_eq!(IndexPath::parse("3/a/abc").unwrap().as_str(), "3/a/abc");
        assert_eq!(IndexPath::parse("se/rd/Serde"), Err(PathError::Layout));
        assert_eq!(IndexPath::parse("xx/rd/serde"), Err(PathError::Layout));
        assert_eq!(IndexPath::parse("serde"), Err(PathError::Layout));
        assert!(IndexPath::parse("se/rd/..").is_err());
        assert!(IndexPath::parse("../../etc/passwd").is_err());
        assert!(IndexPath::parse("").is_err());
    }
}
