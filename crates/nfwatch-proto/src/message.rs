//! nfwatch Generic Netlink messages: requests we send, messages the module
//! sends us. Works on the attribute bytes after the genl header.

use std::net::IpAddr;

use netlink_packet_core::Emitable;
use netlink_packet_generic::GenlFamily;

use crate::attr::{attr_u32, attr_u64, emit_attrs, walk_attrs, RawAttr};
use crate::consts::*;
use crate::{record_layout, Prefix, ProtoError, RecordBytes};

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

impl Request {
    pub fn subscribe(prefixes: &[Prefix], owners: &OwnerFilter, scope: Scope) -> Self {
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

/// One NFWATCH_CMD_RECORDS message; the records stay in the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    pub seq: u64,
    pub lost: u64,
    pub record_size: usize,
    records: &'a [u8],
}

impl<'a> Batch<'a> {
    pub fn parse(attrs: &'a [u8]) -> Result<Self, ProtoError> {
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
        if record_size < record_layout::SIZE_V1 {
            return Err(ProtoError::RecordSizeTooSmall(record_size));
        }
        if records.len() % record_size != 0 {
            return Err(ProtoError::RecordsNotMultiple {
                len: records.len(),
                record_size,
            });
        }
        Ok(Self {
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

    /// Each record's bytes (`parse` checked they are long enough).
    pub fn records(&self) -> impl Iterator<Item = RecordBytes<'a>> + 'a {
        self.records.chunks_exact(self.record_size).map(RecordBytes)
    }
}

/// A message the module sent us, by command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelMessage<'a> {
    Records(Batch<'a>),
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
        let bytes =
            Request::subscribe(&prefixes, &OwnerFilter::default(), Scope::OwnNetns).attr_bytes();
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
        let bytes = Request::subscribe(&prefixes, &owners, Scope::AllNetns).attr_bytes();
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
}
