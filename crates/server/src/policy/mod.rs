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

mod dump_schedule;
mod licence;
mod owners;
mod owners_filter;
mod rules;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use tracing::info;
use wharf_config::{Policy, PolicyMode};
use wharf_db::{Db, Decision, DecisionInfo};
use wharf_index::{CrateName, IndexPath, Version};
use wharf_upstream::OwnersApi;

use owners::{OwnerLookups, OwnerVerdict, OwnersNow, owner_verdict};
use rules::{Judged, RuleVerdict, decided};

use crate::{
    cache::{IndexEntry, Lookup},
    error::ApiError,
};

/// How often one requester's wish for one crate is written to the queue.
const REQUEST_RECORD_INTERVAL: Duration = Duration::from_secs(60);

/// The policy of one registry, with what it has judged so far.
pub struct PolicyGate {
    registry: String,
    policy: Policy,
    db: Option<Db>,
    judged: moka::sync::Cache<String, Arc<Judged>>,
    served: moka::sync::Cache<String, Arc<IndexEntry>>,
    licences: moka::sync::Cache<String, Result<(), String>>,
    recorded: moka::sync::Cache<(String, String), ()>,
    owners: Option<OwnerLookups>,
}

impl PolicyGate {
    /// The policy of registry `registry`; `db` holds its approvals (needed
    /// when `policy.approval`) and owner facts (needed by owner rules, which
    /// ask `owners_api` what it does not know).
    pub fn new(
        registry: &str,
        policy: Policy,
        db: Option<Db>,
        owners_api: Option<OwnersApi>,
    ) -> Self {
        let owners = db
            .clone()
            .filter(|_| policy.judges_owners())
            .map(|db| OwnerLookups::new(registry, &policy, db, owners_api));
        Self {
            owners,
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
        ) + &if self.policy.judges_owners() {
            format!(
                ", {} owners allowed, {} denied{}",
                self.policy.allow_owners.len(),
                self.policy.deny_owners.len(),
                if self.policy.require_publisher {
                    ", publishers required"
                } else {
                    ""
                }
            )
        } else {
            String::new()
        }
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
        let owners_matter = judged
            .lines
            .iter()
            .any(|l| self.owner_lookups_for(&l.verdict).is_some());
        if owners_matter {
            return self.filter_by_owners(path, entry, &judged, requester).await;
        }
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
        Ok(Lookup::Found(self.served(path, body, changed)))
    }

    /// A filtered copy of an index file, the same entry (and tag) while its
    /// bytes do not change.
    fn served(&self, path: &IndexPath, body: Vec<u8>, changed: SystemTime) -> Arc<IndexEntry> {
        let key = path.as_str().to_owned();
        if let Some(served) = self.served.get(&key)
            && served.body == body
        {
            return served;
        }
        let served = Arc::new(IndexEntry::new(
            Bytes::from(body),
            changed,
            SystemTime::now(),
            Instant::now(),
            None,
        ));
        self.served.insert(key, served.clone());
        served
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
        let verdict = self.rule_verdict(krate.as_str(), parsed.as_ref());
        let verdict = match self.owner_lookups_for(&verdict) {
            Some(lookups) => {
                let owners = lookups.owners(krate.as_str()).await;
                let publishers = match self.wants_publishers(&owners) {
                    true => Some(
                        lookups
                            .publishers(krate.as_str(), vec![vers.as_str().to_owned()])
                            .await,
                    ),
                    false => None,
                };
                owner_verdict(
                    &self.policy,
                    &verdict,
                    Some(vers.as_str()),
                    &owners,
                    publishers.as_deref(),
                )
            }
            None => match verdict {
                RuleVerdict::Allowed => OwnerVerdict::Allowed,
                RuleVerdict::Denied(rule) => OwnerVerdict::Denied(format!("deny rule {rule}")),
                RuleVerdict::NotAllowed => OwnerVerdict::NotAllowed,
            },
        };
        match verdict {
            OwnerVerdict::Allowed => Ok(()),
            OwnerVerdict::Denied(why) => Err(ApiError::forbidden(format!(
                "`{krate}` {vers} is denied by the policy of registry `{}` ({why})",
                self.registry
            ))),
            OwnerVerdict::NotAllowed if !self.policy.approval => Err(ApiError::forbidden(format!(
                "`{krate}` {vers} is not on the allow-list of registry `{}`; ask its operator to allow it",
                self.registry
            ))),
            OwnerVerdict::Pending(reason) => {
                let decisions = self.decisions(krate.as_str()).await?;
                match decided(&decisions, parsed.as_ref()) {
                    Some(Decision::Approved) => Ok(()),
                    _ => Err(self.pending_error(krate.as_str(), &reason)),
                }
            }
            OwnerVerdict::NotAllowed => {
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

    /// The owner lookups, when the owner rules have a say in a version whose
    /// name rules said `verdict`.
    fn owner_lookups_for(&self, verdict: &RuleVerdict) -> Option<&OwnerLookups> {
        let lookups = self.owners.as_ref()?;
        let matter = match verdict {
            RuleVerdict::Denied(_) => false,
            RuleVerdict::Allowed => !self.policy.deny_owners.is_empty(),
            RuleVerdict::NotAllowed => true,
        };
        matter.then_some(lookups)
    }

    /// Whether versions' publishers are needed: `require_publisher`, and an
    /// allowed owner among the crate's.
    fn wants_publishers(&self, owners: &OwnersNow) -> bool {
        self.policy.require_publisher
            && matches!(owners, OwnersNow::Known { owners, .. }
                if owners.iter().any(|o| self.policy.allow_owners.iter().any(|p| owners::owner_matches(p, o))))
    }

    /// The answer for a crate whose owners or publisher are not known yet.
    fn pending_error(&self, krate: &str, reason: &str) -> ApiError {
        let retry = self
            .owners
            .as_ref()
            .map_or(30, OwnerLookups::retry_after_secs);
        ApiError::unavailable(
            format!(
                "`{krate}` is held by registry `{}` until its owners are known: {reason}; nothing is let through meanwhile, retry in {retry} s",
                self.registry
            ),
            retry,
        )
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

/// A gate for `toml_text`'s policy, without a database, for unit tests.
#[cfg(test)]
fn test_gate(toml_text: &str) -> PolicyGate {
    let policy: Policy = toml::from_str(toml_text).unwrap();
    PolicyGate::new("r", policy, None, None)
}
