//! Issue 11: storage that fails. A full or read-only data directory is the
//! server's problem: 503 with a message, `/readyz` says why, no upstream is
//! blamed, and service resumes by itself when storage is back.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use wharf_test_support::{
    fixture::{CrateBuilder, FixtureCrate},
    upstream::FakeUpstream,
};

use crate::common::{Wharf, cache};

/// A small tmpfs mounted for a test (root only: the tests make a disk that
/// is really full or really read-only), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ],
            dir,
        );
        Self(dir.to_owned())
    }

    /// `mount -o remount,OPTIONS`.
    fn remount(&self, options: &str) {
        mount(&["-o", &format!("remount,{options}")], &self.0);
    }
}

fn mount(args: &[&str], dir: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {args:?} failed (these tests need root to make a full or read-only disk): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A crate file of about `kib` KiB that gzip cannot shrink.
pub(crate) fn big_crate(name: &str, kib: usize) -> FixtureCrate {
    let mut noise = String::with_capacity(kib * 1024 * 2);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < kib * 1024 * 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push_str(&format!("{x:016x}"));
    }
    CrateBuilder::new(name, "1.0.0")
        .lib_body(&format!("// {noise}\npub fn value() -> u64 {{ 1 }}\n"))
        .build()
}

/// GETs `path`: the status and the body (as text, for messages).
async fn get(wharf: &Wharf, path: &str) -> (u16, String) {
    let (status, body) = get_bytes(wharf, path).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_bytes(wharf: &Wharf, path: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(wharf.url(path))
        .await
        .expect("request to wharf");
    let status = response.status().as_u16();
    (
        status,
        response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default(),
    )
}

async fn upstreams_up(wharf: &Wharf) -> bool {
    let status = wharf.get_json("/status.json").await;
    status["registries"]["crates-io"]["upstreams"]
        .as_array()
        .expect("upstreams in status.json")
        .iter()
        .all(|u| u["up"] == true)
}

/// Fills the filesystem of `dir` with a file, and returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    while file.write_all(&block).is_ok() {}
    let _ = file.flush();
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_disk_answers_503_and_blames_no_upstream() {
    let big = big_crate("big", 600);
    let upstream = FakeUpstream::start([
        CrateBuilder::new("small", "1.0.0").build(),
        CrateBuilder::new("other", "1.0.0").build(),
        big.clone(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = Tmpfs::mount(&data, "512k");
    // The database (traffic statistics) elsewhere: a file open for writing
    // would keep the disk from being remounted read-only.
    let wharf = Wharf::start_in(
        &data,
        wharf_config::CacheRegistry {
            database_url: Some(format!("sqlite://{}/wharf.db", dir.path().display())),
            ..cache(&[upstream.index_url()])
        },
    )
    .await;

    // The index file fits; the crate file does not.
    assert_eq!(get(&wharf, "/crates-io/index/3/b/big").await.0, 200);
    let (status, body) = get(&wharf, "/crates-io/crates/big/big-1.0.0.crate").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage is unavailable"), "{body}");
    assert!(body.contains("No space left on device"), "{body}");
    assert!(
        upstreams_up(&wharf).await,
        "a full disk marked the upstream down"
    );
    // What fits is still served, and nothing half written is left behind.
    assert_eq!(get(&wharf, "/crates-io/index/sm/al/small").await.0, 200);
    assert_eq!(
        get(&wharf, "/crates-io/crates/small/small-1.0.0.crate")
            .await
            .0,
        200
    );
    assert!(!data.join("crates-io/crates/big").exists());

    // /readyz says why while the disk is full, and recovers with it.
    assert_eq!(get(&wharf, "/readyz").await.0, 200);
    let filler = fill(&data);
    let (status, body) = get(&wharf, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("No space left on device"), "{body}");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(get(&wharf, "/readyz").await.0, 200);

    // More room: the same request now works, by itself.
    disk.remount("size=8m");
    let (status, body) = get_bytes(&wharf, "/crates-io/crates/big/big-1.0.0.crate").await;
    assert_eq!(status, 200);
    assert_eq!(body, big.bytes.to_vec());

    // A read-only data directory: the same story.
    disk.remount("ro");
    let (status, body) = get(&wharf, "/crates-io/crates/other/other-1.0.0.crate").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Read-only file system"), "{body}");
    let (status, body) = get(&wharf, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    // What is stored is still served.
    assert_eq!(
        get(&wharf, "/crates-io/crates/big/big-1.0.0.crate").await.0,
        200
    );
    assert!(
        upstreams_up(&wharf).await,
        "a read-only disk marked the upstream down"
    );
    disk.remount("rw");
    assert_eq!(
        get(&wharf, "/crates-io/crates/other/other-1.0.0.crate")
            .await
            .0,
        200
    );
    assert_eq!(get(&wharf, "/readyz").await.0, 200);
    wharf.stop().await;
}

/// Runs `wharf serve` on a config whose storage cannot be used; it must
/// stop by itself within 10 s (and a little), saying why. Returns stderr.
fn serve_fails_at_start(storage: &str) -> String {
    serve_fails_at_start_with(storage, &[])
}

/// [`serve_fails_at_start`] with `env` set for wharf.
fn serve_fails_at_start_with(storage: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n{storage}\n[registries.crates-io]\nkind = \"cache\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("WHARF_LOG", "warn")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run wharf");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "wharf served with broken storage: {stderr}"
    );
    assert!(
        took < std::time::Duration::from_secs(12),
        "took {took:?}: {stderr}"
    );
    stderr
}

/// A missing bucket and an endpoint nobody answers stop `wharf serve` at
/// start, within 10 s, with a message that names the bucket and the cause.
#[test]
fn unusable_storage_stops_the_start_naming_the_problem() {
    let s3 = wharf_test_support::s3::TestS3::shared();
    let missing = serve_fails_at_start(&format!(
        "[storage]\nkind = \"s3\"\nbucket = \"no-such-bucket-for-wharf\"\nendpoint = \"{}\"\nallow_http = true\nanonymous = true\n",
        s3.endpoint
    ));
    assert!(missing.contains("no-such-bucket-for-wharf"), "{missing}");
    assert!(missing.contains("cannot use bucket"), "{missing}");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = serve_fails_at_start(&format!(
        "[storage]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:{port}\"\nallow_http = true\nanonymous = true\ntimeout = \"2s\"\n"
    ));
    assert!(
        unreachable.contains(&format!("127.0.0.1:{port}")),
        "{unreachable}"
    );
    assert!(
        unreachable.to_lowercase().contains("connect"),
        "the cause is named: {unreachable}"
    );
    // And no secret of the environment is ever printed.
    assert!(
        !unreachable.contains("AWS_SECRET_ACCESS_KEY="),
        "{unreachable}"
    );
}

/// Wrong credentials stop `wharf serve` at start within 10 s, saying the
/// service refused them and never showing the secret; the right ones, from
/// the usual AWS environment variables, serve a crate through the bucket.
#[test]
fn wrong_credentials_stop_the_start_and_the_right_ones_serve() {
    use wharf_test_support::s3::{SIGNED_ACCESS_KEY, SIGNED_SECRET_KEY, TestS3};
    let s3 = TestS3::shared();
    let endpoint = s3.signed_endpoint();
    let (bucket, prefix) = s3.place();
    let storage = format!(
        "[storage]\nkind = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\nendpoint = \"{endpoint}\"\nallow_http = true\n"
    );
    let wrong_secret = "not-the-secret-0123456789";
    let refused = serve_fails_at_start_with(
        &storage,
        &[
            ("AWS_ACCESS_KEY_ID", SIGNED_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", wrong_secret),
        ],
    );
    assert!(
        refused.contains("the service refused wharf's credentials")
            && refused.contains(&format!("bucket `{bucket}`")),
        "{refused}"
    );
    assert!(!refused.contains(wrong_secret), "{refused}");
    let unknown = serve_fails_at_start_with(
        &storage,
        &[
            ("AWS_ACCESS_KEY_ID", "nobody-knows-this-key"),
            ("AWS_SECRET_ACCESS_KEY", SIGNED_SECRET_KEY),
        ],
    );
    assert!(
        unknown.contains("the service refused wharf's credentials"),
        "{unknown}"
    );

    // The right credentials: wharf starts and stores a crate file it fetched.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let upstream = FakeUpstream::start([CrateBuilder::new("signed", "1.0.0").build()]).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("wharf.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n{storage}\n[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\n",
                dir.path().join("data").display(),
                upstream.index_url()
            ),
        )
        .unwrap();
        let wharf = crate::common::WharfProcess::spawn_with_env(
            &config,
            &[
                ("AWS_ACCESS_KEY_ID", SIGNED_ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SIGNED_SECRET_KEY),
            ],
        );
        let url = format!("{}/crates-io/crates/signed/signed-1.0.0.crate", wharf.base_url);
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        // Stored in the bucket (read through the gateway that checks
        // nothing), where the credentials wrote it.
        let stored = crate::common::Stored::new(
            &wharf_config::Storage {
                kind: wharf_config::StorageKind::S3,
                bucket: Some(bucket.clone()),
                prefix: Some(prefix.clone()),
                endpoint: Some(s3.endpoint.clone()),
                ..wharf_config::Storage::default()
            },
            dir.path(),
        );
        assert!(
            stored
                .exists("crates-io/crates/signed/signed-1.0.0.crate")
                .await
        );
        wharf.kill();
    });
}

/// Acceptance 2 of issue 11: a mirror synced into a bucket. Its signed
/// manifest lists every index file of the bucket, `wharf verify --key`
/// accepts it, and cargo builds from it with the upstream stopped; nothing
/// of the served tree is on the local disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_synced_into_a_bucket_is_signed_verified_and_builds_alone() {
    use crate::common::{Backend, cargo_ok, wharf_cli};
    let crates = wharf_test_support::fixture::graph("sb", 8);
    let upstream = FakeUpstream::start(crates).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("mirror.key");
    let out = wharf_cli(&["keys", "generate", "--out", key_file.to_str().unwrap()]);
    let public = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("a public key")
        .to_owned();
    let config = crate::mirror::mirror_config_on(
        Backend::S3,
        dir.path(),
        &upstream,
        &format!(
            "include = [\"sb-0\"]\nsigning_key = \"{}\"",
            key_file.display()
        ),
    );
    // Local working state on a disk of its own.
    let work = dir.path().join("work");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "data_dir = ",
        &format!("work_dir = \"{}\"\ndata_dir = ", work.display()),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let summary = crate::mirror::sync_ok(&config);
    assert!(summary.contains("8 crates"), "{summary}");

    let wharf = Wharf::start_with(wharf_config::Config::load(Some(&config)).unwrap()).await;
    let manifest = wharf.get_json("/m/manifest.json").await;
    let files = manifest["files"].as_object().expect("a manifest of files");
    // Every crate's index file (and config.json) is vouched for.
    assert_eq!(files.len(), 9, "{manifest}");
    for i in 0..8 {
        let path = wharf_test_support::fixture::sparse_path(&format!("sb-{i}"));
        assert!(files.contains_key(&path), "{path} missing from {manifest}");
    }

    let mirror_url = format!("sparse+http://{}/m/index/", wharf.addr);
    let out = tokio::task::block_in_place(|| {
        wharf_cli(&[
            "verify",
            "--mirror",
            &mirror_url,
            "--against",
            &upstream.index_url(),
            "--crate",
            "sb-0",
            "--key",
            &public,
        ])
    });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.contains("signed manifest: valid; 9 index files"),
        "{said}"
    );

    upstream.stop().await;
    let project = wharf_test_support::cargo::CargoProject::new(&mirror_url, &[("sb-0", "1")]);
    cargo_ok(&project, &["generate-lockfile"]);
    cargo_ok(&project, &["build"]);
    // The served tree is in the bucket; the pass's lock is in work_dir, and
    // data_dir holds nothing but the database (traffic statistics).
    let local: Vec<_> = wharf
        .stored_files()
        .into_iter()
        .filter(|f| !f.starts_with("wharf.db"))
        .collect();
    assert!(local.is_empty(), "files in data_dir: {local:?}");
    assert!(work.join("m/.sync/lock").is_file());
    wharf.stop().await;
}

/// Acceptance 4 of issue 11: the S3 service goes away mid-run. Requests that
/// need it get 503 with a message within the storage timeout (never a hang,
/// never 502 "upstream"), `/readyz` says why, no upstream is marked down,
/// and service resumes by itself when the service is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_goes_away_is_503_and_service_resumes() {
    use std::time::{Duration, Instant};
    let upstream = FakeUpstream::start([
        CrateBuilder::new("before", "1.0.0").build(),
        CrateBuilder::new("during", "1.0.0").build(),
    ])
    .await;
    let s3 = wharf_test_support::s3::TestS3::shared();
    let target = s3.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = wharf_test_support::proxy::TcpProxy::start(target).await;
    let mut storage = crate::common::Backend::S3.storage();
    storage.endpoint = Some(format!("http://{}", proxy.addr()));
    storage.timeout = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let wharf = Wharf::start_with(wharf_config::Config {
        data_dir: dir.path().join("data"),
        storage,
        registries: [(
            "crates-io".to_owned(),
            wharf_config::Registry::Cache(cache(&[upstream.index_url()])),
        )]
        .into(),
        ..wharf_config::Config::default()
    })
    .await;
    assert_eq!(
        get(&wharf, "/crates-io/crates/before/before-1.0.0.crate")
            .await
            .0,
        200
    );

    proxy.cut();
    let started = Instant::now();
    let (status, body) = get(&wharf, "/crates-io/crates/during/during-1.0.0.crate").await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage is unavailable"), "{body}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let (status, body) = get(&wharf, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage is unavailable"), "{body}");
    assert!(
        upstreams_up(&wharf).await,
        "the bucket's outage marked the upstream down"
    );
    assert!(
        proxy.refused() > 0,
        "the bucket was asked while it was away"
    );

    proxy.restore();
    let (status, body) = get(&wharf, "/crates-io/crates/during/during-1.0.0.crate").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&wharf, "/readyz").await.0, 200);
    wharf.stop().await;
}

/// `bytes` with one byte flipped.
fn damaged(mut bytes: Vec<u8>) -> Vec<u8> {
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    bytes
}

/// Acceptance 5 of issue 11: a damaged crate file in a mirror's storage is
/// not served: it is reported, removed, and the next pass downloads it
/// again; in a hosted registry's it is not served and left for the operator.
async fn damaged_crate_files_are_never_served(backend: crate::common::Backend) {
    let crates = wharf_test_support::fixture::graph("dm", 3);
    let good = crates[2].bytes.to_vec();
    let upstream = FakeUpstream::start(crates).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::mirror::mirror_config_on(
        backend,
        dir.path(),
        &upstream,
        "include = [\"dm-0\"]\n\n[registries.private]\nkind = \"hosted\"",
    );
    crate::mirror::sync_ok(&config);
    let stored = crate::common::Stored::of_config(&config);
    let wharf = Wharf::start_with(wharf_config::Config::load(Some(&config)).unwrap()).await;

    // A mirror: reported and removed, then fetched again by the next pass.
    let key = "m/crates/dm-2/dm-2-1.0.0.crate";
    stored.write(key, &damaged(good.clone())).await;
    // `wharf verify --local` reads the same store, disk or bucket.
    let verified = tokio::task::block_in_place(|| {
        crate::common::wharf_cli(&["verify", "--local", "--config", config.to_str().unwrap()])
    });
    let said = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(!verified.status.success(), "{said}");
    assert!(
        said.contains(
            "m/crates/dm-2/dm-2-1.0.0.crate does not match the index cksum of dm-2 1.0.0"
        ),
        "{said}"
    );
    let (status, body) = get(&wharf, &format!("/{key}")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("damaged") && body.contains("next sync pass"),
        "{body}"
    );
    assert_eq!(get(&wharf, &format!("/{key}")).await.0, 404, "removed");
    crate::mirror::sync_ok(&config);
    let (status, bytes) = get_bytes(&wharf, &format!("/{key}")).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, good, "downloaded again, whole");

    // A hosted registry: not served, left in place for the operator.
    let token = crate::hosted::create_token(&config, "alice");
    let krate = CrateBuilder::new("hd", "1.0.0").build();
    let published = reqwest::Client::new()
        .put(wharf.url("/private/api/v1/crates/new"))
        .header("Authorization", &token)
        .body(crate::hosted::publish_body(
            &crate::hosted::metadata("hd", "1.0.0"),
            &krate.bytes,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        published.status(),
        200,
        "{}",
        published.text().await.unwrap_or_default()
    );
    let key = "private/crates/hd/hd-1.0.0.crate";
    stored.write(key, &damaged(krate.bytes.to_vec())).await;
    let (status, body) = get(&wharf, &format!("/{key}")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("damaged") && body.contains("backup"),
        "{body}"
    );
    wharf.stop().await;
}

crate::on_both_backends!(
    damaged_crate_files,
    super::damaged_crate_files_are_never_served
);
