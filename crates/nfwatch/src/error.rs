//! Every way nfwatch can fail, each rendered as one line after "nfwatch: ".

use std::io;

use nfwatch_proto::ProtoError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the nfwatch kernel module is not loaded (load it with `sudo modprobe nfwatch` \
         where it is installed, or `sudo insmod kmod/nfwatch.ko` in a build tree)"
    )]
    ModuleNotLoaded,
    /// The module was unloaded while we were subscribed.
    #[error(
        "the nfwatch kernel module was unloaded: recording stopped \
         (every record received was written)"
    )]
    ModuleUnloaded,
    /// The module's Generic Netlink family speaks another protocol version.
    #[error(
        "the loaded nfwatch module (version {}, protocol {module}) does not speak this \
         nfwatch's protocol {} (nfwatch {}): install the nfwatch CLI and module of \
         one release, then `sudo rmmod nfwatch` and load the matching module",
        module_version.as_deref().unwrap_or("unknown"),
        nfwatch_proto::PROTOCOL_VERSION,
        env!("CARGO_PKG_VERSION")
    )]
    ProtocolMismatch {
        module: u32,
        module_version: Option<String>,
    },
    /// EPERM for `request` (SUBSCRIBE, GET_STATS, ...).
    /// `reason`: the kernel's, when it gave one (else the capability is missing).
    #[error("{}", not_permitted(request, reason.as_deref()))]
    NotPermitted {
        request: &'static str,
        reason: Option<String>,
    },
    /// A request the kernel rejected; `extack` is its explanation, if any.
    #[error("{request} failed: {}{}", io::Error::from_raw_os_error(*errno),
        extack.as_deref().map(|text| format!(": {text}")).unwrap_or_default())]
    Kernel {
        request: &'static str,
        errno: i32,
        extack: Option<String>,
    },
    /// The kernel did not answer a request in time.
    #[error("no reply from the kernel to {0}")]
    NoReply(&'static str),
    /// Writing records to the output failed.
    #[error("write failed: {0}")]
    Write(#[source] io::Error),
    /// Any other I/O failure; `context` names what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Bytes from the kernel that do not follow the contract.
    #[error("malformed message from the kernel: {0}")]
    Malformed(#[from] ProtoError),
    /// A bad command-line value; the message names the argument.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The process exit code: 2 for usage errors, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

fn not_permitted(request: &str, reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("not permitted: {request}: {reason}"),
        None => format!(
            "not permitted: {request} needs root or CAP_NET_ADMIN in this network namespace"
        ),
    }
}

pub type Result<T> = std::result::Result<T, Error>;
