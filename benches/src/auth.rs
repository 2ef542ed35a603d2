//! The cost of access control on index hits: the same files from one wharf,
//! from a registry anyone may read, from one that needs credentials (a token,
//! then a password sent as `Basic`), and from one whose policy filters lines.

use std::sync::Arc;

use wharf_config::{CacheRegistry, Config, Policy, Registry};
use wharf_db::{NewClient, User};
use wharf_server::AppState;
use wharf_test_support::{
    fixture::{CrateBuilder, sparse_path},
    upstream::FakeUpstream,
};

use crate::{Options, ROUNDS, wrk, wrk_script_with};

/// One row of the table: its label, the registry, the request headers.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

/// Crates in the fixture, each with a few versions.
const CRATES: usize = 200;

/// Runs the comparison and prints one table.
pub fn auth(
    options: &Options,
    upstream_rt: &tokio::runtime::Runtime,
    wharf_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let fixtures: Vec<_> = (0..CRATES)
        .flat_map(|c| {
            (0..5)
                .map(move |v| CrateBuilder::new(&format!("auth-{c}"), &format!("1.0.{v}")).build())
        })
        .collect();
    let upstream = upstream_rt.block_on(FakeUpstream::start(fixtures));
    let dir = tempfile::tempdir()?;
    let cache = |auth_required: bool, policy: Option<Policy>| {
        Registry::Cache(CacheRegistry {
            upstreams: vec![upstream.index_url()],
            auth_required,
            policy,
            ..CacheRegistry::default()
        })
    };
    // Every version but the newest of each crate gets through.
    let policy: Policy = toml::from_str("deny = { \"auth-*\" = \">=1.0.4\" }")?;
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().join("data"),
        registries: [
            ("open".to_owned(), cache(false, None)),
            ("locked".to_owned(), cache(true, None)),
            ("filtered".to_owned(), cache(false, Some(policy))),
        ]
        .into(),
        ..Config::default()
    };
    let (addr, token, basic, _stop) = wharf_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state =
            Arc::new(AppState::build(&config, &wharf_server::public_url(&config, addr)).await?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(wharf_server::serve(listener, state, async move {
            let _ = rx.await;
        }));
        let db = wharf_db::Db::connect(&config.registries["locked"].database_url(&config.data_dir))
            .await?;
        let client = |name: &str, password: bool| NewClient {
            name: User::new(name).expect("a valid name"),
            password,
            grants: Vec::new(),
            publish: false,
            expires_at: None,
        };
        let token = db
            .clients("locked")
            .add(&client("bench-token", false))
            .await?;
        let basic = db
            .clients("locked")
            .add(&client("bench-basic", true))
            .await?;
        anyhow::Ok((addr, token.authorization(), basic.authorization(), tx))
    })?;
    let paths = |registry: &str| -> Vec<String> {
        (0..CRATES)
            .map(|c| format!("/{registry}/index/{}", sparse_path(&format!("auth-{c}"))))
            .collect()
    };
    // Warm every registry: each file fetched once (and each credential
    // verified once), so what follows are hits.
    wharf_rt.block_on(async {
        let client = reqwest::Client::new();
        for (registry, auth) in [
            ("open", None),
            ("locked", Some(&token)),
            ("locked", Some(&basic)),
            ("filtered", None),
        ] {
            for path in paths(registry) {
                let mut request = client.get(format!("http://{addr}{path}"));
                if let Some(auth) = auth {
                    request = request.header("Authorization", auth.as_str());
                }
                request.send().await?.error_for_status()?;
            }
        }
        anyhow::Ok(())
    })?;
    println!(
        "\naccess control: index hits on {CRATES} files, gzip as cargo asks; wrk -t2 -c{} -d{}s, best of {ROUNDS}",
        options.connections, options.duration_secs
    );
    println!("{:<40} {:>12} {:>10}", "", "req/s", "vs open");
    let gzip = ("Accept-Encoding", "deflate, gzip");
    // (label, registry, request headers)
    let cases: [Case<'_>; 4] = [
        ("open registry, no credentials", "open", vec![gzip]),
        (
            "auth_required, token",
            "locked",
            vec![gzip, ("Authorization", token.as_str())],
        ),
        (
            "auth_required, Basic password (argon2)",
            "locked",
            vec![gzip, ("Authorization", basic.as_str())],
        ),
        ("deny-list policy filtering lines", "filtered", vec![gzip]),
    ];
    let mut open = 0f64;
    for (label, registry, headers) in cases {
        let script = wrk_script_with(dir.path(), label, &paths(registry), &headers)?;
        let mut best = 0f64;
        for _ in 0..ROUNDS {
            let load = wrk(options, &format!("http://{addr}"), &script)?;
            anyhow::ensure!(!load.errors, "{label}: some responses were not 2xx");
            best = best.max(load.requests_per_sec);
        }
        if registry == "open" {
            open = best;
        }
        println!("{label:<40} {best:>12.0} {:>9.2}x", best / open);
    }
    Ok(())
}
