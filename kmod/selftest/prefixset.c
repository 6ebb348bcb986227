// SPDX-License-Identifier: GPL-2.0
/*
 * Self-test of the prefix set, run at load with selftest=1: random sets
 * against a linear reference, plus the edges (/0, /32, /64, /65, /128,
 * duplicates, IPv4 and IPv6 kept apart). Included by prefixset.c.
 */
#include <linux/random.h>

static bool ref_contains(const struct nfwatch_prefix *p, unsigned int n, u8 family,
			 const u8 *addr)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		struct nfwatch_key a, b;

		if (p[i].family != family)
			continue;
		a = mask_key(addr_key(family, addr), p[i].len);
		b = addr_key(family, p[i].addr);
		if (!key_cmp(&a, &b))
			return true;
	}
	return false;
}

/* A random prefix; an IPv4 one of length @v4_len if that is 0..32. */
static void random_prefix(struct nfwatch_prefix *p, bool nearby, int v4_len)
{
	struct nfwatch_key k;

	p->family = v4_len >= 0 || get_random_u32() & 1 ? AF_INET : AF_INET6;
	p->len = v4_len >= 0 ? v4_len : get_random_u32() % (p->family == AF_INET ? 33 : 129);
	get_random_bytes(p->addr, sizeof(p->addr));
	if (nearby)	/* share a top byte so lookups hit often */
		p->addr[0] = 10;
	if (p->family == AF_INET)
		memset(p->addr + 4, 0, 12);
	k = mask_key(addr_key(p->family, p->addr), p->len);
	if (p->family == AF_INET) {
		put_unaligned_be32(k.hi >> 32, p->addr);
	} else {
		put_unaligned_be64(k.hi, p->addr);
		put_unaligned_be64(k.lo, p->addr + 8);
	}
}

static bool selftest_random(unsigned int n, unsigned int lookups, int v4_len)
{
	struct nfwatch_prefix *p = kvcalloc(n, sizeof(*p), GFP_KERNEL);
	struct nfwatch_prefix_set *set = NULL;
	bool ok = false;
	unsigned int i;

	if (!p)
		goto out;
	for (i = 0; i < n; i++)
		random_prefix(&p[i], true, v4_len);
	if (n > 1)
		p[n - 1] = p[0];	/* a duplicate */
	set = nfwatch_set_build(p, n);
	if (!set)
		goto out;
	for (i = 0; i < lookups; i++) {
		struct nfwatch_prefix probe;

		if (i < n) {
			probe = p[i];	/* every member's own address must match */
		} else {
			random_prefix(&probe, true, v4_len);
			get_random_bytes(probe.addr + 1, 15);
			if (probe.family == AF_INET)
				memset(probe.addr + 4, 0, 12);
		}
		if (nfwatch_set_contains(set, probe.family, probe.addr) !=
		    ref_contains(p, n, probe.family, probe.addr)) {
			pr_err("self-test: lookup %u disagrees with the reference\n", i);
			goto out;
		}
	}
	ok = true;
out:
	nfwatch_set_free(set);
	kvfree(p);
	return ok;
}

static bool selftest_edges(void)
{
	static const struct nfwatch_prefix p[] = {
		{ .family = AF_INET, .len = 0 },
		{ .family = AF_INET6, .len = 65, .addr = { 0xfd, [8] = 0x80 } },
		{ .family = AF_INET6, .len = 128, .addr = { 0xfe, [15] = 1 } },
	};
	static const u8 v4[16] = { 192, 0, 2, 1 };
	static const u8 in65[16] = { 0xfd, [8] = 0xff, [15] = 9 };
	static const u8 out65[16] = { 0xfd, [8] = 0x7f };
	static const u8 host[16] = { 0xfe, [15] = 1 };
	static const u8 host2[16] = { 0xfe, [15] = 2 };
	struct nfwatch_prefix_set *set = nfwatch_set_build(p, ARRAY_SIZE(p));
	bool ok;

	if (!set)
		return false;
	ok = nfwatch_set_contains(set, AF_INET, v4) &&
	     nfwatch_set_contains(set, AF_INET6, in65) &&
	     !nfwatch_set_contains(set, AF_INET6, out65) &&
	     nfwatch_set_contains(set, AF_INET6, host) &&
	     !nfwatch_set_contains(set, AF_INET6, host2) &&
	     nfwatch_set_size(set) == 3;
	nfwatch_set_free(set);
	return ok;
}

bool nfwatch_selftest_prefixset(void)
{
	/*
	 * Random lengths; the largest IPv4 set that is scanned and the smallest
	 * that is hashed (n - 1 distinct prefixes: the last is a duplicate);
	 * then full tables of one length (long probe runs).
	 */
	bool ok = selftest_edges() && selftest_random(1, 1000, -1) &&
		  selftest_random(NFWATCH_V4_SCAN_MAX + 1, 20000, 24) &&
		  selftest_random(NFWATCH_V4_SCAN_MAX + 2, 20000, 24) &&
		  selftest_random(64, 20000, -1) &&
		  selftest_random(NFWATCH_MAX_PREFIXES, 20000, -1) &&
		  selftest_random(NFWATCH_MAX_PREFIXES, 20000, 24) &&
		  selftest_random(NFWATCH_MAX_PREFIXES, 20000, 32);

	pr_info("prefix set self-test %s\n", ok ? "passed" : "FAILED");
	return ok;
}
