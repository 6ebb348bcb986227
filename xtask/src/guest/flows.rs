//! `nfwatch flows`: packets aggregated into flows in the kernel, checked
//! against `nfwatch watch` recording the same packets side by side.

use super::isolation::{all_released, in_memcg, memory_current, MEMCG};
use super::net::{PEER4, PEER6, TCP_PORT, WATCHED4, WATCHED6};
use super::nfwatch::{
    count_lines, rfc3339_nanos, stats, PaddedName, Record, Summary, Watcher, DEADLINE,
};
use super::traffic::{ip, ping, tcp_exchange, udp_batch};
use super::Ctx;
use crate::util::wait_until;
use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One `nfwatch flows --format jsonl` line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // every key is checked to be there; some shown in logs only
pub struct FlowLine {
    pub start: String,
    pub end: String,
    pub family: String,
    pub proto: String,
    pub src: String,
    pub dst: String,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub ifindex: u32,
    pub ifname: PaddedName,
    pub nexthop: Option<String>,
    pub uid: Option<u32>,
    pub pid: Option<u32>,
    pub frag: bool,
    pub comm: Option<PaddedName>,
    pub cgroup_id: Option<u64>,
    pub cgroup: Option<PaddedName>,
    pub unit: Option<PaddedName>,
    pub container: Option<PaddedName>,
    pub netns: Option<u32>,
    pub packets: u64,
    pub octets: u64,
    pub end_reason: String,
}

/// What makes a flow: every field of a packet's record but its time,
/// length and segments.
type Key = String;

fn flow_key(line: &FlowLine) -> Key {
    format!(
        "{} {} {} {} {:?} {:?} {:?} {:?} {} {:?} {:?} {:?} {:?} {} {:?} {:?} {:?}",
        line.family,
        line.proto,
        line.src,
        line.dst,
        line.sport,
        line.dport,
        line.icmp_type,
        line.icmp_code,
        line.ifindex,
        line.ifname,
        line.nexthop,
        line.uid,
        line.pid,
        line.frag,
        line.comm,
        line.cgroup_id,
        line.netns
    )
}

fn record_key(r: &Record) -> Key {
    format!(
        "{} {} {} {} {:?} {:?} {:?} {:?} {} {:?} {:?} {:?} {:?} {} {:?} {:?} {:?}",
        r.family,
        r.proto,
        r.src,
        r.dst,
        r.sport,
        r.dport,
        r.icmp_type,
        r.icmp_code,
        r.ifindex,
        r.ifname,
        r.nexthop,
        r.uid,
        r.pid,
        r.frag,
        r.comm,
        r.cgroup_id,
        r.netns
    )
}

/// Every line of a flows jsonl file (full lines only: a writer may be mid-line).
pub fn read_flows(path: &Path) -> Result<Vec<FlowLine>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let full = text.rfind('\n').map_or("", |end| &text[..end]);
    full.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: {line}", path.display(), i + 1))
        })
        .collect()
}

/// Waits until a flow to `dport` ended for `reason` is in the file.
fn wait_flow_ended(path: &Path, dport: u16, reason: &str) -> Result<FlowLine> {
    wait_until(
        &format!("a flow to port {dport} ended {reason}"),
        DEADLINE,
        || {
            Ok(read_flows(path)?
                .into_iter()
                .find(|f| f.dport == Some(dport) && f.end_reason == reason))
        },
    )
}

/// The packets each flow stands for: every record falls in exactly one
/// flow of its key, between its start and end, and each flow's packets and
/// octets are its records' segments and lengths, its start and end their
/// first and last times.
fn check_partition(flows: &[FlowLine], records: &[Record]) -> Result<()> {
    let mut by_key: BTreeMap<Key, Vec<(i128, &Record)>> = BTreeMap::new();
    for r in records {
        by_key
            .entry(record_key(r))
            .or_default()
            .push((r.ts_nanos()?, r));
    }
    let mut covered = 0;
    for flow in flows {
        let (start, end) = (rfc3339_nanos(&flow.start)?, rfc3339_nanos(&flow.end)?);
        let mine: Vec<&(i128, &Record)> = by_key
            .get(&flow_key(flow))
            .map(|rs| {
                rs.iter()
                    .filter(|(ts, _)| (start..=end).contains(ts))
                    .collect()
            })
            .unwrap_or_default();
        let packets: u64 = mine.iter().map(|(_, r)| u64::from(r.segs)).sum();
        let octets: u64 = mine.iter().map(|(_, r)| u64::from(r.len)).sum();
        let first = mine.iter().map(|(ts, _)| *ts).min();
        let last = mine.iter().map(|(ts, _)| *ts).max();
        ensure!(
            packets == flow.packets
                && octets == flow.octets
                && first == Some(start)
                && last == Some(end),
            "flow {flow:?}: its packets' records add up to {packets} packets, {octets} octets, from {first:?} to {last:?}"
        );
        covered += mine.len();
    }
    ensure!(
        covered == records.len(),
        "the flows hold {covered} records of the {} recorded (each in exactly one flow)",
        records.len()
    );
    Ok(())
}

/// From one UDP socket, `count` datagrams to `port` of `dst`, `pause` apart.
fn udp_repeat(socket: &UdpSocket, dst: &str, port: u16, count: u32, pause: Duration) -> Result<()> {
    let to = SocketAddr::new(ip(dst)?, port);
    for _ in 0..count {
        socket
            .send_to(&[0x66; 48], to)
            .with_context(|| format!("UDP to {to}"))?;
        std::thread::sleep(pause);
    }
    Ok(())
}

fn udp_socket(src: &str) -> Result<UdpSocket> {
    UdpSocket::bind((ip(src)?, 0)).with_context(|| format!("cannot bind UDP to {src}"))
}

/// A flows subscriber's summary and `--summary-json`: nothing lost, the
/// flows written are the file's, and they hold every packet the kernel
/// matched (as its hook counts them, a GSO packet once: the flows' sends),
/// `matched` of them (None: not known otherwise).
pub fn check_flows_summary(
    summary: &Summary,
    json: &Path,
    flows: &[FlowLine],
    matched: Option<u64>,
) -> Result<()> {
    summary.check_consistent(flows.len())?;
    let [kernel_matched, delivered, lost] = summary
        .kernel
        .context("no `kernel counted` line after unsubscribe")?;
    ensure!(
        summary.lost_in_kernel == 0 && summary.overruns == 0 && summary.gaps == 0 && lost == 0,
        "losses reported: {summary:?}"
    );
    let text =
        std::fs::read_to_string(json).with_context(|| format!("cannot read {}", json.display()))?;
    let object: serde_json::Value = serde_json::from_str(&text)?;
    let number = |key: &str| {
        object[key]
            .as_u64()
            .with_context(|| format!("no {key} in {text}"))
    };
    let (sends, packets) = (number("sends")?, number("packets")?);
    ensure!(
        number("flows")? == flows.len() as u64
            && packets == flows.iter().map(|f| f.packets).sum::<u64>(),
        "--summary-json {text} for {} flows",
        flows.len()
    );
    ensure!(
        delivered == kernel_matched
            && sends == kernel_matched
            && matched.is_none_or(|m| m == kernel_matched),
        "the kernel counted {kernel_matched} matched, {delivered} delivered; the flows written hold {sends} of its packets; {matched:?} were recorded per packet"
    );
    Ok(())
}

const IDLE_PORT: u16 = 6000;
const ACTIVE_PORT: u16 = 6001;
const MAX_FLOWS: u16 = 40;

/// A fixed mix (UDP, TCP, ICMP over IPv4 and IPv6, a flow past the active
/// timeout, one idle past the inactive timeout, more flows than
/// `--max-flows`) recorded by `nfwatch watch` and `nfwatch flows` side by
/// side: the packets' records partition exactly into the flows, each flow
/// ended for the reason its traffic gave, and the flows hold every packet
/// the kernel matched.
pub fn flows_agree(ctx: &Ctx) -> Result<()> {
    let srcs = [WATCHED4, WATCHED6];
    let packets = Watcher::start(ctx, "packets", &srcs)?;
    let out = ctx.path("flows.jsonl");
    let json = ctx.path("flows-summary.json");
    let json_arg = json.to_string_lossy();
    let max = MAX_FLOWS.to_string();
    let flows = Watcher::start_flows(
        ctx,
        "flows",
        &srcs,
        "jsonl",
        Some(&out),
        &[
            "--inactive-timeout",
            "3",
            "--active-timeout",
            "8",
            "--max-flows",
            &max,
            "--summary-json",
            &json_arg,
        ],
    )?;
    let idle = udp_socket(WATCHED4)?;
    udp_repeat(&idle, PEER4, IDLE_PORT, 3, Duration::ZERO)?;
    udp_batch(WATCHED6, PEER6, 7000, 5, 64)?;
    tcp_exchange(WATCHED4, PEER4, TCP_PORT, &[7; 5000])?;
    tcp_exchange(WATCHED6, PEER6, TCP_PORT, &[7; 5000])?;
    ping(WATCHED4, PEER4, 2)?;
    ping(WATCHED6, PEER6, 2)?;
    // The idle flow ends on its own, while the active one keeps sending.
    let active = udp_socket(WATCHED4)?;
    let ended_active = wait_until("a flow past its active timeout", DEADLINE, || {
        udp_repeat(&active, PEER4, ACTIVE_PORT, 1, Duration::from_millis(500))?;
        Ok(read_flows(&out)?
            .into_iter()
            .find(|f| f.dport == Some(ACTIVE_PORT) && f.end_reason == "active"))
    })?;
    udp_repeat(&active, PEER4, ACTIVE_PORT, 2, Duration::ZERO)?;
    let ended_idle = wait_flow_ended(&out, IDLE_PORT, "idle")?;
    ensure!(
        ended_idle.packets == 3,
        "the idle flow ended with {} packets, it sent 3",
        ended_idle.packets
    );
    // More new flows than the table holds: the least recently used go early.
    let past = MAX_FLOWS + 20;
    udp_batch(WATCHED4, PEER4, 9000, past, 32)?;
    let records = packets.collect()?;
    let summary = flows.stop()?;
    let lines = read_flows(&out)?;
    ctx.log(&format!(
        "{} packets' records, {} flows; ended active: {ended_active:?}",
        records.len(),
        lines.len()
    ));
    check_flows_summary(&summary, &json, &lines, Some(records.len() as u64))?;
    check_partition(&lines, &records)?;
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for flow in &lines {
        *reasons.entry(flow.end_reason.as_str()).or_default() += 1;
    }
    ctx.log(&format!("end reasons: {reasons:?}"));
    ensure!(
        reasons
            .keys()
            .all(|r| ["idle", "active", "forced", "evicted"].contains(r)),
        "unknown end reasons in {reasons:?}"
    );
    ensure!(
        reasons.get("evicted").copied().unwrap_or(0) >= usize::from(past - MAX_FLOWS),
        "{past} new flows into a table of {MAX_FLOWS}, but {reasons:?}"
    );
    ensure!(
        reasons.get("forced").copied().unwrap_or(0) > 0,
        "no flow open at the stop: {reasons:?}"
    );
    let active_flows = lines
        .iter()
        .filter(|f| f.dport == Some(ACTIVE_PORT))
        .count();
    ensure!(
        active_flows >= 2,
        "the flow past its active timeout gave {active_flows} flow records"
    );
    Ok(())
}

/// Distinct flows sent into a subscriber of the default table size.
const MANY_FLOWS: u16 = 50_000;
/// What one open flow takes at least: its entry in the table.
const FLOW_ENTRY_BYTES: u64 = 240;
/// The default --max-flows.
const DEFAULT_MAX_FLOWS: u64 = 65_536;

/// `nfwatch flows` in a memory cgroup of its own, sent 100,000 distinct
/// flows: the table stops at --max-flows (the rest evicted and written),
/// its entries are charged to the subscriber's cgroup, and when the
/// subscriber is killed with its flows open they all go: the module's live
/// objects and the cgroup's memory come back to where they were.
pub fn flows_bounded(ctx: &Ctx) -> Result<()> {
    in_memcg(|| flows_bounded_in_memcg(ctx))
}

fn flows_bounded_in_memcg(ctx: &Ctx) -> Result<()> {
    let before = stats(ctx)?.live.context("no live counters")?;
    let base = memory_current()?;
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("echo $$ > {MEMCG}/cgroup.procs && exec \"$@\""),
        "sh",
    ])
    .arg(&ctx.guest.nfwatch);
    let out = ctx.path("evicted.jsonl");
    // No flow goes idle however slowly they are sent: all that end are evicted.
    let flows = Watcher::start_flows_via(
        ctx,
        cmd,
        "bounded",
        &[WATCHED4],
        &out,
        &["--inactive-timeout", "3600"],
    )?;
    let subscribed = memory_current()?;
    udp_batch(WATCHED4, PEER4, 10_000, MANY_FLOWS, 1)?;
    udp_batch(WATCHED4, PEER4, 10_000, MANY_FLOWS, 1)?;
    let sent = 2 * u64::from(MANY_FLOWS);
    let evicted = sent - DEFAULT_MAX_FLOWS;
    wait_until("the evicted flows written", DEADLINE, || {
        Ok((count_lines(&out)? >= evicted).then_some(()))
    })?;
    let live = stats(ctx)?.live.context("no live counters")?;
    let peak = memory_current()?;
    ctx.log(&format!(
        "memory.current {base} -> {subscribed} subscribed -> {peak} with {} flows open, {} written",
        live.flows,
        count_lines(&out)?
    ));
    ensure!(
        live.flows == before.flows + DEFAULT_MAX_FLOWS,
        "{sent} distinct flows into a table of {DEFAULT_MAX_FLOWS}: {} open",
        live.flows
    );
    let written = read_flows(&out)?;
    ensure!(
        written.len() as u64 == evicted && written.iter().all(|f| f.end_reason == "evicted"),
        "{} flows written, expected {evicted} evicted",
        written.len()
    );
    let table = DEFAULT_MAX_FLOWS * FLOW_ENTRY_BYTES;
    ensure!(
        peak.saturating_sub(subscribed) >= table,
        "memory.current rose by {} bytes with {DEFAULT_MAX_FLOWS} flows open, their entries alone take {table}",
        peak.saturating_sub(subscribed)
    );
    flows.kill()?;
    all_released(ctx, before, base, peak)
}
