//! The system test: the Debian packages installed with apt into a Debian 12
//! image made by mmdebstrap (DKMS builds the module for both kernels there,
//! at host speed), booted under QEMU TCG with systemd as PID 1, once per
//! tested kernel series; `guest-system` runs in the guest after
//! nfwatch.service and writes one JSON outcome a line to the second serial
//! port.

use crate::kernels::{self, Suite, SERIES};
use crate::results::Outcome;
use crate::util::{self, run, stdout_of, step};
use crate::{deps, package};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Host packages the image build and the boots need.
const HOST_PACKAGES: &[&str] = &["mmdebstrap", "qemu-utils", "e2fsprogs"];

/// The image's packages besides the essential set, apt and the kernels.
const IMAGE_PACKAGES: &[&str] = &[
    "dbus",
    "dkms",
    "iproute2",
    "iputils-ping",
    "kmod",
    "logrotate",
    "procps",
    "systemd",
    "systemd-container",
    "systemd-sysv",
    "udev",
];

/// IMAGE_PACKAGES and the kernel and headers of each tested series of
/// Debian 12, the image's release.
fn image_packages() -> Vec<&'static str> {
    let kernels = SERIES
        .iter()
        .filter(|s| s.suite == Suite::Host)
        .flat_map(|s| [s.image, s.headers]);
    IMAGE_PACKAGES.iter().copied().chain(kernels).collect()
}

/// Where the second disk is mounted in the guest (read-only).
const GUEST_DISK: &str = "/srv/systest";

/// Runs the test unit after nfwatch.service and powers off when it ends.
const TEST_UNIT: &str = "[Unit]
Description=nfwatch system test
After=nfwatch.service multi-user.target
RequiresMountsFor=/srv/systest
ConditionPathExists=/srv/systest/run
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/srv/systest/run
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

const FSTAB: &str = "/dev/vda / ext4 rw,errors=remount-ro 0 1
/dev/vdb /srv/systest ext4 ro,nofail,x-systemd.device-timeout=60s 0 0
";

/// One boot may take this long before it is killed: the upgrade's DKMS
/// builds took 11 min under TCG on a loaded 2-core host.
const BOOT_DEADLINE: Duration = Duration::from_secs(20 * 60);

/// The boots of one kernel, in order, each a `guest-system --phase`.
const PHASES: &[&str] = &["first", "second"];

/// The version the upgrade packages carry: the snapshot of the next patch
/// release, newer than the installed snapshot.
fn upgrade_version() -> Result<String> {
    let mut parts: Vec<u64> = package::VERSION
        .split('.')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("version {} is not N.N.N", package::VERSION))?;
    if let Some(patch) = parts.last_mut() {
        *patch += 1;
    }
    let next: Vec<String> = parts.iter().map(u64::to_string).collect();
    package::snapshot_of(&next.join("."))
}

/// The kernel series whose second boot upgrades; the other's purges. DKMS
/// rebuilding or removing the module for both kernels under TCG takes
/// minutes, so each is done once.
const UPGRADE_SERIES: &str = "6.12";

/// What a boot's second disk carries besides its phase.
struct Payload<'a> {
    xtask: &'a Path,
    /// The installed packages' version.
    version: &'a str,
    /// Newer packages, of another protocol, to upgrade to in the second
    /// phase, and their version.
    upgrade: Option<(&'a package::Debs, &'a str)>,
}

/// `cargo xtask test --system` on the kernels `filter` selects; returns the
/// outcomes per guest kernel.
pub fn test(filter: Option<&str>) -> Result<Vec<(String, Vec<Outcome>)>> {
    let series: Vec<_> = SERIES
        .iter()
        .filter(|s| s.suite == Suite::Host && filter.is_none_or(|f| f == s.name))
        .collect();
    if series.is_empty() && SERIES.iter().any(|s| filter == Some(s.name)) {
        println!("the system test runs on Debian 12's kernels only");
        return Ok(Vec::new());
    }
    if series.is_empty() {
        bail!(
            "--kernel {} matches none of {}",
            filter.unwrap_or(""),
            kernels::series_names()
        );
    }
    deps::ensure_extra(&[HOST_PACKAGES, package::PACKAGES].concat())?;
    let started = Instant::now();
    let version = package::snapshot_version()?;
    let debs = package::build(
        &version,
        package::Protocol::Current,
        &util::target_dir().join("debian"),
    )?;
    println!("packages built in {:.0} s", started.elapsed().as_secs_f64());
    let upgrade_version = upgrade_version()?;
    let upgrade = package::build(
        &upgrade_version,
        package::Protocol::Skewed,
        &util::target_dir().join("system/upgrade"),
    )?;
    let image = Image::ensure(&debs)?;
    let xtask = built_xtask()?;
    let kernels = series
        .iter()
        .map(|series| Ok((image.kernel(series.name)?, series.name == UPGRADE_SERIES)))
        .collect::<Result<Vec<_>>>()?;
    // One host thread per guest (single-threaded TCG, 2 GiB each): the
    // kernels' boots run side by side.
    let results: Vec<(String, Vec<Outcome>)> = std::thread::scope(|scope| {
        let running: Vec<_> = kernels
            .iter()
            .map(|(kernel, upgrades)| {
                let payload = Payload {
                    xtask: &xtask,
                    version: &version,
                    upgrade: upgrades.then_some((&upgrade, upgrade_version.as_str())),
                };
                let image = &image;
                scope.spawn(move || test_kernel(image, kernel, &payload))
            })
            .collect();
        kernels
            .iter()
            .zip(running)
            .map(|((kernel, _), boots)| {
                let outcomes = boots.join().unwrap_or_else(|_| {
                    vec![failure(
                        "system boots",
                        anyhow::anyhow!("the boot runner thread panicked"),
                    )]
                });
                (kernel.version.clone(), outcomes)
            })
            .collect()
    });
    println!("system test took {:.0} s", started.elapsed().as_secs_f64());
    Ok(results)
}

/// The xtask binary the guest runs (a debug build for the host's Debian 12,
/// which is the guest's too).
fn built_xtask() -> Result<PathBuf> {
    run(crate::host::cargo().args(["build", "--package", "xtask"]))?;
    Ok(util::target_dir().join("debug/xtask"))
}

/// A kernel in the image: its version and boot files.
struct ImageKernel {
    version: String,
    vmlinuz: PathBuf,
    initrd: PathBuf,
}

/// The cached root file system image, with both packages installed.
struct Image {
    dir: PathBuf,
}

impl Image {
    fn raw(&self) -> PathBuf {
        self.dir.join("root.img")
    }

    /// The image for these packages, built unless a cached one matches
    /// every input (packages, configuration, the .debs' bytes).
    fn ensure(debs: &package::Debs) -> Result<Self> {
        let key = cache_key(debs)?;
        let dir = util::target_dir()
            .join("system")
            .join(format!("image-{key}"));
        let image = Self { dir };
        if image.raw().exists() {
            println!("image: {} (cached)", image.raw().display());
            return Ok(image);
        }
        let parent = util::target_dir().join("system");
        if parent.exists() {
            for entry in std::fs::read_dir(&parent)? {
                let path = entry?.path();
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("image-"))
                {
                    util::remove_dir(&path)?;
                }
            }
        }
        std::fs::create_dir_all(&image.dir)?;
        let started = Instant::now();
        image.build(debs)?;
        println!(
            "image built in {:.0} s: {}",
            started.elapsed().as_secs_f64(),
            image.raw().display()
        );
        Ok(image)
    }

    fn build(&self, debs: &package::Debs) -> Result<()> {
        step("build the Debian 12 image (mmdebstrap)");
        let rootfs = self.dir.join("rootfs");
        let cache = util::target_dir().join("system/apt-cache");
        std::fs::create_dir_all(&cache)?;
        let files = self.dir.join("files");
        std::fs::create_dir_all(&files)?;
        for (name, text) in [("nfwatch-systest.service", TEST_UNIT), ("fstab", FSTAB)] {
            std::fs::write(files.join(name), text)?;
        }
        let hooks = hooks(
            &cache.display().to_string(),
            &files.display().to_string(),
            debs,
        );
        util::remove_dir(&rootfs)?;
        run(Command::new("mmdebstrap")
            .args([
                "--variant=apt",
                "--skip=download/empty",
                "--skip=essential/unlink",
                "--aptopt=APT::Install-Recommends \"false\"",
            ])
            .arg(format!("--include={}", image_packages().join(",")))
            .args(&hooks)
            .arg("bookworm")
            .arg(&rootfs))?;
        for kernel in list_kernels(&rootfs.join("boot"))? {
            for file in [format!("vmlinuz-{kernel}"), format!("initrd.img-{kernel}")] {
                std::fs::copy(rootfs.join("boot").join(&file), self.dir.join(&file))
                    .with_context(|| format!("the image has no /boot/{file}"))?;
            }
        }
        step("make the ext4 disk image");
        run(Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "root", "-d"])
            .arg(&rootfs)
            .arg(self.raw().with_extension("tmp"))
            .arg("6G"))?;
        std::fs::rename(self.raw().with_extension("tmp"), self.raw())?;
        util::remove_dir(&rootfs)
    }

    /// The image's newest kernel of `series`.
    fn kernel(&self, series: &str) -> Result<ImageKernel> {
        let version = list_kernels(&self.dir)?
            .into_iter()
            .filter(|v| v.starts_with(&format!("{series}.")))
            .max_by_key(|v| crate::kernels::version_key(v))
            .with_context(|| format!("the image has no {series} kernel"))?;
        Ok(ImageKernel {
            vmlinuz: self.dir.join(format!("vmlinuz-{version}")),
            initrd: self.dir.join(format!("initrd.img-{version}")),
            version,
        })
    }
}

/// Kernel versions with a vmlinuz-VERSION in `dir`.
fn list_kernels(dir: &Path) -> Result<Vec<String>> {
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("vmlinuz-") {
            versions.push(version.to_string());
        }
    }
    Ok(versions)
}

/// mmdebstrap's hooks: the apt cache kept in `cache`, a small initramfs,
/// the packages installed with apt, the test's files from `files`.
fn hooks(cache: &str, files: &str, debs: &package::Debs) -> Vec<String> {
    let copy_in: Vec<String> = debs
        .both()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let in_chroot: Vec<String> = debs
        .both()
        .iter()
        .map(|d| {
            format!(
                "/tmp/{}",
                d.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    vec![
        format!("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives && cp -a {cache}/. \"$1\"/var/cache/apt/archives/"),
        // A small initramfs with just what finds the root disk: made
        // faster in the chroot and unpacked faster under TCG.
        "--setup-hook=mkdir -p \"$1\"/etc/initramfs-tools/conf.d \"$1\"/usr/share/initramfs-tools/modules.d".into(),
        "--setup-hook=echo MODULES=list > \"$1\"/etc/initramfs-tools/conf.d/systest".into(),
        "--setup-hook=printf 'virtio_pci\\nvirtio_blk\\next4\\n' > \"$1\"/usr/share/initramfs-tools/modules.d/systest".into(),
        // Keep what was downloaded for the next image before anything else can fail.
        format!("--customize-hook=cp -a \"$1\"/var/cache/apt/archives/. {cache}/"),
        format!("--customize-hook=cp {} \"$1\"/tmp/", copy_in.join(" ")),
        // As a user's apt would, with Recommends; openssl, which signing
        // needs, is not in the image: the packages must bring it.
        format!(
            "--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -o APT::Install-Recommends=true {}",
            in_chroot.join(" ")
        ),
        "--customize-hook=rm -f \"$1\"/tmp/*.deb \"$1\"/var/cache/apt/archives/*.deb".into(),
        format!("--customize-hook=cp {files}/fstab \"$1\"/etc/fstab"),
        format!("--customize-hook=cp {files}/nfwatch-systest.service \"$1\"/etc/systemd/system/"),
        format!("--customize-hook=mkdir -p \"$1\"{GUEST_DISK}"),
        "--customize-hook=echo nfwatch-systest > \"$1\"/etc/hostname".into(),
        "--customize-hook=chroot \"$1\" systemctl enable nfwatch-systest.service".into(),
        // Timers that would only compete with the test for the CPU.
        "--customize-hook=chroot \"$1\" systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer".into(),
    ]
}

/// A digest of everything the image is made from: packages, hooks, the
/// test's files and the .debs' bytes.
fn cache_key(debs: &package::Debs) -> Result<String> {
    let manifest = format!(
        "{:?}\n{:?}\n{TEST_UNIT}\n{FSTAB}\n{}",
        image_packages(),
        hooks("CACHE", "FILES", debs),
        stdout_of(Command::new("sha256sum").args(debs.both()))?
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let dir = util::target_dir().join("system");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("manifest");
    std::fs::write(&path, manifest)?;
    let digest = stdout_of(Command::new("sha256sum").arg(&path))?;
    Ok(digest.chars().take(16).collect())
}

/// Both boots of one kernel on one copy-on-write overlay of the image.
fn test_kernel(image: &Image, kernel: &ImageKernel, payload: &Payload) -> Vec<Outcome> {
    step(&format!(
        "system test on {} (QEMU TCG, systemd)",
        kernel.version
    ));
    let dir = util::target_dir().join("system").join(&kernel.version);
    let mut outcomes = Vec::new();
    let prepared = (|| {
        util::remove_dir(&dir)?;
        std::fs::create_dir_all(&dir)?;
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(image.raw())
            .arg(dir.join("overlay.qcow2")))
    })();
    if let Err(e) = prepared {
        return vec![failure("system image", e)];
    }
    for phase in PHASES {
        let started = Instant::now();
        match boot(kernel, payload, &dir, phase) {
            Ok(mut got) => {
                let complete = got.iter().any(|o| o.name == format!("{phase} done"));
                got.retain(|o| o.name != format!("{phase} done"));
                outcomes.append(&mut got);
                if !complete {
                    outcomes.push(failure(
                        &format!("{phase} boot"),
                        anyhow::anyhow!(
                            "the guest did not finish (console: {})",
                            dir.join(format!("{phase}.console")).display()
                        ),
                    ));
                    break;
                }
            }
            Err(e) => {
                outcomes.push(failure(&format!("{phase} boot"), e));
                break;
            }
        }
        println!("{phase} boot took {:.0} s", started.elapsed().as_secs_f64());
    }
    outcomes
}

fn failure(name: &str, error: anyhow::Error) -> Outcome {
    Outcome {
        name: name.into(),
        passed: false,
        detail: format!("{error:#}"),
        seconds: 0.0,
    }
}

/// One boot running `guest-system --phase PHASE`; its outcomes.
fn boot(kernel: &ImageKernel, payload: &Payload, dir: &Path, phase: &str) -> Result<Vec<Outcome>> {
    let disk = dir.join("disk");
    util::remove_dir(&disk)?;
    std::fs::create_dir_all(&disk)?;
    std::fs::copy(payload.xtask, disk.join("xtask"))?;
    let mut command = format!(
        "exec {GUEST_DISK}/xtask guest-system --phase {phase} --results /dev/ttyS1 --version {}",
        payload.version
    );
    if let Some((upgrade, upgrade_version)) = payload.upgrade {
        std::fs::create_dir_all(disk.join("upgrade"))?;
        for deb in upgrade.both() {
            std::fs::copy(
                deb,
                disk.join("upgrade")
                    .join(deb.file_name().unwrap_or_default()),
            )?;
        }
        command += &format!(" --upgrade {GUEST_DISK}/upgrade --upgrade-version {upgrade_version}");
    }
    std::fs::write(disk.join("run"), format!("#!/bin/sh\n{command}\n"))?;
    run(Command::new("chmod").arg("+x").arg(disk.join("run")))?;
    let disk_image = dir.join("disk.img");
    let _ = std::fs::remove_file(&disk_image);
    run(Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", "systest", "-d"])
        .arg(&disk)
        .arg(&disk_image)
        .arg("256M"))?;
    let console = dir.join(format!("{phase}.console"));
    let results = dir.join(format!("{phase}.results"));
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-machine",
        "q35",
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
    ])
    .args([
        "-smp",
        "2",
        "-m",
        "2G",
        "-display",
        "none",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(&kernel.initrd)
    .args([
        "-append",
        "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=1",
    ])
    .arg("-drive")
    .arg(format!(
        "file={},if=virtio,format=qcow2",
        dir.join("overlay.qcow2").display()
    ))
    .arg("-drive")
    .arg(format!(
        "file={},if=virtio,format=raw",
        disk_image.display()
    ))
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-serial")
    .arg(format!("file:{}", results.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    println!(
        "booting {} ({phase}); console: {}",
        kernel.version,
        console.display()
    );
    let mut child = qemu
        .spawn()
        .with_context(|| format!("cannot run `{}`", util::describe(&qemu)))?;
    let waited = util::wait_until("the guest to power off", BOOT_DEADLINE, || {
        Ok(child.try_wait()?)
    });
    if waited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut outcomes = read_outcomes(&results);
    if let Err(e) = waited {
        outcomes.push(failure(&format!("{phase} boot"), e));
    }
    Ok(outcomes)
}

/// The JSON outcome lines the guest wrote (a serial port may add `\r`).
fn read_outcomes(path: &Path) -> Vec<Outcome> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str(line.trim()).ok())
        .collect()
}
