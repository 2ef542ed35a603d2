//! Licences live in the crate file, not the index: a crate file is judged
//! once it has been fetched, and a download whose licence is not allowed is
//! refused with a message naming the licence.

use tracing::info;
use wharf_config::glob;
use wharf_index::{CrateName, Version};
use wharf_publish::{LicenseExpr, license_of};

use super::PolicyGate;
use crate::error::ApiError;

impl PolicyGate {
    /// Whether crate files are judged by their licence.
    pub fn checks_licences(&self) -> bool {
        !(self.policy.licenses.is_empty() && self.policy.deny_licenses.is_empty())
    }

    /// Refuses a fetched crate file whose licence the policy does not allow.
    pub fn check_license(
        &self,
        krate: &CrateName,
        vers: &Version,
        crate_file: &[u8],
    ) -> Result<(), ApiError> {
        if !self.checks_licences() {
            return Ok(());
        }
        let key = format!("{krate}@{vers}");
        let verdict = self.licences.get_with(key, || {
            self.judge_license(krate.as_str(), vers.as_str(), crate_file)
        });
        verdict.map_err(ApiError::forbidden)
    }

    fn judge_license(&self, krate: &str, vers: &str, crate_file: &[u8]) -> Result<(), String> {
        let allowed_text = if self.policy.licenses.is_empty() {
            format!("denied: {}", self.policy.deny_licenses.join(", "))
        } else {
            format!("allowed: {}", self.policy.licenses.join(", "))
        };
        let declared = license_of(crate_file, &format!("{krate}-{vers}")).map_err(|e| {
            format!(
                "`{krate}` {vers}: {e}; registry `{}` checks licences",
                self.registry
            )
        })?;
        let Some(declared) = declared else {
            return Err(format!(
                "`{krate}` {vers} declares no SPDX licence (only a licence file, or none), which registry `{}` cannot check ({allowed_text})",
                self.registry
            ));
        };
        let expr = LicenseExpr::parse(&declared).map_err(|e| {
            format!(
                "`{krate}` {vers}: {e}; registry `{}` ({allowed_text})",
                self.registry
            )
        })?;
        // A licence is judged under every name SPDX gives it: allowed when
        // one of them is allowed, refused when one of them is denied.
        let ok = |names: &[String]| {
            (self.policy.licenses.is_empty()
                || names
                    .iter()
                    .any(|id| self.policy.licenses.iter().any(|l| licence_matches(l, id))))
                && !names.iter().any(|id| {
                    self.policy
                        .deny_licenses
                        .iter()
                        .any(|l| licence_matches(l, id))
                })
        };
        if expr.satisfiable(&ok) {
            Ok(())
        } else {
            info!(registry = %self.registry, krate.name = krate, krate.vers = vers, license = %declared, "licence refused");
            Err(format!(
                "`{krate}` {vers} is licensed `{declared}`, which registry `{}` does not allow ({allowed_text})",
                self.registry
            ))
        }
    }
}

/// Whether licence `id` matches a configured licence or glob (`BSD-*`);
/// licence identifiers compare without case, as SPDX says.
fn licence_matches(pattern: &str, id: &str) -> bool {
    glob::matches(pattern, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> PolicyGate {
        crate::policy::test_gate(toml_text)
    }

    #[test]
    fn licences() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let gate = policy(r#"licenses = ["MIT", "Apache-2.0"]"#);
        let crate_file = |license: &str| {
            let manifest =
                format!("[package]\nname = \"x\"\nversion = \"1.0.0\"\nlicense = \"{license}\"\n");
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(manifest.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, "x-1.0.0/Cargo.toml", manifest.as_bytes())
                .unwrap();
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            gz.write_all(&builder.into_inner().unwrap()).unwrap();
            gz.finish().unwrap()
        };
        let x = CrateName::new("x").unwrap();
        let one = Version::new("1.0.0").unwrap();
        assert!(
            gate.judge_license("x", "1.0.0", &crate_file("MIT OR GPL-3.0-only"))
                .is_ok()
        );
        let refused = gate
            .check_license(&x, &one, &crate_file("GPL-3.0-only"))
            .unwrap_err();
        assert!(
            refused.detail.contains("`GPL-3.0-only`"),
            "{}",
            refused.detail
        );
    }
}
