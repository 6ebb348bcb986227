//! The kernels the module is built for and tested on: Debian's packages,
//! fetched with `apt-get download` and unpacked under target/kernels (the
//! host's own kernels and /boot stay as they are).

use crate::deps;
use crate::util::{self, capture, run, step};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a series' packages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Debian 12, the host's own release, through the host's apt sources.
    Host,
    /// Debian 11, through an apt configuration of its own under
    /// target/kernels/apt, made from the host's sources.
    Bullseye,
}

/// A tested kernel series and the Debian metapackages that follow it.
pub struct Series {
    pub name: &'static str,
    pub suite: Suite,
    pub image: &'static str,
    pub headers: &'static str,
    /// More arguments for `make` when building against its headers.
    pub make_args: &'static [&'static str],
    /// The VM scenarios run on it; None: all.
    pub scenarios: Option<&'static [&'static str]>,
}

/// Kernel series under test: the oldest the module is written for, then
/// the two of Debian 12.
pub const SERIES: &[Series] = &[
    Series {
        name: "5.10",
        suite: Suite::Bullseye,
        image: "linux-image-amd64",
        headers: "linux-headers-amd64",
        // Built by gcc-10, which Debian 12 does not have.
        make_args: &["CC=gcc-12"],
        // That it loads, records and unloads (not memcg_charged nor
        // flows_bounded: before 5.14 the ring's pages and the flows are not
        // charged, see kmod/compat.h).
        scenarios: Some(&[
            "protocols",
            "prefix",
            "two_subscribers",
            "tcpdump_oracle",
            "nexthop",
            "hooks_until_netns_exit",
            "nfqueue_kept",
            "other_namespace",
            "rmmod_under_traffic",
            "ipsec_once",
            "replies_after_overrun",
            "attribution",
            "all_netns",
            "flows_agree",
        ]),
    },
    Series {
        name: "6.1",
        suite: Suite::Host,
        image: "linux-image-amd64",
        headers: "linux-headers-amd64",
        make_args: &[],
        scenarios: None,
    },
    Series {
        name: "6.12",
        suite: Suite::Host,
        image: "linux-image-6.12-amd64",
        headers: "linux-headers-6.12-amd64",
        make_args: &[],
        scenarios: None,
    },
];

/// The tested series' names, for messages.
pub fn series_names() -> String {
    SERIES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

/// The newest demo kernel series.
pub const DEMO_SERIES: &str = "6.12";

#[derive(Debug, Clone)]
pub struct Kernel {
    pub series: &'static str,
    pub version: String,
    pub vmlinuz: PathBuf,
    /// The tree `make -C` builds external modules against.
    pub build_dir: PathBuf,
    pub make_args: &'static [&'static str],
    /// The VM scenarios run on it; None: all.
    pub scenarios: Option<&'static [&'static str]>,
}

/// Where the kernels' packages are unpacked: a root with boot/,
/// lib/modules/, usr/src/ and usr/lib/linux-kbuild-*. virtme-ng finds the
/// modules next to the image and links them as the guest's /lib/modules.
fn root() -> PathBuf {
    util::target_dir().join("kernels")
}

impl Kernel {
    fn unpacked(series: &'static Series, version: &str) -> Self {
        let root = root();
        Kernel {
            series: series.name,
            version: version.to_string(),
            vmlinuz: root.join(format!("boot/vmlinuz-{version}")),
            build_dir: root.join(format!("usr/src/linux-headers-{version}")),
            make_args: series.make_args,
            scenarios: series.scenarios,
        }
    }

    /// Unpacked completely (the marker is written last).
    fn is_unpacked(&self) -> bool {
        marker(&self.version).exists()
    }
}

fn marker(version: &str) -> PathBuf {
    root().join(format!(".unpacked-{version}"))
}

/// Numeric parts of a version, for ordering ("6.12.117+deb12-amd64" -> [6, 12, 117, 12, 64]).
pub fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// The private apt configuration of `Suite::Bullseye`.
fn bullseye_dir() -> PathBuf {
    root().join("apt/bullseye")
}

/// `apt-get` or `apt-cache` for `suite`'s packages.
fn apt(program: &str, suite: Suite) -> Command {
    let mut cmd = Command::new(program);
    if suite == Suite::Bullseye {
        let dir = bullseye_dir();
        let opt = |name: &str, path: &str| format!("{name}={}", dir.join(path).display());
        for setting in [
            opt("Dir::State", "state"),
            opt("Dir::State::status", "state/status"),
            opt("Dir::Cache", "cache"),
            opt("Dir::Etc::SourceList", "sources.list"),
            opt("Dir::Etc::SourceParts", "sources.list.d"),
            opt("Dir::Etc::Preferences", "preferences"),
            opt("Dir::Etc::PreferencesParts", "preferences.d"),
        ] {
            cmd.args(["-o", &setting]);
        }
    }
    cmd
}

/// Debian 11's sources, from the mirrors the host's apt uses for Debian 12
/// (`apt-cache policy`: "500 URI bookworm-security/main amd64 Packages").
fn bullseye_sources() -> Result<String> {
    let policy = util::stdout_of(Command::new("apt-cache").arg("policy"))?;
    let mut sources = String::new();
    for line in policy.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, uri, dist, ..] = fields[..] {
            if let Some(suffix) = dist
                .strip_suffix("/main")
                .and_then(|suite| suite.strip_prefix("bookworm"))
            {
                sources.push_str(&format!("deb {uri} bullseye{suffix} main\n"));
            }
        }
    }
    if sources.is_empty() {
        bail!("the host's apt has no Debian 12 (bookworm) sources to derive Debian 11's from");
    }
    Ok(sources)
}

/// Debian 11's package lists, fetched once (`refresh`: again).
fn bullseye_lists(refresh: bool) -> Result<()> {
    let dir = bullseye_dir();
    let lists = dir.join("state/lists");
    let fetched = std::fs::read_dir(&lists)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false);
    if fetched && !refresh {
        return Ok(());
    }
    for sub in [
        "state/lists/partial",
        "cache/archives/partial",
        "sources.list.d",
        "preferences.d",
    ] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(dir.join("sources.list"), bullseye_sources()?)?;
    std::fs::write(dir.join("state/status"), "")?;
    run(apt("apt-get", Suite::Bullseye).args(["-o", "APT::Sandbox::User=root", "update"]))
}

/// `apt-cache depends` of `package`: its Depends (of alternatives, the last).
fn depends(suite: Suite, package: &str) -> Result<Vec<String>> {
    let out = capture(apt("apt-cache", suite).args(["depends", "--important", package]))?;
    if !out.status.success() {
        bail!(
            "apt-cache knows no package {package}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("Depends: "))
        .filter(|name| !name.starts_with('<'))
        .map(str::to_string)
        .collect())
}

/// The kernel release the series' metapackage points to today.
fn candidate(series: &Series) -> Result<String> {
    if series.suite == Suite::Bullseye {
        bullseye_lists(false)?;
    }
    depends(series.suite, series.image)?
        .iter()
        .find_map(|name| name.strip_prefix("linux-image-"))
        .map(str::to_string)
        .with_context(|| format!("{} depends on no linux-image-*", series.image))
}

/// The newest release of `series` unpacked earlier (when apt cannot say).
fn newest_unpacked(series: &Series) -> Option<String> {
    let prefix = ".unpacked-";
    std::fs::read_dir(root())
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix(prefix).map(str::to_string)
        })
        .filter(|version| version.starts_with(&format!("{}.", series.name)))
        .max_by_key(|version| version_key(version))
}

/// The image, headers and kbuild packages of `version`, and what the
/// headers need on the host besides Debian's kernel packages (compiler,
/// pahole, the libraries of kbuild's tools).
fn packages_of(suite: Suite, version: &str) -> Result<(Vec<String>, Vec<String>)> {
    let headers = format!("linux-headers-{version}");
    let mut fetched = vec![format!("linux-image-{version}"), headers.clone()];
    let mut host = Vec::new();
    let mut pending = vec![headers];
    while let Some(package) = pending.pop() {
        for dep in depends(suite, &package)? {
            if dep.starts_with("linux-headers-") || dep.starts_with("linux-kbuild-") {
                if !fetched.contains(&dep) {
                    fetched.push(dep.clone());
                    pending.push(dep);
                }
            } else if !dep.starts_with("linux-") && !host.contains(&dep) {
                host.push(dep);
            }
        }
    }
    Ok((fetched, host))
}

/// `apt-get download` into `dir`; once more after refreshing the package
/// lists when that fails (a list older than the archive names a removed
/// version).
fn download(suite: Suite, dir: &Path, packages: &[String]) -> Result<()> {
    let fetch = || {
        // The sandbox user _apt cannot write to target/.
        run(apt("apt-get", suite)
            .current_dir(dir)
            .args(["-o", "APT::Sandbox::User=root", "download"])
            .args(packages))
    };
    if fetch().is_ok() {
        return Ok(());
    }
    match suite {
        Suite::Bullseye => bullseye_lists(true)?,
        Suite::Host if util::is_root() => run(Command::new("apt-get").arg("update"))?,
        Suite::Host => bail!(
            "cannot download {}; as root run:\n  apt-get update",
            packages.join(" ")
        ),
    }
    fetch()
}

/// Downloads and unpacks `kernel`'s packages under root().
fn unpack(series: &Series, kernel: &Kernel) -> Result<()> {
    step(&format!(
        "fetch kernel {} (unpacked under {})",
        kernel.version,
        root().display()
    ));
    let (packages, host) = packages_of(series.suite, &kernel.version)?;
    // Debian 11's kbuild links libraries Debian 12 lacks (libssl1.1) for
    // tools an external module's build does not run (sign-file).
    if series.suite == Suite::Host {
        deps::ensure_packages(&host.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    let debs = root().join("debs");
    util::remove_dir(&debs)?;
    std::fs::create_dir_all(&debs)?;
    download(series.suite, &debs, &packages)?;
    for entry in std::fs::read_dir(&debs)? {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(entry?.path())
            .arg(root()))?;
    }
    util::remove_dir(&debs)?;
    relocate_headers(&kernel.build_dir)?;
    let build_link = root().join(format!("lib/modules/{}/build", kernel.version));
    let _ = std::fs::remove_file(&build_link);
    std::os::unix::fs::symlink(&kernel.build_dir, &build_link)?;
    // Debian's packages leave modules.dep to the postinst.
    run(Command::new("depmod")
        .arg("-b")
        .arg(root())
        .arg(&kernel.version))?;
    std::fs::write(marker(&kernel.version), "")?;
    Ok(())
}

/// The arch headers' Makefile includes the common headers' by absolute
/// path (/usr/src/linux-headers-*-common/Makefile): point it at the copy.
fn relocate_headers(build_dir: &Path) -> Result<()> {
    let makefile = build_dir.join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .with_context(|| format!("cannot read {}", makefile.display()))?;
    let usr_src = root().join("usr/src/");
    let relocated = text.replace("/usr/src/", &usr_src.to_string_lossy());
    std::fs::write(&makefile, relocated)?;
    Ok(())
}

/// The current kernel of each tested series, unpacked, optionally filtered
/// by series ("6.12") or exact version.
pub fn tested(filter: Option<&str>) -> Result<Vec<Kernel>> {
    let mut kernels = Vec::new();
    for series in SERIES {
        let release_prefix = format!("{}.", series.name);
        if filter.is_some_and(|f| f != series.name && !f.starts_with(&release_prefix)) {
            continue;
        }
        let version = match candidate(series) {
            Ok(version) => version,
            Err(e) => newest_unpacked(series)
                .with_context(|| format!("{e}; as root run:\n  apt-get update"))?,
        };
        if filter.is_some_and(|f| f != series.name && f != version) {
            continue;
        }
        let kernel = Kernel::unpacked(series, &version);
        if !kernel.is_unpacked() {
            unpack(series, &kernel)?;
        }
        kernels.push(kernel);
    }
    if kernels.is_empty() {
        bail!(
            "--kernel {} matches none of {}",
            filter.unwrap_or(""),
            series_names()
        );
    }
    Ok(kernels)
}

#[cfg(test)]
mod tests {
    use super::{version_key, SERIES};

    #[test]
    fn subsets_name_known_scenarios() {
        let known = crate::guest::scenario_names();
        for series in SERIES {
            for name in series.scenarios.unwrap_or_default() {
                assert!(known.contains(name), "{}: no scenario {name}", series.name);
            }
        }
    }

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
