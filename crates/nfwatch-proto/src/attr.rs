//! Netlink attribute building and walking. The framing itself is
//! netlink-packet-core's (`Nla`, `NlasIterator`); this is the only place in
//! the code base that touches it.

use netlink_packet_core::{
    Emitable, Nla, NlasIterator, NLA_F_NESTED, NLA_HEADER_SIZE, NLA_TYPE_MASK,
};

use crate::ProtoError;

/// A netlink attribute with an arbitrary payload. Public so tests can also
/// build deliberately malformed requests (wrong lengths, unknown types,
/// nested payloads without the nested flag, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAttr {
    /// nla_type as sent, flag bits (NLA_F_NESTED, ...) included.
    pub kind: u16,
    pub payload: RawPayload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawPayload {
    Bytes(Vec<u8>),
    Nested(Vec<RawAttr>),
}

impl RawAttr {
    pub fn bytes(kind: u16, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            payload: RawPayload::Bytes(payload.into()),
        }
    }

    /// Nested attribute, with NLA_F_NESTED set as strict kernel validation
    /// requires.
    pub fn nested(kind: u16, children: Vec<RawAttr>) -> Self {
        Self {
            kind: kind | NLA_F_NESTED,
            payload: RawPayload::Nested(children),
        }
    }

    pub fn u8(kind: u16, value: u8) -> Self {
        Self::bytes(kind, [value])
    }

    pub fn u16(kind: u16, value: u16) -> Self {
        Self::bytes(kind, value.to_ne_bytes())
    }

    pub fn u32(kind: u16, value: u32) -> Self {
        Self::bytes(kind, value.to_ne_bytes())
    }

    pub fn u64(kind: u16, value: u64) -> Self {
        Self::bytes(kind, value.to_ne_bytes())
    }
}

impl Nla for RawAttr {
    fn value_len(&self) -> usize {
        match &self.payload {
            RawPayload::Bytes(bytes) => bytes.len(),
            RawPayload::Nested(children) => children.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        self.kind
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match &self.payload {
            RawPayload::Bytes(bytes) => buffer[..bytes.len()].copy_from_slice(bytes),
            RawPayload::Nested(children) => children.as_slice().emit(buffer),
        }
    }
}

/// The wire bytes of a sequence of attributes (each padded to 4 bytes).
pub fn emit_attrs(attrs: &[RawAttr]) -> Vec<u8> {
    let mut bytes = vec![0; attrs.buffer_len()];
    attrs.emit(&mut bytes);
    bytes
}

/// Walks an attribute stream, yielding (type without flag bits, payload).
pub fn walk_attrs(bytes: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), ProtoError>> {
    NlasIterator::new(bytes).map(|nla| {
        let nla = nla.map_err(|e| ProtoError::BadFraming(e.to_string()))?;
        let kind = nla.kind() & NLA_TYPE_MASK;
        let len = usize::from(nla.length());
        // new_checked() guarantees NLA_HEADER_SIZE <= len <= buffer length.
        let value = nla
            .into_inner()
            .get(NLA_HEADER_SIZE..len)
            .unwrap_or_default();
        Ok((kind, value))
    })
}

/// A fixed-size attribute payload, or an error naming the attribute.
pub fn fixed<const N: usize>(what: &'static str, value: &[u8]) -> Result<[u8; N], ProtoError> {
    value.try_into().map_err(|_| ProtoError::BadAttrLen {
        what,
        len: value.len(),
    })
}

pub fn attr_u32(what: &'static str, value: &[u8]) -> Result<u32, ProtoError> {
    fixed(what, value).map(u32::from_ne_bytes)
}

pub fn attr_u64(what: &'static str, value: &[u8]) -> Result<u64, ProtoError> {
    fixed(what, value).map(u64::from_ne_bytes)
}
