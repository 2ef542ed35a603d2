//! Issue 12: a bucket as the whole mirror (served by the S3 service alone,
//! each object with its `Content-Type` and `Cache-Control`), and crate
//! downloads answered with redirects into the bucket.

use std::{path::Path, time::Duration};

use wharf_test_support::{
    cargo::CargoProject,
    fixture::{self, CrateBuilder},
    s3::{SIGNED_ACCESS_KEY, SIGNED_SECRET_KEY, TestS3},
    upstream::FakeUpstream,
};

use crate::{
    access::add_client,
    common::{Backend, Stored, Wharf, WharfProcess, cargo_ok, sha256, wharf_cli},
};

/// The `[storage]` lines of `(bucket, prefix)` at `endpoint`; `anonymous`
/// for the open server, credentials from the environment otherwise.
fn storage_toml(endpoint: &str, place: &(String, String), anonymous: bool) -> String {
    format!(
        "[storage]\nkind = \"s3\"\nbucket = \"{}\"\nprefix = \"{}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\nallow_http = true\nanonymous = {anonymous}\n\n",
        place.0, place.1
    )
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n{body}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    config
}

/// A HEAD of `url`: its status, `Content-Type` and `Cache-Control`.
async fn head(url: &str) -> (u16, String, String) {
    let response = reqwest::Client::new().head(url).send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (
        response.status().as_u16(),
        header("content-type"),
        header("cache-control"),
    )
}

/// Acceptance 4 of issue 12: `wharf sync` writes a mirror into a bucket,
/// and SeaweedFS's own S3 endpoint serves it with no wharf running: cargo
/// builds from it (`dl` points into the bucket through `static_url`),
/// `wharf verify --key` accepts its signed manifest, and each object says
/// what it is and how long it may be cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_in_a_bucket_is_served_by_the_bucket_alone() {
    let s3 = TestS3::shared();
    let upstream = FakeUpstream::start(fixture::graph("bk", 5)).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("mirror.key");
    let out = wharf_cli(&["keys", "generate", "--out", key_file.to_str().unwrap()]);
    let public = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("a public key")
        .to_owned();
    let place = s3.place();
    let tree = format!("{}/{}/{}/m", s3.endpoint, place.0, place.1);
    let config = write_config(
        dir.path(),
        &format!(
            "{}[registries.m]\nkind = \"mirror\"\nupstreams = [\"{}\"]\nupstream_timeout = \"2s\"\ninclude = [\"bk-0\"]\nsigning_key = \"{}\"\nstatic_url = \"{tree}\"\n",
            storage_toml(&s3.endpoint, &place, true),
            upstream.index_url(),
            key_file.display()
        ),
    );
    let summary = tokio::task::block_in_place(|| crate::mirror::sync_ok(&config));
    assert!(summary.contains("5 crates"), "{summary}");

    // config.json, straight from the bucket, sends cargo to the bucket.
    let config_json: serde_json::Value = reqwest::get(format!("{tree}/index/config.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        config_json["dl"],
        format!("{tree}/crates/{{crate}}/{{crate}}-{{version}}.crate"),
        "{config_json}"
    );

    // Each kind of object with its headers.
    let fresh = "public, max-age=60, must-revalidate";
    let index_file = fixture::sparse_path("bk-0");
    for (path, content_type, cache_control) in [
        ("index/config.json", "application/json", fresh),
        (
            &format!("index/{index_file}") as &str,
            "text/plain; charset=utf-8",
            fresh,
        ),
        (
            "crates/bk-0/bk-0-1.0.0.crate",
            "application/gzip",
            "public, max-age=31536000, immutable",
        ),
        ("status.json", "application/json", fresh),
        ("manifest.json", "application/json", fresh),
        ("manifest.json.sig", "text/plain; charset=utf-8", fresh),
    ] {
        let url = format!("{tree}/{path}");
        assert_eq!(
            head(&url).await,
            (200, content_type.to_owned(), cache_control.to_owned()),
            "{url}"
        );
    }
    // Working state is in the bucket too, but says nothing of caching.
    let (status, _, cache_control) = head(&format!("{tree}/.sync/state.json")).await;
    assert_eq!((status, cache_control.as_str()), (200, ""));

    let mirror_url = format!("sparse+{tree}/index/");
    let out = tokio::task::block_in_place(|| {
        wharf_cli(&[
            "verify",
            "--mirror",
            &mirror_url,
            "--against",
            &upstream.index_url(),
            "--crate",
            "bk-0",
            "--key",
            &public,
        ])
    });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.contains("signed manifest: valid; 6 index files"),
        "{said}"
    );

    // No wharf, no upstream: the bucket alone.
    upstream.stop().await;
    let project = CargoProject::new(&mirror_url, &[("bk-0", "1")]);
    cargo_ok(&project, &["generate-lockfile"]);
    cargo_ok(&project, &["build"]);
}

/// A download answered with a redirect: its status and `Location`.
async fn redirect_of(url: &str, authorization: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.get(url);
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status().as_u16(), location)
}

/// Acceptance 5 of issue 12, an open registry: a cache and a mirror with
/// `crate_downloads = "redirect"` answer downloads with the object's URL in
/// the (open) bucket, and cargo builds through them. The cache fetches a
/// file it does not hold yet before it redirects. A crate file the mirror
/// synced as a multipart upload (larger than one PUT) has its headers too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_registries_redirect_downloads_into_the_bucket() {
    let s3 = TestS3::shared();
    let mut crates = fixture::graph("rd", 4);
    let root = crates[0].clone();
    let big = crate::storage::big_crate("big", 8 * 1024 + 512);
    assert!(big.bytes.len() > wharf_storage::MULTIPART_BYTES);
    crates.push(big.clone());
    let upstream = FakeUpstream::start(crates).await;
    let dir = tempfile::tempdir().unwrap();
    let place = s3.place();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[registries.c]\nkind = \"cache\"\nupstreams = [\"{up}\"]\ncrate_downloads = \"redirect\"\n\n[registries.m]\nkind = \"mirror\"\nupstreams = [\"{up}\"]\ninclude = [\"rd-0\", \"big\"]\ncrate_downloads = \"redirect\"\n",
            storage_toml(&s3.endpoint, &place, true),
            up = upstream.index_url(),
        ),
    );
    tokio::task::block_in_place(|| crate::mirror::sync_ok(&config));
    let wharf = Wharf::start_with(wharf_config::Config::load(Some(&config)).unwrap()).await;
    let bucket = format!("{}/{}/{}", s3.endpoint, place.0, place.1);
    for registry in ["c", "m"] {
        let (status, location) = redirect_of(
            &wharf.url(&format!("/{registry}/crates/rd-0/rd-0-1.0.0.crate")),
            None,
        )
        .await;
        assert_eq!(
            (status, location.as_str()),
            (
                302,
                format!("{bucket}/{registry}/crates/rd-0/rd-0-1.0.0.crate").as_str()
            )
        );
        let bytes = reqwest::get(&location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(sha256(&bytes), root.cksum, "{location}");

        let index = format!("sparse+{}", wharf.url(&format!("/{registry}/index/")));
        let project = CargoProject::new(&index, &[("rd-0", "1")]);
        cargo_ok(&project, &["build"]);
    }

    let (status, location) = redirect_of(&wharf.url("/m/crates/big/big-1.0.0.crate"), None).await;
    assert_eq!(status, 302, "{location}");
    assert_eq!(
        head(&location).await,
        (
            200,
            "application/gzip".to_owned(),
            "public, max-age=31536000, immutable".to_owned()
        )
    );
    let bytes = reqwest::get(&location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&bytes), big.cksum);
    wharf.stop().await;
}

/// A damaged crate file is never handed out by URL: the file is checked
/// against its index line before the first redirect, as a streamed
/// download checks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_file_is_not_redirected_to() {
    let s3 = TestS3::shared();
    let upstream = FakeUpstream::start([CrateBuilder::new("dmg", "1.0.0").build()]).await;
    let dir = tempfile::tempdir().unwrap();
    let place = s3.place();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[registries.m]\nkind = \"mirror\"\nupstreams = [\"{}\"]\ninclude = [\"dmg\"]\ncrate_downloads = \"redirect\"\n",
            storage_toml(&s3.endpoint, &place, true),
            upstream.index_url(),
        ),
    );
    tokio::task::block_in_place(|| crate::mirror::sync_ok(&config));
    let stored = Stored::of_config(&config);
    let key = "m/crates/dmg/dmg-1.0.0.crate";
    let mut bytes = stored.read(key).await.expect("the synced crate file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    stored.write(key, &bytes).await;

    let wharf = Wharf::start_with(wharf_config::Config::load(Some(&config)).unwrap()).await;
    let (status, location) = redirect_of(&wharf.url(&format!("/{key}")), None).await;
    assert_eq!((status, location.as_str()), (500, ""));
    wharf.stop().await;
}

/// Acceptance 5 of issue 12, a registry that requires credentials, its
/// files behind a gateway that checks signatures: cargo builds through
/// presigned redirects, an unauthenticated download gets 401 and no URL,
/// and a presigned URL stops working when it expires (2 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_redirects_are_presigned_and_expire() {
    let s3 = TestS3::shared();
    let signed = s3.signed_endpoint();
    let krate = CrateBuilder::new("sealed", "1.0.0").build();
    let upstream = FakeUpstream::start([krate.clone()]).await;
    let dir = tempfile::tempdir().unwrap();
    let place = s3.place();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[registries.c]\nkind = \"cache\"\nupstreams = [\"{}\"]\nauth_required = true\ncrate_downloads = \"redirect\"\ndownload_url_expiry = \"2s\"\n",
            storage_toml(&signed, &place, false),
            upstream.index_url(),
        ),
    );
    let token = tokio::task::block_in_place(|| add_client(&config, &["ci", "--registry", "c"]));
    let wharf = tokio::task::block_in_place(|| {
        WharfProcess::spawn_with_env(
            &config,
            &[
                ("AWS_ACCESS_KEY_ID", SIGNED_ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SIGNED_SECRET_KEY),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        )
    });
    let url = format!("{}/c/crates/sealed/sealed-1.0.0.crate", wharf.base_url);
    let (status, location) = redirect_of(&url, None).await;
    assert_eq!((status, location.as_str()), (401, ""));

    let (status, location) = redirect_of(&url, Some(&token)).await;
    assert_eq!(status, 302, "{location}");
    assert!(
        location.starts_with(&signed) && location.contains("X-Amz-Signature="),
        "{location}"
    );
    let fetched = reqwest::get(&location).await.unwrap();
    assert_eq!(fetched.status(), 200, "{location}");
    assert_eq!(sha256(&fetched.bytes().await.unwrap()), krate.cksum);
    // The same object without the signature: the gateway refuses it.
    let unsigned = location.split('?').next().unwrap();
    assert_eq!(reqwest::get(unsigned).await.unwrap().status(), 403);

    let index = format!("sparse+{}/c/index/", wharf.base_url);
    let mut project = CargoProject::new(&index, &[("sealed", "1")]);
    project.replace_with_registry("c", &index);
    project.set_token("c", &token);
    cargo_ok(&project, &["build"]);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let expired = reqwest::get(&location).await.unwrap();
    assert_eq!(expired.status(), 403, "{location}");
    wharf.kill();
}

/// `crate_downloads = "redirect"` with files on disk is refused when the
/// configuration is loaded, saying what to change (the disk backend has no
/// URL to redirect to).
#[test]
fn redirects_need_a_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[registries.c]\nkind = \"cache\"\ncrate_downloads = \"redirect\"\n",
            Backend::Fs.toml()
        ),
    );
    // `sync` loads the configuration as `serve` does, and ends either way.
    let out = wharf_cli(&["sync", "--config", config.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("crate_downloads = \"redirect\" needs [storage] kind = \"s3\""),
        "{said}"
    );
}

/// A hosted registry with `crate_downloads = "redirect"`: what cargo
/// published is downloaded from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_registry_redirects_to_what_was_published() {
    use crate::hosted::{create_token, metadata, publish_body};
    let s3 = TestS3::shared();
    let dir = tempfile::tempdir().unwrap();
    let place = s3.place();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[registries.private]\nkind = \"hosted\"\ncrate_downloads = \"redirect\"\n",
            storage_toml(&s3.endpoint, &place, true),
        ),
    );
    let wharf = Wharf::start_with(wharf_config::Config::load(Some(&config)).unwrap()).await;
    let token = tokio::task::block_in_place(|| create_token(&config, "alice"));
    let krate = CrateBuilder::new("hr", "1.0.0").build();
    let published = reqwest::Client::new()
        .put(wharf.url("/private/api/v1/crates/new"))
        .header("Authorization", &token)
        .body(publish_body(&metadata("hr", "1.0.0"), &krate.bytes))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);

    let (status, location) =
        redirect_of(&wharf.url("/private/crates/hr/hr-1.0.0.crate"), None).await;
    assert_eq!(
        (status, location.as_str()),
        (
            302,
            format!(
                "{}/{}/{}/private/crates/hr/hr-1.0.0.crate",
                s3.endpoint, place.0, place.1
            )
            .as_str()
        )
    );
    let project = CargoProject::new(
        &format!("sparse+{}", wharf.url("/private/index/")),
        &[("hr", "1")],
    );
    cargo_ok(&project, &["build"]);
    wharf.stop().await;
}
