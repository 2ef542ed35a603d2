//! The `wharf` binary: parses the command line, loads the configuration, and
//! runs a subcommand. Everything it does is in the library crates; this file
//! only wires them together.

/// mimalloc rather than the C library's malloc: a request makes many small
/// allocations, and index hits were 7% faster with it (`wharf-benches
/// --only-real`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access;
mod args;
mod check;
mod mirrors;
mod owners;
mod run;
mod serve;
mod setup;
mod stats;
mod sync;
mod token;
mod verify;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

pub use args::*;

/// wharf keeps Rust builds working when crates.io is down.
///
/// It serves Cargo's sparse registry protocol: a pull-through cache of
/// crates.io (the default), speaking to cargo exactly as crates.io does, so
/// Cargo.lock keeps naming crates.io as the source.
///
/// Quick start:
///
///   wharf serve                      # cache crates.io on http://127.0.0.1:8080
///
/// then paste the lines it prints into .cargo/config.toml and build as usual.
/// Logs go to stderr; set WHARF_LOG (e.g. `warn`, `wharf=debug`) to change them.
#[derive(Parser)]
// Verbatim: the quick start's command keeps its own line and indentation.
#[command(
    name = "wharf",
    version,
    about,
    long_about,
    verbatim_doc_comment,
    propagate_version = true
)]
struct Cli {
    /// Read settings from this TOML file (see wharf.example.toml).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "WHARF_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

// Examples live in `after_help`, not in the doc comments: clap re-wraps a doc
// comment into paragraphs, which ran the examples together on one line. Each
// is a raw string so that every example keeps its own line.

/// `wharf serve --help`: examples, one per line.
const SERVE_EXAMPLES: &str = r#"Examples:
  wharf serve                                     # cache crates.io on 127.0.0.1:8080
  wharf serve --config wharf.toml                 # the registries of a config file
  wharf serve --listen 0.0.0.0:8080 --public-url https://crates.example.org
  wharf serve --upstream sparse+https://mirror.example.org/crates-io/index/ --index-ttl 10m"#;

/// `wharf sync --help`: examples, one per line.
const SYNC_EXAMPLES: &str = r#"Examples:
  wharf sync --config wharf.toml                  # a full pass of every mirror
  wharf sync --config wharf.toml --registry m --feed
  wharf sync --config wharf.toml --reconcile      # revalidate everything"#;

/// `wharf token --help`: examples, one per line.
const TOKEN_EXAMPLES: &str = r#"Examples:
  wharf token create --registry private --user alice
  wharf token list --registry private
  wharf token revoke --registry private 3"#;

/// `wharf clients --help`: examples, one per line.
const CLIENTS_EXAMPLES: &str = r#"Examples:
  wharf clients add acme --registry paid --crate 'acme-*' --expires 365d
  wharf clients add ci --registry company --password
  wharf clients list --registry paid
  wharf clients downloads --registry paid acme --days 7
  wharf clients rotate acme --registry paid
  wharf clients revoke acme --registry paid"#;

/// `wharf stats --help`: examples, one per line.
const STATS_EXAMPLES: &str = r#"Examples:
  wharf stats                                     # every registry, the last 30 days
  wharf stats --registry crates-io --since 7d --top 10
  wharf stats --json > stats.json"#;

/// `wharf approvals --help`: examples, one per line.
const APPROVALS_EXAMPLES: &str = r#"Examples:
  wharf approvals list --registry company
  wharf approvals approve serde --registry company
  wharf approvals approve openssl@0.10.70 --registry company --note 'CVE fixed'
  wharf approvals reject left-pad --registry company"#;

/// `wharf run --help`: examples, one per line.
const RUN_EXAMPLES: &str = r#"Examples:
  wharf run -- cargo build
  wharf run --mirror https://mirror.example.org/crates-io/index/ -- cargo fetch --locked

client.toml:
  mirrors = ["https://mirror.example.org/crates-io/index/"]
  upstream_timeout = "2s""#;

/// `wharf verify --help`: examples, one per line.
const VERIFY_EXAMPLES: &str = r#"Examples:
  wharf verify --mirror https://mirror.example.org/crates-io/index/ --lockfile Cargo.lock
  wharf verify --mirror https://mirror.example.org/crates-io/index/ --crate serde --crate tokio"#;

/// `wharf setup --help`: examples, one per line.
const SETUP_EXAMPLES: &str = r#"Examples:
  wharf setup --mirror https://mirror.example.org/crates-io/index/
  wharf setup --project
  wharf setup --undo"#;

/// `wharf keys --help`: examples, one per line.
const KEYS_EXAMPLES: &str = r#"Examples:
  wharf keys generate --out /etc/wharf/mirror.key
  wharf keys show --key /etc/wharf/mirror.key"#;

/// `wharf check --help`: examples, one per line.
const CHECK_EXAMPLES: &str = r#"Examples:
  wharf check http://127.0.0.1:8080                       # a server with one registry
  wharf check https://crates.example.org --registry crates-io --crate serde
  wharf check https://mirror.example.org/crates-io --max-lag 30m --crate serde
  wharf check https://bucket.example.org --registry crates-io   # a static tree
  wharf check https://crates.example.com --registry company  # credentials in WHARF_CHECK_TOKEN

What it looks at: a wharf's /status.json and /readyz, or a mirror tree's own
status.json (written by `wharf sync`, so nginx or a bucket serves it too); the
registry's index/config.json; with --crate, that crate's index file and the
crate file of its newest version (checked against the index checksum).

Exit status and first word, as Nagios plugins do:
  0 OK        everything answered, lag within --max-lag
  1 WARNING   lag over --max-lag, the last sync pass had failures,
              some of a cache's upstreams down
  2 CRITICAL  unreachable, storage unavailable (/readyz 503), every upstream
              of a cache down, index or crate file failing, lag over
              --critical-lag, never synced
  3 UNKNOWN   the answers are not what a wharf or a mirror tree publishes

Cron: `wharf check URL >/dev/null || mail -s "$(wharf check URL)" ops@...`"#;

/// `wharf mirrors --help`: examples, one per line.
const OWNERS_EXAMPLES: &str = r#"Examples:
  wharf owners import db-dump.tar.gz --registry company   # crates.io's daily database dump
  wharf owners show serde --registry company"#;

const MIRRORS_EXAMPLES: &str = r#"Examples:
  wharf mirrors list --from https://mirror.example.org/.well-known/wharf-mirrors.toml
  wharf mirrors probe --from mirrors.toml --crate serde"#;

#[derive(Subcommand)]
enum Command {
    /// Serve the configured registries over HTTP.
    ///
    /// With no configuration: a cache of crates.io named `crates-io`, on
    /// 127.0.0.1:8080, with data under ./wharf-data. On start it prints the
    /// .cargo/config.toml lines that point cargo at it. Stops cleanly on
    /// Ctrl-C or SIGTERM, letting requests under way finish.
    ///
    /// Precedence: defaults, then --config FILE, then WHARF_LISTEN /
    /// WHARF_DATA_DIR / WHARF_PUBLIC_URL, then these flags.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),

    /// Bring mirror registries up to date with their upstream, once.
    ///
    /// For each `kind = "mirror"` registry (or only --registry NAME): find
    /// the index files that may have changed (with `index_git`: a git fetch
    /// and a diff against the last pass; otherwise every selected crate,
    /// asked for conditionally), download and verify every selected crate
    /// file not yet held, then publish the index files, which name only
    /// crate files that are present. Ends with a summary; exits non-zero
    /// when anything failed (all else is published, and failures are retried
    /// on the next pass). Safe to interrupt at any moment. Upstream limits
    /// (concurrency, requests/s, bytes/s) come from the registry's
    /// configuration.
    #[command(after_help = SYNC_EXAMPLES)]
    Sync(SyncArgs),

    /// Create, list and revoke the tokens cargo uses for a hosted registry.
    ///
    /// A token is printed once, when created, and stored only as a hash.
    /// Give it to its user, who runs `cargo login --registry R` and pastes
    /// it. Publishing a new crate makes its publisher an owner; only owners
    /// publish new versions, yank, or change owners.
    #[command(subcommand, after_help = TOKEN_EXAMPLES)]
    Token(TokenCommand),

    /// Give clients their own credentials to a registry, and take them back.
    ///
    /// For paid or private access: each client gets a token (or, with
    /// --password, a user name and password), shown once and stored hashed,
    /// optionally limited to some crates (--crate GLOB: every other crate is
    /// 404 to it) and to a time (--expires 30d). `add` prints the lines the
    /// client puts in its cargo configuration. `revoke` and `rotate` take
    /// effect on the client's next request, even with `wharf serve` running.
    /// `downloads` shows what each client fetched, per crate, version and day.
    /// Reads need credentials only on registries with auth_required = true.
    #[command(subcommand, after_help = CLIENTS_EXAMPLES)]
    Clients(ClientsCommand),

    /// Decide on crate versions a registry's policy holds for approval.
    ///
    /// A cache or mirror with `policy.approval = true` leaves versions that
    /// no allow rule covers out of the index cargo sees, and queues a
    /// request each time someone needs one. `list` shows the queue (who asked
    /// for what, and when); `approve` lets a crate (every version) or one
    /// version through at once; `reject` keeps it out and tells whoever
    /// downloads it why. Deny rules and licences are never overridden.
    #[command(subcommand, after_help = APPROVALS_EXAMPLES)]
    Approvals(ApprovalsCommand),

    /// Load and show who owns crates, for policies with owner rules.
    ///
    /// A cache or mirror whose policy has `allow_owners` or `deny_owners`
    /// judges crates by their owners (and, with `require_publisher`, each
    /// version by its publisher). wharf asks the upstream's web API for them,
    /// politely, and keeps the answers; `import` loads crates.io's daily
    /// database dump (db-dump.tar.gz) instead, in one transaction, so no API
    /// request is needed. `show` prints what wharf knows of a crate and where
    /// it came from (the API and when, or the dump and its date).
    #[command(subcommand, after_help = OWNERS_EXAMPLES)]
    Owners(OwnersCommand),

    /// Run a command with cargo going through your mirrors, with fallback.
    ///
    /// Starts a cache on a free loopback port whose upstreams are your
    /// mirrors in order (from ~/.config/wharf/client.toml, then --mirror),
    /// crates.io last; runs the command with cargo pointed at it; stops when
    /// the command exits, with its exit code. A mirror that fails costs one
    /// timeout, then the next one is used. No file is edited: cargo gets the
    /// source replacement as `--config` arguments, through a `cargo` shim
    /// first on PATH. The cache is kept in ~/.cache/wharf/run, so a second
    /// run is warm and works offline for what it has seen.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),

    /// Check that a mirror serves exactly what the reference serves.
    ///
    /// For each crate: the mirror's index lines must equal the reference's,
    /// byte for byte, for the versions both have (versions the mirror lacks
    /// are reported, not failed; lines it alters or adds are failures), and
    /// every crate file the mirror serves must have the reference's sha256.
    /// With --lockfile, the locked versions are also checked against
    /// Cargo.lock's checksums, which works while the reference is down.
    /// Prints a table; exits non-zero on any failure. Requests are limited
    /// (4 at once, 20/s) like a sync.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),

    /// Point cargo at a mirror (or a local `wharf serve`) for good.
    ///
    /// Appends source replacement to ~/.cargo/config.toml ($CARGO_HOME), or
    /// to ./.cargo/config.toml with --project, and shows what it added. The
    /// file as it was is kept next to it; `wharf setup --undo` puts it back
    /// byte for byte. With no --mirror, cargo is pointed at a `wharf serve`
    /// on 127.0.0.1:8080, and a systemd user unit to run one is printed.
    #[command(after_help = SETUP_EXAMPLES)]
    Setup(SetupArgs),

    /// Make and show the ed25519 key a mirror signs its manifest with.
    ///
    /// Set the key file as `signing_key` of a mirror registry: each pass then
    /// writes `{R}/manifest.json` (every index file and its sha256, the
    /// cursor, the time) and `{R}/manifest.json.sig`. Publish the public key
    /// (in your mirror list entry); `wharf verify --key PUBLIC` checks it.
    #[command(subcommand, after_help = KEYS_EXAMPLES)]
    Keys(KeysCommand),

    /// Community mirror lists: see them, and rank their mirrors.
    ///
    /// A list is a TOML (or JSON) file of `[[mirror]]` entries (url,
    /// operator, contact, region, kind, public_key) that a community keeps
    /// in a repository, and that a wharf with `mirror_list` set publishes at
    /// /.well-known/wharf-mirrors.toml.
    #[command(subcommand, after_help = MIRRORS_EXAMPLES)]
    Mirrors(MirrorsCommand),

    /// Checks a wharf server or a mirror's static tree, for cron and monitoring.
    ///
    /// Prints one line (`WHARF OK - ...`, `WHARF WARNING - ...`,
    /// `WHARF CRITICAL - ...`, `WHARF UNKNOWN - ...`) and exits 0, 1, 2 or 3,
    /// as a Nagios plugin does, so Nagios, Icinga, Sensu, Zabbix and cron
    /// can all run it.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(CheckArgs),
    /// Show traffic: downloads, bytes and distinct clients per day, and the
    /// most downloaded crates.
    ///
    /// `wharf serve` counts every crate download of every registry (cache,
    /// mirror, hosted) in memory and writes the counts to the registry's
    /// database every few seconds (`[stats]`). Distinct clients are client
    /// names where credentials are required; elsewhere addresses, counted
    /// through a keyed hash whose key changes every day, so no address is
    /// stored. REQUESTS and SERVED are every request of the registry and the
    /// bytes answered. Reads the database directly: works with or without a
    /// running server.
    #[command(after_help = STATS_EXAMPLES)]
    Stats(StatsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server's access lines are gathered and written in batches; `_log`
    // writes what is still gathered when main returns.
    let _log = wharf_server::init_logging(matches!(cli.command, Command::Serve(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(cli.config.as_deref(), args).await,
            Command::Sync(args) => sync::run(cli.config.as_deref(), args).await,
            Command::Token(command) => token::run(cli.config.as_deref(), command).await,
            Command::Clients(command) => access::clients(cli.config.as_deref(), command).await,
            Command::Approvals(command) => access::approvals(cli.config.as_deref(), command).await,
            Command::Owners(command) => owners::run(cli.config.as_deref(), command).await,
            Command::Run(args) => return run::run(args).await,
            Command::Verify(args) if args.local => {
                return verify::run_local(cli.config.as_deref(), args).await;
            }
            Command::Verify(args) => return verify::run(args).await,
            Command::Setup(mut args) => {
                if let Some(auto) = args.auto.take() {
                    if auto != "auto" {
                        anyhow::bail!("--mirrors takes `auto`; name one mirror with --mirror URL");
                    }
                    let from = args.from.clone().unwrap_or_default();
                    match mirrors::best(&from, args.against.clone()).await? {
                        Some(best) => {
                            println!("\nusing the best-ranked mirror: {}\n", best.url);
                            args.mirrors = vec![best.url];
                        }
                        None => anyhow::bail!("no mirror of {from} passed the probe"),
                    }
                }
                setup::run(args)
            }
            Command::Keys(command) => keys(command),
            Command::Mirrors(command) => return mirrors::run(command).await,
            Command::Check(args) => return Ok(check::run(args).await),
            Command::Stats(args) => stats::run(cli.config.as_deref(), args).await,
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn keys(command: KeysCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    match command {
        KeysCommand::Generate { out } => {
            let (secret, public) = wharf_sync::manifest::generate_key()?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&out).with_context(|| {
                format!(
                    "cannot create {} (an existing key is never overwritten)",
                    out.display()
                )
            })?;
            std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes())?;
            println!(
                "secret key written to {} (keep it private; set it as signing_key)",
                out.display()
            );
            println!("public key: {public}");
        }
        KeysCommand::Show { key } => {
            println!("public key: {}", wharf_sync::manifest::public_key_of(&key)?);
        }
    }
    Ok(())
}

/// The configuration: defaults, then the file, then `WHARF_*` variables.
/// Each subcommand applies its own flags on top.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<wharf_config::Config> {
    let mut config = wharf_config::Config::load(path)?;
    config.apply_env(std::env::vars())?;
    Ok(config)
}
