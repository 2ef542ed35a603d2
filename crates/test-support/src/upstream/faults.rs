//! The fake upstream's misbehaviour: which faults a test can install, which
//! requests they apply to, and how a response is damaged.

use super::*;

/// How long a faulty body waits before failing, so hyper flushes what was already
/// written (the headers, or half the body) before the connection is dropped.
pub(super) const FLUSH_GRACE: Duration = Duration::from_millis(50);

/// A way to misbehave, installed with [`FakeUpstream::set_fault`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with a short text body instead of the real response.
    Status(u16),
    /// Send the real headers (with the real `Content-Length`), then drop the
    /// connection before any body byte.
    Reset,
    /// Send the real headers and the first half of the body, then drop the connection.
    Truncate,
    /// Send a body of the right length with wrong content: one byte flipped for a
    /// `.crate`; for an index file, every `cksum` altered (so the file still parses
    /// but points at the wrong checksums). Headers, `ETag` included, are unchanged.
    WrongBytes,
    /// Send `chunk` bytes, sleep `delay`, and repeat until the body is done.
    SlowDrip {
        /// Bytes per write (0 counts as 1).
        chunk: usize,
        /// Pause between writes.
        delay: Duration,
    },
    /// Never answer: no headers, connection held open until stop or drop.
    Blackhole,
    /// Answer 200 with an HTML error page, as a misconfigured proxy or a
    /// captive portal does.
    Html,
}

/// Which requests a [`Fault`] applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every request.
    All,
    /// `/index/config.json` only. (An addition: [`Target::Index`] leaves `config.json`
    /// alone so index faults do not also break a client's start-up.)
    Config,
    /// Index files ([`RequestKind::Index`]), not `config.json`.
    Index,
    /// `.crate` downloads ([`RequestKind::Crate`]).
    Crates,
    /// The web API ([`RequestKind::Api`]).
    Api,
    /// Requests whose path (without query) is exactly this.
    Path(String),
}

impl Target {
    pub(super) fn matches(&self, kind: RequestKind, path: &str) -> bool {
        match self {
            Self::All => true,
            Self::Config => kind == RequestKind::Config,
            Self::Index => kind == RequestKind::Index,
            Self::Crates => kind == RequestKind::Crate,
            Self::Api => kind == RequestKind::Api,
            Self::Path(exact) => exact == path,
        }
    }
}

pub(super) fn injected_status(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, format!("injected fault: status {code}\n")).into_response()
}

/// Rewrites a normal response's body according to `fault`, keeping status and headers.
pub(super) async fn damage_body(response: Response, fault: Fault, kind: RequestKind) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("the fake upstream's own bodies are in memory");
    // The real length is announced even when fewer bytes follow: that is the fault.
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let body = match fault {
        Fault::Reset => Body::from_stream(fail_after_grace("reset")),
        Fault::Truncate => {
            let half = bytes.slice(..bytes.len() / 2);
            Body::from_stream(
                futures::stream::once(async move { Ok::<_, io::Error>(half) })
                    .chain(fail_after_grace("truncate")),
            )
        }
        Fault::WrongBytes => Body::from(wrong_bytes(&bytes, kind)),
        Fault::SlowDrip { chunk, delay } => Body::from_stream(drip(bytes, chunk, delay)),
        Fault::Status(_) | Fault::Blackhole | Fault::Html => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// A body stream that fails after [`FLUSH_GRACE`], which makes hyper drop the
/// connection mid-response.
fn fail_after_grace(what: &'static str) -> impl Stream<Item = Result<Bytes, io::Error>> {
    futures::stream::once(async move {
        tokio::time::sleep(FLUSH_GRACE).await;
        Err(io::Error::other(format!("injected fault: {what}")))
    })
}

fn drip(
    bytes: Bytes,
    chunk: usize,
    delay: Duration,
) -> impl Stream<Item = Result<Bytes, io::Error>> {
    let chunk = chunk.max(1);
    futures::stream::unfold((bytes, true), move |(mut rest, first)| async move {
        if rest.is_empty() {
            return None;
        }
        if !first {
            tokio::time::sleep(delay).await;
        }
        let head = rest.split_to(chunk.min(rest.len()));
        Some((Ok(head), (rest, false)))
    })
}

/// Same length, wrong content. For index files every checksum's first hex digit is
/// changed, so the file still parses; otherwise one byte in the middle is flipped.
fn wrong_bytes(bytes: &Bytes, kind: RequestKind) -> Bytes {
    const CKSUM: &[u8] = b"\"cksum\":\"";
    let mut out = bytes.to_vec();
    let mut altered = false;
    if kind == RequestKind::Index {
        let mut from = 0;
        while let Some(found) = out[from..].windows(CKSUM.len()).position(|w| w == CKSUM) {
            let at = from + found + CKSUM.len();
            if let Some(digit) = out.get_mut(at) {
                *digit = if *digit == b'0' { b'1' } else { b'0' };
                altered = true;
            }
            from = at;
        }
    }
    if !altered && !out.is_empty() {
        let middle = out.len() / 2;
        out[middle] ^= 0xff;
    }
    Bytes::from(out)
}
