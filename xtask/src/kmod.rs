//! Builds the kernel module out of tree for one kernel, warnings as errors.

use crate::kernels::Kernel;
use crate::util::{self, capture, describe, step};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::Command;

/// Which module to build.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// What ships.
    Product,
    /// With the self-tests (`make SELFTEST=1`), which `selftest=1` runs at load.
    Selftest,
    /// A family that declares another protocol version (kmod/version.h):
    /// the CLI must refuse it.
    VersionSkew,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Product => "product",
            Variant::Selftest => "selftest",
            Variant::VersionSkew => "skew",
        }
    }

    fn make_args(self) -> &'static [&'static str] {
        match self {
            Variant::Product => &[],
            Variant::Selftest => &["SELFTEST=1"],
            Variant::VersionSkew => &["KCFLAGS=-DNFWATCH_TEST_VERSION_SKEW"],
        }
    }
}

/// Builds kmod/ against `kernel`'s headers in target/kmod/<version>/<variant>/
/// with W=1 C=1 (sparse); returns the .ko. Fails on any warning or error line.
pub fn build(kernel: &Kernel, variant: Variant) -> Result<PathBuf> {
    step(&format!(
        "build kernel module ({}) for {}",
        variant.name(),
        kernel.version
    ));
    let root = util::workspace_root();
    let copy = util::target_dir()
        .join("kmod")
        .join(&kernel.version)
        .join(variant.name());
    util::remove_dir(&copy)?;
    for dir in ["kmod", "include"] {
        util::copy_dir(&root.join(dir), &copy.join(dir))?;
    }
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&kernel.build_dir)
        .arg(format!("M={}", copy.join("kmod").display()))
        .args(["W=1", "C=1"])
        .args(kernel.make_args)
        .args(variant.make_args())
        .arg("modules");
    let out = capture(&mut make)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(copy.join("build.log"), &text)?;
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("warning:") || l.contains("error:"))
        .collect();
    if !problems.is_empty() || !out.status.success() {
        let shown = if problems.is_empty() {
            text.trim().to_string()
        } else {
            problems.join("\n")
        };
        bail!(
            "`{}` ({}), {} warning/error line(s):\n{shown}\n(full log: {})",
            describe(&make),
            out.status,
            problems.len(),
            copy.join("build.log").display()
        );
    }
    let ko = copy.join("kmod").join("nfwatch.ko");
    if !ko.exists() {
        bail!("make succeeded but {} is missing", ko.display());
    }
    Ok(ko)
}
