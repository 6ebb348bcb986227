// SPDX-License-Identifier: GPL-2.0
/*
 * nfwatch: tell subscribers about every packet this host sends from the
 * source prefixes they watch. Module load/unload and parameters.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/sysfs.h>
#include <net/genetlink.h>
#include "nfwatch.h"
#include "version.h"

unsigned int nfwatch_flush_interval_us = 5000;
module_param_named(flush_interval_us, nfwatch_flush_interval_us, uint, 0444);
MODULE_PARM_DESC(flush_interval_us,
		 "Longest a record waits in a partly filled batch, in microseconds (100..1000000, default 5000)");

unsigned int nfwatch_batch_bytes = 32000;
module_param_named(batch_bytes, nfwatch_batch_bytes, uint, 0444);
MODULE_PARM_DESC(batch_bytes,
		 "Size of one batch message in bytes (1024..65000, default 32000)");

unsigned int nfwatch_max_subscribers = 64;
module_param_named(max_subscribers, nfwatch_max_subscribers, uint, 0644);
MODULE_PARM_DESC(max_subscribers,
		 "Most subscribers one network namespace may have (default 64)");

struct nfwatch_live nfwatch_live;
atomic_t nfwatch_subscribed = ATOMIC_INIT(0);

/*
 * Read-only: what the packaging's load-module reads to tell whether the
 * loaded module may be replaced, without speaking the netlink protocol
 * (an upgrade may change it).
 */
static int nfwatch_subscribers_get(char *buffer, const struct kernel_param *kp)
{
	return sysfs_emit(buffer, "%d\n", atomic_read(&nfwatch_subscribed));
}

static int nfwatch_read_only_set(const char *val, const struct kernel_param *kp)
{
	return -EPERM;
}

static const struct kernel_param_ops nfwatch_subscribers_ops = {
	.set = nfwatch_read_only_set,
	.get = nfwatch_subscribers_get,
};
module_param_cb(subscribers, &nfwatch_subscribers_ops, NULL, 0444);
MODULE_PARM_DESC(subscribers, "Subscriptions in force in every network namespace (read-only)");

unsigned int nfwatch_batch_records __read_mostly;
unsigned int nfwatch_batch_flows __read_mostly;
unsigned int nfwatch_net_id __read_mostly;

#ifdef CONFIG_NFWATCH_SELFTEST
static bool nfwatch_selftest;
module_param_named(selftest, nfwatch_selftest, bool, 0444);
MODULE_PARM_DESC(selftest, "Run the self-tests at load and refuse to load if one fails");

/* Every self-test runs, so one failing does not hide another. */
static bool nfwatch_selftests_fail(void)
{
	bool prefixset, hook;

	if (!nfwatch_selftest)
		return false;
	prefixset = nfwatch_selftest_prefixset();
	hook = nfwatch_selftest_hook();
	return !(prefixset && hook);
}
#else
static bool nfwatch_selftests_fail(void)
{
	return false;
}
#endif

static __net_init int nfwatch_net_init(struct net *net)
{
	return nfwatch_pernet_init_subs(net);
}

/* Unhook first; the pernet core waits a grace period before .exit. */
static __net_exit void nfwatch_net_pre_exit(struct net *net)
{
	nfwatch_pernet_pre_exit_subs(net);
}

static __net_exit void nfwatch_net_exit(struct net *net)
{
	nfwatch_pernet_exit_subs(nfwatch_pernet(net));
}

static struct pernet_operations nfwatch_net_ops = {
	.init = nfwatch_net_init,
	.pre_exit = nfwatch_net_pre_exit,
	.exit = nfwatch_net_exit,
	.id = &nfwatch_net_id,
	.size = sizeof(struct nfwatch_net),
};

/* @val within [@lo, @hi], saying so when it was not. */
static unsigned int __init param_clamp(const char *name, unsigned int val, unsigned int lo,
				       unsigned int hi)
{
	unsigned int clamped = clamp(val, lo, hi);

	if (clamped != val)
		pr_warn("%s=%u is outside %u..%u: using %u\n", name, val, lo, hi, clamped);
	return clamped;
}

static int __init nfwatch_init(void)
{
	int err;

	nfwatch_flush_interval_us = param_clamp("flush_interval_us", nfwatch_flush_interval_us,
						100U, 1000000U);
	nfwatch_batch_bytes = param_clamp("batch_bytes", nfwatch_batch_bytes, 1024U,
					  NFWATCH_BATCH_BYTES_MAX);
	/* A batch's records are page frags of one skb. */
	BUILD_BUG_ON(NFWATCH_BATCH_PAGES_MAX > MAX_SKB_FRAGS);
	nfwatch_batch_records = nfwatch_batch_capacity(nfwatch_batch_bytes,
						       sizeof(struct nfwatch_record));
	nfwatch_batch_flows = nfwatch_batch_capacity(nfwatch_batch_bytes, sizeof(struct nfwatch_flow));

	if (nfwatch_selftests_fail())
		return -ENOTRECOVERABLE;

	err = nfwatch_flows_init();
	if (err)
		return err;
	err = register_pernet_subsys(&nfwatch_net_ops);
	if (err)
		goto err_flows;
	err = nfwatch_notifier_register();
	if (err)
		goto err_pernet;
	err = nfwatch_genl_register();
	if (err)
		goto err_notifier;
	pr_info("loaded (flush_interval_us=%u batch_bytes=%u, %u records a batch)\n",
		nfwatch_flush_interval_us, nfwatch_batch_bytes, nfwatch_batch_records);
	return 0;

err_notifier:
	nfwatch_notifier_unregister();
err_pernet:
	unregister_pernet_subsys(&nfwatch_net_ops);
	rcu_barrier();
err_flows:
	nfwatch_flows_exit();
	return err;
}

static void __exit nfwatch_exit(void)
{
	/*
	 * No new requests first, then no socket-release callbacks (they would
	 * look at per-namespace data the pernet exit frees), then unhook, wait
	 * one grace period for every namespace at once, and say goodbye to
	 * every subscriber. Last, the RCU callbacks that free subscribers and
	 * sets must have run.
	 */
	nfwatch_genl_unregister();
	nfwatch_notifier_unregister();
	unregister_pernet_subsys(&nfwatch_net_ops);
	rcu_barrier();
	nfwatch_flows_exit();
	pr_info("unloaded\n");
}

module_init(nfwatch_init);
module_exit(nfwatch_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("nfwatch developers");
MODULE_DESCRIPTION("Record packets sent from watched source prefixes, over Generic Netlink");
MODULE_ALIAS_GENL_FAMILY(NFWATCH_GENL_NAME);
MODULE_VERSION(NFWATCH_VERSION);
