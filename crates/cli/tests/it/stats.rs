//! Issue 14: traffic statistics. Downloads by two clients of a registry
//! that requires credentials and by several addresses of an open one, over
//! two days of a fixed clock, read back with `wharf stats` as tables and
//! JSON; no address reaches the database.

use std::{path::Path, process::Command};

use wharf_config::Config;
use wharf_test_support::{fixture::CrateBuilder, upstream::FakeUpstream};

use crate::common::Wharf;

const DAY_1: &str = "2026-11-29T10:00:00Z";
const DAY_2: &str = "2026-11-30T10:00:00Z";
const NOW: &str = "2026-11-30T12:00:00Z";

/// The addresses the open registry's clients come from (named by a trusted
/// proxy in `X-Forwarded-For`).
const ADDRESSES: [&str; 3] = ["203.0.113.7", "203.0.113.8", "2001:db8::5"];

/// Runs `wharf ARGS --config CONFIG` at the fixed time, expecting success.
fn wharf_stats(config: &Path, args: &[&str]) -> String {
    let out = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("stats")
            .args(args)
            .arg("--config")
            .arg(config)
            .env("WHARF_LOG", "warn")
            .env("WHARF_TEST_NOW", NOW)
            .output()
            .expect("run wharf stats")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wharf stats {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Downloads `krate`-`vers` from registry `registry`, as `authorization` or
/// from `address`; returns the bytes.
async fn download(
    wharf: &Wharf,
    registry: &str,
    krate: &str,
    vers: &str,
    authorization: Option<&str>,
    address: Option<&str>,
) -> u64 {
    let mut request = reqwest::Client::new()
        .get(wharf.url(&format!("/{registry}/crates/{krate}/{krate}-{vers}.crate")));
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    if let Some(address) = address {
        request = request.header("X-Forwarded-For", address);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{registry} {krate} {vers}");
    response.bytes().await.unwrap().len() as u64
}

fn at(text: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

crate::on_both_databases!(
    stats_count_downloads_clients_and_days,
    super::stats_count_downloads_clients_and_days
);

/// Acceptance 1: the right counts per day and crate, in text and JSON; an
/// open registry counts distinct addresses without storing any.
async fn stats_count_downloads_clients_and_days(database_url: Option<&str>) {
    let upstream = FakeUpstream::start([
        CrateBuilder::new("a", "1.0.0").build(),
        CrateBuilder::new("a", "1.1.0").build(),
        CrateBuilder::new("b", "1.0.0").build(),
        CrateBuilder::new("c", "1.0.0").build(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url
        .map(|url| format!("database_url = \"{url}\"\n"))
        .unwrap_or_default();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ntrusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n\n\
             # Written only when asked and at shutdown.\n[stats]\nflush_interval = \"1h\"\n\n\
             [registries.open]\nkind = \"cache\"\nupstreams = [\"{up}\"]\n{database}\n\
             [registries.paid]\nkind = \"cache\"\nupstreams = [\"{up}\"]\nauth_required = true\n{database}",
            dir.path().join("data").display(),
            up = upstream.index_url(),
        ),
    )
    .unwrap();
    let alice = crate::access::add_client(&config, &["alice", "--registry", "paid"]);
    let bob = crate::access::add_client(&config, &["bob", "--registry", "paid"]);
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    let [seven, eight, six] = ADDRESSES;

    // Day 1.
    wharf.state.stats.clock().set(at(DAY_1));
    let mut paid_bytes_1 = 0;
    paid_bytes_1 += download(&wharf, "paid", "a", "1.0.0", Some(&alice), None).await;
    paid_bytes_1 += download(&wharf, "paid", "a", "1.0.0", Some(&alice), None).await;
    paid_bytes_1 += download(&wharf, "paid", "b", "1.0.0", Some(&alice), None).await;
    paid_bytes_1 += download(&wharf, "paid", "a", "1.1.0", Some(&bob), None).await;
    let mut open_bytes_1 = 0;
    open_bytes_1 += download(&wharf, "open", "a", "1.0.0", None, Some(seven)).await;
    open_bytes_1 += download(&wharf, "open", "a", "1.0.0", None, Some(eight)).await;
    open_bytes_1 += download(&wharf, "open", "b", "1.0.0", None, Some(eight)).await;
    open_bytes_1 += download(&wharf, "open", "c", "1.0.0", None, Some(six)).await;
    // What the requests of day 1 come to is written on day 1.
    wharf
        .state
        .stats
        .flush(wharf.state.requests.as_deref())
        .await;

    // Day 2: written at shutdown.
    wharf.state.stats.clock().set(at(DAY_2));
    let paid_bytes_2 = download(&wharf, "paid", "c", "1.0.0", Some(&alice), None).await;
    let open_bytes_2 = download(&wharf, "open", "c", "1.0.0", None, Some(seven)).await;
    wharf.stop().await;

    let report: serde_json::Value =
        serde_json::from_str(&wharf_stats(&config, &["--json", "--since", "30d"])).unwrap();
    let paid = &report["registries"]["paid"];
    let day =
        |registry: &serde_json::Value, i: usize, field: &str| registry["days"][i][field].as_u64();
    assert_eq!(paid["days"].as_array().map(Vec::len), Some(2), "{report:#}");
    assert_eq!(paid["days"][0]["day"], "2026-11-29", "{report:#}");
    assert_eq!(day(paid, 0, "downloads"), Some(4), "{report:#}");
    assert_eq!(day(paid, 0, "download_bytes"), Some(paid_bytes_1));
    assert_eq!(
        day(paid, 0, "clients"),
        Some(2),
        "alice and bob: {report:#}"
    );
    assert_eq!(day(paid, 0, "requests"), Some(4), "{report:#}");
    assert_eq!(paid["days"][1]["day"], "2026-11-30");
    assert_eq!(day(paid, 1, "downloads"), Some(1));
    assert_eq!(day(paid, 1, "download_bytes"), Some(paid_bytes_2));
    assert_eq!(day(paid, 1, "clients"), Some(1));
    assert_eq!(day(paid, 1, "requests"), Some(1));
    assert_eq!(paid["totals"]["downloads"], 5);
    let top: Vec<(String, u64, u64)> = paid["top_crates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["crate"].as_str().unwrap().to_owned(),
                c["downloads"].as_u64().unwrap(),
                c["versions"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        top,
        [
            ("a".to_owned(), 3, 2),
            ("b".to_owned(), 1, 1),
            ("c".to_owned(), 1, 1)
        ]
    );

    let open = &report["registries"]["open"];
    assert_eq!(day(open, 0, "downloads"), Some(4), "{report:#}");
    assert_eq!(day(open, 0, "download_bytes"), Some(open_bytes_1));
    assert_eq!(
        day(open, 0, "clients"),
        Some(3),
        "three addresses: {report:#}"
    );
    assert_eq!(day(open, 1, "downloads"), Some(1));
    assert_eq!(day(open, 1, "download_bytes"), Some(open_bytes_2));
    assert_eq!(day(open, 1, "clients"), Some(1));
    let open_top: Vec<(&str, u64)> = open["top_crates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["crate"].as_str().unwrap(),
                c["downloads"].as_u64().unwrap(),
            )
        })
        .collect();
    // Ties are ranked by name.
    assert_eq!(open_top, [("a", 2), ("c", 2), ("b", 1)], "{report:#}");

    // --since counts back from now: 6 hours reach only the second day.
    let recent: serde_json::Value = serde_json::from_str(&wharf_stats(
        &config,
        &[
            "--json",
            "--since",
            "6h",
            "--registry",
            "open",
            "--top",
            "1",
        ],
    ))
    .unwrap();
    let days = recent["registries"]["open"]["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{recent:#}");
    assert_eq!(days[0]["day"], "2026-11-30");
    assert_eq!(
        recent["registries"]["open"]["top_crates"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert!(recent["registries"].get("paid").is_none(), "{recent:#}");

    // The tables: aligned columns, the same figures.
    let text = wharf_stats(&config, &["--registry", "paid"]);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("  ")).collect();
    let cells = |row: &str| -> Vec<String> {
        row.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let day_1 = rows
        .iter()
        .find(|r| r.trim_start().starts_with("2026-11-29"))
        .unwrap_or_else(|| panic!("no row for the first day:\n{text}"));
    let day_1_cells = cells(day_1);
    assert_eq!(day_1_cells[1], "4", "{text}");
    assert_eq!(day_1_cells[3], "2", "{text}");
    assert_eq!(day_1_cells[4], "4", "{text}");
    let header = rows.iter().position(|r| r.contains("DAY")).unwrap();
    let table = &rows[header..header + 4];
    assert!(
        table.iter().all(|r| r.len() == table[0].len()),
        "the day table's rows are not aligned:\n{text}"
    );
    let a_row = rows
        .iter()
        .find(|r| r.trim_start().starts_with("a "))
        .unwrap_or_else(|| panic!("no row for crate a:\n{text}"));
    assert_eq!(cells(a_row)[1], "3", "{text}");

    // The database holds hashes, never the addresses.
    let stored = stored_clients(database_url, dir.path()).await;
    let anonymous: Vec<&String> = stored.iter().filter(|c| c.starts_with("addr:")).collect();
    assert_eq!(anonymous.len(), 4, "{stored:?}");
    for client in &anonymous {
        let hash = client.trim_start_matches("addr:");
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{client}"
        );
    }
    assert!(stored.contains(&"client:alice".to_owned()), "{stored:?}");
    let everything = database_text(database_url, dir.path()).await;
    for address in ADDRESSES {
        assert!(
            !everything.contains(address),
            "the database holds the address {address}"
        );
    }
}

/// Every row of `stats_clients`.
async fn stored_clients(database_url: Option<&str>, dir: &Path) -> Vec<String> {
    let sql = "SELECT client FROM stats_clients ORDER BY client";
    match database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
        }
        None => {
            let pool = sqlx::SqlitePool::connect(&format!(
                "sqlite://{}",
                dir.join("data/wharf.db").display()
            ))
            .await
            .unwrap();
            sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
        }
    }
}

/// Every text value of every statistics table, and for SQLite the bytes of
/// the database files too, as one string to search.
async fn database_text(database_url: Option<&str>, dir: &Path) -> String {
    let sql = "SELECT registry || ' ' || day || ' ' || client FROM stats_clients \
               UNION ALL SELECT registry || ' ' || day || ' ' || crate || ' ' || vers FROM stats_downloads \
               UNION ALL SELECT day || ' ' || key FROM stats_keys";
    let rows: Vec<String> = match database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
        }
        None => {
            let pool = sqlx::SqlitePool::connect(&format!(
                "sqlite://{}",
                dir.join("data/wharf.db").display()
            ))
            .await
            .unwrap();
            sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
        }
    };
    let mut text = rows.join("\n");
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(format!("data/wharf.db{suffix}"))) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}
