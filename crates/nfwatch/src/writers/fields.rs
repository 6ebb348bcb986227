//! What every format writes its fields with: numbers, addresses, times,
//! protocol names and escaped names, straight into the line buffer, and
//! the memory of a field's last text.

use std::io::{self, Write};
use std::net::IpAddr;

use nfwatch_proto::Family;
use time::macros::format_description;
use time::OffsetDateTime;

/// (number, name in JSON/CSV, name in text/legacy).
const PROTOCOLS: [(u8, &str, &str); 11] = [
    (1, "icmp", "ICMP"),
    (2, "igmp", "IGMP"),
    (6, "tcp", "TCP"),
    (17, "udp", "UDP"),
    (33, "dccp", "DCCP"),
    (47, "gre", "GRE"),
    (50, "esp", "ESP"),
    (51, "ah", "AH"),
    (58, "icmpv6", "ICMPV6"),
    (132, "sctp", "SCTP"),
    (136, "udplite", "UDPLITE"),
];

pub(super) fn protocol(number: u8) -> Option<(&'static str, &'static str)> {
    PROTOCOLS
        .iter()
        .find(|(n, _, _)| *n == number)
        .map(|&(_, lower, upper)| (lower, upper))
}

pub(super) fn write_proto(out: &mut Vec<u8>, number: u8, upper: bool) {
    match protocol(number) {
        Some((lower, upper_name)) => {
            out.extend_from_slice(if upper { upper_name } else { lower }.as_bytes())
        }
        None => push_num(out, number),
    }
}

// The primitives below write straight into the line buffer: core::fmt costs
// more than the rest of a record's formatting, and this runs per packet.

pub(super) fn push_num(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The number, or `none` when there is none.
pub(super) fn push_opt_num(out: &mut Vec<u8>, value: Option<impl itoa::Integer>, none: &[u8]) {
    match value {
        Some(n) => push_num(out, n),
        None => out.extend_from_slice(none),
    }
}

pub(super) fn push_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

pub(super) fn push_ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_num(out, octet);
            }
        }
        // RFC 5952 compression is worth the library; writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The text of the last value of one field. A flow's records repeat their
/// second, addresses and device; formatting those again was most of a
/// line's cost.
pub(super) struct Memo<K> {
    key: Option<K>,
    text: Vec<u8>,
}

impl<K: Copy + PartialEq> Memo<K> {
    pub(super) fn new() -> Self {
        Self {
            key: None,
            text: Vec::new(),
        }
    }

    /// Appends the text of `key`, rendering it only when it changed.
    pub(super) fn push(
        &mut self,
        out: &mut Vec<u8>,
        key: K,
        render: impl FnOnce(&mut Vec<u8>, K) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.key != Some(key) {
            self.key = None;
            self.text.clear();
            render(&mut self.text, key)?;
            self.key = Some(key);
        }
        out.extend_from_slice(&self.text);
        Ok(())
    }

    /// The next push renders again.
    pub(super) fn forget(&mut self) {
        self.key = None;
    }

    pub(super) fn push_ip(&mut self, out: &mut Vec<u8>, addr: K) -> io::Result<()>
    where
        K: Into<IpAddr>,
    {
        self.push(out, addr, |text, addr| {
            push_ip(text, addr.into());
            Ok(())
        })
    }
}

/// "YYYY-MM-DDTHH:MM:SS" of a second since 1970 (u64 nanoseconds stay
/// below year 10000: always 19 bytes).
pub(super) fn render_second(text: &mut Vec<u8>, second: u64) -> io::Result<()> {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let time = OffsetDateTime::from_unix_timestamp(second as i64)
        .map_err(|e| io::Error::other(e.to_string()))?;
    time.format_into(text, format)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(())
}

/// "00" to "99", for writing two digits at a time.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

/// ".NNNNNNNNNZ": the nine digits of `nanos` (below 10^9), two at a time,
/// since every line has one.
pub(super) fn fraction(mut nanos: u32) -> [u8; 11] {
    let mut text = *b".000000000Z";
    for at in [8, 6, 4, 2] {
        let pair = (nanos % 100) as usize * 2;
        text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        nanos /= 100;
    }
    text[1] = b'0' + nanos as u8;
    text
}

pub(super) fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// `addr`, or `addr:port` (`[addr]:port` for IPv6).
pub(super) fn write_endpoint(
    out: &mut Vec<u8>,
    memo: &mut Memo<IpAddr>,
    addr: IpAddr,
    port: Option<u16>,
) -> io::Result<()> {
    let bracket = addr.is_ipv6() && port.is_some();
    if bracket {
        out.push(b'[');
    }
    memo.push_ip(out, addr)?;
    if bracket {
        out.push(b']');
    }
    if let Some(port) = port {
        out.push(b':');
        push_num(out, port);
    }
    Ok(())
}

/// `name` for text and CSV: printable UTF-8 as it is, `\` as `\\`, and
/// every other byte (those of control characters C0, DEL and C1, and
/// bytes that are not UTF-8) as `\xHH`. Never a control byte raw, and
/// distinct names stay distinct.
pub(super) fn push_escaped_name(out: &mut Vec<u8>, name: &[u8]) {
    fn hex(out: &mut Vec<u8>, byte: u8) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(&[
            b'\\',
            b'x',
            DIGITS[usize::from(byte >> 4)],
            DIGITS[usize::from(byte & 0xf)],
        ]);
    }
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            let mut utf8 = [0; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            if c == '\\' {
                out.extend_from_slice(b"\\\\");
            } else if c.is_control() {
                bytes.iter().for_each(|&b| hex(out, b));
            } else {
                out.extend_from_slice(bytes);
            }
        }
        chunk.invalid().iter().for_each(|&b| hex(out, b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_have_nine_digits() {
        for (nanos, text) in [
            (0, ".000000000Z"),
            (5, ".000000005Z"),
            (40, ".000000040Z"),
            (100_000_000, ".100000000Z"),
            (123_456_789, ".123456789Z"),
            (999_999_999, ".999999999Z"),
        ] {
            assert_eq!(&fraction(nanos), text.as_bytes(), "{nanos}");
        }
    }

    #[test]
    fn protocol_names() {
        let name = |n| {
            let mut out = Vec::new();
            write_proto(&mut out, n, false);
            String::from_utf8(out).unwrap()
        };
        let names: Vec<String> = [6, 17, 1, 58, 132, 33, 136, 2, 47, 50, 51, 253]
            .map(name)
            .into();
        assert_eq!(
            names,
            [
                "tcp", "udp", "icmp", "icmpv6", "sctp", "dccp", "udplite", "igmp", "gre", "esp",
                "ah", "253"
            ]
        );
    }
}
