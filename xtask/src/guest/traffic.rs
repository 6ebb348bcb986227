//! Traffic generators, each returning what it sent as flows so scenarios
//! can compare them with records.

use super::nfwatch::Record;
use anyhow::{ensure, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Connect/read timeout of TCP exchanges (TCG is slow).
const TCP_TIMEOUT: Duration = Duration::from_secs(60);

/// What identifies a packet: protocol name as the CLI writes it, addresses, ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub proto: String,
    pub src: IpAddr,
    pub sport: Option<u16>,
    pub dst: IpAddr,
    pub dport: Option<u16>,
}

impl Flow {
    pub fn of(record: &Record) -> Result<Self> {
        Ok(Self {
            proto: record.proto.clone(),
            src: ip(&record.src)?,
            sport: record.sport,
            dst: ip(&record.dst)?,
            dport: record.dport,
        })
    }

    fn between(proto: &str, src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            proto: proto.into(),
            src: src.ip(),
            sport: Some(src.port()),
            dst: dst.ip(),
            dport: Some(dst.port()),
        }
    }
}

pub fn ip(text: &str) -> Result<IpAddr> {
    text.parse()
        .with_context(|| format!("bad IP address {text:?}"))
}

/// The CLI's name of an IP protocol number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// Sends one datagram of `payload` bytes from `src` (any port) to each of
/// ports `first..first+count` of `dst`, from one socket.
pub fn udp_batch(
    src: &str,
    dst: &str,
    first: u16,
    count: u16,
    payload: usize,
) -> Result<Vec<Flow>> {
    let socket =
        UdpSocket::bind((ip(src)?, 0)).with_context(|| format!("cannot bind UDP to {src}"))?;
    let local = socket.local_addr()?;
    let data = vec![0x6e_u8; payload];
    (first..first + count)
        .map(|port| {
            let to = SocketAddr::new(ip(dst)?, port);
            let sent = socket
                .send_to(&data, to)
                .with_context(|| format!("UDP {local} -> {to}"))?;
            ensure!(sent == payload, "short UDP send");
            Ok(Flow::between("udp", local, to))
        })
        .collect()
}

/// Connects from `src` to the peer's listener at `dst`, sends `payload`,
/// closes its side and reads until the peer closes: a complete exchange.
/// A TCP connection from `src` to `dst`:`port`, and its flow.
pub fn tcp_connect(src: &str, dst: &str, port: u16) -> Result<(TcpStream, Flow)> {
    let to = SocketAddr::new(ip(dst)?, port);
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket
        .bind(&SocketAddr::new(ip(src)?, 0).into())
        .with_context(|| format!("cannot bind TCP to {src}"))?;
    socket
        .connect_timeout(&to.into(), TCP_TIMEOUT)
        .with_context(|| format!("TCP connect to {to}"))?;
    socket.set_read_timeout(Some(TCP_TIMEOUT))?;
    let local = socket
        .local_addr()?
        .as_socket()
        .context("TCP socket has no IP address")?;
    Ok((TcpStream::from(socket), Flow::between("tcp", local, to)))
}

pub fn tcp_exchange(src: &str, dst: &str, port: u16, payload: &[u8]) -> Result<Flow> {
    let (mut stream, flow) = tcp_connect(src, dst, port)?;
    stream.write_all(payload)?;
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .with_context(|| format!("TCP {flow:?}: waiting for the peer to close"))?;
    Ok(flow)
}

/// `ping -c count` from `src` to `dst`; all replies must arrive. Returns the
/// ping process's pid and the echo requests' flow.
pub fn ping(src: &str, dst: &str, count: u32) -> Result<(u32, Flow)> {
    let v6 = ip(dst)?.is_ipv6();
    let mut cmd = Command::new("ping");
    cmd.arg(if v6 { "-6" } else { "-4" }).args([
        "-n",
        "-i",
        "0.2",
        "-W",
        "30",
        "-c",
        &count.to_string(),
        "-I",
        src,
        dst,
    ]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "ping {src} -> {dst} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let flow = Flow {
        proto: if v6 { "icmpv6" } else { "icmp" }.into(),
        src: ip(src)?,
        sport: None,
        dst: ip(dst)?,
        dport: None,
    };
    Ok((pid, flow))
}

/// Fragment offset (in 8-byte units) of the raw fragment: 1480 bytes in.
pub const FRAGMENT_OFFSET: u16 = 185;

/// Sends one non-first, last IPv4 fragment of a UDP datagram through a raw
/// socket (IP_HDRINCL): no L4 header in it.
pub fn ipv4_fragment(src: &str, dst: &str, payload: usize) -> Result<()> {
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (src.parse()?, dst.parse()?);
    let total = u16::try_from(20 + payload)?;
    let mut packet = vec![0u8; usize::from(total)];
    packet[0] = 0x45; // version 4, 5 words of header
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet[4..6].copy_from_slice(&0x4e57_u16.to_be_bytes()); // id
    packet[6..8].copy_from_slice(&FRAGMENT_OFFSET.to_be_bytes()); // MF clear
    packet[8] = 64; // ttl
    packet[9] = 17; // UDP
    packet[12..16].copy_from_slice(&src.octets());
    packet[16..20].copy_from_slice(&dst.octets());
    send_raw(&packet, dst.into())
}

/// Sends `packet`, its IP header included, through a raw socket to `dst`.
pub fn send_raw(packet: &[u8], dst: IpAddr) -> Result<()> {
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
        .with_context(|| format!("cannot open a raw socket to {dst}"))?;
    let sent = socket.send_to(packet, &SocketAddr::new(dst, 0).into())?;
    ensure!(sent == packet.len(), "short raw send");
    Ok(())
}

/// The destination ports a Flood cycles through, one datagram each.
pub const FLOOD_PORTS: std::ops::Range<u16> = 6000..6050;

/// UDP sent from `src` to `dst` in a loop on a thread until dropped.
pub struct Flood {
    stop: Arc<AtomicBool>,
    /// The thread's count, sent when it ends. A channel, not join(): under
    /// TCG std's join once panicked ("threads should not terminate
    /// unexpectedly") on a thread that had finished its work.
    done: Option<mpsc::Receiver<Result<u64>>>,
}

impl Flood {
    pub fn start(src: &'static str, dst: &'static str) -> Self {
        Self::paced(src, dst, Duration::ZERO)
    }

    /// A flood that waits `pause` after each round of FLOOD_PORTS datagrams.
    pub fn paced(src: &'static str, dst: &'static str, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, done) = mpsc::channel();
        thread::spawn(move || {
            let sent = (|| {
                let mut sent = 0;
                while !flag.load(Ordering::Relaxed) {
                    sent += udp_batch(src, dst, FLOOD_PORTS.start, FLOOD_PORTS.len() as u16, 32)?
                        .len() as u64;
                    if !pause.is_zero() {
                        thread::sleep(pause);
                    }
                }
                Ok(sent)
            })();
            let _ = tx.send(sent);
        });
        Self {
            stop,
            done: Some(done),
        }
    }

    /// Stops the traffic; returns how many datagrams were sent.
    pub fn stop(mut self) -> Result<u64> {
        self.finish()
            .unwrap_or_else(|| anyhow::bail!("the traffic thread ended without a count"))
    }

    fn finish(&mut self) -> Option<Result<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.done.take()?.recv().ok()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
