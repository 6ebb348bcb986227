//! nfwatch wire format: the Rust mirror of include/uapi/linux/nfwatch.h.
//! Pure data handling, no I/O.

pub mod attr;
mod consts;
mod error;
mod flow;
mod message;
mod prefix;
mod record;

pub use attr::{emit_attrs, walk_attrs, RawAttr, RawPayload};
pub use consts::*;
pub use error::ProtoError;
pub use flow::{EndReason, Flow, FlowBytes};
pub use message::{
    prefixes_attr, Batch, BatchEntry, BatchKind, CgroupFilter, FlowSettings, KernelMessage,
    LiveObjects, OwnerFilter, Request, Scope, Stats, StatsReply,
};
pub use prefix::{Prefix, PrefixError};
pub use record::{Family, PaddedName, Record, RecordBytes};

/// The protocol this build speaks: the header's NFWATCH_GENL_VERSION, or
/// one more in a build made with NFWATCH_TEST_VERSION_SKEW set (the
/// packages a test upgrades across a protocol change), as kmod/version.h's
/// NFWATCH_FAMILY_VERSION does for the module.
pub const PROTOCOL_VERSION: u8 = if option_env!("NFWATCH_TEST_VERSION_SKEW").is_some() {
    NFWATCH_GENL_VERSION + 1
} else {
    NFWATCH_GENL_VERSION
};
