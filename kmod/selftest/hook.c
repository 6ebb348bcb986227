// SPDX-License-Identifier: GPL-2.0
/*
 * Self-tests of the hook, run at load with selftest=1. Included by hook.c.
 *
 * The IPv4 hook on skbs built here, for a subscriber of the test's own
 * that watches 10.1.2.3 (no socket holds it; its batch is never sent).
 * The hook gets that source's UDP packet whole in the skb's head, then
 * split between the head and a page at every offset, so the source and
 * the headers are copied out of the page. It also gets the packet cut
 * short, which must count as malformed and make no record. Each record
 * is read back from the open batch. First, the copy of a device's name
 * into a record, against strscpy_pad().
 */
#include <linux/pid_namespace.h>
#include <linux/user_namespace.h>

/* 10.1.2.3:1111 -> 10.9.9.9:2222, UDP, 8 bytes of payload. */
static const u8 selftest_udp4[] = {
	0x45, 0x00, 0x00, 0x24, 0x00, 0x01, 0x00, 0x00,	/* IPv4, 36 bytes */
	0x40, IPPROTO_UDP, 0x00, 0x00,
	10, 1, 2, 3,
	10, 9, 9, 9,
	0x04, 0x57, 0x08, 0xae, 0x00, 0x10, 0x00, 0x00,	/* ports 1111, 2222 */
	'n', 'f', 'w', 'a', 't', 'c', 'h', '!',
};

/*
 * An skb holding the first @head bytes of selftest_udp4 in its head and,
 * if @rest, the others in a page frag.
 */
static struct sk_buff *selftest_skb(unsigned int head, bool rest)
{
	unsigned int tail = sizeof(selftest_udp4) - head;
	struct sk_buff *skb = alloc_skb(64 + head, GFP_KERNEL);
	struct page *page;

	if (!skb)
		return NULL;
	skb_reserve(skb, 64);
	skb_reset_network_header(skb);
	skb_put_data(skb, selftest_udp4, head);
	if (!rest || !tail)
		return skb;
	page = alloc_page(GFP_KERNEL);
	if (!page) {
		kfree_skb(skb);
		return NULL;
	}
	memcpy(page_address(page), selftest_udp4 + head, tail);
	skb_add_rx_frag(skb, 0, page, 0, tail, PAGE_SIZE);
	return skb;
}

static u64 selftest_malformed(struct nfwatch_net *nn)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += u64_stats_read(&per_cpu_ptr(nn->stats, cpu)->malformed);
	return sum;
}

/* False unless the open batch holds just the record of selftest_udp4. */
static bool selftest_record_ok(const struct nfwatch_sub *sub)
{
	const struct nfwatch_record *rec;

	/* No record taken: no slot to read. */
	if (sub->batch_count != 1)
		return false;
	rec = (const struct nfwatch_record *)sub->slot_next - 1;
	return rec->family == AF_INET && !memcmp(rec->saddr, selftest_udp4 + 12, 4) &&
	       !memcmp(rec->daddr, selftest_udp4 + 16, 4) && rec->proto == IPPROTO_UDP &&
	       rec->sport == 1111 && rec->dport == 2222 && rec->flags == NFWATCH_F_PORTS &&
	       rec->len == sizeof(selftest_udp4) && rec->segs == 1;
}

/* A subscriber of the test's own, with no socket: its batches are never sent. */
static struct nfwatch_sub *selftest_sub(struct nfwatch_net *nn, struct nfwatch_prefix_set *set)
{
	struct nfwatch_sub *sub = kzalloc(sizeof(*sub), GFP_KERNEL);

	if (!sub)
		return NULL;
	sub->nn = nn;
	sub->net = &init_net;
	sub->user_ns = &init_user_ns;
	sub->pid_ns = &init_pid_ns;
	RCU_INIT_POINTER(sub->set, set);
	nfwatch_delivery_init(sub);
	list_add_tail_rcu(&sub->node, &nn->subs);
	return sub;
}

/*
 * One skb through the hook: recorded, or if cut short (!@rest) counted as
 * malformed. Bottom halves stay off until the batch's flush timer is
 * cancelled: the timer, pinned to this CPU and run in its softirq, would
 * send the batch to the socket this subscriber does not have.
 */
static bool selftest_hook_skb(struct nfwatch_net *nn, struct nfwatch_prefix_set *set,
			      unsigned int head, bool rest)
{
	struct nf_hook_state state = {
		.hook = NF_INET_LOCAL_OUT,
		.pf = NFPROTO_IPV4,
		.net = &init_net,
	};
	u64 malformed = selftest_malformed(nn);
	struct sk_buff *skb = selftest_skb(head, rest);
	struct nfwatch_sub *sub = selftest_sub(nn, set);
	bool ok = false;

	if (!skb || !sub)
		goto out;
	local_bh_disable();
	rcu_read_lock();
	nfwatch_hook_ipv4(nn, skb, &state);
	rcu_read_unlock();
	if (rest)
		ok = selftest_record_ok(sub);
	else
		ok = !sub->batch && selftest_malformed(nn) == malformed + 1;
	hrtimer_try_to_cancel(&sub->flush_timer);
	local_bh_enable();
	list_del_rcu(&sub->node);
	nfwatch_delivery_stop(sub, false);
	if (!ok)
		pr_err("IPv4 hook wrong on %u bytes in the head%s\n", head,
		       rest ? " and the rest in a page" : ", cut short");
out:
	kfree(sub);
	consume_skb(skb);
	return ok;
}

static bool selftest_ipv4_skbs(void)
{
	const struct nfwatch_prefix watched = {
		.family = AF_INET, .len = 32, .addr = { 10, 1, 2, 3 },
	};
	struct nfwatch_net *nn = kzalloc(sizeof(*nn), GFP_KERNEL);
	struct nfwatch_prefix_set *set = nfwatch_set_build(&watched, 1);
	unsigned int head;
	bool ok = false;

	if (!nn || !set)
		goto out;
	if (nfwatch_subs_init(nn, &init_net))
		goto out;

	/* Split at every offset; cut short before, inside and after the source. */
	ok = true;
	for (head = 0; head <= sizeof(selftest_udp4); head++) {
		ok &= selftest_hook_skb(nn, set, head, true);
		if (head < 20)
			ok &= selftest_hook_skb(nn, set, head, false);
	}
out:
	nfwatch_set_free(set);
	if (nn)
		free_percpu(nn->stats);
	kfree(nn);
	return ok;
}

/*
 * copy_ifname() on names of every length, each over stale bytes and into a
 * record's field full of others, and on a name with no NUL (being renamed):
 * as strscpy_pad() gives them.
 */
static bool selftest_ifnames(void)
{
	char name[IFNAMSIZ], got[IFNAMSIZ], want[IFNAMSIZ];
	unsigned int len;
	bool ok = true;

	for (len = 0; len <= IFNAMSIZ; len++) {
		memset(name, 0xa5, sizeof(name));
		memset(name, 'e', min_t(unsigned int, len, IFNAMSIZ));
		if (len < IFNAMSIZ)
			name[len] = '\0';
		memset(got, 0x5a, sizeof(got));
		copy_ifname(got, name);
		strscpy_pad(want, name, sizeof(want));
		if (memcmp(got, want, sizeof(got))) {
			pr_err("device name of %u bytes copied wrong\n", len);
			ok = false;
		}
	}
	return ok;
}

bool nfwatch_selftest_hook(void)
{
	bool ok = selftest_ifnames() & selftest_ipv4_skbs();

	pr_info("hook self-test %s\n", ok ? "passed" : "FAILED");
	return ok;
}
