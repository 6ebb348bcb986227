use std::fmt;

/// Why bytes from the kernel (or a request under construction) are not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// An attribute or record is shorter than its layout requires.
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// A required attribute is absent.
    MissingAttr { what: &'static str },
    /// An attribute has the wrong payload length.
    BadAttrLen { what: &'static str, len: usize },
    /// The attribute stream itself is malformed.
    BadFraming(String),
    /// A record names an address family other than AF_INET/AF_INET6.
    UnknownFamily { what: &'static str, family: u8 },
    /// NFWATCH_A_RECORD_SIZE is below the size this program understands.
    RecordSizeTooSmall(usize),
    /// NFWATCH_A_RECORDS is not a whole number of records.
    RecordsNotMultiple { len: usize, record_size: usize },
    /// NFWATCH_A_RECORD_SIZE of a batch of flows is below the size this
    /// program understands.
    FlowSizeTooSmall(usize),
    /// A batch of packets to a subscriber of flows, or the other way round.
    UnexpectedBatch { got: &'static str },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { what, need, have } => {
                write!(f, "{what}: need {need} bytes, got {have}")
            }
            Self::MissingAttr { what } => write!(f, "missing attribute {what}"),
            Self::BadAttrLen { what, len } => {
                write!(f, "attribute {what} has invalid length {len}")
            }
            Self::BadFraming(cause) => write!(f, "malformed attributes: {cause}"),
            Self::UnknownFamily { what, family } => {
                write!(f, "record {what} has unknown address family {family}")
            }
            Self::RecordSizeTooSmall(size) => write!(
                f,
                "record size {size} is smaller than {}",
                crate::record_layout::SIZE_V1
            ),
            Self::RecordsNotMultiple { len, record_size } => write!(
                f,
                "records attribute of {len} bytes is not a multiple of the record size {record_size}"
            ),
            Self::FlowSizeTooSmall(size) => write!(
                f,
                "flow size {size} is smaller than {}",
                crate::flow_layout::FIRST + crate::record_layout::SIZE_V1
            ),
            Self::UnexpectedBatch { got } => write!(f, "a batch of {got} this subscription did not ask for"),
        }
    }
}

impl std::error::Error for ProtoError {}
