//! `wharf token`: the tokens cargo uses to publish to a hosted registry.

use std::path::Path;

use anyhow::{Context, bail};
use wharf_config::Registry;
use wharf_db::{Db, User};

use crate::TokenCommand;

/// Runs one `wharf token` subcommand against the registry's database.
pub async fn run(config_path: Option<&Path>, command: TokenCommand) -> anyhow::Result<()> {
    let config = crate::load_config(config_path)?;
    let registry = match &command {
        TokenCommand::Create { registry, .. }
        | TokenCommand::List { registry }
        | TokenCommand::Revoke { registry, .. } => registry.clone(),
    };
    let hosted = match config.registries.get(&registry) {
        Some(Registry::Hosted(hosted)) => hosted,
        Some(_) => bail!("registry `{registry}` is not hosted; tokens are for hosted registries"),
        None => bail!(
            "no registry named `{registry}` in the configuration; add one with kind = \"hosted\" (see wharf.example.toml)"
        ),
    };
    let db = Db::connect(&hosted.database_url(&config.data_dir))
        .await
        .with_context(|| format!("hosted registry `{registry}`"))?;
    let tokens = db.tokens(&registry);
    match command {
        TokenCommand::Create { user, .. } => {
            let user = User::new(&user)?;
            let created = tokens.create(&user).await?;
            println!(
                "created token {} for {user} on registry `{registry}`",
                created.id
            );
            println!("token: {}", created.secret.expose());
            println!(
                "\nIt is shown only this once. The user runs:\n  cargo login --registry {registry}\nand pastes it."
            );
        }
        TokenCommand::List { .. } => {
            let list = tokens.list().await?;
            if list.is_empty() {
                println!(
                    "registry `{registry}` has no tokens; create one with `wharf token create --registry {registry} --user NAME`"
                );
            }
            for token in list {
                println!(
                    "{:>4}  {:<20} created {}{}",
                    token.id,
                    token.user.as_str(),
                    humantime::format_rfc3339_seconds(token.created_at),
                    if token.revoked { "  (revoked)" } else { "" }
                );
            }
        }
        TokenCommand::Revoke { id, .. } => {
            tokens.revoke(wharf_db::TokenId(id)).await?;
            println!("token {id} of registry `{registry}` is revoked");
        }
    }
    db.close().await;
    Ok(())
}
