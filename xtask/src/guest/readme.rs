//! The `readme` scenario: README.md's install-from-source, quick-start and
//! recipe commands, run as printed, in order, by bash in a copy of the source
//! tree, while this host sends from the addresses they watch; then the files
//! they wrote are checked. The README marks each such block with a
//! `<!-- tested: NAME ... -->` line before it.
//!
//! Three things are provided rather than run: `cargo` lines are run by the
//! host before the VM boots (`cargo xtask test` runs them in the workspace:
//! building Rust under TCG would take an hour), so the tree holds their
//! `target/release/nfwatch`; `make` lines are run by the host too, in a
//! copy of kmod/ and include/ per guest kernel with `KDIR` naming that
//! kernel's build tree (what they find as /lib/modules/$(uname -r)/build in
//! the guest; under TCG the build took minutes), so the guest's
//! `insmod kmod/nfwatch.ko` loads what they built; and as the guest is root
//! and has no sudo, a `sudo` that runs its arguments is first on PATH.
//! /usr/local/bin (where the README installs to) is a tmpfs for the
//! scenario.

use super::{module_loaded, rmmod, Ctx};
use crate::util::{self, capture, run, stdout_of};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const MARKER: &str = "<!-- tested: ";
/// The addresses the README's commands watch, given to lo for the scenario.
const SOURCES: [&str; 2] = ["192.0.2.10", "2001:db8::10"];
/// Their prefixes on lo.
const SOURCE_PREFIXES: [&str; 2] = ["192.0.2.10/32", "2001:db8::10/128"];
/// How often each source sends a datagram (to itself) while the commands run.
const SEND_EVERY: Duration = Duration::from_millis(20);
/// One command's deadline.
const LINE_DEADLINE: Duration = Duration::from_secs(10 * 60);
const INSTALL_DIR: &str = "/usr/local/bin";

/// The lines of README.md's tested blocks, in order, with continuation
/// lines joined.
pub fn tested_lines(readme: &str) -> Vec<String> {
    tested_blocks(readme)
        .into_iter()
        .flat_map(|(_, lines)| lines)
        .collect()
}

/// README.md's tested blocks, each as the NAME of its
/// `<!-- tested: NAME ... -->` marker and its lines, continuation lines
/// joined (the man pages' examples are the `quick-start` and `recipes`
/// blocks).
pub fn tested_blocks(readme: &str) -> Vec<(String, Vec<String>)> {
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    let mut state = None::<bool>; // Some(in the block's fence)
    for line in readme.lines() {
        match state {
            None if line.starts_with(MARKER) => {
                let name = line[MARKER.len()..].split_whitespace().next();
                blocks.push((name.unwrap_or_default().to_string(), Vec::new()));
                state = Some(false);
            }
            Some(false) if line.starts_with("```") => state = Some(true),
            Some(true) if line.starts_with("```") => state = None,
            Some(true) => {
                let Some((_, lines)) = blocks.last_mut() else {
                    continue;
                };
                match lines.last_mut() {
                    Some(last) if is_continued(last) => {
                        last.pop();
                        last.push_str(line.trim_start());
                    }
                    _ => lines.push(line.to_string()),
                }
            }
            _ => {}
        }
    }
    blocks
}

fn is_continued(line: &str) -> bool {
    line.ends_with('\\')
}

fn is_cargo(line: &str) -> bool {
    line.starts_with("cargo ")
}

fn is_make(line: &str) -> bool {
    line.starts_with("make ")
}

/// Where the host builds the README's module for kernel `release`.
fn module_tree(release: &str) -> PathBuf {
    util::target_dir().join("readme").join(release)
}

fn readme() -> Result<String> {
    let path = util::workspace_root().join("README.md");
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// On the host, before the VM: the tested blocks' `cargo` lines, run by
/// bash in the workspace.
pub fn run_cargo_lines() -> Result<()> {
    for line in tested_lines(&readme()?).iter().filter(|l| is_cargo(l)) {
        util::step(&format!("README: {line}"));
        run(Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", line])
            .current_dir(util::workspace_root()))?;
    }
    Ok(())
}

/// On the host, before the VM: the tested blocks' `make` lines, run by
/// bash in a fresh copy of kmod/ and include/ for `kernel`.
pub fn run_make_lines(kernel: &crate::kernels::Kernel) -> Result<()> {
    let tree = module_tree(&kernel.version);
    util::remove_dir(&tree)?;
    let root = util::workspace_root();
    for dir in ["kmod", "include"] {
        util::copy_dir(&root.join(dir), &tree.join(dir))?;
    }
    for line in tested_lines(&readme()?).iter().filter(|l| is_make(l)) {
        util::step(&format!("README for {}: {line}", kernel.version));
        run(Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", line])
            .env("KDIR", &kernel.build_dir)
            .current_dir(&tree))?;
    }
    Ok(())
}

/// Sends a datagram from each source to itself every SEND_EVERY until dropped.
struct Sender {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Result<u64>>>,
}

impl Sender {
    fn start() -> Result<Self> {
        let sockets = SOURCES
            .iter()
            .map(|src| {
                let addr = SocketAddr::new(src.parse::<IpAddr>()?, 0);
                let socket =
                    UdpSocket::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
                let to = SocketAddr::new(addr.ip(), 9);
                Ok((socket, to))
            })
            .collect::<Result<Vec<_>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut sent = 0;
            while !stopped.load(Ordering::Relaxed) {
                for (socket, to) in &sockets {
                    socket
                        .send_to(b"readme", to)
                        .with_context(|| format!("send to {to}"))?;
                    sent += 1;
                }
                thread::sleep(SEND_EVERY);
            }
            Ok(sent)
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(sent)) => sent,
            _ => bail!("the sender thread panicked"),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The scratch tree: the module as the host built it for this kernel, the
/// host's release build, and a `sudo` for root.
fn scratch_tree(ctx: &Ctx) -> Result<(PathBuf, PathBuf)> {
    let tree = ctx.path("tree");
    util::remove_dir(&tree)?;
    let kernel = stdout_of(Command::new("uname").arg("-r"))?;
    let module_built = module_tree(kernel.trim());
    for dir in ["kmod", "include"] {
        util::copy_dir(&module_built.join(dir), &tree.join(dir)).with_context(|| {
            format!(
                "{} is missing: the host runs the README's make lines",
                module_built.display()
            )
        })?;
    }
    let release = tree.join("target/release");
    std::fs::create_dir_all(&release)?;
    let built = util::target_dir().join("release/nfwatch");
    std::fs::copy(&built, release.join("nfwatch")).with_context(|| {
        format!(
            "{} is missing: the host runs the README's cargo lines",
            built.display()
        )
    })?;
    let bin = ctx.path("bin");
    std::fs::create_dir_all(&bin)?;
    let sudo = bin.join("sudo");
    std::fs::write(&sudo, "#!/bin/sh\nexec \"$@\"\n")?;
    run(Command::new("chmod").arg("755").arg(&sudo))?;
    Ok((tree, bin))
}

fn ip(args: &str) -> Result<()> {
    run(Command::new("ip").args(args.split_whitespace()))
}

/// What a README line printed.
#[derive(Default)]
struct Printed {
    stdout: String,
    stderr: String,
}

/// Runs one README line; its output goes to the scenario's directory.
fn run_line(ctx: &Ctx, tree: &Path, path: &str, index: usize, line: &str) -> Result<Printed> {
    let mut cmd = Command::new("timeout");
    cmd.arg(LINE_DEADLINE.as_secs().to_string())
        .args(["bash", "-e", "-o", "pipefail", "-c", line])
        .current_dir(tree)
        .env("PATH", path);
    let out = capture(&mut cmd)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::write(ctx.path(&format!("line{index}.out")), &stdout)?;
    std::fs::write(ctx.path(&format!("line{index}.err")), &stderr)?;
    ctx.log(&format!("$ {line}\n{}{stderr}", truncate(&stdout)));
    ensure!(
        out.status.success(),
        "`{line}` failed ({}): {}",
        out.status,
        stderr.trim()
    );
    Ok(Printed { stdout, stderr })
}

fn truncate(text: &str) -> String {
    text.lines().take(10).map(|l| format!("{l}\n")).collect()
}

pub fn readme_commands(ctx: &Ctx) -> Result<()> {
    let lines = tested_lines(&readme()?);
    ensure!(
        lines.len() >= 8,
        "README.md's tested blocks hold {} lines",
        lines.len()
    );
    let (tree, bin) = scratch_tree(ctx)?;
    if module_loaded() {
        rmmod()?; // the README loads its own build
    }
    run(Command::new("mount").args(["-t", "tmpfs", "tmpfs", INSTALL_DIR]))?;
    for prefix in SOURCE_PREFIXES {
        ip(&format!("addr add {prefix} dev lo"))?;
    }
    let result = run_all(ctx, &tree, &bin, &lines);
    for prefix in SOURCE_PREFIXES {
        let _ = ip(&format!("addr del {prefix} dev lo"));
    }
    let _ = run(Command::new("umount").arg(INSTALL_DIR));
    if module_loaded() {
        rmmod()?;
    }
    result
}

fn run_all(ctx: &Ctx, tree: &Path, bin: &Path, lines: &[String]) -> Result<()> {
    let path = format!(
        "{}:{INSTALL_DIR}:/usr/sbin:/usr/bin:/sbin:/bin",
        bin.display()
    );
    let sender = Sender::start()?;
    let mut outputs = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if is_cargo(line) || is_make(line) {
            ctx.log(&format!("$ {line}\n(run by the host)"));
            outputs.push(Printed::default());
            continue;
        }
        outputs.push(run_line(ctx, tree, &path, index, line)?);
    }
    ctx.log(&format!("{} datagrams sent", sender.stop()?));
    check_outputs(tree, lines, &outputs)
}

/// What the README's lines wrote, checked against what was sent.
fn check_outputs(tree: &Path, lines: &[String], outputs: &[Printed]) -> Result<()> {
    let installed = Path::new(INSTALL_DIR).join("nfwatch");
    ensure!(
        installed.exists(),
        "{} was not installed",
        installed.display()
    );
    let watched: BTreeSet<&str> = SOURCES.into_iter().collect();
    let jsonl = records(&tree.join("sends.jsonl"))?;
    ensure!(!jsonl.is_empty(), "sends.jsonl is empty");
    let families: BTreeSet<&str> = jsonl.iter().filter_map(|r| r["family"].as_str()).collect();
    ensure!(families.len() == 2, "sends.jsonl has families {families:?}");
    let summary = &output_of(lines, outputs, "-o sends.jsonl")?.stderr;
    let wrote = format!("wrote {} records to sends.jsonl", jsonl.len());
    ensure!(
        summary.contains(&wrote),
        "the summary does not say {wrote:?}: {summary}"
    );
    for record in &jsonl {
        let src = record["src"].as_str().unwrap_or_default();
        ensure!(watched.contains(src), "sends.jsonl has a record from {src}");
    }
    // jq's table of the file: one row per record.
    let table = &output_of(lines, outputs, "jq -r")?.stdout;
    ensure!(
        table.lines().count() == jsonl.len(),
        "jq printed {} rows for {} records",
        table.lines().count(),
        jsonl.len()
    );
    // `--count 5 | jq -c '{...}'`: five objects.
    let piped = &output_of(lines, outputs, "--count 5 |")?.stdout;
    let objects: Vec<serde_json::Value> = piped
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("the piped jq output is not JSON lines")?;
    ensure!(
        objects.len() == 5,
        "{} objects through the pipe",
        objects.len()
    );
    let head = &output_of(lines, outputs, "| head -3")?.stdout;
    ensure!(
        head.lines().count() == 3 && head.lines().all(|l| l.contains(SOURCES[0])),
        "`| head -3` printed {head:?}"
    );
    let csv = std::fs::read_to_string(tree.join("sends.csv")).context("sends.csv")?;
    let mut rows = csv.lines();
    ensure!(
        rows.next().is_some_and(|h| h.starts_with("ts,")),
        "sends.csv has no header"
    );
    let rows: Vec<&str> = rows.collect();
    ensure!(!rows.is_empty(), "sends.csv has no rows");
    ensure!(
        rows.iter().all(|r| r.split(',').nth(3) == Some(SOURCES[0])),
        "sends.csv has rows from another source"
    );
    let log = std::fs::read_to_string(tree.join("sends.log")).context("sends.log")?;
    ensure!(
        log.lines().count() > 0 && log.lines().all(|l| l.contains(SOURCES[0])),
        "sends.log is empty or has other sources"
    );
    let flows = records(&tree.join("flows.jsonl"))?;
    let packets: u64 = flows.iter().filter_map(|f| f["packets"].as_u64()).sum();
    ensure!(
        !flows.is_empty()
            && flows.iter().all(|f| f["src"].as_str() == Some(SOURCES[0]))
            && packets >= flows.len() as u64,
        "flows.jsonl: {} flows of {packets} packets, or from another source",
        flows.len()
    );
    let summary = &output_of(lines, outputs, "-o flows.jsonl")?.stderr;
    let wrote = format!(
        "wrote {} flows ({packets} packets) to flows.jsonl",
        flows.len()
    );
    ensure!(
        summary.contains(&wrote),
        "the summary does not say {wrote:?}: {summary}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&output_of(lines, outputs, "stats --json")?.stdout)
            .context("stats --json")?;
    ensure!(stats.is_object(), "stats --json printed {stats}");
    Ok(())
}

/// What the one line containing `needle` printed.
fn output_of<'a>(lines: &[String], outputs: &'a [Printed], needle: &str) -> Result<&'a Printed> {
    let mut found = lines
        .iter()
        .zip(outputs)
        .filter(|(l, _)| l.contains(needle));
    match (found.next(), found.next()) {
        (Some((_, out)), None) => Ok(out),
        _ => bail!("README.md's tested blocks need exactly one line with {needle:?}"),
    }
}

fn records(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad line {l:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tested_blocks_are_read_in_order() {
        let text =
            "intro\n```sh\nnot tested\n```\n<!-- tested: a -->\n```sh\none \\\n  two\nthree\n```\n\
                    between\n<!-- tested: b -->\n\n```sh\nfour\n```\n";
        assert_eq!(tested_lines(text), ["one two", "three", "four"]);
        let names: Vec<String> = tested_blocks(text).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn the_readme_has_its_tested_blocks() {
        let lines = tested_lines(&readme().unwrap());
        assert!(lines.iter().any(|l| is_cargo(l)), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("sends.jsonl")), "{lines:?}");
    }
}
