//! `guest-bench`: the measurements of `cargo xtask bench` (see crate::bench),
//! all in one boot. Outputs go to a tmpfs; raw samples to --out.

use super::generator::{busy_seconds, gen_args, rusage_seconds, GenReport};
use super::genl::Genl;
use super::nfwatch::{count_lines, Summary, DEADLINE, SUBSCRIBED};
use super::proc::Spawned;
use super::reliability::{cycle, subscribe_attrs};
use super::{insmod, module_loaded, net, rmmod};
use crate::bench::{
    config_name, config_names, Accounting, Raw, Sample, BUSY_NEIGHBOUR, CONFIGS, FLOWS_ALL,
    IDLE_HOOKED, IPFIX_ALL, IPV6_NOTHING, IPV6_UNMATCHED, RAW, ROUND_EXTRA,
};
use crate::util::{run, stdout_of, wait_until};
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long)]
    module: PathBuf,
    #[arg(long)]
    nfwatch: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    rounds: usize,
    #[arg(long)]
    seconds: f64,
    /// udp and/or tcp (repeatable; default both).
    #[arg(long)]
    proto: Vec<String>,
    /// Also profile each configuration once (UDP) with `perf record -a -g`.
    #[arg(long)]
    perf: bool,
    /// Instead of the rounds: each configuration once (UDP), between two
    /// dumps of the tcg-insns plugin's counts (see crate::insns).
    #[arg(long)]
    insns: bool,
}

/// The dummy device UDP leaves by (and is dropped on).
const DUMMY: &str = "nfwb0";
/// The source address of all generated traffic.
const SRC: &str = "10.40.0.1";
/// UDP destination: on-link behind the dummy (NOARP: no neighbour needed).
const UDP_DST: &str = "10.40.0.2:9";
/// The same for IPv6 traffic (`udp6`).
const SRC6: &str = "fd40::1";
const UDP6_DST: &str = "[fd40::2]:9";
/// The local TCP listener (guest-peer), reached through lo.
const TCP_DST: &str = "10.40.0.1:5002";
/// Where the tools write (a tmpfs).
const TMP: &str = "/tmp/nfwbench";
/// The nftables table of NFT_CONFIGS.
const NFT_TABLE: &str = "nfwbench";
/// The configurations that add NFT_TABLE (`start`) and delete it (`stop`).
const NFT_CONFIGS: std::ops::RangeInclusive<usize> = 6..=8;
/// tcpdump's capture length on the egress device and buffer (KiB): headers
/// only, like nfwatch's records, and a buffer the size of nfwatch's default
/// receive buffer.
const SNAPLEN: &str = "128";
const TCPDUMP_BUFFER_KIB: &str = "8192";
/// nflog:1 keeps libpcap's default capture length (whole packets here):
/// libpcap reads a netlink socket into a buffer of 128 + snaplen bytes, and
/// the kernel batches NFLOG messages (up to 100 per datagram), so with -s 128
/// each read keeps the first message or two and silently drops the rest.
const NFLOG_SNAPLEN: &str = "0";
/// net.core.rmem_max: at least tcpdump's buffer, so that `-B` holds for
/// nflog:1 too. libpcap sizes a netlink socket by SO_RCVBUF, which the
/// kernel caps at rmem_max (212992 bytes by default); AF_PACKET's ring and
/// nfwatch (SO_RCVBUFFORCE) are not capped.
const RMEM_MAX: &str = "8388608";
/// A pcap file that has not grown for this long is taken as drained
/// (longer than libpcap's 1 s TPACKET_V3 block timeout).
const PCAP_SETTLED: Duration = Duration::from_secs(2);
/// `perf record -a` is slow to start and to finish under TCG.
const PERF_DEADLINE: Duration = Duration::from_secs(600);
/// The small receive buffer of the accounting run (the smallest the CLI takes).
const SMALL_RCVBUF: u64 = 65536;

struct Bench<'a> {
    args: &'a BenchArgs,
    logs: PathBuf,
}

fn setup() -> Result<()> {
    std::fs::write("/proc/sys/net/core/rmem_max", RMEM_MAX).context("cannot set rmem_max")?;
    for cmd in [
        "link set lo up".to_string(),
        format!("link add {DUMMY} type dummy"),
        format!("addr add {SRC}/24 dev {DUMMY}"),
        format!("addr add {SRC6}/64 dev {DUMMY} nodad"),
        format!("link set {DUMMY} up"),
    ] {
        run(Command::new("ip").args(cmd.split_whitespace()))?;
    }
    std::fs::create_dir_all(TMP).with_context(|| format!("cannot create {TMP}"))?;
    run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=1200m", "nfwbench", TMP]))
}

/// The egress device of `proto`'s traffic (udp, udp6 or tcp).
fn device(proto: &str) -> &'static str {
    if proto == "tcp" {
        "lo"
    } else {
        DUMMY
    }
}

/// The source address and destination of `proto`'s traffic.
fn ends(proto: &str) -> (&'static str, &'static str) {
    match proto {
        "tcp" => (SRC, TCP_DST),
        "udp6" => (SRC6, UDP6_DST),
        _ => (SRC, UDP_DST),
    }
}

/// 256 /24 prefixes, none holding SRC.
fn unmatched_prefixes() -> Vec<String> {
    (0..256).map(|i| format!("172.16.{i}.0/24")).collect()
}

/// 256 /64 prefixes, none holding SRC6.
fn unmatched_prefixes6() -> Vec<String> {
    (0..256).map(|i| format!("fd41:0:0:{i:x}::/64")).collect()
}

/// The UDP traffic of configuration `config` in `--insns`.
fn insns_proto(config: usize) -> &'static str {
    if config == IPV6_NOTHING || config == IPV6_UNMATCHED {
        "udp6"
    } else {
        "udp"
    }
}

/// The module's hooks registered in this namespace and nobody subscribed:
/// one subscription made and ended.
fn hooks_left_idle() -> Result<()> {
    let mut genl = Genl::open()?;
    let family = genl.resolve(nfwatch_proto::NFWATCH_GENL_NAME)?;
    cycle(&mut genl, family, &subscribe_attrs("192.0.2.1", 32)?)
}

/// An IPFIX file's (RFC 5655: messages back to back) data records of data
/// templates, the packets' records: each data set is read record by record
/// with the fields of its template from the file's template sets. Records
/// of options templates (the RFC 5610 type records) are not counted, but
/// every message's sequence number must count all data records before it.
fn count_ipfix_records(data: &[u8]) -> Result<u64> {
    const VARIABLE: u16 = 65535;
    let u16_at = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    // Template id: whether it is an options template, its field lengths.
    let mut templates: HashMap<u16, (bool, Vec<u16>)> = HashMap::new();
    let (mut all, mut packets) = (0u32, 0u64);
    let mut rest = data;
    while !rest.is_empty() {
        let offset = data.len() - rest.len();
        ensure!(
            rest.len() >= 16,
            "a partial message header at byte {offset}"
        );
        let len = usize::from(u16_at(rest, 2));
        ensure!(
            u16_at(rest, 0) == 10 && (16..=rest.len()).contains(&len),
            "not an IPFIX message (version {}, length {len}) at byte {offset}",
            u16_at(rest, 0)
        );
        let sequence = u32::from_be_bytes(rest[8..12].try_into()?);
        ensure!(
            sequence == all,
            "the message at byte {offset} has sequence number {sequence}, after {all} data records"
        );
        let mut sets = &rest[16..len];
        rest = &rest[len..];
        while !sets.is_empty() {
            ensure!(
                sets.len() >= 4,
                "a partial set header in the message at byte {offset}"
            );
            let (id, set_len) = (u16_at(sets, 0), usize::from(u16_at(sets, 2)));
            ensure!(
                (4..=sets.len()).contains(&set_len),
                "set {id} of length {set_len} in the message at byte {offset}"
            );
            let mut body = &sets[4..set_len];
            sets = &sets[set_len..];
            match id {
                2 | 3 => {
                    let head = if id == 3 { 6 } else { 4 };
                    // What is left after the last template record is padding.
                    while body.len() >= head {
                        let (template, count) = (u16_at(body, 0), u16_at(body, 2));
                        body = &body[head..];
                        let mut fields = Vec::new();
                        for _ in 0..count {
                            ensure!(body.len() >= 4, "template {template} is cut short");
                            let spec = if body[0] & 0x80 != 0 { 8 } else { 4 };
                            ensure!(body.len() >= spec, "template {template} is cut short");
                            fields.push(u16_at(body, 2));
                            body = &body[spec..];
                        }
                        templates.insert(template, (id == 3, fields));
                    }
                }
                256.. => {
                    let (options, fields) = templates.get(&id).with_context(|| {
                        format!("a data set of template {id} before the template")
                    })?;
                    let least: usize = fields
                        .iter()
                        .map(|&l| if l == VARIABLE { 1 } else { usize::from(l) })
                        .sum();
                    ensure!(least > 0, "template {id} has records of no bytes");
                    // What is left shorter than a record is padding.
                    while body.len() >= least {
                        for &field in fields {
                            let field = match field {
                                VARIABLE if body.first() == Some(&255) && body.len() >= 3 => {
                                    3 + usize::from(u16_at(body, 1))
                                }
                                VARIABLE => 1 + usize::from(body[0]),
                                fixed => usize::from(fixed),
                            };
                            ensure!(
                                body.len() >= field,
                                "a record of template {id} is cut short"
                            );
                            body = &body[field..];
                        }
                        all = all.wrapping_add(1);
                        packets += u64::from(!options);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(packets)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The number before `suffix` in tcpdump's exit statistics.
fn tcpdump_count(lines: &[String], suffix: &str) -> Result<u64> {
    lines
        .iter()
        .find_map(|l| l.strip_suffix(suffix))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no `N {suffix}` line from tcpdump"))
}

fn nft(script: &str) -> Result<()> {
    run(Command::new("nft").args(script.split_whitespace()))
}

/// Stops a tool with `signal` and reaps it: the guest's busy seconds and
/// the time when it had exited, and the tool's own CPU seconds (those of
/// the children reaped meanwhile, which is only the tool).
fn stop_tool(proc: &mut Spawned, signal: libc::c_int) -> Result<(f64, Instant, f64)> {
    let reaped_cpu = rusage_seconds(libc::RUSAGE_CHILDREN);
    proc.signal(signal)?;
    proc.wait_success(DEADLINE)?;
    let (busy_at_exit, exited) = (busy_seconds()?, Instant::now());
    Ok((
        busy_at_exit,
        exited,
        rusage_seconds(libc::RUSAGE_CHILDREN) - reaped_cpu,
    ))
}

/// Table NFT_TABLE with a base chain `out` at the IPv4 output hook.
fn nft_output_chain() -> Result<()> {
    nft(&format!("add table ip {NFT_TABLE}"))?;
    nft(&format!(
        "add chain ip {NFT_TABLE} out {{ type filter hook output priority 0 ; }}"
    ))
}

/// What a tool said once drained.
#[derive(Default)]
struct Drained {
    /// Guest-wide busy seconds (`busy_seconds`) when the tool had exited:
    /// reading back and removing its file is the bench's work, not the tool's.
    busy_at_exit: f64,
    /// When the tool had exited (None: there was no tool).
    exited: Option<Instant>,
    records: Option<u64>,
    file_lines: Option<u64>,
    ipfix_records: Option<u64>,
    dropped: Option<u64>,
    /// The tool's own CPU seconds over its whole run (its rusage once reaped).
    tool_cpu_seconds: Option<f64>,
    summary: Option<Summary>,
}

/// A tool running during one measurement.
enum Tool {
    None,
    Nfwatch {
        proc: Spawned,
        out: PathBuf,
        /// `--format ipfix`: a file of messages, not lines.
        ipfix: bool,
        /// `nfwatch flows`: its records are flows, the packets in them
        /// are what it recorded.
        flows: bool,
    },
    Tcpdump {
        proc: Spawned,
        out: PathBuf,
    },
    /// (9)'s loop on the other vCPU.
    CpuLoop {
        proc: Spawned,
    },
}

impl Bench<'_> {
    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    fn nfwatch(
        &self,
        tag: &str,
        srcs: &[String],
        format: &str,
        rcvbuf: Option<u64>,
    ) -> Result<Tool> {
        self.nfwatch_as("watch", tag, srcs, format, rcvbuf)
    }

    /// `nfwatch subcommand` (watch or flows).
    fn nfwatch_as(
        &self,
        subcommand: &str,
        tag: &str,
        srcs: &[String],
        format: &str,
        rcvbuf: Option<u64>,
    ) -> Result<Tool> {
        let out = Path::new(TMP).join(format!("{tag}.{format}"));
        let mut cmd = Command::new(&self.args.nfwatch);
        cmd.args([subcommand, "--format", format, "-o"]).arg(&out);
        for src in srcs {
            cmd.args(["--src", src]);
        }
        if let Some(bytes) = rcvbuf {
            cmd.args(["--rcvbuf", &bytes.to_string()]);
        }
        let mut proc = Spawned::start(&mut cmd, &self.log(&format!("{tag}.nfwatch.log")))?;
        proc.wait_line("nfwatch's `subscribed to` line", DEADLINE, |l| {
            l.starts_with(SUBSCRIBED)
        })?;
        Ok(Tool::Nfwatch {
            proc,
            out,
            ipfix: format == "ipfix",
            flows: subcommand == "flows",
        })
    }

    fn tcpdump(&self, tag: &str, interface: &str) -> Result<Tool> {
        let out = Path::new(TMP).join(format!("{tag}.pcap"));
        let nflog = interface.starts_with("nflog");
        let snaplen = if nflog { NFLOG_SNAPLEN } else { SNAPLEN };
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-i", interface, "-n", "-Z", "root", "-s", snaplen])
            .args(["-B", TCPDUMP_BUFFER_KIB, "-w"])
            .arg(&out);
        if !nflog {
            cmd.args(["src", "host", SRC]);
        }
        let mut proc = Spawned::start(&mut cmd, &self.log(&format!("{tag}.tcpdump.log")))?;
        proc.wait_line("tcpdump's `listening on` line", DEADLINE, |l| {
            l.contains("listening on")
        })?;
        Ok(Tool::Tcpdump { proc, out })
    }

    fn generate(&self, tag: &str, proto: &str) -> Result<GenReport> {
        let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
        let mut cmd = Command::new(xtask);
        let (src, dst) = ends(proto);
        let gen_proto = if proto == "tcp" { "tcp" } else { "udp" };
        cmd.args(gen_args(gen_proto, src, dst, self.args.seconds));
        let mut gen = Spawned::start(&mut cmd, &self.log(&format!("{tag}.gen.log")))?;
        gen.wait_success(Duration::from_secs_f64(self.args.seconds) + DEADLINE)?;
        let lines = gen.lines();
        let line = lines
            .iter()
            .find(|l| l.starts_with('{'))
            .context("no report from the generator")?;
        serde_json::from_str(line).with_context(|| format!("bad generator report {line}"))
    }

    /// Starts configuration `config`'s tool.
    fn start(&self, tag: &str, proto: &str, config: usize) -> Result<Tool> {
        let want_module = (1..=4).contains(&config)
            || [8, IDLE_HOOKED, IPV6_UNMATCHED, IPFIX_ALL, FLOWS_ALL].contains(&config);
        // Unloading unregisters the hooks: (1) is a module never subscribed to.
        if want_module && !module_loaded() {
            insmod(&self.args.module)?;
        } else if (!want_module || config == 1) && module_loaded() {
            rmmod()?;
            if want_module {
                insmod(&self.args.module)?;
            }
        }
        let all = [format!("{SRC}/32")];
        if NFT_CONFIGS.contains(&config) {
            nft_output_chain()?;
        }
        Ok(match config {
            0 | 1 => Tool::None,
            2 => self.nfwatch(tag, &unmatched_prefixes(), "jsonl", None)?,
            3 => self.nfwatch(tag, &all, "jsonl", None)?,
            4 => self.nfwatch(tag, &all, "text", None)?,
            5 => self.tcpdump(tag, device(proto))?,
            6 => {
                nft(&format!(
                    "add rule ip {NFT_TABLE} out ip saddr {SRC} log group 1"
                ))?;
                self.tcpdump(tag, "nflog:1")?
            }
            7 | IPV6_NOTHING => Tool::None,
            8 => self.nfwatch(tag, &unmatched_prefixes(), "jsonl", None)?,
            IDLE_HOOKED => {
                hooks_left_idle()?;
                Tool::None
            }
            IPV6_UNMATCHED => self.nfwatch(tag, &unmatched_prefixes6(), "jsonl", None)?,
            IPFIX_ALL => self.nfwatch(tag, &all, "ipfix", None)?,
            FLOWS_ALL => self.nfwatch_as("flows", tag, &all, "jsonl", None)?,
            BUSY_NEIGHBOUR => {
                // A shell builtin loop: user-space work only. The scheduler
                // keeps it and the generator on different vCPUs.
                let mut cmd = Command::new("sh");
                cmd.args(["-c", "trap 'exit 0' TERM; while :; do :; done"]);
                let proc = Spawned::start(&mut cmd, &self.log(&format!("{tag}.loop.log")))?;
                Tool::CpuLoop { proc }
            }
            _ => bail!("no configuration {config}"),
        })
    }

    /// Stops configuration `config`'s `tool` once drained, and removes
    /// what `start` set up for it.
    fn stop(config: usize, tool: Tool) -> Result<Drained> {
        let drained = Self::drain(tool);
        if NFT_CONFIGS.contains(&config) {
            nft(&format!("delete table ip {NFT_TABLE}"))?;
        }
        drained
    }

    /// Stops `tool` once drained: records (nfwatch: those its summary says
    /// it wrote), what its file holds, dropped.
    fn drain(tool: Tool) -> Result<Drained> {
        match tool {
            Tool::None => Ok(Drained {
                busy_at_exit: busy_seconds()?,
                ..Drained::default()
            }),
            Tool::Nfwatch {
                mut proc,
                out,
                ipfix,
                flows,
            } => {
                let (busy_at_exit, exited, tool_cpu_seconds) = stop_tool(&mut proc, libc::SIGTERM)?;
                let summary = Summary::parse(&proc.lines())?;
                // An IPFIX file has no lines: its data records are counted instead.
                let (file_lines, ipfix_records) = if ipfix {
                    let data = std::fs::read(&out)
                        .with_context(|| format!("cannot read {}", out.display()))?;
                    let records = count_ipfix_records(&data)
                        .with_context(|| format!("cannot read {} as IPFIX", out.display()))?;
                    (None, Some(records))
                } else {
                    (Some(count_lines(&out)?), None)
                };
                std::fs::remove_file(&out)?;
                Ok(Drained {
                    busy_at_exit,
                    exited: Some(exited),
                    records: if flows {
                        summary.kernel.map(|[_, delivered, _]| delivered)
                    } else {
                        Some(summary.written)
                    },
                    file_lines,
                    ipfix_records,
                    dropped: Some(summary.lost_in_kernel + summary.overruns),
                    tool_cpu_seconds: Some(tool_cpu_seconds),
                    summary: Some(summary),
                })
            }
            Tool::CpuLoop { mut proc } => {
                let (busy_at_exit, exited, tool_cpu_seconds) = stop_tool(&mut proc, libc::SIGTERM)?;
                Ok(Drained {
                    busy_at_exit,
                    exited: Some(exited),
                    tool_cpu_seconds: Some(tool_cpu_seconds),
                    ..Drained::default()
                })
            }
            Tool::Tcpdump { mut proc, out } => {
                let mut last = (file_size(&out), Instant::now());
                wait_until("tcpdump's file to stop growing", DEADLINE, || {
                    let size = file_size(&out);
                    if size != last.0 {
                        last = (size, Instant::now());
                    }
                    Ok((last.1.elapsed() >= PCAP_SETTLED).then_some(()))
                })?;
                let (busy_at_exit, exited, tool_cpu_seconds) = stop_tool(&mut proc, libc::SIGINT)?;
                let lines = proc.lines();
                let captured = tcpdump_count(&lines, " packets captured")?;
                let dropped = tcpdump_count(&lines, " packets dropped by kernel")?;
                std::fs::remove_file(&out)?;
                Ok(Drained {
                    busy_at_exit,
                    exited: Some(exited),
                    records: Some(captured),
                    dropped: Some(dropped),
                    tool_cpu_seconds: Some(tool_cpu_seconds),
                    ..Drained::default()
                })
            }
        }
    }

    fn measure(&self, proto: &str, config: usize, round: usize) -> Result<Sample> {
        let tag = format!("r{round}-{proto}-c{config}");
        let tool = self.start(&tag, proto, config)?;
        let report = self.generate(&tag, proto);
        let gen_end = Instant::now();
        let drained = Self::stop(config, tool);
        let report = report?;
        let drained = drained?;
        let busy_end = if config <= 1 || config == IDLE_HOOKED {
            report.busy_end
        } else {
            drained.busy_at_exit
        };
        Ok(Sample {
            proto: proto.into(),
            config,
            round,
            packets: report.packets,
            gen_seconds: report.seconds,
            gen_cpu_seconds: report.cpu_seconds,
            records: drained.records,
            file_lines: drained.file_lines,
            ipfix_records: drained.ipfix_records,
            dropped: drained.dropped,
            tool_cpu_seconds: drained.tool_cpu_seconds,
            busy_seconds: busy_end - report.busy_start,
            drain_seconds: drained
                .exited
                .map_or(0.0, |exited| (exited - gen_end).as_secs_f64()),
        })
    }

    /// nfwatch with a small receive buffer: written + lost must equal matched.
    fn accounting(&self, proto: &str) -> Result<Accounting> {
        if !module_loaded() {
            insmod(&self.args.module)?;
        }
        let tag = format!("accounting-{proto}");
        let before = matched(&self.args.nfwatch)?;
        let tool = self.nfwatch(&tag, &[format!("{SRC}/32")], "jsonl", Some(SMALL_RCVBUF))?;
        let report = self.generate(&tag, proto)?;
        let drained = Self::drain(tool)?;
        let summary = drained.summary.context("no nfwatch summary")?;
        let delta = matched(&self.args.nfwatch)? - before;
        let exact = summary
            .kernel
            .is_some_and(|[m, _, _]| m == summary.written + summary.lost_in_kernel && m == delta);
        Ok(Accounting {
            proto: proto.into(),
            rcvbuf: SMALL_RCVBUF,
            packets: report.packets,
            written: summary.written,
            file_lines: drained.file_lines.unwrap_or(0),
            lost_in_kernel: summary.lost_in_kernel,
            overruns: summary.overruns,
            gaps: summary.gaps,
            kernel: summary.kernel,
            stats_matched_delta: delta,
            exact,
        })
    }
}

impl Bench<'_> {
    /// `perf record -a -g` (cpu-clock: TCG has no PMU) over one UDP run of
    /// `config`; the report goes to perf-config<config>.txt.
    fn profile(&self, config: usize) -> Result<()> {
        let data = Path::new(TMP).join("perf.data");
        let tool = self.start(&format!("perf-c{config}"), "udp", config)?;
        // perf runs the generator as its workload, so it is ready before
        // the first packet and stops with the last one; no build-id pass.
        let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
        let mut perf = Spawned::start(
            Command::new("perf")
                .args(["record", "-a", "-g", "-e", "cpu-clock", "-F", "999"])
                .args(["--no-buildid", "--no-buildid-cache", "-o"])
                .arg(&data)
                .arg("--")
                .arg(xtask)
                .args(gen_args("udp", SRC, UDP_DST, self.args.seconds)),
            &self.log("perf-record.log"),
        )?;
        perf.wait_success(PERF_DEADLINE)?;
        let lines = perf.lines();
        let line = lines
            .iter()
            .find(|l| l.starts_with('{'))
            .context("no report from the generator under perf")?;
        let report: GenReport =
            serde_json::from_str(line).with_context(|| format!("bad generator report {line}"))?;
        let drained = Self::stop(config, tool)?;
        // Where the time went by program, then by function; kernel symbols
        // from /proc/kallsyms (no vmlinux in the guest, no build-ids recorded).
        let perf_report = |sort: &str, limit: &str| {
            stdout_of(
                Command::new("perf")
                    .args(["report", "--stdio", "--no-children", "-g", "none"])
                    .args(["--kallsyms", "/proc/kallsyms", "--sort", sort])
                    .args(["--percent-limit", limit, "-i"])
                    .arg(&data),
            )
        };
        let head = format!(
            "# {}, UDP: {} packets, {:?} records\n",
            config_name(config).unwrap_or("?"),
            report.packets,
            drained.records
        );
        let text = head + &perf_report("comm,dso", "0.1")? + &perf_report("comm,dso,sym", "0.2")?;
        std::fs::write(self.args.out.join(format!("perf-config{config}.txt")), text)?;
        std::fs::remove_file(&data)?;
        Ok(())
    }
}

/// The page at crate::insns::TRIGGER: each call of its one `ret` has the
/// tcg-insns plugin write its counts since the last call to a new dump.
struct Trigger {
    call: extern "C" fn(),
    calls: usize,
}

impl Trigger {
    fn map() -> Result<Self> {
        const PAGE: usize = 4096;
        let at = crate::insns::TRIGGER as *mut libc::c_void;
        // SAFETY: a new anonymous page at an address nothing else maps
        // (MAP_FIXED_NOREPLACE fails rather than replace a mapping); it is
        // written while writable, then made executable, and never unmapped.
        unsafe {
            let page = libc::mmap(
                at,
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            );
            ensure!(
                page == at,
                "cannot map the trigger page at {at:?}: {}",
                std::io::Error::last_os_error()
            );
            page.cast::<u8>().write(0xc3); // ret
            ensure!(
                libc::mprotect(page, PAGE, libc::PROT_READ | libc::PROT_EXEC) == 0,
                "cannot make the trigger page executable: {}",
                std::io::Error::last_os_error()
            );
            Ok(Self {
                call: std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(page),
                calls: 0,
            })
        }
    }

    /// Has the plugin write a dump; returns its number.
    fn pull(&mut self) -> usize {
        (self.call)();
        self.calls += 1;
        self.calls - 1
    }
}

/// The guest's text symbols (the module's too, while it is loaded).
fn save_text_symbols(path: &Path) -> Result<()> {
    let all = std::fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
    let text: String = all
        .lines()
        .filter(|l| matches!(l.split_whitespace().nth(1), Some("t" | "T" | "w" | "W")))
        .flat_map(|l| [l, "\n"])
        .collect();
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

impl Bench<'_> {
    /// One UDP run of `config` between two pulls of `trigger`: the second
    /// pull's dump holds the run.
    fn insns(&self, trigger: &mut Trigger, config: usize) -> Result<crate::insns::Run> {
        let tag = format!("insns-c{config}");
        let proto = insns_proto(config);
        let tool = self.start(&tag, proto, config)?;
        save_text_symbols(&self.args.out.join(crate::insns::kallsyms_file(config)))?;
        trigger.pull();
        let report = self.generate(&tag, proto);
        let dump = trigger.pull();
        let drained = Self::stop(config, tool);
        let report = report?;
        drained?;
        Ok(crate::insns::Run {
            config,
            dump,
            packets: report.packets,
        })
    }
}

/// `guest-bench --insns`: every configuration once but the busy neighbour's.
fn insns(bench: &Bench) -> Result<()> {
    let mut trigger = Trigger::map()?;
    let mut runs = Vec::new();
    let configs = (0..config_names().count()).filter(|&c| c != BUSY_NEIGHBOUR);
    for config in configs {
        let run = bench.insns(&mut trigger, config)?;
        println!(
            "insns: config {config}: {} packets, dump {}",
            run.packets, run.dump
        );
        runs.push(run);
    }
    let path = bench.args.out.join(crate::insns::RUNS);
    std::fs::write(&path, serde_json::to_string_pretty(&runs)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The module's global matched counter.
fn matched(nfwatch: &Path) -> Result<u64> {
    let text = stdout_of(Command::new(nfwatch).args(["stats", "--json"]))?;
    let value: serde_json::Value =
        serde_json::from_str(text.trim()).with_context(|| format!("bad stats output: {text}"))?;
    value["global"]["matched"]
        .as_u64()
        .with_context(|| format!("no global.matched in {text}"))
}

/// `guest-bench`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let protos = if args.proto.is_empty() {
        vec!["udp".to_string(), "tcp".to_string()]
    } else {
        args.proto.clone()
    };
    for proto in &protos {
        ensure!(proto == "udp" || proto == "tcp", "unknown protocol {proto}");
    }
    let bench = Bench {
        args,
        logs: args.out.join("logs"),
    };
    std::fs::create_dir_all(&bench.logs)?;
    setup().context("bench network and tmpfs")?;
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let mut listener = Spawned::start(
        net::in_ns(None, &xtask.to_string_lossy()).args(["guest-peer", "--tcp", TCP_DST]),
        &bench.log("listener.log"),
    )?;
    listener.wait_line("the TCP listener", DEADLINE, |l| l == "ready")?;
    if args.insns {
        insns(&bench)?;
        if module_loaded() {
            rmmod()?;
        }
        return Ok(());
    }
    let mut raw = Raw {
        kernel: stdout_of(Command::new("uname").arg("-r"))?
            .trim()
            .to_string(),
        rounds: args.rounds,
        seconds: args.seconds,
        byte_cost: Some(crate::bytecost::measure()),
        ..Raw::default()
    };
    let mut configs: Vec<usize> = (0..CONFIGS.len()).collect();
    configs.extend(ROUND_EXTRA);
    if online_cpus()? > 1 {
        configs.push(BUSY_NEIGHBOUR);
    }
    for round in 0..args.rounds {
        for proto in &protos {
            for &config in &configs {
                let started = Instant::now();
                match bench.measure(proto, config, round) {
                    Ok(s) => {
                        println!(
                            "round {round} {proto} config {config}: {} packets in {:.2} s, records {:?} (in the file {:?}), dropped {:?}, busy {:.2} s, drain {:.2} s ({:.1} s in all)",
                            s.packets, s.gen_seconds, s.records, s.file_lines.or(s.ipfix_records), s.dropped, s.busy_seconds, s.drain_seconds,
                            started.elapsed().as_secs_f64()
                        );
                        raw.samples.push(s);
                    }
                    Err(e) => {
                        let msg = format!("round {round} {proto} config {config}: {e:#}");
                        println!("FAILED {msg}");
                        raw.errors.push(msg);
                    }
                }
                write_raw(&args.out, &raw)?;
            }
        }
    }
    for proto in &protos {
        match bench.accounting(proto) {
            Ok(a) => {
                println!("accounting {proto}: {a:?}");
                raw.accounting.push(a);
            }
            Err(e) => raw.errors.push(format!("accounting {proto}: {e:#}")),
        }
        write_raw(&args.out, &raw)?;
    }
    if args.perf {
        for config in (0..CONFIGS.len()).chain([IPFIX_ALL, FLOWS_ALL]) {
            if let Err(e) = bench.profile(config) {
                raw.errors
                    .push(format!("perf profile of config {config}: {e:#}"));
                write_raw(&args.out, &raw)?;
            }
        }
    }
    if module_loaded() {
        rmmod()?;
    }
    std::fs::write(
        args.out.join("dmesg.txt"),
        stdout_of(&mut Command::new("dmesg"))?,
    )?;
    Ok(())
}

/// The guest's online CPUs.
fn online_cpus() -> Result<usize> {
    Ok(std::thread::available_parallelism()
        .context("cannot count the CPUs")?
        .get())
}

fn write_raw(out: &Path, raw: &Raw) -> Result<()> {
    let path = out.join(RAW);
    std::fs::write(&path, serde_json::to_string_pretty(raw)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::count_ipfix_records;
    use ipfix::element::Element;
    use ipfix::{FieldSpec, Message, RecordWriter, Template, VARIABLE_LENGTH};

    /// Messages as nfwatch writes them: an options template and its
    /// records, two data templates with a variable-length field (one value
    /// in the three-byte form) and an enterprise field, and records of both
    /// in one message.
    #[test]
    fn ipfix_data_records_are_counted_set_by_set() {
        let field = |id, len| FieldSpec::new(Element::iana(id), len);
        let options = Template::options(258, 1, vec![field(346, 4), field(341, VARIABLE_LENGTH)]);
        let data = |id| {
            Template::data(
                id,
                vec![
                    field(8, 4),
                    field(82, VARIABLE_LENGTH),
                    FieldSpec::new(Element::enterprise(32473, 3), VARIABLE_LENGTH),
                ],
            )
        };
        let mut file = Vec::new();
        let mut sequence = 0;
        let mut message = Message::new(1024);
        assert!(message.add_template(&options));
        for name in ["a", "bc"] {
            assert!(message.add_record(258, |out| {
                RecordWriter::new(out).u32(32473).variable(name.as_bytes());
            }));
        }
        assert!(message.add_template(&data(256)) && message.add_template(&data(257)));
        file.extend_from_slice(message.finish(0, sequence, 7));
        sequence += message.data_records();
        message.clear();
        let long = vec![b'x'; 300];
        for (template, name) in [(256, &b"eth0"[..]), (256, &long), (257, b""), (256, b"lo")] {
            assert!(message.add_record(template, |out| {
                RecordWriter::new(out)
                    .u32(1)
                    .variable(name)
                    .variable(b"comm");
            }));
        }
        file.extend_from_slice(message.finish(0, sequence, 7));
        assert_eq!(count_ipfix_records(&file).unwrap(), 4);

        // A wrong sequence number, a message cut short, no template.
        let mut wrong = file.clone();
        let second = usize::from(u16::from_be_bytes([file[2], file[3]]));
        wrong[second + 11] += 1;
        assert!(count_ipfix_records(&wrong).is_err());
        assert!(count_ipfix_records(&file[..file.len() - 1]).is_err());
        let mut orphan = file[second..].to_vec();
        orphan[8..12].fill(0);
        let error = count_ipfix_records(&orphan).unwrap_err().to_string();
        assert!(error.contains("before the template"), "{error}");
        assert_eq!(count_ipfix_records(&[]).unwrap(), 0);
    }
}
