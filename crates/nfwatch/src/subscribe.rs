//! Family resolution and request/reply exchanges with the kernel.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use netlink_packet_generic::constants::{CTRL_CMD_NEWFAMILY, GENL_ID_CTRL};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use nfwatch_proto::{NFWATCH_GENL_NAME, PROTOCOL_VERSION};

use crate::error::{Error, Result};
use crate::netlink::{messages, CtrlFamily, GenlSocket, Message, Received};

/// How long any request may wait for its reply; generous, never forever.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The error for a request the kernel rejected with `errno`.
pub fn kernel_error(request: &'static str, errno: i32, extack: Option<String>) -> Error {
    match errno {
        libc::EPERM => Error::NotPermitted {
            request,
            reason: extack,
        },
        _ => Error::Kernel {
            request,
            errno,
            extack,
        },
    }
}

/// The nfwatch family id, once its protocol version is known to be ours.
pub fn resolve_nfwatch(socket: &mut GenlSocket) -> Result<u16> {
    let family = nfwatch_family(socket)?;
    let module = family.version.unwrap_or(0);
    if module != u32::from(PROTOCOL_VERSION) {
        return Err(Error::ProtocolMismatch {
            module,
            module_version: module_version(),
        });
    }
    family
        .id
        .ok_or(Error::NoReply("GETFAMILY (no family id in the reply)"))
}

/// The nfwatch family as nlctrl describes it; ENOENT means the module is
/// not loaded.
pub fn nfwatch_family(socket: &mut GenlSocket) -> Result<CtrlFamily> {
    get_family(socket, NFWATCH_GENL_NAME).map_err(|e| match e {
        Error::Kernel {
            errno: libc::ENOENT,
            ..
        } => Error::ModuleNotLoaded,
        other => other,
    })
}

/// The loaded module's MODULE_VERSION, where sysfs shows it.
pub fn module_version() -> Option<String> {
    std::fs::read_to_string("/sys/module/nfwatch/version")
        .ok()
        .map(|text| text.trim().to_string())
}

/// Joins nlctrl's "notify" group, which announces the module going away.
pub fn join_ctrl_notify(socket: &mut GenlSocket) -> Result<()> {
    let ctrl = get_family(socket, "nlctrl")?;
    let group = ctrl
        .group("notify")
        .ok_or(Error::NoReply("GETFAMILY nlctrl (no notify group)"))?;
    socket
        .join_group(group)
        .map_err(|e| Error::io("cannot join the nlctrl notify group", e))
}

fn get_family(socket: &mut GenlSocket, name: &str) -> Result<CtrlFamily> {
    let request = GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
    };
    let seq = send(socket, GENL_ID_CTRL, request)?;
    exchange(socket, seq, "GETFAMILY", |family, cmd, attrs| {
        (family == GENL_ID_CTRL && cmd == CTRL_CMD_NEWFAMILY)
            .then(|| CtrlFamily::parse(attrs).map_err(Error::from))
            .transpose()
    })
}

pub fn send<F>(socket: &mut GenlSocket, family_id: u16, payload: F) -> Result<u32>
where
    F: netlink_packet_generic::GenlFamily + netlink_packet_core::Emitable + std::fmt::Debug,
{
    socket
        .send(family_id, payload)
        .map_err(|e| Error::io("cannot send to the kernel", e))
}

/// Waits (blocking, bounded by REPLY_TIMEOUT) for the reply to request
/// `seq` and its ack. `reply` picks the reply out of genl messages with
/// that seq (family, cmd, attrs). Only for exchanges outside a
/// subscription, where nothing else is expected.
pub fn exchange<T>(
    socket: &mut GenlSocket,
    seq: u32,
    request: &'static str,
    mut reply: impl FnMut(u16, u8, &[u8]) -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut answer = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || !wait_readable(&[socket.fd()], Some(remaining))?[0] {
            return Err(Error::NoReply(request));
        }
        let datagram = match socket.recv() {
            Ok(Received::Datagram(datagram)) => datagram,
            Ok(Received::Overrun | Received::Empty) => continue,
            Err(e) => return Err(Error::io("cannot receive from the kernel", e)),
        };
        for message in messages(datagram) {
            match message? {
                Message::Genl {
                    family,
                    seq: s,
                    cmd,
                    attrs,
                } if s == seq => {
                    if let Some(value) = reply(family, cmd, attrs)? {
                        answer = Some(value);
                    }
                }
                Message::Error {
                    seq: s,
                    errno,
                    extack,
                } if s == seq => return Err(kernel_error(request, errno, extack)),
                Message::Ack { seq: s } if s == seq => {
                    return answer.ok_or(Error::NoReply(request));
                }
                _ => {}
            }
        }
    }
}

/// poll(2) for readability; which of `fds` are readable (all false on
/// timeout). EINTR counts as a timeout-free wakeup with nothing readable.
pub fn wait_readable<const N: usize>(
    fds: &[RawFd; N],
    timeout: Option<Duration>,
) -> Result<[bool; N]> {
    let mut pollfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let timeout_ms = timeout.map_or(-1, |t| {
        // Round up so a pending sub-millisecond deadline does not spin.
        libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
    });
    // SAFETY: pollfds is a valid array of N pollfd structures.
    let rc = unsafe { libc::poll(pollfds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io("poll", e));
        }
    }
    Ok(pollfds.map(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0))
}
