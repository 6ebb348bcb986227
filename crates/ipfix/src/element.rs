//! Information Elements and the field specifiers templates list them by.

/// The enterprise bit of a field specifier's element id.
const ENTERPRISE_BIT: u16 = 0x8000;

/// An Information Element: an IANA one, or one of an enterprise's (by its
/// Private Enterprise Number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Element {
    pub id: u16,
    pub enterprise: Option<u32>,
}

impl Element {
    pub const fn iana(id: u16) -> Self {
        Self {
            id,
            enterprise: None,
        }
    }

    pub const fn enterprise(enterprise: u32, id: u16) -> Self {
        Self {
            id,
            enterprise: Some(enterprise),
        }
    }
}

/// An element and its length in the records of a template
/// (`VARIABLE_LENGTH`: each record gives it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    pub element: Element,
    pub length: u16,
}

impl FieldSpec {
    pub const fn new(element: Element, length: u16) -> Self {
        Self { element, length }
    }

    /// IANA element `id`, `length` bytes.
    pub const fn iana(id: u16, length: u16) -> Self {
        Self::new(Element::iana(id), length)
    }

    /// RFC 7011 3.2: id (with the enterprise bit), length, and the
    /// enterprise number when there is one.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let id = self.element.id & !ENTERPRISE_BIT;
        match self.element.enterprise {
            None => {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&self.length.to_be_bytes());
            }
            Some(pen) => {
                out.extend_from_slice(&(id | ENTERPRISE_BIT).to_be_bytes());
                out.extend_from_slice(&self.length.to_be_bytes());
                out.extend_from_slice(&pen.to_be_bytes());
            }
        }
    }

    pub(crate) fn encoded_len(&self) -> usize {
        if self.element.enterprise.is_some() {
            8
        } else {
            4
        }
    }
}

/// IANA Information Element ids (https://www.iana.org/assignments/ipfix).
pub mod iana {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const EGRESS_INTERFACE: u16 = 14;
    pub const IP_NEXT_HOP_IPV4_ADDRESS: u16 = 15;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const ICMP_TYPE_CODE_IPV4: u16 = 32;
    pub const EXPORTED_MESSAGE_TOTAL_COUNT: u16 = 41;
    pub const EXPORTED_FLOW_RECORD_TOTAL_COUNT: u16 = 42;
    pub const FLOW_DIRECTION: u16 = 61;
    pub const IP_NEXT_HOP_IPV6_ADDRESS: u16 = 62;
    pub const INTERFACE_NAME: u16 = 82;
    pub const FLOW_END_REASON: u16 = 136;
    pub const ICMP_TYPE_CODE_IPV6: u16 = 139;
    pub const OBSERVATION_DOMAIN_ID: u16 = 149;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    pub const FLOW_START_NANOSECONDS: u16 = 156;
    pub const FLOW_END_NANOSECONDS: u16 = 157;
    pub const IGNORED_PACKET_TOTAL_COUNT: u16 = 164;
    pub const NOT_SENT_FLOW_TOTAL_COUNT: u16 = 166;
    pub const IP_TOTAL_LENGTH: u16 = 224;
    pub const INFORMATION_ELEMENT_ID: u16 = 303;
    pub const OBSERVATION_TIME_NANOSECONDS: u16 = 325;
    pub const INFORMATION_ELEMENT_DATA_TYPE: u16 = 339;
    pub const INFORMATION_ELEMENT_DESCRIPTION: u16 = 340;
    pub const INFORMATION_ELEMENT_NAME: u16 = 341;
    pub const INFORMATION_ELEMENT_RANGE_BEGIN: u16 = 342;
    pub const INFORMATION_ELEMENT_RANGE_END: u16 = 343;
    pub const INFORMATION_ELEMENT_SEMANTICS: u16 = 344;
    pub const INFORMATION_ELEMENT_UNITS: u16 = 345;
    pub const PRIVATE_ENTERPRISE_NUMBER: u16 = 346;
}

/// flowDirection's value for egress (RFC 5102).
pub const FLOW_DIRECTION_EGRESS: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_specifiers_as_rfc_7011_lays_them_out() {
        let mut out = Vec::new();
        FieldSpec::new(Element::iana(iana::SOURCE_IPV4_ADDRESS), 4).encode(&mut out);
        assert_eq!(out, [0, 8, 0, 4]);
        out.clear();
        let uid = FieldSpec::new(Element::enterprise(32473, 1), 4);
        uid.encode(&mut out);
        assert_eq!(out, [0x80, 1, 0, 4, 0, 0, 0x7e, 0xd9]);
        assert_eq!(uid.encoded_len(), out.len());
    }
}
