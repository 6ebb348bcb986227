//! `--format ipfix`: the file read by libfixbuf's ipfixDump, record by
//! record equal to the JSON Lines a second watcher wrote of the same
//! packets.

use super::flows::{check_flows_summary, read_flows, FlowLine};
use super::net::{PEER4, PEER6, TCP_PORT, WATCHED4, WATCHED6};
use super::nfwatch::{
    count_lines, read_records, rfc3339_nanos, PaddedName, Record, SummaryJson, Watcher, DEADLINE,
};
use super::proc::Spawned;
use super::scenarios::start_capture;
use super::traffic::{ping, tcp_exchange, udp_batch};
use super::Ctx;
use crate::util::{stdout_of, wait_until};
use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

/// nfwatch's enterprise elements are named from the file's RFC 5610
/// records, so `--rfc5610` is what makes these names appear.
const UID: &str = "nfwatchUid";
const PID: &str = "nfwatchPid";
const COMM: &str = "nfwatchComm";
const NETNS: &str = "nfwatchNetns";
const CGROUP_ID: &str = "nfwatchCgroupId";
const CGROUP: &str = "nfwatchCgroup";
const UNIT: &str = "nfwatchUnit";
const CONTAINER: &str = "nfwatchContainer";
const SEGMENTS: &str = "nfwatchSegments";
/// The uid of a packet no socket owns.
const NO_UID: &str = "4294967295";

/// The template of the exporter's statistics (an options template).
const STATS_TEMPLATE: u16 = 259;

/// A packet's record: of template 256 (IPv4) or 257 (IPv6).
fn is_packet(d: &Dumped) -> bool {
    d.template == 256 || d.template == 257
}

/// One data record as ipfixDump prints it: its template, and each field's
/// value by element name.
struct Dumped {
    template: u16,
    fields: BTreeMap<String, String>,
}

/// The data records of `path`, in order, from `ipfixDump --rfc5610 -d`,
/// which must read the whole file without a complaint.
fn ipfix_dump(path: &Path) -> Result<Vec<Dumped>> {
    ipfix_dump_allowing(path, None)
}

/// Like `ipfix_dump`, where ipfixDump may warn with `allowed` (and nothing
/// else).
fn ipfix_dump_allowing(path: &Path, allowed: Option<&str>) -> Result<Vec<Dumped>> {
    let out = Command::new("ipfixDump")
        .arg("--rfc5610")
        .arg("--data")
        .arg("--in")
        .arg(path)
        .output()
        .context("cannot run ipfixDump (Debian package libfixbuf-tools)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unexpected = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .any(|l| allowed.is_none_or(|a| !l.contains(a)));
    ensure!(
        out.status.success() && !unexpected,
        "ipfixDump {}: {}: {stderr}",
        path.display(),
        out.status
    );
    let text = String::from_utf8(out.stdout).context("ipfixDump's output")?;
    let mut records = Vec::new();
    for block in text.split("--- data record ").skip(1) {
        let template = block
            .split("tid:")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .with_context(|| format!("no template id in {block}"))?;
        let fields = block
            .lines()
            .filter_map(|line| {
                let (name, value) = line.trim().strip_prefix('(')?.split_once(':')?;
                let name = name.split_whitespace().last()?;
                Some((name.to_string(), value.trim().to_string()))
            })
            .collect();
        records.push(Dumped { template, fields });
    }
    Ok(records)
}

/// The observation domain ids of `path`'s message headers, as ipfixDump
/// prints them.
fn observation_domains(path: &Path) -> Result<BTreeSet<u32>> {
    stdout_of(Command::new("ipfixDump").arg("--in").arg(path))?
        .lines()
        .filter_map(|l| l.split("observation domain id:").nth(1))
        .map(|id| {
            id.trim()
                .parse()
                .with_context(|| format!("an observation domain id: {id}"))
        })
        .collect()
}

impl Dumped {
    fn get(&self, name: &str) -> Result<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("no {name} in {:?}", self.fields))
    }

    /// A string field: ipfixDump writes `(len: N) text`.
    fn text(&self, name: &str) -> Result<&str> {
        let value = self.get(name)?;
        let (_, text) = value
            .strip_prefix("(len: ")
            .and_then(|v| v.split_once(')'))
            .with_context(|| format!("{name} is not a string: {value}"))?;
        Ok(text.strip_prefix(' ').unwrap_or(text))
    }

    fn ip(&self, name: &str) -> Result<IpAddr> {
        let value = self.get(name)?;
        value
            .parse()
            .with_context(|| format!("{name} is not an address: {value}"))
    }
}

fn proto_number(name: &str) -> Result<u8> {
    Ok(match name {
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "icmpv6" => 58,
        other => bail!("a protocol the mix does not send: {other}"),
    })
}

fn name_text(name: Option<&PaddedName>) -> Result<&str> {
    match name {
        None => Ok(""),
        Some(PaddedName::Text(text)) => Ok(text),
        Some(PaddedName::Bytes(bytes)) => bail!("a name that is not UTF-8: {bytes:?}"),
    }
}

/// `dumped` holds what `r` says, field by field.
fn check_same(r: &Record, dumped: &Dumped) -> Result<()> {
    let v6 = r.family == "ipv6";
    let (template, src, dst, nexthop, icmp) = if v6 {
        (
            257,
            "sourceIPv6Address",
            "destinationIPv6Address",
            "ipNextHopIPv6Address",
            "icmpTypeCodeIPv6",
        )
    } else {
        (
            256,
            "sourceIPv4Address",
            "destinationIPv4Address",
            "ipNextHopIPv4Address",
            "icmpTypeCodeIPv4",
        )
    };
    ensure!(
        dumped.template == template,
        "template {} for {r:?}",
        dumped.template
    );
    let unspecified: IpAddr = if v6 {
        "::".parse()?
    } else {
        "0.0.0.0".parse()?
    };
    let nexthop_of = r.nexthop.as_deref().map_or(Ok(unspecified), str::parse)?;
    let icmp_of = r.icmp_type.map_or(0, |t| {
        u16::from(t) << 8 | u16::from(r.icmp_code.unwrap_or(0))
    });
    let numbers = [
        ("protocolIdentifier", u64::from(proto_number(&r.proto)?)),
        ("sourceTransportPort", r.sport.unwrap_or(0).into()),
        ("destinationTransportPort", r.dport.unwrap_or(0).into()),
        (icmp, icmp_of.into()),
        ("ipTotalLength", r.len.into()),
        ("octetDeltaCount", r.len.into()),
        ("packetDeltaCount", 1),
        ("egressInterface", r.ifindex.into()),
        ("flowDirection", 1),
        (PID, r.pid.unwrap_or(0).into()),
        (NETNS, r.netns.unwrap_or(0).into()),
        (CGROUP_ID, r.cgroup_id.unwrap_or(0)),
        (SEGMENTS, r.segs.into()),
    ];
    for (name, want) in numbers {
        let got = dumped.get(name)?;
        ensure!(
            got == want.to_string(),
            "{name} {got}, expected {want}: {r:?}"
        );
    }
    let uid = r.uid.map_or(NO_UID.to_string(), |u| u.to_string());
    ensure!(dumped.get(UID)? == uid, "{UID} {}: {r:?}", dumped.get(UID)?);
    ensure!(dumped.ip(src)? == r.src.parse::<IpAddr>()?, "{src}: {r:?}");
    ensure!(dumped.ip(dst)? == r.dst.parse::<IpAddr>()?, "{dst}: {r:?}");
    ensure!(dumped.ip(nexthop)? == nexthop_of, "{nexthop}: {r:?}");
    ensure!(
        dumped.text("interfaceName")? == name_text(Some(&r.ifname))?,
        "interfaceName: {r:?}"
    );
    for (name, value) in [
        (COMM, &r.comm),
        (CGROUP, &r.cgroup),
        (UNIT, &r.unit),
        (CONTAINER, &r.container),
    ] {
        ensure!(
            dumped.text(name)? == name_text(value.as_ref())?,
            "{name}: {r:?}"
        );
    }
    // ipfixDump (libfixbuf 2.4) prints dateTimeNanoseconds to the second,
    // its fraction as zeros ("YYYY-MM-DD HH:MM:SS.000000000"); the
    // record's is "YYYY-MM-DDTHH:MM:SS.…Z". The nanoseconds are checked
    // by the independent decoder of the nfwatch crate's tests.
    let second = |ts: &str| ts.replace('T', " ").chars().take(19).collect::<String>();
    let time = dumped.get("observationTimeNanoseconds")?;
    ensure!(
        second(time) == second(&r.ts),
        "observationTimeNanoseconds {time}: {r:?}"
    );
    Ok(())
}

/// The fixed mix: UDP to 10 ports, a TCP exchange and 2 pings, over IPv4
/// and IPv6, from the two watched sources.
fn send_mix() -> Result<()> {
    udp_batch(WATCHED4, PEER4, 7000, 10, 64)?;
    udp_batch(WATCHED6, PEER6, 7000, 10, 64)?;
    tcp_exchange(WATCHED4, PEER4, TCP_PORT, &[7; 5000])?;
    tcp_exchange(WATCHED6, PEER6, TCP_PORT, &[7; 5000])?;
    ping(WATCHED4, PEER4, 2)?;
    ping(WATCHED6, PEER6, 2)?;
    Ok(())
}

/// UDP, TCP and ICMP over IPv4 and IPv6 from two watched sources, recorded
/// by a JSON Lines watcher and an IPFIX one: ipfixDump reads the IPFIX file
/// without a complaint, names nfwatch's elements from its RFC 5610 records,
/// and finds every record the JSON Lines file has, in the same order.
pub fn ipfix_file(ctx: &Ctx) -> Result<()> {
    let srcs = [WATCHED4, WATCHED6];
    let jsonl = Watcher::start(ctx, "jsonl", &srcs)?;
    let path = ctx.path("records.ipfix");
    let ipfix = Watcher::start_args(ctx, "ipfix", &srcs, "ipfix", &path, &["--odid", "7"])?;
    send_mix()?;
    let records = jsonl.collect()?;
    let summary = ipfix.stop()?;
    summary.check_lossless(records.len())?;
    let dumped = ipfix_dump(&path)?;
    let data: Vec<&Dumped> = dumped.iter().filter(|d| is_packet(d)).collect();
    ensure!(
        data.len() == records.len(),
        "ipfixDump read {} packet records, the JSON Lines file has {}",
        data.len(),
        records.len()
    );
    for (r, d) in records.iter().zip(&data) {
        check_same(r, d)?;
    }
    let domains = observation_domains(&path)?;
    ensure!(
        domains == BTreeSet::from([7]),
        "observation domains {domains:?}, not --odid 7's"
    );
    let families: Vec<u16> = data.iter().map(|d| d.template).collect();
    ensure!(
        families.contains(&256) && families.contains(&257),
        "not both families in {families:?}"
    );
    ctx.log(&format!(
        "{} packet records, each equal to its JSON Lines record; {} records in all",
        data.len(),
        dumped.len()
    ));
    Ok(())
}

/// Where the scenario's collectors listen, on the guest's loopback.
const TCP_COLLECTOR: &str = "127.0.0.1:4741";

/// `guest-collect` on TCP_COLLECTOR: one connection's messages.
struct TcpCollector {
    proc: Spawned,
    out: PathBuf,
}

impl TcpCollector {
    fn start(ctx: &Ctx, tag: &str) -> Result<Self> {
        let out = ctx.path(&format!("{tag}.ipfix"));
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["guest-collect", "--listen", TCP_COLLECTOR, "--out"])
            .arg(&out);
        let mut proc = Spawned::start(&mut cmd, &ctx.path(&format!("{tag}.log")))?;
        proc.wait_line("the TCP collector listening", DEADLINE, |l| l == "ready")?;
        Ok(Self { proc, out })
    }

    /// Its messages' data records, as ipfixDump reads them. The records
    /// lost in export leave gaps in the sequence numbers, which ipfixDump
    /// warns of, as a collector should.
    fn records(&self) -> Result<Vec<Dumped>> {
        if !self.out.exists() {
            return Ok(Vec::new());
        }
        ipfix_dump_allowing(&self.out, Some("IPFIX Message out of sequence"))
    }

    fn packets(&self) -> Result<u64> {
        Ok(self.records()?.iter().filter(|d| is_packet(d)).count() as u64)
    }

    /// Waits until it holds `packets` packet records.
    fn wait_packets(&self, packets: u64) -> Result<()> {
        wait_until(
            &format!("{packets} records at the TCP collector"),
            DEADLINE,
            // A message may be half written: a failed read is "not yet".
            || Ok(self.packets().ok().filter(|&n| n >= packets).map(|_| ())),
        )
    }
}

/// No established connection to TCP_COLLECTOR: the collector's end closed
/// it (with a FIN: CLOSE-WAIT here; with a reset: gone).
fn export_connection_closed() -> Result<bool> {
    let out = Command::new("ss")
        .args(["-Htn", "state", "established", "dst", TCP_COLLECTOR])
        .output()
        .context("ss")?;
    ensure!(out.status.success(), "ss: {}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

/// `--export tcp://` to a collector stopped and started again mid-run: the
/// exporter connects again with the templates first, the records that did
/// not fit its queue while the collector was away are counted, and the
/// records the collectors got plus those reported lost are every record
/// made. The last statistics record says the same.
pub fn ipfix_tcp_export(ctx: &Ctx) -> Result<()> {
    let first = TcpCollector::start(ctx, "collector1")?;
    let url = format!("tcp://{TCP_COLLECTOR}");
    let (watcher, summary_path) =
        start_exporter(ctx, &["--export", &url, "--export-queue", "65536"])?;
    let lines = || count_lines(&watcher.out);
    udp_batch(WATCHED4, PEER4, 7000, 20, 64)?;
    ping(WATCHED6, PEER6, 2)?;
    let before = wait_until("the first records written", DEADLINE, || {
        lines().map(|n| (n >= 22).then_some(n))
    })?;
    first.wait_packets(before)?;
    first.proc.signal(libc::SIGTERM)?;
    let mut first = first;
    let _ = first.proc.wait_exit(DEADLINE)?;
    wait_until("the exporter to see its collector gone", DEADLINE, || {
        Ok(export_connection_closed()?.then_some(()))
    })?;
    // ~200 KiB of records for a 64 KiB queue, while nobody listens.
    for round in 0..6 {
        udp_batch(WATCHED4, PEER4, 8000 + round * 250, 250, 64)?;
    }
    // Every one of them past the exporter's queue before anyone listens
    // again: under TCG the records may reach nfwatch well after the sends.
    wait_until("the flood's records written", DEADLINE, || {
        lines().map(|n| (n >= before + 1500).then_some(()))
    })?;
    let mut second = TcpCollector::start(ctx, "collector2")?;
    second
        .proc
        .wait_line("the exporter connecting again", DEADLINE, |l| {
            l == "accepted"
        })?;
    ping(WATCHED4, PEER4, 2)?;
    let summary = watcher.stop()?;
    second.proc.wait_success(DEADLINE)?;
    let made = read_records(&ctx.path("export.jsonl"))?.len() as u64;
    summary.check_lossless(made as usize)?;
    let json = SummaryJson::read(&summary_path)?;
    let [report] = &json.exports[..] else {
        bail!("one export in {:?}", json.exports);
    };
    let received = first.packets()? + second.packets()?;
    ctx.log(&format!(
        "{made} records made; collectors got {received}; exporter: {report:?}"
    ));
    ensure!(report.to == url, "{report:?}");
    ensure!(
        report.records + report.lost == made,
        "exported {} + lost {} != {made} records made",
        report.records,
        report.lost
    );
    ensure!(
        received == report.records,
        "the collectors got {received}, the exporter says it sent {}",
        report.records
    );
    ensure!(report.lost > 0, "a 64 KiB queue kept every record");
    let records = second.records()?;
    let stats = records
        .iter()
        .rev()
        .find(|d| d.template == STATS_TEMPLATE)
        .context("no statistics record at the second collector")?;
    let lost_in_kernel = stats.get("ignoredPacketTotalCount")?;
    let lost_in_export = stats.get("notSentFlowTotalCount")?;
    ensure!(
        lost_in_kernel == json.lost_in_kernel.to_string() && lost_in_export == report.lost.to_string(),
        "the last statistics record says {lost_in_kernel} lost in the kernel, {lost_in_export} in export; the summary {} and {}",
        json.lost_in_kernel,
        report.lost
    );
    Ok(())
}

/// The UDP collectors' ports on the guest's loopback.
const NFCAPD_PORT: u16 = 4739;
const NFACCTD_PORT: u16 = 4740;
/// The largest IP packet an export datagram may make (the default).
const EXPORT_MTU: usize = 1400;
/// The exporter's templates go again after this many messages at most
/// (ipt-netflow's refresh-rate).
const TEMPLATES_EVERY_MESSAGES: usize = 20;

/// The configuration and primitives nfwatch ships for nfacctd.
const NFACCTD_CONF: &str = include_str!("../../../packaging/examples/pmacct/nfacctd.conf");
const PRIMITIVES: &str = include_str!("../../../packaging/examples/pmacct/primitives.lst");

/// A flow as the collectors aggregate: source, destination, ports (ICMP's
/// type and code as nfdump keeps them, in the destination port), protocol.
type FlowKey = (IpAddr, IpAddr, u16, u16, u8);

/// Packets and bytes.
type Counts = (u64, u64);

/// What the collectors count: a packet's record or a flow's.
struct Counted<'a> {
    src: &'a str,
    dst: &'a str,
    ports: (Option<u16>, Option<u16>),
    icmp: Option<(u8, u8)>,
    proto: &'a str,
    uid: Option<u32>,
    /// flowEndReason; 0 for a packet's record.
    end_reason: u8,
    packets: u64,
    bytes: u64,
}

impl<'a> From<&'a Record> for Counted<'a> {
    fn from(r: &'a Record) -> Self {
        Self {
            src: &r.src,
            dst: &r.dst,
            ports: (r.sport, r.dport),
            icmp: r.icmp_type.map(|t| (t, r.icmp_code.unwrap_or(0))),
            proto: &r.proto,
            uid: r.uid,
            end_reason: 0,
            packets: 1,
            bytes: r.len.into(),
        }
    }
}

impl<'a> From<&'a FlowLine> for Counted<'a> {
    fn from(f: &'a FlowLine) -> Self {
        Self {
            src: &f.src,
            dst: &f.dst,
            ports: (f.sport, f.dport),
            icmp: f.icmp_type.map(|t| (t, f.icmp_code.unwrap_or(0))),
            proto: &f.proto,
            uid: f.uid,
            end_reason: match f.end_reason.as_str() {
                "idle" => 1,
                "active" => 2,
                "forced" => 4,
                "evicted" => 5,
                _ => 0,
            },
            packets: f.packets,
            bytes: f.octets,
        }
    }
}

impl Counted<'_> {
    /// The 5-tuple; with `icmp_as_port`, ICMP's type and code in the
    /// destination port as nfdump keeps them (nfacctd has ports 0).
    fn key(&self, icmp_as_port: bool) -> Result<FlowKey> {
        let icmp = self
            .icmp
            .filter(|_| icmp_as_port)
            .map(|(t, c)| u16::from(t) << 8 | u16::from(c));
        Ok((
            self.src.parse()?,
            self.dst.parse()?,
            self.ports.0.unwrap_or(0),
            icmp.or(self.ports.1).unwrap_or(0),
            proto_number(self.proto)?,
        ))
    }
}

fn add(counts: &mut Counts, item: &Counted) {
    counts.0 += item.packets;
    counts.1 += item.bytes;
}

/// Aggregated as `nfdump -A srcip,dstip,srcport,dstport,proto`.
fn by_flow<'a, T: 'a>(items: &'a [T]) -> Result<BTreeMap<FlowKey, Counts>>
where
    Counted<'a>: From<&'a T>,
{
    let mut flows = BTreeMap::new();
    for item in items.iter().map(Counted::from) {
        add(flows.entry(item.key(true)?).or_default(), &item);
    }
    Ok(flows)
}

/// What nfacctd aggregates by: the 5-tuple, the uid (no socket is
/// 4294967295) and the flowEndReason (0 when it is not aggregated by).
type AcctKey = (FlowKey, u32, u8);

/// Aggregated as nfacctd does.
fn by_flow_and_uid<'a, T: 'a>(items: &'a [T]) -> Result<BTreeMap<AcctKey, Counts>>
where
    Counted<'a>: From<&'a T>,
{
    let mut flows = BTreeMap::new();
    for item in items.iter().map(Counted::from) {
        let key = (
            item.key(false)?,
            item.uid.unwrap_or(u32::MAX),
            item.end_reason,
        );
        add(flows.entry(key).or_default(), &item);
    }
    Ok(flows)
}

/// Something is bound to UDP `port`, and its receive queue is `empty`
/// (or anything, when None).
fn udp_bound(port: u16, empty: bool) -> Result<bool> {
    let out = Command::new("ss")
        .args(["-Hlun", "sport", "=", &format!(":{port}")])
        .output()
        .context("ss")?;
    ensure!(out.status.success(), "ss: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let queue = text.split_whitespace().nth(1);
    Ok(queue.is_some_and(|q| !empty || q == "0"))
}

fn wait_udp(port: u16, empty: bool, what: &str) -> Result<()> {
    wait_until(what, DEADLINE, || Ok(udp_bound(port, empty)?.then_some(())))
}

/// nfacctd with the shipped configuration and primitives, its paths and
/// port the scenario's, aggregating also by `more` primitives, writing
/// only at exit.
fn start_nfacctd(ctx: &Ctx, more: &[&str]) -> Result<(Spawned, PathBuf)> {
    let primitives = ctx.path("primitives.lst");
    std::fs::write(&primitives, PRIMITIVES)?;
    let csv = ctx.path("nfacctd.csv");
    let mut conf = NFACCTD_CONF.to_string();
    for (key, value) in [
        ("nfacctd_ip", "127.0.0.1".to_string()),
        ("nfacctd_port", NFACCTD_PORT.to_string()),
        ("aggregate_primitives", primitives.display().to_string()),
        ("print_output_file", csv.display().to_string()),
        ("print_refresh_time", "3600".to_string()),
    ] {
        let line = conf
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .with_context(|| format!("no {key} in the shipped nfacctd.conf"))?
            .to_string();
        conf = conf.replace(&line, &format!("{key}: {value}"));
    }
    for primitive in more {
        let line = conf
            .lines()
            .find(|l| l.starts_with("aggregate:"))
            .context("no aggregate in the shipped nfacctd.conf")?
            .to_string();
        conf = conf.replace(&line, &format!("{line}, {primitive}"));
    }
    conf.push_str(&format!("logfile: {}\n", ctx.path("nfacctd.log").display()));
    let path = ctx.path("nfacctd.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new("nfacctd");
    cmd.arg("-f").arg(&path);
    let nfacctd = Spawned::start(&mut cmd, &ctx.path("nfacctd.out"))?;
    Ok((nfacctd, csv))
}

/// nfdump's 5-tuple aggregation of what nfcapd wrote in `dir`.
fn nfdump_flows(dir: &Path) -> Result<BTreeMap<FlowKey, Counts>> {
    let out = stdout_of(Command::new("nfdump").arg("-R").arg(dir).args([
        "-A",
        "srcip,dstip,srcport,dstport,proto",
        "-o",
        "csv",
        "-q",
        "-N",
    ]))?;
    let mut flows = BTreeMap::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split(',').collect();
        ensure!(cols.len() > 12, "nfdump csv line: {line}");
        let proto = match cols[7] {
            "ICMP" => 1,
            "TCP" => 6,
            "UDP" => 17,
            "ICMP6" => 58,
            other => bail!("nfdump protocol {other}: {line}"),
        };
        let key = (
            cols[3].parse()?,
            cols[4].parse()?,
            cols[5].parse()?,
            cols[6].parse()?,
            proto,
        );
        let counts = (cols[11].parse()?, cols[12].parse()?);
        ensure!(flows.insert(key, counts).is_none(), "nfdump twice: {line}");
    }
    Ok(flows)
}

/// nfacctd's CSV: packets and bytes by 5-tuple, uid and, when it is
/// there, flow_end_reason.
fn nfacctd_flows(csv: &Path) -> Result<BTreeMap<AcctKey, Counts>> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("{}", csv.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .context("an empty nfacctd CSV")?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("no {name} in {header:?}"))
    };
    let cols = [
        col("SRC_IP")?,
        col("DST_IP")?,
        col("SRC_PORT")?,
        col("DST_PORT")?,
        col("PROTOCOL")?,
        col("uid")?,
        col("PACKETS")?,
        col("BYTES")?,
    ];
    let end_reason = col("flow_end_reason").ok();
    let mut flows = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let v: Vec<&str> = line.split(',').collect();
        let get = |i: usize| {
            v.get(cols[i])
                .copied()
                .with_context(|| format!("short line {line}"))
        };
        let key = (
            get(0)?.parse()?,
            get(1)?.parse()?,
            get(2)?.parse()?,
            get(3)?.parse()?,
            get(4)?.parse()?,
        );
        let reason = match end_reason {
            Some(i) => v.get(i).context("short line")?.parse()?,
            None => 0,
        };
        let counts: &mut Counts = flows.entry((key, get(5)?.parse()?, reason)).or_default();
        counts.0 += get(6)?.parse::<u64>()?;
        counts.1 += get(7)?.parse::<u64>()?;
    }
    Ok(flows)
}

/// tshark decodes every captured export datagram as IPFIX with no
/// malformed packet and no expert warning or error, none is larger than
/// the MTU, and no more than TEMPLATES_EVERY_MESSAGES go between two that
/// start with the templates.
fn tshark_clean(pcap: &Path, port: u16) -> Result<usize> {
    let tshark = |args: &[&str]| tshark_ipfix(pcap, port, args);
    let problems = tshark(&[
        "-Y",
        "_ws.malformed || _ws.expert.severity >= warning || !cflow || cflow.version != 10",
        "-T",
        "fields",
        "-e",
        "frame.number",
        "-e",
        "_ws.expert.message",
    ])?;
    ensure!(
        problems.trim().is_empty(),
        "tshark finds problems:\n{problems}"
    );
    let oversized = tshark(&["-Y", &format!("ip.len > {EXPORT_MTU}")])?;
    ensure!(
        oversized.trim().is_empty(),
        "datagrams over the MTU:\n{oversized}"
    );
    // Each datagram's sets; the first a (options) template set or not.
    let sets = tshark(&["-T", "fields", "-e", "cflow.flowset_id"])?;
    let mut since = 0;
    for (frame, ids) in sets.lines().enumerate() {
        let first = ids.split(',').next().unwrap_or_default();
        since = if first == "2" || first == "3" {
            0
        } else {
            since + 1
        };
        ensure!(
            since <= TEMPLATES_EVERY_MESSAGES,
            "{since} datagrams without templates at frame {}",
            frame + 1
        );
    }
    Ok(sets.lines().count())
}

/// What tshark prints of `pcap` with `args`, UDP port `port` decoded as
/// IPFIX.
fn tshark_ipfix(pcap: &Path, port: u16, args: &[&str]) -> Result<String> {
    stdout_of(
        Command::new("tshark")
            .arg("-r")
            .arg(pcap)
            .args(["-d", &format!("udp.port=={port},cflow")])
            .args(args),
    )
}

/// tshark's reading of every packet record's observationTimeNanoseconds in
/// `pcap` equals the time of one of `records`, to the nanosecond: the
/// time of day, as tshark prints it ("Dec  8, 2026 00:17:31.584083574
/// UTC"; the date is ipfixDump's to check).
fn tshark_times_agree(pcap: &Path, port: u16, records: &[Record]) -> Result<()> {
    let printed = tshark_ipfix(
        pcap,
        port,
        &[
            "-T",
            "fields",
            "-E",
            "aggregator=|",
            "-e",
            "cflow.observation_time_nanoseconds",
        ],
    )?;
    let mut got: Vec<&str> = printed
        .lines()
        .flat_map(|l| l.split('|'))
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_end_matches(" UTC").rsplit(' ').next().unwrap_or(t))
        .collect();
    let mut sent: Vec<&str> = records
        .iter()
        .map(|r| r.ts.get(11..r.ts.len() - 1).unwrap_or(&r.ts))
        .collect();
    got.sort_unstable();
    sent.sort_unstable();
    ensure!(
        got == sent,
        "tshark's observationTimeNanoseconds {got:?}, the records' {sent:?}"
    );
    Ok(())
}

/// A watcher of the two watched sources writing `export.jsonl` and
/// exporting as `args` say; the path of its `--summary-json`.
fn start_exporter(ctx: &Ctx, args: &[&str]) -> Result<(Watcher, PathBuf)> {
    let summary = ctx.path("export-summary.json");
    let summary_arg = summary.to_string_lossy().into_owned();
    let mut all = args.to_vec();
    all.extend(["--summary-json", &summary_arg]);
    let watcher = Watcher::start_args(
        ctx,
        "export",
        &[WATCHED4, WATCHED6],
        "jsonl",
        &ctx.path("export.jsonl"),
        &all,
    )?;
    Ok((watcher, summary))
}

/// `--export udp://` to nfcapd beside `-o` JSON Lines of the same records,
/// and to nfacctd from a second watcher with no `-o`: nfdump's 5-tuple
/// aggregation of what nfcapd got, and nfacctd's by 5-tuple and the
/// enterprise uid (through the shipped primitives), equal the JSON Lines
/// aggregated the same way, packets and bytes; tshark decodes a capture of
/// the export with no malformed packet and no expert warning; every
/// datagram fits the MTU, the templates go again at least every 20, and
/// the packet records' times are the JSON Lines' to the nanosecond.
pub fn ipfix_udp_export(ctx: &Ctx) -> Result<()> {
    let collectors = UdpCollectors::start(ctx, &[])?;
    let pcap = ctx.path("export.pcap");
    let capture = start_capture(ctx, "lo", &format!("udp port {NFCAPD_PORT}"), &pcap, 0)?;
    let urls = UdpCollectors::urls();
    let (watcher, summary_path) = start_exporter(ctx, &["--export", &urls[0]])?;
    // A second subscriber of the same packets, exporting with no -o.
    let only_path = ctx.path("export-only-summary.json");
    let only_arg = only_path.to_string_lossy();
    let only = Watcher::start_without_output(
        ctx,
        "export-only",
        &[WATCHED4, WATCHED6],
        &["--export", &urls[1], "--summary-json", &only_arg],
    )?;
    send_mix()?;
    // Enough records for the templates to go again, within batches.
    udp_batch(WATCHED4, PEER4, 9000, 400, 64)?;
    let records = watcher.collect()?;
    only.stop()?.check_lossless(records.len())?;
    let only_json = SummaryJson::read(&only_path)?;
    ensure!(
        only_json.output == urls[1],
        "with no -o, the summary's output is {:?}",
        only_json.output
    );
    for (path, url) in [(&summary_path, &urls[0]), (&only_path, &urls[1])] {
        let json = SummaryJson::read(path)?;
        ensure!(json.exports.len() == 1, "{url}: {json:?}");
        let report = &json.exports[0];
        ensure!(
            report.to == *url && report.records == records.len() as u64 && report.lost == 0,
            "{report:?}, for {} records",
            records.len()
        );
    }
    collectors.finish_agreeing(&records)?;
    capture.signal(libc::SIGINT)?;
    let mut capture = capture;
    capture.wait_exit(DEADLINE)?;
    let frames = tshark_clean(&pcap, NFCAPD_PORT)?;
    tshark_times_agree(&pcap, NFCAPD_PORT, &records)?;
    ctx.log(&format!(
        "{} records, {} flows: nfdump and nfacctd agree; tshark decoded {frames} datagrams cleanly, their times the records' to the nanosecond",
        records.len(),
        by_flow(&records)?.len()
    ));
    Ok(())
}

/// nfcapd and nfacctd (with the configuration nfwatch ships) on UDP.
struct UdpCollectors {
    nfcapd: Spawned,
    nfcapd_dir: PathBuf,
    nfacctd: Spawned,
    nfacctd_csv: PathBuf,
}

impl UdpCollectors {
    /// nfacctd aggregating also by the `more` primitives.
    fn start(ctx: &Ctx, more: &[&str]) -> Result<Self> {
        let nfcapd_dir = ctx.path("nfcapd");
        std::fs::create_dir_all(&nfcapd_dir)?;
        let mut cmd = Command::new("nfcapd");
        cmd.args(["-b", "127.0.0.1", "-p", &NFCAPD_PORT.to_string(), "-w"])
            .arg(&nfcapd_dir);
        let nfcapd = Spawned::start(&mut cmd, &ctx.path("nfcapd.log"))?;
        let (nfacctd, nfacctd_csv) = start_nfacctd(ctx, more)?;
        wait_udp(NFCAPD_PORT, false, "nfcapd listening")?;
        wait_udp(NFACCTD_PORT, false, "nfacctd listening")?;
        Ok(Self {
            nfcapd,
            nfcapd_dir,
            nfacctd,
            nfacctd_csv,
        })
    }

    /// `--export` URLs of nfcapd and nfacctd.
    fn urls() -> [String; 2] {
        [NFCAPD_PORT, NFACCTD_PORT].map(|port| format!("udp://127.0.0.1:{port}"))
    }

    /// Once every datagram is read, stops both; fails unless nfdump's
    /// 5-tuple aggregation of what nfcapd stored, and nfacctd's by 5-tuple
    /// and uid (and what else it was started with), equal `items` (records
    /// or flows) aggregated the same way, packets and bytes.
    fn finish_agreeing<'a, T: 'a>(mut self, items: &'a [T]) -> Result<()>
    where
        Counted<'a>: From<&'a T>,
    {
        wait_udp(NFCAPD_PORT, true, "nfcapd to read every datagram")?;
        wait_udp(NFACCTD_PORT, true, "nfacctd to read every datagram")?;
        self.nfcapd.signal(libc::SIGTERM)?;
        self.nfcapd.wait_exit(DEADLINE)?;
        // SIGINT: nfacctd writes its cache and exits (SIGTERM waits for a datagram).
        self.nfacctd.signal(libc::SIGINT)?;
        self.nfacctd.wait_exit(DEADLINE)?;
        let want = by_flow(items)?;
        let got = nfdump_flows(&self.nfcapd_dir)?;
        ensure!(got == want, "nfdump's flows {got:?}\nJSON Lines' {want:?}");
        let want = by_flow_and_uid(items)?;
        let got = nfacctd_flows(&self.nfacctd_csv)?;
        ensure!(got == want, "nfacctd's flows {got:?}\nJSON Lines' {want:?}");
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
pub struct CollectArgs {
    /// Where to accept the one connection.
    #[arg(long)]
    listen: SocketAddr,
    /// The messages received, back to back: an IPFIX file.
    #[arg(long)]
    out: PathBuf,
}

/// `guest-collect`: an IPFIX collector over TCP for one connection. Says
/// `ready` and `accepted`, appends each whole message to `--out` (which
/// ipfixDump then reads), and ends at EOF.
pub fn collect(args: &CollectArgs) -> Result<()> {
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    say("ready")?;
    let (mut conn, _) = listener.accept()?;
    say("accepted")?;
    let mut out = std::fs::File::create(&args.out)?;
    loop {
        let mut message = vec![0u8; 16];
        match conn.read_exact(&mut message) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = usize::from(u16::from_be_bytes([message[2], message[3]]));
        ensure!(len >= 16, "a message of {len} bytes");
        message.resize(len, 0);
        conn.read_exact(&mut message[16..])?;
        out.write_all(&message)?;
    }
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "{line}")?;
    Ok(out.flush()?)
}

/// `nfwatch flows` exporting to nfcapd and to nfacctd (aggregating also by
/// flowEndReason, a primitive nfwatch ships) beside `-o` JSON Lines of the
/// same flows, some ended idle, the rest when it stops: nfdump's 5-tuple
/// aggregation and nfacctd's by 5-tuple, uid and end reason equal the JSON
/// Lines flows aggregated the same way, packets and bytes; its summary
/// counts every packet matched, none lost.
pub fn flows_ipfix_export(ctx: &Ctx) -> Result<()> {
    let collectors = UdpCollectors::start(ctx, &["flow_end_reason"])?;
    let urls = UdpCollectors::urls();
    let out = ctx.path("flows.jsonl");
    let json = ctx.path("flows-summary.json");
    let json_arg = json.to_string_lossy();
    let flows = Watcher::start_flows(
        ctx,
        "flows",
        &[WATCHED4, WATCHED6],
        "jsonl",
        Some(&out),
        &[
            "--export",
            &urls[0],
            "--export",
            &urls[1],
            "--inactive-timeout",
            "2",
            "--summary-json",
            &json_arg,
        ],
    )?;
    send_mix()?;
    wait_until("flows ended idle", DEADLINE, || {
        Ok(read_flows(&out)?
            .iter()
            .any(|f| f.end_reason == "idle")
            .then_some(()))
    })?;
    // Open when it stops.
    udp_batch(WATCHED4, PEER4, 7100, 3, 64)?;
    let summary = flows.stop()?;
    let lines = read_flows(&out)?;
    check_flows_summary(&summary, &json, &lines, None)?;
    let packets: u64 = lines.iter().map(|f| f.packets).sum();
    let reasons: BTreeSet<&str> = lines.iter().map(|f| f.end_reason.as_str()).collect();
    ensure!(
        reasons.contains("idle") && reasons.contains("forced"),
        "end reasons {reasons:?}"
    );
    let nfcapd_dir = collectors.nfcapd_dir.clone();
    collectors.finish_agreeing(&lines)?;
    let mut want = lines.iter().map(nfdump_view).collect::<Result<Vec<_>>>()?;
    let mut got = nfdump_raw_flows(&nfcapd_dir)?;
    want.sort();
    got.sort();
    ensure!(
        got == want,
        "nfdump -o raw: {got:#?}\nthe JSON Lines flows as nfdump would show them: {want:#?}"
    );
    ctx.log(&format!(
        "{} flows of {packets} packets, ended {reasons:?}: nfdump shows each as written, nfacctd agrees",
        lines.len()
    ));
    Ok(())
}

/// A flow as `nfdump -o raw` shows it: source, destination, protocol,
/// ports (for ICMP, type and code as the source port 0 and destination
/// port type.code), packets, bytes, end reason, first and last seen in
/// milliseconds, output interface, next hop.
type NfdumpFlow = (
    String,
    String,
    u8,
    u16,
    String,
    u64,
    u64,
    u8,
    u64,
    u64,
    u32,
    String,
);

fn nfdump_view(f: &FlowLine) -> Result<NfdumpFlow> {
    let item = Counted::from(f);
    let ms = |text: &str| -> Result<u64> { Ok(u64::try_from(rfc3339_nanos(text)? / 1_000_000)?) };
    let dport = match f.icmp_type {
        Some(t) => format!("{t}.{}", f.icmp_code.unwrap_or(0)),
        None => f.dport.unwrap_or(0).to_string(),
    };
    Ok((
        f.src.clone(),
        f.dst.clone(),
        proto_number(&f.proto)?,
        f.sport.unwrap_or(0),
        dport,
        f.packets,
        f.octets,
        item.end_reason,
        ms(&f.start)?,
        ms(&f.end)?,
        f.ifindex,
        f.nexthop.clone().unwrap_or_default(),
    ))
}

/// Every flow nfcapd stored in `dir`, as `nfdump -o raw` shows it.
fn nfdump_raw_flows(dir: &Path) -> Result<Vec<NfdumpFlow>> {
    let text = stdout_of(
        Command::new("nfdump")
            .arg("-R")
            .arg(dir)
            .args(["-o", "raw", "-q"]),
    )?;
    let mut flows = Vec::new();
    for block in text.split("Flow Record:").skip(1) {
        let fields: BTreeMap<&str, &str> = block
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.split_whitespace().next().unwrap_or("")))
            .collect();
        let get = |key: &str| {
            fields
                .get(key)
                .copied()
                .with_context(|| format!("no {key} in nfdump's record {block}"))
        };
        let (sport, dport) = match fields.get("ICMP") {
            Some(type_code) => (0, type_code.to_string()),
            None => (get("src port")?.parse()?, get("dst port")?.to_string()),
        };
        flows.push((
            get("src addr")?.to_string(),
            get("dst addr")?.to_string(),
            get("proto")?.parse()?,
            sport,
            dport,
            get("in packets")?.parse()?,
            get("in bytes")?.parse()?,
            u8::from_str_radix(get("end reason")?.trim_start_matches("0x"), 16)?,
            get("first")?.parse()?,
            get("last")?.parse()?,
            get("output")?.parse()?,
            get("ip next hop")?.to_string(),
        ));
    }
    Ok(flows)
}
