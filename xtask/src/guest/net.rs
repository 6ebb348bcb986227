//! The guest's test network: veth nfw0 (root ns) <-> nfw0p (netns `peer`),
//! with routed networks behind the peer and permanent neighbours so ARP/ND
//! never races a test.

use crate::util::run;
use anyhow::{Context, Result};
use std::process::Command;

pub const DEV: &str = "nfw0";
pub const NS: &str = "peer";

/// Root-namespace addresses on nfw0: watched and not watched.
pub const WATCHED4: &str = "10.10.0.1";
pub const OTHER4: &str = "10.10.0.2";
pub const WATCHED6: &str = "fd10::1";
pub const OTHER6: &str = "fd10::2";
/// The peer end of the veth.
pub const PEER4: &str = "10.10.0.254";
pub const PEER6: &str = "fd10::fe";
/// On-link addresses nobody holds (permanent neighbour entries only).
pub const ONLINK4: &str = "10.10.0.253";
pub const ONLINK6: &str = "fd10::fd";
/// Held by the peer behind a route via PEER4 / PEER6.
pub const ROUTED4: &str = "10.20.0.1";
pub const ROUTED6: &str = "fd20::1";
/// Root-namespace addresses outside the watched prefixes (on lo).
pub const OUTSIDE4: &str = "10.30.0.1";
pub const OUTSIDE6: &str = "fd30::1";
/// The peer's TCP listeners (guest-peer) listen on this port.
pub const TCP_PORT: u16 = 5001;

const MAC: &str = "02:00:00:00:00:01";
const PEER_MAC: &str = "02:00:00:00:00:fe";

/// `ip` argument lists, in order.
fn ip_commands() -> Vec<String> {
    let mut cmds = vec![
        "link set lo up".to_string(),
        format!("netns add {NS}"),
        format!("link add {DEV} address {MAC} type veth peer name nfw0p address {PEER_MAC}"),
        format!("link set nfw0p netns {NS}"),
        format!("addr add {WATCHED4}/24 dev {DEV}"),
        format!("addr add {OTHER4}/24 dev {DEV}"),
        format!("addr add {WATCHED6}/64 dev {DEV} nodad"),
        format!("addr add {OTHER6}/64 dev {DEV} nodad"),
        format!("addr add {OUTSIDE4}/32 dev lo"),
        format!("addr add {OUTSIDE6}/128 dev lo nodad"),
        format!("link set {DEV} up"),
        format!("-n {NS} link set lo up"),
        format!("-n {NS} addr add {PEER4}/24 dev nfw0p"),
        format!("-n {NS} addr add {PEER6}/64 dev nfw0p nodad"),
        format!("-n {NS} addr add {ROUTED4}/24 dev lo"),
        format!("-n {NS} addr add {ROUTED6}/64 dev lo nodad"),
        format!("-n {NS} link set nfw0p up"),
        format!("route add 10.20.0.0/24 via {PEER4}"),
        format!("-6 route add fd20::/64 via {PEER6}"),
    ];
    for addr in [PEER4, ONLINK4, PEER6, ONLINK6] {
        cmds.push(format!(
            "neigh replace {addr} lladdr {PEER_MAC} dev {DEV} nud permanent"
        ));
    }
    for addr in [WATCHED4, OTHER4, WATCHED6, OTHER6] {
        cmds.push(format!(
            "-n {NS} neigh replace {addr} lladdr {MAC} dev nfw0p nud permanent"
        ));
    }
    cmds
}

/// sysctls: (namespace or None for root, path under /proc/sys, value).
const SYSCTLS: &[(Option<&str>, &str, &str)] = &[
    (Some(NS), "net/ipv4/ip_forward", "1"),
    (Some(NS), "net/ipv6/conf/all/forwarding", "1"),
    // The peer would redirect us for ONLINK*: keep routing as configured.
    (None, "net/ipv4/conf/all/accept_redirects", "0"),
    (None, "net/ipv4/conf/nfw0/accept_redirects", "0"),
    (None, "net/ipv6/conf/all/accept_redirects", "0"),
    (None, "net/ipv6/conf/nfw0/accept_redirects", "0"),
];

pub fn setup() -> Result<()> {
    for cmd in ip_commands() {
        run(Command::new("ip").args(cmd.split_whitespace()))?;
    }
    for (ns, key, value) in SYSCTLS {
        let script = format!("echo {value} > /proc/sys/{key}");
        run(in_ns(*ns, "sh").args(["-c", &script])).with_context(|| format!("sysctl {key}"))?;
    }
    Ok(())
}

/// A command run in network namespace `ns` (None: the root namespace).
pub fn in_ns(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, program]);
            cmd
        }
        None => Command::new(program),
    }
}

/// The ifindex of nfw0.
pub fn ifindex() -> Result<u32> {
    ifindex_of(DEV)
}

pub fn ifindex_of(dev: &str) -> Result<u32> {
    let path = format!("/sys/class/net/{dev}/ifindex");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("bad ifindex {text:?}"))
}
