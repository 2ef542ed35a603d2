//! `/metrics`: what a real cargo's requests do to the counters, and that the
//! text is Prometheus's own format (checked by `promtool`).

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Stdio},
};

use wharf_test_support::{
    cargo::CargoProject,
    fixture::{graph, graph_root},
    upstream::FakeUpstream,
};

use crate::{
    access::write_config,
    common::{WharfProcess, cargo_ok},
};

/// The value of the sample `series` (name and labels, as written) in `text`,
/// 0 when it is absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

/// The route class of a path of registry `crates-io`, as the README defines
/// them; `None` for any other path.
fn route_of(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/crates-io/")?;
    Some(if rest == "index/config.json" {
        "config"
    } else if rest.starts_with("index/") {
        "index"
    } else if rest.starts_with("crates/") {
        "crate"
    } else if rest.starts_with("api/") || rest == "me" {
        "api"
    } else {
        "other"
    })
}

/// Runs `promtool check metrics` on `text`; panics with its complaint, or
/// with how to install it when it is missing.
pub(crate) fn promtool_check_metrics(text: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot run promtool ({e}): install Debian's `prometheus` package (apt-get install -y prometheus), as .ci/run does"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused /metrics:\n{}{}\n--- the text:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 14, acceptance 1 (metrics): after a real `cargo generate-lockfile`
/// and `cargo fetch` through a cache, the request, byte and latency metrics
/// moved by exactly what the access log shows cargo asked, the upstream
/// latency histogram counts every request the upstream got, and `/metrics`
/// passes `promtool check metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_byte_and_latency_metrics_follow_a_cargo_fetch() {
    let crates = graph("mx", 6);
    let upstream = FakeUpstream::start(crates).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\n",
            upstream.index_url()
        ),
    );
    let log = dir.path().join("wharf.log");
    let server = WharfProcess::spawn_logging_to(&config, &log);
    let scrape = || async {
        let response = reqwest::get(format!("{}/metrics", server.base_url))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let before = scrape().await;

    let project = CargoProject::new(
        &format!("sparse+{}/crates-io/index/", server.base_url),
        &[(&graph_root("mx"), "1")],
    );
    cargo_ok(&project, &["generate-lockfile"]);
    cargo_ok(&project, &["fetch"]);
    let after = scrape().await;

    // What cargo asked, from the access log: count and bytes per route and
    // status class. A server writes its access lines in batches, at least
    // every 200 ms: all of them are out once both scrapes' lines are.
    let scrapes_logged = |log: &str| log.matches("wharf::access: GET /metrics ").count() == 2;
    let mut waited = 0;
    let log = loop {
        let log = std::fs::read_to_string(&log).unwrap();
        if scrapes_logged(&log) || waited == 50 {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    };
    assert!(
        scrapes_logged(&log),
        "the scrapes were never logged:\n{log}"
    );
    let mut requests: BTreeMap<(&str, String), f64> = BTreeMap::new();
    let mut bytes: BTreeMap<&str, f64> = BTreeMap::new();
    for line in log.lines() {
        let Some(entry) = line.split("wharf::access: ").nth(1) else {
            continue;
        };
        let fields: Vec<&str> = entry.split_whitespace().collect();
        let [_method, path, status, size, _ms] = fields[..] else {
            panic!("an access log line of another shape: {line}");
        };
        let Some(route) = route_of(path) else {
            continue;
        };
        let size: f64 = size
            .strip_suffix('B')
            .unwrap_or_else(|| panic!("a body of unknown size: {line}"))
            .parse()
            .unwrap();
        *requests
            .entry((route, format!("{}xx", &status[..1])))
            .or_default() += 1.0;
        *bytes.entry(route).or_default() += size;
    }
    for wanted in ["config", "index", "crate"] {
        assert!(
            requests.contains_key(&(wanted, "2xx".to_owned())),
            "cargo made no successful {wanted} request: {requests:?}\n{log}"
        );
    }
    assert_eq!(
        requests
            .iter()
            .filter(|((route, _), _)| *route == "crate")
            .map(|(_, n)| n)
            .sum::<f64>(),
        6.0,
        "cargo downloaded each crate once: {requests:?}"
    );
    for route in ["index", "crate", "api", "config", "other"] {
        let mut in_route = 0.0;
        for status in ["2xx", "3xx", "4xx", "5xx"] {
            let series = format!(
                "wharf_http_requests_total{{registry=\"crates-io\",route=\"{route}\",status=\"{status}\"}}"
            );
            let expected = requests
                .get(&(route, status.to_owned()))
                .copied()
                .unwrap_or(0.0);
            in_route += expected;
            assert_eq!(
                sample(&after, &series) - sample(&before, &series),
                expected,
                "{series}\n{after}"
            );
        }
        let series =
            format!("wharf_http_response_bytes_total{{registry=\"crates-io\",route=\"{route}\"}}");
        assert_eq!(
            sample(&after, &series) - sample(&before, &series),
            bytes.get(route).copied().unwrap_or(0.0),
            "{series}"
        );
        if route != "other" {
            // `other` also holds the server-wide routes (the scrapes).
            let count = format!("wharf_http_request_duration_seconds_count{{route=\"{route}\"}}");
            assert_eq!(
                sample(&after, &count) - sample(&before, &count),
                in_route,
                "{count}"
            );
            let sum = format!("wharf_http_request_duration_seconds_sum{{route=\"{route}\"}}");
            if in_route > 0.0 {
                assert!(sample(&after, &sum) > sample(&before, &sum), "{sum}");
            }
        }
    }

    // Every request the upstream got was timed, under its configured URL.
    let upstream_counts: Vec<f64> = after
        .lines()
        .filter_map(|line| {
            line.strip_prefix(
                "wharf_upstream_request_duration_seconds_count{registry=\"crates-io\",upstream=\"",
            )
        })
        .map(|rest| {
            let (url, value) = rest.split_once("\"} ").unwrap();
            assert!(
                upstream.index_url().contains(url.trim_end_matches('/')),
                "{url}"
            );
            value.parse().unwrap()
        })
        .collect();
    assert_eq!(
        upstream_counts,
        [upstream.requests().len() as f64],
        "{after}"
    );

    promtool_check_metrics(&after);
    server.kill();
}

/// Issue 14 (metrics, mirrors): `/metrics` tells how long ago a mirror's last
/// clean pass ended, how long the last pass took and how many failures it
/// had, from the tree's `status.json`, so a pass run by `wharf sync` from
/// cron shows too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_freshness_and_failures_are_metrics() {
    use wharf_test_support::{
        fixture::CrateBuilder,
        upstream::{Fault, Target},
    };

    use crate::mirror::{mirror_config, sync, sync_ok};

    let upstream = FakeUpstream::start(graph("mm", 3)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(dir.path(), &upstream, "include = [\"mm-0\"]");
    sync_ok(&config);
    let server = WharfProcess::spawn(&config);
    let scrape = || async {
        reqwest::get(format!("{}/metrics", server.base_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let clean = scrape().await;
    let since = "wharf_mirror_seconds_since_success{registry=\"m\"}";
    let failures = "wharf_mirror_last_pass_failures{registry=\"m\"}";
    let duration = "wharf_mirror_last_pass_duration_seconds{registry=\"m\"}";
    assert!(clean.contains(&format!("{since} ")), "{clean}");
    assert!(sample(&clean, since) < 60.0, "{clean}");
    assert!(clean.contains(&format!("{duration} ")), "{clean}");
    assert_eq!(sample(&clean, failures), 0.0, "{clean}");

    // A pass whose one new download fails: counted, and the last clean
    // pass stays the earlier one.
    upstream.publish(CrateBuilder::new("mm-0", "1.1.0").build());
    upstream.set_fault(Target::Crates, Fault::Status(500));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = tokio::task::block_in_place(|| sync(&config));
    assert!(!out.status.success(), "the pass had a failure");
    let failed = scrape().await;
    assert_eq!(sample(&failed, failures), 1.0, "{failed}");
    assert!(
        sample(&failed, since) >= 1.0,
        "the last clean pass is the first one: {failed}"
    );
    promtool_check_metrics(&failed);
    server.kill();
}
