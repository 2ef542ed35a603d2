//! The alert watcher: a task of its own that looks at the state the server
//! already keeps (upstream health, mirror passes, a storage probe) every
//! `alert_check_interval`, and POSTs `{"text": "..."}` to `alert_webhook`
//! when a condition starts and when it ends.
//!
//! Conditions: a mirror's last pass failed (or could not run); a mirror lags
//! past `alert_max_lag`; every upstream of a cache is down; storage does not
//! take a write. At most one alert per condition per `alert_interval`: one
//! still true after it is sent again, and one that flaps within it is not
//! sent twice. A recovery is sent once for each alert that was sent.
//!
//! It never runs on the request path: a slow receiver delays only the next
//! look. The text names registries and upstreams by their shown (redacted)
//! form, and never the webhook URL, which is a secret.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{info, warn};
use wharf_storage::BlobStore;

use crate::{
    actions::health::{mirror_pass, probe_storage},
    error::ApiError,
    registry::Registry,
};

/// The registry name of conditions of the whole server.
const SERVER_WIDE: &str = "-";

/// How long a POST to the receiver may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the watcher needs from the configuration.
pub struct AlertSettings {
    /// Where alerts go.
    pub webhook: String,
    /// At most one alert per condition per this long.
    pub interval: Duration,
    /// A mirror further behind is alerted about.
    pub max_lag: Duration,
    /// How often conditions are looked at.
    pub check_interval: Duration,
    /// The server, as its alerts name it (its public URL).
    pub server: String,
}

/// One condition that can be true or not: which registry (`-` for the
/// server) and what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Condition {
    registry: String,
    kind: Kind,
}

/// The kinds of condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PassFailed,
    Lagging,
    UpstreamsDown,
    StorageUnavailable,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::PassFailed => "mirror sync pass failing",
            Kind::Lagging => "mirror lagging behind its upstream",
            Kind::UpstreamsDown => "every upstream down",
            Kind::StorageUnavailable => "storage unavailable",
        }
    }
}

/// What was sent about one condition.
#[derive(Debug, Default)]
struct Sent {
    /// An alert was sent and its recovery not yet.
    alerted: bool,
    /// When the last alert was sent.
    at: Option<Instant>,
}

/// The decision for one condition at one look.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Alert,
    Recover,
    Nothing,
}

/// What to do about a condition that is `active` now, given what was sent.
fn decide(sent: &Sent, active: bool, now: Instant, interval: Duration) -> Action {
    let due = sent.at.is_none_or(|at| now.duration_since(at) >= interval);
    match (active, sent.alerted) {
        (true, _) if due => Action::Alert,
        (false, true) => Action::Recover,
        _ => Action::Nothing,
    }
}

/// Starts the watcher over `registries` and `store`.
pub fn spawn(
    settings: AlertSettings,
    registries: BTreeMap<String, Registry>,
    store: Arc<dyn BlobStore>,
) {
    let client = match reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .user_agent(crate::USER_AGENT)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e, "cannot build the HTTP client for alerts; no alert will be sent");
            return;
        }
    };
    tokio::spawn(async move {
        let mut sent: BTreeMap<Condition, Sent> = BTreeMap::new();
        let mut ticks = tokio::time::interval(settings.check_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let active = look(&settings, &registries, store.as_ref()).await;
            // Every condition seen now or alerted before.
            let mut keys: Vec<Condition> = active.keys().cloned().collect();
            keys.extend(sent.keys().cloned());
            keys.sort();
            keys.dedup();
            for condition in keys {
                let detail = active.get(&condition);
                let record = sent.entry(condition.clone()).or_default();
                let now = Instant::now();
                // `on SERVER - REGISTRY`, or `on SERVER` for the server's own.
                let place = match condition.registry.as_str() {
                    SERVER_WIDE => settings.server.clone(),
                    registry => format!("{} - {registry}", settings.server),
                };
                let what = condition.kind.describe();
                let text = match decide(record, detail.is_some(), now, settings.interval) {
                    Action::Alert => format!(
                        "[wharf] PROBLEM on {place}: {what}: {}",
                        detail.map_or("", String::as_str),
                    ),
                    Action::Recover => format!("[wharf] RECOVERED on {place}: {what} is over"),
                    Action::Nothing => continue,
                };
                // Unsent, nothing changes: the next look tries again.
                if post(&client, &settings.webhook, &text).await {
                    record.alerted = detail.is_some();
                    if detail.is_some() {
                        record.at = Some(now);
                    }
                }
            }
        }
    });
}

/// POSTs `text`; whether the receiver took it. The URL is never logged.
async fn post(client: &reqwest::Client, webhook: &str, text: &str) -> bool {
    let body = serde_json::json!({ "text": text });
    match client.post(webhook).json(&body).send().await {
        Ok(response) if response.status().is_success() => {
            info!(alert = %text, "alert sent");
            true
        }
        Ok(response) => {
            warn!(status = response.status().as_u16(), alert = %text, "the alert receiver refused an alert (check alert_webhook); it is tried again");
            false
        }
        Err(e) => {
            // reqwest's error names the URL: only its kind is logged.
            let why = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            warn!(error = why, alert = %text, "cannot send an alert to alert_webhook; it is tried again");
            false
        }
    }
}

/// The conditions true now, each with what it says.
async fn look(
    settings: &AlertSettings,
    registries: &BTreeMap<String, Registry>,
    store: &dyn BlobStore,
) -> BTreeMap<Condition, String> {
    let mut active = BTreeMap::new();
    let mut raise = |registry: &str, kind: Kind, detail: String| {
        active.insert(
            Condition {
                registry: registry.to_owned(),
                kind,
            },
            detail,
        );
    };
    if let Err(e) = probe_storage(store).await {
        raise(
            SERVER_WIDE,
            Kind::StorageUnavailable,
            ApiError::from(e).detail,
        );
    }
    for (name, registry) in registries {
        match registry {
            Registry::Cache(cache) => {
                let health = cache.upstreams.health();
                if !health.is_empty() && health.iter().all(|h| !h.up) {
                    let shown: Vec<String> = health
                        .iter()
                        .map(|h| match &h.reason {
                            Some(reason) => format!("{} ({reason})", h.url),
                            None => h.url.clone(),
                        })
                        .collect();
                    raise(name, Kind::UpstreamsDown, shown.join(", "));
                }
            }
            Registry::Mirror(mirror) => {
                let error = mirror.last_pass_error.lock().ok().and_then(|e| e.clone());
                let pass = mirror_pass(mirror).await;
                if let Some(error) = error {
                    raise(name, Kind::PassFailed, error);
                } else if let Some(pass) = &pass
                    && pass.failures > 0
                {
                    raise(
                        name,
                        Kind::PassFailed,
                        format!(
                            "the last pass had {} failures (see {name}/status.json and the server log)",
                            pass.failures
                        ),
                    );
                }
                let lag = pass
                    .as_ref()
                    .and_then(|p| p.lag_secs.or(p.since_success_secs));
                if let Some(lag) = lag
                    && lag > settings.max_lag.as_secs()
                {
                    raise(
                        name,
                        Kind::Lagging,
                        format!(
                            "{} behind (bound {})",
                            humanize(lag),
                            humanize(settings.max_lag.as_secs())
                        ),
                    );
                }
            }
            Registry::Hosted(_) => {}
        }
    }
    active
}

/// `3h 5m` rather than a count of seconds.
fn humanize(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn one_alert_per_interval_and_one_recovery_per_alert() {
        let start = Instant::now();
        let mut sent = Sent::default();
        assert_eq!(decide(&sent, false, start, HOUR), Action::Nothing);
        assert_eq!(decide(&sent, true, start, HOUR), Action::Alert);
        sent = Sent {
            alerted: true,
            at: Some(start),
        };
        let minute = start + Duration::from_secs(60);
        assert_eq!(decide(&sent, true, minute, HOUR), Action::Nothing);
        assert_eq!(decide(&sent, false, minute, HOUR), Action::Recover);
        // Still true an interval later: sent again.
        assert_eq!(decide(&sent, true, start + HOUR, HOUR), Action::Alert);
        // It flapped: recovered, then true again within the interval.
        sent.alerted = false;
        assert_eq!(decide(&sent, true, minute, HOUR), Action::Nothing);
        assert_eq!(decide(&sent, false, minute, HOUR), Action::Nothing);
    }

    #[test]
    fn durations_read_as_hours_and_minutes() {
        assert_eq!(humanize(42), "42s");
        assert_eq!(humanize(125), "2m 5s");
        assert_eq!(humanize(3 * 3600 + 120), "3h 2m");
    }
}
