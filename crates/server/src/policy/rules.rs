//! The rules by crate name and version, judged once per index file content:
//! deny rules first (absolute), then, for an allow-list, allow rules (a plain
//! name's rules win over globs that match it).

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use serde::Deserialize;
use wharf_config::{PolicyMode, glob, is_glob};
use wharf_db::{Decision, DecisionInfo};

use super::PolicyGate;
use crate::cache::IndexEntry;

/// What the rules alone say of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RuleVerdict {
    /// Let through.
    Allowed,
    /// A deny rule matches it (the rule, as written).
    Denied(String),
    /// An allow-list that no allow rule of which matches it.
    NotAllowed,
}

/// One index file, judged line by line.
pub(super) struct Judged {
    /// The tag of the content judged.
    pub(super) source_tag: String,
    pub(super) lines: Vec<JudgedLine>,
    /// What the rules alone let through, when no line waits on approvals:
    /// `None` for nothing at all.
    pub(super) by_rules: Option<Arc<IndexEntry>>,
    /// Whether every line is let through (the file is served as it is).
    pub(super) all_allowed: bool,
    /// Whether some line's fate is up to an approval.
    pub(super) needs_decisions: bool,
}

pub(super) struct JudgedLine {
    /// Where the line is in the file, its newline included.
    pub(super) span: std::ops::Range<usize>,
    pub(super) vers: Option<semver::Version>,
    pub(super) verdict: RuleVerdict,
}

impl PolicyGate {
    pub(super) fn judge(&self, name: &str, entry: &IndexEntry) -> Judged {
        #[derive(Deserialize)]
        struct LineVers<'a> {
            #[serde(borrow)]
            vers: Cow<'a, str>,
        }
        let body = &entry.body;
        let mut lines = Vec::new();
        let mut start = 0;
        while start < body.len() {
            let end = body[start..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(body.len(), |i| start + i + 1);
            let text = &body[start..end];
            let vers = serde_json::from_slice::<LineVers<'_>>(text.trim_ascii())
                .ok()
                .and_then(|l| semver::Version::parse(&l.vers).ok());
            let verdict = self.rule_verdict(name, vers.as_ref());
            if !text.trim_ascii().is_empty() {
                lines.push(JudgedLine {
                    span: start..end,
                    vers,
                    verdict,
                });
            }
            start = end;
        }
        let all_allowed = lines.iter().all(|l| l.verdict == RuleVerdict::Allowed);
        let needs_decisions =
            self.policy.approval && lines.iter().any(|l| l.verdict == RuleVerdict::NotAllowed);
        let by_rules = (!all_allowed && !needs_decisions)
            .then(|| {
                let kept: Vec<u8> = lines
                    .iter()
                    .filter(|l| l.verdict == RuleVerdict::Allowed)
                    .flat_map(|l| body[l.span.clone()].iter().copied())
                    .collect();
                (!kept.is_empty()).then(|| {
                    Arc::new(IndexEntry::new(
                        Bytes::from(kept),
                        entry.modified,
                        SystemTime::now(),
                        Instant::now(),
                        None,
                    ))
                })
            })
            .flatten();
        Judged {
            source_tag: entry.tag.clone(),
            lines,
            by_rules,
            all_allowed,
            needs_decisions,
        }
    }

    /// What the rules say of version `vers` of crate `name` (`None`: a line
    /// whose version could not be read, which only `*` rules cover).
    pub(super) fn rule_verdict(&self, name: &str, vers: Option<&semver::Version>) -> RuleVerdict {
        // Pre-releases count as the release they lead to, so that a deny rule
        // leaves out the pre-releases of what it denies (see `VersionRule`).
        let denies =
            |rule: &wharf_config::VersionRule| vers.map_or(rule.req.is_none(), |v| rule.denies(v));
        let covers =
            |rule: &wharf_config::VersionRule| vers.map_or(rule.req.is_none(), |v| rule.allows(v));
        for (pattern, rule) in &self.policy.deny {
            if glob::matches(pattern, name) && denies(rule) {
                return RuleVerdict::Denied(format!("{pattern} = \"{}\"", rule.text));
            }
        }
        if self.policy.mode == PolicyMode::DenyList {
            return RuleVerdict::Allowed;
        }
        let matching = |plain: bool| {
            self.policy.allow.iter().filter(move |(pattern, _)| {
                is_glob(pattern) != plain && glob::matches(pattern, name)
            })
        };
        let mut rules = matching(true).peekable();
        let allowed = if rules.peek().is_some() {
            rules.any(|(_, rule)| covers(rule))
        } else {
            matching(false).any(|(_, rule)| covers(rule))
        };
        if allowed {
            RuleVerdict::Allowed
        } else {
            RuleVerdict::NotAllowed
        }
    }
}

/// The decision that covers version `vers`: its own, else the crate's.
pub(super) fn decided(
    decisions: &[DecisionInfo],
    vers: Option<&semver::Version>,
) -> Option<Decision> {
    let own = vers.and_then(|v| {
        decisions.iter().find(|d| {
            d.vers
                .as_deref()
                .and_then(|dv| semver::Version::parse(dv).ok())
                .is_some_and(|dv| &dv == v)
        })
    });
    own.or_else(|| decisions.iter().find(|d| d.vers.is_none()))
        .map(|d| d.decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> PolicyGate {
        crate::policy::test_gate(toml_text)
    }

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn rules() {
        let gate = policy(
            r#"
            mode = "allow-list"
            allow = { serde = "<1.0.200", "serde*" = "*", "tokio*" = "1" }
            deny = { "openssl-sys" = "*", "tokio-old" = "*" }
            "#,
        );
        assert_eq!(
            gate.rule_verdict("serde", Some(&v("1.0.199"))),
            RuleVerdict::Allowed
        );
        // The plain name's rule wins over `serde*`.
        assert_eq!(
            gate.rule_verdict("serde", Some(&v("1.0.200"))),
            RuleVerdict::NotAllowed
        );
        assert_eq!(
            gate.rule_verdict("serde_json", Some(&v("9.0.0"))),
            RuleVerdict::Allowed
        );
        assert_eq!(
            gate.rule_verdict("tokio-util", Some(&v("2.0.0"))),
            RuleVerdict::NotAllowed
        );
        assert!(matches!(
            gate.rule_verdict("tokio-old", Some(&v("1.0.0"))),
            RuleVerdict::Denied(_)
        ));
        assert!(matches!(
            gate.rule_verdict("openssl_sys", Some(&v("0.9.0"))),
            RuleVerdict::Denied(_)
        ));
        assert_eq!(
            gate.rule_verdict("rand", Some(&v("0.8.5"))),
            RuleVerdict::NotAllowed
        );

        let deny_list = policy(r#"deny = { time = "<0.2.23" }"#);
        assert!(matches!(
            deny_list.rule_verdict("time", Some(&v("0.2.0"))),
            RuleVerdict::Denied(_)
        ));
        assert_eq!(
            deny_list.rule_verdict("time", Some(&v("0.3.0"))),
            RuleVerdict::Allowed
        );
    }

    #[test]
    fn a_deny_rule_covers_the_pre_releases_of_its_range() {
        let gate = policy(r#"deny = { serde = "<1.0.100" }"#);
        for vers in ["0.8.0-rc1", "0.9.0-rc4", "1.0.0-alpha.1", "1.0.99"] {
            assert!(
                matches!(
                    gate.rule_verdict("serde", Some(&v(vers))),
                    RuleVerdict::Denied(_)
                ),
                "{vers}"
            );
        }
        for vers in ["1.0.100-rc1", "1.0.100", "2.0.0-alpha"] {
            assert_eq!(
                gate.rule_verdict("serde", Some(&v(vers))),
                RuleVerdict::Allowed,
                "{vers}"
            );
        }
        // An allow rule's upper bound keeps out the pre-releases of its bound.
        let gate = policy(
            r#"
            mode = "allow-list"
            allow = { serde = "<1.0.100" }
            "#,
        );
        assert_eq!(
            gate.rule_verdict("serde", Some(&v("1.0.100-rc1"))),
            RuleVerdict::NotAllowed
        );
        assert_eq!(
            gate.rule_verdict("serde", Some(&v("0.9.0-rc4"))),
            RuleVerdict::Allowed
        );
    }
}
