//! IPFIX (RFC 7011) as an exporter writes it: messages, sets, templates and
//! data records, and the type information of enterprise-specific elements
//! (RFC 5610). No I/O: a message is bytes in a buffer, for a file (RFC 5655:
//! messages back to back) or a transport.

pub mod element;
mod message;
mod record;
pub mod type_info;

pub use element::{Element, FieldSpec};
pub use message::{Message, Template};
pub use record::RecordWriter;

/// The version number of IPFIX messages.
pub const VERSION: u16 = 10;
/// An IPFIX message header: version, length, export time, sequence number,
/// observation domain id.
pub const HEADER_LEN: usize = 16;
/// A set header: set id, length.
pub const SET_HEADER_LEN: usize = 4;
/// The set id of template sets.
pub const TEMPLATE_SET_ID: u16 = 2;
/// The set id of options template sets.
pub const OPTIONS_TEMPLATE_SET_ID: u16 = 3;
/// The smallest template (and data set) id.
pub const MIN_TEMPLATE_ID: u16 = 256;
/// The field length of a variable-length field in a template.
pub const VARIABLE_LENGTH: u16 = 65535;

/// Seconds between the NTP era's start (1900) and the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A time in nanoseconds since the Unix epoch as dateTimeNanoseconds
/// encodes it (RFC 7011 6.1.10): NTP seconds since 1900 in the high 32
/// bits, the fraction of a second in units of 2^-32 s in the low 32
/// (rounded up: a reader's (fraction * 10^9) >> 32 is the nanoseconds).
pub fn ntp_time(unix_ns: u64) -> u64 {
    let seconds = unix_ns / 1_000_000_000 + NTP_UNIX_OFFSET;
    let nanos = unix_ns % 1_000_000_000;
    let fraction = (nanos << 32).div_ceil(1_000_000_000);
    (seconds << 32) | fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_time_of_known_instants() {
        // The Unix epoch is 2,208,988,800 s after NTP's.
        assert_eq!(ntp_time(0), 2_208_988_800 << 32);
        // Half a second is half of 2^32.
        assert_eq!(ntp_time(500_000_000) & 0xffff_ffff, 1 << 31);
        assert_eq!(ntp_time(1_000_000_001) >> 32, 2_208_988_801);
        for nanos in [1, 123_456_789, 999_999_999] {
            let fraction = ntp_time(nanos) & 0xffff_ffff;
            assert_eq!((fraction * 1_000_000_000) >> 32, nanos, "{nanos}");
        }
    }
}
