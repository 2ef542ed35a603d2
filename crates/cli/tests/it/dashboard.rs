//! Issue 14: the dashboard at `/`, loaded in headless Chromium after some
//! traffic: no console errors, a screenshot saved, and no filesystem path or
//! upstream password on the page.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use wharf_config::Config;
use wharf_test_support::{fixture::CrateBuilder, upstream::FakeUpstream};

use crate::common::{Wharf, wharf_cli};

/// The password in the cache's upstream URL, which must never be shown.
const PASSWORD: &str = "s3cret-upstream-pw";

/// The Chromium binary on `PATH`.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        }) {
            return path;
        }
    }
    panic!("the dashboard test needs Chromium: apt-get install chromium");
}

/// Runs headless Chromium on `url` with `args`, for at most a minute; returns
/// (stdout, stderr).
fn run_chromium(url: &str, profile: &Path, args: &[&str]) -> (String, String) {
    tokio::task::block_in_place(|| {
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let started = Instant::now();
        while child.try_wait().expect("chromium's status").is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("chromium did not finish within a minute");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("chromium's output");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
}

/// Acceptance 2: the dashboard after traffic, in a real browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_loads_in_chromium_without_errors_or_secrets() {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("serde", "1.0.200").build(),
        CrateBuilder::new("serde", "1.0.210").build(),
        CrateBuilder::new("tokio", "1.40.0").build(),
        CrateBuilder::new("rand", "0.8.5").build(),
        CrateBuilder::new("anyhow", "1.0.89").build(),
        CrateBuilder::new("libc", "0.2.159").build(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let with_password = upstream
        .index_url()
        .replace("http://", &format!("http://wharf:{PASSWORD}@"));
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[stats]\nflush_interval = \"100ms\"\n\n\
             [registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{with_password}\", \"{up}\"]\n\n\
             [registries.mirror]\nkind = \"mirror\"\nupstreams = [\"{up}\"]\ninclude = [\"serde\", \"rand\"]\n\n\
             [registries.company]\nkind = \"hosted\"\n",
            data_dir.display(),
            up = upstream.index_url(),
        ),
    )
    .unwrap();
    let synced = wharf_cli(&["sync", "--config", config.to_str().unwrap()]);
    assert!(
        synced.status.success(),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;

    // A week of history, a day at a time on the statistics' clock.
    let http = reqwest::Client::new();
    let now = std::time::SystemTime::now();
    for days_ago in (1..=6u32).rev() {
        wharf
            .state
            .stats
            .clock()
            .set(now - Duration::from_secs(u64::from(days_ago) * 86_400));
        for (krate, vers) in [("serde", "1.0.210"), ("tokio", "1.40.0"), ("rand", "0.8.5")] {
            for _ in 0..(days_ago * 7 + 3) % 9 + 1 {
                let file = http
                    .get(wharf.url(&format!("/crates-io/crates/{krate}/{krate}-{vers}.crate")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(file.status(), 200, "{krate} {vers}");
            }
        }
        wharf
            .state
            .stats
            .flush(wharf.state.requests.as_deref())
            .await;
    }
    wharf.state.stats.clock().set(now);

    // Today: index files and crate files through the cache and the mirror.
    let downloads = [
        ("crates-io", "serde", "1.0.210", 6),
        ("crates-io", "serde", "1.0.200", 2),
        ("crates-io", "tokio", "1.40.0", 5),
        ("crates-io", "anyhow", "1.0.89", 3),
        ("crates-io", "libc", "0.2.159", 1),
        ("mirror", "rand", "0.8.5", 4),
        ("mirror", "serde", "1.0.210", 2),
    ];
    for (registry, krate, vers, times) in downloads {
        let prefix = &krate[..2];
        let index = http
            .get(wharf.url(&format!(
                "/{registry}/index/{prefix}/{}/{krate}",
                &krate[2..4]
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(index.status(), 200, "{registry} {krate}");
        for _ in 0..times {
            let file = http
                .get(wharf.url(&format!("/{registry}/crates/{krate}/{krate}-{vers}.crate")))
                .send()
                .await
                .unwrap();
            assert_eq!(file.status(), 200, "{registry} {krate} {vers}");
        }
    }
    // Written every 100 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let page = http
        .get(wharf.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [
        PASSWORD,
        data_dir.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ] {
        assert!(!page.contains(secret), "the dashboard shows `{secret}`");
    }
    for expected in [
        "Requests per day",
        "Bytes served per day",
        "Top crates by downloads",
        "<svg",
        "wharf:***@",
        "[source.crates-io]",
        "synced",
    ] {
        assert!(page.contains(expected), "no `{expected}` in:\n{page}");
    }
    // The ranking over the charted days: serde (8 today) above tokio (5
    // today, the same history), both above anyhow (3, today only).
    let serde = page
        .find(">serde · crates-io<")
        .expect("serde in the ranking");
    let tokio = page
        .find(">tokio · crates-io<")
        .expect("tokio in the ranking");
    let anyhow = page
        .find(">anyhow · crates-io<")
        .expect("anyhow in the ranking");
    assert!(serde < tokio && tokio < anyhow, "ranked wrong:\n{page}");

    let profile = tempfile::tempdir().unwrap();
    let url = wharf.url("/");
    let (dom, log) = run_chromium(&url, profile.path(), &["--dump-dom"]);
    assert!(
        dom.contains("Top crates by downloads") && dom.contains("<svg"),
        "chromium did not render the page:\n{dom}\n{log}"
    );
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let (_, shot_log) = run_chromium(
        &url,
        profile.path(),
        &[&format!("--screenshot={}", screenshot.display())],
    );
    for log in [&log, &shot_log] {
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
            .collect();
        assert!(errors.is_empty(), "console errors:\n{}", errors.join("\n"));
    }
    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}\n{shot_log}", screenshot.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{shot_log}"
    );
    println!("dashboard screenshot: {}", screenshot.display());
    wharf.stop().await;
}
