//! Upstream faults: corrupt bytes, a dead primary, a crowd of misses.

use std::time::{Duration, Instant};

use wharf_test_support::{
    cargo::CargoProject,
    fixture::{CrateBuilder, graph},
    upstream::{Blackhole, FakeUpstream, Fault, RequestKind, Target},
};

use crate::common::{Wharf, cache, cargo_err, cargo_ok, sha256};

/// Acceptance 4: wrong bytes from upstream give cargo a clear error naming
/// the crate, nothing is stored; a later good response is stored and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_crate_bytes_are_refused_and_nothing_is_stored() {
    let solo = CrateBuilder::new("solo", "1.0.0").build();
    let upstream = FakeUpstream::start([solo.clone()]).await;
    upstream.set_fault(Target::Crates, Fault::WrongBytes);
    let wharf = Wharf::start(cache(&[upstream.index_url()])).await;
    let project = CargoProject::new(&wharf.index_url(), &[("solo", "1")]);

    let failed = cargo_err(&project, &["fetch"]);
    assert!(
        failed.stderr.contains("solo"),
        "names the crate: {}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("checksum mismatch"),
        "says why: {}",
        failed.stderr
    );
    let stored = wharf.stored_files();
    assert!(
        !stored.iter().any(|f| f.ends_with(".crate")),
        "nothing stored: {stored:?}"
    );
    assert!(
        !stored.iter().any(|f| f.starts_with(".tmp/")),
        "no temporary file left: {stored:?}"
    );

    upstream.clear_faults();
    cargo_ok(&project, &["fetch"]);
    let path = wharf
        .data_dir
        .join("crates-io/crates/solo/solo-1.0.0.crate");
    let kept = std::fs::read(&path).expect("the good crate is stored");
    assert_eq!(sha256(&kept), solo.cksum);
    wharf.stop().await;
}

/// Acceptance 5: with a blackhole as the first upstream, a fetch of the graph
/// completes through the second, and the blackhole sees a handful of attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_costs_one_timeout_not_one_per_file() {
    let blackhole = Blackhole::start().await;
    let upstream = FakeUpstream::start(graph("bh", 24)).await;
    let mut registry = cache(&[blackhole.index_url(), upstream.index_url()]);
    registry.upstream_timeout = Duration::from_secs(1);
    let wharf = Wharf::start(registry).await;
    let project = CargoProject::new(&wharf.index_url(), &[("bh-0", "1")]);

    let started = Instant::now();
    cargo_ok(&project, &["fetch"]);
    let took = started.elapsed();
    let attempts = blackhole.connections();
    assert!(attempts <= 5, "the blackhole got {attempts} connections");
    assert_eq!(upstream.count(RequestKind::Crate), 24);
    assert!(took < Duration::from_secs(20), "fetch took {took:?}");
    let status = wharf.get_json("/status.json").await;
    assert_eq!(
        status["registries"]["crates-io"]["upstreams"][0]["up"], false,
        "{status}"
    );
    assert_eq!(
        status["registries"]["crates-io"]["upstreams"][1]["up"], true,
        "{status}"
    );
    wharf.stop().await;
}

/// Acceptance 6: 50 concurrent requests for one uncached crate make exactly
/// one upstream download, and all 50 get the same verified bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_make_one_download() {
    let krate = CrateBuilder::new("crowd", "1.0.0").build();
    let upstream = FakeUpstream::start([krate.clone()]).await;
    // A slow body keeps the download in flight while the crowd arrives.
    upstream.set_fault(
        Target::Crates,
        Fault::SlowDrip {
            chunk: 64,
            delay: Duration::from_millis(20),
        },
    );
    let wharf = Wharf::start(cache(&[upstream.index_url()])).await;
    let client = reqwest::Client::new();
    let url = wharf.url("/crates-io/crates/crowd/crowd-1.0.0.crate");
    let requests = (0..50).map(|_| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client.get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap()
        }
    });
    let bodies = futures::future::join_all(requests).await;
    assert!(bodies.iter().all(|b| *b == krate.bytes));
    assert_eq!(
        upstream.count(RequestKind::Crate),
        1,
        "{:?}",
        upstream.requests()
    );
    assert_eq!(
        upstream.count(RequestKind::Index),
        1,
        "{:?}",
        upstream.requests()
    );
    wharf.stop().await;
}

/// Failures that are the upstream's (500, reset, truncated body) fall over
/// to the next upstream and nothing partial is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_primary_responses_fall_over_to_the_secondary() {
    for fault in [Fault::Status(500), Fault::Reset, Fault::Truncate] {
        let krate = CrateBuilder::new("flaky", "1.0.0").build();
        let primary = FakeUpstream::start([krate.clone()]).await;
        let secondary = FakeUpstream::start([krate.clone()]).await;
        primary.set_fault(Target::Crates, fault.clone());
        let wharf = Wharf::start(cache(&[primary.index_url(), secondary.index_url()])).await;
        let response = reqwest::get(wharf.url("/crates-io/crates/flaky/flaky-1.0.0.crate"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{fault:?}");
        assert_eq!(response.bytes().await.unwrap(), krate.bytes, "{fault:?}");
        assert_eq!(secondary.count(RequestKind::Crate), 1, "{fault:?}");
        wharf.stop().await;
    }
}

/// An upstream that answers 200 with something that is not an index file
/// (an HTML error page from a proxy) is skipped, and nothing bad is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_is_not_json_lines_is_refused() {
    use wharf_test_support::fixture::sparse_path;

    let krate = CrateBuilder::new("garbled", "1.0.0").build();
    let primary = FakeUpstream::start([krate.clone()]).await;
    let secondary = FakeUpstream::start([krate.clone()]).await;
    primary.set_fault(Target::Index, Fault::Html);
    let wharf = Wharf::start(cache(&[primary.index_url(), secondary.index_url()])).await;
    let url = wharf.url(&format!("/crates-io/index/{}", sparse_path("garbled")));
    let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert_eq!(body, krate.index_line() + "\n");
    assert_eq!(primary.count(RequestKind::Index), 1);
    wharf.stop().await;
}
