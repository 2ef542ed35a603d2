//! A cache or mirror registry's policy, applied to what cargo sees.
//!
//! Index files stay byte for byte what upstream sent, except that whole lines
//! a policy does not let through are left out, so the resolver never picks
//! those versions. Each line is judged once per upstream content: by the deny
//! rules (absolute), then, for an allow-list, by the allow rules (a plain name's
//! rules win over globs that match it). With `approval`, a version no rule
//! allows is held: the database's decisions (`wharf approvals approve`) are read
//! on every request for such a file, so an approval shows at once, and a
//! request for it is queued for the operator.
//!
//! Licences live in the crate file, not the index: a crate file is judged once
//! it has been fetched, and a download whose licence is not allowed is refused
//! with a message naming the licence.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use serde::Deserialize;
use tracing::info;
use wharf_config::{Policy, PolicyMode, glob, is_glob};
use wharf_db::{Db, Decision, DecisionInfo};
use wharf_index::{CrateName, IndexPath, Version};
use wharf_publish::{LicenseExpr, license_of};

use crate::{
    cache::{IndexEntry, Lookup},
    error::ApiError,
};

/// How often one requester's wish for one crate is written to the queue.
const REQUEST_RECORD_INTERVAL: Duration = Duration::from_secs(60);

/// What the rules alone say of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RuleVerdict {
    /// Let through.
    Allowed,
    /// A deny rule matches it (the rule, as written).
    Denied(String),
    /// An allow-list that no allow rule of which matches it.
    NotAllowed,
}

/// One index file, judged line by line.
struct Judged {
    /// The tag of the content judged.
    source_tag: String,
    lines: Vec<JudgedLine>,
    /// What the rules alone let through, when no line waits on approvals:
    /// `None` for nothing at all.
    by_rules: Option<Arc<IndexEntry>>,
    /// Whether every line is let through (the file is served as it is).
    all_allowed: bool,
    /// Whether some line's fate is up to an approval.
    needs_decisions: bool,
}

struct JudgedLine {
    /// Where the line is in the file, its newline included.
    span: std::ops::Range<usize>,
    vers: Option<semver::Version>,
    verdict: RuleVerdict,
}

/// The policy of one registry, with what it has judged so far.
pub struct PolicyGate {
    registry: String,
    policy: Policy,
    db: Option<Db>,
    judged: moka::sync::Cache<String, Arc<Judged>>,
    served: moka::sync::Cache<String, Arc<IndexEntry>>,
    licences: moka::sync::Cache<String, Result<(), String>>,
    recorded: moka::sync::Cache<(String, String), ()>,
}

impl PolicyGate {
    /// The policy of registry `registry`; `db` holds its approvals (needed
    /// when `policy.approval`).
    pub fn new(registry: &str, policy: Policy, db: Option<Db>) -> Self {
        Self {
            registry: registry.to_owned(),
            policy,
            db,
            judged: moka::sync::Cache::new(50_000),
            served: moka::sync::Cache::new(10_000),
            licences: moka::sync::Cache::new(100_000),
            recorded: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(REQUEST_RECORD_INTERVAL)
                .build(),
        }
    }

    /// The policy in a few words, for `/status.json`.
    pub fn describe(&self) -> String {
        let mode = match self.policy.mode {
            PolicyMode::AllowList => "allow-list",
            PolicyMode::DenyList => "deny-list",
        };
        format!(
            "{mode}{}: {} allow, {} deny rules, {} licences allowed, {} denied",
            if self.policy.approval {
                " with approval"
            } else {
                ""
            },
            self.policy.allow.len(),
            self.policy.deny.len(),
            self.policy.licenses.len(),
            self.policy.deny_licenses.len()
        )
    }

    /// What cargo may see of `entry`, the index file at `path`, asked for by
    /// `requester` (made only when something is held).
    pub async fn filter(
        &self,
        path: &IndexPath,
        entry: Arc<IndexEntry>,
        requester: impl FnOnce() -> String,
    ) -> Result<Lookup, ApiError> {
        let judged = match self.judged.get(path.as_str()) {
            Some(judged) if judged.source_tag == entry.tag => judged,
            _ => {
                let judged = Arc::new(self.judge(path.name().as_str(), &entry));
                self.judged.insert(path.as_str().to_owned(), judged.clone());
                judged
            }
        };
        if judged.all_allowed {
            return Ok(Lookup::Found(entry));
        }
        if !judged.needs_decisions {
            return Ok(judged
                .by_rules
                .clone()
                .map_or(Lookup::NotFound, Lookup::Found));
        }
        let name = path.name().as_str();
        let decisions = self.decisions(name).await?;
        let mut body = Vec::with_capacity(entry.body.len());
        let mut held: Vec<&semver::Version> = Vec::new();
        let mut changed = entry.modified;
        for decision in &decisions {
            changed = changed.max(decision.decided_at);
        }
        for line in &judged.lines {
            let keep = match &line.verdict {
                RuleVerdict::Allowed => true,
                RuleVerdict::Denied(_) => false,
                RuleVerdict::NotAllowed => match decided(&decisions, line.vers.as_ref()) {
                    Some(Decision::Approved) => true,
                    Some(Decision::Rejected) => false,
                    None => {
                        held.extend(line.vers.as_ref());
                        false
                    }
                },
            };
            if keep {
                body.extend_from_slice(&entry.body[line.span.clone()]);
            }
        }
        if let Some(newest) = held.iter().max() {
            self.record(name, &newest.to_string(), held.len(), &requester())
                .await?;
        }
        if body.is_empty() {
            return Ok(Lookup::NotFound);
        }
        let key = path.as_str().to_owned();
        if let Some(served) = self.served.get(&key)
            && served.body == body
        {
            return Ok(Lookup::Found(served));
        }
        let served = Arc::new(IndexEntry::new(
            Bytes::from(body),
            changed,
            SystemTime::now(),
            Instant::now(),
            None,
        ));
        self.served.insert(key, served.clone());
        Ok(Lookup::Found(served))
    }

    /// Refuses a download the policy does not let through, before anything
    /// is fetched.
    pub async fn check_download(
        &self,
        krate: &CrateName,
        vers: &Version,
        requester: &str,
    ) -> Result<(), ApiError> {
        let parsed = semver::Version::parse(vers.as_str()).ok();
        match self.rule_verdict(krate.as_str(), parsed.as_ref()) {
            RuleVerdict::Allowed => Ok(()),
            RuleVerdict::Denied(rule) => Err(ApiError::forbidden(format!(
                "`{krate}` {vers} is denied by the policy of registry `{}` (deny rule {rule})",
                self.registry
            ))),
            RuleVerdict::NotAllowed if !self.policy.approval => Err(ApiError::forbidden(format!(
                "`{krate}` {vers} is not on the allow-list of registry `{}`; ask its operator to allow it",
                self.registry
            ))),
            RuleVerdict::NotAllowed => {
                let decisions = self.decisions(krate.as_str()).await?;
                match decisions
                    .iter()
                    .find(|d| d.vers.as_deref() == Some(vers.as_str()))
                    .or_else(|| decisions.iter().find(|d| d.vers.is_none()))
                {
                    Some(d) if d.decision == Decision::Approved => Ok(()),
                    Some(d) => Err(ApiError::forbidden(format!(
                        "`{krate}` {vers} was rejected for registry `{}` by {} on {}{}",
                        self.registry,
                        d.decided_by,
                        httpdate::fmt_http_date(d.decided_at),
                        d.note
                            .as_deref()
                            .map(|n| format!(": {n}"))
                            .unwrap_or_default()
                    ))),
                    None => {
                        self.record(krate.as_str(), vers.as_str(), 1, requester)
                            .await?;
                        Err(ApiError::forbidden(format!(
                            "`{krate}` {vers} is waiting for approval on registry `{}`; the request is recorded, and an administrator can let it through with `wharf approvals approve {krate}@{vers} --registry {}`",
                            self.registry, self.registry
                        )))
                    }
                }
            }
        }
    }

    /// How many crates wait for a decision; `None` without approval (or when
    /// the database cannot say).
    pub async fn pending_approvals(&self) -> Option<usize> {
        let db = self.db.as_ref()?;
        db.approvals(&self.registry)
            .pending()
            .await
            .ok()
            .map(|pending| pending.len())
    }

    /// Whether crate files are judged by their licence.
    pub fn checks_licences(&self) -> bool {
        !(self.policy.licenses.is_empty() && self.policy.deny_licenses.is_empty())
    }

    /// Refuses a fetched crate file whose licence the policy does not allow.
    pub fn check_license(
        &self,
        krate: &CrateName,
        vers: &Version,
        crate_file: &[u8],
    ) -> Result<(), ApiError> {
        if !self.checks_licences() {
            return Ok(());
        }
        let key = format!("{krate}@{vers}");
        let verdict = self.licences.get_with(key, || {
            self.judge_license(krate.as_str(), vers.as_str(), crate_file)
        });
        verdict.map_err(ApiError::forbidden)
    }

    fn judge_license(&self, krate: &str, vers: &str, crate_file: &[u8]) -> Result<(), String> {
        let allowed_text = if self.policy.licenses.is_empty() {
            format!("denied: {}", self.policy.deny_licenses.join(", "))
        } else {
            format!("allowed: {}", self.policy.licenses.join(", "))
        };
        let declared = license_of(crate_file, &format!("{krate}-{vers}")).map_err(|e| {
            format!(
                "`{krate}` {vers}: {e}; registry `{}` checks licences",
                self.registry
            )
        })?;
        let Some(declared) = declared else {
            return Err(format!(
                "`{krate}` {vers} declares no SPDX licence (only a licence file, or none), which registry `{}` cannot check ({allowed_text})",
                self.registry
            ));
        };
        let expr = LicenseExpr::parse(&declared).map_err(|e| {
            format!(
                "`{krate}` {vers}: {e}; registry `{}` ({allowed_text})",
                self.registry
            )
        })?;
        let ok = |id: &str| {
            (self.policy.licenses.is_empty()
                || self.policy.licenses.iter().any(|l| licence_matches(l, id)))
                && !self
                    .policy
                    .deny_licenses
                    .iter()
                    .any(|l| licence_matches(l, id))
        };
        if expr.satisfiable(&ok) {
            Ok(())
        } else {
            info!(registry = %self.registry, krate.name = krate, krate.vers = vers, license = %declared, "licence refused");
            Err(format!(
                "`{krate}` {vers} is licensed `{declared}`, which registry `{}` does not allow ({allowed_text})",
                self.registry
            ))
        }
    }

    fn judge(&self, name: &str, entry: &IndexEntry) -> Judged {
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
    fn rule_verdict(&self, name: &str, vers: Option<&semver::Version>) -> RuleVerdict {
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

    async fn decisions(&self, name: &str) -> Result<Vec<DecisionInfo>, ApiError> {
        let Some(db) = &self.db else {
            return Ok(Vec::new());
        };
        db.approvals(&self.registry)
            .decisions_for(name)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Queues `requester`'s wish for `name` (at most once a minute each).
    async fn record(
        &self,
        name: &str,
        newest_held: &str,
        held: usize,
        requester: &str,
    ) -> Result<(), ApiError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let key = (
            name.to_ascii_lowercase().replace('-', "_"),
            requester.to_owned(),
        );
        if self.recorded.contains_key(&key) {
            return Ok(());
        }
        db.approvals(&self.registry)
            .request(
                name,
                newest_held,
                u32::try_from(held).unwrap_or(u32::MAX),
                requester,
                SystemTime::now(),
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        self.recorded.insert(key, ());
        info!(registry = %self.registry, krate.name = name, newest_held, held, requester, "held for approval");
        Ok(())
    }
}

/// The decision that covers version `vers`: its own, else the crate's.
fn decided(decisions: &[DecisionInfo], vers: Option<&semver::Version>) -> Option<Decision> {
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

/// Whether licence `id` matches a configured licence or glob (`BSD-*`);
/// licence identifiers compare without case, as SPDX says.
fn licence_matches(pattern: &str, id: &str) -> bool {
    glob::matches(pattern, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> PolicyGate {
        let policy: Policy = toml::from_str(toml_text).unwrap();
        PolicyGate::new("r", policy, None)
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

    #[test]
    fn licences() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let gate = policy(r#"licenses = ["MIT", "Apache-2.0"]"#);
        let crate_file = |license: &str| {
            let manifest =
                format!("[package]\nname = \"x\"\nversion = \"1.0.0\"\nlicense = \"{license}\"\n");
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(manifest.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, "x-1.0.0/Cargo.toml", manifest.as_bytes())
                .unwrap();
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            gz.write_all(&builder.into_inner().unwrap()).unwrap();
            gz.finish().unwrap()
        };
        let x = CrateName::new("x").unwrap();
        let one = Version::new("1.0.0").unwrap();
        assert!(
            gate.judge_license("x", "1.0.0", &crate_file("MIT OR GPL-3.0-only"))
                .is_ok()
        );
        let refused = gate
            .check_license(&x, &one, &crate_file("GPL-3.0-only"))
            .unwrap_err();
        assert!(
            refused.detail.contains("`GPL-3.0-only`"),
            "{}",
            refused.detail
        );
    }
}
