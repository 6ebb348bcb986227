//! Output formats behind `Formatter`, one module each (the line formats
//! behind `LineFormat` too), and the sink they write to. Lines are formatted into a reused buffer: no allocation per
//! record. What repeats from one record to the next (a flow's whole line,
//! and within a new flow's line each field) is remembered as text.

mod csv;
mod fields;
mod ipfix;
mod jsonl;
mod legacy;
mod sink;
mod text;

use std::io;
use std::net::IpAddr;

use clap::ValueEnum;
use nfwatch_proto::{
    BatchEntry, BatchKind, EndReason, FlowBytes, PaddedName, ProtoError, Record, RecordBytes,
};

use self::csv::Csv;
use self::fields::{fraction, push_num, push_opt_num, render_second, Memo};
use self::jsonl::Jsonl;
use self::legacy::Legacy;
use self::text::Text;
use crate::cgroup::Cgroups;
use crate::sockets::SocketHolders;

pub use self::csv::{CSV_HEADER, FLOW_CSV_HEADER};
use self::ipfix::IpfixFile;
pub use self::ipfix::{Encoder, IpfixSettings, MessageSink, MessageStream, MESSAGE_BYTES};
pub use self::sink::{Destination, Sink};

#[cfg(test)]
pub(crate) use self::ipfix::tests::fixture as ipfix_fixture;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Csv,
    Jsonl,
    Legacy,
    // IPFIX messages back to back (RFC 5655), one data record per packet.
    Ipfix,
}

impl Format {
    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
            Self::Legacy => "legacy",
            Self::Ipfix => "ipfix",
        }
    }
}

/// One output format as the receive loop drives it: the line formats
/// (`LineFormatter`, each a module behind `LineFormat`) and IPFIX
/// (`IpfixFile`).
pub trait Formatter {
    /// Writes `entry` (a packet's record or a flow) to `sink`, or keeps it
    /// back (in an IPFIX message being filled: see `release`).
    fn write(&mut self, sink: &mut Sink, entry: BatchEntry) -> Result<(), LineError>;

    /// What was kept back, to `sink`: before it flushes.
    fn release(&mut self, _sink: &mut Sink) -> io::Result<()> {
        Ok(())
    }

    /// What a file starts with, if anything, given whether it starts empty.
    fn preamble(&mut self, starts_empty: bool) -> Option<Vec<u8>>;

    /// Records whose process was found by the socket's file.
    fn by_socket(&self) -> u64;
}

/// The formatter of `format`, for the records of batches of `kind`:
/// packets or flows.
pub fn formatter(
    format: Format,
    cgroups: Cgroups,
    ipfix: IpfixSettings,
    kind: BatchKind,
) -> Box<dyn Formatter> {
    match format {
        Format::Ipfix => Box::new(IpfixFile::new(ipfix, cgroups, kind)),
        lines => Box::new(LineFormatter::with_kind(lines, cgroups, kind)),
    }
}

/// One output format: what its lines start with, how it writes a record's
/// fields, a name (device, command, cgroup path) and who sent the packet.
trait LineFormat {
    /// What comes before the timestamp; None: lines have none.
    const TS_PREFIX: Option<&'static [u8]>;

    /// What comes before a flow's start time, and between it and its end
    /// time.
    const FLOW_TIMES: (&'static [u8], &'static [u8]);

    /// What ends a line, after its fields (JSON's closing brace).
    const LINE_END: &'static [u8] = b"";

    /// A name, escaped (and quoted) as the format needs.
    fn name(out: &mut Vec<u8>, name: &[u8]);

    /// The record's fields, after the timestamp.
    fn fields(fields: &mut Fields, out: &mut Vec<u8>, r: &Record) -> io::Result<()>;

    /// Who sent the packet; false when its cgroup was not found.
    fn owner(out: &mut Vec<u8>, cgroups: &mut Cgroups, r: &Record) -> bool;

    /// A flow's packets, octets and end reason, after its fields.
    fn flow_counters(out: &mut Vec<u8>, flow: FlowBytes);
}

/// A flow's end reason as a name (`idle`, ...), or its number when it is
/// not known, escaped (and quoted) as the format writes names.
fn end_reason<F: LineFormat>(out: &mut Vec<u8>, reason: EndReason) {
    match reason.name() {
        Some(name) => F::name(out, name.as_bytes()),
        None => F::name(
            out,
            itoa::Buffer::new().format(reason.ipfix_value()).as_bytes(),
        ),
    }
}

/// JSON and CSV, after the flow's fields: packets, octets, end_reason.
fn flow_columns<F: Columns>(out: &mut Vec<u8>, flow: FlowBytes) {
    F::column(out, b"packets");
    push_num(out, flow.packets());
    F::column(out, b"octets");
    push_num(out, flow.octets());
    F::column(out, b"end_reason");
    end_reason::<F>(out, flow.end_reason());
}

/// A format of named columns (JSON keys, CSV columns).
trait Columns: LineFormat {
    /// An absent value.
    const ABSENT: &'static [u8];

    /// What comes before the value of the column `key`.
    fn column(out: &mut Vec<u8>, key: &[u8]);
}

/// An optional name, or the format's absent value.
fn opt_name<F: Columns>(out: &mut Vec<u8>, name: Option<&[u8]>) {
    match name {
        Some(name) => F::name(out, name),
        None => out.extend_from_slice(F::ABSENT),
    }
}

/// JSON and CSV, after `segs`: comm, cgroup_id, cgroup, unit, container,
/// netns, each preceded by its key or comma. False when the cgroup was not
/// found.
fn owner_columns<F: Columns>(out: &mut Vec<u8>, cgroups: &mut Cgroups, r: &Record) -> bool {
    let separator = F::column;
    let none = F::ABSENT;
    separator(out, b"comm");
    opt_name::<F>(out, r.comm.as_ref().map(PaddedName::as_bytes));
    separator(out, b"cgroup_id");
    push_opt_num(out, r.cgroup_id, none);
    let info = r.cgroup_id.and_then(|id| cgroups.resolve(id));
    let resolved = r.cgroup_id.is_none() || info.is_some();
    separator(out, b"cgroup");
    opt_name::<F>(out, info.map(|i| i.path.as_bytes()));
    separator(out, b"unit");
    opt_name::<F>(out, info.and_then(|i| i.unit.as_deref()).map(str::as_bytes));
    separator(out, b"container");
    let container = info.and_then(|i| i.container.as_deref());
    opt_name::<F>(out, container.map(str::as_bytes));
    separator(out, b"netns");
    push_opt_num(out, r.netns, none);
    resolved
}

/// Why a record could not be written.
#[derive(Debug)]
pub enum LineError {
    /// Its bytes break the contract.
    Malformed(ProtoError),
    /// A field could not be rendered.
    Format(io::Error),
    /// The sink could not write.
    Write(io::Error),
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

/// The text of the fields a new flow's line is written from, remembered
/// from the last record that had them, and where its varying numbers went.
struct Fields {
    src: Memo<IpAddr>,
    dst: Memo<IpAddr>,
    nexthop: Memo<IpAddr>,
    ifname: Memo<PaddedName>,
    owner: Memo<OwnerKey>,
    /// The line just written has a cgroup id not found: not to be reused.
    cgroup_missed: bool,
    cgroups: Cgroups,
    /// Where the varying numbers went in the line being written.
    spans: Vec<(usize, usize, Varying)>,
    /// The line is a flow's: no varying numbers (a packet's length and
    /// segments are not a flow's).
    flows: bool,
}

impl Fields {
    fn new(cgroups: Cgroups, flows: bool) -> Self {
        Self {
            flows,
            src: Memo::new(),
            dst: Memo::new(),
            nexthop: Memo::new(),
            ifname: Memo::new(),
            owner: Memo::new(),
            cgroup_missed: false,
            cgroups,
            spans: Vec::new(),
        }
    }

    /// A number that differs between records of one flow, after `label`;
    /// neither in a flow's line.
    fn varying(&mut self, out: &mut Vec<u8>, label: &[u8], varying: Varying, record: &Record) {
        if self.flows {
            return;
        }
        out.extend_from_slice(label);
        let start = out.len();
        push_num(out, varying.pick(record.len, record.segs));
        self.spans.push((start, out.len(), varying));
    }

    fn ifname<F: LineFormat>(&mut self, out: &mut Vec<u8>, name: PaddedName) -> io::Result<()> {
        self.ifname.push(out, name, |text, name| {
            F::name(text, name.as_bytes());
            Ok(())
        })
    }

    /// The part of the line that says who sent the packet, remembered as
    /// the other fields are: the records of a process's sockets (a TCP
    /// connection's data and ACKs) alternate flows but not owners.
    fn owner<F: LineFormat>(&mut self, out: &mut Vec<u8>, r: &Record) {
        let cgroups = &mut self.cgroups;
        let mut resolved = true;
        let key = (r.comm, r.pid, r.cgroup_id, r.netns);
        let _ = self.owner.push(out, key, |text, _| {
            resolved = F::owner(text, cgroups, r);
            Ok(())
        });
        // A cgroup too new for the last walk of the tree: look again next time.
        if !resolved {
            self.owner.forget();
            self.cgroup_missed = true;
        }
    }
}

/// Formats records as lines of one format.
pub struct LineFormatter {
    format: Format,
    flow: FlowText,
    second: Memo<u64>,
    /// A flow's end time's second.
    end_second: Memo<u64>,
    fields: Fields,
    sockets: SocketHolders,
    by_socket: u64,
}

impl LineFormatter {
    /// `cgroups` turns the records' cgroup ids into paths, units and
    /// containers.
    #[cfg(test)]
    pub fn new(format: Format, cgroups: Cgroups) -> Self {
        Self::with_kind(format, cgroups, BatchKind::Records)
    }

    /// For the records of batches of `kind`: a line per packet or per flow.
    pub fn with_kind(format: Format, cgroups: Cgroups, kind: BatchKind) -> Self {
        Self {
            format,
            flow: FlowText::new(),
            second: Memo::new(),
            end_second: Memo::new(),
            fields: Fields::new(cgroups, kind == BatchKind::Flows),
            sockets: SocketHolders::new(),
            by_socket: 0,
        }
    }

    /// Appends one line (with '\n') for `record` to `out`.
    pub fn line(&mut self, out: &mut Vec<u8>, record: RecordBytes) -> Result<(), LineError> {
        match self.format {
            Format::Text => self.line_as::<Text>(out, record),
            Format::Csv => self.line_as::<Csv>(out, record),
            Format::Jsonl => self.line_as::<Jsonl>(out, record),
            Format::Legacy => self.line_as::<Legacy>(out, record),
            Format::Ipfix => Err(no_lines(self.format, "packet")),
        }
    }

    /// Appends one line (with '\n') for `flow` to `out`.
    pub fn flow_line(&mut self, out: &mut Vec<u8>, flow: FlowBytes) -> Result<(), LineError> {
        match self.format {
            Format::Text => self.flow_line_as::<Text>(out, flow),
            Format::Csv => self.flow_line_as::<Csv>(out, flow),
            Format::Jsonl => self.flow_line_as::<Jsonl>(out, flow),
            Format::Legacy | Format::Ipfix => Err(no_lines(self.format, "flow")),
        }
    }

    /// Appends the line of a packet's record or of a flow.
    pub fn entry(&mut self, out: &mut Vec<u8>, entry: BatchEntry) -> Result<(), LineError> {
        match entry {
            BatchEntry::Record(record) => self.line(out, record),
            BatchEntry::Flow(flow) => self.flow_line(out, flow),
        }
    }

    /// The CSV header of these lines.
    pub fn csv_header(&self) -> &'static str {
        if self.fields.flows {
            FLOW_CSV_HEADER
        } else {
            CSV_HEADER
        }
    }

    fn line_as<F: LineFormat>(
        &mut self,
        out: &mut Vec<u8>,
        record: RecordBytes,
    ) -> Result<(), LineError> {
        if let Some(prefix) = F::TS_PREFIX {
            out.extend_from_slice(prefix);
            push_ts(&mut self.second, out, record.ts_ns())?;
        }
        self.body::<F>(out, record)?;
        out.extend_from_slice(F::LINE_END);
        out.push(b'\n');
        Ok(())
    }

    /// A flow's start and end, the fields of its first packet's record
    /// (but for its length and segments), its counters.
    fn flow_line_as<F: LineFormat>(
        &mut self,
        out: &mut Vec<u8>,
        flow: FlowBytes,
    ) -> Result<(), LineError> {
        let (before, between) = F::FLOW_TIMES;
        out.extend_from_slice(before);
        push_ts(&mut self.second, out, flow.start_ns())?;
        out.extend_from_slice(between);
        push_ts(&mut self.end_second, out, flow.last_ns())?;
        self.body::<F>(out, flow.first())?;
        F::flow_counters(out, flow);
        out.extend_from_slice(F::LINE_END);
        out.push(b'\n');
        Ok(())
    }

    /// The record's fields after the time, remembered for the next record
    /// of its flow.
    fn body<F: LineFormat>(
        &mut self,
        out: &mut Vec<u8>,
        record: RecordBytes,
    ) -> Result<(), LineError> {
        if record.same_flow(&self.flow.record) {
            self.flow.write(out, record);
        } else {
            self.flow.record.clear();
            let mut parsed = record.parse()?;
            self.flow.by_socket = self.sockets.fill(&mut parsed);
            self.fields.spans.clear();
            let start = out.len();
            F::fields(&mut self.fields, out, &parsed)?;
            self.flow.learn(record, out, start, &self.fields.spans);
            if std::mem::take(&mut self.fields.cgroup_missed) {
                self.flow.record.clear();
            }
        }
        self.by_socket += u64::from(self.flow.by_socket);
        Ok(())
    }

    #[cfg(test)]
    fn ts(&mut self, out: &mut Vec<u8>, ts_ns: u64) -> io::Result<()> {
        push_ts(&mut self.second, out, ts_ns)
    }
}

/// RFC 3339 in UTC with exactly nine fractional digits, the second's text
/// remembered in `second`.
impl Formatter for LineFormatter {
    fn write(&mut self, sink: &mut Sink, entry: BatchEntry) -> Result<(), LineError> {
        let start = sink.buffer().len();
        if let Err(e) = self.entry(sink.buffer(), entry) {
            sink.discard_partial(start);
            return Err(e);
        }
        sink.unit_added(1).map_err(LineError::Write)
    }

    /// The CSV header, when the file starts empty.
    fn preamble(&mut self, starts_empty: bool) -> Option<Vec<u8>> {
        (self.format == Format::Csv && starts_empty)
            .then(|| format!("{}\n", self.csv_header()).into_bytes())
    }

    fn by_socket(&self) -> u64 {
        self.by_socket
    }
}

/// A format that has no lines of `what` (packet or flow) to write.
fn no_lines(format: Format, what: &str) -> LineError {
    LineError::Format(io::Error::other(format!(
        "--format {} has no {what} lines",
        format.name()
    )))
}

fn push_ts(second: &mut Memo<u64>, out: &mut Vec<u8>, ts_ns: u64) -> io::Result<()> {
    let (whole, nanos) = (ts_ns / 1_000_000_000, ts_ns % 1_000_000_000);
    second.push(out, whole, render_second)?;
    out.extend_from_slice(&fraction(nanos as u32));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfwatch_proto::Family;

    fn ifname(name: &[u8]) -> PaddedName {
        PaddedName::from_bytes(name)
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
        match format {
            Format::Text => Text::name(&mut out, name),
            Format::Csv => Csv::name(&mut out, name),
            Format::Jsonl => Jsonl::name(&mut out, name),
            Format::Legacy => Legacy::name(&mut out, name),
            Format::Ipfix => unreachable!(),
        }
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
        text.fields.cgroups.backdate();
        assert!(write(&mut text, &record).ends_with(" cgroup /late.slice/app\n"));
    }

    fn flow_of(first: Record, reason: EndReason) -> Vec<u8> {
        nfwatch_proto::Flow {
            last_ns: first.ts_ns + 2_500_000_000,
            packets: 12,
            octets: 9000,
            sends: 10,
            end_reason: reason,
            first,
        }
        .to_bytes()
    }

    fn flow_line(format: Format, first: Record, reason: EndReason) -> String {
        let bytes = flow_of(first, reason);
        let mut formatter = LineFormatter::with_kind(format, no_cgroups(), BatchKind::Flows);
        let mut out = Vec::new();
        formatter
            .flow_line(&mut out, FlowBytes::new(&bytes).unwrap())
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn flow_lines() {
        assert_eq!(
            flow_line(Format::Text, tcp_v4(), EndReason::Idle),
            "2026-11-26T02:35:56.123456789Z 2026-11-26T02:35:58.623456789Z TCP 10.0.0.1:4242 -> 10.0.0.2:80 dev eth0 via 10.0.0.254 uid 1000 curl[4321] cgroup 7 packets 12 octets 9000 reason idle\n"
        );
        assert_eq!(
            flow_line(Format::Text, udp_v6_frag(), EndReason::Other(9)),
            "2026-11-26T02:35:56.123456789Z 2026-11-26T02:35:58.623456789Z UDP fd00::1 -> fd00::2 dev eth0 via fe80::1 frag packets 12 octets 9000 reason 9\n"
        );
        assert_eq!(
            flow_line(Format::Csv, tcp_v4(), EndReason::Active),
            "2026-11-26T02:35:56.123456789Z,2026-11-26T02:35:58.623456789Z,ipv4,tcp,10.0.0.1,10.0.0.2,4242,80,,,2,eth0,10.0.0.254,1000,4321,false,curl,7,,,,4026531840,12,9000,active\n"
        );
        assert_eq!(
            flow_line(Format::Csv, icmp_v4(), EndReason::Forced),
            "1970-01-01T00:00:01.000000000Z,1970-01-01T00:00:03.500000000Z,ipv4,icmp,10.0.0.1,10.0.0.2,,,8,0,2,lo,,,,false,,,,,,4026531840,12,9000,forced\n"
        );
        assert_eq!(
            flow_line(Format::Jsonl, tcp_v4(), EndReason::Evicted),
            concat!(
                r#"{"start":"2026-11-26T02:35:56.123456789Z","end":"2026-11-26T02:35:58.623456789Z","family":"ipv4","proto":"tcp","#,
                r#""src":"10.0.0.1","dst":"10.0.0.2","sport":4242,"dport":80,"icmp_type":null,"icmp_code":null,"ifindex":2,"#,
                r#""ifname":"eth0","nexthop":"10.0.0.254","uid":1000,"pid":4321,"frag":false,"comm":"curl","#,
                r#""cgroup_id":7,"cgroup":null,"unit":null,"container":null,"netns":4026531840,"#,
                r#""packets":12,"octets":9000,"end_reason":"evicted"}"#,
                "\n"
            )
        );
        let json: serde_json::Value = serde_json::from_str(&flow_line(
            Format::Jsonl,
            udp_v6_frag(),
            EndReason::Other(9),
        ))
        .unwrap();
        assert_eq!(json["end_reason"], "9");
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut columns: Vec<&str> = FLOW_CSV_HEADER.split(',').collect();
        columns.sort_unstable();
        assert_eq!(keys, columns, "the same names as the CSV header");
    }

    #[test]
    fn flow_csv_header_and_escaping() {
        let line = flow_line(
            Format::Csv,
            Record {
                ifname: ifname(b"a,b\"c"),
                comm: Some(ifname(b"=x")),
                ..tcp_v4()
            },
            EndReason::Idle,
        );
        assert!(line.contains(",2,\"a,b\"\"c\",10.0.0.254,"), "{line}");
        assert!(line.contains(",false,\"'=x\",7,"), "{line}");
        assert_eq!(
            FLOW_CSV_HEADER.split(',').count(),
            flow_line(Format::Csv, tcp_v4(), EndReason::Idle)
                .split(',')
                .count()
        );
        // Every watch column but ts, len and segs, between the times and the counters.
        let watch: Vec<&str> = CSV_HEADER
            .split(',')
            .filter(|c| !["ts", "len", "segs"].contains(c))
            .collect();
        let flows: Vec<&str> = FLOW_CSV_HEADER.split(',').collect();
        assert_eq!(flows[..2], ["start", "end"]);
        assert_eq!(flows[2..flows.len() - 3], watch[..]);
        assert_eq!(
            flows[flows.len() - 3..],
            ["packets", "octets", "end_reason"]
        );
        let mut formatter = LineFormatter::with_kind(Format::Csv, no_cgroups(), BatchKind::Flows);
        assert_eq!(
            formatter.preamble(true).unwrap(),
            format!("{FLOW_CSV_HEADER}\n").into_bytes()
        );
    }

    /// A flow after a flow of the same key writes its own times and
    /// counters; a packet's record in between does not leak into it.
    #[test]
    fn flow_lines_never_go_stale() {
        for format in [Format::Text, Format::Csv, Format::Jsonl] {
            let mut formatter = LineFormatter::with_kind(format, no_cgroups(), BatchKind::Flows);
            let firsts = [
                tcp_v4(),
                Record {
                    ts_ns: 1_795_660_557_000_000_001,
                    len: 1500,
                    segs: 4,
                    ..tcp_v4()
                },
                icmp_v4(),
                udp_v6_frag(),
                tcp_v4(),
            ];
            for (i, first) in firsts.into_iter().enumerate() {
                let reason = [EndReason::Idle, EndReason::Active][i % 2];
                let bytes = flow_of(first.clone(), reason);
                let mut out = Vec::new();
                formatter
                    .flow_line(&mut out, FlowBytes::new(&bytes).unwrap())
                    .unwrap();
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    flow_line(format, first, reason)
                );
            }
        }
        let bytes = flow_of(tcp_v4(), EndReason::Idle);
        let mut legacy = LineFormatter::with_kind(Format::Legacy, no_cgroups(), BatchKind::Flows);
        assert!(legacy
            .flow_line(&mut Vec::new(), FlowBytes::new(&bytes).unwrap())
            .is_err());
    }
}
