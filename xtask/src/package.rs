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

/// The version both packages and the module carry: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

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
    let debs = build(VERSION, &util::target_dir().join("debian"))?;
    for deb in debs.both() {
        println!("{}", deb.display());
    }
    Ok(())
}

/// Builds both packages as `version` into `out` and runs lintian on them.
/// A version other than the workspace's is the module's too.
pub fn build(version: &str, out: &Path) -> Result<Debs> {
    step(&format!("build Debian packages {version}"));
    let root = util::workspace_root();
    run(host::cargo().args(["build", "--release", "--package", "nfwatch"]))?;
    let stage = util::target_dir()
        .join("debian-build")
        .join(format!("nfwatch-{version}"));
    util::remove_dir(&stage)?;
    stage_tree(&root, &stage, version)?;
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

/// Lays out the source tree dpkg-buildpackage runs in: packaging/debian/,
/// the unit files, configuration and logrotate snippet under their
/// debhelper names, the release binary, man pages, completions and the
/// module's source.
fn stage_tree(root: &Path, stage: &Path, version: &str) -> Result<()> {
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
    copy(
        &util::target_dir().join("release/nfwatch"),
        &stage.join("nfwatch"),
    )?;
    stage_docs(stage)?;
    for dir in ["kmod", "include"] {
        copy_sources(&root.join(dir), &stage.join(dir))?;
    }
    if version != VERSION {
        set_module_version(stage, version)?;
    }
    Ok(())
}

/// Gives the staged module `version` (the system test's upgrade packages;
/// the program they carry still says the workspace's version).
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

/// Copies a source tree without build products (a developer's kmod/ may
/// hold them): Makefile, Kbuild and C files only.
fn copy_sources(from: &Path, to: &Path) -> Result<()> {
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_sources(&path, &to.join(&name))?;
        } else if name == "Makefile"
            || name == "Kbuild"
            || name.ends_with(".c")
            || name.ends_with(".h")
        {
            copy(&path, &to.join(&name))?;
        }
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
