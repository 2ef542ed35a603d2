#![doc = include_str!("../README.md")]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub mod glob;
mod policy;
mod registry;
mod server;
mod validate;

pub use policy::{OwnersLookup, Policy, PolicyMode, VersionRule};
pub use registry::{CacheRegistry, HostedRegistry, MirrorRegistry, Registry};
pub use server::{Connections, CrateDownloads, Stats, Storage, StorageKind};
pub use validate::MAX_DURATION;

/// The sparse index cargo itself uses for crates.io.
pub const CRATES_IO_SPARSE: &str = "sparse+https://index.crates.io/";

/// The name of the registry `wharf serve` creates when no configuration names one.
pub const DEFAULT_REGISTRY: &str = "crates-io";

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this tree.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration of a wharf process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address `wharf serve` listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where files and the embedded database live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Local working state that is never served: a mirror's git clone and
    /// the lock that keeps its passes apart. Defaults to `data_dir`; set it
    /// when the served tree is in a bucket and `data_dir` should hold
    /// nothing but the database.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// The URL clients reach this server at, written into `config.json`.
    /// Derived from `listen` when absent.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Memory for hot index files (and their compressed forms), in MiB.
    #[serde(default = "default_memory_index_mb")]
    pub memory_index_mb: u64,
    /// Memory for hot crate files, in MiB.
    #[serde(default = "default_memory_crates_mb")]
    pub memory_crates_mb: u64,
    /// A mirror list (TOML) this server publishes at
    /// `/.well-known/wharf-mirrors.toml`, for `wharf mirrors`.
    #[serde(default)]
    pub mirror_list: Option<PathBuf>,
    /// Reverse proxies (addresses or CIDRs) whose `Forwarded` and
    /// `X-Forwarded-For` headers are believed about who the client is.
    /// Those headers are ignored from anyone else, since a client can write
    /// them: failed-login lockouts and budgets key on the client's address.
    #[serde(default, deserialize_with = "server::addresses_or_cidrs")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Bounds on client connections.
    #[serde(default)]
    pub connections: Connections,
    /// Traffic statistics: whether kept, for how long, how often written.
    #[serde(default)]
    pub stats: Stats,
    /// Where the served bytes live: files under `data_dir` (the default) or
    /// an S3-compatible bucket.
    #[serde(default)]
    pub storage: Storage,
    /// Where alerts are POSTed (`{"text": "..."}`, which Slack and Matrix
    /// hookshot webhooks take): a mirror pass that fails, a mirror lagging
    /// past `alert_max_lag`, every upstream of a registry down, storage
    /// unavailable; and again when each recovers. Kept secret: never shown.
    #[serde(default)]
    pub alert_webhook: Option<String>,
    /// At most one alert per condition per this long; a condition still
    /// true after it is reported again.
    #[serde(default = "default_alert_interval", with = "humantime_serde")]
    pub alert_interval: Duration,
    /// A mirror whose lag (see `status.json`'s `lag_seconds`) or, lacking an
    /// upstream time, whose time since its last pass without failures passes
    /// this is alerted about.
    #[serde(default = "default_alert_max_lag", with = "humantime_serde")]
    pub alert_max_lag: Duration,
    /// How often the conditions are looked at.
    #[serde(default = "default_alert_check_interval", with = "humantime_serde")]
    pub alert_check_interval: Duration,
    /// The registries served, each mounted at `/{name}/`.
    #[serde(default = "default_registries")]
    pub registries: BTreeMap<String, Registry>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./wharf-data")
}
fn default_memory_index_mb() -> u64 {
    256
}
fn default_memory_crates_mb() -> u64 {
    256
}
fn default_registries() -> BTreeMap<String, Registry> {
    BTreeMap::from([(
        DEFAULT_REGISTRY.to_owned(),
        Registry::Cache(CacheRegistry::default()),
    )])
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            work_dir: None,
            public_url: None,
            memory_index_mb: default_memory_index_mb(),
            memory_crates_mb: default_memory_crates_mb(),
            mirror_list: None,
            trusted_proxies: Vec::new(),
            connections: Connections::default(),
            stats: Stats::default(),
            storage: Storage::default(),
            alert_webhook: None,
            alert_interval: default_alert_interval(),
            alert_max_lag: default_alert_max_lag(),
            alert_check_interval: default_alert_check_interval(),
            registries: default_registries(),
        }
    }
}

fn default_alert_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_alert_max_lag() -> Duration {
    Duration::from_secs(2 * 3600)
}

fn default_alert_check_interval() -> Duration {
    Duration::from_secs(15)
}

impl Config {
    /// Parses TOML text; `origin` names it in error messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `path`, or returns the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Ok(Self::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml(&text, path)
            }
        }
    }

    /// Where local working state goes: `work_dir`, or else `data_dir`.
    pub fn work_dir(&self) -> &Path {
        self.work_dir.as_deref().unwrap_or(&self.data_dir)
    }

    /// Applies `WHARF_LISTEN`, `WHARF_DATA_DIR` and `WHARF_PUBLIC_URL` from `vars`.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (key, value) in vars {
            match key.as_str() {
                "WHARF_LISTEN" => {
                    self.listen = value.parse().map_err(|_| {
                        ConfigError::Invalid(format!(
                            "WHARF_LISTEN `{value}` is not an address like 127.0.0.1:8080"
                        ))
                    })?
                }
                "WHARF_DATA_DIR" => self.data_dir = PathBuf::from(value),
                "WHARF_PUBLIC_URL" => self.public_url = Some(value),
                _ => {}
            }
        }
        self.validate()
    }
}

/// Whether a selection pattern is a glob rather than a plain crate name.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Turns a sparse registry URL (`sparse+https://index.crates.io/`) into the
/// HTTP base its files are fetched under, always ending in `/`.
pub fn sparse_base(url: &str) -> Result<String, String> {
    let http = url.strip_prefix("sparse+").unwrap_or(url);
    if !(http.starts_with("http://") || http.starts_with("https://")) {
        return Err(format!(
            "upstream `{url}` must be a sparse index URL like sparse+https://index.crates.io/"
        ));
    }
    if http.contains(['?', '#']) {
        return Err(format!(
            "upstream `{url}` must not have a query or fragment"
        ));
    }
    let mut base = http.to_owned();
    if !base.ends_with('/') {
        base.push('/');
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_crates_io_cache_on_loopback() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        let Registry::Cache(cache) = &config.registries[DEFAULT_REGISTRY] else {
            panic!()
        };
        assert_eq!(cache.upstreams, [CRATES_IO_SPARSE]);
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../../wharf.example.toml");
        let config = Config::from_toml(text, Path::new("wharf.example.toml")).unwrap();
        let Registry::Cache(cache) = &config.registries["crates-io"] else {
            panic!()
        };
        assert_eq!(cache.index_ttl, Duration::from_secs(300));
        assert_eq!(cache.upstream_timeout, Duration::from_secs(3));
        // The example shows the defaults.
        let defaults = Connections::default();
        assert_eq!(config.connections.max, defaults.max);
        assert_eq!(config.connections.idle_timeout, defaults.idle_timeout);
        assert_eq!(config.connections.body_timeout, defaults.body_timeout);
        assert!(config.trusted_proxies.is_empty());
        let defaults = CacheRegistry::default();
        assert_eq!(cache.client_miss_burst, defaults.client_miss_burst);
        assert_eq!(cache.client_misses_per_sec, defaults.client_misses_per_sec);
        assert_eq!(
            cache.upstream_requests_per_sec,
            defaults.upstream_requests_per_sec
        );
        assert_eq!(
            cache.upstream_requests_burst,
            defaults.upstream_requests_burst
        );
        assert_eq!(
            cache.upstream_max_concurrency,
            defaults.upstream_max_concurrency
        );
    }

    #[test]
    fn trusted_proxies_take_addresses_and_cidrs() {
        let config = Config::from_toml(
            "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(config.trusted_proxies.len(), 3);
        let err = Config::from_toml("trusted_proxies = [\"10.0.0.0/33\"]\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`10.0.0.0/33` is neither an address"), "{err}");
    }

    /// The example config's uncommented part plus the commented section
    /// between `start` and `end`, uncommented (lines `# key = value` and
    /// `# [table]`; `# # …` stays a comment), parsed.
    fn example_with_section(start: &str, end: &str) -> Config {
        let text = include_str!("../../../wharf.example.toml");
        let (before, _) = text.split_once("# --- mirror example ---").unwrap();
        let (_, rest) = text.split_once(start).unwrap();
        let (block, _) = rest.split_once(end).unwrap();
        let block: String = block
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| !l.starts_with('#') && !l.starts_with('`') && l.contains(['=', '[']))
            .map(|l| format!("{l}\n"))
            .collect();
        Config::from_toml(
            &format!("{before}\n{block}"),
            Path::new("wharf.example.toml"),
        )
        .unwrap()
    }

    #[test]
    fn the_example_alert_settings_parse_once_uncommented() {
        let text: String = include_str!("../../../wharf.example.toml")
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| l.starts_with("alert_"))
                    .unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let config = Config::from_toml(&text, Path::new("wharf.example.toml")).unwrap();
        assert!(
            config
                .alert_webhook
                .is_some_and(|u| u.starts_with("https://"))
        );
        // The example shows the defaults.
        let defaults = Config::default();
        assert_eq!(config.alert_interval, defaults.alert_interval);
        assert_eq!(config.alert_max_lag, defaults.alert_max_lag);
        assert_eq!(config.alert_check_interval, defaults.alert_check_interval);
    }

    #[test]
    fn alert_settings_that_cannot_work_are_refused() {
        for (toml, says) in [
            (
                "alert_webhook = \"hooks.example.org/x\"",
                "http:// or https://",
            ),
            (
                "alert_check_interval = \"0s\"",
                "alert_check_interval must be more than 0s",
            ),
            ("alert_interval = \"200years\"", "at most 100 years"),
        ] {
            let e = Config::from_toml(toml, Path::new("t.toml")).unwrap_err();
            assert!(e.to_string().contains(says), "{toml}: {e}");
        }
    }

    #[test]
    fn the_example_mirror_section_parses_once_uncommented() {
        let config = example_with_section("# --- mirror example ---", "# --- end ---");
        let Registry::Mirror(mirror) = &config.registries["mirror"] else {
            panic!()
        };
        assert_eq!(mirror.keep_versions, Some(5));
        assert_eq!(mirror.contact.as_deref(), Some("mirror-ops@example.org"));
        // A git host gets longer than a sparse upstream to start answering.
        assert_eq!(mirror.upstream_timeout, Duration::from_secs(3));
        assert_eq!(mirror.git_timeout, Duration::from_secs(60));
    }

    #[test]
    fn the_example_hosted_section_parses_once_uncommented() {
        let config = example_with_section("# --- hosted example ---", "# --- end hosted ---");
        let Registry::Hosted(hosted) = &config.registries["private"] else {
            panic!()
        };
        assert_eq!(hosted.max_upload_bytes, 10 << 20);
        assert!(
            hosted
                .database_url(Path::new("/srv/wharf"))
                .ends_with("/srv/wharf/wharf.db")
        );
    }

    #[test]
    fn the_example_company_section_parses_once_uncommented() {
        let config = example_with_section("# --- company example ---", "# --- end company ---");
        let registry = &config.registries["company"];
        assert!(registry.auth_required() && registry.needs_database());
        let policy = registry.policy().expect("a policy");
        assert_eq!(policy.mode, PolicyMode::AllowList);
        assert!(policy.approval);
        assert_eq!(policy.allow["serde"].text, "<1.0.200");
        assert_eq!(policy.allow_owners.len(), 3);
        assert_eq!(policy.deny_owners, ["github:someone-untrusted"]);
        assert!(policy.require_publisher && policy.judges_owners());
        assert_eq!(policy.owners_lookup.requests_per_sec, 1.0);
        assert_eq!(policy.owners_lookup.ttl, Duration::from_secs(24 * 3600));
        assert_eq!(policy.owners_dump_every(), Duration::from_secs(24 * 3600));
        assert!(policy.owners_dump_url.is_some());
        assert!(policy.deny["openssl-sys"].req.is_none());
        assert!(policy.licenses.contains(&"BSD-*".to_owned()));
    }

    #[test]
    fn a_bad_policy_is_refused_with_a_clear_message() {
        let text = "[registries.c]\nkind = \"cache\"\n[registries.c.policy]\nallow = { serde = \"not a version\" }\n";
        let e = Config::from_toml(text, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a version requirement"), "{e}");
        let text =
            "[registries.c]\nkind = \"cache\"\n[registries.c.policy]\nmode = \"allow-list\"\n";
        let e = Config::from_toml(text, Path::new("w.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lets nothing through"), "{e}");
    }

    #[test]
    fn the_issue_shape_parses() {
        let text = r#"
            listen = "127.0.0.1:8080"
            data_dir = "./wharf-data"
            public_url = "http://127.0.0.1:8080"
            [registries.crates-io]
            kind = "cache"
            upstreams = ["sparse+http://127.0.0.1:9000/index/"]
            upstream_timeout = "3s"
            index_ttl = "5m"
        "#;
        let config = Config::from_toml(text, Path::new("x")).unwrap();
        let Registry::Cache(cache) = &config.registries["crates-io"] else {
            panic!()
        };
        assert_eq!(cache.upstreams, ["sparse+http://127.0.0.1:9000/index/"]);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_a_clear_message() {
        let err = Config::from_toml("lisen = \"x\"", Path::new("w.toml")).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = Config::from_toml(
            "[registries.a]\nkind = \"cache\"\nindex_tll = \"5m\"",
            Path::new("w.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("index_tll"), "{err}");
        let err =
            Config::from_toml("[registries.A]\nkind = \"cache\"", Path::new("w.toml")).unwrap_err();
        assert!(err.to_string().contains("registry name"), "{err}");
        let err = Config::from_toml(
            "[registries.a]\nkind = \"cache\"\nupstreams = [\"ftp://x\"]",
            Path::new("w.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("sparse index URL"), "{err}");
    }

    #[test]
    fn a_mirror_needs_roots() {
        let err = Config::from_toml(
            "[registries.m]\nkind = \"mirror\"\ninclude = [\"serde*\"]",
            Path::new("w.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("needs crates to start from"),
            "{err}"
        );
        let full = Config::from_toml(
            "[registries.m]\nkind = \"mirror\"\nindex_git = \"https://example.invalid/index\"\nexclude = [\"*-sys\"]",
            Path::new("w.toml"),
        )
        .unwrap();
        let Registry::Mirror(m) = &full.registries["m"] else {
            panic!()
        };
        assert!(m.index_git.is_some() && m.include.is_empty());
        let ok = Config::from_toml(
            "[registries.m]\nkind = \"mirror\"\ninclude = [\"serde\"]\nkeep_versions = 3\nsync_interval = \"10m\"",
            Path::new("w.toml"),
        )
        .unwrap();
        let Registry::Mirror(m) = &ok.registries["m"] else {
            panic!()
        };
        assert_eq!(m.keep_versions, Some(3));
        assert_eq!(m.sync_interval, Some(Duration::from_secs(600)));
    }

    #[test]
    fn env_overrides_file() {
        let mut config = Config::default();
        config
            .apply_env([
                ("WHARF_LISTEN".to_owned(), "127.0.0.1:9999".to_owned()),
                ("WHARF_DATA_DIR".to_owned(), "/tmp/x".to_owned()),
            ])
            .unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert!(
            config
                .apply_env([("WHARF_LISTEN".to_owned(), "nope".to_owned())])
                .is_err()
        );
    }

    #[test]
    fn sparse_base_normalises() {
        assert_eq!(
            sparse_base("sparse+http://h/index").unwrap(),
            "http://h/index/"
        );
        assert_eq!(sparse_base("https://h/").unwrap(), "https://h/");
        assert!(sparse_base("git://h").is_err());
    }
}
