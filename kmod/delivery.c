// SPDX-License-Identifier: GPL-2.0
/*
 * Batching records into netlink messages for one subscriber.
 *
 * A batch is an skb whose head holds the message's headers and whose page
 * frags hold the records, written in place (none straddles two pages).
 * The pages come from the subscriber's ring and go back to it when the
 * subscriber has read the batch: a page reused needs neither the page
 * allocator nor the zeroing init_on_alloc gives every new one, and a page
 * is order 0, where a batch in one piece took an order-3 allocation in
 * atomic context, the kind that fails first when memory is fragmented.
 *
 * The hook appends to the subscriber's open batch; a batch goes out when
 * it is full or when flush_interval_us has passed since its first record
 * (a soft hrtimer, pinned to the CPU that opened the batch). Sending never waits: if the subscriber's receive
 * buffer has no room the batch is dropped, its records are counted as
 * lost, and that count rides along in the next batch that gets through.
 * Each batch attempted takes the next sequence number, so a dropped one
 * also shows as a gap.
 */
#include <linux/hrtimer.h>
#include <linux/memcontrol.h>
#include <linux/pid_namespace.h>
#include <linux/sched.h>
#include <linux/user_namespace.h>
#include <net/sock.h>
#include "compat.h"
#include "nfwatch.h"

/* Under sub->lock: @packets matched that will not be delivered. */
void nfwatch_count_lost(struct nfwatch_sub *sub, u64 packets)
{
	sub->stats.lost += packets;
	sub->lost_unreported += packets;
	nfwatch_ns_count(sub->nn, lost, packets);
}

/* What a batch holds: packets' records, or flows'. */
static size_t record_size(const struct nfwatch_sub *sub)
{
	return sub->flows ? sizeof(struct nfwatch_flow) : sizeof(struct nfwatch_record);
}

static unsigned int batch_capacity(const struct nfwatch_sub *sub)
{
	return sub->flows ? nfwatch_batch_flows : nfwatch_batch_records;
}

/*
 * Room the receive queue keeps for replies (an UNSUBSCRIBE's final counters
 * and its ack, a SHUTDOWN). Netlink drops a message to a socket whose queue
 * is over its rcvbuf, and after such a drop it drops everything until the
 * queue is read empty; so batches stop short of filling it and never cause
 * a drop themselves.
 */
#define NFWATCH_REPLY_ROOM (2 * SKB_TRUESIZE(NLMSG_GOODSIZE))

static bool batch_fits(const struct sock *sk, const struct sk_buff *skb)
{
	unsigned int queued = atomic_read(&sk->sk_rmem_alloc);

	return queued + skb->truesize + NFWATCH_REPLY_ROOM <= READ_ONCE(sk->sk_rcvbuf);
}

/*
 * Under sub->lock: the records written into the open batch's last page go
 * into its frag's size and the skb's lengths. Once per page (when the next
 * is added, and before the batch is sent), so a record only moves
 * sub->slot_next on.
 */
static void batch_close_page(struct nfwatch_sub *sub, struct sk_buff *skb)
{
	struct skb_shared_info *shinfo = skb_shinfo(skb);
	unsigned int bytes;

	if (!shinfo->nr_frags)
		return;
	bytes = sub->slot_next - sub->slot_page;
	skb_frag_size_add(&shinfo->frags[shinfo->nr_frags - 1], bytes);
	skb->len += bytes;
	skb->data_len += bytes;
}

/*
 * Under sub->lock: whether batches may go to the subscriber's socket.
 * Netlink drops a message (a reply, an ack) to a socket over its rcvbuf
 * and then drops everything netlink_unicast() sends it until a read finds
 * its queue empty. Batches do not go through that check: sent while the
 * reader stays behind they would keep the queue from ever emptying, and
 * every later reply would be lost. So after any drop on the socket, no
 * batch goes until the queue has been seen empty, with nothing being read
 * from it, at two sends at least a jiffy apart: by then the read that
 * emptied it has returned, clearing netlink's congestion.
 */
static bool socket_open_for_batches(struct nfwatch_sub *sub)
{
	struct sock *sk = sub->sk;
	int drops = nfwatch_sk_drops(sk);

	if (drops != sub->sk_drops) {
		sub->sk_drops = drops;
		sub->draining = true;
		sub->empty_since = 0;
	}
	if (!sub->draining)
		return true;
	if (!skb_queue_empty_lockless(&sk->sk_receive_queue) || atomic_read(&sk->sk_rmem_alloc)) {
		sub->empty_since = 0;
		return false;
	}
	if (!sub->empty_since) {
		sub->empty_since = jiffies | 1;	/* never 0, which means "not seen" */
		return false;
	}
	if (!time_after(jiffies, sub->empty_since))
		return false;
	sub->draining = false;
	return true;
}

/* Under sub->lock. */
static void batch_send(struct nfwatch_sub *sub)
{
	struct sk_buff *skb = sub->batch;
	u32 count = sub->batch_packets;
	int err;

	if (!skb)
		return;
	batch_close_page(sub, skb);
	sub->batch = NULL;
	sub->batch_count = 0;
	sub->batch_packets = 0;
	atomic_dec(&nfwatch_live.batches);
	++sub->seq;
	if (!socket_open_for_batches(sub) || !batch_fits(sub->sk, skb)) {
		kfree_skb(skb);
		nfwatch_count_lost(sub, count);
		return;
	}
	err = nfwatch_batch_send(sub->sk, skb, sub->batch_seq, sub->seq, sub->batch_lost,
				 sub->lost_unreported, sub->batch_records);
	if (err) {
		nfwatch_count_lost(sub, count);
		return;
	}
	sub->lost_unreported = 0;
	sub->stats.delivered += count;
	sub->stats.batches++;
	nfwatch_ns_count(sub->nn, delivered, count);
	nfwatch_ns_count(sub->nn, batches, 1);
}

/* A soft hrtimer: runs in softirq, where bottom halves are already off. */
static enum hrtimer_restart flush_timer_fn(struct hrtimer *timer)
{
	struct nfwatch_sub *sub = container_of(timer, struct nfwatch_sub, flush_timer);

	spin_lock(&sub->lock);
	if (!sub->dead)
		batch_send(sub);
	spin_unlock(&sub->lock);
	return HRTIMER_NORESTART;
}

void nfwatch_delivery_init(struct nfwatch_sub *sub)
{
	spin_lock_init(&sub->lock);
	sub->last_kuid = GLOBAL_ROOT_UID;
	sub->last_uid = from_kuid_munged(sub->user_ns, GLOBAL_ROOT_UID);
	nfwatch_hrtimer_setup(&sub->flush_timer, flush_timer_fn);
}

/*
 * Under sub->lock: the uid and the sending process as the subscriber sees
 * them. A kuid's mapping is fixed (a user namespace's map is written
 * once) and a flow's packets repeat it, so the last one is kept.
 */
static void fit_to_subscriber(struct nfwatch_sub *sub, const struct nfwatch_packet *pkt,
			      const struct nfwatch_sender *sender, struct nfwatch_record *rec)
{
	if (pkt->sk) {
		kuid_t kuid = nfwatch_sk_uid(pkt->sk);

		if (!uid_eq(kuid, sub->last_kuid)) {
			sub->last_kuid = kuid;
			sub->last_uid = from_kuid_munged(sub->user_ns, kuid);
		}
		rec->uid = sub->last_uid;
		rec->flags |= NFWATCH_F_UID;
	}
	nfwatch_attribute(sub, sender, rec);
}

/*
 * What the hook allocates (a batch's head, the ring's pages) is charged to
 * the subscriber's memory cgroup, not to whoever sends the packet, and
 * never dips into reserves. Not GFP_ATOMIC: its __GFP_HIGH would let the
 * charge go over the cgroup's limit.
 */
#define NFWATCH_HOOK_GFP (GFP_NOWAIT | __GFP_NOWARN | __GFP_NOMEMALLOC | NFWATCH_GFP_ACCOUNT)

static struct page *ring_alloc_page(struct nfwatch_sub *sub)
{
	struct mem_cgroup *old = nfwatch_set_active_memcg(sub->memcg);
	struct page *page = alloc_page(NFWATCH_HOOK_GFP);

	nfwatch_set_active_memcg(old);
	return page;
}

/*
 * Under sub->lock: a page for the open batch, with a reference for it. The
 * ring's oldest page is reused once the ring holds the only reference (the
 * batch it went out in was read or dropped); a page still in use is left
 * to its last holder and replaced by a new one.
 */
static struct page *ring_page(struct nfwatch_sub *sub)
{
	struct page **slot = &sub->ring[sub->ring_next];
	struct page *page = *slot;

	if (page && page_ref_count(page) == 1) {
		/* The reader's last access happened before its put_page(). */
		smp_acquire__after_ctrl_dep();
	} else {
		page = ring_alloc_page(sub);
		if (!page)
			return NULL;
		if (*slot)
			put_page(*slot);
		else
			atomic_inc(&nfwatch_live.pages);
		*slot = page;
	}
	sub->ring_next = (sub->ring_next + 1) % NFWATCH_RING_PAGES;
	get_page(page);
	return page;
}

static void ring_release(struct nfwatch_sub *sub)
{
	unsigned int i;

	for (i = 0; i < NFWATCH_RING_PAGES; i++) {
		if (sub->ring[i]) {
			put_page(sub->ring[i]);
			sub->ring[i] = NULL;
			atomic_dec(&nfwatch_live.pages);
		}
	}
}

/* Under sub->lock: a new last page for the open batch; false if none could be had. */
static bool batch_add_page(struct nfwatch_sub *sub, struct sk_buff *skb)
{
	struct page *page = ring_page(sub);

	if (!page)
		return false;
	batch_close_page(sub, skb);
	skb_fill_page_desc(skb, skb_shinfo(skb)->nr_frags, page, 0, 0);
	skb->truesize += PAGE_SIZE;
	sub->slot_page = page_address(page);
	sub->slot_next = sub->slot_page;
	sub->slot_end = sub->slot_page + PAGE_SIZE / record_size(sub) * record_size(sub);
	return true;
}

/* Under sub->lock: the open batch (never full), or a new one, or NULL. */
static struct sk_buff *batch_open(struct nfwatch_sub *sub)
{
	if (!sub->batch) {
		struct mem_cgroup *old = nfwatch_set_active_memcg(sub->memcg);

		sub->batch = nfwatch_batch_new(NFWATCH_HOOK_GFP, sub->flows, &sub->batch_seq,
					       &sub->batch_lost, &sub->batch_records);
		nfwatch_set_active_memcg(old);
		if (!sub->batch)
			return NULL;
		sub->slot_page = NULL;
		sub->slot_next = NULL;
		sub->slot_end = NULL;
		atomic_inc(&nfwatch_live.batches);
		/* Stopping (the last flows going out): the stop sends the batch. */
		if (!sub->dead)
			hrtimer_start(&sub->flush_timer,
				      ns_to_ktime(nfwatch_flush_interval_us * NSEC_PER_USEC),
				      HRTIMER_MODE_REL_PINNED_SOFT);
	}
	return sub->batch;
}

/*
 * Under sub->lock: room for one more record (of record_size()) at the end
 * of the open batch, in its last page or a new one; NULL when no batch or
 * page could be had, and the record's @packets are counted as lost. The
 * caller fills it in and commits it.
 */
void *nfwatch_batch_slot(struct nfwatch_sub *sub, u32 packets)
{
	struct sk_buff *skb = batch_open(sub);
	void *slot;

	if (!skb || (sub->slot_next == sub->slot_end && !batch_add_page(sub, skb))) {
		nfwatch_count_lost(sub, packets);
		return NULL;
	}
	slot = sub->slot_next;
	sub->slot_next += record_size(sub);
	return slot;
}

/* Under sub->lock: the record in the last slot is written; a full batch goes. */
void nfwatch_batch_commit(struct nfwatch_sub *sub, u32 packets)
{
	sub->batch_packets += packets;
	if (++sub->batch_count >= batch_capacity(sub))
		batch_send(sub);
}

/*
 * From the hook, under RCU; any context but hard IRQ. A subscriber being
 * removed is no longer anyone's: its packet counts as lost here only.
 */
void nfwatch_deliver(struct nfwatch_sub *sub, const struct nfwatch_packet *pkt)
{
	const struct nfwatch_sender *sender;
	struct nfwatch_record *slot;

	spin_lock_bh(&sub->lock);
	if (unlikely(sub->dead)) {
		nfwatch_ns_count(sub->nn, lost, 1);
		goto out;
	}
	sender = nfwatch_sender_of(sub, pkt);
	if (!nfwatch_comm_passes(sub, sender))
		goto out;
	sub->stats.matched++;
	if (sub->flows) {
		struct nfwatch_record rec = pkt->rec;

		fit_to_subscriber(sub, pkt, sender, &rec);
		nfwatch_flow_add(sub, &rec);
		goto out;
	}
	slot = nfwatch_batch_slot(sub, 1);
	if (!slot)
		goto out;
	*slot = pkt->rec;
	fit_to_subscriber(sub, pkt, sender, slot);
	nfwatch_batch_commit(sub, 1);
out:
	spin_unlock_bh(&sub->lock);
}

/*
 * Process context, @sub unlinked: from now on a hook that still finds it
 * delivers nothing. Stop the timer, end the open flows, then send the open
 * batch (@flush) or count it as lost, and let go of the ring (batches out
 * there hold their pages) and the senders table.
 */
void nfwatch_delivery_stop(struct nfwatch_sub *sub, bool flush)
{
	spin_lock_bh(&sub->lock);
	sub->dead = true;
	spin_unlock_bh(&sub->lock);
	hrtimer_cancel(&sub->flush_timer);
	if (sub->flows)
		nfwatch_flows_stop(sub, flush);
	spin_lock_bh(&sub->lock);
	if (flush) {
		batch_send(sub);
	} else if (sub->batch) {
		nfwatch_count_lost(sub, sub->batch_packets);
		kfree_skb(sub->batch);
		atomic_dec(&nfwatch_live.batches);
		sub->batch = NULL;
		sub->batch_count = 0;
		sub->batch_packets = 0;
	}
	spin_unlock_bh(&sub->lock);
	ring_release(sub);
	nfwatch_senders_free(sub);
}
