//! Upstream faults: corrupt bytes, a dead primary, a crowd of misses, one
//! bad file, a flood of made-up names.

use std::time::{Duration, Instant};

use futures::StreamExt;
use wharf_test_support::{
    cargo::CargoProject,
    fixture::{CrateBuilder, graph, sparse_path},
    upstream::{Blackhole, FakeUpstream, Fault, RequestKind, Target},
};

use crate::common::{Wharf, cache, cargo_err, cargo_ok, sha256};

crate::on_both_backends!(
    corrupt_crate_bytes_are_refused_and_nothing_is_stored,
    super::corrupt_crate_bytes_are_refused
);

/// Acceptance 4: wrong bytes from upstream give cargo a clear error naming
/// the crate, nothing is stored; a later good response is stored and served.
/// On the disk and on S3.
async fn corrupt_crate_bytes_are_refused(backend: crate::common::Backend) {
    let solo = CrateBuilder::new("solo", "1.0.0").build();
    let upstream = FakeUpstream::start([solo.clone()]).await;
    upstream.set_fault(Target::Crates, Fault::WrongBytes);
    let wharf = Wharf::start_on(backend, cache(&[upstream.index_url()])).await;
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
    let stored = wharf.keys().await;
    assert!(
        !stored.iter().any(|f| f.ends_with(".crate")),
        "nothing stored: {stored:?}"
    );
    let local = wharf.stored_files();
    assert!(
        !local.iter().any(|f| f.starts_with(".tmp/")),
        "no temporary file left: {local:?}"
    );

    upstream.clear_faults();
    cargo_ok(&project, &["fetch"]);
    let kept = wharf
        .read_stored("crates-io/crates/solo/solo-1.0.0.crate")
        .await
        .expect("the good crate is stored");
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

crate::on_both_backends!(
    fifty_concurrent_misses_make_one_download,
    super::fifty_concurrent_misses
);

/// Acceptance 6: 50 concurrent requests for one uncached crate make exactly
/// one upstream download, and all 50 get the same verified bytes.
/// On the disk and on S3.
async fn fifty_concurrent_misses(backend: crate::common::Backend) {
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
    let wharf = Wharf::start_on(backend, cache(&[upstream.index_url()])).await;
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

/// Issue 13 (7): one index file that upstream answers with an HTML page is
/// that file's problem. Asked for again and again while other names are
/// looked up, it must not mark the upstream down: every other missing name
/// answers 404 and every existing one 200, never 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_index_file_does_not_take_the_upstream_down() {
    let mut crates = vec![CrateBuilder::new("bad", "1.0.0").build()];
    crates.extend((0..20).map(|i| CrateBuilder::new(&format!("good-{i}"), "1.0.0").build()));
    let upstream = FakeUpstream::start(crates).await;
    upstream.set_fault(
        Target::Path(format!("/index/{}", sparse_path("bad"))),
        Fault::Html,
    );
    let wharf = Wharf::start(cache(&[upstream.index_url()])).await;
    let client = reqwest::Client::new();
    let status = |name: String| {
        let url = wharf.url(&format!("/crates-io/index/{}", sparse_path(&name)));
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    let mut wrong = Vec::new();
    for i in 0..40 {
        let bad = status("bad".to_owned()).await;
        assert_eq!(bad, 502, "the bad file itself cannot be served");
        let missing = format!("missing-{i}");
        let got = status(missing.clone()).await;
        if got != 404 {
            wrong.push((missing, got));
        }
        if i < 20 {
            let good = format!("good-{i}");
            let got = status(good.clone()).await;
            if got != 200 {
                wrong.push((good, got));
            }
        }
    }
    assert!(wrong.is_empty(), "other names failed: {wrong:?}");
    let status = wharf.get_json("/status.json").await;
    assert_eq!(
        status["registries"]["crates-io"]["upstreams"][0]["up"], true,
        "{status}"
    );
    wharf.stop().await;
}

/// Issue 13 (8): 10,000 distinct made-up names from one address make no
/// more upstream requests than the address's budget of misses allows; the
/// rest are answered 429 with `Retry-After` and counted; hits and
/// remembered 404s are never limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_missing_names_cannot_make_the_cache_hammer_its_upstream() {
    let known = CrateBuilder::new("known", "1.0.0").build();
    let upstream = FakeUpstream::start([known.clone()]).await;
    let mut registry = cache(&[upstream.index_url()]);
    registry.client_miss_burst = 20;
    registry.client_misses_per_sec = 2.0;
    let wharf = Wharf::start(registry).await;
    let client = reqwest::Client::new();
    let index = |name: &str| wharf.url(&format!("/crates-io/index/{}", sparse_path(name)));

    // Within the budget: a name that exists and one that does not.
    let started = Instant::now();
    let response = client.get(index("known")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client.get(index("nothere")).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // A cheap generator of distinct names that look random.
    let names: Vec<String> = (0u64..10_000)
        .map(|i| {
            let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
            format!("r{x:016x}-{i}")
        })
        .collect();
    let statuses: Vec<(u16, Option<String>)> = futures::stream::iter(names)
        .map(|name| {
            let client = client.clone();
            let url = index(&name);
            async move {
                let response = client.get(url).send().await.unwrap();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (response.status().as_u16(), retry_after)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let asked = upstream.count(RequestKind::Index);
    // The burst, what refilled meanwhile, and one for rounding.
    let allowed = 20 + (2.0 * elapsed.as_secs_f64()).ceil() as usize + 1;
    assert!(
        asked <= allowed,
        "{asked} upstream index requests in {elapsed:?}; the budget allows {allowed}"
    );
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    let not_found = statuses.iter().filter(|(s, _)| *s == 404).count();
    assert_eq!(refused.len() + not_found, 10_000, "only 404 or 429");
    assert!(
        refused.len() >= 10_000 - allowed,
        "{} refused",
        refused.len()
    );
    assert!(
        refused.iter().all(|(_, r)| r
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok())
            .is_some_and(|s| s >= 1)),
        "every 429 says when to come back"
    );

    // Over budget, the cargo-shaped error says what happened.
    let response = client.get(index("one-more-name")).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let body: serde_json::Value = response.json().await.unwrap();
    let detail = body["errors"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("too many requests"), "{detail}");

    // Hits and remembered 404s are not limited, even now.
    let response = client.get(index("known")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client.get(index("nothere")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(upstream.count(RequestKind::Index) <= asked + 1);

    let metrics = wharf.get_text("/metrics").await;
    let counted = crate::common::sample(
        &metrics,
        "wharf_upstream_budget_refused_total{registry=\"crates-io\"}",
    )
    .and_then(|v| v.parse::<usize>().ok())
    .expect("the refusals are counted in /metrics");
    assert_eq!(counted, refused.len() + 1);
    let status = wharf.get_json("/status.json").await;
    assert_eq!(
        status["registries"]["crates-io"]["counters"]["upstream_budget_refused"], counted,
        "{status}"
    );
    wharf.stop().await;
}

/// Issue 13 (8): whatever the clients, a cache asks its upstreams no more
/// than `upstream_requests_per_sec`: misses from many requests at once are
/// spaced at the rate (and still answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_toward_the_upstream_are_spaced_at_the_registry_rate() {
    let upstream = FakeUpstream::start([CrateBuilder::new("known", "1.0.0").build()]).await;
    let mut registry = cache(&[upstream.index_url()]);
    registry.client_miss_burst = 0;
    registry.upstream_requests_per_sec = 40.0;
    registry.upstream_requests_burst = 1;
    let wharf = Wharf::start(registry).await;
    let client = reqwest::Client::new();
    let statuses: Vec<u16> = futures::stream::iter(0..80)
        .map(|i| {
            let client = client.clone();
            let url = wharf.url(&format!(
                "/crates-io/index/{}",
                sparse_path(&format!("n-{i}"))
            ));
            async move { client.get(url).send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 404), "{statuses:?}");
    let mut at: Vec<Instant> = upstream
        .requests()
        .iter()
        .filter(|r| r.kind == RequestKind::Index)
        .map(|r| r.at)
        .collect();
    at.sort();
    assert_eq!(at.len(), 80);
    // Evenly spaced: 80 requests at 40/s span about two seconds, and no
    // half second holds more than its share (plus one for the edges).
    let span = *at.last().unwrap() - at[0];
    assert!(
        span >= Duration::from_millis(1800),
        "80 requests in {span:?}"
    );
    for (i, first) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|t| **t - *first < Duration::from_millis(500))
            .count();
        assert!(within <= 21, "{within} requests within 500 ms");
    }
    wharf.stop().await;
}
