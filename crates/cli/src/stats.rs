//! `wharf stats`: traffic per day (downloads, bytes, distinct clients,
//! requests) and the most downloaded crates, read straight from each
//! registry's database, as aligned tables or JSON.

use std::{path::Path, time::SystemTime};

use anyhow::Context;
use serde_json::json;
use wharf_config::Config;
use wharf_db::{CrateTotals, DayTotals, Db};
use wharf_server::human_bytes;

use crate::StatsArgs;

/// What `wharf stats` found for one registry.
struct Report {
    name: String,
    kind: &'static str,
    days: Vec<DayTotals>,
    top: Vec<CrateTotals>,
}

/// Runs `wharf stats`.
pub async fn run(config_path: Option<&Path>, args: StatsArgs) -> anyhow::Result<()> {
    let config = crate::load_config(config_path)?;
    if !config.stats.enabled {
        eprintln!("warning: [stats] enabled = false in this configuration: nothing new is counted");
    }
    let now = wharf_server::test_now_from_env()?.unwrap_or_else(SystemTime::now);
    let since_day = wharf_db::utc_day(
        now.checked_sub(*args.since)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    );
    let until_day = wharf_db::utc_day(now);
    let names: Vec<&String> = match &args.registry {
        Some(name) => {
            let (name, _) = config.registries.get_key_value(name).with_context(|| {
                let known: Vec<&str> = config.registries.keys().map(String::as_str).collect();
                format!(
                    "no registry named `{name}` in the configuration; it has: {}",
                    known.join(", ")
                )
            })?;
            vec![name]
        }
        None => config.registries.keys().collect(),
    };
    let mut reports = Vec::new();
    for name in names {
        let db = open(&config, name).await?;
        let stats = db.stats(name);
        reports.push(Report {
            name: name.clone(),
            kind: kind(&config, name),
            days: stats.days(&since_day).await?,
            top: stats.top_crates(&since_day, args.top).await?,
        });
        db.close().await;
    }
    if args.json {
        let registries: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    json!({
                        "kind": r.kind,
                        "days": r.days,
                        "totals": totals(&r.days),
                        "top_crates": r.top,
                    }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "since": since_day,
                "until": until_day,
                "registries": registries,
            }))?
        );
        return Ok(());
    }
    for (i, report) in reports.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_report(report, &since_day, &until_day);
    }
    Ok(())
}

async fn open(config: &Config, name: &str) -> anyhow::Result<Db> {
    let registry = &config.registries[name];
    Db::connect(&registry.database_url(&config.data_dir))
        .await
        .with_context(|| format!("registry `{name}`"))
}

fn kind(config: &Config, name: &str) -> &'static str {
    match config.registries.get(name) {
        Some(wharf_config::Registry::Cache(_)) => "cache",
        Some(wharf_config::Registry::Mirror(_)) => "mirror",
        Some(wharf_config::Registry::Hosted(_)) => "hosted",
        None => "?",
    }
}

/// The sums over `days` (distinct clients are per day, so not summed).
fn totals(days: &[DayTotals]) -> serde_json::Value {
    json!({
        "downloads": days.iter().map(|d| d.downloads).sum::<u64>(),
        "download_bytes": days.iter().map(|d| d.download_bytes).sum::<u64>(),
        "requests": days.iter().map(|d| d.requests).sum::<u64>(),
        "request_bytes": days.iter().map(|d| d.request_bytes).sum::<u64>(),
        "most_clients_in_a_day": days.iter().map(|d| d.clients).max().unwrap_or(0),
    })
}

fn print_report(report: &Report, since_day: &str, until_day: &str) {
    println!(
        "registry `{}` ({}), {since_day} to {until_day}",
        report.name, report.kind
    );
    if report.days.is_empty() {
        println!("  no traffic counted in this time\n");
        return;
    }
    let mut rows: Vec<Vec<String>> = vec![
        ["DAY", "DOWNLOADS", "BYTES", "CLIENTS", "REQUESTS", "SERVED"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for day in &report.days {
        rows.push(vec![
            day.day.clone(),
            day.downloads.to_string(),
            human_bytes(day.download_bytes),
            day.clients.to_string(),
            day.requests.to_string(),
            human_bytes(day.request_bytes),
        ]);
    }
    rows.push(vec![
        "total".to_owned(),
        report
            .days
            .iter()
            .map(|d| d.downloads)
            .sum::<u64>()
            .to_string(),
        human_bytes(report.days.iter().map(|d| d.download_bytes).sum()),
        "-".to_owned(),
        report
            .days
            .iter()
            .map(|d| d.requests)
            .sum::<u64>()
            .to_string(),
        human_bytes(report.days.iter().map(|d| d.request_bytes).sum()),
    ]);
    print_table(&rows);
    if !report.top.is_empty() {
        println!();
        let mut rows: Vec<Vec<String>> = vec![
            ["CRATE", "DOWNLOADS", "BYTES", "VERSIONS"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for krate in &report.top {
            rows.push(vec![
                krate.krate.clone(),
                krate.downloads.to_string(),
                human_bytes(krate.bytes),
                krate.versions.to_string(),
            ]);
        }
        print_table(&rows);
    }
}

/// Prints `rows` with each column as wide as its widest cell: the first
/// column left-aligned, numbers right-aligned.
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<width$}", width = widths[c])
                } else {
                    format!("{cell:>width$}", width = widths[c])
                }
            })
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
}
