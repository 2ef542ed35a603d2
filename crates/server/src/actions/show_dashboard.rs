//! `/`: the dashboard an operator keeps open. This gathers what it shows
//! (registry health, upstreams, mirror freshness, traffic from the
//! statistics, the cargo configuration); `dashboard/` renders it.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{extract::State, response::Html};
use bytes::Bytes;
use tracing::warn;

use crate::{
    dashboard::{self, DayPoint, Health, Page, RegistryCard, UpstreamLine},
    mirror::MirrorRegistry,
    registry::{AppState, Registry},
};

/// How many days the charts show.
const CHART_DAYS: u64 = 14;

/// How many crates the ranking shows.
const TOP_CRATES: u32 = 10;

/// A mirror whose last successful pass is older than this is shown as stale.
const STALE_AFTER_SECS: u64 = 86_400;

/// How long a rendered page is shown again to whoever asks.
const SHOWN_FOR: Duration = Duration::from_secs(1);

/// The page as last rendered. Rendering reads every registry's database and
/// draws the charts, about 1.4 ms of a core: without this, a flood of `/`
/// would take a core. One rendering runs at a time and the requests that
/// came meanwhile are given its page.
#[derive(Default)]
pub struct Rendered(tokio::sync::Mutex<Option<(Instant, Bytes)>>);

/// The dashboard, rendered at most once every [`SHOWN_FOR`].
pub async fn show_dashboard(State(state): State<Arc<AppState>>) -> Html<Bytes> {
    let mut last = state.dashboard.0.lock().await;
    if let Some((at, page)) = &*last
        && at.elapsed() < SHOWN_FOR
    {
        return Html(page.clone());
    }
    let page = Bytes::from(render(&state).await);
    *last = Some((Instant::now(), page.clone()));
    Html(page)
}

/// The dashboard as it is now.
async fn render(state: &AppState) -> String {
    let today = state.stats.today();
    let first_day = today.saturating_sub(CHART_DAYS - 1);
    let day_names: Vec<String> = (first_day..=today).map(wharf_db::day_name).collect();
    let mut days: Vec<DayPoint> = day_names
        .iter()
        .map(|day| DayPoint {
            day: day.clone(),
            ..DayPoint::default()
        })
        .collect();
    let mut top: Vec<(String, u64)> = Vec::new();
    let mut registries = Vec::new();
    let mut cargo_config = String::new();
    let several = state.registries.len() > 1;
    for (name, registry) in &state.registries {
        let mut downloads = vec![0; day_names.len()];
        if let Some(db) = state.stats.db(name) {
            let stats = db.stats(name);
            match stats.days(&day_names[0]).await {
                Ok(totals) => {
                    let index: HashMap<&str, usize> = day_names
                        .iter()
                        .enumerate()
                        .map(|(i, d)| (d.as_str(), i))
                        .collect();
                    for total in totals {
                        if let Some(&i) = index.get(total.day.as_str()) {
                            days[i].requests += total.requests;
                            days[i].bytes += total.request_bytes;
                            days[i].downloads += total.downloads;
                            downloads[i] = total.downloads;
                        }
                    }
                }
                Err(e) => warn!(registry = name, error = %e, "cannot read traffic statistics"),
            }
            match stats.top_crates(&day_names[0], TOP_CRATES).await {
                Ok(crates) => top.extend(crates.into_iter().map(|c| {
                    let label = if several {
                        format!("{} · {name}", c.krate)
                    } else {
                        c.krate
                    };
                    (label, c.downloads)
                })),
                Err(e) => warn!(registry = name, error = %e, "cannot read the top crates"),
            }
        }
        let mut card = card(name, registry, state).await;
        card.downloads = downloads;
        registries.push(card);
        cargo_config.push_str(&crate::cargo_config_for(state, name));
        cargo_config.push('\n');
    }
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_CRATES as usize);
    let served_since_start = state
        .requests
        .as_deref()
        .map(|requests| {
            state
                .registries
                .keys()
                .filter_map(|name| requests.totals(name))
                .fold((0, 0), |(r, b), (r2, b2)| (r + r2, b + b2))
        })
        .unwrap_or_default();
    dashboard::render(&Page {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: state.started.elapsed().as_secs(),
        served_since_start,
        stats_enabled: state.stats.enabled(),
        days,
        top_crates: top,
        registries,
        cargo_config: cargo_config.trim_end().to_owned(),
    })
}

/// The card of one registry: its health and what to know about it.
async fn card(name: &str, registry: &Registry, state: &AppState) -> RegistryCard {
    let mut facts = Vec::new();
    let mut upstreams = Vec::new();
    let (kind, health) = match registry {
        Registry::Cache(cache) => {
            let reports = cache.upstreams.health();
            let down = reports.iter().filter(|r| !r.up).count();
            upstreams = reports
                .into_iter()
                .map(|r| UpstreamLine {
                    url: r.url,
                    up: Some(r.up),
                    note: r.reason.filter(|_| !r.up),
                })
                .collect();
            let counters: HashMap<&str, u64> = cache.metrics.counters().into_iter().collect();
            let hits = counters["wharf_index_memory_hits"] + counters["wharf_index_store_hits"];
            facts.push((
                "index files".to_owned(),
                format!(
                    "{hits} hits, {} fetched, {} stale served",
                    counters["wharf_index_upstream_fetches"], counters["wharf_index_stale_served"]
                ),
            ));
            facts.push((
                "crate files".to_owned(),
                format!(
                    "{} hits, {} downloaded, {} refused corrupt",
                    counters["wharf_crate_memory_hits"] + counters["wharf_crate_store_hits"],
                    counters["wharf_crate_downloads"],
                    counters["wharf_crate_corrupt"]
                ),
            ));
            let health = match down {
                0 => (Health::Good, "every upstream up".to_owned()),
                n if n == upstreams.len() => (
                    Health::Bad,
                    "every upstream down: serving what it holds".to_owned(),
                ),
                n => (
                    Health::Warn,
                    format!("{n} of {} upstreams down", upstreams.len()),
                ),
            };
            ("cache", health)
        }
        Registry::Mirror(mirror) => (
            "mirror",
            mirror_health(mirror, &mut facts, &mut upstreams).await,
        ),
        Registry::Hosted(hosted) => {
            facts.push((
                "database".to_owned(),
                format!("{:?}", hosted.db.backend()).to_lowercase(),
            ));
            facts.push(("tokens".to_owned(), format!("/{name}/me")));
            (
                "hosted",
                (Health::Good, "accepting cargo publish".to_owned()),
            )
        }
    };
    let access = registry.access();
    facts.push((
        "access".to_owned(),
        if access.auth_required {
            "credentials required".to_owned()
        } else {
            "open".to_owned()
        },
    ));
    if let Some(policy) = &access.policy {
        facts.push(("policy".to_owned(), policy.describe()));
        if let Some(pending) = policy.pending_approvals().await {
            facts.push((
                "approvals".to_owned(),
                format!("{pending} waiting for approval (wharf approvals list --registry {name})"),
            ));
        }
    }
    RegistryCard {
        name: name.to_owned(),
        kind,
        index_url: state.index_url(name),
        health,
        facts,
        upstreams,
        downloads: Vec::new(),
    }
}

/// What a mirror's `status.json` says of its freshness, as a health and
/// facts; its upstreams as the tree names them (already redacted).
async fn mirror_health(
    mirror: &MirrorRegistry,
    facts: &mut Vec<(String, String)>,
    upstreams: &mut Vec<UpstreamLine>,
) -> (Health, String) {
    #[derive(serde::Deserialize)]
    struct Status {
        last_sync: Option<u64>,
        last_success: Option<u64>,
        #[serde(default)]
        crates: u64,
        #[serde(default)]
        versions: u64,
        #[serde(default)]
        failures: u64,
        #[serde(default)]
        upstreams: Vec<String>,
    }
    let status = match mirror.tree_file("status.json").await {
        Ok(Some(body)) => serde_json::from_slice::<Status>(&body).ok(),
        Ok(None) => None,
        Err(e) => {
            return (Health::Bad, format!("cannot read its tree: {}", e.detail));
        }
    };
    let Some(status) = status else {
        return (Health::Warn, "not synced yet".to_owned());
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    facts.push((
        "holds".to_owned(),
        format!("{} crates, {} versions", status.crates, status.versions),
    ));
    if let Some(at) = status.last_sync {
        facts.push((
            "last pass".to_owned(),
            format!(
                "{} ago, {} failures",
                dashboard::duration(now.saturating_sub(at)),
                status.failures
            ),
        ));
    }
    *upstreams = status
        .upstreams
        .into_iter()
        .map(|url| UpstreamLine {
            url: wharf_upstream::redact(&url),
            up: None,
            note: None,
        })
        .collect();
    match status.last_success {
        Some(at) if now.saturating_sub(at) <= STALE_AFTER_SECS && status.failures == 0 => (
            Health::Good,
            format!("synced {} ago", dashboard::duration(now.saturating_sub(at))),
        ),
        Some(at) => (
            Health::Warn,
            format!(
                "last complete pass {} ago{}",
                dashboard::duration(now.saturating_sub(at)),
                if status.failures > 0 {
                    format!("; {} failures since", status.failures)
                } else {
                    String::new()
                }
            ),
        ),
        None => (
            Health::Warn,
            "no pass has completed without failures".to_owned(),
        ),
    }
}
