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

    /// Answers index files in gzip to requests that accept it, as
    /// crates.io's CDN does (off at the start).
    pub fn serve_gzip(&self, on: bool) {
        self.inner.shared.lock().gzip = on;
    }

    /// The bytes of `name`'s index file in gzip, as [`Self::serve_gzip`]
    /// answers them.
    pub fn index_file_gzip(&self, name: &str) -> Option<Vec<u8>> {
        self.index_file(name)
            .map(|body| routes::gzip(body.as_bytes()))
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
    /// Index files are answered in gzip to requests that accept it.
    gzip: bool,
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

mod api;
mod blackhole;
mod faults;
mod git;
mod routes;
#[cfg(test)]
mod tests;

pub use blackhole::Blackhole;
pub use faults::{Fault, Target};
use routes::{AppState, config_json, router};
