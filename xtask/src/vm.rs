//! Boots a kernel under QEMU (TCG, through virtme-ng) running one command in
//! the guest, with a hard deadline.

use crate::kernels::Kernel;
use crate::util::{self, describe};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Guest PATH: the guest runs commands as root from the host's filesystem.
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The emulated machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// 2 vCPUs taking turns on one host thread (`-accel tcg,thread=single`):
    /// the tests and the demo. Under multi-threaded TCG a vCPU can go on
    /// running kernel text the other vCPU has just patched, and a static key
    /// flipped under traffic (as Netfilter's are when the first hook at a
    /// point comes or the last goes) killed guests with "Oops: int3" at the
    /// patched site.
    Smp2,
    /// 2 vCPUs on multi-threaded TCG: guest time is the host's time (the
    /// benchmark's default).
    Smp2Parallel,
    /// 1 vCPU with `-icount shift=0,sleep=off`: every guest instruction
    /// takes 1 ns of guest time and idle time is skipped, so what the guest
    /// times counts instructions, however fast or busy the host is.
    Icount,
}

impl Machine {
    pub fn cpus(self) -> u32 {
        match self {
            Machine::Smp2 | Machine::Smp2Parallel => 2,
            Machine::Icount => 1,
        }
    }
}

pub struct Boot<'a> {
    pub kernel: &'a Kernel,
    /// The virtme-ng venv's bin directory.
    pub vng_bin: &'a Path,
    /// Program and arguments to run in the guest (absolute paths).
    pub argv: Vec<String>,
    /// Where the console output is saved (all but the kernel's is also printed).
    pub log: PathBuf,
    pub deadline: Duration,
    pub machine: Machine,
    /// A QEMU TCG plugin and its arguments (`path,name=value,...`).
    pub plugin: Option<String>,
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// A line of the guest kernel's console ("[   12.345678] ..."), as
/// opposed to the guest command's output.
fn is_kernel_line(line: &str) -> bool {
    line.trim_start_matches(|c: char| !c.is_ascii_graphic())
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .is_some_and(|(stamp, _)| {
            let stamp = stamp.trim();
            !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
}

/// Copies each line of `from` to the shared log, and to stdout unless it
/// is the kernel's (those stay in the log, for when a guest dies).
/// Each printed line starts with `label`, which tells VMs that run at the
/// same time apart.
fn tee(
    from: impl Read + Send + 'static,
    log: Arc<Mutex<std::fs::File>>,
    label: String,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if !is_kernel_line(&line) {
                println!("  {label} | {line}");
            }
            if let Ok(mut file) = log.lock() {
                let _ = writeln!(file, "{line}");
            }
        }
    })
}

/// virtme-ng's `--qemu-opts` for `machine`, with `plugin` loaded.
fn qemu_opts(machine: Machine, plugin: Option<&str>) -> Option<String> {
    let opts: Vec<String> = [
        match machine {
            Machine::Icount => Some("-icount shift=0,sleep=off".to_string()),
            Machine::Smp2 => Some("-accel tcg,thread=single".to_string()),
            Machine::Smp2Parallel => None,
        },
        plugin.map(|plugin| format!("-plugin {plugin}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!opts.is_empty()).then(|| format!("--qemu-opts={}", opts.join(" ")))
}

/// Boots the VM and returns the guest command's exit status; the VM (the
/// whole process group) is killed when the deadline passes.
pub fn boot(boot: &Boot) -> Result<ExitStatus> {
    let vm_dir = util::target_dir().join("vm");
    std::fs::create_dir_all(&vm_dir)?;
    let script = format!(
        "export PATH={GUEST_PATH}; exec {}",
        boot.argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let path = format!(
        "{}:{}",
        boot.vng_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(boot.vng_bin.join("vng"));
    cmd.env("PATH", path)
        .arg("--run")
        .arg(&boot.kernel.vmlinuz)
        .args([
            "--disable-kvm",
            "--force-9p",
            // The kernel's console into the log: a guest that dies leaves
            // its last words there.
            "--verbose",
            "--memory",
            "2G",
            "--cpus",
        ])
        .arg(boot.machine.cpus().to_string())
        .arg(format!("--rwdir={}", vm_dir.display()))
        .args(qemu_opts(boot.machine, boot.plugin.as_deref()))
        .arg("--")
        .arg(&script)
        .current_dir(util::workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let log = std::fs::File::create(&boot.log)
        .with_context(|| format!("cannot create {}", boot.log.display()))?;
    let log = Arc::new(Mutex::new(log));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run `{}`", describe(&cmd)))?;
    let readers = [
        child
            .stdout
            .take()
            .map(|s| tee(s, log.clone(), boot.kernel.series.to_string())),
        child
            .stderr
            .take()
            .map(|s| tee(s, log.clone(), boot.kernel.series.to_string())),
    ];
    let waited = util::wait_until("the VM to finish", boot.deadline, || Ok(child.try_wait()?));
    if waited.is_err() {
        // SAFETY: kill(2) on the process group we created; no memory involved.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
    }
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    match waited {
        Ok(status) => Ok(status),
        Err(e) => bail!("{e}: killed the VM (console: {})", boot.log.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::is_kernel_line;

    #[test]
    fn kernel_lines_are_told_apart() {
        assert!(is_kernel_line("[    1.234567] Linux version 6.1.0"));
        assert!(is_kernel_line("\r[12345.000001] nfwatch: loaded"));
        assert!(!is_kernel_line("[churn] victim: nfwatch watch 10.10.0.1"));
        assert!(!is_kernel_line("== churn: PASS"));
        assert!(!is_kernel_line("[] x"));
    }
}
