//! Full mirrors that follow a git index: the first pass, incremental passes
//! whose cost follows the changes, and an upstream history squash.

use std::{path::Path, time::Duration};

use wharf_config::Config;
use wharf_test_support::{
    cargo::CargoProject,
    fixture::{CrateBuilder, FixtureCrate, sparse_path},
    upstream::{Blackhole, FakeUpstream, Fault, RequestKind, Target},
};

use crate::common::Stored;
use crate::common::{Wharf, cargo_ok, files_under};
use crate::mirror::{assert_consistent, kill_sync_when, mirror_config, sync, sync_ok, text};

/// `fm-0` … `fm-199`, five versions each. Within each run of 20 crates, a
/// crate depends on the next, so a project needing `fm-0` builds 20 crates.
fn full_upstream() -> Vec<FixtureCrate> {
    let mut crates = Vec::new();
    for i in 0..200 {
        for patch in 0..5 {
            let mut krate = CrateBuilder::new(&format!("fm-{i}"), &format!("1.0.{patch}"));
            if i % 20 != 19 {
                krate = krate.dep(&format!("fm-{}", i + 1), "1");
            }
            crates.push(krate.build());
        }
    }
    crates
}

/// The version of `name` a lockfile picked.
fn locked(lockfile: &str, name: &str) -> String {
    let lock: toml::Value = toml::from_str(lockfile).unwrap();
    lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{name} is not in the lockfile:\n{lockfile}"))["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn index_lines(tree: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(tree.join("index").join(sparse_path(name)))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Acceptance 1, 2 and 3: a full sync of 200 crates / 1,000 versions from a
/// git index; a new crate, a new version and a yank cost requests in
/// proportion to them; a squashed upstream history costs just its one change;
/// cargo builds from the mirror with the upstream stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mirror_follows_the_git_index() {
    let upstream = FakeUpstream::start(full_upstream()).await;
    upstream.git_commit("initial");
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "index_git = \"{}\"\nmax_concurrency = 8\nmax_requests_per_sec = 2000\ncontact = \"ops@mirror.example\"",
            upstream.git_url()
        ),
    );
    let tree = dir.path().join("data/m");
    let stored = Stored::of_config(&config);

    // The first pass: everything, from the git index (no sparse requests),
    // every request saying who asks and how to reach them.
    let stdout = sync_ok(&config);
    let asked = upstream.requests();
    assert!(
        asked.iter().all(|r| r
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("wharf/") && ua.contains("ops@mirror.example"))),
        "{:?}",
        asked
            .iter()
            .map(|r| r.user_agent.clone())
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        stdout.contains("serves 200 crates, 1000 versions"),
        "{stdout}"
    );
    assert_eq!(upstream.count(RequestKind::Crate), 1000);
    assert_eq!(upstream.count(RequestKind::Index), 0);
    assert_consistent(&stored).await;
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["versions"], 1000, "{status}");
    assert!(
        status["cursor"].as_str().is_some_and(|c| c.len() == 40),
        "{status}"
    );

    // Nothing changed: a fetch of the git index, nothing else.
    upstream.clear_log();
    let stdout = sync_ok(&config);
    assert!(stdout.contains("looked at 0 index files"), "{stdout}");
    let asked = upstream.requests();
    assert!(
        asked.iter().all(|r| r.kind == RequestKind::Git) && asked.len() <= 4,
        "{asked:?}"
    );

    // A new crate, a new version and a yank.
    upstream.publish(CrateBuilder::new("fm-new", "0.1.0").build());
    upstream.publish(CrateBuilder::new("fm-5", "1.0.5").dep("fm-6", "1").build());
    upstream.yank("fm-7", "1.0.4", true);
    upstream.git_commit("three changes");
    upstream.clear_log();
    let stdout = sync_ok(&config);
    assert!(
        stdout.contains("serves 201 crates, 1002 versions; this pass looked at 3 index files, changed 3, downloaded 2 crate files"),
        "{stdout}"
    );
    let asked = upstream.requests();
    let crates: Vec<&str> = asked
        .iter()
        .filter(|r| r.kind == RequestKind::Crate)
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(crates.len(), 2, "{crates:?}");
    assert_eq!(upstream.count(RequestKind::Index), 0, "{asked:?}");
    assert!(
        asked.len() <= 2 + 1 + 4,
        "two downloads, config.json and a git fetch: {asked:#?}"
    );
    assert!(index_lines(&tree, "fm-7")[4].contains("\"yanked\":true"));
    assert_consistent(&stored).await;

    // The upstream squashes its history into one new root commit holding the
    // same tree plus one change: the next pass picks up just that change.
    upstream.publish(CrateBuilder::new("fm-9", "1.0.5").dep("fm-10", "1").build());
    upstream.git_squash("squashed");
    upstream.clear_log();
    let stdout = sync_ok(&config);
    assert!(
        stdout.contains("serves 201 crates, 1003 versions; this pass looked at 1 index files, changed 1, downloaded 1 crate files"),
        "{stdout}"
    );
    assert_eq!(upstream.count(RequestKind::Crate), 1);
    assert_eq!(index_lines(&tree, "fm-9").len(), 6);
    assert_consistent(&stored).await;

    // With the upstream gone, cargo builds from the mirror and sees all
    // three changes: the new crate, the new version, and the yank.
    upstream.stop().await;
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let project = CargoProject::new(
        &format!("sparse+http://{}/m/index/", wharf.addr),
        &[("fm-0", "1"), ("fm-5", "1"), ("fm-new", "0.1")],
    );
    cargo_ok(&project, &["build"]);
    let lockfile = project.lockfile();
    assert_eq!(locked(&lockfile, "fm-5"), "1.0.5");
    assert_eq!(locked(&lockfile, "fm-7"), "1.0.3", "1.0.4 is yanked");
    assert_eq!(locked(&lockfile, "fm-9"), "1.0.5");
    assert_eq!(locked(&lockfile, "fm-new"), "0.1.0");
    wharf.stop().await;
}

/// A crate file upstream has lost (404) is asked for once per pass, never in
/// a loop; it is journaled for the next pass while the git cursor moves on,
/// so the other crates' later changes are not held back by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_crate_file_is_retried_once_per_pass_and_does_not_hold_the_cursor() {
    let crates: Vec<FixtureCrate> = (0..5)
        .map(|i| CrateBuilder::new(&format!("lost-{i}"), "1.0.0").build())
        .collect();
    let lost_path = crates[2].dl_path().split('?').next().unwrap().to_owned();
    let upstream = FakeUpstream::start(crates).await;
    upstream.set_fault(Target::Path(lost_path.clone()), Fault::Status(404));
    upstream.git_commit("initial");
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!("index_git = \"{}\"", upstream.git_url()),
    );
    let tree = dir.path().join("data/m");
    let stored = Stored::of_config(&config);
    let asked_for_lost = |upstream: &FakeUpstream| {
        upstream
            .requests()
            .iter()
            .filter(|r| r.path == lost_path)
            .count()
    };

    let out = sync(&config);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("serves 4 crates, 4 versions"), "{stdout}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.contains("failed:")).collect();
    assert!(
        failed.len() == 1 && failed[0].contains("lost-2 1.0.0") && failed[0].contains("404"),
        "{stdout}"
    );
    assert_eq!(asked_for_lost(&upstream), 1);
    assert!(!tree.join("crates/lost-2").exists());
    assert!(
        files_under(&dir.path().join("data/.tmp")).is_empty(),
        "no stray partial file"
    );
    assert_consistent(&stored).await;

    // Another crate changes: the next pass takes that change and retries
    // the lost file once.
    upstream.publish(CrateBuilder::new("lost-4", "1.1.0").build());
    upstream.git_commit("lost-4 1.1.0");
    upstream.clear_log();
    let out = sync(&config);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("serves 4 crates, 5 versions; this pass looked at 2 index files"),
        "{stdout}"
    );
    assert_eq!(asked_for_lost(&upstream), 1);
    assert_eq!(upstream.count(RequestKind::Crate), 2);

    // Upstream finds the file again: the next pass completes.
    upstream.clear_faults();
    let stdout = sync_ok(&config);
    assert!(stdout.contains("serves 5 crates, 6 versions"), "{stdout}");
    assert_consistent(&stored).await;
    let stdout = sync_ok(&config);
    assert!(stdout.contains("looked at 0 index files"), "{stdout}");
}

fn sync_with(config: &Path, flag: &str) -> String {
    let out = crate::common::wharf_cli(&["sync", "--config", config.to_str().unwrap(), flag]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Between git passes, a feed poll revalidates just the crates the feed
/// names since the last poll; a later git pass then finds them done. A
/// reconciliation revalidates every index file with conditional requests and
/// catches what neither saw (a yank, which no feed announces).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_polls_and_reconciliation_fill_the_gaps_between_git_passes() {
    let crates: Vec<FixtureCrate> = (0..30)
        .map(|i| CrateBuilder::new(&format!("fd-{i}"), "1.0.0").build())
        .collect();
    let upstream = FakeUpstream::start(crates).await;
    upstream.git_commit("initial");
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "index_git = \"{}\"\nfeed_url = \"{}\"\nmax_requests_per_sec = 1000",
            upstream.git_url(),
            upstream.feed_url()
        ),
    );
    let tree = dir.path().join("data/m");
    let stored = Stored::of_config(&config);
    sync_ok(&config);
    // The first poll takes in the feed as it is.
    sync_with(&config, "--feed");

    // Two new versions reach the sparse index and the feed, not yet git.
    upstream.publish(CrateBuilder::new("fd-3", "1.1.0").build());
    upstream.publish(CrateBuilder::new("fd-17", "1.1.0").build());
    upstream.clear_log();
    let stdout = sync_with(&config, "--feed");
    assert!(
        stdout.contains(
            "(feed poll): serves 30 crates, 32 versions; this pass looked at 2 index files"
        ),
        "{stdout}"
    );
    let asked = upstream.requests();
    assert_eq!(upstream.count(RequestKind::Feed), 1, "{asked:#?}");
    assert_eq!(upstream.count(RequestKind::Index), 2, "{asked:#?}");
    assert_eq!(upstream.count(RequestKind::Crate), 2, "{asked:#?}");
    assert_eq!(upstream.count(RequestKind::Git), 0, "{asked:#?}");
    assert_eq!(index_lines(&tree, "fd-3").len(), 2);
    assert_consistent(&stored).await;

    // Polling again: the feed answers 304, nothing else is asked.
    upstream.clear_log();
    let stdout = sync_with(&config, "--feed");
    assert!(stdout.contains("looked at 0 index files"), "{stdout}");
    let asked = upstream.requests();
    assert!(
        !asked.is_empty()
            && asked
                .iter()
                .all(|r| r.kind == RequestKind::Feed && r.status == 304),
        "{asked:#?}"
    );

    // Git catches up: its pass finds both files already synced.
    upstream.git_commit("two versions");
    upstream.clear_log();
    let stdout = sync_ok(&config);
    assert!(
        stdout.contains("looked at 2 index files, changed 0, downloaded 0"),
        "{stdout}"
    );
    assert_eq!(upstream.count(RequestKind::Crate), 0);

    // A yank that git has not caught up with: only a reconciliation sees it.
    upstream.yank("fd-20", "1.0.0", true);
    upstream.clear_log();
    let stdout = sync_with(&config, "--reconcile");
    assert!(
        stdout.contains("(reconciliation): serves 30 crates, 32 versions; this pass looked at 30 index files, changed 1"),
        "{stdout}"
    );
    assert_eq!(upstream.count(RequestKind::Index), 30);
    assert!(index_lines(&tree, "fd-20")[0].contains("\"yanked\":true"));
    // The next one is 30 conditional requests, all answered 304.
    upstream.clear_log();
    let stdout = sync_with(&config, "--reconcile");
    assert!(stdout.contains("changed 0"), "{stdout}");
    let index: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Index)
        .collect();
    assert!(
        index.len() == 30 && index.iter().all(|r| r.status == 304),
        "{index:#?}"
    );
    assert_consistent(&stored).await;
}

/// Acceptance 4, following a git index: `wharf sync` killed at ten points
/// leaves a tree where every index line has its crate file, and a re-run
/// completes. The kills follow the pass's progress, not the clock: two while
/// the git pack is still arriving, four with crate downloads in flight, four
/// once at least half the index is published; each kill must hit a running
/// pass, and the rounds together must have cut each phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_ten_points_a_git_sync_stays_consistent_and_a_rerun_completes() {
    const CRATES: usize = 40;
    let crates: Vec<FixtureCrate> = (0..CRATES)
        .flat_map(|i| {
            (0..2).map(move |patch| {
                CrateBuilder::new(&format!("kg-{i}"), &format!("1.0.{patch}")).build()
            })
        })
        .collect();
    let upstream = FakeUpstream::start(crates).await;
    let head = upstream.git_commit("initial");
    // Slow downloads spread the pass over a few seconds; a slow pack keeps
    // the first rounds' fetch in flight.
    let slow_crates = || {
        upstream.set_fault(
            Target::Crates,
            Fault::SlowDrip {
                chunk: 64,
                delay: Duration::from_millis(25),
            },
        )
    };
    let pack_path = format!(
        "{}/git-upload-pack",
        upstream
            .git_url()
            .trim_start_matches(&format!("http://{}", upstream.addr()))
    );
    upstream.set_fault(
        Target::Path(pack_path),
        Fault::SlowDrip {
            chunk: 256,
            delay: Duration::from_millis(50),
        },
    );
    slow_crates();
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "index_git = \"{}\"\nmax_concurrency = 8\nmax_requests_per_sec = 1000",
            upstream.git_url()
        ),
    );
    let stored = Stored::of_config(&config);
    let clone_head = || {
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(dir.path().join("data/m/.sync/git"))
            .args(["rev-parse", "--verify", "-q", "refs/wharf/upstream"])
            .output()
            .unwrap();
        text(&out.stdout).trim().to_owned()
    };
    let (mut fetches_cut, mut downloads_cut, mut publishing_cut) = (0, 0, 0);

    // The pack is requested and still dripping: the fetch is under way.
    for _ in 0..2 {
        let (_, _, after) = kill_sync_when(
            &config,
            &upstream,
            &stored,
            "during the git fetch",
            |_, now| now.pack_requests >= 1,
        )
        .await;
        assert_ne!(clone_head(), head, "the fetch completed before the kill");
        assert_eq!(after.crate_requests, 0, "{after:?}");
        fetches_cut += 1;
        assert_consistent(&stored).await;
    }
    upstream.clear_faults();
    slow_crates();

    // Some files of this round are stored and more are being downloaded.
    for files in [2, 4, 6, 8] {
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
        assert_eq!(clone_head(), head, "the pass downloads after its fetch");
        if after.crate_requests > after.crate_files - start.crate_files {
            downloads_cut += 1;
        }
        assert_consistent(&stored).await;
    }

    // At least half the index is published, the rest is not.
    for more in [1, 2, 3, 4] {
        let (start, _, after) = kill_sync_when(
            &config,
            &upstream,
            &stored,
            "with the index half published",
            |start, now| {
                now.index_files >= (start.index_files + more).max(CRATES / 2)
                    && now.index_files < CRATES
            },
        )
        .await;
        if after.index_files > start.index_files && after.index_files < CRATES {
            publishing_cut += 1;
        }
        assert_consistent(&stored).await;
    }
    assert!(
        fetches_cut >= 1 && downloads_cut >= 1 && publishing_cut >= 1,
        "the kills cut {fetches_cut} git fetches, {downloads_cut} passes downloading, \
         {publishing_cut} passes publishing the index: every phase must be cut at least once"
    );

    upstream.clear_faults();
    let stdout = sync_ok(&config);
    assert!(stdout.contains("serves 40 crates, 80 versions"), "{stdout}");
    assert_consistent(&stored).await;
    let stdout = sync_ok(&config);
    assert!(stdout.contains("looked at 0 index files"), "{stdout}");
}

/// Regression: a `wharf sync` killed during its git fetch left
/// `refs/wharf/upstream.lock` in the clone, and every later fetch failed
/// with "Failed to update references" (found by the kill test in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_files_left_by_a_killed_fetch_do_not_stop_the_next_pass() {
    let upstream = FakeUpstream::start([CrateBuilder::new("lk-a", "1.0.0").build()]).await;
    upstream.git_commit("initial");
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!("index_git = \"{}\"", upstream.git_url()),
    );
    sync_ok(&config);
    let clone = dir.path().join("data/m/.sync/git");
    std::fs::create_dir_all(clone.join("refs/wharf")).unwrap();
    std::fs::write(clone.join("refs/wharf/upstream.lock"), "").unwrap();
    std::fs::write(clone.join("packed-refs.lock"), "").unwrap();
    upstream.publish(CrateBuilder::new("lk-a", "1.1.0").build());
    upstream.git_commit("1.1.0");
    let stdout = sync_ok(&config);
    assert!(stdout.contains("serves 1 crates, 2 versions"), "{stdout}");
}

/// Issue 13: a git index that takes connections and never answers fails the
/// pass within `git_timeout` (bounding each read of gix's transport),
/// with a message naming the git index, instead of hanging the pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_git_index_fails_the_pass_within_the_timeout() {
    let upstream = FakeUpstream::start([CrateBuilder::new("bh", "1.0.0").build()]).await;
    let blackhole = Blackhole::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "index_git = \"{}/git/index\"\ngit_timeout = \"2s\"",
            blackhole.url()
        ),
    );
    let started = std::time::Instant::now();
    let out = sync(&config);
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(blackhole.connections() >= 1, "the git index was asked");
    // git_timeout is 2s: a few reads' worth, not gix's 20 s or more.
    assert!(
        took < std::time::Duration::from_secs(12),
        "took {took:?}: {stderr}"
    );
    assert!(stderr.contains("git index"), "{stderr}");
    assert!(
        stderr.contains("timed out") || stderr.contains("timeout"),
        "{stderr}"
    );
}

/// A git host may think for longer than `upstream_timeout` before it sends
/// a first clone: the git index has a bound of its own, `git_timeout`. Here
/// the pack comes in pieces 2.5 s apart, longer than the sparse upstream's
/// 2 s; under that bound the clone failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_git_index_is_waited_for_up_to_its_own_timeout() {
    let upstream = FakeUpstream::start([CrateBuilder::new("sg", "1.0.0").build()]).await;
    upstream.git_commit("initial");
    upstream.set_fault(
        Target::Path("/git/index/git-upload-pack".to_owned()),
        Fault::SlowDrip {
            chunk: 512,
            delay: Duration::from_millis(2500),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "index_git = \"{}\"\ngit_timeout = \"20s\"",
            upstream.git_url()
        ),
    );
    let stdout = sync_ok(&config);
    assert!(stdout.contains("serves 1 crates, 1 versions"), "{stdout}");
    assert!(
        upstream
            .requests()
            .iter()
            .any(|r| r.path == "/git/index/git-upload-pack"),
        "the pack came through the slow route"
    );
}

/// Issue 13: the git index's requests are under the mirror's limits like
/// every other request: at `max_requests_per_sec`, never in a burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_index_requests_are_spaced_at_the_request_rate() {
    let upstream = FakeUpstream::start([CrateBuilder::new("gr", "1.0.0").build()]).await;
    upstream.git_commit("initial");
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "index_git = \"{}\"\nmax_requests_per_sec = 4",
            upstream.git_url()
        ),
    );
    sync_ok(&config);
    let mut at: Vec<std::time::Instant> = upstream.requests().iter().map(|r| r.at).collect();
    at.sort();
    let git = upstream.count(RequestKind::Git);
    assert!(
        git >= 2,
        "a clone is a few requests: {:?}",
        upstream.requests()
    );
    // 4 a second with a burst of one: 250 ms apart (a little less for
    // the time a request takes to be logged).
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= std::time::Duration::from_millis(200),
            "two requests {gap:?} apart: {:?}",
            upstream.requests()
        );
    }
}
