// SPDX-License-Identifier: GPL-2.0
/*
 * The Generic Netlink family: requests from user space, replies, and the
 * messages the module sends on its own (record batches, shutdown).
 */
#include <linux/slab.h>
#include <linux/user_namespace.h>
#include <net/genetlink.h>
#include <net/sock.h>
#include "compat.h"
#include "nfwatch.h"
#include "version.h"

static struct genl_family nfwatch_family;

static const struct nla_policy nfwatch_prefix_policy[NFWATCH_PREFIX_A_MAX + 1] = {
	[NFWATCH_PREFIX_A_IPV4] = NLA_POLICY_EXACT_LEN(4),
	[NFWATCH_PREFIX_A_IPV6] = NLA_POLICY_EXACT_LEN(16),
	[NFWATCH_PREFIX_A_LEN] = NLA_POLICY_MAX(NLA_U8, 128),
};

static const struct nla_policy nfwatch_cgroup_policy[NFWATCH_CGROUP_A_MAX + 1] = {
	[NFWATCH_CGROUP_A_ID] = { .type = NLA_U64 },
	[NFWATCH_CGROUP_A_LEVEL] = { .type = NLA_U16 },
};

static struct netlink_range_validation nfwatch_timeout_range = {
	.min = 1,
	.max = NFWATCH_MAX_TIMEOUT_MS,
};

static struct netlink_range_validation nfwatch_max_flows_range = {
	.min = 1,
	.max = NFWATCH_MAX_FLOWS,
};

static const struct nla_policy nfwatch_flows_policy[NFWATCH_FLOWS_A_MAX + 1] = {
	[NFWATCH_FLOWS_A_INACTIVE_MS] = NLA_POLICY_FULL_RANGE(NLA_U32, &nfwatch_timeout_range),
	[NFWATCH_FLOWS_A_ACTIVE_MS] = NLA_POLICY_FULL_RANGE(NLA_U32, &nfwatch_timeout_range),
	[NFWATCH_FLOWS_A_MAX_FLOWS] = NLA_POLICY_FULL_RANGE(NLA_U32, &nfwatch_max_flows_range),
};

/* Attributes only the kernel sends are absent here, so requests may not carry them. */
static const struct nla_policy nfwatch_policy[NFWATCH_A_MAX + 1] = {
	[NFWATCH_A_PREFIXES] = NLA_POLICY_NESTED_ARRAY(nfwatch_prefix_policy),
	/* Entries are u32s, not nests: checked by parse_uids(). */
	[NFWATCH_A_UIDS] = { .type = NLA_NESTED },
	[NFWATCH_A_CGROUPS] = NLA_POLICY_NESTED_ARRAY(nfwatch_cgroup_policy),
	[NFWATCH_A_ALL_NETNS] = { .type = NLA_FLAG },
	/* Entries are strings, not nests: checked by parse_comms(). */
	[NFWATCH_A_COMMS] = { .type = NLA_NESTED },
	[NFWATCH_A_FLOWS] = NLA_POLICY_NESTED(nfwatch_flows_policy),
};

static u32 u32_or(const struct nlattr *attr, u32 absent)
{
	return attr ? nla_get_u32(attr) : absent;
}

/* NFWATCH_A_FLOWS into @config, with ipt-netflow's defaults for what it leaves out. */
static int parse_flows(const struct nlattr *nest, struct nfwatch_flow_config *config,
		       struct netlink_ext_ack *extack)
{
	struct nlattr *tb[NFWATCH_FLOWS_A_MAX + 1];
	int err = nla_parse_nested(tb, NFWATCH_FLOWS_A_MAX, nest, nfwatch_flows_policy, extack);

	if (err)
		return err;
	config->inactive_ms = u32_or(tb[NFWATCH_FLOWS_A_INACTIVE_MS], 15000);
	config->active_ms = u32_or(tb[NFWATCH_FLOWS_A_ACTIVE_MS], 1800000);
	config->max_flows = u32_or(tb[NFWATCH_FLOWS_A_MAX_FLOWS], 65536);
	return 0;
}

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

/* Entries of @list, which must be 1..NFWATCH_MAX_FILTERS of type @type. */
static int count_filter_entries(const struct nlattr *list, int type,
				struct netlink_ext_ack *extack)
{
	const struct nlattr *entry;
	int rem, n = 0;

	nla_for_each_nested(entry, list, rem) {
		if (nla_type(entry) != type) {
			NL_SET_ERR_MSG_ATTR(extack, entry, "filter entries must be of type 1");
			return -EINVAL;
		}
		n++;
	}
	if (!n) {
		NL_SET_ERR_MSG_ATTR(extack, list, "the filter is empty");
		return -EINVAL;
	}
	if (n > NFWATCH_MAX_FILTERS) {
		NL_SET_ERR_MSG_ATTR(extack, list, "more than NFWATCH_MAX_FILTERS (64) entries");
		return -E2BIG;
	}
	return n;
}

/* uids as the requesting socket's opener sees them, as records show them. */
static int parse_uids(const struct nlattr *list, struct user_namespace *ns,
		      struct nfwatch_filter *filter, struct netlink_ext_ack *extack)
{
	const struct nlattr *entry;
	int rem, n = count_filter_entries(list, NFWATCH_A_UID, extack);

	if (n < 0)
		return n;
	nla_for_each_nested(entry, list, rem) {
		kuid_t kuid;

		if (nla_len(entry) != sizeof(u32)) {
			NL_SET_ERR_MSG_ATTR(extack, entry, "a uid is a u32");
			return -EINVAL;
		}
		kuid = make_kuid(ns, nla_get_u32(entry));
		if (!uid_valid(kuid)) {
			NL_SET_ERR_MSG_ATTR(extack, entry, "the uid has no mapping in this user namespace");
			return -EINVAL;
		}
		filter->uids[filter->nuids++] = kuid;
	}
	return 0;
}

static int parse_cgroups(const struct nlattr *list, struct nfwatch_filter *filter,
			 struct netlink_ext_ack *extack)
{
	const struct nlattr *entry;
	int rem, err, n = count_filter_entries(list, NFWATCH_A_CGROUP, extack);

	if (n < 0)
		return n;
	nla_for_each_nested(entry, list, rem) {
		struct nlattr *tb[NFWATCH_CGROUP_A_MAX + 1];

		err = nla_parse_nested(tb, NFWATCH_CGROUP_A_MAX, entry, nfwatch_cgroup_policy,
				       extack);
		if (err)
			return err;
		if (!tb[NFWATCH_CGROUP_A_ID] || !tb[NFWATCH_CGROUP_A_LEVEL]) {
			NL_SET_ERR_MSG_ATTR(extack, entry, "a cgroup needs NFWATCH_CGROUP_A_ID and NFWATCH_CGROUP_A_LEVEL");
			return -EINVAL;
		}
		filter->cgroups[filter->ncgroups].id = nla_get_u64(tb[NFWATCH_CGROUP_A_ID]);
		filter->cgroups[filter->ncgroups].level = nla_get_u16(tb[NFWATCH_CGROUP_A_LEVEL]);
		filter->ncgroups++;
	}
	return 0;
}

/* Command names as the kernel keeps them: 1..TASK_COMM_LEN - 1 bytes and a NUL. */
static int parse_comms(const struct nlattr *list, struct nfwatch_filter *filter,
		       struct netlink_ext_ack *extack)
{
	const struct nlattr *entry;
	int rem, n = count_filter_entries(list, NFWATCH_A_COMM, extack);

	if (n < 0)
		return n;
	nla_for_each_nested(entry, list, rem) {
		int len = nla_len(entry);

		if (len < 2 || len > TASK_COMM_LEN || strnlen(nla_data(entry), len) != len - 1) {
			NL_SET_ERR_MSG_ATTR(extack, entry, "a command name is a NUL-terminated string of 1 to 15 bytes");
			return -EINVAL;
		}
		memcpy(filter->comms[filter->ncomms++], nla_data(entry), len);
	}
	return 0;
}

/* The request's owner filters into *@out: NULL when it has none. */
static int parse_filter(struct genl_info *info, struct user_namespace *ns,
			struct nfwatch_filter **out)
{
	const struct nlattr *uids = info->attrs[NFWATCH_A_UIDS];
	const struct nlattr *cgroups = info->attrs[NFWATCH_A_CGROUPS];
	const struct nlattr *comms = info->attrs[NFWATCH_A_COMMS];
	struct nfwatch_filter *filter;
	int err = 0;

	*out = NULL;
	if (!uids && !cgroups && !comms)
		return 0;
	filter = kzalloc(sizeof(*filter), GFP_KERNEL_ACCOUNT);
	if (!filter)
		return -ENOMEM;
	if (uids)
		err = parse_uids(uids, ns, filter, info->extack);
	if (!err && cgroups)
		err = parse_cgroups(cgroups, filter, info->extack);
	if (!err && comms)
		err = parse_comms(comms, filter, info->extack);
	if (err) {
		kfree(filter);
		return err;
	}
	*out = filter;
	return 0;
}

/*
 * Every namespace's packets are the host's: asked for from the initial
 * namespace, by a socket whose opener and sender both have CAP_NET_ADMIN
 * over the initial user namespace, as for the host's own.
 */
static int check_all_netns(struct sk_buff *skb, struct genl_info *info)
{
	if (!net_eq(genl_info_net(info), &init_net)) {
		NL_SET_ERR_MSG(info->extack, "NFWATCH_A_ALL_NETNS only from the initial network namespace");
		return -EPERM;
	}
	if (!netlink_capable(skb, CAP_NET_ADMIN)) {
		NL_SET_ERR_MSG(info->extack, "NFWATCH_A_ALL_NETNS needs CAP_NET_ADMIN in the initial user namespace");
		return -EPERM;
	}
	return 0;
}

static int nfwatch_cmd_subscribe(struct sk_buff *skb, struct genl_info *info)
{
	bool all_netns = nla_get_flag(info->attrs[NFWATCH_A_ALL_NETNS]);
	/* NETLINK_CB(skb).sk is the requesting socket, the batches' destination. */
	struct sock *sk = NETLINK_CB(skb).sk;
	struct nfwatch_flow_config flows;
	struct nfwatch_prefix_set *set;
	struct nfwatch_prefix *prefixes;
	struct nfwatch_filter *filter;
	unsigned int n;
	int err;

	if (!info->attrs[NFWATCH_A_PREFIXES]) {
		NL_SET_ERR_MSG(info->extack, "SUBSCRIBE needs NFWATCH_A_PREFIXES");
		return -EINVAL;
	}
	if (all_netns) {
		err = check_all_netns(skb, info);
		if (err)
			return err;
	}
	if (info->attrs[NFWATCH_A_FLOWS]) {
		err = parse_flows(info->attrs[NFWATCH_A_FLOWS], &flows, info->extack);
		if (err)
			return err;
	}
	err = parse_filter(info, sk_user_ns(sk), &filter);
	if (err)
		return err;
	err = parse_prefixes(info->attrs[NFWATCH_A_PREFIXES], &prefixes, &n, info->extack);
	if (err)
		goto free_filter;
	set = nfwatch_set_build(prefixes, n);
	kvfree(prefixes);
	if (!set) {
		err = -ENOMEM;
		goto free_filter;
	}
	err = nfwatch_subscribe(genl_info_net(info), sk, info->snd_portid, set, filter, all_netns,
				info->attrs[NFWATCH_A_FLOWS] ? &flows : NULL, info->extack);
	if (!err)
		return 0;
	nfwatch_set_free(set);
free_filter:
	kfree(filter);
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
	    put_stat(skb, NFWATCH_STAT_PREFIXES, s->prefixes) ||
	    put_stat(skb, NFWATCH_STAT_UNATTRIBUTED, s->unattributed) ||
	    put_stat(skb, NFWATCH_STAT_FLOWS, s->flows) ||
	    put_stat(skb, NFWATCH_STAT_FLOWS_EVICTED, s->flows_evicted) ||
	    put_stat(skb, NFWATCH_STAT_FLOWS_OPEN, s->flows_open))
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
	     put_stat(skb, NFWATCH_STAT_LIVE_PAGES, atomic_read(&nfwatch_live.pages)) ||
	     put_stat(skb, NFWATCH_STAT_LIVE_FLOWS, atomic_read(&nfwatch_live.flows))))
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

	err = nfwatch_unsubscribe(genl_info_net(info), NETLINK_CB(skb).sk, info->snd_portid,
				  &final);
	if (err) {
		NL_SET_ERR_MSG(info->extack, "this socket holds no subscription");
		return err;
	}
	return reply_stats(info, NFWATCH_CMD_UNSUBSCRIBE, &final, false);
}

static int nfwatch_cmd_get_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct nfwatch_sub_stats own;
	bool subscribed = nfwatch_own_stats(genl_info_net(info), NETLINK_CB(skb).sk,
					    info->snd_portid, &own);

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
	/* Not under genl_mutex: each namespace's requests are serialised by its own lock. */
	.parallel_ops = true,
	.module = THIS_MODULE,
	.ops = nfwatch_ops,
	.n_ops = ARRAY_SIZE(nfwatch_ops),
	/* .resv_start_op 0: every command is validated strictly. */
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

/* Records of @record_size that fit a batch of @bytes next to its header attributes. */
unsigned int nfwatch_batch_capacity(unsigned int bytes, size_t record_size)
{
	return (bytes - batch_header_size()) / record_size;
}

/*
 * A new, empty batch: the headers only, in the skb's head. SEQ and LOST
 * are reserved now and filled in when the batch is sent; RECORDS is opened
 * last, and its records go in page frags (delivery.c).
 */
struct sk_buff *nfwatch_batch_new(gfp_t gfp, bool flows, struct nlattr **seq,
				  struct nlattr **lost, struct nlattr **records)
{
	struct sk_buff *skb = genlmsg_new(batch_header_size(), gfp);
	void *hdr;

	if (!skb)
		return NULL;
	hdr = genlmsg_put(skb, 0, 0, &nfwatch_family, 0,
			  flows ? NFWATCH_CMD_FLOWS : NFWATCH_CMD_RECORDS);
	if (!hdr)
		goto err;
	*seq = nla_reserve_64bit(skb, NFWATCH_A_BATCH_SEQ, sizeof(u64), NFWATCH_A_PAD);
	*lost = nla_reserve_64bit(skb, NFWATCH_A_BATCH_LOST, sizeof(u64), NFWATCH_A_PAD);
	if (!*seq || !*lost ||
	    nla_put_u32(skb, NFWATCH_A_RECORD_SIZE,
			flows ? sizeof(struct nfwatch_flow) : sizeof(struct nfwatch_record)))
		goto err;
	*records = nla_nest_start_noflag(skb, NFWATCH_A_RECORDS);
	if (!*records)
		goto err;
	return skb;
err:
	kfree_skb(skb);
	return NULL;
}

/*
 * Queue @skb on the subscriber's own socket; consumed either way. Never
 * sleeps. Not netlink_unicast(): that looks the portid up, and netlink
 * frees a portid before NETLINK_URELEASE tells us its socket is gone, so
 * by then another socket may hold it. What this skips of netlink_unicast()
 * is the nlmon tap and the overrun report, which the batches' own loss
 * count replaces.
 */
static int nfwatch_unicast(struct sock *sk, struct sk_buff *skb)
{
	int err = -ECONNREFUSED;

	if (!sock_flag(sk, SOCK_DEAD))
		err = sock_queue_rcv_skb(sk, skb);
	if (err)
		kfree_skb(skb);
	return err;
}

/* Seal and send a batch; the skb is consumed either way. Never sleeps. */
int nfwatch_batch_send(struct sock *sk, struct sk_buff *skb, struct nlattr *seq_attr, u64 seq,
		       struct nlattr *lost_attr, u64 lost, struct nlattr *records)
{
	put_unaligned(seq, (u64 *)nla_data(seq_attr));
	put_unaligned(lost, (u64 *)nla_data(lost_attr));
	/* RECORDS ends the message; the lengths count the records in the frags. */
	records->nla_len = skb_tail_pointer(skb) - (unsigned char *)records + skb->data_len;
	nlmsg_hdr(skb)->nlmsg_len = skb->len;
	return nfwatch_unicast(sk, skb);
}

/* Best effort: if the subscriber's buffer is full it learns from DELFAMILY. */
void nfwatch_notify_shutdown(struct sock *sk, const struct nfwatch_sub_stats *final)
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
	nfwatch_unicast(sk, msg);
}
