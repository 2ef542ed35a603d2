//! The arguments of `wharf`'s subcommands, as clap reads them; the top-level
//! command list and its help are in `main.rs`.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Subcommand};

/// `wharf check`'s arguments.
#[derive(Args)]
pub struct CheckArgs {
    /// The wharf server (`https://crates.example.org`), a mirror tree's URL
    /// (`https://mirror.example.org/crates-io`, where its status.json is), or
    /// a static server holding trees (with --registry).
    #[arg(value_name = "URL")]
    pub url: String,

    /// The registry to check (needed when the server has several).
    #[arg(long, value_name = "NAME")]
    pub registry: Option<String>,

    /// Warn when the mirror is further behind its upstream than this (by the
    /// upstream's clock when it follows a git index or a feed, else the time
    /// since its last pass without failures).
    #[arg(long, value_name = "DURATION", default_value = "2h")]
    pub max_lag: humantime::Duration,

    /// Critical when further behind than this [default: twice --max-lag].
    #[arg(long, value_name = "DURATION")]
    pub critical_lag: Option<humantime::Duration>,

    /// Also fetch this crate's index file and its newest crate file.
    #[arg(long = "crate", value_name = "NAME")]
    pub krate: Option<String>,

    /// Bound on each request.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub timeout: humantime::Duration,

    /// Credentials for a registry that requires them, sent as cargo sends
    /// them (a token, `Bearer TOKEN` or `Basic BASE64`), only to URL's host.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "WHARF_CHECK_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Flags of `wharf stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// Only this registry (every registry when left out).
    #[arg(long, value_name = "NAME")]
    pub registry: Option<String>,

    /// How far back, e.g. 7d or 12weeks.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub since: humantime::Duration,

    /// How many of the most downloaded crates to show.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: u32,

    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
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
    pub mirrors: Vec<String>,

    /// Write the project's .cargo/config.toml instead of ~/.cargo/config.toml.
    #[arg(long)]
    pub project: bool,

    /// Restore the file exactly as it was before `wharf setup`.
    #[arg(long, conflicts_with = "mirrors")]
    pub undo: bool,

    /// `auto`: probe the mirrors of the list --from and use the best one.
    #[arg(
        long = "mirrors",
        value_name = "auto",
        requires = "from",
        conflicts_with = "mirrors"
    )]
    pub auto: Option<String>,

    /// The mirror list for `--mirrors auto` (a file or URL).
    #[arg(long, value_name = "FILE|URL")]
    pub from: Option<String>,

    /// The reference `--mirrors auto` spot-checks against (default: crates.io).
    #[arg(long, value_name = "URL", requires = "from")]
    pub against: Option<String>,
}

/// Flags of `wharf verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The mirror's sparse index URL.
    #[arg(long, value_name = "URL", required_unless_present = "local")]
    pub mirror: Option<String>,

    /// Check this server's own storage instead (fsck): every index line of
    /// each mirror and cache registry has its crate file with the right
    /// sha256 (a cache lists versions it never fetched: those are counted,
    /// not failed), no partial files are left, and unreferenced crate files
    /// are reported.
    #[arg(long, conflicts_with_all = ["mirror", "against", "lockfile", "crates", "sample", "all"])]
    pub local: bool,

    /// With --local: only this registry.
    #[arg(long, value_name = "NAME", requires = "local")]
    pub registry: Option<String>,

    /// The reference's sparse index URL (default: crates.io).
    #[arg(long, value_name = "URL")]
    pub against: Option<String>,

    /// Check the crates.io packages of this Cargo.lock, at their locked
    /// versions, against its checksums too.
    #[arg(long, value_name = "FILE")]
    pub lockfile: Option<PathBuf>,

    /// Check this crate (all its versions); repeatable.
    #[arg(long = "crate", value_name = "NAME")]
    pub crates: Vec<String>,

    /// Check N crates spread over the mirror's manifest.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub sample: Option<usize>,

    /// Check every crate the mirror's manifest lists.
    #[arg(long)]
    pub all: bool,

    /// The operator's public key (hex, from `wharf keys`): the mirror's
    /// signed manifest must verify with it, and vouch for every index file
    /// checked.
    #[arg(long, value_name = "HEX")]
    pub key: Option<String>,

    /// A mirror list (file or URL): the key its entry for --mirror pins is
    /// used as --key.
    #[arg(long, value_name = "FILE|URL", conflicts_with = "key")]
    pub from: Option<String>,
}

/// Flags of `wharf run`.
#[derive(Args)]
pub struct RunArgs {
    /// A mirror's sparse index URL; repeatable, tried in order after those
    /// of client.toml.
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,

    /// Do not fall back to crates.io after the mirrors.
    #[arg(long)]
    pub no_crates_io: bool,

    /// Where the cache lives (default ~/.cache/wharf/run).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Read this client config instead of ~/.config/wharf/client.toml.
    #[arg(long, value_name = "FILE")]
    pub client_config: Option<PathBuf>,

    /// Bound on connect + first byte per mirror attempt (default 2s).
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<humantime::Duration>,

    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
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
    pub target: String,
    /// The registry.
    #[arg(long, value_name = "NAME")]
    pub registry: Option<String>,
    /// Who decides (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
    /// Why, shown with the decision and to whoever downloads a rejected version.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

/// Flags of `wharf sync`.
#[derive(Args)]
pub struct SyncArgs {
    /// Sync only this mirror registry.
    #[arg(long, value_name = "NAME")]
    pub registry: Option<String>,

    /// Where the mirror trees live (overrides data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Only poll the mirror's feed_url and revalidate the crates it names
    /// since the last poll: a cheap pass to run often between full ones.
    #[arg(long, conflicts_with = "reconcile")]
    pub feed: bool,

    /// Revalidate every index file the mirror holds with conditional
    /// requests to the sparse upstreams, at the configured request rate, so
    /// that nothing a git or feed pass missed stays missed.
    #[arg(long)]
    pub reconcile: bool,
}

/// Flags of `wharf serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Where to keep crate files, index files and metadata.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// URL clients reach this server at; written into config.json.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,

    /// Upstream sparse index, repeatable, tried in order (for the one cache
    /// registry), e.g. --upstream sparse+https://index.crates.io/
    #[arg(long = "upstream", value_name = "URL")]
    pub upstreams: Vec<String>,

    /// How long a cached index file is served before revalidating, e.g. 5m.
    #[arg(long, value_name = "DURATION")]
    pub index_ttl: Option<humantime::Duration>,

    /// Bound on connect + first byte per upstream attempt, e.g. 3s.
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<humantime::Duration>,
}
