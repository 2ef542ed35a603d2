//! `wharf clients` and `wharf approvals`: who may read a registry, and which
//! held crate versions its policy lets through.
//!
//! Both work on the registry's database directly, so they work whether or not
//! `wharf serve` runs; a running server sees a change on its next request
//! (revocations and rotations through the credentials generation, approvals
//! because held files read their decisions on every request).

use std::{path::Path, time::SystemTime};

use anyhow::{Context, bail};
use wharf_config::{Config, Registry};
use wharf_db::{ClientCredential, Db, Decision, NewClient, User};

use crate::{ApprovalsCommand, ClientsCommand, DecisionArgs};

/// Runs one `wharf clients` subcommand.
pub async fn clients(config_path: Option<&Path>, command: ClientsCommand) -> anyhow::Result<()> {
    let config = crate::load_config(config_path)?;
    let name = match &command {
        ClientsCommand::Add { registry, .. }
        | ClientsCommand::List { registry }
        | ClientsCommand::Revoke { registry, .. }
        | ClientsCommand::Rotate { registry, .. }
        | ClientsCommand::Downloads { registry, .. } => registry.clone(),
    };
    let (name, registry) = pick_registry(&config, name.as_deref())?;
    let db = open(&config, &name, registry).await?;
    let clients = db.clients(&name);
    match command {
        ClientsCommand::Add {
            client,
            password,
            crates,
            publish,
            expires,
            ..
        } => {
            if publish && !matches!(registry, Registry::Hosted(_)) {
                bail!(
                    "--publish is for hosted registries; `{name}` is a {}",
                    kind(registry)
                );
            }
            if !registry.auth_required() && !matches!(registry, Registry::Hosted(_)) {
                eprintln!(
                    "warning: registry `{name}` does not set auth_required = true, so anyone can read it; the client takes effect once it does"
                );
            }
            let new = NewClient {
                name: User::new(&client)?,
                password,
                grants: crates.clone(),
                publish,
                expires_at: expires.map(|d| SystemTime::now() + *d),
            };
            let credential = clients.add(&new).await?;
            println!(
                "client `{client}` added to registry `{name}`: {}; {}; {}; {}",
                if password {
                    "user name and password"
                } else {
                    "token"
                },
                if crates.is_empty() {
                    "sees every crate".to_owned()
                } else {
                    format!("sees only {}", crates.join(", "))
                },
                if publish { "may publish" } else { "read only" },
                match new.expires_at {
                    Some(at) => format!("expires {}", humantime::format_rfc3339_seconds(at)),
                    None => "never expires".to_owned(),
                }
            );
            print_cargo_config(&config, &name, registry, &credential);
        }
        ClientsCommand::List { .. } => {
            let list = clients.list().await?;
            if list.is_empty() {
                println!(
                    "registry `{name}` has no clients; add one with `wharf clients add NAME --registry {name}`"
                );
            } else {
                println!(
                    "{:<20} {:<8} {:<8} {:<20} {:<20} {:<20} CRATES",
                    "CLIENT", "KIND", "PUBLISH", "CREATED", "EXPIRES", "LAST USED"
                );
            }
            let now = SystemTime::now();
            for client in list {
                let state = if client.revoked {
                    "  (revoked)"
                } else if client.expires_at.is_some_and(|at| at <= now) {
                    "  (expired)"
                } else {
                    ""
                };
                println!(
                    "{:<20} {:<8} {:<8} {:<20} {:<20} {:<20} {}{state}",
                    client.name.as_str(),
                    if client.password { "password" } else { "token" },
                    if client.publish { "yes" } else { "no" },
                    time(Some(client.created_at)),
                    time(client.expires_at),
                    time(client.last_used),
                    if client.grants.is_empty() {
                        "*".to_owned()
                    } else {
                        client.grants.join(",")
                    },
                );
            }
        }
        ClientsCommand::Revoke { client, .. } => {
            clients.revoke(&User::new(&client)?).await?;
            println!(
                "client `{client}` of registry `{name}` is revoked: its next request is refused"
            );
        }
        ClientsCommand::Rotate { client, .. } => {
            let credential = clients.rotate(&User::new(&client)?).await?;
            println!(
                "client `{client}` of registry `{name}` has a new secret; the old one is refused from its next request"
            );
            print_cargo_config(&config, &name, registry, &credential);
        }
        ClientsCommand::Downloads { client, days, .. } => {
            let client = client.as_deref().map(User::new).transpose()?;
            let since = SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
            let counts = clients.downloads(client.as_ref(), Some(since)).await?;
            if counts.is_empty() {
                println!("no downloads by clients of registry `{name}` in the last {days} days");
            } else {
                println!(
                    "{:<12} {:<20} {:<30} {:<14} {:>8}",
                    "DAY", "CLIENT", "CRATE", "VERSION", "COUNT"
                );
            }
            for count in counts {
                println!(
                    "{:<12} {:<20} {:<30} {:<14} {:>8}",
                    count.day,
                    count.client.as_str(),
                    count.krate,
                    count.vers,
                    count.count
                );
            }
        }
    }
    db.close().await;
    Ok(())
}

/// Runs one `wharf approvals` subcommand.
pub async fn approvals(
    config_path: Option<&Path>,
    command: ApprovalsCommand,
) -> anyhow::Result<()> {
    let config = crate::load_config(config_path)?;
    let name = match &command {
        ApprovalsCommand::List { registry, .. } => registry.clone(),
        ApprovalsCommand::Approve(args) | ApprovalsCommand::Reject(args) => args.registry.clone(),
    };
    let (name, registry) = pick_registry(&config, name.as_deref())?;
    if !registry.policy().is_some_and(|p| p.approval) {
        bail!(
            "registry `{name}` has no policy with approval = true, so nothing waits for approval; see [registries.{name}.policy] in wharf.example.toml"
        );
    }
    let db = open(&config, &name, registry).await?;
    let approvals = db.approvals(&name);
    match command {
        ApprovalsCommand::List { all, .. } => {
            let requests = if all {
                approvals.requests().await?
            } else {
                approvals.pending().await?
            };
            if requests.is_empty() {
                println!(
                    "nothing {}on registry `{name}`",
                    if all {
                        "was ever requested "
                    } else {
                        "waits for approval "
                    }
                );
            } else {
                println!(
                    "{:<30} {:<16} {:>5} {:<30} {:<20} {:>8} {:<30} PUBLISHED BY",
                    "CRATE",
                    "NEWEST HELD",
                    "HELD",
                    "REQUESTED BY",
                    "LAST REQUESTED",
                    "REQUESTS",
                    "OWNERS"
                );
            }
            for request in &requests {
                println!(
                    "{:<30} {:<16} {:>5} {:<30} {:<20} {:>8} {:<30} {}",
                    request.krate,
                    request.newest_held,
                    request.held_versions,
                    request.requested_by,
                    time(Some(request.last_requested_at)),
                    request.requests,
                    request.owners.as_deref().unwrap_or("-"),
                    request.publisher.as_deref().unwrap_or("-")
                );
            }
            if !requests.is_empty() && !all {
                println!(
                    "\nLet one through with `wharf approvals approve CRATE[@VERSION] --registry {name}`; refuse with `reject`."
                );
            }
            let decisions = approvals.decisions().await?;
            if all && !decisions.is_empty() {
                println!(
                    "\n{:<30} {:<16} {:<9} {:<20} {:<20} NOTE",
                    "CRATE", "VERSION", "DECISION", "BY", "WHEN"
                );
                for d in decisions {
                    println!(
                        "{:<30} {:<16} {:<9} {:<20} {:<20} {}",
                        d.krate,
                        d.vers.as_deref().unwrap_or("(all)"),
                        match d.decision {
                            Decision::Approved => "approved",
                            Decision::Rejected => "rejected",
                        },
                        d.decided_by,
                        time(Some(d.decided_at)),
                        d.note.unwrap_or_default()
                    );
                }
            }
        }
        ApprovalsCommand::Approve(args) => {
            decide(&approvals, &name, args, Decision::Approved).await?
        }
        ApprovalsCommand::Reject(args) => {
            decide(&approvals, &name, args, Decision::Rejected).await?
        }
    }
    db.close().await;
    Ok(())
}

/// Records a decision on `target` (`CRATE` or `CRATE@VERSION`).
async fn decide(
    approvals: &wharf_db::Approvals<'_>,
    registry: &str,
    args: DecisionArgs,
    decision: Decision,
) -> anyhow::Result<()> {
    let DecisionArgs {
        target, by, note, ..
    } = args;
    let target = target.as_str();
    let (krate, vers) = match target.split_once('@') {
        Some((krate, vers)) => (krate, Some(vers)),
        None => (target, None),
    };
    wharf_index::CrateName::new(krate).with_context(|| format!("`{krate}` is not a crate name"))?;
    if let Some(vers) = vers {
        semver::Version::parse(vers).with_context(|| {
            format!(
                "`{vers}` is not a version; write CRATE@1.2.3, or CRATE alone for every version"
            )
        })?;
    }
    let by = by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".to_owned());
    approvals
        .decide(
            krate,
            vers,
            decision,
            &by,
            note.as_deref(),
            SystemTime::now(),
        )
        .await?;
    let what = match vers {
        Some(vers) => format!("`{krate}` {vers}"),
        None => format!("every version of `{krate}` that no deny rule or licence refuses"),
    };
    match decision {
        Decision::Approved => println!(
            "approved {what} on registry `{registry}`: cargo sees it on its next index request"
        ),
        Decision::Rejected => println!(
            "rejected {what} on registry `{registry}`: it stays out of the index, and downloads say so"
        ),
    }
    Ok(())
}

/// The registry `name` names, or the only one there is.
pub(crate) fn pick_registry<'c>(
    config: &'c Config,
    name: Option<&str>,
) -> anyhow::Result<(String, &'c Registry)> {
    match name {
        Some(name) => config
            .registries
            .get(name)
            .map(|r| (name.to_owned(), r))
            .with_context(|| {
                let known: Vec<&str> = config.registries.keys().map(String::as_str).collect();
                format!(
                    "no registry named `{name}` in the configuration; it has: {}",
                    known.join(", ")
                )
            }),
        None if config.registries.len() == 1 => {
            let (name, registry) = config
                .registries
                .iter()
                .next()
                .context("one registry is configured")?;
            Ok((name.clone(), registry))
        }
        None => bail!("this configuration has several registries; name one with --registry"),
    }
}

pub(crate) async fn open(config: &Config, name: &str, registry: &Registry) -> anyhow::Result<Db> {
    Db::connect(&registry.database_url(&config.data_dir))
        .await
        .with_context(|| format!("registry `{name}`"))
}

fn kind(registry: &Registry) -> &'static str {
    match registry {
        Registry::Cache(_) => "cache",
        Registry::Mirror(_) => "mirror",
        Registry::Hosted(_) => "hosted registry",
    }
}

pub(crate) fn time(at: Option<SystemTime>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| humantime::format_rfc3339_seconds(at).to_string(),
    )
}

/// Prints what the client puts in its cargo configuration.
fn print_cargo_config(
    config: &Config,
    name: &str,
    registry: &Registry,
    credential: &ClientCredential,
) {
    let public_url = wharf_server::public_url(config, config.listen);
    let index = format!("sparse+{public_url}/{name}/index/");
    println!(
        "\nGive {} these lines; the secret is shown only this once.\n",
        credential.name()
    );
    println!("# .cargo/config.toml (the project's, or ~/.cargo/config.toml)");
    if !matches!(registry, Registry::Hosted(_)) {
        println!("[source.crates-io]\nreplace-with = \"{name}\"\n");
    }
    println!("[registries.{name}]\nindex = \"{index}\"\ncredential-provider = \"cargo:token\"\n");
    println!(
        "# ~/.cargo/credentials.toml (or run `cargo login --registry {name}` and paste the token)"
    );
    println!(
        "[registries.{name}]\ntoken = \"{}\"",
        credential.authorization()
    );
    if credential.is_password() {
        println!(
            "\n# user name: {}\n# password:  {}",
            credential.name(),
            credential.expose()
        );
    }
}
