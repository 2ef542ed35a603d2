//! The dashboard's HTML: one server-rendered page with its style inline and
//! charts as inline SVG (`svg.rs`), so it works offline, needs no build step
//! and runs no script. It refreshes itself every 30 s.
//!
//! [`Page`] is what the page shows; `actions/show_dashboard.rs` gathers it.
//! Every text that comes from configuration or data is escaped here.
//! **Invariant:** the page shows no filesystem path and no upstream
//! credential (upstreams are shown in their redacted form).

mod svg;

use std::fmt::Write;

/// How healthy a registry looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Serving normally.
    Good,
    /// Serving, but something needs a look (an upstream down, a stale mirror).
    Warn,
    /// Cannot serve what it does not hold (every upstream down).
    Bad,
}

impl Health {
    fn class(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Warn => "warn",
            Self::Bad => "bad",
        }
    }
}

/// An upstream as shown: its redacted URL and whether it is up.
pub struct UpstreamLine {
    /// The redacted URL.
    pub url: String,
    /// Whether it is being tried; `None` when this server does not know
    /// (a mirror's upstreams, which only its passes talk to).
    pub up: Option<bool>,
    /// Why it is down, when it is.
    pub note: Option<String>,
}

/// One registry's card.
pub struct RegistryCard {
    /// Its name.
    pub name: String,
    /// `cache`, `mirror` or `hosted`.
    pub kind: &'static str,
    /// The sparse index URL cargo uses.
    pub index_url: String,
    /// Its health, and a few words on it.
    pub health: (Health, String),
    /// Label and value pairs (plain text).
    pub facts: Vec<(String, String)>,
    /// Its upstreams, if it has any.
    pub upstreams: Vec<UpstreamLine>,
    /// Crate downloads per day over the charted days, oldest first.
    pub downloads: Vec<u64>,
}

/// Traffic of one day, over every registry.
#[derive(Default, Clone)]
pub struct DayPoint {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Requests of every kind.
    pub requests: u64,
    /// Bytes served.
    pub bytes: u64,
    /// Crate downloads.
    pub downloads: u64,
}

/// Everything the dashboard shows.
pub struct Page {
    /// wharf's version.
    pub version: &'static str,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// Requests and bytes served since the server started.
    pub served_since_start: (u64, u64),
    /// Whether traffic statistics are kept (else the charts say how to turn them on).
    pub stats_enabled: bool,
    /// The charted days, oldest first.
    pub days: Vec<DayPoint>,
    /// The most downloaded crates over the charted days: label, downloads.
    pub top_crates: Vec<(String, u64)>,
    /// One card per registry.
    pub registries: Vec<RegistryCard>,
    /// `.cargo/config.toml` lines for every registry.
    pub cargo_config: String,
}

const STYLE: &str = "\
:root{--ink:#1c2430;--muted:#667085;--line:#e4e7ec;--bg:#f4f6f9;--card:#fff;--blue:#2f6fde;--teal:#0f9488;--violet:#7257d6;--good:#16a34a;--warn:#d97706;--bad:#dc2626}\
*{box-sizing:border-box}\
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,Ubuntu,Cantarell,sans-serif}\
header{background:#16202e;color:#fff;padding:14px 32px;display:flex;align-items:baseline;gap:18px;flex-wrap:wrap}\
header h1{margin:0;font-size:20px;letter-spacing:.5px}header .sub{color:#aab4c3;font-size:13px}\
header nav{margin-left:auto;font-size:13px}header a{color:#cfe0ff;margin-left:14px}\
main{max-width:1240px;margin:0 auto;padding:22px 32px 40px}\
h2{font-size:13px;text-transform:uppercase;letter-spacing:.08em;color:var(--muted);margin:26px 0 10px;font-weight:600}\
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:14px}\
.tile,.card{background:var(--card);border:1px solid var(--line);border-radius:10px;box-shadow:0 1px 2px rgba(16,24,40,.04)}\
.tile{padding:14px 16px}.tile .n{font-size:24px;font-weight:650;font-variant-numeric:tabular-nums}.tile .l{color:var(--muted);font-size:13px}\
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:14px}\
.card{padding:16px 18px}.card h3{margin:0 0 8px;font-size:15px;display:flex;align-items:center;gap:8px}\
.chart{width:100%;height:auto;display:block}.chart .grid{stroke:var(--line)}\
.chart text{font-size:10.5px;fill:var(--muted);font-family:inherit}.chart .label{fill:var(--ink);font-size:12px}.chart .value{font-size:12px}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px}\
.dot{width:10px;height:10px;border-radius:50%;display:inline-block;flex:none}\
.good{background:var(--good)}.idle{background:#c4cad4}.warn{background:var(--warn)}.bad{background:var(--bad)}\
.kind{font-size:11px;font-weight:600;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);border:1px solid var(--line);border-radius:999px;padding:1px 8px}\
.state{color:var(--muted);font-size:13px;margin:0 0 10px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:0;font-size:13px}dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}\
ul.up{list-style:none;padding:0;margin:10px 0 0;font-size:13px}ul.up li{display:flex;gap:8px;align-items:center;overflow-wrap:anywhere}\
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}\
pre{background:#16202e;color:#e6edf6;padding:14px 16px;border-radius:10px;overflow:auto}\
.empty{color:var(--muted);font-size:13px;padding:30px 0;text-align:center}\
.spark{height:28px;margin-top:10px}\
footer{color:var(--muted);font-size:12px;text-align:center;padding:10px}";

/// The page as HTML.
pub fn render(page: &Page) -> String {
    let mut html = String::with_capacity(16 * 1024);
    let _ = write!(
        html,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=refresh content=30><title>wharf</title><style>{STYLE}</style></head><body>\
         <header><h1>wharf</h1><span class=sub>{} registr{} · up {} · v{}</span>\
         <nav><a href=/status.json>status.json</a><a href=/metrics>metrics</a><a href=/readyz>readyz</a></nav></header><main>",
        page.registries.len(),
        if page.registries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        duration(page.uptime_secs),
        escape(page.version),
    );
    tiles(&mut html, page);
    charts(&mut html, page);
    html.push_str("<h2>Registries</h2><div class=cards>");
    for card in &page.registries {
        registry_card(&mut html, card);
    }
    let _ = write!(
        html,
        "</div><h2>Use it from cargo</h2><div class=card><p class=state>Add to <code>.cargo/config.toml</code> (one project) or <code>~/.cargo/config.toml</code> (every project):</p><pre>{}</pre></div>\
         </main><footer>Refreshes every 30 s · days are UTC</footer></body></html>",
        escape(&page.cargo_config)
    );
    html
}

fn tiles(html: &mut String, page: &Page) {
    let today = page.days.last().cloned().unwrap_or_default();
    let week = page.days.iter().rev().take(7);
    let week_downloads: u64 = week.map(|d| d.downloads).sum();
    html.push_str("<div class=tiles>");
    for (number, label) in [
        (compact(today.requests), "requests today".to_owned()),
        (compact(today.downloads), "crate downloads today".to_owned()),
        (human_bytes(today.bytes), "served today".to_owned()),
        (compact(week_downloads), "downloads, last 7 days".to_owned()),
        (
            compact(page.served_since_start.0),
            format!(
                "requests since start ({})",
                human_bytes(page.served_since_start.1)
            ),
        ),
    ] {
        let _ = write!(
            html,
            "<div class=tile><div class=n>{}</div><div class=l>{}</div></div>",
            escape(&number),
            escape(&label)
        );
    }
    html.push_str("</div>");
}

fn charts(html: &mut String, page: &Page) {
    let _ = write!(html, "<h2>Traffic, last {} days</h2>", page.days.len());
    if !page.stats_enabled {
        html.push_str("<div class=card><p class=empty>Traffic statistics are off: set <code>[stats] enabled = true</code> to chart them.</p></div>");
        return;
    }
    let series = |f: fn(&DayPoint) -> u64| -> Vec<(String, u64)> {
        page.days.iter().map(|d| (d.day.clone(), f(d))).collect()
    };
    html.push_str("<div class=charts>");
    let _ = write!(
        html,
        "<div class=card><h3>Requests per day</h3>{}</div>",
        svg::columns(&series(|d| d.requests), "var(--blue)", compact, "requests")
    );
    let _ = write!(
        html,
        "<div class=card><h3>Bytes served per day</h3>{}</div>",
        svg::columns(&series(|d| d.bytes), "var(--teal)", human_bytes, "served")
    );
    html.push_str("<div class=card><h3>Top crates by downloads</h3>");
    if page.top_crates.is_empty() {
        html.push_str("<p class=empty>No crate downloaded yet.</p>");
    } else {
        html.push_str(&svg::bars(&page.top_crates, "var(--violet)", compact));
    }
    html.push_str("</div></div>");
}

fn registry_card(html: &mut String, card: &RegistryCard) {
    let (health, words) = &card.health;
    let _ = write!(
        html,
        "<section class=card><h3><span class=\"dot {}\" title=\"{}\"></span>{}<span class=kind>{}</span></h3><p class=state>{}</p><dl><dt>index</dt><dd><code>{}</code></dd>",
        health.class(),
        health.class(),
        escape(&card.name),
        card.kind,
        escape(words),
        escape(&card.index_url)
    );
    for (label, value) in &card.facts {
        let _ = write!(html, "<dt>{}</dt><dd>{}</dd>", escape(label), escape(value));
    }
    html.push_str("</dl>");
    if !card.upstreams.is_empty() {
        html.push_str("<ul class=up>");
        for upstream in &card.upstreams {
            let _ = write!(
                html,
                "<li><span class=\"dot {}\"></span><code>{}</code>{}</li>",
                match upstream.up {
                    Some(true) => "good",
                    Some(false) => "bad",
                    None => "idle",
                },
                escape(&upstream.url),
                upstream
                    .note
                    .as_deref()
                    .map(|n| format!(" <span class=state>{}</span>", escape(n)))
                    .unwrap_or_default()
            );
        }
        html.push_str("</ul>");
    }
    if card.downloads.iter().any(|&n| n > 0) {
        let points: Vec<(String, u64)> = card
            .downloads
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("day {}", i + 1), n))
            .collect();
        let _ = write!(
            html,
            "<div class=spark title=\"crate downloads per day\">{}</div><div class=state>crate downloads, last {} days</div>",
            spark(&points),
            points.len()
        );
    }
    html.push_str("</section>");
}

/// A small line of downloads per day, without axes.
fn spark(points: &[(String, u64)]) -> String {
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let step = 300.0 / (points.len().max(2) - 1) as f64;
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                26.0 - 24.0 * p.1 as f64 / max
            )
        })
        .collect();
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 300 28\" preserveAspectRatio=\"none\" style=\"height:28px\"><polyline style=\"fill:none;stroke:var(--blue);stroke-width:2\" points=\"{}\"/></svg>",
        line.join(" ")
    )
}

/// HTML (and SVG) text with `&`, `<`, `>` and `"` escaped.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `n` bytes as `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A count as `950`, `12.3k`, `4.5M`.
fn compact(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// Seconds as `3d 4h`, `2h 5m`, `42s`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_say_them() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(compact(999), "999");
        assert_eq!(compact(12_345), "12.3k");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(90_000), "1d 1h");
    }
}
