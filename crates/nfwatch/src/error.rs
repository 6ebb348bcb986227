//! Every way nfwatch can fail, each rendered as one line after "nfwatch: ".

use std::fmt;
use std::io;

use nfwatch_proto::ProtoError;

#[derive(Debug)]
pub enum Error {
    ModuleNotLoaded,
    /// The module was unloaded while we were subscribed.
    ModuleUnloaded,
    /// The module's Generic Netlink family speaks another protocol version.
    ProtocolMismatch {
        module: u32,
        module_version: Option<String>,
    },
    /// EPERM for `request` (SUBSCRIBE, GET_STATS, ...).
    /// `reason`: the kernel's, when it gave one (else the capability is missing).
    NotPermitted {
        request: &'static str,
        reason: Option<String>,
    },
    /// A request the kernel rejected; `extack` is its explanation, if any.
    Kernel {
        request: &'static str,
        errno: i32,
        extack: Option<String>,
    },
    /// The kernel did not answer a request in time.
    NoReply(&'static str),
    /// An I/O failure; `context` names what was being done.
    Io {
        context: String,
        source: io::Error,
    },
    /// Bytes from the kernel that do not follow the contract.
    Malformed(ProtoError),
    /// A bad command-line value; the message names the argument.
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ModuleUnloaded => f.write_str(
                "the nfwatch kernel module was unloaded: recording stopped \
                 (every record received was written)",
            ),
            Self::ModuleNotLoaded => f.write_str(
                "the nfwatch kernel module is not loaded (load it with `sudo modprobe nfwatch` \
                 where it is installed, or `sudo insmod kmod/nfwatch.ko` in a build tree)",
            ),
            Self::ProtocolMismatch {
                module,
                module_version,
            } => write!(
                f,
                "the loaded nfwatch module (version {}, protocol {module}) does not speak this \
                 nfwatch's protocol {} (nfwatch {}): install the nfwatch CLI and module of \
                 one release, then `sudo rmmod nfwatch` and load the matching module",
                module_version.as_deref().unwrap_or("unknown"),
                nfwatch_proto::PROTOCOL_VERSION,
                env!("CARGO_PKG_VERSION"),
            ),
            Self::NotPermitted {
                request,
                reason: Some(reason),
            } => write!(f, "not permitted: {request}: {reason}"),
            Self::NotPermitted {
                request,
                reason: None,
            } => write!(
                f,
                "not permitted: {request} needs root or CAP_NET_ADMIN in this network namespace"
            ),
            Self::Kernel {
                request,
                errno,
                extack,
            } => {
                let cause = io::Error::from_raw_os_error(*errno);
                match extack {
                    Some(text) => write!(f, "{request} failed: {cause}: {text}"),
                    None => write!(f, "{request} failed: {cause}"),
                }
            }
            Self::NoReply(request) => write!(f, "no reply from the kernel to {request}"),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::Malformed(cause) => write!(f, "malformed message from the kernel: {cause}"),
            Self::Usage(message) => f.write_str(message),
        }
    }
}

impl From<ProtoError> for Error {
    fn from(cause: ProtoError) -> Self {
        Self::Malformed(cause)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
