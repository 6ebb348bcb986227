//! Source prefixes as given on the command line and sent in SUBSCRIBE.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address with a prefix length whose host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix string was rejected; Display is the part after "VALUE: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixError {
    InvalidAddress,
    InvalidLength,
    LengthTooLong { max: u8 },
    HostBitsSet { network: Prefix },
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidAddress => f.write_str("invalid address"),
            Self::InvalidLength => f.write_str("invalid prefix length"),
            Self::LengthTooLong { max } => write!(f, "prefix length longer than {max}"),
            Self::HostBitsSet { network } => {
                write!(f, "host bits set, did you mean {network}?")
            }
        }
    }
}

impl std::error::Error for PrefixError {}

impl Prefix {
    /// Fails when `len` exceeds the address width or host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = max_len(addr);
        if len > max {
            return Err(PrefixError::LengthTooLong { max });
        }
        let network = Self {
            addr: mask(addr, len),
            len,
        };
        if network.addr != addr {
            return Err(PrefixError::HostBitsSet { network });
        }
        Ok(network)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for the prefix matching every address of its family (/0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with every bit after the first `len` cleared (`len` <= width).
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & bits))
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// "ADDR" (a host prefix) or "ADDR/LEN".
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| PrefixError::InvalidAddress)?;
        let len = match len_text {
            Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
                // All digits: only too-large values fail to parse.
                len.parse::<u8>()
                    .map_err(|_| PrefixError::LengthTooLong { max: max_len(addr) })?
            }
            Some(_) => return Err(PrefixError::InvalidLength),
            None => max_len(addr),
        };
        Self::new(addr, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Prefix, String> {
        text.parse::<Prefix>().map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_hosts_and_networks() {
        assert_eq!(parse("10.0.0.5").unwrap().to_string(), "10.0.0.5/32");
        assert_eq!(parse("10.0.0.0/24").unwrap().to_string(), "10.0.0.0/24");
        assert_eq!(parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(parse("fd00::1").unwrap().to_string(), "fd00::1/128");
        assert_eq!(parse("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert_eq!(parse("::/0").unwrap().to_string(), "::/0");
    }

    #[test]
    fn rejects_host_bits_with_a_suggestion() {
        assert_eq!(
            parse("10.0.0.5/24").unwrap_err(),
            "host bits set, did you mean 10.0.0.0/24?"
        );
        assert_eq!(
            parse("fd00::1/64").unwrap_err(),
            "host bits set, did you mean fd00::/64?"
        );
    }

    #[test]
    fn rejects_bad_addresses_and_lengths() {
        assert_eq!(parse("10.0.0.300").unwrap_err(), "invalid address");
        assert_eq!(parse("").unwrap_err(), "invalid address");
        assert_eq!(
            parse("10.0.0.0/33").unwrap_err(),
            "prefix length longer than 32"
        );
        assert_eq!(
            parse("10.0.0.0/999").unwrap_err(),
            "prefix length longer than 32"
        );
        assert_eq!(
            parse("::/129").unwrap_err(),
            "prefix length longer than 128"
        );
        assert_eq!(parse("10.0.0.0/").unwrap_err(), "invalid prefix length");
        assert_eq!(parse("10.0.0.0/-1").unwrap_err(), "invalid prefix length");
        assert_eq!(parse("10.0.0.0/+8").unwrap_err(), "invalid prefix length");
    }
}
