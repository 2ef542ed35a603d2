//! Issue 15: allow-lists by author. Owner and publisher rules with real
//! cargo, owner facts from the fake upstream's web API (polite, cached in the
//! database across restarts) or from a database dump, and held crates when
//! the API fails.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use wharf_config::Config;
use wharf_test_support::{
    cargo::CargoProject,
    dump::{self, DumpCrate},
    fixture::CrateBuilder,
    upstream::{FakeUpstream, Fault, RequestKind, Target},
};

use crate::access::{wharf_ok, write_config};
use crate::common::Wharf;

/// A config with one cache, `company`, of `upstream`, with `policy` lines.
fn company(
    dir: &Path,
    upstream: &FakeUpstream,
    database_url: Option<&str>,
    policy: &str,
) -> PathBuf {
    let database = database_url
        .map(|url| format!("database_url = \"{url}\"\n"))
        .unwrap_or_default();
    write_config(
        dir,
        &format!(
            "[registries.company]\nkind = \"cache\"\nupstreams = [\"{}\"]\nindex_ttl = \"1s\"\n{database}\n[registries.company.policy]\nmode = \"allow-list\"\napproval = true\n{policy}",
            upstream.index_url()
        ),
    )
}

/// Cargo without its retries of 5xx answers, so a held crate fails at once.
const NO_RETRY: [&str; 2] = ["--config", "net.retry=0"];

fn index(wharf: &Wharf) -> String {
    format!("sparse+http://{}/company/index/", wharf.addr)
}

crate::on_both_databases!(
    an_owner_allow_list_holds_other_owners_crates_until_approved,
    super::an_owner_allow_list_holds_other_owners_crates_until_approved
);

/// Acceptance 1: crates owned by an allowed user or team build; a crate
/// owned only by bob is held with a message naming it and its owners, is
/// queued with bob as owner, and builds once approved.
async fn an_owner_allow_list_holds_other_owners_crates_until_approved(database_url: Option<&str>) {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("alice-a", "1.0.0").build(),
        CrateBuilder::new("team-b", "1.0.0").build(),
        CrateBuilder::new("bob-c", "1.0.0").build(),
    ])
    .await;
    upstream.set_owners("alice-a", &["alice"]);
    upstream.set_owners("team-b", &["carol", "github:our-org:core"]);
    upstream.set_owners("bob-c", &["bob"]);
    let dir = tempfile::tempdir().unwrap();
    let config = company(
        dir.path(),
        &upstream,
        database_url,
        "allow_owners = [\"github:alice\", \"github:our-org:*\"]\nowners_lookup = { requests_per_sec = 50.0 }\n",
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    CargoProject::new(&index(&wharf), &[("alice-a", "1"), ("team-b", "1")])
        .run_async(&["build"])
        .await
        .assert_success();

    let wants_bob = CargoProject::new(&index(&wharf), &[("alice-a", "1"), ("bob-c", "1")]);
    let mut args = vec!["build"];
    args.extend(NO_RETRY);
    let refused = wants_bob.run_async(&args).await.assert_failure();
    assert!(
        refused.stderr.contains("bob-c") && refused.stderr.contains("github:bob"),
        "{}",
        refused.stderr
    );
    let queue = wharf_ok(&config, &["approvals", "list", "--registry", "company"]);
    assert!(
        queue
            .lines()
            .any(|l| l.starts_with("bob-c") && l.contains("github:bob")),
        "{queue}"
    );
    assert!(!queue.lines().any(|l| l.starts_with("alice-a")), "{queue}");
    wharf_ok(
        &config,
        &["approvals", "approve", "bob-c", "--registry", "company"],
    );
    wants_bob.run_async(&["build"]).await.assert_success();
    let shown = wharf_ok(
        &config,
        &["owners", "show", "bob-c", "--registry", "company"],
    );
    assert!(
        shown.contains("github:bob") && shown.contains("API"),
        "{shown}"
    );
    wharf.stop().await;
}

/// Acceptance 2: with require_publisher, a new version of alice's crate
/// published by co-owner mallory is held; older versions stay, and cargo
/// update stays on the newest one alice published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_publisher_holds_a_version_a_co_owner_published() {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("alice-lib", "1.0.0").build(),
        CrateBuilder::new("alice-lib", "1.1.0").build(),
    ])
    .await;
    upstream.set_owners("alice-lib", &["alice", "mallory"]);
    upstream.set_publisher("alice-lib", "1.0.0", "alice");
    upstream.set_publisher("alice-lib", "1.1.0", "alice");
    let dir = tempfile::tempdir().unwrap();
    let config = company(
        dir.path(),
        &upstream,
        None,
        "allow_owners = [\"github:alice\"]\nrequire_publisher = true\nowners_lookup = { requests_per_sec = 50.0 }\n",
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let project = CargoProject::new(&index(&wharf), &[("alice-lib", "1")]);
    project.run_async(&["build"]).await.assert_success();
    assert!(
        project.lockfile().contains("version = \"1.1.0\""),
        "{}",
        project.lockfile()
    );

    upstream.publish(CrateBuilder::new("alice-lib", "1.2.0").build());
    upstream.set_publisher("alice-lib", "1.2.0", "mallory");
    // Past the cache's index_ttl, so the new version is seen.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    project.run_async(&["update"]).await.assert_success();
    assert!(
        project.lockfile().contains("version = \"1.1.0\""),
        "{}",
        project.lockfile()
    );
    let held = reqwest::get(wharf.url("/company/crates/alice-lib/alice-lib-1.2.0.crate"))
        .await
        .unwrap();
    assert_eq!(held.status(), 403);
    let queue = wharf_ok(&config, &["approvals", "list", "--registry", "company"]);
    assert!(
        queue.lines().any(|l| l.starts_with("alice-lib")
            && l.contains("1.2.0")
            && l.contains("github:mallory")),
        "{queue}"
    );
    // The file as the fake upstream serves it names 1.2.0; wharf's does not.
    let served = reqwest::get(wharf.url("/company/index/al/ic/alice-lib"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        served.contains("\"1.1.0\"") && !served.contains("\"1.2.0\""),
        "{served}"
    );
    wharf.stop().await;
}

/// The largest number of requests in `times` within any window of `window`.
fn most_within(times: &[Instant], window: Duration) -> usize {
    times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Acceptance 3: lookups keep to the configured rate with the configured
/// User-Agent, and are kept across a restart: a second cold build asks the
/// API nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_polite_and_survive_a_restart() {
    let names: Vec<String> = (0..6).map(|i| format!("polite-{i}")).collect();
    let upstream =
        FakeUpstream::start(names.iter().map(|n| CrateBuilder::new(n, "1.0.0").build())).await;
    for name in &names {
        upstream.set_owners(name, &["alice"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = company(
        dir.path(),
        &upstream,
        None,
        "allow_owners = [\"github:alice\"]\nowners_lookup = { requests_per_sec = 2.0, user_agent = \"wharf-test (ops@example.invalid)\" }\n",
    );
    let deps: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    CargoProject::new(&index(&wharf), &deps)
        .run_async(&["fetch"])
        .await
        .assert_success();
    let api: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| {
            r.kind == RequestKind::Api
                || r.path == "/index/config.json"
                    && r.user_agent.as_deref() == Some("wharf-test (ops@example.invalid)")
        })
        .collect();
    assert!(api.len() >= names.len(), "{api:?}");
    assert!(
        api.iter()
            .all(|r| r.user_agent.as_deref() == Some("wharf-test (ops@example.invalid)")),
        "{api:?}"
    );
    let times: Vec<Instant> = api.iter().map(|r| r.at).collect();
    // Two a second; a window a little under a second allows for the
    // loopback's jitter in arrival times.
    assert!(
        most_within(&times, Duration::from_millis(950)) <= 2,
        "{api:?}"
    );
    wharf.stop().await;

    upstream.clear_log();
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    CargoProject::new(&index(&wharf), &deps)
        .run_async(&["fetch"])
        .await
        .assert_success();
    assert_eq!(
        upstream.count(RequestKind::Api),
        0,
        "{:?}",
        upstream.requests()
    );
    wharf.stop().await;
}

crate::on_both_databases!(
    a_dump_decides_without_the_api,
    super::a_dump_decides_without_the_api
);

/// Acceptance 4: after `wharf owners import`, decisions need no API request;
/// a later dump that removes alice as owner holds her crate.
async fn a_dump_decides_without_the_api(database_url: Option<&str>) {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("alice-lib", "1.0.0").build(),
        CrateBuilder::new("bob-lib", "1.0.0").build(),
    ])
    .await;
    // The API would answer otherwise: only the dump may decide.
    upstream.set_fault(Target::Api, Fault::Status(500));
    let dir = tempfile::tempdir().unwrap();
    let config = company(
        dir.path(),
        &upstream,
        database_url,
        "allow_owners = [\"github:alice\"]\nrequire_publisher = true\n",
    );
    let first = dir.path().join("first.tar.gz");
    std::fs::write(
        &first,
        dump::build(
            "2026-12-01-020000",
            &[
                DumpCrate::new("alice-lib", &["alice"]).version("1.0.0", Some("alice")),
                DumpCrate::new("bob-lib", &["bob"]).version("1.0.0", Some("bob")),
            ],
        ),
    )
    .unwrap();
    let imported = wharf_ok(
        &config,
        &[
            "owners",
            "import",
            first.to_str().unwrap(),
            "--registry",
            "company",
        ],
    );
    assert!(
        imported.contains("2 crates") && imported.contains("2 versions"),
        "{imported}"
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    CargoProject::new(&index(&wharf), &[("alice-lib", "1")])
        .run_async(&["build"])
        .await
        .assert_success();
    assert_eq!(
        upstream.count(RequestKind::Api),
        0,
        "{:?}",
        upstream.requests()
    );
    let shown = wharf_ok(
        &config,
        &["owners", "show", "alice-lib", "--registry", "company"],
    );
    assert!(
        shown.contains("github:alice") && shown.contains("dump of 2026-12-01T02:00:00Z"),
        "{shown}"
    );

    let second = dir.path().join("second.tar.gz");
    std::fs::write(
        &second,
        dump::build(
            "2026-12-02-020000",
            &[
                DumpCrate::new("alice-lib", &["bob"]).version("1.0.0", Some("alice")),
                DumpCrate::new("bob-lib", &["bob"]).version("1.0.0", Some("bob")),
            ],
        ),
    )
    .unwrap();
    wharf_ok(
        &config,
        &[
            "owners",
            "import",
            second.to_str().unwrap(),
            "--registry",
            "company",
        ],
    );
    // What the server learnt is kept in memory for a second.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let held = reqwest::get(wharf.url("/company/index/al/ic/alice-lib"))
        .await
        .unwrap();
    assert_eq!(held.status(), 403);
    let body = held.text().await.unwrap();
    assert!(
        body.contains("alice-lib") && body.contains("github:bob"),
        "{body}"
    );
    assert_eq!(
        upstream.count(RequestKind::Api),
        0,
        "{:?}",
        upstream.requests()
    );
    wharf.stop().await;
}

/// Acceptance 5: while the API fails (500, then a timeout), a crate whose
/// owners are unknown is held with a message that says to retry, and never
/// let through; once the API answers, it builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_api_holds_unknown_crates() {
    let upstream = FakeUpstream::start([CrateBuilder::new("alice-lib", "1.0.0").build()]).await;
    upstream.set_owners("alice-lib", &["alice"]);
    upstream.set_fault(Target::Api, Fault::Status(500));
    let dir = tempfile::tempdir().unwrap();
    let config = company(
        dir.path(),
        &upstream,
        None,
        "allow_owners = [\"github:alice\"]\nowners_lookup = { requests_per_sec = 50.0, timeout = \"1s\", wait = \"2s\" }\n",
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let project = CargoProject::new(&index(&wharf), &[("alice-lib", "1")]);
    let mut args = vec!["build"];
    args.extend(NO_RETRY);
    let refused = project.run_async(&args).await.assert_failure();
    assert!(
        refused.stderr.contains("alice-lib")
            && refused.stderr.contains("500")
            && refused.stderr.contains("retry in"),
        "{}",
        refused.stderr
    );
    let crate_file = wharf.url("/company/crates/alice-lib/alice-lib-1.0.0.crate");
    let download = reqwest::get(&crate_file).await.unwrap();
    assert_eq!(download.status(), 503);
    assert!(download.headers().contains_key("retry-after"));

    upstream.clear_faults();
    upstream.set_fault(Target::Api, Fault::Blackhole);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let started = Instant::now();
    let index_file = reqwest::get(wharf.url("/company/index/al/ic/alice-lib"))
        .await
        .unwrap();
    assert_eq!(index_file.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let body = index_file.text().await.unwrap();
    assert!(
        body.contains("timed out") || body.contains("under way"),
        "{body}"
    );
    assert_eq!(reqwest::get(&crate_file).await.unwrap().status(), 503);

    upstream.clear_faults();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    project.run_async(&["build"]).await.assert_success();
    wharf.stop().await;
}

/// `owners_dump_url`: the dump is fetched on a schedule with conditional
/// requests and imported; decisions need no API request, and a new dump
/// (another ETag) that removes alice holds her crate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_dump_is_fetched_conditionally() {
    let upstream = FakeUpstream::start([CrateBuilder::new("alice-lib", "1.0.0").build()]).await;
    upstream.set_fault(Target::Api, Fault::Status(500));
    upstream.set_dump(dump::build(
        "2026-12-01-020000",
        &[DumpCrate::new("alice-lib", &["alice"]).version("1.0.0", Some("alice"))],
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = company(
        dir.path(),
        &upstream,
        None,
        &format!(
            "allow_owners = [\"github:alice\"]\nowners_dump_url = \"{}/db-dump.tar.gz\"\nowners_dump_interval = \"1s\"\nowners_lookup = {{ requests_per_sec = 50.0 }}\n",
            upstream.url()
        ),
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let dumps = || {
        upstream
            .requests()
            .into_iter()
            .filter(|r| r.path == "/db-dump.tar.gz")
            .collect::<Vec<_>>()
    };
    // Imported at start, then asked again each second, conditionally.
    let started = Instant::now();
    while dumps().len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            upstream.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked = dumps();
    assert_eq!(asked[0].status, 200, "{asked:?}");
    assert!(
        asked[1..]
            .iter()
            .all(|r| r.status == 304 && r.if_none_match.is_some()),
        "{asked:?}"
    );
    CargoProject::new(&index(&wharf), &[("alice-lib", "1")])
        .run_async(&["build"])
        .await
        .assert_success();
    assert_eq!(
        upstream.count(RequestKind::Api),
        0,
        "{:?}",
        upstream.requests()
    );

    upstream.set_dump(dump::build(
        "2026-12-02-020000",
        &[DumpCrate::new("alice-lib", &["bob"]).version("1.0.0", Some("alice"))],
    ));
    let started = Instant::now();
    loop {
        let status = reqwest::get(wharf.url("/company/index/al/ic/alice-lib"))
            .await
            .unwrap()
            .status();
        if status == 403 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = wharf_ok(
        &config,
        &["owners", "show", "alice-lib", "--registry", "company"],
    );
    assert!(shown.contains("dump of 2026-12-02T02:00:00Z"), "{shown}");
    wharf.stop().await;
}

/// Without approval, a crate no owner rule allows is refused with its
/// owners named, not answered 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_approval_a_refused_crate_names_its_owners() {
    let upstream = FakeUpstream::start([CrateBuilder::new("bob-c", "1.0.0").build()]).await;
    upstream.set_owners("bob-c", &["bob"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[registries.company]\nkind = \"cache\"\nupstreams = [\"{}\"]\n\n[registries.company.policy]\nmode = \"allow-list\"\nallow_owners = [\"github:alice\"]\nowners_lookup = {{ requests_per_sec = 50.0 }}\n",
            upstream.index_url()
        ),
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let refused = reqwest::get(wharf.url("/company/index/bo/b-/bob-c"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body = refused.text().await.unwrap();
    assert!(
        body.contains("github:bob") && body.contains("not allowed"),
        "{body}"
    );
    wharf.stop().await;
}
