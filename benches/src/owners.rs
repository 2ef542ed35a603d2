//! `--only-owners`: what owner rules cost a cold `cargo fetch`. The same
//! few hundred crates fetched through a cache with no policy and through a
//! cache whose allow-list goes by owner and publisher (`allow_owners`,
//! `require_publisher`), the owners already known (a dump's facts loaded into
//! its database, as `wharf owners import` does), alternating which goes
//! first, the median of each. The fake upstream's API requests are counted:
//! there must be none.

use std::time::Duration;

use wharf_config::{Policy, Registry};
use wharf_db::{Db, DumpCrate};
use wharf_test_support::{
    cargo::CargoProject,
    upstream::{FakeUpstream, RequestKind},
};

use crate::{COLD_RUNS, Options, cold_fixtures, start_wharf_with, timed_fetch};

const POLICY: &str = r#"
mode = "allow-list"
approval = true
allow_owners = ["github:alice", "github:our-org:*"]
require_publisher = true
"#;

pub fn owners(
    options: &Options,
    upstream_rt: &tokio::runtime::Runtime,
    wharf_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let (fixtures, roots) = cold_fixtures(options.crates);
    let upstream = upstream_rt.block_on(FakeUpstream::start(fixtures.clone()));
    let deps: Vec<(&str, &str)> = roots.iter().map(|r| (r.as_str(), "1")).collect();
    let dump: Vec<DumpCrate> = fixtures
        .iter()
        .map(|k| DumpCrate {
            name: k.name.clone(),
            owners: vec!["github:alice".to_owned(), "github:bob".to_owned()],
            versions: vec![(k.vers.clone(), Some("github:alice".to_owned()))],
        })
        .collect();
    let policy: Policy = toml::from_str(POLICY)?;
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for run in 0..COLD_RUNS {
        // Which side goes first alternates, so a busy machine's bias does
        // not fall on one side.
        let order = if run % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_owners in order {
            let data = tempfile::tempdir()?;
            let data_dir = data.path().join("data");
            if with_owners {
                wharf_rt.block_on(async {
                    let db = Db::connect_sqlite_file(&data_dir.join("wharf.db")).await?;
                    db.owner_facts("crates-io")
                        .replace_with_dump(dump.clone(), std::time::SystemTime::now())
                        .await?;
                    db.close().await;
                    anyhow::Ok(())
                })?;
            }
            let policy = policy.clone();
            let (addr, stop) = wharf_rt.block_on(start_wharf_with(
                &data_dir,
                &upstream.index_url(),
                move |config| {
                    if with_owners
                        && let Some(Registry::Cache(cache)) = config.registries.get_mut("crates-io")
                    {
                        cache.policy = Some(policy);
                    }
                },
            ))?;
            let project =
                CargoProject::new(&format!("sparse+http://{addr}/crates-io/index/"), &deps);
            times[usize::from(with_owners)].push(timed_fetch(&project)?);
            let _ = stop.send(());
        }
    }
    for t in &mut times {
        t.sort();
    }
    let (plain, owners) = (times[0][COLD_RUNS / 2], times[1][COLD_RUNS / 2]);
    println!(
        "\nowner rules: cold `cargo fetch` of {} crates, median of {COLD_RUNS}:\n  no policy {:.2}s, allow_owners + require_publisher (owners from a dump) {:.2}s, cost {:+.1}%; API requests: {}",
        fixtures.len(),
        plain.as_secs_f64(),
        owners.as_secs_f64(),
        (owners.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0,
        upstream.count(RequestKind::Api)
    );
    Ok(())
}
