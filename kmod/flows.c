// SPDX-License-Identifier: GPL-2.0
/*
 * Flows: a subscriber's packets aggregated in the kernel (NFWATCH_A_FLOWS).
 *
 * A packet of an open flow adds to its counters and sends nothing; a flow
 * goes to the subscriber, as one struct nfwatch_flow in a batch, when it
 * ends: idle for the inactive timeout, at the active timeout, evicted for
 * a new flow when the table is full (the least recently used), or when the
 * subscription ends. Every packet matched is in exactly one flow, which is
 * delivered or counted as lost with its packets: matched == delivered +
 * lost + those of the flows still open.
 *
 * The table is the subscriber's: a hash of its flows and two lists, by
 * last use (idle and eviction order) and by start (active order), all
 * under sub->lock, which the hook takes anyway. A delayed work ends the
 * flows past their timeouts. Entries are charged to the subscriber's
 * memory cgroup, as its ring's pages are, and come from GFP_NOWAIT: when
 * none can be had, the least recently used flow gives its place.
 */
#include <linux/bits.h>
#include <linux/jhash.h>
#include <linux/jiffies.h>
#include <linux/log2.h>
#include <linux/random.h>
#include <linux/slab.h>
#include <linux/workqueue.h>
#include "compat.h"
#include "nfwatch.h"

struct nfwatch_flow_entry {
	struct hlist_node hash_node;
	struct list_head lru;		/* by last packet, oldest first */
	struct list_head age;		/* by first packet, oldest first */
	unsigned long first;		/* jiffies of the first packet */
	unsigned long last;		/* and of the last */
	struct nfwatch_flow flow;
};

struct nfwatch_flows {
	struct nfwatch_flow_config config;
	unsigned long inactive;		/* jiffies */
	unsigned long active;
	struct hlist_head *buckets;
	u32 mask;
	u32 seed;
	unsigned int count;
	struct list_head lru;
	struct list_head age;
	struct delayed_work expire;
	struct nfwatch_sub *sub;
};

static struct kmem_cache *nfwatch_flow_cache __read_mostly;

/* Most flows one lock hold ends: the hook waits on the lock meanwhile. */
#define NFWATCH_FLOWS_BUDGET 512

#define NFWATCH_RECORD_WORDS (sizeof(struct nfwatch_record) / sizeof(u64))
#define RECORD_WORD(field) (offsetof(struct nfwatch_record, field) / sizeof(u64))

/* The bits of @field in the u64 word of the record that holds it. */
#define FIELD_BITS_AT(field, shift)						\
	(GENMASK_ULL(8 * sizeof_field(struct nfwatch_record, field) - 1, 0) << (shift))
#ifdef __LITTLE_ENDIAN
#define FIELD_BITS(field)							\
	FIELD_BITS_AT(field, 8 * (offsetof(struct nfwatch_record, field) % 8))
#else
#define FIELD_BITS(field)							\
	FIELD_BITS_AT(field, 8 * (8 - offsetof(struct nfwatch_record, field) % 8 -	\
				  sizeof_field(struct nfwatch_record, field)))
#endif

/*
 * The bits of a record that are not a flow's key: ts_ns, len, segs and
 * sock_ino, each in a word of its own (the padding is always 0). Records
 * are compared a word at a time under this constant mask: the hook does it
 * for every packet, and the kernel's memcmp() goes a byte at a time.
 */
static const u64 not_key[NFWATCH_RECORD_WORDS] = {
	[RECORD_WORD(ts_ns)] = FIELD_BITS(ts_ns),
	[RECORD_WORD(len)] = FIELD_BITS(len),
	[RECORD_WORD(segs)] = FIELD_BITS(segs),
	[RECORD_WORD(sock_ino)] = FIELD_BITS(sock_ino),
};

/* Records are u64-aligned: in the hook's stack and in a flow entry. */
static bool key_equal(const struct nfwatch_record *a, const struct nfwatch_record *b)
{
	const u64 *x = (const u64 *)a, *y = (const u64 *)b;

	BUILD_BUG_ON(sizeof(struct nfwatch_record) != 17 * sizeof(u64));
	BUILD_BUG_ON(RECORD_WORD(ts_ns) == RECORD_WORD(len) ||
		     RECORD_WORD(len) == RECORD_WORD(segs) ||
		     RECORD_WORD(segs) == RECORD_WORD(sock_ino));
	/* Spelled out: GCC does not unroll the loop, and a word of the key is three instructions. */
#define KEY_DIFF(i) ((x[i] ^ y[i]) & ~not_key[i])
	return !(KEY_DIFF(0) | KEY_DIFF(1) | KEY_DIFF(2) | KEY_DIFF(3) | KEY_DIFF(4) |
		 KEY_DIFF(5) | KEY_DIFF(6) | KEY_DIFF(7) | KEY_DIFF(8) | KEY_DIFF(9) |
		 KEY_DIFF(10) | KEY_DIFF(11) | KEY_DIFF(12) | KEY_DIFF(13) | KEY_DIFF(14) |
		 KEY_DIFF(15) | KEY_DIFF(16));
#undef KEY_DIFF
}

/*
 * From the addresses, ports (or ICMP type and code), protocol and device:
 * the key's other fields rarely tell flows of these apart, and key_equal()
 * does. Seeded per table, so senders cannot aim at one chain.
 */
static u32 key_hash(const struct nfwatch_flows *flows, const struct nfwatch_record *rec)
{
	const u32 *src = (const u32 *)rec->saddr, *dst = (const u32 *)rec->daddr;

	return jhash_3words(src[0] ^ src[1] ^ src[2] ^ src[3],
			    dst[0] ^ dst[1] ^ dst[2] ^ dst[3] ^ rec->ifindex,
			    ((u32)rec->sport << 16 | rec->dport) ^
			    ((u32)rec->proto << 16 | rec->icmp_type << 8 | rec->icmp_code),
			    flows->seed);
}

/* How often the timeouts are looked at: a quarter of the shorter, 0.1 s to 1 s. */
static unsigned long expire_period(const struct nfwatch_flows *flows)
{
	return clamp(min(flows->inactive, flows->active) / 4, HZ / 10, (unsigned long)HZ);
}

/* Under sub->lock: @e out of the table; the caller frees or reuses it. */
static void flow_unlink(struct nfwatch_sub *sub, struct nfwatch_flow_entry *e)
{
	hlist_del(&e->hash_node);
	list_del(&e->lru);
	list_del(&e->age);
	sub->flows->count--;
	sub->stats.flows++;
}

/* Under sub->lock: @e's flow to the subscriber, ended for @reason, and @e unlinked. */
static void flow_end(struct nfwatch_sub *sub, struct nfwatch_flow_entry *e, u8 reason)
{
	u32 sends = e->flow.sends;
	struct nfwatch_flow *slot;

	e->flow.end_reason = reason;
	slot = nfwatch_batch_slot(sub, sends);
	if (slot) {
		memcpy(slot, &e->flow, sizeof(*slot));
		nfwatch_batch_commit(sub, sends);
	}
	if (reason == NFWATCH_END_EVICTED)
		sub->stats.flows_evicted++;
	flow_unlink(sub, e);
}

static void entry_free(struct nfwatch_flow_entry *e)
{
	kmem_cache_free(nfwatch_flow_cache, e);
	atomic_dec(&nfwatch_live.flows);
}

/* Under sub->lock: @e holds @rec's packet as a new flow's first. */
static void flow_start(struct nfwatch_flows *flows, struct nfwatch_flow_entry *e,
		       const struct nfwatch_record *rec, u32 hash)
{
	e->first = jiffies;
	e->last = e->first;
	memset(&e->flow, 0, offsetof(struct nfwatch_flow, first));
	e->flow.first = *rec;
	e->flow.last_ns = rec->ts_ns;
	e->flow.packets = rec->segs;
	e->flow.octets = rec->len;
	e->flow.sends = 1;
	hlist_add_head(&e->hash_node, &flows->buckets[hash & flows->mask]);
	list_add_tail(&e->lru, &flows->lru);
	list_add_tail(&e->age, &flows->age);
	flows->count++;
}

/*
 * Under sub->lock: an entry for a new flow. The table full or no memory to
 * be had: the least recently used flow ends (evicted) and gives its entry.
 */
static struct nfwatch_flow_entry *entry_get(struct nfwatch_sub *sub)
{
	struct nfwatch_flows *flows = sub->flows;
	struct nfwatch_flow_entry *e = NULL;

	if (flows->count < flows->config.max_flows) {
		struct mem_cgroup *old = nfwatch_set_active_memcg(sub->memcg);

		e = kmem_cache_alloc(nfwatch_flow_cache,
				     GFP_NOWAIT | __GFP_NOWARN | __GFP_NOMEMALLOC |
				     NFWATCH_GFP_ACCOUNT);
		nfwatch_set_active_memcg(old);
		if (e) {
			atomic_inc(&nfwatch_live.flows);
			return e;
		}
	}
	e = list_first_entry_or_null(&flows->lru, struct nfwatch_flow_entry, lru);
	if (e)
		flow_end(sub, e, NFWATCH_END_EVICTED);
	return e;
}

/* Under sub->lock, from the hook: @rec (fitted to the subscriber) into its flow. */
void nfwatch_flow_add(struct nfwatch_sub *sub, const struct nfwatch_record *rec)
{
	struct nfwatch_flows *flows = sub->flows;
	u32 hash = key_hash(flows, rec);
	struct nfwatch_flow_entry *e;

	hlist_for_each_entry(e, &flows->buckets[hash & flows->mask], hash_node) {
		if (!key_equal(&e->flow.first, rec))
			continue;
		if (time_after_eq(jiffies, e->first + flows->active)) {
			/* This packet starts the flow's next record. */
			flow_end(sub, e, NFWATCH_END_ACTIVE);
			flow_start(flows, e, rec, hash);
			return;
		}
		e->last = jiffies;
		e->flow.last_ns = rec->ts_ns;
		e->flow.packets += rec->segs;
		e->flow.octets += rec->len;
		e->flow.sends++;
		/* A flood is one flow: already the most recently used. */
		if (!list_is_last(&e->lru, &flows->lru))
			list_move_tail(&e->lru, &flows->lru);
		return;
	}
	e = entry_get(sub);
	if (!e) {
		nfwatch_count_lost(sub, 1);
		return;
	}
	flow_start(flows, e, rec, hash);
}

/*
 * Under sub->lock: ends the flows past a timeout, at most @budget of them;
 * false when some may be left.
 */
static bool flows_expire_some(struct nfwatch_sub *sub, unsigned int budget)
{
	struct nfwatch_flows *flows = sub->flows;
	unsigned long now = jiffies;
	struct nfwatch_flow_entry *e;

	while (budget) {
		e = list_first_entry_or_null(&flows->lru, struct nfwatch_flow_entry, lru);
		if (!e || time_before(now, e->last + flows->inactive))
			break;
		flow_end(sub, e, NFWATCH_END_IDLE);
		entry_free(e);
		budget--;
	}
	while (budget) {
		e = list_first_entry_or_null(&flows->age, struct nfwatch_flow_entry, age);
		if (!e || time_before(now, e->first + flows->active))
			break;
		flow_end(sub, e, NFWATCH_END_ACTIVE);
		entry_free(e);
		budget--;
	}
	return budget;
}

static void flows_expire(struct work_struct *work)
{
	struct nfwatch_flows *flows = container_of(to_delayed_work(work), struct nfwatch_flows,
						   expire);
	struct nfwatch_sub *sub = flows->sub;
	bool done = false;

	while (!done) {
		spin_lock_bh(&sub->lock);
		if (sub->dead) {
			spin_unlock_bh(&sub->lock);
			return;
		}
		done = flows_expire_some(sub, NFWATCH_FLOWS_BUDGET);
		spin_unlock_bh(&sub->lock);
		cond_resched();
	}
	queue_delayed_work(system_power_efficient_wq, &flows->expire, expire_period(flows));
}

/* In SUBSCRIBE, charged to the requester as the rest of the subscriber is. */
int nfwatch_flows_new(struct nfwatch_sub *sub, const struct nfwatch_flow_config *config)
{
	/* Half as many buckets as flows: two flows a chain when full. */
	unsigned int nbuckets = roundup_pow_of_two(max(config->max_flows / 2, 16U));
	struct nfwatch_flows *flows = kzalloc(sizeof(*flows), GFP_KERNEL_ACCOUNT);

	if (!flows)
		return -ENOMEM;
	flows->buckets = kvcalloc(nbuckets, sizeof(*flows->buckets), GFP_KERNEL_ACCOUNT);
	if (!flows->buckets) {
		kfree(flows);
		return -ENOMEM;
	}
	flows->config = *config;
	flows->inactive = max(msecs_to_jiffies(config->inactive_ms), 1UL);
	flows->active = max(msecs_to_jiffies(config->active_ms), 1UL);
	flows->mask = nbuckets - 1;
	flows->seed = get_random_u32();
	INIT_LIST_HEAD(&flows->lru);
	INIT_LIST_HEAD(&flows->age);
	INIT_DELAYED_WORK(&flows->expire, flows_expire);
	flows->sub = sub;
	sub->flows = flows;
	return 0;
}

bool nfwatch_flows_same(const struct nfwatch_sub *sub, const struct nfwatch_flow_config *config)
{
	return !memcmp(&sub->flows->config, config, sizeof(*config));
}

/* @sub is in force: the timeouts start being looked at. */
void nfwatch_flows_start(struct nfwatch_sub *sub)
{
	struct nfwatch_flows *flows = sub->flows;

	queue_delayed_work(system_power_efficient_wq, &flows->expire, expire_period(flows));
}

/* Under sub->lock. */
u64 nfwatch_flows_open(const struct nfwatch_sub *sub)
{
	return sub->flows ? sub->flows->count : 0;
}

/*
 * Process context, sub->dead set (no hook touches the table any more) and
 * the flush timer stopped: every open flow goes to the subscriber
 * (@flush: ended by the subscription) or is counted as lost with its
 * packets, and the entries are freed.
 */
void nfwatch_flows_stop(struct nfwatch_sub *sub, bool flush)
{
	struct nfwatch_flows *flows = sub->flows;
	struct nfwatch_flow_entry *e;

	cancel_delayed_work_sync(&flows->expire);
	for (;;) {
		unsigned int budget = NFWATCH_FLOWS_BUDGET;

		spin_lock_bh(&sub->lock);
		while (budget-- &&
		       (e = list_first_entry_or_null(&flows->age, struct nfwatch_flow_entry,
						     age))) {
			if (flush) {
				flow_end(sub, e, NFWATCH_END_FORCED);
			} else {
				nfwatch_count_lost(sub, e->flow.sends);
				flow_unlink(sub, e);
			}
			entry_free(e);
		}
		e = list_first_entry_or_null(&flows->age, struct nfwatch_flow_entry, age);
		spin_unlock_bh(&sub->lock);
		if (!e)
			break;
		cond_resched();
	}
	kvfree(flows->buckets);
	flows->buckets = NULL;
}

/* After a grace period: no hook holds @sub. */
void nfwatch_flows_free(struct nfwatch_sub *sub)
{
	kfree(sub->flows);
}

int nfwatch_flows_init(void)
{
	nfwatch_flow_cache = KMEM_CACHE(nfwatch_flow_entry, 0);
	return nfwatch_flow_cache ? 0 : -ENOMEM;
}

void nfwatch_flows_exit(void)
{
	kmem_cache_destroy(nfwatch_flow_cache);
}
