//! `struct nfwatch_record` parsed into Rust types.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::consts::record_layout as layout;
use crate::consts::*;
use crate::ProtoError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// A device or command name (16 bytes, NUL-padded), kept inline so parsing
/// a record never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PaddedName {
    bytes: [u8; layout::IFNAME_LEN],
    len: usize,
}

impl PaddedName {
    /// Up to the first NUL (the kernel NUL-pads; a full 16 bytes has none).
    pub fn from_padded(padded: [u8; layout::IFNAME_LEN]) -> Self {
        let len = padded.iter().position(|&b| b == 0).unwrap_or(padded.len());
        Self { bytes: padded, len }
    }

    /// `name`'s first 16 bytes.
    pub fn from_bytes(name: &[u8]) -> Self {
        let mut padded = [0; layout::IFNAME_LEN];
        let len = name.len().min(padded.len());
        padded[..len].copy_from_slice(&name[..len]);
        Self::from_padded(padded)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Lossy UTF-8; borrows (no allocation) when the name is valid UTF-8.
    pub fn to_str_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

/// One packet the kernel reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ts_ns: u64,
    pub family: Family,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// None when the packet had no route (nh_family == 0).
    pub nexthop: Option<IpAddr>,
    pub ifname: PaddedName,
    pub len: u32,
    pub ifindex: u32,
    pub uid: Option<u32>,
    pub pid: Option<u32>,
    /// (source, destination) port.
    pub ports: Option<(u16, u16)>,
    /// (type, code).
    pub icmp: Option<(u8, u8)>,
    /// A non-first fragment.
    pub frag: bool,
    pub segs: u16,
    /// The socket's sending process's command name; None when it is not
    /// known (see `pid`).
    pub comm: Option<PaddedName>,
    /// The socket's cgroup v2 id.
    pub cgroup_id: Option<u64>,
    /// The network namespace's inode number; None from a first-version
    /// module, whose records end before it.
    pub netns: Option<u32>,
    /// The socket's inode number (`socket:[N]` in `/proc/PID/fd`); None
    /// when the socket had no file, or from a first-version module.
    pub sock_ino: Option<u32>,
}

/// A record is at least the first version's.
fn check_size(bytes: &[u8]) -> Result<(), ProtoError> {
    if bytes.len() < layout::SIZE_V1 {
        return Err(ProtoError::Truncated {
            what: "record",
            need: layout::SIZE_V1,
            have: bytes.len(),
        });
    }
    Ok(())
}

pub(crate) fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    // Callers checked bytes.len() >= layout::SIZE_V1 and read the fields
    // past it only from records that long, so the fallback is unreachable.
    bytes
        .get(offset..offset + N)
        .and_then(|field| field.try_into().ok())
        .unwrap_or([0; N])
}

fn family_of(what: &'static str, family: u8) -> Result<Family, ProtoError> {
    match family {
        AF_INET => Ok(Family::V4),
        AF_INET6 => Ok(Family::V6),
        _ => Err(ProtoError::UnknownFamily { what, family }),
    }
}

fn address(family: Family, bytes: [u8; layout::ADDR_LEN]) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(bytes)),
    }
}

impl Record {
    /// Parses the first `record_layout::SIZE` bytes of `bytes`; longer
    /// records (a newer kernel appending fields) are accepted, and so are
    /// a first-version module's, without the fields appended since.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtoError> {
        check_size(bytes)?;
        let appended = bytes.len() >= layout::SIZE;
        let u8_at = |offset: usize| array::<1>(bytes, offset)[0];
        let u16_at = |offset: usize| u16::from_ne_bytes(array(bytes, offset));
        let u32_at = |offset: usize| u32::from_ne_bytes(array(bytes, offset));
        let flags = u16_at(layout::FLAGS);
        let has = |flag: u16| flags & flag != 0;

        let family = family_of("family", u8_at(layout::FAMILY))?;
        let nexthop = match u8_at(layout::NH_FAMILY) {
            0 => None,
            nh => Some(address(
                family_of("nh_family", nh)?,
                array(bytes, layout::NEXTHOP),
            )),
        };
        Ok(Self {
            ts_ns: u64::from_ne_bytes(array(bytes, layout::TS_NS)),
            family,
            proto: u8_at(layout::PROTO),
            src: address(family, array(bytes, layout::SADDR)),
            dst: address(family, array(bytes, layout::DADDR)),
            nexthop,
            ifname: PaddedName::from_padded(array(bytes, layout::IFNAME)),
            len: u32_at(layout::LEN),
            ifindex: u32_at(layout::IFINDEX),
            uid: has(NFWATCH_F_UID).then(|| u32_at(layout::UID)),
            pid: has(NFWATCH_F_PID).then(|| u32_at(layout::PID)),
            ports: has(NFWATCH_F_PORTS).then(|| (u16_at(layout::SPORT), u16_at(layout::DPORT))),
            icmp: has(NFWATCH_F_ICMP).then(|| (u8_at(layout::ICMP_TYPE), u8_at(layout::ICMP_CODE))),
            frag: has(NFWATCH_F_FRAG),
            segs: u16_at(layout::SEGS),
            comm: (appended && has(NFWATCH_F_COMM))
                .then(|| PaddedName::from_padded(array(bytes, layout::COMM))),
            cgroup_id: (appended && has(NFWATCH_F_CGROUP))
                .then(|| u64::from_ne_bytes(array(bytes, layout::CGROUP_ID))),
            netns: appended.then(|| u32_at(layout::NETNS)),
            sock_ino: Some(u32_at(layout::SOCK_INO)).filter(|&ino| appended && ino != 0),
        })
    }

    /// The wire bytes of this record (what the kernel would send); for
    /// tests and fakes.
    pub fn to_bytes(&self) -> [u8; layout::SIZE] {
        let mut bytes = [0u8; layout::SIZE];
        let mut put = |offset: usize, field: &[u8]| {
            bytes[offset..offset + field.len()].copy_from_slice(field)
        };
        let family_byte = |addr: IpAddr| match addr {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        };
        let addr_bytes = |addr: IpAddr| match addr {
            IpAddr::V4(v4) => {
                let mut padded = [0u8; layout::ADDR_LEN];
                padded[..4].copy_from_slice(&v4.octets());
                padded
            }
            IpAddr::V6(v6) => v6.octets(),
        };
        let mut flags = 0;
        let flag_if = |cond: bool, flag: u16| if cond { flag } else { 0 };
        flags |= flag_if(self.ports.is_some(), NFWATCH_F_PORTS);
        flags |= flag_if(self.icmp.is_some(), NFWATCH_F_ICMP);
        flags |= flag_if(self.frag, NFWATCH_F_FRAG);
        flags |= flag_if(self.uid.is_some(), NFWATCH_F_UID);
        flags |= flag_if(self.pid.is_some(), NFWATCH_F_PID);
        flags |= flag_if(self.comm.is_some(), NFWATCH_F_COMM);
        flags |= flag_if(self.cgroup_id.is_some(), NFWATCH_F_CGROUP);
        let (sport, dport) = self.ports.unwrap_or_default();
        let (icmp_type, icmp_code) = self.icmp.unwrap_or_default();

        put(layout::TS_NS, &self.ts_ns.to_ne_bytes());
        put(layout::SADDR, &addr_bytes(self.src));
        put(layout::DADDR, &addr_bytes(self.dst));
        if let Some(nexthop) = self.nexthop {
            put(layout::NEXTHOP, &addr_bytes(nexthop));
            put(layout::NH_FAMILY, &[family_byte(nexthop)]);
        }
        put(layout::IFNAME, self.ifname.as_bytes());
        put(layout::LEN, &self.len.to_ne_bytes());
        put(layout::IFINDEX, &self.ifindex.to_ne_bytes());
        put(layout::UID, &self.uid.unwrap_or(0).to_ne_bytes());
        put(layout::PID, &self.pid.unwrap_or(0).to_ne_bytes());
        put(layout::SPORT, &sport.to_ne_bytes());
        put(layout::DPORT, &dport.to_ne_bytes());
        put(layout::SEGS, &self.segs.to_ne_bytes());
        put(layout::FLAGS, &flags.to_ne_bytes());
        put(layout::FAMILY, &[family_byte(self.src)]);
        put(layout::PROTO, &[self.proto]);
        put(layout::ICMP_TYPE, &[icmp_type]);
        put(layout::ICMP_CODE, &[icmp_code]);
        if let Some(comm) = self.comm {
            put(layout::COMM, comm.as_bytes());
        }
        put(
            layout::CGROUP_ID,
            &self.cgroup_id.unwrap_or(0).to_ne_bytes(),
        );
        put(layout::NETNS, &self.netns.unwrap_or(0).to_ne_bytes());
        put(layout::SOCK_INO, &self.sock_ino.unwrap_or(0).to_ne_bytes());
        bytes
    }
}

/// One record's wire bytes (at least `record_layout::SIZE_V1`). What differs
/// from packet to packet of one flow (time, length, segments) is read
/// directly; the rest is compared as bytes, so a writer can tell a record
/// of the flow it just wrote without parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBytes<'a>(pub(crate) &'a [u8]);

/// 0xff for each byte that is the same in every record of one flow, 0 for
/// the time, length and segments: same_flow compares a record's bytes under
/// this mask, which compiles to word-wide XORs with no call.
const FLOW_BYTES: [u8; layout::SIZE] = {
    let mut mask = [0xff; layout::SIZE];
    let varying = [(layout::TS_NS, 8), (layout::LEN, 4), (layout::SEGS, 2)];
    let mut field = 0;
    while field < varying.len() {
        let (offset, size) = varying[field];
        let mut i = offset;
        while i < offset + size {
            mask[i] = 0;
            i += 1;
        }
        field += 1;
    }
    mask
};

impl<'a> RecordBytes<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, ProtoError> {
        check_size(bytes)?;
        Ok(Self(bytes))
    }

    pub fn bytes(self) -> &'a [u8] {
        self.0
    }

    pub fn parse(self) -> Result<Record, ProtoError> {
        Record::parse(self.0)
    }

    pub fn ts_ns(self) -> u64 {
        u64::from_ne_bytes(array(self.0, layout::TS_NS))
    }

    /// The packet's IP length (`Record::len`).
    pub fn ip_len(self) -> u32 {
        u32::from_ne_bytes(array(self.0, layout::LEN))
    }

    pub fn segs(self) -> u16 {
        u16::from_ne_bytes(array(self.0, layout::SEGS))
    }

    /// Whether `other` (another record's bytes) differs from this one in
    /// the time, length and segment count at most.
    pub fn same_flow(self, other: &[u8]) -> bool {
        if self.0.len() != other.len() {
            return false;
        }
        let masked = self.0.len().min(layout::SIZE);
        let (head, tail) = self.0.split_at(masked);
        let (other_head, other_tail) = other.split_at(masked);
        let differ = head
            .iter()
            .zip(other_head)
            .zip(&FLOW_BYTES)
            .fold(0, |acc, ((a, b), keep)| acc | ((a ^ b) & keep));
        differ == 0 && (tail.is_empty() || tail == other_tail)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_v4() -> Record {
        Record {
            ts_ns: 1_795_660_556_123_456_789,
            family: Family::V4,
            proto: 6,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            nexthop: Some("10.0.0.254".parse().unwrap()),
            ifname: PaddedName::from_padded(*b"eth0\0\0\0\0\0\0\0\0\0\0\0\0"),
            len: 60,
            ifindex: 2,
            uid: Some(1000),
            pid: None,
            ports: Some((4242, 80)),
            icmp: None,
            frag: false,
            segs: 1,
            comm: Some(PaddedName::from_padded(*b"curl\0\0\0\0\0\0\0\0\0\0\0\0")),
            cgroup_id: Some(4242),
            netns: Some(4026531840),
            sock_ino: Some(31337),
        }
    }

    #[test]
    fn record_bytes_tell_the_same_flow() {
        let base = sample_v4().to_bytes();
        let view = RecordBytes::new(&base).unwrap();
        assert_eq!(
            (view.ts_ns(), view.ip_len(), view.segs()),
            (1_795_660_556_123_456_789, 60, 1)
        );
        let later = Record {
            ts_ns: 1,
            len: 1500,
            segs: 40,
            ..sample_v4()
        }
        .to_bytes();
        assert!(view.same_flow(&later));
        // Every other byte, the padding included, belongs to the flow.
        for i in (0..layout::SIZE).filter(|i| !(0..8).contains(i)) {
            if (layout::LEN..layout::LEN + 4).contains(&i)
                || (layout::SEGS..layout::SEGS + 2).contains(&i)
            {
                continue;
            }
            let mut other = base;
            other[i] ^= 1;
            assert!(!view.same_flow(&other), "byte {i}");
        }
        assert!(!view.same_flow(&base[..layout::SIZE - 1]));
        assert!(!view.same_flow(&[]));
        assert!(RecordBytes::new(&base[..layout::SIZE_V1 - 1]).is_err());
        // A newer kernel's longer record: the bytes past ours belong to the flow.
        let longer = [base.as_slice(), &[7, 7]].concat();
        let view = RecordBytes::new(&longer).unwrap();
        let mut other = longer.clone();
        other[..8].copy_from_slice(&later[..8]);
        assert!(view.same_flow(&other));
        other[layout::SIZE + 1] = 8;
        assert!(!view.same_flow(&other));
    }

    #[test]
    fn round_trips_through_wire_bytes() {
        let record = sample_v4();
        assert_eq!(Record::parse(&record.to_bytes()).unwrap(), record);
        let v6 = Record {
            family: Family::V6,
            proto: 58,
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            nexthop: None,
            ports: None,
            icmp: Some((128, 0)),
            uid: None,
            pid: Some(77),
            comm: None,
            cgroup_id: None,
            frag: true,
            ..record
        };
        assert_eq!(Record::parse(&v6.to_bytes()).unwrap(), v6);
    }

    #[test]
    fn reads_fields_at_their_offsets() {
        let mut bytes = sample_v4().to_bytes();
        bytes[layout::SADDR..layout::SADDR + 4].copy_from_slice(&[192, 0, 2, 7]);
        bytes[layout::LEN..layout::LEN + 4].copy_from_slice(&1500u32.to_ne_bytes());
        bytes[layout::FLAGS..layout::FLAGS + 2].copy_from_slice(&0u16.to_ne_bytes());
        let record = Record::parse(&bytes).unwrap();
        assert_eq!(record.src, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(record.len, 1500);
        assert_eq!((record.ports, record.uid, record.frag), (None, None, false));
    }

    #[test]
    fn ifname_stops_at_nul_and_tolerates_full_and_invalid_names() {
        assert_eq!(
            PaddedName::from_padded(*b"eth0\0x\0\0\0\0\0\0\0\0\0\0").to_str_lossy(),
            "eth0"
        );
        assert_eq!(
            PaddedName::from_padded(*b"abcdefghijklmnop").to_str_lossy(),
            "abcdefghijklmnop"
        );
        let mut invalid = [0u8; 16];
        invalid[0] = 0xff;
        assert_eq!(PaddedName::from_padded(invalid).to_str_lossy(), "\u{fffd}");
    }

    #[test]
    fn rejects_short_records_and_unknown_families() {
        let bytes = sample_v4().to_bytes();
        assert!(matches!(
            Record::parse(&bytes[..103]),
            Err(ProtoError::Truncated {
                need: 104,
                have: 103,
                ..
            })
        ));
        // A first-version record: the appended fields are absent.
        let v1 = Record::parse(&bytes[..layout::SIZE_V1]).unwrap();
        assert_eq!(
            (v1.comm, v1.cgroup_id, v1.netns, v1.pid, v1.uid),
            (None, None, None, None, Some(1000))
        );
        let mut bad = bytes;
        bad[layout::FAMILY] = 7;
        assert_eq!(
            Record::parse(&bad).unwrap_err().to_string(),
            "record family has unknown address family 7"
        );
        let mut bad_nh = bytes;
        bad_nh[layout::NH_FAMILY] = 99;
        assert!(Record::parse(&bad_nh).is_err());
    }

    #[test]
    fn accepts_longer_records() {
        let mut longer = sample_v4().to_bytes().to_vec();
        longer.extend_from_slice(&[0xaa; 24]);
        assert_eq!(Record::parse(&longer).unwrap(), sample_v4());
    }
}
