//! What one subscriber cannot do to others: receive a dead subscriber's
//! records by taking over its portid, make the module allocate memory its
//! own memory cgroup does not pay for, or stall every other Generic Netlink
//! family behind the module's requests.

use super::genl::Genl;
use super::kprobe::Kprobe;
use super::net::*;
use super::nfwatch::{stats, Live, Watcher, DEADLINE};
use super::reliability::subscribe_attrs;
use super::traffic::Flood;
use super::Ctx;
use crate::util::wait_until;
use anyhow::{bail, ensure, Context, Result};
use nfwatch_proto::*;
use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A helper process driven by lines on its stdin, answering on its stdout.
struct LinePeer {
    what: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl LinePeer {
    fn start(cmd: &mut Command, what: &str) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start the {what}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the {what} has no pipes");
        };
        Ok(Self {
            what: what.into(),
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    fn say(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}").with_context(|| format!("telling the {}", self.what))
    }

    /// The next line; the peer's own deadlines make it exit rather than hang.
    fn hear(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            bail!("the {} ended ({status}) without answering", self.what);
        }
        Ok(line.trim_end().to_string())
    }

    fn expect(&mut self, wanted: &str) -> Result<()> {
        let line = self.hear()?;
        ensure!(
            line == wanted,
            "the {}: {line:?}, expected {wanted:?}",
            self.what
        );
        Ok(())
    }

    /// The part of the next line after `prefix`.
    fn hear_after(&mut self, prefix: &str) -> Result<String> {
        let line = self.hear()?;
        match line.strip_prefix(prefix) {
            Some(rest) => Ok(rest.to_string()),
            None => bail!("the {}: {line:?}, expected {prefix:?}...", self.what),
        }
    }
}

impl Drop for LinePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn xtask() -> Result<String> {
    Ok(std::env::current_exe()
        .context("cannot find the xtask binary")?
        .display()
        .to_string())
}

fn one_line(stdin: &mut impl BufRead) -> Result<Option<String>> {
    let mut line = String::new();
    Ok((stdin.read_line(&mut line)? > 0).then(|| line.trim_end().to_string()))
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    Ok(out.flush()?)
}

/// How long the thief spins on one portid before giving up.
const THIEF_DEADLINE: Duration = Duration::from_secs(60);

/// `guest-portid-thief`, run unprivileged: for each portid it is given, it
/// says `spinning`, binds a new socket to that portid as soon as it is
/// free and says `bound`; on the next line it says `got N`, the messages
/// that socket received.
pub fn portid_thief() -> Result<()> {
    let mut stdin = std::io::stdin().lock();
    while let Some(line) = one_line(&mut stdin)? {
        let portid: u32 = line
            .parse()
            .with_context(|| format!("bad portid {line:?}"))?;
        say("spinning")?;
        let start = Instant::now();
        let genl = loop {
            let genl = Genl::open()?;
            match genl.bind(portid) {
                Ok(()) => break genl,
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {}
                Err(e) => return Err(e).with_context(|| format!("bind to portid {portid}")),
            }
            ensure!(
                start.elapsed() < THIEF_DEADLINE,
                "portid {portid} was not freed within {} s",
                THIEF_DEADLINE.as_secs()
            );
        };
        say("bound")?;
        // Batches made since have reached a control subscriber when we are told.
        one_line(&mut stdin)?;
        say(&format!("got {}", genl.drain()?))?;
    }
    Ok(())
}

/// Subscribers that close their socket (a process's death closes it the same
/// way), and `nfwatch watch` processes killed with SIGKILL.
const TAKEOVER_CLOSED: u32 = 1000;
const TAKEOVER_KILLED: u32 = 10;
/// Portids the closing subscribers bind, one each.
const TAKEOVER_PORTIDS: u32 = 0x7e00_0000;

/// Batches a control subscriber receives after the thief has bound, before
/// the thief's socket is read: a dead subscription that still delivered
/// would have sent to it meanwhile.
const CONTROL_BATCHES: usize = 2;

/// The thief takes over `portid` right after `kill` ends its subscriber,
/// and must receive nothing.
fn steal(
    thief: &mut LinePeer,
    control: &Genl,
    portid: u32,
    kill: impl FnOnce() -> Result<()>,
) -> Result<()> {
    thief.say(&portid.to_string())?;
    thief.expect("spinning")?;
    kill()?;
    thief.expect("bound")?;
    control.drain()?;
    control.wait_messages(CONTROL_BATCHES)?;
    thief.say("drain")?;
    let got = thief.hear_after("got ")?;
    let got: u64 = got
        .parse()
        .with_context(|| format!("the thief said got {got:?}"))?;
    ensure!(
        got == 0,
        "the process that took over the dead subscriber's portid {portid} received {got} messages"
    );
    Ok(())
}

/// The portid of the one Generic Netlink socket of process `pid`.
fn genl_portid(pid: i32) -> Result<u32> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let link = std::fs::read_link(entry?.path())?;
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|l| l.strip_suffix(']'))
        {
            inodes.push(inode.to_string());
        }
    }
    let table = std::fs::read_to_string("/proc/net/netlink")?;
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    let portids: Vec<u32> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 10 && f[1] == "16" && inodes.iter().any(|i| i == f[9]))
        .map(|f| f[2].parse())
        .collect::<Result<_, _>>()?;
    match portids.as_slice() {
        [portid] => Ok(*portid),
        _ => bail!("process {pid} has Generic Netlink portids {portids:?}, expected one"),
    }
}

/// A subscriber dies under a flood of its traffic while an unprivileged
/// process spins on binding its portid: that process must receive nothing.
pub fn portid_takeover(ctx: &Ctx) -> Result<()> {
    let flood = Flood::start(WATCHED4, PEER4);
    let result = takeover_rounds(ctx);
    let sent = flood.stop()?;
    ctx.log(&format!("{sent} datagrams of watched traffic"));
    result
}

fn takeover_rounds(ctx: &Ctx) -> Result<()> {
    let mut thief = LinePeer::start(
        super::as_nobody(xtask()?).arg("guest-portid-thief"),
        "unprivileged portid thief",
    )?;
    let mut control = Genl::open()?;
    let family = control.resolve(NFWATCH_GENL_NAME)?;
    let attrs = subscribe_attrs(WATCHED4, 32)?;
    control.accepted(
        family,
        "the control's SUBSCRIBE",
        NFWATCH_CMD_SUBSCRIBE,
        &attrs,
    )?;
    let start = Instant::now();
    for round in 0..TAKEOVER_CLOSED {
        let portid = TAKEOVER_PORTIDS + round;
        let mut victim = Genl::open()?;
        victim
            .bind(portid)
            .with_context(|| format!("bind to portid {portid}"))?;
        victim.accepted(family, "SUBSCRIBE", NFWATCH_CMD_SUBSCRIBE, &attrs)?;
        // Batches are flowing to it: the flood reaches its subscription.
        ensure!(victim.wait_pending()? > 0, "no batch for the subscriber");
        steal(&mut thief, &control, portid, || {
            drop(victim);
            Ok(())
        })
        .with_context(|| format!("round {round}"))?;
    }
    ctx.log(&format!(
        "{TAKEOVER_CLOSED} closed subscribers in {:.1} s, the thief got nothing",
        start.elapsed().as_secs_f64()
    ));
    for round in 0..TAKEOVER_KILLED {
        let victim = Watcher::start(ctx, "victim", &[WATCHED4])?;
        let portid = genl_portid(victim.pid())?;
        steal(&mut thief, &control, portid, || victim.kill())
            .with_context(|| format!("kill -9 round {round} (portid {portid})"))?;
    }
    Ok(())
}

pub(super) const MEMCG: &str = "/sys/fs/cgroup/nfwatch-memcg";
/// Small, but room for a pile of subscribers with full rings.
const MEMCG_MAX: u64 = 64 << 20;
/// Datagrams sent to every subscriber of the pile: enough to fill its ring.
const PILE_DATAGRAMS: u32 = 2000;
/// Short-lived sockets sending once each past the pile's subscribers.
const CHURN_SOCKETS: u32 = 100_000;
/// What memory.current may gain over them besides the rings' growth.
const CHURN_SLACK: u64 = 2 << 20;

fn cgroup_file(name: &str) -> std::path::PathBuf {
    Path::new(MEMCG).join(name)
}

pub(super) fn memory_current() -> Result<u64> {
    let path = cgroup_file("memory.current");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: {text:?}", path.display()))
}

/// A memory cgroup of its own, with the memory controller on.
fn memcg_setup() -> Result<()> {
    let root = Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").exists() {
        crate::util::run(
            Command::new("mount")
                .args(["-t", "cgroup2", "none"])
                .arg(root),
        )?;
    }
    std::fs::write(root.join("cgroup.subtree_control"), "+memory")
        .context("enabling the memory controller")?;
    if !Path::new(MEMCG).exists() {
        std::fs::create_dir(MEMCG)?;
    }
    std::fs::write(cgroup_file("memory.max"), MEMCG_MAX.to_string())?;
    Ok(())
}

fn memcg_remove() -> Result<()> {
    wait_until("the memory cgroup to be removed", DEADLINE, || {
        Ok(std::fs::remove_dir(MEMCG).is_ok().then_some(()))
    })
}

fn max_subscribers() -> Result<u32> {
    let path = "/sys/module/nfwatch/parameters/max_subscribers";
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    Ok(text.trim().parse()?)
}

/// From a thread inside the network namespace of process `pid` (this
/// process's memory cgroup, not the subscribers'): UDP on loopback.
/// `count` datagrams to 127.0.0.1:9 in the network namespace of `pid`,
/// from one socket or (`fresh_sockets`) each from a socket of its own.
fn udp_in_netns_of(pid: u32, count: u32, fresh_sockets: bool) -> Result<()> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<()> {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
                // SAFETY: setns(2) on a namespace fd we hold; it moves only this thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error()).context("setns");
                }
                let mut socket = UdpSocket::bind("127.0.0.1:0")?;
                for _ in 0..count {
                    if fresh_sockets {
                        socket = UdpSocket::bind("127.0.0.1:0")?;
                    }
                    socket.send_to(&[0u8; 16], "127.0.0.1:9")?;
                }
                Ok(())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?
    })
}

/// `guest-subscriber-pile`, run as the owner of its own user and network
/// namespaces: on `subscribe N` it subscribes N sockets to 127.0.0.0/8 and
/// says how many were accepted and why the first refused one was; on
/// `close` it closes them all.
pub fn subscriber_pile() -> Result<()> {
    let mut stdin = std::io::stdin().lock();
    say("ready")?;
    let mut sockets = Vec::new();
    while let Some(line) = one_line(&mut stdin)? {
        if let Some(n) = line.strip_prefix("subscribe ") {
            let n: usize = n.parse()?;
            let family = Genl::open()?.resolve(NFWATCH_GENL_NAME)?;
            let attrs = subscribe_attrs("127.0.0.0", 8)?;
            let mut refused = String::from("none");
            for _ in 0..n {
                let mut genl = Genl::open()?;
                let ack = genl.request(family, NFWATCH_CMD_SUBSCRIBE, &attrs)?;
                if ack.errno == 0 {
                    sockets.push(genl);
                } else if refused == "none" {
                    refused = format!("errno {} {}", -ack.errno, ack.extack.unwrap_or_default());
                }
            }
            say(&format!("subscribed {}", sockets.len()))?;
            say(&format!("refused {refused}"))?;
        } else if line == "close" {
            sockets.clear();
            say("closed")?;
        } else {
            bail!("unknown request {line:?}");
        }
    }
    Ok(())
}

/// In its own user and network namespaces (`unshare -Urn`) inside a memory
/// cgroup, a process subscribes past the per-namespace limit: the one too
/// many is refused, naming the limit; the subscribers, their sets and the
/// pages their records fill (sent from outside the cgroup) are charged to
/// the cgroup, and uncharged when the subscribers go.
pub fn memcg_charged(ctx: &Ctx) -> Result<()> {
    in_memcg(|| memcg_pile(ctx))
}

/// `check` run with MEMCG set up, and MEMCG removed after, whatever it found.
pub(super) fn in_memcg(check: impl FnOnce() -> Result<()>) -> Result<()> {
    memcg_setup()?;
    let result = check();
    memcg_remove()?;
    result
}

fn memcg_pile(ctx: &Ctx) -> Result<()> {
    let max = max_subscribers()?;
    let before = stats(ctx)?
        .live
        .context("no live counters in the initial namespace's stats")?;
    let script = format!(
        "echo $$ > {MEMCG}/cgroup.procs && exec unshare -Urn sh -c 'ip link set lo up && exec {} guest-subscriber-pile'",
        xtask()?
    );
    let mut pile = LinePeer::start(Command::new("sh").args(["-c", &script]), "subscriber pile")?;
    pile.expect("ready")?;
    let base = memory_current()?;
    pile.say(&format!("subscribe {}", max + 1))?;
    let subscribed = pile.hear_after("subscribed ")?;
    let refused = pile.hear_after("refused ")?;
    ctx.log(&format!("subscribed {subscribed}, refused: {refused}"));
    ensure!(
        subscribed == max.to_string(),
        "{subscribed} subscribers accepted, expected max_subscribers = {max}"
    );
    ensure!(
        refused.starts_with(&format!("errno {} ", libc::ENOSPC))
            && refused.contains("max_subscribers"),
        "subscriber {} refused with {refused:?}, expected ENOSPC naming max_subscribers",
        max + 1
    );
    udp_in_netns_of(pile.child.id(), PILE_DATAGRAMS, false)?;
    let full = u64::from(max) * 30;
    let live = wait_until("the pile's rings to fill", DEADLINE, || {
        let live = stats(ctx)?.live.context("no live counters")?;
        Ok((live.pages >= before.pages + full).then_some(live))
    })?;
    let peak = memory_current()?;
    let pages = (live.pages - before.pages) * 4096;
    let tables = u64::from(max) * SENDERS_TABLE_BYTES;
    ctx.log(&format!(
        "memory.current {base} -> {peak} with {max} subscribers; their rings hold {pages} bytes, their senders tables {tables}"
    ));
    ensure!(
        peak.saturating_sub(base) >= pages + tables,
        "memory.current rose by {} bytes; the subscribers' rings and senders tables alone hold {}",
        peak.saturating_sub(base),
        pages + tables
    );
    check_churn(ctx, pile.child.id(), peak, live.pages)?;
    pile.say("close")?;
    pile.expect("closed")?;
    all_released(ctx, before, base, peak)
}

/// Once a subscriber has gone: the module's live objects back to `before`,
/// and memory.current back within a fifth of its rise from `base` to `peak`.
pub(super) fn all_released(ctx: &Ctx, before: Live, base: u64, peak: u64) -> Result<()> {
    wait_until("the module's live objects back to before", DEADLINE, || {
        Ok((stats(ctx)?.live == Some(before)).then_some(()))
    })?;
    let rise = peak - base;
    let after = wait_until("memory.current to fall back", DEADLINE, || {
        let now = memory_current()?;
        Ok((now.saturating_sub(base) <= rise / 5).then_some(now))
    })?;
    ctx.log(&format!("memory.current {after} once it is gone"));
    Ok(())
}

/// CHURN_SOCKETS sockets, each sending once past every subscriber of the
/// pile: the senders tables take them in place, so the cgroup's memory
/// grows by no more than the rings' pages (bounded) and a little slack.
fn check_churn(ctx: &Ctx, pile: u32, peak: u64, peak_pages: u64) -> Result<()> {
    let start = Instant::now();
    udp_in_netns_of(pile, CHURN_SOCKETS, true)?;
    let after = memory_current()?;
    let pages = stats(ctx)?.live.context("no live counters")?.pages;
    let ring_growth = pages.saturating_sub(peak_pages) * 4096;
    ctx.log(&format!(
        "{CHURN_SOCKETS} short-lived sockets in {:.1} s: memory.current {peak} -> {after}, the rings grew by {ring_growth} bytes",
        start.elapsed().as_secs_f64()
    ));
    ensure!(
        after <= peak + ring_growth + CHURN_SLACK,
        "memory.current rose by {} bytes over {CHURN_SOCKETS} short-lived sockets, the rings by {ring_growth}",
        after.saturating_sub(peak)
    );
    Ok(())
}

/// One subscriber's senders table: NFWATCH_SENDERS entries of struct
/// nfwatch_sender (kmod/owner.c), 4,096 of 48 bytes.
const SENDERS_TABLE_BYTES: u64 = 4096 * 48;

/// Grace periods timed, and lookups of another family timed.
const GRACE_SAMPLES: usize = 5;
const LOOKUPS: usize = 100;
/// Threads subscribing, replacing their set and unsubscribing in a loop.
const LOOPERS: usize = 2;

/// How long a grace period takes here: membarrier(MEMBARRIER_CMD_GLOBAL)
/// waits for one (synchronize_rcu()).
fn grace_period() -> Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..GRACE_SAMPLES {
        let start = Instant::now();
        // SAFETY: membarrier(2) with a command and no pointers.
        let rc = unsafe {
            libc::syscall(libc::SYS_membarrier, 1 /* GLOBAL */, 0, 0)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("membarrier(GLOBAL)");
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    Ok(samples[GRACE_SAMPLES / 2])
}

/// Runs `cycle` on its own socket until `stop`; returns the cycles done.
fn loop_requests(
    stop: &AtomicBool,
    family: u16,
    cycles: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    let mut genl = Genl::open()?;
    let first = subscribe_attrs(WATCHED4, 32)?;
    let second = subscribe_attrs(OTHER4, 32)?;
    while !stop.load(Ordering::Relaxed) {
        for (cmd, attrs) in [
            (NFWATCH_CMD_SUBSCRIBE, &first[..]),
            (NFWATCH_CMD_SUBSCRIBE, &second[..]),
            (NFWATCH_CMD_UNSUBSCRIBE, &[][..]),
        ] {
            let ack = genl.request(family, cmd, attrs)?;
            ensure!(ack.errno == 0, "command {cmd}: {ack:?}");
        }
        cycles.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// This thread at real-time priority, so what it times is the kernel's
/// waiting, not the scheduler's.
fn realtime(on: bool) -> Result<()> {
    let param = libc::sched_param {
        sched_priority: if on { 10 } else { 0 },
    };
    let policy = if on {
        libc::SCHED_FIFO
    } else {
        libc::SCHED_OTHER
    };
    // SAFETY: sched_setscheduler(2) on this thread with a live sched_param.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setscheduler");
    }
    Ok(())
}

/// Lookups of the `nlctrl` family, timed: (median, 90th percentile).
fn timed_lookups() -> Result<(Duration, Duration)> {
    let mut genl = Genl::open()?;
    let mut samples = Vec::new();
    realtime(true)?;
    let timed = (|| {
        for _ in 0..LOOKUPS {
            let start = Instant::now();
            genl.resolve("nlctrl")?;
            samples.push(start.elapsed());
        }
        samples.sort();
        Ok((samples[LOOKUPS / 2], samples[LOOKUPS * 9 / 10]))
    })();
    realtime(false)?;
    timed
}

/// A kprobe on a request handler that fetches genl_mutex's owner word.
fn lock_probe(name: &'static str, handler: &str) -> Result<Kprobe> {
    Kprobe::attach(name, &format!("{handler} owner=@genl_mutex:u64"))
}

/// Owner words the probes saw that are not 0: requests run under genl_mutex.
fn held(probes: &[Kprobe]) -> Result<(usize, usize)> {
    let mut seen = 0;
    let mut locked = 0;
    for probe in probes {
        for owner in probe.values("owner")? {
            seen += 1;
            locked += usize::from(owner != "0");
        }
    }
    Ok((seen, locked))
}

/// Cycles the request loops run alone, watched by the lock probes.
const PROBED_CYCLES: u64 = 20;

/// The module's SUBSCRIBE and UNSUBSCRIBE handlers never run under the
/// global Generic Netlink lock (a kprobe reads its owner at each entry
/// while only they make requests), and while threads SUBSCRIBE, replace
/// their set and UNSUBSCRIBE in a loop, another family's lookups stay fast:
/// nine in ten under a grace period, which a handler holding the lock makes
/// them wait (seen at 0dc90e5 on 6.12: 90th percentile 35 ms against a
/// 16 ms grace period).
pub fn genl_lock_free(ctx: &Ctx) -> Result<()> {
    let grace = grace_period()?;
    let family = Genl::open()?.resolve(NFWATCH_GENL_NAME)?;
    let idle = timed_lookups()?;
    let probes = [
        lock_probe("nfwatch_subscribe_lock", "nfwatch_cmd_subscribe")?,
        lock_probe("nfwatch_unsubscribe_lock", "nfwatch_cmd_unsubscribe")?,
    ];
    let stop = AtomicBool::new(false);
    let cycles = AtomicU64::new(0);
    let (probed, busy) = std::thread::scope(|scope| -> Result<_> {
        let loopers: Vec<_> = (0..LOOPERS)
            .map(|_| scope.spawn(|| loop_requests(&stop, family, &cycles)))
            .collect();
        let measured = (|| {
            wait_until("the request loops to run", DEADLINE, || {
                Ok((cycles.load(Ordering::Relaxed) >= PROBED_CYCLES).then_some(()))
            })?;
            // Before any lookup takes the lock itself.
            let probed = held(&probes)?;
            drop(probes);
            Ok((probed, timed_lookups()?))
        })();
        stop.store(true, Ordering::Relaxed);
        for looper in loopers {
            looper
                .join()
                .map_err(|_| anyhow::anyhow!("a request loop panicked"))??;
        }
        measured
    })?;
    let (seen, locked) = probed;
    ctx.log(&format!(
        "grace period {grace:?}; nlctrl lookups (median, 90th percentile) {idle:?} idle, \
         {busy:?} while {LOOPERS} threads looped ({} cycles); \
         {locked} of {seen} handler entries under genl_mutex",
        cycles.load(Ordering::Relaxed)
    ));
    ensure!(
        seen as u64 >= 3 * PROBED_CYCLES,
        "the probes saw {seen} handler entries in {PROBED_CYCLES} cycles of 3 requests"
    );
    ensure!(
        locked == 0,
        "{locked} of {seen} SUBSCRIBE/UNSUBSCRIBE handler entries ran under genl_mutex"
    );
    // On the debug kernel lockdep and KASAN stretch every lookup past a
    // grace period whatever holds the lock: there the probes above decide.
    ensure!(
        busy.1 < grace || ctx.guest.slow > 1,
        "lookups of another family took {:?} (90th percentile) while nfwatch requests looped; a grace period is {grace:?}",
        busy.1
    );
    Ok(())
}
