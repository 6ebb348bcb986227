// SPDX-License-Identifier: GPL-2.0
/*
 * Batching records into netlink messages for one subscriber.
 *
 * The hook appends to the subscriber's open batch; a batch goes out when
 * it is full or when flush_interval_us has passed since its first record
 * (a soft hrtimer). Sending never waits: if the subscriber's receive
 * buffer has no room the batch is dropped, its records are counted as
 * lost, and that count rides along in the next batch that gets through.
 * Each batch attempted takes the next sequence number, so a dropped one
 * also shows as a gap.
 */
#include <linux/hrtimer.h>
#include <linux/pid_namespace.h>
#include <linux/sched.h>
#include <linux/user_namespace.h>
#include <net/sock.h>
#include "compat.h"
#include "nfwatch.h"

static void count_lost(struct nfwatch_sub *sub, u32 records)
{
	sub->stats.lost += records;
	sub->lost_unreported += records;
	this_cpu_add(sub->nn->stats->lost, records);
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

/* Under sub->lock. */
static void batch_send(struct nfwatch_sub *sub)
{
	struct sk_buff *skb = sub->batch;
	u32 count = sub->batch_count;
	int err;

	if (!skb)
		return;
	sub->batch = NULL;
	sub->batch_count = 0;
	atomic_dec(&nfwatch_live.batches);
	++sub->seq;
	if (!batch_fits(sub->sk, skb)) {
		kfree_skb(skb);
		count_lost(sub, count);
		return;
	}
	err = nfwatch_batch_send(sub->net, skb, sub->portid, sub->batch_seq, sub->seq,
				 sub->batch_lost, sub->lost_unreported, sub->batch_records);
	if (err) {
		count_lost(sub, count);
		return;
	}
	sub->lost_unreported = 0;
	sub->stats.delivered += count;
	sub->stats.batches++;
	this_cpu_add(sub->nn->stats->delivered, count);
	this_cpu_inc(sub->nn->stats->batches);
}

static enum hrtimer_restart flush_timer_fn(struct hrtimer *timer)
{
	struct nfwatch_sub *sub = container_of(timer, struct nfwatch_sub, flush_timer);

	spin_lock_bh(&sub->lock);
	batch_send(sub);
	spin_unlock_bh(&sub->lock);
	return HRTIMER_NORESTART;
}

void nfwatch_delivery_init(struct nfwatch_sub *sub)
{
	spin_lock_init(&sub->lock);
	nfwatch_hrtimer_setup(&sub->flush_timer, flush_timer_fn);
}

static void fit_to_subscriber(const struct nfwatch_sub *sub,
			      const struct nfwatch_packet *pkt,
			      struct nfwatch_record *rec)
{
	if (pkt->sk) {
		rec->uid = from_kuid_munged(sub->user_ns, nfwatch_sk_uid(pkt->sk));
		rec->flags |= NFWATCH_F_UID;
	}
	if (pkt->in_sender_task) {
		rec->pid = task_tgid_nr_ns(current, sub->pid_ns);
		if (rec->pid)
			rec->flags |= NFWATCH_F_PID;
	}
}

/* Under sub->lock: the open batch (never full), or a new one, or NULL. */
static struct sk_buff *batch_open(struct nfwatch_sub *sub)
{
	if (!sub->batch) {
		sub->batch = nfwatch_batch_new(sub->portid, GFP_ATOMIC, &sub->batch_seq,
					       &sub->batch_lost, &sub->batch_records);
		if (!sub->batch)
			return NULL;
		atomic_inc(&nfwatch_live.batches);
		hrtimer_start(&sub->flush_timer, ns_to_ktime(flush_interval_us * NSEC_PER_USEC),
			      HRTIMER_MODE_REL_SOFT);
	}
	return sub->batch;
}

/* From the hook, under RCU; any context but hard IRQ. */
void nfwatch_deliver(struct nfwatch_sub *sub, const struct nfwatch_packet *pkt)
{
	struct nfwatch_record *slot;
	struct sk_buff *skb;

	spin_lock_bh(&sub->lock);
	sub->stats.matched++;
	skb = batch_open(sub);
	if (!skb) {
		count_lost(sub, 1);
		goto out;
	}
	slot = skb_put(skb, sizeof(*slot));
	*slot = pkt->rec;
	fit_to_subscriber(sub, pkt, slot);
	/* By count, not tailroom: the skb may be bigger than asked for. */
	if (++sub->batch_count >= nfwatch_batch_records)
		batch_send(sub);
out:
	spin_unlock_bh(&sub->lock);
}

/*
 * Once no hook can reach @sub any more (unlinked, RCU grace period over):
 * stop the timer, then send the open batch (@flush) or count it as lost.
 */
void nfwatch_delivery_stop(struct nfwatch_sub *sub, bool flush)
{
	hrtimer_cancel(&sub->flush_timer);
	spin_lock_bh(&sub->lock);
	if (flush) {
		batch_send(sub);
	} else if (sub->batch) {
		count_lost(sub, sub->batch_count);
		kfree_skb(sub->batch);
		atomic_dec(&nfwatch_live.batches);
		sub->batch = NULL;
		sub->batch_count = 0;
	}
	spin_unlock_bh(&sub->lock);
}
