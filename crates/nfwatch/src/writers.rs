//! Output formats and the committing file sink. Lines are formatted into a
//! reused buffer: no allocation per record.

use std::fs::File;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use nfwatch_proto::{Family, PaddedName, ProtoError, Record, RecordBytes};

use crate::cgroup::{CgroupInfo, Cgroups};
use crate::sockets::SocketHolders;
use time::macros::format_description;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Csv,
    Jsonl,
    Legacy,
}

pub const CSV_HEADER: &str =
    "ts,family,proto,src,dst,sport,dport,icmp_type,icmp_code,len,ifindex,ifname,nexthop,uid,pid,frag,segs,comm,cgroup_id,cgroup,unit,container,netns";

/// (number, name in JSON/CSV, name in text/legacy).
const PROTOCOLS: [(u8, &str, &str); 11] = [
    (1, "icmp", "ICMP"),
    (2, "igmp", "IGMP"),
    (6, "tcp", "TCP"),
    (17, "udp", "UDP"),
    (33, "dccp", "DCCP"),
    (47, "gre", "GRE"),
    (50, "esp", "ESP"),
    (51, "ah", "AH"),
    (58, "icmpv6", "ICMPV6"),
    (132, "sctp", "SCTP"),
    (136, "udplite", "UDPLITE"),
];

fn protocol(number: u8) -> Option<(&'static str, &'static str)> {
    PROTOCOLS
        .iter()
        .find(|(n, _, _)| *n == number)
        .map(|&(_, lower, upper)| (lower, upper))
}

fn write_proto(out: &mut Vec<u8>, number: u8, upper: bool) {
    match protocol(number) {
        Some((lower, upper_name)) => {
            out.extend_from_slice(if upper { upper_name } else { lower }.as_bytes())
        }
        None => push_num(out, number),
    }
}

// The primitives below write straight into the line buffer: core::fmt costs
// more than the rest of a record's formatting, and this runs per packet.

fn push_num(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The number, or `none` when there is none.
fn push_opt_num(out: &mut Vec<u8>, value: Option<impl itoa::Integer>, none: &[u8]) {
    match value {
        Some(n) => push_num(out, n),
        None => out.extend_from_slice(none),
    }
}

fn push_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

fn push_ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_num(out, octet);
            }
        }
        // RFC 5952 compression is worth the library; writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The text of the last value of one field. A flow's records repeat their
/// second, addresses and device; formatting those again was most of a
/// line's cost.
struct Memo<K> {
    key: Option<K>,
    text: Vec<u8>,
}

impl<K: Copy + PartialEq> Memo<K> {
    fn new() -> Self {
        Self {
            key: None,
            text: Vec::new(),
        }
    }

    /// Appends the text of `key`, rendering it only when it changed.
    fn push(
        &mut self,
        out: &mut Vec<u8>,
        key: K,
        render: impl FnOnce(&mut Vec<u8>, K) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.key != Some(key) {
            self.key = None;
            self.text.clear();
            render(&mut self.text, key)?;
            self.key = Some(key);
        }
        out.extend_from_slice(&self.text);
        Ok(())
    }

    /// The next push renders again.
    fn forget(&mut self) {
        self.key = None;
    }

    fn push_ip(&mut self, out: &mut Vec<u8>, addr: K) -> io::Result<()>
    where
        K: Into<IpAddr>,
    {
        self.push(out, addr, |text, addr| {
            push_ip(text, addr.into());
            Ok(())
        })
    }
}

/// "YYYY-MM-DDTHH:MM:SS" of a second since 1970 (u64 nanoseconds stay
/// below year 10000: always 19 bytes).
fn render_second(text: &mut Vec<u8>, second: u64) -> io::Result<()> {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let time = OffsetDateTime::from_unix_timestamp(second as i64)
        .map_err(|e| io::Error::other(e.to_string()))?;
    time.format_into(text, format)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(())
}

/// "00" to "99", for writing two digits at a time.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

/// ".NNNNNNNNNZ": the nine digits of `nanos` (below 10^9), two at a time,
/// since every line has one.
fn fraction(mut nanos: u32) -> [u8; 11] {
    let mut text = *b".000000000Z";
    for at in [8, 6, 4, 2] {
        let pair = (nanos % 100) as usize * 2;
        text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        nanos /= 100;
    }
    text[1] = b'0' + nanos as u8;
    text
}

/// A name (device, command, cgroup path) as one format writes it (escaped,
/// quoted where needed).
fn render_name(text: &mut Vec<u8>, format: Format, name: &[u8]) {
    match format {
        Format::Jsonl => write_json_name(text, name),
        Format::Csv => write_csv_name(text, name),
        Format::Text | Format::Legacy => push_escaped_name(text, name),
    }
}

/// An optional name in JSON (null) or CSV (empty).
fn render_opt_name(text: &mut Vec<u8>, format: Format, name: Option<&[u8]>) {
    match name {
        Some(name) => render_name(text, format, name),
        None if format == Format::Jsonl => text.extend_from_slice(b"null"),
        None => {}
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// Why a record could not be written as a line.
#[derive(Debug)]
pub enum LineError {
    /// Its bytes break the contract.
    Malformed(ProtoError),
    /// A field could not be rendered.
    Format(io::Error),
}

impl From<ProtoError> for LineError {
    fn from(cause: ProtoError) -> Self {
        Self::Malformed(cause)
    }
}

impl From<io::Error> for LineError {
    fn from(cause: io::Error) -> Self {
        Self::Format(cause)
    }
}

/// The numbers that differ between records of one flow (besides the time).
#[derive(Debug, Clone, Copy)]
enum Varying {
    Len,
    Segs,
}

impl Varying {
    fn pick(self, len: u32, segs: u16) -> u32 {
        match self {
            Varying::Len => len,
            Varying::Segs => u32::from(segs),
        }
    }
}

/// The last flow's line after the timestamp, with gaps for the `Varying`
/// numbers. A flow's records come in runs (a batch holds what one socket
/// sent), and parsing a record and writing out its addresses, ports, names
/// and keys again was most of a line's cost.
struct FlowText {
    /// The bytes of the record `text` was written for (empty: none).
    record: Vec<u8>,
    text: Vec<u8>,
    /// Where in `text` each varying number goes, in order.
    gaps: Vec<(usize, Varying)>,
    /// The process in `text` was found by the socket's file.
    by_socket: bool,
}

impl FlowText {
    fn new() -> Self {
        Self {
            record: Vec::new(),
            text: Vec::new(),
            gaps: Vec::new(),
            by_socket: false,
        }
    }

    fn write(&self, out: &mut Vec<u8>, record: RecordBytes) {
        let mut from = 0;
        for &(at, varying) in &self.gaps {
            out.extend_from_slice(&self.text[from..at]);
            push_num(out, varying.pick(record.ip_len(), record.segs()));
            from = at;
        }
        out.extend_from_slice(&self.text[from..]);
    }

    /// Takes `line[start..]`, minus the `spans` the varying numbers filled.
    fn learn(
        &mut self,
        record: RecordBytes,
        line: &[u8],
        start: usize,
        spans: &[(usize, usize, Varying)],
    ) {
        self.text.clear();
        self.gaps.clear();
        let mut from = start;
        for &(span_start, span_end, varying) in spans {
            self.text.extend_from_slice(&line[from..span_start]);
            self.gaps.push((self.text.len(), varying));
            from = span_end;
        }
        self.text.extend_from_slice(&line[from..]);
        self.record.extend_from_slice(record.bytes());
    }
}

/// What the owner part of a line is written from: comm, pid, cgroup id,
/// network namespace.
type OwnerKey = (Option<PaddedName>, Option<u32>, Option<u64>, Option<u32>);

/// Formats records as lines of one format, remembering the text of what
/// repeats from one record to the next: a flow's whole line, and within a
/// new flow's line each field.
pub struct LineFormatter {
    format: Format,
    flow: FlowText,
    /// Where the varying numbers went in the line being written in full.
    spans: Vec<(usize, usize, Varying)>,
    second: Memo<u64>,
    src: Memo<IpAddr>,
    dst: Memo<IpAddr>,
    nexthop: Memo<IpAddr>,
    ifname: Memo<PaddedName>,
    owner: Memo<OwnerKey>,
    /// The line just written has a cgroup id not found: not to be reused.
    cgroup_missed: bool,
    cgroups: Cgroups,
    sockets: SocketHolders,
    by_socket: u64,
}

impl LineFormatter {
    /// `cgroups` turns the records' cgroup ids into paths, units and
    /// containers.
    pub fn new(format: Format, cgroups: Cgroups) -> Self {
        Self {
            format,
            flow: FlowText::new(),
            spans: Vec::new(),
            second: Memo::new(),
            src: Memo::new(),
            dst: Memo::new(),
            nexthop: Memo::new(),
            ifname: Memo::new(),
            owner: Memo::new(),
            cgroup_missed: false,
            cgroups,
            sockets: SocketHolders::new(),
            by_socket: 0,
        }
    }

    /// Appends one line (with '\n') for `record` to `out`.
    pub fn line(&mut self, out: &mut Vec<u8>, record: RecordBytes) -> Result<(), LineError> {
        match self.format {
            Format::Text | Format::Csv => self.ts(out, record.ts_ns())?,
            Format::Jsonl => {
                out.extend_from_slice(b"{\"ts\":\"");
                self.ts(out, record.ts_ns())?;
            }
            Format::Legacy => {}
        }
        if record.same_flow(&self.flow.record) {
            self.flow.write(out, record);
        } else {
            self.flow.record.clear();
            let mut parsed = record.parse()?;
            self.flow.by_socket = self.held_by(&mut parsed);
            self.spans.clear();
            let start = out.len();
            match self.format {
                Format::Text => self.text(out, &parsed)?,
                Format::Csv => self.csv(out, &parsed)?,
                Format::Jsonl => self.json(out, &parsed)?,
                Format::Legacy => self.legacy(out, &parsed)?,
            }
            self.flow.learn(record, out, start, &self.spans);
            if std::mem::take(&mut self.cgroup_missed) {
                self.flow.record.clear();
            }
        }
        self.by_socket += u64::from(self.flow.by_socket);
        out.push(b'\n');
        Ok(())
    }

    /// Lines whose process was found by the socket's file (see `held_by`).
    pub fn by_socket(&self) -> u64 {
        self.by_socket
    }

    /// A record without a sending process gets the process holding its
    /// socket, if any: true when it did.
    fn held_by(&mut self, r: &mut Record) -> bool {
        if r.comm.is_some() {
            return false;
        }
        let Some(holder) = r.sock_ino.and_then(|ino| self.sockets.holder(ino)) else {
            return false;
        };
        r.pid = Some(holder.pid);
        r.comm = Some(holder.comm);
        true
    }

    /// A number that differs between records of one flow.
    fn varying(&mut self, out: &mut Vec<u8>, varying: Varying, record: &Record) {
        let start = out.len();
        push_num(out, varying.pick(record.len, record.segs));
        self.spans.push((start, out.len(), varying));
    }

    /// RFC 3339 in UTC with exactly nine fractional digits.
    fn ts(&mut self, out: &mut Vec<u8>, ts_ns: u64) -> io::Result<()> {
        let (second, nanos) = (ts_ns / 1_000_000_000, ts_ns % 1_000_000_000);
        self.second.push(out, second, render_second)?;
        out.extend_from_slice(&fraction(nanos as u32));
        Ok(())
    }

    fn ifname(&mut self, out: &mut Vec<u8>, name: PaddedName) -> io::Result<()> {
        let format = self.format;
        self.ifname.push(out, name, |text, name| {
            render_name(text, format, name.as_bytes());
            Ok(())
        })
    }

    /// The part of the line that says who sent the packet, remembered as
    /// the other fields are: the records of a process's sockets (a TCP
    /// connection's data and ACKs) alternate flows but not owners.
    fn owner(&mut self, out: &mut Vec<u8>, r: &Record) {
        let format = self.format;
        let cgroups = &mut self.cgroups;
        let mut resolved = true;
        let key = (r.comm, r.pid, r.cgroup_id, r.netns);
        let _ = self.owner.push(out, key, |text, _| {
            resolved = match format {
                Format::Text => text_owner(text, cgroups, r),
                _ => owner_fields(text, format, cgroups, r),
            };
            Ok(())
        });
        // A cgroup too new for the last walk of the tree: look again next time.
        if !resolved {
            self.owner.forget();
            self.cgroup_missed = true;
        }
    }

    /// After the timestamp.
    fn text(&mut self, out: &mut Vec<u8>, r: &Record) -> io::Result<()> {
        out.push(b' ');
        write_proto(out, r.proto, true);
        out.push(b' ');
        write_endpoint(out, &mut self.src, r.src, r.ports.map(|p| p.0))?;
        out.extend_from_slice(b" -> ");
        write_endpoint(out, &mut self.dst, r.dst, r.ports.map(|p| p.1))?;
        if let Some((icmp_type, icmp_code)) = r.icmp {
            out.extend_from_slice(b" type ");
            push_num(out, icmp_type);
            out.extend_from_slice(b" code ");
            push_num(out, icmp_code);
        }
        out.extend_from_slice(b" dev ");
        self.ifname(out, r.ifname)?;
        if let Some(nexthop) = r.nexthop {
            out.extend_from_slice(b" via ");
            self.nexthop.push_ip(out, nexthop)?;
        }
        out.extend_from_slice(b" len ");
        self.varying(out, Varying::Len, r);
        if r.frag {
            out.extend_from_slice(b" frag");
        }
        if let Some(uid) = r.uid {
            out.extend_from_slice(b" uid ");
            push_num(out, uid);
        }
        self.owner(out, r);
        Ok(())
    }

    /// The original tool's line: no timestamp.
    fn legacy(&mut self, out: &mut Vec<u8>, r: &Record) -> io::Result<()> {
        let (sport, dport) = r.ports.unwrap_or_default();
        out.extend_from_slice(b"srcIP:");
        self.src.push_ip(out, r.src)?;
        out.extend_from_slice(b" dstIP:");
        self.dst.push_ip(out, r.dst)?;
        out.extend_from_slice(b" srcPORT:");
        push_num(out, sport);
        out.extend_from_slice(b" dstPORT:");
        push_num(out, dport);
        out.extend_from_slice(b" PROTOCOL:");
        write_proto(out, r.proto, true);
        Ok(())
    }

    /// After `{"ts":"` and the timestamp.
    fn json(&mut self, out: &mut Vec<u8>, r: &Record) -> io::Result<()> {
        out.extend_from_slice(b"\",\"family\":\"");
        out.extend_from_slice(family_name(r.family).as_bytes());
        out.extend_from_slice(b"\",\"proto\":\"");
        write_proto(out, r.proto, false);
        out.extend_from_slice(b"\",\"src\":\"");
        self.src.push_ip(out, r.src)?;
        out.extend_from_slice(b"\",\"dst\":\"");
        self.dst.push_ip(out, r.dst)?;
        out.extend_from_slice(b"\",\"sport\":");
        push_opt_num(out, r.ports.map(|p| p.0), b"null");
        out.extend_from_slice(b",\"dport\":");
        push_opt_num(out, r.ports.map(|p| p.1), b"null");
        out.extend_from_slice(b",\"icmp_type\":");
        push_opt_num(out, r.icmp.map(|i| i.0), b"null");
        out.extend_from_slice(b",\"icmp_code\":");
        push_opt_num(out, r.icmp.map(|i| i.1), b"null");
        out.extend_from_slice(b",\"len\":");
        self.varying(out, Varying::Len, r);
        out.extend_from_slice(b",\"ifindex\":");
        push_num(out, r.ifindex);
        out.extend_from_slice(b",\"ifname\":");
        self.ifname(out, r.ifname)?;
        out.extend_from_slice(b",\"nexthop\":");
        match r.nexthop {
            Some(nexthop) => {
                out.push(b'"');
                self.nexthop.push_ip(out, nexthop)?;
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"uid\":");
        push_opt_num(out, r.uid, b"null");
        out.extend_from_slice(b",\"pid\":");
        push_opt_num(out, r.pid, b"null");
        out.extend_from_slice(b",\"frag\":");
        push_bool(out, r.frag);
        out.extend_from_slice(b",\"segs\":");
        self.varying(out, Varying::Segs, r);
        self.owner(out, r);
        out.push(b'}');
        Ok(())
    }

    /// After the timestamp: every field is preceded by its comma.
    fn csv(&mut self, out: &mut Vec<u8>, r: &Record) -> io::Result<()> {
        out.push(b',');
        out.extend_from_slice(family_name(r.family).as_bytes());
        out.push(b',');
        write_proto(out, r.proto, false);
        out.push(b',');
        self.src.push_ip(out, r.src)?;
        out.push(b',');
        self.dst.push_ip(out, r.dst)?;
        for value in [
            r.ports.map(|p| p.0),
            r.ports.map(|p| p.1),
            r.icmp.map(|i| u16::from(i.0)),
            r.icmp.map(|i| u16::from(i.1)),
        ] {
            out.push(b',');
            push_opt_num(out, value, b"");
        }
        out.push(b',');
        self.varying(out, Varying::Len, r);
        out.push(b',');
        push_num(out, r.ifindex);
        out.push(b',');
        self.ifname(out, r.ifname)?;
        out.push(b',');
        if let Some(nexthop) = r.nexthop {
            self.nexthop.push_ip(out, nexthop)?;
        }
        out.push(b',');
        push_opt_num(out, r.uid, b"");
        out.push(b',');
        push_opt_num(out, r.pid, b"");
        out.push(b',');
        push_bool(out, r.frag);
        out.push(b',');
        self.varying(out, Varying::Segs, r);
        self.owner(out, r);
        Ok(())
    }
}

/// Text: `comm[pid]`, then the container, else the unit, else the
/// cgroup's path (or its id, if it is not found), none for the root. False
/// when the cgroup was not found.
fn text_owner(out: &mut Vec<u8>, cgroups: &mut Cgroups, r: &Record) -> bool {
    if let Some(comm) = r.comm {
        out.push(b' ');
        push_escaped_name(out, comm.as_bytes());
        if let Some(pid) = r.pid {
            out.push(b'[');
            push_num(out, pid);
            out.push(b']');
        }
    }
    let Some(id) = r.cgroup_id else { return true };
    match cgroups.resolve(id) {
        Some(CgroupInfo {
            container: Some(container),
            ..
        }) => {
            out.extend_from_slice(b" container ");
            push_escaped_name(out, container.as_bytes());
        }
        Some(CgroupInfo {
            unit: Some(unit), ..
        }) => {
            out.extend_from_slice(b" unit ");
            push_escaped_name(out, unit.as_bytes());
        }
        Some(CgroupInfo { path, .. }) if path == "/" => {}
        Some(CgroupInfo { path, .. }) => {
            out.extend_from_slice(b" cgroup ");
            push_escaped_name(out, path.as_bytes());
        }
        None => {
            out.extend_from_slice(b" cgroup ");
            push_num(out, id);
            return false;
        }
    }
    true
}

/// JSON and CSV, after `segs`: comm, cgroup_id, cgroup, unit, container,
/// netns, each preceded by its key or comma. False when the cgroup was not
/// found.
fn owner_fields(out: &mut Vec<u8>, format: Format, cgroups: &mut Cgroups, r: &Record) -> bool {
    let json = format == Format::Jsonl;
    let separator = |out: &mut Vec<u8>, key: &[u8]| {
        if json {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key);
            out.extend_from_slice(b"\":");
        } else {
            out.push(b',');
        }
    };
    let none: &[u8] = if json { b"null" } else { b"" };
    separator(out, b"comm");
    render_opt_name(out, format, r.comm.as_ref().map(PaddedName::as_bytes));
    separator(out, b"cgroup_id");
    push_opt_num(out, r.cgroup_id, none);
    let info = r.cgroup_id.and_then(|id| cgroups.resolve(id));
    let resolved = r.cgroup_id.is_none() || info.is_some();
    separator(out, b"cgroup");
    render_opt_name(out, format, info.map(|i| i.path.as_bytes()));
    separator(out, b"unit");
    render_opt_name(
        out,
        format,
        info.and_then(|i| i.unit.as_deref()).map(str::as_bytes),
    );
    separator(out, b"container");
    let container = info.and_then(|i| i.container.as_deref());
    render_opt_name(out, format, container.map(str::as_bytes));
    separator(out, b"netns");
    push_opt_num(out, r.netns, none);
    resolved
}

/// `addr`, or `addr:port` (`[addr]:port` for IPv6).
fn write_endpoint(
    out: &mut Vec<u8>,
    memo: &mut Memo<IpAddr>,
    addr: IpAddr,
    port: Option<u16>,
) -> io::Result<()> {
    let bracket = addr.is_ipv6() && port.is_some();
    if bracket {
        out.push(b'[');
    }
    memo.push_ip(out, addr)?;
    if bracket {
        out.push(b']');
    }
    if let Some(port) = port {
        out.push(b':');
        push_num(out, port);
    }
    Ok(())
}

/// `name` as a JSON value: a string when it is UTF-8 (control characters,
/// DEL and C1 included, as `\uXXXX`), else an array of its bytes, as
/// `journalctl -o json` writes fields that are not UTF-8. Either way valid
/// JSON, and distinct names never look alike.
fn write_json_name(out: &mut Vec<u8>, name: &[u8]) {
    let Ok(text) = std::str::from_utf8(name) else {
        out.push(b'[');
        for (i, &byte) in name.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_num(out, byte);
        }
        out.push(b']');
        return;
    };
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out.push(b'"');
}

/// `name` for text and CSV: printable UTF-8 as it is, `\` as `\\`, and
/// every other byte (those of control characters C0, DEL and C1, and
/// bytes that are not UTF-8) as `\xHH`. Never a control byte raw, and
/// distinct names stay distinct.
fn push_escaped_name(out: &mut Vec<u8>, name: &[u8]) {
    fn hex(out: &mut Vec<u8>, byte: u8) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(&[
            b'\\',
            b'x',
            DIGITS[usize::from(byte >> 4)],
            DIGITS[usize::from(byte & 0xf)],
        ]);
    }
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            let mut utf8 = [0; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            if c == '\\' {
                out.extend_from_slice(b"\\\\");
            } else if c.is_control() {
                bytes.iter().for_each(|&b| hex(out, b));
            } else {
                out.extend_from_slice(bytes);
            }
        }
        chunk.invalid().iter().for_each(|&b| hex(out, b));
    }
}

/// Characters that make a spreadsheet read a cell as a formula, and the
/// quote that guards against them (so a name starting with it is guarded
/// too, keeping names distinct).
const CSV_FORMULA_START: &[u8] = b"=+-@'";

/// `name` as a CSV field: escaped as in text, a `'` put before a field
/// starting with one of CSV_FORMULA_START, and quoted (RFC 4180) when it
/// then holds a comma, a quote or the guard.
fn write_csv_name(out: &mut Vec<u8>, name: &[u8]) {
    let start = out.len();
    push_escaped_name(out, name);
    let guarded = out
        .get(start)
        .is_some_and(|first| CSV_FORMULA_START.contains(first));
    if guarded {
        out.insert(start, b'\'');
    }
    if !guarded && !out[start..].iter().any(|&b| b == b',' || b == b'"') {
        return;
    }
    let field = out.split_off(start);
    out.push(b'"');
    for byte in field {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    out.push(b'"');
}

/// Where lines go, and how much of them is known to be on disk.
pub enum Destination {
    Stdout(io::Stdout),
    /// A file, with its length when we opened it (non-zero when appending).
    File {
        file: File,
        start: u64,
    },
}

impl Destination {
    /// A regular file (stdout included when redirected to one), as opposed
    /// to a terminal, pipe or device someone may be reading live.
    pub fn is_regular_file(&self) -> bool {
        let metadata = match self {
            Destination::Stdout(stdout) => stdout
                .as_fd()
                .try_clone_to_owned()
                .and_then(|fd| File::from(fd).metadata()),
            Destination::File { file, .. } => file.metadata(),
        };
        metadata.is_ok_and(|m| m.is_file())
    }
}

impl Write for Destination {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Destination::Stdout(stdout) => stdout.write(bytes),
            Destination::File { file, .. } => file.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Destination::Stdout(stdout) => stdout.flush(),
            Destination::File { .. } => Ok(()),
        }
    }
}

/// Buffers whole lines and writes them out; after a failed write it knows
/// where the last complete line ends so a file can be cut back to it.
pub struct LineSink {
    destination: Destination,
    pending: Vec<u8>,
    pending_lines: u64,
    /// When the oldest line in `pending` was added.
    pending_since: Option<Instant>,
    /// Bytes of complete lines that reached the current destination.
    committed_bytes: u64,
    /// Lines that reached any destination (headers are not lines).
    committed_lines: u64,
}

const SINK_BUFFER_BYTES: usize = 256 * 1024;

impl LineSink {
    pub fn new(destination: Destination) -> Self {
        Self {
            destination,
            pending: Vec::with_capacity(SINK_BUFFER_BYTES + 4096),
            pending_lines: 0,
            pending_since: None,
            committed_bytes: 0,
            committed_lines: 0,
        }
    }

    /// The buffer to append exactly one complete line to, then `line_added`.
    pub fn line_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Counts the line just appended and writes out a full buffer.
    pub fn line_added(&mut self) -> io::Result<()> {
        if self.pending_lines == 0 {
            self.pending_since = Some(Instant::now());
        }
        self.pending_lines += 1;
        if self.pending.len() >= SINK_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// When the oldest buffered line will have waited `max_age`.
    pub fn flush_due(&self, max_age: Duration) -> Option<Instant> {
        self.pending_since.map(|since| since + max_age)
    }

    /// Drops a partially formatted line (after a formatting error).
    pub fn discard_partial(&mut self, keep: usize) {
        self.pending.truncate(keep);
    }

    /// Lines that reached the destination.
    pub fn lines_written(&self) -> u64 {
        self.committed_lines
    }

    pub fn flush(&mut self) -> io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == self.pending.len() {
                break Ok(());
            }
            match self.destination.write(&self.pending[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let (bytes, lines) = if result.is_ok() {
            (self.pending.len(), self.pending_lines)
        } else {
            // Keep the complete lines that made it; forget the rest.
            let written = &self.pending[..done];
            let whole = written
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let lines = written[..whole].iter().filter(|&&b| b == b'\n').count();
            (whole, lines as u64)
        };
        self.committed_bytes += bytes as u64;
        self.committed_lines += lines;
        self.pending.clear();
        self.pending_lines = 0;
        self.pending_since = None;
        result.and_then(|()| self.destination.flush())
    }

    /// Flushes and makes a regular file durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        match &self.destination {
            // A device or a FIFO has nothing to make durable, and fsync() on it fails.
            Destination::File { file, .. } if file.metadata()?.is_file() => file.sync_all(),
            _ => Ok(()),
        }
    }

    /// Goes on with `destination` (log rotation); `sync` first, so that no
    /// line is left for the old one.
    pub fn switch_to(&mut self, destination: Destination) {
        self.destination = destination;
        self.committed_bytes = 0;
    }

    /// Flushes and makes the file durable.
    pub fn finish(&mut self) -> io::Result<()> {
        self.sync()?;
        if let Destination::File { file, .. } = &self.destination {
            // Writes to an unlinked file succeed; the records are lost all the same.
            if std::os::unix::fs::MetadataExt::nlink(&file.metadata()?) == 0 {
                return Err(io::Error::other(
                    "the file was removed while nfwatch was writing it",
                ));
            }
        }
        Ok(())
    }

    /// After a write error: cut a regular file back to its last complete
    /// line so it never ends in half a record.
    pub fn truncate_to_committed(&mut self) -> io::Result<()> {
        match &self.destination {
            Destination::File { file, start } if file.metadata()?.is_file() => {
                file.set_len(start + self.committed_bytes)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfwatch_proto::PaddedName;

    #[test]
    fn fractions_have_nine_digits() {
        for (nanos, text) in [
            (0, ".000000000Z"),
            (5, ".000000005Z"),
            (40, ".000000040Z"),
            (100_000_000, ".100000000Z"),
            (123_456_789, ".123456789Z"),
            (999_999_999, ".999999999Z"),
        ] {
            assert_eq!(&fraction(nanos), text.as_bytes(), "{nanos}");
        }
    }

    fn ifname(name: &[u8]) -> PaddedName {
        let mut padded = [0u8; 16];
        padded[..name.len()].copy_from_slice(name);
        PaddedName::from_padded(padded)
    }

    fn tcp_v4() -> Record {
        Record {
            ts_ns: 1_795_660_556_123_456_789,
            family: Family::V4,
            proto: 6,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            nexthop: Some("10.0.0.254".parse().unwrap()),
            ifname: ifname(b"eth0"),
            len: 60,
            ifindex: 2,
            uid: Some(1000),
            pid: Some(4321),
            ports: Some((4242, 80)),
            icmp: None,
            frag: false,
            segs: 1,
            comm: Some(ifname(b"curl")),
            // No such cgroup: written as its id.
            cgroup_id: Some(7),
            netns: Some(4026531840),
            sock_ino: Some(31337),
        }
    }

    /// A resolver that finds no cgroup.
    fn no_cgroups() -> Cgroups {
        Cgroups::with_root("/nonexistent/cgroup2".into())
    }

    fn icmp_v4() -> Record {
        Record {
            ts_ns: 1_000_000_000,
            proto: 1,
            nexthop: None,
            uid: None,
            pid: None,
            comm: None,
            cgroup_id: None,
            ports: None,
            icmp: Some((8, 0)),
            ifname: ifname(b"lo"),
            ..tcp_v4()
        }
    }

    fn udp_v6_frag() -> Record {
        Record {
            family: Family::V6,
            proto: 17,
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            nexthop: Some("fe80::1".parse().unwrap()),
            ports: None,
            frag: true,
            uid: None,
            pid: None,
            comm: None,
            cgroup_id: None,
            segs: 3,
            ..tcp_v4()
        }
    }

    fn write(formatter: &mut LineFormatter, record: &Record) -> String {
        let bytes = record.to_bytes();
        let mut out = Vec::new();
        formatter
            .line(&mut out, RecordBytes::new(&bytes).unwrap())
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn line(format: Format, record: &Record) -> String {
        write(&mut LineFormatter::new(format, no_cgroups()), record)
    }

    #[test]
    fn timestamps_across_seconds() {
        let mut formatter = LineFormatter::new(Format::Text, no_cgroups());
        let mut ts = |ns: u64| {
            let mut out = Vec::new();
            formatter.ts(&mut out, ns).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            ts(1_795_660_556_123_456_789),
            "2026-11-26T02:35:56.123456789Z"
        );
        assert_eq!(
            ts(1_795_660_557_000_000_001),
            "2026-11-26T02:35:57.000000001Z"
        );
        assert_eq!(
            ts(1_795_660_556_999_999_999),
            "2026-11-26T02:35:56.999999999Z"
        );
        assert_eq!(ts(0), "1970-01-01T00:00:00.000000000Z");
    }

    /// One formatter over records whose fields change in every way writes
    /// what a fresh formatter per record writes: no remembered text leaks.
    #[test]
    fn remembered_fields_never_go_stale() {
        let records = [
            tcp_v4(),
            tcp_v4(),
            icmp_v4(),
            udp_v6_frag(),
            Record {
                src: "10.0.0.3".parse().unwrap(),
                ifname: ifname(b"a\"b,c"),
                ..tcp_v4()
            },
            Record {
                ports: Some((1, 2)),
                ..udp_v6_frag()
            },
            tcp_v4(),
            // The same flow again: only the time, length and segments differ.
            Record {
                ts_ns: 1_795_660_557_000_000_001,
                len: 1500,
                segs: 45,
                ..tcp_v4()
            },
            Record { len: 7, ..tcp_v4() },
            Record {
                uid: Some(1001),
                ..tcp_v4()
            },
            Record {
                pid: Some(1),
                comm: Some(ifname(b"init")),
                ..tcp_v4()
            },
            Record {
                cgroup_id: Some(8),
                ..tcp_v4()
            },
            Record {
                netns: Some(1),
                ..tcp_v4()
            },
        ];
        for format in [Format::Text, Format::Csv, Format::Jsonl, Format::Legacy] {
            let mut formatter = LineFormatter::new(format, no_cgroups());
            for record in &records {
                assert_eq!(write(&mut formatter, record), line(format, record));
            }
        }
    }

    #[test]
    fn text_lines() {
        assert_eq!(
            line(Format::Text, &tcp_v4()),
            "2026-11-26T02:35:56.123456789Z TCP 10.0.0.1:4242 -> 10.0.0.2:80 dev eth0 via 10.0.0.254 len 60 uid 1000 curl[4321] cgroup 7\n"
        );
        assert_eq!(
            line(Format::Text, &icmp_v4()),
            "1970-01-01T00:00:01.000000000Z ICMP 10.0.0.1 -> 10.0.0.2 type 8 code 0 dev lo len 60\n"
        );
        assert_eq!(
            line(Format::Text, &udp_v6_frag()),
            "2026-11-26T02:35:56.123456789Z UDP fd00::1 -> fd00::2 dev eth0 via fe80::1 len 60 frag\n"
        );
        let v6_ports = Record {
            ports: Some((4242, 53)),
            frag: false,
            ..udp_v6_frag()
        };
        assert!(line(Format::Text, &v6_ports).contains(" UDP [fd00::1]:4242 -> [fd00::2]:53 dev"));
    }

    #[test]
    fn legacy_lines() {
        assert_eq!(
            line(Format::Legacy, &tcp_v4()),
            "srcIP:10.0.0.1 dstIP:10.0.0.2 srcPORT:4242 dstPORT:80 PROTOCOL:TCP\n"
        );
        assert_eq!(
            line(Format::Legacy, &icmp_v4()),
            "srcIP:10.0.0.1 dstIP:10.0.0.2 srcPORT:0 dstPORT:0 PROTOCOL:ICMP\n"
        );
        let unknown = Record {
            proto: 253,
            ..icmp_v4()
        };
        assert!(line(Format::Legacy, &unknown).ends_with("PROTOCOL:253\n"));
        let v6 = Record {
            proto: 58,
            ..udp_v6_frag()
        };
        assert_eq!(
            line(Format::Legacy, &v6),
            "srcIP:fd00::1 dstIP:fd00::2 srcPORT:0 dstPORT:0 PROTOCOL:ICMPV6\n"
        );
    }

    #[test]
    fn jsonl_lines() {
        assert_eq!(
            line(Format::Jsonl, &tcp_v4()),
            concat!(
                r#"{"ts":"2026-11-26T02:35:56.123456789Z","family":"ipv4","proto":"tcp","src":"10.0.0.1","dst":"10.0.0.2","#,
                r#""sport":4242,"dport":80,"icmp_type":null,"icmp_code":null,"len":60,"ifindex":2,"ifname":"eth0","#,
                r#""nexthop":"10.0.0.254","uid":1000,"pid":4321,"frag":false,"segs":1,"comm":"curl","#,
                r#""cgroup_id":7,"cgroup":null,"unit":null,"container":null,"netns":4026531840}"#,
                "\n"
            )
        );
        assert_eq!(
            line(Format::Jsonl, &icmp_v4()),
            concat!(
                r#"{"ts":"1970-01-01T00:00:01.000000000Z","family":"ipv4","proto":"icmp","src":"10.0.0.1","dst":"10.0.0.2","#,
                r#""sport":null,"dport":null,"icmp_type":8,"icmp_code":0,"len":60,"ifindex":2,"ifname":"lo","#,
                r#""nexthop":null,"uid":null,"pid":null,"frag":false,"segs":1,"comm":null,"#,
                r#""cgroup_id":null,"cgroup":null,"unit":null,"container":null,"netns":4026531840}"#,
                "\n"
            )
        );
        let v6 = line(
            Format::Jsonl,
            &Record {
                proto: 253,
                ..udp_v6_frag()
            },
        );
        assert!(
            v6.contains(r#""family":"ipv6","proto":"253","src":"fd00::1""#),
            "{v6}"
        );
        assert!(
            v6.contains(r#""nexthop":"fe80::1","uid":null,"pid":null,"frag":true,"segs":3,"#),
            "{v6}"
        );
        let odd = line(
            Format::Jsonl,
            &Record {
                ifname: ifname(b"a\"b\\c\x01"),
                ..tcp_v4()
            },
        );
        assert!(odd.contains(r#""ifname":"a\"b\\c\u0001""#), "{odd}");
    }

    #[test]
    fn csv_lines() {
        assert_eq!(
            line(Format::Csv, &tcp_v4()),
            "2026-11-26T02:35:56.123456789Z,ipv4,tcp,10.0.0.1,10.0.0.2,4242,80,,,60,2,eth0,10.0.0.254,1000,4321,false,1,curl,7,,,,4026531840\n"
        );
        assert_eq!(
            line(Format::Csv, &icmp_v4()),
            "1970-01-01T00:00:01.000000000Z,ipv4,icmp,10.0.0.1,10.0.0.2,,,8,0,60,2,lo,,,,false,1,,,,,,4026531840\n"
        );
        assert_eq!(
            line(Format::Csv, &udp_v6_frag()),
            "2026-11-26T02:35:56.123456789Z,ipv6,udp,fd00::1,fd00::2,,,,,60,2,eth0,fe80::1,,,true,3,,,,,,4026531840\n"
        );
        let odd = line(
            Format::Csv,
            &Record {
                ifname: ifname(b"a,b\"c"),
                ..tcp_v4()
            },
        );
        assert!(odd.contains(",2,\"a,b\"\"c\",10.0.0.254,"), "{odd}");
        assert_eq!(
            CSV_HEADER.split(',').count(),
            line(Format::Csv, &tcp_v4()).split(',').count()
        );
    }

    fn name_in(format: Format, name: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        render_name(&mut out, format, name);
        out
    }

    #[test]
    fn odd_names_are_escaped() {
        let odd = b"a\"b\\c\x1b";
        assert_eq!(name_in(Format::Text, odd), br#"a"b\\c\x1b"#);
        assert_eq!(name_in(Format::Csv, odd), br#""a""b\\c\x1b""#);
        assert_eq!(name_in(Format::Jsonl, odd), br#""a\"b\\c\u001b""#);
        // C1 (U+0085) and DEL never raw; bytes that are not UTF-8 as \xHH.
        assert_eq!(
            name_in(Format::Text, "x\u{85}\x7f".as_bytes()),
            br"x\xc2\x85\x7f"
        );
        assert_eq!(name_in(Format::Text, b"a\xff"), br"a\xff");
        assert_eq!(
            name_in(Format::Jsonl, "x\u{85}".as_bytes()),
            br#""x\u0085""#
        );
        assert_eq!(name_in(Format::Jsonl, b"a\xff"), b"[97,255]");
        assert_eq!(name_in(Format::Jsonl, "é".as_bytes()), "\"é\"".as_bytes());
    }

    #[test]
    fn csv_guards_formulas() {
        assert_eq!(name_in(Format::Csv, b"=cmd"), br#""'=cmd""#);
        assert_eq!(name_in(Format::Csv, b"-x"), br#""'-x""#);
        assert_eq!(name_in(Format::Csv, b"'=cmd"), br#""''=cmd""#);
        assert_eq!(name_in(Format::Csv, b"a=b"), b"a=b");
        assert_eq!(name_in(Format::Csv, b"a,b"), br#""a,b""#);
    }

    #[test]
    fn distinct_names_give_distinct_output() {
        let names: [&[u8]; 10] = [
            b"a\\x1b",
            b"a\x1b",
            b"a\\\\",
            b"a\\",
            b"=a",
            b"'=a",
            b"a\xff",
            b"a\\xff",
            "a\u{85}".as_bytes(),
            b"a\\xc2\\x85",
        ];
        for format in [Format::Text, Format::Csv, Format::Jsonl] {
            let mut seen: Vec<Vec<u8>> = names.iter().map(|n| name_in(format, n)).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), names.len(), "{format:?}");
            for name in names {
                let out = name_in(format, name);
                assert!(
                    !out.iter().any(|&b| b < 0x20 || b == 0x7f),
                    "{format:?} {out:?}"
                );
            }
        }
    }

    /// The owner's fields from a cgroup tree: a unit, a container, a plain
    /// path, the root; comm escaped as names are.
    #[test]
    fn owner_fields_from_the_cgroup_tree() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let id = |path: &str| {
            let dir = root.path().join(path);
            std::fs::create_dir_all(&dir).unwrap();
            dir.metadata().unwrap().ino()
        };
        let container = "0123456789abcdef".repeat(4);
        let unit = id("system.slice/nginx.service");
        let libpod = id(&format!("machine.slice/libpod-{container}.scope/container"));
        let plain = id("test.slice/app");
        let top = id("");
        let with = |cgroup_id: u64, comm: &[u8]| Record {
            cgroup_id: Some(cgroup_id),
            comm: Some(ifname(comm)),
            ..tcp_v4()
        };
        let mut text = LineFormatter::new(Format::Text, Cgroups::with_root(root.path().into()));
        let mut json = LineFormatter::new(Format::Jsonl, Cgroups::with_root(root.path().into()));
        let mut csv = LineFormatter::new(Format::Csv, Cgroups::with_root(root.path().into()));
        assert!(write(&mut text, &with(unit, b"nginx"))
            .ends_with(" uid 1000 nginx[4321] unit nginx.service\n"));
        assert!(write(&mut text, &with(libpod, b"a b"))
            .ends_with(&format!(" uid 1000 a b[4321] container {container}\n")));
        assert!(write(&mut text, &with(plain, b"x\x1b"))
            .ends_with(" uid 1000 x\\x1b[4321] cgroup /test.slice/app\n"));
        assert!(write(&mut text, &with(top, b"init")).ends_with(" uid 1000 init[4321]\n"));
        assert!(write(&mut json, &with(unit, b"nginx")).ends_with(&format!(
            r#","comm":"nginx","cgroup_id":{unit},"cgroup":"/system.slice/nginx.service","unit":"nginx.service","container":null,"netns":4026531840}}{}"#,
            "\n"
        )));
        assert!(write(&mut csv, &with(libpod, b"=calc")).ends_with(&format!(
            ",\"'=calc\",{libpod},/machine.slice/libpod-{container}.scope/container,libpod-{container}.scope,{container},4026531840\n"
        )));
    }

    #[test]
    fn a_cgroup_not_found_is_looked_up_again() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let mut text = LineFormatter::new(Format::Text, Cgroups::with_root(root.path().into()));
        write(&mut text, &tcp_v4());
        let late = root.path().join("late.slice/app");
        std::fs::create_dir_all(&late).unwrap();
        let id = late.metadata().unwrap().ino();
        let record = Record {
            cgroup_id: Some(id),
            ..tcp_v4()
        };
        assert!(write(&mut text, &record).ends_with(&format!(" cgroup {id}\n")));
        text.cgroups.backdate();
        assert!(write(&mut text, &record).ends_with(" cgroup /late.slice/app\n"));
    }

    #[test]
    fn protocol_names() {
        let name = |n| {
            let mut out = Vec::new();
            write_proto(&mut out, n, false);
            String::from_utf8(out).unwrap()
        };
        let names: Vec<String> = [6, 17, 1, 58, 132, 33, 136, 2, 47, 50, 51, 253]
            .map(name)
            .into();
        assert_eq!(
            names,
            [
                "tcp", "udp", "icmp", "icmpv6", "sctp", "dccp", "udplite", "igmp", "gre", "esp",
                "ah", "253"
            ]
        );
    }

    #[test]
    fn finish_on_a_device_succeeds() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let mut sink = LineSink::new(Destination::File { file, start: 0 });
        sink.line_buffer().extend_from_slice(b"line\n");
        sink.line_added().unwrap();
        sink.finish().unwrap();
        assert_eq!(sink.lines_written(), 1);
    }
}
