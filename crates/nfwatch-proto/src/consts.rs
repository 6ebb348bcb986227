//! Constants mirroring include/uapi/linux/nfwatch.h one for one; the
//! `header_mirror` test compiles the header and compares every value.

pub const NFWATCH_GENL_NAME: &str = "nfwatch";
pub const NFWATCH_GENL_VERSION: u8 = 1;
pub const NFWATCH_MAX_PREFIXES: usize = 1024;
pub const NFWATCH_MAX_FILTERS: usize = 64;

pub const NFWATCH_CMD_UNSPEC: u8 = 0;
pub const NFWATCH_CMD_SUBSCRIBE: u8 = 1;
pub const NFWATCH_CMD_UNSUBSCRIBE: u8 = 2;
pub const NFWATCH_CMD_GET_STATS: u8 = 3;
pub const NFWATCH_CMD_RECORDS: u8 = 4;
pub const NFWATCH_CMD_SHUTDOWN: u8 = 5;
pub const NFWATCH_CMD_FLOWS: u8 = 6;
pub const NFWATCH_CMD_MAX: u8 = 6;

pub const NFWATCH_A_UNSPEC: u16 = 0;
pub const NFWATCH_A_PAD: u16 = 1;
pub const NFWATCH_A_PREFIXES: u16 = 2;
pub const NFWATCH_A_STATS_GLOBAL: u16 = 3;
pub const NFWATCH_A_STATS_OWN: u16 = 4;
pub const NFWATCH_A_BATCH_SEQ: u16 = 5;
pub const NFWATCH_A_BATCH_LOST: u16 = 6;
pub const NFWATCH_A_RECORD_SIZE: u16 = 7;
pub const NFWATCH_A_RECORDS: u16 = 8;
pub const NFWATCH_A_UIDS: u16 = 9;
pub const NFWATCH_A_CGROUPS: u16 = 10;
pub const NFWATCH_A_ALL_NETNS: u16 = 11;
pub const NFWATCH_A_COMMS: u16 = 12;
pub const NFWATCH_A_FLOWS: u16 = 13;
pub const NFWATCH_A_MAX: u16 = 13;

pub const NFWATCH_A_PREFIX: u16 = 1;
pub const NFWATCH_A_UID: u16 = 1;
pub const NFWATCH_A_CGROUP: u16 = 1;
pub const NFWATCH_A_COMM: u16 = 1;

pub const NFWATCH_CGROUP_A_UNSPEC: u16 = 0;
pub const NFWATCH_CGROUP_A_PAD: u16 = 1;
pub const NFWATCH_CGROUP_A_ID: u16 = 2;
pub const NFWATCH_CGROUP_A_LEVEL: u16 = 3;
pub const NFWATCH_CGROUP_A_MAX: u16 = 3;

pub const NFWATCH_PREFIX_A_UNSPEC: u16 = 0;
pub const NFWATCH_PREFIX_A_IPV4: u16 = 1;
pub const NFWATCH_PREFIX_A_IPV6: u16 = 2;
pub const NFWATCH_PREFIX_A_LEN: u16 = 3;
pub const NFWATCH_PREFIX_A_MAX: u16 = 3;

pub const NFWATCH_FLOWS_A_UNSPEC: u16 = 0;
pub const NFWATCH_FLOWS_A_INACTIVE_MS: u16 = 1;
pub const NFWATCH_FLOWS_A_ACTIVE_MS: u16 = 2;
pub const NFWATCH_FLOWS_A_MAX_FLOWS: u16 = 3;
pub const NFWATCH_FLOWS_A_MAX: u16 = 3;
pub const NFWATCH_MAX_TIMEOUT_MS: u32 = 7 * 24 * 3600 * 1000;
pub const NFWATCH_MAX_FLOWS: u32 = 1 << 22;

pub const NFWATCH_STAT_UNSPEC: u16 = 0;
pub const NFWATCH_STAT_PAD: u16 = 1;
pub const NFWATCH_STAT_SEEN: u16 = 2;
pub const NFWATCH_STAT_MATCHED: u16 = 3;
pub const NFWATCH_STAT_DELIVERED: u16 = 4;
pub const NFWATCH_STAT_LOST: u16 = 5;
pub const NFWATCH_STAT_MALFORMED: u16 = 6;
pub const NFWATCH_STAT_BATCHES: u16 = 7;
pub const NFWATCH_STAT_SUBSCRIBERS: u16 = 8;
pub const NFWATCH_STAT_PREFIXES: u16 = 9;
pub const NFWATCH_STAT_LIVE_SUBSCRIBERS: u16 = 10;
pub const NFWATCH_STAT_LIVE_SETS: u16 = 11;
pub const NFWATCH_STAT_LIVE_BATCHES: u16 = 12;
pub const NFWATCH_STAT_LIVE_PAGES: u16 = 13;
pub const NFWATCH_STAT_UNATTRIBUTED: u16 = 14;
pub const NFWATCH_STAT_FLOWS: u16 = 15;
pub const NFWATCH_STAT_FLOWS_EVICTED: u16 = 16;
pub const NFWATCH_STAT_FLOWS_OPEN: u16 = 17;
pub const NFWATCH_STAT_LIVE_FLOWS: u16 = 18;
pub const NFWATCH_STAT_MAX: u16 = 18;

pub const NFWATCH_F_PORTS: u16 = 0x0001;
pub const NFWATCH_F_ICMP: u16 = 0x0002;
pub const NFWATCH_F_FRAG: u16 = 0x0004;
pub const NFWATCH_F_UID: u16 = 0x0008;
pub const NFWATCH_F_PID: u16 = 0x0010;
pub const NFWATCH_F_COMM: u16 = 0x0020;
pub const NFWATCH_F_CGROUP: u16 = 0x0040;

pub const NFWATCH_END_IDLE: u8 = 1;
pub const NFWATCH_END_ACTIVE: u8 = 2;
pub const NFWATCH_END_FORCED: u8 = 4;
pub const NFWATCH_END_EVICTED: u8 = 5;

/// Address families as used in `family` / `nh_family` (Linux values).
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// Layout of `struct nfwatch_record`: total size, then offset and size of
/// every field in declaration order.
pub mod record_layout {
    pub const SIZE: usize = 136;
    /// The first version's record, which this reader also accepts: the
    /// fields past it are then absent.
    pub const SIZE_V1: usize = 104;

    /// (field name in the C struct, offset, size)
    pub const FIELDS: [(&str, usize, usize); 23] = [
        ("ts_ns", TS_NS, 8),
        ("saddr", SADDR, 16),
        ("daddr", DADDR, 16),
        ("nexthop", NEXTHOP, 16),
        ("ifname", IFNAME, 16),
        ("len", LEN, 4),
        ("ifindex", IFINDEX, 4),
        ("uid", UID, 4),
        ("pid", PID, 4),
        ("sport", SPORT, 2),
        ("dport", DPORT, 2),
        ("segs", SEGS, 2),
        ("flags", FLAGS, 2),
        ("family", FAMILY, 1),
        ("nh_family", NH_FAMILY, 1),
        ("proto", PROTO, 1),
        ("icmp_type", ICMP_TYPE, 1),
        ("icmp_code", ICMP_CODE, 1),
        ("__pad", PAD, 3),
        ("cgroup_id", CGROUP_ID, 8),
        ("comm", COMM, 16),
        ("netns", NETNS, 4),
        ("sock_ino", SOCK_INO, 4),
    ];

    pub const TS_NS: usize = 0;
    pub const SADDR: usize = 8;
    pub const DADDR: usize = 24;
    pub const NEXTHOP: usize = 40;
    pub const IFNAME: usize = 56;
    pub const LEN: usize = 72;
    pub const IFINDEX: usize = 76;
    pub const UID: usize = 80;
    pub const PID: usize = 84;
    pub const SPORT: usize = 88;
    pub const DPORT: usize = 90;
    pub const SEGS: usize = 92;
    pub const FLAGS: usize = 94;
    pub const FAMILY: usize = 96;
    pub const NH_FAMILY: usize = 97;
    pub const PROTO: usize = 98;
    pub const ICMP_TYPE: usize = 99;
    pub const ICMP_CODE: usize = 100;
    pub const PAD: usize = 101;
    pub const CGROUP_ID: usize = 104;
    pub const COMM: usize = 112;
    pub const NETNS: usize = 128;
    pub const SOCK_INO: usize = 132;
    pub const COMM_LEN: usize = 16;
    pub const IFNAME_LEN: usize = 16;
    pub const ADDR_LEN: usize = 16;
}

/// Layout of `struct nfwatch_flow`: the counters, then the first packet's
/// `struct nfwatch_record` (which may grow: it is the rest of the flow).
pub mod flow_layout {
    pub const SIZE: usize = FIRST + super::record_layout::SIZE;

    /// (field name in the C struct, offset, size)
    pub const FIELDS: [(&str, usize, usize); 7] = [
        ("last_ns", LAST_NS, 8),
        ("packets", PACKETS, 8),
        ("octets", OCTETS, 8),
        ("sends", SENDS, 8),
        ("end_reason", END_REASON, 1),
        ("__pad", PAD, 7),
        ("first", FIRST, super::record_layout::SIZE),
    ];

    pub const LAST_NS: usize = 0;
    pub const PACKETS: usize = 8;
    pub const OCTETS: usize = 16;
    pub const SENDS: usize = 24;
    pub const END_REASON: usize = 32;
    pub const PAD: usize = 33;
    pub const FIRST: usize = 40;
}
