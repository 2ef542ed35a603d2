//! Property tests of the configuration readers: TOML text to a [`Config`]
//! (policies and their version rules included), crate-name globs and upstream
//! URLs. Inputs are generated near-valid (configurations built from parts,
//! the example file with one character changed) as well as noise.
//!
//! Each property runs a bounded number of cases so that CI stays fast;
//! `PROPTEST_CASES=N` raises (or lowers) every count for a longer local run.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use wharf_config::{Config, Registry, VersionRule, glob, sparse_base};

/// `cases` unless `PROPTEST_CASES` says otherwise; no regression files (a failure
/// found here becomes a named test instead).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const EXAMPLE: &str = include_str!("../../../../wharf.example.toml");

/// Every duration of a parsed configuration, by name.
fn durations(config: &Config) -> Vec<(&'static str, Duration)> {
    let mut out = Vec::new();
    for registry in config.registries.values() {
        match registry {
            Registry::Cache(cache) => {
                out.push(("upstream_timeout", cache.upstream_timeout));
                out.push(("index_ttl", cache.index_ttl));
                out.push(("negative_ttl", cache.negative_ttl));
                out.push(("probe_interval", cache.probe_interval));
                out.extend(cache.hedge_after.map(|d| ("hedge_after", d)));
            }
            Registry::Mirror(mirror) => {
                out.push(("upstream_timeout", mirror.upstream_timeout));
                out.push(("probe_interval", mirror.probe_interval));
                out.extend(mirror.sync_interval.map(|d| ("sync_interval", d)));
                out.extend(mirror.feed_interval.map(|d| ("feed_interval", d)));
                out.extend(mirror.reconcile_interval.map(|d| ("reconcile_interval", d)));
            }
            Registry::Hosted(_) => {}
        }
    }
    out
}

/// What holds for any configuration that was accepted: it can be used without a
/// panic later. A duration is added to `Instant::now()` and given to caches,
/// which refuse (with a panic) anything over 1,000 years; an interval of 0
/// would make its loop spin.
fn check_accepted(config: &Config) -> Result<(), TestCaseError> {
    prop_assert!(config.validate().is_ok());
    for (field, duration) in durations(config) {
        prop_assert!(
            Instant::now().checked_add(duration).is_some()
                && duration <= Duration::from_secs(1000 * 365 * 24 * 3600),
            "{field} = {duration:?} was accepted"
        );
        if field.ends_with("_interval") {
            prop_assert!(!duration.is_zero(), "{field} = 0 was accepted");
        }
    }
    Ok(())
}

fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["0s", "1ms", "3s", "5m", "1h 30m", "2days", "1000years", "1001years"])
            .prop_map(str::to_owned),
        4 => ("[0-9]{1,21}", prop::sample::select(vec!["ns", "ms", "s", "m", "h", "d", "w", "y", "years", ""]))
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        1 => "\\PC{0,12}",
    ]
}

fn version_req_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["*", "", "<1.0.100", "^1.2", ">=1, <2", "=0.8.0-rc1", "~1", "1.*"])
            .prop_map(str::to_owned),
        2 => "[<>=^~]{0,2}[0-9]{1,3}(\\.[0-9*]{1,3}){0,2}(-[a-z0-9.]{1,6})?",
        1 => "\\PC{0,16}",
    ]
}

/// A TOML string literal of `text`.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Policy rules: crate name or glob to a version requirement.
fn rules() -> impl Strategy<Value = std::collections::BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![
            Just("serde".to_owned()),
            Just("tokio*".to_owned()),
            Just(" ".to_owned()),
            "\\PC{0,10}"
        ],
        version_req_text(),
        0..4,
    )
}

/// The settings of each kind of registry that the generator varies: its
/// durations, and other lines (valid and not) that may be added.
fn kind_fields(kind: &str) -> (Vec<&'static str>, Vec<&'static str>) {
    let common = [
        "auth_required = true",
        "database_url = \"sqlite://x.db\"",
        "database_url = \"mysql://x\"",
        "unknown_field = 1",
    ];
    let (durations, extras): (Vec<&str>, Vec<&str>) = match kind {
        "cache" => (
            vec![
                "upstream_timeout",
                "index_ttl",
                "negative_ttl",
                "probe_interval",
                "hedge_after",
            ],
            vec![],
        ),
        "mirror" => (
            vec![
                "upstream_timeout",
                "probe_interval",
                "sync_interval",
                "feed_interval",
                "reconcile_interval",
            ],
            vec![
                "include = [\"serde\", \"tok*\"]",
                "include = [\"serde\", \"tok*\"]",
                "index_git = \"https://x/crates.io-index\"",
                "index_git = \"\"",
                "feed_url = \"https://x/rss\"",
                "max_concurrency = 0",
                "max_requests_per_sec = -1.0",
                "max_requests_per_sec = 1e308",
                "keep_versions = 0",
                "keep_versions = 3",
                "max_bytes_per_sec = -1",
            ],
        ),
        "hosted" => (
            vec!["index_ttl"],
            vec!["max_upload_bytes = 0", "max_upload_bytes = 100"],
        ),
        _ => (vec!["index_ttl", "sync_interval"], vec![]),
    };
    (durations, extras.into_iter().chain(common).collect())
}

/// An upstream URL, usually a valid one.
fn upstream() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "sparse+https://index.crates.io/", "https://u.example/index", "sparse+http://127.0.0.1:1/",
        ]),
        1 => prop::sample::select(vec!["git://x", "", "https://u/?q=1", "sparse+"]),
    ]
}

/// A policy: (mode, approval, allow, deny, licences).
#[allow(clippy::type_complexity)]
fn policy() -> impl Strategy<
    Value = Option<(
        &'static str,
        bool,
        std::collections::BTreeMap<String, String>,
        std::collections::BTreeMap<String, String>,
        Vec<String>,
    )>,
> {
    proptest::option::of((
        prop::sample::select(vec!["deny-list", "deny-list", "allow-list", "other"]),
        any::<bool>(),
        rules(),
        rules(),
        prop::collection::vec(
            prop_oneof![4 => Just("MIT".to_owned()), 4 => Just("BSD-*".to_owned()), 1 => "\\PC{0,8}"],
            0..3,
        ),
    ))
}

/// One `[registries.NAME]` table built from plausible and implausible parts.
fn registry_table() -> impl Strategy<Value = String> {
    // Mostly valid parts, so that many configurations are accepted and the
    // properties of accepted ones are exercised; some invalid ones throughout.
    let name = prop_oneof![
        3 => "[a-z0-9_-]{1,10}",
        1 => prop::sample::select(vec!["crates-io", "", "UPPER", "a.b"]).prop_map(str::to_owned),
    ];
    let kind = prop_oneof![
        3 => Just("cache"),
        2 => Just("mirror"),
        1 => Just("hosted"),
        1 => Just("other"),
    ];
    (name, kind)
        .prop_flat_map(move |(name, kind)| {
            let (durations, extras) = kind_fields(kind);
            (
                Just(name),
                Just(kind),
                prop::collection::vec(upstream(), 0..3),
                prop::collection::vec((prop::sample::select(durations), duration_text()), 0..4),
                prop::collection::vec(prop::sample::select(extras), 0..3),
                policy(),
            )
        })
        .prop_map(|(name, kind, upstreams, durations, extras, policy)| {
            let mut t = format!("[registries.{}]\nkind = \"{kind}\"\n", quoted(&name));
            if !upstreams.is_empty() && kind != "hosted" {
                let list: Vec<String> = upstreams.iter().map(|u| quoted(u)).collect();
                t.push_str(&format!("upstreams = [{}]\n", list.join(", ")));
            }
            let mut seen = std::collections::BTreeSet::new();
            for (field, value) in durations {
                if seen.insert(field) {
                    t.push_str(&format!("{field} = {}\n", quoted(&value)));
                }
            }
            for extra in extras {
                let key = extra.split(' ').next().unwrap_or_default();
                if seen.insert(key) {
                    t.push_str(extra);
                    t.push('\n');
                }
            }
            if let Some((mode, approval, allow, deny, licenses)) = policy {
                t.push_str(&format!(
                    "[registries.{}.policy]\nmode = \"{mode}\"\napproval = {approval}\n",
                    quoted(&name)
                ));
                let table = |rules: &std::collections::BTreeMap<String, String>| {
                    let pairs: Vec<String> = rules
                        .iter()
                        .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
                        .collect();
                    format!("{{ {} }}", pairs.join(", "))
                };
                t.push_str(&format!(
                    "allow = {}\ndeny = {}\n",
                    table(&allow),
                    table(&deny)
                ));
                let list: Vec<String> = licenses.iter().map(|l| quoted(l)).collect();
                t.push_str(&format!("licenses = [{}]\n", list.join(", ")));
            }
            t
        })
}

/// The example file with one character replaced, removed or inserted.
fn mutated_example() -> impl Strategy<Value = String> {
    let tricky = prop_oneof![
        prop::sample::select(vec![
            '"', '[', ']', '=', '#', '\n', '0', 'x', '\\', '{', '}', ',', '.', '\''
        ]),
        any::<char>(),
    ];
    (any::<prop::sample::Index>(), tricky, 0..3u8).prop_map(|(at, c, how)| {
        let mut chars: Vec<char> = EXAMPLE.chars().collect();
        let at = at.index(chars.len());
        match how {
            0 => chars[at] = c,
            1 => {
                chars.remove(at);
            }
            _ => chars.insert(at, c),
        }
        chars.into_iter().collect()
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// Configurations built from parts parse or are refused with an error, and
    /// what is accepted can be used.
    #[test]
    fn generated_configs_parse_or_fail_cleanly(
        registries in prop::collection::vec(registry_table(), 0..3),
        public_url in proptest::option::of(prop::sample::select(vec!["http://x", "https://x/y", "http://h:1/p", "ftp://x", ""])),
        listen in prop_oneof![
            8 => prop::sample::select(vec!["127.0.0.1:8080", "[::1]:0", "127.0.0.1:0"]),
            1 => prop::sample::select(vec!["0.0.0.0:99999", "nowhere"]),
        ],
    ) {
        let mut text = format!("listen = {}\n", quoted(listen));
        if let Some(url) = public_url {
            text.push_str(&format!("public_url = {}\n", quoted(url)));
        }
        // Registries with the same name would be a TOML error every time.
        let mut seen = std::collections::BTreeSet::new();
        for table in registries {
            let header = table.lines().next().unwrap_or_default().to_owned();
            if seen.insert(header) {
                text.push_str(&table);
            }
        }
        if let Ok(config) = Config::from_toml(&text, Path::new("fuzz.toml")) {
            check_accepted(&config)?;
        }
    }

    /// The example file with one character changed parses or fails; nothing
    /// panics, and what is accepted can be used.
    #[test]
    fn a_mutated_example_file_parses_or_fails_cleanly(text in mutated_example()) {
        if let Ok(config) = Config::from_toml(&text, Path::new("wharf.example.toml")) {
            check_accepted(&config)?;
        }
    }

    /// Noise is refused (or, rarely, is a valid configuration), never a panic.
    #[test]
    fn noise_never_panics(text in "\\PC{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Config::from_toml(&text, Path::new("noise.toml"));
        let _ = Config::from_toml(&String::from_utf8_lossy(&bytes), Path::new("noise.toml"));
    }

    /// Version rules: `*` and empty mean every version; anything else is a
    /// semver requirement or an error.
    #[test]
    fn version_rules_parse_or_fail(text in version_req_text(), major in 0u64..3, minor in 0u64..200) {
        if let Ok(rule) = VersionRule::parse(&text) {
            let v = semver::Version::new(major, minor, 0);
            let (denies, allows) = (rule.denies(&v), rule.allows(&v));
            if text.trim() == "*" || text.trim().is_empty() {
                prop_assert!(denies && allows);
            }
            // A release is judged the same by deny and allow rules.
            prop_assert_eq!(denies, allows);
        }
    }

    /// Globs compare names as crates.io does: a pattern without wildcards
    /// matches exactly its own folded spelling; `*` matches every name; a name
    /// always matches itself followed by `*`.
    #[test]
    fn globs_match_as_documented(
        pattern in "[a-zA-Z0-9_*?-]{0,20}",
        name in "[a-zA-Z0-9_-]{0,20}",
        noise_pattern in "\\PC{0,20}",
        noise_name in "\\PC{0,20}",
    ) {
        let fold = |s: &str| s.to_ascii_lowercase().replace('-', "_");
        if !pattern.contains(['*', '?']) {
            prop_assert_eq!(glob::matches(&pattern, &name), fold(&pattern) == fold(&name));
        }
        prop_assert!(glob::matches("*", &name));
        let star = format!("{name}*");
        prop_assert!(glob::matches(&star, &name));
        prop_assert!(glob::matches(&name.to_uppercase(), &name.replace('_', "-")));
        let _ = glob::matches(&noise_pattern, &noise_name);
        let _ = glob::matches(&pattern, &noise_name);
    }

    /// Upstream URLs: what is accepted is an http(s) base ending in `/`.
    #[test]
    fn sparse_bases_are_http_and_end_in_a_slash(url in prop_oneof![
        "(sparse\\+)?https?://[a-z.]{1,10}(:[0-9]{1,5})?(/[a-z]{0,5}){0,3}[?#]?",
        "\\PC{0,30}",
    ]) {
        if let Ok(base) = sparse_base(&url) {
            prop_assert!(base.starts_with("http://") || base.starts_with("https://"));
            prop_assert!(base.ends_with('/'));
            prop_assert!(!base.contains(['?', '#']));
        }
    }
}

/// A file nested a hundred thousand levels deep (arrays, inline tables) is
/// refused by the TOML reader's recursion limit, not a stack overflow.
#[test]
fn deeply_nested_toml_is_refused_not_a_stack_overflow() {
    let depth = 100_000;
    for (open, close) in [("[", "]"), ("{ a = ", " }")] {
        let text = format!("listen = {}1{}\n", open.repeat(depth), close.repeat(depth));
        assert!(Config::from_toml(&text, Path::new("deep.toml")).is_err());
    }
    let keys = format!("[{}]\n", vec!["a"; depth].join("."));
    assert!(Config::from_toml(&keys, Path::new("deep.toml")).is_err());
}
