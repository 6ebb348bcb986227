//! Netlink fuzzing of the nfwatch family: generated and mutated requests
//! from a privileged socket and from an unprivileged one (uid 65534, no
//! capabilities). Every request must be answered; each kind has an expected
//! answer where the contract fixes one; afterwards the module holds nothing,
//! still records, and unloads.

use super::genl::{Genl, NLM_F_ACK, NLM_F_REQUEST};
use super::nfwatch::{stats, Live, DEADLINE};
use super::scenarios::still_records;
use super::{dmesg, dmesg_problems, insmod, rmmod, Ctx};
use crate::util::{capture, wait_until};
use anyhow::{bail, ensure, Context, Result};
use nfwatch_proto::*;
use std::collections::BTreeMap;

/// Requests in the `fuzz_netlink` scenario of `cargo xtask test`.
pub const TEST_REQUESTS: u64 = 5000;
/// Requests of `cargo xtask fuzz-netlink` by default.
pub const DEFAULT_REQUESTS: u64 = 100_000;
/// A fresh socket every this many requests (subscriptions die with sockets).
const REOPEN_EVERY: u64 = 250;
/// The unprivileged client's share of the requests: 1 in this many.
const UNPRIVILEGED_SHARE: u64 = 5;
/// The user the unprivileged client runs as.
const NOBODY: &str = "65534";

/// How many requests and from which seed.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub requests: u64,
    pub seed: u64,
}

impl Settings {
    /// `seed` or one from the clock (printed by the scenario, so reproducible).
    pub fn new(requests: u64, seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        Self { requests, seed }
    }
}

#[derive(clap::Args)]
pub struct ClientArgs {
    #[arg(long)]
    requests: u64,
    #[arg(long)]
    seed: u64,
    /// Fail unless running as uid 65534 with no effective capabilities.
    #[arg(long)]
    unprivileged: bool,
}

/// SplitMix64: small, seedable, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

/// What the kernel must answer to a kind of request.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// errno 0.
    Ok,
    /// Any negative errno.
    Rejected,
    /// One of these errnos (0 = accepted).
    OneOf(&'static [i32]),
    /// Anything, as long as there is an answer.
    Any,
    /// Netlink drops it without an answer (broken netlink header).
    Dropped,
}

/// How the netlink message around the attributes is framed.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Normal,
    /// Only this many bytes of the 4-byte genl header.
    ShortGenl(usize),
    /// nlmsg_len this much past the bytes sent.
    LenPastEnd(u32),
    /// Fewer bytes than a netlink header.
    ShortNetlink(usize),
}

struct Request {
    cmd: u8,
    flags: u16,
    version: u8,
    reserved: u16,
    attrs: Vec<u8>,
    framing: Framing,
}

/// Netlink's nested-attribute flag.
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ECHO: u16 = 0x8;
const NLM_F_DUMP: u16 = 0x300;

impl Request {
    fn new(cmd: u8, attrs: &[RawAttr]) -> Self {
        Self {
            cmd,
            flags: NLM_F_REQUEST | NLM_F_ACK,
            version: NFWATCH_GENL_VERSION,
            reserved: 0,
            attrs: emit_attrs(attrs),
            framing: Framing::Normal,
        }
    }

    fn raw(cmd: u8, attrs: Vec<u8>) -> Self {
        Self {
            attrs,
            ..Self::new(cmd, &[])
        }
    }

    fn bytes(&self, family: u16, seq: u32) -> Vec<u8> {
        let mut body = vec![self.cmd, self.version];
        body.extend_from_slice(&self.reserved.to_ne_bytes());
        if let Framing::ShortGenl(n) = self.framing {
            body.truncate(n);
        } else {
            body.extend_from_slice(&self.attrs);
        }
        let len = (16 + body.len()) as u32;
        let nlmsg_len = match self.framing {
            Framing::LenPastEnd(extra) => len + extra,
            _ => len,
        };
        let mut msg = Vec::with_capacity(len as usize);
        msg.extend_from_slice(&nlmsg_len.to_ne_bytes());
        msg.extend_from_slice(&family.to_ne_bytes());
        msg.extend_from_slice(&self.flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&body);
        if let Framing::ShortNetlink(n) = self.framing {
            msg.truncate(n);
        }
        msg
    }
}

type Generator = fn(&mut Rng) -> Request;

/// One kind of request: its name, how often it is drawn, what a privileged
/// caller must get, and how it is made.
struct Kind {
    name: &'static str,
    weight: u64,
    expect: Expect,
    make: Generator,
}

fn prefix_attr(family_v6: bool, addr: &[u8], len: u8) -> RawAttr {
    let kind = if family_v6 {
        NFWATCH_PREFIX_A_IPV6
    } else {
        NFWATCH_PREFIX_A_IPV4
    };
    RawAttr::nested(
        NFWATCH_A_PREFIX,
        vec![
            RawAttr::bytes(kind, addr.to_vec()),
            RawAttr::u8(NFWATCH_PREFIX_A_LEN, len),
        ],
    )
}

/// A random valid prefix: (is IPv6, address with host bits cleared, length).
fn valid_prefix(rng: &mut Rng) -> (bool, Vec<u8>, u8) {
    let v6 = rng.chance(2);
    let bits = if v6 { 128 } else { 32 };
    let len = rng.range(0, bits) as u8;
    let mut addr = rng.bytes(bits as usize / 8);
    for (i, byte) in addr.iter_mut().enumerate() {
        let keep = (u32::from(len)).saturating_sub(i as u32 * 8).min(8);
        *byte &= !(0xffu16 >> keep) as u8;
    }
    (v6, addr, len)
}

fn valid_entries(rng: &mut Rng, n: u64) -> Vec<RawAttr> {
    (0..n)
        .map(|_| {
            let (v6, addr, len) = valid_prefix(rng);
            prefix_attr(v6, &addr, len)
        })
        .collect()
}

fn subscribe_with(entries: Vec<RawAttr>) -> Request {
    Request::new(
        NFWATCH_CMD_SUBSCRIBE,
        &[RawAttr::nested(NFWATCH_A_PREFIXES, entries)],
    )
}

fn valid_subscribe(rng: &mut Rng) -> Request {
    let n = rng.range(1, 8);
    subscribe_with(valid_entries(rng, n))
}

/// A subscribe whose one bad entry sits among valid ones.
fn with_bad_entry(rng: &mut Rng, bad: RawAttr) -> Request {
    let n = rng.below(3);
    let mut entries = valid_entries(rng, n);
    let at = rng.below(entries.len() as u64 + 1) as usize;
    entries.insert(at, bad);
    subscribe_with(entries)
}

fn len_too_long(rng: &mut Rng) -> Request {
    let (v6, addr, _) = valid_prefix(rng);
    let max = if v6 { 128 } else { 32 };
    let len = rng.range(max + 1, 255) as u8;
    with_bad_entry(rng, prefix_attr(v6, &addr, len))
}

fn addr_len_mismatch(rng: &mut Rng) -> Request {
    let v6 = rng.chance(2);
    let want = if v6 { 16 } else { 4 };
    let mut n = rng.range(0, 20) as usize;
    if n == want {
        n = if v6 { 4 } else { 16 };
    }
    let addr = vec![0; n];
    with_bad_entry(rng, prefix_attr(v6, &addr, 0))
}

fn host_bits(rng: &mut Rng) -> Request {
    let v6 = rng.chance(2);
    let bits = if v6 { 128 } else { 32 };
    let len = rng.range(0, bits - 1);
    let mut addr = vec![0u8; bits as usize / 8];
    let bit = rng.range(len, bits - 1) as usize;
    addr[bit / 8] |= 0x80 >> (bit % 8);
    with_bad_entry(rng, prefix_attr(v6, &addr, len as u8))
}

fn empty_set(_: &mut Rng) -> Request {
    subscribe_with(Vec::new())
}

fn oversized_set(rng: &mut Rng) -> Request {
    let n = rng.range(
        NFWATCH_MAX_PREFIXES as u64 + 1,
        NFWATCH_MAX_PREFIXES as u64 + 64,
    );
    subscribe_with(valid_entries(rng, n))
}

fn full_set(rng: &mut Rng) -> Request {
    subscribe_with(valid_entries(rng, NFWATCH_MAX_PREFIXES as u64))
}

fn no_nested_flag(rng: &mut Rng) -> Request {
    let mut req = valid_subscribe(rng);
    // Either the list (first attribute) or its first entry loses the flag.
    let at = if rng.chance(2) { 2 } else { 6 };
    let kind = u16::from_ne_bytes([req.attrs[at], req.attrs[at + 1]]) & !NLA_F_NESTED;
    req.attrs[at..at + 2].copy_from_slice(&kind.to_ne_bytes());
    req
}

fn nested_leaf(rng: &mut Rng) -> Request {
    let (v6, addr, len) = valid_prefix(rng);
    let kind = if v6 {
        NFWATCH_PREFIX_A_IPV6
    } else {
        NFWATCH_PREFIX_A_IPV4
    };
    let inner = vec![RawAttr::u8(NFWATCH_PREFIX_A_LEN, len)];
    let parts = if rng.chance(2) {
        vec![
            RawAttr::nested(kind, vec![RawAttr::bytes(kind, addr)]),
            RawAttr::u8(NFWATCH_PREFIX_A_LEN, len),
        ]
    } else {
        vec![
            RawAttr::bytes(kind, addr),
            RawAttr::nested(NFWATCH_PREFIX_A_LEN, inner),
        ]
    };
    with_bad_entry(rng, RawAttr::nested(NFWATCH_A_PREFIX, parts))
}

fn unknown_attr(rng: &mut Rng) -> Request {
    let kind = if rng.chance(4) {
        0
    } else {
        rng.range(u64::from(NFWATCH_A_MAX) + 1, 0x3fff) as u16
    };
    let mut attrs = vec![RawAttr::nested(NFWATCH_A_PREFIXES, valid_entries(rng, 1))];
    let len = rng.below(12) as usize;
    attrs.insert(rng.below(2) as usize, RawAttr::bytes(kind, rng.bytes(len)));
    let cmd = rng.pick(&[
        NFWATCH_CMD_SUBSCRIBE,
        NFWATCH_CMD_UNSUBSCRIBE,
        NFWATCH_CMD_GET_STATS,
    ]);
    Request::new(cmd, &attrs)
}

fn unknown_prefix_attr(rng: &mut Rng) -> Request {
    let (v6, addr, len) = valid_prefix(rng);
    let kind = if v6 {
        NFWATCH_PREFIX_A_IPV6
    } else {
        NFWATCH_PREFIX_A_IPV4
    };
    let unknown = if rng.chance(4) {
        0
    } else {
        rng.range(u64::from(NFWATCH_PREFIX_A_MAX) + 1, 0x3fff) as u16
    };
    let parts = vec![
        RawAttr::bytes(kind, addr),
        RawAttr::u8(NFWATCH_PREFIX_A_LEN, len),
        RawAttr::bytes(unknown, rng.bytes(4)),
    ];
    with_bad_entry(rng, RawAttr::nested(NFWATCH_A_PREFIX, parts))
}

/// An attribute only the kernel sends, in a request.
fn kernel_only_attr(rng: &mut Rng) -> Request {
    let kind = rng.pick(&[
        NFWATCH_A_PAD,
        NFWATCH_A_STATS_GLOBAL,
        NFWATCH_A_STATS_OWN,
        NFWATCH_A_BATCH_SEQ,
        NFWATCH_A_BATCH_LOST,
        NFWATCH_A_RECORD_SIZE,
        NFWATCH_A_RECORDS,
    ]);
    let n = rng.range(0, 16) as usize;
    let cmd = rng.pick(&[NFWATCH_CMD_SUBSCRIBE, NFWATCH_CMD_GET_STATS]);
    Request::new(
        cmd,
        &[
            RawAttr::nested(NFWATCH_A_PREFIXES, valid_entries(rng, 1)),
            RawAttr::bytes(kind, rng.bytes(n)),
        ],
    )
}

fn duplicate_attr(rng: &mut Rng) -> Request {
    let (v6, addr, len) = valid_prefix(rng);
    let kind = if v6 {
        NFWATCH_PREFIX_A_IPV6
    } else {
        NFWATCH_PREFIX_A_IPV4
    };
    match rng.below(3) {
        0 => Request::new(
            NFWATCH_CMD_SUBSCRIBE,
            &[
                RawAttr::nested(NFWATCH_A_PREFIXES, valid_entries(rng, 1)),
                RawAttr::nested(NFWATCH_A_PREFIXES, valid_entries(rng, 2)),
            ],
        ),
        1 => subscribe_with(vec![RawAttr::nested(
            NFWATCH_A_PREFIX,
            vec![
                RawAttr::bytes(kind, addr),
                RawAttr::u8(NFWATCH_PREFIX_A_LEN, len),
                RawAttr::u8(NFWATCH_PREFIX_A_LEN, rng.below(256) as u8),
            ],
        )]),
        _ => subscribe_with(vec![RawAttr::nested(
            NFWATCH_A_PREFIX,
            vec![
                RawAttr::bytes(kind, addr.clone()),
                RawAttr::bytes(kind, addr),
                RawAttr::u8(NFWATCH_PREFIX_A_LEN, len),
            ],
        )]),
    }
}

/// LEN of the wrong size.
fn wrong_len_size(rng: &mut Rng) -> Request {
    let (v6, addr, _) = valid_prefix(rng);
    let kind = if v6 {
        NFWATCH_PREFIX_A_IPV6
    } else {
        NFWATCH_PREFIX_A_IPV4
    };
    let size = rng.pick(&[0, 2, 3, 4, 8]);
    with_bad_entry(
        rng,
        RawAttr::nested(
            NFWATCH_A_PREFIX,
            vec![
                RawAttr::bytes(kind, addr),
                RawAttr::bytes(NFWATCH_PREFIX_A_LEN, vec![0; size]),
            ],
        ),
    )
}

fn wrong_entry_type(rng: &mut Rng) -> Request {
    let (v6, addr, len) = valid_prefix(rng);
    let mut entry = prefix_attr(v6, &addr, len);
    let kind = rng.pick(&[0u16, 2, 3, 100, 0x3fff]);
    entry.kind = kind | NLA_F_NESTED;
    with_bad_entry(rng, entry)
}

fn address_count(rng: &mut Rng) -> Request {
    let (v6, addr, len) = valid_prefix(rng);
    let parts = if rng.chance(2) {
        // Neither address.
        vec![RawAttr::u8(NFWATCH_PREFIX_A_LEN, len)]
    } else {
        // Both (or one without LEN).
        let other = if v6 { vec![0; 4] } else { vec![0; 16] };
        let other_kind = if v6 {
            NFWATCH_PREFIX_A_IPV4
        } else {
            NFWATCH_PREFIX_A_IPV6
        };
        let kind = if v6 {
            NFWATCH_PREFIX_A_IPV6
        } else {
            NFWATCH_PREFIX_A_IPV4
        };
        if rng.chance(2) {
            vec![RawAttr::bytes(kind, addr)]
        } else {
            vec![
                RawAttr::bytes(kind, addr),
                RawAttr::bytes(other_kind, other),
                RawAttr::u8(NFWATCH_PREFIX_A_LEN, 0),
            ]
        }
    };
    with_bad_entry(rng, RawAttr::nested(NFWATCH_A_PREFIX, parts))
}

fn garbage(rng: &mut Rng) -> Request {
    let n = rng.below(96) as usize;
    let cmd = rng.pick(&[
        NFWATCH_CMD_SUBSCRIBE,
        NFWATCH_CMD_UNSUBSCRIBE,
        NFWATCH_CMD_GET_STATS,
    ]);
    Request::raw(cmd, rng.bytes(n))
}

fn mutated(rng: &mut Rng) -> Request {
    let mut req = valid_subscribe(rng);
    for _ in 0..rng.range(1, 4) {
        let at = rng.below(req.attrs.len() as u64) as usize;
        req.attrs[at] ^= 1 << rng.below(8);
    }
    if rng.chance(3) {
        let keep = rng.below(req.attrs.len() as u64) as usize;
        req.attrs.truncate(keep);
    }
    req
}

/// The last attribute claims more bytes than the message holds.
fn attr_past_end(rng: &mut Rng) -> Request {
    let mut req = valid_subscribe(rng);
    let len = u16::from_ne_bytes([req.attrs[0], req.attrs[1]]);
    let more = len + rng.range(1, 64) as u16;
    req.attrs[0..2].copy_from_slice(&more.to_ne_bytes());
    req
}

fn short_genl(rng: &mut Rng) -> Request {
    let mut req = valid_subscribe(rng);
    req.framing = Framing::ShortGenl(rng.below(4) as usize);
    req
}

fn bad_version(rng: &mut Rng) -> Request {
    let mut req = valid_subscribe(rng);
    req.version = rng.pick(&[0, 2, 3, 0x7f, 0xff]);
    req
}

fn reserved_set(rng: &mut Rng) -> Request {
    let mut req = valid_subscribe(rng);
    req.reserved = rng.range(1, 0xffff) as u16;
    req
}

fn unknown_cmd(rng: &mut Rng) -> Request {
    let cmd = if rng.chance(2) {
        rng.pick(&[
            NFWATCH_CMD_UNSPEC,
            NFWATCH_CMD_RECORDS,
            NFWATCH_CMD_SHUTDOWN,
        ])
    } else {
        rng.range(u64::from(NFWATCH_CMD_MAX) + 1, 255) as u8
    };
    let mut req = valid_subscribe(rng);
    req.cmd = cmd;
    req
}

fn no_request_flag(rng: &mut Rng) -> Request {
    let mut req = valid_subscribe(rng);
    req.flags = NLM_F_ACK;
    req
}

fn dump_flag(rng: &mut Rng) -> Request {
    let mut req = if rng.chance(2) {
        valid_subscribe(rng)
    } else {
        Request::new(NFWATCH_CMD_GET_STATS, &[])
    };
    req.flags |= NLM_F_DUMP;
    req
}

fn odd_flags(rng: &mut Rng) -> Request {
    let mut req = valid_subscribe(rng);
    let extra = rng.pick(&[NLM_F_ECHO, NLM_F_MULTI, 0x400, 0x800, 0x1000, 0xf000]);
    req.flags |= extra;
    req
}

fn short_netlink(rng: &mut Rng) -> Request {
    let mut req = valid_subscribe(rng);
    req.framing = Framing::ShortNetlink(rng.range(1, 15) as usize);
    req
}

fn len_past_end(rng: &mut Rng) -> Request {
    let mut req = valid_subscribe(rng);
    req.framing = Framing::LenPastEnd(rng.range(1, 4096) as u32);
    req
}

fn uid_entries(rng: &mut Rng, n: u64) -> Vec<RawAttr> {
    // Every uid but (u32)-1 maps in the initial user namespace.
    (0..n)
        .map(|_| RawAttr::u32(NFWATCH_A_UID, rng.range(0, 0xffff_fffe) as u32))
        .collect()
}

fn cgroup_entry(id: Option<RawAttr>, level: Option<RawAttr>) -> RawAttr {
    RawAttr::nested(NFWATCH_A_CGROUP, id.into_iter().chain(level).collect())
}

fn cgroup_entries(rng: &mut Rng, n: u64) -> Vec<RawAttr> {
    (0..n)
        .map(|_| {
            cgroup_entry(
                Some(RawAttr::u64(NFWATCH_CGROUP_A_ID, rng.next())),
                Some(RawAttr::u16(NFWATCH_CGROUP_A_LEVEL, rng.below(16) as u16)),
            )
        })
        .collect()
}

/// Command names of 1..=15 random bytes other than NUL, NUL-terminated.
fn comm_entries(rng: &mut Rng, n: u64) -> Vec<RawAttr> {
    (0..n)
        .map(|_| {
            let len = rng.range(1, 15);
            let mut name: Vec<u8> = (0..len).map(|_| rng.range(1, 255) as u8).collect();
            name.push(0);
            RawAttr::bytes(NFWATCH_A_COMM, name)
        })
        .collect()
}

/// A valid subscribe with `filters` after its prefixes.
fn subscribe_filtered(rng: &mut Rng, filters: Vec<RawAttr>) -> Request {
    let n = rng.range(1, 4);
    let mut attrs = vec![RawAttr::nested(NFWATCH_A_PREFIXES, valid_entries(rng, n))];
    attrs.extend(filters);
    Request::new(NFWATCH_CMD_SUBSCRIBE, &attrs)
}

/// Any non-empty mix of uids, cgroups and command names, each
/// 1..=NFWATCH_MAX_FILTERS entries.
fn valid_owner_filter(rng: &mut Rng) -> Request {
    let which = rng.range(1, 7);
    let mut filters = Vec::new();
    if which & 1 != 0 {
        let n = rng.range(1, NFWATCH_MAX_FILTERS as u64);
        filters.push(RawAttr::nested(NFWATCH_A_UIDS, uid_entries(rng, n)));
    }
    if which & 2 != 0 {
        let n = rng.range(1, NFWATCH_MAX_FILTERS as u64);
        filters.push(RawAttr::nested(NFWATCH_A_CGROUPS, cgroup_entries(rng, n)));
    }
    if which & 4 != 0 {
        let n = rng.range(1, NFWATCH_MAX_FILTERS as u64);
        filters.push(RawAttr::nested(NFWATCH_A_COMMS, comm_entries(rng, n)));
    }
    subscribe_filtered(rng, filters)
}

/// One thing wrong with an owner filter, the rest valid.
fn bad_owner_filter(rng: &mut Rng) -> Request {
    let uids = |entries| RawAttr::nested(NFWATCH_A_UIDS, entries);
    let cgroups = |entries| RawAttr::nested(NFWATCH_A_CGROUPS, entries);
    let id = |rng: &mut Rng| Some(RawAttr::u64(NFWATCH_CGROUP_A_ID, rng.next()));
    let level = Some(RawAttr::u16(NFWATCH_CGROUP_A_LEVEL, 1));
    let some_uids = |rng: &mut Rng, bad: RawAttr| {
        let n = rng.below(3);
        let mut entries = uid_entries(rng, n);
        entries.insert(rng.below(n + 1) as usize, bad);
        uids(entries)
    };
    let comms = |entries| RawAttr::nested(NFWATCH_A_COMMS, entries);
    let some_comms = |rng: &mut Rng, bad: RawAttr| {
        let n = rng.below(3);
        let mut entries = comm_entries(rng, n);
        entries.insert(rng.below(n + 1) as usize, bad);
        comms(entries)
    };
    let filter = match rng.below(17) {
        0 => uids(Vec::new()),
        1 => cgroups(Vec::new()),
        2 => uids(uid_entries(rng, NFWATCH_MAX_FILTERS as u64 + 1)),
        3 => cgroups(cgroup_entries(rng, NFWATCH_MAX_FILTERS as u64 + 1)),
        4 => some_uids(rng, RawAttr::u32(2, 0)),
        5 => some_uids(rng, RawAttr::u64(NFWATCH_A_UID, 0)),
        6 => some_uids(rng, RawAttr::u32(NFWATCH_A_UID, u32::MAX)),
        7 => cgroups(vec![cgroup_entry(id(rng), None)]),
        8 => cgroups(vec![cgroup_entry(None, level)]),
        9 => cgroups(vec![cgroup_entry(
            Some(RawAttr::u32(NFWATCH_CGROUP_A_ID, 1)),
            level,
        )]),
        10 => comms(Vec::new()),
        11 => comms(comm_entries(rng, NFWATCH_MAX_FILTERS as u64 + 1)),
        // Unterminated, empty, 16 bytes and a NUL, a NUL inside.
        12 => some_comms(rng, RawAttr::bytes(NFWATCH_A_COMM, b"nginx".to_vec())),
        13 => some_comms(rng, RawAttr::bytes(NFWATCH_A_COMM, vec![0])),
        14 => some_comms(
            rng,
            RawAttr::bytes(NFWATCH_A_COMM, [[b'a'; 16].as_slice(), &[0]].concat()),
        ),
        15 => some_comms(rng, RawAttr::bytes(NFWATCH_A_COMM, b"ng\0nx\0".to_vec())),
        // Without NLA_F_NESTED.
        _ => RawAttr::bytes(NFWATCH_A_UIDS, emit_attrs(&uid_entries(rng, 1))),
    };
    subscribe_filtered(rng, vec![filter])
}

fn unsubscribe(_: &mut Rng) -> Request {
    Request::new(NFWATCH_CMD_UNSUBSCRIBE, &[])
}

fn get_stats(_: &mut Rng) -> Request {
    Request::new(NFWATCH_CMD_GET_STATS, &[])
}

const ENOENT: i32 = -libc::ENOENT;

const KINDS: &[Kind] = &[
    Kind {
        name: "valid_subscribe",
        weight: 8,
        expect: Expect::Ok,
        make: valid_subscribe,
    },
    Kind {
        name: "valid_owner_filter",
        weight: 4,
        expect: Expect::Ok,
        make: valid_owner_filter,
    },
    Kind {
        name: "bad_owner_filter",
        weight: 6,
        expect: Expect::Rejected,
        make: bad_owner_filter,
    },
    Kind {
        name: "full_set_1024",
        weight: 1,
        expect: Expect::Ok,
        make: full_set,
    },
    Kind {
        name: "unsubscribe",
        weight: 6,
        expect: Expect::OneOf(&[0, ENOENT]),
        make: unsubscribe,
    },
    Kind {
        name: "get_stats",
        weight: 3,
        expect: Expect::Ok,
        make: get_stats,
    },
    Kind {
        name: "len_past_max",
        weight: 5,
        expect: Expect::Rejected,
        make: len_too_long,
    },
    Kind {
        name: "addr_len_mismatch",
        weight: 5,
        expect: Expect::Rejected,
        make: addr_len_mismatch,
    },
    Kind {
        name: "host_bits",
        weight: 4,
        expect: Expect::Rejected,
        make: host_bits,
    },
    Kind {
        name: "empty_set",
        weight: 2,
        expect: Expect::Rejected,
        make: empty_set,
    },
    Kind {
        name: "oversized_set",
        weight: 1,
        expect: Expect::OneOf(&[-libc::E2BIG]),
        make: oversized_set,
    },
    Kind {
        name: "no_nla_f_nested",
        weight: 4,
        expect: Expect::Rejected,
        make: no_nested_flag,
    },
    Kind {
        name: "nested_leaf",
        weight: 4,
        expect: Expect::Rejected,
        make: nested_leaf,
    },
    Kind {
        name: "unknown_attr",
        weight: 4,
        expect: Expect::Rejected,
        make: unknown_attr,
    },
    Kind {
        name: "unknown_prefix_attr",
        weight: 4,
        expect: Expect::Rejected,
        make: unknown_prefix_attr,
    },
    Kind {
        name: "kernel_only_attr",
        weight: 3,
        expect: Expect::Rejected,
        make: kernel_only_attr,
    },
    Kind {
        name: "duplicate_attr",
        weight: 4,
        expect: Expect::Any,
        make: duplicate_attr,
    },
    Kind {
        name: "len_attr_size",
        weight: 3,
        expect: Expect::Rejected,
        make: wrong_len_size,
    },
    Kind {
        name: "entry_type",
        weight: 3,
        expect: Expect::Rejected,
        make: wrong_entry_type,
    },
    Kind {
        name: "address_count",
        weight: 3,
        expect: Expect::Rejected,
        make: address_count,
    },
    Kind {
        name: "garbage_attrs",
        weight: 8,
        expect: Expect::Any,
        make: garbage,
    },
    Kind {
        name: "mutated_valid",
        weight: 10,
        expect: Expect::Any,
        make: mutated,
    },
    Kind {
        name: "attr_past_end",
        weight: 3,
        expect: Expect::Rejected,
        make: attr_past_end,
    },
    Kind {
        name: "short_genl_header",
        weight: 2,
        expect: Expect::Rejected,
        make: short_genl,
    },
    Kind {
        name: "genl_version",
        weight: 2,
        expect: Expect::Any,
        make: bad_version,
    },
    Kind {
        name: "genl_reserved",
        weight: 2,
        expect: Expect::Any,
        make: reserved_set,
    },
    Kind {
        name: "unknown_cmd",
        weight: 3,
        expect: Expect::OneOf(&[-libc::EOPNOTSUPP]),
        make: unknown_cmd,
    },
    Kind {
        name: "no_nlm_f_request",
        weight: 2,
        expect: Expect::OneOf(&[0]),
        make: no_request_flag,
    },
    Kind {
        name: "nlm_f_dump",
        weight: 2,
        expect: Expect::OneOf(&[-libc::EOPNOTSUPP]),
        make: dump_flag,
    },
    Kind {
        name: "odd_flags",
        weight: 2,
        expect: Expect::Any,
        make: odd_flags,
    },
    Kind {
        name: "short_nlmsghdr",
        weight: 1,
        expect: Expect::Dropped,
        make: short_netlink,
    },
    Kind {
        name: "nlmsg_len_past_end",
        weight: 1,
        expect: Expect::Dropped,
        make: len_past_end,
    },
];

fn pick_kind(rng: &mut Rng) -> &'static Kind {
    let total: u64 = KINDS.iter().map(|k| k.weight).sum();
    let mut at = rng.below(total);
    for kind in KINDS {
        if at < kind.weight {
            return kind;
        }
        at -= kind.weight;
    }
    &KINDS[0]
}

/// Name of an errno answer.
fn answer_name(errno: i32) -> String {
    let name = match -errno {
        0 => "ok",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ENOMEM => "ENOMEM",
        libc::E2BIG => "E2BIG",
        libc::EINVAL => "EINVAL",
        libc::ERANGE => "ERANGE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::EACCES => "EACCES",
        libc::ENOBUFS => "ENOBUFS",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// (kind -> answer -> count), and the requests whose answer broke the rules.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    pub violations: Vec<String>,
    pub violation_count: u64,
}

impl Tally {
    fn count(&mut self, kind: &str, answer: &str) {
        *self
            .counts
            .entry(kind.to_string())
            .or_default()
            .entry(answer.to_string())
            .or_insert(0) += 1;
    }

    fn violation(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }

    fn total(&self) -> u64 {
        self.counts.values().flat_map(|a| a.values()).sum()
    }

    fn get(&self, kind: &str, answer: &str) -> u64 {
        self.counts
            .get(kind)
            .and_then(|a| a.get(answer))
            .copied()
            .unwrap_or(0)
    }
}

/// Whether `errno` is what a caller of this privilege must get for `expect`.
fn acceptable(expect: Expect, kind: &str, errno: i32, privileged: bool) -> bool {
    if !privileged {
        // Netlink itself acks a message without NLM_F_REQUEST; everything
        // the family sees is refused, and a well-formed request with EPERM.
        return match kind {
            "no_nlm_f_request" => errno == 0,
            "valid_subscribe" | "full_set_1024" | "get_stats" | "unsubscribe" => {
                errno == -libc::EPERM
            }
            _ => errno < 0,
        };
    }
    match expect {
        Expect::Ok => errno == 0,
        Expect::Rejected => errno < 0,
        Expect::OneOf(set) => set.contains(&errno),
        Expect::Any | Expect::Dropped => true,
    }
}

/// Sends `requests` generated requests; every one must be answered.
pub fn run_client(requests: u64, seed: u64, privileged: bool) -> Result<Tally> {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut genl = Genl::open()?;
    let family = genl.resolve(NFWATCH_GENL_NAME)?;
    for i in 0..requests {
        if i > 0 && i % REOPEN_EVERY == 0 {
            genl = Genl::open()?;
        }
        let kind = pick_kind(&mut rng);
        let request = (kind.make)(&mut rng);
        let seq = genl.next_seq();
        let what = || format!("request {i} ({}, seed {seed})", kind.name);
        genl.send_bytes(&request.bytes(family, seq))
            .with_context(what)?;
        if let Expect::Dropped = kind.expect {
            // Netlink drops it silently: the next request's answer must be
            // the first thing to arrive, and nothing may answer this one.
            let strays = genl.strays;
            let probe = genl.next_seq();
            genl.send_bytes(&Request::raw(200, Vec::new()).bytes(family, probe))
                .with_context(what)?;
            let (_, ack) = genl.answer(probe).with_context(what)?;
            if genl.strays != strays || ack.errno != -libc::EOPNOTSUPP {
                tally.violation(format!(
                    "{}: answered (strays {} -> {}), probe errno {}",
                    what(),
                    strays,
                    genl.strays,
                    ack.errno
                ));
            }
            tally.count(kind.name, "no answer (dropped)");
            continue;
        }
        let (_, ack) = genl.answer(seq).with_context(what)?;
        let answer = answer_name(ack.errno);
        if !acceptable(kind.expect, kind.name, ack.errno, privileged) {
            tally.violation(format!("{}: {answer} {:?}", what(), ack.extack));
        }
        tally.count(kind.name, &answer);
    }
    Ok(tally)
}

/// uid and effective capabilities of this process, from /proc.
fn identity() -> Result<(String, String)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
            .with_context(|| format!("no {name} in /proc/self/status"))
    };
    Ok((field("Uid:")?, field("CapEff:")?))
}

/// `guest-fuzz-client`: runs the client and prints its tally as JSON.
pub fn client(args: &ClientArgs) -> Result<()> {
    if args.unprivileged {
        let (uid, caps) = identity()?;
        ensure!(
            uid == NOBODY && caps.trim_start_matches('0').is_empty(),
            "not unprivileged: uid {uid}, CapEff {caps}"
        );
    }
    let tally = run_client(args.requests, args.seed, !args.unprivileged)?;
    println!("{}", serde_json::to_string(&tally)?);
    Ok(())
}

/// Runs the client as uid 65534 without capabilities.
fn unprivileged_client(requests: u64, seed: u64) -> Result<Tally> {
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let mut cmd = super::as_nobody(xtask);
    cmd.args(["guest-fuzz-client", "--unprivileged", "--requests"])
        .arg(requests.to_string())
        .arg("--seed")
        .arg(seed.to_string());
    let out = capture(&mut cmd)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "the unprivileged client failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("bad tally from the client: {stdout}"))
}

const ZERO: Live = Live {
    subscribers: 0,
    sets: 0,
    batches: 0,
    pages: 0,
    flows: 0,
};

/// The module-wide live objects (the guest runs in the initial namespace).
pub fn live(ctx: &Ctx) -> Result<Live> {
    stats(ctx)?
        .live
        .context("nfwatch stats --json has no `live` object")
}

/// Waits until the module holds no subscriber, set or batch.
pub fn wait_live_zero(ctx: &Ctx) -> Result<()> {
    let mut last = None;
    let waited = wait_until("live objects back to 0", DEADLINE, || {
        let now = live(ctx)?;
        last = Some(now);
        Ok((now == ZERO).then_some(()))
    });
    waited.with_context(|| format!("live objects: {last:?}"))
}

fn table(side: &str, tally: &Tally) -> Vec<String> {
    let mut lines = Vec::new();
    for (kind, answers) in &tally.counts {
        let total: u64 = answers.values().sum();
        let shown: Vec<String> = answers.iter().map(|(a, n)| format!("{a} {n}")).collect();
        lines.push(format!(
            "{side:<7} {kind:<20} {total:>7}  {}",
            shown.join(", ")
        ));
    }
    lines
}

/// The `fuzz_netlink` scenario (also `cargo xtask fuzz-netlink`).
pub fn fuzz_netlink(ctx: &Ctx) -> Result<()> {
    let Settings { requests, seed } = ctx.guest.fuzz;
    let before = live(ctx)?;
    ensure!(before == ZERO, "live objects before fuzzing: {before:?}");
    let nobody = requests / UNPRIVILEGED_SHARE;
    let root = requests - nobody;
    ctx.log(&format!(
        "seed {seed}: {root} requests as root, {nobody} as uid {NOBODY} without capabilities \
         (reproduce: cargo xtask fuzz-netlink --requests {requests} --seed {seed})"
    ));
    let started = std::time::Instant::now();
    let privileged = run_client(root, seed, true)?;
    let unprivileged = unprivileged_client(nobody, seed.wrapping_add(1))?;
    ctx.log(&format!(
        "{} requests answered in {:.1} s",
        privileged.total() + unprivileged.total(),
        started.elapsed().as_secs_f64()
    ));
    ctx.log(&format!(
        "{:<7} {:<20} {:>7}  answers",
        "caller", "kind", "sent"
    ));
    for line in table("root", &privileged)
        .into_iter()
        .chain(table("nobody", &unprivileged))
    {
        ctx.log(&line);
    }
    for (side, tally) in [("root", &privileged), ("nobody", &unprivileged)] {
        ensure!(
            tally.violation_count == 0,
            "{side}: {} answers broke the rules, e.g.:\n{}",
            tally.violation_count,
            tally.violations.join("\n")
        );
    }
    ensure!(
        privileged.total() == root && unprivileged.total() == nobody,
        "answers counted: {} + {}, sent {root} + {nobody}",
        privileged.total(),
        unprivileged.total()
    );
    let subscribed = privileged.get("valid_subscribe", "ok");
    let unsubscribed = privileged.get("unsubscribe", "ok");
    ensure!(
        subscribed > 0 && unsubscribed > 0,
        "the real paths were not exercised: {subscribed} subscribes, {unsubscribed} unsubscribes succeeded"
    );
    wait_live_zero(ctx)?;
    let after = stats(ctx)?;
    ensure!(
        after.subscribers == 0,
        "{} subscribers left",
        after.subscribers
    );
    still_records(ctx, 28000)?;
    wait_live_zero(ctx)?;
    ctx.log("rmmod nfwatch");
    rmmod().context("rmmod after fuzzing")?;
    let problems = dmesg_problems(&dmesg()?);
    ensure!(problems.is_empty(), "kernel log: {}", problems.join("\n"));
    insmod(&ctx.guest.module)?;
    // The module is back: one more look that it answers.
    let mut genl = Genl::open()?;
    let family = genl.resolve(NFWATCH_GENL_NAME)?;
    let ack = genl.request(family, NFWATCH_CMD_GET_STATS, &[])?;
    if ack.errno != 0 {
        bail!("GET_STATS after reload: errno {}", ack.errno);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..5).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next(), xs[0]);
    }

    #[test]
    fn valid_prefixes_have_no_host_bits() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let (v6, addr, len) = valid_prefix(&mut rng);
            assert_eq!(addr.len(), if v6 { 16 } else { 4 });
            for bit in usize::from(len)..addr.len() * 8 {
                assert_eq!(addr[bit / 8] & (0x80 >> (bit % 8)), 0, "{addr:?}/{len}");
            }
        }
    }

    #[test]
    fn framing() {
        let req = Request::new(NFWATCH_CMD_GET_STATS, &[]);
        let bytes = req.bytes(30, 9);
        assert_eq!(bytes.len(), 20);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 20);
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let kind = pick_kind(&mut rng);
            let _ = (kind.make)(&mut rng).bytes(30, 1);
        }
    }
}
