//! `GET /{R}/index/{sparse path}`: an index file, relayed byte for byte.

use std::sync::Arc;

use axum::{
    extract::{Path, Request, State, rejection::PathRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use wharf_index::{IndexPath, PathError};

use crate::{
    cache::{IndexEntry, Lookup},
    encoding::Encoding,
    error::ApiError,
    registry::AppState,
};

/// Serves one index file, compressed when the client accepts it, answering
/// conditional requests with 304. The router's route; a connection hands a
/// plain `GET` straight to [`serve_index_file`] (`dispatch`).
pub async fn get_index_file(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    addr: super::ClientAddr,
    request: Request,
) -> Result<Response, ApiError> {
    let Path((registry, path)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    serve_index_file(&state, &registry, &path, request.headers(), addr).await
}

/// Index file `path` of registry `registry` for a request with `headers`
/// from `addr`: the credentials checked, the policy applied.
///
/// A hit, the most common answer by far, is found without parsing the path
/// (memory holds files under valid paths only) and without a future of its
/// own. What only a miss, a policy or credentials need is boxed, so that
/// the future of a hit, moved into place for every request, stays small.
pub(crate) async fn serve_index_file(
    state: &AppState,
    registry: &str,
    path: &str,
    headers: &HeaderMap,
    addr: super::ClientAddr,
) -> Result<Response, ApiError> {
    let registry = state.registry(registry)?;
    let principal = registry.authorize(headers, addr.0).await?;
    let wanted = match registry.hot_index_file(path) {
        Some(entry) => Wanted::Hot(entry),
        None => Wanted::Cold(parse(path)?),
    };
    // A valid path ends in its crate's name.
    let name = path.rsplit('/').next().unwrap_or(path);
    let not_found = || ApiError::not_found(format!("no crate named `{name}`"));
    // A crate outside a client's grants does not exist for it.
    if let Some(principal) = &principal
        && !principal.may_see(name)
    {
        return Err(not_found());
    }
    let mut lookup = match wanted {
        Wanted::Hot(entry) => Lookup::Found(entry),
        Wanted::Cold(parsed) => Box::pin(registry.index_file(&parsed, addr.0)).await?,
    };
    if let (Lookup::Found(entry), Some(policy)) = (&lookup, &registry.access().policy) {
        let requester = || super::requester(principal.as_deref(), addr);
        let path = parse(path)?;
        lookup = Box::pin(policy.filter(&path, entry.clone(), requester)).await?;
    }
    match lookup {
        Lookup::Found(entry) => Ok(respond(state, &entry, headers, registry.is_private()).await),
        Lookup::NotFound => Err(not_found()),
    }
}

/// What a request for an index file names.
enum Wanted {
    /// A file memory holds fresh.
    Hot(Arc<IndexEntry>),
    /// A path to look up.
    Cold(IndexPath),
}

/// `path` as a sparse index path, or the client's error.
fn parse(path: &str) -> Result<IndexPath, ApiError> {
    IndexPath::parse(path).map_err(|e| match e {
        PathError::Name(e) => ApiError::bad_request(format!("invalid index path: {e}")),
        PathError::Layout => ApiError::not_found(format!(
            "`{}` is not a sparse index path",
            path.escape_debug()
        )),
    })
}

async fn respond(
    state: &AppState,
    entry: &IndexEntry,
    headers: &HeaderMap,
    private: bool,
) -> Response {
    let not_modified = match super::if_none_match(headers, &entry.tag) {
        Some(matched) => matched,
        None => super::not_modified_since(headers, entry.modified),
    };
    let wanted = Encoding::negotiate(
        headers.get(header::ACCEPT_ENCODING).map(|v| v.as_bytes()),
        entry.body.len(),
    );
    let (body, encoding) = if not_modified {
        (bytes::Bytes::new(), wanted)
    } else if let (Encoding::Gzip, Some(gzip)) = (wanted, entry.held_gzip()) {
        (gzip.clone(), Encoding::Gzip)
    } else {
        let variant = state.compressed.variant(entry.sha256, &entry.body, wanted);
        let (body, encoding) = Box::pin(variant).await;
        if encoding == Encoding::Gzip {
            entry.hold_gzip(&body);
        }
        (body, encoding)
    };
    // Every header is made before the request came: a hit builds one
    // header map, of the size it needs, and copies no header's bytes.
    let mut response = Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    headers.reserve(8);
    headers.insert(header::ETAG, entry.etag(encoding).clone());
    headers.insert(header::LAST_MODIFIED, entry.last_modified.clone());
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if private {
            "private, no-cache"
        } else {
            "public, no-cache"
        }),
    );
    if not_modified {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if encoding != Encoding::Identity {
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(encoding.token()),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, for every lifetime `'a`.
    fn future_size<'a, F>(
        _: impl FnOnce(&'a AppState, &'a str, &'a str, &'a HeaderMap, super::super::ClientAddr) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connection moves the future of each request into place, and a hit
    /// is most requests: what only a miss, a policy or credentials need is
    /// boxed so that the future stays small (it was 2.4 KB, moved about
    /// three times a request, before).
    #[test]
    fn the_future_of_an_index_file_stays_small() {
        let size = future_size(serve_index_file);
        assert!(size <= 512, "{size} bytes");
    }
}
