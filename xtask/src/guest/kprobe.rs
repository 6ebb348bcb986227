//! A kprobe through tracefs: an observer of the module from outside it.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::process::Command;

const TRACING: &str = "/sys/kernel/tracing";

pub struct Kprobe {
    name: &'static str,
}

fn append(file: &str, line: &str) -> Result<()> {
    let path = Path::new(TRACING).join(file);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("`{line}` >> {}", path.display()))
}

impl Kprobe {
    /// `p:name spec`, enabled, with an empty trace buffer.
    pub fn attach(name: &'static str, spec: &str) -> Result<Self> {
        let tracing = Path::new(TRACING);
        if !tracing.join("kprobe_events").exists() {
            crate::util::run(
                Command::new("mount")
                    .args(["-t", "tracefs", "nodev"])
                    .arg(tracing),
            )?;
        }
        append("kprobe_events", &format!("p:{name} {spec}"))?;
        let probe = Self { name };
        std::fs::write(tracing.join("trace"), "").context("cannot clear the trace buffer")?;
        std::fs::write(probe.enable_path(), "1")
            .with_context(|| format!("cannot enable the kprobe {spec}"))?;
        Ok(probe)
    }

    fn enable_path(&self) -> std::path::PathBuf {
        Path::new(TRACING).join(format!("events/kprobes/{}/enable", self.name))
    }

    /// Times the probe fired.
    pub fn hits(&self) -> Result<u64> {
        let profile = std::fs::read_to_string(Path::new(TRACING).join("kprobe_profile"))?;
        profile
            .lines()
            .find_map(|l| {
                let mut fields = l.split_whitespace();
                (fields.next() == Some(self.name)).then(|| fields.next()?.parse().ok())?
            })
            .with_context(|| format!("no {} line in kprobe_profile:\n{profile}", self.name))
    }

    /// The value of fetch argument `arg` in each event in the trace buffer.
    pub fn values(&self, arg: &str) -> Result<Vec<String>> {
        let trace = std::fs::read_to_string(Path::new(TRACING).join("trace"))?;
        let key = format!("{arg}=");
        Ok(trace
            .lines()
            .filter(|l| l.contains(&format!(" {}: ", self.name)))
            .filter_map(|l| {
                let at = l.find(&key)? + key.len();
                l[at..].split_whitespace().next().map(str::to_string)
            })
            .collect())
    }
}

impl Drop for Kprobe {
    fn drop(&mut self) {
        let _ = std::fs::write(self.enable_path(), "0");
        let _ = append("kprobe_events", &format!("-:{}", self.name));
    }
}
