//! nfwatch wire format: the Rust mirror of include/uapi/linux/nfwatch.h.
//! Pure data handling, no I/O.

pub mod attr;
mod consts;
mod error;
mod message;
mod prefix;
mod record;

pub use attr::{emit_attrs, walk_attrs, RawAttr, RawPayload};
pub use consts::*;
pub use error::ProtoError;
pub use message::{prefixes_attr, Batch, KernelMessage, LiveObjects, Request, Stats, StatsReply};
pub use prefix::{Prefix, PrefixError};
pub use record::{Family, IfName, Record, RecordBytes};
