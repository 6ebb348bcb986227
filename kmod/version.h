/* SPDX-License-Identifier: GPL-2.0 */
/* The module's release and the protocol version its Generic Netlink family declares. */
#ifndef _NFWATCH_VERSION_H
#define _NFWATCH_VERSION_H

#include <uapi/linux/nfwatch.h>

/* The one place of the release: Cargo.toml's workspace version must equal it (a test checks). */
#define NFWATCH_VERSION "0.1.0"

/* A test build (KCFLAGS=-DNFWATCH_TEST_VERSION_SKEW) speaks another protocol, to be refused. */
#ifdef NFWATCH_TEST_VERSION_SKEW
#define NFWATCH_FAMILY_VERSION (NFWATCH_GENL_VERSION + 1)
#else
#define NFWATCH_FAMILY_VERSION NFWATCH_GENL_VERSION
#endif

#endif /* _NFWATCH_VERSION_H */
