//! Following a git index (the crates.io-index layout) with gitoxide.
//!
//! The mirror keeps a bare clone in its work directory. Each pass fetches the
//! remote's `HEAD` into a private ref with a forced refspec, so a squashed
//! upstream history (a new root commit) is taken like any other update, and
//! diffs the tree of the last fully synced pass against the new tree. History
//! is never walked: only the two trees matter, so a squash costs nothing more
//! than the files it really changed. The old tree stays in the local object
//! database because wharf never runs `gc` there.
//!
//! Every function here blocks; the sync runs them in `spawn_blocking`.

use std::{
    path::Path,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use gix::{ObjectId, remote::Direction};

/// Any gitoxide failure, with its own message.
pub type GitError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The remote the clone records.
const REMOTE: &str = "origin";
/// The private ref that holds the remote's `HEAD` as of the last fetch.
const UPSTREAM_REF: &str = "refs/wharf/upstream";

/// One file that differs between two trees.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Changed {
    /// Its path in the tree (`se/rd/serde`).
    pub path: String,
    /// Its blob in the new tree; `None` when it is gone from it.
    pub blob: Option<ObjectId>,
}

/// How a clone talks HTTP to its remote: as politely, and with the same
/// bounds, as every other request to the mirror's upstreams.
#[derive(Clone)]
pub struct GitHttp {
    /// Sent with every request, naming the operator's contact.
    pub user_agent: String,
    /// Bound on connecting, on the wait for each response and on each read
    /// of its body (reqwest's blocking client applies its timeout per read),
    /// so a remote that stops answering fails the fetch instead of hanging it.
    pub timeout: Duration,
    /// Called before each HTTP request, on gix's own thread: counts it and
    /// waits for its turn under the mirror's request rate.
    pub before_request: Arc<dyn Fn() + Send + Sync>,
}

/// A bare clone of a git index.
pub struct GitIndex {
    repo: gix::ThreadSafeRepository,
    http: GitHttp,
}

impl GitIndex {
    /// Opens the clone in `dir`, or clones `url` there (bare, no checkout).
    /// Every request to the remote goes as `http` says.
    pub fn open_or_clone(url: &str, dir: &Path, http: GitHttp) -> Result<Self, GitError> {
        if dir.join("HEAD").is_file() {
            // A pass killed mid-fetch leaves lock files that would fail every
            // later fetch. The sync's own lock file makes this process the
            // only user of the clone, so any lock in it is stale.
            remove_stale_locks(dir)?;
            let repo = gix::open(dir)?;
            let same_url = repo
                .find_remote(REMOTE)
                .ok()
                .and_then(|r| r.url(Direction::Fetch).map(|u| u.to_bstring()))
                .is_some_and(|u| u == url);
            if same_url {
                return Ok(Self {
                    repo: repo.into_sync(),
                    http,
                });
            }
            // The operator changed `index_git`: start a clone of the new one.
            // Only the objects are lost; the sync's cursor lives elsewhere.
            drop(repo);
            std::fs::remove_dir_all(dir)?;
        }
        // A clone killed before it wrote `HEAD` is started again from scratch.
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let interrupt = AtomicBool::new(false);
        let options = http.clone();
        let (repo, _) = gix::prepare_clone_bare(url, dir)?
            .configure_connection(move |connection| {
                connection.set_transport_options(http_options(&options, None));
                Ok(())
            })
            .fetch_only(gix::progress::Discard, &interrupt)?;
        Ok(Self {
            repo: repo.into_sync(),
            http,
        })
    }

    /// Fetches the remote's `HEAD` and returns the id of its tree.
    pub fn fetch(&self) -> Result<ObjectId, GitError> {
        let repo = self.repo.to_thread_local();
        let interrupt = AtomicBool::new(false);
        let mut remote = repo
            .find_remote(REMOTE)?
            .with_fetch_tags(gix::remote::fetch::Tags::None);
        // `+` forces the update: after a squash the new head does not descend
        // from the old one, and without it gix silently keeps the old ref.
        remote.replace_refspecs([format!("+HEAD:{UPSTREAM_REF}").as_str()], Direction::Fetch)?;
        let mut connection = remote.connect(Direction::Fetch)?;
        let configured = remote.url(Direction::Fetch).and_then(|url| {
            repo.transport_options(url.to_bstring().as_slice(), Some("origin".into()))
                .ok()
                .flatten()
        });
        connection.set_transport_options(http_options(&self.http, configured));
        let outcome = connection
            .prepare_fetch(gix::progress::Discard, Default::default())?
            .receive(gix::progress::Discard, &interrupt)?;
        // A refused ref update is not an error to gix; check that the ref
        // really points where the remote said `HEAD` is.
        let advertised = outcome
            .ref_map
            .mappings
            .iter()
            .find(|m| m.local.as_ref().is_some_and(|l| l == UPSTREAM_REF))
            .and_then(|m| m.remote.as_id())
            .map(ToOwned::to_owned)
            .ok_or("the git index advertises no HEAD (is it empty?)")?;
        let local = repo.find_reference(UPSTREAM_REF)?.peel_to_id()?.detach();
        if local != advertised {
            return Err(
                format!("{UPSTREAM_REF} is {local}, but the remote HEAD is {advertised}").into(),
            );
        }
        Ok(repo.find_commit(advertised)?.tree_id()?.detach())
    }

    /// When the commit the last fetch brought in was made, by its committer's
    /// clock (seconds since the epoch): the upstream's own word on how new
    /// its index is. `None` before a fetch.
    pub fn head_time(&self) -> Result<Option<i64>, GitError> {
        let repo = self.repo.to_thread_local();
        let Ok(mut head) = repo.find_reference(UPSTREAM_REF) else {
            return Ok(None);
        };
        let commit = head.peel_to_commit()?;
        Ok(Some(commit.time()?.seconds))
    }

    /// Whether `tree` is in the local object database.
    pub fn has_tree(&self, tree: ObjectId) -> bool {
        self.repo.to_thread_local().find_tree(tree).is_ok()
    }

    /// The files that differ between `old` (the empty tree when `None`) and `new`.
    pub fn changes(&self, old: Option<ObjectId>, new: ObjectId) -> Result<Vec<Changed>, GitError> {
        use gix::diff::tree::recorder::Change;
        let repo = self.repo.to_thread_local();
        let old = match old {
            Some(id) => repo.find_tree(id)?,
            None => repo.empty_tree(),
        };
        let new = repo.find_tree(new)?;
        let mut recorder = gix::diff::tree::Recorder::default();
        gix::diff::tree(
            gix::objs::TreeRefIter::from_bytes(&old.data, old.id.kind()),
            gix::objs::TreeRefIter::from_bytes(&new.data, new.id.kind()),
            gix::diff::tree::State::default(),
            &repo.objects,
            &mut recorder,
        )?;
        let mut changed = Vec::new();
        for record in recorder.records {
            let (mode, path, blob) = match record {
                Change::Addition {
                    entry_mode,
                    path,
                    oid,
                    ..
                } => (entry_mode, path, Some(oid)),
                Change::Modification {
                    entry_mode,
                    path,
                    oid,
                    ..
                } => (entry_mode, path, Some(oid)),
                Change::Deletion {
                    entry_mode, path, ..
                } => (entry_mode, path, None),
            };
            // Directories are reported too; only files are index files.
            if mode.is_tree() {
                continue;
            }
            // A path that is not UTF-8 is not an index file.
            if let Ok(path) = String::from_utf8(path.into()) {
                changed.push(Changed { path, blob });
            }
        }
        Ok(changed)
    }

    /// The file at `path` in `tree`, or `None` when there is none.
    pub fn read(&self, tree: ObjectId, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        self.read_files(&[GitFile::AtPath(tree, path.to_owned())])
            .pop()
            .unwrap_or(Ok(None))
    }

    /// Each of `files`, in order, through one handle on the object database
    /// (a handle is not free to make, and its caches then serve the batch).
    pub fn read_files(&self, files: &[GitFile]) -> Vec<Result<Option<Vec<u8>>, GitError>> {
        let repo = self.repo.to_thread_local();
        files.iter().map(|file| read_file(&repo, file)).collect()
    }
}

/// Where an index file is in the git index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitFile {
    /// A blob found by a diff.
    Blob(ObjectId),
    /// The file at a path in a tree.
    AtPath(ObjectId, String),
}

fn read_file(repo: &gix::Repository, file: &GitFile) -> Result<Option<Vec<u8>>, GitError> {
    let blob = match file {
        GitFile::Blob(id) => *id,
        GitFile::AtPath(tree, path) => {
            let tree = repo.find_tree(*tree)?;
            let Some(entry) = tree.lookup_entry_by_path(path)? else {
                return Ok(None);
            };
            if !entry.mode().is_blob() {
                return Ok(None);
            }
            entry.object_id()
        }
    };
    Ok(Some(repo.find_blob(blob)?.detach().data))
}

/// Removes the `*.lock` files under a clone (refs, `packed-refs`, `config`,
/// `HEAD`), which only a killed fetch leaves behind.
fn remove_stale_locks(dir: &Path) -> std::io::Result<()> {
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                // Objects hold no lock files; packs can be many and large.
                if entry.file_name() != "objects" {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "lock") {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

/// HTTP options for the transport: those the repository's configuration
/// gives (`base`), with every request's `User-Agent` replaced by wharf's,
/// which names the operator's contact (gix's HTTP transport sends its own
/// agent otherwise, whatever `http.userAgent` says), every request counted
/// under the mirror's limits, and the client's timeouts set to
/// `upstream_timeout` (gix's own are a 20 s connect and reqwest's default).
fn http_options(http: &GitHttp, base: Option<Box<dyn std::any::Any>>) -> Box<dyn std::any::Any> {
    use gix::protocol::transport::client::blocking_io::http;
    let mut options = base
        .and_then(|b| b.downcast::<http::Options>().ok())
        .map(|b| *b)
        .unwrap_or_default();
    options.connect_timeout = Some(http.timeout);
    let agent = http.user_agent.clone();
    let before_request = Arc::clone(&http.before_request);
    let timeout = http.timeout;
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            Ok(builder.connect_timeout(timeout).timeout(timeout))
        })),
        configure_request: Some(Box::new(move |request| {
            before_request();
            if let Ok(value) = agent.parse() {
                request.headers_mut().insert("user-agent", value);
            }
            Ok(())
        })),
    };
    options.backend = Some(std::sync::Arc::new(std::sync::Mutex::new(backend)));
    Box::new(options)
}
