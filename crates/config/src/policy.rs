//! What a cache or mirror registry lets through to cargo: allow and deny
//! rules by crate name and version, licences, and whether what no rule allows
//! waits for approval. This module is the typed configuration only; the
//! server applies it.

use std::{collections::BTreeMap, time::Duration};

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
    /// Owners (`github:LOGIN` users, `github:ORG:TEAM` teams, globs allowed:
    /// `github:our-org:*`) whose crates are let through: a crate is allowed
    /// by owner when one of its current owners matches.
    #[serde(default)]
    pub allow_owners: Vec<String>,
    /// Owners whose crates are never let through, whatever else says.
    #[serde(default)]
    pub deny_owners: Vec<String>,
    /// A version is allowed by owner only when its publisher matches
    /// `allow_owners` too (a stolen co-owner account publishing a new
    /// version is held).
    #[serde(default)]
    pub require_publisher: bool,
    /// Where and how politely the owners and publishers are looked up.
    #[serde(default)]
    pub owners_lookup: OwnersLookup,
    /// A crates.io database dump (`db-dump.tar.gz`) fetched every
    /// `owners_dump_interval` with conditional requests, whose owners and
    /// publishers replace what is known (as `wharf owners import` does).
    #[serde(default)]
    pub owners_dump_url: Option<String>,
    /// How often `owners_dump_url` is asked whether it changed (a day when
    /// not set).
    #[serde(default, with = "humantime_serde")]
    pub owners_dump_interval: Option<Duration>,
}

impl Policy {
    /// How often `owners_dump_url` is asked whether it changed.
    pub fn owners_dump_every(&self) -> Duration {
        self.owners_dump_interval
            .unwrap_or(Duration::from_secs(24 * 3600))
    }
}

/// How a policy with owner rules learns a crate's owners and a version's
/// publisher from the upstream registry's web API
/// (`[registries.NAME.policy.owners_lookup]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnersLookup {
    /// The web API's base (`https://crates.io`); by default the `api` of the
    /// first upstream's `config.json`.
    #[serde(default)]
    pub api: Option<String>,
    /// At most this many API requests per second (one at a time).
    #[serde(default = "default_owners_requests_per_sec")]
    pub requests_per_sec: f64,
    /// The `User-Agent` sent: crates.io asks for one that says who to contact.
    #[serde(default = "default_owners_user_agent")]
    pub user_agent: String,
    /// How long a crate's owners from the API are trusted before they are
    /// asked again (a version's publisher never changes).
    #[serde(default = "default_owners_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Bound on one API request.
    #[serde(default = "default_owners_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a request for an index file waits for a lookup before the
    /// crate is answered as held, to be retried.
    #[serde(default = "default_owners_wait", with = "humantime_serde")]
    pub wait: Duration,
}

impl Default for OwnersLookup {
    fn default() -> Self {
        Self {
            api: None,
            requests_per_sec: default_owners_requests_per_sec(),
            user_agent: default_owners_user_agent(),
            ttl: default_owners_ttl(),
            timeout: default_owners_timeout(),
            wait: default_owners_wait(),
        }
    }
}

fn default_owners_requests_per_sec() -> f64 {
    1.0
}
fn default_owners_user_agent() -> String {
    concat!(
        "wharf/",
        env!("CARGO_PKG_VERSION"),
        " (owner policy lookups; set owners_lookup.user_agent to your contact)"
    )
    .to_owned()
}
fn default_owners_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_owners_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_owners_wait() -> Duration {
    Duration::from_secs(20)
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
///
/// # Pre-releases
///
/// Cargo's requirements match a pre-release only when a comparator names a
/// pre-release of the same `major.minor.patch` (`<1.0.100` does not match
/// `0.9.0-rc4`). A policy cannot rely on that: a deny rule would let the
/// pre-releases of the versions it denies through. So a policy judges a
/// pre-release as **the release it leads to** (its `major.minor.patch`):
///
/// - A **deny** rule covers a version when the requirement matches it or its
///   `major.minor.patch`. `<1.0.100` covers `0.9.0-rc4` and `1.0.99-beta`
///   but not `1.0.100-rc1`; `>=1.0.100`, `^1.0.100`, `~1.0.100` and
///   `=1.0.100` cover `1.0.100-rc1` (a pre-release of a denied release is
///   denied); `<1.0.0` does not cover `1.0.0-rc1` (a pre-release of 1.0.0).
/// - An **allow** rule covers a version when the requirement matches it, or
///   when its `major.minor.patch` is inside every upper bound (`<`, `<=`, and
///   those `^`, `~` and `1.*` imply) and strictly above every lower bound
///   (`>=`, `=`, and those `^`, `~` and `1.*` imply): `<1.0.200` allows
///   `0.9.0-rc4` but not `1.0.200-rc1`; `^1.2.3` allows `1.5.0-rc1` but
///   neither `1.2.3-rc1` (which comes before 1.2.3) nor `2.0.0-alpha`.
/// - `*` covers every version, pre-releases included.
///
/// A requirement that names a pre-release (`<1.0.0-rc.3`) judges the
/// pre-releases of that release as cargo does. Build metadata never matters.
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

    /// Whether a deny rule with this requirement covers `vers` (see the type's
    /// documentation for pre-releases).
    pub fn denies(&self, vers: &semver::Version) -> bool {
        let Some(req) = &self.req else {
            return true;
        };
        let release = release_of(vers);
        req.matches(vers) || (!names_pre_release_of(req, &release) && req.matches(&release))
    }

    /// Whether an allow rule with this requirement covers `vers` (see the
    /// type's documentation for pre-releases).
    pub fn allows(&self, vers: &semver::Version) -> bool {
        let Some(req) = &self.req else {
            return true;
        };
        if req.matches(vers) {
            return true;
        }
        let release = release_of(vers);
        if vers.pre.is_empty() || names_pre_release_of(req, &release) {
            return false;
        }
        // A pre-release comes just before its release: it is inside the upper
        // bounds its release is inside, and above a lower bound only if its
        // release is strictly above it.
        req.matches(&release)
            && !req
                .comparators
                .iter()
                .any(|c| lower_bound(c).is_some_and(|low| low == release))
    }
}

/// `vers` without pre-release and build metadata.
fn release_of(vers: &semver::Version) -> semver::Version {
    semver::Version::new(vers.major, vers.minor, vers.patch)
}

/// Whether a comparator of `req` names a pre-release of `release`: then the
/// pre-releases of `release` are judged as cargo judges them, by precedence.
fn names_pre_release_of(req: &semver::VersionReq, release: &semver::Version) -> bool {
    req.comparators.iter().any(|c| {
        !c.pre.is_empty()
            && c.major == release.major
            && c.minor == Some(release.minor)
            && c.patch == Some(release.patch)
    })
}

/// The least `major.minor.patch` an inclusive lower bound admits (`>=1.2`,
/// `=1.2.3`, `^1.2.3`, `~1.2`, `1.*` all have one); `None` for `<`, `<=` and
/// `>`, whose releases' pre-releases are judged by the release alone.
fn lower_bound(c: &semver::Comparator) -> Option<semver::Version> {
    use semver::Op;
    match c.op {
        Op::Exact | Op::GreaterEq | Op::Tilde | Op::Caret | Op::Wildcard => Some(
            semver::Version::new(c.major, c.minor.unwrap_or(0), c.patch.unwrap_or(0)),
        ),
        _ => None,
    }
}

impl<'de> Deserialize<'de> for VersionRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Policy {
    /// Whether the policy judges crates by their owners.
    pub fn judges_owners(&self) -> bool {
        !(self.allow_owners.is_empty() && self.deny_owners.is_empty())
    }

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
        for owner in self.allow_owners.iter().chain(&self.deny_owners) {
            let parts: Vec<&str> = owner.split(':').collect();
            if !(parts.len() == 2 || parts.len() == 3)
                || parts
                    .iter()
                    .any(|p| p.trim().is_empty() || p.contains(char::is_whitespace))
            {
                return Err(format!(
                    "registry `{registry}`: owner `{owner}` must be a user like github:dtolnay or a team like github:tokio-rs:core (globs allowed: github:our-org:*)"
                ));
            }
        }
        if self.require_publisher && self.allow_owners.is_empty() {
            return Err(format!(
                "registry `{registry}`: require_publisher needs allow_owners (the publishers it accepts)"
            ));
        }
        if let Some(url) = &self.owners_dump_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "registry `{registry}`: owners_dump_url `{url}` must start with http:// or https://"
            ));
        }
        if self.owners_dump_url.is_some() && !self.judges_owners() {
            return Err(format!(
                "registry `{registry}`: owners_dump_url needs owner rules (allow_owners or deny_owners)"
            ));
        }
        let every = self.owners_dump_every();
        if every.is_zero() || every > crate::MAX_DURATION {
            return Err(format!(
                "registry `{registry}`: owners_dump_interval must be more than 0s and at most 100 years"
            ));
        }
        let lookup = &self.owners_lookup;
        if !(lookup.requests_per_sec.is_finite() && lookup.requests_per_sec >= 1.0 / 3600.0) {
            return Err(format!(
                "registry `{registry}`: owners_lookup.requests_per_sec must be at least one an hour (got {})",
                lookup.requests_per_sec
            ));
        }
        if lookup.user_agent.trim().is_empty() {
            return Err(format!(
                "registry `{registry}`: owners_lookup.user_agent must say who is asking"
            ));
        }
        if let Some(api) = &lookup.api
            && !(api.starts_with("http://") || api.starts_with("https://"))
        {
            return Err(format!(
                "registry `{registry}`: owners_lookup.api `{api}` must start with http:// or https://"
            ));
        }
        for (field, value) in [
            ("ttl", lookup.ttl),
            ("timeout", lookup.timeout),
            ("wait", lookup.wait),
        ] {
            if value.is_zero() || value > crate::MAX_DURATION {
                return Err(format!(
                    "registry `{registry}`: owners_lookup.{field} must be more than 0s and at most 100 years"
                ));
            }
        }
        if self.mode == PolicyMode::AllowList
            && self.allow.is_empty()
            && self.allow_owners.is_empty()
            && !self.approval
        {
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
        assert!(star.denies(&v("1.0.0-alpha.1")) && star.allows(&v("1.0.0-alpha.1")));
        let below = VersionRule::parse("<1.0.200").unwrap();
        assert!(below.denies(&v("1.0.199")) && below.allows(&v("1.0.199")));
        assert!(!below.denies(&v("1.0.200")) && !below.allows(&v("1.0.200")));
        assert!(VersionRule::parse("not a req").is_err());
    }

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn owner_rules_are_checked() {
        let check = |text: &str| {
            toml::from_str::<Policy>(text)
                .map_err(|e| e.to_string())
                .and_then(|p| p.validate("r"))
        };
        assert!(check("allow_owners = [\"github:alice\", \"github:org:*\"]").is_ok());
        let err = check("allow_owners = [\"alice\"]").unwrap_err();
        assert!(err.contains("github:dtolnay"), "{err}");
        let err = check("deny_owners = [\"github:\"]").unwrap_err();
        assert!(err.contains("github:tokio-rs:core"), "{err}");
        let err = check("require_publisher = true").unwrap_err();
        assert!(err.contains("needs allow_owners"), "{err}");
        let err =
            check("allow_owners = [\"github:a\"]\nowners_lookup = { requests_per_sec = 0.0 }")
                .unwrap_err();
        assert!(err.contains("requests_per_sec"), "{err}");
        let err =
            check("owners_dump_url = \"ftp://x\"\nallow_owners = [\"github:a\"]").unwrap_err();
        assert!(err.contains("owners_dump_url"), "{err}");
        // An allow-list that only goes by owners lets something through.
        assert!(check("mode = \"allow-list\"\nallow_owners = [\"github:a\"]").is_ok());
    }

    /// `(requirement, version, denied, allowed)`.
    const PRE_RELEASES: &[(&str, &str, bool, bool)] = &[
        // Issue 13.11: the pre-releases below a deny bound are denied.
        ("<1.0.100", "0.8.0-rc1", true, true),
        ("<1.0.100", "0.9.0-rc4", true, true),
        ("<1.0.100", "1.0.99-beta.2+build", true, true),
        ("<1.0.100", "1.0.100-rc1", false, false),
        ("<=1.0.100", "1.0.100-rc1", true, true),
        ("<=1.0.100", "1.0.101-rc1", false, false),
        ("<1.0.0", "1.0.0-rc1", false, false),
        // A pre-release of a release inside a lower bound is denied, but an
        // allow rule's lower bound keeps out what comes before it.
        (">=1.0.100", "1.0.100-rc1", true, false),
        (">=1.0.100", "1.0.101-rc1", true, true),
        (">=1.0.100", "1.0.99-rc1", false, false),
        (">1.0.100", "1.0.100-rc1", false, false),
        (">1.0.100", "1.0.101-rc1", true, true),
        ("^1.2.3", "1.2.3-rc1", true, false),
        ("^1.2.3", "1.5.0-rc1", true, true),
        ("^1.2.3", "2.0.0-alpha", false, false),
        ("^0.2", "0.2.0-rc1", true, false),
        ("^0.2", "0.3.0-rc1", false, false),
        ("~1.2.3", "1.2.9-rc1", true, true),
        ("~1.2.3", "1.3.0-rc1", false, false),
        ("=1.2.3", "1.2.3-rc1", true, false),
        ("1.*", "1.0.0-rc1", true, false),
        ("1.*", "1.4.0-rc1", true, true),
        (">=1.0.0, <2.0.0", "2.0.0-rc1", false, false),
        // A requirement that names pre-releases is read as cargo reads it.
        ("<1.0.0-rc.3", "1.0.0-rc.1", true, true),
        ("<1.0.0-rc.3", "1.0.0-rc.5", false, false),
        (">=1.2.3-rc.2", "1.2.3-rc.1", false, false),
        (">=1.2.3-rc.2", "1.2.3-rc.3", true, true),
        // Releases are judged as cargo judges them.
        ("<1.0.100", "1.0.99", true, true),
        ("^1.2.3", "1.2.3", true, true),
        ("^1.2.3", "2.0.0", false, false),
    ];

    #[test]
    fn pre_releases_are_judged_as_the_release_they_lead_to() {
        for (req, vers, denied, allowed) in PRE_RELEASES {
            let rule = VersionRule::parse(req).unwrap();
            assert_eq!(rule.denies(&v(vers)), *denied, "deny {req} covers {vers}");
            assert_eq!(rule.allows(&v(vers)), *allowed, "allow {req} covers {vers}");
        }
    }
}
