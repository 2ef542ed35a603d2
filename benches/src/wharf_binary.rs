//! The release binary the benchmarks time: refused when it is older than the
//! workspace's sources, so a run never times a stale build, and announced with
//! its version and the commit of the checkout it was built from.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{Context, bail};

/// `release/wharf` under `CARGO_TARGET_DIR` when that is set (as for the
/// `cargo` that built the benches), else under this workspace's `target`.
pub fn default_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("release/wharf")
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// Fails unless `wharf` exists and is newer than every source file of the
/// workspace's crates (and Cargo.toml, Cargo.lock); then prints its version
/// and the checkout's commit.
pub fn check(wharf: &Path) -> anyhow::Result<()> {
    let built = std::fs::metadata(wharf)
        .and_then(|m| m.modified())
        .with_context(|| {
            format!(
                "no wharf binary at {}; build it first with `cargo build --release -p wharf`",
                wharf.display()
            )
        })?;
    let root = workspace_root();
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![root.join("crates")];
    let mut consider = |path: PathBuf| {
        if let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified())
            && newest.as_ref().is_none_or(|(t, _)| modified > *t)
        {
            newest = Some((modified, path));
        }
    };
    consider(root.join("Cargo.toml"));
    consider(root.join("Cargo.lock"));
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                // Test code does not go into the binary, nor does the
                // test-support crate (only a dev-dependency).
                if name != "tests" && name != "target" && name != "test-support" {
                    stack.push(path);
                }
            } else if path
                .extension()
                .is_some_and(|e| e == "rs" || e == "toml" || e == "sql")
            {
                consider(path);
            }
        }
    }
    if let Some((modified, path)) = newest
        && modified > built
    {
        bail!(
            "{} is older than {}: it would time a stale build; rebuild it with `cargo build --release -p wharf`",
            wharf.display(),
            path.display()
        );
    }
    let version = Command::new(wharf)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", wharf.display()))?;
    let commit = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown (not a git checkout)".to_owned());
    println!(
        "timing {} ({}), built from commit {commit}",
        wharf.display(),
        String::from_utf8_lossy(&version.stdout).trim()
    );
    Ok(())
}
