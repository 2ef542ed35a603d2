//! The upstream registry's web API, asked who owns a crate and who published
//! a version, for policies with owner rules.
//!
//! crates.io asks API clients for at most one request per second and a
//! `User-Agent` that says who is asking, so every request of one
//! [`OwnersApi`] waits for its turn under a rate (burst of one) and runs one
//! at a time. The API's base is configured, or read once from the `api` of
//! the upstream index's `config.json`.
//!
//! Shapes (crates.io's `GET /api/v1/crates/{name}/owners` and
//! `GET /api/v1/crates/{name}/{version}`):
//! `{"users":[{"login":"dtolnay","kind":"user"},{"login":"github:tokio-rs:core","kind":"team"}]}`
//! and `{"version":{"num":"1.0.0","published_by":{"login":"dtolnay"}}}`
//! (`published_by` is `null` for versions older than the field).

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::{
    limits::{Gate, Limits},
    redact,
};

/// Why a lookup found nothing to go by.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// How an [`OwnersApi`] behaves.
#[derive(Debug, Clone)]
pub struct OwnersApiSettings {
    /// The API's base (`https://crates.io`); `None`: the `api` of
    /// `index_base`'s `config.json`.
    pub api: Option<String>,
    /// The sparse index whose `config.json` names the API (ends in `/`).
    pub index_base: String,
    /// At most this many requests per second, one at a time.
    pub requests_per_sec: f64,
    /// The `User-Agent` sent.
    pub user_agent: String,
    /// Bound on one request.
    pub timeout: Duration,
}

/// The web API of one upstream registry, asked politely.
pub struct OwnersApi {
    client: reqwest::Client,
    settings: OwnersApiSettings,
    base: OnceCell<String>,
    gate: Gate,
}

#[derive(Deserialize)]
struct OwnersBody {
    users: Vec<OwnerBody>,
}

#[derive(Deserialize)]
struct OwnerBody {
    login: String,
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct VersionBody {
    version: VersionInner,
}

#[derive(Deserialize)]
struct VersionInner {
    #[serde(default)]
    published_by: Option<PublisherBody>,
}

#[derive(Deserialize)]
struct PublisherBody {
    login: String,
}

#[derive(Deserialize)]
struct ConfigBody {
    #[serde(default)]
    api: Option<String>,
}

impl OwnersApi {
    /// Builds the client.
    pub fn new(settings: OwnersApiSettings) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .user_agent(settings.user_agent.clone())
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let gate = Gate::new(&Limits {
            max_concurrency: 1,
            requests_per_sec: settings.requests_per_sec,
            requests_burst: 1,
            bytes_per_sec: None,
            max_wait: None,
        });
        Ok(Self {
            client,
            settings,
            base: OnceCell::new(),
            gate,
        })
    }

    /// The crate's owners (`github:LOGIN` users, `github:ORG:TEAM` teams);
    /// `None` when the registry has no such crate.
    pub async fn crate_owners(&self, krate: &str) -> Result<Option<Vec<String>>, LookupError> {
        let url = format!("{}/api/v1/crates/{krate}/owners", self.base().await?);
        let Some(body) = self.get::<OwnersBody>(&url).await? else {
            return Ok(None);
        };
        Ok(Some(
            body.users
                .into_iter()
                .map(|o| owner_id(&o.login, o.kind.as_deref()))
                .collect(),
        ))
    }

    /// Who published the version (`github:LOGIN`): `Ok(None)` when the
    /// registry has no such version, `Ok(Some(None))` when it does not say.
    pub async fn published_by(
        &self,
        krate: &str,
        vers: &str,
    ) -> Result<Option<Option<String>>, LookupError> {
        let url = format!("{}/api/v1/crates/{krate}/{vers}", self.base().await?);
        let Some(body) = self.get::<VersionBody>(&url).await? else {
            return Ok(None);
        };
        Ok(Some(
            body.version
                .published_by
                .map(|p| owner_id(&p.login, Some("user"))),
        ))
    }

    async fn base(&self) -> Result<&str, LookupError> {
        self.base
            .get_or_try_init(|| async {
                if let Some(api) = &self.settings.api {
                    return Ok(api.trim_end_matches('/').to_owned());
                }
                let url = format!("{}config.json", self.settings.index_base);
                let config = self
                    .get::<ConfigBody>(&url)
                    .await?
                    .ok_or_else(|| LookupError(format!("{} answered 404", redact(&url))))?;
                config
                    .api
                    .map(|api| api.trim_end_matches('/').to_owned())
                    .ok_or_else(|| {
                        LookupError(format!(
                            "{} names no `api`; set owners_lookup.api in the policy",
                            redact(&url)
                        ))
                    })
            })
            .await
            .map(String::as_str)
    }

    /// One GET under the limits: the body as JSON, `None` for 404.
    async fn get<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<Option<T>, LookupError> {
        let shown = redact(url);
        let _slot = self
            .gate
            .slot()
            .await
            .map_err(|_| LookupError("the owner lookups' limit is reached".to_owned()))?;
        // Without a `max_wait` this only ever waits.
        let _ = self.gate.request().await;
        let response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| LookupError(format!("{shown}: {}", describe(&e))))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(LookupError(format!("{shown} answered {status}")));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| LookupError(format!("{shown}: {}", describe(&e))))?;
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            LookupError(format!(
                "{shown} answered something that is not the expected JSON: {e}"
            ))
        })
    }
}

/// What a conditional fetch of a database dump found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpFetch {
    /// The dump has not changed since the validators given.
    NotModified,
    /// A new dump, written to the file given, with its validators.
    Fetched {
        /// Its `ETag`, if any.
        etag: Option<String>,
        /// Its `Last-Modified`, if any.
        last_modified: Option<String>,
    },
}

impl OwnersApi {
    /// Fetches the database dump at `url` into `dest`, conditionally on
    /// `etag`/`last_modified`, under the same turn-taking and User-Agent as
    /// the API. The dump is large: only connecting and each read are
    /// bounded by the timeout, not the whole download.
    pub async fn fetch_dump(
        &self,
        url: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
        dest: &std::path::Path,
    ) -> Result<DumpFetch, LookupError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let shown = redact(url);
        let failed = |e: &dyn std::fmt::Display| LookupError(format!("{shown}: {e}"));
        let client = reqwest::Client::builder()
            .user_agent(self.settings.user_agent.clone())
            .connect_timeout(self.settings.timeout)
            .read_timeout(self.settings.timeout)
            .build()
            .map_err(|e| failed(&e))?;
        let _slot = self
            .gate
            .slot()
            .await
            .map_err(|_| LookupError("the owner lookups' limit is reached".to_owned()))?;
        let _ = self.gate.request().await;
        let mut request = client.get(url);
        if let Some(etag) = etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(since) = last_modified {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, since);
        }
        let response = request.send().await.map_err(|e| failed(&describe(&e)))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(DumpFetch::NotModified);
        }
        if !status.is_success() {
            return Err(LookupError(format!("{shown} answered {status}")));
        }
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let fetched = DumpFetch::Fetched {
            etag: header(reqwest::header::ETAG),
            last_modified: header(reqwest::header::LAST_MODIFIED),
        };
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| failed(&e))?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| failed(&describe(&e)))?;
            file.write_all(&chunk).await.map_err(|e| failed(&e))?;
        }
        file.flush().await.map_err(|e| failed(&e))?;
        Ok(fetched)
    }
}

/// How wharf names an owner: a team's login already is `github:ORG:TEAM`; a
/// user's is `github:LOGIN`.
fn owner_id(login: &str, kind: Option<&str>) -> String {
    if kind == Some("team") || login.contains(':') {
        login.to_owned()
    } else {
        format!("github:{login}")
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::owner_id;

    #[test]
    fn owners_are_named_as_in_policies() {
        assert_eq!(owner_id("dtolnay", Some("user")), "github:dtolnay");
        assert_eq!(
            owner_id("github:tokio-rs:core", Some("team")),
            "github:tokio-rs:core"
        );
    }
}
