//! Reading the few fields of an index line that wharf needs.
//!
//! Lines are relayed byte for byte; this module only looks inside them to find
//! the checksum of a version. It never re-serialises a line.

use serde::Deserialize;

use crate::cksum::Cksum;

/// The fields of one index line that wharf reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexLine {
    /// The crate name as the index spells it.
    pub name: String,
    /// The version string.
    pub vers: String,
    /// The sha256 of the crate file.
    pub cksum: Cksum,
    /// Whether the version is yanked.
    pub yanked: bool,
}

#[derive(Deserialize)]
struct RawLine<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    vers: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    cksum: std::borrow::Cow<'a, str>,
    #[serde(default)]
    yanked: Option<bool>,
}

/// Reads one line; `None` when it is not a line wharf understands.
pub fn parse_line(line: &[u8]) -> Option<IndexLine> {
    let raw = serde_json::from_slice::<RawLine<'_>>(line).ok()?;
    Some(IndexLine {
        name: raw.name.into_owned(),
        vers: raw.vers.into_owned(),
        cksum: Cksum::parse(&raw.cksum).ok()?,
        yanked: raw.yanked.unwrap_or(false),
    })
}

#[derive(Deserialize)]
struct RawDeps {
    #[serde(default)]
    deps: Vec<RawDep>,
}

#[derive(Deserialize)]
struct RawDep {
    name: String,
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    registry: Option<String>,
}

/// The crates a line needs from its own registry: normal and build
/// dependencies (optional ones too), by package name. Dev-dependencies are
/// left out: cargo never resolves them for a registry crate.
pub fn same_registry_deps(line: &[u8]) -> Vec<String> {
    let Ok(raw) = serde_json::from_slice::<RawDeps>(line) else {
        return Vec::new();
    };
    raw.deps
        .into_iter()
        .filter(|d| d.registry.is_none() && d.kind.as_deref() != Some("dev"))
        .map(|d| d.package.unwrap_or(d.name))
        .collect()
}

/// Finds the line for version `vers` in an index file. Lines that do not parse
/// are skipped (a newer index format may add lines wharf does not understand);
/// the version string must match exactly.
pub fn find_version(index_file: &[u8], vers: &str) -> Option<IndexLine> {
    index_file
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice::<RawLine<'_>>(line).ok())
        .filter(|raw| raw.vers == vers)
        .find_map(|raw| {
            Some(IndexLine {
                name: raw.name.into_owned(),
                vers: raw.vers.into_owned(),
                cksum: Cksum::parse(&raw.cksum).ok()?,
                yanked: raw.yanked.unwrap_or(false),
            })
        })
}

/// Whether `file` looks like an intact index file: not empty, and every line
/// a JSON object. Used to decide whether a stored copy whose provenance was
/// lost can still be trusted.
pub fn is_well_formed(file: &[u8]) -> bool {
    let mut lines = file
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .peekable();
    lines.peek().is_some()
        && lines.all(|line| {
            line.first() == Some(&b'{')
                && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deps_of_a_line() {
        let line = br#"{"name":"a","vers":"1.0.0","deps":[{"name":"b","req":"^1","kind":"normal"},{"name":"c","req":"^1","kind":"dev"},{"name":"d2","package":"d","req":"^1","kind":"build","optional":true},{"name":"e","req":"^1","registry":"https://other"}],"cksum":"00","features":{}}"#;
        assert_eq!(same_registry_deps(line), ["b", "d"]);
        assert!(same_registry_deps(b"junk").is_empty());
    }

    const FILE: &str = concat!(
        r#"{"name":"foo","vers":"1.0.0","deps":[],"cksum":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","features":{},"yanked":false}"#,
        "\n",
        "not json\n",
        r#"{"name":"foo","vers":"1.1.0","deps":[],"cksum":"2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824","features":{},"yanked":true,"rust_version":"1.70"}"#,
        "\n"
    );

    #[test]
    fn well_formed_files() {
        let good = FILE.replace("not json\n", "");
        assert!(is_well_formed(good.as_bytes()));
        assert!(!is_well_formed(FILE.as_bytes()));
        assert!(!is_well_formed(b""));
        assert!(!is_well_formed(b"\0\0\0\0"));
        assert!(!is_well_formed(&good.as_bytes()[..good.len() / 2]));
    }

    #[test]
    fn finds_exact_version() {
        let line = find_version(FILE.as_bytes(), "1.1.0").unwrap();
        assert_eq!(line.name, "foo");
        assert!(line.yanked);
        assert_eq!(line.cksum, Cksum::of(b"hello"));
        assert!(find_version(FILE.as_bytes(), "1.0.0").is_some());
        assert!(find_version(FILE.as_bytes(), "1.0").is_none());
    }
}
