//! Mirrors: `wharf sync` of a selection, consistent trees, politeness, and a
//! tree that works from nginx alone.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use wharf_config::Config;
use wharf_test_support::{
    cargo::CargoProject,
    fixture::{CrateBuilder, FixtureCrate, graph, sparse_path},
    nginx::{Nginx, which},
    upstream::{FakeUpstream, Fault, RequestKind, Target},
};

use crate::common::{Backend, Stored, Wharf, cargo_ok, sha256, wharf_cli};

/// Writes a config with one mirror registry `m` of `upstream` and returns its path.
pub(crate) fn mirror_config(dir: &Path, upstream: &FakeUpstream, extra: &str) -> PathBuf {
    mirror_config_on(Backend::Fs, dir, upstream, extra)
}

/// Writes a config with one mirror registry `m` of `upstream` whose tree is
/// kept on `backend`, and returns its path.
pub(crate) fn mirror_config_on(
    backend: Backend,
    dir: &Path,
    upstream: &FakeUpstream,
    extra: &str,
) -> PathBuf {
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n{}[registries.m]\nkind = \"mirror\"\nupstreams = [\"{}\"]\nupstream_timeout = \"2s\"\n{extra}\n",
            dir.join("data").display(),
            backend.toml(),
            upstream.index_url()
        ),
    )
    .unwrap();
    config
}

pub(crate) fn sync(config: &Path) -> std::process::Output {
    wharf_cli(&["sync", "--config", config.to_str().unwrap()])
}

/// Runs `wharf sync`, asserts it succeeded, and returns what it printed.
pub(crate) fn sync_ok(config: &Path) -> String {
    let out = sync(config);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every index line of mirror `m` names a crate file that is stored with
/// the right sha256: the invariant a mirror keeps whatever happens.
pub(crate) async fn assert_consistent(stored: &Stored) {
    for file in stored.keys_under("m/index").await {
        if file == "config.json" {
            continue;
        }
        let body = stored.read_text(&format!("m/index/{file}")).await;
        for line in body.lines() {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let (name, vers) = (
                line["name"].as_str().unwrap(),
                line["vers"].as_str().unwrap(),
            );
            let bytes = stored
                .read(&format!("m/crates/{name}/{name}-{vers}.crate"))
                .await
                .unwrap_or_else(|| {
                    panic!("{file} names {name} {vers}, whose crate file is missing")
                });
            assert_eq!(
                sha256(&bytes),
                line["cksum"].as_str().unwrap(),
                "{name} {vers}"
            );
        }
    }
}

/// What a sync pass had done when it was killed, seen from outside: the
/// upstream's request log and the files of the tree.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Seen {
    /// Requests for `.crate` files the upstream has seen since the round began.
    pub crate_requests: usize,
    /// Requests for the git index's pack (`git-upload-pack`) since the round began.
    pub pack_requests: usize,
    /// Crate files in the tree.
    pub crate_files: usize,
    /// Index files in the tree (without `config.json`).
    pub index_files: usize,
}

impl Seen {
    /// What the upstream's log and mirror `m`'s stored tree show now.
    ///
    /// The tree is listed first and the log read last, so that every file
    /// counted had its request counted too: a listing of a bucket on a busy
    /// machine can take longer than a whole pass, and a log read before it
    /// would count fewer requests than the files stored since.
    pub(crate) async fn now(upstream: &FakeUpstream, stored: &Stored) -> Seen {
        let crate_files = stored.keys_under("m/crates").await.len();
        let index_files = stored
            .keys_under("m/index")
            .await
            .iter()
            .filter(|f| *f != "config.json")
            .count();
        let requests = upstream.requests();
        Seen {
            crate_requests: requests
                .iter()
                .filter(|r| r.kind == RequestKind::Crate)
                .count(),
            pack_requests: requests
                .iter()
                .filter(|r| r.path.ends_with("/git-upload-pack"))
                .count(),
            crate_files,
            index_files,
        }
    }
}

/// Starts `wharf sync` as its own process, waits until `kill_when` sees the
/// point to kill it at (given what the round started from and what is seen
/// now), asserts that the pass is still running, and kills it with SIGKILL.
/// Returns what was seen at the start, just before the kill and just after it.
/// The upstream's log is cleared first, so request counts are this round's.
///
/// Panics when the pass ends, or takes 60 s, before `kill_when` says yes: a
/// kill that hits nothing proves nothing.
pub(crate) async fn kill_sync_when(
    config: &Path,
    upstream: &FakeUpstream,
    stored: &Stored,
    what: &str,
    kill_when: impl Fn(&Seen, &Seen) -> bool,
) -> (Seen, Seen, Seen) {
    upstream.clear_log();
    let start = Seen::now(upstream, stored).await;
    let stderr_path = config.with_file_name("killed-sync.stderr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["sync", "--config", config.to_str().unwrap()])
        .env("WHARF_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let before = loop {
        let seen = Seen::now(upstream, stored).await;
        if kill_when(&start, &seen) {
            break seen;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "wharf sync ended ({status}) before {what}; started from {start:?}, saw {seen:?}\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wharf sync did not reach {what} within 60 s; saw {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(
        child.try_wait().unwrap().is_none(),
        "wharf sync ended before the kill {what}: the kill would hit nothing"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
        "the pass was killed {what}, yet it ended with {status}"
    );
    (start, before, Seen::now(upstream, stored).await)
}

crate::on_both_backends!(
    selective_mirror_from_a_lockfile,
    super::selective_mirror_from_a_lockfile
);

/// Acceptance 6: a selective mirror from a `Cargo.lock` downloads exactly the
/// locked crates, cargo builds the project from it with upstream gone, and
/// a re-sync downloads nothing and asks only conditional questions.
async fn selective_mirror_from_a_lockfile(backend: Backend) {
    let mut crates = graph("lk", 8);
    crates.push(CrateBuilder::new("lk-0", "2.0.0").build());
    crates.push(CrateBuilder::new("unrelated", "1.0.0").build());
    let upstream = FakeUpstream::start(crates).await;
    let locked = CargoProject::new(&upstream.index_url(), &[("lk-0", "1")]);
    tokio::task::block_in_place(|| locked.run_ok(&["generate-lockfile"]));
    let lockfile = locked.project_dir().join("Cargo.lock");
    upstream.clear_log();

    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config_on(
        backend,
        dir.path(),
        &upstream,
        &format!("lockfiles = [\"{}\"]", lockfile.display()),
    );
    let stored = Stored::of_config(&config);
    let stdout = sync_ok(&config);
    assert!(
        stdout.contains("serves 8 crates, 8 versions; this pass looked at 8 index files, changed 8, downloaded 8 crate files"),
        "{stdout}"
    );
    let downloads: Vec<String> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Crate)
        .map(|r| r.path)
        .collect();
    assert_eq!(downloads.len(), 8, "{downloads:?}");
    assert!(
        downloads
            .iter()
            .all(|p| p.ends_with("-1.0.0.crate") && p.contains("/lk-")),
        "{downloads:?}"
    );
    assert_consistent(&stored).await;
    let lk0 = stored
        .read_text(&format!("m/index/{}", sparse_path("lk-0")))
        .await;
    assert_eq!(lk0.lines().count(), 1, "only the locked version: {lk0}");
    assert!(stored.exists("m/status.json").await);

    // A re-sync: nothing downloaded, one conditional request per index file,
    // and nothing rewritten (not even the cursor files).
    let before = stored.modified().await;
    // An object's time counts whole seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    upstream.clear_log();
    sync_ok(&config);
    assert_eq!(upstream.count(RequestKind::Crate), 0);
    let asked = upstream.requests();
    assert_eq!(asked.len(), 8, "{asked:?}");
    assert!(
        asked
            .iter()
            .all(|r| r.if_none_match.is_some() && r.status == 304),
        "{asked:?}"
    );
    let after = stored.modified().await;
    let rewritten: Vec<&String> = after
        .iter()
        .filter(|(key, when)| {
            // What says when the pass ran, and the local lock it took.
            let pass_record = ["m/status.json", "m/.sync/state.json", "m/.sync/lock"];
            !pass_record.contains(&key.as_str()) && before.get(*key) != Some(when)
        })
        .map(|(key, _)| key)
        .collect();
    assert!(
        rewritten.is_empty() && after.len() == before.len(),
        "a pass with nothing new rewrote {rewritten:?}"
    );

    // Served by wharf with the upstream gone, cargo builds the locked project.
    upstream.stop().await;
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let consumer = CargoProject::new(
        &format!("sparse+http://{}/m/index/", wharf.addr),
        &[("lk-0", "1")],
    );
    std::fs::copy(&lockfile, consumer.project_dir().join("Cargo.lock")).unwrap();
    cargo_ok(&consumer, &["build", "--locked"]);
    let status = wharf.get_json("/m/status.json").await;
    assert_eq!(status["crates"], 8, "{status}");
    wharf.stop().await;
}

crate::on_both_backends!(
    a_corrupt_upstream_crate_is_never_written_and_the_rest_is_published,
    super::a_corrupt_upstream_crate_is_never_written_and_the_rest_is_published
);

/// Acceptance 5: a corrupt crate upstream is never written; the sync says so
/// and exits non-zero, and everything else is published. The next pass,
/// with the upstream fixed, completes.
async fn a_corrupt_upstream_crate_is_never_written_and_the_rest_is_published(backend: Backend) {
    let crates = graph("cx", 4);
    let bad: &FixtureCrate = &crates[3];
    let bad_path = bad.dl_path().split('?').next().unwrap().to_owned();
    let upstream = FakeUpstream::start(crates.clone()).await;
    upstream.set_fault(Target::Path(bad_path), Fault::WrongBytes);
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config_on(backend, dir.path(), &upstream, "include = [\"cx-0\"]");
    let stored = Stored::of_config(&config);

    let out = sync(&config);
    assert!(
        !out.status.success(),
        "a failure makes the exit status non-zero"
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("cx-3 1.0.0") && stdout.contains("checksum mismatch"),
        "{stdout}"
    );
    assert!(
        stored.keys_under("m/crates/cx-3").await.is_empty(),
        "nothing of the corrupt crate is written"
    );
    assert!(
        !stored
            .exists(&format!("m/index/{}", sparse_path("cx-3")))
            .await,
        "no line names it"
    );
    for good in ["cx-0", "cx-1", "cx-2"] {
        assert!(
            stored
                .exists(&format!("m/crates/{good}/{good}-1.0.0.crate"))
                .await,
            "{good}"
        );
    }
    assert_consistent(&stored).await;

    upstream.clear_faults();
    sync_ok(&config);
    assert!(stored.exists("m/crates/cx-3/cx-3-1.0.0.crate").await);
    assert_consistent(&stored).await;
}

/// Acceptance 7: the synced tree works from nginx alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_alone_serves_the_synced_tree_to_cargo() {
    assert!(
        which("nginx").is_some(),
        "this test needs nginx (apt-get install nginx-light); .ci/run installs it"
    );
    let upstream = FakeUpstream::start(graph("ng", 6)).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let nginx = Nginx::start(dir.path(), &data).expect("start nginx");
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "include = [\"ng-0\"]\nstatic_url = \"http://{}/m\"",
            nginx.addr
        ),
    );
    sync_ok(&config);
    upstream.stop().await;
    let project = CargoProject::new(
        &format!("sparse+http://{}/m/index/", nginx.addr),
        &[("ng-0", "1")],
    );
    cargo_ok(&project, &["build"]);
    drop(nginx);
}

/// Acceptance 8: with a cap of R requests per second, the upstream never
/// sees more than R in any one second, give or take two (the request in
/// flight, and one held up on its way by a loaded machine, which makes the
/// next two arrive together), and the pass as a whole keeps to R a second.
/// Without the cap, 33 requests at a concurrency of 8 arrive within a
/// fraction of a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_rate_cap_holds() {
    const RATE: usize = 8;
    let upstream = FakeUpstream::start(graph("rt", 16)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!("include = [\"rt-0\"]\nmax_requests_per_sec = {RATE}\nmax_concurrency = 8"),
    );
    sync_ok(&config);
    let times: Vec<_> = upstream.requests().into_iter().map(|r| r.at).collect();
    assert!(times.len() >= 33, "{} requests", times.len());
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= RATE + 2,
            "{in_window} requests within one second"
        );
    }
    let span = times[times.len() - 1].duration_since(times[0]);
    let least = Duration::from_secs_f64((times.len() - 1) as f64 / RATE as f64 - 0.25);
    assert!(
        span >= least,
        "{} requests in {span:?}: faster than {RATE} a second",
        times.len()
    );
}

crate::on_both_backends!(
    killed_at_ten_points_the_tree_stays_consistent_and_a_rerun_completes,
    super::killed_at_ten_points_the_tree_stays_consistent_and_a_rerun_completes
);

/// Acceptance 4: `wharf sync` killed at 10 points: after each, every index
/// line in the tree has its crate file with the right sha256, and a final
/// run completes. The kills follow the pass's progress: five with crate
/// downloads in flight, five with part of the index published; each kill
/// must hit a running pass, and the rounds together must have cut both.
async fn killed_at_ten_points_the_tree_stays_consistent_and_a_rerun_completes(backend: Backend) {
    // Room for both phases: kills under load may land late, and the first
    // five must leave index files for the last five to cut.
    const CRATES: usize = 80;
    let upstream = FakeUpstream::start(graph("kx", CRATES)).await;
    // Slow downloads spread the pass over a second or two.
    upstream.set_fault(
        Target::Crates,
        Fault::SlowDrip {
            chunk: 64,
            delay: Duration::from_millis(25),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config_on(
        backend,
        dir.path(),
        &upstream,
        "include = [\"kx-0\"]\nmax_concurrency = 4\nmax_requests_per_sec = 1000",
    );
    let stored = Stored::of_config(&config);
    let (mut downloads_cut, mut publishing_cut) = (0, 0);
    for files in [1, 1, 2, 2, 3] {
        let (start, _, after) = kill_sync_when(
            &config,
            &upstream,
            &stored,
            "with crate downloads in flight",
            |start, now| {
                now.crate_files >= start.crate_files + files
                    && now.crate_requests > now.crate_files - start.crate_files
            },
        )
        .await;
        if after.crate_requests > after.crate_files - start.crate_files {
            downloads_cut += 1;
        }
        assert_consistent(&stored).await;
    }
    for more in [1, 2, 2, 3, 3] {
        let (start, _, after) = kill_sync_when(
            &config,
            &upstream,
            &stored,
            "with part of the index published",
            |start, now| now.index_files >= start.index_files + more && now.index_files < CRATES,
        )
        .await;
        if after.index_files > start.index_files && after.index_files < CRATES {
            publishing_cut += 1;
        }
        assert_consistent(&stored).await;
    }
    assert!(
        downloads_cut >= 1 && publishing_cut >= 1,
        "the kills cut {downloads_cut} passes downloading and {publishing_cut} passes \
         publishing the index: each phase must be cut at least once"
    );
    upstream.clear_faults();
    let stdout = sync_ok(&config);
    assert!(
        stdout.contains(&format!("serves {CRATES} crates, {CRATES} versions")),
        "{stdout}"
    );
    assert_consistent(&stored).await;
    assert_eq!(stored.keys_under("m/crates").await.len(), CRATES);
}

crate::on_both_backends!(
    a_second_sync_process_refuses_while_a_pass_of_the_mirror_runs,
    super::a_second_sync_process_refuses_while_a_pass_of_the_mirror_runs
);

/// Two `wharf sync` passes of one mirror never overlap, across processes: a
/// second process started while a pass downloads refuses at once, saying
/// which lock is held, and downloads nothing; the first pass completes with
/// each crate file asked for once; then a new pass runs again.
async fn a_second_sync_process_refuses_while_a_pass_of_the_mirror_runs(backend: Backend) {
    const CRATES: usize = 20;
    let upstream = FakeUpstream::start(graph("ov", CRATES)).await;
    upstream.set_fault(
        Target::Crates,
        Fault::SlowDrip {
            chunk: 64,
            delay: Duration::from_millis(25),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config_on(
        backend,
        dir.path(),
        &upstream,
        "include = [\"ov-0\"]\nmax_concurrency = 2\nmax_requests_per_sec = 1000",
    );
    let stored = Stored::of_config(&config);
    let out_path = dir.path().join("first.stdout");
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["sync", "--config", config.to_str().unwrap()])
        .env("WHARF_LOG", "warn")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Seen::now(&upstream, &stored).await.crate_requests == 0 {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first pass ended before downloading"
        );
        assert!(std::time::Instant::now() < deadline, "no download began");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let second = sync(&config);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first pass ended before the second was refused: they did not meet"
    );
    let stderr = text(&second.stderr);
    assert!(!second.status.success(), "{}", text(&second.stdout));
    assert!(
        stderr.contains("another sync pass of mirror `m` is running")
            && stderr.contains(".sync/lock"),
        "{stderr}"
    );

    let status = first.wait().unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains("serves 20 crates, 20 versions"), "{stdout}");
    assert_eq!(
        upstream.count(RequestKind::Crate),
        CRATES,
        "each crate file is downloaded by one pass, once"
    );
    assert_consistent(&stored).await;
    upstream.clear_faults();
    sync_ok(&config);
}

crate::on_both_backends!(
    yanks_are_followed_and_crate_files_kept,
    super::yanks_are_followed_and_crate_files_kept
);

/// A yank upstream reaches the mirror's index line; the crate file stays.
async fn yanks_are_followed_and_crate_files_kept(backend: Backend) {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("yk", "1.0.0").build(),
        CrateBuilder::new("yk", "1.1.0").build(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config_on(backend, dir.path(), &upstream, "include = [\"yk\"]");
    sync_ok(&config);
    upstream.yank("yk", "1.1.0", true);
    sync_ok(&config);
    let stored = Stored::of_config(&config);
    let index = stored
        .read_text(&format!("m/index/{}", sparse_path("yk")))
        .await;
    assert_eq!(
        index,
        upstream.index_file("yk").unwrap(),
        "relayed byte for byte, yank included"
    );
    assert!(index.lines().nth(1).unwrap().contains("\"yanked\":true"));
    assert!(stored.exists("m/crates/yk/yk-1.1.0.crate").await);
}

crate::on_both_backends!(
    serve_syncs_on_its_schedule,
    super::serve_syncs_on_its_schedule
);

/// `wharf serve` runs passes every `sync_interval` and serves the result.
async fn serve_syncs_on_its_schedule(backend: Backend) {
    let upstream = FakeUpstream::start(graph("sc", 3)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config_on(
        backend,
        dir.path(),
        &upstream,
        "include = [\"sc-0\"]\nsync_interval = \"1h\"",
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let mut synced = false;
    for _ in 0..100 {
        if reqwest::get(wharf.url("/m/status.json"))
            .await
            .unwrap()
            .status()
            == 200
        {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(synced, "the first pass runs at start");
    let project = CargoProject::new(
        &format!("sparse+http://{}/m/index/", wharf.addr),
        &[("sc-0", "1")],
    );
    cargo_ok(&project, &["build"]);
    wharf.stop().await;
}
