//! Owner rules: who owns a crate and who published a version, looked up
//! for the policy, and what the rules make of them.
//!
//! Facts are read from the database (a dump's, kept until the next dump, or
//! the API's, kept for `owners_lookup.ttl`), else asked of the upstream's web
//! API ([`OwnersApi`]: one request at a time, at the configured rate) and
//! stored. Concurrent requests for one crate share one lookup, which runs in
//! a task of its own, so a client that gives up does not waste it. What was
//! learnt is kept in memory for a second, so a burst of requests costs one
//! database read, and a dump imported by another process shows within a
//! second. A request waits at most `owners_lookup.wait` for a lookup; a
//! crate whose owners are still unknown then is held, never let through.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tracing::warn;
use wharf_config::{Policy, glob};
use wharf_db::{Db, FactSource};
use wharf_upstream::OwnersApi;

use super::rules::RuleVerdict;
use crate::flight::Flights;

/// How long what was learnt of a crate is kept in memory.
const MEMORY_TTL: Duration = Duration::from_secs(1);

/// What is known now of a crate's owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OwnersNow {
    /// Its owners, where they came from and when.
    Known {
        owners: Vec<String>,
        source: FactSource,
        at: SystemTime,
    },
    /// Not known (the lookup is under way or failed): why.
    Unknown(String),
}

/// The publishers known of a crate's versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Publishers {
    /// Version to publisher (`None`: the registry does not say).
    pub(super) known: HashMap<String, Option<String>>,
    /// Why some asked for are not known, if a lookup failed.
    pub(super) failure: Option<String>,
}

/// What owner rules make of a version, after the name rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OwnerVerdict {
    /// Let through.
    Allowed,
    /// Never let through: the rule or owner that denies it.
    Denied(String),
    /// No rule allows it (held for approval when the policy says so).
    NotAllowed,
    /// Its owners or publisher are not known yet: held, to be retried.
    Pending(String),
}

/// The lookups of one registry's owner facts.
pub(super) struct OwnerLookups {
    registry: String,
    db: Db,
    api: Option<Arc<OwnersApi>>,
    ttl: Duration,
    wait: Duration,
    owners: moka::sync::Cache<String, Arc<OwnersNow>>,
    publishers: moka::sync::Cache<String, Arc<Publishers>>,
    owner_flights: Arc<Flights<String, Arc<OwnersNow>>>,
    publisher_flights: Arc<Flights<String, Arc<Publishers>>>,
}

impl OwnerLookups {
    /// Lookups for registry `registry` of the facts in `db`, asking `api`
    /// (when there is one) for what `db` does not know.
    pub(super) fn new(registry: &str, policy: &Policy, db: Db, api: Option<OwnersApi>) -> Self {
        fn memory<T: Send + Sync + 'static>() -> moka::sync::Cache<String, Arc<T>> {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(MEMORY_TTL)
                .build()
        }
        let api = api.map(Arc::new);
        if let (Some(url), Some(api)) = (&policy.owners_dump_url, &api) {
            super::dump_schedule::spawn(
                registry.to_owned(),
                db.clone(),
                api.clone(),
                url.clone(),
                policy.owners_dump_every(),
            );
        }
        Self {
            registry: registry.to_owned(),
            db,
            api,
            ttl: policy.owners_lookup.ttl,
            wait: policy.owners_lookup.wait,
            owners: memory(),
            publishers: memory(),
            owner_flights: Flights::new(),
            publisher_flights: Flights::new(),
        }
    }

    /// How long a held crate's client should wait before asking again.
    pub(super) fn retry_after_secs(&self) -> u64 {
        self.wait.as_secs().clamp(1, 60)
    }

    /// The crate's owners, waiting at most `wait` for a lookup.
    pub(super) async fn owners(&self, krate: &str) -> Arc<OwnersNow> {
        let key = canonical(krate);
        if let Some(hit) = self.owners.get(&key) {
            return hit;
        }
        let (db, api, registry, ttl) = (
            self.db.clone(),
            self.api.clone(),
            self.registry.clone(),
            self.ttl,
        );
        let name = krate.to_owned();
        let flight = self.owner_flights.run(key.clone(), move || async move {
            Ok(Arc::new(
                load_owners(&db, api.as_deref(), &registry, &name, ttl).await,
            ))
        });
        let now = match tokio::time::timeout(self.wait, flight).await {
            Ok(Ok(now)) => now,
            Ok(Err(e)) => Arc::new(OwnersNow::Unknown(e.detail)),
            Err(_) => {
                return Arc::new(OwnersNow::Unknown(format!(
                    "the lookup of its owners is still under way after {} s",
                    self.wait.as_secs()
                )));
            }
        };
        self.owners.insert(key, now.clone());
        now
    }

    /// The publishers of `versions` of the crate (and any others known),
    /// waiting at most `wait` for lookups.
    pub(super) async fn publishers(&self, krate: &str, versions: Vec<String>) -> Arc<Publishers> {
        let key = canonical(krate);
        if let Some(hit) = self.publishers.get(&key)
            && versions.iter().all(|v| hit.known.contains_key(v))
        {
            return hit;
        }
        let (db, api, registry) = (self.db.clone(), self.api.clone(), self.registry.clone());
        let name = krate.to_owned();
        let flight = self.publisher_flights.run(key.clone(), move || async move {
            Ok(Arc::new(
                load_publishers(&db, api.as_deref(), &registry, &name, &versions).await,
            ))
        });
        let now = match tokio::time::timeout(self.wait, flight).await {
            Ok(Ok(now)) => now,
            Ok(Err(e)) => Arc::new(Publishers {
                known: HashMap::new(),
                failure: Some(e.detail),
            }),
            Err(_) => {
                return Arc::new(Publishers {
                    known: HashMap::new(),
                    failure: Some(format!(
                        "the lookup of its publishers is still under way after {} s",
                        self.wait.as_secs()
                    )),
                });
            }
        };
        self.publishers.insert(key, now.clone());
        now
    }
}

/// The crate's owners from the database, else from the API (stored).
async fn load_owners(
    db: &Db,
    api: Option<&OwnersApi>,
    registry: &str,
    krate: &str,
    ttl: Duration,
) -> OwnersNow {
    let facts = db.owner_facts(registry);
    let stored = match facts.owners(krate).await {
        Ok(stored) => stored,
        Err(e) => return OwnersNow::Unknown(format!("the database cannot say: {e}")),
    };
    let known = |f: wharf_db::OwnersFact| OwnersNow::Known {
        owners: f.owners,
        source: f.source,
        at: f.at,
    };
    let fresh = |f: &wharf_db::OwnersFact| {
        f.source == FactSource::Dump
            || SystemTime::now()
                .duration_since(f.at)
                .is_ok_and(|age| age < ttl)
    };
    if let Some(f) = stored.as_ref().filter(|f| fresh(f)) {
        return known(f.clone());
    }
    let Some(api) = api else {
        return stored.map_or_else(
            || {
                OwnersNow::Unknown(
                    "no owner facts are known for it and no API is configured".to_owned(),
                )
            },
            known,
        );
    };
    match api.crate_owners(krate).await {
        Ok(owners) => {
            // No such crate on the API: nobody owns it, so no owner allows it.
            let owners = owners.unwrap_or_default();
            let at = SystemTime::now();
            if let Err(e) = facts.put_owners(krate, &owners, at).await {
                warn!(registry, krate.name = krate, error = %e, "owners not stored");
            }
            OwnersNow::Known {
                owners,
                source: FactSource::Api,
                at,
            }
        }
        Err(e) => {
            warn!(registry, krate.name = krate, error = %e, "owners lookup failed");
            // Expired facts are better than none: owners change rarely.
            stored.map_or_else(
                || OwnersNow::Unknown(format!("looking them up failed: {e}")),
                known,
            )
        }
    }
}

/// The publishers of the crate's versions from the database, the `wanted`
/// ones it lacks from the API (stored).
async fn load_publishers(
    db: &Db,
    api: Option<&OwnersApi>,
    registry: &str,
    krate: &str,
    wanted: &[String],
) -> Publishers {
    let facts = db.owner_facts(registry);
    let mut publishers = Publishers::default();
    match facts.publishers(krate).await {
        Ok(stored) => {
            for fact in stored {
                publishers.known.insert(fact.vers, fact.publisher);
            }
        }
        Err(e) => {
            publishers.failure = Some(format!("the database cannot say: {e}"));
            return publishers;
        }
    }
    for vers in wanted {
        if publishers.known.contains_key(vers) {
            continue;
        }
        let Some(api) = api else {
            publishers.failure =
                Some("its publisher is not known and no API is configured".to_owned());
            break;
        };
        match api.published_by(krate, vers).await {
            Ok(Some(publisher)) => {
                if let Err(e) = facts
                    .put_publisher(krate, vers, publisher.as_deref(), SystemTime::now())
                    .await
                {
                    warn!(registry, krate.name = krate, krate.vers = %vers, error = %e, "publisher not stored");
                }
                publishers.known.insert(vers.clone(), publisher);
            }
            Ok(None) => {
                publishers.failure =
                    Some(format!("the registry's API does not know version {vers}"));
            }
            Err(e) => {
                warn!(registry, krate.name = krate, krate.vers = %vers, error = %e, "publisher lookup failed");
                publishers.failure = Some(format!("looking up its publisher failed: {e}"));
                // Do not ask again for the other versions of a failing API.
                break;
            }
        }
    }
    publishers
}

/// Whether owner `owner` matches a configured owner or glob (case does not
/// matter, as on GitHub).
pub(super) fn owner_matches(pattern: &str, owner: &str) -> bool {
    glob::matches(pattern, owner)
}

/// What the owner rules of `policy` make of a version whose name rules said
/// `verdict`, given its crate's owners and (with `require_publisher`) the
/// publishers known.
pub(super) fn owner_verdict(
    policy: &Policy,
    verdict: &RuleVerdict,
    vers: Option<&str>,
    owners: &OwnersNow,
    publishers: Option<&Publishers>,
) -> OwnerVerdict {
    if let RuleVerdict::Denied(rule) = verdict {
        return OwnerVerdict::Denied(format!("deny rule {rule}"));
    }
    let listed = |list: &[String], owner: &str| list.iter().any(|p| owner_matches(p, owner));
    if !policy.deny_owners.is_empty() {
        match owners {
            OwnersNow::Unknown(reason) => return OwnerVerdict::Pending(reason.clone()),
            OwnersNow::Known { owners, .. } => {
                if let Some(owner) = owners.iter().find(|o| listed(&policy.deny_owners, o)) {
                    return OwnerVerdict::Denied(format!("owner {owner} is in deny_owners"));
                }
            }
        }
    }
    if *verdict == RuleVerdict::Allowed {
        return OwnerVerdict::Allowed;
    }
    if policy.allow_owners.is_empty() {
        return OwnerVerdict::NotAllowed;
    }
    let owners = match owners {
        OwnersNow::Unknown(reason) => return OwnerVerdict::Pending(reason.clone()),
        OwnersNow::Known { owners, .. } => owners,
    };
    if !owners.iter().any(|o| listed(&policy.allow_owners, o)) {
        return OwnerVerdict::NotAllowed;
    }
    if !policy.require_publisher {
        return OwnerVerdict::Allowed;
    }
    let known = vers.and_then(|v| publishers.and_then(|p| p.known.get(v)));
    match known {
        Some(Some(publisher))
            if listed(&policy.allow_owners, publisher)
                && !listed(&policy.deny_owners, publisher) =>
        {
            OwnerVerdict::Allowed
        }
        Some(_) => OwnerVerdict::NotAllowed,
        None => OwnerVerdict::Pending(
            publishers
                .and_then(|p| p.failure.clone())
                .unwrap_or_else(|| "its publisher is being looked up".to_owned()),
        ),
    }
}

/// The name crates.io compares by: lowercase, `-` as `_`.
fn canonical(krate: &str) -> String {
    krate.to_ascii_lowercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> Policy {
        toml::from_str(toml_text).unwrap()
    }

    fn known(owners: &[&str]) -> OwnersNow {
        OwnersNow::Known {
            owners: owners.iter().map(|o| (*o).to_owned()).collect(),
            source: FactSource::Api,
            at: SystemTime::now(),
        }
    }

    #[test]
    fn owners_allow_deny_and_hold() {
        let p = policy(
            r#"
            mode = "allow-list"
            allow_owners = ["github:alice", "github:our-org:*"]
            deny_owners = ["github:mallory"]
            "#,
        );
        let not = RuleVerdict::NotAllowed;
        let verdict = |owners: &OwnersNow| owner_verdict(&p, &not, Some("1.0.0"), owners, None);
        assert_eq!(verdict(&known(&["github:alice"])), OwnerVerdict::Allowed);
        assert_eq!(
            verdict(&known(&["github:bob", "github:our-org:core"])),
            OwnerVerdict::Allowed
        );
        assert_eq!(verdict(&known(&["github:bob"])), OwnerVerdict::NotAllowed);
        assert!(matches!(
            verdict(&known(&["github:alice", "github:mallory"])),
            OwnerVerdict::Denied(_)
        ));
        assert!(matches!(
            verdict(&OwnersNow::Unknown("down".to_owned())),
            OwnerVerdict::Pending(_)
        ));
        // A deny rule by owner covers crates the name rules allow.
        assert!(matches!(
            owner_verdict(
                &p,
                &RuleVerdict::Allowed,
                None,
                &known(&["github:mallory"]),
                None
            ),
            OwnerVerdict::Denied(_)
        ));
    }

    #[test]
    fn require_publisher_holds_a_co_owners_version() {
        let p = policy(
            r#"
            mode = "allow-list"
            allow_owners = ["github:alice"]
            require_publisher = true
            "#,
        );
        let owners = known(&["github:alice", "github:mallory"]);
        let publishers = Publishers {
            known: [
                ("1.0.0".to_owned(), Some("github:alice".to_owned())),
                ("1.1.0".to_owned(), Some("github:mallory".to_owned())),
                ("0.1.0".to_owned(), None),
            ]
            .into_iter()
            .collect(),
            failure: None,
        };
        let verdict = |v: &str| {
            owner_verdict(
                &p,
                &RuleVerdict::NotAllowed,
                Some(v),
                &owners,
                Some(&publishers),
            )
        };
        assert_eq!(verdict("1.0.0"), OwnerVerdict::Allowed);
        assert_eq!(verdict("1.1.0"), OwnerVerdict::NotAllowed);
        assert_eq!(verdict("0.1.0"), OwnerVerdict::NotAllowed);
        assert!(matches!(verdict("2.0.0"), OwnerVerdict::Pending(_)));
    }
}
