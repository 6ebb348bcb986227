// SPDX-License-Identifier: GPL-2.0
/*
 * The Generic Netlink family: requests from user space, replies, and the
 * messages the module sends on its own (record batches, shutdown).
 */
#include <net/genetlink.h>
#include "compat.h"
#include "nfwatch.h"
#include "version.h"

static struct genl_family nfwatch_family;

static const struct nla_policy nfwatch_prefix_policy[NFWATCH_PREFIX_A_MAX + 1] = {
	[NFWATCH_PREFIX_A_IPV4] = NLA_POLICY_EXACT_LEN(4),
	[NFWATCH_PREFIX_A_IPV6] = NLA_POLICY_EXACT_LEN(16),
	[NFWATCH_PREFIX_A_LEN] = NLA_POLICY_MAX(NLA_U8, 128),
};

/* Attributes only the kernel sends are absent here, so requests may not carry them. */
static const struct nla_policy nfwatch_policy[NFWATCH_A_MAX + 1] = {
	[NFWATCH_A_PREFIXES] = NLA_POLICY_NESTED_ARRAY(nfwatch_prefix_policy),
};

/* One NFWATCH_A_PREFIX entry into @out; the policy has checked sizes already. */
static int parse_prefix(const struct nlattr *entry, struct nfwatch_prefix *out,
			struct netlink_ext_ack *extack)
{
	struct nlattr *tb[NFWATCH_PREFIX_A_MAX + 1];
	const struct nlattr *addr;
	int err;

	if (nla_type(entry) != NFWATCH_A_PREFIX) {
		NL_SET_ERR_MSG_ATTR(extack, entry, "prefix entries must be of type NFWATCH_A_PREFIX");
		return -EINVAL;
	}
	err = nla_parse_nested(tb, NFWATCH_PREFIX_A_MAX, entry, nfwatch_prefix_policy, extack);
	if (err)
		return err;
	if (!!tb[NFWATCH_PREFIX_A_IPV4] == !!tb[NFWATCH_PREFIX_A_IPV6]) {
		NL_SET_ERR_MSG_ATTR(extack, entry, "a prefix needs exactly one of NFWATCH_PREFIX_A_IPV4 and NFWATCH_PREFIX_A_IPV6");
		return -EINVAL;
	}
	if (!tb[NFWATCH_PREFIX_A_LEN]) {
		NL_SET_ERR_MSG_ATTR(extack, entry, "a prefix needs NFWATCH_PREFIX_A_LEN");
		return -EINVAL;
	}
	addr = tb[NFWATCH_PREFIX_A_IPV4] ?: tb[NFWATCH_PREFIX_A_IPV6];
	out->family = tb[NFWATCH_PREFIX_A_IPV4] ? AF_INET : AF_INET6;
	out->len = nla_get_u8(tb[NFWATCH_PREFIX_A_LEN]);
	memset(out->addr, 0, sizeof(out->addr));
	memcpy(out->addr, nla_data(addr), nla_len(addr));
	if (out->family == AF_INET && out->len > 32) {
		NL_SET_ERR_MSG_ATTR(extack, tb[NFWATCH_PREFIX_A_LEN], "IPv4 prefix length is more than 32");
		return -EINVAL;
	}
	if (nfwatch_prefix_has_host_bits(out)) {
		NL_SET_ERR_MSG_ATTR(extack, addr, "prefix has bits set past its length");
		return -EINVAL;
	}
	return 0;
}

static int parse_prefixes(const struct nlattr *list, struct nfwatch_prefix **out,
			  unsigned int *count, struct netlink_ext_ack *extack)
{
	struct nfwatch_prefix *prefixes;
	const struct nlattr *entry;
	unsigned int n = 0;
	int rem, err;

	nla_for_each_nested(entry, list, rem)
		n++;
	if (!n) {
		NL_SET_ERR_MSG_ATTR(extack, list, "the prefix set is empty");
		return -EINVAL;
	}
	if (n > NFWATCH_MAX_PREFIXES) {
		NL_SET_ERR_MSG_ATTR(extack, list, "more than NFWATCH_MAX_PREFIXES (1024) prefixes");
		return -E2BIG;
	}
	prefixes = kvmalloc_array(n, sizeof(*prefixes), GFP_KERNEL);
	if (!prefixes)
		return -ENOMEM;
	n = 0;
	nla_for_each_nested(entry, list, rem) {
		err = parse_prefix(entry, &prefixes[n++], extack);
		if (err) {
			kvfree(prefixes);
			return err;
		}
	}
	*out = prefixes;
	*count = n;
	return 0;
}

static int nfwatch_cmd_subscribe(struct sk_buff *skb, struct genl_info *info)
{
	struct nfwatch_prefix_set *set;
	struct nfwatch_prefix *prefixes;
	unsigned int n;
	int err;

	if (!info->attrs[NFWATCH_A_PREFIXES]) {
		NL_SET_ERR_MSG(info->extack, "SUBSCRIBE needs NFWATCH_A_PREFIXES");
		return -EINVAL;
	}
	err = parse_prefixes(info->attrs[NFWATCH_A_PREFIXES], &prefixes, &n, info->extack);
	if (err)
		return err;
	set = nfwatch_set_build(prefixes, n);
	kvfree(prefixes);
	if (!set)
		return -ENOMEM;
	/* NETLINK_CB(skb).sk is the requesting socket, the batches' destination. */
	err = nfwatch_subscribe(genl_info_net(info), NETLINK_CB(skb).sk, info->snd_portid, set,
				info->extack);
	if (err)
		nfwatch_set_free(set);
	return err;
}

static int put_stat(struct sk_buff *skb, int type, u64 value)
{
	return nla_put_u64_64bit(skb, type, value, NFWATCH_STAT_PAD);
}

static int put_own_stats(struct sk_buff *skb, const struct nfwatch_sub_stats *s)
{
	struct nlattr *nest = nla_nest_start(skb, NFWATCH_A_STATS_OWN);

	if (!nest ||
	    put_stat(skb, NFWATCH_STAT_MATCHED, s->matched) ||
	    put_stat(skb, NFWATCH_STAT_DELIVERED, s->delivered) ||
	    put_stat(skb, NFWATCH_STAT_LOST, s->lost) ||
	    put_stat(skb, NFWATCH_STAT_BATCHES, s->batches) ||
	    put_stat(skb, NFWATCH_STAT_PREFIXES, s->prefixes))
		return -EMSGSIZE;
	nla_nest_end(skb, nest);
	return 0;
}

static int put_global_stats(struct sk_buff *skb, struct net *net)
{
	struct nfwatch_ns_stats s;
	unsigned int nsubs;
	struct nlattr *nest;

	nfwatch_ns_stats(net, &s, &nsubs);
	nest = nla_nest_start(skb, NFWATCH_A_STATS_GLOBAL);
	if (!nest ||
	    put_stat(skb, NFWATCH_STAT_SEEN, s.seen) ||
	    put_stat(skb, NFWATCH_STAT_MATCHED, s.matched) ||
	    put_stat(skb, NFWATCH_STAT_DELIVERED, s.delivered) ||
	    put_stat(skb, NFWATCH_STAT_LOST, s.lost) ||
	    put_stat(skb, NFWATCH_STAT_MALFORMED, s.malformed) ||
	    put_stat(skb, NFWATCH_STAT_BATCHES, s.batches) ||
	    put_stat(skb, NFWATCH_STAT_SUBSCRIBERS, nsubs))
		return -EMSGSIZE;
	if (net_eq(net, &init_net) &&
	    (put_stat(skb, NFWATCH_STAT_LIVE_SUBSCRIBERS, atomic_read(&nfwatch_live.subscribers)) ||
	     put_stat(skb, NFWATCH_STAT_LIVE_SETS, atomic_read(&nfwatch_live.sets)) ||
	     put_stat(skb, NFWATCH_STAT_LIVE_BATCHES, atomic_read(&nfwatch_live.batches)) ||
	     put_stat(skb, NFWATCH_STAT_LIVE_PAGES, atomic_read(&nfwatch_live.pages))))
		return -EMSGSIZE;
	nla_nest_end(skb, nest);
	return 0;
}

/* A reply to @info holding the caller's own counters and optionally the namespace's. */
static int reply_stats(struct genl_info *info, u8 cmd, const struct nfwatch_sub_stats *own,
		       bool global)
{
	struct sk_buff *msg = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	void *hdr;

	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &nfwatch_family, 0, cmd);
	if (!hdr ||
	    (global && put_global_stats(msg, genl_info_net(info))) ||
	    (own && put_own_stats(msg, own))) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

static int nfwatch_cmd_unsubscribe(struct sk_buff *skb, struct genl_info *info)
{
	struct nfwatch_sub_stats final;
	int err;

	err = nfwatch_unsubscribe(genl_info_net(info), info->snd_portid, &final);
	if (err) {
		NL_SET_ERR_MSG(info->extack, "this socket holds no subscription");
		return err;
	}
	return reply_stats(info, NFWATCH_CMD_UNSUBSCRIBE, &final, false);
}

static int nfwatch_cmd_get_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct nfwatch_sub_stats own;
	bool subscribed = nfwatch_own_stats(genl_info_net(info), info->snd_portid, &own);

	return reply_stats(info, NFWATCH_CMD_GET_STATS, subscribed ? &own : NULL, true);
}

/* Reading what a host sends is private: CAP_NET_ADMIN over the namespace. */
static const struct genl_ops nfwatch_ops[] = {
	{
		.cmd = NFWATCH_CMD_SUBSCRIBE,
		.doit = nfwatch_cmd_subscribe,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = NFWATCH_CMD_UNSUBSCRIBE,
		.doit = nfwatch_cmd_unsubscribe,
		.flags = GENL_UNS_ADMIN_PERM,
	},
	{
		.cmd = NFWATCH_CMD_GET_STATS,
		.doit = nfwatch_cmd_get_stats,
		.flags = GENL_UNS_ADMIN_PERM,
	},
};

static struct genl_family nfwatch_family __ro_after_init = {
	.name = NFWATCH_GENL_NAME,
	.version = NFWATCH_FAMILY_VERSION,
	.maxattr = NFWATCH_A_MAX,
	.policy = nfwatch_policy,
	.netnsok = true,
	.module = THIS_MODULE,
	.ops = nfwatch_ops,
	.n_ops = ARRAY_SIZE(nfwatch_ops),
	NFWATCH_GENL_RESV_START_OP(NFWATCH_CMD_SUBSCRIBE)
};

int nfwatch_genl_register(void)
{
	return genl_register_family(&nfwatch_family);
}

void nfwatch_genl_unregister(void)
{
	genl_unregister_family(&nfwatch_family);
}

/* A batch's attributes before its records. */
static unsigned int batch_header_size(void)
{
	return 2 * nla_total_size_64bit(sizeof(u64)) + nla_total_size(sizeof(u32)) + NLA_HDRLEN;
}

/* Records that fit a batch of @bytes next to its header attributes. */
unsigned int nfwatch_batch_capacity(unsigned int bytes)
{
	return (bytes - batch_header_size()) / sizeof(struct nfwatch_record);
}

/*
 * A new, empty batch: the headers only, in the skb's head. SEQ and LOST
 * are reserved now and filled in when the batch is sent; RECORDS is opened
 * last, and its records go in page frags (delivery.c).
 */
struct sk_buff *nfwatch_batch_new(u32 portid, gfp_t gfp, struct nlattr **seq,
				  struct nlattr **lost, struct nlattr **records)
{
	struct sk_buff *skb = genlmsg_new(batch_header_size(), gfp);
	void *hdr;

	if (!skb)
		return NULL;
	hdr = genlmsg_put(skb, 0, 0, &nfwatch_family, 0, NFWATCH_CMD_RECORDS);
	if (!hdr)
		goto err;
	*seq = nla_reserve_64bit(skb, NFWATCH_A_BATCH_SEQ, sizeof(u64), NFWATCH_A_PAD);
	*lost = nla_reserve_64bit(skb, NFWATCH_A_BATCH_LOST, sizeof(u64), NFWATCH_A_PAD);
	if (!*seq || !*lost ||
	    nla_put_u32(skb, NFWATCH_A_RECORD_SIZE, sizeof(struct nfwatch_record)))
		goto err;
	*records = nla_nest_start_noflag(skb, NFWATCH_A_RECORDS);
	if (!*records)
		goto err;
	return skb;
err:
	kfree_skb(skb);
	return NULL;
}

/* Seal and send a batch; the skb is consumed either way. Never sleeps. */
int nfwatch_batch_send(struct net *net, struct sk_buff *skb, u32 portid,
		       struct nlattr *seq_attr, u64 seq, struct nlattr *lost_attr,
		       u64 lost, struct nlattr *records)
{
	put_unaligned(seq, (u64 *)nla_data(seq_attr));
	put_unaligned(lost, (u64 *)nla_data(lost_attr));
	/* RECORDS ends the message; the lengths count the records in the frags. */
	records->nla_len = skb_tail_pointer(skb) - (unsigned char *)records + skb->data_len;
	nlmsg_hdr(skb)->nlmsg_len = skb->len;
	return genlmsg_unicast(net, skb, portid);
}

/* Best effort: if the subscriber's buffer is full it learns from DELFAMILY. */
void nfwatch_notify_shutdown(struct net *net, u32 portid,
			     const struct nfwatch_sub_stats *final)
{
	struct sk_buff *msg = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	void *hdr;

	if (!msg)
		return;
	hdr = genlmsg_put(msg, 0, 0, &nfwatch_family, 0, NFWATCH_CMD_SHUTDOWN);
	if (!hdr || put_own_stats(msg, final)) {
		nlmsg_free(msg);
		return;
	}
	genlmsg_end(msg, hdr);
	genlmsg_unicast(net, msg, portid);
}
