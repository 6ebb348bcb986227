//! `struct nfwatch_flow` parsed into Rust types, and a view of its bytes.

use crate::consts::flow_layout as layout;
use crate::consts::*;
use crate::record::array;
use crate::{record_layout, ProtoError, Record, RecordBytes};

/// Why a flow ended: `struct nfwatch_flow.end_reason`, whose values are
/// IPFIX's flowEndReason (136).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Idle for the inactive timeout (idle timeout, 1).
    Idle,
    /// A packet came at the active timeout or later (active timeout, 2).
    Active,
    /// The subscription ended (forced end, 4).
    Forced,
    /// The table was full (lack of resources, 5).
    Evicted,
    /// A value this program does not know (a newer module).
    Other(u8),
}

impl EndReason {
    pub fn from_wire(value: u8) -> Self {
        match value {
            NFWATCH_END_IDLE => Self::Idle,
            NFWATCH_END_ACTIVE => Self::Active,
            NFWATCH_END_FORCED => Self::Forced,
            NFWATCH_END_EVICTED => Self::Evicted,
            other => Self::Other(other),
        }
    }

    /// The wire value, which is IPFIX's flowEndReason.
    pub fn ipfix_value(self) -> u8 {
        match self {
            Self::Idle => NFWATCH_END_IDLE,
            Self::Active => NFWATCH_END_ACTIVE,
            Self::Forced => NFWATCH_END_FORCED,
            Self::Evicted => NFWATCH_END_EVICTED,
            Self::Other(other) => other,
        }
    }

    /// `idle`, `active`, `forced`, `evicted`; None for an unknown value.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::Idle => Some("idle"),
            Self::Active => Some("active"),
            Self::Forced => Some("forced"),
            Self::Evicted => Some("evicted"),
            Self::Other(_) => None,
        }
    }
}

/// One flow the kernel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The flow's first packet: its key, and its start in `ts_ns`. Its
    /// `len`, `segs` and `sock_ino` are that packet's, not the flow's.
    pub first: Record,
    /// The last packet's time.
    pub last_ns: u64,
    /// Packets, GSO segments counted.
    pub packets: u64,
    /// The sum of the packets' IP lengths.
    pub octets: u64,
    /// Packets as the hook saw them (a GSO packet once).
    pub sends: u64,
    pub end_reason: EndReason,
}

impl Flow {
    /// Parses a flow of at least `flow_layout::FIRST + SIZE_V1` bytes; a
    /// longer embedded record is read as `Record::parse` reads one.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtoError> {
        FlowBytes::new(bytes)?.parse()
    }

    /// The wire bytes of this flow (what the kernel would send); for tests
    /// and fakes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; layout::SIZE];
        let mut put = |offset: usize, field: &[u8]| {
            bytes[offset..offset + field.len()].copy_from_slice(field)
        };
        put(layout::LAST_NS, &self.last_ns.to_ne_bytes());
        put(layout::PACKETS, &self.packets.to_ne_bytes());
        put(layout::OCTETS, &self.octets.to_ne_bytes());
        put(layout::SENDS, &self.sends.to_ne_bytes());
        put(layout::END_REASON, &[self.end_reason.ipfix_value()]);
        put(layout::FIRST, &self.first.to_bytes());
        bytes
    }
}

/// One flow's wire bytes (at least `flow_layout::FIRST +
/// record_layout::SIZE_V1`): the counters read directly, the first
/// packet's record as `RecordBytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowBytes<'a>(pub(crate) &'a [u8]);

impl<'a> FlowBytes<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, ProtoError> {
        let need = layout::FIRST + record_layout::SIZE_V1;
        if bytes.len() < need {
            return Err(ProtoError::Truncated {
                what: "flow",
                need,
                have: bytes.len(),
            });
        }
        Ok(Self(bytes))
    }

    pub fn bytes(self) -> &'a [u8] {
        self.0
    }

    /// The first packet's record (`new` checked its length).
    pub fn first(self) -> RecordBytes<'a> {
        RecordBytes(&self.0[layout::FIRST..])
    }

    /// The flow's start: its first packet's time.
    pub fn start_ns(self) -> u64 {
        self.first().ts_ns()
    }

    pub fn last_ns(self) -> u64 {
        u64::from_ne_bytes(array(self.0, layout::LAST_NS))
    }

    pub fn packets(self) -> u64 {
        u64::from_ne_bytes(array(self.0, layout::PACKETS))
    }

    pub fn octets(self) -> u64 {
        u64::from_ne_bytes(array(self.0, layout::OCTETS))
    }

    pub fn sends(self) -> u64 {
        u64::from_ne_bytes(array(self.0, layout::SENDS))
    }

    pub fn end_reason(self) -> EndReason {
        EndReason::from_wire(self.0[layout::END_REASON])
    }

    pub fn parse(self) -> Result<Flow, ProtoError> {
        Ok(Flow {
            first: self.first().parse()?,
            last_ns: self.last_ns(),
            packets: self.packets(),
            octets: self.octets(),
            sends: self.sends(),
            end_reason: self.end_reason(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::tests::sample_v4;

    pub(crate) fn sample_flow() -> Flow {
        let first = sample_v4();
        Flow {
            last_ns: first.ts_ns + 2_500_000_000,
            packets: 12,
            octets: 9000,
            sends: 10,
            end_reason: EndReason::Idle,
            first,
        }
    }

    #[test]
    fn round_trips_through_wire_bytes() {
        let flow = sample_flow();
        let bytes = flow.to_bytes();
        assert_eq!(bytes.len(), flow_layout::SIZE);
        assert_eq!(Flow::parse(&bytes).unwrap(), flow);
        let view = FlowBytes::new(&bytes).unwrap();
        assert_eq!(
            (
                view.start_ns(),
                view.last_ns(),
                view.packets(),
                view.octets()
            ),
            (flow.first.ts_ns, flow.last_ns, 12, 9000)
        );
        assert_eq!((view.sends(), view.end_reason()), (10, EndReason::Idle));
        assert_eq!(view.first().bytes(), &flow.first.to_bytes()[..]);
    }

    #[test]
    fn reads_fields_at_their_offsets() {
        let mut bytes = sample_flow().to_bytes();
        bytes[flow_layout::PACKETS..flow_layout::PACKETS + 8].copy_from_slice(&7u64.to_ne_bytes());
        bytes[flow_layout::END_REASON] = NFWATCH_END_EVICTED;
        let at = flow_layout::FIRST + record_layout::SADDR;
        bytes[at..at + 4].copy_from_slice(&[192, 0, 2, 7]);
        let flow = Flow::parse(&bytes).unwrap();
        assert_eq!((flow.packets, flow.end_reason), (7, EndReason::Evicted));
        assert_eq!(flow.first.src.to_string(), "192.0.2.7");
    }

    #[test]
    fn end_reasons_are_ipfix_values() {
        for (value, reason, name) in [
            (1, EndReason::Idle, Some("idle")),
            (2, EndReason::Active, Some("active")),
            (4, EndReason::Forced, Some("forced")),
            (5, EndReason::Evicted, Some("evicted")),
            (3, EndReason::Other(3), None),
        ] {
            assert_eq!(EndReason::from_wire(value), reason);
            assert_eq!((reason.ipfix_value(), reason.name()), (value, name));
        }
    }

    #[test]
    fn short_flows_and_longer_records() {
        let bytes = sample_flow().to_bytes();
        let v1 = flow_layout::FIRST + record_layout::SIZE_V1;
        assert!(matches!(
            FlowBytes::new(&bytes[..v1 - 1]),
            Err(ProtoError::Truncated { what: "flow", .. })
        ));
        let first = Flow::parse(&bytes[..v1]).unwrap().first;
        assert_eq!((first.comm, first.netns), (None, None));
        let longer = [bytes.as_slice(), &[0xaa; 8]].concat();
        assert_eq!(Flow::parse(&longer).unwrap(), sample_flow());
    }
}
