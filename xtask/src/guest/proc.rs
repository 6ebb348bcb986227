//! A child process whose output lines are collected (and logged), killed on
//! drop so a failing scenario leaves nothing running.

use crate::util::{describe, wait_until};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub struct Spawned {
    what: String,
    child: Child,
    /// stdout and stderr lines, in arrival order.
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn collect(
    from: impl Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<std::fs::File>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if let Ok(mut log) = log.lock() {
                let _ = writeln!(log, "{line}");
            }
            if let Ok(mut lines) = lines.lock() {
                lines.push(line);
            }
        }
    })
}

impl Spawned {
    /// Starts `cmd`, appending its output to `log`.
    pub fn start(cmd: &mut Command, log: &Path) -> Result<Self> {
        let what = describe(cmd);
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let file = Arc::new(Mutex::new(file));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{what}`"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, lines.clone(), file.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(err, lines.clone(), file));
        }
        Ok(Self {
            what,
            child,
            lines,
            readers,
            status: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The first output line for which `wanted` holds; fails if the process
    /// exits first or `deadline` passes.
    pub fn wait_line(
        &mut self,
        what: &str,
        deadline: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let found = wait_until(what, deadline, || {
            if let Some(line) = self.lines().into_iter().find(|l| wanted(l)) {
                return Ok(Some(Ok(line)));
            }
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(Err(status)));
            }
            Ok(None)
        });
        match found {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(status)) => {
                self.status = Some(status);
                self.join_readers();
                bail!(
                    "`{}` exited ({status}) before {what}; output:\n{}",
                    self.what,
                    self.lines().join("\n")
                )
            }
            Err(e) => bail!(
                "{e}; `{}` output so far:\n{}",
                self.what,
                self.lines().join("\n")
            ),
        }
    }

    pub fn signal(&self, signal: i32) -> Result<()> {
        if self.status.is_some() {
            bail!("`{}` already exited", self.what);
        }
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        if unsafe { libc::kill(self.pid(), signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot signal `{}`", self.what));
        }
        Ok(())
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// Waits for the process to exit by itself and for all its output.
    pub fn wait_exit(&mut self, deadline: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let what = format!("`{}` to exit", self.what);
        let status = wait_until(&what, deadline, || Ok(self.child.try_wait()?))?;
        self.status = Some(status);
        self.join_readers();
        Ok(status)
    }

    /// Like `wait_exit`, and fails unless the exit status is 0.
    pub fn wait_success(&mut self, deadline: Duration) -> Result<()> {
        let status = self.wait_exit(deadline)?;
        if !status.success() {
            bail!(
                "`{}` failed ({status}); output:\n{}",
                self.what,
                self.lines().join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
