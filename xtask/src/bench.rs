//! `cargo xtask bench`: nfwatch against tcpdump and NFLOG in one 6.12 VM.
//! The guest (guest/bench.rs) measures; the host builds release
//! binaries, boots, and turns the raw samples into medians and a table.

use crate::bytecost::{self, ByteCost};
use crate::host;
use crate::util::{self, run, stdout_of, step};
use crate::vm::Machine;
use crate::{deps, kernels, kmod};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The configurations, in the order each round runs them.
pub const CONFIGS: &[&str] = &[
    "0 nothing watching (module not loaded)",
    "1 module loaded, nobody subscribed",
    "2 nfwatch watch, 256 prefixes matching nothing",
    "3 nfwatch watch --format jsonl (all traffic)",
    "4 nfwatch watch --format text (all traffic)",
    "5 tcpdump -w on the egress device",
    "6 nft `log group 1` + tcpdump -i nflog:1 -w",
];

/// `--insns` also runs (0) and (2) on a host that already has a hook at
/// LOCAL_OUT, as most have (an nftables or iptables output chain, conntrack):
/// there Netfilter's cost of calling hooks at all is paid before nfwatch
/// comes, and (8) against (7) is what nfwatch adds.
pub const INSNS_EXTRA: &[&str] = &[
    "7 = 0 + an empty nftables output chain",
    "8 = 2 + the same chain",
];

/// The 2-vCPU bench also runs (9) in every round: no tool, and a loop
/// keeping the other vCPU busy. Every tool that reads and writes keeps it
/// busy, and on multi-threaded TCG that alone slows the sender, so (9) is
/// what this host leaves (3) to (6) at best.
pub const SMP_EXTRA: &[&str] = &["9 = 0 + a CPU loop on the other vCPU (no tool)"];

/// (9)'s number.
pub const BUSY_NEIGHBOUR: usize = CONFIGS.len() + INSNS_EXTRA.len();

/// (10) runs beside (1) in every mode: the module as a host has it once
/// the first subscription has ended. Its hooks stay registered until the
/// namespace goes (unregistering them would drop the packets other
/// software holds in NFQUEUE), so every packet still calls them. `--insns`
/// also runs (0) and (2) with IPv6 traffic, for the IPv6 prefilter. (13)
/// is (3) written as an IPFIX file, and (14) the same packets as flows
/// aggregated in the kernel; both run in every mode like (3).
pub const LATER_EXTRA: &[&str] = &[
    "10 = 1 after a subscription came and went (hooks registered, idle)",
    "11 = 0 with IPv6 traffic",
    "12 = 2 with IPv6 traffic and 256 IPv6 prefixes matching nothing",
    "13 nfwatch watch --format ipfix (all traffic)",
    "14 nfwatch flows --format jsonl (all traffic)",
];

/// The numbers of (10), (11), (12), (13) and (14).
pub const IDLE_HOOKED: usize = BUSY_NEIGHBOUR + SMP_EXTRA.len();
pub const IPV6_NOTHING: usize = IDLE_HOOKED + 1;
pub const IPV6_UNMATCHED: usize = IPV6_NOTHING + 1;
pub const IPFIX_ALL: usize = IPV6_UNMATCHED + 1;
pub const FLOWS_ALL: usize = IPFIX_ALL + 1;

/// The configurations each round runs beyond CONFIGS (and (9) on 2 vCPUs).
pub const ROUND_EXTRA: &[usize] = &[IDLE_HOOKED, IPFIX_ALL, FLOWS_ALL];

/// The order tables show configurations in: by number, but for (13) and
/// (14) after (4), beside the other formats.
pub fn table_order() -> impl Iterator<Item = usize> {
    (0..=4)
        .chain([IPFIX_ALL, FLOWS_ALL])
        .chain((5..config_names().count()).filter(|&c| c != IPFIX_ALL && c != FLOWS_ALL))
}

/// Every configuration's name, by number, as the tables show it.
pub fn config_names() -> impl Iterator<Item = &'static str> {
    CONFIGS
        .iter()
        .chain(INSNS_EXTRA)
        .chain(SMP_EXTRA)
        .chain(LATER_EXTRA)
        .copied()
}

/// Configuration `config`'s name, as the table shows it.
pub fn config_name(config: usize) -> Option<&'static str> {
    config_names().nth(config)
}

/// What a guest lost to the emulator itself prints (see vm::Machine::Smp2):
/// such a boot is run again, once.
const EMULATOR_LOSS: &str = "Oops: int3";

/// Raw samples file the guest writes (in target/vm/bench/).
pub const RAW: &str = "bench-raw.json";

/// One measurement: one configuration, one protocol, one round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub proto: String,
    pub config: usize,
    pub round: usize,
    /// Packets the generator sent (UDP datagrams; TCP segments).
    pub packets: u64,
    pub gen_seconds: f64,
    /// The generator's own CPU time (getrusage).
    pub gen_cpu_seconds: f64,
    /// Records written / packets captured by the tool, if it records.
    pub records: Option<u64>,
    /// Lines in nfwatch's output file (a cross-check of `records`; none
    /// for an IPFIX file).
    pub file_lines: Option<u64>,
    /// The packets' data records in nfwatch's IPFIX file, read set by set:
    /// the IPFIX file's cross-check of `records` (absent for other tools,
    /// and in older results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipfix_records: Option<u64>,
    /// Drops the tool itself reports (nfwatch: lost + overruns; tcpdump:
    /// dropped by kernel).
    pub dropped: Option<u64>,
    /// The tool's own CPU time over its whole run (getrusage of the reaped
    /// process; absent in older results).
    #[serde(default)]
    pub tool_cpu_seconds: Option<f64>,
    /// Guest-wide busy CPU seconds from the start of sending until the tool
    /// had drained and exited.
    pub busy_seconds: f64,
    /// From the generator's end until the tool had exited.
    pub drain_seconds: f64,
}

/// The small-buffer run: does nfwatch account for every matched packet?
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accounting {
    pub proto: String,
    pub rcvbuf: u64,
    pub packets: u64,
    pub written: u64,
    pub file_lines: u64,
    pub lost_in_kernel: u64,
    pub overruns: u64,
    pub gaps: u64,
    /// matched, delivered, lost from the CLI's `kernel counted` line.
    pub kernel: Option<[u64; 3]>,
    /// Global `matched` of `nfwatch stats --json`, before and after.
    pub stats_matched_delta: u64,
    /// written + lost_in_kernel == matched (kernel counted) == stats delta.
    pub exact: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Raw {
    pub kernel: String,
    pub rounds: usize,
    pub seconds: f64,
    pub samples: Vec<Sample>,
    pub accounting: Vec<Accounting>,
    /// Measurements that failed (they are missing from `samples`).
    pub errors: Vec<String>,
    /// The guest's cost of copying and clearing bytes, before the rounds
    /// (absent in older results).
    #[serde(default)]
    pub byte_cost: Option<ByteCost>,
}

/// Medians over the rounds of one (protocol, configuration).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub proto: String,
    pub config: usize,
    pub name: String,
    pub rounds: usize,
    pub pps: f64,
    /// Over rounds, pps / pps of (0) in the same round: median and quartiles.
    pub pps_ratio: Option<Spread>,
    /// Median of records / packets sent.
    pub recorded: Option<f64>,
    pub dropped: Option<f64>,
    pub cpu_per_mpkt: f64,
    /// Over rounds, CPU per packet / CPU per packet of (0): median and quartiles.
    pub cpu_ratio: Option<Spread>,
    /// Medians of the sender's and the tool's own CPU µs per packet: where
    /// the hook runs, and the process that reads and writes.
    pub sender_us: f64,
    pub tool_us: Option<f64>,
}

/// The median of some values and their lower and upper quartiles: on these
/// machines a round's ratio can be off by half, so the table shows how far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        Some(Self {
            median: median(&v)?,
            q1: median(&v[..v.len() / 2]).unwrap_or(v[0]),
            q3: median(&v[v.len().div_ceil(2)..]).unwrap_or(v[0]),
        })
    }

    fn show(&self, digits: usize) -> String {
        format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            self.median, self.q1, self.q3
        )
    }
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn pps(s: &Sample) -> f64 {
    s.packets as f64 / s.gen_seconds
}

fn cpu_per_mpkt(s: &Sample) -> f64 {
    s.busy_seconds / (s.packets as f64 / 1e6)
}

/// `f(sample) / f(baseline of the same round)` over rounds: paired by round.
fn paired_ratio(
    samples: &[&Sample],
    baseline: &[&Sample],
    f: impl Fn(&Sample) -> f64,
) -> Option<Spread> {
    let ratios: Vec<f64> = samples
        .iter()
        .filter_map(|s| {
            let base = baseline.iter().find(|b| b.round == s.round)?;
            Some(f(s) / f(base))
        })
        .collect();
    Spread::of(&ratios)
}

pub fn summarize(samples: &[Sample]) -> Vec<Row> {
    let mut protos: Vec<&str> = Vec::new();
    for s in samples {
        if !protos.contains(&s.proto.as_str()) {
            protos.push(&s.proto);
        }
    }
    let mut rows = Vec::new();
    for proto in protos {
        let of = |config: usize| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|s| s.proto == proto && s.config == config)
                .collect()
        };
        let baseline = of(0);
        for config in table_order() {
            let name = config_name(config).expect("table_order gives configurations");
            let these = of(config);
            if these.is_empty() {
                continue;
            }
            let values = |f: &dyn Fn(&Sample) -> Option<f64>| -> Option<f64> {
                median(&these.iter().filter_map(|s| f(s)).collect::<Vec<_>>())
            };
            rows.push(Row {
                proto: proto.to_string(),
                config,
                name: name.to_string(),
                rounds: these.len(),
                pps: values(&|s| Some(pps(s))).unwrap_or(f64::NAN),
                pps_ratio: paired_ratio(&these, &baseline, pps),
                recorded: values(&|s| s.records.map(|r| r as f64 / s.packets as f64)),
                dropped: values(&|s| s.dropped.map(|d| d as f64)),
                cpu_per_mpkt: values(&|s| Some(cpu_per_mpkt(s))).unwrap_or(f64::NAN),
                cpu_ratio: paired_ratio(&these, &baseline, cpu_per_mpkt),
                sender_us: values(&|s| Some(s.gen_cpu_seconds / s.packets as f64 * 1e6))
                    .unwrap_or(f64::NAN),
                tool_us: values(&|s| s.tool_cpu_seconds.map(|t| t / s.packets as f64 * 1e6)),
            });
        }
    }
    rows
}

fn opt(value: Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    value.map(fmt).unwrap_or_else(|| "–".into())
}

/// The markdown table of `rows`.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| proto | configuration | packets/s | vs (0) (quartiles) | recorded | dropped (tool) | CPU s / M packets | vs (0) (quartiles) | sender's own µs / packet | tool's own µs / packet |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {:.2} | {} | {:.2} | {} |\n",
            r.proto,
            r.name,
            r.pps,
            r.pps_ratio.map_or_else(|| "–".into(), |x| x.show(3)),
            opt(r.recorded, |x| format!("{:.2}%", x * 100.0)),
            opt(r.dropped, |x| format!("{x:.0}")),
            r.cpu_per_mpkt,
            r.cpu_ratio.map_or_else(|| "–".into(), |x| x.show(2)),
            r.sender_us,
            opt(r.tool_us, |x| format!("{x:.2}")),
        ));
    }
    out
}

/// What was measured where, when, and how to measure it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// The command that produced it, with its options.
    pub command: String,
    pub date: String,
    /// The commit measured (`git describe --always --dirty`).
    pub commit: String,
    pub kernel: String,
}

/// What target/bench/results.json (results-icount.json) holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub measured: Measured,
    pub vcpus: u32,
    /// Whether guest time counted instructions (`--icount`).
    pub icount: bool,
    pub rounds: usize,
    pub seconds_per_run: f64,
    pub rows: Vec<Row>,
    pub accounting: Vec<Accounting>,
    /// The cost of copying and clearing bytes in the guest and, measured
    /// the same way after the run, on the host.
    pub byte_cost_guest: Option<ByteCost>,
    pub byte_cost_host: ByteCost,
    pub errors: Vec<String>,
    pub samples: Vec<Sample>,
}

pub struct BenchOpts {
    pub rounds: usize,
    pub seconds: f64,
    pub protos: Vec<String>,
    /// Profile each configuration with perf (perf-config<N>.txt in the VM's output).
    pub perf: bool,
    /// Measure on Machine::Icount: instructions, not the host's speed.
    pub icount: bool,
    /// Instructions by function instead (see crate::insns).
    pub insns: bool,
    /// Then write docs/performance.md (see crate::perfdoc).
    pub write_docs: bool,
}

impl BenchOpts {
    /// The command line that runs this bench again.
    fn command(&self) -> String {
        let mut command = String::from("cargo xtask bench");
        if self.insns {
            command.push_str(" --insns");
        } else if self.icount {
            command.push_str(" --icount");
        }
        // --insns runs each configuration once, UDP only.
        if !self.insns {
            command.push_str(&format!(
                " --rounds {} --seconds {}",
                self.rounds, self.seconds
            ));
            for proto in &self.protos {
                command.push_str(&format!(" --proto {proto}"));
            }
        }
        if self.perf {
            command.push_str(" --perf");
        }
        command
    }
}

/// Today, as the results show it.
fn now() -> Result<String> {
    Ok(
        stdout_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
            .trim()
            .to_string(),
    )
}

/// The commit measured.
fn commit() -> Result<String> {
    let git = |args: &[&str]| -> Result<String> {
        Ok(stdout_of(
            Command::new("git")
                .current_dir(util::workspace_root())
                .args(args),
        )?
        .trim()
        .to_string())
    };
    let head = git(&["describe", "--always", "--abbrev=7"])?;
    // What --write-docs writes is not what is measured: a run after another
    // one's --write-docs measures the same commit.
    let changed = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":(exclude)docs/bench",
        ":(exclude)docs/performance.md",
        ":(exclude)README.md",
    ])?;
    Ok(if changed.is_empty() {
        head
    } else {
        format!("{head}-dirty")
    })
}

/// `--insns`: the report, printed and written to target/bench/`name`.
fn insns_report(
    out: &Path,
    kernel: &str,
    name: &str,
    opts: &BenchOpts,
    commit: String,
) -> Result<()> {
    let configs: Vec<&str> = config_names().collect();
    let measured = Measured {
        command: opts.command(),
        date: now()?,
        commit,
        kernel: kernel.to_string(),
    };
    let report = crate::insns::report(out, &configs, measured)?;
    let path = write_results(name, &serde_json::to_string_pretty(&report)?)?;
    step("results");
    print!("{}", report.table());
    println!("\n(written to {})", path.display());
    Ok(())
}

/// Writes target/bench/`name`.
fn write_results(name: &str, text: &str) -> Result<std::path::PathBuf> {
    let dir = util::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// `cargo xtask bench`.
pub fn bench(opts: &BenchOpts) -> Result<()> {
    if opts.rounds == 0 || opts.seconds <= 0.0 {
        bail!("--rounds and --seconds must be positive");
    }
    // Before the build: what is measured is what was built.
    let measured = commit()?;
    let vng_bin = deps::ensure()?;
    if opts.perf {
        deps::ensure_extra(&["linux-perf"])?;
    }
    let kernel = kernels::tested(Some(kernels::DEMO_SERIES))?.remove(0);
    let ko = kmod::build(&kernel, kmod::Variant::Product)?;
    step("build nfwatch and xtask (release)");
    run(host::cargo().args([
        "build",
        "--release",
        "--package",
        "nfwatch",
        "--package",
        "xtask",
        "--package",
        "tcg-insns",
    ]))?;
    let release = util::target_dir().join("release");
    let env = host::Env {
        vng_bin,
        bins: host::Binaries {
            xtask: release.join("xtask"),
            nfwatch: release.join("nfwatch"),
        },
    };
    // Separate names, so one mode's run leaves the other's results alone.
    let (machine, vm_dir, results) = if opts.insns {
        (Machine::Icount, "bench-insns", crate::perfdoc::INSNS)
    } else if opts.icount {
        (Machine::Icount, "bench-icount", crate::perfdoc::ICOUNT)
    } else {
        (Machine::Smp2Parallel, "bench", crate::perfdoc::SMP2)
    };
    step(&format!(
        "bench VM on {} (QEMU TCG, {} vCPU{}{})",
        kernel.version,
        machine.cpus(),
        if machine.cpus() == 1 { "" } else { "s" },
        if opts.icount {
            ", -icount: 1 instruction = 1 ns of guest time"
        } else {
            ""
        }
    ));
    let out = util::target_dir().join("vm").join(vm_dir);
    let mut extra = vec![
        "--rounds".to_string(),
        opts.rounds.to_string(),
        "--seconds".to_string(),
        opts.seconds.to_string(),
    ];
    for proto in &opts.protos {
        extra.extend(["--proto".to_string(), proto.clone()]);
    }
    if opts.perf {
        extra.push("--perf".into());
    }
    if opts.insns {
        extra.push("--insns".into());
    }
    let configs = CONFIGS.len() + ROUND_EXTRA.len() + SMP_EXTRA.len();
    let runs = opts.rounds * opts.protos.len().max(1) * configs + 2;
    let deadline = Duration::from_secs(600 + runs as u64 * (opts.seconds as u64 + 60));
    let run = host::GuestRun {
        cmd: "guest-bench",
        out: &out,
        extra: &extra,
        deadline,
        machine,
        plugin: opts.insns.then(|| {
            format!(
                "{},out={},trigger={:x}",
                release.join("libtcg_insns.so").display(),
                out.join(crate::insns::DUMPS).display(),
                crate::insns::TRIGGER
            )
        }),
    };
    let mut status = host::boot_guest(&env, &kernel, &ko, &run)?;
    let console = out.join("console.log");
    if !status.success()
        && std::fs::read_to_string(&console).is_ok_and(|c| c.contains(EMULATOR_LOSS))
    {
        step(&format!(
            "the guest was lost to the emulator (\"{EMULATOR_LOSS}\" in {}): booting again",
            console.display()
        ));
        status = host::boot_guest(&env, &kernel, &ko, &run)?;
    }
    // A guest that fails part way leaves the samples it took.
    if !status.success() && (opts.insns || !out.join(RAW).exists()) {
        bail!(
            "the bench guest failed ({status}); see {}",
            console.display()
        );
    }
    if opts.insns {
        insns_report(&out, &kernel.version, results, opts, measured)?;
        return finish(opts, results);
    }
    let raw = read_raw(&out)?;
    let rows = summarize(&raw.samples);
    let report = Report {
        measured: Measured {
            command: opts.command(),
            date: now()?,
            commit: measured,
            kernel: raw.kernel.clone(),
        },
        vcpus: machine.cpus(),
        icount: opts.icount,
        rounds: raw.rounds,
        seconds_per_run: raw.seconds,
        rows: rows.clone(),
        accounting: raw.accounting.clone(),
        byte_cost_guest: raw.byte_cost,
        byte_cost_host: bytecost::measure(),
        errors: raw.errors.clone(),
        samples: raw.samples.clone(),
    };
    let path = write_results(results, &serde_json::to_string_pretty(&report)?)?;
    step("results");
    println!(
        "{} on {}, {} rounds of {} s, medians ({}):\n",
        report.measured.command,
        report.measured.kernel,
        report.rounds,
        report.seconds_per_run,
        report.measured.date
    );
    print!("{}", table(&rows));
    for a in &raw.accounting {
        println!(
            "\naccounting ({}, --rcvbuf {}): {} packets, wrote {} (file {} lines), lost in kernel {}, \
             {} overruns, {} gaps; kernel counted {:?} (matched, delivered, lost); stats matched +{}: {}",
            a.proto,
            a.rcvbuf,
            a.packets,
            a.written,
            a.file_lines,
            a.lost_in_kernel,
            a.overruns,
            a.gaps,
            a.kernel,
            a.stats_matched_delta,
            if a.exact { "EXACT" } else { "NOT EXACT" }
        );
    }
    if let Some(guest) = &report.byte_cost_guest {
        println!("\n{}", bytecost::describe(guest, &report.byte_cost_host));
    }
    for e in &raw.errors {
        println!("error: {e}");
    }
    println!("\n(written to {})", path.display());
    if opts.perf {
        println!(
            "perf profiles: {}",
            out.join("perf-config<N>.txt").display()
        );
    }
    if !status.success() {
        bail!("the bench guest failed ({status}); see {}", out.display());
    }
    if !raw.errors.is_empty() {
        bail!(
            "{} measurement(s) failed; see {}",
            raw.errors.len(),
            out.display()
        );
    }
    finish(opts, results)
}

/// `--write-docs`: this run's results into docs/bench/, and
/// docs/performance.md written again from everything there.
fn finish(opts: &BenchOpts, results: &str) -> Result<()> {
    if opts.write_docs {
        crate::perfdoc::adopt(&util::target_dir().join("bench").join(results))?;
    }
    Ok(())
}

fn read_raw(dir: &Path) -> Result<Raw> {
    let path = dir.join(RAW);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(config: usize, round: usize, packets: u64, busy: f64) -> Sample {
        Sample {
            proto: "udp".into(),
            config,
            round,
            packets,
            gen_seconds: 1.0,
            gen_cpu_seconds: 0.5,
            records: (config >= 3).then_some(packets),
            file_lines: None,
            ipfix_records: None,
            dropped: (config >= 2).then_some(0),
            tool_cpu_seconds: (config >= 2).then_some(0.25),
            busy_seconds: busy,
            drain_seconds: 0.0,
        }
    }

    #[test]
    fn tables_show_every_configuration_once_with_ipfix_beside_the_formats() {
        let order: Vec<usize> = table_order().collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..config_names().count()).collect::<Vec<_>>());
        assert_eq!(order[..7], [0, 1, 2, 3, 4, IPFIX_ALL, FLOWS_ALL]);
        assert_eq!(
            config_name(IPFIX_ALL),
            Some("13 nfwatch watch --format ipfix (all traffic)")
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn quartiles_are_medians_of_the_halves() {
        let s = Spread::of(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (1.5, 3.0, 4.5));
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (1.5, 2.5, 3.5));
        let s = Spread::of(&[7.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (7.0, 7.0, 7.0));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn ratios_are_paired_by_round_and_tabled() {
        // Round 1 is twice as fast for both: the paired ratio stays 0.5.
        let samples = vec![
            sample(0, 0, 1000, 1.0),
            sample(3, 0, 500, 1.0),
            sample(0, 1, 2000, 1.0),
            sample(3, 1, 1000, 1.0),
            sample(0, 2, 1000, 1.0),
            sample(3, 2, 500, 1.0),
        ];
        let rows = summarize(&samples);
        assert_eq!(rows.len(), 2);
        let r = &rows[1];
        assert_eq!((r.config, r.rounds), (3, 3));
        assert_eq!(r.pps, 500.0);
        assert_eq!(r.pps_ratio.map(|x| x.median), Some(0.5));
        assert_eq!(r.recorded, Some(1.0));
        assert_eq!(r.cpu_ratio.map(|x| x.median), Some(2.0));
        let text = table(&rows);
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("| udp | 3 nfwatch watch --format jsonl (all traffic) | 500 | 0.500 (0.500–0.500) | 100.00% | 0 | 2000.00 | 2.00 (2.00–2.00) | 1000.00 | 500.00 |"), "{text}");
        assert!(text.contains("| 1.00 (1.00–1.00) | 500.00 | – |"), "{text}");
        assert!(
            text.contains("| 1000 | 1.000 (1.000–1.000) | – | – |"),
            "{text}"
        );
    }
}
