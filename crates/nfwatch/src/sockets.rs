//! The process holding a socket's file, found as `ss -p` finds it: for the
//! records whose socket the kernel saw nobody send on since the subscription
//! began (a socket older than it that only receives: its ACKs), by the
//! socket's inode number in `/proc/PID/fd`.

use std::collections::HashMap;
use std::fs;

use nfwatch_proto::{PaddedName, Record};
use procfs::process::{all_processes, FDTarget};

use crate::rebuilt::RebuiltMap;

/// A process holding a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub comm: PaddedName,
}

pub struct SocketHolders {
    holders: RebuiltMap<u32, Holder>,
}

impl SocketHolders {
    pub fn new() -> Self {
        Self {
            holders: RebuiltMap::new(),
        }
    }

    /// The process holding the socket with inode number `ino`; of several,
    /// the one with the lowest pid. `/proc` is read again on a miss, at
    /// most once a second.
    pub fn holder(&mut self, ino: u32) -> Option<Holder> {
        self.holders.get(&ino, scan).copied()
    }

    /// A record without a sending process gets the process holding its
    /// socket, if any: true when it did.
    pub fn fill(&mut self, r: &mut Record) -> bool {
        if r.comm.is_some() {
            return false;
        }
        let Some(holder) = r.sock_ino.and_then(|ino| self.holder(ino)) else {
            return false;
        };
        r.pid = Some(holder.pid);
        r.comm = Some(holder.comm);
        true
    }
}

impl Default for SocketHolders {
    fn default() -> Self {
        Self::new()
    }
}

/// Every socket some process in `/proc` holds, by inode number; processes
/// that go away or cannot be read are skipped.
fn scan() -> HashMap<u32, Holder> {
    let mut holders = HashMap::new();
    let Ok(processes) = all_processes() else {
        return holders;
    };
    // /proc lists processes by ascending pid: the first holder stays.
    for process in processes.flatten() {
        let Ok(fds) = process.fd() else { continue };
        let inodes: Vec<u32> = fds
            .flatten()
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(ino) => u32::try_from(ino).ok(),
                _ => None,
            })
            .collect();
        let Some(holder) = (!inodes.is_empty())
            .then(|| holder_of(process.pid))
            .flatten()
        else {
            continue;
        };
        for ino in inodes {
            holders.entry(ino).or_insert(holder);
        }
    }
    holders
}

fn holder_of(pid: i32) -> Option<Holder> {
    let comm = fs::read(format!("/proc/{pid}/comm")).ok()?;
    Some(Holder {
        pid: u32::try_from(pid).ok()?,
        comm: PaddedName::from_bytes(comm.strip_suffix(b"\n").unwrap_or(&comm)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn finds_this_process_by_its_socket() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let ino = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
        let holder = SocketHolders::new()
            .holder(u32::try_from(ino).unwrap())
            .unwrap();
        assert_eq!(holder.pid, std::process::id());
        let comm = fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(holder.comm.as_bytes(), comm.trim_end().as_bytes());
    }
}
