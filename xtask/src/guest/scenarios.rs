//! The scenarios: each sends known traffic and asserts on what nfwatch wrote.

use super::generator::{gen_args, tcp_out_segs, GenReport};
use super::genl::Genl;
use super::kprobe::Kprobe;
use super::net::*;
use super::nfwatch::{read_records, stats, Record, Watcher, DEADLINE};
use super::proc::Spawned;
use super::traffic::{self, ip, tcp_exchange, udp_batch, Flood, Flow};
use super::{dmesg, dmesg_problems, insmod, rmmod, Ctx};
use crate::util::{capture, wait_until};
use anyhow::{bail, ensure, Context, Result};
use nfwatch_proto::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

pub type Scenario = fn(&Ctx) -> Result<()>;

const ALL: &[(&str, Scenario)] = &[
    ("two_addresses", two_addresses),
    ("protocols", protocols),
    ("sender_identity", sender_identity),
    ("attribution", super::attribution::attribution),
    ("all_netns", super::attribution::all_netns),
    ("ipfix_file", super::ipfix::ipfix_file),
    ("ipfix_udp_export", super::ipfix::ipfix_udp_export),
    ("ipfix_tcp_export", super::ipfix::ipfix_tcp_export),
    ("flows_agree", super::flows::flows_agree),
    ("flows_bounded", super::flows::flows_bounded),
    ("flows_ipfix_export", super::ipfix::flows_ipfix_export),
    ("prefix", prefix),
    ("two_subscribers", two_subscribers),
    ("tcpdump_oracle", tcpdump_oracle),
    ("nexthop", nexthop),
    ("fragment", fragment),
    ("kill9", kill9),
    ("hooks_until_netns_exit", hooks_until_netns_exit),
    ("other_namespace", other_namespace),
    ("nfqueue_kept", super::nfqueue::nfqueue_kept),
    ("malformed_requests", malformed_requests),
    ("rmmod_under_traffic", rmmod_under_traffic),
    ("parameters_clamped", parameters_clamped),
    ("unprivileged", unprivileged),
    ("readme", super::readme::readme_commands),
    ("fuzz_netlink", super::fuzz::fuzz_netlink),
    ("privilege", super::reliability::privilege),
    ("overload", super::reliability::overload),
    (
        "replies_after_overrun",
        super::reliability::replies_after_overrun,
    ),
    ("output_faults", super::reliability::output_faults),
    ("unload_under_load", super::reliability::unload_under_load),
    ("churn", super::reliability::churn),
    ("reroute", super::routing::reroute),
    ("vrf_once", super::routing::vrf_once),
    ("vrf_qdisc_pid", super::routing::vrf_qdisc_pid),
    ("ipsec_once", super::ipsec::ipsec_once),
    ("ipv6_headers", super::routing::ipv6_headers),
    ("portid_takeover", super::isolation::portid_takeover),
    ("memcg_charged", super::isolation::memcg_charged),
    ("genl_lock_free", super::isolation::genl_lock_free),
    ("first_line_latency", super::cli_output::first_line_latency),
    (
        "failed_start_keeps_file",
        super::cli_output::failed_start_keeps_file,
    ),
    ("sighup_reopens", super::cli_output::sighup_reopens),
    ("odd_ifnames", super::cli_output::odd_ifnames),
    ("version_skew", super::cli_output::version_skew),
    ("malformed_record", super::cli_output::malformed_record),
    ("status_line", super::cli_output::status_line),
];

/// The scenarios named (else all), in the canonical order.
pub fn select(names: &[String]) -> Result<Vec<(&'static str, Scenario)>> {
    for name in names {
        if !ALL.iter().any(|(n, _)| n == name) {
            let known: Vec<_> = ALL.iter().map(|(n, _)| *n).collect();
            bail!("unknown scenario {name}; known: {}", known.join(", "));
        }
    }
    Ok(ALL
        .iter()
        .filter(|(n, _)| names.is_empty() || names.iter().any(|m| m == n))
        .copied()
        .collect())
}

/// Datagrams per source in the batch scenarios.
const BATCH: u16 = 20;
/// UDP payload bytes in the batch scenarios.
const PAYLOAD: usize = 32;

fn flows(records: &[Record]) -> Result<Vec<Flow>> {
    records.iter().map(Flow::of).collect()
}

/// The records of `flow`.
fn matching<'r>(records: &'r [Record], flow: &Flow) -> Result<Vec<&'r Record>> {
    let mut found = Vec::new();
    for record in records {
        if Flow::of(record)? == *flow {
            found.push(record);
        }
    }
    Ok(found)
}

/// The only record of `flow`.
pub(super) fn the_one<'r>(records: &'r [Record], flow: &Flow) -> Result<&'r Record> {
    match matching(records, flow)?.as_slice() {
        [one] => Ok(one),
        found => bail!("expected 1 record of {flow:?}, found {}", found.len()),
    }
}

fn expect_each_once(records: &[Record], sent: &[Flow]) -> Result<()> {
    for flow in sent {
        the_one(records, flow)?;
    }
    Ok(())
}

fn expect_none_from(records: &[Record], src: &str) -> Result<()> {
    let src = ip(src)?;
    let from = flows(records)?.into_iter().filter(|f| f.src == src).count();
    ensure!(from == 0, "{from} record(s) from unwatched {src}");
    Ok(())
}

/// A batch of datagrams from each of `srcs` to the peer (same family), on
/// ports that tell the sources apart.
pub(super) fn udp_from(srcs: &[&str], first_port: u16) -> Result<Vec<Vec<Flow>>> {
    srcs.iter()
        .zip(0..)
        .map(|(src, i)| {
            let dst = if ip(src)?.is_ipv4() { PEER4 } else { PEER6 };
            udp_batch(src, dst, first_port + i * 100, BATCH, PAYLOAD)
        })
        .collect()
}

fn two_addresses(ctx: &Ctx) -> Result<()> {
    let watcher = Watcher::start(ctx, "watch", &[WATCHED4])?;
    let sent = udp_from(&[WATCHED4, OTHER4], 20000)?;
    let records = watcher.collect()?;
    ctx.log(&format!("{} records", records.len()));
    expect_each_once(&records, &sent[0])?;
    expect_none_from(&records, OTHER4)
}

fn check_tcp(records: &[Record], flow: &Flow, family: &str) -> Result<()> {
    let found = matching(records, flow)?;
    // SYN, data, FIN at least.
    ensure!(
        found.len() >= 3,
        "{} records of {flow:?}, expected >= 3",
        found.len()
    );
    for r in found {
        ensure!(
            r.family == family && r.icmp_type.is_none() && !r.frag,
            "bad TCP record {r:?}"
        );
    }
    Ok(())
}

fn check_udp(records: &[Record], flow: &Flow, family: &str, header: u32) -> Result<()> {
    let r = the_one(records, flow)?;
    let len = header + 8 + PAYLOAD as u32;
    ensure!(
        r.family == family && r.len == len,
        "expected {family} len {len}: {r:?}"
    );
    ensure!(
        r.icmp_type.is_none() && r.icmp_code.is_none() && r.segs == 1,
        "bad UDP record {r:?}"
    );
    ensure!(
        r.uid == Some(0) && r.pid == Some(std::process::id()),
        "expected uid 0, our pid: {r:?}"
    );
    Ok(())
}

fn check_ping(
    records: &[Record],
    (pid, flow): &(u32, Flow),
    pings: usize,
    icmp_type: u8,
) -> Result<()> {
    let found = matching(records, flow)?;
    ensure!(
        found.len() == pings,
        "{} records of {flow:?}, expected {pings}",
        found.len()
    );
    for r in found {
        ensure!(
            r.icmp_type == Some(icmp_type) && r.icmp_code == Some(0),
            "bad echo request {r:?}"
        );
        ensure!(
            r.pid.is_none() || r.pid == Some(*pid),
            "echo request with pid not ping's ({pid}): {r:?}"
        );
    }
    Ok(())
}

fn protocols(ctx: &Ctx) -> Result<()> {
    const PINGS: u32 = 3;
    let watcher = Watcher::start(ctx, "watch", &[WATCHED4, WATCHED6])?;
    let tcp4 = tcp_exchange(WATCHED4, PEER4, TCP_PORT, b"protocols v4\n")?;
    let tcp6 = tcp_exchange(WATCHED6, PEER6, TCP_PORT, b"protocols v6\n")?;
    let udp4 = udp_batch(WATCHED4, PEER4, 5002, 1, PAYLOAD)?;
    let udp6 = udp_batch(WATCHED6, PEER6, 5002, 1, PAYLOAD)?;
    let ping4 = traffic::ping(WATCHED4, PEER4, PINGS)?;
    let ping6 = traffic::ping(WATCHED6, PEER6, PINGS)?;
    let records = watcher.collect()?;
    ctx.log(&format!("{} records", records.len()));
    check_tcp(&records, &tcp4, "ipv4")?;
    check_tcp(&records, &tcp6, "ipv6")?;
    check_udp(&records, &udp4[0], "ipv4", 20)?;
    check_udp(&records, &udp6[0], "ipv6", 40)?;
    check_ping(&records, &ping4, PINGS as usize, 8)?;
    check_ping(&records, &ping6, PINGS as usize, 128)
}

/// Sends UDP from WATCHED4 for a moment as uid 65534 in a process of its
/// own; returns its pid and what it reported.
fn udp_as_nobody() -> Result<(u32, GenReport)> {
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let mut cmd = super::as_nobody(xtask);
    cmd.args(gen_args("udp", WATCHED4, &format!("{PEER4}:9"), 0.2));
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start guest-gen")?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "guest-gen as uid 65534: {}",
        out.status
    );
    let report = serde_json::from_slice(&out.stdout).context("guest-gen's report")?;
    Ok((pid, report))
}

/// NFWATCH_RING_PAGES in kmod/nfwatch.h: the pages one subscriber keeps.
const RING_PAGES: u64 = 34;

/// uid and pid follow the sender from record to record: ours, another
/// process's under another uid, ours again (the module keeps the last of
/// each per subscriber); the batches' pages stay in the subscriber's ring.
fn sender_identity(ctx: &Ctx) -> Result<()> {
    let watcher = Watcher::start(ctx, "watch", &[WATCHED4])?;
    let before = udp_batch(WATCHED4, PEER4, 24000, BATCH, PAYLOAD)?;
    let (other_pid, other) = udp_as_nobody()?;
    let after = udp_batch(WATCHED4, PEER4, 24100, BATCH, PAYLOAD)?;
    // Hundreds of batches went out; the subscriber's ring kept their pages.
    let pages = super::fuzz::live(ctx)?.pages;
    ensure!(
        (1..=RING_PAGES).contains(&pages),
        "{pages} batch pages held by one subscriber, expected 1..={RING_PAGES}"
    );
    let records = watcher.collect()?;
    ctx.log(&format!(
        "{} records; pid {other_pid} as uid 65534 sent {}",
        records.len(),
        other.packets
    ));
    let ours: Vec<&Flow> = before.iter().chain(&after).collect();
    let mut theirs = 0;
    for r in &records {
        let flow = Flow::of(r)?;
        let (uid, pid) = if ours.contains(&&flow) {
            (0, std::process::id())
        } else {
            theirs += 1;
            (65534, other_pid)
        };
        ensure!(
            r.uid == Some(uid) && r.pid == Some(pid),
            "expected uid {uid} pid {pid}: {r:?}"
        );
    }
    expect_each_once(&records, &before)?;
    expect_each_once(&records, &after)?;
    ensure!(
        theirs == other.packets,
        "{theirs} records from pid {other_pid}, it sent {}",
        other.packets
    );
    Ok(())
}

/// Addresses on either side of a /25 and of a /65 boundary, on DEV for
/// `prefix` only.
const EDGE4_IN: &str = "10.10.0.127";
const EDGE4_OUT: &str = "10.10.0.128";
const EDGE6_IN: &str = "fd10::7fff:ffff:ffff:ffff";
const EDGE6_OUT: &str = "fd10:0:0:0:8000::";

/// Each prefix set records its sources' datagrams once each and nothing
/// from the others: /24 and /64, the whole space (/0), single addresses
/// (/32, /128) beside their neighbours, and the last address inside a /25
/// and a /65 beside the first one past it.
fn prefix(ctx: &Ctx) -> Result<()> {
    let edges = [EDGE4_IN, EDGE4_OUT, EDGE6_IN, EDGE6_OUT];
    for addr in edges {
        let plen = if ip(addr)?.is_ipv4() { 24 } else { 64 };
        crate::util::run(
            Command::new("ip")
                .args(format!("addr add {addr}/{plen} dev {DEV} nodad").split_whitespace()),
        )?;
    }
    let checked = prefix_cases(ctx);
    for addr in edges {
        let plen = if ip(addr)?.is_ipv4() { 24 } else { 64 };
        crate::util::run(
            Command::new("ip").args(format!("addr del {addr}/{plen} dev {DEV}").split_whitespace()),
        )?;
    }
    checked
}

fn prefix_cases(ctx: &Ctx) -> Result<()> {
    // (prefixes watched, sources inside, sources outside)
    let cases: [(&[&str], &[&str], &[&str]); 4] = [
        (
            &["10.10.0.0/24", "fd10::/64"],
            &[WATCHED4, OTHER4, WATCHED6, OTHER6],
            &[OUTSIDE4, OUTSIDE6],
        ),
        (
            &["0.0.0.0/0", "::/0"],
            &[WATCHED4, OUTSIDE4, WATCHED6, OUTSIDE6],
            &[],
        ),
        (
            &["10.10.0.1/32", "fd10::1/128"],
            &[WATCHED4, WATCHED6],
            &[OTHER4, OTHER6],
        ),
        (
            &["10.10.0.0/25", "fd10::/65"],
            &[WATCHED4, EDGE4_IN, WATCHED6, EDGE6_IN],
            &[EDGE4_OUT, EDGE6_OUT],
        ),
    ];
    for ((watched, inside, outside), first_port) in cases.into_iter().zip((22000..).step_by(600)) {
        let what = watched.join(" ");
        let watcher = Watcher::start(ctx, "watch", watched)?;
        let srcs: Vec<&str> = inside.iter().chain(outside).copied().collect();
        let sent = udp_from(&srcs, first_port)?;
        let records = watcher.collect()?;
        ctx.log(&format!("{what}: {} records", records.len()));
        for flows in &sent[..inside.len()] {
            expect_each_once(&records, flows).with_context(|| what.clone())?;
        }
        for src in outside {
            expect_none_from(&records, src).with_context(|| what.clone())?;
        }
    }
    Ok(())
}

fn two_subscribers(ctx: &Ctx) -> Result<()> {
    let first = Watcher::start(ctx, "first", &[WATCHED4, WATCHED6])?;
    let second = Watcher::start(ctx, "second", &[OTHER4, OTHER6])?;
    // Overlaps both: a packet one parse serves to two subscribers.
    let both = Watcher::start(ctx, "both", &[WATCHED4, OTHER4])?;
    let sent = udp_from(&[WATCHED4, WATCHED6, OTHER4, OTHER6], 23000)?;
    let (first, second, both) = (first.collect()?, second.collect()?, both.collect()?);
    ctx.log(&format!(
        "{}, {} and {} records",
        first.len(),
        second.len(),
        both.len()
    ));
    for (records, own, others) in [
        (&first, [0, 1], [OTHER4, OTHER6]),
        (&second, [2, 3], [WATCHED4, WATCHED6]),
        (&both, [0, 2], [WATCHED6, OTHER6]),
    ] {
        ensure!(
            records.len() == 2 * usize::from(BATCH),
            "{} records, expected {}",
            records.len(),
            2 * BATCH
        );
        for i in own {
            expect_each_once(records, &sent[i])?;
        }
        for other in others {
            expect_none_from(records, other)?;
        }
    }
    Ok(())
}

/// How many times each item occurs.
fn multiset<K: Ord>(items: Vec<K>) -> BTreeMap<K, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

/// tcpdump capturing what `dev` sends that matches `filter` into `pcap`,
/// once it says it listens. A small snap length keeps the capture ring
/// from overflowing.
pub(super) fn start_tcpdump(ctx: &Ctx, dev: &str, filter: &str, pcap: &Path) -> Result<Spawned> {
    start_capture(ctx, dev, filter, pcap, 256)
}

/// Like `start_tcpdump`, keeping `snaplen` bytes of each packet (0: all).
pub(super) fn start_capture(
    ctx: &Ctx,
    dev: &str,
    filter: &str,
    pcap: &Path,
    snaplen: u32,
) -> Result<Spawned> {
    let mut tcpdump = Command::new("tcpdump");
    tcpdump
        .args([
            "-i",
            dev,
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-B",
            "8192",
            "-s",
            &snaplen.to_string(),
            "-w",
        ])
        .arg(pcap)
        .arg(filter);
    let mut tcpdump = Spawned::start(&mut tcpdump, &ctx.path(&format!("tcpdump-{dev}.log")))?;
    tcpdump.wait_line("tcpdump's `listening on` line", DEADLINE, |l| {
        l.contains("listening on")
    })?;
    Ok(tcpdump)
}

/// Bytes each bulk TCP transfer of `tcpdump_oracle` writes at once: the
/// stack hands the veth GSO packets of many segments (TSO).
const BULK: usize = 256 * 1024;

/// Every packet nfwatch records is one tcpdump captured on the egress
/// device, with the same flow and IP length (a GSO packet's whole), and
/// the other way round; every record's time lies between clock readings
/// before the first send and after the last; the TCP records' segments
/// add up to the segments TCP sent (its OutSegs counter), GSO ones among
/// them.
fn tcpdump_oracle(ctx: &Ctx) -> Result<()> {
    let pcap = ctx.path("tcpdump.pcap");
    let filter = format!("src host {WATCHED4} or src host {WATCHED6}");
    let mut tcpdump = start_tcpdump(ctx, DEV, &filter, &pcap)?;
    let watcher = Watcher::start(ctx, "watch", &[WATCHED4, WATCHED6])?;
    let segs_before = tcp_out_segs()?;
    let first_send = std::time::SystemTime::now();
    udp_from(&[WATCHED4, WATCHED6], 24000)?;
    tcp_exchange(WATCHED4, PEER4, TCP_PORT, b"oracle v4\n")?;
    tcp_exchange(WATCHED6, PEER6, TCP_PORT, b"oracle v6\n")?;
    tcp_exchange(WATCHED4, PEER4, TCP_PORT, &[b'4'; BULK])?;
    tcp_exchange(WATCHED6, PEER6, TCP_PORT, &[b'6'; BULK])?;
    traffic::ping(WATCHED4, PEER4, 2)?;
    traffic::ping(WATCHED6, PEER6, 2)?;
    let last_send = std::time::SystemTime::now();
    let tcp_segs = tcp_out_segs()? - segs_before;
    let records = watcher.collect()?;
    in_time(&records, first_send, last_send)?;
    segments_add_up(&records, tcp_segs)?;
    let ours = multiset(
        records
            .iter()
            .map(|r| Ok((Flow::of(r)?, r.len)))
            .collect::<Result<Vec<_>>>()?,
    );
    let total: usize = ours.values().sum();
    // tcpdump got every packet synchronously; wait until it has written them.
    let captured = wait_until(
        "tcpdump to write as many packets as nfwatch recorded",
        DEADLINE,
        || Ok((traffic_count(&pcap)? >= total).then_some(())),
    );
    tcpdump.signal(libc::SIGINT)?;
    tcpdump.wait_success(DEADLINE)?;
    let drops = tcpdump
        .lines()
        .into_iter()
        .find(|l| l.ends_with("packets dropped by kernel"));
    ensure!(
        drops.as_deref().is_some_and(|l| l.starts_with("0 ")),
        "tcpdump lost packets, the comparison would be void: {drops:?}"
    );
    let theirs = multiset(super::pcap::packets(&pcap)?);
    ctx.log(&format!(
        "nfwatch {total} records, tcpdump {} packets; {tcp_segs} TCP segments",
        theirs.values().sum::<usize>()
    ));
    if ours != theirs {
        let mut diff = Vec::new();
        for key in ours.keys().chain(theirs.keys()) {
            let (a, b) = (ours.get(key).unwrap_or(&0), theirs.get(key).unwrap_or(&0));
            if a != b && !diff.iter().any(|(k, _, _)| k == key) {
                diff.push((key.clone(), *a, *b));
            }
        }
        let differing = diff.len();
        diff.truncate(8);
        bail!(
            "nfwatch and tcpdump disagree on {differing} (flow, IP length) pairs; \
             the first (pair, nfwatch, tcpdump): {diff:?}"
        );
    }
    captured
}

/// Every record's time between `from` and `until` (this guest's clock).
fn in_time(
    records: &[Record],
    from: std::time::SystemTime,
    until: std::time::SystemTime,
) -> Result<()> {
    let nanos = |t: std::time::SystemTime| -> Result<i128> {
        Ok(t.duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
            .try_into()?)
    };
    let (from, until) = (nanos(from)?, nanos(until)?);
    for r in records {
        let ts = r.ts_nanos()?;
        ensure!(
            (from..=until).contains(&ts),
            "record time {} outside the sends' {from}..={until} ns: {r:?}",
            ts
        );
    }
    Ok(())
}

/// The TCP records' `segs` add up to `sent` segments, and some are GSO.
fn segments_add_up(records: &[Record], sent: u64) -> Result<()> {
    let tcp: Vec<&Record> = records.iter().filter(|r| r.proto == "tcp").collect();
    let segs: u64 = tcp.iter().map(|r| u64::from(r.segs)).sum();
    ensure!(
        segs == sent,
        "the {} TCP records add up to {segs} segments; TCP sent {sent} (OutSegs)",
        tcp.len()
    );
    ensure!(
        tcp.iter().any(|r| r.segs > 1),
        "no GSO packet among the {} TCP records",
        tcp.len()
    );
    Ok(())
}

pub(super) fn traffic_count(pcap: &std::path::Path) -> Result<usize> {
    Ok(super::pcap::flows(pcap)?.len())
}

fn nexthop(ctx: &Ctx) -> Result<()> {
    // (source, destination, expected next hop)
    let cases = [
        (WATCHED4, ROUTED4, PEER4),
        (WATCHED4, PEER4, PEER4),
        (WATCHED4, ONLINK4, ONLINK4),
        (WATCHED6, ROUTED6, PEER6),
        (WATCHED6, PEER6, PEER6),
        (WATCHED6, ONLINK6, ONLINK6),
    ];
    let watcher = Watcher::start(ctx, "watch", &[WATCHED4, WATCHED6])?;
    let mut sent = Vec::new();
    for ((src, dst, hop), port) in cases.iter().zip(25000..) {
        sent.push((udp_batch(src, dst, port, 1, PAYLOAD)?.remove(0), ip(hop)?));
    }
    let records = watcher.collect()?;
    for (flow, hop) in sent {
        let r = the_one(&records, &flow)?;
        let got = r.nexthop.as_deref().map(ip).transpose()?;
        ensure!(
            got == Some(hop),
            "to {}: nexthop {:?}, expected {hop}",
            flow.dst,
            r.nexthop
        );
        ensure!(
            r.ifname == DEV && r.ifindex == ctx.guest.ifindex,
            "expected {DEV} #{}: {r:?}",
            ctx.guest.ifindex
        );
    }
    Ok(())
}

fn fragment(ctx: &Ctx) -> Result<()> {
    let watcher = Watcher::start(ctx, "watch", &[WATCHED4])?;
    traffic::ipv4_fragment(WATCHED4, PEER4, PAYLOAD)?;
    let records = watcher.collect()?;
    let [r] = records.as_slice() else {
        bail!(
            "expected exactly 1 record, got {}: {records:?}",
            records.len()
        );
    };
    ensure!(
        r.frag && r.sport.is_none() && r.dport.is_none(),
        "not a bare fragment: {r:?}"
    );
    ensure!(
        r.proto == "udp" && r.src == WATCHED4 && r.dst == PEER4,
        "wrong packet: {r:?}"
    );
    ensure!(
        r.len == 20 + PAYLOAD as u32,
        "len {}, expected {}",
        r.len,
        20 + PAYLOAD
    );
    Ok(())
}

pub(super) fn wait_subscribers(ctx: &Ctx, wanted: u64) -> Result<()> {
    wait_until(
        &format!("{wanted} subscriber(s) in nfwatch stats"),
        DEADLINE,
        || Ok((stats(ctx)?.subscribers == wanted).then_some(())),
    )
}

/// A new subscriber records a fresh batch: the module still works.
pub(super) fn still_records(ctx: &Ctx, first_port: u16) -> Result<()> {
    let watcher = Watcher::start(ctx, "after", &[WATCHED4])?;
    let sent = udp_from(&[WATCHED4], first_port)?;
    expect_each_once(&watcher.collect()?, &sent[0])
}

fn kill9(ctx: &Ctx) -> Result<()> {
    let victim = Watcher::start(ctx, "victim", &[WATCHED4])?;
    let before = stats(ctx)?;
    ctx.log(&format!("with the victim: {before:?}"));
    ensure!(
        before.subscribers == 1,
        "{} subscribers, expected 1",
        before.subscribers
    );
    ctx.log(&format!("kill -9 {}", victim.pid()));
    victim.kill()?;
    wait_subscribers(ctx, 0)?;
    still_records(ctx, 26000)
}

/// A namespace's hooks are registered by its first subscriber and stay
/// while subscribers come and go (unregistering would drop the packets an
/// NFQUEUE holds there), until the namespace goes. Counted by kprobes on the
/// module's registering and unregistering: observers outside the module.
fn hooks_until_netns_exit(ctx: &Ctx) -> Result<()> {
    const NETNS: &str = "nfwhooks";
    wait_subscribers_parameter(0)?;
    let register = Kprobe::attach("nfwatch_register", "nfwatch_hooks_register")?;
    let unregister = Kprobe::attach("nfwatch_unregister", "nfwatch_hooks_unregister")?;
    crate::util::run(Command::new("ip").args(["netns", "add", NETNS]))?;
    let result = (|| {
        for run in 0..3 {
            let watcher = Watcher::start_in_netns(ctx, NETNS, &format!("run{run}"), &[WATCHED4])?;
            if run == 1 {
                watcher.kill()?;
            } else {
                watcher.stop()?;
            }
            wait_subscribers_parameter(0)?;
            let (r, u) = (register.hits()?, unregister.hits()?);
            ctx.log(&format!(
                "subscriber {run} gone: hooks registered {r} times, unregistered {u}"
            ));
            ensure!(
                (r, u) == (1, 0),
                "{} subscriber(s) came and went in {NETNS}: hooks registered {r} times and unregistered {u}, expected 1 and 0",
                run + 1
            );
        }
        Ok(())
    })();
    crate::util::run(Command::new("ip").args(["netns", "del", NETNS]))?;
    result?;
    wait_until(
        &format!("{NETNS}'s hooks to be unregistered as it goes"),
        DEADLINE,
        || Ok((unregister.hits()? == 1).then_some(())),
    )?;
    let registered = register.hits()?;
    ctx.log(&format!(
        "{NETNS} deleted: hooks registered {registered} times, unregistered 1"
    ));
    ensure!(
        registered == 1,
        "hooks registered {registered} times, expected once"
    );
    Ok(())
}

/// The read-only parameter the packaging's load-module reads: the
/// subscriptions in force in every network namespace.
fn subscribers_parameter() -> Result<u32> {
    const PATH: &str = "/sys/module/nfwatch/parameters/subscribers";
    let text = std::fs::read_to_string(PATH).with_context(|| format!("cannot read {PATH}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{PATH}: {text:?} is not a number"))
}

pub(super) fn wait_subscribers_parameter(count: u32) -> Result<()> {
    wait_until(
        &format!("parameters/subscribers to say {count}"),
        DEADLINE,
        || Ok((subscribers_parameter()? == count).then_some(())),
    )
}

/// A subscriber in the peer's network namespace records what the peer sends
/// (its TCP answers to us), and one in ours watching the peer's address
/// records nothing: each namespace has its own hooks and subscribers. The
/// module's `subscribers` parameter counts both.
fn other_namespace(ctx: &Ctx) -> Result<()> {
    wait_subscribers_parameter(0)?;
    let here = Watcher::start(ctx, "here", &[PEER4])?;
    let there = Watcher::start_in_netns(ctx, NS, "there", &[PEER4])?;
    let both = subscribers_parameter()?;
    ensure!(
        both == 2,
        "parameters/subscribers says {both} with one subscriber in each of two namespaces"
    );
    let ours = tcp_exchange(WATCHED4, PEER4, TCP_PORT, b"across namespaces")?;
    let answers = Flow {
        proto: "tcp".into(),
        src: ours.dst,
        sport: ours.dport,
        dst: ours.src,
        dport: ours.sport,
    };
    let (here, there) = (here.collect()?, there.collect()?);
    wait_subscribers_parameter(0)?;
    ctx.log(&format!(
        "here {} records, there {}; parameters/subscribers 2, then 0",
        here.len(),
        there.len()
    ));
    ensure!(
        here.is_empty(),
        "{} record(s) in our namespace of packets the peer's namespace sent",
        here.len()
    );
    let theirs = matching(&there, &answers)?.len();
    ensure!(
        theirs >= 2 && theirs == there.len(),
        "the peer namespace's subscriber has {theirs} of {} records from {answers:?} (SYN-ACK and FIN at least)",
        there.len()
    );
    Ok(())
}

/// A prefix entry from raw parts.
fn entry(parts: Vec<RawAttr>) -> RawAttr {
    RawAttr::nested(NFWATCH_A_PREFIX, parts)
}

fn v4(bytes: &[u8]) -> RawAttr {
    RawAttr::bytes(NFWATCH_PREFIX_A_IPV4, bytes.to_vec())
}

fn v6() -> RawAttr {
    let addr: std::net::Ipv6Addr = WATCHED6.parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST);
    RawAttr::bytes(NFWATCH_PREFIX_A_IPV6, addr.octets().to_vec())
}

fn len(bits: u8) -> RawAttr {
    RawAttr::u8(NFWATCH_PREFIX_A_LEN, bits)
}

fn prefixes(entries: Vec<RawAttr>) -> Vec<RawAttr> {
    vec![RawAttr::nested(NFWATCH_A_PREFIXES, entries)]
}

/// SUBSCRIBE to `addr`'s flows with one flow setting.
fn flows_subscription(addr: &[u8], setting: u16, value: u32) -> Vec<RawAttr> {
    let mut attrs = prefixes(vec![entry(vec![v4(addr), len(32)])]);
    attrs.push(RawAttr::nested(
        NFWATCH_A_FLOWS,
        vec![RawAttr::u32(setting, value)],
    ));
    attrs
}

/// (what, command, attributes, extack required)
/// A request the module must refuse, and how: the errno and (when the
/// module or the policy explains) words of the extended ack's message.
struct Malformed {
    what: &'static str,
    cmd: u8,
    attrs: Vec<RawAttr>,
    errno: i32,
    message: Option<&'static str>,
}

fn malformed() -> Vec<Malformed> {
    let ip4 = [10, 10, 0, 1];
    let too_many = (0..=NFWATCH_MAX_PREFIXES)
        .map(|i| entry(vec![v4(&[10, (i >> 8) as u8, i as u8, 1]), len(32)]))
        .collect();
    let subscribe = |what, attrs, errno, message| Malformed {
        what,
        cmd: NFWATCH_CMD_SUBSCRIBE,
        attrs,
        errno,
        message: Some(message),
    };
    vec![
        subscribe(
            "IPv4 prefix length 33",
            prefixes(vec![entry(vec![v4(&ip4), len(33)])]),
            libc::EINVAL,
            "IPv4 prefix length is more than 32",
        ),
        // The policy's range (0..=128), in the kernel's words.
        subscribe(
            "IPv6 prefix length 129",
            prefixes(vec![entry(vec![v6(), len(129)])]),
            libc::ERANGE,
            "out of range",
        ),
        subscribe(
            "IPV4 attribute of 5 bytes",
            prefixes(vec![entry(vec![v4(&[10, 10, 0, 1, 0]), len(32)])]),
            libc::ERANGE,
            "size out of range",
        ),
        subscribe(
            "SUBSCRIBE without PREFIXES",
            vec![],
            libc::EINVAL,
            "SUBSCRIBE needs NFWATCH_A_PREFIXES",
        ),
        subscribe(
            "prefix without LEN",
            prefixes(vec![entry(vec![v4(&ip4)])]),
            libc::EINVAL,
            "a prefix needs NFWATCH_PREFIX_A_LEN",
        ),
        subscribe(
            "prefix with IPV4 and IPV6",
            prefixes(vec![entry(vec![v4(&ip4), v6(), len(32)])]),
            libc::EINVAL,
            "exactly one of NFWATCH_PREFIX_A_IPV4 and NFWATCH_PREFIX_A_IPV6",
        ),
        subscribe(
            "NFWATCH_MAX_PREFIXES + 1 prefixes",
            prefixes(too_many),
            libc::E2BIG,
            "more than NFWATCH_MAX_PREFIXES (1024) prefixes",
        ),
        subscribe(
            "flows' inactive timeout 0",
            flows_subscription(&ip4, NFWATCH_FLOWS_A_INACTIVE_MS, 0),
            libc::ERANGE,
            "out of range",
        ),
        subscribe(
            "flows' table past NFWATCH_MAX_FLOWS",
            flows_subscription(&ip4, NFWATCH_FLOWS_A_MAX_FLOWS, NFWATCH_MAX_FLOWS + 1),
            libc::ERANGE,
            "out of range",
        ),
        Malformed {
            what: "unknown command 99",
            cmd: 99,
            attrs: vec![],
            errno: libc::EOPNOTSUPP,
            message: None,
        },
    ]
}

fn malformed_requests(ctx: &Ctx) -> Result<()> {
    let mut genl = Genl::open()?;
    let family = genl.resolve(NFWATCH_GENL_NAME)?;
    ctx.log(&format!("family {NFWATCH_GENL_NAME} = {family}"));
    let mut failures = Vec::new();
    for case in malformed() {
        let what = case.what;
        let ack = genl
            .request(family, case.cmd, &case.attrs)
            .with_context(|| what.to_string())?;
        ctx.log(&format!(
            "{what}: errno {} extack {:?}",
            ack.errno, ack.extack
        ));
        let message_ok = match case.message {
            Some(words) => ack.extack.as_deref().is_some_and(|m| m.contains(words)),
            None => true,
        };
        if ack.errno != -case.errno || !message_ok {
            failures.push(format!(
                "{what}: errno {} {:?}, expected {} with {:?}",
                ack.errno, ack.extack, -case.errno, case.message
            ));
        }
    }
    // A subscription keeps its mode: packets, then flows, on one socket.
    let ip4 = [10, 10, 0, 1];
    let packets = prefixes(vec![entry(vec![v4(&ip4), len(32)])]);
    let flows = flows_subscription(&ip4, NFWATCH_FLOWS_A_MAX_FLOWS, 16);
    for (what, attrs, errno, words) in [
        ("SUBSCRIBE to packets", packets, 0, ""),
        ("then to flows", flows, -libc::EBUSY, "keeps its mode"),
    ] {
        let ack = genl.request(family, NFWATCH_CMD_SUBSCRIBE, &attrs)?;
        ctx.log(&format!(
            "{what}: errno {} extack {:?}",
            ack.errno, ack.extack
        ));
        if ack.errno != errno || !ack.extack.as_deref().unwrap_or("").contains(words) {
            failures.push(format!("{what}: errno {} {:?}", ack.errno, ack.extack));
        }
    }
    drop(genl);
    ensure!(failures.is_empty(), "{}", failures.join("; "));
    still_records(ctx, 27000)
}

/// Out-of-range parameters are clamped, and the kernel log says so.
fn parameters_clamped(ctx: &Ctx) -> Result<()> {
    rmmod()?;
    let checked = crate::util::run(
        Command::new("insmod")
            .arg(&ctx.guest.module)
            .args(["flush_interval_us=1", "batch_bytes=100"]),
    )
    .and_then(|()| {
        for (name, value) in [("flush_interval_us", "100"), ("batch_bytes", "1024")] {
            let path = format!("/sys/module/nfwatch/parameters/{name}");
            let got = std::fs::read_to_string(&path)?;
            ensure!(got.trim() == value, "{name} is {got:?}, expected {value}");
        }
        let log = dmesg()?;
        for line in [
            "nfwatch: flush_interval_us=1 is outside 100..1000000: using 100",
            "nfwatch: batch_bytes=100 is outside 1024..65000: using 1024",
        ] {
            ensure!(log.contains(line), "no {line:?} in the kernel log");
        }
        Ok(())
    });
    if super::module_loaded() {
        rmmod()?;
    }
    insmod(&ctx.guest.module)?;
    checked
}

fn rmmod_under_traffic(ctx: &Ctx) -> Result<()> {
    let watcher = Watcher::start(ctx, "watch", &[WATCHED4])?;
    let out = watcher.out.clone();
    let baseline = stats(ctx)?.delivered;
    let flood = Flood::start(WATCHED4, PEER4);
    wait_until("200 more records delivered", DEADLINE, || {
        Ok((stats(ctx)?.delivered >= baseline + 200).then_some(()))
    })?;
    ctx.log("rmmod nfwatch");
    rmmod()?;
    let summary = watcher.finish_unloaded();
    let sent = flood.stop()?;
    let summary = summary?;
    ctx.log(&format!(
        "{sent} datagrams sent; the CLI said:\n{}",
        summary.text
    ));
    let records = read_records(&out)?;
    summary.check_consistent(records.len())?;
    // SHUTDOWN carries the final counters; only a full socket buffer may lose it.
    ensure!(
        summary.kernel.is_some() || summary.overruns > 0,
        "no `kernel counted` line after the module went away, and no socket overrun to explain it"
    );
    ensure!(!records.is_empty(), "no records");
    let problems = dmesg_problems(&dmesg()?);
    ensure!(problems.is_empty(), "kernel log: {}", problems.join("\n"));
    insmod(&ctx.guest.module)
}

/// Runs nfwatch as nobody without capabilities: it must fail with `not permitted`.
fn unprivileged(ctx: &Ctx) -> Result<()> {
    let scratch = std::path::Path::new("/tmp/nfwatch-unprivileged");
    std::fs::create_dir_all(scratch)?;
    let writable = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(scratch, writable)?;
    let out = scratch.join("out.jsonl").display().to_string();
    for args in [vec!["watch", "--src", WATCHED4, "-o", &out], vec!["stats"]] {
        let mut cmd = super::as_nobody(&ctx.guest.nfwatch);
        cmd.args(&args);
        let result = capture(&mut cmd)?;
        let stderr = String::from_utf8_lossy(&result.stderr);
        ctx.log(&format!(
            "nfwatch {}: {} {stderr}",
            args.join(" "),
            result.status
        ));
        ensure!(
            !result.status.success(),
            "nfwatch {} succeeded as nobody",
            args[0]
        );
        ensure!(
            stderr
                .lines()
                .any(|l| l.starts_with("nfwatch: ") && l.contains("not permitted")),
            "nfwatch {}: no `nfwatch: ... not permitted` line in: {stderr}",
            args[0]
        );
    }
    ensure!(
        stats(ctx)?.subscribers == 0,
        "an unprivileged subscription exists"
    );
    Ok(())
}
