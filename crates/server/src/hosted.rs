//! A hosted registry: crates published by cargo, metadata in the database,
//! crate files in storage.
//!
//! Index files are rendered from the database once per change: the rendered
//! file is kept in memory and served from there; at most once a second per
//! file the database is asked whether it changed, and a publish or yank in
//! this process drops its copy at once. On PostgreSQL, a publish or yank
//! through any other instance drops it at once too ([`follow_changes`]).
//!
//! A publish takes the crate's lock in the database and checks the version
//! is new, stores the crate file (create-only), and commits the version
//! last: a killed publish leaves at most an unreferenced crate file, never
//! an index line without its file, and of two instances publishing one
//! version, the database lets one through.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use tracing::{info, warn};
use wharf_db::{Db, User};
use wharf_index::{CrateName, IndexPath, Version};
use wharf_storage::{BlobKey, BlobStore, Layout, StoreError};

use crate::{
    auth::Principal,
    cache::{IndexEntry, Lookup},
    error::ApiError,
    flight::Flights,
    registry::Access,
    stored::{Stored, Verified},
};

/// How long a rendered index file is served before the database is asked
/// whether it changed.
const RECHECK: Duration = Duration::from_secs(1);

/// A hosted registry mounted by the server.
pub struct HostedRegistry {
    /// Its name.
    pub name: String,
    /// The `config.json` served (`dl` and `api` point at this server).
    pub config_json: Bytes,
    /// Where `cargo login` sends people for a token.
    pub login_url: String,
    /// The metadata database.
    pub db: Db,
    /// The largest `.crate` accepted.
    pub max_upload_bytes: u64,
    /// Who may read and write it.
    pub access: Access,
    store: Arc<dyn BlobStore>,
    memory: crate::cache::HotFiles,
    revisions: moka::sync::Cache<String, i64>,
    flights: Arc<Flights<String, Lookup>>,
    verified: Verified,
}

impl HostedRegistry {
    /// A hosted registry `name` over `db` and `store`, served at `base`.
    pub fn new(
        name: &str,
        base: &str,
        db: Db,
        store: Arc<dyn BlobStore>,
        max_upload_bytes: u64,
        access: Access,
        memory_bytes: u64,
    ) -> Self {
        let mut config = wharf_index::RegistryConfig::for_base(base);
        config.api = Some(base.trim_end_matches('/').to_owned());
        config.auth_required = access.auth_required;
        Self {
            name: name.to_owned(),
            config_json: Bytes::from(config.to_json()),
            login_url: format!("{}/me", base.trim_end_matches('/')),
            db,
            max_upload_bytes,
            access,
            store,
            memory: IndexEntry::memory(memory_bytes),
            revisions: moka::sync::Cache::new(1 << 20),
            flights: Flights::new(),
            verified: Verified::new(),
        }
    }

    /// Index files held in memory now.
    pub fn in_memory(&self) -> u64 {
        self.memory.entry_count()
    }

    /// The index file at sparse path `path` when memory holds it fresh.
    pub fn hot(&self, path: &str) -> Option<Arc<IndexEntry>> {
        self.memory.fresh(path)
    }

    /// An index file, rendered from the database once per change.
    pub async fn index_file(self: &Arc<Self>, path: &IndexPath) -> Result<Lookup, ApiError> {
        if let Some(entry) = self.hot(path.as_str()) {
            return Ok(Lookup::Found(entry));
        }
        let this = Arc::clone(self);
        let path = path.clone();
        self.flights
            .run(
                path.to_string(),
                move || async move { this.render(&path).await },
            )
            .await
    }

    async fn render(&self, path: &IndexPath) -> Result<Lookup, ApiError> {
        let key = path.as_str().to_owned();
        let file = self
            .db
            .crates(&self.name)
            .index_file(path.name().as_str())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let Some(file) = file else {
            self.forget(path.name().as_str());
            return Ok(Lookup::NotFound);
        };
        let fresh_until = Instant::now() + RECHECK;
        let entry = match self.memory.get(&key) {
            Some(old) if self.revisions.get(&key) == Some(file.revision) => {
                old.confirmed(fresh_until, None)
            }
            _ => {
                let now = SystemTime::now();
                IndexEntry::new(Bytes::from(file.lines), now, now, fresh_until, None)
            }
        };
        let entry = Arc::new(entry);
        self.memory.insert(key.clone(), entry.clone());
        self.revisions.insert(key, file.revision);
        Ok(Lookup::Found(entry))
    }

    /// Drops the rendered index file of `name`, after a change.
    pub fn forget(&self, name: &str) {
        let Ok(krate) = CrateName::new(name) else {
            return;
        };
        let path = IndexPath::for_name(&krate);
        self.memory.invalidate(path.as_str());
        self.revisions.invalidate(path.as_str());
    }

    /// A crate file, checked against its index line before it is served
    /// (once per file per process). A damaged one is not served and is left
    /// in place for the operator: a hosted registry has no other copy.
    pub async fn crate_file(
        self: &Arc<Self>,
        krate: &CrateName,
        vers: &Version,
    ) -> Result<Bytes, ApiError> {
        let key = crate_key(&self.name, krate.as_str(), vers.as_str());
        let bytes =
            self.store.get(&key).await?.ok_or_else(|| {
                ApiError::not_found(format!("this registry has no {krate} {vers}"))
            })?;
        let index = self.index_file(&IndexPath::for_name(krate)).await?;
        match self.verified.check(&key, &bytes, &index, vers.as_str()) {
            Stored::Good | Stored::Unlisted => Ok(bytes),
            Stored::Damaged { expected, found } => {
                tracing::error!(registry = %self.name, krate.name = %krate, krate.vers = %vers, %expected, %found, storage.key = %key, "stored crate file is damaged; not served");
                Err(ApiError::internal(format!(
                    "the stored file of {krate} {vers} is damaged (sha256 {found}, the index says {expected}); the registry's operator must restore `{key}` from a backup"
                )))
            }
        }
    }

    /// Who sent a write (publish, yank, owners): a user with a token, or a
    /// client allowed to publish; an error cargo shows otherwise.
    pub async fn authenticate_writer(
        &self,
        headers: &axum::http::HeaderMap,
        addr: Option<std::net::IpAddr>,
    ) -> Result<Arc<Principal>, ApiError> {
        let gate = self
            .access
            .gate
            .as_ref()
            .ok_or_else(|| ApiError::internal("a hosted registry has a credential gate"))?;
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let principal = gate.authenticate(authorization, addr).await?;
        if !principal.publish {
            return Err(ApiError::forbidden(format!(
                "client `{}` may read registry `{}` but not publish, yank or change owners; its operator can allow that with `wharf clients add {} --publish`",
                principal.user, self.name, principal.user
            )));
        }
        Ok(principal)
    }

    /// Publishes a version. The database first takes the crate's lock and
    /// checks the publish (so of two publishes of one version, on any
    /// instances, one gets past this and the other gets the ordinary refusal
    /// before it writes anything); then the crate file is stored,
    /// create-only; the version is committed last.
    pub async fn publish(
        &self,
        user: &User,
        request: wharf_publish::PublishRequest,
    ) -> Result<(), ApiError> {
        let krate = request.name().as_str().to_owned();
        let vers = request.vers().as_str().to_owned();
        let crates = self.db.crates(&self.name);
        let line = wharf_publish::index_line(&request, SystemTime::now());
        let new = wharf_db::NewVersion {
            name: request.name().clone(),
            vers: request.version().clone(),
            index_line: line,
            cksum: request.cksum(),
            description: request.metadata().description.clone(),
            keywords: request.metadata().keywords.clone(),
            size_bytes: request.tarball().len() as u64,
            publisher: user.clone(),
        };
        let pending = crates.begin_publish(&new).await.map_err(publish_error)?;
        self.store_crate_file(
            &crate_key(&self.name, &krate, &vers),
            Bytes::from(request.into_tarball()),
        )
        .await?;
        pending.commit().await.map_err(publish_error)?;
        self.forget(&krate);
        info!(registry = %self.name, krate.name = %krate, krate.vers = %vers, user = %user, "published");
        Ok(())
    }

    /// Stores a crate file create-only. Called under the crate's lock with
    /// the version absent from the database, so a file already there was
    /// left by a publish that never committed (killed, or cut off): it is
    /// kept when it has these bytes and replaced otherwise. A put still in
    /// flight from a dead instance can't overwrite what this one stores,
    /// since every put of a crate file is create-only.
    async fn store_crate_file(&self, key: &BlobKey, bytes: Bytes) -> Result<(), ApiError> {
        for _ in 0..2 {
            match self.store.put_if_absent(key, bytes.clone()).await {
                Ok(()) => return Ok(()),
                Err(StoreError::AlreadyExists { .. }) => {
                    if self.store.get(key).await?.as_ref() == Some(&bytes) {
                        return Ok(());
                    }
                    warn!(registry = %self.name, storage.key = %key, "replacing a crate file left by a publish that did not complete");
                    self.store.delete(key).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            format!("another write of `{key}` is under way; publish again in a minute"),
        ))
    }
}

/// Drops the rendered index files of `registries` (all on `db`) as soon as
/// another process commits a change to them: on PostgreSQL, a task that
/// listens for the database's notifications, so a publish through one
/// instance shows through every other at once. Nothing on SQLite, where
/// the revision check does it within a second.
pub async fn follow_changes(db: &Db, registries: Vec<Arc<HostedRegistry>>) -> anyhow::Result<()> {
    let Some(mut changes) = db.listen_for_changes().await? else {
        return Ok(());
    };
    tokio::spawn(async move {
        loop {
            match changes.next().await {
                Ok(wharf_db::Change::IndexFile { registry, name }) => {
                    for hosted in registries.iter().filter(|h| h.name == registry) {
                        hosted.forget(&name);
                    }
                }
                Ok(wharf_db::Change::Unknown) => {
                    for hosted in &registries {
                        hosted.memory.invalidate_all();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listening for changes on the database failed; rendered index files are rechecked each second until it works again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    for hosted in &registries {
                        hosted.memory.invalidate_all();
                    }
                }
            }
        }
    });
    Ok(())
}

/// Where a hosted registry keeps a crate file.
fn crate_key(registry: &str, name: &str, vers: &str) -> BlobKey {
    Layout::new(registry)
        .crate_file(name, vers)
        .expect("a crate name and version make a valid key")
}

/// A database refusal as the error cargo shows.
pub fn publish_error(e: wharf_db::PublishError) -> ApiError {
    ApiError::from_kind(e.kind(), e.to_string())
}
