//! `guest-gen`: the benchmark's traffic generator. It sends as fast as it can
//! for a fixed time and prints one JSON line: what it sent and its CPU time.

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Datagrams per sendmmsg call.
const BATCH: usize = 64;
/// TCP bytes per write (TCP_NODELAY: about one segment each).
const TCP_WRITE: usize = 128;

#[derive(clap::Args)]
pub struct GenArgs {
    /// udp or tcp.
    #[arg(long)]
    proto: String,
    /// Source address and destination socket address.
    #[arg(long)]
    src: std::net::IpAddr,
    #[arg(long)]
    dst: SocketAddr,
    /// How long to send.
    #[arg(long)]
    seconds: f64,
    /// UDP payload bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

/// What the generator prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenReport {
    /// UDP: datagrams sent. TCP: segments the guest sent (Tcp OutSegs delta,
    /// both directions: the listener is local too).
    pub packets: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// getrusage(RUSAGE_SELF) user + system seconds.
    pub cpu_seconds: f64,
    /// Guest-wide busy CPU seconds (/proc/stat) when sending started.
    pub busy_start: f64,
    /// ... and when it ended.
    pub busy_end: f64,
}

/// Guest-wide busy CPU seconds so far: user, nice, system, irq, softirq,
/// steal of the `cpu` line of /proc/stat.
pub fn busy_seconds() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().context("bad /proc/stat"))
        .collect::<Result<_>>()?;
    ensure!(ticks.len() >= 8, "short cpu line in /proc/stat: {line}");
    // user nice system idle iowait irq softirq steal
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(busy as f64 / hz.max(1) as f64)
}

/// CPU seconds (user + system) of this process (`libc::RUSAGE_SELF`) or of
/// its children reaped so far (`libc::RUSAGE_CHILDREN`).
pub fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The Tcp OutSegs counter of /proc/net/snmp.
pub(super) fn tcp_out_segs() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").context("cannot read /proc/net/snmp")?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next(), tcp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Tcp lines in /proc/net/snmp");
    };
    let at = names
        .split_whitespace()
        .position(|n| n == "OutSegs")
        .context("no OutSegs in /proc/net/snmp")?;
    values
        .split_whitespace()
        .nth(at)
        .and_then(|v| v.parse().ok())
        .context("bad OutSegs value")
}

/// sendmmsg batches of BATCH datagrams until `until`; returns datagrams sent.
fn udp(args: &GenArgs, until: Duration, start: Instant) -> Result<u64> {
    let socket = Socket::new(Domain::for_address(args.dst), Type::DGRAM, None)?;
    socket
        .bind(&SocketAddr::new(args.src, 0).into())
        .with_context(|| format!("cannot bind UDP to {}", args.src))?;
    socket
        .connect(&SockAddr::from(args.dst))
        .with_context(|| format!("cannot connect UDP to {}", args.dst))?;
    let data = vec![0x6e_u8; args.payload];
    let mut iovs: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zeroed means no name and no control.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (msg, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0u64;
    while start.elapsed() < until {
        // SAFETY: msgs points at BATCH headers whose iovecs point into `data`,
        // all alive for the call.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            // A full device queue or socket buffer: try again. So too the
            // port unreachable an earlier datagram drew from a port nobody
            // listens on, which the connected socket reports on a later
            // send (sending nothing): it fails the call only when the ICMP
            // comes in between two calls, as it may under TCG.
            if matches!(
                err.raw_os_error(),
                Some(libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED)
            ) {
                continue;
            }
            return Err(err).context("sendmmsg");
        }
        sent += n as u64;
    }
    Ok(sent)
}

/// Writes TCP_WRITE bytes at a time with TCP_NODELAY until `until`; returns bytes.
fn tcp(args: &GenArgs, until: Duration, start: Instant) -> Result<u64> {
    let socket = Socket::new(
        Domain::for_address(args.dst),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket
        .bind(&SocketAddr::new(args.src, 0).into())
        .with_context(|| format!("cannot bind TCP to {}", args.src))?;
    socket
        .connect(&SockAddr::from(args.dst))
        .with_context(|| format!("cannot connect TCP to {}", args.dst))?;
    socket.set_nodelay(true)?;
    let mut stream = TcpStream::from(socket);
    let data = [0x6e_u8; TCP_WRITE];
    let mut bytes = 0u64;
    while start.elapsed() < until {
        stream.write_all(&data).context("TCP write")?;
        bytes += TCP_WRITE as u64;
    }
    stream.shutdown(std::net::Shutdown::Both)?;
    Ok(bytes)
}

/// The arguments that run `guest-gen` from the xtask binary.
pub fn gen_args(proto: &str, src: &str, dst: &str, seconds: f64) -> Vec<String> {
    ["guest-gen", "--proto", proto, "--src", src, "--dst", dst]
        .map(String::from)
        .into_iter()
        .chain(["--seconds".to_string(), seconds.to_string()])
        .collect()
}

/// `guest-gen`.
pub fn gen(args: &GenArgs) -> Result<()> {
    let until = Duration::from_secs_f64(args.seconds);
    let segs_before = tcp_out_segs()?;
    let busy_start = busy_seconds()?;
    let cpu_start = rusage_seconds(libc::RUSAGE_SELF);
    let start = Instant::now();
    let (packets, bytes) = match args.proto.as_str() {
        "udp" => {
            let n = udp(args, until, start)?;
            (n, n * args.payload as u64)
        }
        "tcp" => {
            let bytes = tcp(args, until, start)?;
            (tcp_out_segs()? - segs_before, bytes)
        }
        other => bail!("unknown protocol {other:?} (udp or tcp)"),
    };
    let seconds = start.elapsed().as_secs_f64();
    let report = GenReport {
        packets,
        bytes,
        seconds,
        cpu_seconds: rusage_seconds(libc::RUSAGE_SELF) - cpu_start,
        busy_start,
        busy_end: busy_seconds()?,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
