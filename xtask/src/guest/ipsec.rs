//! IPsec: a packet this host sends through an ESP security association is
//! recorded once, as the application sent it, with the device and next hop
//! the ESP packet leaves by; tcpdump on the wire sees the ESP packets.

use super::net::{DEV, ONLINK4, ONLINK6, PEER4, PEER6, ROUTED4, ROUTED6, WATCHED4, WATCHED6};
use super::nfwatch::{Record, Watcher, DEADLINE};
use super::scenarios::{start_tcpdump, traffic_count};
use super::traffic::{ip, udp_batch, Flow};
use super::{pcap, Ctx};
use crate::util::{run, wait_until};
use anyhow::{ensure, Result};
use std::process::Command;

/// Datagrams sent through each association.
const DATAGRAMS: u16 = 4;

/// One association and the policy that sends `dst`'s traffic through it.
struct Case {
    mode: &'static str,
    src: &'static str,
    /// The datagrams' destination.
    dst: &'static str,
    /// The ESP packets' destination: `dst` in transport mode, the tunnel's
    /// far end in tunnel mode (on-link, while `dst` is routed via the peer).
    remote: &'static str,
    spi: u32,
}

const CASES: &[Case] = &[
    Case {
        mode: "transport",
        src: WATCHED4,
        dst: PEER4,
        remote: PEER4,
        spi: 0x4001,
    },
    Case {
        mode: "tunnel",
        src: WATCHED4,
        dst: ROUTED4,
        remote: ONLINK4,
        spi: 0x4002,
    },
    Case {
        mode: "transport",
        src: WATCHED6,
        dst: PEER6,
        remote: PEER6,
        spi: 0x6001,
    },
    Case {
        mode: "tunnel",
        src: WATCHED6,
        dst: ROUTED6,
        remote: ONLINK6,
        spi: 0x6002,
    },
];

fn ip_xfrm(args: &str) -> Result<()> {
    run(Command::new("ip").arg("xfrm").args(args.split_whitespace()))
}

/// A static ESP association (AES-CBC, HMAC-SHA256) and its output policy.
fn add(case: &Case) -> Result<()> {
    let Case {
        mode,
        src,
        dst,
        remote,
        spi,
    } = case;
    let host = if ip(src)?.is_ipv6() { 128 } else { 32 };
    ip_xfrm(&format!(
        "state add src {src} dst {remote} proto esp spi {spi:#x} reqid {spi} mode {mode} \
         enc cbc(aes) 0x{:032x} auth hmac(sha256) 0x{:064x}",
        spi, spi
    ))?;
    ip_xfrm(&format!(
        "policy add src {src}/{host} dst {dst}/{host} dir out \
         tmpl src {src} dst {remote} proto esp reqid {spi} mode {mode}"
    ))
}

fn esp_flow(case: &Case) -> Result<Flow> {
    Ok(Flow {
        proto: "50".into(),
        src: ip(case.src)?,
        sport: None,
        dst: ip(case.remote)?,
        dport: None,
    })
}

/// Each datagram recorded once, as sent, by nfw0 with the ESP packet's
/// next hop.
fn check_records(case: &Case, sent: &[Flow], records: &[Record]) -> Result<()> {
    for flow in sent {
        let ours: Vec<&Record> = records
            .iter()
            .filter(|r| Flow::of(r).is_ok_and(|f| f == *flow))
            .collect();
        let [one] = ours.as_slice() else {
            anyhow::bail!(
                "{} mode to {}: {} records of {flow:?}, expected 1: {ours:?}",
                case.mode,
                case.dst,
                ours.len()
            );
        };
        ensure!(
            one.ifname == DEV,
            "{} mode to {}: device {:?}, expected {DEV}: {one:?}",
            case.mode,
            case.dst,
            one.ifname
        );
        let hop = one.nexthop.as_deref().map(ip).transpose()?;
        ensure!(
            hop == Some(ip(case.remote)?),
            "{} mode to {}: next hop {hop:?}, expected {} (the ESP packet's): {one:?}",
            case.mode,
            case.dst,
            case.remote
        );
    }
    Ok(())
}

pub fn ipsec_once(ctx: &Ctx) -> Result<()> {
    let result = ipsec_checked(ctx);
    ip_xfrm("policy flush")?;
    ip_xfrm("state flush")?;
    result
}

fn ipsec_checked(ctx: &Ctx) -> Result<()> {
    for case in CASES {
        add(case)?;
    }
    let pcap_path = ctx.path("esp.pcap");
    let mut tcpdump = start_tcpdump(ctx, DEV, "esp", &pcap_path)?;
    let watcher = Watcher::start(ctx, "watch", &[WATCHED4, WATCHED6])?;
    let mut sent = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let first = 26000 + 100 * u16::try_from(i)?;
        sent.push(udp_batch(case.src, case.dst, first, DATAGRAMS, 64)?);
    }
    let records = watcher.collect()?;
    ctx.log(&format!("{records:?}"));
    let expected = CASES.len() * usize::from(DATAGRAMS);
    let captured = wait_until("tcpdump to write every ESP packet", DEADLINE, || {
        Ok((traffic_count(&pcap_path)? >= expected).then_some(()))
    });
    tcpdump.signal(libc::SIGINT)?;
    tcpdump.wait_success(DEADLINE)?;
    captured?;
    let wire = pcap::flows(&pcap_path)?;
    for (case, sent) in CASES.iter().zip(&sent) {
        let esp = esp_flow(case)?;
        let on_wire = wire.iter().filter(|f| **f == esp).count();
        ensure!(
            on_wire == sent.len(),
            "{} mode to {}: tcpdump saw {on_wire} ESP packets to {}, expected {}",
            case.mode,
            case.dst,
            case.remote,
            sent.len()
        );
        check_records(case, sent, &records)?;
    }
    ensure!(
        records.len() == expected,
        "{} records for {expected} datagrams: {records:?}",
        records.len()
    );
    Ok(())
}
