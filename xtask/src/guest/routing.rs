//! Where a packet leaves and what it is, when the host's routing or the
//! packet's headers are not the plain case: re-routed in OUTPUT (a mark
//! with policy routing, DNAT), sent through a VRF, IPv6 extension headers.

use super::nfwatch::{Record, Watcher, DEADLINE};
use super::pcap;
use super::scenarios::{start_tcpdump, the_one, traffic_count};
use super::traffic::{ip, send_raw, udp_batch, Flow};
use super::Ctx;
use crate::util::{run, wait_until};
use anyhow::{ensure, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{Ipv6Addr, SocketAddr};
use std::process::Command;

use super::net::{ifindex_of, PEER4, PEER6, WATCHED4, WATCHED6};

/// The second way out: a dummy device, its gateways, and what the OUTPUT
/// rules send there.
const ALT_DEV: &str = "nfwalt";
const ALT4: &str = "10.9.1.1";
const ALT_GW4: &str = "10.9.1.254";
const ALT6: &str = "fd09:1::1";
const ALT_GW6: &str = "fd09:1::fe";
/// Routed by nfw0 in the main table; a mark sends them by ALT_DEV.
const MARKED4: &str = "10.40.0.1";
const MARKED6: &str = "fd40::1";
/// Routed by nfw0; OUTPUT DNAT turns it into DNAT_TO, on-link on ALT_DEV.
const DNAT_FROM: &str = "10.41.0.1";
const DNAT_TO: &str = "10.9.1.7";
const MARK: &str = "0x40";
const TABLE: &str = "140";

fn ip_cmd(args: &str) -> Result<()> {
    run(Command::new("ip").args(args.split_whitespace()))
}

fn nft(script: &str) -> Result<()> {
    run(Command::new("nft").arg(script))
}

fn reroute_setup() -> Result<()> {
    for args in [
        format!("link add {ALT_DEV} type dummy"),
        format!("addr add {ALT4}/24 dev {ALT_DEV}"),
        format!("addr add {ALT6}/64 dev {ALT_DEV} nodad"),
        format!("link set {ALT_DEV} up"),
        format!("route add 10.40.0.0/24 via {PEER4}"),
        format!("route add 10.41.0.0/24 via {PEER4}"),
        format!("-6 route add fd40::/64 via {PEER6}"),
        format!("route add 10.40.0.0/24 via {ALT_GW4} dev {ALT_DEV} table {TABLE}"),
        format!("-6 route add fd40::/64 via {ALT_GW6} dev {ALT_DEV} table {TABLE}"),
        format!("rule add fwmark {MARK} table {TABLE}"),
        format!("-6 rule add fwmark {MARK} table {TABLE}"),
    ] {
        ip_cmd(&args)?;
    }
    nft(&format!(
        "table ip nfwatch_reroute {{
            chain set_mark {{ type route hook output priority mangle; ip daddr {MARKED4} meta mark set {MARK}; }}
            chain to_alt {{ type nat hook output priority -100; ip daddr {DNAT_FROM} dnat to {DNAT_TO}; }}
        }}
        table ip6 nfwatch_reroute {{
            chain set_mark {{ type route hook output priority mangle; ip6 daddr {MARKED6} meta mark set {MARK}; }}
        }}"
    ))
}

fn reroute_teardown() -> Result<()> {
    nft("delete table ip nfwatch_reroute")?;
    nft("delete table ip6 nfwatch_reroute")?;
    for args in [
        format!("rule del fwmark {MARK} table {TABLE}"),
        format!("-6 rule del fwmark {MARK} table {TABLE}"),
        "route del 10.40.0.0/24".to_string(),
        "route del 10.41.0.0/24".to_string(),
        "-6 route del fd40::/64".to_string(),
        format!("link del {ALT_DEV}"),
    ] {
        ip_cmd(&args)?;
    }
    Ok(())
}

/// The record of `flow` says it left by `dev` via `hop`.
fn expect_route(records: &[Record], flow: &Flow, dev: &str, hop: &str) -> Result<()> {
    let r = the_one(records, flow)?;
    ensure!(
        r.ifname == dev && r.ifindex == ifindex_of(dev)?,
        "to {}: device {:?} #{}, expected {dev}: {r:?}",
        flow.dst,
        r.ifname,
        r.ifindex
    );
    ensure!(
        r.nexthop.as_deref().map(ip).transpose()? == Some(ip(hop)?),
        "to {}: next hop {:?}, expected {hop}",
        flow.dst,
        r.nexthop
    );
    Ok(())
}

/// Packets re-routed in OUTPUT (a mark with policy routing, for IPv4 and
/// IPv6; DNAT to an address behind the other device) are recorded with the
/// device they leave by, as tcpdump on that device sees them leave.
pub fn reroute(ctx: &Ctx) -> Result<()> {
    reroute_setup()?;
    let result = reroute_checked(ctx);
    reroute_teardown()?;
    result
}

fn reroute_checked(ctx: &Ctx) -> Result<()> {
    let pcap_path = ctx.path("alt.pcap");
    let filter = format!("src host {WATCHED4} or src host {WATCHED6}");
    let mut tcpdump = start_tcpdump(ctx, ALT_DEV, &filter, &pcap_path)?;
    let watcher = Watcher::start(ctx, "watch", &[WATCHED4, WATCHED6])?;
    let marked4 = udp_batch(WATCHED4, MARKED4, 27000, 1, 32)?.remove(0);
    let marked6 = udp_batch(WATCHED6, MARKED6, 27001, 1, 32)?.remove(0);
    let dnat = udp_batch(WATCHED4, DNAT_FROM, 27002, 1, 32)?.remove(0);
    let records = watcher.collect()?;
    wait_until("tcpdump to write the 3 packets", DEADLINE, || {
        Ok((traffic_count(&pcap_path)? >= 3).then_some(()))
    })?;
    tcpdump.signal(libc::SIGINT)?;
    tcpdump.wait_success(DEADLINE)?;
    let left = pcap::flows(&pcap_path)?;
    ctx.log(&format!("tcpdump on {ALT_DEV}: {left:?}"));
    let dnatted = Flow {
        dst: ip(DNAT_TO)?,
        ..dnat
    };
    for flow in [&marked4, &marked6, &dnatted] {
        ensure!(
            left.contains(flow),
            "tcpdump did not see {flow:?} leave by {ALT_DEV}"
        );
    }
    expect_route(&records, &marked4, ALT_DEV, ALT_GW4)?;
    expect_route(&records, &marked6, ALT_DEV, ALT_GW6)?;
    expect_route(&records, &dnatted, ALT_DEV, DNAT_TO)
}

const VRF: &str = "nfwvrf";
const VRF_DEV: &str = "nfwvrf0";
const VRF4: &str = "10.50.0.1";
const VRF6: &str = "fd50::1";
const VRF_PEER4: &str = "10.50.0.9";
const VRF_DATAGRAMS: u16 = 10;
/// Echo requests to each of the VRF's own addresses.
const VRF_PINGS: u32 = 3;

fn vrf_setup() -> Result<()> {
    run(Command::new("modprobe").arg("vrf"))?;
    for args in [
        format!("link add {VRF} type vrf table 150"),
        format!("link set {VRF} up"),
        format!("link add {VRF_DEV} type dummy"),
        format!("link set {VRF_DEV} master {VRF}"),
        format!("addr add {VRF4}/24 dev {VRF_DEV}"),
        format!("addr add {VRF6}/64 dev {VRF_DEV} nodad"),
        format!("link set {VRF_DEV} up"),
    ] {
        ip_cmd(&args)?;
    }
    Ok(())
}

/// Datagrams from a socket bound to the VRF.
fn udp_in_vrf(count: u16) -> Result<Vec<Flow>> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind_device(Some(VRF.as_bytes()))?;
    let local = SocketAddr::new(ip(VRF4)?, 0);
    socket.bind(&local.into())?;
    let local = socket
        .local_addr()?
        .as_socket()
        .context("no local address")?;
    (0..count)
        .map(|i| {
            let to = SocketAddr::new(ip(VRF_PEER4)?, 28000 + i);
            socket.send_to(&[0u8; 32], &to.into())?;
            Ok(Flow {
                proto: "udp".into(),
                src: local.ip(),
                sport: Some(local.port()),
                dst: to.ip(),
                dport: Some(to.port()),
            })
        })
        .collect()
}

/// `ip vrf exec VRF ping` to the VRF's own address `addr`.
fn ping_in_vrf(addr: &str) -> Result<()> {
    let family = if ip(addr)?.is_ipv6() { "-6" } else { "-4" };
    let count = VRF_PINGS.to_string();
    run(Command::new("ip").args([
        "vrf", "exec", VRF, "ping", family, "-n", "-i", "0.2", "-W", "30", "-c", &count, addr,
    ]))
}

/// The VRF's traffic to its own address `addr`: `VRF_PINGS` echo requests
/// and as many replies, each recorded once, with the VRF device, which
/// loops them back (as the default VRF's `lo` does).
fn expect_local_pings(records: &[Record], addr: &str) -> Result<()> {
    let addr = ip(addr)?;
    let (request, reply) = if addr.is_ipv6() { (128, 129) } else { (8, 0) };
    let local: Vec<_> = records
        .iter()
        .filter(|r| ip(&r.dst).ok() == Some(addr))
        .collect();
    for kind in [request, reply] {
        let seen = local.iter().filter(|r| r.icmp_type == Some(kind)).count();
        ensure!(
            seen == VRF_PINGS as usize,
            "to {addr}: {seen} records of ICMP type {kind} for {VRF_PINGS} packets: {local:?}"
        );
    }
    ensure!(
        local.len() == 2 * VRF_PINGS as usize,
        "to {addr}: {} records for {} packets: {local:?}",
        local.len(),
        2 * VRF_PINGS
    );
    for r in &local {
        ensure!(
            r.ifname == VRF
                && r.ifindex == ifindex_of(VRF)?
                && r.nexthop.as_deref().map(ip).transpose()? == Some(addr),
            "to {addr}: expected device {VRF} and next hop {addr}: {r:?}"
        );
    }
    Ok(())
}

/// A packet sent through a VRF crosses LOCAL_OUT twice; it is recorded
/// once, with the device it leaves by. A packet to the VRF's own address
/// crosses it once, with the VRF device, and is recorded once too.
pub fn vrf_once(ctx: &Ctx) -> Result<()> {
    vrf_setup()?;
    let result = (|| {
        let watcher = Watcher::start(ctx, "watch", &[VRF4, VRF6])?;
        let sent = udp_in_vrf(VRF_DATAGRAMS)?;
        ping_in_vrf(VRF4)?;
        ping_in_vrf(VRF6)?;
        let records = watcher.collect()?;
        ctx.log(&format!("{records:?}"));
        let udp: Vec<_> = records
            .iter()
            .filter(|r| r.proto == "udp")
            .cloned()
            .collect();
        ensure!(
            udp.len() == sent.len(),
            "{} UDP records for {} datagrams: {udp:?}",
            udp.len(),
            sent.len()
        );
        for flow in &sent {
            expect_route(&udp, flow, VRF_DEV, VRF_PEER4)?;
        }
        expect_local_pings(&records, VRF4)?;
        expect_local_pings(&records, VRF6)?;
        ensure!(
            records.len() == udp.len() + 4 * VRF_PINGS as usize,
            "{} records in all, expected {}: {records:?}",
            records.len(),
            udp.len() + 4 * VRF_PINGS as usize
        );
        Ok(())
    })();
    ip_cmd(&format!("link del {VRF_DEV}"))?;
    ip_cmd(&format!("link del {VRF}"))?;
    result
}

/// Through a VRF that has a qdisc, LOCAL_OUT runs again inside the VRF's
/// transmit path, run by whichever task gets to the qdisc: those records
/// carry no pid. Through a VRF without one, the sender's pid is given.
pub fn vrf_qdisc_pid(ctx: &Ctx) -> Result<()> {
    vrf_setup()?;
    let result = (|| {
        let own = Some(std::process::id());
        let direct = vrf_udp_pids(ctx)?;
        ensure!(
            direct.iter().all(|pid| *pid == own),
            "through the VRF without a qdisc: pids {direct:?}, expected ours ({own:?}) on each"
        );
        run(Command::new("tc").args(["qdisc", "add", "dev", VRF, "root", "pfifo"]))?;
        let queued = vrf_udp_pids(ctx)?;
        ensure!(
            queued.iter().all(Option::is_none),
            "through the VRF's qdisc: pids {queued:?}, expected none"
        );
        Ok(())
    })();
    ip_cmd(&format!("link del {VRF_DEV}"))?;
    ip_cmd(&format!("link del {VRF}"))?;
    result
}

/// The pids of the records of datagrams sent through the VRF, one each.
fn vrf_udp_pids(ctx: &Ctx) -> Result<Vec<Option<u32>>> {
    let watcher = Watcher::start(ctx, "watch", &[VRF4])?;
    let sent = udp_in_vrf(VRF_DATAGRAMS)?;
    let records = watcher.collect()?;
    ctx.log(&format!("{records:?}"));
    ensure!(
        records.len() == sent.len(),
        "{} records for {} datagrams: {records:?}",
        records.len(),
        sent.len()
    );
    Ok(records.iter().map(|r| r.pid).collect())
}

/// An IPv6 packet as given, sent through a raw socket (headers included).
fn send_ipv6_raw(src: Ipv6Addr, dst: Ipv6Addr, next: u8, rest: &[u8]) -> Result<()> {
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&u16::try_from(rest.len())?.to_be_bytes());
    packet.extend_from_slice(&[next, 64]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(rest);
    send_raw(&packet, dst.into())
}

const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
const NEXTHDR_NONE: u8 = 59;

/// A non-first IPv6 fragment of a UDP datagram reports UDP, as IPv4 does;
/// a header chain ending in NO-NEXT-HEADER after an extension header is a
/// packet of protocol 59.
pub fn ipv6_headers(ctx: &Ctx) -> Result<()> {
    let (src, dst): (Ipv6Addr, Ipv6Addr) = (WATCHED6.parse()?, PEER6.parse()?);
    let watcher = Watcher::start(ctx, "watch", &[WATCHED6])?;
    // Fragment header: UDP next, offset 1480 bytes, last fragment, an id.
    let mut fragment = vec![17, 0];
    fragment.extend_from_slice(&(185u16 << 3).to_be_bytes());
    fragment.extend_from_slice(&0x4e57_u32.to_be_bytes());
    fragment.extend_from_slice(&[0u8; 16]);
    send_ipv6_raw(src, dst, NEXTHDR_FRAGMENT, &fragment)?;
    // Destination options (8 bytes, PadN) followed by nothing.
    send_ipv6_raw(src, dst, NEXTHDR_DEST, &[NEXTHDR_NONE, 0, 1, 4, 0, 0, 0, 0])?;
    let records = watcher.collect()?;
    ctx.log(&format!("{records:?}"));
    let [frag, none] = records.as_slice() else {
        anyhow::bail!("expected 2 records, got {}: {records:?}", records.len());
    };
    ensure!(
        frag.proto == "udp" && frag.frag && frag.sport.is_none() && frag.len == 40 + 24,
        "the non-first fragment: {frag:?}"
    );
    ensure!(
        none.proto == NEXTHDR_NONE.to_string() && !none.frag && none.len == 40 + 8,
        "the NO-NEXT-HEADER packet: {none:?}"
    );
    Ok(())
}
