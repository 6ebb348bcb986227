//! nfwatch Generic Netlink messages: requests we send, messages the module
//! sends us. Works on the attribute bytes after the genl header.

use std::net::IpAddr;

use netlink_packet_core::Emitable;
use netlink_packet_generic::GenlFamily;

use crate::attr::{attr_u32, attr_u64, emit_attrs, walk_attrs, RawAttr};
use crate::consts::*;
use crate::{flow_layout, record_layout, FlowBytes, Prefix, ProtoError, RecordBytes};

/// A request to the nfwatch family: command plus attributes. Plugs into
/// netlink-packet-generic's `GenlMessage` for the genl and netlink headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub cmd: u8,
    pub attrs: Vec<RawAttr>,
}

/// A cgroup v2 subtree: the cgroup's id and its depth (the root is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupFilter {
    pub id: u64,
    pub level: u16,
}

/// Whose packets a subscription sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Those sent in the subscribing socket's network namespace.
    OwnNetns,
    /// Those of every network namespace (NFWATCH_A_ALL_NETNS).
    AllNetns,
}

/// Filters on a packet's owner, each applied when not empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerFilter {
    pub uids: Vec<u32>,
    pub cgroups: Vec<CgroupFilter>,
    /// Command names of 1 to 15 bytes, without NUL.
    pub comms: Vec<Vec<u8>>,
}

/// NFWATCH_A_FLOWS: aggregate packets into flows in the kernel. A setting
/// left None is the kernel's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowSettings {
    /// A flow idle this long ends (1..=NFWATCH_MAX_TIMEOUT_MS).
    pub inactive_ms: Option<u32>,
    /// A flow ends at its first packet this long after its start.
    pub active_ms: Option<u32>,
    /// Flows open at most (1..=NFWATCH_MAX_FLOWS).
    pub max_flows: Option<u32>,
}

impl Request {
    /// SUBSCRIBE; with `flows`, to flows (NFWATCH_CMD_FLOWS) rather than
    /// packets.
    pub fn subscribe(
        prefixes: &[Prefix],
        owners: &OwnerFilter,
        scope: Scope,
        flows: Option<FlowSettings>,
    ) -> Self {
        let mut attrs = vec![prefixes_attr(prefixes)];
        if scope == Scope::AllNetns {
            attrs.push(RawAttr::bytes(NFWATCH_A_ALL_NETNS, []));
        }
        if !owners.uids.is_empty() {
            let uids = owners.uids.iter();
            let entries = uids.map(|&uid| RawAttr::u32(NFWATCH_A_UID, uid));
            attrs.push(RawAttr::nested(NFWATCH_A_UIDS, entries.collect()));
        }
        if !owners.cgroups.is_empty() {
            let entries = owners.cgroups.iter().map(cgroup_attr).collect();
            attrs.push(RawAttr::nested(NFWATCH_A_CGROUPS, entries));
        }
        if !owners.comms.is_empty() {
            let entries = owners.comms.iter().map(|comm| {
                let mut name = comm.clone();
                name.push(0);
                RawAttr::bytes(NFWATCH_A_COMM, name)
            });
            attrs.push(RawAttr::nested(NFWATCH_A_COMMS, entries.collect()));
        }
        if let Some(flows) = flows {
            let settings = [
                (NFWATCH_FLOWS_A_INACTIVE_MS, flows.inactive_ms),
                (NFWATCH_FLOWS_A_ACTIVE_MS, flows.active_ms),
                (NFWATCH_FLOWS_A_MAX_FLOWS, flows.max_flows),
            ];
            let entries = settings
                .into_iter()
                .filter_map(|(kind, value)| value.map(|v| RawAttr::u32(kind, v)));
            attrs.push(RawAttr::nested(NFWATCH_A_FLOWS, entries.collect()));
        }
        Self {
            cmd: NFWATCH_CMD_SUBSCRIBE,
            attrs,
        }
    }

    pub fn unsubscribe() -> Self {
        Self {
            cmd: NFWATCH_CMD_UNSUBSCRIBE,
            attrs: Vec::new(),
        }
    }

    pub fn get_stats() -> Self {
        Self {
            cmd: NFWATCH_CMD_GET_STATS,
            attrs: Vec::new(),
        }
    }

    /// The attribute bytes (without netlink/genl headers).
    pub fn attr_bytes(&self) -> Vec<u8> {
        emit_attrs(&self.attrs)
    }
}

/// NFWATCH_A_PREFIXES with one NFWATCH_A_PREFIX entry per prefix.
pub fn prefixes_attr(prefixes: &[Prefix]) -> RawAttr {
    RawAttr::nested(
        NFWATCH_A_PREFIXES,
        prefixes.iter().map(prefix_attr).collect(),
    )
}

fn prefix_attr(prefix: &Prefix) -> RawAttr {
    let addr = match prefix.addr() {
        IpAddr::V4(v4) => RawAttr::bytes(NFWATCH_PREFIX_A_IPV4, v4.octets()),
        IpAddr::V6(v6) => RawAttr::bytes(NFWATCH_PREFIX_A_IPV6, v6.octets()),
    };
    RawAttr::nested(
        NFWATCH_A_PREFIX,
        vec![addr, RawAttr::u8(NFWATCH_PREFIX_A_LEN, prefix.len())],
    )
}

fn cgroup_attr(cgroup: &CgroupFilter) -> RawAttr {
    RawAttr::nested(
        NFWATCH_A_CGROUP,
        vec![
            RawAttr::u64(NFWATCH_CGROUP_A_ID, cgroup.id),
            RawAttr::u16(NFWATCH_CGROUP_A_LEVEL, cgroup.level),
        ],
    )
}

impl GenlFamily for Request {
    fn family_name() -> &'static str {
        NFWATCH_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        crate::PROTOCOL_VERSION
    }
}

impl Emitable for Request {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

/// NFWATCH_STAT_* counters; absent ones are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub seen: u64,
    pub matched: u64,
    pub delivered: u64,
    pub lost: u64,
    pub malformed: u64,
    pub batches: u64,
    pub subscribers: u64,
    pub prefixes: u64,
    /// Records made without a sending process (own counters only).
    pub unattributed: u64,
    /// A subscriber of flows: flows ended (sent or lost).
    pub flows: u64,
    /// Of those, the flows ended early because the table was full.
    pub flows_evicted: u64,
    /// Flows open now.
    pub flows_open: u64,
    /// The module's live objects in all namespaces (initial namespace only).
    pub live: Option<LiveObjects>,
}

/// NFWATCH_STAT_LIVE_*: what a leak check compares before and after.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveObjects {
    pub subscribers: u64,
    pub sets: u64,
    pub batches: u64,
    /// Pages subscribers keep for their batches' records.
    pub pages: u64,
    /// Open flows, of every subscriber of flows.
    pub flows: u64,
}

impl Stats {
    pub fn parse(nest: &[u8]) -> Result<Self, ProtoError> {
        let mut stats = Self::default();
        for attr in walk_attrs(nest) {
            let (kind, value) = attr?;
            let counter = match kind {
                NFWATCH_STAT_SEEN => &mut stats.seen,
                NFWATCH_STAT_MATCHED => &mut stats.matched,
                NFWATCH_STAT_DELIVERED => &mut stats.delivered,
                NFWATCH_STAT_LOST => &mut stats.lost,
                NFWATCH_STAT_MALFORMED => &mut stats.malformed,
                NFWATCH_STAT_BATCHES => &mut stats.batches,
                NFWATCH_STAT_SUBSCRIBERS => &mut stats.subscribers,
                NFWATCH_STAT_PREFIXES => &mut stats.prefixes,
                NFWATCH_STAT_UNATTRIBUTED => &mut stats.unattributed,
                NFWATCH_STAT_FLOWS => &mut stats.flows,
                NFWATCH_STAT_FLOWS_EVICTED => &mut stats.flows_evicted,
                NFWATCH_STAT_FLOWS_OPEN => &mut stats.flows_open,
                NFWATCH_STAT_LIVE_SUBSCRIBERS => {
                    &mut stats.live.get_or_insert_with(Default::default).subscribers
                }
                NFWATCH_STAT_LIVE_SETS => &mut stats.live.get_or_insert_with(Default::default).sets,
                NFWATCH_STAT_LIVE_BATCHES => {
                    &mut stats.live.get_or_insert_with(Default::default).batches
                }
                NFWATCH_STAT_LIVE_PAGES => {
                    &mut stats.live.get_or_insert_with(Default::default).pages
                }
                NFWATCH_STAT_LIVE_FLOWS => {
                    &mut stats.live.get_or_insert_with(Default::default).flows
                }
                // PAD and counters newer than this program.
                _ => continue,
            };
            *counter = attr_u64("NFWATCH_STAT_*", value)?;
        }
        Ok(stats)
    }
}

/// NFWATCH_A_STATS_GLOBAL and NFWATCH_A_STATS_OWN, each when present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsReply {
    pub global: Option<Stats>,
    pub own: Option<Stats>,
}

impl StatsReply {
    pub fn parse(attrs: &[u8]) -> Result<Self, ProtoError> {
        let mut reply = Self::default();
        for attr in walk_attrs(attrs) {
            match attr? {
                (NFWATCH_A_STATS_GLOBAL, nest) => reply.global = Some(Stats::parse(nest)?),
                (NFWATCH_A_STATS_OWN, nest) => reply.own = Some(Stats::parse(nest)?),
                _ => {}
            }
        }
        Ok(reply)
    }
}

/// What a batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// NFWATCH_CMD_RECORDS: struct nfwatch_record, one per packet.
    Records,
    /// NFWATCH_CMD_FLOWS: struct nfwatch_flow, one per flow ended.
    Flows,
}

/// One NFWATCH_CMD_RECORDS or NFWATCH_CMD_FLOWS message; the records stay
/// in the receive buffer. `lost` counts packets either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    pub kind: BatchKind,
    pub seq: u64,
    pub lost: u64,
    /// The size of each record (of each flow, in a batch of flows).
    pub record_size: usize,
    records: &'a [u8],
}

/// One entry of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEntry<'a> {
    Record(RecordBytes<'a>),
    Flow(FlowBytes<'a>),
}

impl<'a> Batch<'a> {
    /// A batch of packets' records (NFWATCH_CMD_RECORDS).
    pub fn parse(attrs: &'a [u8]) -> Result<Self, ProtoError> {
        Self::parse_kind(BatchKind::Records, attrs)
    }

    /// A batch of flows (NFWATCH_CMD_FLOWS).
    pub fn parse_flows(attrs: &'a [u8]) -> Result<Self, ProtoError> {
        Self::parse_kind(BatchKind::Flows, attrs)
    }

    fn parse_kind(kind: BatchKind, attrs: &'a [u8]) -> Result<Self, ProtoError> {
        let (mut seq, mut lost, mut record_size, mut records) = (None, None, None, None);
        for attr in walk_attrs(attrs) {
            match attr? {
                (NFWATCH_A_BATCH_SEQ, v) => seq = Some(attr_u64("NFWATCH_A_BATCH_SEQ", v)?),
                (NFWATCH_A_BATCH_LOST, v) => lost = Some(attr_u64("NFWATCH_A_BATCH_LOST", v)?),
                (NFWATCH_A_RECORD_SIZE, v) => {
                    record_size = Some(attr_u32("NFWATCH_A_RECORD_SIZE", v)?)
                }
                (NFWATCH_A_RECORDS, v) => records = Some(v),
                _ => {}
            }
        }
        let missing = |what| ProtoError::MissingAttr { what };
        let record_size = usize::try_from(record_size.ok_or(missing("NFWATCH_A_RECORD_SIZE"))?)
            .unwrap_or(usize::MAX);
        let records = records.ok_or(missing("NFWATCH_A_RECORDS"))?;
        match kind {
            BatchKind::Records if record_size < record_layout::SIZE_V1 => {
                return Err(ProtoError::RecordSizeTooSmall(record_size));
            }
            BatchKind::Flows if record_size < flow_layout::FIRST + record_layout::SIZE_V1 => {
                return Err(ProtoError::FlowSizeTooSmall(record_size));
            }
            _ => {}
        }
        if records.len() % record_size != 0 {
            return Err(ProtoError::RecordsNotMultiple {
                len: records.len(),
                record_size,
            });
        }
        Ok(Self {
            kind,
            seq: seq.ok_or(missing("NFWATCH_A_BATCH_SEQ"))?,
            lost: lost.ok_or(missing("NFWATCH_A_BATCH_LOST"))?,
            record_size,
            records,
        })
    }

    pub fn len(&self) -> usize {
        self.records.len() / self.record_size
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Each record's bytes (`parse` checked they are long enough); in a
    /// batch of flows, none.
    pub fn records(&self) -> impl Iterator<Item = RecordBytes<'a>> + 'a {
        let records = match self.kind {
            BatchKind::Records => self.records,
            BatchKind::Flows => &[],
        };
        records.chunks_exact(self.record_size).map(RecordBytes)
    }

    /// Each entry, records or flows as the batch holds.
    pub fn entries(&self) -> impl Iterator<Item = BatchEntry<'a>> + 'a {
        let kind = self.kind;
        self.records
            .chunks_exact(self.record_size)
            .map(move |bytes| match kind {
                BatchKind::Records => BatchEntry::Record(RecordBytes(bytes)),
                // parse_flows checked they are long enough.
                BatchKind::Flows => BatchEntry::Flow(FlowBytes(bytes)),
            })
    }
}

/// A message the module sent us, by command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelMessage<'a> {
    Records(Batch<'a>),
    /// A batch of flows (`kind` Flows), to a subscriber of flows.
    Flows(Batch<'a>),
    /// Reply to UNSUBSCRIBE: final counters of our subscription.
    Unsubscribed(StatsReply),
    /// Reply to GET_STATS.
    Stats(StatsReply),
    /// The module is going away; final counters of our subscription.
    Shutdown(StatsReply),
    /// A command this program does not know (a newer module).
    Other(u8),
}

impl<'a> KernelMessage<'a> {
    /// `attrs` are the bytes after the genl header of a message with `cmd`.
    pub fn parse(cmd: u8, attrs: &'a [u8]) -> Result<Self, ProtoError> {
        Ok(match cmd {
            NFWATCH_CMD_RECORDS => Self::Records(Batch::parse(attrs)?),
            NFWATCH_CMD_FLOWS => Self::Flows(Batch::parse_flows(attrs)?),
            NFWATCH_CMD_UNSUBSCRIBE => Self::Unsubscribed(StatsReply::parse(attrs)?),
            NFWATCH_CMD_GET_STATS => Self::Stats(StatsReply::parse(attrs)?),
            NFWATCH_CMD_SHUTDOWN => Self::Shutdown(StatsReply::parse(attrs)?),
            other => Self::Other(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_v4;

    fn records_attrs(seq: u64, lost: u64, size: u32, records: Vec<u8>) -> Vec<u8> {
        emit_attrs(&[
            RawAttr::u64(NFWATCH_A_BATCH_SEQ, seq),
            RawAttr::u64(NFWATCH_A_BATCH_LOST, lost),
            RawAttr::u32(NFWATCH_A_RECORD_SIZE, size),
            RawAttr::bytes(NFWATCH_A_RECORDS, records),
        ])
    }

    #[test]
    fn subscribe_encodes_nested_prefixes() {
        let prefixes = ["10.0.0.0/24".parse().unwrap(), "fd00::1".parse().unwrap()];
        let bytes = Request::subscribe(&prefixes, &OwnerFilter::default(), Scope::OwnNetns, None)
            .attr_bytes();
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &56u16.to_ne_bytes()[..], &(NFWATCH_A_PREFIXES | 0x8000).to_ne_bytes(),
            // entry 1: IPv4 10.0.0.0, len 24
            &20u16.to_ne_bytes(), &(1u16 | 0x8000).to_ne_bytes(),
            &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[10, 0, 0, 0],
            &5u16.to_ne_bytes(), &3u16.to_ne_bytes(), &[24, 0, 0, 0],
            // entry 2: IPv6 fd00::1, len 128
            &32u16.to_ne_bytes(), &(1u16 | 0x8000).to_ne_bytes(),
            &20u16.to_ne_bytes(), &2u16.to_ne_bytes(), &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &5u16.to_ne_bytes(), &3u16.to_ne_bytes(), &[128, 0, 0, 0],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn subscribe_encodes_owner_filters() {
        let prefixes = ["10.0.0.0/24".parse().unwrap()];
        let owners = OwnerFilter {
            uids: vec![0, 1000],
            cgroups: vec![CgroupFilter { id: 77, level: 2 }],
            comms: vec![b"nginx".to_vec()],
        };
        let bytes = Request::subscribe(&prefixes, &owners, Scope::AllNetns, None).attr_bytes();
        let attrs: Vec<_> = walk_attrs(&bytes).map(Result::unwrap).collect();
        assert_eq!(attrs.len(), 5);
        let (kind, comms) = attrs[4];
        assert_eq!(kind, NFWATCH_A_COMMS);
        let comms: Vec<_> = walk_attrs(comms).map(Result::unwrap).collect();
        assert_eq!(comms, [(NFWATCH_A_COMM, &b"nginx\0"[..])]);
        assert_eq!(attrs[1], (NFWATCH_A_ALL_NETNS, &[][..]));
        let (kind, uids) = attrs[2];
        assert_eq!(kind, NFWATCH_A_UIDS);
        let uids: Vec<_> = walk_attrs(uids).map(Result::unwrap).collect();
        assert_eq!(
            uids,
            [
                (NFWATCH_A_UID, &0u32.to_ne_bytes()[..]),
                (NFWATCH_A_UID, &1000u32.to_ne_bytes()[..])
            ]
        );
        let (kind, cgroups) = attrs[3];
        assert_eq!(kind, NFWATCH_A_CGROUPS);
        let (kind, entry) = walk_attrs(cgroups).next().unwrap().unwrap();
        assert_eq!(kind, NFWATCH_A_CGROUP);
        let fields: Vec<_> = walk_attrs(entry).map(Result::unwrap).collect();
        assert_eq!(
            fields,
            [
                (NFWATCH_CGROUP_A_ID, &77u64.to_ne_bytes()[..]),
                (NFWATCH_CGROUP_A_LEVEL, &2u16.to_ne_bytes()[..])
            ]
        );
    }

    #[test]
    fn parse_walks_back_what_emit_builds() {
        let bytes = prefixes_attr(&["192.0.2.0/24".parse().unwrap()]);
        let bytes = emit_attrs(&[bytes]);
        let (kind, nest) = walk_attrs(&bytes).next().unwrap().unwrap();
        assert_eq!(kind, NFWATCH_A_PREFIXES);
        let (kind, entry) = walk_attrs(nest).next().unwrap().unwrap();
        assert_eq!(kind, NFWATCH_A_PREFIX);
        let fields: Vec<_> = walk_attrs(entry).map(Result::unwrap).collect();
        assert_eq!(
            fields,
            vec![
                (NFWATCH_PREFIX_A_IPV4, &[192u8, 0, 2, 0][..]),
                (NFWATCH_PREFIX_A_LEN, &[24u8][..])
            ]
        );
    }

    #[test]
    fn requests_without_attributes_are_empty() {
        assert!(Request::unsubscribe().attr_bytes().is_empty());
        assert_eq!(Request::get_stats().cmd, NFWATCH_CMD_GET_STATS);
    }

    #[test]
    fn parses_a_batch() {
        let mut records = sample_v4().to_bytes().to_vec();
        records.extend_from_slice(&sample_v4().to_bytes());
        let attrs = records_attrs(7, 3, 136, records);
        let KernelMessage::Records(batch) =
            KernelMessage::parse(NFWATCH_CMD_RECORDS, &attrs).unwrap()
        else {
            panic!("not a batch");
        };
        assert_eq!((batch.seq, batch.lost, batch.len()), (7, 3, 2));
        assert!(batch.records().all(|r| r.parse().unwrap() == sample_v4()));
    }

    #[test]
    fn accepts_larger_record_sizes() {
        let mut record = sample_v4().to_bytes().to_vec();
        record.extend_from_slice(&[0; 8]);
        let attrs = records_attrs(1, 0, 144, [record.clone(), record].concat());
        let batch = Batch::parse(&attrs).unwrap();
        assert_eq!(batch.len(), 2);
        assert!(batch.records().all(|r| r.parse().unwrap() == sample_v4()));
    }

    #[test]
    fn rejects_bad_batches() {
        let one = sample_v4().to_bytes().to_vec();
        assert_eq!(
            Batch::parse(&records_attrs(1, 0, 100, one.clone())).unwrap_err(),
            ProtoError::RecordSizeTooSmall(100)
        );
        assert_eq!(
            Batch::parse(&records_attrs(1, 0, 104, one[..100].to_vec())).unwrap_err(),
            ProtoError::RecordsNotMultiple {
                len: 100,
                record_size: 104
            }
        );
        let no_seq = emit_attrs(&[
            RawAttr::u64(NFWATCH_A_BATCH_LOST, 0),
            RawAttr::u32(NFWATCH_A_RECORD_SIZE, 136),
            RawAttr::bytes(NFWATCH_A_RECORDS, one),
        ]);
        assert!(matches!(
            Batch::parse(&no_seq),
            Err(ProtoError::MissingAttr { .. })
        ));
        let short_seq = emit_attrs(&[RawAttr::u32(NFWATCH_A_BATCH_SEQ, 1)]);
        assert!(matches!(
            Batch::parse(&short_seq),
            Err(ProtoError::BadAttrLen { len: 4, .. })
        ));
        assert!(matches!(
            Batch::parse(&[8, 0, 5, 0, 1]),
            Err(ProtoError::BadFraming(_))
        ));
    }

    #[test]
    fn parses_stats_nests() {
        let attrs = emit_attrs(&[
            RawAttr::nested(
                NFWATCH_A_STATS_GLOBAL,
                vec![
                    RawAttr::u64(NFWATCH_STAT_SEEN, 10),
                    RawAttr::bytes(NFWATCH_STAT_PAD, []),
                    RawAttr::u64(NFWATCH_STAT_SUBSCRIBERS, 2),
                    RawAttr::u64(200, 9),
                ],
            ),
            RawAttr::nested(
                NFWATCH_A_STATS_OWN,
                vec![
                    RawAttr::u64(NFWATCH_STAT_MATCHED, 5),
                    RawAttr::u64(NFWATCH_STAT_DELIVERED, 4),
                    RawAttr::u64(NFWATCH_STAT_LOST, 1),
                ],
            ),
        ]);
        let KernelMessage::Unsubscribed(reply) =
            KernelMessage::parse(NFWATCH_CMD_UNSUBSCRIBE, &attrs).unwrap()
        else {
            panic!("not an unsubscribe reply");
        };
        let global = reply.global.unwrap();
        assert_eq!((global.seen, global.subscribers), (10, 2));
        let own = reply.own.unwrap();
        assert_eq!((own.matched, own.delivered, own.lost), (5, 4, 1));

        let only_global = emit_attrs(&[RawAttr::nested(NFWATCH_A_STATS_GLOBAL, vec![])]);
        let reply = StatsReply::parse(&only_global).unwrap();
        assert_eq!((reply.global, reply.own), (Some(Stats::default()), None));
    }

    #[test]
    fn unknown_commands_are_reported_not_rejected() {
        assert_eq!(
            KernelMessage::parse(42, &[]).unwrap(),
            KernelMessage::Other(42)
        );
    }

    #[test]
    fn subscribe_encodes_flow_settings_nested() {
        let prefixes = ["10.0.0.0/24".parse().unwrap()];
        let flows = FlowSettings {
            inactive_ms: Some(15_000),
            active_ms: None,
            max_flows: Some(65_536),
        };
        let request = Request::subscribe(
            &prefixes,
            &OwnerFilter::default(),
            Scope::OwnNetns,
            Some(flows),
        );
        let nested = request.attrs.last().unwrap();
        assert_eq!(nested.kind, NFWATCH_A_FLOWS | 0x8000, "NLA_F_NESTED");
        let bytes = request.attr_bytes();
        let attrs: Vec<_> = walk_attrs(&bytes).map(Result::unwrap).collect();
        assert_eq!(attrs.len(), 2);
        let (kind, settings) = attrs[1];
        assert_eq!(kind, NFWATCH_A_FLOWS);
        let settings: Vec<_> = walk_attrs(settings).map(Result::unwrap).collect();
        assert_eq!(
            settings,
            [
                (NFWATCH_FLOWS_A_INACTIVE_MS, &15_000u32.to_ne_bytes()[..]),
                (NFWATCH_FLOWS_A_MAX_FLOWS, &65_536u32.to_ne_bytes()[..]),
            ]
        );
        // Flows with every default: the nest alone.
        let request = Request::subscribe(
            &prefixes,
            &OwnerFilter::default(),
            Scope::OwnNetns,
            Some(FlowSettings::default()),
        );
        let bytes = request.attr_bytes();
        let attrs: Vec<_> = walk_attrs(&bytes).map(Result::unwrap).collect();
        assert_eq!(attrs[1], (NFWATCH_A_FLOWS, &[][..]));
    }

    #[test]
    fn parses_flow_batches() {
        use crate::flow::tests::sample_flow;
        let flow = sample_flow().to_bytes();
        let size = flow.len() as u32;
        let attrs = records_attrs(3, 7, size, [flow.clone(), flow.clone()].concat());
        let KernelMessage::Flows(batch) = KernelMessage::parse(NFWATCH_CMD_FLOWS, &attrs).unwrap()
        else {
            panic!("not flows");
        };
        assert_eq!(
            (batch.kind, batch.seq, batch.lost, batch.len()),
            (BatchKind::Flows, 3, 7, 2)
        );
        assert_eq!(batch.records().count(), 0, "no packet records");
        for entry in batch.entries() {
            let BatchEntry::Flow(view) = entry else {
                panic!("not a flow");
            };
            assert_eq!(view.parse().unwrap(), sample_flow());
        }
        // A newer module's longer flows are read by their known prefix.
        let mut longer = flow.clone();
        longer.extend_from_slice(&[0; 8]);
        let attrs = records_attrs(1, 0, size + 8, longer);
        let batch = Batch::parse_flows(&attrs).unwrap();
        let Some(BatchEntry::Flow(view)) = batch.entries().next() else {
            panic!("no flow");
        };
        assert_eq!(view.parse().unwrap(), sample_flow());
        // A packet batch's entries are records.
        let attrs = records_attrs(1, 0, 136, sample_v4().to_bytes().to_vec());
        let batch = Batch::parse(&attrs).unwrap();
        assert_eq!(batch.kind, BatchKind::Records);
        assert!(matches!(
            batch.entries().next(),
            Some(BatchEntry::Record(_))
        ));
    }

    #[test]
    fn rejects_flow_batches_of_records() {
        let record = sample_v4().to_bytes().to_vec();
        let attrs = records_attrs(1, 0, 136, record);
        assert_eq!(
            Batch::parse_flows(&attrs).unwrap_err(),
            ProtoError::FlowSizeTooSmall(136)
        );
        assert_eq!(
            ProtoError::FlowSizeTooSmall(136).to_string(),
            "flow size 136 is smaller than 144"
        );
        let flow = crate::flow::tests::sample_flow().to_bytes();
        let attrs = records_attrs(1, 0, 176, flow[..170].to_vec());
        assert!(matches!(
            Batch::parse_flows(&attrs),
            Err(ProtoError::RecordsNotMultiple { len: 170, .. })
        ));
    }

    #[test]
    fn parses_flow_counters() {
        let attrs = emit_attrs(&[
            RawAttr::nested(
                NFWATCH_A_STATS_GLOBAL,
                vec![
                    RawAttr::u64(NFWATCH_STAT_LIVE_PAGES, 3),
                    RawAttr::u64(NFWATCH_STAT_LIVE_FLOWS, 42),
                ],
            ),
            RawAttr::nested(
                NFWATCH_A_STATS_OWN,
                vec![
                    RawAttr::u64(NFWATCH_STAT_FLOWS, 9),
                    RawAttr::u64(NFWATCH_STAT_FLOWS_EVICTED, 2),
                    RawAttr::u64(NFWATCH_STAT_FLOWS_OPEN, 5),
                ],
            ),
        ]);
        let reply = StatsReply::parse(&attrs).unwrap();
        let live = reply.global.unwrap().live.unwrap();
        assert_eq!((live.pages, live.flows), (3, 42));
        let own = reply.own.unwrap();
        assert_eq!((own.flows, own.flows_evicted, own.flows_open), (9, 2, 5));
    }
}
