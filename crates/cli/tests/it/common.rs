//! Starting wharf in-process or as the real binary, against a fake upstream.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use tempfile::TempDir;
use wharf_config::{CacheRegistry, Config, Registry};
use wharf_server::AppState;
use wharf_test_support::cargo::{CargoProject, Outcome};

/// A wharf server running inside the test process.
pub struct Wharf {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Where it keeps what it serves.
    pub storage: wharf_config::Storage,
    /// Its state (tests set the statistics' clock through it).
    pub state: Arc<AppState>,
    _data: Option<TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Where a test's wharf keeps its bytes: every storage test runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Files under the data directory.
    Fs,
    /// A fresh bucket of the run's SeaweedFS server.
    S3,
}

impl Backend {
    /// The `[storage]` of this backend (for S3, a bucket of its own).
    pub fn storage(self) -> wharf_config::Storage {
        match self {
            Self::Fs => wharf_config::Storage::default(),
            Self::S3 => {
                let s3 = wharf_test_support::s3::TestS3::shared();
                let (bucket, prefix) = s3.place();
                wharf_config::Storage {
                    kind: wharf_config::StorageKind::S3,
                    bucket: Some(bucket),
                    prefix: Some(prefix),
                    endpoint: Some(s3.endpoint.clone()),
                    region: Some("us-east-1".to_owned()),
                    allow_http: true,
                    anonymous: true,
                    ..wharf_config::Storage::default()
                }
            }
        }
    }

    /// The same as lines of a config file (empty for the disk).
    pub fn toml(self) -> String {
        let storage = self.storage();
        match storage.kind {
            wharf_config::StorageKind::Fs => String::new(),
            wharf_config::StorageKind::S3 => format!(
                "[storage]\nkind = \"s3\"\nbucket = \"{}\"\nprefix = \"{}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\nanonymous = true\n\n",
                storage.bucket.unwrap_or_default(),
                storage.prefix.unwrap_or_default(),
                storage.endpoint.unwrap_or_default()
            ),
        }
    }
}

/// Every key `storage` holds (the files under `data_dir`, or the objects of
/// the bucket), sorted.
pub async fn stored_keys(storage: &wharf_config::Storage, data_dir: &Path) -> Vec<String> {
    Stored::new(storage, data_dir).keys().await
}

/// A registry's storage read (and damaged) behind wharf's back: the files
/// under the data directory, or the objects under the test's prefix of the
/// bucket, by the keys wharf uses (`m/index/3/a/abc`).
#[derive(Debug, Clone)]
pub struct Stored {
    storage: wharf_config::Storage,
    data_dir: PathBuf,
}

impl Stored {
    /// The storage of a config with `storage` and `data_dir`.
    pub fn new(storage: &wharf_config::Storage, data_dir: &Path) -> Self {
        Self {
            storage: storage.clone(),
            data_dir: data_dir.to_owned(),
        }
    }

    /// The storage a config file names.
    pub fn of_config(config: &Path) -> Self {
        let config = Config::load(Some(config)).expect("the test's config loads");
        Self::new(&config.storage, &config.data_dir)
    }

    fn is_s3(&self) -> bool {
        self.storage.kind == wharf_config::StorageKind::S3
    }

    /// The URL of `key` in the bucket.
    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/{}/{}/{key}",
            self.storage.endpoint.as_deref().unwrap_or_default(),
            self.storage.bucket.as_deref().unwrap_or_default(),
            self.storage.prefix.as_deref().unwrap_or_default()
        )
    }

    /// Every key, sorted.
    pub async fn keys(&self) -> Vec<String> {
        self.keys_under("").await
    }

    /// The keys below `dir` (`m/crates`), relative to it, sorted; none when
    /// nothing is there.
    pub async fn keys_under(&self, dir: &str) -> Vec<String> {
        self.listing(dir).await.into_keys().collect()
    }

    /// When each key was last written (a file's mtime, an object's
    /// `LastModified`, which counts whole seconds), by key.
    pub async fn modified(&self) -> std::collections::BTreeMap<String, String> {
        self.listing("").await
    }

    /// The keys below `dir`, relative to it, each with when it was written.
    async fn listing(&self, dir: &str) -> std::collections::BTreeMap<String, String> {
        if !self.is_s3() {
            let root = self.data_dir.join(dir);
            return files_under(&root)
                .into_iter()
                .map(|key| {
                    let when = std::fs::metadata(root.join(&key))
                        .and_then(|m| m.modified())
                        .map(|t| format!("{t:?}"))
                        .unwrap_or_default();
                    (key, when)
                })
                .collect();
        }
        let dir = if dir.is_empty() {
            String::new()
        } else {
            format!("{}/", dir.trim_end_matches('/'))
        };
        let prefix = format!(
            "{}/{dir}",
            self.storage.prefix.as_deref().unwrap_or_default()
        );
        let mut keys = std::collections::BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/{}?list-type=2&max-keys=1000&prefix={prefix}",
                self.storage.endpoint.as_deref().unwrap_or_default(),
                self.storage.bucket.as_deref().unwrap_or_default()
            );
            if let Some(token) = &token {
                url.push_str("&continuation-token=");
                url.push_str(&url_encode(token));
            }
            let listing = reqwest::get(url)
                .await
                .expect("list the bucket")
                .text()
                .await
                .expect("a listing");
            for object in listing.split("<Contents>").skip(1) {
                let key = element(object, "Key").unwrap_or_default();
                if let Some(key) = key.strip_prefix(&prefix) {
                    let when = element(object, "LastModified").unwrap_or_default();
                    keys.insert(key.to_owned(), when.to_owned());
                }
            }
            token = element(&listing, "NextContinuationToken").map(str::to_owned);
            if token.is_none() || !listing.contains("<IsTruncated>true") {
                break;
            }
        }
        keys
    }

    /// The bytes under `key`, if there are any.
    pub async fn read(&self, key: &str) -> Option<Vec<u8>> {
        if !self.is_s3() {
            return std::fs::read(self.data_dir.join(key)).ok();
        }
        let response = reqwest::get(self.object_url(key)).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.bytes().await.ok().map(|b| b.to_vec())
    }

    /// The text under `key`; panics when it is missing.
    pub async fn read_text(&self, key: &str) -> String {
        let bytes = self
            .read(key)
            .await
            .unwrap_or_else(|| panic!("{key} is not stored"));
        String::from_utf8(bytes).expect("UTF-8")
    }

    /// Whether anything is stored under `key`.
    pub async fn exists(&self, key: &str) -> bool {
        self.read(key).await.is_some()
    }

    /// Replaces the bytes under `key` (to plant damage).
    pub async fn write(&self, key: &str, bytes: &[u8]) {
        if !self.is_s3() {
            std::fs::write(self.data_dir.join(key), bytes).expect("write the stored file");
            return;
        }
        let status = reqwest::Client::new()
            .put(self.object_url(key))
            .body(bytes.to_vec())
            .send()
            .await
            .expect("put the object")
            .status();
        assert!(status.is_success(), "put {key}: {status}");
    }
}

/// The text of the first `<name>` element of `xml`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    xml.split(&format!("<{name}>"))
        .nth(1)?
        .split(&format!("</{name}>"))
        .next()
}

/// Percent-encodes a query value.
fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `$body(backend)` as two tests, `$name::on_fs` and `$name::on_s3`.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_fs() {
                $body($crate::common::Backend::Fs).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_s3() {
                $body($crate::common::Backend::S3).await;
            }
        }
    };
}

/// Runs `$body(database_url)` as two tests, `$name::on_sqlite` (the
/// embedded default, `None`) and `$name::on_postgres` (a database of its own
/// on the run's PostgreSQL).
#[macro_export]
macro_rules! on_both_databases {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                $body(None).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let url = wharf_test_support::postgres::TempPostgres::shared().create_database();
                $body(Some(&url)).await;
            }
        }
    };
}

/// Settings of the `crates-io` cache registry for a test.
pub fn cache(upstreams: &[String]) -> CacheRegistry {
    CacheRegistry {
        upstreams: upstreams.to_vec(),
        upstream_timeout: Duration::from_secs(2),
        ..CacheRegistry::default()
    }
}

impl Wharf {
    /// Starts a `crates-io` cache registry with data in a new temporary directory.
    pub async fn start(registry: CacheRegistry) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = data.path().join("data");
        let mut wharf = Self::start_in(&dir, registry).await;
        wharf._data = Some(data);
        wharf
    }

    /// Starts a `crates-io` cache registry storing on `backend`.
    pub async fn start_on(backend: Backend, registry: CacheRegistry) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let mut wharf = Self::start_with(Config {
            data_dir: data.path().join("data"),
            storage: backend.storage(),
            registries: [("crates-io".to_owned(), Registry::Cache(registry))].into(),
            ..Config::default()
        })
        .await;
        wharf._data = Some(data);
        wharf
    }

    /// Starts a `crates-io` cache registry with data in `data_dir`.
    pub async fn start_in(data_dir: &Path, registry: CacheRegistry) -> Self {
        Self::start_with(Config {
            data_dir: data_dir.to_owned(),
            registries: [("crates-io".to_owned(), Registry::Cache(registry))].into(),
            ..Config::default()
        })
        .await
    }

    /// Starts the registries of `config` on a free loopback port.
    pub async fn start_with(mut config: Config) -> Self {
        config.listen = "127.0.0.1:0".parse().unwrap();
        let data_dir = config.data_dir.clone();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let public_url = wharf_server::public_url(&config, addr);
        let state = Arc::new(
            AppState::build(&config, &public_url)
                .await
                .unwrap_or_else(|e| panic!("build wharf: {e:#}")),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(wharf_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            data_dir,
            storage: config.storage.clone(),
            state,
            _data: None,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Its storage (disk or bucket), read behind its back.
    pub fn stored(&self) -> Stored {
        Stored::new(&self.storage, &self.data_dir)
    }

    /// Every key its storage holds (disk or bucket), sorted.
    pub async fn keys(&self) -> Vec<String> {
        self.stored().keys().await
    }

    /// The bytes stored under `key`, read behind wharf's back.
    pub async fn read_stored(&self, key: &str) -> Option<Vec<u8>> {
        self.stored().read(key).await
    }

    /// The sparse index URL cargo is pointed at.
    pub fn index_url(&self) -> String {
        format!("sparse+http://{}/crates-io/index/", self.addr)
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GETs `path` and returns the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        reqwest::get(self.url(path))
            .await
            .expect("request to wharf")
            .text()
            .await
            .expect("a text body")
    }

    /// GETs `path` and parses the body as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(self.url(path))
            .await
            .expect("request to wharf")
            .json()
            .await
            .expect("a JSON body")
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Every file under the data directory, relative, except in `.tmp`.
    pub fn stored_files(&self) -> Vec<String> {
        files_under(&self.data_dir)
    }
}

/// Writes a config file for `wharf serve` on a free loopback port with data
/// under `dir/d`, and returns its path.
pub fn minimal_config(dir: &Path) -> PathBuf {
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.join("d").display()
        ),
    )
    .expect("write config");
    config
}

/// Every file below `dir`, as relative paths, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// Runs `wharf ARGS` to completion without blocking the runtime's threads.
pub fn wharf_cli(args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(args)
            .env("WHARF_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run wharf")
    })
}

/// Runs cargo without blocking the server's runtime threads.
pub fn cargo_ok(project: &CargoProject, args: &[&str]) -> Outcome {
    tokio::task::block_in_place(|| project.run_ok(args))
}

/// Runs cargo expecting it to fail.
pub fn cargo_err(project: &CargoProject, args: &[&str]) -> Outcome {
    tokio::task::block_in_place(|| project.run_err(args))
}

/// The real `wharf` binary, started as a child process.
pub struct WharfProcess {
    pub child: Child,
    pub base_url: String,
}

impl WharfProcess {
    /// Starts `wharf serve --config CONFIG` and waits until it prints the
    /// registry URL it serves.
    pub fn spawn(config: &Path) -> Self {
        Self::spawn_with_stderr(config, Stdio::inherit(), &[])
    }

    /// Starts it like [`WharfProcess::spawn`], with `env` set.
    pub fn spawn_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn_with_stderr(config, Stdio::inherit(), env)
    }

    /// Starts it like [`WharfProcess::spawn`], with its log written to `log`.
    pub fn spawn_logging_to(config: &Path, log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("create the log file");
        Self::spawn_with_stderr(config, Stdio::from(file), &[])
    }

    fn spawn_with_stderr(config: &Path, stderr: Stdio, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["serve", "--config"])
            .arg(config)
            .env("WHARF_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start wharf");
        let stdout = child.stdout.take().expect("piped stdout");
        // Drain stdout on a thread for the life of the child, so wharf never
        // writes into a closed pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut base_url = None;
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
            if let Some(rest) = line.strip_prefix("wharf ")
                && let Some(url) = rest.split_whitespace().nth(2)
            {
                base_url = Some(url.to_owned());
            }
            // The last line of the printed cargo config: a source, or (for a
            // registry that needs credentials) a named registry.
            if line.starts_with("registry = ") || line.starts_with("index = ") {
                break;
            }
        }
        let base_url = base_url.expect("wharf printed the URL it serves");
        Self { child, base_url }
    }

    /// kill -9.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WharfProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lowercase hex sha256 of `bytes`.
/// The value of `series` (a metric's name and labels, as `/metrics`
/// writes them) in the text page `metrics`.
pub fn sample<'a>(metrics: &'a str, series: &str) -> Option<&'a str> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::trim)
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// How long after now a request to `url` with `authorization` stops being
/// answered 200: polls every 5 ms, for 5 s at most. The README promises a
/// revoke or rotate is noticed "within a tenth of a second"; callers allow
/// [`NOTICED_WITHIN`].
pub async fn refused_after(url: &str, authorization: &str) -> Duration {
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    loop {
        let response = http
            .get(url)
            .header("Authorization", authorization)
            .send()
            .await
            .unwrap();
        if response.status() != 200 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{url} is still answered 200 five seconds later"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The README's "within a tenth of a second" for a revoke or rotate, plus
/// 150 ms for a busy machine (the whole suite runs two tests at a time on
/// two cores).
pub const NOTICED_WITHIN: Duration = Duration::from_millis(250);
