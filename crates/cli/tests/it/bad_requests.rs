//! Acceptance 7: hostile requests get 4xx and touch neither upstream nor disk.

use wharf_test_support::{fixture::CrateBuilder, http::raw_request, upstream::FakeUpstream};

use crate::common::{Wharf, cache, files_under};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_get_4xx_and_touch_nothing() {
    let upstream = FakeUpstream::start([CrateBuilder::new("solo", "1.0.0").build()]).await;
    let wharf = Wharf::start(cache(&[upstream.index_url()])).await;
    let outside = wharf.data_dir.parent().unwrap().to_owned();
    let before_outside = files_under(&outside);
    let long = "a".repeat(10_000);
    let paths = [
        "/crates-io/index/../../etc/passwd".to_owned(),
        "/crates-io/index/..%2f..%2fetc%2fpasswd".to_owned(),
        "/crates-io/index/se/rd/..".to_owned(),
        "/crates-io/index/3/a/a%00b".to_owned(),
        "/crates-io/index/3/a/a%2fb".to_owned(),
        "/crates-io/index/se/rd/Serde".to_owned(),
        format!("/crates-io/index/aa/aa/{long}"),
        "/crates-io/crates/..%2F..%2Fetc/passwd-1.0.0.crate".to_owned(),
        "/crates-io/crates/a%00b/a%00b-1.0.0.crate".to_owned(),
        "/crates-io/crates/solo/other-1.0.0.crate".to_owned(),
        "/crates-io/crates/solo/solo-..%2F..%2Fx.crate".to_owned(),
        "/crates-io/crates/solo/solo-1.0.0.tar".to_owned(),
        format!("/crates-io/crates/{long}/{long}-1.0.0.crate"),
        "/crates-io/crates/solo/solo-1.0.0.crate/../../x".to_owned(),
        "/nope/index/se/rd/serde".to_owned(),
        "/nope/crates/solo/solo-1.0.0.crate".to_owned(),
        "/crates-io/index/%ff%fe".to_owned(),
        "/../../etc/passwd".to_owned(),
    ];
    for path in &paths {
        let (status, response) = raw_request(
            wharf.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            (400..500).contains(&status),
            "{path} answered {status}: {response}"
        );
    }
    assert!(
        upstream.requests().is_empty(),
        "upstream was asked: {:?}",
        upstream.requests()
    );
    // Nothing but the database (traffic statistics) is on the disk.
    let stored: Vec<_> = wharf
        .stored_files()
        .into_iter()
        .filter(|f| !f.starts_with("wharf.db"))
        .collect();
    assert!(stored.is_empty(), "stored: {stored:?}");
    let after_outside: Vec<_> = files_under(&outside)
        .into_iter()
        .filter(|f| !f.starts_with("data/"))
        .collect();
    let before_outside: Vec<_> = before_outside
        .into_iter()
        .filter(|f| !f.starts_with("data/"))
        .collect();
    assert_eq!(after_outside, before_outside);

    // A raw NUL byte in the request line is refused by the HTTP parser itself.
    let (status, _) = raw_request(
        wharf.addr,
        "GET /crates-io/index/3/a/a\0b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!((400..500).contains(&status), "NUL answered {status}");
    wharf.stop().await;
}
