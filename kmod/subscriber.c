// SPDX-License-Identifier: GPL-2.0
/*
 * Subscribers: one per subscribing netlink socket, kept per network
 * namespace, removed when the socket goes (NETLINK_URELEASE), when it
 * unsubscribes, or when the module or the namespace goes away.
 *
 * A subscriber is its socket, not its portid: netlink frees the portid
 * before NETLINK_URELEASE reaches us, so by then another socket may hold
 * it. Batches go to the subscriber's own socket (delivery.c), a SUBSCRIBE
 * from another socket on a known portid replaces the stale entry, and
 * NETLINK_URELEASE removes only the entry of a socket that died.
 *
 * Removal always runs the same steps under nn->lock: unlink, stop delivery
 * (from then on the hook delivers nothing to it), let go of what only
 * delivery uses, and free the rest after an RCU grace period, when no hook
 * can hold it any more. Nothing here waits for a grace period.
 *
 * The Netfilter hooks of a namespace are registered by its first
 * subscriber and stay until the namespace or the module goes: removing a
 * hook makes Netfilter drop every packet queued to user space in the
 * namespace (nf_queue_nf_hook_drop()), which would cost an NFQUEUE reader
 * its packets each time nfwatch stops. With nobody subscribed the hooks
 * return at once.
 *
 * A subscriber to every namespace (NFWATCH_A_ALL_NETNS) lives in the initial
 * namespace, on nfwatch_all_subs, which every namespace's hooks walk after
 * their own subscribers. Its SUBSCRIBE hooks every namespace there is, and
 * while one is being made or in force, every namespace created is hooked
 * at its init: both under nfwatch_nets_lock, so none is missed.
 */
#include <linux/memcontrol.h>
#include <linux/netlink.h>
#include <linux/notifier.h>
#include <linux/pid_namespace.h>
#include <linux/rculist.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/user_namespace.h>
#include <net/genetlink.h>
#include <net/sock.h>
#include "compat.h"
#include "nfwatch.h"

LIST_HEAD(nfwatch_all_subs);

/* Every namespace's nfwatch_net. */
static LIST_HEAD(nfwatch_nets);
static DEFINE_MUTEX(nfwatch_nets_lock);
/* Counts the all-namespace subscriptions in force or being made; new namespaces are hooked while on. */
DEFINE_STATIC_KEY_FALSE(nfwatch_all_netns_key);

static bool is_initial(const struct nfwatch_net *nn)
{
	return net_eq(nn->net, &init_net);
}

static struct nfwatch_sub *sub_find_on(struct list_head *subs, u32 portid)
{
	struct nfwatch_sub *sub;

	list_for_each_entry(sub, subs, node)
		if (sub->portid == portid)
			return sub;
	return NULL;
}

/* The subscriber on @portid, whichever socket holds it. */
static struct nfwatch_sub *sub_find(struct nfwatch_net *nn, u32 portid)
{
	struct nfwatch_sub *sub;

	lockdep_assert_held(&nn->lock);
	sub = sub_find_on(&nn->subs, portid);
	if (!sub && is_initial(nn))
		sub = sub_find_on(&nfwatch_all_subs, portid);
	return sub;
}

/* @sk's subscription, or NULL. */
static struct nfwatch_sub *sub_find_own(struct nfwatch_net *nn, const struct sock *sk,
					u32 portid)
{
	struct nfwatch_sub *sub = sub_find(nn, portid);

	return sub && sub->sk == sk ? sub : NULL;
}

/*
 * Charged to the requester's memory cgroup (SUBSCRIBE runs in its
 * sendmsg()), as are its set, filters and senders table and, through
 * @memcg, its ring's pages.
 */
static struct nfwatch_sub *sub_new(struct nfwatch_net *nn, struct net *net, struct sock *sk,
				   u32 portid, struct nfwatch_prefix_set *set,
				   struct nfwatch_filter *filter,
				   const struct nfwatch_flow_config *flows)
{
	struct nfwatch_sub *sub = kzalloc(sizeof(*sub), GFP_KERNEL_ACCOUNT);

	if (!sub)
		return NULL;
	if (nfwatch_senders_alloc(sub)) {
		kfree(sub);
		return NULL;
	}
	if (flows && nfwatch_flows_new(sub, flows)) {
		nfwatch_senders_free(sub);
		kfree(sub);
		return NULL;
	}
	sub->nn = nn;
	sub->net = net;
	sub->portid = portid;
	sock_hold(sk);
	sub->sk = sk;
	sub->sk_drops = nfwatch_sk_drops(sk);
	RCU_INIT_POINTER(sub->set, set);
	RCU_INIT_POINTER(sub->filter, filter);
	sub->stats.prefixes = nfwatch_set_size(set);
	/* uids as the socket's opener sees them, as nfnetlink_log does. */
	sub->user_ns = get_user_ns(sk_user_ns(sk));
	sub->pid_ns = get_pid_ns(task_active_pid_ns(current));
	sub->memcg = get_mem_cgroup_from_mm(current->mm);
	nfwatch_delivery_init(sub);
	atomic_inc(&nfwatch_live.subscribers);
	return sub;
}

static void sub_free_rcu(struct rcu_head *head)
{
	struct nfwatch_sub *sub = container_of(head, struct nfwatch_sub, rcu);

	nfwatch_set_free(rcu_dereference_protected(sub->set, true));
	kfree(rcu_dereference_protected(sub->filter, true));
	nfwatch_flows_free(sub);
	kfree(sub);
	atomic_dec(&nfwatch_live.subscribers);
}

static int hooks_hold(struct nfwatch_net *nn)
{
	int err;

	lockdep_assert_held(&nn->lock);
	if (nn->hooked || nn->dying)
		return 0;
	err = nfwatch_hooks_register(nn->net, nn);
	nn->hooked = !err;
	return err;
}

/*
 * Before an all-namespace subscription: from now on until it ends, every
 * namespace is hooked, those there are here and new ones at their init.
 * Undone by all_hooks_put().
 */
static int all_hooks_get(void)
{
	struct nfwatch_net *nn;
	int err = 0;

	mutex_lock(&nfwatch_nets_lock);
	static_branch_inc(&nfwatch_all_netns_key);
	list_for_each_entry(nn, &nfwatch_nets, node) {
		mutex_lock(&nn->lock);
		err = hooks_hold(nn);
		mutex_unlock(&nn->lock);
		if (err)
			break;
	}
	if (err)
		static_branch_dec(&nfwatch_all_netns_key);
	mutex_unlock(&nfwatch_nets_lock);
	return err;
}

/* A namespace's hooks stay (see above); new ones need them no more. */
static void all_hooks_put(void)
{
	static_branch_dec(&nfwatch_all_netns_key);
}

/*
 * Unlink @sub and stop its delivery, sending its open batch (@flush) or
 * counting it as lost; its final counters are in sub->stats. The caller
 * then hands it to sub_free().
 */
static void sub_remove(struct nfwatch_net *nn, struct nfwatch_sub *sub, bool flush)
{
	lockdep_assert_held(&nn->lock);
	list_del_rcu(&sub->node);
	if (sub->all_netns)
		all_hooks_put();
	WRITE_ONCE(nn->nsubs, nn->nsubs - 1);
	atomic_dec(&nfwatch_subscribed);
	nfwatch_delivery_stop(sub, flush);
}

/* What a hook cannot reach once delivery has stopped goes now, the rest after a grace period. */
static void sub_free(struct nfwatch_sub *sub)
{
	mem_cgroup_put(sub->memcg);
	put_pid_ns(sub->pid_ns);
	put_user_ns(sub->user_ns);
	sock_put(sub->sk);
	call_rcu(&sub->rcu, sub_free_rcu);
}

/* Under nn->lock: room for one more subscriber here? */
static bool sub_room(struct nfwatch_net *nn, struct netlink_ext_ack *extack)
{
	unsigned int max = READ_ONCE(nfwatch_max_subscribers);

	if (nn->nsubs < max)
		return true;
	NFWATCH_SET_ERR_MSG_FMT(extack,
				"this network namespace has as many subscribers as the module parameter max_subscribers allows",
				"this network namespace has %u subscribers, the module parameter max_subscribers",
				max);
	return false;
}

/* Under nn->lock: @sub's set and filters replaced; the old ones go after a grace period. */
static void sub_replace(struct nfwatch_net *nn, struct nfwatch_sub *sub,
			struct nfwatch_prefix_set *set, struct nfwatch_filter *filter)
{
	struct nfwatch_prefix_set *old_set;
	struct nfwatch_filter *old_filter;

	old_set = rcu_replace_pointer(sub->set, set, lockdep_is_held(&nn->lock));
	old_filter = rcu_replace_pointer(sub->filter, filter, lockdep_is_held(&nn->lock));
	sub->stats.prefixes = nfwatch_set_size(set);
	nfwatch_set_free_rcu(old_set);
	if (old_filter)
		kfree_rcu(old_filter, rcu);
}

int nfwatch_subscribe(struct net *net, struct sock *sk, u32 portid,
		      struct nfwatch_prefix_set *set, struct nfwatch_filter *filter,
		      bool all_netns, const struct nfwatch_flow_config *flows,
		      struct netlink_ext_ack *extack)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);
	struct nfwatch_sub *sub;
	int err = 0;

	/* Before nn->lock: all_hooks_get() takes every namespace's. */
	if (all_netns) {
		err = all_hooks_get();
		if (err) {
			NL_SET_ERR_MSG(extack, "could not register the Netfilter hooks in every network namespace");
			return err;
		}
	}
	mutex_lock(&nn->lock);
	if (nn->dying) {
		NL_SET_ERR_MSG(extack, "nfwatch is going away in this network namespace");
		err = -ESHUTDOWN;
		goto out;
	}
	sub = sub_find(nn, portid);
	if (sub && sub->sk == sk) {
		if (sub->all_netns != all_netns) {
			NL_SET_ERR_MSG(extack, "a subscription cannot change between one network namespace and all: unsubscribe first");
			err = -EBUSY;
			goto out;
		}
		if (!!sub->flows != !!flows || (flows && !nfwatch_flows_same(sub, flows))) {
			NL_SET_ERR_MSG(extack, "a subscription keeps its mode (packets or flows) and flow settings: unsubscribe first");
			err = -EBUSY;
			goto out;
		}
		/* out: drops what this request took; the subscription keeps its own. */
		sub_replace(nn, sub, set, filter);
		goto out;
	}
	if (sub) {
		/* The socket that had this portid died; its URELEASE may not have come yet. */
		sub_remove(nn, sub, false);
		sub_free(sub);
	}
	if (!sub_room(nn, extack)) {
		err = -ENOSPC;
		goto out;
	}
	err = hooks_hold(nn);
	if (err) {
		NL_SET_ERR_MSG(extack, "could not register the Netfilter hooks");
		goto out;
	}
	sub = sub_new(nn, net, sk, portid, set, filter, flows);
	if (!sub) {
		err = -ENOMEM;
		goto out;
	}
	sub->all_netns = all_netns;
	list_add_tail_rcu(&sub->node, all_netns ? &nfwatch_all_subs : &nn->subs);
	if (flows)
		nfwatch_flows_start(sub);
	WRITE_ONCE(nn->nsubs, nn->nsubs + 1);
	atomic_inc(&nfwatch_subscribed);
	mutex_unlock(&nn->lock);
	return 0;
out:
	mutex_unlock(&nn->lock);
	if (all_netns)
		all_hooks_put();
	return err;
}

/* Unsubscribe: the open batch is sent, so it arrives before the reply. */
int nfwatch_unsubscribe(struct net *net, const struct sock *sk, u32 portid,
			struct nfwatch_sub_stats *final)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);
	struct nfwatch_sub *sub;

	mutex_lock(&nn->lock);
	sub = sub_find_own(nn, sk, portid);
	if (sub) {
		sub_remove(nn, sub, true);
		*final = sub->stats;
		sub_free(sub);
	}
	mutex_unlock(&nn->lock);
	return sub ? 0 : -ENOENT;
}

/* A socket on @portid was released: nobody to send its open batch to. */
static void sub_release(struct net *net, u32 portid)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);
	struct nfwatch_sub *sub;

	mutex_lock(&nn->lock);
	sub = sub_find(nn, portid);
	/* Not a live socket that took the portid over (and subscribed) since. */
	if (sub && sock_flag(sub->sk, SOCK_DEAD)) {
		sub_remove(nn, sub, false);
		sub_free(sub);
	}
	mutex_unlock(&nn->lock);
}

bool nfwatch_own_stats(struct net *net, const struct sock *sk, u32 portid,
		       struct nfwatch_sub_stats *out)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);
	struct nfwatch_sub *sub;

	mutex_lock(&nn->lock);
	sub = sub_find_own(nn, sk, portid);
	if (sub) {
		spin_lock_bh(&sub->lock);
		*out = sub->stats;
		out->flows_open = nfwatch_flows_open(sub);
		spin_unlock_bh(&sub->lock);
	}
	mutex_unlock(&nn->lock);
	return sub;
}

void nfwatch_ns_stats(struct net *net, struct nfwatch_ns_stats *sum, unsigned int *nsubs)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);
	int cpu;

	memset(sum, 0, sizeof(*sum));
	for_each_possible_cpu(cpu) {
		const struct nfwatch_ns_pcpu_stats *s = per_cpu_ptr(nn->stats, cpu);
		struct nfwatch_ns_stats one;
		unsigned int start;

		do {
			start = u64_stats_fetch_begin(&s->syncp);
			one.seen = u64_stats_read(&s->seen);
			one.matched = u64_stats_read(&s->matched);
			one.delivered = u64_stats_read(&s->delivered);
			one.lost = u64_stats_read(&s->lost);
			one.malformed = u64_stats_read(&s->malformed);
			one.batches = u64_stats_read(&s->batches);
		} while (u64_stats_fetch_retry(&s->syncp, start));
		sum->seen += one.seen;
		sum->matched += one.matched;
		sum->delivered += one.delivered;
		sum->lost += one.lost;
		sum->malformed += one.malformed;
		sum->batches += one.batches;
	}
	*nsubs = READ_ONCE(nn->nsubs);
}

/* @nn with no subscriber yet: also what the hook self-test runs on. */
int nfwatch_subs_init(struct nfwatch_net *nn, struct net *net)
{
	int cpu;

	nn->net = net;
	INIT_LIST_HEAD(&nn->subs);
	mutex_init(&nn->lock);
	nn->stats = alloc_percpu(struct nfwatch_ns_pcpu_stats);
	if (!nn->stats)
		return -ENOMEM;
	for_each_possible_cpu(cpu)
		u64_stats_init(&per_cpu_ptr(nn->stats, cpu)->syncp);
	return 0;
}

int nfwatch_pernet_init_subs(struct net *net)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);
	int err = nfwatch_subs_init(nn, net);

	if (err)
		return err;
	mutex_lock(&nfwatch_nets_lock);
	if (static_key_enabled(&nfwatch_all_netns_key)) {
		mutex_lock(&nn->lock);
		err = hooks_hold(nn);
		mutex_unlock(&nn->lock);
	}
	if (!err)
		list_add_tail(&nn->node, &nfwatch_nets);
	mutex_unlock(&nfwatch_nets_lock);
	if (err)
		free_percpu(nn->stats);
	return err;
}

/*
 * The namespace or the module is going away: no new subscriber, no hooks.
 * A hook still running finishes within the grace period the pernet core
 * waits before .exit.
 */
void nfwatch_pernet_pre_exit_subs(struct net *net)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);

	mutex_lock(&nn->lock);
	nn->dying = true;
	if (nn->hooked)
		nfwatch_hooks_unregister(net, nn);
	mutex_unlock(&nn->lock);
}

/*
 * The hooks were removed in pre_exit and the pernet core has waited a grace
 * period since, so no hook runs here any more: send each subscriber its
 * last batch and a SHUTDOWN with its final counters, and free it.
 */
static void subs_shut_down(struct nfwatch_net *nn, struct list_head *subs)
{
	struct nfwatch_sub *sub, *tmp;

	list_for_each_entry_safe(sub, tmp, subs, node) {
		sub_remove(nn, sub, true);
		nfwatch_notify_shutdown(sub->sk, &sub->stats);
		sub_free(sub);
	}
}

/*
 * The initial namespace goes only with the module, after every namespace's
 * hooks went (pre_exit) and a grace period: its all-namespace subscribers
 * go with it.
 */
void nfwatch_pernet_exit_subs(struct nfwatch_net *nn)
{
	mutex_lock(&nfwatch_nets_lock);
	list_del(&nn->node);
	mutex_unlock(&nfwatch_nets_lock);
	mutex_lock(&nn->lock);
	subs_shut_down(nn, &nn->subs);
	if (is_initial(nn))
		subs_shut_down(nn, &nfwatch_all_subs);
	mutex_unlock(&nn->lock);
	free_percpu(nn->stats);
}

static int nfwatch_netlink_event(struct notifier_block *nb, unsigned long event, void *ptr)
{
	const struct netlink_notify *n = ptr;

	if (event == NETLINK_URELEASE && n->protocol == NETLINK_GENERIC)
		sub_release(n->net, n->portid);
	return NOTIFY_DONE;
}

static struct notifier_block nfwatch_netlink_notifier = {
	.notifier_call = nfwatch_netlink_event,
};

int nfwatch_notifier_register(void)
{
	return netlink_register_notifier(&nfwatch_netlink_notifier);
}

void nfwatch_notifier_unregister(void)
{
	netlink_unregister_notifier(&nfwatch_netlink_notifier);
}
