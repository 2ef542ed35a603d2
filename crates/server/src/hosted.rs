//! A hosted registry: crates published by cargo, metadata in the database,
//! crate files in storage.
//!
//! Index files are rendered from the database once per change: the rendered
//! file is kept in memory and served from there; at most once a second per
//! file the database is asked whether it changed (so several wharf processes
//! on one PostgreSQL see each other's publishes within a second), and a
//! publish or yank in this process drops its copy at once.
//!
//! A publish stores the crate file first and commits the version to the
//! database last, so a killed publish leaves at most an unreferenced crate
//! file, never an index line without its file.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use tracing::info;
use wharf_db::{Db, User};
use wharf_index::{CrateName, IndexPath, Version};
use wharf_storage::{BlobKey, BlobStore, Layout};

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
    memory: moka::sync::Cache<String, Arc<IndexEntry>>,
    revisions: moka::sync::Cache<String, i64>,
    flights: Arc<Flights<String, Lookup>>,
    verified: Verified,
    /// One publish at a time: the check that a version is new and the store
    /// of its crate file must not interleave with another publish.
    publishing: tokio::sync::Mutex<()>,
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
            publishing: tokio::sync::Mutex::new(()),
        }
    }

    /// Index files held in memory now.
    pub fn in_memory(&self) -> u64 {
        self.memory.entry_count()
    }

    /// An index file, rendered from the database once per change.
    pub async fn index_file(self: &Arc<Self>, path: &IndexPath) -> Result<Lookup, ApiError> {
        if let Some(entry) = self.memory.get(path.as_str())
            && entry.is_fresh()
        {
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

    /// Publishes a version: the crate file first, then the database.
    pub async fn publish(
        &self,
        user: &User,
        request: wharf_publish::PublishRequest,
    ) -> Result<(), ApiError> {
        let _one_at_a_time = self.publishing.lock().await;
        let krate = request.name().as_str().to_owned();
        let vers = request.vers().as_str().to_owned();
        let crates = self.db.crates(&self.name);
        // Refusals the database would give are given before anything is
        // written, so a refused publish leaves no file behind.
        crates
            .check_publish(request.name(), request.version(), user)
            .await
            .map_err(publish_error)?;
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
        self.store
            .put(
                &crate_key(&self.name, &krate, &vers),
                Bytes::from(request.into_tarball()),
            )
            .await?;
        crates.publish(&new).await.map_err(publish_error)?;
        self.forget(&krate);
        info!(registry = %self.name, krate.name = %krate, krate.vers = %vers, user = %user, "published");
        Ok(())
    }
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
