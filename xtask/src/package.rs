//! `cargo xtask package`: the Debian packages nfwatch-dkms (module source
//! for DKMS) and nfwatch (program, service, configuration) in target/debian/,
//! built with debhelper from packaging/ and checked with lintian.

use crate::util::{self, capture, run, stdout_of, step};
use crate::{deps, host};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What building and checking the packages needs besides the Rust toolchain.
pub const PACKAGES: &[&str] = &["build-essential", "debhelper", "dh-dkms", "dkms", "lintian"];

/// The workspace's version, which the program reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version both packages and the module carry: the workspace's, then
/// the UTC time and hash of the last commit to what is packaged
/// (`0.1.0+git20261206214533.5614ee1`), so that each newer snapshot
/// upgrades the one installed and a rebuild of the same sources gives the
/// same version.
pub fn snapshot_version() -> Result<String> {
    snapshot_of(VERSION)
}

/// `base` with the last packaged commit's time and hash.
pub fn snapshot_of(base: &str) -> Result<String> {
    let stamp = stdout_of(
        Command::new("git")
            .env("TZ", "UTC")
            .args([
                "log",
                "-1",
                "--date=format-local:%Y%m%d%H%M%S",
                "--format=%cd.%h",
                "--",
            ])
            .args(PACKAGED)
            .current_dir(util::workspace_root()),
    )
    .context("the packages' version comes from git: build them in a clone")?;
    let stamp = stamp.trim();
    if stamp.is_empty() {
        bail!("git log finds no commit to {}", PACKAGED.join(", "));
    }
    Ok(format!("{base}+git{stamp}"))
}

/// Which protocol the packages speak.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The one include/uapi/linux/nfwatch.h declares.
    Current,
    /// One more, module and program alike (NFWATCH_TEST_VERSION_SKEW): the
    /// system test upgrades across it.
    Skewed,
}

/// The two .deb files built.
pub struct Debs {
    pub dkms: PathBuf,
    pub cli: PathBuf,
}

impl Debs {
    pub fn both(&self) -> [&Path; 2] {
        [&self.dkms, &self.cli]
    }
}

/// `cargo xtask package`.
pub fn package() -> Result<()> {
    deps::ensure_extra(PACKAGES)?;
    let debs = build(
        &snapshot_version()?,
        Protocol::Current,
        &util::target_dir().join("debian"),
    )?;
    for deb in debs.both() {
        println!("{}", deb.display());
    }
    Ok(())
}

/// Builds both packages as `version` (the module's too) into `out` and
/// runs lintian on them.
pub fn build(version: &str, protocol: Protocol, out: &Path) -> Result<Debs> {
    step(&format!("build Debian packages {version}"));
    let root = util::workspace_root();
    let program = release_program(protocol)?;
    let stage = util::target_dir()
        .join("debian-build")
        .join(format!("nfwatch-{version}"));
    util::remove_dir(&stage)?;
    stage_tree(&root, &stage, version, &program)?;
    if protocol == Protocol::Skewed {
        skew_module(&stage)?;
    }
    run(Command::new("dpkg-buildpackage")
        .args(["--build=binary", "--no-sign"])
        .current_dir(&stage))
    .context("dpkg-buildpackage (see its output above)")?;
    std::fs::create_dir_all(out)?;
    let built = stage.parent().unwrap_or(&stage).to_path_buf();
    let debs = Debs {
        dkms: out.join(format!("nfwatch-dkms_{version}_all.deb")),
        cli: out.join(format!("nfwatch_{version}_amd64.deb")),
    };
    for deb in debs.both() {
        let name = deb.file_name().unwrap_or_default();
        std::fs::rename(built.join(name), deb)
            .with_context(|| format!("dpkg-buildpackage did not make {}", deb.display()))?;
    }
    lintian(&debs)?;
    Ok(debs)
}

/// The release build of nfwatch speaking `protocol`. Cargo tracks the
/// variable the protocol crate reads, so switching rebuilds only that
/// crate and the program; the caller copies the binary before the next
/// build replaces it.
fn release_program(protocol: Protocol) -> Result<PathBuf> {
    let mut cargo = host::cargo();
    cargo.args(["build", "--release", "--package", "nfwatch"]);
    match protocol {
        Protocol::Current => cargo.env_remove("NFWATCH_TEST_VERSION_SKEW"),
        Protocol::Skewed => cargo.env("NFWATCH_TEST_VERSION_SKEW", "1"),
    };
    run(&mut cargo)?;
    Ok(util::target_dir().join("release/nfwatch"))
}

/// The crates linked into the nfwatch binary (its normal dependencies,
/// all the way down, less proc-macros, which only run at build time), each
/// with its license and license files, as cargo metadata finds them.
fn crate_licenses() -> Result<String> {
    let metadata: serde_json::Value = serde_json::from_str(&stdout_of(host::cargo().args([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--filter-platform",
        "x86_64-unknown-linux-gnu",
    ]))?)
    .context("cargo metadata's output")?;
    let packages: std::collections::HashMap<&str, &serde_json::Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: std::collections::HashMap<&str, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let root = packages
        .values()
        .find(|p| p["name"] == "nfwatch")
        .and_then(|p| p["id"].as_str())
        .context("cargo metadata: no nfwatch package")?;
    let is_proc_macro = |id: &str| {
        packages[id]["targets"].as_array().is_some_and(|targets| {
            targets.iter().all(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
            })
        })
    };
    let mut linked = std::collections::BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()));
            let Some(dep_id) = dep["pkg"].as_str() else {
                continue;
            };
            if normal
                && !is_proc_macro(dep_id)
                && linked.insert((packages[dep_id]["name"].as_str().unwrap_or(""), dep_id))
            {
                todo.push(dep_id);
            }
        }
    }
    let mut text =
        String::from("Rust crates statically linked into /usr/bin/nfwatch, with their licenses.\n");
    for (_, id) in linked {
        let package = packages[id];
        let name = package["name"].as_str().unwrap_or("?");
        let version = package["version"].as_str().unwrap_or("?");
        let license = package["license"]
            .as_str()
            .unwrap_or("see its license files");
        text += &format!("\n{}\n{name} {version}: {license}\n", "=".repeat(72));
        if ["nfwatch-proto", "ipfix"].contains(&name) {
            continue; // this package's own code, under GPL-2
        }
        let dir = Path::new(package["manifest_path"].as_str().unwrap_or(""))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_uppercase())
                    .unwrap_or_default();
                p.is_file()
                    && ["LICENSE", "LICENCE", "COPYING", "UNLICENSE"]
                        .iter()
                        .any(|l| name.starts_with(l))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{name} {version} has no license file in {}", dir.display());
        }
        for file in files {
            text += &format!(
                "\n--- {}\n{}",
                file.file_name().unwrap_or_default().to_string_lossy(),
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            );
        }
    }
    Ok(text)
}

/// The staged module declares the skewed protocol (DKMS builds it without
/// our KCFLAGS).
fn skew_module(stage: &Path) -> Result<()> {
    let path = stage.join("kmod/version.h");
    let text = std::fs::read_to_string(&path)?;
    std::fs::write(&path, format!("#define NFWATCH_TEST_VERSION_SKEW\n{text}"))?;
    Ok(())
}

/// Lays out the source tree dpkg-buildpackage runs in: packaging/debian/,
/// the unit files, configuration and logrotate snippet under their
/// debhelper names, the release binary, man pages, completions and the
/// module's source.
fn stage_tree(root: &Path, stage: &Path, version: &str, program: &Path) -> Result<()> {
    let packaging = root.join("packaging");
    let debian = stage.join("debian");
    util::copy_dir(&packaging.join("debian"), &debian)?;
    std::fs::write(debian.join("changelog"), changelog(version)?)?;
    let unit = std::fs::read_to_string(packaging.join("systemd/nfwatch.service"))?;
    std::fs::write(debian.join("nfwatch.service"), &unit)?;
    std::fs::write(debian.join("nfwatch@.service"), instance_unit(&unit)?)?;
    copy(
        &packaging.join("nfwatch.logrotate"),
        &debian.join("nfwatch.logrotate"),
    )?;
    copy(
        &packaging.join("nfwatch.toml"),
        &stage.join("conf/nfwatch.toml"),
    )?;
    copy(&packaging.join("load-module"), &stage.join("load-module"))?;
    util::copy_dir(&packaging.join("examples"), &stage.join("examples"))?;
    copy(program, &stage.join("nfwatch"))?;
    std::fs::write(stage.join("crates-licenses.txt"), crate_licenses()?)?;
    stage_docs(stage)?;
    copy_sources(root, stage)?;
    set_module_version(stage, version)
}

/// Gives the staged module the packages' `version` (the program says the
/// workspace's).
fn set_module_version(stage: &Path, version: &str) -> Result<()> {
    let path = stage.join("kmod/version.h");
    let text = std::fs::read_to_string(&path)?;
    let define = format!("#define NFWATCH_VERSION \"{VERSION}\"");
    if !text.contains(&define) {
        bail!("{} has no `{define}`", path.display());
    }
    std::fs::write(
        &path,
        text.replace(&define, &format!("#define NFWATCH_VERSION \"{version}\"")),
    )?;
    Ok(())
}

/// Man pages and completions from `cargo xtask man` (target/man/), laid
/// out under the names the packaged files have.
fn stage_docs(stage: &Path) -> Result<()> {
    let man = util::target_dir().join("man");
    util::remove_dir(&man)?;
    let generated = crate::man::generate(&man)?;
    for page in &generated.pages {
        copy(page, &stage.join("man").join(file_name(page)?))?;
    }
    for completion in &generated.completions {
        let name = file_name(completion)?;
        let packaged = match name.as_str() {
            "nfwatch.bash" => "bash/nfwatch".to_string(),
            "_nfwatch" => format!("zsh/{name}"),
            "nfwatch.fish" => format!("fish/{name}"),
            other => bail!("no place in the package for completion {other}"),
        };
        copy(completion, &stage.join("completions").join(packaged))?;
    }
    Ok(())
}

fn file_name(path: &Path) -> Result<String> {
    Ok(path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned())
}

/// nfwatch@NAME.service: nfwatch.service reading /etc/nfwatch/NAME.toml.
fn instance_unit(unit: &str) -> Result<String> {
    const CONFIG: &str = "--config /etc/nfwatch/nfwatch.toml";
    if !unit.contains(CONFIG) {
        bail!("packaging/systemd/nfwatch.service no longer says `{CONFIG}`");
    }
    Ok(unit
        .replace(CONFIG, "--config /etc/nfwatch/%i.toml")
        .replacen(
            "Description=Record packets",
            "Description=Record packets (/etc/nfwatch/%i.toml)",
            1,
        ))
}

/// What the packages are built from: their date is the last commit to it.
const PACKAGED: &[&str] = &[
    "Cargo.lock",
    "README.md",
    "Cargo.toml",
    "crates",
    "include",
    "kmod",
    "packaging",
    "xtask/src/man.rs",
];

/// A one-entry debian/changelog dated by the last commit to what is
/// packaged, so a rebuild of the same sources gives the same packages (and
/// the system test's cached image stays valid).
fn changelog(version: &str) -> Result<String> {
    let committed = stdout_of(
        Command::new("git")
            .args(["log", "-1", "--format=%aD", "--"])
            .args(PACKAGED)
            .current_dir(util::workspace_root()),
    )
    .unwrap_or_default();
    let date = match committed.trim() {
        "" => stdout_of(Command::new("date").arg("-R"))?,
        _ => committed,
    };
    Ok(format!(
        "nfwatch ({version}) unstable; urgency=medium\n\n  * nfwatch {version}.\n\n -- nfwatch developers <nfwatch@packages.invalid>  {}\n",
        date.trim()
    ))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    Ok(())
}

/// The module's sources as git tracks them (a developer's kmod/ also holds
/// build products, such as nfwatch.mod.c, that must not be packaged).
fn module_sources(root: &Path) -> Result<Vec<String>> {
    let listed = stdout_of(
        Command::new("git")
            .args(["ls-files", "--", "kmod", "include"])
            .current_dir(root),
    )?;
    let files: Vec<String> = listed.lines().map(str::to_string).collect();
    if !files.iter().any(|f| f == "kmod/Kbuild") {
        bail!("git ls-files kmod include lists no kmod/Kbuild");
    }
    Ok(files)
}

/// Copies the module's tracked sources from `root` to `stage`.
fn copy_sources(root: &Path, stage: &Path) -> Result<()> {
    for file in module_sources(root)? {
        copy(&root.join(&file), &stage.join(&file))?;
    }
    Ok(())
}

/// lintian on both packages: any error or warning fails (overrides, each
/// with its reason, are in packaging/debian/*.lintian-overrides).
fn lintian(debs: &Debs) -> Result<()> {
    step("lintian");
    let out = capture(
        Command::new("lintian")
            .args(["--fail-on", "error,warning", "--display-info"])
            .args(debs.both()),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    if !out.status.success() {
        bail!(
            "lintian found errors or warnings ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dkms.conf's BUILD_EXCLUSIVE_KERNEL, tested as dkms does (the file
    /// sourced by bash, then `[[ $kernelver =~ $BUILD_EXCLUSIVE_KERNEL ]]`),
    /// takes every kernel from compat.h's oldest on, and none before it.
    #[test]
    fn dkms_builds_only_for_kernels_compat_h_takes() {
        let root = util::workspace_root();
        let compat = std::fs::read_to_string(root.join("kmod/compat.h")).unwrap();
        assert!(
            compat.contains("#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 10, 0)"),
            "compat.h's oldest kernel is no longer 5.10: update BUILD_EXCLUSIVE_KERNEL"
        );
        let conf = root.join("packaging/debian/nfwatch-dkms.dkms");
        for (kernel, builds) in [
            ("4.19.0-27-amd64", false),
            ("5.4.0-1-amd64", false),
            ("5.9.16", false),
            ("5.10.0-30-amd64", true),
            ("5.15.0-100-generic", true),
            ("5.19.17", true),
            ("6.1.0-57-amd64", true),
            ("6.12.118+deb12-amd64", true),
            ("7.0.0", true),
            ("10.1.0", true),
        ] {
            let status = Command::new("bash")
                .args([
                    "-c",
                    r#"set -e; . "$1"; [[ $2 =~ $BUILD_EXCLUSIVE_KERNEL ]]"#,
                    "bash",
                ])
                .arg(&conf)
                .arg(kernel)
                .status()
                .unwrap();
            assert_eq!(status.success(), builds, "kernel {kernel}");
        }
    }

    #[test]
    fn crate_licenses_cover_what_nfwatch_links() {
        let text = crate_licenses().unwrap();
        for linked in ["\nclap ", "\nnetlink-packet-core ", "\nserde_json "] {
            assert!(text.contains(linked), "{linked:?} missing");
        }
        for not_linked in [
            "\nclap_derive ",
            "\nserde_derive ",
            "\nassert_cmd ",
            "\nanyhow ",
        ] {
            assert!(!text.contains(not_linked), "{not_linked:?} listed");
        }
        assert!(text.contains("--- LICENSE-MIT"), "no MIT license text");
    }

    #[test]
    fn packaged_module_sources_are_tracked_files_only() {
        let files = module_sources(&util::workspace_root()).unwrap();
        assert!(files.iter().any(|f| f == "include/uapi/linux/nfwatch.h"));
        assert!(files.iter().any(|f| f == "kmod/main.c"));
        assert!(
            !files
                .iter()
                .any(|f| f.ends_with(".mod.c") || f.ends_with(".o") || f.ends_with(".ko")),
            "{files:?}"
        );
    }

    #[test]
    fn snapshots_sort_after_their_release_and_each_other() {
        let version = snapshot_version().unwrap();
        let stamp = version
            .strip_prefix(&format!("{VERSION}+git"))
            .unwrap_or_else(|| panic!("{version}"));
        let (time, hash) = stamp.split_once('.').unwrap();
        assert_eq!(time.len(), 14, "{version}");
        assert!(time.chars().all(|c| c.is_ascii_digit()), "{version}");
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{version}");
        for (lower, higher) in [
            (VERSION.to_string(), version.clone()),
            (
                format!("{VERSION}+git20261206214533.5614ee1"),
                format!("{VERSION}+git20261206214534.0000000"),
            ),
        ] {
            let newer = Command::new("dpkg")
                .args(["--compare-versions", &higher, "gt", &lower])
                .status()
                .unwrap();
            assert!(newer.success(), "{higher} is not newer than {lower}");
        }
    }

    #[test]
    fn instance_unit_reads_its_own_config() {
        let unit = std::fs::read_to_string(
            util::workspace_root().join("packaging/systemd/nfwatch.service"),
        )
        .unwrap();
        let instance = instance_unit(&unit).unwrap();
        assert!(
            instance.contains("ExecStart=/usr/bin/nfwatch watch --config /etc/nfwatch/%i.toml\n")
        );
        assert!(instance.contains("Description=Record packets (/etc/nfwatch/%i.toml)"));
        assert!(!instance.contains("/etc/nfwatch/nfwatch.toml"));
        assert!(instance_unit("ExecStart=/usr/bin/nfwatch watch\n").is_err());
    }
}
