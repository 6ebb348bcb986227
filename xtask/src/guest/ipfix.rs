//! `--format ipfix`: the file read by libfixbuf's ipfixDump, record by
//! record equal to the JSON Lines a second watcher wrote of the same
//! packets.

use super::net::{PEER4, PEER6, TCP_PORT, WATCHED4, WATCHED6};
use super::nfwatch::{PaddedName, Record, Watcher};
use super::traffic::{ping, tcp_exchange, udp_batch};
use super::Ctx;
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

/// nfwatch's enterprise elements are named from the file's RFC 5610
/// records, so `--rfc5610` is what makes these names appear.
const UID: &str = "nfwatchUid";
const PID: &str = "nfwatchPid";
const COMM: &str = "nfwatchComm";
const NETNS: &str = "nfwatchNetns";
/// The uid of a packet no socket owns.
const NO_UID: &str = "4294967295";

/// One data record as ipfixDump prints it: its template, and each field's
/// value by element name.
struct Dumped {
    template: u16,
    fields: BTreeMap<String, String>,
}

/// The data records of `path`, in order, from `ipfixDump --rfc5610 -d`,
/// which must read the whole file without a complaint.
fn ipfix_dump(path: &Path) -> Result<Vec<Dumped>> {
    let out = Command::new("ipfixDump")
        .arg("--rfc5610")
        .arg("--data")
        .arg("--in")
        .arg(path)
        .output()
        .context("cannot run ipfixDump (Debian package libfixbuf-tools)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stderr.trim().is_empty(),
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
    ensure!(
        dumped.text(COMM)? == name_text(r.comm.as_ref())?,
        "{COMM}: {r:?}"
    );
    // ipfixDump prints the second of dateTimeNanoseconds ("YYYY-MM-DD
    // HH:MM:SS.…"); the record's is "YYYY-MM-DDTHH:MM:SS.…Z".
    let second = |ts: &str| ts.replace('T', " ").chars().take(19).collect::<String>();
    let time = dumped.get("observationTimeNanoseconds")?;
    ensure!(
        second(time) == second(&r.ts),
        "observationTimeNanoseconds {time}: {r:?}"
    );
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
    udp_batch(WATCHED4, PEER4, 7000, 10, 64)?;
    udp_batch(WATCHED6, PEER6, 7000, 10, 64)?;
    tcp_exchange(WATCHED4, PEER4, TCP_PORT, &[7; 5000])?;
    tcp_exchange(WATCHED6, PEER6, TCP_PORT, &[7; 5000])?;
    ping(WATCHED4, PEER4, 2)?;
    ping(WATCHED6, PEER6, 2)?;
    let records = jsonl.collect()?;
    let summary = ipfix.stop()?;
    summary.check_lossless(records.len())?;
    let dumped = ipfix_dump(&path)?;
    let data: Vec<&Dumped> = dumped
        .iter()
        .filter(|d| d.template >= 256 && d.template != 258)
        .collect();
    ensure!(
        data.len() == records.len(),
        "ipfixDump read {} packet records, the JSON Lines file has {}",
        data.len(),
        records.len()
    );
    for (r, d) in records.iter().zip(&data) {
        check_same(r, d)?;
    }
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
