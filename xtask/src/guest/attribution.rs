//! Who sent each packet: the process by socket (also for what the kernel
//! sends on its behalf), the cgroup and network namespace, and the
//! subscribers' filters on them.

use super::generator::{gen_args, GenReport};
use super::net::{self, PEER4, TCP_PORT, WATCHED4};
use super::nfwatch::{read_records, Record, Watcher, DEADLINE};
use super::proc::Spawned;
use super::traffic::{ping, tcp_connect, Flow};
use super::{as_nobody, Ctx};
use crate::util::run;
use anyhow::{ensure, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CGROUP2: &str = "/sys/fs/cgroup";
/// Where the receiver of the bulk stream listens.
const RECEIVER_PORT: u16 = 6001;
/// The UDP senders' destination ports, one per cgroup.
const TEST_PORT: u16 = 7;
const OTHER_PORT: u16 = 9;
const NOBODY_PORT: u16 = 13;
/// Where guest-push listens, in the peer's namespace.
const PUSH_PORT: u16 = 6002;
/// What guest-push writes: less than an unread socket's receive window.
const PUSH_BYTES: usize = 32 * 1024;
/// Echo requests the `--comm ping` watcher must record.
const PINGS: u32 = 3;

/// The comm the kernel gives this binary's processes: its file name, cut
/// to TASK_COMM_LEN - 1 bytes.
fn xtask_comm() -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let name = exe.file_name().context("xtask binary has no name")?;
    Ok(name.to_string_lossy().chars().take(15).collect())
}

/// A cgroup v2 mount at /sys/fs/cgroup (virtme-ng may not make one).
fn cgroup2_mounted() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        fields.get(1) == Some(&CGROUP2) && fields.get(2) == Some(&"cgroup2")
    });
    if !mounted {
        run(Command::new("mount").args(["-t", "cgroup2", "none", CGROUP2]))?;
    }
    Ok(())
}

/// A cgroup the scenario creates (and removes once empty).
struct Cgroup {
    path: &'static str,
    dir: PathBuf,
}

impl Cgroup {
    fn create(path: &'static str) -> Result<Self> {
        let dir = Path::new(CGROUP2).join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self { path, dir })
    }

    fn id(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.dir)?.ino())
    }

    /// `cmd` runs in this cgroup from before its exec, so its sockets do.
    fn run_in(&self, cmd: &mut Command) {
        let procs = self.dir.join("cgroup.procs");
        // SAFETY: only a write(2) through std's File between fork and exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Runs `guest-gen` through `cmd` to the end; its pid and report.
fn generate(mut cmd: Command) -> Result<(u32, GenReport)> {
    let child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start guest-gen")?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "guest-gen: {}", out.status);
    let report = serde_json::from_slice(&out.stdout).context("guest-gen's report")?;
    Ok((pid, report))
}

fn gen_command(proto: &str, dst: String, seconds: f64) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(gen_args(proto, WATCHED4, &dst, seconds));
    Ok(cmd)
}

fn udp_to(port: u16) -> String {
    format!("{PEER4}:{port}")
}

/// The receiver of a bulk TCP stream: every packet of its connection from
/// its first one with its pid on carries its pid and comm, the ACKs sent
/// from softirq included. The SYN-ACK goes out for the listener, which the
/// receiver holds, and the ACKs before accept() for a socket nobody holds
/// yet: those are not counted. Returns how many that was.
fn check_receiver(records: &[Record], pid: u32, comm: &str) -> Result<usize> {
    let mine: Vec<&Record> = records
        .iter()
        .filter(|r| r.proto == "tcp" && r.sport == Some(RECEIVER_PORT))
        .skip(1)
        .collect();
    let first = mine
        .iter()
        .position(|r| r.pid == Some(pid))
        .with_context(|| format!("none of the receiver's {} records has its pid", mine.len()))?;
    let after = &mine[first..];
    for r in after {
        ensure!(
            r.pid == Some(pid) && r.comm.as_ref().is_some_and(|c| *c == comm),
            "the receiver's packet without its pid {pid} and comm {comm}: {r:?}"
        );
    }
    ensure!(
        after.len() >= 20,
        "only {} of the receiver's records after its first attributed one",
        after.len()
    );
    Ok(after.len())
}

/// The records to `port`: `count` of them, each from `pid` and `cgroup`.
fn check_sender(
    records: &[Record],
    port: u16,
    (pid, count): (u32, u64),
    comm: &str,
    cgroup: &Cgroup,
) -> Result<()> {
    let mine: Vec<&Record> = records.iter().filter(|r| r.dport == Some(port)).collect();
    ensure!(
        mine.len() as u64 == count,
        "{} records to port {port}, pid {pid} sent {count}",
        mine.len()
    );
    let id = cgroup.id()?;
    for r in mine {
        ensure!(
            r.pid == Some(pid)
                && r.comm.as_ref().is_some_and(|c| *c == comm)
                && r.cgroup_id == Some(id)
                && r.cgroup.as_ref().is_some_and(|c| *c == cgroup.path)
                && r.unit.is_none()
                && r.container.is_none(),
            "expected pid {pid} comm {comm} cgroup {} ({id}), no unit or container: {r:?}",
            cgroup.path
        );
    }
    Ok(())
}

/// Stops `watcher`: its records, lossless, and how many of them the
/// kernel knew no sending process of and the CLI wrote with the process
/// holding their socket. The file's records without a process are the
/// difference.
fn check_unattributed(watcher: Watcher, tag: &str) -> Result<(Vec<Record>, [u64; 2])> {
    let out = watcher.out.clone();
    let summary = watcher.stop()?;
    let records = read_records(&out)?;
    summary.check_lossless(records.len())?;
    let [unattributed, by_socket] = summary
        .unattributed
        .context("no count of records without a sending process")?;
    let in_file = records.iter().filter(|r| r.comm.is_none()).count() as u64;
    ensure!(
        unattributed.checked_sub(by_socket) == Some(in_file),
        "{tag}: the kernel counted {unattributed} records without a sending process, \
         {by_socket} written with their socket's holder, the file has {in_file} without"
    );
    Ok((records, [unattributed, by_socket]))
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// Where to accept the one connection.
    #[arg(long)]
    listen: SocketAddr,
    /// How many bytes to write once SIGUSR1 comes.
    #[arg(long)]
    bytes: usize,
}

/// `guest-push`: accepts one connection, writes `--bytes` to it once
/// SIGUSR1 comes, says `acked` when the peer has acknowledged them all, and
/// reads to EOF.
pub fn push(args: &PushArgs) -> Result<()> {
    let usr1 = sigusr1_blocked()?;
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    say("ready")?;
    let (mut conn, _) = listener.accept()?;
    say("accepted")?;
    let mut signal = 0;
    // SAFETY: `usr1` is a set sigemptyset() initialised.
    ensure!(
        unsafe { libc::sigwait(&usr1, &mut signal) } == 0,
        "sigwait failed"
    );
    conn.write_all(&vec![0; args.bytes])?;
    let deadline = Instant::now() + DEADLINE;
    while unacknowledged(&conn)? > 0 {
        ensure!(
            Instant::now() < deadline,
            "the peer did not acknowledge every byte"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    say("acked")?;
    std::io::copy(&mut conn, &mut std::io::sink())?;
    Ok(())
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(out, "{line}")?;
    Ok(out.flush()?)
}

/// SIGUSR1 blocked, to be taken by sigwait(): the set holding it.
fn sigusr1_blocked() -> Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data, which sigemptyset() initialises.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        ensure!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == 0,
            "cannot block SIGUSR1"
        );
        Ok(set)
    }
}

/// Bytes written on `conn` that the peer has not acknowledged (SIOCOUTQ).
fn unacknowledged(conn: &TcpStream) -> Result<libc::c_int> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int.
    let rc = unsafe { libc::ioctl(conn.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    ensure!(rc == 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    Ok(queued)
}

/// A socket opened before the subscription that only receives: the kernel
/// never sees a process send on it, so the ACKs it sends from softirq are
/// written with the process holding its file (this one), found by the
/// socket's inode. Returns how many records that was.
fn check_old_socket(ctx: &Ctx, comm: &str) -> Result<usize> {
    let xtask = std::env::current_exe()?;
    let listen = format!("{PEER4}:{PUSH_PORT}");
    let mut cmd = net::in_ns(Some(net::NS), &xtask.to_string_lossy());
    cmd.args(["guest-push", "--listen", &listen, "--bytes"])
        .arg(PUSH_BYTES.to_string());
    let mut pusher = Spawned::start(&mut cmd, &ctx.path("push.log"))?;
    pusher.wait_line("guest-push's listener", DEADLINE, |l| l == "ready")?;
    let (old, flow) = tcp_connect(WATCHED4, PEER4, PUSH_PORT)?;
    pusher.wait_line("guest-push's connection", DEADLINE, |l| l == "accepted")?;
    let watcher = Watcher::start(ctx, "old", &[WATCHED4])?;
    pusher.signal(libc::SIGUSR1)?;
    pusher.wait_line("guest-push's bytes acknowledged", DEADLINE, |l| {
        l == "acked"
    })?;
    let (records, [unattributed, by_socket]) = check_unattributed(watcher, "old")?;
    // Read before closing: unread bytes would make the close a reset.
    let mut old = old.take(PUSH_BYTES as u64);
    std::io::copy(&mut old, &mut std::io::sink())?;
    drop(old);
    pusher.wait_success(DEADLINE)?;
    let pid = std::process::id();
    for r in &records {
        ensure!(
            Flow::of(r)? == flow
                && r.pid == Some(pid)
                && r.comm.as_ref().is_some_and(|c| *c == comm),
            "a record not of the old socket {flow:?} held by pid {pid} ({comm}): {r:?}"
        );
    }
    let count = records.len() as u64;
    ensure!(
        count >= 2 && unattributed == count && by_socket == count,
        "the old socket: {count} records, the kernel knew no process of {unattributed}, \
         {by_socket} written with their socket's holder; expected at least 2, all of them"
    );
    Ok(records.len())
}

pub fn attribution(ctx: &Ctx) -> Result<()> {
    cgroup2_mounted()?;
    let comm = xtask_comm()?;
    let old_socket = check_old_socket(ctx, &comm)?;
    let netns = std::fs::metadata("/proc/self/ns/net")?.ino();
    let test = Cgroup::create("/test.slice/app")?;
    let other = Cgroup::create("/other.slice/app")?;
    let all = Watcher::start(ctx, "all", &[WATCHED4])?;
    let jsonl = |tag: &str| ctx.path(&format!("{tag}.jsonl"));
    let in_test = Watcher::start_args(
        ctx,
        "test_slice",
        &[WATCHED4],
        "jsonl",
        &jsonl("test_slice"),
        &["--cgroup", "/test.slice"],
    )?;
    let of_ping = Watcher::start_args(
        ctx,
        "ping",
        &[WATCHED4],
        "jsonl",
        &jsonl("ping"),
        &["--comm", "ping"],
    )?;
    let of_nobody = Watcher::start_args(
        ctx,
        "nobody",
        &[WATCHED4],
        "jsonl",
        &jsonl("nobody"),
        &["--uid", "65534"],
    )?;

    // A receiver here, its sender in the peer's namespace.
    let xtask = std::env::current_exe()?;
    let listen = format!("{WATCHED4}:{RECEIVER_PORT}");
    let mut receiver = Spawned::start(
        Command::new(&xtask).args(["guest-peer", "--tcp", &listen]),
        &ctx.path("receiver.log"),
    )?;
    receiver.wait_line("the receiver's listener", super::nfwatch::DEADLINE, |l| {
        l == "ready"
    })?;
    let mut stream = net::in_ns(Some(net::NS), &xtask.to_string_lossy());
    stream.args(gen_args("tcp", PEER4, &listen, 1.0));
    let (_, streamed) = generate(stream)?;

    let mut cmd = gen_command("udp", udp_to(TEST_PORT), 0.2)?;
    test.run_in(&mut cmd);
    let (test_pid, test_udp) = generate(cmd)?;
    let mut cmd = gen_command("udp", udp_to(OTHER_PORT), 0.2)?;
    other.run_in(&mut cmd);
    let (other_pid, other_udp) = generate(cmd)?;
    // Exits right after its last write: what the kernel sends for its
    // socket afterwards still carries it.
    let mut cmd = gen_command("tcp", format!("{PEER4}:{TCP_PORT}"), 0.2)?;
    test.run_in(&mut cmd);
    let (tcp_pid, _) = generate(cmd)?;
    let mut cmd = as_nobody(&xtask);
    cmd.args(gen_args("udp", WATCHED4, &udp_to(NOBODY_PORT), 0.2));
    let (nobody_pid, nobody_udp) = generate(cmd)?;
    let (ping_pid, echo) = ping(WATCHED4, PEER4, PINGS)?;
    ctx.log(&format!(
        "streamed {} bytes; udp: test {test_pid} {}, other {other_pid} {}, nobody {nobody_pid} {}; tcp {tcp_pid}",
        streamed.bytes, test_udp.packets, other_udp.packets, nobody_udp.packets
    ));

    let receiver_pid = receiver.pid() as u32;
    let (records, _) = check_unattributed(all, "all")?;
    drop(receiver);
    let attributed = check_receiver(&records, receiver_pid, &comm)?;
    check_sender(
        &records,
        TEST_PORT,
        (test_pid, test_udp.packets),
        &comm,
        &test,
    )?;
    check_sender(
        &records,
        OTHER_PORT,
        (other_pid, other_udp.packets),
        &comm,
        &other,
    )?;
    // Its socket's packets are those in its cgroup: what TCP sends for a
    // connection in TIME_WAIT goes out on the kernel's own socket.
    let (tcp, kernel): (Vec<&Record>, Vec<&Record>) = records
        .iter()
        .filter(|r| r.dport == Some(TCP_PORT))
        .partition(|r| r.cgroup.as_ref().is_some_and(|c| *c == test.path));
    ensure!(
        tcp.len() >= 3,
        "{} records of the TCP sender {tcp_pid}",
        tcp.len()
    );
    for r in &tcp {
        ensure!(
            r.pid == Some(tcp_pid) && r.comm.as_ref().is_some_and(|c| *c == comm.as_str()),
            "a packet of the TCP sender {tcp_pid}'s socket not attributed to it: {r:?}"
        );
    }
    ensure!(
        kernel.len() <= 2 && kernel.iter().all(|r| r.comm.is_none()),
        "packets to port {TCP_PORT} not from the sender's socket: {kernel:?}"
    );
    for r in &records {
        ensure!(r.netns == Some(netns as u32), "netns not {netns}: {r:?}");
    }

    let (in_test, _) = check_unattributed(in_test, "test_slice")?;
    let test_ids = [test.id()?];
    ensure!(
        in_test
            .iter()
            .all(|r| r.cgroup_id.is_some_and(|id| test_ids.contains(&id))),
        "--cgroup /test.slice recorded a packet from elsewhere"
    );
    let udp_in_test = in_test
        .iter()
        .filter(|r| r.dport == Some(TEST_PORT))
        .count() as u64;
    ensure!(
        udp_in_test == test_udp.packets && in_test.len() == udp_in_test as usize + tcp.len(),
        "--cgroup /test.slice: {} records, {udp_in_test} to port {TEST_PORT}; expected {} and {} TCP",
        in_test.len(),
        test_udp.packets,
        tcp.len()
    );
    let (of_nobody, _) = check_unattributed(of_nobody, "nobody")?;
    ensure!(
        of_nobody.len() as u64 == nobody_udp.packets
            && of_nobody
                .iter()
                .all(|r| r.uid == Some(65534) && r.pid == Some(nobody_pid)),
        "--uid 65534: {} records, expected {} from pid {nobody_pid}",
        of_nobody.len(),
        nobody_udp.packets
    );
    let (of_ping, _) = check_unattributed(of_ping, "ping")?;
    ensure!(
        of_ping.len() == PINGS as usize
            && of_ping.iter().all(|r| Flow::of(r).is_ok_and(|f| f == echo)
                && r.pid == Some(ping_pid)
                && r.comm.as_ref().is_some_and(|c| *c == "ping")),
        "--comm ping: {} records, expected ping {ping_pid}'s {PINGS} echo requests: {of_ping:?}",
        of_ping.len()
    );
    ctx.log(&format!(
        "{old_socket} records of the old socket; {} records; {attributed} of the receiver's \
         attributed; {} in /test.slice, {} of uid 65534",
        records.len(),
        in_test.len(),
        of_nobody.len()
    ));
    Ok(())
}

/// A namespace the all-namespace scenario creates once subscribed, with a
/// veth pair to ours.
const LATE_NS: &str = "nfwlate";
const LATE4: &str = "10.60.0.1";
const LATE_HOST4: &str = "10.60.0.254";

fn ip(args: &str) -> Result<()> {
    run(Command::new("ip").args(args.split_whitespace()))
}

fn create_late_ns() -> Result<u64> {
    ip(&format!("netns add {LATE_NS}"))?;
    for args in [
        format!("link add nfwl0 type veth peer name nfwl1 netns {LATE_NS}"),
        format!("addr add {LATE_HOST4}/24 dev nfwl0"),
        "link set nfwl0 up".to_string(),
        format!("-n {LATE_NS} addr add {LATE4}/24 dev nfwl1"),
        format!("-n {LATE_NS} link set nfwl1 up"),
        format!("-n {LATE_NS} link set lo up"),
    ] {
        ip(&args)?;
    }
    // Every port unreachable answered: the flood's replies go on until it ends.
    run(net::in_ns(Some(LATE_NS), "sysctl").args(["-qw", "net.ipv4.icmp_ratelimit=0"]))?;
    netns_inode(LATE_NS)
}

fn netns_inode(ns: &str) -> Result<u64> {
    Ok(std::fs::metadata(format!("/run/netns/{ns}"))?.ino())
}

/// Port unreachables namespace `ns` has sent.
fn unreachables_sent(ns: &str) -> Result<u64> {
    let snmp = crate::util::stdout_of(net::in_ns(Some(ns), "cat").arg("/proc/net/snmp"))?;
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next(), icmp.next());
    let (Some(names), Some(values)) = (names, values) else {
        anyhow::bail!("no Icmp lines in {ns}'s /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "OutDestUnreachs")
        .and_then(|(_, value)| value.parse().ok())
        .context("no OutDestUnreachs in /proc/net/snmp")
}

/// UDP from `src` in namespace `ns` for a moment: its pid and report.
fn udp_in_ns(ns: &str, src: &str, dst: &str) -> Result<(u32, GenReport)> {
    let xtask = std::env::current_exe()?;
    let mut cmd = net::in_ns(Some(ns), &xtask.to_string_lossy());
    cmd.args(gen_args("udp", src, &format!("{dst}:{OTHER_PORT}"), 0.2));
    generate(cmd)
}

/// `nfwatch watch --all-netns` refused, with the kernel's reason, when run
/// through `wrapper`.
fn all_netns_refused(ctx: &Ctx, wrapper: &[&str], reason: &str) -> Result<()> {
    let out = crate::util::capture(
        Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(&ctx.guest.nfwatch)
            .args(["watch", "--all-netns", "--src", LATE4, "--duration", "1"]),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && stderr.contains(reason),
        "{}: expected exit 1 and {reason:?}, got {}: {stderr}",
        wrapper.join(" "),
        out.status
    );
    Ok(())
}

/// One watcher in our namespace records every namespace: one there before
/// it subscribed and one created after, each with its netns; a watcher
/// inside one sees only that one; a namespace deleted under a flood of
/// replies takes its hooks with it and leaves nothing behind. Refused from
/// another namespace and without CAP_NET_ADMIN.
pub fn all_netns(ctx: &Ctx) -> Result<()> {
    super::scenarios::wait_subscribers_parameter(0)?;
    let unregister = super::kprobe::Kprobe::attach("nfwatch_unhook", "nfwatch_hooks_unregister")?;
    let srcs = [PEER4, LATE4];
    let all = Watcher::start_args(
        ctx,
        "all",
        &srcs,
        "jsonl",
        &ctx.path("all.jsonl"),
        &["--all-netns"],
    )?;
    let inside = Watcher::start_in_netns(ctx, net::NS, "inside", &srcs)?;
    let late = create_late_ns();
    let result = late.and_then(|late| all_netns_traffic(ctx, all, inside, late, &unregister));
    let _ = ip(&format!("netns del {LATE_NS}"));
    let _ = ip("link del nfwl0");
    result?;
    super::fuzz::wait_live_zero(ctx)?;
    all_netns_refused(
        ctx,
        &["unshare", "-Urn"],
        "only from the initial network namespace",
    )?;
    all_netns_refused(ctx, super::AS_NOBODY, "needs root or CAP_NET_ADMIN")
}

fn all_netns_traffic(
    ctx: &Ctx,
    all: Watcher,
    inside: Watcher,
    late: u64,
    unregister: &super::kprobe::Kprobe,
) -> Result<()> {
    let peer = netns_inode(net::NS)?;
    let (peer_pid, peer_udp) = udp_in_ns(net::NS, PEER4, WATCHED4)?;
    let (late_pid, late_udp) = udp_in_ns(LATE_NS, LATE4, LATE_HOST4)?;
    // Replies from the late namespace's kernel while it is deleted.
    let flood = super::traffic::Flood::start(LATE_HOST4, LATE4);
    crate::util::wait_until(
        "port unreachables from the late namespace",
        super::nfwatch::DEADLINE,
        || Ok((unreachables_sent(LATE_NS)? >= 100).then_some(())),
    )?;
    let before = unregister.hits()?;
    ip(&format!("netns del {LATE_NS}"))?;
    crate::util::wait_until(
        &format!("{LATE_NS}'s hooks to go with it"),
        super::nfwatch::DEADLINE,
        || Ok((unregister.hits()? > before).then_some(())),
    )?;
    // Its device went with it: the flood ends in an error.
    let _ = flood.stop();
    let all = all.collect()?;
    let inside = inside.collect()?;
    let count = |records: &[Record], src: &str, netns: u64, proto: &str| {
        records
            .iter()
            .filter(|r| r.src == src && r.netns == Some(netns as u32) && r.proto == proto)
            .count() as u64
    };
    ctx.log(&format!(
        "all: {} records, inside: {}; peer {peer_pid} sent {}, late {late_pid} {}",
        all.len(),
        inside.len(),
        peer_udp.packets,
        late_udp.packets
    ));
    ensure!(
        count(&all, PEER4, peer, "udp") == peer_udp.packets
            && count(&all, LATE4, late, "udp") == late_udp.packets,
        "--all-netns: {} UDP records from {PEER4} in {peer}, {} from {LATE4} in {late}; sent {} and {}",
        count(&all, PEER4, peer, "udp"),
        count(&all, LATE4, late, "udp"),
        peer_udp.packets,
        late_udp.packets
    );
    let replies = count(&all, LATE4, late, "icmp");
    ensure!(replies > 0, "no port unreachable from {LATE4} recorded");
    for r in &all {
        ensure!(
            r.netns == Some(peer as u32) || r.netns == Some(late as u32),
            "a record from neither namespace: {r:?}"
        );
        if r.proto == "udp" {
            let pid = if r.src == PEER4 { peer_pid } else { late_pid };
            ensure!(r.pid == Some(pid), "UDP not from pid {pid}: {r:?}");
        }
    }
    ensure!(
        inside.iter().all(|r| r.netns == Some(peer as u32))
            && count(&inside, PEER4, peer, "udp") == peer_udp.packets,
        "the watcher inside {}: {} records, {} of them UDP from {PEER4}; expected {} and only those",
        net::NS,
        inside.len(),
        count(&inside, PEER4, peer, "udp"),
        peer_udp.packets
    );
    Ok(())
}
