//! Licences: reading the `license` a crate file declares, and deciding
//! whether an SPDX expression can be satisfied with a set of licences.
//!
//! The parser takes what crates declare in practice: SPDX expressions with
//! `AND`, `OR`, `WITH`, `+` and parentheses, operators in any case, and the
//! legacy `/` that old crates use for `OR` (`MIT/Apache-2.0`). It does not check
//! identifiers against the SPDX list: a policy names the licences it allows,
//! and an identifier it does not name is not allowed, known or not.

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseExpr {
    /// One licence, by identifier (`+` and any `WITH` exception dropped:
    /// a policy judges the licence).
    Id(String),
    /// All of these apply.
    And(Vec<LicenseExpr>),
    /// Any one of these may be chosen.
    Or(Vec<LicenseExpr>),
}

impl LicenseExpr {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, LicenseError> {
        let tokens = tokenize(text);
        let syntax = |reason: &str| LicenseError::Syntax {
            expr: quoted(text),
            reason: reason.to_owned(),
        };
        if tokens.is_empty() {
            return Err(syntax("it is empty"));
        }
        let mut parser = Parser {
            tokens,
            at: 0,
            depth: 0,
        };
        let expr = parser.or().map_err(|reason| syntax(&reason))?;
        if parser.at != parser.tokens.len() {
            return Err(syntax(&format!(
                "unexpected `{}`",
                parser.tokens[parser.at]
            )));
        }
        Ok(expr)
    }

    /// Whether the licences `allowed` says yes to are enough to use the
    /// crate: one branch of every `OR`, all of every `AND`.
    pub fn satisfiable(&self, allowed: &dyn Fn(&str) -> bool) -> bool {
        match self {
            Self::Id(id) => allowed(id),
            Self::And(all) => all.iter().all(|e| e.satisfiable(allowed)),
            Self::Or(any) => any.iter().any(|e| e.satisfiable(allowed)),
        }
    }
}

fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '(' | ')' | '/') {
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            match c {
                '(' | ')' => tokens.push(c.to_string()),
                '/' => tokens.push("OR".to_owned()),
                _ => {}
            }
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// `text`, cut to [`MAX_QUOTED_BYTES`] (at a character boundary) with `…`.
fn quoted(text: &str) -> String {
    if text.len() <= MAX_QUOTED_BYTES {
        return text.to_owned();
    }
    let end = text.floor_char_boundary(MAX_QUOTED_BYTES);
    format!("{}…", &text[..end])
}

struct Parser {
    tokens: Vec<String>,
    at: usize,
    /// The parentheses open at `at`.
    depth: usize,
}

impl Parser {
    fn peek_keyword(&self, keyword: &str) -> bool {
        self.tokens
            .get(self.at)
            .is_some_and(|t| t.eq_ignore_ascii_case(keyword))
    }

    fn or(&mut self) -> Result<LicenseExpr, String> {
        let mut branches = vec![self.and()?];
        while self.peek_keyword("OR") {
            self.at += 1;
            branches.push(self.and()?);
        }
        Ok(if branches.len() == 1 {
            branches.swap_remove(0)
        } else {
            LicenseExpr::Or(branches)
        })
    }

    fn and(&mut self) -> Result<LicenseExpr, String> {
        let mut parts = vec![self.with()?];
        while self.peek_keyword("AND") {
            self.at += 1;
            parts.push(self.with()?);
        }
        Ok(if parts.len() == 1 {
            parts.swap_remove(0)
        } else {
            LicenseExpr::And(parts)
        })
    }

    fn with(&mut self) -> Result<LicenseExpr, String> {
        let expr = self.primary()?;
        if self.peek_keyword("WITH") {
            self.at += 1;
            match self.tokens.get(self.at) {
                Some(t) if !is_operator(t) => self.at += 1,
                _ => return Err("`WITH` needs an exception identifier after it".to_owned()),
            }
        }
        Ok(expr)
    }

    fn primary(&mut self) -> Result<LicenseExpr, String> {
        let Some(token) = self.tokens.get(self.at).cloned() else {
            return Err("it ends where a licence was expected".to_owned());
        };
        self.at += 1;
        if token == "(" {
            if self.depth == MAX_DEPTH {
                return Err(format!("it nests parentheses deeper than {MAX_DEPTH}"));
            }
            self.depth += 1;
            let inner = self.or()?;
            self.depth -= 1;
            if self.tokens.get(self.at).map(String::as_str) != Some(")") {
                return Err("a `(` is not closed".to_owned());
            }
            self.at += 1;
            return Ok(inner);
        }
        if is_operator(&token) || token == ")" {
            return Err(format!("`{token}` where a licence was expected"));
        }
        let id = token.strip_suffix('+').unwrap_or(&token);
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
        {
            return Err(format!("`{token}` is not a licence identifier"));
        }
        Ok(LicenseExpr::Id(id.to_owned()))
    }
}

fn is_operator(token: &str) -> bool {
    ["AND", "OR", "WITH"]
        .iter()
        .any(|op| token.eq_ignore_ascii_case(op))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(expr: &str, allowed: &[&str]) -> bool {
        LicenseExpr::parse(expr)
            .unwrap()
            .satisfiable(&|id| allowed.contains(&id))
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
