//! The alert webhook: one alert and one recovery per outage, posted as
//! `{"text": ...}` to a receiver on loopback, with no credential in it.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, routing::post};
use serde_json::Value;
use wharf_config::{Config, Registry};
use wharf_test_support::{
    fixture::{CrateBuilder, sparse_path},
    upstream::FakeUpstream,
};

use crate::common::{Wharf, cache, wharf_cli};
use crate::mirror::text;

/// A webhook receiver on loopback that keeps every body posted to `/hook`.
pub(crate) struct Receiver {
    pub(crate) url: String,
    got: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State(got): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                        got.lock().unwrap().push(body);
                        "ok"
                    },
                ),
            )
            .with_state(Arc::clone(&got));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, got }
    }

    pub(crate) fn texts(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|body| {
                body["text"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no text field in {body}"))
                    .to_owned()
            })
            .collect()
    }

    /// Waits until `n` bodies have arrived; returns their texts.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..300 {
            let texts = self.texts();
            if texts.len() >= n {
                return texts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{n} alerts did not arrive; got {:?}", self.texts());
    }
}

/// Acceptance 2: the upstream of a cache stops, the server marks it down,
/// and it comes back: the receiver gets exactly one alert naming the
/// registry and one recovery, and neither shows the upstream's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_alert_and_one_recovery_for_an_upstream_outage() {
    let receiver = Receiver::start().await;
    let upstream = FakeUpstream::start([
        CrateBuilder::new("al-a", "1.0.0").build(),
        CrateBuilder::new("al-b", "1.0.0").build(),
    ])
    .await;
    let with_password = upstream
        .index_url()
        .replacen("http://", "http://alice:hunter2@", 1);
    let dir = tempfile::tempdir().unwrap();
    let mut registry = cache(&[with_password]);
    registry.probe_interval = Duration::from_millis(200);
    let wharf = Wharf::start_with(Config {
        data_dir: dir.path().join("data"),
        alert_webhook: Some(receiver.url.clone()),
        alert_check_interval: Duration::from_millis(100),
        registries: [("crates-io".to_owned(), Registry::Cache(registry))].into(),
        ..Config::default()
    })
    .await;
    let get = |path: String| {
        let url = wharf.url(&path);
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(
        get(format!("/crates-io/index/{}", sparse_path("al-a"))).await,
        200
    );
    assert_eq!(
        get("/crates-io/crates/al-a/al-a-1.0.0.crate".into()).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.texts(),
        Vec::<String>::new(),
        "nothing is wrong yet"
    );

    // The upstream stops; a miss finds it gone and marks it down.
    upstream.stop().await;
    let status = get(format!("/crates-io/index/{}", sparse_path("al-b"))).await;
    assert!(status >= 500, "{status}");
    let texts = receiver.wait_for(1).await;
    assert!(
        texts[0].contains("PROBLEM")
            && texts[0].contains("crates-io")
            && texts[0].contains("every upstream down"),
        "{texts:?}"
    );
    // `wharf check` says the same, critical, while what is held is served.
    let out = wharf_cli(&["check", &wharf.url(""), "--crate", "al-a"]);
    let line = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{line}");
    assert!(
        line.starts_with("WHARF CRITICAL - crates-io: every upstream down")
            && line.contains("al-a 1.0.0 ok"),
        "{line}"
    );
    // Still down a while later: no second alert within alert_interval.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.texts().len(), 1, "{:?}", receiver.texts());

    // It comes back; the background probe marks it up.
    upstream.restart().await;
    let texts = receiver.wait_for(2).await;
    assert!(
        texts[1].contains("RECOVERED") && texts[1].contains("crates-io"),
        "{texts:?}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let texts = receiver.texts();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts.iter().all(|t| !t.contains("hunter2")),
        "a password in an alert: {texts:?}"
    );
    wharf.stop().await;
}

/// A mirror whose scheduled pass cannot run (its git index is gone) is
/// alerted about once, and recovers when a later pass succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_mirror_pass_is_alerted_and_recovers() {
    let receiver = Receiver::start().await;
    let upstream = FakeUpstream::start([CrateBuilder::new("al-m", "1.0.0").build()]).await;
    upstream.git_commit("initial");
    let dir = tempfile::tempdir().unwrap();
    let config = crate::mirror::mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "index_git = \"{}\"\nsync_interval = \"1s\"",
            upstream.git_url()
        ),
    );
    let mut config = Config::load(Some(&config)).unwrap();
    config.alert_webhook = Some(receiver.url.clone());
    config.alert_check_interval = Duration::from_millis(100);
    upstream.stop().await;
    let wharf = Wharf::start_with(config).await;
    let texts = receiver.wait_for(1).await;
    assert!(
        texts[0].contains("PROBLEM") && texts[0].contains("m: mirror sync pass failing: git index"),
        "{texts:?}"
    );
    upstream.restart().await;
    let texts = receiver.wait_for(2).await;
    assert!(
        texts[1].contains("RECOVERED") && texts[1].contains("m: mirror sync pass failing"),
        "{texts:?}"
    );
    // Passes go on succeeding: nothing more.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.texts().len(), 2, "{:?}", receiver.texts());
    wharf.stop().await;
}

/// The bucket goes away: one alert that storage is unavailable, `wharf
/// check` critical saying so, and a recovery when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_goes_away_is_alerted_and_checked_critical() {
    let receiver = Receiver::start().await;
    let upstream = FakeUpstream::start([CrateBuilder::new("al-s", "1.0.0").build()]).await;
    let s3 = wharf_test_support::s3::TestS3::shared();
    let target = s3.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = wharf_test_support::proxy::TcpProxy::start(target).await;
    let mut storage = crate::common::Backend::S3.storage();
    storage.endpoint = Some(format!("http://{}", proxy.addr()));
    storage.timeout = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let wharf = Wharf::start_with(Config {
        data_dir: dir.path().join("data"),
        storage,
        alert_webhook: Some(receiver.url.clone()),
        alert_check_interval: Duration::from_millis(100),
        registries: [(
            "crates-io".to_owned(),
            Registry::Cache(cache(&[upstream.index_url()])),
        )]
        .into(),
        ..Config::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.texts(),
        Vec::<String>::new(),
        "nothing is wrong yet"
    );

    proxy.cut();
    let texts = receiver.wait_for(1).await;
    assert!(
        texts[0].starts_with("[wharf] PROBLEM on http://127.0.0.1:")
            && texts[0].contains(": storage unavailable: "),
        "{texts:?}"
    );
    let out = wharf_cli(&["check", &wharf.url("")]);
    let line = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{line}");
    assert!(
        line.starts_with("WHARF CRITICAL - crates-io: storage unavailable (/readyz 503"),
        "{line}"
    );

    proxy.restore();
    let texts = receiver.wait_for(2).await;
    assert!(
        texts[1].contains("RECOVERED") && texts[1].contains("storage unavailable"),
        "{texts:?}"
    );
    let out = wharf_cli(&["check", &wharf.url("")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(receiver.texts().len(), 2, "{:?}", receiver.texts());
    wharf.stop().await;
}
