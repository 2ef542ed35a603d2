//! Licences: reading the `license` a crate file declares, and deciding
//! whether an SPDX expression can be satisfied with a set of licences.
//!
//! Expressions are read by the `spdx` crate (the one cargo-deny uses), in
//! the lax mode crates.io accepts: `AND`, `OR`, `WITH`, `+` and parentheses,
//! operators in any case, the legacy `/` for `OR` (`MIT/Apache-2.0`), and the
//! imprecise names old crates use. Identifiers are checked against the SPDX
//! licence list it carries: an unknown licence or exception is an error, not a
//! licence a policy could allow; `LicenseRef-…` names a licence of its own.
//! A deprecated identifier is judged under every name SPDX gives it
//! (`GPL-2.0` is also `GPL-2.0-only`; `GPL-2.0+` is `GPL-2.0-or-later`, and
//! may be used as `GPL-2.0-only`); an exception (`WITH LLVM-exception`) only
//! adds permissions, so the licence it is attached to is what is judged.

use std::io::{self, Read};

use flate2::read::GzDecoder;

/// The most a crate file is inflated while looking for its `Cargo.toml`.
/// Cargo writes the manifest among the first entries, so the limit is only
/// reached by a hostile file.
const MAX_SCAN_BYTES: u64 = 256 << 20;

/// The largest `Cargo.toml` read.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The deepest nesting of parentheses accepted. The parser recurses once per
/// level, and a manifest can hold a megabyte of `(`; real expressions nest one
/// or two levels.
const MAX_DEPTH: usize = 64;

/// How much of a refused expression an error quotes: enough to recognise it,
/// never a megabyte in a log line.
const MAX_QUOTED_BYTES: usize = 64;

/// Why a crate's licence could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    /// The crate file is not a readable gzip'd tar, or has no manifest.
    #[error("cannot read Cargo.toml from the crate file: {0}")]
    Unreadable(String),
    /// The `license` field is not an expression.
    #[error("`{expr}` is not an SPDX licence expression: {reason}")]
    Syntax {
        /// The expression as declared.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The `package.license` of the crate file `tarball` (whose entries are under
/// `{prefix}/`): `None` when it declares none (only `license-file`, or nothing).
pub fn license_of(tarball: &[u8], prefix: &str) -> Result<Option<String>, LicenseError> {
    let unreadable = |e: io::Error| LicenseError::Unreadable(e.to_string());
    let inflated = GzDecoder::new(tarball).take(MAX_SCAN_BYTES);
    let mut archive = tar::Archive::new(inflated);
    let wanted = format!("{prefix}/Cargo.toml");
    for entry in archive.entries().map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        if entry.path_bytes().as_ref() != wanted.as_bytes() {
            continue;
        }
        let mut text = String::new();
        entry
            .take(MAX_MANIFEST_BYTES)
            .read_to_string(&mut text)
            .map_err(unreadable)?;
        let manifest: toml::Table =
            toml::from_str(&text).map_err(|e| LicenseError::Unreadable(e.message().to_owned()))?;
        let license = manifest
            .get("package")
            .and_then(|p| p.get("license"))
            .and_then(|l| l.as_str())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned);
        return Ok(license);
    }
    Err(LicenseError::Unreadable(format!("no `{wanted}` in it")))
}

/// A parsed SPDX licence expression.
#[derive(Debug, Clone)]
pub struct LicenseExpr(spdx::Expression);

impl LicenseExpr {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, LicenseError> {
        let syntax = |reason: String| LicenseError::Syntax {
            expr: quoted(text),
            reason,
        };
        if text.trim().is_empty() {
            return Err(syntax("it is empty".to_owned()));
        }
        // The parser keeps its own stack, but a megabyte of `(` is still no
        // licence: refuse it before spending anything on it.
        let mut depth = 0usize;
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_DEPTH {
                return Err(syntax(format!(
                    "it nests parentheses deeper than {MAX_DEPTH}"
                )));
            }
        }
        spdx::Expression::parse_mode(text, spdx::ParseMode::LAX)
            .map(Self)
            .map_err(|e| {
                let term = text.get(e.span.clone()).unwrap_or_default();
                syntax(if term.trim().is_empty() {
                    e.reason.to_string()
                } else {
                    format!("{} at `{}`", e.reason, quoted(term))
                })
            })
    }

    /// Whether the licences `allowed` says yes to are enough to use the
    /// crate: one branch of every `OR`, all of every `AND`. `allowed` is
    /// given every name of one licence (see the module's documentation),
    /// its canonical SPDX name first.
    pub fn satisfiable(&self, allowed: &dyn Fn(&[String]) -> bool) -> bool {
        self.0.evaluate(|req| allowed(&names(req)))
    }

    /// The deprecated identifiers the expression uses, for messages.
    pub fn deprecated(&self) -> Vec<&'static str> {
        self.0
            .requirements()
            .filter_map(|r| match &r.req.license {
                spdx::LicenseItem::Spdx { id, .. } if id.is_deprecated() => Some(id.name),
                _ => None,
            })
            .collect()
    }
}

/// Every name licence requirement `req` goes by: its canonical form, its
/// identifier as written, and for the deprecated GNU identifiers the `-only`
/// (and, with `+`, `-or-later`) forms SPDX replaced them with.
fn names(req: &spdx::LicenseReq) -> Vec<String> {
    let mut names = vec![req.license.to_string()];
    let mut push = |name: String| {
        if !names.contains(&name) {
            names.push(name);
        }
    };
    if let spdx::LicenseItem::Spdx { id, or_later } = &req.license {
        push(id.name.to_owned());
        if id.is_gnu() {
            let base = id
                .name
                .trim_end_matches("-or-later")
                .trim_end_matches("-only")
                .trim_end_matches('+');
            // "GPL-2.0+" may be used under GPL-2.0 itself, too, whose
            // deprecated identifier is the bare base.
            if let Some(deprecated) = spdx::license_id(base) {
                push(deprecated.name.to_owned());
            }
            for later in [*or_later || id.name.ends_with("-or-later"), false] {
                if let Some(modern) = spdx::license_id(&format!(
                    "{base}{}",
                    if later { "-or-later" } else { "-only" }
                )) {
                    push(modern.name.to_owned());
                }
                if !later {
                    break;
                }
            }
        }
    }
    names
}

/// `text`, cut to [`MAX_QUOTED_BYTES`] (at a character boundary) with `…`.
fn quoted(text: &str) -> String {
    if text.len() <= MAX_QUOTED_BYTES {
        return text.to_owned();
    }
    let end = text.floor_char_boundary(MAX_QUOTED_BYTES);
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(expr: &str, allowed: &[&str]) -> bool {
        LicenseExpr::parse(expr)
            .unwrap()
            .satisfiable(&|names| names.iter().any(|n| allowed.contains(&n.as_str())))
    }

    #[test]
    fn expressions() {
        assert!(allows("MIT OR Apache-2.0", &["Apache-2.0"]));
        assert!(allows("MIT/Apache-2.0", &["MIT"]));
        assert!(!allows("MIT AND GPL-3.0-only", &["MIT"]));
        assert!(allows(
            "(MIT OR GPL-3.0-only) AND BSD-3-Clause",
            &["MIT", "BSD-3-Clause"]
        ));
        assert!(allows(
            "GPL-2.0+ WITH Classpath-exception-2.0",
            &["GPL-2.0"]
        ));
        assert!(allows("Apache-2.0 WITH LLVM-exception or MIT", &["MIT"]));
        assert!(!allows("GPL-3.0-only", &["MIT", "Apache-2.0"]));
        for bad in ["", "MIT OR", "(MIT", "AND MIT", "MIT WITH", "M!T"] {
            assert!(LicenseExpr::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Issue 15: identifiers are checked against the SPDX list, deprecated
    /// ones go by their modern names too, and exceptions must be known.
    #[test]
    fn the_spdx_list_is_known() {
        let unknown = LicenseExpr::parse("MIT OR Not-A-Licence")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("Not-A-Licence"), "{unknown}");
        assert!(LicenseExpr::parse("MIT WITH Not-An-Exception").is_err());
        assert!(LicenseExpr::parse("Apache-2.0 WITH LLVM-exception").is_ok());
        assert!(allows("LicenseRef-Company", &["LicenseRef-Company"]));
        // Deprecated GNU identifiers.
        assert!(allows("GPL-2.0", &["GPL-2.0-only"]));
        assert!(allows("GPL-3.0+", &["GPL-3.0-or-later"]));
        assert!(allows("GPL-3.0+", &["GPL-3.0-only"]));
        assert!(!allows("GPL-3.0-or-later", &["GPL-2.0-only"]));
        assert_eq!(
            LicenseExpr::parse("GPL-2.0 OR MIT").unwrap().deprecated(),
            ["GPL-2.0"]
        );
        // Imprecise names crates.io accepted.
        assert!(allows("Apache 2.0 / MIT", &["Apache-2.0"]));
    }

    /// A crate's `Cargo.toml` may hold a megabyte of `(`: the parser recurses per
    /// parenthesis, so without a bound one crate file could overflow the stack and
    /// abort the server that judges it.
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}MIT{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(
            LicenseExpr::parse(&deep).unwrap_err().to_string(),
            format!(
                "`{}…` is not an SPDX licence expression: it nests parentheses deeper than {MAX_DEPTH}",
                &deep[..MAX_QUOTED_BYTES]
            )
        );
        let ok = format!("{}MIT{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(allows(&ok, &["MIT"]));
        let over = format!("({ok})");
        assert!(LicenseExpr::parse(&over).is_err());
    }

    #[test]
    fn reads_the_license_of_a_crate_file() {
        use crate::tarball::tests::{file, gzip, tar};
        let manifest =
            b"[package]\nname = \"foo\"\nversion = \"1.0.0\"\nlicense = \"MIT OR Apache-2.0\"\n";
        let crate_file = gzip(&tar(&[
            file("foo-1.0.0/Cargo.toml.orig", b"x"),
            file("foo-1.0.0/Cargo.toml", manifest),
        ]));
        assert_eq!(
            license_of(&crate_file, "foo-1.0.0").unwrap().as_deref(),
            Some("MIT OR Apache-2.0")
        );
        let none = gzip(&tar(&[file(
            "foo-1.0.0/Cargo.toml",
            b"[package]\nname = \"foo\"\nversion = \"1.0.0\"\nlicense-file = \"LICENSE\"\n",
        )]));
        assert_eq!(license_of(&none, "foo-1.0.0").unwrap(), None);
        assert!(license_of(b"not gzip", "foo-1.0.0").is_err());
    }
}
