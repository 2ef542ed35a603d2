//! Durations a configuration may hold: each is used later by adding it to the
//! current time or handing it to a cache, so what cannot be used is refused
//! when the file is read.

use std::path::Path;

use wharf_config::Config;

fn parse(registry: &str) -> Result<Config, String> {
    Config::from_toml(registry, Path::new("wharf.toml")).map_err(|e| e.to_string())
}

/// Found by fuzzing: `index_ttl = "1000000d"` was accepted and panicked on the
/// first request (`Instant::now() + ttl` overflows), and a `negative_ttl` over
/// 1,000 years panicked at start (the cache refuses it).
#[test]
fn a_duration_too_long_to_add_to_now_is_refused() {
    for field in [
        "index_ttl",
        "negative_ttl",
        "upstream_timeout",
        "probe_interval",
        "hedge_after",
    ] {
        let err = parse(&format!(
            "[registries.c]\nkind = \"cache\"\n{field} = \"1000000d\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            err,
            format!(
                "invalid configuration: registry `c`: {field} must be at most 100 years (got 2737years 10months 6days 8h 24m)"
            )
        );
    }
    let err = parse(
        "[registries.m]\nkind = \"mirror\"\ninclude = [\"serde\"]\nsync_interval = \"101years\"\n",
    )
    .unwrap_err();
    assert!(
        err.contains("sync_interval must be at most 100 years"),
        "{err}"
    );
    assert!(parse("[registries.c]\nkind = \"cache\"\nindex_ttl = \"100years\"\n").is_ok());
}

/// An interval of 0 makes its loop spin (probing, or syncing back to back).
#[test]
fn a_zero_interval_is_refused() {
    let err = parse("[registries.c]\nkind = \"cache\"\nprobe_interval = \"0s\"\n").unwrap_err();
    assert_eq!(
        err,
        "invalid configuration: registry `c`: probe_interval must be more than 0s"
    );
    for field in ["sync_interval", "feed_interval", "reconcile_interval"] {
        let err = parse(&format!(
            "[registries.m]\nkind = \"mirror\"\ninclude = [\"serde\"]\nfeed_url = \"https://x/rss\"\n{field} = \"0s\"\n"
        ))
        .unwrap_err();
        assert!(
            err.contains(&format!("{field} must be more than 0s")),
            "{err}"
        );
    }
    // A TTL of 0 means "always revalidate", and stays allowed.
    assert!(
        parse("[registries.c]\nkind = \"cache\"\nindex_ttl = \"0s\"\nnegative_ttl = \"0s\"\n")
            .is_ok()
    );
}
