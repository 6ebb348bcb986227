// SPDX-License-Identifier: GPL-2.0
/*
 * A subscriber's set of source prefixes.
 *
 * Sets are built once per SUBSCRIBE and never changed after, so readers
 * need no lock: the hook finds the set under RCU and a new SUBSCRIBE swaps
 * the pointer. Every address is a 128-bit number (IPv4 in the top 32
 * bits); per family the prefixes are grouped by length, each group an
 * array of masked addresses with a hash table over it (linear probing, at
 * most half full). A lookup masks the address once per distinct length
 * and probes that group's table: O(L) for L distinct lengths, whatever the
 * number of prefixes. In front of the IPv4 tables, one bit per /16 says
 * whether any prefix reaches into it, so most IPv4 sources a set does not
 * hold cost one bit test: the hook asks about every packet sent, and most
 * are not watched. A set of a few IPv4 prefixes, the usual case, is also
 * kept as (network, mask) pairs that a lookup scans instead of hashing.
 * In front of the IPv6 tables, a bit per hash of the source's first S
 * bits, S the set's shortest IPv6 prefix length, set for each prefix: a
 * source no prefix holds costs one hash and one bit test, however many
 * lengths the set has (a host's other addresses differ from a watched one
 * in the last 64 bits or the /64, which S of 64 or 128 tells apart).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bitmap.h>
#include <linux/hash.h>
#include <linux/log2.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include "compat.h"
#include "nfwatch.h"

struct nfwatch_key {
	u64 hi;
	u64 lo;
};

struct nfwatch_group {
	u8 len;
	u8 hash_bits;		/* the group's table has 1 << hash_bits slots */
	u16 start;		/* its first key */
	u16 count;
	u32 slot_start;		/* its first slot */
};

struct nfwatch_table {
	unsigned int ngroups;
	struct nfwatch_group groups[129];
};

/* The IPv6 filter has 1 << NFWATCH_V6_FILTER_BITS bits. */
#define NFWATCH_V6_FILTER_BITS 12

/* IPv4 prefixes a set keeps as pairs to scan, at most. */
#define NFWATCH_V4_SCAN_MAX 8

struct nfwatch_prefix_set {
	struct nfwatch_v4_filter v4_filter;	/* first: nfwatch_v4_filter_passes() */
	unsigned int count;
	u16 *slots;			/* after keys[]: a key's index in its group + 1, 0 if empty */
	unsigned int v4_scan;		/* pairs in v4_net/v4_mask; 0: look up in the table */
	u32 v4_net[NFWATCH_V4_SCAN_MAX];
	u32 v4_mask[NFWATCH_V4_SCAN_MAX];
	u8 v6_filter_len;		/* S: the shortest IPv6 prefix's length */
	DECLARE_BITMAP(v6_filter, 1 << NFWATCH_V6_FILTER_BITS);
	struct nfwatch_table tables[2];	/* [0] IPv4, [1] IPv6 */
	struct rcu_head rcu;
	struct nfwatch_key keys[];
};

static_assert(offsetof(struct nfwatch_prefix_set, v4_filter) == 0);

/* A group of n keys takes 1 << order_base_2(2n) < 4n slots. */
#define NFWATCH_SLOTS_PER_KEY 4

/* Sorting entry: the key plus what to group by. */
struct nfwatch_entry {
	struct nfwatch_key key;
	u8 table;
	u8 len;
};

static unsigned int family_table(u8 family)
{
	return family == AF_INET6;
}

static struct nfwatch_key addr_key(u8 family, const u8 *addr)
{
	struct nfwatch_key key = {};

	if (family == AF_INET) {
		key.hi = (u64)get_unaligned_be32(addr) << 32;
	} else {
		key.hi = get_unaligned_be64(addr);
		key.lo = get_unaligned_be64(addr + 8);
	}
	return key;
}

static struct nfwatch_key mask_key(struct nfwatch_key key, unsigned int len)
{
	if (len == 0)
		return (struct nfwatch_key){};
	if (len <= 64)
		return (struct nfwatch_key){ .hi = key.hi & (~0ULL << (64 - len)) };
	key.lo &= ~0ULL << (128 - len);
	return key;
}

static u32 key_hash(const struct nfwatch_key *key, unsigned int bits)
{
	return hash_64(key->hi ^ (key->lo * GOLDEN_RATIO_64), bits);
}

static int key_cmp(const struct nfwatch_key *a, const struct nfwatch_key *b)
{
	if (a->hi != b->hi)
		return a->hi < b->hi ? -1 : 1;
	if (a->lo != b->lo)
		return a->lo < b->lo ? -1 : 1;
	return 0;
}

static int entry_cmp(const void *pa, const void *pb)
{
	const struct nfwatch_entry *a = pa, *b = pb;

	if (a->table != b->table)
		return a->table < b->table ? -1 : 1;
	if (a->len != b->len)
		return a->len > b->len ? -1 : 1;	/* longest first */
	return key_cmp(&a->key, &b->key);
}

bool nfwatch_prefix_has_host_bits(const struct nfwatch_prefix *prefix)
{
	struct nfwatch_key key = addr_key(prefix->family, prefix->addr);
	struct nfwatch_key masked = mask_key(key, prefix->len);

	return key_cmp(&key, &masked) != 0;
}

/* Sorted, de-duplicated entries, cut into per-(family, length) groups. */
static void set_fill(struct nfwatch_prefix_set *set, struct nfwatch_entry *entries,
		     unsigned int n)
{
	unsigned int i;

	sort(entries, n, sizeof(*entries), entry_cmp, NULL);
	for (i = 0; i < n; i++) {
		struct nfwatch_entry *e = &entries[i];
		struct nfwatch_table *t = &set->tables[e->table];
		struct nfwatch_group *g = t->ngroups ? &t->groups[t->ngroups - 1] : NULL;

		if (i && !entry_cmp(e, &entries[i - 1]))
			continue;
		if (!g || g->len != e->len) {
			g = &t->groups[t->ngroups++];
			g->len = e->len;
			g->start = set->count;
			g->count = 0;
		}
		set->keys[set->count++] = e->key;
		g->count++;
	}
}

/* Each group's hash table, over the keys set_fill() left. */
static void set_hash(struct nfwatch_prefix_set *set)
{
	unsigned int t, i, k, next = 0;

	for (t = 0; t < ARRAY_SIZE(set->tables); t++) {
		for (i = 0; i < set->tables[t].ngroups; i++) {
			struct nfwatch_group *g = &set->tables[t].groups[i];
			u16 *slots = &set->slots[next];
			u32 mask;

			g->hash_bits = order_base_2(2 * g->count);
			g->slot_start = next;
			mask = (1U << g->hash_bits) - 1;
			next += mask + 1;
			for (k = 0; k < g->count; k++) {
				u32 h = key_hash(&set->keys[g->start + k], g->hash_bits);

				while (slots[h])
					h = (h + 1) & mask;
				slots[h] = k + 1;
			}
		}
	}
}

/* The /16s each IPv4 prefix reaches into. */
static void set_v4_filter(struct nfwatch_prefix_set *set)
{
	const struct nfwatch_table *t = &set->tables[family_table(AF_INET)];
	unsigned int i, k;

	for (i = 0; i < t->ngroups; i++) {
		const struct nfwatch_group *g = &t->groups[i];
		unsigned int shift = NFWATCH_V4_FILTER_BITS - min_t(unsigned int, g->len,
								     NFWATCH_V4_FILTER_BITS);

		for (k = 0; k < g->count; k++) {
			unsigned int top = set->keys[g->start + k].hi >> (64 - NFWATCH_V4_FILTER_BITS);

			bitmap_set(set->v4_filter.bits, top, 1U << shift);
		}
	}
}

/* The hashes of the IPv6 prefixes' first S bits (groups are longest first). */
static void set_v6_filter(struct nfwatch_prefix_set *set)
{
	const struct nfwatch_table *t = &set->tables[family_table(AF_INET6)];
	unsigned int i, k;

	if (!t->ngroups)
		return;
	set->v6_filter_len = t->groups[t->ngroups - 1].len;
	for (i = 0; i < t->ngroups; i++) {
		const struct nfwatch_group *g = &t->groups[i];

		for (k = 0; k < g->count; k++) {
			struct nfwatch_key key = mask_key(set->keys[g->start + k],
							  set->v6_filter_len);

			__set_bit(key_hash(&key, NFWATCH_V6_FILTER_BITS), set->v6_filter);
		}
	}
}

/* A set's IPv4 prefixes as pairs, if it has no more than NFWATCH_V4_SCAN_MAX. */
static void set_v4_scan(struct nfwatch_prefix_set *set)
{
	const struct nfwatch_table *t = &set->tables[family_table(AF_INET)];
	unsigned int i, k;

	for (i = 0; i < t->ngroups; i++) {
		const struct nfwatch_group *g = &t->groups[i];

		if (set->v4_scan + g->count > NFWATCH_V4_SCAN_MAX) {
			set->v4_scan = 0;
			return;
		}
		for (k = 0; k < g->count; k++) {
			set->v4_net[set->v4_scan] = set->keys[g->start + k].hi >> 32;
			set->v4_mask[set->v4_scan++] = g->len ? ~0U << (32 - g->len) : 0;
		}
	}
}

/*
 * @prefixes are valid (lengths in range, no host bits); GFP_KERNEL context.
 * The set is charged to the caller's memory cgroup: any user namespace's
 * owner may subscribe in its own network namespace.
 */
struct nfwatch_prefix_set *nfwatch_set_build(const struct nfwatch_prefix *prefixes,
					     unsigned int n)
{
	struct nfwatch_prefix_set *set;
	struct nfwatch_entry *entries;
	unsigned int i;

	entries = kvmalloc_array(n, sizeof(*entries), GFP_KERNEL);
	if (!entries)
		return NULL;
	/* n <= NFWATCH_MAX_PREFIXES: no sum here can overflow. */
	set = kvzalloc(struct_size(set, keys, n) + n * NFWATCH_SLOTS_PER_KEY * sizeof(*set->slots),
		       GFP_KERNEL_ACCOUNT);
	if (!set)
		goto out;
	set->slots = (u16 *)&set->keys[n];
	for (i = 0; i < n; i++) {
		entries[i].table = family_table(prefixes[i].family);
		entries[i].len = prefixes[i].len;
		entries[i].key = addr_key(prefixes[i].family, prefixes[i].addr);
	}
	set_fill(set, entries, n);
	set_hash(set);
	set_v4_filter(set);
	set_v4_scan(set);
	set_v6_filter(set);
	atomic_inc(&nfwatch_live.sets);
out:
	kvfree(entries);
	return set;
}

unsigned int nfwatch_set_size(const struct nfwatch_prefix_set *set)
{
	return set->count;
}

/* Linear probing: the table is at most half full, so an empty slot ends a miss. */
static __always_inline bool group_contains(const struct nfwatch_prefix_set *set,
					   const struct nfwatch_group *g,
					   const struct nfwatch_key *key)
{
	const struct nfwatch_key *keys = &set->keys[g->start];
	const u16 *slots = &set->slots[g->slot_start];
	u32 mask = (1U << g->hash_bits) - 1;
	u32 h = key_hash(key, g->hash_bits);
	unsigned int k;

	while ((k = slots[h])) {
		if (keys[k - 1].hi == key->hi && keys[k - 1].lo == key->lo)
			return true;
		h = (h + 1) & mask;
	}
	return false;
}

/* Inlined into each family's lookup: for IPv4 the key's low half is 0. */
static __always_inline bool table_contains(const struct nfwatch_prefix_set *set,
					   const struct nfwatch_table *t, struct nfwatch_key key)
{
	unsigned int i;

	for (i = 0; i < t->ngroups; i++) {
		const struct nfwatch_group *g = &t->groups[i];
		struct nfwatch_key masked = mask_key(key, g->len);

		if (group_contains(set, g, &masked))
			return true;
	}
	return false;
}

/* Out of line: the scan's callers need no registers saved. */
static noinline bool table_contains_v4(const struct nfwatch_prefix_set *set, u32 host)
{
	return table_contains(set, &set->tables[family_table(AF_INET)],
			      (struct nfwatch_key){ .hi = (u64)host << 32 });
}

/* The hook asks this about every IPv4 packet sent. */
bool nfwatch_set_contains_v4(const struct nfwatch_prefix_set *set, __be32 addr)
{
	u32 host = be32_to_cpu(addr);
	unsigned int i;

	if (!nfwatch_v4_filter_passes(set, host))
		return false;
	if (set->v4_scan) {
		for (i = 0; i < set->v4_scan; i++)
			if ((host & set->v4_mask[i]) == set->v4_net[i])
				return true;
		return false;
	}
	return table_contains_v4(set, host);
}

/* The hook asks this about every IPv6 packet sent. */
static bool set_contains_v6(const struct nfwatch_prefix_set *set, const u8 *addr)
{
	const struct nfwatch_table *t = &set->tables[family_table(AF_INET6)];
	struct nfwatch_key key = addr_key(AF_INET6, addr);
	struct nfwatch_key first = mask_key(key, set->v6_filter_len);

	if (!t->ngroups ||
	    !test_bit(key_hash(&first, NFWATCH_V6_FILTER_BITS), set->v6_filter))
		return false;
	return table_contains(set, t, key);
}

bool nfwatch_set_contains(const struct nfwatch_prefix_set *set, u8 family,
			  const u8 *addr)
{
	if (family == AF_INET)
		return nfwatch_set_contains_v4(set, get_unaligned((const __be32 *)addr));
	return set_contains_v6(set, addr);
}

void nfwatch_set_free(struct nfwatch_prefix_set *set)
{
	if (!set)
		return;
	kvfree(set);
	atomic_dec(&nfwatch_live.sets);
}

static void set_free_rcu(struct rcu_head *head)
{
	nfwatch_set_free(container_of(head, struct nfwatch_prefix_set, rcu));
}

/*
 * Once no hook can still hold @set; the module's exit waits with
 * rcu_barrier(). Not kvfree_rcu(): it encodes the head's offset in 12
 * bits, and the head lies behind the IPv4 filter, which comes first.
 */
void nfwatch_set_free_rcu(struct nfwatch_prefix_set *set)
{
	call_rcu(&set->rcu, set_free_rcu);
}

#ifdef CONFIG_NFWATCH_SELFTEST
#include "selftest/prefixset.c"
#endif
