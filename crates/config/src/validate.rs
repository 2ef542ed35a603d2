//! What the types cannot check about a config: registry names, URLs,
//! durations, non-empty lists, and settings that contradict each other.

use super::*;

impl Config {
    /// Checks what the types cannot: registry names, URLs, non-empty lists.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.registries.is_empty() {
            return Err(ConfigError::Invalid("no registries configured".into()));
        }
        if self.storage.kind == StorageKind::S3 && self.storage.bucket.is_none() {
            return Err(ConfigError::Invalid(
                "[storage] kind = \"s3\" needs a bucket (and, for anything but AWS, an endpoint)"
                    .into(),
            ));
        }
        let connections = &self.connections;
        if connections.max == 0
            || connections.idle_timeout.is_zero()
            || connections.body_timeout.is_zero()
        {
            return Err(ConfigError::Invalid(
                "[connections]: max, idle_timeout and body_timeout must be above zero".into(),
            ));
        }
        server::validate_alerts(self)?;
        let stats = &self.stats;
        if stats.retention < Duration::from_secs(86_400)
            || stats.retention > MAX_DURATION
            || stats.flush_interval.is_zero()
            || stats.flush_interval > Duration::from_secs(3600)
        {
            return Err(ConfigError::Invalid(
                "[stats]: retention must be from 1d to 100 years, flush_interval from 1ms to 1h"
                    .into(),
            ));
        }
        for (name, registry) in &self.registries {
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !name_ok {
                return Err(ConfigError::Invalid(format!(
                    "registry name `{name}` must be 1-64 characters of a-z, 0-9, `-` and `_`"
                )));
            }
            match registry {
                Registry::Mirror(mirror) => {
                    validate_upstreams(name, &mirror.upstreams, mirror.upstream_timeout)?;
                    let has_roots = mirror.include.iter().any(|i| !is_glob(i))
                        || mirror.list_file.is_some()
                        || !mirror.lockfiles.is_empty();
                    if !has_roots && mirror.index_git.is_none() {
                        return Err(ConfigError::Invalid(format!(
                            "mirror `{name}` needs crates to start from: names in `include`, a `list_file` or `lockfiles`, or `index_git` to mirror the whole index"
                        )));
                    }
                    if mirror.feed_interval.is_some() && mirror.feed_url.is_none() {
                        return Err(ConfigError::Invalid(format!(
                            "mirror `{name}`: feed_interval needs feed_url (https://static.crates.io/rss/updates.xml for crates.io)"
                        )));
                    }
                    if let Some(url) = &mirror.index_git
                        && url.trim().is_empty()
                    {
                        return Err(ConfigError::Invalid(format!(
                            "mirror `{name}`: index_git is empty; give a git URL such as https://github.com/rust-lang/crates.io-index"
                        )));
                    }
                    if mirror.max_concurrency == 0 || mirror.max_requests_per_sec <= 0.0 {
                        return Err(ConfigError::Invalid(format!(
                            "mirror `{name}`: max_concurrency and max_requests_per_sec must be more than 0"
                        )));
                    }
                    validate_durations(
                        name,
                        &[
                            ("upstream_timeout", Some(mirror.upstream_timeout), true),
                            ("git_timeout", Some(mirror.git_timeout), true),
                            ("probe_interval", Some(mirror.probe_interval), false),
                            ("sync_interval", mirror.sync_interval, false),
                            ("feed_interval", mirror.feed_interval, false),
                            ("reconcile_interval", mirror.reconcile_interval, false),
                        ],
                    )?;
                    if mirror.keep_versions == Some(0) {
                        return Err(ConfigError::Invalid(format!(
                            "mirror `{name}`: keep_versions must be at least 1 (leave it out to keep all)"
                        )));
                    }
                }
                Registry::Hosted(hosted) => {
                    if hosted.max_upload_bytes == 0 {
                        return Err(ConfigError::Invalid(format!(
                            "hosted registry `{name}`: max_upload_bytes must be more than 0"
                        )));
                    }
                }
                Registry::Cache(cache) => {
                    validate_upstreams(name, &cache.upstreams, cache.upstream_timeout)?;
                    validate_durations(
                        name,
                        &[
                            ("upstream_timeout", Some(cache.upstream_timeout), true),
                            ("index_ttl", Some(cache.index_ttl), true),
                            ("negative_ttl", Some(cache.negative_ttl), true),
                            ("probe_interval", Some(cache.probe_interval), false),
                            ("hedge_after", cache.hedge_after, true),
                        ],
                    )?;
                    let positive = |x: f64| x.is_finite() && x > 0.0;
                    if cache.upstream_max_concurrency == 0
                        || !positive(cache.upstream_requests_per_sec)
                        || cache.upstream_requests_burst == 0
                        || (cache.client_miss_burst > 0 && !positive(cache.client_misses_per_sec))
                    {
                        return Err(ConfigError::Invalid(format!(
                            "cache `{name}`: upstream_max_concurrency, upstream_requests_per_sec, upstream_requests_burst and client_misses_per_sec must be more than 0 (client_miss_burst = 0 turns the per-client budget off)"
                        )));
                    }
                }
            }
            let database_url = match registry {
                Registry::Cache(cache) => cache.database_url.as_deref(),
                Registry::Mirror(mirror) => mirror.database_url.as_deref(),
                Registry::Hosted(hosted) => hosted.database_url.as_deref(),
            };
            if let Some(url) = database_url
                && !(url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
            {
                return Err(ConfigError::Invalid(format!(
                    "registry `{name}`: database_url must start with sqlite: or postgres:// (got `{}`)",
                    url.split('@').next_back().unwrap_or_default()
                )));
            }
            if let Some(policy) = registry.policy() {
                policy.validate(name).map_err(ConfigError::Invalid)?;
            }
            self.validate_downloads(name, registry)?;
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "public_url `{url}` must start with http:// or https://"
            )));
        }
        if let Some(url) = &self.storage.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "[storage] public_url `{url}` must start with http:// or https://"
            )));
        }
        Ok(())
    }

    /// Checks registry `name`'s `crate_downloads` against the storage: a
    /// redirect needs a bucket to point into, and a registry that requires
    /// credentials a bucket that can presign.
    fn validate_downloads(&self, name: &str, registry: &Registry) -> Result<(), ConfigError> {
        let (downloads, expiry) = registry.crate_downloads();
        // S3 refuses presigned URLs valid longer than a week.
        if expiry.is_zero() || expiry > Duration::from_secs(7 * 24 * 3600) {
            return Err(ConfigError::Invalid(format!(
                "registry `{name}`: download_url_expiry must be between 1s and 7days (S3's limit for presigned URLs)"
            )));
        }
        if downloads != CrateDownloads::Redirect {
            return Ok(());
        }
        if self.storage.kind != StorageKind::S3 {
            return Err(ConfigError::Invalid(format!(
                "registry `{name}`: crate_downloads = \"redirect\" needs [storage] kind = \"s3\" (files on disk have no URL to redirect to); remove it, or keep the files in a bucket"
            )));
        }
        if registry.auth_required() && self.storage.anonymous {
            return Err(ConfigError::Invalid(format!(
                "registry `{name}`: crate_downloads = \"redirect\" with auth_required needs presigned URLs, which an `anonymous` bucket cannot sign; give wharf credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) instead of anonymous = true, or stream"
            )));
        }
        Ok(())
    }
}

/// Checks the upstream list and timeout of registry `name`.
fn validate_upstreams(
    name: &str,
    upstreams: &[String],
    timeout: Duration,
) -> Result<(), ConfigError> {
    if upstreams.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "registry `{name}` has no upstreams"
        )));
    }
    for url in upstreams {
        sparse_base(url).map_err(|e| ConfigError::Invalid(format!("registry `{name}`: {e}")))?;
    }
    if timeout.is_zero() {
        return Err(ConfigError::Invalid(format!(
            "registry `{name}`: upstream_timeout must be more than 0s"
        )));
    }
    Ok(())
}

/// The longest duration any setting may have. Durations are added to the
/// current time and handed to caches, which refuse more than 1,000 years: a
/// longer one would panic when first used instead of being refused here. A
/// century already means "never" for every setting. (A year is 365.25 days,
/// as humantime counts it, so that `"100years"` is allowed.)
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// Checks registry `name`'s durations: (setting, value, whether 0 is allowed).
/// An interval of 0 would make its loop spin.
fn validate_durations(
    name: &str,
    durations: &[(&str, Option<Duration>, bool)],
) -> Result<(), ConfigError> {
    for &(field, duration, may_be_zero) in durations {
        let Some(duration) = duration else {
            continue;
        };
        if duration > MAX_DURATION {
            return Err(ConfigError::Invalid(format!(
                "registry `{name}`: {field} must be at most 100 years (got {})",
                humantime::format_duration(duration)
            )));
        }
        if duration.is_zero() && !may_be_zero {
            return Err(ConfigError::Invalid(format!(
                "registry `{name}`: {field} must be more than 0s"
            )));
        }
    }
    Ok(())
}
