//! `wharf run`: cargo through an ephemeral cache of the user's mirrors,
//! with fallback, editing no file.

use std::{
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use wharf_test_support::{
    cargo::CargoProject,
    fixture::graph,
    upstream::{Blackhole, FakeUpstream},
};

/// A project depending on `wr-0`, with no cargo configuration of its own.
fn bare_project() -> CargoProject {
    let project = CargoProject::new("sparse+http://127.0.0.1:9/unused/", &[("wr-0", "1")]);
    std::fs::remove_dir_all(project.project_dir().join(".cargo")).unwrap();
    project
}

/// `wharf run --mirror … -- cargo ARGS` in `project`; never crates.io.
async fn wharf_run(
    project: &CargoProject,
    mirrors: &[String],
    cache: &Path,
    args: &[&str],
) -> (Output, Duration) {
    let mut wharf_args: Vec<String> = vec![
        "run".into(),
        "--no-crates-io".into(),
        "--client-config".into(),
        "/nonexistent/client.toml".into(),
        "--cache-dir".into(),
        cache.display().to_string(),
    ];
    for mirror in mirrors {
        wharf_args.push("--mirror".into());
        wharf_args.push(mirror.clone());
    }
    wharf_args.push("--".into());
    wharf_args.push("cargo".into());
    wharf_args.extend(args.iter().map(|a| (*a).to_owned()));
    let refs: Vec<&str> = wharf_args.iter().map(String::as_str).collect();
    let mut command =
        tokio::process::Command::from(project.command(env!("CARGO_BIN_EXE_wharf"), &refs));
    command.env("WHARF_LOG", "warn").kill_on_drop(true);
    let started = Instant::now();
    let output = command.output().await.unwrap();
    (output, started.elapsed())
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Acceptance 1 and 2: a blackholed first mirror costs a fraction of a
/// second (under one, on a busy machine); nothing under the project or the cargo home is configured; later,
/// with every mirror gone, a fresh cargo home builds from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_falls_back_past_a_dead_mirror_and_then_works_offline() {
    let upstream = FakeUpstream::start(graph("wr", 24)).await;
    let blackhole = Blackhole::start().await;
    let caches = tempfile::tempdir().unwrap();

    // The fetches are timed, not the builds: compiling 24 crates varies by
    // more than the fraction of a second being checked.
    let healthy = bare_project();
    let (output, healthy_time) = wharf_run(
        &healthy,
        &[upstream.index_url()],
        &caches.path().join("a"),
        &["fetch"],
    )
    .await;
    assert_ok(&output, "healthy");

    let project = bare_project();
    let (output, fallback_time) = wharf_run(
        &project,
        &[blackhole.index_url(), upstream.index_url()],
        &caches.path().join("b"),
        &["fetch"],
    )
    .await;
    assert_ok(&output, "first mirror a blackhole");
    eprintln!(
        "wharf run fetch: healthy {healthy_time:?}; first mirror a blackhole {fallback_time:?}"
    );
    // The README: a dead mirror "costs a fraction of a second" (300 ms, then
    // it is set aside). Allowed: under a second, which leaves 700 ms for a
    // busy machine.
    assert!(
        fallback_time.saturating_sub(healthy_time) < Duration::from_secs(1),
        "with a dead first mirror {fallback_time:?}, healthy {healthy_time:?}"
    );
    let (output, _) = wharf_run(
        &project,
        &[blackhole.index_url(), upstream.index_url()],
        &caches.path().join("b"),
        &["build"],
    )
    .await;
    assert_ok(&output, "build, first mirror a blackhole");
    assert!(
        !project.project_dir().join(".cargo").exists(),
        "no project config written"
    );
    assert!(
        !project.home_dir().join("config.toml").exists(),
        "no cargo home config written"
    );
    let lock = project.lockfile();
    assert!(
        lock.contains("source = \"registry+https://github.com/rust-lang/crates.io-index\""),
        "Cargo.lock names crates.io: {lock}"
    );

    // Every mirror gone; a fresh cargo home and target dir: built from the cache.
    upstream.stop().await;
    drop(blackhole);
    let mut offline = project;
    offline.fresh_home();
    std::fs::remove_dir_all(offline.target_dir()).ok();
    let (output, _) = wharf_run(
        &offline,
        &[upstream.index_url()],
        &caches.path().join("b"),
        &["build", "--locked"],
    )
    .await;
    assert_ok(&output, "offline, from the cache");

    // The command's exit code is wharf's.
    let (output, _) = wharf_run(
        &offline,
        &[upstream.index_url()],
        &caches.path().join("b"),
        &["no-such-subcommand"],
    )
    .await;
    assert_eq!(output.status.code(), Some(101));
}

/// Acceptance 3 of issue 6: `wharf setup` then `wharf setup --undo` leaves
/// the cargo home's config.toml byte-identical; cargo works in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_and_undo_leave_the_config_byte_identical() {
    let upstream = FakeUpstream::start(graph("su", 3)).await;
    let project = bare_project();
    let mut project = project;
    project.write_file("Cargo.toml", "[package]\nname = \"consumer\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nsu-0 = \"1\"\n");
    project.write_file(
        "src/main.rs",
        "fn main() { println!(\"{}\", su_0::value()); }\n",
    );
    project.fresh_home();
    let config = project.home_dir().join("config.toml");
    let original = "# my settings\n[net]\nretry = 0\n\n[term]\nverbose = false   # keep\n";
    std::fs::write(&config, original).unwrap();

    let setup = |args: &[&str]| {
        let mut all = vec!["setup"];
        all.extend_from_slice(args);
        project
            .command(env!("CARGO_BIN_EXE_wharf"), &all)
            .env("CARGO_HOME", project.home_dir())
            .output()
            .unwrap()
    };
    let out = setup(&["--mirror", &upstream.index_url()]);
    assert_ok(&out, "setup");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("+ replace-with = \"wharf\""),
        "the diff is shown: {stdout}"
    );
    assert_ne!(std::fs::read_to_string(&config).unwrap(), original);
    project.run_async(&["build"]).await.assert_success();

    let out = setup(&["--undo"]);
    assert_ok(&out, "undo");
    assert_eq!(std::fs::read(&config).unwrap(), original.as_bytes());
    assert!(!project.home_dir().join("config.toml.wharf-backup").exists());
    let out = setup(&["--undo"]);
    assert!(!out.status.success(), "nothing left to undo");
}
