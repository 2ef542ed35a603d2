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

/// Whether `dirs` is the directory part of a valid crate name's path,
/// with its trailing slash (`se/rd/` for `serde`), as [`prefix`] spells it.
fn is_prefix_of(dirs: &str, name: &str) -> bool {
    // A valid crate name is ASCII: a character is a byte.
    let dirs = dirs.as_bytes();
    let name = name.as_bytes();
    match name.len() {
        0 => false,
        1 => dirs == b"1/",
        2 => dirs == b"2/",
        3 => dirs.len() == 4 && dirs[..2] == *b"3/" && dirs[2] == name[0] && dirs[3] == b'/',
        _ => {
            dirs.len() == 6
                && dirs[..2] == name[..2]
                && dirs[2] == b'/'
                && dirs[3..5] == name[2..4]
                && dirs[5] == b'/'
        }
    }
}

impl IndexPath {
    /// The index path of `name`.
    pub fn for_name(name: &CrateName) -> Self {
        let lower = name.lowercase();
        let path = format!("{}/{}", prefix(&lower), lower);
        Self {
            path,
            name: CrateName::lowercase_of(name),
        }
    }

    /// Parses a request path such as `se/rd/serde`. Only the canonical lowercase
    /// layout is accepted, so one crate has exactly one path (and one cache key).
    ///
    /// Every index request passes here, so the check builds nothing: the
    /// path is compared with the layout in place and copied once.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        let file = path.rsplit('/').next().unwrap_or(path);
        let name = CrateName::new(file)?;
        let dirs = &path[..path.len() - file.len()];
        if file.bytes().any(|b| b.is_ascii_uppercase()) || !is_prefix_of(dirs, file) {
            return Err(PathError::Layout);
        }
        Ok(Self {
            path: path.to_owned(),
            name,
        })
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

    /// `parse` checks the layout in place; it must accept exactly the path
    /// `for_name` builds, for every length the layout tells apart.
    #[test]
    fn parse_accepts_what_for_name_builds_and_nothing_near_it() {
        for name in [
            "a",
            "z9",
            "ab",
            "a-c",
            "abc",
            "abcd",
            "serde",
            "web-sys",
            "a_b_c_d_e",
        ] {
            let built = path_of(name);
            assert_eq!(IndexPath::parse(&built).unwrap().as_str(), built);
            assert_eq!(IndexPath::parse(&built).unwrap().name().as_str(), name);
            let near = [
                format!("/{built}"),
                format!("x/{built}"),
                built.replacen('/', "//", 1),
                format!("{}/{name}", prefix(&name.to_ascii_uppercase())),
                format!("{}/{name}", prefix(&"z".repeat(name.len()))),
                built.replacen('/', "", 1),
            ];
            // (An uppercase prefix of `1/a` is the path itself.)
            for near in near.into_iter().filter(|near| *near != built) {
                assert_eq!(IndexPath::parse(&near), Err(PathError::Layout), "{near}");
            }
        }
    }
}
