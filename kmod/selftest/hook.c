// SPDX-License-Identifier: GPL-2.0
/*
 * Self-test of the hook's device-name copy, run at load with selftest=1:
 * every name length, with stale bytes of a longer name after the NUL,
 * comes out as the name and zeros. Included by hook.c.
 */

bool nfwatch_selftest_hook(void)
{
	char from[IFNAMSIZ], to[IFNAMSIZ], want[IFNAMSIZ];
	unsigned int len;
	bool ok = true;

	for (len = 0; len < IFNAMSIZ; len++) {
		memset(from, 'x', sizeof(from));
		memset(from, 'a', len);
		from[len] = '\0';
		memset(want, 0, sizeof(want));
		memset(want, 'a', len);
		memset(to, 0x55, sizeof(to));
		copy_ifname(to, from);
		if (memcmp(to, want, IFNAMSIZ)) {
			pr_err("nfwatch: device name of %u bytes copied wrong\n", len);
			ok = false;
		}
	}
	pr_info("nfwatch: hook self-test %s\n", ok ? "passed" : "FAILED");
	return ok;
}
