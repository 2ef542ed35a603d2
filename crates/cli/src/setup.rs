//! `wharf setup`: point cargo at a mirror (or a local `wharf serve`) once,
//! in `~/.cargo/config.toml` or a project's `.cargo/config.toml`; `--undo`
//! puts the file back exactly as it was.
//!
//! The file is never rewritten: a marked block is appended, and the original
//! bytes (or the fact that there was no file) are kept in a backup next to
//! it, which `--undo` restores.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::SetupArgs;

const BEGIN: &str = "# >>> wharf setup: `wharf setup --undo` removes this >>>";
const END: &str = "# <<< wharf setup <<<";
/// What the backup holds when there was no file before.
const NO_FILE: &str = "wharf setup: there was no file\n";

/// Writes or removes the source replacement.
pub fn run(args: SetupArgs) -> anyhow::Result<()> {
    let file = target(args.project)?;
    let backup = backup_of(&file);
    if args.undo {
        return undo(&file, &backup);
    }
    if backup.exists() {
        bail!(
            "{} is already set up by wharf (its backup {} exists); run `wharf setup --undo` first",
            file.display(),
            backup.display()
        );
    }
    let before = match std::fs::read(&file) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    if let Some(bytes) = &before {
        let text = String::from_utf8_lossy(bytes);
        let parsed: toml::Value = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML; fix it first", file.display()))?;
        if let Some(existing) = parsed
            .get("source")
            .and_then(|s| s.get("crates-io"))
            .and_then(|c| c.get("replace-with"))
        {
            bail!(
                "{} already replaces crates.io (replace-with = {existing}); remove that table first, or use --project for one project",
                file.display()
            );
        }
    }
    let registry = match args.mirrors.as_slice() {
        [] => {
            println!(
                "No --mirror given: pointing cargo at a local `wharf serve` on 127.0.0.1:8080.\nStart one with `wharf serve` (or `wharf serve --upstream URL ...` for your mirrors in order);\nas a systemd user unit, ~/.config/systemd/user/wharf.service:\n\n[Unit]\nDescription=wharf: a local cache of crates.io\n\n[Service]\nExecStart={} serve --data-dir %h/.cache/wharf/serve\nRestart=on-failure\n\n[Install]\nWantedBy=default.target\n\nthen `systemctl --user enable --now wharf`.\n",
                std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "wharf".to_owned())
            );
            "sparse+http://127.0.0.1:8080/crates-io/index/".to_owned()
        }
        [one] => crate::run::sparse_url(one),
        _ => bail!(
            "cargo takes one replacement source: give one --mirror, or none to use a local `wharf serve` whose --upstream flags list your mirrors in order (or use `wharf run`)"
        ),
    };
    let block = format!(
        "{BEGIN}\n[source.crates-io]\nreplace-with = \"wharf\"\n\n[source.wharf]\nregistry = \"{registry}\"\n{END}\n"
    );
    let mut after = before.clone().unwrap_or_default();
    if !after.is_empty() && !after.ends_with(b"\n") {
        after.push(b'\n');
    }
    if !after.is_empty() {
        after.push(b'\n');
    }
    after.extend_from_slice(block.as_bytes());

    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&backup, before.as_deref().unwrap_or(NO_FILE.as_bytes()))
        .with_context(|| format!("cannot write the backup {}", backup.display()))?;
    write_atomically(&file, &after)?;
    println!("{}: added", file.display());
    for line in block.lines() {
        println!("+ {line}");
    }
    println!(
        "\nThe file as it was is kept in {}; `wharf setup --undo{}` restores it exactly.",
        backup.display(),
        if args.project { " --project" } else { "" }
    );
    Ok(())
}

fn undo(file: &Path, backup: &Path) -> anyhow::Result<()> {
    let saved = match std::fs::read(backup) {
        Ok(saved) => saved,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("nothing to undo: {} has no wharf backup", file.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", backup.display())),
    };
    if saved == NO_FILE.as_bytes() {
        match std::fs::remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", file.display())),
        }
        println!(
            "{}: removed (there was none before `wharf setup`)",
            file.display()
        );
    } else {
        write_atomically(file, &saved)?;
        println!(
            "{}: restored as it was before `wharf setup`",
            file.display()
        );
    }
    std::fs::remove_file(backup).with_context(|| format!("cannot remove {}", backup.display()))?;
    Ok(())
}

/// `$CARGO_HOME/config.toml` (`~/.cargo/config.toml`), or with `project`
/// the `.cargo/config.toml` of the current directory.
fn target(project: bool) -> anyhow::Result<PathBuf> {
    if project {
        return Ok(std::env::current_dir()?.join(".cargo/config.toml"));
    }
    let home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cargo"),
    };
    Ok(home.join("config.toml"))
}

fn backup_of(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".wharf-backup");
    file.with_file_name(name)
}

fn write_atomically(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temp = file.with_extension("toml.wharf-tmp");
    std::fs::write(&temp, bytes).with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, file).with_context(|| format!("cannot replace {}", file.display()))
}
