//! A record's fields in network byte order, in its template's order.

/// Appends a record's fields to a buffer.
pub struct RecordWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> RecordWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.out.push(value);
        self
    }

    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes(&value.to_be_bytes())
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes(&value.to_be_bytes())
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes(&value.to_be_bytes())
    }

    /// A fixed-length field (an address, say) as it is.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.out.extend_from_slice(value);
        self
    }

    /// A variable-length field (RFC 7011 7): one length byte below 255,
    /// else 255 and two length bytes. At most 65,535 bytes are written.
    pub fn variable(&mut self, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        match u8::try_from(value.len()) {
            Ok(len) if len < 255 => self.out.push(len),
            _ => {
                self.out.push(255);
                self.out
                    .extend_from_slice(&(value.len() as u16).to_be_bytes());
            }
        }
        self.bytes(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_network_order() {
        let mut out = Vec::new();
        RecordWriter::new(&mut out)
            .u8(1)
            .u16(0x0203)
            .u32(0x0405_0607)
            .u64(0x0809_0a0b_0c0d_0e0f);
        assert_eq!(out, (1..=15).collect::<Vec<u8>>());
    }

    #[test]
    fn variable_lengths_short_and_long() {
        let mut out = Vec::new();
        RecordWriter::new(&mut out).variable(b"eth0");
        assert_eq!(out, b"\x04eth0");
        out.clear();
        RecordWriter::new(&mut out).variable(&[7; 254]);
        assert_eq!((out[0], out.len()), (254, 255));
        out.clear();
        RecordWriter::new(&mut out).variable(&[7; 255]);
        assert_eq!(&out[..3], [255, 0, 255]);
        assert_eq!(out.len(), 3 + 255);
        out.clear();
        RecordWriter::new(&mut out).variable(&[]);
        assert_eq!(out, [0]);
    }
}
