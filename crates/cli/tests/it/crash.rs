//! Acceptance 8: `wharf serve` killed mid-download never serves a partial crate.

use std::time::Duration;

use wharf_test_support::{
    fixture::CrateBuilder,
    upstream::{FakeUpstream, Fault, RequestKind, Target},
};

use crate::common::{WharfProcess, files_under, minimal_config, sha256, stored_keys};

/// A crate file of about 200 KB that gzip cannot shrink much.
fn big_crate() -> wharf_test_support::fixture::FixtureCrate {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: String = (0..200_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    CrateBuilder::new("bulky", "1.0.0")
        .lib_body(&format!("pub fn value() -> u64 {{ 1 }}\n// {noise}\n"))
        .build()
}

crate::on_both_backends!(
    killed_mid_download_then_restarted_never_serves_a_partial_crate,
    super::killed_mid_download_then_restarted
);

/// On the disk and on S3.
async fn killed_mid_download_then_restarted(backend: crate::common::Backend) {
    let krate = big_crate();
    assert!(krate.bytes.len() > 100_000, "{}", krate.bytes.len());
    let upstream = FakeUpstream::start([krate.clone()]).await;
    upstream.set_fault(
        Target::Crates,
        Fault::SlowDrip {
            chunk: 4096,
            delay: Duration::from_millis(50),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("wharf.toml");
    let storage_toml = backend.toml();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{storage_toml}[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\nupstream_timeout = \"2s\"\n",
            data.display(),
            upstream.index_url()
        ),
    )
    .unwrap();
    let storage = wharf_config::Config::load(Some(&config)).unwrap().storage;
    let crate_url = "/crates-io/crates/bulky/bulky-1.0.0.crate";

    let wharf = WharfProcess::spawn(&config);
    let url = format!("{}{crate_url}", wharf.base_url);
    let download =
        tokio::spawn(async move { reqwest::get(url).await.and_then(|r| r.error_for_status()) });
    // Wait until the download is under way, then kill -9 in the middle of it.
    for _ in 0..100 {
        if upstream.count(RequestKind::Crate) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        upstream.count(RequestKind::Crate),
        1,
        "the download started"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    wharf.kill();
    let cut = download.await.unwrap();
    assert!(
        cut.is_err() || cut.unwrap().bytes().await.is_err(),
        "the client never got a whole response"
    );
    let stored = stored_keys(&storage, &data).await;
    assert!(!stored.iter().any(|f| f.ends_with(".crate")), "{stored:?}");

    // Restarted with the upstream down: the crate is not there, and says so.
    upstream.stop().await;
    let wharf = WharfProcess::spawn(&config);
    let response = reqwest::get(format!("{}{crate_url}", wharf.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let stored = stored_keys(&storage, &data).await;
    assert!(
        !stored
            .iter()
            .any(|f| f.starts_with(".tmp/") || f.ends_with(".crate")),
        "the partial file of the killed process is gone: {stored:?}"
    );
    let local = files_under(&data);
    assert!(!local.iter().any(|f| f.starts_with(".tmp/")), "{local:?}");

    // Upstream back: the whole, verified crate is stored and served.
    upstream.clear_faults();
    upstream.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut body = None;
    for _ in 0..40 {
        let response = reqwest::get(format!("{}{crate_url}", wharf.base_url))
            .await
            .unwrap();
        if response.status() == 200 {
            body = Some(response.bytes().await.unwrap());
            break;
        }
        // The upstream is marked down until its probe succeeds.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let body = body.expect("served once the upstream is back");
    assert_eq!(sha256(&body), krate.cksum);
    let stored = stored_keys(&storage, &data).await;
    assert!(
        stored.contains(&"crates-io/crates/bulky/bulky-1.0.0.crate".to_owned()),
        "{stored:?}"
    );
    if backend == crate::common::Backend::Fs {
        let on_disk = std::fs::read(data.join("crates-io/crates/bulky/bulky-1.0.0.crate")).unwrap();
        assert_eq!(on_disk, body);
    }
    wharf.kill();
}

/// `wharf serve` with no config file prints the lines that point cargo at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_the_cargo_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = minimal_config(dir.path());
    let wharf = WharfProcess::spawn(&config);
    assert!(
        wharf.base_url.starts_with("http://127.0.0.1:"),
        "{}",
        wharf.base_url
    );
    let healthz = reqwest::get(format!("{}/healthz", wharf.base_url))
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    wharf.kill();
}

/// What a power loss can leave without fsync (a renamed file whose data never
/// reached the disk) is caught on read: a damaged crate file is downloaded
/// again, and a damaged index file is not served stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_in_storage_are_never_served() {
    use crate::common::{Wharf, cache};
    use wharf_test_support::fixture::sparse_path;

    let krate = CrateBuilder::new("torn", "1.0.0").build();
    let upstream = FakeUpstream::start([krate.clone()]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let crate_path = "/crates-io/crates/torn/torn-1.0.0.crate";
    let index_path = format!("/crates-io/index/{}", sparse_path("torn"));

    let wharf = Wharf::start_in(&data, cache(&[upstream.index_url()])).await;
    assert_eq!(
        reqwest::get(wharf.url(crate_path)).await.unwrap().status(),
        200
    );
    wharf.stop().await;

    // A crate file whose tail never reached the disk.
    let stored = data.join("crates-io/crates/torn/torn-1.0.0.crate");
    std::fs::write(&stored, &krate.bytes[..krate.bytes.len() / 2]).unwrap();
    let wharf = Wharf::start_in(&data, cache(&[upstream.index_url()])).await;
    let body = reqwest::get(wharf.url(crate_path))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        sha256(&body),
        krate.cksum,
        "the damaged file was replaced by a verified download"
    );
    assert_eq!(std::fs::read(&stored).unwrap(), body);
    assert_eq!(upstream.count(RequestKind::Crate), 2);
    wharf.stop().await;

    // An index file of zeros and its sidecar lost, with the upstream gone:
    // better an error than a damaged index.
    upstream.stop().await;
    std::fs::write(
        data.join("crates-io/index").join(sparse_path("torn")),
        [0u8; 64],
    )
    .unwrap();
    std::fs::remove_file(
        data.join("crates-io/.cache-meta/index")
            .join(format!("{}.json", sparse_path("torn"))),
    )
    .unwrap();
    let wharf = Wharf::start_in(&data, cache(&[upstream.index_url()])).await;
    let response = reqwest::get(wharf.url(&index_path)).await.unwrap();
    assert_eq!(response.status(), 502);
    // The crate file itself is still served: it was verified when stored.
    let response = reqwest::get(wharf.url(crate_path)).await.unwrap();
    assert_eq!(response.status(), 200);
    wharf.stop().await;
}

/// SIGTERM stops `wharf serve` cleanly: exit status 0, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = minimal_config(dir.path());
    let mut wharf = WharfProcess::spawn(&config);
    let pid = wharf.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = wharf.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.expect("wharf stopped within 5 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}
