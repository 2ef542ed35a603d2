//! The `wharf` binary: parses the command line, loads the configuration, and
//! runs a subcommand. Everything it does is in the library crates; this file
//! only wires them together.

/// mimalloc rather than the C library's malloc: a request makes many small
/// allocations, and index hits were 7% faster with it (`wharf-benches
/// --only-real`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access;
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

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

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

/// `wharf check`'s arguments.
#[derive(Args)]
pub struct CheckArgs {
    /// The wharf server (`https://crates.example.org`), a mirror tree's URL
    /// (`https://mirror.example.org/crates-io`, where its status.json is), or
    /// a static server holding trees (with --registry).
    #[arg(value_name = "URL")]
    url: String,

    /// The registry to check (needed when the server has several).
    #[arg(long, value_name = "NAME")]
    registry: Option<String>,

    /// Warn when the mirror is further behind its upstream than this (by the
    /// upstream's clock when it follows a git index or a feed, else the time
    /// since its last pass without failures).
    #[arg(long, value_name = "DURATION", default_value = "2h")]
    max_lag: humantime::Duration,

    /// Critical when further behind than this [default: twice --max-lag].
    #[arg(long, value_name = "DURATION")]
    critical_lag: Option<humantime::Duration>,

    /// Also fetch this crate's index file and its newest crate file.
    #[arg(long = "crate", value_name = "NAME")]
    krate: Option<String>,

    /// Bound on each request.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    timeout: humantime::Duration,

    /// Credentials for a registry that requires them, sent as cargo sends
    /// them (a token, `Bearer TOKEN` or `Basic BASE64`), only to URL's host.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "WHARF_CHECK_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

/// Flags of `wharf stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// Only this registry (every registry when left out).
    #[arg(long, value_name = "NAME")]
    registry: Option<String>,

    /// How far back, e.g. 7d or 12weeks.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    since: humantime::Duration,

    /// How many of the most downloaded crates to show.
    #[arg(long, value_name = "N", default_value_t = 20)]
    top: u32,

    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// `wharf mirrors` subcommands.
#[derive(Subcommand)]
pub enum MirrorsCommand {
    /// Print the mirrors of a list.
    List {
        /// A list file or URL.
        #[arg(long, value_name = "FILE|URL")]
        from: String,
    },
    /// Measure each mirror of a list and rank them: latency (config.json,
    /// median of three), freshness (its status.json), and a spot-check of a
    /// few crates against the reference; a mirror failing the spot-check is
    /// flagged and ranked last.
    Probe {
        /// A list file or URL.
        #[arg(long, value_name = "FILE|URL")]
        from: String,
        /// The reference's sparse index URL (default: crates.io).
        #[arg(long, value_name = "URL")]
        against: Option<String>,
        /// Crates to spot-check (default: serde, libc, cfg-if); repeatable.
        #[arg(long = "crate", value_name = "NAME")]
        crates: Vec<String>,
        /// A mirror whose last successful sync is older than this is stale.
        #[arg(long, value_name = "DURATION", default_value = "1day")]
        max_age: humantime::Duration,
    },
}

/// `wharf keys` subcommands.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Write a new secret key to FILE (never over an existing one) and print
    /// its public key.
    Generate {
        /// Where to write the secret key (mode 600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the public key of a secret key file.
    Show {
        /// The secret key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

/// Flags of `wharf setup`.
#[derive(Args)]
pub struct SetupArgs {
    /// The mirror to use (one: cargo takes a single replacement source).
    #[arg(long = "mirror", value_name = "URL")]
    mirrors: Vec<String>,

    /// Write the project's .cargo/config.toml instead of ~/.cargo/config.toml.
    #[arg(long)]
    project: bool,

    /// Restore the file exactly as it was before `wharf setup`.
    #[arg(long, conflicts_with = "mirrors")]
    undo: bool,

    /// `auto`: probe the mirrors of the list --from and use the best one.
    #[arg(
        long = "mirrors",
        value_name = "auto",
        requires = "from",
        conflicts_with = "mirrors"
    )]
    auto: Option<String>,

    /// The mirror list for `--mirrors auto` (a file or URL).
    #[arg(long, value_name = "FILE|URL")]
    from: Option<String>,

    /// The reference `--mirrors auto` spot-checks against (default: crates.io).
    #[arg(long, value_name = "URL", requires = "from")]
    against: Option<String>,
}

/// Flags of `wharf verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The mirror's sparse index URL.
    #[arg(long, value_name = "URL", required_unless_present = "local")]
    mirror: Option<String>,

    /// Check this server's own storage instead (fsck): every index line of
    /// each mirror and cache registry has its crate file with the right
    /// sha256 (a cache lists versions it never fetched: those are counted,
    /// not failed), no partial files are left, and unreferenced crate files
    /// are reported.
    #[arg(long, conflicts_with_all = ["mirror", "against", "lockfile", "crates", "sample", "all"])]
    local: bool,

    /// With --local: only this registry.
    #[arg(long, value_name = "NAME", requires = "local")]
    registry: Option<String>,

    /// The reference's sparse index URL (default: crates.io).
    #[arg(long, value_name = "URL")]
    against: Option<String>,

    /// Check the crates.io packages of this Cargo.lock, at their locked
    /// versions, against its checksums too.
    #[arg(long, value_name = "FILE")]
    lockfile: Option<PathBuf>,

    /// Check this crate (all its versions); repeatable.
    #[arg(long = "crate", value_name = "NAME")]
    crates: Vec<String>,

    /// Check N crates spread over the mirror's manifest.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    sample: Option<usize>,

    /// Check every crate the mirror's manifest lists.
    #[arg(long)]
    all: bool,

    /// The operator's public key (hex, from `wharf keys`): the mirror's
    /// signed manifest must verify with it, and vouch for every index file
    /// checked.
    #[arg(long, value_name = "HEX")]
    key: Option<String>,

    /// A mirror list (file or URL): the key its entry for --mirror pins is
    /// used as --key.
    #[arg(long, value_name = "FILE|URL", conflicts_with = "key")]
    from: Option<String>,
}

/// Flags of `wharf run`.
#[derive(Args)]
pub struct RunArgs {
    /// A mirror's sparse index URL; repeatable, tried in order after those
    /// of client.toml.
    #[arg(long = "mirror", value_name = "URL")]
    mirrors: Vec<String>,

    /// Do not fall back to crates.io after the mirrors.
    #[arg(long)]
    no_crates_io: bool,

    /// Where the cache lives (default ~/.cache/wharf/run).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Read this client config instead of ~/.config/wharf/client.toml.
    #[arg(long, value_name = "FILE")]
    client_config: Option<PathBuf>,

    /// Bound on connect + first byte per mirror attempt (default 2s).
    #[arg(long, value_name = "DURATION")]
    upstream_timeout: Option<humantime::Duration>,

    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `wharf token` subcommands.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token for USER and print it (once).
    Create {
        /// The hosted registry.
        #[arg(long, value_name = "NAME")]
        registry: String,
        /// Who the token is for: the name `cargo owner` knows them by.
        #[arg(long, value_name = "NAME")]
        user: String,
    },
    /// List the tokens of a registry (never the secrets).
    List {
        /// The hosted registry.
        #[arg(long, value_name = "NAME")]
        registry: String,
    },
    /// Revoke a token: the next request with it is refused.
    Revoke {
        /// The hosted registry.
        #[arg(long, value_name = "NAME")]
        registry: String,
        /// The token's id, as `wharf token list` shows it.
        id: i64,
    },
}

/// `wharf clients` subcommands.
#[derive(Subcommand)]
pub enum ClientsCommand {
    /// Add a client and print its cargo configuration (the secret, once).
    Add {
        /// The client's name (its user name with --password).
        client: String,
        /// The registry (may be left out when there is only one).
        #[arg(long, value_name = "NAME")]
        registry: Option<String>,
        /// A user name and generated password (sent as `Basic ...`) rather
        /// than a token.
        #[arg(long)]
        password: bool,
        /// Only these crates exist for the client (repeatable; globs such as
        /// 'acme-*'). Every crate when left out.
        #[arg(long = "crate", value_name = "GLOB")]
        crates: Vec<String>,
        /// May publish, yank and manage owners (hosted registries).
        #[arg(long)]
        publish: bool,
        /// The credentials stop working after this long, e.g. 30d or 1y.
        #[arg(long, value_name = "DURATION")]
        expires: Option<humantime::Duration>,
    },
    /// List the clients of a registry (never their secrets).
    List {
        /// The registry.
        #[arg(long, value_name = "NAME")]
        registry: Option<String>,
    },
    /// Revoke a client: its next request is refused.
    Revoke {
        /// The client's name.
        client: String,
        /// The registry.
        #[arg(long, value_name = "NAME")]
        registry: Option<String>,
    },
    /// Give a client a new secret (of the same kind); the old one stops working.
    Rotate {
        /// The client's name.
        client: String,
        /// The registry.
        #[arg(long, value_name = "NAME")]
        registry: Option<String>,
    },
    /// Downloads by client, crate, version and day.
    Downloads {
        /// Only this client.
        client: Option<String>,
        /// The registry.
        #[arg(long, value_name = "NAME")]
        registry: Option<String>,
        /// How many days back.
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
}

/// `wharf owners` subcommands.
#[derive(Subcommand)]
pub enum OwnersCommand {
    /// Load owners and publishers from a crates.io database dump (.tar.gz).
    Import {
        /// The dump, as downloaded (`db-dump.tar.gz`).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The registry whose policy uses them.
        #[arg(long, value_name = "NAME")]
        registry: Option<String>,
    },
    /// What wharf knows of a crate's owners and publishers, and from where.
    Show {
        /// The crate.
        #[arg(value_name = "CRATE")]
        krate: String,
        /// The registry.
        #[arg(long, value_name = "NAME")]
        registry: Option<String>,
    },
}

/// `wharf approvals` subcommands.
#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// What waits for a decision: crate, newest held version, who asked, when.
    List {
        /// The registry.
        #[arg(long, value_name = "NAME")]
        registry: Option<String>,
        /// Every request and decision, not only what waits.
        #[arg(long)]
        all: bool,
    },
    /// Let CRATE (every version) or CRATE@VERSION through.
    Approve(DecisionArgs),
    /// Keep CRATE or CRATE@VERSION out; downloads say it was rejected.
    Reject(DecisionArgs),
}

/// What `wharf approvals approve` and `reject` take.
#[derive(Args)]
pub struct DecisionArgs {
    /// `serde` (every version) or `serde@1.0.210`.
    #[arg(value_name = "CRATE[@VERSION]")]
    target: String,
    /// The registry.
    #[arg(long, value_name = "NAME")]
    registry: Option<String>,
    /// Who decides (default: $USER).
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    /// Why, shown with the decision and to whoever downloads a rejected version.
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
}

/// Flags of `wharf sync`.
#[derive(Args)]
pub struct SyncArgs {
    /// Sync only this mirror registry.
    #[arg(long, value_name = "NAME")]
    registry: Option<String>,

    /// Where the mirror trees live (overrides data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Only poll the mirror's feed_url and revalidate the crates it names
    /// since the last poll: a cheap pass to run often between full ones.
    #[arg(long, conflicts_with = "reconcile")]
    feed: bool,

    /// Revalidate every index file the mirror holds with conditional
    /// requests to the sparse upstreams, at the configured request rate, so
    /// that nothing a git or feed pass missed stays missed.
    #[arg(long)]
    reconcile: bool,
}

/// Flags of `wharf serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Where to keep crate files, index files and metadata.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// URL clients reach this server at; written into config.json.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,

    /// Upstream sparse index, repeatable, tried in order (for the one cache
    /// registry), e.g. --upstream sparse+https://index.crates.io/
    #[arg(long = "upstream", value_name = "URL")]
    upstreams: Vec<String>,

    /// How long a cached index file is served before revalidating, e.g. 5m.
    #[arg(long, value_name = "DURATION")]
    index_ttl: Option<humantime::Duration>,

    /// Bound on connect + first byte per upstream attempt, e.g. 3s.
    #[arg(long, value_name = "DURATION")]
    upstream_timeout: Option<humantime::Duration>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
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

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("WHARF_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .compact()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
