//! The guest side: runs inside the VM as root.

pub mod attribution;
pub mod bench;
mod cli_output;
mod flows;
pub mod fuzz;
pub mod generator;
mod genl;
pub mod ipfix;
mod ipsec;
pub mod isolation;
mod kprobe;
mod net;
mod nfqueue;
mod nfwatch;
mod pcap;
mod proc;
pub mod readme;
mod reliability;
mod routing;
mod scenarios;
pub mod system;
mod traffic;

pub use bench::BenchArgs;
pub use generator::GenArgs;

use crate::results::{Outcome, Results};
use crate::util::{run, stdout_of};
use anyhow::{bail, Context, Result};
use proc::Spawned;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

#[derive(clap::Args)]
pub struct GuestArgs {
    /// The nfwatch.ko to insmod: the shipped build.
    #[arg(long)]
    module: PathBuf,
    /// The build with the self-tests (make SELFTEST=1), loaded once with
    /// selftest=1 and unloaded before the scenarios.
    #[arg(long)]
    selftest_module: Option<PathBuf>,
    /// The nfwatch CLI.
    #[arg(long)]
    nfwatch: PathBuf,
    /// A module declaring another protocol version (kmod/version.h).
    #[arg(long)]
    skew_module: Option<PathBuf>,
    /// Where logs, artifacts and results.json go.
    #[arg(long)]
    out: PathBuf,
    /// Only these scenarios (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
    /// Requests the fuzz_netlink scenario sends.
    #[arg(long, default_value_t = fuzz::TEST_REQUESTS)]
    fuzz_requests: u64,
    /// The fuzzer's seed (default: from the clock, printed).
    #[arg(long)]
    fuzz_seed: Option<u64>,
    /// Multiply the reliability scenarios' deadlines (slow debug kernels).
    #[arg(long, default_value_t = 1)]
    slow: u32,
    /// The reliability scenarios' full counts.
    #[arg(long)]
    full: bool,
    /// Fail unless the kernel has kmemleak (the debug kernel).
    #[arg(long)]
    kmemleak: bool,
}

#[derive(clap::Args)]
pub struct PeerArgs {
    /// Address to accept TCP connections on (repeatable).
    #[arg(long)]
    tcp: Vec<SocketAddr>,
}

/// Kernel log words that fail a run.
const DMESG_PROBLEMS: &[&str] = &[
    "BUG",
    "WARNING",
    "Oops",
    "leak",
    "possible circular locking",
    "suspicious RCU usage",
];

/// What every scenario can use.
pub struct Guest {
    pub nfwatch: PathBuf,
    pub module: PathBuf,
    pub skew_module: Option<PathBuf>,
    pub out: PathBuf,
    pub ifindex: u32,
    pub fuzz: fuzz::Settings,
    /// Deadline multiplier (1, or more on a debug kernel).
    pub slow: u32,
    /// The reliability scenarios' full counts (see reliability.rs).
    pub full: bool,
}

/// One scenario's context: its directory and log.
pub struct Ctx<'a> {
    pub guest: &'a Guest,
    pub name: &'static str,
    dir: PathBuf,
    log: Mutex<std::fs::File>,
}

impl Ctx<'_> {
    /// A file in this scenario's directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn log(&self, msg: &str) {
        println!("[{}] {msg}", self.name);
        if let Ok(mut log) = self.log.lock() {
            let _ = writeln!(log, "{msg}");
        }
    }
}

/// setpriv's words that run a program as uid and gid 65534 without any capability.
pub const AS_NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
];

/// `program` run as uid and gid 65534 without any capability.
pub fn as_nobody(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(AS_NOBODY[0]);
    cmd.args(&AS_NOBODY[1..]).arg(program);
    cmd
}

pub(super) fn module_loaded() -> bool {
    Path::new("/sys/module/nfwatch").exists()
}

pub fn insmod(module: &Path) -> Result<()> {
    run(Command::new("insmod").arg(module))
}

/// Loads the module after its self-tests (kmod/selftest/), which make the
/// load fail if one fails.
fn insmod_selftest(module: &Path) -> Result<()> {
    run(Command::new("insmod").arg(module).arg("selftest=1"))
        .context("loading the module with selftest=1")
}

/// Unloads the module with the system call rmmod(8) makes: delete_module(2)
/// with O_NONBLOCK (refused, not waited for, while the module is in use).
/// Made here rather than by starting rmmod, whose start-up (a dynamically
/// linked program read over 9p under TCG) would count in `unload_under_load`'s
/// timing of the unload itself.
pub fn rmmod() -> Result<()> {
    // SAFETY: a NUL-terminated name and flags; the kernel reads nothing else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_delete_module,
            c"nfwatch".as_ptr(),
            libc::O_NONBLOCK,
        )
    };
    if rc != 0 {
        bail!("rmmod nfwatch: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn dmesg() -> Result<String> {
    stdout_of(&mut Command::new("dmesg"))
}

/// The lines of the kernel log that mean trouble.
pub fn dmesg_problems(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| DMESG_PROBLEMS.iter().any(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

/// Starts the peer's TCP listeners (one per address family).
fn start_peer(out: &Path) -> Result<Spawned> {
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let mut cmd = net::in_ns(Some(net::NS), &xtask.to_string_lossy());
    cmd.arg("guest-peer");
    for addr in [net::PEER4, net::PEER6] {
        cmd.arg("--tcp")
            .arg(SocketAddr::new(traffic::ip(addr)?, net::TCP_PORT).to_string());
    }
    let mut peer = Spawned::start(&mut cmd, &out.join("peer.log"))?;
    peer.wait_line("the peer's listeners", nfwatch::DEADLINE, |l| l == "ready")?;
    Ok(peer)
}

/// `guest-peer`: accepts connections, reads each to EOF, closes it.
pub fn peer(args: &PeerArgs) -> Result<()> {
    let listeners = args
        .tcp
        .iter()
        .map(|a| TcpListener::bind(a).with_context(|| format!("cannot listen on {a}")))
        .collect::<Result<Vec<_>>>()?;
    println!("ready");
    std::io::stdout().flush()?;
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            std::thread::spawn(move || {
                for mut conn in listener.incoming().map_while(Result::ok) {
                    std::thread::spawn(move || std::io::copy(&mut conn, &mut std::io::sink()));
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// Network, peer listeners, module: what all scenarios need.
fn prepare(args: &GuestArgs) -> Result<(Guest, Spawned)> {
    net::setup().context("network setup")?;
    let peer = start_peer(&args.out)?;
    if let Some(selftest) = &args.selftest_module {
        insmod_selftest(selftest)?;
        rmmod()?;
    }
    insmod(&args.module)?;
    let guest = Guest {
        nfwatch: args.nfwatch.clone(),
        module: args.module.clone(),
        skew_module: args.skew_module.clone(),
        out: args.out.clone(),
        ifindex: net::ifindex()?,
        fuzz: fuzz::Settings::new(args.fuzz_requests, args.fuzz_seed),
        slow: args.slow.max(1),
        full: args.full,
    };
    Ok((guest, peer))
}

fn run_scenario(guest: &Guest, name: &'static str, scenario: scenarios::Scenario) -> Outcome {
    let start = Instant::now();
    let result = (|| {
        if !module_loaded() {
            insmod(&guest.module)?;
        }
        let dir = guest.out.join(name);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("scenario.log"))?;
        let ctx = Ctx {
            guest,
            name,
            dir,
            log: Mutex::new(log),
        };
        ctx.log("start");
        scenario(&ctx).inspect_err(|e| ctx.log(&format!("FAILED: {e:#}")))
    })();
    let outcome = outcome_of(name, start, result);
    println!(
        "== {name}: {}",
        if outcome.passed { "PASS" } else { "FAIL" }
    );
    outcome
}

/// After all scenarios: unload the module, save dmesg, look for trouble;
/// `kmemleak`: its scan must run.
fn final_check(out: &Path, kmemleak: bool) -> Result<()> {
    let unloaded = if module_loaded() { rmmod() } else { Ok(()) };
    let log = dmesg()?;
    std::fs::write(out.join("dmesg.txt"), &log)?;
    unloaded?;
    let problems = dmesg_problems(&log);
    if !problems.is_empty() {
        bail!(
            "kernel log has {} suspicious line(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    crate::debug_kernel::kmemleak_check(out, kmemleak)
}

fn outcome_of(name: &str, start: Instant, result: Result<()>) -> Outcome {
    Outcome {
        name: name.into(),
        passed: result.is_ok(),
        detail: result.err().map(|e| format!("{e:#}")).unwrap_or_default(),
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Fails on a scenario name that does not exist (checked on the host before booting).
pub fn check_scenario_names(names: &[String]) -> Result<()> {
    scenarios::select(names).map(|_| ())
}

/// Every scenario's name, in the order they run.
#[cfg(test)]
pub fn scenario_names() -> Vec<&'static str> {
    scenarios::select(&[]).map_or_else(|_| Vec::new(), |all| all.iter().map(|(n, _)| *n).collect())
}

/// `guest-scenarios`: returns whether all passed.
pub fn scenarios(args: &GuestArgs) -> Result<bool> {
    std::fs::create_dir_all(&args.out)?;
    let selected = scenarios::select(&args.scenario)?;
    let kernel = stdout_of(Command::new("uname").arg("-r"))?
        .trim()
        .to_string();
    let mut results = Results {
        kernel,
        outcomes: Vec::new(),
    };
    // Only what happens from here on is ours to judge.
    std::fs::write(args.out.join("dmesg-boot.txt"), dmesg()?)?;
    run(Command::new("dmesg").arg("-C"))?;
    let start = Instant::now();
    match prepare(args) {
        Err(e) => results.outcomes.push(outcome_of("setup", start, Err(e))),
        Ok((guest, _peer)) => {
            for (name, scenario) in selected {
                results.outcomes.push(run_scenario(&guest, name, scenario));
                results.write(&args.out)?;
            }
        }
    }
    let start = Instant::now();
    results.outcomes.push(outcome_of(
        "dmesg_clean",
        start,
        final_check(&args.out, args.kmemleak),
    ));
    results.write(&args.out)?;
    let (passed, failed) = results.counts();
    println!("guest: {passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// How long the demo's traffic runs: a few of each kind.
const DEMO_ROUNDS: u16 = 3;

/// `guest-demo`: record mixed traffic and show it.
pub fn demo(args: &GuestArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let (guest, _peer) = prepare(args)?;
    let dir = args.out.clone();
    let log = std::fs::File::create(dir.join("demo.log"))?;
    let ctx = Ctx {
        guest: &guest,
        name: "demo",
        dir,
        log: Mutex::new(log),
    };
    let watcher =
        nfwatch::Watcher::start_with(&ctx, "demo", &[net::WATCHED4, net::WATCHED6], "text")?;
    let out = watcher.out.clone();
    for round in 0..DEMO_ROUNDS {
        for (src, dst) in [(net::WATCHED4, net::PEER4), (net::WATCHED6, net::PEER6)] {
            traffic::tcp_exchange(src, dst, net::TCP_PORT, b"hello from nfwatch demo\n")?;
            traffic::udp_batch(src, dst, 5300 + round, 1, 64)?;
            traffic::ping(src, dst, 1)?;
        }
        traffic::udp_batch(net::WATCHED4, net::ROUTED4, 5400 + round, 1, 64)?;
    }
    let summary = watcher.stop()?;
    let text = std::fs::read_to_string(&out)?;
    println!("\n--- first records of {} ---", out.display());
    for line in text.lines().take(15) {
        println!("{line}");
    }
    println!(
        "--- {} records in all; the CLI said:\n{}",
        text.lines().count(),
        summary.text
    );
    println!("{}", stdout_of(Command::new(&guest.nfwatch).arg("stats"))?);
    rmmod()?;
    Ok(())
}
