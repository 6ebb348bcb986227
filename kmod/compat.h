/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every kernel-version difference nfwatch meets, in one place.
 *
 * Written for Linux >= 5.4 (the Generic Netlink family-level policy and
 * strict validation came in 5.2, NLA_POLICY_EXACT_LEN in 5.7). Tested on
 * Debian's 6.1 and 6.12. Older history, for the record: hooks are per
 * network namespace since 4.13 (nf_register_net_hooks) and the hook
 * prototype is (priv, skb, state) since 4.4.
 */
#ifndef _NFWATCH_COMPAT_H
#define _NFWATCH_COMPAT_H

#include <linux/version.h>
#include <linux/hrtimer.h>
#include <linux/rcupdate.h>
#include <net/genetlink.h>
#include <net/route.h>
#include <net/ip6_fib.h>
#include <net/sock.h>

/* 6.12 moved the unaligned helpers to linux/. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 4, 0)
#error "nfwatch needs Linux 5.4 or newer"
#endif

/*
 * The attribute that exempts a local from the zeroing CONFIG_INIT_STACK_ALL_ZERO
 * gives every other; a kernel without the name just zeroes it.
 */
#ifndef __uninitialized
#define __uninitialized
#endif

/* 5.7 added NLA_POLICY_EXACT_LEN; before it the length was a minimum only. */
#ifndef NLA_POLICY_EXACT_LEN
#define NLA_POLICY_EXACT_LEN(_len) { .type = NLA_EXACT_LEN, .len = (_len) }
#endif

/*
 * 6.1: commands from resv_start_op on are validated strictly (reserved
 * header fields too); we want that for every command.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 1, 0)
#define NFWATCH_GENL_RESV_START_OP(first_cmd) .resv_start_op = (first_cmd),
#else
#define NFWATCH_GENL_RESV_START_OP(first_cmd)
#endif

/* 5.5 added rcu_replace_pointer() (rcu_swap_protected() before). */
#ifndef rcu_replace_pointer
#define rcu_replace_pointer(rcu_ptr, ptr, c)					\
({										\
	typeof(ptr) __old = rcu_dereference_protected((rcu_ptr), (c));		\
	rcu_assign_pointer((rcu_ptr), (ptr));					\
	__old;									\
})
#endif

/* 6.13 replaced hrtimer_init() + .function by hrtimer_setup(). */
static inline void nfwatch_hrtimer_setup(struct hrtimer *timer,
					 enum hrtimer_restart (*fn)(struct hrtimer *))
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
	hrtimer_setup(timer, fn, CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
#else
	hrtimer_init(timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
	timer->function = fn;
#endif
}

/* 6.16 hid sk->sk_uid behind sk_uid(). */
static inline kuid_t nfwatch_sk_uid(const struct sock *sk)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 16, 0)
	return sk_uid(sk);
#else
	return sk->sk_uid;
#endif
}

/*
 * The IPv4 gateway: rt_gw_family/rt_gw4/rt_gw6 since 5.2 (a v4 route may
 * have a v6 gateway, RFC 5549). Returns the family of *gw, 0 for on-link.
 */
static inline u8 nfwatch_rt4_gateway(const struct rtable *rt, u8 gw[16])
{
	if (rt->rt_gw_family == AF_INET) {
		memcpy(gw, &rt->rt_gw4, 4);
		return AF_INET;
	}
	if (rt->rt_gw_family == AF_INET6) {
		memcpy(gw, &rt->rt_gw6, 16);
		return AF_INET6;
	}
	return 0;
}

static inline const struct rt6_info *nfwatch_dst_rt6(const struct dst_entry *dst)
{
	return container_of(dst, const struct rt6_info, dst);
}

#endif /* _NFWATCH_COMPAT_H */
