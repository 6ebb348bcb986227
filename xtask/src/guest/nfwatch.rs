//! Driving the nfwatch CLI: start a subscriber, stop it, check its summary,
//! read its records; `nfwatch stats --json`.

use super::proc::Spawned;
use super::Ctx;
use crate::util::stdout_of;
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long the CLI may take to subscribe or to exit (TCG is slow).
pub const DEADLINE: Duration = Duration::from_secs(90);

pub const SUBSCRIBED: &str = "nfwatch: subscribed to ";

/// The jsonl keys, in the order the CLI writes them.
const KEYS: &[&str] = &[
    "ts",
    "family",
    "proto",
    "src",
    "dst",
    "sport",
    "dport",
    "icmp_type",
    "icmp_code",
    "len",
    "ifindex",
    "ifname",
    "nexthop",
    "uid",
    "pid",
    "frag",
    "segs",
    "comm",
    "cgroup_id",
    "cgroup",
    "unit",
    "container",
    "netns",
];

/// One jsonl record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub ts: String,
    pub family: String,
    pub proto: String,
    pub src: String,
    pub dst: String,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub len: u32,
    pub ifindex: u32,
    pub ifname: PaddedName,
    pub nexthop: Option<String>,
    pub uid: Option<u32>,
    pub pid: Option<u32>,
    pub frag: bool,
    pub segs: u16,
    pub comm: Option<PaddedName>,
    pub cgroup_id: Option<u64>,
    pub cgroup: Option<PaddedName>,
    pub unit: Option<PaddedName>,
    pub container: Option<PaddedName>,
    pub netns: Option<u32>,
}

impl Record {
    /// `ts` in nanoseconds since the epoch.
    pub fn ts_nanos(&self) -> Result<i128> {
        rfc3339_nanos(&self.ts)
    }
}

/// An RFC 3339 time in nanoseconds since the epoch.
pub fn rfc3339_nanos(text: &str) -> Result<i128> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("bad time {text:?}"))?;
    Ok(time.unix_timestamp_nanos())
}

/// A jsonl `ifname`: a string, or the bytes of a name that is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PaddedName {
    Text(String),
    Bytes(Vec<u8>),
}

impl PartialEq<&str> for PaddedName {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, PaddedName::Text(text) if text == other)
    }
}

/// `--summary-json`'s object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by scenarios or shown in their logs
pub struct SummaryJson {
    pub output: String,
    pub written: u64,
    pub not_written: u64,
    pub lost_in_kernel: u64,
    pub overruns: u64,
    pub seq_gaps: u64,
    pub malformed: u64,
    pub by_socket: u64,
    pub kernel: Option<KernelCounts>,
    pub exports: Vec<ExportCounts>,
    pub duration_s: f64,
}

/// One `--export` destination's counts in `--summary-json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // shown in the scenarios' logs
pub struct ExportCounts {
    pub to: String,
    pub messages: u64,
    pub records: u64,
    pub lost: u64,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // shown in the scenarios' logs
pub struct KernelCounts {
    pub matched: u64,
    pub delivered: u64,
    pub lost: u64,
}

impl SummaryJson {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(text.trim()).with_context(|| format!("bad summary JSON: {text}"))
    }
}

impl Record {
    /// Field formats the contract fixes: RFC3339 UTC with nanoseconds, and a
    /// family that agrees with the addresses.
    fn check(&self) -> Result<()> {
        let frac = self.ts.rsplit_once('.').map(|(_, f)| f);
        ensure!(
            self.ts.contains('T') && frac.is_some_and(|f| f.len() == 10 && f.ends_with('Z')),
            "ts {:?} is not RFC3339 UTC with nanoseconds",
            self.ts
        );
        let v6 = self.src.contains(':');
        let family = if v6 { "ipv6" } else { "ipv4" };
        ensure!(
            self.family == family && self.dst.contains(':') == v6,
            "family {} for {} -> {}",
            self.family,
            self.src,
            self.dst
        );
        Ok(())
    }
}

/// What the CLI prints when it stops.
#[derive(Debug, Default)]
pub struct Summary {
    pub written: u64,
    pub lost_in_kernel: u64,
    pub overruns: u64,
    pub gaps: u64,
    /// matched, delivered, lost as counted by the kernel, when received.
    pub kernel: Option<[u64; 3]>,
    /// The records the kernel knew no sending process of, and how many of
    /// them were written with the process holding their socket, when the
    /// kernel's counters were received.
    pub unattributed: Option<[u64; 2]>,
    /// The summary lines as printed.
    pub text: String,
}

/// The integers among the whitespace-separated words of `text`.
fn numbers(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

impl Summary {
    pub fn parse(lines: &[String]) -> Result<Self> {
        let find = |prefix: &str| lines.iter().find_map(|l| l.strip_prefix(prefix));
        let wrote = find("nfwatch: wrote ").context("no `nfwatch: wrote` line")?;
        let written = numbers(wrote.split(' ').next().unwrap_or_default());
        let lost = numbers(find("nfwatch: lost ").context("no `nfwatch: lost` line")?);
        let (&[written], &[l, e, g]) = (written.as_slice(), lost.as_slice()) else {
            bail!("cannot parse the summary lines");
        };
        let kernel = match find("nfwatch: kernel counted ").map(numbers).as_deref() {
            None => None,
            Some(&[m, d, k]) => Some([m, d, k]),
            Some(_) => bail!("cannot parse the `kernel counted` line"),
        };
        let unattributed = match lines
            .iter()
            .find(|l| l.contains(" records with no known sending process"))
        {
            None => None,
            Some(line) => match numbers(line).as_slice() {
                &[known, by_socket] => Some([known, by_socket]),
                _ => bail!("cannot parse the line of records with no known sending process"),
            },
        };
        let text = lines
            .iter()
            .filter(|l| {
                ["wrote ", "lost ", "kernel counted "]
                    .iter()
                    .any(|p| l.starts_with(&format!("nfwatch: {p}")))
            })
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Self {
            written,
            lost_in_kernel: l,
            overruns: e,
            gaps: g,
            kernel,
            unattributed,
            text,
        })
    }

    /// Consistency that holds however the CLI stopped.
    pub fn check_consistent(&self, records: usize) -> Result<()> {
        ensure!(
            self.written == records as u64,
            "summary says {} written, file has {records}",
            self.written
        );
        if let Some([matched, delivered, lost]) = self.kernel {
            ensure!(
                matched == delivered + lost,
                "kernel: matched {matched} != delivered {delivered} + lost {lost}"
            );
        }
        Ok(())
    }

    /// After a small amount of traffic and a normal stop: nothing lost, and
    /// the kernel's final counters agree with the file.
    pub fn check_lossless(&self, records: usize) -> Result<()> {
        self.check_consistent(records)?;
        ensure!(
            self.lost_in_kernel == 0 && self.overruns == 0 && self.gaps == 0,
            "losses reported: {self:?}"
        );
        let [_, delivered, _] = self
            .kernel
            .context("no `kernel counted` line after unsubscribe")?;
        ensure!(
            delivered == self.written,
            "kernel delivered {delivered}, CLI wrote {}",
            self.written
        );
        Ok(())
    }
}

/// A running `nfwatch watch`.
pub struct Watcher {
    proc: Spawned,
    pub out: PathBuf,
}

impl Watcher {
    /// Starts `nfwatch watch` for `srcs` writing jsonl to `<scenario dir>/<tag>.jsonl`,
    /// and waits until it is subscribed.
    pub fn start(ctx: &Ctx, tag: &str, srcs: &[&str]) -> Result<Self> {
        Self::start_with(ctx, tag, srcs, "jsonl")
    }

    pub fn start_with(ctx: &Ctx, tag: &str, srcs: &[&str], format: &str) -> Result<Self> {
        Self::start_args(
            ctx,
            tag,
            srcs,
            format,
            &ctx.path(&format!("{tag}.{format}")),
            &[],
        )
    }

    /// Like `start_with`, writing to `out`, with more CLI arguments.
    pub fn start_args(
        ctx: &Ctx,
        tag: &str,
        srcs: &[&str],
        format: &str,
        out: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        Self::spawn(
            ctx,
            Command::new(&ctx.guest.nfwatch),
            "watch",
            tag,
            srcs,
            format,
            Some(out),
            extra,
        )
    }

    /// `nfwatch flows` for `srcs` in `format` to `out` (None: no `-o`),
    /// with more CLI arguments, until subscribed.
    pub fn start_flows(
        ctx: &Ctx,
        tag: &str,
        srcs: &[&str],
        format: &str,
        out: Option<&Path>,
        extra: &[&str],
    ) -> Result<Self> {
        let nfwatch = Command::new(&ctx.guest.nfwatch);
        Self::spawn(ctx, nfwatch, "flows", tag, srcs, format, out, extra)
    }

    /// Like `start_flows` in JSON Lines to `out`, run through `cmd`
    /// (nfwatch's path its last argument).
    pub fn start_flows_via(
        ctx: &Ctx,
        cmd: Command,
        tag: &str,
        srcs: &[&str],
        out: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        Self::spawn(ctx, cmd, "flows", tag, srcs, "jsonl", Some(out), extra)
    }

    /// Like `start_args` with no `-o`: records go where `extra` says
    /// (`--export`), and `out` is empty.
    pub fn start_without_output(
        ctx: &Ctx,
        tag: &str,
        srcs: &[&str],
        extra: &[&str],
    ) -> Result<Self> {
        let nfwatch = Command::new(&ctx.guest.nfwatch);
        Self::spawn(ctx, nfwatch, "watch", tag, srcs, "jsonl", None, extra)
    }

    /// Like `start`, run inside network namespace `ns`.
    pub fn start_in_netns(ctx: &Ctx, ns: &str, tag: &str, srcs: &[&str]) -> Result<Self> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(&ctx.guest.nfwatch);
        Self::spawn(
            ctx,
            cmd,
            "watch",
            tag,
            srcs,
            "jsonl",
            Some(&ctx.path(&format!("{tag}.jsonl"))),
            &[],
        )
    }

    /// `nfwatch` (with whatever `cmd` runs it through) `watch ...` or
    /// `flows ...`, until subscribed.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        ctx: &Ctx,
        mut cmd: Command,
        subcommand: &str,
        tag: &str,
        srcs: &[&str],
        format: &str,
        out: Option<&Path>,
        extra: &[&str],
    ) -> Result<Self> {
        cmd.arg(subcommand).args(["--format", format]);
        if let Some(out) = out {
            cmd.arg("-o").arg(out);
        }
        cmd.args(extra);
        let out = out.map(Path::to_path_buf).unwrap_or_default();
        for src in srcs {
            cmd.args(["--src", src]);
        }
        ctx.log(&format!("{tag}: nfwatch {subcommand} {}", srcs.join(" ")));
        let mut proc = Spawned::start(&mut cmd, &ctx.path(&format!("{tag}.stderr")))?;
        proc.wait_line("the `subscribed to` line", DEADLINE, |l| {
            l.starts_with(SUBSCRIBED)
        })?;
        Ok(Self { proc, out })
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// The CLI's process, for waiting on it however it ends.
    pub fn proc(&mut self) -> &mut Spawned {
        &mut self.proc
    }

    pub fn kill(mut self) -> Result<()> {
        self.proc.signal(libc::SIGKILL)?;
        self.proc.wait_exit(DEADLINE).map(|_| ())
    }

    /// Waits for the CLI to exit 0 by itself; returns its summary.
    pub fn finish(mut self) -> Result<Summary> {
        self.proc.wait_success(DEADLINE)?;
        Summary::parse(&self.proc.lines())
    }

    /// After the module was unloaded under it: exit status 1, a line
    /// saying so, and the summary (every record received still written).
    pub fn finish_unloaded(mut self) -> Result<Summary> {
        let status = self.proc.wait_exit(DEADLINE)?;
        let lines = self.proc.lines();
        ensure!(
            status.code() == Some(1)
                && lines
                    .iter()
                    .any(|l| l.starts_with("nfwatch: the nfwatch kernel module was unloaded")),
            "module unloaded under the CLI: expected exit 1 and a line saying so, got {status}:\n{}",
            lines.join("\n")
        );
        Summary::parse(&lines)
    }

    /// SIGTERM, exit 0 and summary.
    pub fn stop(self) -> Result<Summary> {
        self.proc.signal(libc::SIGTERM)?;
        self.finish()
    }

    /// Stops the CLI, checks a lossless summary and returns the records.
    pub fn collect(self) -> Result<Vec<Record>> {
        let out = self.out.clone();
        let summary = self.stop()?;
        let records = read_records(&out)?;
        summary.check_lossless(records.len())?;
        Ok(records)
    }
}

/// Fails unless the keys of a jsonl line appear in the contract's order.
fn check_key_order(line: &str) -> Result<()> {
    let mut at = 0;
    for key in KEYS {
        let quoted = format!("\"{key}\":");
        let pos = line[at..]
            .find(&quoted)
            .with_context(|| format!("key {key} missing or out of order"))?;
        at += pos + quoted.len();
    }
    Ok(())
}

/// Lines (newlines) in a file: full lines only, where a writer may be
/// mid-line.
pub fn count_lines(path: &Path) -> Result<u64> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(data.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// Reads a jsonl output file: complete lines, each a full record.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        text.is_empty() || text.ends_with('\n'),
        "{} does not end with a newline",
        path.display()
    );
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            check_key_order(line)
                .and_then(|()| serde_json::from_str::<Record>(line).map_err(Into::into))
                .and_then(|record| record.check().map(|()| record))
                .with_context(|| format!("{}:{}: bad record: {line}", path.display(), i + 1))
        })
        .collect()
}

/// The global counters (all read by scenarios or shown in their logs).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub struct Global {
    pub seen: u64,
    pub matched: u64,
    pub delivered: u64,
    pub lost: u64,
    pub malformed: u64,
    pub batches: u64,
    pub subscribers: u64,
    /// Module-wide live objects (shown in the initial network namespace only).
    pub live: Option<Live>,
}

/// `"live"` in the global stats: objects the module holds right now.
#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
pub struct Live {
    pub subscribers: u64,
    pub sets: u64,
    pub batches: u64,
    pub pages: u64,
    /// Flows open in subscribers' tables.
    pub flows: u64,
}

#[derive(Debug, Deserialize)]
struct Stats {
    global: Global,
}

/// `nfwatch stats --json`.
pub fn stats(ctx: &Ctx) -> Result<Global> {
    let text = stdout_of(Command::new(&ctx.guest.nfwatch).args(["stats", "--json"]))?;
    let stats: Stats =
        serde_json::from_str(text.trim()).with_context(|| format!("bad stats output: {text}"))?;
    Ok(stats.global)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn summary_with_kernel_counters() {
        let s = Summary::parse(&lines(
            "nfwatch: subscribed to 10.0.0.1/32\n\
             nfwatch: wrote 17 records to /tmp/x 2.jsonl in 1.250 s\n\
             nfwatch: lost 3 records in the kernel, 1 socket overruns (ENOBUFS), 2 batch sequence gaps\n\
             nfwatch: kernel counted 20 matched, 17 delivered, 3 lost",
        ))
        .unwrap();
        assert_eq!(
            (s.written, s.lost_in_kernel, s.overruns, s.gaps),
            (17, 3, 1, 2)
        );
        assert_eq!(s.kernel, Some([20, 17, 3]));
        assert!(s.text.starts_with("nfwatch: wrote 17") && !s.text.contains("subscribed"));
        s.check_consistent(17).unwrap();
        assert!(s.check_consistent(16).is_err());
        assert!(s.check_lossless(17).is_err());
    }

    #[test]
    fn summary_without_kernel_counters() {
        let s = Summary::parse(&lines(
            "nfwatch: wrote 0 records to out in 0.010 s\n\
             nfwatch: lost 0 records in the kernel, 0 socket overruns (ENOBUFS), 0 batch sequence gaps",
        ))
        .unwrap();
        assert_eq!(s.kernel, None);
        assert!(
            s.check_lossless(0).is_err(),
            "the final counters are required"
        );
        assert!(Summary::parse(&lines("nfwatch: lost 0 records")).is_err());
    }

    const LINE: &str = r#"{"ts":"2024-05-01T10:00:00.123456789Z","family":"ipv4","proto":"udp","src":"10.0.0.1","dst":"10.0.0.2","sport":1,"dport":2,"icmp_type":null,"icmp_code":null,"len":40,"ifindex":2,"ifname":"eth0","nexthop":"10.0.0.2","uid":0,"pid":null,"frag":false,"segs":1,"comm":null,"cgroup_id":1,"cgroup":"/","unit":null,"container":null,"netns":4026531840}"#;

    #[test]
    fn records_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("xtask-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ok.jsonl");
        std::fs::write(&file, format!("{LINE}\n{LINE}\n")).unwrap();
        let records = read_records(&file).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].sport, records[0].pid), (Some(1), None));
        std::fs::write(&file, format!("{LINE}\n{LINE}")).unwrap();
        assert!(read_records(&file).is_err(), "no final newline");
        let swapped = LINE.replace(
            r#""src":"10.0.0.1","dst":"10.0.0.2""#,
            r#""dst":"10.0.0.2","src":"10.0.0.1""#,
        );
        std::fs::write(&file, format!("{swapped}\n")).unwrap();
        assert!(read_records(&file).is_err(), "keys out of order");
        let v6_family = LINE.replace(r#""family":"ipv4""#, r#""family":"ipv6""#);
        std::fs::write(&file, format!("{v6_family}\n")).unwrap();
        assert!(
            read_records(&file).is_err(),
            "family disagrees with addresses"
        );
        let micros = LINE.replace(".123456789Z", ".123456Z");
        std::fs::write(&file, format!("{micros}\n")).unwrap();
        assert!(read_records(&file).is_err(), "ts without nanoseconds");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
