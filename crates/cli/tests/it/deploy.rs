//! The files in `deploy/`: the systemd unit verifies, the Prometheus rules
//! pass promtool, and every metric the rules and the Grafana dashboard name
//! exists on a running wharf's `/metrics`.

use std::{collections::BTreeSet, path::Path, process::Command};

use wharf_config::Config;
use wharf_test_support::{fixture::CrateBuilder, nginx::which, upstream::FakeUpstream};

use crate::common::Wharf;

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

/// The metric names `text` uses (`wharf_…`), as families: without the
/// `_total`, `_bucket`, `_sum`, `_count` and `_created` of their samples.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("wharf_") {
        // A metric name, not part of a longer word (`job="wharf"` is not one).
        if start > 0 && text.as_bytes()[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(family.to_owned());
    }
    names
}

#[test]
fn the_systemd_unit_verifies() {
    assert!(
        which("systemd-analyze").is_some(),
        "this test needs systemd-analyze (apt-get install systemd); .ci/run installs it"
    );
    // The unit names the installed binary; verify it against the one built.
    let unit = std::fs::read_to_string(deploy("wharf.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/wharf serve"),
        "{unit}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wharf.service");
    std::fs::write(
        &file,
        unit.replace("/usr/local/bin/wharf", env!("CARGO_BIN_EXE_wharf")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("wharf.service"),
        "systemd-analyze has something to say about the unit: {said}"
    );
    for sandboxing in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/wharf",
    ] {
        assert!(unit.contains(sandboxing), "the unit lacks {sandboxing}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_and_the_dashboard_name_only_metrics_wharf_exports() {
    let rules = deploy("prometheus/wharf-alerts.yml");
    let out = tokio::task::block_in_place(|| {
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(&rules)
            .output()
    })
    .expect("promtool (apt-get install prometheus; .ci/run installs it)");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A wharf with every kind of registry, after a little traffic.
    let upstream = FakeUpstream::start([CrateBuilder::new("dep", "1.0.0").build()]).await;
    upstream.git_commit("initial");
    let dir = tempfile::tempdir().unwrap();
    let config = crate::mirror::mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "include = [\"dep\"]\nindex_git = \"{}\"\n\n[registries.cache]\nkind = \"cache\"\nupstreams = [\"{}\"]\n\n[registries.private]\nkind = \"hosted\"\nauth_required = true\n",
            upstream.git_url(),
            upstream.index_url()
        ),
    );
    // From the git index: its head's time gives the mirror a lag.
    crate::mirror::sync_ok(&config);
    let wharf = Wharf::start_with(Config::load(Some(&config)).unwrap()).await;
    for path in [
        "/cache/index/3/d/dep",
        "/cache/crates/dep/dep-1.0.0.crate",
        "/m/index/3/d/dep",
        "/private/index/3/d/dep",
    ] {
        reqwest::get(wharf.url(path)).await.unwrap();
    }
    let exported = wharf.get_text("/metrics").await;
    // Families as their `# TYPE` lines name them, in the same form.
    let families = metric_names(
        &exported
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(families.len() > 20, "{exported}");
    for file in [
        "prometheus/wharf-alerts.yml",
        "grafana/wharf-dashboard.json",
    ] {
        let text = std::fs::read_to_string(deploy(file)).unwrap();
        let named = metric_names(&text);
        assert!(named.len() >= 5, "{file} names {named:?}");
        let unknown: Vec<_> = named.difference(&families).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics wharf does not export: {unknown:?}"
        );
    }
    serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(deploy("grafana/wharf-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    wharf.stop().await;
}
