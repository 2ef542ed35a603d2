//! `wharf check` and a mirror's lag: the one line and the exit status
//! against a wharf and against the same tree served by nginx alone, while
//! the mirror is lagging, fresh and down; the lag in `status.json` and on
//! `/metrics` following the git index's commit time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wharf_config::{Config, Registry};
use wharf_test_support::{
    fixture::CrateBuilder,
    nginx::{Nginx, which},
    upstream::FakeUpstream,
};

use crate::alerts::Receiver;
use crate::common::{Wharf, wharf_cli};
use crate::mirror::{mirror_config, sync_ok, text};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs `wharf check ARGS`; returns its exit status and its one line.
fn check(args: &[&str]) -> (i32, String) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    let out = wharf_cli(&all);
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "wharf check {args:?} printed more or less than one line:\n{stdout}\n{}",
        text(&out.stderr)
    );
    (out.status.code().expect("an exit status"), stdout)
}

/// Asserts `wharf check ARGS` exits `code` with a line that starts with
/// `WHARF {word} - ` and contains each of `says`.
fn expect(args: &[&str], code: i32, says: &[&str]) -> String {
    let (got, line) = check(args);
    let word = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code as usize];
    assert!(
        got == code && line.starts_with(&format!("WHARF {word} - ")),
        "wharf check {args:?} exited {got}, expected {code} ({word}): {line}"
    );
    for needle in says {
        assert!(line.contains(needle), "{needle:?} is not in {line}");
    }
    line
}

/// The `wharf_mirror_lag_seconds` of registry `m` on `/metrics`.
async fn metric_lag(wharf: &Wharf) -> i64 {
    let body = wharf.get_text("/metrics").await;
    crate::common::sample(&body, "wharf_mirror_lag_seconds{registry=\"m\"}")
        .unwrap_or_else(|| panic!("no lag of m in:\n{body}"))
        .parse()
        .unwrap()
}

/// Acceptance 1 and 3: lagging (the upstream's head is three hours old),
/// fresh (a new head, synced), down (a crate file gone, then the servers
/// gone): exit 1, 0, 2 from a wharf and from nginx serving the tree alone,
/// each line saying why; `status.json` and `/metrics` follow the commit time,
/// and the lag is alerted about and recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tells_lagging_fresh_and_down_on_wharf_and_nginx() {
    assert!(
        which("nginx").is_some(),
        "this test needs nginx (apt-get install nginx-light); .ci/run installs it"
    );
    let upstream = FakeUpstream::start([
        CrateBuilder::new("ck-a", "1.0.0").build(),
        CrateBuilder::new("ck-b", "0.1.0").build(),
    ])
    .await;
    let three_hours_ago = now() - 3 * 3600;
    upstream.git_commit_at("three hours ago", three_hours_ago);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let nginx = Nginx::start(dir.path(), &data).expect("start nginx");
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "index_git = \"{}\"\nstatic_url = \"http://{}/m\"",
            upstream.git_url(),
            nginx.addr
        ),
    );
    let stdout = sync_ok(&config);
    assert!(
        stdout.contains("upstream's newest change was made 3h")
            && stdout.contains("; the tree holds it"),
        "{stdout}"
    );

    // The same tree served by wharf, whose config.json names itself.
    let mut served = Config::load(Some(&config)).unwrap();
    for registry in served.registries.values_mut() {
        if let Registry::Mirror(mirror) = registry {
            mirror.static_url = None;
        }
    }
    // It alerts about the lag too.
    let receiver = Receiver::start().await;
    served.alert_webhook = Some(receiver.url.clone());
    served.alert_check_interval = Duration::from_millis(100);
    let wharf = Wharf::start_with(served).await;
    let wharf_url = wharf.url("");
    let tree_url = format!("http://{}/m", nginx.addr);
    let nginx_url = format!("http://{}", nginx.addr);

    // Lagging: synced, but to an upstream head three hours old.
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("m/status.json")).unwrap()).unwrap();
    assert_eq!(
        status["synced_upstream_time"].as_i64(),
        Some(three_hours_ago),
        "{status}"
    );
    assert!(
        (3 * 3600..3 * 3600 + 60).contains(&status["lag_seconds"].as_i64().unwrap()),
        "{status}"
    );
    let lag = metric_lag(&wharf).await;
    assert!((3 * 3600..3 * 3600 + 60).contains(&lag), "{lag}");
    for args in [
        vec![wharf_url.as_str(), "--crate", "ck-a"],
        vec![tree_url.as_str(), "--crate", "ck-a"],
        vec![nginx_url.as_str(), "--registry", "m", "--crate", "ck-a"],
    ] {
        expect(&args, 1, &["lag 3h 0m (over 2h 0m)", "ck-a 1.0.0 ok"]);
    }
    let texts = receiver.wait_for(1).await;
    assert!(
        texts[0].contains("PROBLEM")
            && texts[0]
                .contains("m: mirror lagging behind its upstream: 3h 0m behind (bound 2h 0m)"),
        "{texts:?}"
    );
    // Past --critical-lag it is critical.
    expect(
        &[&tree_url, "--max-lag", "1h", "--critical-lag", "2h"],
        2,
        &["lag 3h 0m (over 2h 0m)"],
    );

    // Fresh: a new version upstream, a new head now, synced.
    upstream.publish(CrateBuilder::new("ck-a", "1.1.0").build());
    upstream.git_commit_at("now", now());
    sync_ok(&config);
    // wharf re-reads an index file of a mirror's tree at most every 2 s.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let lag = metric_lag(&wharf).await;
    assert!((0..60).contains(&lag), "{lag}");
    for args in [
        vec![wharf_url.as_str(), "--crate", "ck-a"],
        vec![tree_url.as_str(), "--crate", "ck-a"],
        vec![nginx_url.as_str(), "--registry", "m", "--crate", "ck-a"],
    ] {
        expect(&args, 0, &["ck-a 1.1.0 ok", "lag "]);
    }
    expect(&[&tree_url], 0, &["index ok"]);
    let texts = receiver.wait_for(2).await;
    assert!(
        texts.len() == 2
            && texts[1].contains("RECOVERED")
            && texts[1].contains("m: mirror lagging"),
        "{texts:?}"
    );

    // Down: the newest crate file is gone from the tree.
    std::fs::remove_file(data.join("m/crates/ck-a/ck-a-1.1.0.crate")).unwrap();
    for args in [
        vec![wharf_url.as_str(), "--crate", "ck-a"],
        vec![tree_url.as_str(), "--crate", "ck-a"],
    ] {
        expect(&args, 2, &["crate file ck-a 1.1.0: 404"]);
    }
    // Down: nothing answers.
    drop(nginx);
    wharf.stop().await;
    for url in [&wharf_url, &tree_url] {
        expect(&[url.as_str()], 2, &["cannot reach", "status.json"]);
    }
}

/// What is not a wharf nor a tree is UNKNOWN, not OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_of_something_else_is_unknown() {
    let upstream = FakeUpstream::start([CrateBuilder::new("ck-x", "1.0.0").build()]).await;
    expect(&[&upstream.url()], 3, &["neither a wharf server"]);
}

/// A registry that requires credentials: critical without them (401), ok
/// with a client's token from `WHARF_CHECK_TOKEN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_sends_credentials_to_a_registry_that_requires_them() {
    let upstream = FakeUpstream::start([CrateBuilder::new("ck-t", "1.0.0").build()]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::access::write_config(
        dir.path(),
        &format!(
            "[registries.company]\nkind = \"cache\"\nupstreams = [\"{}\"]\nauth_required = true\n",
            upstream.index_url()
        ),
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let token = crate::access::add_client(&config, &["ci", "--registry", "company"]);
    let url = wharf.url("");
    expect(
        &[&url, "--crate", "ck-t"],
        2,
        &["company: ", "index/config.json: 401"],
    );
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["check", &url, "--crate", "ck-t"])
            .env("WHARF_CHECK_TOKEN", &token)
            .output()
            .unwrap()
    });
    let line = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{line}");
    assert!(
        line.starts_with("WHARF OK - company: ") && line.contains("ck-t 1.0.0 ok"),
        "{line}"
    );
    assert!(!line.contains(&token), "{line}");
    wharf.stop().await;
}

/// Acceptance 3 for a feed-driven mirror: a feed poll takes the upstream's
/// time from the newest item's `<pubDate>`; a feed whose newest item is
/// three hours old makes a lagging tree, a new item a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_poll_takes_the_lag_from_the_newest_item() {
    let three_hours_ago = (now() - 3 * 3600) as u64;
    let upstream = FakeUpstream::start([]).await;
    upstream.publish_at(CrateBuilder::new("ck-f", "1.0.0").build(), three_hours_ago);
    let dir = tempfile::tempdir().unwrap();
    let config = mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "include = [\"ck-f\"]\nfeed_url = \"{}\"",
            upstream.feed_url()
        ),
    );
    let tree = dir.path().join("data/m");
    let status = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(tree.join("status.json")).unwrap()).unwrap()
    };
    // A full pass over the sparse index: no upstream time, no lag yet.
    sync_ok(&config);
    assert!(status()["synced_upstream_time"].is_null(), "{}", status());

    let poll =
        || crate::common::wharf_cli(&["sync", "--config", config.to_str().unwrap(), "--feed"]);
    assert!(poll().status.success());
    assert_eq!(
        status()["synced_upstream_time"].as_u64(),
        Some(three_hours_ago),
        "{}",
        status()
    );
    assert!(
        status()["lag_seconds"].as_u64().unwrap() >= 3 * 3600,
        "{}",
        status()
    );

    upstream.publish(CrateBuilder::new("ck-f", "1.1.0").build());
    assert!(poll().status.success());
    assert!(
        status()["lag_seconds"].as_u64().unwrap() < 60,
        "{}",
        status()
    );
    assert!(tree.join("crates/ck-f/ck-f-1.1.0.crate").is_file());
}
