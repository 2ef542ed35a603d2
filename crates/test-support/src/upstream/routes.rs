//! The fake upstream's routes: `config.json`, index files, downloads, the
//! feed and the git index, behind the middleware that logs each request and
//! applies the installed fault.

use super::faults::{damage_body, injected_status};
use super::*;

#[derive(Clone)]
pub(super) struct AppState {
    pub(super) shared: Arc<Shared>,
    pub(super) base_url: String,
}

/// The route table: every route the fake upstream answers, in one place.
pub(super) fn router(app: AppState) -> Router {
    Router::new()
        .route("/index/config.json", get(get_config))
        .route("/index/{*path}", get(get_index_file))
        .route("/dl/{*path}", get(download_crate))
        .route("/git/{*path}", get(serve_git).post(serve_git))
        .route("/rss/updates.xml", get(get_feed))
        .route("/db-dump.tar.gz", get(api::get_dump))
        .route("/api/v1/crates/{name}/owners", get(api::get_owners))
        .route("/api/v1/crates/{name}/{version}", get(api::get_version))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), log_and_inject))
        .with_state(app)
}

async fn get_config(State(app): State<AppState>) -> Response {
    let body = config_json(&app.base_url);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The registry's `config.json`, the same over sparse HTTP and in the git index.
pub(super) fn config_json(base_url: &str) -> String {
    let dl = format!(
        "{base_url}/dl/{{lowerprefix}}/{{crate}}/{{crate}}-{{version}}.crate?sum={{sha256-checksum}}&p={{prefix}}"
    );
    serde_json::json!({ "dl": dl, "api": base_url }).to_string()
}

/// How many items the feed holds, as on crates.io.
const FEED_ITEMS: usize = 100;

/// The RSS feed of the newest publishes, shaped like crates.io's
/// `rss/updates.xml`, with an `ETag` and conditional answers.
async fn get_feed(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let updates: Vec<(String, String, SystemTime)> = {
        let state = app.shared.lock();
        state
            .updates
            .iter()
            .rev()
            .take(FEED_ITEMS)
            .cloned()
            .collect()
    };
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\" xmlns:crates=\"https://crates.io/\">\n<channel>\n<title>fake upstream: recent updates</title>\n",
    );
    for (name, vers, at) in &updates {
        let link = format!("https://crates.io/crates/{name}/{vers}");
        // RFC 2822 with a numeric zone, as crates.io writes it.
        let date = httpdate::fmt_http_date(*at).replace(" GMT", " +0000");
        xml.push_str(&format!(
            "<item>\n<title>New crate version published: {name} v{vers}</title>\n<link>{link}</link>\n<guid isPermaLink=\"true\">{link}</guid>\n<pubDate>{date}</pubDate>\n<crates:name>{name}</crates:name>\n<crates:version>{vers}</crates:version>\n</item>\n"
        ));
    }
    xml.push_str("</channel>\n</rss>\n");
    let etag = format!("\"{}\"", sha256_hex(xml.as_bytes()));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/rss+xml".to_owned()),
            (header::ETAG, etag),
        ],
        xml,
    )
        .into_response()
}

async fn serve_git(State(app): State<AppState>, request: Request) -> Response {
    let root = app.shared.lock().git.as_ref().map(|g| g.project_root());
    git::serve(root, request).await
}

async fn get_index_file(State(app): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let Some(path) = uri.path().strip_prefix("/index/") else {
        return not_found().await;
    };
    let name = path.rsplit('/').next().unwrap_or(path);
    // Cargo asks for the lowercase layout only; anything else is not a file here.
    if sparse_path(name) != path {
        return not_found().await;
    }
    let (file, gzip) = {
        let state = app.shared.lock();
        let file = state
            .crates
            .get(name)
            .map(|file| (file.body(), file.last_modified));
        (file, state.gzip)
    };
    let Some((body, last_modified)) = file else {
        return not_found().await;
    };
    let etag = format!("\"{}\"", sha256_hex(body.as_bytes()));
    let validators = [
        (header::ETAG, etag.clone()),
        (
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(last_modified),
        ),
    ];
    if not_modified(&headers, &etag, last_modified) {
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    let accepts_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|token| token.trim() == "gzip"));
    if gzip && accepts_gzip {
        return (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CONTENT_ENCODING, "gzip"),
                (header::VARY, "Accept-Encoding"),
            ],
            validators,
            self::gzip(body.as_bytes()),
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        validators,
        body,
    )
        .into_response()
}

/// `bytes` in gzip, at the level a CDN uses.
pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
    std::io::Write::write_all(&mut encoder, bytes).expect("writes to memory");
    encoder.finish().expect("writes to memory")
}

/// RFC 9110 conditional logic: `If-None-Match` decides when present, otherwise
/// `If-Modified-Since` does.
fn not_modified(headers: &HeaderMap, etag: &str, last_modified: SystemTime) -> bool {
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        return value
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag);
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| httpdate::parse_http_date(value).ok())
        .is_some_and(|since| last_modified <= since)
}

/// Serves `/dl/{lowerprefix}/{crate}/{crate}-{version}.crate?sum={sha256-checksum}&p={prefix}`
/// after checking that every marker was filled in for this very crate.
async fn download_crate(State(app): State<AppState>, uri: Uri) -> Response {
    let Some(rest) = uri.path().strip_prefix("/dl/") else {
        return not_found().await;
    };
    let mut segments = rest.rsplitn(3, '/');
    let (Some(file), Some(crate_segment), Some(lowerprefix)) =
        (segments.next(), segments.next(), segments.next())
    else {
        return not_found().await;
    };
    let Some(vers) = file
        .strip_prefix(crate_segment)
        .and_then(|f| f.strip_prefix('-'))
        .and_then(|f| f.strip_suffix(".crate"))
    else {
        return bad_request(format!(
            "file {file:?} is not {{crate}}-{{version}}.crate for {{crate}} {crate_segment:?}"
        ));
    };
    let krate = {
        let state = app.shared.lock();
        state
            .crates
            .get(&crate_segment.to_lowercase())
            .and_then(|file| file.versions.iter().find(|k| k.vers == vers).cloned())
    };
    let Some(krate) = krate else {
        return not_found().await;
    };
    let expected_prefix = prefix(&krate.name);
    let query = parse_query(uri.query().unwrap_or(""));
    let param = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    if crate_segment != krate.name {
        return bad_request(format!(
            "{{crate}} is {crate_segment:?}, the crate is {:?}",
            krate.name
        ));
    }
    if lowerprefix != expected_prefix.to_lowercase() {
        return bad_request(format!(
            "{{lowerprefix}} is {lowerprefix:?}, expected {:?}",
            expected_prefix.to_lowercase()
        ));
    }
    if param("p") != Some(expected_prefix.as_str()) {
        return bad_request(format!(
            "{{prefix}} (query p) is {:?}, expected {expected_prefix:?}",
            param("p")
        ));
    }
    if param("sum") != Some(krate.cksum.as_str()) {
        return bad_request(format!(
            "{{sha256-checksum}} (query sum) is {:?}, expected {:?}",
            param("sum"),
            krate.cksum
        ));
    }
    ([(header::CONTENT_TYPE, "application/gzip")], krate.bytes).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn bad_request(reason: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("bad dl url: {reason}\n")).into_response()
}

/// Splits a query into percent-decoded pairs. Decoding lets a client that encodes `/`
/// in `p` as `%2F` pass; the values themselves are still compared exactly.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Logs every request, then applies the first matching fault, if any.
async fn log_and_inject(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let kind = RequestKind::of(&path);
    let headers = request.headers();
    let entry = Logged {
        at: std::time::Instant::now(),
        method: request.method().to_string(),
        path: path.clone(),
        query: request.uri().query().map(str::to_owned),
        if_none_match: header_text(headers, header::IF_NONE_MATCH),
        if_modified_since: header_text(headers, header::IF_MODIFIED_SINCE),
        user_agent: header_text(headers, header::USER_AGENT),
        status: 0,
        kind,
    };
    let is_head = request.method() == Method::HEAD;
    let (seq, fault) = {
        let mut state = app.shared.lock();
        let seq = state.record(entry);
        (seq, state.fault_for(kind, &path))
    };
    let response = match fault {
        // Never resolves; the connection stays open until stop or drop.
        Some(Fault::Blackhole) => futures::future::pending().await,
        Some(Fault::Status(code)) => injected_status(code),
        Some(Fault::Html) => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>Proxy error</h1></body></html>\n",
        )
            .into_response(),
        _ => next.run(request).await,
    };
    app.shared
        .lock()
        .set_status(seq, response.status().as_u16());
    match fault {
        // A HEAD response has no body to damage; an HTML page is damage enough.
        Some(Fault::Html) => response,
        Some(fault) if !is_head => damage_body(response, fault, kind).await,
        _ => response,
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
