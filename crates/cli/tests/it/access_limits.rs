//! Issue 13: what a restricted client may learn from search, who may own a
//! hosted crate, and what a policy's deny rule leaves out; with real cargo,
//! on SQLite and on PostgreSQL.

use std::path::{Path, PathBuf};

use wharf_config::Config;
use wharf_test_support::{cargo::CargoProject, fixture::CrateBuilder, upstream::FakeUpstream};

use crate::access::add_client;
use crate::common::Wharf;
use crate::hosted::create_token;

/// A config with a `crates-io` cache of `upstream` and a hosted registry
/// `private` (`extra` added to its table), its metadata at `database_url`.
fn hosted_config(
    dir: &Path,
    upstream: &FakeUpstream,
    database_url: Option<&str>,
    extra: &str,
) -> PathBuf {
    let config = dir.join("wharf.toml");
    let database = database_url
        .map(|url| format!("database_url = \"{url}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\n\n[registries.private]\nkind = \"hosted\"\n{extra}{database}",
            dir.join("data").display(),
            upstream.index_url()
        ),
    )
    .unwrap();
    config
}

/// Publishes `name` 1.0.0 with `description` over HTTP, as cargo frames it.
async fn publish(wharf: &Wharf, token: &str, name: &str, description: &str) {
    let krate = CrateBuilder::new(name, "1.0.0").build();
    let meta = serde_json::json!({
        "name": name, "vers": "1.0.0", "deps": [], "features": {}, "authors": [],
        "description": description, "license": "MIT", "keywords": [],
        "categories": [], "badges": {}, "links": null,
    });
    let json = serde_json::to_vec(&meta).unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(&(json.len() as u32).to_le_bytes());
    body.extend_from_slice(&json);
    body.extend_from_slice(&(krate.bytes.len() as u32).to_le_bytes());
    body.extend_from_slice(&krate.bytes);
    let response = reqwest::Client::new()
        .put(wharf.url("/private/api/v1/crates/new"))
        .header("Authorization", token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// A cargo project that knows registry `private` of `wharf` and sends `token`.
fn private_project(wharf: &Wharf, token: &str) -> CargoProject {
    let mut project = CargoProject::new(&wharf.index_url(), &[]);
    project.add_registry(
        "private",
        &format!("sparse+http://{}/private/index/", wharf.addr),
    );
    project.set_token("private", token);
    project
}

/// `GET /private/api/v1/crates?{query}` as `token`: the names and the total.
async fn search(wharf: &Wharf, token: &str, query: &str) -> (Vec<String>, u64) {
    let response = reqwest::Client::new()
        .get(wharf.url(&format!("/private/api/v1/crates?{query}")))
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let names = body["crates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    (names, body["meta"]["total"].as_u64().unwrap())
}

/// Issue 13.3: a client granted `acme-*` searching learns nothing of the
/// crates it may not see: not from the pages, not from `meta.total`, not
/// from cargo's "… and N crates more".
async fn search_counts_only_what_a_client_may_see(database_url: Option<&str>) {
    let upstream = FakeUpstream::start([]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = hosted_config(
        dir.path(),
        &upstream,
        database_url,
        "auth_required = true\n",
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let author = add_client(&config, &["author", "--registry", "private", "--publish"]);
    for name in ["acme-a", "acme-b", "acme", "secret-sauce"] {
        publish(&wharf, &author, name, &format!("{name}, made by acme")).await;
    }
    let reader = add_client(
        &config,
        &["reader", "--registry", "private", "--crate", "acme-*"],
    );

    assert_eq!(search(&wharf, &reader, "q=secret-sauce").await, (vec![], 0));
    assert_eq!(
        search(&wharf, &reader, "q=acme").await,
        (vec!["acme-a".to_owned(), "acme-b".to_owned()], 2)
    );
    assert_eq!(
        search(&wharf, &reader, "q=acme&per_page=1&page=2").await,
        (vec!["acme-b".to_owned()], 2)
    );
    assert_eq!(
        search(&wharf, &reader, "q=&per_page=1&page=3").await,
        (vec![], 2),
        "no page past the visible crates"
    );
    assert_eq!(search(&wharf, &author, "q=acme").await.1, 4);

    let found = private_project(&wharf, &reader)
        .run_async(&["search", "--registry", "private", "acme", "--limit", "1"])
        .await
        .assert_success();
    assert!(found.stdout.contains("acme-a"), "{}", found.stdout);
    assert!(
        found.stdout.contains("and 1 crate"),
        "cargo counts the visible crates only:\n{}",
        found.stdout
    );
    wharf.stop().await;
}

crate::on_both_databases!(
    search_counts_only_what_a_client_may_see,
    super::search_counts_only_what_a_client_may_see
);

/// Issue 13.5: `cargo owner` adds only users the registry knows, never leaves
/// a crate without an owner who can publish, and a change names at most 100
/// users in a bounded body; every refusal is an error cargo shows.
async fn owners_are_known_users_and_one_can_always_act(database_url: Option<&str>) {
    let upstream = FakeUpstream::start([]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = hosted_config(dir.path(), &upstream, database_url, "");
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let alice = create_token(&config, "alice");
    publish(&wharf, &alice, "own-me", "a crate with owners").await;
    let cargo = private_project(&wharf, &alice);
    let owner = |args: &[&str]| {
        let mut all = vec!["owner", "--registry", "private"];
        all.extend(args);
        all.push("own-me");
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let cargo = &cargo;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cargo.run_async(&args).await
        }
    };

    // A user who never existed.
    let refused = run(owner(&["--add", "nobody"])).await.assert_failure();
    assert!(
        refused
            .stderr
            .contains("user `nobody` is unknown to registry `private`"),
        "{}",
        refused.stderr
    );
    // alice cannot leave: she is the only owner who can publish, and a
    // client that may only read does not count.
    add_client(&config, &["reader", "--registry", "private"]);
    run(owner(&["--add", "reader"])).await.assert_success();
    let refused = run(owner(&["--remove", "alice"])).await.assert_failure();
    assert!(
        refused
            .stderr
            .contains("must keep at least one owner who can publish"),
        "{}",
        refused.stderr
    );
    // With bob (a token), she can.
    create_token(&config, "bob");
    run(owner(&["--add", "bob"])).await.assert_success();
    run(owner(&["--remove", "alice"])).await.assert_success();
    let bob_token = create_token(&config, "bob");
    let listed = private_project(&wharf, &bob_token)
        .run_async(&["owner", "--registry", "private", "--list", "own-me"])
        .await
        .assert_success();
    assert!(
        listed.stdout.contains("bob") && !listed.stdout.contains("alice"),
        "{}",
        listed.stdout
    );

    // 101 names in one request: refused before any is looked at.
    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let bob_cargo = private_project(&wharf, &bob_token);
    let mut args = vec!["owner", "--registry", "private"];
    for name in &many {
        args.extend(["--add", name.as_str()]);
    }
    args.push("own-me");
    let refused = bob_cargo.run_async(&args).await.assert_failure();
    assert!(
        refused.stderr.contains("send at most 100 at a time"),
        "{}",
        refused.stderr
    );
    // A body far larger than 100 names need: 413, cargo-shaped.
    let huge = serde_json::json!({ "users": vec!["x"; 100_000] }).to_string();
    let response = reqwest::Client::new()
        .put(wharf.url("/private/api/v1/crates/own-me/owners"))
        .header("Authorization", &bob_token)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("at most 100 users"),
        "{body}"
    );
    wharf.stop().await;
}

crate::on_both_databases!(
    owners_are_known_users_and_one_can_always_act,
    super::owners_are_known_users_and_one_can_always_act
);

/// Issue 13.11: with `deny = { serde = "<1.0.100" }`, a cache served
/// `0.8.0-rc1` … `0.9.0-rc4`, because a requirement matches only the
/// pre-releases that opt in. Now the served file has none of the
/// pre-releases inside the range, and cargo cannot lock one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_rule_leaves_out_the_pre_releases_of_its_range() {
    let versions = [
        "0.8.0-rc1",
        "0.9.0-rc4",
        "1.0.0-alpha.1",
        "1.0.99",
        "1.0.100-rc1",
        "1.0.100",
        "1.0.101",
    ];
    let upstream =
        FakeUpstream::start(versions.map(|vers| CrateBuilder::new("serde", vers).build())).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\n[registries.crates-io.policy]\ndeny = {{ serde = \"<1.0.100\" }}\n",
            dir.path().join("data").display(),
            upstream.index_url()
        ),
    )
    .unwrap();
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let served = reqwest::get(wharf.url("/crates-io/index/se/rd/serde"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served_versions: Vec<&str> = served
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            versions
                .into_iter()
                .find(|vers| v["vers"] == *vers)
                .unwrap()
        })
        .collect();
    assert_eq!(served_versions, ["1.0.100-rc1", "1.0.100", "1.0.101"]);
    // Nor is the crate file of one of them downloaded.
    let denied = reqwest::get(wharf.url("/crates-io/crates/serde/serde-0.9.0-rc4.crate"))
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);

    let project = CargoProject::new(&wharf.index_url(), &[("serde", "=0.9.0-rc4")]);
    let refused = project
        .run_async(&["generate-lockfile"])
        .await
        .assert_failure();
    assert!(refused.stderr.contains("serde"), "{}", refused.stderr);
    wharf.stop().await;
}

/// Runs `wharf ARGS` under umask 000, so that any mode it leaves to the umask
/// shows as world-writable.
fn wharf_under_umask_000(args: &[&str]) -> std::process::Output {
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 000 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_wharf"))
            .args(args)
            .env("WHARF_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run wharf")
    });
    assert!(
        out.status.success(),
        "wharf {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// This process's umask, from `/proc/self/status` (Linux).
fn umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Issue 13.6: `wharf.db` (token and password hashes) was created 644 in a
/// 755 data dir. The database and its WAL and shared-memory files are 0600,
/// key files 0600, and the working directories never served (`.tmp`,
/// `.sync`, `.cache-meta`) 0700, whatever the umask; the served tree
/// (`index/`, `crates/`, `status.json`) keeps the operator's umask, so a web
/// server can still read a mirror.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_working_state_are_private_and_the_served_tree_is_not() {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("mirrored", "1.0.0").build(),
        CrateBuilder::new("cached", "1.0.0").build(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{url}\"]\n\n[registries.m]\nkind = \"mirror\"\nupstreams = [\"{url}\"]\ninclude = [\"mirrored\"]\n\n[registries.private]\nkind = \"hosted\"\n",
            data.display(),
            url = upstream.index_url()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();

    // A sync and a token, under umask 000.
    wharf_under_umask_000(&["sync", "--config", config_arg]);
    let out = wharf_under_umask_000(&[
        "token",
        "create",
        "--registry",
        "private",
        "--user",
        "alice",
        "--config",
        config_arg,
    ]);
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_owned))
        .unwrap();
    let key = dir.path().join("mirror.key");
    wharf_under_umask_000(&["keys", "generate", "--out", key.to_str().unwrap()]);
    assert_eq!(mode(&key), 0o600, "key file");
    assert_eq!(mode(&data.join("wharf.db")), 0o600, "wharf.db");
    assert_eq!(mode(&data.join(".tmp")), 0o700, ".tmp");
    assert_eq!(mode(&data.join("m/.sync")), 0o700, ".sync");
    // The served tree follows the umask (000 here).
    assert_eq!(mode(&data.join("m/index/mi/rr/mirrored")), 0o666);
    assert_eq!(mode(&data.join("m/index")), 0o777);
    assert_eq!(
        mode(&data.join("m/crates/mirrored/mirrored-1.0.0.crate")),
        0o666
    );
    assert_eq!(mode(&data.join("m/status.json")), 0o666);

    // A server: a publish, a cache miss; the database's WAL files exist
    // while it runs.
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    publish(&wharf, &token, "hosted-one", "a private crate").await;
    let cached = reqwest::get(wharf.url("/crates-io/index/ca/ch/cached"))
        .await
        .unwrap();
    assert_eq!(cached.status(), 200);
    for file in ["wharf.db", "wharf.db-wal", "wharf.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(
        mode(&data.join("crates-io/.cache-meta")),
        0o700,
        ".cache-meta"
    );
    if let Some(umask) = umask() {
        assert_eq!(
            mode(&data.join("crates-io/index/ca/ch/cached")),
            0o666 & !umask,
            "a cached index file"
        );
        assert_eq!(
            mode(&data.join("private/crates/hosted-one/hosted-one-1.0.0.crate")),
            0o666 & !umask,
            "a hosted crate file"
        );
    }
    wharf.stop().await;
}
