//! A tiny reader of tcpdump's pcap files (Ethernet link type): the flows of
//! the complete packets captured so far.

use super::traffic::{proto_name, Flow};
use anyhow::{bail, ensure, Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

const LINKTYPE_ETHERNET: u32 = 1;

/// Flows of the complete packets in `path` (a partly written last packet is
/// ignored: tcpdump may be writing it).
pub fn flows(path: &Path) -> Result<Vec<Flow>> {
    Ok(packets(path)?.into_iter().map(|(flow, _)| flow).collect())
}

/// Each packet's flow and IP length (the header's: a GSO packet's whole).
pub fn packets(path: &Path) -> Result<Vec<(Flow, u32)>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if data.len() < 24 {
        return Ok(Vec::new());
    }
    let word = |at: usize, le: bool| {
        let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let le = match word(0, true) {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        _ if matches!(word(0, false), 0xa1b2_c3d4 | 0xa1b2_3c4d) => false,
        magic => bail!("{}: not a pcap file (magic {magic:#x})", path.display()),
    };
    ensure!(
        word(20, le) == LINKTYPE_ETHERNET,
        "pcap link type {} is not Ethernet",
        word(20, le)
    );
    let mut flows = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = word(at + 8, le) as usize;
        let start = at + 16;
        if start + caplen > data.len() {
            break;
        }
        flows.push(ethernet(&data[start..start + caplen])?);
        at = start + caplen;
    }
    Ok(flows)
}

fn port(l4: &[u8], at: usize) -> Result<u16> {
    let b = l4.get(at..at + 2).context("truncated L4 header")?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn flow(proto: u8, src: IpAddr, dst: IpAddr, l4: Option<&[u8]>) -> Result<Flow> {
    let (sport, dport) = match (proto, l4) {
        (6 | 17, Some(l4)) => (Some(port(l4, 0)?), Some(port(l4, 2)?)),
        _ => (None, None),
    };
    Ok(Flow {
        proto: proto_name(proto),
        src,
        sport,
        dst,
        dport,
    })
}

fn ethernet(frame: &[u8]) -> Result<(Flow, u32)> {
    let ip = frame.get(14..).context("truncated Ethernet frame")?;
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => ipv4(ip),
        0x86dd => ipv6(ip),
        other => bail!("unexpected ethertype {other:#06x}"),
    }
}

fn ipv4(ip: &[u8]) -> Result<(Flow, u32)> {
    ensure!(ip.len() >= 20, "truncated IPv4 header");
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = if frag_offset == 0 {
        ip.get(ihl..)
    } else {
        None
    };
    let len = u16::from_be_bytes([ip[2], ip[3]]);
    Ok((flow(ip[9], src.into(), dst.into(), l4)?, len.into()))
}

fn ipv6(ip: &[u8]) -> Result<(Flow, u32)> {
    ensure!(ip.len() >= 40, "truncated IPv6 header");
    let addr = |at: usize| -> Result<IpAddr> {
        let bytes: [u8; 16] = ip[at..at + 16].try_into()?;
        Ok(Ipv6Addr::from(bytes).into())
    };
    let len = 40 + u32::from(u16::from_be_bytes([ip[4], ip[5]]));
    Ok((flow(ip[6], addr(8)?, addr(24)?, ip.get(40..))?, len))
}
