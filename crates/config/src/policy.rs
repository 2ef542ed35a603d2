//! What a cache or mirror registry lets through to cargo: allow and deny
//! rules by crate name and version, licences, and whether what no rule allows
//! waits for approval. This module is the typed configuration only; the
//! server applies it.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// The policy of a cache or mirror registry (`[registries.NAME.policy]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// `allow-list`: only what `allow` names gets through. `deny-list` (the
    /// default): everything but what `deny` names.
    #[serde(default)]
    pub mode: PolicyMode,
    /// Versions that no rule allows are held for a decision
    /// (`wharf approvals approve`) rather than left out for good.
    #[serde(default)]
    pub approval: bool,
    /// Crate name (or glob) to the versions allowed (`serde = "<1.0.200"`,
    /// `"tokio*" = "*"`). A plain name's rule wins over globs that match it.
    #[serde(default)]
    pub allow: BTreeMap<String, VersionRule>,
    /// Crate name (or glob) to the versions never let through, whatever else
    /// says (`openssl-sys = "*"`, `time = "<0.2.23"`).
    #[serde(default)]
    pub deny: BTreeMap<String, VersionRule>,
    /// Licences (SPDX identifiers, globs allowed: `BSD-*`) a crate may be
    /// used under. When not empty, a crate whose `license` expression cannot
    /// be satisfied with these alone is refused once it has been fetched.
    #[serde(default)]
    pub licenses: Vec<String>,
    /// Licences (SPDX identifiers or globs) a crate may never be used under.
    #[serde(default)]
    pub deny_licenses: Vec<String>,
}

/// How rules combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyMode {
    /// Everything but what a deny rule matches.
    #[default]
    DenyList,
    /// Only what an allow rule matches (and no deny rule does).
    AllowList,
}

/// The versions a rule covers: a semver requirement as in `Cargo.toml`, or
/// `*` for every version, pre-releases included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRule {
    /// The text as written, for messages.
    pub text: String,
    /// `None` for `*`.
    pub req: Option<semver::VersionReq>,
}

impl VersionRule {
    /// Parses a rule's version requirement.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed == "*" || trimmed.is_empty() {
            return Ok(Self {
                text: "*".to_owned(),
                req: None,
            });
        }
        let req = semver::VersionReq::parse(trimmed).map_err(|e| {
            format!("`{trimmed}` is not a version requirement like \"<1.0.200\" or \"^1.2\": {e}")
        })?;
        Ok(Self {
            text: trimmed.to_owned(),
            req: Some(req),
        })
    }

    /// Whether `vers` is covered.
    pub fn matches(&self, vers: &semver::Version) -> bool {
        self.req.as_ref().is_none_or(|req| req.matches(vers))
    }
}

impl<'de> Deserialize<'de> for VersionRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Policy {
    /// Checks what the types cannot, for registry `registry`.
    pub fn validate(&self, registry: &str) -> Result<(), String> {
        let names = self.allow.keys().chain(self.deny.keys());
        for name in names {
            if name.trim().is_empty() {
                return Err(format!(
                    "registry `{registry}`: a policy rule has an empty crate name"
                ));
            }
        }
        for licence in self.licenses.iter().chain(&self.deny_licenses) {
            if licence.trim().is_empty() || licence.contains(char::is_whitespace) {
                return Err(format!(
                    "registry `{registry}`: licence `{licence}` must be one SPDX identifier like MIT or Apache-2.0"
                ));
            }
        }
        if self.mode == PolicyMode::AllowList && self.allow.is_empty() && !self.approval {
            return Err(format!(
                "registry `{registry}`: an allow-list policy with no `allow` rules and no `approval` lets nothing through"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_rules() {
        let star = VersionRule::parse("*").unwrap();
        assert!(star.matches(&semver::Version::parse("1.0.0-alpha.1").unwrap()));
        let below = VersionRule::parse("<1.0.200").unwrap();
        assert!(below.matches(&semver::Version::parse("1.0.199").unwrap()));
        assert!(!below.matches(&semver::Version::parse("1.0.200").unwrap()));
        assert!(VersionRule::parse("not a req").is_err());
    }
}
