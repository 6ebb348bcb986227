//! Installs what the build and the VM tests need: Debian packages and a
//! virtme-ng virtualenv under target/.

use crate::util::{self, capture, run, step};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::Command;

/// Debian packages the build, the VMs and the guest scenarios use (the
/// kernels are fetched and unpacked under target/ instead: kernels.rs).
const PACKAGES: &[&str] = &[
    "bc",
    "bison",
    "busybox-static",
    "flex",
    "gcc",
    "groff-base",
    "iproute2",
    "iputils-ping",
    "jq",
    "kmod",
    "libfixbuf-tools",
    "make",
    "nfdump",
    "nftables",
    "pmacct",
    "python3-venv",
    "qemu-system-x86",
    "sparse",
    "tcpdump",
    "tshark",
    // virtme-ng's guest init runs the host's udevd, whose rules name the
    // virtio ports the guest command's output and exit status go by:
    // without it vng reports 255 whatever the command returned.
    "udev",
    "util-linux",
];

/// The virtme-ng release the VM runner is tested with.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// Ensures packages and the virtme-ng venv; returns the venv's bin directory.
pub fn ensure() -> Result<PathBuf> {
    step("ensure dependencies");
    ensure_packages(PACKAGES)?;
    ensure_vng()
}

/// Ensures more packages, for modes that need them (`--debug-kernel`).
pub fn ensure_extra(packages: &[&str]) -> Result<()> {
    step("ensure dependencies of this mode");
    ensure_packages(packages)
}

fn is_installed(package: &str) -> Result<bool> {
    let out = capture(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]))?;
    Ok(out.status.success() && out.stdout == b"installed")
}

pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let mut missing = Vec::new();
    for package in packages {
        if !is_installed(package)? {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !util::is_root() {
        bail!("missing Debian packages; as root run:\n  {install}");
    }
    println!("installing: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))
}

/// The venv holding vng, created on first use.
fn ensure_vng() -> Result<PathBuf> {
    let venv = util::target_dir().join("vng-venv");
    let bin = venv.join("bin");
    if bin.join("vng").exists() {
        return Ok(bin);
    }
    println!("creating {} with {VIRTME_NG}", venv.display());
    util::remove_dir(&venv)?;
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(bin.join("pip")).args(["install", "--quiet", VIRTME_NG]))?;
    Ok(bin)
}
