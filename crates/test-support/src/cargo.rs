//! A harness that runs the real `cargo` against a registry, from an isolated home.
//!
//! [`CargoProject`] owns a temporary directory with its own `CARGO_HOME`, a consumer
//! package whose `main` calls every dependency's `value()`, and a `.cargo/config.toml`
//! that replaces crates-io with the registry under test. Nothing from the developer's
//! own cargo configuration or environment leaks in, so a passing test means the
//! registry served what cargo needed.
//!
//! `run*` block the calling thread until cargo exits. In a `#[tokio::test]` whose
//! servers run on the same runtime, use [`CargoProject::run_async`] (or a
//! multi-threaded runtime), or the servers cannot answer cargo.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use tempfile::TempDir;

use crate::fixture::{rust_ident, toml_str};

/// Environment variables removed from every cargo invocation, by prefix. They would
/// redirect sources, change the network behaviour or the build, and make a test depend
/// on the machine it runs on.
const SCRUBBED_PREFIXES: &[&str] = &[
    "CARGO_REGISTRIES_",
    "CARGO_REGISTRY_",
    "CARGO_SOURCE_",
    "CARGO_HTTP_",
    "CARGO_NET_",
    "CARGO_BUILD_",
    "CARGO_UNSTABLE_",
];

/// Environment variables removed from every cargo invocation, by exact name.
const SCRUBBED_NAMES: &[&str] = &[
    "CARGO_HOME",
    "CARGO_TARGET_DIR",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_MAKEFLAGS",
    "CARGO_TERM_COLOR",
];

/// A consumer package, an isolated `CARGO_HOME` and a target dir in one temp dir.
pub struct CargoProject {
    /// Removed on drop, taking every path below with it.
    root: TempDir,
    home: PathBuf,
    project: PathBuf,
    target: PathBuf,
    registry_url: String,
    http_timeout_secs: u64,
    homes_created: usize,
    /// Alternative registries: `(name, index URL)`.
    registries: Vec<(String, String)>,
    /// The registry crates-io is replaced with, when it is one of
    /// `registries` (so that cargo sends it credentials).
    replace_with: Option<String>,
}

impl fmt::Debug for CargoProject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CargoProject")
            .field("root", &self.root.path())
            .field("home", &self.home)
            .field("registry_url", &self.registry_url)
            .finish_non_exhaustive()
    }
}

impl CargoProject {
    /// Creates package `consumer` depending on `deps` (`(name, req)`), with crates-io
    /// replaced by `registry_url` (a full `sparse+http://…/index/` URL).
    ///
    /// # Panics
    ///
    /// When the temporary directory or its files cannot be written.
    pub fn new(registry_url: &str, deps: &[(&str, &str)]) -> CargoProject {
        let root = tempfile::Builder::new()
            .prefix("wharf-cargo-")
            .tempdir()
            .expect("creating a temp dir for a cargo project");
        let home = root.path().join("home");
        let project = root.path().join("project");
        let target = root.path().join("target");
        for dir in [&home, &project.join("src"), &project.join(".cargo")] {
            fs::create_dir_all(dir).expect("creating the cargo project's directories");
        }
        write(&project.join("Cargo.toml"), &consumer_manifest(deps));
        write(&project.join("src/main.rs"), &consumer_main(deps));
        let this = CargoProject {
            root,
            home,
            project,
            target,
            registry_url: registry_url.to_owned(),
            http_timeout_secs: 30,
            homes_created: 1,
            registries: Vec::new(),
            replace_with: None,
        };
        this.write_config();
        this
    }

    /// Points the source replacement at another registry URL.
    pub fn set_registry(&mut self, registry_url: &str) {
        self.registry_url = registry_url.to_owned();
        self.write_config();
    }

    /// Declares an alternative registry `name` at `index_url`
    /// (`sparse+http://…/index/`), for `--registry name` and
    /// `registry = "name"` dependencies.
    pub fn add_registry(&mut self, name: &str, index_url: &str) {
        self.registries.retain(|(n, _)| n != name);
        self.registries
            .push((name.to_owned(), index_url.to_owned()));
        self.write_config();
    }

    /// Replaces crates-io with registry `name` at `index_url` rather than with
    /// a plain source: cargo then sends the credentials of `name` (set with
    /// [`CargoProject::set_token`]) to it, for registries with auth-required.
    pub fn replace_with_registry(&mut self, name: &str, index_url: &str) {
        self.replace_with = Some(name.to_owned());
        self.add_registry(name, index_url);
    }

    /// Stores `token` for registry `name` in the home's `credentials.toml`,
    /// as `cargo login` would (replacing what was there).
    pub fn set_token(&self, name: &str, token: &str) {
        write(
            &self.home.join("credentials.toml"),
            &format!("[registries.{name}]\ntoken = {}\n", toml_str(token)),
        );
    }

    /// Writes `contents` to `rel` under the project dir, creating directories:
    /// to turn the consumer into a workspace, or give it other sources.
    pub fn write_file(&self, rel: &str, contents: &str) {
        let path = self.project.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("creating a project directory");
        }
        write(&path, contents);
    }

    /// Sets cargo's `http.timeout` (30 s by default); tests against a
    /// [`crate::upstream::Blackhole`] want it short.
    pub fn set_http_timeout(&mut self, secs: u64) {
        self.http_timeout_secs = secs;
        self.write_config();
    }

    /// Switches to a new, empty `CARGO_HOME`, as on a fresh machine: no index cache,
    /// no downloaded `.crate`s. The lockfile and the target dir are kept.
    pub fn fresh_home(&mut self) {
        self.homes_created += 1;
        self.home = self
            .root
            .path()
            .join(format!("home-{}", self.homes_created));
        fs::create_dir_all(&self.home).expect("creating a fresh CARGO_HOME");
    }

    /// Deletes `Cargo.lock`, so the next command resolves again.
    pub fn remove_lockfile(&self) {
        match fs::remove_file(self.project.join("Cargo.lock")) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("removing Cargo.lock: {err}"),
        }
    }

    /// The package directory (holds `Cargo.toml`, `src/`, `.cargo/config.toml`).
    pub fn project_dir(&self) -> &Path {
        &self.project
    }

    /// The current `CARGO_HOME`.
    pub fn home_dir(&self) -> &Path {
        &self.home
    }

    /// The `CARGO_TARGET_DIR` every command uses.
    pub fn target_dir(&self) -> &Path {
        &self.target
    }

    /// The registry URL the source replacement points at.
    pub fn registry_url(&self) -> &str {
        &self.registry_url
    }

    /// The contents of `Cargo.lock`.
    ///
    /// # Panics
    ///
    /// When there is no lockfile yet.
    pub fn lockfile(&self) -> String {
        let path = self.project.join("Cargo.lock");
        fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
    }

    /// A `cargo` command for this project: the cargo in `$CARGO` (set by `cargo test`)
    /// or on `PATH`, run in the project dir with the isolated home and target dir and
    /// without inherited variables that would redirect it.
    pub fn cargo(&self, args: &[&str]) -> Command {
        let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        self.command(program, args)
    }

    /// Any program, run like [`CargoProject::cargo`]: in the project dir,
    /// with the isolated home and target dir and the same variables removed
    /// (`$CARGO` is kept, so a wrapper finds the cargo under test).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command.args(args).current_dir(&self.project);
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if SCRUBBED_NAMES.contains(&key)
                || SCRUBBED_PREFIXES
                    .iter()
                    .any(|prefix| key.starts_with(prefix))
            {
                command.env_remove(key);
            }
        }
        command
            .env("CARGO_HOME", &self.home)
            .env("CARGO_TARGET_DIR", &self.target)
            .env("CARGO_TERM_COLOR", "never");
        command
    }

    /// Runs cargo with `args` to completion, blocking the thread.
    ///
    /// # Panics
    ///
    /// When cargo cannot be started.
    pub fn run(&self, args: &[&str]) -> Outcome {
        let output = self
            .cargo(args)
            .output()
            .unwrap_or_else(|err| panic!("starting cargo {}: {err}", args.join(" ")));
        Outcome::new(args, output)
    }

    /// Runs cargo and panics, showing its output, unless it succeeded.
    pub fn run_ok(&self, args: &[&str]) -> Outcome {
        self.run(args).assert_success()
    }

    /// Runs cargo and panics, showing its output, if it succeeded.
    pub fn run_err(&self, args: &[&str]) -> Outcome {
        self.run(args).assert_failure()
    }

    /// Runs cargo without blocking the async runtime, so servers on the same runtime
    /// keep answering. Chain [`Outcome::assert_success`] or
    /// [`Outcome::assert_failure`].
    ///
    /// # Panics
    ///
    /// When cargo cannot be started.
    pub async fn run_async(&self, args: &[&str]) -> Outcome {
        let mut command = tokio::process::Command::from(self.cargo(args));
        command.kill_on_drop(true);
        let output = command
            .output()
            .await
            .unwrap_or_else(|err| panic!("starting cargo {}: {err}", args.join(" ")));
        Outcome::new(args, output)
    }

    fn write_config(&self) {
        let mut config = format!(
            concat!(
                "[source.crates-io]\n",
                "replace-with = {replace_with}\n",
                "\n",
                "[source.wharf]\n",
                "registry = {registry}\n",
                "\n",
                "[net]\n",
                "retry = 0\n",
                "\n",
                "[http]\n",
                "timeout = {timeout}\n",
            ),
            registry = toml_str(&self.registry_url),
            replace_with = toml_str(self.replace_with.as_deref().unwrap_or("wharf")),
            timeout = self.http_timeout_secs,
        );
        for (name, index) in &self.registries {
            config.push_str(&format!(
                "\n[registries.{name}]\nindex = {}\ncredential-provider = \"cargo:token\"\n",
                toml_str(index)
            ));
        }
        write(&self.project.join(".cargo/config.toml"), &config);
    }
}

/// What one cargo run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The arguments cargo was given, for messages.
    pub args: Vec<String>,
    /// cargo's exit status.
    pub status: ExitStatus,
    /// Everything cargo wrote to stdout (lossily decoded).
    pub stdout: String,
    /// Everything cargo wrote to stderr (lossily decoded).
    pub stderr: String,
}

impl Outcome {
    fn new(args: &[&str], output: Output) -> Self {
        Self {
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Whether cargo exited successfully.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Returns `self` if cargo succeeded; panics with its output otherwise.
    pub fn assert_success(self) -> Self {
        assert!(self.success(), "expected success: {self}");
        self
    }

    /// Returns `self` if cargo failed; panics with its output otherwise.
    pub fn assert_failure(self) -> Self {
        assert!(!self.success(), "expected failure: {self}");
        self
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cargo {} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

fn write(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
}

fn consumer_manifest(deps: &[(&str, &str)]) -> String {
    // The empty `[workspace]` keeps cargo from adopting the project into a workspace
    // found in a parent of the temp dir.
    let mut manifest = String::from(concat!(
        "[package]\n",
        "name = \"consumer\"\n",
        "version = \"0.1.0\"\n",
        "edition = \"2021\"\n",
        "publish = false\n",
        "\n",
        "[workspace]\n",
        "\n",
        "[dependencies]\n",
    ));
    for (name, req) in deps {
        manifest.push_str(&format!("{} = {}\n", toml_str(name), toml_str(req)));
    }
    manifest
}

fn consumer_main(deps: &[(&str, &str)]) -> String {
    let mut sum = String::from("0u64");
    for (name, _) in deps {
        sum.push_str(&format!(" + {}::value()", rust_ident(name)));
    }
    format!("fn main() {{\n    let sum: u64 = {sum};\n    println!(\"{{sum}}\");\n}}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{graph, graph_root};
    use crate::upstream::{FakeUpstream, RequestKind};

    #[test]
    fn project_layout_and_config() {
        let mut project = CargoProject::new(
            "sparse+http://127.0.0.1:1/crates-io/index/",
            &[("fx-0", "^1.0.0"), ("other", "2")],
        );
        let main = fs::read_to_string(project.project_dir().join("src/main.rs")).expect("main");
        assert!(
            main.contains("0u64 + fx_0::value() + other::value()"),
            "{main}"
        );
        let manifest =
            fs::read_to_string(project.project_dir().join("Cargo.toml")).expect("manifest");
        assert!(manifest.contains("\"fx-0\" = \"^1.0.0\"\n"), "{manifest}");
        let config_path = project.project_dir().join(".cargo/config.toml");
        let config = fs::read_to_string(&config_path).expect("config");
        assert!(config.contains(
            "[source.wharf]\nregistry = \"sparse+http://127.0.0.1:1/crates-io/index/\"\n"
        ));
        assert!(config.contains("[net]\nretry = 0\n"));
        assert!(config.contains("[http]\ntimeout = 30\n"));

        project.set_registry("sparse+http://127.0.0.1:2/index/");
        let config = fs::read_to_string(&config_path).expect("config");
        assert!(config.contains("registry = \"sparse+http://127.0.0.1:2/index/\""));

        let old_home = project.home_dir().to_owned();
        project.fresh_home();
        assert_ne!(project.home_dir(), old_home);
        assert!(project.home_dir().is_dir());

        let command = project.cargo(&["build"]);
        let envs: Vec<_> = command.get_envs().collect();
        assert!(envs.contains(&(
            std::ffi::OsStr::new("CARGO_HOME"),
            Some(project.home_dir().as_os_str())
        )));
        assert_eq!(command.get_current_dir(), Some(project.project_dir()));
    }

    /// Proves the fixtures are real crates: cargo resolves, downloads (through the
    /// five-marker `dl` template), unpacks, verifies and compiles all of them.
    #[tokio::test]
    async fn real_cargo_builds_a_fixture_graph_from_the_fake_upstream() {
        let crates = graph("fx", 5);
        let fake = FakeUpstream::start(crates).await;
        let project = CargoProject::new(&fake.index_url(), &[(&graph_root("fx"), "^1.0.0")]);

        project
            .run_async(&["generate-lockfile"])
            .await
            .assert_success();
        let lockfile = project.lockfile();
        for i in 0..5 {
            assert!(
                lockfile.contains(&format!("name = \"fx-{i}\"")),
                "{lockfile}"
            );
        }
        project.run_async(&["build"]).await.assert_success();
        assert_eq!(fake.count(RequestKind::Crate), 5);
        assert!(
            fake.requests().iter().all(|r| r.status == 200),
            "{:?}",
            fake.requests()
        );

        // value(fx-4) = 1, fx-3 = 2, fx-2 = 3, fx-1 = 1 + 3 + 1 = 5, fx-0 = 1 + 5 + 2 = 8.
        let run = project.run_async(&["run", "-q"]).await.assert_success();
        assert_eq!(run.stdout.trim(), "8");
    }
}
