//! A fake upstream sparse registry on `127.0.0.1`, with a request log and fault
//! injection.
//!
//! [`FakeUpstream`] serves `config.json`, index files and `.crate` downloads from
//! [`FixtureCrate`]s held in memory. Its `dl` template uses all five of cargo's markers,
//! and the download route rejects (400) any marker filled in wrongly, so a proxy that
//! rewrites the template badly fails loudly instead of passing by luck.
//!
//! The accept loop is written by hand (hyper + hyper-util serving the axum router)
//! rather than with `axum::serve`, because [`FakeUpstream::stop`] must close the
//! listener *and* every open connection, including idle keep-alive connections in a
//! client's pool; `axum::serve`'s graceful shutdown waits for those instead.
//!
//! [`Blackhole`] is the simplest broken upstream: it accepts connections and never
//! answers.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::fixture::{FixtureCrate, prefix, sha256_hex, sparse_path};

/// How long a faulty body waits before failing, so hyper flushes what was already
/// written (the headers, or half the body) before the connection is dropped.
const FLUSH_GRACE: Duration = Duration::from_millis(50);

/// What a request asked for, judged by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `/index/config.json`.
    Config,
    /// Any other path under `/index/` (an index file, known or not).
    Index,
    /// Any path under `/dl/` (a `.crate` download).
    Crate,
    /// Any path under `/git/` (the git index, over smart HTTP).
    Git,
    /// The RSS feed of recent updates, `/rss/updates.xml`.
    Feed,
    /// The web API, `/api/v1/…` (owners and versions).
    Api,
    /// Everything else.
    Other,
}

impl RequestKind {
    /// Classifies a request path (without query).
    pub fn of(path: &str) -> Self {
        if path == "/index/config.json" {
            Self::Config
        } else if path.starts_with("/index/") {
            Self::Index
        } else if path.starts_with("/dl/") {
            Self::Crate
        } else if path.starts_with("/git/") {
            Self::Git
        } else if path.starts_with("/rss/") {
            Self::Feed
        } else if path.starts_with("/api/") {
            Self::Api
        } else {
            Self::Other
        }
    }
}

/// One request as the fake upstream saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The `If-None-Match` header, if sent.
    pub if_none_match: Option<String>,
    /// The `If-Modified-Since` header, if sent.
    pub if_modified_since: Option<String>,
    /// The `User-Agent` header, if sent.
    pub user_agent: Option<String>,
    /// The status answered; 0 while (or if ever) unanswered, as with
    /// [`Fault::Blackhole`].
    pub status: u16,
    /// What the request asked for.
    pub kind: RequestKind,
    /// When the request arrived.
    pub at: std::time::Instant,
}

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
    fn matches(&self, kind: RequestKind, path: &str) -> bool {
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

/// A fake upstream registry serving fixture crates on `127.0.0.1`.
///
/// Cloning is cheap and every clone controls the same server. The server stops when
/// [`FakeUpstream::stop`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct FakeUpstream {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    shared: Arc<Shared>,
    router: Router,
    server: tokio::sync::Mutex<Option<Server>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        if let Some(server) = self.server.get_mut().take() {
            server.task.abort();
        }
    }
}

impl fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl FakeUpstream {
    /// Binds `127.0.0.1:0` and serves `crates`, published in iteration order.
    ///
    /// # Panics
    ///
    /// When binding fails or two crates share a name and version.
    pub async fn start(crates: impl IntoIterator<Item = FixtureCrate>) -> FakeUpstream {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("binding the fake upstream on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("reading the fake upstream's address");
        let shared = Arc::new(Shared::default());
        {
            let mut state = shared.lock();
            for krate in crates {
                state.publish(krate, SystemTime::now());
            }
        }
        let router = router(AppState {
            shared: Arc::clone(&shared),
            base_url: format!("http://{addr}"),
        });
        let server = Server::spawn(listener, router.clone(), Arc::clone(&shared));
        FakeUpstream {
            inner: Arc::new(Inner {
                addr,
                shared,
                router,
                server: tokio::sync::Mutex::new(Some(server)),
            }),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// `sparse+http://127.0.0.1:PORT/index/`, the registry URL cargo is given.
    pub fn index_url(&self) -> String {
        format!("sparse+http://{}/index/", self.inner.addr)
    }

    /// The bound address; the same after [`FakeUpstream::restart`].
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Adds a version at runtime: its index file gets the new line, a new `ETag` and a
    /// later `Last-Modified`.
    ///
    /// # Panics
    ///
    /// When that name and version is already published.
    pub fn publish(&self, krate: FixtureCrate) {
        self.inner.shared.lock().publish(krate, SystemTime::now());
    }

    /// [`FakeUpstream::publish`], with the feed dating the publish
    /// `unix_secs` (its `<pubDate>`), as a lagging upstream's feed would.
    ///
    /// # Panics
    ///
    /// When that name and version is already published.
    pub fn publish_at(&self, krate: FixtureCrate, unix_secs: u64) {
        let at = UNIX_EPOCH + Duration::from_secs(unix_secs);
        self.inner.shared.lock().publish(krate, at);
    }

    /// Sets or clears the `yanked` flag of a published version, changing its index
    /// file's `ETag` and `Last-Modified`.
    ///
    /// # Panics
    ///
    /// When that name and version was never published.
    pub fn yank(&self, name: &str, vers: &str, yanked: bool) {
        let mut state = self.inner.shared.lock();
        let file = state
            .crates
            .get_mut(&name.to_lowercase())
            .unwrap_or_else(|| panic!("yank: crate {name} was never published"));
        let krate = file
            .versions
            .iter_mut()
            .find(|krate| krate.vers == vers)
            .unwrap_or_else(|| panic!("yank: {name} {vers} was never published"));
        krate.yanked = yanked;
        file.touch();
    }

    /// Sets the owners the web API names for crate `name`: `alice` for a
    /// user, `github:org:team` for a team.
    pub fn set_owners(&self, name: &str, owners: &[&str]) {
        self.inner.shared.lock().api.set_owners(name, owners);
    }

    /// Serves `dump` (a `.tar.gz`, see [`crate::dump`]) at `/db-dump.tar.gz`,
    /// with an `ETag`.
    pub fn set_dump(&self, dump: Vec<u8>) {
        self.inner.shared.lock().api.set_dump(dump);
    }

    /// Sets who the web API says published `name` `vers` (a user's login).
    pub fn set_publisher(&self, name: &str, vers: &str, login: &str) {
        self.inner
            .shared
            .lock()
            .api
            .set_publisher(name, vers, login);
    }

    /// The index file currently served for `name`, if the crate exists.
    pub fn index_file(&self, name: &str) -> Option<String> {
        let state = self.inner.shared.lock();
        state.crates.get(&name.to_lowercase()).map(IndexFile::body)
    }

    /// Every request received since start or the last [`FakeUpstream::clear_log`], in
    /// arrival order.
    pub fn requests(&self) -> Vec<Logged> {
        let state = self.inner.shared.lock();
        state.log.iter().map(|(_, entry)| entry.clone()).collect()
    }

    /// How many logged requests are of `kind`.
    pub fn count(&self, kind: RequestKind) -> usize {
        let state = self.inner.shared.lock();
        state.log.iter().filter(|(_, e)| e.kind == kind).count()
    }

    /// The RSS feed of the newest publishes, `http://127.0.0.1:PORT/rss/updates.xml`.
    pub fn feed_url(&self) -> String {
        format!("http://{}/rss/updates.xml", self.inner.addr)
    }

    /// The git index's URL, `http://127.0.0.1:PORT/git/index`, served once
    /// [`FakeUpstream::git_commit`] has been called.
    pub fn git_url(&self) -> String {
        format!("http://{}/git/{}", self.inner.addr, git::REPO)
    }

    /// Commits the current index files (and `config.json`) to the git index,
    /// making the repository on first use; returns the commit id.
    ///
    /// # Panics
    ///
    /// When `git` fails.
    pub fn git_commit(&self, message: &str) -> String {
        let (git, files) = self.git_snapshot();
        git.commit(&files, message, None)
    }

    /// [`FakeUpstream::git_commit`], with the commit dated `unix_secs`
    /// (author and committer), as a lagging upstream's head would be.
    ///
    /// # Panics
    ///
    /// When `git` fails.
    pub fn git_commit_at(&self, message: &str, unix_secs: i64) -> String {
        let (git, files) = self.git_snapshot();
        git.commit(&files, message, Some(unix_secs))
    }

    /// Replaces the git index's whole history with one new root commit holding
    /// the current index files, and prunes the old commits.
    ///
    /// # Panics
    ///
    /// When `git` fails.
    pub fn git_squash(&self, message: &str) -> String {
        let (git, files) = self.git_snapshot();
        git.squash(&files, message)
    }

    /// Packs the git index's objects as a long-lived git host keeps them
    /// (one pack with deltas and a reachability bitmap), so that a clone
    /// reuses them instead of compressing every object for each request.
    ///
    /// # Panics
    ///
    /// When `git` fails, or before the first [`FakeUpstream::git_commit`].
    pub fn git_repack(&self) {
        let git = self.inner.shared.lock().git.clone();
        git.expect("git_repack needs a git_commit first").repack();
    }

    fn git_snapshot(&self) -> (Arc<git::GitIndex>, BTreeMap<String, String>) {
        let mut state = self.inner.shared.lock();
        let git = Arc::clone(
            state
                .git
                .get_or_insert_with(|| Arc::new(git::GitIndex::new())),
        );
        let mut files: BTreeMap<String, String> = state
            .crates
            .iter()
            .map(|(name, file)| (sparse_path(name), file.body()))
            .collect();
        files.insert("config.json".to_owned(), config_json(&self.url()));
        (git, files)
    }

    /// Forgets the logged requests.
    pub fn clear_log(&self) {
        self.inner.shared.lock().log.clear();
    }

    /// How many TCP connections were accepted since start (across restarts).
    pub fn connections(&self) -> usize {
        self.inner.shared.connections.load(Ordering::SeqCst)
    }

    /// Adds a fault; the first installed fault whose target matches a request wins.
    pub fn set_fault(&self, target: Target, fault: Fault) {
        self.inner.shared.lock().faults.push((target, fault));
    }

    /// Removes every fault, so requests are answered normally again.
    pub fn clear_faults(&self) {
        self.inner.shared.lock().faults.clear();
    }

    /// Stops serving for real: closes the listener and drops every open connection
    /// (idle keep-alive ones too), so later requests get "connection refused".
    /// Returns once all of that is done. Does nothing when already stopped.
    pub async fn stop(&self) {
        let server = self.inner.server.lock().await.take();
        if let Some(server) = server {
            // An error only means the loop is already gone, which is the goal.
            let _ = server.shutdown.send(());
            let _ = server.task.await;
        }
    }

    /// Serves the same state again on the same port. Does nothing when running.
    ///
    /// # Panics
    ///
    /// When the port was taken by someone else in the meantime.
    pub async fn restart(&self) {
        let mut server = self.inner.server.lock().await;
        if server.is_some() {
            return;
        }
        let listener = bind(self.inner.addr).expect("rebinding the fake upstream's port");
        *server = Some(Server::spawn(
            listener,
            self.inner.router.clone(),
            Arc::clone(&self.inner.shared),
        ));
    }
}

/// Binds with `SO_REUSEADDR`, so a restart can take the port back while connections
/// the server closed are still in `TIME_WAIT`.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A running accept loop.
struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    fn spawn(listener: TcpListener, router: Router, shared: Arc<Shared>) -> Self {
        let (shutdown, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, router, shared, shutdown_rx));
        Self { shutdown, task }
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Fires on `stop` and also when the sender is dropped.
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(err) => {
                        // Usually fd exhaustion; back off instead of spinning.
                        tracing::warn!(error = %err, "fake upstream accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let service = TowerToHyperService::new(router.clone());
                connections.spawn(async move {
                    // Connection errors are the faults working as intended, or the
                    // client hanging up; neither is worth reporting.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborts every connection task and waits until each one has dropped its socket.
    connections.shutdown().await;
}

/// State shared by the handlers and the controlling handle.
#[derive(Default)]
struct Shared {
    state: Mutex<UpstreamState>,
    connections: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, UpstreamState> {
        // A panic elsewhere must not hide the log from the test that is failing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct UpstreamState {
    /// Index files keyed by lowercase crate name.
    crates: BTreeMap<String, IndexFile>,
    /// Logged requests with a sequence number, so a response can find its entry even
    /// after `clear_log`.
    log: Vec<(u64, Logged)>,
    next_seq: u64,
    faults: Vec<(Target, Fault)>,
    /// The git index, once a test has committed to it.
    git: Option<Arc<git::GitIndex>>,
    /// Every publish (name, version, when), oldest first: the RSS feed
    /// shows the newest.
    updates: Vec<(String, String, SystemTime)>,
    /// The web API's facts: owners and publishers.
    api: api::ApiFacts,
}

impl UpstreamState {
    fn publish(&mut self, krate: FixtureCrate, at: SystemTime) {
        let file = self
            .crates
            .entry(krate.name.to_lowercase())
            .or_insert_with(|| IndexFile {
                versions: Vec::new(),
                last_modified: UNIX_EPOCH,
            });
        assert!(
            !file.versions.iter().any(|v| v.vers == krate.vers),
            "publish: {} {} is already published",
            krate.name,
            krate.vers
        );
        self.updates
            .push((krate.name.clone(), krate.vers.clone(), at));
        file.versions.push(krate);
        file.touch();
    }

    fn record(&mut self, entry: Logged) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.log.push((seq, entry));
        seq
    }

    fn set_status(&mut self, seq: u64, status: u16) {
        if let Some((_, entry)) = self.log.iter_mut().rev().find(|(s, _)| *s == seq) {
            entry.status = status;
        }
    }

    fn fault_for(&self, kind: RequestKind, path: &str) -> Option<Fault> {
        self.faults
            .iter()
            .find(|(target, _)| target.matches(kind, path))
            .map(|(_, fault)| fault.clone())
    }
}

/// Every published version of one crate, in publish order.
struct IndexFile {
    versions: Vec<FixtureCrate>,
    last_modified: SystemTime,
}

impl IndexFile {
    fn body(&self) -> String {
        let mut body = String::new();
        for krate in &self.versions {
            body.push_str(&krate.index_line());
            body.push('\n');
        }
        body
    }

    /// Records a change. HTTP dates have one-second resolution, so the new time is
    /// whole seconds and strictly later than the previous one; otherwise two changes
    /// within a second would look like no change to `If-Modified-Since`.
    fn touch(&mut self) {
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        self.last_modified = if self.last_modified >= now {
            self.last_modified + Duration::from_secs(1)
        } else {
            now
        };
    }
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    base_url: String,
}

/// The route table: every route the fake upstream answers, in one place.
fn router(app: AppState) -> Router {
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
fn config_json(base_url: &str) -> String {
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
    let file = {
        let state = app.shared.lock();
        state
            .crates
            .get(name)
            .map(|file| (file.body(), file.last_modified))
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
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        validators,
        body,
    )
        .into_response()
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

fn injected_status(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, format!("injected fault: status {code}\n")).into_response()
}

/// Rewrites a normal response's body according to `fault`, keeping status and headers.
async fn damage_body(response: Response, fault: Fault, kind: RequestKind) -> Response {
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

/// A port that accepts TCP connections and never answers them.
///
/// Input is read and discarded so clients never block on a full send buffer; each
/// connection stays open until the client closes it or the `Blackhole` is dropped.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Blackhole {
    /// Binds `127.0.0.1:0` and starts swallowing connections.
    ///
    /// # Panics
    ///
    /// When binding fails.
    pub async fn start() -> Blackhole {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("binding the blackhole on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("reading the blackhole's address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            let mut held = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut stream, _peer)) = accepted else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        counter.fetch_add(1, Ordering::SeqCst);
                        held.spawn(async move {
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = stream.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        });
                    }
                    Some(_) = held.join_next(), if !held.is_empty() => {}
                }
            }
        });
        Blackhole {
            addr,
            connections,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `sparse+http://127.0.0.1:PORT/index/`.
    pub fn index_url(&self) -> String {
        format!("sparse+http://{}/index/", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        // Dropping the task drops its JoinSet, which closes every held connection.
        self.task.abort();
    }
}

mod api;
mod git;
#[cfg(test)]
mod tests;
