//! Small helpers shared by the host and guest sides.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

/// How often `wait_until` re-checks its condition.
const POLL: Duration = Duration::from_millis(50);

/// The workspace root (the parent of xtask/).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Wall time per phase of a run, printed at its end.
pub struct PhaseClock {
    started: Instant,
    last: Instant,
    phases: Vec<(String, Duration)>,
}

impl PhaseClock {
    pub fn start() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
            phases: Vec::new(),
        }
    }

    /// Ends the phase `name`, which began where the previous one ended.
    pub fn phase(&mut self, name: &str) {
        let now = Instant::now();
        self.phases.push((name.to_string(), now - self.last));
        self.last = now;
    }

    pub fn print(&self) {
        for (name, took) in &self.phases {
            println!("time: {name}: {:.0} s", took.as_secs_f64());
        }
        println!(
            "time: total: {:.0} s ({:.1} min)",
            self.started.elapsed().as_secs_f64(),
            self.started.elapsed().as_secs_f64() / 60.0
        );
    }
}

/// Prints the start of a step.
pub fn step(what: &str) {
    println!("==> {what}");
}

/// Polls `check` until it yields a value; fails after `deadline`.
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if start.elapsed() > deadline {
            bail!(
                "timed out after {} s waiting for {what}",
                deadline.as_secs()
            );
        }
        thread::sleep(POLL);
    }
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// Runs a command capturing its output, whatever its exit status.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    let what = describe(cmd);
    cmd.output().with_context(|| format!("cannot run `{what}`"))
}

/// Runs a command and returns its stdout; fails (showing stderr) unless it exits 0.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Removes a directory tree if it exists.
pub fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
