/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Every kernel-version difference nfwatch meets, in one place.
 *
 * Written for Linux >= 5.10: set_active_memcg() came in 5.10 (the Generic
 * Netlink family-level policy and strict validation in 5.2). Tested on
 * Debian's 5.10, 6.1 and 6.12. Where a vendor kernel may have backported an
 * interface, the interface is tested for (here, or in Kbuild by a search of
 * the headers or of the kernel's exports: NFWATCH_HAVE_*), not the version
 * number.
 */
#ifndef _NFWATCH_COMPAT_H
#define _NFWATCH_COMPAT_H

#include <linux/version.h>
#include <linux/cgroup.h>
#include <linux/hrtimer.h>
#include <linux/gfp.h>
#include <linux/sched/mm.h>
#include <linux/rcupdate.h>
#include <net/genetlink.h>
#include <net/route.h>
#include <net/sock.h>
#if IS_ENABLED(CONFIG_IPV6)
#include <net/ip6_fib.h>
#endif

/* 6.12 moved the unaligned helpers to linux/. */
#ifdef NFWATCH_HAVE_LINUX_UNALIGNED_H
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 10, 0)
#error "nfwatch needs Linux 5.10 or newer"
#endif

/*
 * The attribute that exempts a local from the zeroing CONFIG_INIT_STACK_ALL_ZERO
 * gives every other; a kernel without the name just zeroes it.
 */
#ifndef __uninitialized
#define __uninitialized
#endif

/* 6.2 added formatted extack messages; before, a fixed text says it. */
#ifdef NL_SET_ERR_MSG_FMT
#define NFWATCH_SET_ERR_MSG_FMT(extack, fixed, fmt, args...) NL_SET_ERR_MSG_FMT(extack, fmt, ##args)
#else
#define NFWATCH_SET_ERR_MSG_FMT(extack, fixed, fmt, args...) NL_SET_ERR_MSG(extack, fixed)
#endif

/*
 * Charging another memory cgroup for what the hook allocates (under
 * spin_lock_bh(), where the charge path takes the memcg from
 * int_active_memcg, which modules can reach since 5.14): on older kernels
 * nothing is charged (rather than the interrupted task), the flag and the
 * switch are no-ops.
 */
#ifdef NFWATCH_HAVE_INT_ACTIVE_MEMCG
#define NFWATCH_GFP_ACCOUNT __GFP_ACCOUNT
static inline struct mem_cgroup *nfwatch_set_active_memcg(struct mem_cgroup *memcg)
{
	return set_active_memcg(memcg);
}
#else
#define NFWATCH_GFP_ACCOUNT 0
static inline struct mem_cgroup *nfwatch_set_active_memcg(struct mem_cgroup *memcg)
{
	return NULL;
}
#endif

/* 6.13 replaced hrtimer_init() + .function by hrtimer_setup(). */
static inline void nfwatch_hrtimer_setup(struct hrtimer *timer,
					 enum hrtimer_restart (*fn)(struct hrtimer *))
{
#ifdef NFWATCH_HAVE_HRTIMER_SETUP
	hrtimer_setup(timer, fn, CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
#else
	hrtimer_init(timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_SOFT);
	timer->function = fn;
#endif
}

/* 6.16 hid sk->sk_uid behind sk_uid(). */
static inline kuid_t nfwatch_sk_uid(const struct sock *sk)
{
#ifdef NFWATCH_HAVE_SK_UID
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

static inline const struct rtable *nfwatch_dst_rt4(const struct dst_entry *dst)
{
	return container_of(dst, const struct rtable, dst);
}

/* Messages dropped on @sk's way in (its "Drops" in /proc/net/netlink). */
static inline int nfwatch_sk_drops(const struct sock *sk)
{
	return atomic_read(&sk->sk_drops);
}

/*
 * The cgroup v2 of a full socket, or NULL without socket cgroup data.
 * sock_cgroup_ptr() only reads, though its argument is not const.
 */
static inline struct cgroup *nfwatch_sk_cgroup(const struct sock *sk)
{
#ifdef CONFIG_SOCK_CGROUP_DATA
	return sock_cgroup_ptr((struct sock_cgroup_data *)&sk->sk_cgrp_data);
#else
	return NULL;
#endif
}

#if IS_ENABLED(CONFIG_IPV6)
static inline const struct rt6_info *nfwatch_dst_rt6(const struct dst_entry *dst)
{
	return container_of(dst, const struct rt6_info, dst);
}
#endif

#endif /* _NFWATCH_COMPAT_H */
