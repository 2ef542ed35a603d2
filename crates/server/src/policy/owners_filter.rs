//! An index file judged by owner rules as well as name rules.
//!
//! The name rules' verdicts are kept per content (see `rules.rs`); owners,
//! publishers and decisions are read on every request (from memory for a
//! second, see `owners.rs`), so an import, an expiry or an approval shows
//! at once. A file none of whose versions is let through answers with why,
//! not 404: cargo shows the message, naming the crate and its owners.

use std::sync::Arc;

use tracing::warn;
use wharf_db::Decision;
use wharf_index::IndexPath;

use super::{Judged, OwnerVerdict, OwnersNow, PolicyGate, RuleVerdict, decided, owner_verdict};
use crate::{
    cache::{IndexEntry, Lookup},
    error::ApiError,
};

impl PolicyGate {
    /// [`PolicyGate::filter`] for a file whose versions owner rules judge.
    pub(super) async fn filter_by_owners(
        &self,
        path: &IndexPath,
        entry: Arc<IndexEntry>,
        judged: &Judged,
        requester: impl FnOnce() -> String,
    ) -> Result<Lookup, ApiError> {
        let Some(lookups) = &self.owners else {
            return Ok(Lookup::Found(entry));
        };
        let name = path.name().as_str();
        let owners = lookups.owners(name).await;
        let publishers = if self.wants_publishers(&owners) {
            let versions = judged
                .lines
                .iter()
                .filter(|l| l.verdict == RuleVerdict::NotAllowed)
                .filter_map(|l| l.vers.as_ref().map(ToString::to_string))
                .collect();
            Some(lookups.publishers(name, versions).await)
        } else {
            None
        };
        let verdicts: Vec<OwnerVerdict> = judged
            .lines
            .iter()
            .map(|line| {
                let vers = line.vers.as_ref().map(ToString::to_string);
                if self.owner_lookups_for(&line.verdict).is_none() {
                    return match &line.verdict {
                        RuleVerdict::Allowed => OwnerVerdict::Allowed,
                        RuleVerdict::Denied(rule) => {
                            OwnerVerdict::Denied(format!("deny rule {rule}"))
                        }
                        RuleVerdict::NotAllowed => OwnerVerdict::NotAllowed,
                    };
                }
                owner_verdict(
                    &self.policy,
                    &line.verdict,
                    vers.as_deref(),
                    &owners,
                    publishers.as_deref(),
                )
            })
            .collect();
        if verdicts.iter().all(|v| *v == OwnerVerdict::Allowed) {
            return Ok(Lookup::Found(entry));
        }
        let decisions = if verdicts.iter().any(|v| {
            matches!(v, OwnerVerdict::Pending(_))
                || (self.policy.approval && *v == OwnerVerdict::NotAllowed)
        }) {
            self.decisions(name).await?
        } else {
            Vec::new()
        };
        let mut changed = entry.modified;
        for decision in &decisions {
            changed = changed.max(decision.decided_at);
        }
        let mut body = Vec::with_capacity(entry.body.len());
        let mut held: Vec<&semver::Version> = Vec::new();
        let mut pending: Option<&str> = None;
        let mut denied: Option<&str> = None;
        let mut not_allowed = false;
        for (line, verdict) in judged.lines.iter().zip(&verdicts) {
            let keep = match verdict {
                OwnerVerdict::Allowed => true,
                OwnerVerdict::Denied(why) => {
                    denied.get_or_insert(why);
                    false
                }
                OwnerVerdict::NotAllowed if !self.policy.approval => {
                    not_allowed = true;
                    false
                }
                OwnerVerdict::NotAllowed | OwnerVerdict::Pending(_) => {
                    match decided(&decisions, line.vers.as_ref()) {
                        Some(Decision::Approved) => true,
                        Some(Decision::Rejected) => false,
                        None => {
                            if let OwnerVerdict::Pending(reason) = verdict {
                                pending.get_or_insert(reason);
                            } else {
                                held.extend(line.vers.as_ref());
                            }
                            false
                        }
                    }
                }
            };
            if keep {
                body.extend_from_slice(&entry.body[line.span.clone()]);
            }
        }
        let owner_list = match &*owners {
            OwnersNow::Known { owners, .. } if owners.is_empty() => "nobody".to_owned(),
            OwnersNow::Known { owners, .. } => owners.join(", "),
            OwnersNow::Unknown(_) => "unknown".to_owned(),
        };
        let newest_held = held.iter().max().map(|v| v.to_string());
        let publisher = newest_held.as_ref().and_then(|v| {
            publishers
                .as_ref()
                .and_then(|p| p.known.get(v).cloned().flatten())
        });
        if let Some(newest) = &newest_held {
            self.record(name, newest, held.len(), &requester()).await?;
            if let (Some(db), OwnersNow::Known { owners, .. }) = (&self.db, &*owners)
                && let Err(e) = db
                    .approvals(&self.registry)
                    .note_owners(name, owners, publisher.as_deref())
                    .await
            {
                warn!(registry = %self.registry, krate.name = name, error = %e, "owners not noted on the request");
            }
        }
        if !body.is_empty() {
            if body.len() == entry.body.len() {
                return Ok(Lookup::Found(entry));
            }
            return Ok(Lookup::Found(self.served(path, body, changed)));
        }
        if let Some(reason) = pending {
            return Err(self.pending_error(name, reason));
        }
        if let Some(newest) = newest_held {
            let by_publisher = publisher
                .map(|p| format!("; its newest version {newest} was published by {p}"))
                .unwrap_or_default();
            return Err(ApiError::forbidden(format!(
                "`{name}` is held by the policy of registry `{}`: its owners are {owner_list}, none allowed by allow_owners{by_publisher}; the request is recorded, and an administrator can let it through with `wharf approvals approve {name} --registry {}`",
                self.registry, self.registry
            )));
        }
        if not_allowed && !self.policy.allow_owners.is_empty() {
            return Err(ApiError::forbidden(format!(
                "`{name}` is not allowed by the policy of registry `{}`: its owners are {owner_list}, none allowed by allow_owners; ask its operator to allow it",
                self.registry
            )));
        }
        if let Some(why) = denied {
            return Err(ApiError::forbidden(format!(
                "`{name}` is denied by the policy of registry `{}` ({why}); its owners are {owner_list}",
                self.registry
            )));
        }
        Ok(Lookup::NotFound)
    }
}
