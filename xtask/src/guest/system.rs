//! The system test's guest side: run by a oneshot unit after
//! nfwatch.service in the booted Debian image (see system.rs), as root,
//! with systemd as PID 1. Each check's outcome is one JSON line on the
//! results port, written as soon as it is known.

use super::net::{OTHER4, PEER4, PEER6, TCP_PORT, WATCHED4, WATCHED6};
use super::nfwatch::{read_records, Record, Summary};
use super::traffic::{self, Flow};
use crate::results::Outcome;
use crate::util::{capture, run, stdout_of, wait_until};
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const UNIT: &str = "nfwatch.service";
const CONFIG: &str = "/etc/nfwatch/nfwatch.toml";
/// What the test writes to CONFIG: the guest scenarios' watched pair
/// (guest/net.rs).
const SERVICE_CONFIG: &str = "sources = [\"10.10.0.1\", \"fd10::1\"]\n\
output = \"/var/log/nfwatch/nfwatch.jsonl\"\n\
format = \"jsonl\"\n\
append = true\n";
/// A second recorder, nfwatch@extra.service, watching OTHER4.
const INSTANCE: &str = "nfwatch@extra.service";
const INSTANCE_CONFIG: &str = "/etc/nfwatch/extra.toml";
const INSTANCE_OUTPUT: &str = "/var/log/nfwatch/extra.jsonl";
/// The instance that records every namespace's ping.
const OWNERS: &str = "nfwatch@owners.service";
const OWNERS_CONFIG: &str = "/etc/nfwatch/owners.toml";
const OWNERS_OUTPUT: &str = "/var/log/nfwatch/owners.jsonl";
const EXPORT: &str = "nfwatch@export.service";
const EXPORT_CONFIG: &str = "/etc/nfwatch/export.toml";
const EXPORT_DROP_IN: &str = "/etc/systemd/system/nfwatch@export.service.d/collector.conf";
/// Where the check's collector listens.
const COLLECTOR: &str = "127.0.0.1:4739";
const LOG_DIR: &str = "/var/log/nfwatch";
const OUTPUT: &str = "/var/log/nfwatch/nfwatch.jsonl";
/// Generous: everything here runs under TCG, beside other guests' hosts.
const DEADLINE: Duration = Duration::from_secs(300);
/// Pause between the paced flood's bursts: fast enough to keep records
/// flowing through both rotations, slow enough that nothing is lost.
const FLOOD_PAUSE: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// Ready, traffic, reload/restart/stop, logrotate, a bad config.
    First,
    /// The same image booted again: back by itself, upgrade, purge.
    Second,
}

#[derive(clap::Args)]
pub struct SystemArgs {
    #[arg(long, value_enum)]
    phase: Phase,
    /// Where the outcome lines go (the second serial port).
    #[arg(long)]
    results: PathBuf,
    /// The version the installed packages carry.
    #[arg(long)]
    version: String,
    /// A directory of newer packages to upgrade to in the second phase,
    /// instead of purging.
    #[arg(long)]
    upgrade: Option<PathBuf>,
    /// Their version.
    #[arg(long, requires = "upgrade")]
    upgrade_version: Option<String>,
}

/// Writes each outcome to the results port as it is known.
struct Reporter {
    port: std::fs::File,
}

impl Reporter {
    fn check(&mut self, name: &str, check: impl FnOnce() -> Result<()>) -> bool {
        let start = Instant::now();
        let result = check();
        let outcome = Outcome {
            name: name.into(),
            passed: result.is_ok(),
            detail: result
                .err()
                .map(|e| format!("{e:#}\n{}", unit_diagnostics()))
                .unwrap_or_default(),
            seconds: start.elapsed().as_secs_f64(),
        };
        println!(
            "== {name}: {} {}",
            if outcome.passed { "PASS" } else { "FAIL" },
            outcome.detail
        );
        if let Ok(line) = serde_json::to_string(&outcome) {
            let _ = writeln!(self.port, "{line}");
            let _ = self.port.flush();
        }
        outcome.passed
    }
}

/// `guest-system`: one boot's checks; "PHASE done" last.
pub fn system(args: &SystemArgs) -> Result<()> {
    let port = std::fs::OpenOptions::new()
        .write(true)
        .open(&args.results)
        .with_context(|| format!("cannot open {}", args.results.display()))?;
    let mut report = Reporter { port };
    let phase = match args.phase {
        Phase::First => "first",
        Phase::Second => "second",
    };
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    println!("guest-system {phase}: started at uptime {uptime}");
    super::net::setup().context("network setup")?;
    let _peer = super::start_peer(Path::new("/tmp"))?;
    match args.phase {
        Phase::First => {
            report.check(
                "unconfigured at install: failed once, not restarted",
                unconfigured,
            );
            report.check("service ready once configured (READY, DKMS module)", || {
                configure()?;
                ready(&args.version)
            });
            report.check("an nfwatch@ instance records", instance_records);
            report.check("traffic recorded as sent", traffic_recorded);
            report.check(
                "a unit's and a container's packets carry them (all_netns, comms)",
                owners_recorded,
            );
            report.check(
                "export: refused by the sandbox, sent once a drop-in allows",
                export_to_collector,
            );
            report.check("reload reopens, restart and stop summarise", lifecycle);
            report.check("logrotate twice under a flood", rotation);
            report.check("bad configuration refused", bad_config);
            report.check(
                "module removed under the service: failure, restarted",
                module_removed,
            );
            report.check(
                "a module that cannot load: start limit, no loop",
                start_limit,
            );
        }
        Phase::Second => {
            report.check("service and instance back after a reboot", || {
                ready(&args.version)?;
                wait_unit_active(INSTANCE)
            });
            // DKMS removing and building both kernels' modules under TCG
            // takes minutes each time: a boot upgrades or purges.
            match (&args.upgrade, &args.upgrade_version) {
                (Some(dir), Some(version)) => {
                    report.check("upgrade while running", || upgrade(dir, version));
                }
                _ => {
                    report.check("purge", purge);
                }
            }
        }
    }
    report.check("kernel log clean", kernel_log_clean);
    report.check(&format!("{phase} done"), || Ok(()));
    Ok(())
}

fn systemctl(args: &[&str]) -> Result<String> {
    stdout_of(Command::new("systemctl").args(args))
}

/// `systemctl ACTION` on the unit as an administrator would, after
/// `reset-failed`: the checks start the unit more often than its start
/// limit allows in a fast guest, and the limit is for crash loops, not for
/// what a test or an administrator does on purpose (waiting out its window
/// would make every check as slow as the slowest guest).
fn deliberate(action: &str) -> Result<std::process::Output> {
    systemctl(&["reset-failed", UNIT])?;
    capture(Command::new("systemctl").args([action, UNIT]))
}

/// As `deliberate`, failing when systemctl does.
fn deliberately(action: &str) -> Result<()> {
    let out = deliberate(action)?;
    ensure!(
        out.status.success(),
        "systemctl {action} {UNIT}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The unit's status and its last journal lines, for a failed check.
fn unit_diagnostics() -> String {
    let text = |command: &mut Command| {
        capture(command)
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_else(|e| format!("{e:#}"))
    };
    format!(
        "--- systemctl status {UNIT}\n{}--- journalctl -b -u {UNIT} -n 40\n{}",
        text(Command::new("systemctl").args(["status", "--no-pager", "-l", "-n", "0", UNIT])),
        text(Command::new("journalctl").args(["--no-pager", "-b", "-u", UNIT, "-n", "40"]))
    )
}

fn property(name: &str) -> Result<String> {
    property_of(UNIT, name)
}

fn property_of(unit: &str, name: &str) -> Result<String> {
    Ok(systemctl(&["show", unit, "--value", "-p", name])?
        .trim()
        .to_string())
}

fn wait_active() -> Result<()> {
    wait_unit_active(UNIT)
}

fn wait_unit_active(unit: &str) -> Result<()> {
    wait_until(&format!("{unit} to be active"), DEADLINE, || {
        Ok((property_of(unit, "ActiveState")? == "active").then_some(()))
    })
}

fn main_pid() -> Result<u32> {
    main_pid_of(UNIT)
}

fn main_pid_of(unit: &str) -> Result<u32> {
    property_of(unit, "MainPID")?
        .parse()
        .with_context(|| format!("{unit}'s MainPID is not a number"))
}

fn uptime() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/uptime")?;
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .context("/proc/uptime is not a number")
}

/// The unit's journal lines (message text only) containing `needle`.
fn journal_lines(unit: &str, needle: &str) -> Result<Vec<String>> {
    let text =
        stdout_of(Command::new("journalctl").args(["--no-pager", "-b", "-o", "cat", "-u", unit]))?;
    Ok(text
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect())
}

/// As installed, with the shipped configuration (no sources) and the unit
/// enabled: at boot it fails with one line saying why and is not started
/// again (RestartPreventExitStatus=2), a minute after boot as at the first.
fn unconfigured() -> Result<()> {
    let shipped = std::fs::read_to_string(CONFIG)?;
    ensure!(
        shipped.contains("\nsources = []\n"),
        "{CONFIG} is not the shipped one:\n{shipped}"
    );
    wait_until("nfwatch.service to have failed", DEADLINE, || {
        Ok((property("ActiveState")? == "failed").then_some(()))
    })?;
    wait_until("a minute of uptime", DEADLINE, || {
        Ok((uptime()? >= 60.0).then_some(()))
    })?;
    for (name, want) in [
        ("ActiveState", "failed"),
        ("Result", "exit-code"),
        ("ExecMainStatus", "2"),
        ("NRestarts", "0"),
    ] {
        let got = property(name)?;
        ensure!(got == want, "unconfigured: {name}={got} (expected {want})");
    }
    let said = journal_lines(UNIT, "no sources to watch")?;
    ensure!(
        said.len() == 1,
        "unconfigured: {} journal lines say why: {said:?}",
        said.len()
    );
    println!("unconfigured: {}", said[0]);
    Ok(())
}

/// The administrator sets the sources and starts the service.
fn configure() -> Result<()> {
    std::fs::write(CONFIG, SERVICE_CONFIG)?;
    deliberately("restart")
}

/// `systemctl enable --now nfwatch@extra` with its own file and output:
/// it records what OTHER4 sends.
fn instance_records() -> Result<()> {
    std::fs::write(
        INSTANCE_CONFIG,
        format!(
            "sources = [\"{OTHER4}\"]\noutput = \"{INSTANCE_OUTPUT}\"\nformat = \"jsonl\"\nappend = true\n"
        ),
    )?;
    systemctl(&["enable", "--now", INSTANCE])?;
    wait_unit_active(INSTANCE)?;
    datagrams_recorded(INSTANCE_OUTPUT, OTHER4, 7400, 1)
}

/// An instance with `export`: the hardened unit may not use IP, so it
/// fails at start saying why; with docs/service.md's drop-in it sends its
/// records to the collector, as IPFIX messages with packet data records.
fn export_to_collector() -> Result<()> {
    let collector = std::net::UdpSocket::bind(COLLECTOR)?;
    collector.set_read_timeout(Some(Duration::from_secs(5)))?;
    std::fs::write(
        EXPORT_CONFIG,
        format!(
            "sources = [\"{OTHER4}\"]\noutput = \"/var/log/nfwatch/export.jsonl\"\nformat = \"jsonl\"\nexport = [\"udp://{COLLECTOR}\"]\n"
        ),
    )?;
    let refused = capture(Command::new("systemctl").args(["start", EXPORT]))?;
    ensure!(
        !refused.status.success(),
        "{EXPORT} started with no way to the collector"
    );
    let expected = format!("--export udp://{COLLECTOR}: Address family not supported");
    wait_until(&format!("{expected:?} in the journal"), DEADLINE, || {
        Ok((!journal_lines(EXPORT, &expected)?.is_empty()).then_some(()))
    })?;
    let drop_in = Path::new(EXPORT_DROP_IN);
    std::fs::create_dir_all(drop_in.parent().context("a drop-in directory")?)?;
    std::fs::write(
        drop_in,
        "[Service]\nRestrictAddressFamilies=AF_INET AF_INET6\nIPAddressAllow=127.0.0.1\n",
    )?;
    systemctl(&["daemon-reload"])?;
    systemctl(&["reset-failed", EXPORT])?;
    systemctl(&["start", EXPORT])?;
    wait_unit_active(EXPORT)?;
    let result = (|| {
        datagrams_recorded("/var/log/nfwatch/export.jsonl", OTHER4, 7600, 5)?;
        let start = Instant::now();
        let mut buf = vec![0u8; 65536];
        loop {
            ensure!(
                start.elapsed() < DEADLINE,
                "no packet data set at the collector"
            );
            if let Ok(n) = collector.recv(&mut buf) {
                if packet_sets(&buf[..n])? > 0 {
                    return Ok(());
                }
            }
        }
    })();
    systemctl(&["stop", EXPORT])?;
    std::fs::remove_file(drop_in)?;
    systemctl(&["daemon-reload"])?;
    result
}

/// The data sets of templates 256 and 257 (packets) in one IPFIX message,
/// whose sets must fill it.
fn packet_sets(message: &[u8]) -> Result<usize> {
    ensure!(
        message.len() >= 16 && message[..2] == [0, 10],
        "not an IPFIX message: {message:?}"
    );
    let mut at = 16;
    let mut sets = 0;
    while at < message.len() {
        ensure!(at + 4 <= message.len(), "a set header cut at {at}");
        let id = u16::from_be_bytes([message[at], message[at + 1]]);
        let len = usize::from(u16::from_be_bytes([message[at + 2], message[at + 3]]));
        ensure!(
            len >= 4 && at + len <= message.len(),
            "a set of {len} bytes at {at}"
        );
        if id == 256 || id == 257 {
            sets += 1;
        }
        at += len;
    }
    Ok(sets)
}

/// `count` datagrams from `src` to the peer's `port` appear in `path`, as
/// sent and after what it held.
fn datagrams_recorded(path: &str, src: &str, port: u16, count: u16) -> Result<()> {
    let before = read_records(Path::new(path)).map_or(0, |r| r.len());
    let sent = traffic::udp_batch(src, PEER4, port, count, 64)?;
    let records = wait_until(&format!("{count} more records in {path}"), DEADLINE, || {
        let records = read_records(Path::new(path)).unwrap_or_default();
        Ok((records.len() >= before + sent.len()).then_some(records))
    })?;
    let new = &records[before..];
    ensure!(flows(new)? == sent, "{path}: {new:?}, sent {sent:?}");
    Ok(())
}

/// `modprobe -r nfwatch` under the running service: nfwatch writes what it
/// received, says so and exits 1, and systemd starts it again (which loads
/// the module again).
fn module_removed() -> Result<()> {
    let old = main_pid()?;
    let restarts: u32 = property("NRestarts")?.parse()?;
    run(Command::new("modprobe").args(["-r", "nfwatch"]))?;
    wait_until("nfwatch.service restarted", DEADLINE, || {
        let pid = main_pid()?;
        Ok((property("ActiveState")? == "active" && pid != 0 && pid != old).then_some(()))
    })?;
    let now: u32 = property("NRestarts")?.parse()?;
    ensure!(
        now == restarts + 1,
        "NRestarts went from {restarts} to {now}"
    );
    let said = journal_of(old)?;
    ensure!(
        said.iter()
            .any(|l| l.starts_with("nfwatch: the nfwatch kernel module was unloaded")),
        "pid {old} did not say the module was unloaded: {said:?}"
    );
    summary_of(old)?;
    ensure!(
        Path::new("/sys/module/nfwatch").exists(),
        "the module was not loaded again"
    );
    // The instance, unloaded too, comes back the same way.
    wait_unit_active(INSTANCE)?;
    datagrams_recorded(OUTPUT, WATCHED4, 7500, 1)
}

/// A module that cannot be loaded: the unit is tried StartLimitBurst times,
/// then stays failed ("Start request repeated too quickly") instead of looping.
fn start_limit() -> Result<()> {
    const BLOCK: &str = "/etc/modprobe.d/nfwatch-systest-block.conf";
    systemctl(&["stop", UNIT, INSTANCE])?;
    run(Command::new("modprobe").args(["-r", "nfwatch"]))?;
    std::fs::write(BLOCK, "install nfwatch /bin/false\n")?;
    // systemd keeps the first failure's Result (exit-code) when the limit
    // then refuses a start: its journal line is what tells.
    const LIMIT_HIT: &str = "Start request repeated too quickly";
    let tried = (|| {
        let before = journal_lines(UNIT, LIMIT_HIT)?.len();
        let out = deliberate("start")?;
        ensure!(!out.status.success(), "systemctl start succeeded");
        wait_until("nfwatch.service to hit its start limit", DEADLINE, || {
            Ok((journal_lines(UNIT, LIMIT_HIT)?.len() > before).then_some(()))
        })?;
        let restarts: u32 = property("NRestarts")?.parse()?;
        ensure!(
            property("ActiveState")? == "failed" && restarts <= 5,
            "ActiveState {} after {restarts} restarts",
            property("ActiveState")?
        );
        println!("start limit hit after {restarts} restarts");
        Ok(())
    })();
    std::fs::remove_file(BLOCK)?;
    deliberately("start")?;
    systemctl(&["start", INSTANCE])?;
    wait_active()?;
    wait_unit_active(INSTANCE)?;
    tried
}

/// What process `pid` of nfwatch.service wrote to the journal.
fn journal_of(pid: u32) -> Result<Vec<String>> {
    let text = stdout_of(Command::new("journalctl").args([
        "--no-pager",
        "-b",
        "-o",
        "cat",
        &format!("_PID={pid}"),
    ]))?;
    Ok(text.lines().map(str::to_string).collect())
}

/// Waits for `pid`'s end-of-run summary in the journal and parses it.
fn summary_of(pid: u32) -> Result<Summary> {
    let lines = wait_until(
        &format!("pid {pid}'s summary in the journal"),
        DEADLINE,
        || {
            let lines = journal_of(pid)?;
            Ok(lines
                .iter()
                .any(|l| l.starts_with("nfwatch: kernel counted "))
                .then_some(lines))
        },
    )?;
    Summary::parse(&lines)
}

fn modinfo(field: &str) -> Result<String> {
    Ok(
        stdout_of(Command::new("modinfo").args(["-F", field, "nfwatch"]))?
            .trim()
            .to_string(),
    )
}

fn sys_module(file: &str) -> Result<String> {
    let path = format!("/sys/module/nfwatch/{file}");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {path}"))?
        .trim()
        .to_string())
}

/// The service is active (so it sent READY=1 after SUBSCRIBE was acked,
/// with its subscription as status) on the module DKMS built and signed
/// for this kernel, of `version`.
fn ready(version: &str) -> Result<()> {
    wait_active()?;
    let status = property("StatusText")?;
    ensure!(
        status.starts_with("subscribed to 2 prefixes"),
        "status text {status:?}: READY did not come with the subscription"
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let release = release.trim();
    let file = stdout_of(Command::new("modinfo").args(["-n", "nfwatch"]))?;
    let file = file.trim();
    // DKMS compresses the module as the kernel's own are (.ko.xz).
    let expected = format!("/lib/modules/{release}/updates/dkms/nfwatch.ko");
    ensure!(
        file.starts_with(&expected),
        "modinfo -n: {file} (expected {expected}*)"
    );
    let signer = modinfo("signer")?;
    ensure!(!signer.is_empty(), "the DKMS module is not signed");
    ensure!(
        sys_module("srcversion")? == modinfo("srcversion")?,
        "the loaded module is not {file}"
    );
    ensure!(
        sys_module("version")? == version,
        "loaded module version {} (expected {version})",
        sys_module("version")?
    );
    let dkms = stdout_of(Command::new("dkms").args(["status", "nfwatch"]))?;
    ensure!(
        dkms.contains(&format!("nfwatch/{version}, {release}")) && dkms.contains("installed"),
        "dkms status: {dkms}"
    );
    println!("module {file} version {version} signed by {signer:?}");
    Ok(())
}

/// The output file's records once `want` holds for them.
fn records_when(what: &str, want: impl Fn(&[Record]) -> bool) -> Result<Vec<Record>> {
    wait_until(what, DEADLINE, || {
        let records = read_records(Path::new(OUTPUT))?;
        Ok(want(&records).then_some(records))
    })
}

fn flows(records: &[Record]) -> Result<Vec<Flow>> {
    records.iter().map(Flow::of).collect()
}

/// UDP, TCP, ICMP and ICMPv6 from the watched addresses appear as sent;
/// nothing from an address not watched.
fn traffic_recorded() -> Result<()> {
    let before = read_records(Path::new(OUTPUT))?.len();
    let mut udp = traffic::udp_batch(WATCHED4, PEER4, 7000, 4, 64)?;
    udp.extend(traffic::udp_batch(WATCHED6, PEER6, 7000, 4, 64)?);
    let tcp = traffic::tcp_exchange(WATCHED4, PEER4, TCP_PORT, b"nfwatch system test")?;
    let (_, ping4) = traffic::ping(WATCHED4, PEER4, 2)?;
    let (_, ping6) = traffic::ping(WATCHED6, PEER6, 2)?;
    traffic::udp_batch(OTHER4, PEER4, 7100, 4, 64)?;
    // Sent last: once it is written, so is every record made before it.
    let marker = traffic::udp_batch(WATCHED4, PEER4, 7200, 1, 64)?;
    let echo = |r: &Record, proto: &str, kind: u8| r.proto == proto && r.icmp_type == Some(kind);
    let records = records_when("the record of the datagram sent last", |records| {
        let new = &records[before.min(records.len())..];
        new.iter()
            .any(|r| Flow::of(r).is_ok_and(|f| marker.contains(&f)))
    })?;
    let new = &records[before..];
    let seen = flows(new)?;
    for flow in &udp {
        let n = seen.iter().filter(|f| *f == flow).count();
        ensure!(n == 1, "{flow:?} recorded {n} times");
    }
    let n = seen.iter().filter(|f| **f == tcp).count();
    ensure!(n >= 3, "TCP {tcp:?}: {n} records (SYN, data, FIN at least)");
    for (flow, proto, kind) in [(&ping4, "icmp", 8), (&ping6, "icmpv6", 128)] {
        let n = new
            .iter()
            .filter(|r| echo(r, proto, kind) && Flow::of(r).is_ok_and(|f| f == *flow))
            .count();
        ensure!(n == 2, "{n} echo requests recorded for {flow:?}, 2 sent");
    }
    let strays: Vec<&Record> = new
        .iter()
        .filter(|r| r.src != WATCHED4 && r.src != WATCHED6)
        .collect();
    ensure!(
        strays.is_empty(),
        "records from unwatched sources: {strays:?}"
    );
    println!("{} records for the traffic sent", new.len());
    Ok(())
}

/// A tree systemd-nspawn runs a container in: the image's /usr, read-only,
/// under the usual links.
fn container_tree() -> Result<PathBuf> {
    let root = PathBuf::from("/var/lib/machines/probe");
    std::fs::create_dir_all(root.join("usr"))?;
    std::fs::create_dir_all(root.join("etc"))?;
    for dir in ["bin", "sbin", "lib", "lib64"] {
        let link = root.join(dir);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("usr/{dir}"), link)?;
        }
    }
    std::fs::copy("/usr/lib/os-release", root.join("etc/os-release"))?;
    Ok(root)
}

/// The instance nfwatch@owners, configured with `all_netns` and `comms`:
/// ping run as the transient unit probe.service is recorded with that unit,
/// and ping in a systemd-nspawn container with a network namespace of its
/// own with the container's name and that namespace; nothing but ping's
/// packets is recorded.
fn owners_recorded() -> Result<()> {
    let host_netns = std::fs::metadata("/proc/self/ns/net")?.ino();
    std::fs::write(
        OWNERS_CONFIG,
        format!(
            "sources = [\"{WATCHED4}\", \"127.0.0.1\"]\nall_netns = true\ncomms = [\"ping\"]\n\
             output = \"{OWNERS_OUTPUT}\"\nformat = \"jsonl\"\n"
        ),
    )?;
    // Type=notify: started once subscribed.
    systemctl(&["start", OWNERS])?;
    run(Command::new("systemd-run").args([
        "--unit=probe",
        "--wait",
        "--quiet",
        "/usr/bin/ping",
        "-c",
        "2",
        "-I",
        WATCHED4,
        PEER4,
    ]))?;
    let root = container_tree()?;
    run(Command::new("systemd-nspawn")
        .args([
            "--quiet",
            "--machine=probe",
            "--private-network",
            "--bind-ro=/usr",
        ])
        .arg("--directory")
        .arg(&root)
        .args(["/usr/bin/ping", "-c", "2", "127.0.0.1"]))?;
    systemctl(&["stop", OWNERS])?;
    let records = read_records(Path::new(OWNERS_OUTPUT))?;
    let strays: Vec<&Record> = records
        .iter()
        .filter(|r| r.comm.as_ref().is_none_or(|c| *c != "ping"))
        .collect();
    ensure!(
        strays.is_empty(),
        "comms = [\"ping\"] recorded others: {strays:?}"
    );
    let echoes = |src: &str| -> Vec<&Record> {
        records
            .iter()
            .filter(|r| r.src == src && r.icmp_type == Some(8))
            .collect()
    };
    let (unit, contained) = (echoes(WATCHED4), echoes("127.0.0.1"));
    ensure!(
        unit.len() == 2
            && unit.iter().all(|r| {
                r.unit.as_ref().is_some_and(|u| *u == "probe.service")
                    && r.comm.as_ref().is_some_and(|c| *c == "ping")
                    && r.netns == Some(host_netns as u32)
            }),
        "probe.service's echo requests: {unit:?}"
    );
    ensure!(
        contained.len() == 2
            && contained.iter().all(|r| {
                r.container.as_ref().is_some_and(|c| *c == "probe")
                    && r.comm.as_ref().is_some_and(|c| *c == "ping")
                    && r.netns.is_some_and(|n| u64::from(n) != host_netns)
            }),
        "the container's echo requests: {contained:?}"
    );
    println!(
        "probe.service and container probe: {} and {} echo requests",
        unit.len(),
        contained.len()
    );
    Ok(())
}

/// reload reopens the output by path; restart and stop end the process
/// cleanly with its summary in the journal.
fn lifecycle() -> Result<()> {
    let first = main_pid()?;
    let moved = format!("{OUTPUT}.moved");
    std::fs::rename(OUTPUT, &moved)?;
    systemctl(&["reload", UNIT])?;
    wait_until("the output reopened by path", DEADLINE, || {
        Ok(Path::new(OUTPUT).exists().then_some(()))
    })?;
    traffic::udp_batch(WATCHED4, PEER4, 7200, 1, 64)?;
    let reopened = records_when("records in the reopened file", |r| !r.is_empty())?;
    ensure!(main_pid()? == first, "reload replaced the process");
    ensure!(
        reopened.len() == 1,
        "reopened file: {} records",
        reopened.len()
    );
    std::fs::remove_file(&moved)?;

    deliberately("restart")?;
    wait_active()?;
    let second = main_pid()?;
    ensure!(second != first, "restart kept pid {first}");
    summary_of(first)?;
    systemctl(&["stop", UNIT])?;
    let summary = summary_of(second)?;
    for (name, want) in [
        ("Result", "success"),
        ("ExecMainStatus", "0"),
        ("ActiveState", "inactive"),
    ] {
        let got = property(name)?;
        ensure!(got == want, "after stop {name}={got} (expected {want})");
    }
    println!("stop summary:\n{}", summary.text);
    deliberately("start")?;
    wait_active()
}

fn file_has_records(path: &str) -> Result<Option<()>> {
    Ok(std::fs::metadata(path)
        .is_ok_and(|m| m.len() > 0)
        .then_some(()))
}

/// Every record of the current and rotated files (decompressing .gz).
fn all_rotated_records() -> Result<(Vec<Record>, usize)> {
    let mut records = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(LOG_DIR)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with("nfwatch.jsonl") {
            continue;
        }
        let plain = if name.ends_with(".gz") {
            let out = PathBuf::from("/tmp").join(name.trim_end_matches(".gz"));
            let text = stdout_of(Command::new("zcat").arg(&path))?;
            std::fs::write(&out, text)?;
            out
        } else {
            path
        };
        records.extend(read_records(&plain)?);
        files += 1;
    }
    Ok((records, files))
}

/// Two forced rotations while records flow: the rotated files and the
/// current one hold exactly what the kernel delivered, nothing twice.
fn rotation() -> Result<()> {
    systemctl(&["stop", UNIT])?;
    for entry in std::fs::read_dir(LOG_DIR)? {
        std::fs::remove_file(entry?.path())?;
    }
    deliberately("start")?;
    wait_active()?;
    let pid = main_pid()?;
    let flood = traffic::Flood::paced(WATCHED4, PEER4, FLOOD_PAUSE);
    let rotated = (|| {
        for _ in 0..2 {
            wait_until("records in the current file", DEADLINE, || {
                file_has_records(OUTPUT)
            })?;
            run(Command::new("logrotate").args(["-f", "/etc/logrotate.d/nfwatch"]))?;
        }
        wait_until("records in the newest file", DEADLINE, || {
            file_has_records(OUTPUT)
        })
    })();
    let sent = flood.stop()?;
    rotated?;
    systemctl(&["stop", UNIT])?;
    let summary = summary_of(pid)?;
    let (records, files) = all_rotated_records()?;
    ensure!(files >= 3, "{files} files after two rotations");
    let lines: Vec<String> = records.iter().map(|r| format!("{r:?}")).collect();
    let unique: HashSet<&String> = lines.iter().collect();
    ensure!(
        unique.len() == lines.len(),
        "{} records written twice",
        lines.len() - unique.len()
    );
    let Some([matched, delivered, lost]) = summary.kernel else {
        bail!("no kernel counters in the summary");
    };
    ensure!(
        lost == 0 && matched == delivered,
        "kernel: {}",
        summary.text
    );
    ensure!(
        lines.len() as u64 == matched && summary.written == matched,
        "{} records in {files} files, the kernel matched {matched}, nfwatch wrote {}",
        lines.len(),
        summary.written
    );
    // The flood began once the service had subscribed and ended before it
    // stopped: every datagram has its record.
    let flood = records
        .iter()
        .filter(|r| r.proto == "udp" && r.src == WATCHED4 && r.dst == PEER4)
        .count() as u64;
    ensure!(
        flood == sent,
        "{flood} records of the {sent} datagrams sent (the kernel matched {matched})"
    );
    println!(
        "{sent} datagrams sent, {matched} matched, {} records in {files} files",
        lines.len()
    );
    deliberately("start")?;
    wait_active()
}

/// A configuration with a bad value or an unknown key: `systemctl start`
/// fails and the journal names the file, line and key.
fn bad_config() -> Result<()> {
    let good = std::fs::read_to_string(CONFIG)?;
    let cases = [
        (
            "sources = [\"10.10.0.1\", \"10.10.0.5/24\"]\n",
            "nfwatch.toml:1: sources: 10.10.0.5/24: host bits set",
        ),
        (
            "sources = [\"10.10.0.1\"]\nsource = \"fd10::1\"\n",
            "nfwatch.toml:2: source: unknown field",
        ),
    ];
    let result = (|| {
        for (text, expected) in cases {
            std::fs::write(CONFIG, text)?;
            let since = stdout_of(Command::new("date").arg("+@%s"))?;
            let out = deliberate("restart")?;
            ensure!(
                !out.status.success(),
                "systemctl restart succeeded with {text:?}"
            );
            wait_until(&format!("{expected:?} in the journal"), DEADLINE, || {
                let journal = stdout_of(Command::new("journalctl").args([
                    "--no-pager",
                    "-o",
                    "cat",
                    "-u",
                    UNIT,
                    "--since",
                    since.trim(),
                ]))?;
                Ok(journal.contains(expected).then_some(()))
            })?;
        }
        Ok(())
    })();
    std::fs::write(CONFIG, good)?;
    deliberately("restart")?;
    wait_active()?;
    result
}

/// Newer packages installed while the service runs: the new module is
/// loaded, the service runs on it, the journal has the old process's
/// summary, and recording resumes.
fn upgrade(dir: &Path, version: &str) -> Result<()> {
    let old = main_pid()?;
    let old_instance = main_pid_of(INSTANCE)?;
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    debs.sort();
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args([
            "install",
            "-y",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confold",
        ])
        .args(&debs))?;
    ready(version)?;
    ensure!(main_pid()? != old, "the service was not restarted");
    // The new packages speak another protocol: the old module had to go.
    let replaced = journal_lines(UNIT, "whose protocol this nfwatch does not speak")?;
    ensure!(
        replaced.len() == 1,
        "load-module's journal lines on the replaced module: {replaced:?}"
    );
    wait_unit_active(INSTANCE)?;
    ensure!(
        main_pid_of(INSTANCE)? != old_instance,
        "{INSTANCE} was not restarted"
    );
    datagrams_recorded(INSTANCE_OUTPUT, OTHER4, 7600, 1)?;
    let summary = summary_of(old)?;
    println!("recording stopped for the upgrade after:\n{}", summary.text);
    datagrams_recorded(OUTPUT, WATCHED4, 7300, 3)
}

/// `apt purge`: no module loaded, no DKMS state, no unit, no configuration;
/// the records stay.
fn purge() -> Result<()> {
    wait_unit_active(INSTANCE)?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["purge", "-y", "nfwatch", "nfwatch-dkms"]))?;
    ensure!(
        !Path::new("/sys/module/nfwatch").exists(),
        "the module is still loaded"
    );
    let dkms = stdout_of(Command::new("dkms").arg("status"))?;
    ensure!(dkms.trim().is_empty(), "dkms status: {dkms}");
    // list-unit-files exits 1 when nothing matches: only its output counts.
    let units = capture(Command::new("systemctl").args([
        "list-unit-files",
        "--no-legend",
        UNIT,
        "nfwatch@.service",
    ]))?;
    let units = String::from_utf8_lossy(&units.stdout);
    ensure!(units.trim().is_empty(), "units left: {units}");
    ensure!(
        property("LoadState")? == "not-found",
        "nfwatch.service still loads"
    );
    ensure!(!Path::new("/etc/nfwatch").exists(), "/etc/nfwatch is left");
    ensure!(
        property_of(INSTANCE, "ActiveState")? != "active",
        "{INSTANCE} still runs"
    );
    let links = stdout_of(
        Command::new("sh").args(["-c", "ls /etc/systemd/system/*.wants/ 2>/dev/null || true"]),
    )?;
    // The test's own nfwatch-systest.service stays enabled.
    ensure!(
        !links.contains("nfwatch.service") && !links.contains("nfwatch@"),
        "enablement links left: {links}"
    );
    let modules = stdout_of(
        Command::new("sh").args(["-c", "ls /lib/modules/*/updates/dkms/ 2>/dev/null || true"]),
    )?;
    ensure!(!modules.contains("nfwatch"), "module files left: {modules}");
    ensure!(Path::new(OUTPUT).exists(), "the records were removed");
    Ok(())
}

fn kernel_log_clean() -> Result<()> {
    let log = stdout_of(&mut Command::new("dmesg"))?;
    let problems = super::dmesg_problems(&log);
    ensure!(problems.is_empty(), "kernel log:\n{}", problems.join("\n"));
    Ok(())
}
