//! `ipfix`: IPFIX messages (RFC 7011) back to back, an IPFIX file
//! (RFC 5655). Every file nfwatch opens starts with a message of the
//! templates and the type records (RFC 5610) of nfwatch's enterprise
//! elements; then one data record per packet, in messages of up to
//! MESSAGE_BYTES.
//!
//! A field a record does not have is sent as 0 (numbers, addresses) or
//! empty (strings), but for the uid, whose absence is 4294967295 (the
//! kernel's invalid uid: 0 is root's).

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use ipfix::element::{iana, Element, FLOW_DIRECTION_EGRESS};
use ipfix::type_info::{self, DataType, ElementInfo, Semantics};
use ipfix::{ntp_time, FieldSpec, Message, RecordWriter, Template, VARIABLE_LENGTH};
use nfwatch_proto::{
    BatchEntry, BatchKind, Family, FlowBytes, PaddedName, ProtoError, Record, RecordBytes,
};

use super::{Formatter, LineError, Sink};
use crate::cgroup::Cgroups;
use crate::sockets::SocketHolders;

/// What each message may hold: below the 65,535 an IPFIX message's length
/// field allows, and a size readers buffer whole.
pub const MESSAGE_BYTES: usize = 32 * 1024;

const V4_TEMPLATE: u16 = 256;
const V6_TEMPLATE: u16 = 257;
const TYPE_TEMPLATE: u16 = 258;
/// `nfwatch flows`' data records.
const FLOW_V4_TEMPLATE: u16 = 260;
const FLOW_V6_TEMPLATE: u16 = 261;

/// The uid of a packet no socket owns.
const NO_UID: u32 = u32::MAX;

/// nfwatch's elements under the enterprise number given (`--ipfix-pen`);
/// a flow's records have all but the last (segments).
const ENTERPRISE_ELEMENTS: [(u16, u16, DataType, Semantics, &str, &str); 9] = [
    (
        1,
        4,
        DataType::Unsigned32,
        Semantics::Identifier,
        "nfwatchUid",
        "the uid owning the sending socket, in nfwatch's user namespace; 4294967295: no socket",
    ),
    (
        2,
        4,
        DataType::Unsigned32,
        Semantics::Identifier,
        "nfwatchPid",
        "the socket's sending process (thread group id), in nfwatch's pid namespace; 0: not known",
    ),
    (
        3,
        VARIABLE_LENGTH,
        DataType::String,
        Semantics::Default,
        "nfwatchComm",
        "that process's command name; empty: not known",
    ),
    (
        4,
        8,
        DataType::Unsigned64,
        Semantics::Identifier,
        "nfwatchCgroupId",
        "the sending socket's cgroup v2 id; 0: not known",
    ),
    (
        5,
        VARIABLE_LENGTH,
        DataType::String,
        Semantics::Default,
        "nfwatchCgroup",
        "that cgroup's path under the cgroup2 mount; empty: not known",
    ),
    (
        6,
        VARIABLE_LENGTH,
        DataType::String,
        Semantics::Default,
        "nfwatchUnit",
        "the systemd unit holding that cgroup; empty: none",
    ),
    (
        7,
        VARIABLE_LENGTH,
        DataType::String,
        Semantics::Default,
        "nfwatchContainer",
        "the container id in that cgroup's path; empty: none",
    ),
    (
        8,
        4,
        DataType::Unsigned32,
        Semantics::Identifier,
        "nfwatchNetns",
        "the inode of the network namespace the packet was sent in",
    ),
    (
        9,
        2,
        DataType::Unsigned16,
        Semantics::Quantity,
        "nfwatchSegments",
        "GSO segments of the packet; 1 when not GSO",
    ),
];

/// IPFIX settings from the command line.
#[derive(Debug, Clone, Copy)]
pub struct IpfixSettings {
    /// The Private Enterprise Number nfwatch's own elements are under.
    pub pen: u32,
    /// The Observation Domain ID of every message.
    pub domain: u32,
}

type EnterpriseElement = (u16, u16, DataType, Semantics, &'static str, &'static str);

/// The enterprise elements of the records of `kind`.
fn enterprise_elements(kind: BatchKind) -> &'static [EnterpriseElement] {
    match kind {
        BatchKind::Records => &ENTERPRISE_ELEMENTS,
        BatchKind::Flows => &ENTERPRISE_ELEMENTS[..8],
    }
}

/// The template of packets' (`kind` Records) or flows' data records of
/// `family`. A flow's has its start and end in nanoseconds and, for
/// collectors that read no other (nfdump, pmacct), milliseconds, its
/// packets and octets, its end reason; no packet length or segments.
fn template(family: Family, pen: u32, kind: BatchKind) -> Template {
    let iana = FieldSpec::iana;
    let id = match (kind, family) {
        (BatchKind::Records, Family::V4) => V4_TEMPLATE,
        (BatchKind::Records, Family::V6) => V6_TEMPLATE,
        (BatchKind::Flows, Family::V4) => FLOW_V4_TEMPLATE,
        (BatchKind::Flows, Family::V6) => FLOW_V6_TEMPLATE,
    };
    let (src, dst, nexthop, icmp, addr) = match family {
        Family::V4 => (
            iana::SOURCE_IPV4_ADDRESS,
            iana::DESTINATION_IPV4_ADDRESS,
            iana::IP_NEXT_HOP_IPV4_ADDRESS,
            iana::ICMP_TYPE_CODE_IPV4,
            4,
        ),
        Family::V6 => (
            iana::SOURCE_IPV6_ADDRESS,
            iana::DESTINATION_IPV6_ADDRESS,
            iana::IP_NEXT_HOP_IPV6_ADDRESS,
            iana::ICMP_TYPE_CODE_IPV6,
            16,
        ),
    };
    let mut fields = match kind {
        BatchKind::Records => vec![iana(iana::OBSERVATION_TIME_NANOSECONDS, 8)],
        BatchKind::Flows => vec![
            iana(iana::FLOW_START_NANOSECONDS, 8),
            iana(iana::FLOW_END_NANOSECONDS, 8),
            iana(iana::FLOW_START_MILLISECONDS, 8),
            iana(iana::FLOW_END_MILLISECONDS, 8),
        ],
    };
    fields.extend([
        iana(src, addr),
        iana(dst, addr),
        iana(iana::PROTOCOL_IDENTIFIER, 1),
        iana(iana::SOURCE_TRANSPORT_PORT, 2),
        iana(iana::DESTINATION_TRANSPORT_PORT, 2),
        iana(icmp, 2),
    ]);
    if kind == BatchKind::Records {
        fields.push(iana(iana::IP_TOTAL_LENGTH, 8));
    }
    fields.extend([
        iana(iana::OCTET_DELTA_COUNT, 8),
        iana(iana::PACKET_DELTA_COUNT, 8),
        iana(iana::EGRESS_INTERFACE, 4),
        iana(iana::INTERFACE_NAME, VARIABLE_LENGTH),
        iana(nexthop, addr),
        iana(iana::FLOW_DIRECTION, 1),
    ]);
    if kind == BatchKind::Flows {
        fields.push(iana(iana::FLOW_END_REASON, 1));
    }
    fields.extend(
        enterprise_elements(kind)
            .iter()
            .map(|&(id, len, ..)| FieldSpec::new(Element::enterprise(pen, id), len)),
    );
    Template::data(id, fields)
}

/// The addresses, protocol, ports and ICMP type and code.
fn key_fields(w: &mut RecordWriter, r: &Record) {
    let (sport, dport) = r.ports.unwrap_or_default();
    let icmp = r.icmp.map_or(0, |(t, c)| u16::from(t) << 8 | u16::from(c));
    address(w, Some(r.src), r.family);
    address(w, Some(r.dst), r.family);
    w.u8(r.proto).u16(sport).u16(dport).u16(icmp);
}

/// The device, next hop and direction.
fn device_fields(w: &mut RecordWriter, r: &Record) {
    w.u32(r.ifindex).variable(r.ifname.as_bytes());
    address(w, r.nexthop, r.family);
    w.u8(FLOW_DIRECTION_EGRESS);
}

/// nfwatch's elements but segments: who sent it, `cgroup` being the three
/// variable-length fields of its cgroup.
fn owner_fields(w: &mut RecordWriter, r: &Record, cgroup: &[u8]) {
    w.u32(r.uid.unwrap_or(NO_UID)).u32(r.pid.unwrap_or(0));
    w.variable(r.comm.as_ref().map_or(&[][..], PaddedName::as_bytes));
    w.u64(r.cgroup_id.unwrap_or(0));
    w.bytes(cgroup);
    w.u32(r.netns.unwrap_or(0));
}

fn address(out: &mut RecordWriter, addr: Option<std::net::IpAddr>, family: Family) {
    match (addr, family) {
        (Some(std::net::IpAddr::V4(v4)), _) => out.bytes(&v4.octets()),
        (Some(std::net::IpAddr::V6(v6)), _) => out.bytes(&v6.octets()),
        (None, Family::V4) => out.bytes(&[0; 4]),
        (None, Family::V6) => out.bytes(&[0; 16]),
    };
}

/// Where finished messages go: a file's sink, a buffer, an exporter.
pub trait MessageSink {
    /// A whole message, holding `records` data records.
    fn message(&mut self, bytes: &[u8], records: u32) -> io::Result<()>;
}

impl MessageSink for Sink {
    fn message(&mut self, bytes: &[u8], records: u32) -> io::Result<()> {
        self.buffer().extend_from_slice(bytes);
        self.unit_added(records.into())
    }
}

impl MessageSink for Vec<u8> {
    fn message(&mut self, bytes: &[u8], _records: u32) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// The messages of one observation domain to one place, each at most a
/// size, numbered as RFC 7011 says: a message's sequence number counts the
/// data records sent before it.
pub struct MessageStream {
    message: Message,
    sequence: u32,
    domain: u32,
}

impl MessageStream {
    pub fn new(max_len: usize, domain: u32) -> Self {
        Self {
            message: Message::new(max_len),
            sequence: 0,
            domain,
        }
    }

    pub fn add_template(
        &mut self,
        template: &Template,
        to: &mut impl MessageSink,
    ) -> io::Result<()> {
        self.add(to, |m| m.add_template(template))
    }

    /// One data record of `template`, its fields written by `fill`.
    pub fn add_record(
        &mut self,
        template: u16,
        fill: &impl Fn(&mut Vec<u8>),
        to: &mut impl MessageSink,
    ) -> io::Result<()> {
        self.add(to, |m| m.add_record(template, fill))
    }

    /// Adds by `add` to the message being filled; when it is full, it
    /// goes to `to` and `add` tries an empty one (InvalidInput: that
    /// cannot take it either).
    fn add(
        &mut self,
        to: &mut impl MessageSink,
        add: impl Fn(&mut Message) -> bool,
    ) -> io::Result<()> {
        if add(&mut self.message) {
            return Ok(());
        }
        self.release(to)?;
        if add(&mut self.message) {
            return Ok(());
        }
        // Long cgroup paths can make a record outgrow a small UDP message.
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a record longer than an IPFIX message may be",
        ))
    }

    /// The message being filled, if any, to `to`.
    pub fn release(&mut self, to: &mut impl MessageSink) -> io::Result<()> {
        if self.message.is_empty() {
            return Ok(());
        }
        let records = self.message.data_records();
        let export_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let before = self.sequence;
        self.sequence = before.wrapping_add(records);
        let sent = to.message(
            self.message.finish(export_time, before, self.domain),
            records,
        );
        self.message.clear();
        sent
    }
}

/// Packet records as IPFIX data records of templates 256 (IPv4) and 257
/// (IPv6), or flows as those of 260 and 261, with what a record does not
/// carry (the socket's holder, the cgroup's path, unit and container)
/// looked up.
pub struct Encoder {
    pen: u32,
    kind: BatchKind,
    /// A flow's data record.
    flow_fields: Vec<u8>,
    v4: Template,
    v6: Template,
    cgroups: Cgroups,
    /// The three variable-length fields of the last cgroup id, when it
    /// was found.
    cgroup: (Option<Option<u64>>, Vec<u8>),
    sockets: SocketHolders,
    by_socket: u64,
    flow: FlowRecord,
}

/// The last flow's data record. A flow's packets come in runs (a batch
/// holds what one socket sent), and parsing and encoding a record whole
/// was most of its cost: the next packet of the flow takes these bytes
/// with its time, length and segments written over them.
struct FlowRecord {
    /// The bytes of the packet `fields` were encoded for (empty: none).
    record: Vec<u8>,
    template: u16,
    fields: Vec<u8>,
    /// Where ipTotalLength is in `fields` (octetDeltaCount follows).
    len_at: usize,
    /// The process in `fields` was found by the socket's file.
    by_socket: bool,
}

impl Encoder {
    /// For the records of batches of `kind`: packets or flows.
    pub fn new(pen: u32, cgroups: Cgroups, kind: BatchKind) -> Self {
        Self {
            pen,
            kind,
            flow_fields: Vec::new(),
            v4: template(Family::V4, pen, kind),
            v6: template(Family::V6, pen, kind),
            cgroups,
            cgroup: (None, Vec::new()),
            sockets: SocketHolders::new(),
            by_socket: 0,
            flow: FlowRecord {
                record: Vec::new(),
                template: V4_TEMPLATE,
                fields: Vec::new(),
                len_at: 0,
                by_socket: false,
            },
        }
    }

    /// What a stream starts with: the type records first (a reader then
    /// knows the elements before it reads the templates that use them),
    /// then the templates.
    pub fn preamble(
        &self,
        stream: &mut MessageStream,
        to: &mut impl MessageSink,
    ) -> io::Result<()> {
        stream.add_template(&type_info::template(TYPE_TEMPLATE), to)?;
        for &(id, _, data_type, semantics, name, description) in enterprise_elements(self.kind) {
            let info = ElementInfo {
                element: Element::enterprise(self.pen, id),
                data_type,
                semantics,
                units: type_info::units::NONE,
                name,
                description,
            };
            stream.add_record(TYPE_TEMPLATE, &|out: &mut Vec<u8>| info.encode(out), to)?;
        }
        stream.add_template(&self.v4, to)?;
        stream.add_template(&self.v6, to)
    }

    /// The data record of a packet's record or of a flow.
    pub fn encode(&mut self, entry: BatchEntry) -> Result<(u16, &[u8]), ProtoError> {
        match entry {
            BatchEntry::Record(record) => self.encode_record(record),
            BatchEntry::Flow(flow) => self.encode_flow(flow),
        }
    }

    /// The data record of `flow`: its template and fields, its process
    /// filled in from the socket's holder when the kernel knew none.
    pub fn encode_flow(&mut self, flow: FlowBytes) -> Result<(u16, &[u8]), ProtoError> {
        let mut r = flow.first().parse()?;
        self.by_socket += u64::from(self.sockets.fill(&mut r));
        self.remember_cgroup(r.cgroup_id);
        let template = match r.family {
            Family::V4 => FLOW_V4_TEMPLATE,
            Family::V6 => FLOW_V6_TEMPLATE,
        };
        let (start, end) = (flow.start_ns(), flow.last_ns());
        self.flow_fields.clear();
        let mut w = RecordWriter::new(&mut self.flow_fields);
        w.u64(ntp_time(start)).u64(ntp_time(end));
        w.u64(start / 1_000_000).u64(end / 1_000_000);
        key_fields(&mut w, &r);
        w.u64(flow.octets()).u64(flow.packets());
        device_fields(&mut w, &r);
        w.u8(flow.end_reason().ipfix_value());
        owner_fields(&mut w, &r, &self.cgroup.1);
        Ok((template, &self.flow_fields))
    }

    /// The data record of `bytes`: its template and fields, its process
    /// filled in from the socket's holder when the kernel knew none.
    pub fn encode_record(&mut self, bytes: RecordBytes) -> Result<(u16, &[u8]), ProtoError> {
        let flow = &mut self.flow;
        if bytes.same_flow(&flow.record) {
            let fields = &mut flow.fields;
            let len = u64::from(bytes.ip_len()).to_be_bytes();
            fields[..8].copy_from_slice(&ntp_time(bytes.ts_ns()).to_be_bytes());
            fields[flow.len_at..flow.len_at + 8].copy_from_slice(&len);
            fields[flow.len_at + 8..flow.len_at + 16].copy_from_slice(&len);
            let segs_at = fields.len() - 2;
            fields[segs_at..].copy_from_slice(&bytes.segs().to_be_bytes());
        } else {
            self.learn(bytes)?;
        }
        self.by_socket += u64::from(self.flow.by_socket);
        Ok((self.flow.template, &self.flow.fields))
    }

    /// Encodes `bytes` whole into `self.flow`, kept for its flow's next
    /// packet unless its cgroup was not found (then looked up again).
    fn learn(&mut self, bytes: RecordBytes) -> Result<(), ProtoError> {
        self.flow.record.clear();
        let mut r = bytes.parse()?;
        self.flow.by_socket = self.sockets.fill(&mut r);
        let found = self.remember_cgroup(r.cgroup_id);
        let (template, addr) = match r.family {
            Family::V4 => (V4_TEMPLATE, 4),
            Family::V6 => (V6_TEMPLATE, 16),
        };
        let flow = &mut self.flow;
        flow.template = template;
        // The time, two addresses, protocol, two ports, ICMP type and code.
        flow.len_at = 8 + 2 * addr + 1 + 2 + 2 + 2;
        flow.fields.clear();
        let mut w = RecordWriter::new(&mut flow.fields);
        w.u64(ntp_time(r.ts_ns));
        key_fields(&mut w, &r);
        w.u64(r.len.into()).u64(r.len.into()).u64(1);
        device_fields(&mut w, &r);
        owner_fields(&mut w, &r, &self.cgroup.1);
        w.u16(r.segs);
        if found {
            flow.record.extend_from_slice(bytes.bytes());
        }
        Ok(())
    }

    /// Records whose process was found by the socket's file.
    pub fn by_socket(&self) -> u64 {
        self.by_socket
    }

    /// The cgroup's path, unit and container as the record's three
    /// variable-length fields, in `self.cgroup`, kept for the next record
    /// of that cgroup (unless it was not found: it is looked up again).
    /// Whether it was found (or there is none).
    fn remember_cgroup(&mut self, id: Option<u64>) -> bool {
        let (cached, fields) = &mut self.cgroup;
        if *cached == Some(id) {
            return true;
        }
        let info = id.and_then(|id| self.cgroups.resolve(id));
        fields.clear();
        let mut w = RecordWriter::new(fields);
        w.variable(text(info.map(|i| i.path.as_str())));
        w.variable(text(info.and_then(|i| i.unit.as_deref())));
        w.variable(text(info.and_then(|i| i.container.as_deref())));
        let found = id.is_none() || info.is_some();
        *cached = found.then_some(id);
        found
    }
}

/// `--format ipfix`: an IPFIX file.
pub struct IpfixFile {
    encoder: Encoder,
    stream: MessageStream,
}

impl IpfixFile {
    /// For the records of batches of `kind`: packets or flows.
    pub fn new(settings: IpfixSettings, cgroups: Cgroups, kind: BatchKind) -> Self {
        Self {
            encoder: Encoder::new(settings.pen, cgroups, kind),
            stream: MessageStream::new(MESSAGE_BYTES, settings.domain),
        }
    }
}

impl Formatter for IpfixFile {
    /// Adds `entry` to the message being filled; a full message goes to
    /// `sink`.
    fn write(&mut self, sink: &mut Sink, entry: BatchEntry) -> Result<(), LineError> {
        let (template, fields) = self.encoder.encode(entry)?;
        let fill = |out: &mut Vec<u8>| out.extend_from_slice(fields);
        self.stream
            .add_record(template, &fill, sink)
            .map_err(LineError::Write)
    }

    /// The message being filled, if any, to `sink`.
    fn release(&mut self, sink: &mut Sink) -> io::Result<()> {
        self.stream.release(sink)
    }

    /// The message every file starts with, appended to or not (it may be
    /// read from there): the type records and the templates.
    fn preamble(&mut self, _starts_empty: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.encoder
            .preamble(&mut self.stream, &mut out)
            .and_then(|()| self.stream.release(&mut out))
            .expect("a buffer takes every message");
        Some(out)
    }

    fn by_socket(&self) -> u64 {
        self.encoder.by_socket()
    }
}

/// A string field's bytes; empty when there is none.
fn text(s: Option<&str>) -> &[u8] {
    s.unwrap_or("").as_bytes()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::writers::Destination;
    use netflow_parser::variable_versions::ipfix::lookup::IPFixField;
    use netflow_parser::variable_versions::ipfix::{FlowSetBody, IPFix, IPFixFlowRecord};
    use netflow_parser::{NetflowPacket, NetflowParser, ParseResult};
    use nfwatch_proto::Record;

    /// A cgroup tree under `dir` with a container's scope, and its
    /// records, IPv4 and IPv6, every string field with a value.
    pub(crate) fn fixture(dir: &std::path::Path) -> (Cgroups, [RecordBytes<'static>; 2]) {
        use std::os::unix::fs::MetadataExt;
        let scope = dir.join(format!(
            "system.slice/docker-{}.scope",
            "0123456789abcdef".repeat(4)
        ));
        std::fs::create_dir_all(&scope).unwrap();
        let cgroup_id = scope.metadata().unwrap().ino();
        let wire = |family| {
            let bytes: &'static [u8] = record(family, cgroup_id).to_bytes().to_vec().leak();
            RecordBytes::new(bytes).unwrap()
        };
        (
            Cgroups::with_root(dir.into()),
            [wire(Family::V4), wire(Family::V6)],
        )
    }

    fn record(family: Family, cgroup_id: u64) -> Record {
        let (src, dst, nexthop) = match family {
            Family::V4 => ("10.0.0.1", "10.0.0.2", "10.0.0.254"),
            Family::V6 => ("fd00::1", "fd00::2", "fe80::1"),
        };
        Record {
            ts_ns: 1_795_660_556_123_456_789,
            family,
            proto: 17,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            nexthop: Some(nexthop.parse().unwrap()),
            ifname: PaddedName::from_bytes(b"eth0"),
            len: 60,
            ifindex: 2,
            uid: Some(1000),
            pid: Some(4321),
            ports: Some((4242, 53)),
            icmp: None,
            frag: false,
            segs: 1,
            comm: Some(PaddedName::from_bytes(b"dig")),
            cgroup_id: Some(cgroup_id),
            netns: Some(4026531840),
            sock_ino: None,
        }
    }

    /// A record that no message of the stream's size can hold is refused,
    /// and what was being filled still goes out whole.
    #[test]
    fn a_record_longer_than_a_message_is_refused() {
        let mut stream = MessageStream::new(100, 0);
        let mut out = Vec::new();
        let small = |o: &mut Vec<u8>| o.extend_from_slice(&[1; 10]);
        stream.add_record(V4_TEMPLATE, &small, &mut out).unwrap();
        let huge = |o: &mut Vec<u8>| o.extend_from_slice(&[2; 200]);
        let refused = stream.add_record(V4_TEMPLATE, &huge, &mut out);
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(out.len(), 16 + 4 + 10, "the small record's message");
        stream.release(&mut out).unwrap();
        assert_eq!(out.len(), 16 + 4 + 10, "nothing of the huge one");
    }

    /// A flow's next packet, written over its last one's data record,
    /// encodes as that packet encoded whole.
    #[test]
    fn a_flows_next_packet_encodes_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        for family in [Family::V4, Family::V6] {
            // No cgroup: one not found would be looked up again, not kept.
            let first = Record {
                cgroup_id: None,
                ..record(family, 1)
            };
            let next = Record {
                ts_ns: first.ts_ns + 1_234_567_891,
                len: 1500,
                segs: 3,
                ..first.clone()
            };
            let (first, next) = (first.to_bytes(), next.to_bytes());
            let cgroups = || Cgroups::with_root(dir.path().into());
            let mut running = Encoder::new(32473, cgroups(), BatchKind::Records);
            running
                .encode_record(RecordBytes::new(&first).unwrap())
                .unwrap();
            assert!(!running.flow.record.is_empty(), "the flow is kept");
            let (template, after) = running
                .encode_record(RecordBytes::new(&next).unwrap())
                .unwrap();
            let after = (template, after.to_vec());
            let mut fresh = Encoder::new(32473, cgroups(), BatchKind::Records);
            let (template, whole) = fresh
                .encode_record(RecordBytes::new(&next).unwrap())
                .unwrap();
            assert_eq!(after, (template, whole.to_vec()), "{family:?}");
        }
    }

    /// The bytes of an IPFIX file at `path` of `entries` (two), preamble
    /// first, as nfwatch writes it (observation domain 9).
    fn write_file<'a>(
        path: &std::path::Path,
        cgroups: Cgroups,
        kind: BatchKind,
        entries: impl Iterator<Item = BatchEntry<'a>>,
    ) -> Vec<u8> {
        let settings = IpfixSettings {
            pen: 32473,
            domain: 9,
        };
        let mut file = IpfixFile::new(settings, cgroups, kind);
        let mut bytes = file.preamble(true).unwrap();
        let mut sink = Sink::new(Destination::File {
            file: std::fs::File::create(path).unwrap(),
            start: 0,
        });
        for entry in entries {
            file.write(&mut sink, entry).unwrap();
        }
        file.release(&mut sink).unwrap();
        sink.finish().unwrap();
        assert_eq!(sink.records_written(), 2);
        bytes.extend(std::fs::read(path).unwrap());
        bytes
    }

    /// The data records of `message`: two, each its fields.
    fn data_records(message: &IPFix) -> Vec<IPFixFlowRecord> {
        let data: Vec<_> = message
            .flowsets
            .iter()
            .filter_map(|set| match &set.body {
                FlowSetBody::Data(data) => Some(data.fields.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(data.len(), 2, "{:?}", message.flowsets);
        data
    }

    /// The two IPFIX messages an independent decoder read, without error.
    fn ipfix_messages(result: &ParseResult) -> Vec<&IPFix> {
        assert!(result.error.is_none(), "{:?}", result.error);
        let messages: Vec<_> = result
            .packets
            .iter()
            .map(|p| match p {
                NetflowPacket::IPFix(message) => message,
                other => panic!("not IPFIX: {other:?}"),
            })
            .collect();
        assert_eq!(messages.len(), 2);
        messages
    }

    /// A file of the preamble and a v4 and a v6 record, read back by an
    /// independent decoder: the type records name nfwatch's elements, and
    /// the data records hold the packets' fields. (That decoder refuses
    /// empty strings, which RFC 7011 allows and libfixbuf reads: every
    /// string here has a value.)
    #[test]
    fn a_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ipfix");
        let (cgroups, records) = fixture(dir.path());
        let entries = records.into_iter().map(BatchEntry::Record);
        let bytes = write_file(&path, cgroups, BatchKind::Records, entries);
        if let Ok(keep) = std::env::var("NFWATCH_KEEP_IPFIX") {
            std::fs::write(keep, &bytes).unwrap();
        }
        let result = NetflowParser::default().parse_bytes(&bytes);
        let messages = ipfix_messages(&result);
        assert!(messages.iter().all(|m| m.header.observation_domain_id == 9));
        // The second message's sequence number counts the nine type records.
        assert_eq!(messages[1].header.sequence_number, 9);
        let types = format!("{:?}", messages[0].flowsets);
        for (_, _, _, _, name, _) in ENTERPRISE_ELEMENTS {
            assert!(types.contains(name), "{name} missing from {types}");
        }
        let data = data_records(messages[1]);
        let field = |record: &[(IPFixField, _)], id: u16, pen: Option<u32>| {
            let wanted = IPFixField::new(id, pen);
            let (_, value) = record.iter().find(|(f, _)| *f == wanted).unwrap();
            format!("{value:?}")
        };
        assert_eq!(
            field(&data[0], iana::SOURCE_IPV4_ADDRESS, None),
            "Ip4Addr(10.0.0.1)"
        );
        assert_eq!(
            field(&data[1], iana::SOURCE_IPV6_ADDRESS, None),
            "Ip6Addr(fd00::1)"
        );
        for record in &data {
            assert_eq!(
                field(record, iana::DESTINATION_TRANSPORT_PORT, None),
                "DataNumber(U16(53))"
            );
            assert_eq!(
                field(record, iana::PACKET_DELTA_COUNT, None),
                "DataNumber(U64(1))"
            );
            assert_eq!(
                field(record, iana::OCTET_DELTA_COUNT, None),
                "DataNumber(U64(60))"
            );
            assert!(field(record, iana::INTERFACE_NAME, None).contains("eth0"));
            assert_eq!(field(record, 1, Some(32473)), "Vec([0, 0, 3, 232])");
            assert!(
                field(record, 3, Some(32473)).contains("100, 105, 103"),
                "comm dig"
            );
            let unit = field(record, 6, Some(32473));
            assert!(unit.contains("100, 111, 99, 107, 101, 114, 45"), "{unit}");
            // 1,795,660,556 s after 1970 is 4,004,649,356 s after 1900 (NTP's
            // era), and 0.123456789 s is 530,242,871.2 units of 2^-32 s,
            // rounded up so that truncating gives the nanoseconds back.
            assert_eq!(
                field(record, iana::OBSERVATION_TIME_NANOSECONDS, None),
                "Duration(NanosNtp { seconds: 4004649356, fraction: 530242872 })"
            );
        }
    }

    /// Flows of both families in a file: the flow templates' fields read
    /// back, times in nanoseconds and milliseconds, counters, end reason;
    /// no packet length or segments.
    #[test]
    fn a_file_of_flows_reads_back() {
        use nfwatch_proto::{EndReason, Flow};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.ipfix");
        let (cgroups, records) = fixture(dir.path());
        let flows: Vec<Vec<u8>> = records
            .iter()
            .zip([EndReason::Idle, EndReason::Evicted])
            .map(|(record, end_reason)| {
                let first = record.parse().unwrap();
                Flow {
                    last_ns: first.ts_ns + 2_500_000_000,
                    packets: 12,
                    octets: 9000,
                    sends: 10,
                    end_reason,
                    first,
                }
                .to_bytes()
            })
            .collect();
        let entries = flows
            .iter()
            .map(|flow| BatchEntry::Flow(FlowBytes::new(flow).unwrap()));
        let bytes = write_file(&path, cgroups, BatchKind::Flows, entries);
        if let Ok(keep) = std::env::var("NFWATCH_KEEP_FLOWS_IPFIX") {
            std::fs::write(keep, &bytes).unwrap();
        }
        let result = NetflowParser::default().parse_bytes(&bytes);
        let messages = ipfix_messages(&result);
        // Eight type records: no nfwatchSegments.
        assert_eq!(messages[1].header.sequence_number, 8);
        let types = format!("{:?}", messages[0].flowsets);
        assert!(!types.contains("nfwatchSegments"), "{types}");
        let data = data_records(messages[1]);
        let field = |record: &[(IPFixField, _)], id: u16, pen: Option<u32>| {
            let wanted = IPFixField::new(id, pen);
            record
                .iter()
                .find(|(f, _)| *f == wanted)
                .map(|(_, value)| format!("{value:?}"))
        };
        let start_ms = 1_795_660_556_123u64;
        for (record, reason) in data.iter().zip(["IdleTimeout", "LackOfResources"]) {
            let some = |text: String| Some(text);
            assert_eq!(
                field(record, iana::PACKET_DELTA_COUNT, None),
                some("DataNumber(U64(12))".into())
            );
            assert_eq!(
                field(record, iana::OCTET_DELTA_COUNT, None),
                some("DataNumber(U64(9000))".into())
            );
            assert_eq!(
                field(record, iana::FLOW_END_REASON, None),
                some(format!("FlowEndReason({reason})"))
            );
            let start = field(record, iana::FLOW_START_MILLISECONDS, None).unwrap();
            assert!(start.contains(&start_ms.to_string()), "{start}");
            let end = field(record, iana::FLOW_END_MILLISECONDS, None).unwrap();
            assert!(end.contains(&(start_ms + 2500).to_string()), "{end}");
            assert!(field(record, iana::FLOW_START_NANOSECONDS, None).is_some());
            assert!(field(record, iana::FLOW_END_NANOSECONDS, None).is_some());
            assert_eq!(field(record, iana::IP_TOTAL_LENGTH, None), None);
            assert_eq!(
                field(record, iana::OBSERVATION_TIME_NANOSECONDS, None),
                None
            );
            assert_eq!(field(record, 9, Some(32473)), None, "no segments");
            assert_eq!(
                field(record, 1, Some(32473)),
                some("Vec([0, 0, 3, 232])".into())
            );
        }
        assert_eq!(
            field(&data[1], iana::SOURCE_IPV6_ADDRESS, None),
            Some("Ip6Addr(fd00::1)".into())
        );
        // The fields in the order of the template, its lengths as given.
        let v4 = template(Family::V4, 32473, BatchKind::Flows);
        assert_eq!(v4.id, FLOW_V4_TEMPLATE);
        let ids: Vec<u16> = v4.fields.iter().map(|f| f.element.id).collect();
        assert_eq!(
            ids[..6],
            [
                iana::FLOW_START_NANOSECONDS,
                iana::FLOW_END_NANOSECONDS,
                iana::FLOW_START_MILLISECONDS,
                iana::FLOW_END_MILLISECONDS,
                iana::SOURCE_IPV4_ADDRESS,
                iana::DESTINATION_IPV4_ADDRESS
            ]
        );
        assert_eq!(
            template(Family::V6, 1, BatchKind::Flows).id,
            FLOW_V6_TEMPLATE
        );
    }
}
