//! `wharf check`: one look at a wharf server or a mirror's static tree, for
//! cron and monitoring systems, answered as a Nagios plugin is: one line
//! (`WHARF OK - ...`) and the exit status 0 (ok), 1 (warning), 2 (critical)
//! or 3 (unknown).
//!
//! It reads what the server or tree publishes and nothing else: a wharf's
//! `/status.json` and `/readyz`, a mirror's `{R}/status.json` (written by
//! `wharf sync`, so a tree served by nginx or a bucket has one too), the
//! registry's `config.json`, and with `--crate` one index file and the crate
//! file of its newest version, checked against the index checksum.

use std::{process::ExitCode, time::Duration};

use serde_json::Value;
use wharf_index::{Cksum, CrateName, DlTemplate, IndexPath, parse_line};

use crate::CheckArgs;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// All is well.
    Ok,
    /// Look at it soon.
    Warning,
    /// Look at it now.
    Critical,
    /// The check itself could not tell.
    Unknown,
}

impl Severity {
    fn word(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
            Severity::Unknown => "UNKNOWN",
        }
    }

    /// How grave: a CRITICAL found is worth more than a detail the check
    /// could not read, which is worth more than a warning.
    fn rank(self) -> u8 {
        match self {
            Severity::Ok => 0,
            Severity::Warning => 1,
            Severity::Unknown => 2,
            Severity::Critical => 3,
        }
    }

    fn code(self) -> u8 {
        match self {
            Severity::Ok => 0,
            Severity::Warning => 1,
            Severity::Critical => 2,
            Severity::Unknown => 3,
        }
    }
}

/// What the check found: problems (each with its gravity), facts that are
/// fine, and performance data.
#[derive(Default)]
struct Report {
    problems: Vec<(Severity, String)>,
    fine: Vec<String>,
    perf: Vec<String>,
}

impl Report {
    fn problem(&mut self, severity: Severity, text: impl Into<String>) {
        self.problems.push((severity, text.into()));
    }

    fn severity(&self) -> Severity {
        self.problems
            .iter()
            .map(|(s, _)| *s)
            .max_by_key(|s| s.rank())
            .unwrap_or(Severity::Ok)
    }

    /// The one line: the problems, worst first, then what is fine.
    fn line(&self, subject: &str) -> String {
        let mut problems = self.problems.clone();
        problems.sort_by_key(|(s, _)| std::cmp::Reverse(s.rank()));
        let parts: Vec<String> = problems
            .into_iter()
            .map(|(_, text)| text)
            .chain(self.fine.iter().cloned())
            .collect();
        let mut line = format!(
            "WHARF {} - {subject}: {}",
            self.severity().word(),
            parts.join("; ")
        );
        if !self.perf.is_empty() {
            line.push_str(" | ");
            line.push_str(&self.perf.join(" "));
        }
        // One line, whatever a server put in its messages.
        line.replace(['\n', '\r'], " ")
    }
}

/// Runs the check, prints its line and returns its exit status.
pub async fn run(args: CheckArgs) -> ExitCode {
    let max_lag = Duration::from(args.max_lag);
    let critical_lag = args.critical_lag.map_or(max_lag * 2, Duration::from);
    let client = match reqwest::Client::builder()
        .timeout(args.timeout.into())
        .user_agent(concat!("wharf-check/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            println!("WHARF UNKNOWN - cannot build an HTTP client: {e}");
            return ExitCode::from(Severity::Unknown.code());
        }
    };
    let base = args.url.trim_end_matches('/').to_owned();
    let origin = reqwest::Url::parse(&base)
        .ok()
        .map(|url| url.origin().ascii_serialization());
    let check = Check {
        client,
        base,
        origin,
        token: args.token,
        max_lag,
        critical_lag,
    };
    let mut report = Report::default();
    let subject = check
        .check(args.registry.as_deref(), args.krate.as_deref(), &mut report)
        .await;
    println!("{}", report.line(&subject));
    ExitCode::from(report.severity().code())
}

struct Check {
    client: reqwest::Client,
    base: String,
    /// `scheme://host:port` of `base`: the only place the token goes.
    origin: Option<String>,
    /// Sent as `Authorization`, as cargo sends it.
    token: Option<String>,
    max_lag: Duration,
    critical_lag: Duration,
}

/// What a GET brought back.
enum Got {
    Body(Vec<u8>),
    /// Any status but 200, with the start of the body.
    Status(u16, String),
    /// No answer: refused, timed out, reset.
    Unreachable(String),
}

impl Check {
    async fn get(&self, url: &str) -> Got {
        let mut request = self.client.get(url);
        // Only to the server checked: a `dl` may name another host.
        let same_origin = reqwest::Url::parse(url)
            .ok()
            .map(|u| u.origin().ascii_serialization())
            .is_some_and(|o| self.origin.as_ref() == Some(&o));
        if let Some(token) = &self.token
            && same_origin
        {
            request = request.header(reqwest::header::AUTHORIZATION, token);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Got::Unreachable(describe(&e)),
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(body) if status == 200 => Got::Body(body.to_vec()),
            Ok(body) => Got::Status(
                status,
                String::from_utf8_lossy(&body[..body.len().min(200)])
                    .trim()
                    .to_owned(),
            ),
            Err(e) => Got::Unreachable(describe(&e)),
        }
    }

    /// Fills `report`; returns what was checked, for the line.
    async fn check(
        &self,
        registry: Option<&str>,
        krate: Option<&str>,
        report: &mut Report,
    ) -> String {
        let status_url = format!("{}/status.json", self.base);
        let top = match self.get(&status_url).await {
            Got::Unreachable(why) => {
                report.problem(
                    Severity::Critical,
                    format!("cannot reach {status_url}: {why}"),
                );
                return self.base.clone();
            }
            Got::Body(body) => serde_json::from_slice::<Value>(&body).ok(),
            Got::Status(..) => None,
        };
        match (top, registry) {
            // A wharf server: its own status, then the registry's.
            (Some(top), _) if top.get("registries").is_some() => {
                self.check_server(&top, registry, krate, report).await
            }
            // The tree of one registry, at the URL.
            (Some(top), None) if top.get("last_sync").is_some() => {
                self.check_mirror_status(&top, report);
                self.check_files(&self.base, krate, report).await;
                self.base.clone()
            }
            // A static server with trees under it: the registry's.
            (_, Some(name)) => {
                let root = format!("{}/{name}", self.base);
                self.check_tree(&root, report).await;
                self.check_files(&root, krate, report).await;
                name.to_owned()
            }
            (_, None) => {
                report.problem(
                    Severity::Unknown,
                    format!(
                        "{status_url} is neither a wharf server's status nor a mirror tree's; give the tree's URL, or the server's with --registry NAME"
                    ),
                );
                self.base.clone()
            }
        }
    }

    async fn check_server(
        &self,
        top: &Value,
        registry: Option<&str>,
        krate: Option<&str>,
        report: &mut Report,
    ) -> String {
        let registries = top["registries"].as_object().cloned().unwrap_or_default();
        let name = match registry {
            Some(name) => name.to_owned(),
            None if registries.len() == 1 => registries.keys().next().cloned().unwrap_or_default(),
            None => {
                let names: Vec<&str> = registries.keys().map(String::as_str).collect();
                report.problem(
                    Severity::Unknown,
                    format!(
                        "this server has several registries ({}); name one with --registry",
                        names.join(", ")
                    ),
                );
                return self.base.clone();
            }
        };
        match self.get(&format!("{}/readyz", self.base)).await {
            Got::Body(_) => {}
            Got::Status(status, body) => report.problem(
                Severity::Critical,
                format!("storage unavailable (/readyz {status}: {body})"),
            ),
            Got::Unreachable(why) => report.problem(Severity::Critical, format!("/readyz: {why}")),
        }
        let Some(entry) = registries.get(&name) else {
            let names: Vec<&str> = registries.keys().map(String::as_str).collect();
            report.problem(
                Severity::Unknown,
                format!(
                    "no registry `{name}` on this server (it has: {})",
                    names.join(", ")
                ),
            );
            return name;
        };
        let root = format!("{}/{name}", self.base);
        match entry["kind"].as_str() {
            Some("cache") => check_upstreams(entry, report),
            Some("mirror") => self.check_tree(&root, report).await,
            _ => {}
        }
        self.check_files(&root, krate, report).await;
        name
    }

    /// A mirror tree's `status.json`.
    async fn check_tree(&self, root: &str, report: &mut Report) {
        let url = format!("{root}/status.json");
        match self.get(&url).await {
            Got::Body(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(status) => self.check_mirror_status(&status, report),
                Err(e) => report.problem(Severity::Unknown, format!("{url} is not JSON ({e})")),
            },
            Got::Status(404, _) => report.problem(
                Severity::Critical,
                format!("{url} is missing (never synced, or not a mirror)"),
            ),
            Got::Status(status, body) => {
                report.problem(Severity::Critical, format!("{url}: {status} {body}"))
            }
            Got::Unreachable(why) => {
                report.problem(Severity::Critical, format!("cannot reach {url}: {why}"))
            }
        }
    }

    /// Lag and failures from a mirror's `status.json`.
    fn check_mirror_status(&self, status: &Value, report: &mut Report) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The upstream's clock when the mirror follows a git index or a
        // feed; otherwise the time since the last pass without failures.
        let (lag, what) = match (
            status["synced_upstream_time"].as_u64(),
            status["last_success"].as_u64(),
        ) {
            (Some(t), _) => (now.saturating_sub(t), "lag"),
            (None, Some(t)) => (now.saturating_sub(t), "last good pass"),
            (None, None) => {
                report.problem(
                    Severity::Critical,
                    "no sync pass has ended without failures yet",
                );
                return;
            }
        };
        let shown = format!("{what} {}", human(lag));
        if lag > self.critical_lag.as_secs() {
            report.problem(
                Severity::Critical,
                format!("{shown} (over {})", human(self.critical_lag.as_secs())),
            );
        } else if lag > self.max_lag.as_secs() {
            report.problem(
                Severity::Warning,
                format!("{shown} (over {})", human(self.max_lag.as_secs())),
            );
        } else {
            report.fine.push(shown);
        }
        report.perf.push(format!(
            "lag={lag}s;{};{};0",
            self.max_lag.as_secs(),
            self.critical_lag.as_secs()
        ));
        match status["failures"].as_u64() {
            Some(0) | None => {}
            Some(n) => report.problem(
                Severity::Warning,
                format!("last sync pass had {n} failures (retried next pass)"),
            ),
        }
    }

    /// `config.json`, and with a crate name its index file and the crate
    /// file of its newest version.
    async fn check_files(&self, root: &str, krate: Option<&str>, report: &mut Report) {
        let config_url = format!("{root}/index/config.json");
        let dl = match self.get(&config_url).await {
            Got::Body(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(config) => config["dl"].as_str().map(DlTemplate::new),
                Err(_) => None,
            },
            Got::Status(status, body) => {
                report.problem(Severity::Critical, format!("{config_url}: {status} {body}"));
                return;
            }
            Got::Unreachable(why) => {
                report.problem(Severity::Critical, format!("{config_url}: {why}"));
                return;
            }
        };
        let Some(dl) = dl else {
            report.problem(
                Severity::Critical,
                format!("{config_url} is not a registry's config.json (no `dl`)"),
            );
            return;
        };
        let Some(krate) = krate else {
            report
                .fine
                .push("index ok (give --crate NAME to fetch a crate file too)".to_owned());
            return;
        };
        let name = match CrateName::new(krate) {
            Ok(name) => name,
            Err(e) => {
                report.problem(Severity::Unknown, format!("--crate {krate}: {e}"));
                return;
            }
        };
        let index_url = format!("{root}/index/{}", IndexPath::for_name(&name).as_str());
        let body = match self.get(&index_url).await {
            Got::Body(body) => body,
            Got::Status(status, body) => {
                report.problem(
                    Severity::Critical,
                    format!("index file of {krate}: {status} {body}"),
                );
                return;
            }
            Got::Unreachable(why) => {
                report.problem(Severity::Critical, format!("index file of {krate}: {why}"));
                return;
            }
        };
        // The newest version not yanked, else the newest.
        let lines: Vec<_> = body.split(|b| *b == b'\n').filter_map(parse_line).collect();
        let Some(line) = lines.iter().rev().find(|l| !l.yanked).or(lines.last()) else {
            report.problem(
                Severity::Critical,
                format!("the index file of {krate} has no version wharf can read"),
            );
            return;
        };
        let crate_url = dl.render(&line.name, &line.vers, &line.cksum);
        match self.get(&crate_url).await {
            Got::Body(bytes) if Cksum::of(&bytes) == line.cksum => report.fine.push(format!(
                "index ok, {} {} ok ({} bytes)",
                line.name,
                line.vers,
                bytes.len()
            )),
            Got::Body(_) => report.problem(
                Severity::Critical,
                format!(
                    "{} {} does not match its index checksum",
                    line.name, line.vers
                ),
            ),
            Got::Status(status, body) => report.problem(
                Severity::Critical,
                format!("crate file {} {}: {status} {body}", line.name, line.vers),
            ),
            Got::Unreachable(why) => report.problem(
                Severity::Critical,
                format!("crate file {} {}: {why}", line.name, line.vers),
            ),
        }
    }
}

/// A cache's upstreams as `/status.json` lists them: one down is a warning
/// (the next takes over), all down a critical (only what is held is served).
fn check_upstreams(entry: &Value, report: &mut Report) {
    let upstreams = entry["upstreams"].as_array().cloned().unwrap_or_default();
    let down: Vec<String> = upstreams
        .iter()
        .filter(|u| u["up"] == Value::Bool(false))
        .map(|u| u["url"].as_str().unwrap_or("?").to_owned())
        .collect();
    if upstreams.is_empty() {
        return;
    }
    if down.len() == upstreams.len() {
        report.problem(
            Severity::Critical,
            format!("every upstream down ({})", down.join(", ")),
        );
    } else if !down.is_empty() {
        report.problem(
            Severity::Warning,
            format!(
                "{} of {} upstreams down ({})",
                down.len(),
                upstreams.len(),
                down.join(", ")
            ),
        );
    } else {
        report
            .fine
            .push(format!("{} upstreams up", upstreams.len()));
    }
}

/// A reqwest failure in a few words, with its causes (its own text is often
/// just "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `2h 5m` for a count of seconds.
fn human(secs: u64) -> String {
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

    #[test]
    fn the_worst_problem_decides_and_comes_first() {
        let mut report = Report::default();
        report.fine.push("index ok".into());
        assert_eq!(report.severity(), Severity::Ok);
        report.problem(Severity::Warning, "lag 3h");
        report.problem(Severity::Critical, "every upstream down");
        assert_eq!(report.severity(), Severity::Critical);
        assert_eq!(
            report.line("m"),
            "WHARF CRITICAL - m: every upstream down; lag 3h; index ok"
        );
        report.problem(Severity::Unknown, "odd\nanswer");
        assert_eq!(report.severity(), Severity::Critical);
        assert!(!report.line("m").contains('\n'));
    }
}
