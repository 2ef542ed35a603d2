//! Real cargo builds through the cache, and keeps building with upstream gone.

use std::time::Duration;

use wharf_test_support::{
    cargo::CargoProject,
    fixture::{CrateBuilder, graph},
    upstream::{FakeUpstream, RequestKind},
};

use crate::common::{Backend, Wharf, cache, cargo_ok};

crate::on_both_backends!(
    a_graph_builds_through_the_cache_and_again_with_upstream_gone,
    super::builds_a_graph_through_the_cache_and_again_with_upstream_gone
);

/// Acceptance 1 and 2: a graph of 24 crates is locked, fetched and built
/// through wharf, Cargo.lock still names crates.io; then with the upstream
/// stopped a fresh CARGO_HOME fetches `--locked` and builds from the cache
/// alone, with the index files past their TTL (so they are served stale).
/// On the disk and on S3.
async fn builds_a_graph_through_the_cache_and_again_with_upstream_gone(backend: Backend) {
    let crates = graph("fx", 24);
    let upstream = FakeUpstream::start(crates.clone()).await;
    let mut registry = cache(&[upstream.index_url()]);
    registry.index_ttl = Duration::from_secs(1);
    let wharf = Wharf::start_on(backend, registry).await;

    let mut project = CargoProject::new(&wharf.index_url(), &[("fx-0", "1")]);
    cargo_ok(&project, &["generate-lockfile"]);
    cargo_ok(&project, &["fetch"]);
    let built = cargo_ok(&project, &["run", "-q"]);
    assert!(
        !built.stdout.trim().is_empty(),
        "the consumer printed its sum"
    );

    let lock = project.lockfile();
    for krate in &crates {
        assert!(
            lock.contains(&format!("name = \"{}\"", krate.name)),
            "{} locked",
            krate.name
        );
    }
    assert_eq!(
        lock.matches("source = \"registry+https://github.com/rust-lang/crates.io-index\"")
            .count(),
        24,
        "Cargo.lock names crates.io as the source of every crate:\n{lock}"
    );
    assert_eq!(
        upstream.count(RequestKind::Crate),
        24,
        "each crate downloaded from upstream once"
    );
    // The crate files are where the backend keeps them, and only there.
    let on_disk = wharf
        .stored_files()
        .iter()
        .filter(|f| f.starts_with("crates-io/crates/"))
        .count();
    assert_eq!(on_disk, if backend == Backend::S3 { 0 } else { 24 });

    // Upstream gone, index TTL passed, a new CARGO_HOME with nothing cached.
    upstream.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    project.fresh_home();
    cargo_ok(&project, &["fetch", "--locked"]);
    cargo_ok(&project, &["build", "--locked"]);
    wharf.stop().await;
}

/// Acceptance 3: within `index_ttl` a new upstream version is not seen and no
/// upstream request is made; after it, `cargo update` picks the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_upstream_version_is_seen_after_the_ttl_and_not_asked_for_before() {
    let upstream = FakeUpstream::start([CrateBuilder::new("ttl-dep", "1.0.0").build()]).await;
    let mut registry = cache(&[upstream.index_url()]);
    // Wide enough that a loaded machine cannot cross it between two cargo runs.
    registry.index_ttl = Duration::from_secs(8);
    let wharf = Wharf::start(registry).await;
    let project = CargoProject::new(&wharf.index_url(), &[("ttl-dep", "1")]);

    cargo_ok(&project, &["generate-lockfile"]);
    assert!(project.lockfile().contains("version = \"1.0.0\""));
    upstream.publish(CrateBuilder::new("ttl-dep", "1.1.0").build());
    upstream.clear_log();

    cargo_ok(&project, &["update"]);
    assert!(
        project.lockfile().contains("version = \"1.0.0\""),
        "still within the TTL"
    );
    assert_eq!(
        upstream.count(RequestKind::Index),
        0,
        "no upstream request within the TTL: {:?}",
        upstream.requests()
    );

    tokio::time::sleep(Duration::from_secs(9)).await;
    cargo_ok(&project, &["update"]);
    let lock = project.lockfile();
    assert!(
        lock.contains("version = \"1.1.0\""),
        "the new version is picked:\n{lock}"
    );
    let asked: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Index)
        .collect();
    assert_eq!(asked.len(), 1, "one revalidation: {asked:?}");
    assert!(
        asked[0].if_none_match.is_some() || asked[0].if_modified_since.is_some(),
        "the revalidation is conditional: {asked:?}"
    );
    wharf.stop().await;
}
