//! How the server itself runs, apart from its registries: where the served
//! bytes live (`[storage]`), bounds on client connections (`[connections]`),
//! traffic statistics (`[stats]`), which reverse proxies are believed about
//! who a client is, and where alerts go.

use std::time::Duration;

use serde::Deserialize;

/// Where index files, crate files and a mirror's status live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// `fs` (files under `data_dir`) or `s3` (any S3-compatible service).
    #[serde(default)]
    pub kind: StorageKind,
    /// The bucket (`s3`).
    #[serde(default)]
    pub bucket: Option<String>,
    /// Prepended to every key in the bucket (`prod/`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The service's URL, for anything but AWS (`http://127.0.0.1:8333`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket's region.
    #[serde(default)]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (loopback or a private network).
    #[serde(default)]
    pub allow_http: bool,
    /// Unsigned requests, for a bucket that takes anonymous writes; otherwise
    /// credentials come from the usual AWS chain (`AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`, a profile, instance metadata).
    #[serde(default)]
    pub anonymous: bool,
    /// Bound on connecting to the service and on each request's first byte.
    #[serde(default = "default_storage_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// `Cache-Control` of the objects a sync pass rewrites (index files,
    /// `config.json`, `status.json`, the manifest), for a bucket or CDN that
    /// serves the tree itself. Crate files are always
    /// `public, max-age=31536000, immutable`.
    #[serde(default = "default_index_cache_control")]
    pub index_cache_control: String,
    /// The URL anyone reads the bucket's objects at (a CDN, the bucket's
    /// website), such that key `K` is `{public_url}/K` (the prefix is part
    /// of it). Redirected downloads of registries anyone may read point
    /// there; without it they get presigned URLs (or, for an `anonymous`
    /// bucket, the object's own URL).
    #[serde(default)]
    pub public_url: Option<String>,
}

fn default_index_cache_control() -> String {
    "public, max-age=60, must-revalidate".to_owned()
}

/// How a registry answers a crate download.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrateDownloads {
    /// wharf sends the file's bytes.
    #[default]
    Stream,
    /// wharf answers with a redirect to the object in the bucket (its
    /// public URL, or a presigned one): the bytes do not pass through wharf.
    Redirect,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            kind: StorageKind::Fs,
            bucket: None,
            prefix: None,
            endpoint: None,
            region: None,
            allow_http: false,
            anonymous: false,
            timeout: default_storage_timeout(),
            index_cache_control: default_index_cache_control(),
            public_url: None,
        }
    }
}

fn default_storage_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The kind of [`Storage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Files under `data_dir`.
    #[default]
    Fs,
    /// An S3-compatible bucket.
    S3,
}

/// Bounds on client connections, so that idle, slow or too many connections
/// cannot use up the process's file descriptors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connections {
    /// Connections open at once; more are accepted and closed at once.
    /// Also kept below the process's file limit (raised to its hard limit
    /// at start), less a reserve for files, the database and upstreams.
    #[serde(default = "default_max_connections")]
    pub max: usize,
    /// How long a connection may take to send a complete request head,
    /// counted from when it opened or its previous response was sent: the
    /// keep-alive idle timeout, and the bound on a slowly sent request.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The longest pause while a request body (a publish) arrives.
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            max: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            body_timeout: default_body_timeout(),
        }
    }
}

/// Traffic statistics kept in each registry's database: downloads per crate
/// and version per UTC day, bytes, requests and distinct clients per day.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Whether they are kept. Downloads per client of registries with
    /// credentials are counted either way (`wharf clients downloads`).
    #[serde(default = "default_stats_enabled")]
    pub enabled: bool,
    /// Days older than this are deleted.
    #[serde(default = "default_stats_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// How often what was counted in memory is written to the database
    /// (and once more at shutdown).
    #[serde(default = "default_stats_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            enabled: default_stats_enabled(),
            retention: default_stats_retention(),
            flush_interval: default_stats_flush_interval(),
        }
    }
}

fn default_stats_enabled() -> bool {
    true
}
fn default_stats_retention() -> Duration {
    Duration::from_secs(400 * 86_400)
}
fn default_stats_flush_interval() -> Duration {
    Duration::from_secs(5)
}

/// A list of addresses (`127.0.0.1`, `::1`) and CIDRs (`10.0.0.0/8`).
pub(crate) fn addresses_or_cidrs<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{text}` is neither an address (127.0.0.1) nor a CIDR (10.0.0.0/8)"
                    ))
                })
        })
        .collect()
}

fn default_max_connections() -> usize {
    16_384
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Checks the `alert_*` settings: a webhook that is an http(s) URL, and
/// intervals that are neither 0 nor past 100 years.
pub(crate) fn validate_alerts(config: &crate::Config) -> Result<(), crate::ConfigError> {
    if let Some(url) = &config.alert_webhook
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        // The URL itself is a secret (a Slack webhook's path is its key).
        return Err(crate::ConfigError::Invalid(
            "alert_webhook must be an http:// or https:// URL (the receiver's incoming webhook)"
                .into(),
        ));
    }
    for (field, value) in [
        ("alert_interval", config.alert_interval),
        ("alert_max_lag", config.alert_max_lag),
        ("alert_check_interval", config.alert_check_interval),
    ] {
        if value.is_zero() || value > crate::MAX_DURATION {
            return Err(crate::ConfigError::Invalid(format!(
                "{field} must be more than 0s and at most 100 years (got {})",
                humantime::format_duration(value)
            )));
        }
    }
    Ok(())
}
