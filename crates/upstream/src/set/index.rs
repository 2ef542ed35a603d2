//! Index files (and feeds) from the upstreams: conditional GETs, asked in
//! gzip and decoded here, raced by the next upstream after `hedge_after`.

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use wharf_index::is_well_formed;

use super::{Failure, FetchError, Inner, Upstream, UpstreamSet, humanize, status_failure, summary};
use crate::{decode, redact};

/// The validators an upstream gave for an index file. They are only ever sent
/// back to the upstream that issued them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// The base URL of the upstream that answered, as shown ([`redact`]ed:
    /// validators are stored, and secrets must not be).
    pub upstream: String,
    /// Its `ETag`, if any.
    pub etag: Option<String>,
    /// Its `Last-Modified`, if any.
    pub last_modified: Option<String>,
}

/// The answer to a conditional index fetch.
#[derive(Debug)]
pub enum IndexFetch {
    /// New content.
    Modified {
        /// The file, byte for byte as the upstream sent it.
        body: Bytes,
        /// The gzip form the upstream sent it in, when it sent one: `body`
        /// is what it decodes to, so a cache can hand it on as it is.
        gzip: Option<Bytes>,
        /// Validators for the next conditional request.
        validators: Validators,
    },
    /// The copy the caller holds is still current.
    NotModified {
        /// Validators for the next conditional request.
        validators: Validators,
    },
    /// The upstream says there is no such crate.
    NotFound,
}

impl UpstreamSet {
    /// Fetches the index file at `path` (`se/rd/serde`), conditionally when
    /// `validators` came from an upstream in the list.
    pub async fn fetch_index(
        &self,
        path: &str,
        validators: Option<&Validators>,
    ) -> Result<IndexFetch, FetchError> {
        let up: Vec<usize> = (0..self.inner.upstreams.len())
            .filter(|i| self.inner.upstreams[*i].health.is_up())
            .collect();
        let mut failures = Vec::new();
        let (Some(hedge_after), [first, rest @ ..]) = (self.inner.settings.hedge_after, &up[..])
        else {
            return self.fetch_in_turn(&up, path, validators, failures).await;
        };
        if rest.is_empty() {
            return self.fetch_in_turn(&up, path, validators, failures).await;
        }
        // The first upstream alone for `hedge_after`; then the others too.
        let own = |i: usize| validators.filter(|v| v.upstream == self.inner.upstreams[i].display);
        let first_try =
            self.inner
                .fetch_index_once(&self.inner.upstreams[*first], path, own(*first));
        tokio::pin!(first_try);
        tokio::select! {
            result = &mut first_try => {
                match result {
                    Ok(fetch) => return Ok(fetch),
                    Err(Failure { busy: Some(wait), .. }) => return Err(FetchError::Busy(wait)),
                    Err(failure) => failures.push(self.inner.record(*first, failure)),
                }
                return self.fetch_in_turn(rest, path, validators, failures).await;
            }
            () = tokio::time::sleep(hedge_after) => {}
        }
        let others = self.fetch_in_turn(rest, path, validators, Vec::new());
        tokio::pin!(others);
        tokio::select! {
            result = &mut first_try => match result {
                Ok(fetch) => Ok(fetch),
                Err(failure) => {
                    failures.push(self.inner.record(*first, failure));
                    others.await.map_err(|e| match e {
                        FetchError::Unavailable(more) => FetchError::Unavailable(format!("{}; {more}", failures.join("; "))),
                        other => other,
                    })
                }
            },
            result = &mut others => match result {
                Ok(fetch) => {
                    // The next upstream answered while the first still had
                    // not: take the first out of rotation until a probe finds
                    // it well, so the next requests do not wait for it.
                    self.inner.record(
                        *first,
                        Failure::down(format!(
                            "slower than the next upstream (no answer within {})",
                            humanize(hedge_after)
                        )),
                    );
                    Ok(fetch)
                }
                Err(_) => first_try.await.map_err(|failure| {
                    FetchError::Unavailable(self.inner.record(*first, failure))
                }),
            },
        }
    }

    /// Asks the upstreams `order` one after another.
    async fn fetch_in_turn(
        &self,
        order: &[usize],
        path: &str,
        validators: Option<&Validators>,
        mut failures: Vec<String>,
    ) -> Result<IndexFetch, FetchError> {
        for &i in order {
            let up = &self.inner.upstreams[i];
            if !up.health.is_up() {
                continue;
            }
            let own = validators.filter(|v| v.upstream == up.display);
            match self.inner.fetch_index_once(up, path, own).await {
                Ok(fetch) => return Ok(fetch),
                // The limits are the set's: the next upstream would wait as long.
                Err(Failure {
                    busy: Some(wait), ..
                }) => return Err(FetchError::Busy(wait)),
                Err(failure) => failures.push(self.inner.record(i, failure)),
            }
        }
        Err(FetchError::Unavailable(summary(failures)))
    }

    /// Fetches a document that is not an index file (an RSS feed of
    /// updates) from an absolute URL, made conditional by `validators`,
    /// under the same limits and User-Agent as every other request. It does
    /// not touch the upstreams' health: a feed is a hint, not the index.
    pub async fn fetch_document(
        &self,
        url: &str,
        validators: Option<&Validators>,
    ) -> Result<IndexFetch, FetchError> {
        self.inner
            .conditional_get(None, url, &redact(url), validators, None)
            .await
            .map_err(|failure| {
                FetchError::Unavailable(format!("{}: {}", redact(url), failure.reason))
            })
    }
}

impl Inner {
    async fn fetch_index_once(
        &self,
        up: &Upstream,
        path: &str,
        validators: Option<&Validators>,
    ) -> Result<IndexFetch, Failure> {
        let url = format!("{}{}", up.base, path);
        let fetch = self
            .conditional_get(Some(up.index), &url, &up.display, validators, Some(path))
            .await?;
        if let IndexFetch::Modified { body, .. } = &fetch
            && !body.is_empty()
            && !is_well_formed(body)
        {
            // An HTML error page from a proxy, or a cut file, must not
            // replace a good copy: refuse it and try the next upstream.
            // It is this file's failure; only several files failing mark
            // the upstream down.
            return Err(Failure::bad_file(
                path,
                format!(
                    "{} is not an index file (not lines of JSON objects)",
                    redact(&url)
                ),
            ));
        }
        Ok(fetch)
    }

    /// A GET of `url` made conditional by `validators`, under the limits.
    /// The validators it returns are labelled `label`.
    /// `path` names the file, so that its failures count as the file's;
    /// `None` for a document that is not an index file.
    async fn conditional_get(
        &self,
        index: Option<usize>,
        url: &str,
        label: &str,
        validators: Option<&Validators>,
        path: Option<&str>,
    ) -> Result<IndexFetch, Failure> {
        let _slot = self.slot().await?;
        let mut request = self.client.get(url).header(header::ACCEPT_ENCODING, "gzip");
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &v.last_modified {
                request = request.header(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let response = self.send(index, request).await?;
        let status = response.status();
        match status {
            StatusCode::OK => {
                let validators = validators_of(label, response.headers());
                let gzipped = decode::is_gzip(response.headers()).map_err(|encoding| {
                    Failure::bad_file(
                        path.unwrap_or(label),
                        format!(
                            "{} answered in an encoding that was not asked for ({encoding})",
                            redact(url)
                        ),
                    )
                })?;
                let limit = self.settings.max_index_bytes;
                let raw = self.read_limited(response, limit).await?;
                if !gzipped {
                    return Ok(IndexFetch::Modified {
                        body: raw,
                        gzip: None,
                        validators,
                    });
                }
                let body = decode::gunzip(&raw, limit).map_err(|reason| {
                    Failure::bad_file(path.unwrap_or(label), format!("{}: {reason}", redact(url)))
                })?;
                Ok(IndexFetch::Modified {
                    body,
                    gzip: Some(raw),
                    validators,
                })
            }
            StatusCode::NOT_MODIFIED => {
                let mut fresh = validators_of(label, response.headers());
                if let Some(old) = validators {
                    // A 304 need not repeat the validators; keep the old ones then.
                    fresh.etag = fresh.etag.or_else(|| old.etag.clone());
                    fresh.last_modified = fresh.last_modified.or_else(|| old.last_modified.clone());
                }
                Ok(IndexFetch::NotModified { validators: fresh })
            }
            // The statuses cargo itself reads as "no such crate".
            StatusCode::NOT_FOUND
            | StatusCode::GONE
            | StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS => Ok(IndexFetch::NotFound),
            other => Err(status_failure(other, response.headers(), path)),
        }
    }
}

fn validators_of(base: &str, headers: &HeaderMap) -> Validators {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    Validators {
        upstream: base.to_owned(),
        etag: text(header::ETAG),
        last_modified: text(header::LAST_MODIFIED),
    }
}
