//! Several wharf instances as one registry: one bucket, one PostgreSQL
//! database, each instance with its own memory and local disk.

use std::{path::Path, time::Duration};

use futures::StreamExt;

use wharf_config::Config;
use wharf_test_support::{
    cargo::CargoProject,
    fixture::{CrateBuilder, sparse_path},
    postgres::TempPostgres,
    upstream::{FakeUpstream, RequestKind},
};

use crate::common::{Backend, Stored, Wharf, cargo_ok, sha256};
use crate::hosted::{create_token, metadata, publish_body};

/// A config with a hosted registry `private` and an auth-required cache
/// `crates-io` of `upstream`, both on `database`, stored in `storage` (a
/// place in the run's bucket), with local state under `dir`.
fn shared_config(dir: &Path, storage: &str, database: &str, upstream: &FakeUpstream) -> Config {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n{storage}\n\
             [registries.private]\nkind = \"hosted\"\ndatabase_url = \"{database}\"\n\n\
             [registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\nauth_required = true\ndatabase_url = \"{database}\"\n",
            dir.join("data").display(),
            upstream.index_url()
        ),
    )
    .unwrap();
    Config::load(Some(&path)).unwrap()
}

/// Two instances, A and B, of one registry: a config each (their own local
/// disk), the same bucket and database. Returns them and A's config file
/// (for the CLI, which acts on the shared database).
async fn two_instances(root: &Path, upstream: &FakeUpstream) -> (Wharf, Wharf, std::path::PathBuf) {
    let storage = Backend::S3.toml();
    let database = TempPostgres::shared().create_database();
    let (a, b) = (root.join("a"), root.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let first = Wharf::start_with(shared_config(&a, &storage, &database, upstream)).await;
    let second = Wharf::start_with(shared_config(&b, &storage, &database, upstream)).await;
    (first, second, a.join("wharf.toml"))
}

async fn publish(wharf: &Wharf, token: &str, name: &str, vers: &str, lib: &str) -> (u16, String) {
    let krate = CrateBuilder::new(name, vers).lib_body(lib).build();
    let response = reqwest::Client::new()
        .put(wharf.url("/private/api/v1/crates/new"))
        .header("Authorization", token)
        .body(publish_body(&metadata(name, vers), &krate.bytes))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn index_file(wharf: &Wharf, registry: &str, name: &str, auth: Option<&str>) -> String {
    let mut request =
        reqwest::Client::new().get(wharf.url(&format!("/{registry}/index/{}", sparse_path(name))));
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{registry} index of {name}");
    response.text().await.unwrap()
}

/// Acceptance 1 of issue 12: a publish through A is served by B at once
/// (not at B's next revision check), and cargo builds it through B; a
/// cache fill through A is served by B with no upstream request; a
/// revocation by the CLI holds on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_bucket_and_database_act_as_one() {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("up-a", "1.0.0").build(),
        CrateBuilder::new("up-b", "1.0.0").dep("up-a", "^1").build(),
    ])
    .await;
    let root = tempfile::tempdir().unwrap();
    let (a, b, config) = two_instances(root.path(), &upstream).await;

    // Publishes through A, seen through B at once.
    let token = create_token(&config, "alice");
    assert_eq!(
        publish(
            &a,
            &token,
            "shared",
            "1.0.0",
            "pub fn value() -> u64 { 1 }\n"
        )
        .await
        .0,
        200
    );
    let before = index_file(&b, "private", "shared", None).await;
    assert_eq!(before.lines().count(), 1, "{before}");
    // B now holds the file in memory, fresh for a second; A's publish of
    // 1.1.0 must drop it there too.
    assert_eq!(
        publish(
            &a,
            &token,
            "shared",
            "1.1.0",
            "pub fn value() -> u64 { 2 }\n"
        )
        .await
        .0,
        200
    );
    let mut waited = Duration::ZERO;
    let after = loop {
        let file = index_file(&b, "private", "shared", None).await;
        if file.contains("\"1.1.0\"") || waited >= Duration::from_millis(500) {
            break file;
        }
        // A notification takes a moment; a revision check would take a second.
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    };
    assert!(after.contains("\"1.1.0\""), "B still served {after}");
    assert!(
        waited <= Duration::from_millis(100),
        "B saw the publish after {waited:?}"
    );
    let consumer = CargoProject::new(
        &format!("sparse+http://{}/private/index/", b.addr),
        &[("shared", "1.1")],
    );
    cargo_ok(&consumer, &["build"]);

    // A cache fill through A is served by B from the bucket.
    let reader = crate::access::add_client(&config, &["reader", "--registry", "crates-io"]);
    let cache_project = |wharf: &Wharf| {
        let index = format!("sparse+http://{}/crates-io/index/", wharf.addr);
        let mut project = CargoProject::new(&index, &[("up-b", "1")]);
        project.replace_with_registry("crates-io-mirror", &index);
        project.set_token("crates-io-mirror", &reader);
        project
    };
    cargo_ok(&cache_project(&a), &["fetch"]);
    assert!(upstream.count(RequestKind::Crate) >= 2);
    upstream.clear_log();
    cargo_ok(&cache_project(&b), &["fetch"]);
    assert_eq!(
        upstream.requests().len(),
        0,
        "B asked the upstream: {:?}",
        upstream.requests()
    );

    // A revocation through the CLI holds on both.
    for wharf in [&a, &b] {
        index_file(wharf, "crates-io", "up-a", Some(&reader)).await;
    }
    crate::access::wharf_ok(
        &config,
        &["clients", "revoke", "reader", "--registry", "crates-io"],
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    for wharf in [&a, &b] {
        let status = reqwest::Client::new()
            .get(wharf.url(&format!("/crates-io/index/{}", sparse_path("up-a"))))
            .header("Authorization", &reader)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 403, "a revoked client on {}", wharf.addr);
    }
    a.stop().await;
    b.stop().await;
}

/// Acceptance 2 of issue 12: the same new version, with different bytes,
/// published through A and B at the same instant, 20 times: one succeeds
/// each time, the other gets the ordinary refusal, and the stored crate
/// file always matches the cksum the index serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_version_published_through_two_instances_at_once_has_one_winner() {
    let upstream = FakeUpstream::start([]).await;
    let root = tempfile::tempdir().unwrap();
    let (a, b, config) = two_instances(root.path(), &upstream).await;
    let token = create_token(&config, "alice");
    let stored = a.stored();
    let (mut won_a, mut won_b) = (0, 0);
    for i in 0..20 {
        let vers = format!("1.0.{i}");
        let (lib_a, lib_b) = (
            format!("pub fn v() -> &'static str {{ \"a{i}\" }}\n"),
            format!("pub fn v() -> &'static str {{ \"b{i}\" }}\n"),
        );
        let ((status_a, said_a), (status_b, said_b)) = tokio::join!(
            publish(&a, &token, "race", &vers, &lib_a),
            publish(&b, &token, "race", &vers, &lib_b),
        );
        match (status_a, status_b) {
            (200, _) => won_a += 1,
            (_, 200) => won_b += 1,
            _ => panic!("neither publish of {vers} succeeded: {said_a} / {said_b}"),
        }
        assert!(
            status_a != status_b,
            "both publishes of {vers} answered {status_a}: {said_a} / {said_b}"
        );
        let refusal = if status_a == 200 { &said_b } else { &said_a };
        assert!(refusal.contains("already has version"), "{refusal}");
        let index = index_file(&b, "private", "race", None).await;
        let line: serde_json::Value = index
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["vers"] == vers)
            .unwrap_or_else(|| panic!("no line for {vers} in {index}"));
        let bytes = stored
            .read(&format!("private/crates/race/race-{vers}.crate"))
            .await
            .expect("the winner's crate file is stored");
        assert_eq!(sha256(&bytes), line["cksum"].as_str().unwrap(), "{vers}");
    }
    println!("publishes won: A {won_a}, B {won_b}");
    a.stop().await;
    b.stop().await;
}

/// Acceptance 6 of issue 12: 1,000 wrong passwords (each a new guess) from
/// one address spread over two instances: the lockout holds across both,
/// so no more are checked than one instance alone would check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_holds_across_instances() {
    let upstream = FakeUpstream::start([CrateBuilder::new("x", "1.0.0").build()]).await;
    let root = tempfile::tempdir().unwrap();
    let (a, b, config) = two_instances(root.path(), &upstream).await;
    crate::access::add_client(
        &config,
        &["victim", "--registry", "crates-io", "--password"],
    );
    let client = reqwest::Client::new();
    let path = format!("/crates-io/index/{}", sparse_path("x"));
    let (url_a, url_b) = (a.url(&path), b.url(&path));
    let (mut checked, mut throttled) = (0, 0);
    let mut guesses = futures::stream::iter(0..1000)
        .map(|i| {
            let url = if i % 2 == 0 {
                url_a.clone()
            } else {
                url_b.clone()
            };
            let auth = format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("victim:guess-{i}")
                )
            );
            let client = client.clone();
            async move {
                let response = client
                    .get(url)
                    .header("Authorization", auth)
                    .send()
                    .await
                    .unwrap();
                (
                    response.status().as_u16(),
                    response.text().await.unwrap_or_default(),
                )
            }
        })
        .buffer_unordered(8);
    while let Some((status, body)) = guesses.next().await {
        match status {
            403 => checked += 1,
            429 => throttled += 1,
            other => panic!("a wrong password answered {other}: {body}"),
        }
    }
    drop(guesses);
    assert_eq!(checked + throttled, 1000);
    assert!(
        checked <= wharf_db::MAX_LOGIN_FAILURES as usize,
        "{checked} wrong passwords were checked across two instances; the shared lockout allows {}",
        wharf_db::MAX_LOGIN_FAILURES
    );
    a.stop().await;
    b.stop().await;
}

/// Acceptance 3 of issue 12: two `wharf serve` processes with the same
/// mirror, bucket and database run its passes one at a time: one takes the
/// lease, the other waits; killed with SIGKILL mid-pass, the holder's lease
/// is taken over within twice the heartbeat (and a poll), nothing is asked
/// of the upstream in between, and the pass the other runs completes the
/// tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_pass_runs_on_one_instance_and_a_dead_holder_is_taken_over() {
    const CRATES: usize = 24;
    const HEARTBEAT: Duration = Duration::from_secs(1);
    let upstream = FakeUpstream::start(wharf_test_support::fixture::graph("ls", CRATES)).await;
    // Slow downloads: a pass takes several seconds.
    upstream.set_fault(
        wharf_test_support::upstream::Target::Crates,
        wharf_test_support::upstream::Fault::SlowDrip {
            chunk: 64,
            delay: Duration::from_millis(20),
        },
    );
    let root = tempfile::tempdir().unwrap();
    let storage = Backend::S3.toml();
    let database = TempPostgres::shared().create_database();
    let mut configs = Vec::new();
    for name in ["a", "b"] {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("wharf.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n{storage}\n\
                 [registries.m]\nkind = \"mirror\"\nupstreams = [\"{}\"]\ninclude = [\"ls-0\"]\n\
                 sync_interval = \"1h\"\nlease_heartbeat = \"{}s\"\ndatabase_url = \"{database}\"\n\
                 max_concurrency = 2\nmax_requests_per_sec = 1000\nupstream_timeout = \"5s\"\n",
                dir.join("data").display(),
                upstream.index_url(),
                HEARTBEAT.as_secs()
            ),
        )
        .unwrap();
        configs.push(config);
    }
    let logs: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| root.path().join(format!("{n}.log")))
        .collect();
    let mut servers: Vec<Option<crate::common::WharfProcess>> = configs
        .iter()
        .zip(&logs)
        .map(|(config, log)| Some(crate::common::WharfProcess::spawn_logging_to(config, log)))
        .collect();
    let started = |i: usize| {
        std::fs::read_to_string(&logs[i])
            .unwrap_or_default()
            .matches("lease taken; pass started")
            .count()
    };
    let stored = Stored::of_config(&configs[0]);

    // One of them takes the lease and downloads; the other waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let holder = loop {
        match (started(0), started(1)) {
            (0, 0) => {}
            (1, 0) => break 0,
            (0, 1) => break 1,
            both => panic!("both instances started a pass: {both:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "no pass started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let other = 1 - holder;
    while stored.keys_under("m/crates").await.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pass stored nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(&logs[other]).unwrap();
    assert!(
        log.contains("another instance runs this mirror's passes") && started(other) == 0,
        "the other instance does not wait: {log}"
    );
    assert!(
        stored.keys_under("m/crates").await.len() < CRATES,
        "the pass ended before the kill: the kill would cut nothing"
    );
    servers[holder].take().unwrap().kill();
    let killed = std::time::Instant::now();
    upstream.clear_log();

    // The other takes over within twice the heartbeat and a poll (and a
    // second for a busy machine), having asked the upstream nothing.
    while started(other) == 0 {
        assert!(
            killed.elapsed() < HEARTBEAT * 2 + HEARTBEAT / 4 + Duration::from_secs(1),
            "no takeover {:?} after the holder died",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took_over = killed.elapsed();
    let asked_while_waiting = upstream.requests().len();
    println!("takeover after {took_over:?}");
    // Requests in flight when the holder died may still arrive.
    assert!(
        asked_while_waiting <= 2,
        "{asked_while_waiting} upstream requests between the kill and the takeover"
    );
    while !std::fs::read_to_string(&logs[other])
        .unwrap()
        .contains("pass ended; lease released")
    {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the pass did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored.keys_under("m/crates").await.len(), CRATES);
    crate::mirror::assert_consistent(&stored).await;
    servers[other].take().unwrap().kill();
}
