// SPDX-License-Identifier: GPL-2.0
/*
 * Subscribers: one per subscribing netlink socket (its portid), kept per
 * network namespace, freed when the socket goes (NETLINK_URELEASE), when
 * it unsubscribes, or when the module or the namespace goes away.
 *
 * Removal always runs the same steps: unlink under nn->lock, wait an RCU
 * grace period so no hook still holds the subscriber, stop delivery, free.
 *
 * The Netfilter hooks of a namespace are registered by its first
 * subscriber and removed with its last, as nftables does for a base chain:
 * with nobody subscribed the module costs a sending host nothing at all.
 */
#include <linux/netlink.h>
#include <linux/notifier.h>
#include <linux/pid_namespace.h>
#include <linux/rculist.h>
#include <linux/slab.h>
#include <linux/user_namespace.h>
#include <net/genetlink.h>
#include <net/sock.h>
#include "compat.h"
#include "nfwatch.h"

/* Under nn->lock. */
static struct nfwatch_sub *sub_find(struct nfwatch_net *nn, u32 portid)
{
	struct nfwatch_sub *sub;

	list_for_each_entry(sub, &nn->subs, node)
		if (sub->portid == portid)
			return sub;
	return NULL;
}

static struct nfwatch_sub *sub_new(struct nfwatch_net *nn, struct net *net, struct sock *sk,
				   u32 portid, struct nfwatch_prefix_set *set)
{
	struct nfwatch_sub *sub = kzalloc(sizeof(*sub), GFP_KERNEL);

	if (!sub)
		return NULL;
	sub->nn = nn;
	sub->net = net;
	sub->portid = portid;
	sock_hold(sk);
	sub->sk = sk;
	RCU_INIT_POINTER(sub->set, set);
	sub->stats.prefixes = nfwatch_set_size(set);
	/* The requester's namespaces: SUBSCRIBE runs in its sendmsg(). */
	sub->user_ns = get_user_ns(current_user_ns());
	sub->pid_ns = get_pid_ns(task_active_pid_ns(current));
	nfwatch_delivery_init(sub);
	atomic_inc(&nfwatch_live.subscribers);
	return sub;
}

static void sub_free(struct nfwatch_sub *sub)
{
	nfwatch_set_free(rcu_dereference_protected(sub->set, true));
	put_pid_ns(sub->pid_ns);
	put_user_ns(sub->user_ns);
	sock_put(sub->sk);
	kfree(sub);
	atomic_dec(&nfwatch_live.subscribers);
}

/* Under nn->lock. */
static int hooks_hold(struct nfwatch_net *nn, struct net *net)
{
	int err;

	if (nn->hooked)
		return 0;
	err = nfwatch_hooks_register(net, nn);
	nn->hooked = !err;
	return err;
}

/* Under nn->lock. A hook still running finishes within a grace period. */
static void hooks_drop(struct nfwatch_net *nn, struct net *net)
{
	if (!nn->hooked)
		return;
	nfwatch_hooks_unregister(net, nn);
	nn->hooked = false;
}

/* Under nn->lock. */
static void sub_unlink(struct nfwatch_net *nn, struct nfwatch_sub *sub)
{
	list_del_rcu(&sub->node);
	if (!--nn->nsubs)
		hooks_drop(nn, sub->net);
}

int nfwatch_subscribe(struct net *net, struct sock *sk, u32 portid,
		      struct nfwatch_prefix_set *set, struct netlink_ext_ack *extack)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);
	struct nfwatch_prefix_set *old = NULL;
	struct nfwatch_sub *sub;
	int err = 0;

	mutex_lock(&nn->lock);
	if (nn->dying) {
		NL_SET_ERR_MSG(extack, "nfwatch is going away in this network namespace");
		err = -ESHUTDOWN;
		goto out;
	}
	sub = sub_find(nn, portid);
	if (sub) {
		old = rcu_replace_pointer(sub->set, set, lockdep_is_held(&nn->lock));
		sub->stats.prefixes = nfwatch_set_size(set);
		goto out;
	}
	err = hooks_hold(nn, net);
	if (err) {
		NL_SET_ERR_MSG(extack, "could not register the Netfilter hooks");
		goto out;
	}
	sub = sub_new(nn, net, sk, portid, set);
	if (!sub) {
		if (!nn->nsubs)
			hooks_drop(nn, net);
		err = -ENOMEM;
		goto out;
	}
	list_add_tail_rcu(&sub->node, &nn->subs);
	nn->nsubs++;
out:
	mutex_unlock(&nn->lock);
	/*
	 * A replaced set is freed here, after the readers, rather than from
	 * an RCU callback: no callback of this module can outlive it, so
	 * unloading needs no rcu_barrier().
	 */
	if (old) {
		synchronize_rcu();
		nfwatch_set_free(old);
	}
	return err;
}

/* Unlink @portid's subscriber and wait until no hook can still reach it. */
static struct nfwatch_sub *sub_take(struct net *net, u32 portid)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);
	struct nfwatch_sub *sub;

	mutex_lock(&nn->lock);
	sub = sub_find(nn, portid);
	if (sub)
		sub_unlink(nn, sub);
	mutex_unlock(&nn->lock);
	if (sub)
		synchronize_rcu();
	return sub;
}

/* Unsubscribe: the open batch is sent, so it arrives before the reply. */
int nfwatch_unsubscribe(struct net *net, u32 portid, struct nfwatch_sub_stats *final)
{
	struct nfwatch_sub *sub = sub_take(net, portid);

	if (!sub)
		return -ENOENT;
	nfwatch_delivery_stop(sub, true);
	*final = sub->stats;
	sub_free(sub);
	return 0;
}

/* The socket is gone: nobody to send the open batch to. */
static void sub_release(struct net *net, u32 portid)
{
	struct nfwatch_sub *sub = sub_take(net, portid);

	if (!sub)
		return;
	nfwatch_delivery_stop(sub, false);
	sub_free(sub);
}

bool nfwatch_own_stats(struct net *net, u32 portid, struct nfwatch_sub_stats *out)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);
	struct nfwatch_sub *sub;

	mutex_lock(&nn->lock);
	sub = sub_find(nn, portid);
	if (sub) {
		spin_lock_bh(&sub->lock);
		*out = sub->stats;
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
		const struct nfwatch_ns_stats *s = per_cpu_ptr(nn->stats, cpu);

		sum->seen += READ_ONCE(s->seen);
		sum->matched += READ_ONCE(s->matched);
		sum->delivered += READ_ONCE(s->delivered);
		sum->lost += READ_ONCE(s->lost);
		sum->malformed += READ_ONCE(s->malformed);
		sum->batches += READ_ONCE(s->batches);
	}
	*nsubs = READ_ONCE(nn->nsubs);
}

int nfwatch_pernet_init_subs(struct nfwatch_net *nn)
{
	INIT_LIST_HEAD(&nn->subs);
	mutex_init(&nn->lock);
	nn->stats = alloc_percpu(struct nfwatch_ns_stats);
	return nn->stats ? 0 : -ENOMEM;
}

/* The namespace or the module is going away: no new subscriber, no hooks. */
void nfwatch_pernet_pre_exit_subs(struct net *net)
{
	struct nfwatch_net *nn = nfwatch_pernet(net);

	mutex_lock(&nn->lock);
	nn->dying = true;
	hooks_drop(nn, net);
	mutex_unlock(&nn->lock);
}

/*
 * The hooks were removed in pre_exit and the pernet core has waited a grace
 * period since, so no hook holds a subscriber: send each its last batch and
 * a SHUTDOWN with its final counters, and free it.
 */
void nfwatch_pernet_exit_subs(struct nfwatch_net *nn)
{
	struct nfwatch_sub *sub, *tmp;
	LIST_HEAD(gone);

	mutex_lock(&nn->lock);
	list_for_each_entry_safe(sub, tmp, &nn->subs, node) {
		sub_unlink(nn, sub);
		list_add_tail(&sub->node, &gone);
	}
	mutex_unlock(&nn->lock);

	list_for_each_entry_safe(sub, tmp, &gone, node) {
		nfwatch_delivery_stop(sub, true);
		nfwatch_notify_shutdown(sub->net, sub->portid, &sub->stats);
		sub_free(sub);
	}
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
