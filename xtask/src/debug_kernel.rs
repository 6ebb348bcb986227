//! `--debug-kernel`: Debian's 6.12 source built with KASAN, kmemleak,
//! lockdep (PROVE_LOCKING) and PROVE_RCU, cached under target/debug-kernel/.
//! The configuration is virtme-ng's minimal one (`vng --kconfig`) plus the
//! debug options and what the scenarios need.

use crate::kernels::Kernel;
use crate::util::{self, run, stdout_of, step};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages only this mode needs.
pub const PACKAGES: &[&str] = &[
    "linux-source-6.12",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
    "bc",
    "flex",
    "bison",
];

const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
const TREE: &str = "linux-source-6.12";

/// Configuration items on top of `vng --kconfig`.
const CONFIG_ITEMS: &[&str] = &[
    "CONFIG_KASAN=y",
    "CONFIG_KASAN_GENERIC=y",
    "CONFIG_KASAN_INLINE=y",
    "CONFIG_DEBUG_KMEMLEAK=y",
    "CONFIG_DEBUG_KMEMLEAK_AUTO_SCAN=n",
    "CONFIG_DEBUG_KMEMLEAK_MEM_POOL_SIZE=16000",
    "CONFIG_PROVE_LOCKING=y",
    "CONFIG_PROVE_RCU=y",
    "CONFIG_DEBUG_ATOMIC_SLEEP=y",
    "CONFIG_MODULES=y",
    "CONFIG_MODULE_UNLOAD=y",
    "CONFIG_NETFILTER=y",
    "CONFIG_IPV6=y",
    "CONFIG_VETH=y",
    "CONFIG_DUMMY=y",
    "CONFIG_NET_NS=y",
    "CONFIG_USER_NS=y",
    "CONFIG_PACKET=y",
    // What the scenarios use: nftables (queue, nat, route chains),
    // NFQUEUE, VRF and a qdisc on it, IPsec (ESP, cbc(aes) and
    // hmac(sha256)), memory cgroups.
    "CONFIG_NETFILTER_ADVANCED=y",
    "CONFIG_NF_TABLES=y",
    "CONFIG_NF_TABLES_INET=y",
    "CONFIG_NF_TABLES_IPV4=y",
    "CONFIG_NF_TABLES_IPV6=y",
    "CONFIG_NFT_QUEUE=y",
    "CONFIG_NFT_NAT=y",
    "CONFIG_NETFILTER_NETLINK_QUEUE=y",
    "CONFIG_NET_L3_MASTER_DEV=y",
    "CONFIG_IPV6_MULTIPLE_TABLES=y",
    "CONFIG_NET_VRF=y",
    "CONFIG_NET_SCHED=y",
    "CONFIG_XFRM_USER=y",
    "CONFIG_INET_ESP=y",
    "CONFIG_INET6_ESP=y",
    "CONFIG_CRYPTO_CBC=y",
    "CONFIG_CRYPTO_AES=y",
    "CONFIG_CRYPTO_HMAC=y",
    "CONFIG_CRYPTO_SHA256=y",
    "CONFIG_MEMCG=y",
    "CONFIG_DEBUG_INFO_NONE=y",
    "CONFIG_DEBUG_INFO_BTF=n",
    "CONFIG_MODULE_SIG=n",
    "CONFIG_SYSTEM_TRUSTED_KEYS=\"\"",
    "CONFIG_SYSTEM_REVOCATION_KEYS=\"\"",
];

/// Options that must be on in the final .config.
const REQUIRED: &[&str] = &[
    "CONFIG_KASAN",
    "CONFIG_DEBUG_KMEMLEAK",
    "CONFIG_PROVE_LOCKING",
    "CONFIG_PROVE_RCU",
    "CONFIG_MODULES",
    "CONFIG_MODULE_UNLOAD",
    "CONFIG_NETFILTER",
    "CONFIG_IPV6",
    "CONFIG_VETH",
    "CONFIG_NFT_QUEUE",
    "CONFIG_NETFILTER_NETLINK_QUEUE",
    "CONFIG_NET_VRF",
    "CONFIG_XFRM_USER",
    "CONFIG_INET_ESP",
    "CONFIG_MEMCG",
];

/// Deadlines of this mode are the normal ones times this (KASAN under TCG).
pub const SLOWDOWN: u32 = 6;

pub fn dir() -> PathBuf {
    util::target_dir().join("debug-kernel")
}

fn tree() -> PathBuf {
    dir().join(TREE)
}

/// What the tree was configured with: CONFIG_ITEMS when it was.
fn configured_with() -> PathBuf {
    dir().join("config-items")
}

fn bzimage(tree: &Path) -> PathBuf {
    tree.join("arch/x86/boot/bzImage")
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// True when bzImage and Module.symvers (which out-of-tree modules link
/// against; only `make modules` writes it) are newer than .config.
fn is_built(tree: &Path) -> bool {
    let Some(config) = modified(&tree.join(".config")) else {
        return false;
    };
    [bzimage(tree), tree.join("Module.symvers")]
        .iter()
        .all(|output| modified(output).is_some_and(|built| built > config))
}

fn configure(tree: &Path, vng_bin: &Path) -> Result<()> {
    step("configure the debug kernel (vng --kconfig + debug options)");
    let path = format!(
        "{}:{}",
        vng_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut vng = Command::new(vng_bin.join("vng"));
    vng.env("PATH", &path).current_dir(tree).arg("--kconfig");
    for item in CONFIG_ITEMS {
        vng.args(["--configitem", item]);
    }
    run(&mut vng)?;
    run(Command::new("make").current_dir(tree).arg("olddefconfig"))?;
    let config = std::fs::read_to_string(tree.join(".config"))
        .with_context(|| format!("cannot read {}/.config", tree.display()))?;
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|item| !config.lines().any(|l| l == format!("{item}=y")))
        .copied()
        .collect();
    if !missing.is_empty() {
        bail!("the debug kernel's .config lacks {}", missing.join(", "));
    }
    std::fs::write(configured_with(), CONFIG_ITEMS.join("\n"))?;
    Ok(())
}

/// Whether the tree's .config was made from today's CONFIG_ITEMS.
fn is_configured() -> bool {
    std::fs::read_to_string(configured_with()).is_ok_and(|items| items == CONFIG_ITEMS.join("\n"))
}

/// Builds (or reuses) the debug kernel and returns it as a test kernel whose
/// image and module build directory are the tree.
pub fn ensure(vng_bin: &Path) -> Result<Kernel> {
    let tree = tree();
    if is_configured() && is_built(&tree) {
        step(&format!(
            "debug kernel: reusing {} (newer than .config)",
            bzimage(&tree).display()
        ));
    } else {
        std::fs::create_dir_all(dir())?;
        if !tree.join("Makefile").exists() {
            step(&format!("unpack {SOURCE_TARBALL}"));
            run(Command::new("tar")
                .current_dir(dir())
                .arg("xf")
                .arg(SOURCE_TARBALL))?;
        }
        if !is_configured() {
            configure(&tree, vng_bin)?;
        }
        step("build the debug kernel (bzImage, modules; about 35 min on 2 cores)");
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        run(Command::new("nice")
            .current_dir(&tree)
            .args(["-n", "15", "make"])
            .arg(format!("-j{jobs}"))
            .args(["bzImage", "modules"]))?;
        if !is_built(&tree) {
            bail!(
                "the build finished but {} or Module.symvers is missing",
                bzimage(&tree).display()
            );
        }
    }
    let version = stdout_of(
        Command::new("make")
            .current_dir(&tree)
            .args(["-s", "kernelrelease"]),
    )?
    .trim()
    .to_string();
    Ok(Kernel {
        series: "6.12-debug",
        version,
        vmlinuz: bzimage(&tree),
        build_dir: tree,
        make_args: &[],
        scenarios: None,
    })
}

/// (in the guest, after the final rmmod) Two kmemleak scans, then its
/// report, saved to `out`/kmemleak.txt. Fails when a suspected leak is
/// nfwatch's: its backtrace names nfwatch, or holds an address in the module
/// area that no longer resolves (the module is gone). A kernel without
/// kmemleak passes unless it is `required`.
pub fn kmemleak_check(out: &Path, required: bool) -> Result<()> {
    let file = Path::new("/sys/kernel/debug/kmemleak");
    if !file.exists() {
        let _ = util::capture(Command::new("mount").args([
            "-t",
            "debugfs",
            "none",
            "/sys/kernel/debug",
        ]));
    }
    if !file.exists() {
        if required {
            bail!(
                "no {}: the kernel's leaks cannot be checked",
                file.display()
            );
        }
        return Ok(());
    }
    for _ in 0..2 {
        std::fs::write(file, "scan").context("echo scan > /sys/kernel/debug/kmemleak")?;
    }
    let report = std::fs::read_to_string(file)?;
    std::fs::write(out.join("kmemleak.txt"), &report)?;
    let ours: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("nfwatch") || l.contains("[<ffffffffc"))
        .collect();
    if !ours.is_empty() {
        bail!(
            "kmemleak: {} line(s) attributable to nfwatch (see kmemleak.txt):\n{}",
            ours.len(),
            ours.join("\n")
        );
    }
    let objects = report.matches("unreferenced object").count();
    println!("kmemleak: {objects} suspected leak(s), none of them nfwatch's");
    Ok(())
}
