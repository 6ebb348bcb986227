/* SPDX-License-Identifier: GPL-2.0 */
/* nfwatch: what the parts of the module share. */
#ifndef _NFWATCH_H
#define _NFWATCH_H

#include <linux/bitops.h>
#include <linux/hrtimer.h>
#include <linux/jump_label.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/skbuff.h>
#include <linux/spinlock.h>
#include <linux/u64_stats_sync.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include <uapi/linux/nfwatch.h>

struct cgroup;
struct nfwatch_flows;
struct nfwatch_prefix_set;
struct nfwatch_sender;

/* Counters of one network namespace, summed over its CPUs. */
struct nfwatch_ns_stats {
	u64 seen;
	u64 matched;
	u64 delivered;
	u64 lost;
	u64 malformed;
	u64 batches;
};

/* One CPU's, so the hook never shares a line; see nfwatch_ns_count(). */
struct nfwatch_ns_pcpu_stats {
	u64_stats_t seen;
	u64_stats_t matched;
	u64_stats_t delivered;
	u64_stats_t lost;
	u64_stats_t malformed;
	u64_stats_t batches;
	struct u64_stats_sync syncp;
};

/*
 * Adds @n to this CPU's @field of @nn. The hook runs in process and softirq
 * context on one CPU, so a 32-bit writer keeps interrupts off for the
 * update; on 64-bit it is a plain add.
 */
#define nfwatch_ns_count(nn, field, n)						\
	do {									\
		struct nfwatch_ns_pcpu_stats *s_ = get_cpu_ptr((nn)->stats);	\
		unsigned long flags_ = u64_stats_update_begin_irqsave(&s_->syncp); \
										\
		u64_stats_add(&s_->field, (n));					\
		u64_stats_update_end_irqrestore(&s_->syncp, flags_);		\
		put_cpu_ptr((nn)->stats);					\
	} while (0)

/* IPv4 and IPv6 LOCAL_OUT. */
#define NFWATCH_HOOKS (1 + IS_ENABLED(CONFIG_IPV6))

/*
 * One network namespace: its hooks' view of who is subscribed. The hooks
 * are registered by the first subscriber and stay until pre_exit (see
 * subscriber.c), so a namespace nobody has watched pays nothing per packet
 * and one watched before pays an early return.
 */
struct nfwatch_net {
	struct net *net;
	struct list_head node;		/* in the list of every namespace's (subscriber.c) */
	struct list_head subs;		/* of nfwatch_sub; RCU readers, writers hold @lock */
	struct mutex lock;		/* serialises requests: the family has parallel_ops */
	unsigned int nsubs;		/* read locklessly by GET_STATS */
	bool hooked;			/* @hook_ops registered: from the first subscriber to pre_exit */
	struct nf_hook_ops hook_ops[NFWATCH_HOOKS];	/* .priv is this */
	bool dying;			/* pernet exit began: no new subscribers */
	struct nfwatch_ns_pcpu_stats __percpu *stats;
};

/* A subscriber's counters, as reported to it. */
struct nfwatch_sub_stats {
	u64 matched;
	u64 delivered;
	u64 lost;
	u64 batches;
	u64 prefixes;
	u64 unattributed;
	u64 flows;			/* ended: sent or lost */
	u64 flows_evicted;
	u64 flows_open;			/* filled in when read */
};

/* A subscriber of flows' settings (NFWATCH_A_FLOWS). */
struct nfwatch_flow_config {
	u32 inactive_ms;
	u32 active_ms;
	u32 max_flows;
};

/*
 * A subscriber's filters on a packet's owner, built once per SUBSCRIBE and
 * swapped under RCU as its set is; NULL: no filter.
 */
struct nfwatch_filter {
	struct rcu_head rcu;
	unsigned int nuids;		/* 0: any uid */
	unsigned int ncgroups;		/* 0: any cgroup */
	kuid_t uids[NFWATCH_MAX_FILTERS];
	struct {
		u64 id;
		u16 level;
	} cgroups[NFWATCH_MAX_FILTERS];
	unsigned int ncomms;		/* 0: any process, or none */
	char comms[NFWATCH_MAX_FILTERS][TASK_COMM_LEN];	/* NUL-padded */
};

/* Sockets whose sending process one subscriber remembers (owner.c). */
#define NFWATCH_SENDERS_BITS 12
#define NFWATCH_SENDERS (1U << NFWATCH_SENDERS_BITS)

/* batch_bytes at most: a batch's records fit one netlink attribute. */
#define NFWATCH_BATCH_BYTES_MAX 65000U

/*
 * Pages the largest batch of records of @size can take, none straddling two
 * pages (an upper bound, as the headers' bytes are not taken off).
 */
#define NFWATCH_BATCH_PAGES(size) \
	DIV_ROUND_UP(NFWATCH_BATCH_BYTES_MAX / (size), PAGE_SIZE / (size))
/* Of packets' records or flows' (17 with 4 KiB pages); a subscriber's ring: two such. */
#define NFWATCH_BATCH_PAGES_MAX							\
	(NFWATCH_BATCH_PAGES(sizeof(struct nfwatch_record)) >			\
	 NFWATCH_BATCH_PAGES(sizeof(struct nfwatch_flow)) ?			\
	 NFWATCH_BATCH_PAGES(sizeof(struct nfwatch_record)) :			\
	 NFWATCH_BATCH_PAGES(sizeof(struct nfwatch_flow)))
#define NFWATCH_RING_PAGES (2 * NFWATCH_BATCH_PAGES_MAX)

/*
 * One subscribing netlink socket. Found by the hook under RCU; delivery
 * state is under @lock, which is taken with bottom halves off because the
 * hook runs in process and softirq context and the flush timer in softirq.
 * Once @dead is set nothing is delivered any more, and what the hook may
 * still reach (the struct and @set) is freed after a grace period.
 */
struct nfwatch_sub {
	struct list_head node;
	struct nfwatch_net *nn;
	struct net *net;
	u32 portid;
	bool all_netns;			/* on nfwatch_all_subs, not nn->subs */
	struct sock *sk;		/* held: batches go to this socket, not to the portid */
	struct nfwatch_prefix_set __rcu *set;
	struct nfwatch_filter __rcu *filter;
	struct user_namespace *user_ns;	/* to show uids as the subscriber sees them */
	struct pid_namespace *pid_ns;	/* likewise pids */
	struct mem_cgroup *memcg;	/* held, or NULL: charged for the ring's pages and flows */
	struct nfwatch_flows *flows;	/* a subscriber of flows' table, or NULL */
	struct rcu_head rcu;

	spinlock_t lock;
	bool dead;			/* removed: deliver nothing, start no timer */
	struct sk_buff *batch;		/* being filled, or NULL */
	struct nlattr *batch_seq;
	struct nlattr *batch_lost;
	struct nlattr *batch_records;
	u32 batch_count;
	u32 batch_packets;		/* the hook's packets in it: what its loss counts */
	u64 seq;
	u64 lost_unreported;		/* lost since the last delivered batch */
	int sk_drops;			/* the socket's drop count last seen */
	bool draining;			/* no batches until the socket is read empty */
	unsigned long empty_since;	/* jiffies when it was first seen empty, or 0 */
	struct nfwatch_sub_stats stats;	/* .prefixes under nn->lock */
	struct hrtimer flush_timer;
	u8 *slot_page;			/* the batch's last page; */
	u8 *slot_next;			/* its free room for records, */
	u8 *slot_end;			/* up to here; equal: a page is needed */
	struct page *ring[NFWATCH_RING_PAGES];	/* the records' pages, oldest use at @ring_next */
	unsigned int ring_next;
	/* The last uid and how the subscriber sees it. */
	kuid_t last_kuid;
	uid_t last_uid;
	struct nfwatch_sender *senders;	/* NFWATCH_SENDERS, under @lock */
};

/* A packet as the hook parsed it, before it is fitted to one subscriber. */
struct nfwatch_packet {
	struct nfwatch_record rec;	/* uid, pid and comm still unset */
	const struct sock *sk;		/* full socket owning the packet, or NULL */
	u64 cookie;			/* @sk's */
	struct cgroup *cgroup;		/* @sk's cgroup v2, or NULL */
	bool in_sender_task;		/* hook runs in the sending process */
};

/* The module's live objects, all namespaces: what a leak check compares. */
struct nfwatch_live {
	atomic_t subscribers;
	atomic_t sets;
	atomic_t batches;
	atomic_t pages;			/* in subscribers' rings */
	atomic_t flows;			/* open, in subscribers' tables */
};

extern struct nfwatch_live nfwatch_live;
/*
 * Subscribers to every namespace's packets, which live in the initial
 * namespace: RCU readers (every hook, after its own namespace's), writers
 * hold the initial namespace's lock.
 */
extern struct list_head nfwatch_all_subs;
/*
 * On while an all-namespace subscription is in force or being made: until
 * then the hooks do not even look at nfwatch_all_subs.
 */
DECLARE_STATIC_KEY_FALSE(nfwatch_all_netns_key);
/* Subscriptions in force, all namespaces: the "subscribers" parameter. */
extern atomic_t nfwatch_subscribed;
extern unsigned int nfwatch_batch_records;
extern unsigned int nfwatch_batch_flows;
extern unsigned int nfwatch_net_id;
extern unsigned int nfwatch_flush_interval_us;
extern unsigned int nfwatch_batch_bytes;
extern unsigned int nfwatch_max_subscribers;

static inline struct nfwatch_net *nfwatch_pernet(const struct net *net)
{
	return net_generic(net, nfwatch_net_id);
}

/* hook.c */
int nfwatch_hooks_register(struct net *net, struct nfwatch_net *nn);
void nfwatch_hooks_unregister(struct net *net, struct nfwatch_net *nn);

/* prefixset.c */

/* The IPv4 filter's bits: one per value of an address's top 16 bits. */
#define NFWATCH_V4_FILTER_BITS 16

/*
 * What every set starts with: a bit per /16 that any of its IPv4 prefixes
 * reaches into. The hook tests it inline, so an unwatched source it turns
 * away (most packets sent) costs no call.
 */
struct nfwatch_v4_filter {
	DECLARE_BITMAP(bits, 1 << NFWATCH_V4_FILTER_BITS);
};

/* False: no prefix of @set holds @host (IPv4, host order); true: look it up. */
static inline bool nfwatch_v4_filter_passes(const struct nfwatch_prefix_set *set, u32 host)
{
	const struct nfwatch_v4_filter *filter = (const void *)set;

	return test_bit(host >> (32 - NFWATCH_V4_FILTER_BITS), filter->bits);
}

struct nfwatch_prefix {
	u8 family;
	u8 len;
	u8 addr[16];
};
struct nfwatch_prefix_set *nfwatch_set_build(const struct nfwatch_prefix *prefixes,
					     unsigned int n);
unsigned int nfwatch_set_size(const struct nfwatch_prefix_set *set);
bool nfwatch_set_contains_v4(const struct nfwatch_prefix_set *set, __be32 addr);
bool nfwatch_set_contains(const struct nfwatch_prefix_set *set, u8 family,
			  const u8 *addr);
bool nfwatch_prefix_has_host_bits(const struct nfwatch_prefix *prefix);
void nfwatch_set_free(struct nfwatch_prefix_set *set);
void nfwatch_set_free_rcu(struct nfwatch_prefix_set *set);

/* subscriber.c */
void nfwatch_pernet_pre_exit_subs(struct net *net);
int nfwatch_subscribe(struct net *net, struct sock *sk, u32 portid,
		      struct nfwatch_prefix_set *set, struct nfwatch_filter *filter,
		      bool all_netns, const struct nfwatch_flow_config *flows,
		      struct netlink_ext_ack *extack);
int nfwatch_unsubscribe(struct net *net, const struct sock *sk, u32 portid,
			struct nfwatch_sub_stats *final);
bool nfwatch_own_stats(struct net *net, const struct sock *sk, u32 portid,
		       struct nfwatch_sub_stats *out);
void nfwatch_ns_stats(struct net *net, struct nfwatch_ns_stats *sum, unsigned int *nsubs);
int nfwatch_subs_init(struct nfwatch_net *nn, struct net *net);
int nfwatch_pernet_init_subs(struct net *net);
void nfwatch_pernet_exit_subs(struct nfwatch_net *nn);
int nfwatch_notifier_register(void);
void nfwatch_notifier_unregister(void);

/* owner.c */
int nfwatch_senders_alloc(struct nfwatch_sub *sub);
void nfwatch_senders_free(struct nfwatch_sub *sub);
u64 nfwatch_sk_cookie(const struct sock *sk);
const struct nfwatch_sender *nfwatch_sender_of(struct nfwatch_sub *sub,
					       const struct nfwatch_packet *pkt);
void nfwatch_attribute(struct nfwatch_sub *sub, const struct nfwatch_sender *sender,
		       struct nfwatch_record *rec);
bool nfwatch_filter_passes(const struct nfwatch_sub *sub, const struct nfwatch_packet *pkt);
bool nfwatch_comm_passes(const struct nfwatch_sub *sub, const struct nfwatch_sender *sender);

/* delivery.c */
void nfwatch_delivery_init(struct nfwatch_sub *sub);
void nfwatch_deliver(struct nfwatch_sub *sub, const struct nfwatch_packet *pkt);
void nfwatch_delivery_stop(struct nfwatch_sub *sub, bool flush);
void *nfwatch_batch_slot(struct nfwatch_sub *sub, u32 packets);
void nfwatch_batch_commit(struct nfwatch_sub *sub, u32 packets);
void nfwatch_count_lost(struct nfwatch_sub *sub, u64 packets);

/* flows.c */
int nfwatch_flows_init(void);
void nfwatch_flows_exit(void);
int nfwatch_flows_new(struct nfwatch_sub *sub, const struct nfwatch_flow_config *config);
bool nfwatch_flows_same(const struct nfwatch_sub *sub, const struct nfwatch_flow_config *config);
void nfwatch_flows_start(struct nfwatch_sub *sub);
void nfwatch_flow_add(struct nfwatch_sub *sub, const struct nfwatch_record *rec);
u64 nfwatch_flows_open(const struct nfwatch_sub *sub);
void nfwatch_flows_stop(struct nfwatch_sub *sub, bool flush);
void nfwatch_flows_free(struct nfwatch_sub *sub);

/* netlink.c */
unsigned int nfwatch_batch_capacity(unsigned int bytes, size_t record_size);
int nfwatch_genl_register(void);
void nfwatch_genl_unregister(void);
struct sk_buff *nfwatch_batch_new(gfp_t gfp, bool flows, struct nlattr **seq,
				  struct nlattr **lost, struct nlattr **records);
int nfwatch_batch_send(struct sock *sk, struct sk_buff *skb, struct nlattr *seq_attr, u64 seq,
		       struct nlattr *lost_attr, u64 lost, struct nlattr *records);
void nfwatch_notify_shutdown(struct sock *sk, const struct nfwatch_sub_stats *final);

/* selftest/, built with make SELFTEST=1 */
#ifdef CONFIG_NFWATCH_SELFTEST
bool nfwatch_selftest_prefixset(void);
bool nfwatch_selftest_hook(void);
#endif

#endif /* _NFWATCH_H */
