// SPDX-License-Identifier: GPL-2.0
/*
 * Who a packet belongs to: the process that sent on its socket, and the
 * filters on a packet's owner (uid, cgroup, command name) a subscriber may
 * set.
 *
 * Much of what a socket sends leaves in softirq or in another task's
 * context (TCP ACKs, retransmissions, data pushed when a window opens),
 * where current is not the sender. So each subscriber remembers, per
 * socket, the last process seen sending on it in its own context, and
 * attributes the socket's other packets to it. The memory is a table of
 * NFWATCH_SENDERS entries indexed by a hash of the socket's cookie and
 * network namespace (cookies are counted per namespace before 5.11),
 * allocated at SUBSCRIBE and charged to the subscriber: it never grows
 * with traffic. A socket whose entry another socket took, or whose owner
 * has not sent since the subscription began, is unattributed, and counted.
 */
#include <linux/cgroup.h>
#include <linux/hash.h>
#include <linux/pid_namespace.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/sock_diag.h>
#include <net/sock.h>
#include "compat.h"
#include "nfwatch.h"

struct nfwatch_sender {
	u64 cookie;			/* the socket's; 0: a free entry */
	u32 netns;			/* the socket's network namespace's inode */
	struct pid *tgid;		/* held */
	pid_t pid;			/* @tgid in the subscriber's pid namespace, or 0 */
	char comm[TASK_COMM_LEN];
};

int nfwatch_senders_alloc(struct nfwatch_sub *sub)
{
	sub->senders = kvcalloc(NFWATCH_SENDERS, sizeof(*sub->senders), GFP_KERNEL_ACCOUNT);
	return sub->senders ? 0 : -ENOMEM;
}

/* Process context, once nothing can reach the table any more. */
void nfwatch_senders_free(struct nfwatch_sub *sub)
{
	unsigned int i;

	if (!sub->senders)
		return;
	for (i = 0; i < NFWATCH_SENDERS; i++)
		put_pid(sub->senders[i].tgid);
	kvfree(sub->senders);
	sub->senders = NULL;
}

/*
 * A socket's cookie: unique for the system's lifetime (per network
 * namespace before 5.11), unlike its address, which a new socket may
 * reuse. Set on first use; sock_diag_save_cookie() is the exported way
 * to have one generated.
 */
u64 nfwatch_sk_cookie(const struct sock *sk)
{
	u64 cookie = atomic64_read(&sk->sk_cookie);
	u32 halves[2];

	if (likely(cookie))
		return cookie;
	/* Writes sk_cookie once, atomically: what the kernel does for a const socket too. */
	sock_diag_save_cookie((struct sock *)sk, halves);
	return halves[0] | (u64)halves[1] << 32;
}

static bool sender_is(const struct nfwatch_sender *sender, const struct nfwatch_packet *pkt)
{
	return sender->cookie == pkt->cookie && sender->netns == pkt->rec.netns;
}

/* Under sub->lock: @sender now holds the current process for @pkt's socket. */
static void sender_take(struct nfwatch_sub *sub, struct nfwatch_sender *sender,
			const struct nfwatch_packet *pkt)
{
	struct pid *tgid = task_tgid(current);

	if (!sender_is(sender, pkt) || sender->tgid != tgid) {
		put_pid(sender->tgid);
		sender->tgid = get_pid(tgid);
		sender->pid = pid_nr_ns(tgid, sub->pid_ns);
		sender->cookie = pkt->cookie;
		sender->netns = pkt->rec.netns;
	}
	/*
	 * Every time: exec or prctl(PR_SET_NAME) renames the same tgid. A
	 * plain copy, as tracepoints take it: NUL-terminated, and the bytes
	 * after the NUL are the same task's (kernels that set comm with
	 * strlcpy() leave an older name's there).
	 */
	memcpy(sender->comm, current->comm, sizeof(sender->comm));
}

/*
 * Under sub->lock: the entry of @pkt's socket in the senders table, which
 * the current process takes when it is the sender; NULL when the socket's
 * sending process is not known.
 */
const struct nfwatch_sender *nfwatch_sender_of(struct nfwatch_sub *sub,
					       const struct nfwatch_packet *pkt)
{
	struct nfwatch_sender *sender;

	if (!pkt->sk)
		return NULL;
	sender = &sub->senders[hash_64(pkt->cookie ^ pkt->rec.netns, NFWATCH_SENDERS_BITS)];
	if (pkt->in_sender_task)
		sender_take(sub, sender, pkt);
	else if (!sender_is(sender, pkt))
		return NULL;
	return sender;
}

/*
 * Under sub->lock: the sending process (nfwatch_sender_of()) into @rec, as
 * the subscriber sees it; without one, @rec is counted as unattributed.
 */
void nfwatch_attribute(struct nfwatch_sub *sub, const struct nfwatch_sender *sender,
		       struct nfwatch_record *rec)
{
	BUILD_BUG_ON(sizeof(rec->comm) != TASK_COMM_LEN);
	if (!sender) {
		sub->stats.unattributed++;
		return;
	}
	memcpy(rec->comm, sender->comm, sizeof(rec->comm));
	rec->flags |= NFWATCH_F_COMM;
	rec->pid = sender->pid;
	if (rec->pid)
		rec->flags |= NFWATCH_F_PID;
}

static bool uid_passes(const struct nfwatch_filter *filter, const struct sock *sk)
{
	kuid_t kuid;
	unsigned int i;

	if (!sk)
		return false;
	kuid = nfwatch_sk_uid(sk);
	for (i = 0; i < filter->nuids; i++)
		if (uid_eq(filter->uids[i], kuid))
			return true;
	return false;
}

static bool cgroup_passes(const struct nfwatch_filter *filter, struct cgroup *cgrp)
{
	unsigned int i;

	if (!cgrp)
		return false;
	for (i = 0; i < filter->ncgroups; i++) {
		struct cgroup *ancestor = cgroup_ancestor(cgrp, filter->cgroups[i].level);

		if (ancestor && cgroup_id(ancestor) == filter->cgroups[i].id)
			return true;
	}
	return false;
}

/* Under RCU: whether @pkt passes @sub's owner filters (each one given). */
bool nfwatch_filter_passes(const struct nfwatch_sub *sub, const struct nfwatch_packet *pkt)
{
	const struct nfwatch_filter *filter = rcu_dereference(sub->filter);

	if (likely(!filter))
		return true;
	if (filter->nuids && !uid_passes(filter, pkt->sk))
		return false;
	return !filter->ncgroups || cgroup_passes(filter, pkt->cgroup);
}

/*
 * Under RCU and sub->lock: whether the sending process (nfwatch_sender_of())
 * passes @sub's command-name filter, if it has one. Checked after the
 * table lookup, which only recorded packets make.
 */
bool nfwatch_comm_passes(const struct nfwatch_sub *sub, const struct nfwatch_sender *sender)
{
	const struct nfwatch_filter *filter = rcu_dereference(sub->filter);
	unsigned int i;

	if (likely(!filter) || !filter->ncomms)
		return true;
	if (!sender)
		return false;
	for (i = 0; i < filter->ncomms; i++)
		if (!strncmp(sender->comm, filter->comms[i], TASK_COMM_LEN))
			return true;
	return false;
}
