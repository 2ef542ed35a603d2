//! `wharf owners`: the owner facts a policy with owner rules goes by.
//! `import` loads a crates.io database dump into the database in one
//! transaction (every crate's owners and every version's publisher), so
//! decisions need no API request; `show` prints what wharf knows of one
//! crate and where it came from.

use std::path::Path;

use anyhow::bail;
use wharf_db::FactSource;

use crate::OwnersCommand;
use crate::access::{open, pick_registry, time};

/// Runs one `wharf owners` subcommand.
pub async fn run(config_path: Option<&Path>, command: OwnersCommand) -> anyhow::Result<()> {
    let config = crate::load_config(config_path)?;
    let name = match &command {
        OwnersCommand::Import { registry, .. } | OwnersCommand::Show { registry, .. } => {
            registry.clone()
        }
    };
    let (name, registry) = pick_registry(&config, name.as_deref())?;
    if !registry.policy().is_some_and(|p| p.judges_owners()) {
        bail!(
            "registry `{name}` has no policy with owner rules (allow_owners or deny_owners), so owners decide nothing there; see [registries.{name}.policy] in wharf.example.toml"
        );
    }
    let db = open(&config, &name, registry).await?;
    let facts = db.owner_facts(&name);
    match command {
        OwnersCommand::Import { file, .. } => {
            let started = std::time::Instant::now();
            let path = file.clone();
            let dump = tokio::task::spawn_blocking(move || wharf_server::owner_dump::read(&path))
                .await??;
            let date = dump.date;
            let counts = facts.replace_with_dump(dump.crates, date).await?;
            println!(
                "imported the dump of {} into registry `{name}`: {} crates with their owners, {} versions with their publishers ({:.1} s)",
                time(Some(date)),
                counts.crates,
                counts.versions,
                started.elapsed().as_secs_f64()
            );
        }
        OwnersCommand::Show { krate, .. } => {
            match facts.owners(&krate).await? {
                None => println!(
                    "wharf knows nothing yet of who owns `{krate}` on registry `{name}`: it asks the registry's API when cargo first needs the crate, or `wharf owners import` loads a dump"
                ),
                Some(fact) => {
                    println!("crate:  {}", fact.krate);
                    println!(
                        "owners: {}",
                        if fact.owners.is_empty() {
                            "nobody".to_owned()
                        } else {
                            fact.owners.join(", ")
                        }
                    );
                    println!("from:   {}", source(fact.source, fact.at));
                }
            }
            let mut publishers = facts.publishers(&krate).await?;
            publishers.sort_by(|a, b| {
                match (
                    semver::Version::parse(&a.vers),
                    semver::Version::parse(&b.vers),
                ) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => a.vers.cmp(&b.vers),
                }
            });
            if !publishers.is_empty() {
                println!("\n{:<20} {:<30} FROM", "VERSION", "PUBLISHED BY");
            }
            for p in publishers {
                println!(
                    "{:<20} {:<30} {}",
                    p.vers,
                    p.publisher.as_deref().unwrap_or("(not said)"),
                    source(p.source, p.at)
                );
            }
        }
    }
    db.close().await;
    Ok(())
}

fn source(source: FactSource, at: std::time::SystemTime) -> String {
    match source {
        FactSource::Api => format!("the registry's API, fetched {}", time(Some(at))),
        FactSource::Dump => format!("the database dump of {}", time(Some(at))),
    }
}
