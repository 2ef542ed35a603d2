//! Hosted registries: cargo publishes, yanks, manages owners, searches and
//! installs, next to a crates.io cache in the same wharf; on SQLite and on
//! PostgreSQL.

use std::path::{Path, PathBuf};
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use wharf_config::Config;
use wharf_test_support::{cargo::CargoProject, fixture::CrateBuilder, upstream::FakeUpstream};

use crate::common::{Wharf, wharf_cli};

/// A wharf config with a `crates-io` cache of `upstream` and a hosted
/// registry `private` whose metadata is at `database_url` (the default
/// SQLite file when `None`).
fn hosted_config(dir: &Path, upstream: &FakeUpstream, database_url: Option<&str>) -> PathBuf {
    let config = dir.join("wharf.toml");
    let database = database_url
        .map(|url| format!("database_url = \"{url}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\n\n[registries.private]\nkind = \"hosted\"\nmax_upload_bytes = 200000\n{database}",
            dir.join("data").display(),
            upstream.index_url()
        ),
    )
    .unwrap();
    config
}

/// `wharf token create` for `user`; returns the token it printed.
pub(crate) fn create_token(config: &Path, user: &str) -> String {
    let out = wharf_cli(&[
        "token",
        "create",
        "--registry",
        "private",
        "--user",
        user,
        "--config",
        config.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no `token: ` line in:\n{stdout}"))
        .to_owned()
}

fn package(name: &str, vers: &str, deps: &str, lib: &str) -> Vec<(String, String)> {
    vec![
        (
            format!("{name}/Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\ndescription = \"{name}: a private crate for tests\"\nlicense = \"MIT\"\npublish = [\"private\"]\n\n[dependencies]\n{deps}"
            ),
        ),
        (format!("{name}/src/lib.rs"), lib.to_owned()),
    ]
}

/// Acceptance 1, 2 and 5 on one database, files on the disk.
async fn publish_consume_yank_own_search_install(database_url: Option<&str>) {
    publish_consume_yank_own_search_install_on(database_url, crate::common::Backend::Fs).await;
}

/// Acceptance 1, 2 and 5 on one database and one storage backend.
async fn publish_consume_yank_own_search_install_on(
    database_url: Option<&str>,
    backend: crate::common::Backend,
) {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("pub-x", "1.0.0").build(),
        CrateBuilder::new("pub-y", "1.0.0").build(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = hosted_config(dir.path(), &upstream, database_url);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n{}", backend.toml()));
    std::fs::write(&config, text).unwrap();
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let alice = create_token(&config, "alice");
    let bob = create_token(&config, "bob");
    let cache_index = format!("sparse+http://{}/crates-io/index/", wharf.addr);
    let private_index = format!("sparse+http://{}/private/index/", wharf.addr);

    // A workspace of three private crates: p-core on pub-x, p-util on p-core
    // and pub-y, and p-tool, a binary.
    let mut author = CargoProject::new(&cache_index, &[]);
    author.add_registry("private", &private_index);
    author.set_token("private", &alice);
    author.write_file(
        "Cargo.toml",
        "[workspace]\nmembers = [\"p-core\", \"p-util\", \"p-tool\"]\nresolver = \"2\"\n",
    );
    std::fs::remove_dir_all(author.project_dir().join("src")).unwrap();
    let files = [
        package(
            "p-core",
            "0.1.0",
            "pub-x = \"1\"\n",
            "pub fn value() -> u64 { 10 + pub_x::value() }\n",
        ),
        package(
            "p-util",
            "0.1.0",
            "p-core = { version = \"0.1\", path = \"../p-core\", registry = \"private\" }\npub-y = \"1\"\n",
            "pub fn value() -> u64 { p_core::value() + pub_y::value() }\n",
        ),
        vec![
            (
                "p-tool/Cargo.toml".to_owned(),
                "[package]\nname = \"p-tool\"\nversion = \"0.1.0\"\nedition = \"2021\"\ndescription = \"a private command-line tool\"\nlicense = \"MIT\"\npublish = [\"private\"]\n\n[dependencies]\np-util = { version = \"0.1\", path = \"../p-util\", registry = \"private\" }\n".to_owned(),
                ),
            (
                "p-tool/src/main.rs".to_owned(),
                "fn main() { println!(\"p-tool says {}\", p_util::value()); }\n".to_owned(),
            ),
        ],
    ];
    for (path, body) in files.iter().flatten() {
        author.write_file(path, body);
    }
    author
        .run_async(&[
            "publish",
            "--registry",
            "private",
            "--workspace",
            "--no-verify",
            "--allow-dirty",
        ])
        .await
        .assert_success();

    // A consumer builds against the private crates and the cache.
    let mut consumer = CargoProject::new(&cache_index, &[]);
    consumer.add_registry("private", &private_index);
    consumer.write_file(
        "Cargo.toml",
        "[package]\nname = \"consumer\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\np-util = { version = \"0.1\", registry = \"private\" }\n",
    );
    consumer.write_file(
        "src/main.rs",
        "fn main() { println!(\"{}\", p_util::value()); }\n",
    );
    consumer.run_async(&["build"]).await.assert_success();
    let lock = consumer.lockfile();
    assert!(lock.contains("name = \"pub-x\""), "{lock}");

    // A new version, yanked and unyanked: `cargo update` follows.
    author.write_file(
        "p-core/Cargo.toml",
        &package("p-core", "0.1.1", "pub-x = \"1\"\n", "")[0].1,
    );
    author
        .run_async(&[
            "publish",
            "--registry",
            "private",
            "-p",
            "p-core",
            "--no-verify",
            "--allow-dirty",
        ])
        .await
        .assert_success();
    consumer.run_async(&["update"]).await.assert_success();
    assert!(consumer.lockfile().contains("version = \"0.1.1\""));
    author
        .run_async(&["yank", "--registry", "private", "p-core@0.1.1"])
        .await
        .assert_success();
    consumer.remove_lockfile();
    consumer
        .run_async(&["generate-lockfile"])
        .await
        .assert_success();
    assert!(
        !consumer.lockfile().contains("version = \"0.1.1\""),
        "yanked"
    );
    author
        .run_async(&["yank", "--undo", "--registry", "private", "p-core@0.1.1"])
        .await
        .assert_success();
    consumer.run_async(&["update"]).await.assert_success();
    assert!(
        consumer.lockfile().contains("version = \"0.1.1\""),
        "unyanked"
    );

    // Search by name and by description.
    let found = author
        .run_async(&["search", "--registry", "private", "core"])
        .await
        .assert_success();
    assert!(found.stdout.contains("p-core"), "{}", found.stdout);
    let found = author
        .run_async(&["search", "--registry", "private", "command-line"])
        .await
        .assert_success();
    assert!(found.stdout.contains("p-tool"), "{}", found.stdout);

    // Owners: bob may not publish p-core until alice adds him.
    let mut intruder = CargoProject::new(&cache_index, &[]);
    intruder.add_registry("private", &private_index);
    intruder.set_token("private", &bob);
    for (path, body) in package("p-core", "0.1.2", "", "pub fn value() -> u64 { 0 }\n") {
        intruder.write_file(path.strip_prefix("p-core/").unwrap(), &body);
    }
    let refused = intruder
        .run_async(&[
            "publish",
            "--registry",
            "private",
            "--no-verify",
            "--allow-dirty",
        ])
        .await
        .assert_failure();
    assert!(
        refused.stderr.contains("not an owner"),
        "{}",
        refused.stderr
    );
    author
        .run_async(&["owner", "--registry", "private", "--add", "bob", "p-core"])
        .await
        .assert_success();
    let owners = author
        .run_async(&["owner", "--registry", "private", "--list", "p-core"])
        .await
        .assert_success();
    assert!(
        owners.stdout.contains("alice") && owners.stdout.contains("bob"),
        "{}",
        owners.stdout
    );
    intruder
        .run_async(&[
            "publish",
            "--registry",
            "private",
            "--no-verify",
            "--allow-dirty",
        ])
        .await
        .assert_success();
    author
        .run_async(&[
            "owner",
            "--registry",
            "private",
            "--remove",
            "bob",
            "p-core",
        ])
        .await
        .assert_success();

    // cargo install of the private binary. `cargo install` reads only the
    // home's configuration, not the project's.
    std::fs::copy(
        consumer.project_dir().join(".cargo/config.toml"),
        consumer.home_dir().join("config.toml"),
    )
    .unwrap();
    let root = dir.path().join("installed");
    let installed = consumer
        .run_async(&[
            "install",
            "--registry",
            "private",
            "p-tool",
            "--root",
            root.to_str().unwrap(),
        ])
        .await
        .assert_success();
    let out = std::process::Command::new(root.join("bin/p-tool"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("p-tool says"),
        "{installed:?}"
    );
    wharf.stop().await;
}

crate::on_both_databases!(
    cargo_publishes_and_consumes_private_crates,
    super::publish_consume_yank_own_search_install
);

/// The same with the crate files in a bucket (and what the cache fetches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_publishes_and_consumes_private_crates_on_sqlite_and_s3() {
    publish_consume_yank_own_search_install_on(None, crate::common::Backend::S3).await;
}

/// cargo's publish body: length-prefixed JSON metadata, then the tarball.
pub(crate) fn publish_body(meta: &serde_json::Value, tarball: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(meta).unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(&(json.len() as u32).to_le_bytes());
    body.extend_from_slice(&json);
    body.extend_from_slice(&(tarball.len() as u32).to_le_bytes());
    body.extend_from_slice(tarball);
    body
}

pub(crate) fn metadata(name: &str, vers: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name, "vers": vers, "deps": [], "features": {}, "authors": [],
        "description": "a crate for tests", "license": "MIT", "keywords": [],
        "categories": [], "badges": {}, "links": null,
    })
}

/// A reproducible, hardly compressible text of about `len` bytes.
fn noise(len: usize) -> String {
    use sha2::Digest;
    let mut out = String::new();
    let mut seed = sha2::Sha256::digest(b"noise").to_vec();
    while out.len() < len {
        seed = sha2::Sha256::digest(&seed).to_vec();
        out.push_str(&format!("// {}\n", hex::encode(&seed)));
    }
    out
}

/// Acceptance 3 on one database: every bad publish gets the right status and
/// a message cargo shows, and writes nothing.
async fn bad_publishes_write_nothing(database_url: Option<&str>) {
    let upstream = FakeUpstream::start([]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = hosted_config(dir.path(), &upstream, database_url);
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let alice = create_token(&config, "alice");
    let revoked = create_token(&config, "mallory");
    let out = wharf_cli(&[
        "token",
        "list",
        "--registry",
        "private",
        "--config",
        config.to_str().unwrap(),
    ]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mallory_id = listing
        .lines()
        .find(|l| l.contains("mallory"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{listing}"))
        .to_owned();
    let out = wharf_cli(&[
        "token",
        "revoke",
        "--registry",
        "private",
        &mallory_id,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!listing.contains(&revoked), "secrets are never listed");

    let client = reqwest::Client::new();
    let url = wharf.url("/private/api/v1/crates/new");
    let put = |body: Vec<u8>, token: Option<&str>| {
        let mut request = client.put(&url).body(body);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        request.send()
    };
    let good = CrateBuilder::new("bp-good", "1.0.0").build();
    let response = put(
        publish_body(&metadata("bp-good", "1.0.0"), &good.bytes),
        Some(&alice),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let index_before = reqwest::get(wharf.url("/private/index/bp/-g/bp-good"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tree = dir.path().join("data/private");
    let files_before = crate::common::files_under(&tree);

    let other = CrateBuilder::new("bp-other", "1.0.0").build();
    let mut truncated = publish_body(&metadata("bp-good", "1.0.1"), &good.bytes);
    truncated.truncate(truncated.len() - 40);
    let truncated_words = format!(
        "the publish request is truncated: expected {} bytes of crate file, found {}; retry",
        good.bytes.len(),
        good.bytes.len() - 40
    );
    let big = CrateBuilder::new("bp-big", "1.0.0")
        .lib_body(&noise(600_000))
        .build();
    assert!(
        big.bytes.len() > 200_000,
        "the big crate compresses to {}",
        big.bytes.len()
    );
    // (what, body, token, status, a word of the message)
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "re-publish",
            publish_body(&metadata("bp-good", "1.0.0"), &good.bytes),
            Some(&alice),
            400,
            "already has version",
        ),
        (
            "re-publish with build metadata",
            publish_body(
                &metadata("bp-good", "1.0.0+build.5"),
                &CrateBuilder::new("bp-good", "1.0.0+build.5").build().bytes,
            ),
            Some(&alice),
            400,
            "already has version",
        ),
        (
            "bad name",
            publish_body(&metadata("1bad", "1.0.0"), &good.bytes),
            Some(&alice),
            400,
            "name",
        ),
        (
            "case and -/_ variant",
            publish_body(
                &metadata("BP_Good", "2.0.0"),
                &CrateBuilder::new("BP_Good", "2.0.0").build().bytes,
            ),
            Some(&alice),
            400,
            "bp-good",
        ),
        (
            "malformed body",
            b"not a publish body".to_vec(),
            Some(&alice),
            400,
            "the JSON metadata is 544501614 bytes, more than the 1048576 allowed",
        ),
        (
            "truncated tarball",
            truncated,
            Some(&alice),
            400,
            &truncated_words,
        ),
        (
            "Cargo.toml disagrees",
            publish_body(&metadata("bp-good", "1.0.2"), &other.bytes),
            Some(&alice),
            400,
            "bp-other",
        ),
        (
            "oversized",
            publish_body(&metadata("bp-big", "1.0.0"), &big.bytes),
            Some(&alice),
            413,
            "limit",
        ),
        (
            "no token",
            publish_body(
                &metadata("bp-new", "1.0.0"),
                &CrateBuilder::new("bp-new", "1.0.0").build().bytes,
            ),
            None,
            401,
            "token",
        ),
        (
            "revoked token",
            publish_body(
                &metadata("bp-new", "1.0.0"),
                &CrateBuilder::new("bp-new", "1.0.0").build().bytes,
            ),
            Some(&revoked),
            403,
            "token",
        ),
    ];
    for (label, body, token, status, needle) in cases {
        let response = put(body, token).await.unwrap();
        let got = response.status().as_u16();
        let www = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "{label}: {text}");
        let detail =
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|_| panic!("{label}: not cargo's error shape: {text}"))["errors"]
                [0]["detail"]
                .as_str()
                .unwrap_or_else(|| panic!("{label}: no detail: {text}"))
                .to_owned();
        // An empty needle would match any message: each case names its words.
        assert!(!needle.is_empty(), "{label}: no words to look for");
        assert!(detail.contains(needle), "{label}: {detail}");
        if status == 401 {
            assert!(
                www.is_some_and(|w| w.starts_with("Cargo login_url=")),
                "{label}"
            );
        }
        assert_eq!(
            crate::common::files_under(&tree),
            files_before,
            "{label} wrote something"
        );
        let index = reqwest::get(wharf.url("/private/index/bp/-g/bp-good"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(index, index_before, "{label} changed the index");
    }
    wharf.stop().await;
}

crate::on_both_databases!(
    bad_publishes_write_nothing,
    super::bad_publishes_write_nothing
);

crate::on_both_databases!(
    killed_during_publish_a_version_is_whole_or_absent,
    super::killed_during_publish
);

/// Acceptance 6: `wharf serve` killed (SIGKILL) while publishes are under
/// way: after a restart, every version in the index has its crate file with
/// the right sha256, and every acknowledged publish is there. Each round
/// kills only after publishes were acknowledged and the next one was sent;
/// every publish before the kill must be answered 200, and at least one kill
/// must cut a publish in flight.
async fn killed_during_publish(database_url: Option<&str>) {
    let upstream = FakeUpstream::start([]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = hosted_config(dir.path(), &upstream, database_url);
    let token = create_token(&config, "alice");
    let lib = format!("pub fn value() -> u64 {{ 1 }}\n{}", noise(80_000));
    // Each round kills the server once `acked` publishes were acknowledged
    // and the next one has been under way for `after_ms`: from just sent
    // (the body still arriving) to well into its handling.
    let mut cut_in_flight = 0;
    let rounds = [(1usize, 0u64), (2, 3), (1, 8), (3, 15), (2, 30), (1, 60)];
    for (round, (acked, after_ms)) in rounds.into_iter().enumerate() {
        let mut server = crate::common::WharfProcess::spawn(&config);
        let url = format!("{}/private/api/v1/crates/new", server.base_url);
        let bodies: Vec<(String, Vec<u8>)> = (0..40)
            .map(|i| {
                let vers = format!("0.{round}.{i}");
                let krate = CrateBuilder::new("kp-crash", &vers).lib_body(&lib).build();
                let body = publish_body(&metadata("kp-crash", &vers), &krate.bytes);
                (vers, body)
            })
            .collect();
        // How many publishes were answered 200, and how many were sent.
        let answered = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let publisher = {
            let token = token.clone();
            let (answered, sent) = (answered.clone(), sent.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut acknowledged = Vec::new();
                for (vers, body) in bodies {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let response = client
                        .put(&url)
                        .header("Authorization", &token)
                        .body(body)
                        .send()
                        .await;
                    match response {
                        Ok(response) if response.status() == 200 => {
                            acknowledged.push(vers);
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        // Only a kill may stop a publish: a refusal is a bug.
                        Ok(response) => {
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            panic!("publish of {vers} answered {status}: {body}");
                        }
                        Err(e) => return (acknowledged, Some((vers, e))),
                    }
                }
                (acknowledged, None)
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !(answered.load(Ordering::SeqCst) >= acked
            && sent.load(Ordering::SeqCst) > answered.load(Ordering::SeqCst))
        {
            assert!(
                !publisher.is_finished(),
                "round {round}: the publisher stopped before {acked} publishes were acknowledged"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {acked} publishes were not acknowledged within 60 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "round {round}: the server ended before the kill"
        );
        server.kill(); // SIGKILL
        let (acknowledged, cut) = publisher.await.unwrap();
        assert!(
            acknowledged.len() >= acked,
            "round {round}: {} publishes acknowledged before the kill, {acked} expected",
            acknowledged.len()
        );
        let cut = cut.expect("the publisher ran out of versions before the kill");
        // A publish refused a connection was sent after the kill; any other
        // transport error is a publish the kill cut while in flight.
        if !cut.1.is_connect() {
            cut_in_flight += 1;
        }

        let server = crate::common::WharfProcess::spawn(&config);
        let index = reqwest::get(format!("{}/private/index/kp/-c/kp-crash", server.base_url))
            .await
            .unwrap();
        let index = if index.status() == 404 {
            String::new()
        } else {
            index.text().await.unwrap()
        };
        let listed: Vec<serde_json::Value> = index
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for line in &listed {
            let vers = line["vers"].as_str().unwrap();
            let bytes = reqwest::get(format!(
                "{}/private/crates/kp-crash/kp-crash-{vers}.crate",
                server.base_url
            ))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
            assert_eq!(
                crate::common::sha256(&bytes),
                line["cksum"].as_str().unwrap(),
                "round {round}: {vers} is listed but its crate file is not whole"
            );
        }
        for vers in &acknowledged {
            assert!(
                listed.iter().any(|l| l["vers"] == vers.as_str()),
                "round {round}: {vers} was acknowledged but is not in the index"
            );
        }
        // The publish cut in flight is whole or absent, never half there.
        let cut_listed = listed.iter().any(|l| l["vers"] == cut.0.as_str());
        eprintln!(
            "round {round}: {} publishes acknowledged before the kill; {} cut ({}, {}); \
             {} versions listed after it",
            acknowledged.len(),
            cut.0,
            cut.1,
            if cut_listed { "listed" } else { "absent" },
            listed.len()
        );
        drop(server);
    }
    assert!(
        cut_in_flight >= 1,
        "no kill cut a publish in flight: every kill came between two publishes"
    );
}

/// Issue 5, acceptance 1 (hosted part): with `auth_required`, cargo needs a
/// token for everything: with one (raw, or as Basic credentials) it
/// publishes, fetches and builds; without one it gets the 401 login hint; a
/// revoked one fails with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_required_registry_needs_a_token_for_everything() {
    use base64::Engine;
    let upstream = FakeUpstream::start([]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = hosted_config(dir.path(), &upstream, None);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}auth_required = true\n")).unwrap();
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let token = create_token(&config, "alice");
    let cache_index = format!("sparse+http://{}/crates-io/index/", wharf.addr);
    let private_index = format!("sparse+http://{}/private/index/", wharf.addr);

    let mut author = CargoProject::new(&cache_index, &[]);
    author.add_registry("private", &private_index);
    author.set_token("private", &token);
    for (path, body) in package("p-secret", "0.1.0", "", "pub fn value() -> u64 { 7 }\n") {
        author.write_file(path.strip_prefix("p-secret/").unwrap(), &body);
    }
    author
        .run_async(&[
            "publish",
            "--registry",
            "private",
            "--no-verify",
            "--allow-dirty",
        ])
        .await
        .assert_success();

    let mut consumer = CargoProject::new(&cache_index, &[]);
    consumer.add_registry("private", &private_index);
    consumer.write_file(
        "Cargo.toml",
        "[package]\nname = \"consumer\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\np-secret = { version = \"0.1\", registry = \"private\" }\n",
    );
    consumer.write_file(
        "src/main.rs",
        "fn main() { println!(\"{}\", p_secret::value()); }\n",
    );
    // No credentials: cargo reports that the registry needs them.
    let refused = consumer
        .run_async(&["generate-lockfile"])
        .await
        .assert_failure();
    assert!(
        refused.stderr.contains("401")
            || refused.stderr.contains("token")
            || refused.stderr.contains("login"),
        "{}",
        refused.stderr
    );
    // Basic credentials, sent verbatim by cargo:token.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{token}"))
    );
    consumer.set_token("private", &basic);
    consumer.run_async(&["build"]).await.assert_success();

    // Revoked: the next request fails.
    let out = wharf_cli(&[
        "token",
        "list",
        "--registry",
        "private",
        "--config",
        config.to_str().unwrap(),
    ]);
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("alice"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap();
    let out = wharf_cli(&[
        "token",
        "revoke",
        "--registry",
        "private",
        &id,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    // A running server reads the credentials generation ten times a second:
    // the revoke shows within a tenth of a second.
    let took =
        crate::common::refused_after(&wharf.url("/private/index/p-/se/p-secret"), &basic).await;
    assert!(
        took < crate::common::NOTICED_WITHIN,
        "the revoke was noticed after {took:?}"
    );
    consumer.fresh_home();
    consumer.set_token("private", &basic);
    let refused = consumer.run_async(&["fetch"]).await.assert_failure();
    assert!(
        refused.stderr.contains("not valid") || refused.stderr.contains("403"),
        "{}",
        refused.stderr
    );
    // What needs a token is for its client only: no shared cache may keep it.
    let response = reqwest::Client::new()
        .get(wharf.url("/private/index/p-/se/p-secret"))
        .header("Authorization", create_token(&config, "bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private")
    );
    // Direct requests without a token: 401 with the login URL.
    let response = reqwest::get(wharf.url("/private/index/config.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("www-authenticate").is_some());
    wharf.stop().await;
}
