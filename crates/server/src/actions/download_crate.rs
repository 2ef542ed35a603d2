//! `GET /{R}/crates/{name}/{name}-{version}.crate`: a verified crate file,
//! or (`crate_downloads = "redirect"`) a redirect to it in the bucket.

use std::sync::Arc;

use axum::{
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use wharf_index::{CrateName, Version};
use wharf_storage::Layout;

use crate::{auth::Principal, error::ApiError, registry::AppState, stats::Downloader};

/// Serves a crate file, downloading and verifying it on first request.
/// Stored crate files never change, so they are cacheable forever.
pub async fn download_crate(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    addr: super::ClientAddr,
) -> Result<Response, ApiError> {
    let Path((registry_name, name, file)) =
        path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let registry = state.registry(&registry_name)?;
    let principal = registry.authorize(&headers, addr.0).await?;
    let (krate, vers) = parse_file(&name, &file)?;
    if let Some(principal) = &principal
        && !principal.may_see(krate.as_str())
    {
        return Err(ApiError::not_found(format!("no crate named `{krate}`")));
    }
    let policy = registry.access().policy.as_ref();
    if let Some(policy) = policy {
        let requester = super::requester(principal.as_deref(), addr);
        policy.check_download(&krate, &vers, &requester).await?;
    }
    // The content of a name and version never changes, so they make the tag.
    let tag = format!("{krate}-{vers}");
    let etag =
        HeaderValue::from_str(&format!("\"{tag}\"")).expect("validated parts are a valid header");
    let immutable = HeaderValue::from_static(if registry.is_private() {
        "private, max-age=31536000, immutable"
    } else {
        "public, max-age=31536000, immutable"
    });
    // A licence is judged on the file's bytes, so a policy with licence
    // rules answers no 304 before it has looked at them.
    let judges_licences = policy.is_some_and(|p| p.checks_licences());
    if !judges_licences && super::if_none_match(&headers, &tag) == Some(true) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, immutable)],
        )
            .into_response());
    }
    if let Some(redirects) = state.redirects.get(&registry_name) {
        let key = Layout::new(&registry_name)
            .crate_file(krate.as_str(), vers.as_str())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let size = match redirects.checked_size(&key) {
            Some(size) => size,
            None => {
                // Fetched, read back and checked as a streamed download is,
                // once per file per process; only then handed out by URL.
                let bytes = registry.crate_file(&krate, &vers, addr.0).await?;
                if let Some(policy) = policy {
                    policy.check_license(&krate, &vers, &bytes)?;
                }
                redirects.checked(&key, bytes.len() as u64);
                bytes.len() as u64
            }
        };
        count_download(
            &state,
            &registry_name,
            principal.as_deref(),
            addr,
            &krate,
            &vers,
            size,
        );
        return redirects.redirect(&key).await;
    }
    let bytes = registry.crate_file(&krate, &vers, addr.0).await?;
    if let Some(policy) = policy {
        // Judged once per version; the manifest is among a crate file's
        // first entries, so this inflates little.
        policy.check_license(&krate, &vers, &bytes)?;
    }
    count_download(
        &state,
        &registry_name,
        principal.as_deref(),
        addr,
        &krate,
        &vers,
        bytes.len() as u64,
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/gzip"),
            ),
            (header::CACHE_CONTROL, immutable),
            (header::ETAG, etag),
        ],
        bytes,
    )
        .into_response())
}

/// Counts a download for the traffic statistics (and, by a client, for
/// `wharf clients downloads`).
fn count_download(
    state: &AppState,
    registry: &str,
    principal: Option<&Principal>,
    addr: super::ClientAddr,
    krate: &CrateName,
    vers: &Version,
    size: u64,
) {
    let who = match principal {
        Some(principal) => Downloader::Named {
            user: &principal.user,
            client: principal.client,
        },
        None => Downloader::Anonymous(addr.0),
    };
    state
        .stats
        .count_download(registry, krate.as_str(), vers.as_str(), size, who);
}

/// Splits `{name}-{version}.crate`, checking it names the crate of the directory.
fn parse_file(name: &str, file: &str) -> Result<(CrateName, Version), ApiError> {
    let krate = CrateName::new(name).map_err(|e| {
        ApiError::bad_request(format!("invalid crate name `{}`: {e}", name.escape_debug()))
    })?;
    let vers = file
        .strip_suffix(".crate")
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('-'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "crate file must be named `{name}-{{version}}.crate`, not `{}`",
                file.escape_debug()
            ))
        })?;
    let vers = Version::new(vers).map_err(|e| {
        ApiError::bad_request(format!("invalid version `{}`: {e}", vers.escape_debug()))
    })?;
    Ok((krate, vers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let (k, v) = parse_file("a-b", "a-b-1.0.0-rc.1.crate").unwrap();
        assert_eq!((k.as_str(), v.as_str()), ("a-b", "1.0.0-rc.1"));
        assert!(parse_file("a", "b-1.0.0.crate").is_err());
        assert!(parse_file("a", "a-1.0.0.tar").is_err());
        assert!(parse_file("a", "a-../x.crate").is_err());
        assert!(parse_file("..", "..-1.crate").is_err());
    }
}
