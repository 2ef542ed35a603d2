//! `owners_dump_url`: a crates.io database dump fetched on a schedule with
//! conditional requests (its `ETag` and `Last-Modified` kept in the
//! database, so a restart does not download it again), and imported as
//! `wharf owners import` does, in one transaction.

use std::{sync::Arc, time::Duration, time::SystemTime};

use tracing::{info, warn};
use wharf_db::{Db, DumpState};
use wharf_upstream::{DumpFetch, OwnersApi};

/// Fetches and imports the dump at `url` now and then every `every`, for
/// registry `registry`, until the runtime stops.
pub(super) fn spawn(registry: String, db: Db, api: Arc<OwnersApi>, url: String, every: Duration) {
    tokio::spawn(async move {
        loop {
            match refresh(&registry, &db, &api, &url).await {
                Ok(Some(state)) => info!(
                    registry,
                    dump_date = %humantime::format_rfc3339_seconds(state.dump_date),
                    "owner facts imported from the dump"
                ),
                Ok(None) => {}
                Err(e) => {
                    warn!(registry, error = %e, "owner dump not imported; kept what is known")
                }
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// One conditional fetch, and an import when the dump changed.
async fn refresh(
    registry: &str,
    db: &Db,
    api: &OwnersApi,
    url: &str,
) -> anyhow::Result<Option<DumpState>> {
    let facts = db.owner_facts(registry);
    let known = facts.dump_state().await?.filter(|s| s.url == url);
    let file = tempfile::NamedTempFile::new()?;
    let fetched = api
        .fetch_dump(
            url,
            known.as_ref().and_then(|s| s.etag.as_deref()),
            known.as_ref().and_then(|s| s.last_modified.as_deref()),
            file.path(),
        )
        .await?;
    let DumpFetch::Fetched {
        etag,
        last_modified,
    } = fetched
    else {
        return Ok(None);
    };
    let path = file.path().to_owned();
    let dump = tokio::task::spawn_blocking(move || crate::owner_dump::read(&path)).await??;
    let dump_date = dump.date;
    facts.replace_with_dump(dump.crates, dump_date).await?;
    let state = DumpState {
        url: url.to_owned(),
        etag,
        last_modified,
        dump_date,
        imported_at: SystemTime::now(),
    };
    facts.set_dump_state(&state).await?;
    Ok(Some(state))
}
