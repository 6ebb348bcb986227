//! The kernels the module is built for and tested on.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Kernel series under test: the newest installed version of each.
pub const SERIES: &[&str] = &["6.1", "6.12"];

/// The newest demo kernel series.
pub const DEMO_SERIES: &str = "6.12";

#[derive(Debug, Clone)]
pub struct Kernel {
    pub series: &'static str,
    pub version: String,
    /// A kernel built from source (`--debug-kernel`): image and build tree.
    pub tree: Option<PathBuf>,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        if let Some(tree) = &self.tree {
            return tree.join("arch/x86/boot/bzImage");
        }
        PathBuf::from(format!("/boot/vmlinuz-{}", self.version))
    }

    pub fn build_dir(&self) -> PathBuf {
        if let Some(tree) = &self.tree {
            return tree.clone();
        }
        PathBuf::from(format!("/lib/modules/{}/build", self.version))
    }
}

/// Installed kernel versions that have both an image and headers.
fn installed() -> Result<Vec<String>> {
    let mut versions = Vec::new();
    for entry in std::fs::read_dir("/boot").context("cannot read /boot")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("vmlinuz-") {
            let kernel = Kernel {
                series: "",
                version: version.to_string(),
                tree: None,
            };
            if kernel.build_dir().join("Makefile").exists() {
                versions.push(kernel.version);
            }
        }
    }
    Ok(versions)
}

/// Numeric parts of a version, for ordering ("6.12.117+deb12-amd64" -> [6, 12, 117, 12, 64]).
pub fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// The newest installed kernel of each tested series, optionally filtered by
/// series ("6.12") or exact version.
pub fn tested(filter: Option<&str>) -> Result<Vec<Kernel>> {
    let installed = installed()?;
    let mut kernels = Vec::new();
    for series in SERIES {
        let newest = installed
            .iter()
            .filter(|v| v.starts_with(&format!("{series}.")))
            .max_by_key(|v| version_key(v));
        let Some(version) = newest else {
            bail!("no kernel {series}.* with headers installed (/boot/vmlinuz-* + /lib/modules/*/build)");
        };
        if filter.is_none_or(|f| f == *series || f == version) {
            kernels.push(Kernel {
                series,
                version: version.clone(),
                tree: None,
            });
        }
    }
    if kernels.is_empty() {
        bail!(
            "--kernel {} matches none of {}",
            filter.unwrap_or(""),
            SERIES.join(", ")
        );
    }
    Ok(kernels)
}

#[cfg(test)]
mod tests {
    use super::version_key;

    #[test]
    fn versions_order_numerically() {
        assert_eq!(
            version_key("6.12.117+deb12-amd64"),
            vec![6, 12, 117, 12, 64]
        );
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
        assert!(version_key("6.12.9") < version_key("6.12.117"));
    }
}
