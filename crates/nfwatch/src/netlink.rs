//! The Generic Netlink socket and the pure parsing of what it receives.
//! A plain synchronous socket: every message to our port, solicited or
//! not, comes through `recv`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    Emitable, NetlinkBuffer, NetlinkMessage, NLMSG_ERROR, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED,
    NLM_F_REQUEST,
};
use netlink_packet_generic::constants::{
    CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_MCAST_GROUPS, CTRL_ATTR_MCAST_GRP_ID,
    CTRL_ATTR_MCAST_GRP_NAME, CTRL_ATTR_VERSION, GENL_HDRLEN,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};
use nfwatch_proto::{walk_attrs, ProtoError};

/// Large enough for any batch the module sends; MSG_TRUNC catches the rest.
const RECV_BUFFER_BYTES: usize = 256 * 1024;
const NLMSG_HDRLEN: usize = 16;
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Message types below this are netlink control messages (NLMSG_*).
const NLMSG_MIN_TYPE: u16 = 0x10;

/// One netlink message from a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Ack {
        seq: u32,
    },
    Error {
        seq: u32,
        errno: i32,
        extack: Option<String>,
    },
    /// A Generic Netlink message; `attrs` follow the genl header.
    Genl {
        family: u16,
        seq: u32,
        cmd: u8,
        attrs: &'a [u8],
    },
    /// NLMSG_DONE, NLMSG_NOOP and the like.
    Other,
}

/// What one `recv` produced.
#[derive(Debug)]
pub enum Received<'a> {
    Datagram(&'a [u8]),
    /// ENOBUFS: the kernel dropped messages to us because the socket was full.
    Overrun,
    /// Non-blocking socket, nothing queued.
    Empty,
}

pub struct GenlSocket {
    socket: Socket,
    next_seq: u32,
    buffer: Vec<u8>,
}

impl GenlSocket {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        // Extended acks explain kernel errors; capped acks keep them short.
        // Both are optional (older kernels), so failures are ignored.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Self {
            socket,
            next_seq: 1,
            buffer: vec![0; RECV_BUFFER_BYTES],
        })
    }

    /// Requests `bytes` of receive buffer, beyond rmem_max when privileged;
    /// returns what the kernel granted.
    pub fn set_receive_buffer(&self, bytes: usize) -> io::Result<usize> {
        let requested = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        if set_int_option(self.fd(), libc::SO_RCVBUFFORCE, requested).is_err() {
            set_int_option(self.fd(), libc::SO_RCVBUF, requested)?;
        }
        self.socket.get_rx_buf_sz()
    }

    pub fn set_non_blocking(&self) -> io::Result<()> {
        self.socket.set_non_blocking(true)
    }

    pub fn join_group(&self, group: u32) -> io::Result<()> {
        self.socket.add_membership(group)
    }

    /// Sends a genl request with NLM_F_ACK to `family_id`; returns its seq.
    pub fn send<F>(&mut self, family_id: u16, payload: F) -> io::Result<u32>
    where
        F: GenlFamily + Emitable + std::fmt::Debug,
    {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let bytes = request_bytes(family_id, payload, seq);
        self.socket.send(&bytes, 0)?;
        Ok(seq)
    }

    pub fn recv(&mut self) -> io::Result<Received<'_>> {
        let mut space: &mut [u8] = &mut self.buffer;
        match self.socket.recv(&mut space, libc::MSG_TRUNC) {
            Ok(len) if len > self.buffer.len() => Err(io::Error::other(format!(
                "netlink message of {len} bytes truncated to {}",
                self.buffer.len()
            ))),
            Ok(len) => Ok(Received::Datagram(&self.buffer[..len])),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Received::Overrun),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Received::Empty),
            Err(e) => Err(e),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

fn set_int_option(fd: RawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a valid pointer to a c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The full netlink message for a genl request.
pub fn request_bytes<F>(family_id: u16, payload: F, seq: u32) -> Vec<u8>
where
    F: GenlFamily + Emitable + std::fmt::Debug,
{
    let mut genl = GenlMessage::from_payload(payload);
    genl.set_resolved_family_id(family_id);
    let mut message = NetlinkMessage::from(genl);
    message.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    message.header.sequence_number = seq;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// The messages in one datagram, in order.
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<Message<'_>, ProtoError>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = split_message(rest);
        match parsed {
            Ok((message, tail)) => {
                rest = tail;
                Some(Ok(message))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

/// The first message of `bytes` and what follows it.
fn split_message(bytes: &[u8]) -> Result<(Message<'_>, &[u8]), ProtoError> {
    let header = NetlinkBuffer::new_checked(bytes)
        .map_err(|e| ProtoError::BadFraming(format!("netlink header: {e}")))?;
    let len = header.length() as usize;
    let payload = bytes.get(NLMSG_HDRLEN..len).unwrap_or_default();
    let tail = bytes.get(align4(len)..).unwrap_or_default();
    let seq = header.sequence_number();
    let message = match header.message_type() {
        NLMSG_ERROR => parse_error(seq, header.flags(), payload)?,
        kind if kind >= NLMSG_MIN_TYPE => parse_genl(kind, seq, payload)?,
        _ => Message::Other,
    };
    Ok((message, tail))
}

fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

fn parse_genl(family: u16, seq: u32, payload: &[u8]) -> Result<Message<'_>, ProtoError> {
    let header = GenlHeader::parse(payload)
        .map_err(|e| ProtoError::BadFraming(format!("genl header: {e}")))?;
    Ok(Message::Genl {
        family,
        seq,
        cmd: header.cmd,
        attrs: payload.get(GENL_HDRLEN..).unwrap_or_default(),
    })
}

/// NLMSG_ERROR: error code, the request's header (and body unless
/// capped), then extended-ack attributes when NLM_F_ACK_TLVS is set.
fn parse_error(seq: u32, flags: u16, payload: &[u8]) -> Result<Message<'_>, ProtoError> {
    let truncated = |need| ProtoError::Truncated {
        what: "netlink error message",
        need,
        have: payload.len(),
    };
    let code: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(truncated(4))?;
    let errno = i32::from_ne_bytes(code).saturating_neg();
    if errno == 0 {
        return Ok(Message::Ack { seq });
    }
    let request = payload.get(4..).unwrap_or_default();
    let request_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        NetlinkBuffer::new_checked(request)
            .map(|h| align4(h.length() as usize))
            .unwrap_or(request.len())
    };
    let extack = if flags & NLM_F_ACK_TLVS != 0 {
        extack_message(request.get(request_len..).unwrap_or_default())
    } else {
        None
    };
    Ok(Message::Error { seq, errno, extack })
}

fn extack_message(tlvs: &[u8]) -> Option<String> {
    walk_attrs(tlvs)
        .map_while(Result::ok)
        .find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG)
        .map(|(_, text)| c_string(text))
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The parts of a nlctrl family message nfwatch uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CtrlFamily {
    pub id: Option<u16>,
    pub name: Option<String>,
    /// The family's protocol version (genl_family.version).
    pub version: Option<u32>,
    pub mcast_groups: Vec<(String, u32)>,
}

impl CtrlFamily {
    pub fn parse(attrs: &[u8]) -> Result<Self, ProtoError> {
        let mut family = Self::default();
        for attr in walk_attrs(attrs) {
            match attr? {
                (CTRL_ATTR_FAMILY_ID, v) => {
                    family.id = Some(
                        nfwatch_proto::attr::fixed("CTRL_ATTR_FAMILY_ID", v)
                            .map(u16::from_ne_bytes)?,
                    )
                }
                (CTRL_ATTR_FAMILY_NAME, v) => family.name = Some(c_string(v)),
                (CTRL_ATTR_VERSION, v) => {
                    family.version = Some(nfwatch_proto::attr::attr_u32("CTRL_ATTR_VERSION", v)?)
                }
                (CTRL_ATTR_MCAST_GROUPS, v) => family.mcast_groups = parse_mcast_groups(v)?,
                _ => {}
            }
        }
        Ok(family)
    }

    pub fn group(&self, name: &str) -> Option<u32> {
        self.mcast_groups
            .iter()
            .find(|(group, _)| group == name)
            .map(|&(_, id)| id)
    }
}

fn parse_mcast_groups(nest: &[u8]) -> Result<Vec<(String, u32)>, ProtoError> {
    let mut groups = Vec::new();
    for entry in walk_attrs(nest) {
        let (_, entry) = entry?;
        let (mut name, mut id) = (None, None);
        for attr in walk_attrs(entry) {
            match attr? {
                (CTRL_ATTR_MCAST_GRP_NAME, v) => name = Some(c_string(v)),
                (CTRL_ATTR_MCAST_GRP_ID, v) => {
                    id = Some(nfwatch_proto::attr::attr_u32("CTRL_ATTR_MCAST_GRP_ID", v)?)
                }
                _ => {}
            }
        }
        if let (Some(name), Some(id)) = (name, id) {
            groups.push((name, id));
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfwatch_proto::{emit_attrs, RawAttr, Request, NFWATCH_CMD_RECORDS};

    /// A netlink message: header (length, type, flags, seq, port 0) + body.
    fn nlmsg(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + body.len()) as u32;
        let mut bytes = [
            &len.to_ne_bytes()[..],
            &kind.to_ne_bytes(),
            &flags.to_ne_bytes(),
            &seq.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            body,
        ]
        .concat();
        bytes.resize(align4(bytes.len()), 0);
        bytes
    }

    fn genl(kind: u16, seq: u32, cmd: u8, attrs: &[u8]) -> Vec<u8> {
        nlmsg(kind, 0, seq, &[&[cmd, 1, 0, 0][..], attrs].concat())
    }

    fn error_body(code: i32, request: &[u8], tlvs: &[u8]) -> Vec<u8> {
        [&code.to_ne_bytes()[..], request, tlvs].concat()
    }

    #[test]
    fn parses_acks_errors_and_genl_messages_in_one_datagram() {
        let request = nlmsg(30, NLM_F_REQUEST, 7, &[1, 1, 0, 0]);
        let tlvs = emit_attrs(&[RawAttr::bytes(
            NLMSGERR_ATTR_MSG,
            b"prefix length too long\0".to_vec(),
        )]);
        let datagram = [
            nlmsg(NLMSG_ERROR, 0, 5, &error_body(0, &request[..16], &[])),
            nlmsg(
                NLMSG_ERROR,
                NLM_F_CAPPED | NLM_F_ACK_TLVS,
                7,
                &error_body(-libc::EINVAL, &request[..16], &tlvs),
            ),
            genl(30, 0, NFWATCH_CMD_RECORDS, &[9, 9, 9, 9]),
            nlmsg(3, 0, 0, &[0; 4]),
        ]
        .concat();
        let parsed: Vec<_> = messages(&datagram).map(Result::unwrap).collect();
        assert_eq!(
            parsed,
            vec![
                Message::Ack { seq: 5 },
                Message::Error {
                    seq: 7,
                    errno: libc::EINVAL,
                    extack: Some("prefix length too long".into())
                },
                Message::Genl {
                    family: 30,
                    seq: 0,
                    cmd: NFWATCH_CMD_RECORDS,
                    attrs: &[9, 9, 9, 9]
                },
                Message::Other,
            ]
        );
    }

    #[test]
    fn finds_extack_after_an_uncapped_request_copy() {
        let request = nlmsg(30, NLM_F_REQUEST, 7, &[1, 1, 0, 0, 8, 0, 2, 0, 1, 2, 3, 4]);
        let tlvs = emit_attrs(&[
            RawAttr::u32(2, 20),
            RawAttr::bytes(NLMSGERR_ATTR_MSG, b"bad prefix\0".to_vec()),
        ]);
        let datagram = nlmsg(
            NLMSG_ERROR,
            NLM_F_ACK_TLVS,
            7,
            &error_body(-1, &request, &tlvs),
        );
        let parsed: Vec<_> = messages(&datagram).map(Result::unwrap).collect();
        assert_eq!(
            parsed,
            vec![Message::Error {
                seq: 7,
                errno: libc::EPERM,
                extack: Some("bad prefix".into())
            }]
        );
        let plain = nlmsg(NLMSG_ERROR, 0, 7, &error_body(-2, &request, &[]));
        assert!(matches!(
            messages(&plain).next(),
            Some(Ok(Message::Error {
                errno: 2,
                extack: None,
                ..
            }))
        ));
    }

    #[test]
    fn rejects_truncated_messages() {
        let mut datagram = genl(30, 0, 4, &[0; 8]);
        datagram.truncate(datagram.len() - 4);
        let results: Vec<_> = messages(&datagram).collect();
        assert_eq!(results.len(), 1);
        assert!(results[0].is_err());
        assert!(messages(&[1, 2, 3]).next().unwrap().is_err());
        let short_error = nlmsg(NLMSG_ERROR, 0, 1, &[0, 0]);
        assert!(messages(&short_error).next().unwrap().is_err());
    }

    #[test]
    fn parses_ctrl_family_with_groups() {
        let attrs = emit_attrs(&[
            RawAttr::bytes(CTRL_ATTR_FAMILY_NAME, b"nlctrl\0".to_vec()),
            RawAttr::bytes(CTRL_ATTR_FAMILY_ID, 16u16.to_ne_bytes()),
            RawAttr::u32(CTRL_ATTR_VERSION, 2),
            RawAttr::nested(
                CTRL_ATTR_MCAST_GROUPS,
                vec![RawAttr::nested(
                    1,
                    vec![
                        RawAttr::u32(CTRL_ATTR_MCAST_GRP_ID, 16),
                        RawAttr::bytes(CTRL_ATTR_MCAST_GRP_NAME, b"notify\0".to_vec()),
                    ],
                )],
            ),
        ]);
        let family = CtrlFamily::parse(&attrs).unwrap();
        assert_eq!(family.id, Some(16));
        assert_eq!(family.name.as_deref(), Some("nlctrl"));
        assert_eq!(family.version, Some(2));
        assert_eq!(family.group("notify"), Some(16));
        assert_eq!(family.group("other"), None);
    }

    #[test]
    fn builds_requests_with_ack_flag_and_family() {
        let bytes = request_bytes(28, Request::unsubscribe(), 9);
        let header = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(header.length() as usize, bytes.len());
        assert_eq!(header.message_type(), 28);
        assert_eq!(header.flags(), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(header.sequence_number(), 9);
        assert_eq!(
            &bytes[16..],
            &[nfwatch_proto::NFWATCH_CMD_UNSUBSCRIBE, 1, 0, 0]
        );
    }
}
