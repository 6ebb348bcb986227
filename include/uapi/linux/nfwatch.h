/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * nfwatch: the wire contract between the kernel module and user space.
 *
 * Generic Netlink family NFWATCH_GENL_NAME. A program subscribes with a set
 * of source prefixes; from then on the module queues NFWATCH_CMD_RECORDS
 * messages to that socket itself (not to its portid, which another socket
 * may hold once it is closed), each holding a batch of struct
 * nfwatch_record, one per locally sent packet whose source is in the set.
 * The subscription lives as long as the socket does.
 *
 * A batch is queued only where the socket's receive buffer (SO_RCVBUF, which
 * the kernel doubles) has room for it and for two replies; its records sit
 * in pages, so it takes at least one page of the buffer, whatever its size:
 * with 4 KiB pages 64 KiB holds three batches, with 64 KiB pages a buffer
 * needs 512 KiB or more.
 *
 * Requests are validated strictly: unknown attributes are rejected, and
 * nested attributes (NFWATCH_A_PREFIXES and each NFWATCH_A_PREFIX entry)
 * must carry NLA_F_NESTED. Subscribing and reading stats need
 * CAP_NET_ADMIN over the socket's network namespace.
 *
 * Everything here is the single source of truth: the Rust mirror in
 * crates/nfwatch-proto is checked against this file by a test.
 */
#ifndef _UAPI_LINUX_NFWATCH_H
#define _UAPI_LINUX_NFWATCH_H

#include <linux/types.h>

#define NFWATCH_GENL_NAME	"nfwatch"
/*
 * The protocol version, declared as the family's version (CTRL_ATTR_VERSION
 * in nlctrl's reply to GETFAMILY). User space speaks exactly one version and
 * refuses a module that declares another. Without a bump, a change may only
 * add: new commands, new attributes (readers skip unknown ones), new
 * NFWATCH_STAT_* counters, new NFWATCH_F_* flags, and fields appended to
 * struct nfwatch_record (readers step by NFWATCH_A_RECORD_SIZE and read the
 * prefix they know). Anything else (a number reused or removed, a field
 * moved, resized or given another meaning, a request rejected that was
 * accepted) bumps it.
 */
#define NFWATCH_GENL_VERSION	1

/* Most prefixes one subscriber may hold (IPv4 and IPv6 together). */
#define NFWATCH_MAX_PREFIXES	1024

enum nfwatch_cmd {
	NFWATCH_CMD_UNSPEC,
	/*
	 * user -> kernel: NFWATCH_A_PREFIXES (required, 1..NFWATCH_MAX_PREFIXES
	 * entries), NFWATCH_A_UIDS, NFWATCH_A_CGROUPS and NFWATCH_A_COMMS (optional: a packet
	 * whose source is in the set is recorded only if it passes each filter
	 * given), NFWATCH_A_ALL_NETNS (optional). Replaces the caller's
	 * previous set and filters. Acked (NLM_F_ACK).
	 */
	NFWATCH_CMD_SUBSCRIBE,
	/*
	 * user -> kernel. The pending batch is sent first, then the reply
	 * (same command) with NFWATCH_A_STATS_OWN: the subscriber's final
	 * counters, so matched == delivered + lost can be checked exactly.
	 * -ENOENT when the socket holds no subscription.
	 */
	NFWATCH_CMD_UNSUBSCRIBE,
	/*
	 * user -> kernel. Reply (same command): NFWATCH_A_STATS_GLOBAL for the
	 * caller's network namespace, and NFWATCH_A_STATS_OWN when the calling
	 * socket is subscribed.
	 */
	NFWATCH_CMD_GET_STATS,
	/*
	 * kernel -> subscriber: NFWATCH_A_BATCH_SEQ, NFWATCH_A_BATCH_LOST,
	 * NFWATCH_A_RECORD_SIZE, NFWATCH_A_RECORDS.
	 */
	NFWATCH_CMD_RECORDS,
	/*
	 * kernel -> subscriber: the module is going away; the subscription is
	 * gone and no batch follows. Carries NFWATCH_A_STATS_OWN (final).
	 */
	NFWATCH_CMD_SHUTDOWN,
	/*
	 * kernel -> a subscriber of flows (NFWATCH_A_FLOWS): as
	 * NFWATCH_CMD_RECORDS, but NFWATCH_A_RECORDS holds struct
	 * nfwatch_flow, one per flow ended, and NFWATCH_A_BATCH_LOST counts
	 * packets (those of the flows lost).
	 */
	NFWATCH_CMD_FLOWS,
	__NFWATCH_CMD_MAX,
};
#define NFWATCH_CMD_MAX (__NFWATCH_CMD_MAX - 1)

enum nfwatch_attr {
	NFWATCH_A_UNSPEC,
	NFWATCH_A_PAD,
	NFWATCH_A_PREFIXES,	/* nested: entries of type NFWATCH_A_PREFIX */
	NFWATCH_A_STATS_GLOBAL,	/* nested: NFWATCH_STAT_* */
	NFWATCH_A_STATS_OWN,	/* nested: NFWATCH_STAT_* */
	NFWATCH_A_BATCH_SEQ,	/* u64: +1 per batch attempted; a gap = a lost batch */
	NFWATCH_A_BATCH_LOST,	/* u64: records lost since the last delivered batch */
	NFWATCH_A_RECORD_SIZE,	/* u32: size of each record in NFWATCH_A_RECORDS */
	NFWATCH_A_RECORDS,	/* binary: packed array of struct nfwatch_record */
	/*
	 * SUBSCRIBE, optional: only packets of sockets owned by one of these
	 * uids (in the requester's user namespace). Nested: u32 entries of
	 * type NFWATCH_A_UID, 1..NFWATCH_MAX_FILTERS.
	 */
	NFWATCH_A_UIDS,
	/*
	 * SUBSCRIBE, optional: only packets of sockets in one of these cgroup
	 * v2 subtrees (a socket belongs to the cgroup of the process that
	 * created it). Nested: entries of type NFWATCH_A_CGROUP, each nested:
	 * NFWATCH_CGROUP_A_ID and NFWATCH_CGROUP_A_LEVEL, 1..NFWATCH_MAX_FILTERS.
	 * A packet matches when its socket's cgroup or its ancestor at LEVEL
	 * has ID, as nftables' "socket cgroupv2 level".
	 */
	NFWATCH_A_CGROUPS,
	/*
	 * SUBSCRIBE, flag: record the packets of every network namespace,
	 * those that exist and those created later, not only the socket's.
	 * Only from the initial network namespace, with CAP_NET_ADMIN in the
	 * initial user namespace (else EPERM). A subscription keeps its scope:
	 * a SUBSCRIBE that would change it is refused (EBUSY).
	 */
	NFWATCH_A_ALL_NETNS,
	/*
	 * SUBSCRIBE, optional: only packets whose socket's sending process
	 * (the record's comm) has one of these command names; a packet with
	 * no known sending process does not match. Nested: NUL-terminated
	 * strings of 1..15 bytes, entries of type NFWATCH_A_COMM,
	 * 1..NFWATCH_MAX_FILTERS.
	 */
	NFWATCH_A_COMMS,
	/*
	 * SUBSCRIBE, optional: aggregate the packets into flows in the kernel
	 * and send each flow once it ends (NFWATCH_CMD_FLOWS), not each
	 * packet. Nested: NFWATCH_FLOWS_A_*, each optional. A flow is the
	 * packets whose records agree in every field but ts_ns, len, segs and
	 * sock_ino. It ends when it has been idle INACTIVE_MS, when a packet
	 * comes ACTIVE_MS or more after its first, when the table is full
	 * and a new flow needs its place (the least recently used goes), and
	 * when the subscription ends (UNSUBSCRIBE, the module unloading; not
	 * the socket closing, which loses them). A subscription keeps its
	 * mode: a SUBSCRIBE that would change it is refused (EBUSY).
	 *
	 * A subscriber's counters then count packets as the hook sees them (a
	 * GSO packet once, as struct nfwatch_flow's @sends): matched ==
	 * delivered + lost + those in flows still open.
	 */
	NFWATCH_A_FLOWS,
	__NFWATCH_A_MAX,
};
#define NFWATCH_A_MAX (__NFWATCH_A_MAX - 1)

/* The type of every entry nested in NFWATCH_A_PREFIXES. */
#define NFWATCH_A_PREFIX	1

/* Most entries in NFWATCH_A_UIDS, NFWATCH_A_CGROUPS and NFWATCH_A_COMMS. */
#define NFWATCH_MAX_FILTERS	64

/* The type of every entry nested in NFWATCH_A_UIDS (u32), NFWATCH_A_CGROUPS and NFWATCH_A_COMMS. */
#define NFWATCH_A_UID		1
#define NFWATCH_A_CGROUP	1
#define NFWATCH_A_COMM		1

/* Inside one NFWATCH_A_CGROUP: both. */
enum nfwatch_cgroup_attr {
	NFWATCH_CGROUP_A_UNSPEC,
	NFWATCH_CGROUP_A_PAD,
	NFWATCH_CGROUP_A_ID,	/* u64: the cgroup's id (its directory's inode in cgroup2) */
	NFWATCH_CGROUP_A_LEVEL,	/* u16: its depth; the root cgroup is 0 */
	__NFWATCH_CGROUP_A_MAX,
};
#define NFWATCH_CGROUP_A_MAX (__NFWATCH_CGROUP_A_MAX - 1)

/* Inside one NFWATCH_A_PREFIX: exactly one of IPV4/IPV6, and LEN. */
enum nfwatch_prefix_attr {
	NFWATCH_PREFIX_A_UNSPEC,
	NFWATCH_PREFIX_A_IPV4,	/* 4 bytes, network order */
	NFWATCH_PREFIX_A_IPV6,	/* 16 bytes, network order */
	NFWATCH_PREFIX_A_LEN,	/* u8: 0..32 (IPv4), 0..128 (IPv6); host bits must be 0 */
	__NFWATCH_PREFIX_A_MAX,
};
#define NFWATCH_PREFIX_A_MAX (__NFWATCH_PREFIX_A_MAX - 1)

/* Inside NFWATCH_A_FLOWS, all u32, all optional. */
enum nfwatch_flows_attr {
	NFWATCH_FLOWS_A_UNSPEC,
	NFWATCH_FLOWS_A_INACTIVE_MS,	/* 1..NFWATCH_MAX_TIMEOUT_MS; default 15000 */
	NFWATCH_FLOWS_A_ACTIVE_MS,	/* 1..NFWATCH_MAX_TIMEOUT_MS; default 1800000 */
	NFWATCH_FLOWS_A_MAX_FLOWS,	/* 1..NFWATCH_MAX_FLOWS; default 65536 */
	__NFWATCH_FLOWS_A_MAX,
};
#define NFWATCH_FLOWS_A_MAX (__NFWATCH_FLOWS_A_MAX - 1)

#define NFWATCH_MAX_TIMEOUT_MS	(7 * 24 * 3600 * 1000)
#define NFWATCH_MAX_FLOWS	(1 << 22)

/* Counters, all u64, nested in NFWATCH_A_STATS_GLOBAL / NFWATCH_A_STATS_OWN. */
enum nfwatch_stat {
	NFWATCH_STAT_UNSPEC,
	NFWATCH_STAT_PAD,
	NFWATCH_STAT_SEEN,	/* global: packets the hook examined */
	NFWATCH_STAT_MATCHED,	/* global: packets matching >= 1 set; own: records made */
	NFWATCH_STAT_DELIVERED,	/* records queued to the subscriber's socket */
	NFWATCH_STAT_LOST,	/* records made but not delivered (buffer full, no memory) */
	NFWATCH_STAT_MALFORMED,	/* packets that could not be parsed (truncated, bad header) */
	NFWATCH_STAT_BATCHES,	/* batches delivered */
	NFWATCH_STAT_SUBSCRIBERS, /* global: subscribers in this network namespace */
	NFWATCH_STAT_PREFIXES,	/* own: prefixes in the set (after removing duplicates) */
	/*
	 * global, and only to callers in the initial network namespace: the
	 * module's live objects in all namespaces, for leak checks.
	 */
	NFWATCH_STAT_LIVE_SUBSCRIBERS,
	NFWATCH_STAT_LIVE_SETS,
	NFWATCH_STAT_LIVE_BATCHES,
	NFWATCH_STAT_LIVE_PAGES,	/* pages kept for batches' records */
	/* own: records made without a sending process (NFWATCH_F_COMM unset) */
	NFWATCH_STAT_UNATTRIBUTED,
	/* own, of a subscriber of flows: flows ended (sent or lost) */
	NFWATCH_STAT_FLOWS,
	/* own: of those, the flows ended early because the table was full */
	NFWATCH_STAT_FLOWS_EVICTED,
	/* own: flows open now */
	NFWATCH_STAT_FLOWS_OPEN,
	/* global, initial namespace only: open flows, all subscribers */
	NFWATCH_STAT_LIVE_FLOWS,
	__NFWATCH_STAT_MAX,
};
#define NFWATCH_STAT_MAX (__NFWATCH_STAT_MAX - 1)

/* struct nfwatch_record.flags */
#define NFWATCH_F_PORTS	0x0001	/* sport/dport valid (TCP, UDP, UDP-Lite, SCTP, DCCP) */
#define NFWATCH_F_ICMP	0x0002	/* icmp_type/icmp_code valid (ICMP, ICMPv6) */
#define NFWATCH_F_FRAG	0x0004	/* a non-first fragment: no L4 header */
#define NFWATCH_F_UID	0x0008	/* uid valid (packet owned by a full socket) */
#define NFWATCH_F_PID	0x0010	/* pid valid (NFWATCH_F_COMM set, and the process is in the subscriber's pid namespace) */
#define NFWATCH_F_COMM	0x0020	/* comm valid: the socket's sending process is known */
#define NFWATCH_F_CGROUP 0x0040	/* cgroup_id valid (a full socket, cgroup v2 in the kernel) */

/*
 * One packet. Numeric fields are in host byte order, addresses in network
 * order; an IPv4 address fills the first 4 bytes of its 16, the rest are 0.
 */
struct nfwatch_record {
	__u64 ts_ns;		/* CLOCK_REALTIME, ns since the epoch */
	__u8  saddr[16];
	__u8  daddr[16];
	__u8  nexthop[16];	/* gateway of the route, or daddr when on-link */
	char  ifname[16];	/* egress device (of the route the packet carries), NUL-padded */
	__u32 len;		/* IP length in bytes (of the whole GSO packet) */
	__u32 ifindex;		/* egress device */
	__u32 uid;		/* owning socket's uid, in the subscriber's user namespace */
	/*
	 * The socket's sending process (tgid, in the subscriber's pid
	 * namespace): the last process seen sending on the socket, in its
	 * own context, since the subscription began; also on the packets
	 * the kernel sends later for that socket (ACKs, retransmissions,
	 * data pushed from softirq). Its command name is in @comm.
	 */
	__u32 pid;
	__u16 sport;
	__u16 dport;
	__u16 segs;		/* GSO segments; 1 when not GSO */
	__u16 flags;		/* NFWATCH_F_* */
	__u8  family;		/* AF_INET or AF_INET6 */
	__u8  nh_family;	/* family of nexthop; 0 when the packet had no route */
	/*
	 * L4 protocol, after IPv6 extension headers; of a non-first fragment,
	 * the protocol its fragment header names; 59 when an IPv6 header chain
	 * ends in NO-NEXT-HEADER.
	 */
	__u8  proto;
	__u8  icmp_type;
	__u8  icmp_code;
	__u8  __pad[3];
	/* Appended after the first 104 bytes; see NFWATCH_A_RECORD_SIZE. */
	__u64 cgroup_id;	/* the owning socket's cgroup v2 id */
	char  comm[16];		/* the sending process's command name, NUL-terminated */
	__u32 netns;		/* the network namespace's inode number, as lsns shows it */
	/*
	 * The owning socket's inode number, as /proc/PID/fd shows it
	 * (socket:[N]): how a reader finds the process holding a socket that
	 * has sent nothing in its own context since the subscription began
	 * (NFWATCH_F_COMM unset). 0 when the socket has no file (closed).
	 */
	__u32 sock_ino;
};

/* struct nfwatch_flow.end_reason: the values of IPFIX's flowEndReason (136) */
#define NFWATCH_END_IDLE	1	/* idle for the inactive timeout */
#define NFWATCH_END_ACTIVE	2	/* a packet came at the active timeout or later */
#define NFWATCH_END_FORCED	4	/* the subscription ended */
#define NFWATCH_END_EVICTED	5	/* the table was full: lackOfResources */

/*
 * One flow ended. @first is its first packet's record (its key, and its
 * start in ts_ns), last so that it may grow as struct nfwatch_record does:
 * its size is NFWATCH_A_RECORD_SIZE less offsetof(struct nfwatch_flow,
 * first).
 */
struct nfwatch_flow {
	__u64 last_ns;		/* the last packet's ts_ns */
	__u64 packets;		/* GSO segments counted */
	__u64 octets;		/* the sum of the packets' len */
	__u64 sends;		/* packets as the hook saw them: a GSO packet once */
	__u8  end_reason;	/* NFWATCH_END_* */
	__u8  __pad[7];
	struct nfwatch_record first;
};

#endif /* _UAPI_LINUX_NFWATCH_H */
