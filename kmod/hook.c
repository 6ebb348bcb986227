// SPDX-License-Identifier: GPL-2.0
/*
 * The Netfilter hook at LOCAL_OUT and the packet parser.
 *
 * The hook runs last (after any OUTPUT rule may have rerouted the packet)
 * so the route attached to the skb is the one the packet leaves by. It
 * never changes, drops or delays a packet: every path returns NF_ACCEPT.
 * Headers are read with skb_header_pointer(), or in place after checking
 * they are in the skb's head, since nothing says the skb is linear. The
 * buffers it copies into are left out of the kernel's zeroing of locals
 * (__uninitialized): it fills them whole or fails, and this path runs for
 * every packet sent.
 *
 * A packet a VRF routes crosses LOCAL_OUT twice, once with the VRF device
 * as its output and once with the device it leaves by (l3mdev): it is
 * recorded on the second. A packet to one of the VRF's own addresses has a
 * local route whose device is the VRF device, which loops it back: it
 * crosses LOCAL_OUT once, and is recorded there with the VRF device, as
 * the default VRF's local traffic is with lo.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/netfilter.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6.h>
#include <linux/rculist.h>
#include <linux/sched/task_stack.h>
#include <net/inet_sock.h>
#include <net/ip6_route.h>
#include <net/ipv6.h>
#include <net/xfrm.h>
#include <asm/word-at-a-time.h>
#include "compat.h"
#include "nfwatch.h"

static void count_malformed(struct nfwatch_net *nn)
{
	nfwatch_ns_count(nn, malformed, 1);
}

static bool has_ports(u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
	case IPPROTO_SCTP:
	case IPPROTO_DCCP:
		return true;
	}
	return false;
}

/* Ports or ICMP type/code from the L4 header at @off; false if truncated. */
static bool parse_l4(const struct sk_buff *skb, int off, struct nfwatch_record *rec)
{
	u8 buf[4] __uninitialized;
	const u8 *l4;

	if (has_ports(rec->proto)) {
		l4 = skb_header_pointer(skb, off, 4, buf);
		if (!l4)
			return false;
		rec->sport = get_unaligned_be16(l4);
		rec->dport = get_unaligned_be16(l4 + 2);
		rec->flags |= NFWATCH_F_PORTS;
	} else if ((rec->family == AF_INET && rec->proto == IPPROTO_ICMP) ||
		   (rec->family == AF_INET6 && rec->proto == IPPROTO_ICMPV6)) {
		l4 = skb_header_pointer(skb, off, 2, buf);
		if (!l4)
			return false;
		rec->icmp_type = l4[0];
		rec->icmp_code = l4[1];
		rec->flags |= NFWATCH_F_ICMP;
	}
	return true;
}

/* Returns the L4 offset, or -1 if the IPv4 header is bad. */
static int parse_ipv4(const struct sk_buff *skb, struct nfwatch_record *rec)
{
	int nhoff = skb_network_offset(skb);
	struct iphdr _iph __uninitialized;
	const struct iphdr *iph = skb_header_pointer(skb, nhoff, sizeof(_iph), &_iph);

	if (!iph || iph->version != 4 || iph->ihl < 5)
		return -1;
	memcpy(rec->saddr, &iph->saddr, 4);
	memcpy(rec->daddr, &iph->daddr, 4);
	rec->proto = iph->protocol;
	if (ntohs(iph->frag_off) & IP_OFFSET)
		rec->flags |= NFWATCH_F_FRAG;
	return nhoff + iph->ihl * 4;
}

#if IS_ENABLED(CONFIG_IPV6)
/*
 * Past the extension headers. A non-first fragment ends the chain at its
 * fragment header, whose next header is the fragmented packet's protocol,
 * as IPv4 reports it. Returns the offset of what follows, or -1 if a
 * header is cut short.
 */
static int skip_ipv6_exthdrs(const struct sk_buff *skb, int off, struct nfwatch_record *rec)
{
	u8 nexthdr = rec->proto;

	while (ipv6_ext_hdr(nexthdr) && nexthdr != NEXTHDR_NONE) {
		struct frag_hdr _hdr __uninitialized;
		const struct frag_hdr *hp;

		/* An extension header's first 8 bytes: a fragment header's whole. */
		BUILD_BUG_ON(sizeof(_hdr) != 8);
		hp = skb_header_pointer(skb, off, sizeof(_hdr), &_hdr);
		if (!hp)
			return -1;
		if (nexthdr == NEXTHDR_FRAGMENT) {
			off += sizeof(*hp);
			if (ntohs(hp->frag_off) & IP6_OFFSET) {
				rec->flags |= NFWATCH_F_FRAG;
				nexthdr = hp->nexthdr;
				break;
			}
		} else if (nexthdr == NEXTHDR_AUTH) {
			off += ipv6_authlen((const struct ipv6_opt_hdr *)hp);
		} else {
			off += ipv6_optlen((const struct ipv6_opt_hdr *)hp);
		}
		nexthdr = hp->nexthdr;
	}
	rec->proto = nexthdr;
	return off;
}

/*
 * Returns the L4 offset, or -1 if the IPv6 header chain is bad. A chain
 * that ends in NO-NEXT-HEADER is a packet of protocol 59.
 */
static int parse_ipv6(const struct sk_buff *skb, struct nfwatch_record *rec)
{
	int nhoff = skb_network_offset(skb);
	struct ipv6hdr _ip6h __uninitialized;
	const struct ipv6hdr *ip6h = skb_header_pointer(skb, nhoff, sizeof(_ip6h), &_ip6h);

	if (!ip6h || ip6h->version != 6)
		return -1;
	memcpy(rec->saddr, &ip6h->saddr, 16);
	memcpy(rec->daddr, &ip6h->daddr, 16);
	rec->proto = ip6h->nexthdr;
	return skip_ipv6_exthdrs(skb, nhoff + sizeof(*ip6h), rec);
}
#endif

/*
 * Past an IPsec bundle (xfrm_dst), the route the packet leaves by is the
 * bundle's path, and its outer header goes to the last transform's remote
 * end (the peer itself in transport mode, the tunnel's end in tunnel
 * mode), in that state's family: what the next hop is looked up for.
 */
static const struct dst_entry *leaving_route(const struct dst_entry *dst, const void **daddr,
					     u8 *family)
{
#ifdef CONFIG_XFRM
	for (; dst && dst->xfrm; dst = xfrm_dst_child(dst)) {
		*daddr = &dst->xfrm->id.daddr;
		*family = dst->xfrm->props.family;
	}
#endif
	return dst;
}

/*
 * A device's name into a record, NUL-padded: no stale bytes of a longer,
 * older name. A word at a time, as strscpy() reads: strscpy_pad() took
 * some 90 instructions of every packet recorded, this takes a tenth. A
 * name is NUL-terminated within IFNAMSIZ; one being renamed under us may
 * not be, and is cut at its last byte as strscpy() would.
 */
static void copy_ifname(char *dst, const char *name)
{
	const struct word_at_a_time constants = WORD_AT_A_TIME_CONSTANTS;
	unsigned int i;

	BUILD_BUG_ON(IFNAMSIZ % sizeof(unsigned long));
	for (i = 0; i < IFNAMSIZ; i += sizeof(unsigned long)) {
		unsigned long c = get_unaligned((const unsigned long *)(name + i));
		unsigned long zeros;

		if (has_zero(c, &zeros, &constants)) {
			zeros = prep_zero_mask(c, zeros, &constants);
			c &= zero_bytemask(create_zero_mask(zeros));
			put_unaligned(c, (unsigned long *)(dst + i));
			memset(dst + i + sizeof(c), 0, IFNAMSIZ - i - sizeof(c));
			return;
		}
		put_unaligned(c, (unsigned long *)(dst + i));
	}
	dst[IFNAMSIZ - 1] = '\0';
}

/*
 * The device of the route the packet carries, which is the one it leaves
 * by: an OUTPUT rule that re-routes it (a mark and policy routing, DNAT)
 * replaces the route but not @out, the device of the first route.
 */
static void fill_route(const struct sk_buff *skb, const struct net_device *out,
		       struct nfwatch_record *rec)
{
	const void *daddr = rec->daddr;
	u8 family = rec->family;
	const struct dst_entry *dst = leaving_route(skb_dst(skb), &daddr, &family);

	if (dst && dst->dev)
		out = dst->dev;
	BUILD_BUG_ON(sizeof(rec->ifname) != IFNAMSIZ);
	if (out) {
		rec->ifindex = out->ifindex;
		copy_ifname(rec->ifname, out->name);
	}
	if (!dst)
		return;
	if (family == AF_INET) {
		rec->nh_family = nfwatch_rt4_gateway(nfwatch_dst_rt4(dst), rec->nexthop);
		if (!rec->nh_family) {
			rec->nh_family = AF_INET;
			memcpy(rec->nexthop, daddr, 4);
		}
		return;
	}
#if IS_ENABLED(CONFIG_IPV6)
	rec->nh_family = AF_INET6;
	memcpy(rec->nexthop, rt6_nexthop(nfwatch_dst_rt6(dst), daddr), 16);
#endif
}

static int parse_ip(const struct sk_buff *skb, struct nfwatch_record *rec)
{
#if IS_ENABLED(CONFIG_IPV6)
	if (rec->family == AF_INET6)
		return parse_ipv6(skb, rec);
#endif
	return parse_ipv4(skb, rec);
}

enum parse_result {
	PARSE_OK,
	PARSE_L4_TRUNCATED,	/* reported, without ports or ICMP fields */
	PARSE_BAD_IP,		/* not reported */
};

/*
 * The inode of @sk's file, as sock_i_ino() reads it but without its lock:
 * under RCU (Netfilter's) the struct socket, freed with its inode after a
 * grace period, stays readable when close() orphans @sk under us. Socket
 * inode numbers come from get_next_ino(): 32 bits.
 */
static u32 sk_socket_ino(const struct sock *sk)
{
	struct socket *sock = READ_ONCE(sk->sk_socket);

	return sock ? SOCK_INODE(sock)->i_ino : 0;
}

/*
 * The socket owning the packet, and what the record says of it that every
 * subscriber sees alike.
 */
static void parse_owner(const struct nf_hook_state *state, struct nfwatch_packet *pkt)
{
	const struct sock *sk = pkt->sk;

	pkt->rec.netns = state->net->ns.inum;
	if (!sk)
		return;
	pkt->cookie = nfwatch_sk_cookie(sk);
	pkt->rec.sock_ino = sk_socket_ino(sk);
	pkt->cgroup = nfwatch_sk_cgroup(sk);
	if (pkt->cgroup) {
		pkt->rec.cgroup_id = cgroup_id(pkt->cgroup);
		pkt->rec.flags |= NFWATCH_F_CGROUP;
	}
	/*
	 * A process's own send reaches LOCAL_OUT with bottom halves on and
	 * the hook state on its stack. With them off, the hook runs in
	 * softirq or inside a device's transmit path (a VRF's or a tunnel's
	 * qdisc, run by whichever task got to it); a packet an NFQUEUE
	 * verdict re-injects comes with its state from the queue's entry, in
	 * the verdict program's context: neither is the sender's.
	 */
	pkt->in_sender_task = !in_interrupt() && !(current->flags & PF_KTHREAD) &&
			      object_is_on_stack(state);
}

/* Everything but the source (already read) and the per-subscriber uid, pid and comm. */
static enum parse_result parse_packet(const struct sk_buff *skb, const struct nf_hook_state *state,
			 struct nfwatch_packet *pkt)
{
	struct nfwatch_record *rec = &pkt->rec;
	const struct sock *sk;
	int l4off;

	l4off = parse_ip(skb, rec);
	if (l4off < 0)
		return PARSE_BAD_IP;
	rec->ts_ns = ktime_get_real_ns();
	rec->len = skb->len - skb_network_offset(skb);
	rec->segs = skb_is_gso(skb) ? max_t(u16, skb_shinfo(skb)->gso_segs, 1) : 1;
	fill_route(skb, state->out, rec);

	sk = skb_to_full_sk(skb);
	pkt->sk = sk && sk_fullsock(sk) ? sk : NULL;
	parse_owner(state, pkt);

	if (rec->flags & NFWATCH_F_FRAG || parse_l4(skb, l4off, rec))
		return PARSE_OK;
	return PARSE_L4_TRUNCATED;
}

/*
 * The ESP or AH packet IPsec made of a packet this host sent, crossing
 * LOCAL_OUT again after the transform (xfrm_output_resume()): the packet
 * was recorded as the application sent it, on its first pass, with the
 * device and next hop the transformed packet leaves by. Forwarded traffic
 * (no socket) crosses LOCAL_OUT only once transformed, and is recorded so.
 */
static bool ipsec_transformed(const struct sk_buff *skb, u8 family)
{
	if (!skb->sk)
		return false;
#if IS_ENABLED(CONFIG_IPV6)
	if (family == AF_INET6)
		return IP6CB(skb)->flags & IP6SKB_XFRM_TRANSFORMED;
#endif
	return IPCB(skb)->flags & IPSKB_XFRM_TRANSFORMED;
}

/*
 * The first of a VRF's two passes: @out is the VRF device and the VRF will
 * send the packet through LOCAL_OUT again by the device it leaves by. Only
 * a local route is not sent on (a VRF device's own dst, which it gives
 * the packet when its qdisc is not the default, is not local either).
 */
static bool vrf_diverted(const struct sk_buff *skb, const struct net_device *out, u8 family)
{
	const struct dst_entry *dst = skb_dst(skb);

	if (!out || !netif_is_l3_master(out))
		return false;
	if (!dst)
		return true;
#if IS_ENABLED(CONFIG_IPV6)
	if (family == AF_INET6)
		return !(nfwatch_dst_rt6(dst)->rt6i_flags & RTF_LOCAL);
#endif
	return skb_rtable(skb)->rt_type != RTN_LOCAL;
}

/* The first subscriber on @subs from @sub on whose set holds the IPv4 @src, or NULL. */
static struct nfwatch_sub *first_holder_v4(struct list_head *subs, struct nfwatch_sub *sub,
					   u32 src)
{
	list_for_each_entry_from_rcu(sub, subs, node)
		if (nfwatch_set_contains_v4(rcu_dereference(sub->set), cpu_to_be32(src)))
			return sub;
	return NULL;
}

/* The list @sub is on: its namespace's, or that of all namespaces. */
static struct list_head *subs_of(struct nfwatch_net *nn, const struct nfwatch_sub *sub)
{
	return sub->all_netns ? &nfwatch_all_subs : &nn->subs;
}

/*
 * Parse the packet once and deliver it to every subscriber from @first on
 * (on @first's list) whose set holds its source and whose owner filters it
 * passes. IPv6: @first's set holds it (the hook looked it up). IPv4:
 * @first's set only passed @v4_src through its /16 filter, and the lookup
 * is done here. Out of line: the packets nobody watches do not pay for its
 * stack, which the kernel zeroes at function entry.
 */
static noinline unsigned int record_packet(struct nfwatch_net *nn, struct nfwatch_sub *first,
					   struct sk_buff *skb,
					   const struct nf_hook_state *state, u8 family,
					   u32 v4_src)
{
	struct list_head *subs = subs_of(nn, first);
	struct nfwatch_packet pkt = {};
	struct nfwatch_sub *sub;
	enum parse_result res;

	if (family == AF_INET) {
		first = first_holder_v4(subs, first, v4_src);
		if (!first)
			return NF_ACCEPT;
	}
	if (vrf_diverted(skb, state->out, family) || ipsec_transformed(skb, family))
		return NF_ACCEPT;
	pkt.rec.family = family;
	res = parse_packet(skb, state, &pkt);
	if (res != PARSE_OK)
		count_malformed(nn);
	if (res == PARSE_BAD_IP)
		return NF_ACCEPT;
	nfwatch_ns_count(nn, matched, 1);
	sub = first;
	list_for_each_entry_from_rcu(sub, subs, node)
		if ((sub == first ||
		     nfwatch_set_contains(rcu_dereference(sub->set), family, pkt.rec.saddr)) &&
		    nfwatch_filter_passes(sub, &pkt))
			nfwatch_deliver(sub, &pkt);
	return NF_ACCEPT;
}

/*
 * Counts the packet; false if nobody here or in all namespaces subscribes:
 * the hooks stay registered once a namespace has had a subscriber, and
 * this is all an idle one costs. Inline by force: with the jump label in
 * it the compiler moves it out of line, behind the hook's register saves.
 */
static __always_inline bool hook_enter(struct nfwatch_net *nn)
{
	if (list_empty(&nn->subs) && !static_branch_unlikely(&nfwatch_all_netns_key))
		return false;
	nfwatch_ns_count(nn, seen, 1);
	return true;
}

/*
 * Each subscriber's set on @subs is asked first through its /16 filter,
 * inline; the first that passes @src hands the packet on for the lookup,
 * by a tail call.
 */
static __always_inline unsigned int hook_ipv4_subs(struct nfwatch_net *nn,
						   struct list_head *subs,
						   struct sk_buff *skb,
						   const struct nf_hook_state *state, u32 src)
{
	struct nfwatch_sub *sub;

	list_for_each_entry_rcu(sub, subs, node)
		if (nfwatch_v4_filter_passes(rcu_dereference(sub->set), src))
			return record_packet(nn, sub, skb, state, AF_INET, src);
	return NF_ACCEPT;
}

/* Out of line: only while someone subscribes to every namespace. */
static noinline unsigned int hook_ipv4_both(struct nfwatch_net *nn, struct sk_buff *skb,
					    const struct nf_hook_state *state, u32 src)
{
	hook_ipv4_subs(nn, &nn->subs, skb, state, src);
	return hook_ipv4_subs(nn, &nfwatch_all_subs, skb, state, src);
}

/* This namespace's subscribers, and those of all namespaces if any. */
static __always_inline unsigned int hook_ipv4_source(struct nfwatch_net *nn,
						     struct sk_buff *skb,
						     const struct nf_hook_state *state,
						     u32 src)
{
	if (static_branch_unlikely(&nfwatch_all_netns_key))
		return hook_ipv4_both(nn, skb, state, src);
	return hook_ipv4_subs(nn, &nn->subs, skb, state, src);
}

/* Out of line: an skb whose IPv4 source is not in its head is rare. */
static noinline unsigned int hook_ipv4_copied(struct nfwatch_net *nn, struct sk_buff *skb,
					      const struct nf_hook_state *state, int off)
{
	__be32 saddr;

	if (skb_copy_bits(skb, off, &saddr, sizeof(saddr))) {
		count_malformed(nn);
		return NF_ACCEPT;
	}
	return hook_ipv4_source(nn, skb, state, be32_to_cpu(saddr));
}

/*
 * Every IPv4 packet sent comes here, most of them watched by nobody: the
 * source is read in place when it is in the skb's head, and a packet that
 * every set's filter turns away costs no call. The parser reads the source
 * again from the header it copies.
 * @priv is this namespace's nfwatch_net: its hooks are registered with it.
 * Netfilter runs hooks under rcu_read_lock(), which covers the list and sets.
 */
static unsigned int nfwatch_hook_ipv4(void *priv, struct sk_buff *skb,
				      const struct nf_hook_state *state)
{
	int off = skb_network_offset(skb) + offsetof(struct iphdr, saddr);
	struct nfwatch_net *nn = priv;

	if (!hook_enter(nn))
		return NF_ACCEPT;
	if (unlikely((int)skb_headlen(skb) - off < (int)sizeof(__be32)))
		return hook_ipv4_copied(nn, skb, state, off);
	return hook_ipv4_source(nn, skb, state, get_unaligned_be32(skb->data + off));
}

#if IS_ENABLED(CONFIG_IPV6)
static void hook_ipv6_subs(struct nfwatch_net *nn, struct list_head *subs, struct sk_buff *skb,
			   const struct nf_hook_state *state, const u8 *saddr)
{
	struct nfwatch_sub *sub;

	list_for_each_entry_rcu(sub, subs, node) {
		if (nfwatch_set_contains(rcu_dereference(sub->set), AF_INET6, saddr)) {
			record_packet(nn, sub, skb, state, AF_INET6, 0);
			return;
		}
	}
}

/* As nfwatch_hook_ipv4(), for IPv6. */
static unsigned int nfwatch_hook_ipv6(void *priv, struct sk_buff *skb,
				      const struct nf_hook_state *state)
{
	int off = skb_network_offset(skb) + offsetof(struct ipv6hdr, saddr);
	struct nfwatch_net *nn = priv;
	const u8 *saddr;
	u8 buf[16] __uninitialized;

	if (!hook_enter(nn))
		return NF_ACCEPT;
	saddr = skb_header_pointer(skb, off, sizeof(buf), buf);
	if (!saddr) {
		count_malformed(nn);
		return NF_ACCEPT;
	}
	hook_ipv6_subs(nn, &nn->subs, skb, state, saddr);
	if (static_branch_unlikely(&nfwatch_all_netns_key))
		hook_ipv6_subs(nn, &nfwatch_all_subs, skb, state, saddr);
	return NF_ACCEPT;
}
#endif

static const struct nf_hook_ops nfwatch_hook_ops[NFWATCH_HOOKS] = {
	{
		.hook = nfwatch_hook_ipv4,
		.pf = NFPROTO_IPV4,
		.hooknum = NF_INET_LOCAL_OUT,
		.priority = NF_IP_PRI_LAST,
	},
#if IS_ENABLED(CONFIG_IPV6)
	{
		.hook = nfwatch_hook_ipv6,
		.pf = NFPROTO_IPV6,
		.hooknum = NF_INET_LOCAL_OUT,
		.priority = NF_IP6_PRI_LAST,
	},
#endif
};

/* @nn's own copy of the hooks, which hands @nn to every call. */
int nfwatch_hooks_register(struct net *net, struct nfwatch_net *nn)
{
	unsigned int i;

	for (i = 0; i < NFWATCH_HOOKS; i++) {
		nn->hook_ops[i] = nfwatch_hook_ops[i];
		nn->hook_ops[i].priv = nn;
	}
	return nf_register_net_hooks(net, nn->hook_ops, NFWATCH_HOOKS);
}

void nfwatch_hooks_unregister(struct net *net, struct nfwatch_net *nn)
{
	nf_unregister_net_hooks(net, nn->hook_ops, NFWATCH_HOOKS);
}

#ifdef CONFIG_NFWATCH_SELFTEST
#include "selftest/hook.c"
#endif
