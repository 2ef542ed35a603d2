//! The fake upstream's web API: a crate's owners and a version's publisher,
//! in crates.io's shapes (`GET /api/v1/crates/{name}/owners`,
//! `GET /api/v1/crates/{name}/{version}`). A crate with versions but no
//! owners set is owned by nobody; a crate or version not published is 404,
//! with crates.io's error body.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use super::AppState;

/// What the API knows beyond the index.
#[derive(Default)]
pub(super) struct ApiFacts {
    /// Lowercase crate name to its owners (`alice`, `github:org:team`).
    owners: BTreeMap<String, Vec<String>>,
    /// (lowercase crate name, version) to the publisher's login.
    publishers: BTreeMap<(String, String), String>,
    /// The database dump served at `/db-dump.tar.gz`, if any.
    dump: Option<bytes::Bytes>,
}

impl ApiFacts {
    pub(super) fn set_owners(&mut self, name: &str, owners: &[&str]) {
        self.owners.insert(
            name.to_lowercase(),
            owners.iter().map(|o| (*o).to_owned()).collect(),
        );
    }

    pub(super) fn set_dump(&mut self, dump: Vec<u8>) {
        self.dump = Some(dump.into());
    }

    pub(super) fn set_publisher(&mut self, name: &str, vers: &str, login: &str) {
        self.publishers
            .insert((name.to_lowercase(), vers.to_owned()), login.to_owned());
    }
}

fn not_found(detail: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "errors": [{ "detail": detail }] })),
    )
        .into_response()
}

pub(super) async fn get_owners(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    let state = app.shared.lock();
    let key = name.to_lowercase();
    if !state.crates.contains_key(&key) {
        return not_found(format!("crate `{name}` does not exist"));
    }
    let users: Vec<_> = state
        .api
        .owners
        .get(&key)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, login)| {
            let kind = if login.contains(':') { "team" } else { "user" };
            json!({
                "id": i + 1,
                "login": login,
                "kind": kind,
                "url": format!("https://github.com/{login}"),
                "name": null,
                "avatar": null,
            })
        })
        .collect();
    axum::Json(json!({ "users": users })).into_response()
}

pub(super) async fn get_version(
    State(app): State<AppState>,
    Path((name, vers)): Path<(String, String)>,
) -> Response {
    let state = app.shared.lock();
    let key = name.to_lowercase();
    let published = state
        .crates
        .get(&key)
        .is_some_and(|file| file.versions.iter().any(|v| v.vers == vers));
    if !published {
        return not_found(format!("crate `{name}` does not have a version `{vers}`"));
    }
    let published_by = state
        .api
        .publishers
        .get(&(key, vers.clone()))
        .map(|login| json!({ "id": 1, "login": login, "name": null, "avatar": null, "url": format!("https://github.com/{login}") }));
    axum::Json(json!({
        "version": {
            "crate": name,
            "num": vers,
            "yanked": false,
            "published_by": published_by,
        }
    }))
    .into_response()
}

/// The database dump, with an `ETag` and conditional answers.
pub(super) async fn get_dump(State(app): State<AppState>, headers: http::HeaderMap) -> Response {
    let Some(dump) = app.shared.lock().api.dump.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", crate::fixture::sha256_hex(&dump));
    if headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return (StatusCode::NOT_MODIFIED, [(http::header::ETAG, etag)]).into_response();
    }
    (
        [
            (http::header::CONTENT_TYPE, "application/gzip".to_owned()),
            (http::header::ETAG, etag),
        ],
        dump,
    )
        .into_response()
}
