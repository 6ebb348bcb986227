//! A bare Generic Netlink client for sending requests the CLI never would;
//! the attributes come from nfwatch-proto's raw builder.

use anyhow::{bail, ensure, Context, Result};
use nfwatch_proto::{emit_attrs, walk_attrs, RawAttr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLM_F_REQUEST: u16 = 1;
pub(super) const NLM_F_ACK: u16 = 4;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_EXT_ACK: libc::c_int = 11;
pub(super) const HDR: usize = 16;
/// Replies never take longer than this (TCG is slow).
const RECV_TIMEOUT_SECS: libc::time_t = 60;

/// One message received.
pub(super) struct Message {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// What one read found.
pub(super) enum Queued {
    Messages(Vec<Message>),
    /// ENOBUFS: netlink dropped messages to this socket.
    Overrun,
    /// EAGAIN: nothing queued (or nothing within the receive timeout).
    Empty,
}

/// The kernel's answer to a request that failed.
#[derive(Debug)]
pub struct NlError {
    pub errno: i32,
    pub extack: Option<String>,
}

pub struct Genl {
    fd: OwnedFd,
    seq: u32,
    /// Messages skipped while waiting for an answer that belonged to
    /// another request (not seq 0, which the kernel's own messages carry).
    pub strays: u64,
}

fn check(ret: libc::c_int, what: &str) -> Result<()> {
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_string());
    }
    Ok(())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink socket of `protocol` with extended acks and a receive timeout.
pub(super) fn open_socket(protocol: libc::c_int) -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    check(raw, "socket(AF_NETLINK)")?;
    // SAFETY: raw is a fresh valid fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    let timeout = libc::timeval {
        tv_sec: RECV_TIMEOUT_SECS,
        tv_usec: 0,
    };
    // SAFETY: the option values point to live locals of the sizes given.
    unsafe {
        check(
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_EXT_ACK,
                (&one as *const libc::c_int).cast(),
                4,
            ),
            "NETLINK_EXT_ACK",
        )?;
        check(
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            ),
            "SO_RCVTIMEO",
        )?;
    }
    Ok(fd)
}

/// A netlink message: header (portid 0) and `body`.
pub(super) fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Result<Vec<u8>> {
    let len = HDR + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&u32::try_from(len)?.to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    Ok(msg)
}

/// Sends `msg` (header included) to the kernel.
pub(super) fn send_message(fd: &OwnedFd, msg: &[u8]) -> Result<()> {
    // SAFETY: msg is a live buffer of msg.len() bytes; the kernel is the peer (default address).
    let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    ensure!(
        sent == msg.len() as isize,
        "netlink send of {} bytes: {}",
        msg.len(),
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// The messages of one datagram (waiting up to the receive timeout); none
/// after an overrun (ENOBUFS).
pub(super) fn recv_messages(fd: &OwnedFd) -> Result<Vec<Message>> {
    match recv_datagram(fd, 0)? {
        Queued::Messages(msgs) => Ok(msgs),
        Queued::Overrun => Ok(Vec::new()),
        Queued::Empty => bail!("no netlink message within {RECV_TIMEOUT_SECS} s"),
    }
}

/// One datagram read with recv(2) `flags`.
fn recv_datagram(fd: &OwnedFd, flags: libc::c_int) -> Result<Queued> {
    let mut buf = vec![0u8; 1 << 17];
    // SAFETY: buf is a live, writable buffer of buf.len() bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Queued::Empty),
            Some(libc::ENOBUFS) => Ok(Queued::Overrun),
            _ => Err(e).context("netlink recv"),
        };
    }
    let buf = &buf[..n as usize];
    let mut msgs = Vec::new();
    let mut at = 0;
    while at + HDR <= buf.len() {
        let len = u32_at(buf, at) as usize;
        ensure!(
            len >= HDR && at + len <= buf.len(),
            "bad netlink message length {len}"
        );
        msgs.push(Message {
            kind: u16_at(buf, at + 4),
            flags: u16_at(buf, at + 6),
            seq: u32_at(buf, at + 8),
            payload: buf[at + HDR..at + len].to_vec(),
        });
        at += align4(len);
    }
    Ok(Queued::Messages(msgs))
}

impl Genl {
    pub fn open() -> Result<Self> {
        let fd = open_socket(libc::NETLINK_GENERIC)?;
        Ok(Self {
            fd,
            seq: 0,
            strays: 0,
        })
    }

    /// Binds the socket to `portid`; the kernel's error as it is (EADDRINUSE
    /// while another socket holds it).
    pub fn bind(&self, portid: u32) -> std::io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_pid = portid;
        // SAFETY: addr is a live sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads every message already queued, without waiting; returns how
    /// many datagrams (an overrun counts as one: something was sent here).
    pub fn drain(&self) -> Result<usize> {
        let mut datagrams = 0;
        loop {
            match self.try_recv()? {
                Queued::Empty => return Ok(datagrams),
                Queued::Messages(_) | Queued::Overrun => datagrams += 1,
            }
        }
    }

    /// Waits (up to the receive timeout each) until `n` more messages have
    /// arrived.
    pub fn wait_messages(&self, n: usize) -> Result<()> {
        let mut got = 0;
        while got < n {
            got += recv_messages(&self.fd)?.len();
        }
        Ok(())
    }

    /// One datagram, without waiting.
    pub fn try_recv(&self) -> Result<Queued> {
        recv_datagram(&self.fd, libc::MSG_DONTWAIT)
    }

    /// Sends the GET_STATS request `seq` without waiting for its answer.
    pub fn send_get_stats(&mut self, family: u16) -> Result<u32> {
        self.send(family, nfwatch_proto::NFWATCH_CMD_GET_STATS, &[])
    }

    /// The sequence number for the next request.
    pub fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// Sends `msg` as it is (header included): for deliberately broken requests.
    pub fn send_bytes(&mut self, msg: &[u8]) -> Result<()> {
        send_message(&self.fd, msg)
    }

    fn send(&mut self, family: u16, cmd: u8, attrs: &[u8]) -> Result<u32> {
        self.next_seq();
        let mut body = vec![cmd, nfwatch_proto::NFWATCH_GENL_VERSION, 0, 0];
        body.extend_from_slice(attrs);
        let msg = message(family, NLM_F_REQUEST | NLM_F_ACK, self.seq, &body)?;
        send_message(&self.fd, &msg)?;
        Ok(self.seq)
    }

    fn recv(&self) -> Result<Vec<Message>> {
        // Record batches may overrun the buffer; requests' answers still follow.
        recv_messages(&self.fd)
    }

    /// Sends a request and returns (the replies before the ack, the ack's errno and extack).
    fn transact(&mut self, family: u16, cmd: u8, attrs: &[u8]) -> Result<(Vec<Vec<u8>>, NlError)> {
        let seq = self.send(family, cmd, attrs)?;
        self.answer(seq)
    }

    /// Waits for the answer to request `seq`: (the replies before the ack,
    /// the ack's errno and extack). Messages of other requests and record
    /// batches are skipped.
    pub fn answer(&mut self, seq: u32) -> Result<(Vec<Vec<u8>>, NlError)> {
        let mut replies = Vec::new();
        let start = std::time::Instant::now();
        loop {
            // Record batches keep coming while subscribed: a lost answer
            // would otherwise keep this loop reading them for ever.
            ensure!(
                start.elapsed().as_secs() < RECV_TIMEOUT_SECS as u64,
                "no answer to request {seq} within {RECV_TIMEOUT_SECS} s"
            );
            for msg in self.recv()? {
                if msg.seq != seq {
                    self.strays += u64::from(msg.seq != 0);
                    continue;
                }
                if msg.kind == NLMSG_ERROR {
                    return Ok((replies, parse_error(&msg)?));
                }
                replies.push(msg.payload);
            }
        }
    }

    /// Bytes waiting in the socket's receive queue (without reading them).
    pub fn pending_bytes(&self) -> Result<usize> {
        self.peek(libc::MSG_DONTWAIT)
    }

    /// Waits (up to the receive timeout) until a message is queued; its size.
    pub fn wait_pending(&self) -> Result<usize> {
        self.peek(0)
    }

    fn peek(&self, flags: libc::c_int) -> Result<usize> {
        let mut buf = [0u8; 64];
        // SAFETY: buf is a live, writable buffer; MSG_TRUNC makes the call
        // return the real length of the next message without copying more.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags | libc::MSG_PEEK | libc::MSG_TRUNC,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(0),
            _ => Err(e).context("netlink recv (peek)"),
        }
    }

    /// The id of Generic Netlink family `name`.
    pub fn resolve(&mut self, name: &str) -> Result<u16> {
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let attrs = emit_attrs(&[RawAttr::bytes(CTRL_ATTR_FAMILY_NAME, cname)]);
        let (replies, ack) = self.transact(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, &attrs)?;
        ensure!(
            ack.errno == 0,
            "resolving family {name}: errno {} (is the module loaded?)",
            ack.errno
        );
        for reply in &replies {
            for attr in walk_attrs(reply.get(4..).unwrap_or_default()) {
                let (kind, value) = attr?;
                if kind == CTRL_ATTR_FAMILY_ID && value.len() == 2 {
                    return Ok(u16_at(value, 0));
                }
            }
        }
        bail!("no family id in the reply for {name}")
    }

    /// Sends `cmd` (`what`, in the error) with `attrs` to `family`, which
    /// must accept it.
    pub fn accepted(&mut self, family: u16, what: &str, cmd: u8, attrs: &[RawAttr]) -> Result<()> {
        let ack = self.request(family, cmd, attrs)?;
        ensure!(
            ack.errno == 0,
            "{what}: errno {} {:?}",
            ack.errno,
            ack.extack
        );
        Ok(())
    }

    /// Sends `cmd` with `attrs` to `family`; returns the ack (errno 0 = accepted).
    pub fn request(&mut self, family: u16, cmd: u8, attrs: &[RawAttr]) -> Result<NlError> {
        self.transact(family, cmd, &emit_attrs(attrs))
            .map(|(_, ack)| ack)
    }
}

/// errno and extack message of an NLMSG_ERROR.
pub(super) fn parse_error(msg: &Message) -> Result<NlError> {
    let p = &msg.payload;
    ensure!(p.len() >= 4 + HDR, "short NLMSG_ERROR");
    let errno = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
    let mut extack = None;
    if msg.flags & NLM_F_ACK_TLVS != 0 {
        let echoed = if msg.flags & NLM_F_CAPPED != 0 {
            HDR
        } else {
            u32_at(p, 4) as usize
        };
        let tlvs = p.get(4 + align4(echoed)..).unwrap_or_default();
        for attr in walk_attrs(tlvs) {
            let (kind, value) = attr?;
            if kind == NLMSGERR_ATTR_MSG {
                let text = value.split(|&b| b == 0).next().unwrap_or_default();
                extack = Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    Ok(NlError { errno, extack })
}
