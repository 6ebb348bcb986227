// SPDX-License-Identifier: GPL-2.0
/*
 * nfwatch: tell subscribers about every packet this host sends from the
 * source prefixes they watch. Module load/unload and parameters.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <net/genetlink.h>
#include "nfwatch.h"
#include "version.h"

unsigned int flush_interval_us = 5000;
module_param(flush_interval_us, uint, 0444);
MODULE_PARM_DESC(flush_interval_us,
		 "Longest a record waits in a partly filled batch, in microseconds (100..1000000, default 5000)");

unsigned int batch_bytes = 32000;
module_param(batch_bytes, uint, 0444);
MODULE_PARM_DESC(batch_bytes,
		 "Size of one batch message in bytes (1024..65000, default 32000)");

static bool selftest;
module_param(selftest, bool, 0444);
MODULE_PARM_DESC(selftest, "Run the self-tests at load and refuse to load if one fails");

struct nfwatch_live nfwatch_live;
unsigned int nfwatch_batch_records __read_mostly;
unsigned int nfwatch_net_id __read_mostly;

/* Every self-test runs, so one failing does not hide another. */
static bool nfwatch_selftests(void)
{
	bool prefixset = nfwatch_selftest_prefixset();
	bool hook = nfwatch_selftest_hook();

	return prefixset && hook;
}

static __net_init int nfwatch_net_init(struct net *net)
{
	return nfwatch_pernet_init_subs(nfwatch_pernet(net));
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

static int __init nfwatch_init(void)
{
	int err;

	flush_interval_us = clamp(flush_interval_us, 100U, 1000000U);
	batch_bytes = clamp(batch_bytes, 1024U, NFWATCH_BATCH_BYTES_MAX);
	/* A batch's records are page frags of one skb. */
	BUILD_BUG_ON(NFWATCH_BATCH_PAGES_MAX > MAX_SKB_FRAGS);
	nfwatch_batch_records = nfwatch_batch_capacity(batch_bytes);

	if (selftest && !nfwatch_selftests())
		return -ENOTRECOVERABLE;

	err = register_pernet_subsys(&nfwatch_net_ops);
	if (err)
		return err;
	err = nfwatch_notifier_register();
	if (err)
		goto err_pernet;
	err = nfwatch_genl_register();
	if (err)
		goto err_notifier;
	pr_info("nfwatch: loaded (flush_interval_us=%u batch_bytes=%u, %u records a batch)\n",
		flush_interval_us, batch_bytes, nfwatch_batch_records);
	return 0;

err_notifier:
	nfwatch_notifier_unregister();
err_pernet:
	unregister_pernet_subsys(&nfwatch_net_ops);
	return err;
}

static void __exit nfwatch_exit(void)
{
	/*
	 * No new requests first, then no socket-release callbacks (they would
	 * look at per-namespace data the pernet exit frees), then unhook, wait
	 * one grace period for every namespace at once, and say goodbye to
	 * every subscriber. The module queues no RCU callbacks, so there is
	 * nothing more to wait for.
	 */
	nfwatch_genl_unregister();
	nfwatch_notifier_unregister();
	unregister_pernet_subsys(&nfwatch_net_ops);
	pr_info("nfwatch: unloaded\n");
}

module_init(nfwatch_init);
module_exit(nfwatch_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("nfwatch developers");
MODULE_DESCRIPTION("Record packets sent from watched source prefixes, over Generic Netlink");
MODULE_ALIAS_GENL_FAMILY(NFWATCH_GENL_NAME);
MODULE_VERSION(NFWATCH_VERSION);
