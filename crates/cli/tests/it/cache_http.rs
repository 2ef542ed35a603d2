//! The HTTP contract of a cache registry, checked request by request.

use std::io::Read;

use reqwest::header;
use wharf_test_support::{
    fixture::{CrateBuilder, sparse_path},
    upstream::{FakeUpstream, RequestKind},
};

use crate::common::{Wharf, cache};

fn raw_client() -> reqwest::Client {
    // No automatic decompression: the test looks at the bytes on the wire.
    reqwest::Client::builder().no_gzip().build().unwrap()
}

/// A fixture crate whose index file is big enough to be worth compressing.
fn many_versions() -> Vec<wharf_test_support::fixture::FixtureCrate> {
    (0..40)
        .map(|i| CrateBuilder::new("popular", &format!("1.0.{i}")).build())
        .collect()
}

crate::on_both_backends!(
    index_files_are_relayed_byte_for_byte_with_etag_304_and_compression,
    super::index_files_relayed
);

/// On the disk and on S3.
async fn index_files_relayed(backend: crate::common::Backend) {
    let versions = many_versions();
    let upstream = FakeUpstream::start(versions.clone()).await;
    let wharf = Wharf::start_on(backend, cache(&[upstream.index_url()])).await;
    let client = raw_client();
    let url = wharf.url(&format!("/crates-io/index/{}", sparse_path("popular")));
    let expected: String = versions.iter().map(|v| v.index_line() + "\n").collect();

    let plain = client.get(&url).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    let etag = plain.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert!(plain.headers().contains_key(header::LAST_MODIFIED));
    assert_eq!(
        plain.text().await.unwrap(),
        expected,
        "relayed byte for byte"
    );

    let again = client
        .get(&url)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let gz = client
        .get(&url)
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
    let gz_etag = gz.headers()[header::ETAG].to_str().unwrap().to_owned();
    let compressed = gz.bytes().await.unwrap();
    assert!(
        compressed.len() * 2 < expected.len(),
        "{} vs {}",
        compressed.len(),
        expected.len()
    );
    let mut unpacked = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut unpacked)
        .unwrap();
    assert_eq!(unpacked, expected);
    let gz_again = client
        .get(&url)
        .header(header::ACCEPT_ENCODING, "gzip")
        .header(header::IF_NONE_MATCH, &gz_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(gz_again.status(), 304, "the variant tag revalidates too");

    let zst = client
        .get(&url)
        .header(header::ACCEPT_ENCODING, "gzip, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(zst.headers()[header::CONTENT_ENCODING], "zstd");
    let unpacked = zstd::decode_all(&zst.bytes().await.unwrap()[..]).unwrap();
    assert_eq!(String::from_utf8(unpacked).unwrap(), expected);

    let br = client
        .get(&url)
        .header(header::ACCEPT_ENCODING, "br")
        .send()
        .await
        .unwrap();
    assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");

    assert_eq!(
        upstream.count(RequestKind::Index),
        1,
        "one upstream fetch for all of that"
    );
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_json_points_dl_at_wharf() {
    let upstream = FakeUpstream::start([]).await;
    let wharf = Wharf::start(cache(&[upstream.index_url()])).await;
    let config = wharf.get_json("/crates-io/index/config.json").await;
    assert_eq!(
        config["dl"],
        wharf.url("/crates-io/crates/{crate}/{crate}-{version}.crate")
    );
    assert_eq!(upstream.requests().len(), 0, "config.json is wharf's own");
    wharf.stop().await;
}

crate::on_both_backends!(
    crate_files_are_immutable_and_head_works,
    super::crate_files_immutable
);

/// On the disk and on S3.
async fn crate_files_immutable(backend: crate::common::Backend) {
    let krate = CrateBuilder::new("headed", "0.1.0").build();
    let upstream = FakeUpstream::start([krate.clone()]).await;
    let wharf = Wharf::start_on(backend, cache(&[upstream.index_url()])).await;
    let client = raw_client();
    let url = wharf.url("/crates-io/crates/headed/headed-0.1.0.crate");

    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()[header::CONTENT_LENGTH],
        krate.bytes.len().to_string().as_str()
    );
    let get = client.get(&url).send().await.unwrap();
    assert!(
        get.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let etag = get.headers()[header::ETAG].clone();
    assert_eq!(get.bytes().await.unwrap(), krate.bytes);
    let cond = client
        .get(&url)
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cond.status(), 304);
    assert_eq!(upstream.count(RequestKind::Crate), 1);

    let missing = client
        .get(wharf.url("/crates-io/crates/headed/headed-9.9.9.crate"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert!(
        body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("9.9.9"),
        "{body}"
    );
    wharf.stop().await;
}

/// cargo probes `-`/`_` spellings of missing names: a 404 is remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_cached_briefly() {
    let upstream = FakeUpstream::start([]).await;
    let wharf = Wharf::start(cache(&[upstream.index_url()])).await;
    let url = wharf.url("/crates-io/index/no/ne/nonesuch");
    for _ in 0..3 {
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 404);
    }
    assert_eq!(upstream.count(RequestKind::Index), 1);
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_status_metrics_and_dashboard_answer() {
    let upstream = FakeUpstream::start([]).await;
    let wharf = Wharf::start(cache(&[upstream.index_url()])).await;
    for (path, needle) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/status.json", "\"crates-io\""),
        (
            "/metrics",
            "wharf_index_memory_hits_total{registry=\"crates-io\"}",
        ),
        ("/", "replace-with"),
    ] {
        let response = reqwest::get(wharf.url(path)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains(needle), "{path}: {text}");
    }
    wharf.stop().await;
}

/// A flood of `/` renders the dashboard at most once a second: requests
/// made in between show on the page only once it is rendered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_rendered_at_most_once_a_second() {
    let upstream = FakeUpstream::start([CrateBuilder::new("solo", "1.0.0").build()]).await;
    let wharf = Wharf::start(cache(&[upstream.index_url()])).await;
    let index = wharf.url(&format!("/crates-io/index/{}", sparse_path("solo")));
    let since_start = |page: &str| -> u64 {
        let end = page
            .find("</div><div class=l>requests since start")
            .unwrap_or_else(|| panic!("no requests-since-start tile in {page}"));
        let start = page[..end].rfind('>').unwrap() + 1;
        page[start..end].parse().unwrap()
    };
    let hit = || async { assert_eq!(reqwest::get(&index).await.unwrap().status(), 200) };
    hit().await;
    // Both pages must come within the second; a machine too slow for that
    // tries again, and fails after three tries.
    let mut tries = 0;
    let first = loop {
        tries += 1;
        assert!(tries <= 3, "never two pages within a second");
        let started = std::time::Instant::now();
        let first = wharf.get_text("/").await;
        for _ in 0..5 {
            hit().await;
        }
        let again = wharf.get_text("/").await;
        if started.elapsed() < std::time::Duration::from_millis(900) {
            assert_eq!(
                since_start(&again),
                since_start(&first),
                "rendered again within a second"
            );
            break first;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    };
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = since_start(&wharf.get_text("/").await);
    assert!(
        later >= since_start(&first) + 5,
        "{} requests, then {later}",
        since_start(&first)
    );
    wharf.stop().await;
}

/// Issue 13 (2): an upstream URL with credentials (`user:secret@`) is used,
/// but shown nowhere: not on `/`, `/status.json`, `/metrics`, in an error
/// answered to cargo, nor in the real binary's output at start and when
/// the upstream fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_credentials_are_never_shown() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    use wharf_test_support::upstream::{Fault, Target};

    let upstream = FakeUpstream::start([CrateBuilder::new("solo", "1.0.0").build()]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"sparse+http://user:secret@{}/index/\"]\nupstream_timeout = \"2s\"\n",
            dir.path().join("d").display(),
            upstream.addr()
        ),
    )
    .unwrap();
    let log = dir.path().join("wharf.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("WHARF_LOG", "info")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Its first line names the URL it serves at.
    let started = Instant::now();
    let base = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(url) = text
            .lines()
            .find_map(|l| l.strip_prefix("wharf "))
            .and_then(|rest| rest.split_whitespace().nth(2))
            && text.contains("registry = \"sparse+")
        {
            break url.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "wharf did not start: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("{base}{path}");
        let client = client.clone();
        async move {
            let response = client.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    // The credentials work (the fake upstream takes any), and are used.
    let (status, _) = get(&format!("/crates-io/index/{}", sparse_path("solo"))).await;
    assert_eq!(status, 200);
    // Then the upstream fails: the error cargo gets, and the log, name it.
    upstream.set_fault(Target::Index, Fault::Status(429));
    let (status, error) = get(&format!("/crates-io/index/{}", sparse_path("other"))).await;
    assert_eq!(status, 502, "{error}");
    assert!(
        error.contains("user:***@"),
        "the upstream is named: {error}"
    );

    for path in ["/", "/status.json", "/metrics"] {
        let (status, body) = get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            body.contains("user:***@"),
            "{path} shows the upstream: {body}"
        );
        assert!(
            !body.contains("secret"),
            "{path} shows the password: {body}"
        );
    }
    assert!(!error.contains("secret"), "{error}");

    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("marked down"),
        "the failure is logged: {text}"
    );
    assert!(text.contains("user:***@"), "{text}");
    assert!(
        !text.contains("secret"),
        "the output shows the password: {text}"
    );
}

/// An upstream that answers index files in gzip (as crates.io's CDN does):
/// wharf hands its gzip bytes on to cargo as they came, and compresses
/// nothing itself; a gzip body that does not decode is refused and not
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_gzip_form_is_handed_on_as_it_came() {
    let versions = many_versions();
    let upstream = FakeUpstream::start(versions.clone()).await;
    upstream.serve_gzip(true);
    let wharf = Wharf::start(cache(&[upstream.index_url()])).await;
    let client = raw_client();
    let url = wharf.url(&format!("/crates-io/index/{}", sparse_path("popular")));
    let upstream_gzip = upstream.index_file_gzip("popular").unwrap();
    for _ in 0..2 {
        let response = client
            .get(&url)
            .header(header::ACCEPT_ENCODING, "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        assert!(
            response.bytes().await.unwrap() == upstream_gzip,
            "not the upstream's gzip bytes"
        );
    }
    // What a client that takes no gzip gets is the decoded file.
    let plain = client.get(&url).send().await.unwrap();
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    let expected: String = versions.iter().map(|v| v.index_line() + "\n").collect();
    assert_eq!(plain.text().await.unwrap(), expected);

    // Cargo, end to end.
    let project =
        wharf_test_support::cargo::CargoProject::new(&wharf.index_url(), &[("popular", "1.0.39")]);
    crate::common::cargo_ok(&project, &["fetch"]);
    let metrics = wharf.get_text("/metrics").await;
    assert_eq!(
        crate::common::sample(&metrics, "wharf_index_compressions_total"),
        Some("0"),
        "{metrics}"
    );

    // A gzip body with a byte changed: its check fails, the client gets a
    // 502, and the file is not kept.
    upstream.publish(CrateBuilder::new("popular", "2.0.0").build());
    let other = wharf.url(&format!("/crates-io/index/{}", sparse_path("other")));
    upstream.publish(CrateBuilder::new("other", "1.0.0").build());
    upstream.set_fault(
        wharf_test_support::upstream::Target::Index,
        wharf_test_support::upstream::Fault::WrongBytes,
    );
    let refused = client.get(&other).send().await.unwrap();
    assert_eq!(refused.status(), 502);
    let text = refused.text().await.unwrap();
    assert!(text.contains("does not decode"), "{text}");
    upstream.clear_faults();
    let good = client.get(&other).send().await.unwrap();
    assert_eq!(good.status(), 200);
    assert!(good.text().await.unwrap().contains("\"other\""));
    wharf.stop().await;
}

/// An index file of 400 versions whose features have hex names: about
/// 350 KB as is and 150 KB gzipped, which is held in a memory file.
#[cfg(target_os = "linux")]
fn large_versions() -> Vec<wharf_test_support::fixture::FixtureCrate> {
    (0..400)
        .map(|i| {
            let names: Vec<String> = (0..8)
                .map(|f| {
                    format!(
                        "f{}",
                        wharf_test_support::fixture::sha256_hex(format!("{i}/{f}").as_bytes())
                    )
                })
                .collect();
            let features: Vec<(&str, &[&str])> =
                names.iter().map(|n| (n.as_str(), &[][..])).collect();
            CrateBuilder::new("large", &format!("1.0.{i}"))
                .features(&features)
                .build()
        })
        .collect()
}

/// A large index file and its gzip form go to clients by sendfile from the
/// memory files they are held in: byte for byte as the upstream sent them,
/// to many clients at once and to cargo.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_index_file_is_sent_from_a_memory_file_byte_for_byte() {
    let versions = large_versions();
    let upstream = FakeUpstream::start(versions.clone()).await;
    upstream.serve_gzip(true);
    let wharf = Wharf::start(cache(&[upstream.index_url()])).await;
    let client = raw_client();
    let url = wharf.url(&format!("/crates-io/index/{}", sparse_path("large")));
    let gzip = upstream.index_file_gzip("large").unwrap();
    let plain: String = versions.iter().map(|v| v.index_line() + "\n").collect();
    for (form, bytes) in [("gzip form", gzip.len()), ("file", plain.len())] {
        assert!(
            (64 << 10..=2 << 20).contains(&bytes),
            "a {form} held in a memory file: {bytes} bytes"
        );
    }
    let sent = |metrics: &str| -> u64 {
        crate::common::sample(metrics, "wharf_response_sendfile_bytes_total")
            .unwrap_or_else(|| panic!("no sendfile counter in {metrics}"))
            .parse()
            .unwrap()
    };
    let before = sent(&wharf.get_text("/metrics").await);
    let asks = (0..16).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut request = client.get(&url);
            if i % 2 == 0 {
                request = request.header(header::ACCEPT_ENCODING, "gzip");
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let gzipped = response.headers().get(header::CONTENT_ENCODING).is_some();
            (i, gzipped, response.bytes().await.unwrap())
        }
    });
    for (i, gzipped, body) in futures::future::join_all(asks).await {
        assert_eq!(gzipped, i % 2 == 0, "request {i}");
        let expected = if gzipped { &gzip[..] } else { plain.as_bytes() };
        assert!(body == expected, "request {i}: not the file's bytes");
    }
    let after = sent(&wharf.get_text("/metrics").await);
    // The first answers may come before the gzip form is held; the rest,
    // and every answer as it is, are sent from memory files.
    let least = 4 * gzip.len() + 8 * plain.len();
    assert!(
        after - before >= least as u64,
        "{} bytes sent by sendfile, fewer than {least}",
        after - before
    );
    let project =
        wharf_test_support::cargo::CargoProject::new(&wharf.index_url(), &[("large", "1.0.399")]);
    crate::common::cargo_ok(&project, &["fetch"]);
    wharf.stop().await;
}
