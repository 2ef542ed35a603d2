//! Issue 5: access control. Clients with their own credentials and grants,
//! auth-required registries of every kind, allow-lists with approval, version
//! and licence rules, and the throttling of failed logins; with real cargo.

use std::path::{Path, PathBuf};

use wharf_config::Config;
use wharf_test_support::{
    cargo::CargoProject, fixture::CrateBuilder, postgres::TempPostgres, upstream::FakeUpstream,
};

use crate::common::{Backend, Wharf, WharfProcess, wharf_cli};

/// Runs `wharf ARGS --config CONFIG`, expecting success; returns stdout.
pub(crate) fn wharf_ok(config: &Path, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    let out = wharf_cli(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wharf {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `wharf clients add` with `args`; returns the token cargo must send, as
/// the printed credentials.toml has it.
pub(crate) fn add_client(config: &Path, args: &[&str]) -> String {
    let mut all = vec!["clients", "add"];
    all.extend(args);
    let stdout = wharf_ok(config, &all);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no token line in:\n{stdout}"))
        .to_owned()
}

pub(crate) fn write_config(dir: &Path, registries: &str) -> PathBuf {
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            // Counts are written every 100 ms, so `wharf clients downloads`
            // sees them at once.
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n{registries}\n\n[stats]\nflush_interval = \"100ms\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    config
}

fn package(name: &str, vers: &str, lib: &str) -> Vec<(String, String)> {
    vec![
        (
            "Cargo.toml".to_owned(),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\ndescription = \"{name}: sold to clients\"\nlicense = \"MIT\"\npublish = [\"paid\"]\n"
            ),
        ),
        ("src/lib.rs".to_owned(), lib.to_owned()),
    ]
}

/// A consumer of `deps` (`name = "req"` lines) from registry `paid`.
fn paid_consumer(
    cache_index: &str,
    paid_index: &str,
    deps: &[&str],
    token: Option<&str>,
) -> CargoProject {
    let mut project = CargoProject::new(cache_index, &[]);
    project.add_registry("paid", paid_index);
    let deps: String = deps
        .iter()
        .map(|d| {
            let (name, req) = d.split_once('=').unwrap();
            format!("{name} = {{ version = \"{req}\", registry = \"paid\" }}\n")
        })
        .collect();
    project.write_file(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"consumer\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}"
        ),
    );
    project.write_file("src/lib.rs", "");
    if let Some(token) = token {
        project.set_token("paid", token);
    }
    project
}

crate::on_both_databases!(
    clients_with_passwords_tokens_and_grants,
    super::clients_with_passwords_tokens_and_grants
);

/// The same with PostgreSQL and the files in a bucket: the scale-out setup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_passwords_tokens_and_grants_on_postgres_and_s3() {
    let postgres = TempPostgres::shared();
    let url = postgres.create_database();
    clients_with_passwords_tokens_and_grants_on(Some(&url), crate::common::Backend::S3).await;
}

/// Acceptance 1 and 2: an auth-required hosted registry whose clients have
/// their own credentials (a password sent as `Basic`, or a token) and grants.
async fn clients_with_passwords_tokens_and_grants(database_url: Option<&str>) {
    clients_with_passwords_tokens_and_grants_on(database_url, crate::common::Backend::Fs).await;
}

/// Acceptance 1 and 2 on one database and one storage backend.
async fn clients_with_passwords_tokens_and_grants_on(
    database_url: Option<&str>,
    backend: crate::common::Backend,
) {
    let upstream = FakeUpstream::start([]).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url
        .map(|url| format!("database_url = \"{url}\"\n"))
        .unwrap_or_default();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\n\n[registries.paid]\nkind = \"hosted\"\nauth_required = true\n{database}",
            backend.toml(),
            upstream.index_url()
        ),
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let cache_index = format!("sparse+http://{}/crates-io/index/", wharf.addr);
    let paid_index = format!("sparse+http://{}/paid/index/", wharf.addr);

    // The author publishes with a user name and password, through cargo:token.
    let author_token = add_client(
        &config,
        &["author", "--registry", "paid", "--password", "--publish"],
    );
    assert!(author_token.starts_with("Basic "), "{author_token}");
    for krate in ["acme-a", "acme-b"] {
        let mut author = CargoProject::new(&cache_index, &[]);
        author.add_registry("paid", &paid_index);
        author.set_token("paid", &author_token);
        for (path, body) in package(krate, "1.0.0", "pub fn value() -> u64 { 1 }\n") {
            author.write_file(&path, &body);
        }
        author
            .run_async(&[
                "publish",
                "--registry",
                "paid",
                "--no-verify",
                "--allow-dirty",
            ])
            .await
            .assert_success();
    }

    // Two clients, each granted one crate.
    let alice = add_client(
        &config,
        &["alice", "--registry", "paid", "--crate", "acme-a"],
    );
    assert!(alice.starts_with("wharf_"), "{alice}");
    let bob = add_client(
        &config,
        &[
            "bob",
            "--registry",
            "paid",
            "--password",
            "--crate",
            "acme-b*",
        ],
    );
    let alice_a = paid_consumer(&cache_index, &paid_index, &["acme-a=1"], Some(&alice));
    alice_a.run_async(&["build"]).await.assert_success();
    let bob_b = paid_consumer(&cache_index, &paid_index, &["acme-b=1"], Some(&bob));
    bob_b.run_async(&["build"]).await.assert_success();
    // What is not granted does not exist for a client.
    let alice_b = paid_consumer(&cache_index, &paid_index, &["acme-b=1"], Some(&alice));
    let refused = alice_b
        .run_async(&["generate-lockfile"])
        .await
        .assert_failure();
    assert!(refused.stderr.contains("acme-b"), "{}", refused.stderr);
    let http = reqwest::Client::new();
    for path in [
        "/paid/index/ac/me/acme-b",
        "/paid/crates/acme-b/acme-b-1.0.0.crate",
    ] {
        let response = http
            .get(wharf.url(path))
            .header("Authorization", &alice)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = http
        .get(wharf.url("/paid/index/ac/me/acme-a"))
        .header("Authorization", format!("Bearer {alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // No credentials: cargo shows that it needs a token for the registry.
    let anonymous = paid_consumer(&cache_index, &paid_index, &["acme-a=1"], None);
    let refused = anonymous
        .run_async(&["generate-lockfile"])
        .await
        .assert_failure();
    assert!(
        refused.stderr.contains("cargo login") || refused.stderr.contains("no token"),
        "{}",
        refused.stderr
    );
    // A wrong password: a clear refusal.
    use base64::Engine;
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bob:not-the-password")
    );
    let wrong_password = paid_consumer(&cache_index, &paid_index, &["acme-b=1"], Some(&wrong));
    let refused = wrong_password
        .run_async(&["generate-lockfile"])
        .await
        .assert_failure();
    assert!(
        refused.stderr.contains("wrong user name or password"),
        "{}",
        refused.stderr
    );

    // Downloads are counted per client.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let downloads = wharf_ok(&config, &["clients", "downloads", "--registry", "paid"]);
    assert!(
        downloads
            .lines()
            .any(|l| l.contains("alice") && l.contains("acme-a") && l.contains("1.0.0")),
        "{downloads}"
    );
    let list = wharf_ok(&config, &["clients", "list", "--registry", "paid"]);
    assert!(
        list.contains("bob") && list.contains("password") && list.contains("acme-b*"),
        "{list}"
    );

    // Revoked: refused within a tenth of a second, with the server running
    // (which reads the credentials generation ten times a second).
    let alice_url = wharf.url("/paid/index/ac/me/acme-a");
    let response = http
        .get(&alice_url)
        .header("Authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "alice may read before the revoke");
    wharf_ok(
        &config,
        &["clients", "revoke", "alice", "--registry", "paid"],
    );
    let took = crate::common::refused_after(&alice_url, &alice).await;
    assert!(
        took < crate::common::NOTICED_WITHIN,
        "the revoke was noticed after {took:?}"
    );
    let mut again = paid_consumer(&cache_index, &paid_index, &["acme-a=1"], Some(&alice));
    again.fresh_home();
    again.set_token("paid", &alice);
    let refused = again
        .run_async(&["generate-lockfile"])
        .await
        .assert_failure();
    assert!(refused.stderr.contains("revoked"), "{}", refused.stderr);

    // Rotated: the old password stops working, the new one works.
    let bob_new = add_rotated(&config, "bob");
    let took = crate::common::refused_after(&wharf.url("/paid/index/ac/me/acme-b"), &bob).await;
    assert!(
        took < crate::common::NOTICED_WITHIN,
        "the rotate was noticed after {took:?}"
    );
    let response = http
        .get(wharf.url("/paid/index/ac/me/acme-b"))
        .header("Authorization", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = http
        .get(wharf.url("/paid/index/ac/me/acme-b"))
        .header("Authorization", &bob_new)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    wharf.stop().await;
}

fn add_rotated(config: &Path, client: &str) -> String {
    let stdout = wharf_ok(config, &["clients", "rotate", client, "--registry", "paid"]);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no token line in:\n{stdout}"))
        .to_owned()
}

crate::on_both_backends!(
    an_allow_list_cache_holds_what_is_not_allowed_until_approved,
    super::an_allow_list_cache_holds_what_is_not_allowed_until_approved
);

/// Acceptance 3 and 4: an auth-required cache of crates.io with an
/// allow-list, a version rule and approval.
async fn an_allow_list_cache_holds_what_is_not_allowed_until_approved(backend: Backend) {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("good", "1.0.0").build(),
        CrateBuilder::new("other", "1.0.0").build(),
        CrateBuilder::new("vr", "1.0.198").build(),
        CrateBuilder::new("vr", "1.0.199").build(),
        CrateBuilder::new("vr", "1.0.200").build(),
        CrateBuilder::new("vr", "1.0.201").build(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[registries.company]\nkind = \"cache\"\nupstreams = [\"{}\"]\nauth_required = true\n\n[registries.company.policy]\nmode = \"allow-list\"\napproval = true\nallow = {{ good = \"*\", vr = \"<1.0.200\" }}\n",
            backend.toml(),
            upstream.index_url()
        ),
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let index = format!("sparse+http://{}/company/index/", wharf.addr);
    let token = add_client(&config, &["ci", "--registry", "company"]);
    let project = |deps: &[(&str, &str)]| {
        let mut project = CargoProject::new(&index, deps);
        project.replace_with_registry("company", &index);
        project.set_token("company", &token);
        project
    };

    // Everything allowed: it builds.
    project(&[("good", "1")])
        .run_async(&["build"])
        .await
        .assert_success();

    // Not allowed: cargo cannot find it, and the wish is queued.
    let wants_other = project(&[("good", "1"), ("other", "1")]);
    let refused = wants_other.run_async(&["build"]).await.assert_failure();
    assert!(refused.stderr.contains("other"), "{}", refused.stderr);
    let queue = wharf_ok(&config, &["approvals", "list", "--registry", "company"]);
    assert!(
        queue
            .lines()
            .any(|l| l.starts_with("other") && l.contains("1.0.0") && l.contains("ci")),
        "{queue}"
    );
    let dashboard = reqwest::get(wharf.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(dashboard.contains("1 waiting for approval"), "{dashboard}");
    let held = reqwest::Client::new()
        .get(wharf.url("/company/crates/other/other-1.0.0.crate"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 403);
    let body = held.text().await.unwrap();
    assert!(
        body.contains("other")
            && body.contains("1.0.0")
            && body.contains("wharf approvals approve other@1.0.0"),
        "{body}"
    );
    // Approved: the same build succeeds, with nothing cleared on the client.
    let approved = wharf_ok(
        &config,
        &["approvals", "approve", "other", "--registry", "company"],
    );
    assert!(approved.contains("approved"), "{approved}");
    wants_other.run_async(&["build"]).await.assert_success();
    let queue = wharf_ok(&config, &["approvals", "list", "--registry", "company"]);
    assert!(!queue.lines().any(|l| l.starts_with("other")), "{queue}");

    // Rejected: still out, and a download says who decided.
    wharf_ok(
        &config,
        &[
            "approvals",
            "reject",
            "vr@1.0.201",
            "--registry",
            "company",
            "--by",
            "sec-team",
            "--note",
            "known bad",
        ],
    );
    let rejected = reqwest::Client::new()
        .get(wharf.url("/company/crates/vr/vr-1.0.201.crate"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 403);
    let body = rejected.text().await.unwrap();
    assert!(
        body.contains("rejected") && body.contains("sec-team") && body.contains("known bad"),
        "{body}"
    );

    // A version rule: the resolver never sees versions above the bound.
    let vr = project(&[("vr", "1")]);
    vr.run_async(&["generate-lockfile"]).await.assert_success();
    assert!(
        vr.lockfile().contains("version = \"1.0.199\""),
        "{}",
        vr.lockfile()
    );
    vr.run_async(&["update"]).await.assert_success();
    assert!(
        vr.lockfile().contains("version = \"1.0.199\""),
        "{}",
        vr.lockfile()
    );
    // One held version approved on its own shows at once.
    wharf_ok(
        &config,
        &[
            "approvals",
            "approve",
            "vr@1.0.200",
            "--registry",
            "company",
        ],
    );
    vr.run_async(&["update"]).await.assert_success();
    assert!(
        vr.lockfile().contains("version = \"1.0.200\""),
        "{}",
        vr.lockfile()
    );
    wharf.stop().await;
}

crate::on_both_backends!(
    a_licence_rule_refuses_a_crate_naming_its_licence,
    super::a_licence_rule_refuses_a_crate_naming_its_licence
);

/// Acceptance 5: a licence rule refuses a crate whose licence is not
/// allowed, with a message naming it.
async fn a_licence_rule_refuses_a_crate_naming_its_licence(backend: Backend) {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("lic-ok", "1.0.0")
            .license("MIT OR Apache-2.0")
            .build(),
        CrateBuilder::new("lic-gpl", "1.0.0")
            .license("GPL-3.0-only")
            .build(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\n\n[registries.crates-io.policy]\nlicenses = [\"MIT\", \"Apache-2.0\"]\n",
            backend.toml(),
            upstream.index_url()
        ),
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    CargoProject::new(&wharf.index_url(), &[("lic-ok", "1")])
        .run_async(&["build"])
        .await
        .assert_success();
    let refused = CargoProject::new(&wharf.index_url(), &[("lic-gpl", "1")])
        .run_async(&["fetch"])
        .await
        .assert_failure();
    assert!(
        refused.stderr.contains("GPL-3.0-only") && refused.stderr.contains("does not allow"),
        "{}",
        refused.stderr
    );
    wharf.stop().await;
}

/// Acceptance 6: a thousand wrong passwords from one address are throttled
/// and logged; the right password still works from another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_throttled_per_address() {
    use base64::Engine;
    let upstream = FakeUpstream::start([CrateBuilder::new("good", "1.0.0").build()]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\nauth_required = true\n",
            upstream.index_url()
        ),
    );
    let right = add_client(&config, &["acme", "--registry", "crates-io", "--password"]);
    let log = dir.path().join("wharf.log");
    let server = WharfProcess::spawn_logging_to(&config, &log);
    // Each guess differs: the same wrong header sent again is refused from
    // memory and is not another guess (see hardening.rs).
    let wrong = |i: usize| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("acme:guess{i}"))
        )
    };
    let attacker = reqwest::Client::builder()
        .local_address("127.0.0.1".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let url = format!("{}/crates-io/index/config.json", server.base_url);
    let (mut forbidden, mut throttled) = (0, 0);
    for i in 0..1000 {
        let status = attacker
            .get(&url)
            .header("Authorization", wrong(i))
            .send()
            .await
            .unwrap()
            .status();
        match status.as_u16() {
            403 => forbidden += 1,
            429 => throttled += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(forbidden <= 12, "{forbidden} wrong passwords were checked");
    assert!(throttled >= 988, "only {throttled} were throttled");
    // The locked-out address is refused even with the right password.
    let status = attacker
        .get(&url)
        .header("Authorization", &right)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 429);
    // Another address with the right password is not.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let response = other
        .get(format!("{}/crates-io/index/go/od/good", server.base_url))
        .header("Authorization", &right)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Logs and metrics show it.
    let metrics = reqwest::get(format!("{}/metrics", server.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("wharf_auth_lockouts_total 1"), "{metrics}");
    assert!(
        metrics.contains("wharf_auth_locked_addresses 1"),
        "{metrics}"
    );
    drop(server);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("locked out"), "{log}");
}

crate::on_both_backends!(
    an_auth_required_mirror_with_a_deny_rule,
    super::an_auth_required_mirror_with_a_deny_rule
);

/// `auth_required` and a deny-list policy on a mirror registry: served by
/// wharf, its config.json says auth-required, every file needs credentials,
/// and what the policy denies is gone from cargo's view.
async fn an_auth_required_mirror_with_a_deny_rule(backend: Backend) {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("good", "1.0.0").build(),
        CrateBuilder::new("good", "2.0.0").build(),
        CrateBuilder::new("bad", "1.0.0").build(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::mirror::mirror_config_on(
        backend,
        dir.path(),
        &upstream,
        "include = [\"good\", \"bad\"]\nauth_required = true\n[registries.m.policy]\ndeny = { bad = \"*\", good = \">=2\" }\n",
    );
    crate::mirror::sync_ok(&config);
    let token = add_client(&config, &["reader", "--registry", "m"]);
    let brief = add_client(&config, &["brief", "--registry", "m", "--expires", "1s"]);
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let http = reqwest::Client::new();
    let get = |path: &str, auth: bool| {
        let mut request = http.get(wharf.url(path));
        if auth {
            request = request.header("Authorization", &token);
        }
        request.send()
    };
    let anonymous = get("/m/index/config.json", false).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let config_json: serde_json::Value = get("/m/index/config.json", true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config_json["auth-required"], true);
    let good = get("/m/index/go/od/good", true).await.unwrap();
    assert_eq!(good.status(), 200);
    let lines = good.text().await.unwrap();
    assert!(
        lines.contains("\"1.0.0\"") && !lines.contains("\"2.0.0\""),
        "{lines}"
    );
    assert_eq!(get("/m/index/3/b/bad", true).await.unwrap().status(), 404);
    let denied = get("/m/crates/bad/bad-1.0.0.crate", true).await.unwrap();
    assert_eq!(denied.status(), 403);
    let body = denied.text().await.unwrap();
    assert!(body.contains("deny rule"), "{body}");

    // Credentials with an expiry work until it, then are refused saying so.
    let brief_get = |path: &str| {
        http.get(wharf.url(path))
            .header("Authorization", &brief)
            .send()
    };
    assert_eq!(
        brief_get("/m/index/config.json").await.unwrap().status(),
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let expired = brief_get("/m/index/config.json").await.unwrap();
    assert_eq!(expired.status(), 403);
    let body = expired.text().await.unwrap();
    assert!(body.contains("expired"), "{body}");

    let mut project = CargoProject::new(
        &format!("sparse+{}", wharf.url("/m/index/")),
        &[("good", "*")],
    );
    project.replace_with_registry("m", &format!("sparse+{}", wharf.url("/m/index/")));
    project.set_token("m", &token);
    project.run_async(&["build"]).await.assert_success();
    assert!(
        project.lockfile().contains("version = \"1.0.0\""),
        "{}",
        project.lockfile()
    );
    wharf.stop().await;
}
