//! Request handlers, one action per file, named verb_noun.

pub mod download_crate;
pub mod get_config_json;
pub mod get_index_file;
pub mod get_mirror_list;
pub mod get_registry_status;
pub mod health;
pub mod manage_owners;
pub mod publish_crate;
pub mod search_crates;
pub mod show_dashboard;
pub mod show_me;
pub mod yank_version;

use axum::http::{HeaderMap, header};

use crate::auth::Principal;

pub(crate) use crate::client_addr::ClientAddr;

/// Who a policy's approval queue says asked: the principal, else the address.
pub(crate) fn requester(principal: Option<&Principal>, addr: ClientAddr) -> String {
    match (principal, addr.0) {
        (Some(p), Some(addr)) => format!("{} ({addr})", p.user),
        (Some(p), None) => p.user.to_string(),
        (None, Some(addr)) => addr.to_string(),
        (None, None) => "anonymous".to_owned(),
    }
}

/// Whether an `If-None-Match` header names `tag` (any of wharf's variant tags
/// of it, weak or strong, or `*`).
pub(crate) fn if_none_match(headers: &HeaderMap, tag: &str) -> Option<bool> {
    let value = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    Some(value.split(',').any(|candidate| {
        let candidate = candidate.trim();
        if candidate == "*" {
            return true;
        }
        let candidate = candidate
            .strip_prefix("W/")
            .unwrap_or(candidate)
            .trim_matches('"');
        // Variant tags are `{tag}-{encoding}`; all of them name the same content.
        candidate.split('-').next() == Some(tag) || candidate == tag
    }))
}

/// Whether an `If-Modified-Since` header is at or after `modified`.
pub(crate) fn not_modified_since(headers: &HeaderMap, modified: std::time::SystemTime) -> bool {
    let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    // HTTP dates have one-second resolution.
    let modified_secs = modified
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let since_secs = since
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    modified_secs <= since_secs
}
