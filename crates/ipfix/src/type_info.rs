//! RFC 5610: the type, semantics, units and name of an enterprise-specific
//! element, sent in-band as an options record so that a collector that
//! has never heard of the enterprise can still decode and name the field.

use crate::element::{iana, Element};
use crate::{FieldSpec, RecordWriter, Template, VARIABLE_LENGTH};

/// informationElementDataType values (IANA "IPFIX Information Element Data
/// Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DataType {
    OctetArray = 0,
    Unsigned8 = 1,
    Unsigned16 = 2,
    Unsigned32 = 3,
    Unsigned64 = 4,
    String = 13,
    DateTimeNanoseconds = 17,
    Ipv4Address = 18,
    Ipv6Address = 19,
}

/// informationElementSemantics values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Semantics {
    Default = 0,
    Quantity = 1,
    TotalCounter = 2,
    DeltaCounter = 3,
    Identifier = 4,
}

/// informationElementUnits values used here.
pub mod units {
    pub const NONE: u16 = 0;
    pub const OCTETS: u16 = 2;
    pub const PACKETS: u16 = 3;
}

/// What RFC 5610 says of one enterprise-specific element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementInfo {
    pub element: Element,
    pub data_type: DataType,
    pub semantics: Semantics,
    pub units: u16,
    pub name: &'static str,
    pub description: &'static str,
}

/// The options template of type records: scope privateEnterpriseNumber and
/// informationElementId, then data type, semantics, units, range (begin and
/// end, 0 and 0: none), name and description, the fields of RFC 5610's
/// example and of what libfixbuf reads.
pub fn template(id: u16) -> Template {
    let iana = FieldSpec::iana;
    Template::options(
        id,
        2,
        vec![
            iana(iana::PRIVATE_ENTERPRISE_NUMBER, 4),
            iana(iana::INFORMATION_ELEMENT_ID, 2),
            iana(iana::INFORMATION_ELEMENT_DATA_TYPE, 1),
            iana(iana::INFORMATION_ELEMENT_SEMANTICS, 1),
            iana(iana::INFORMATION_ELEMENT_UNITS, 2),
            iana(iana::INFORMATION_ELEMENT_RANGE_BEGIN, 8),
            iana(iana::INFORMATION_ELEMENT_RANGE_END, 8),
            iana(iana::INFORMATION_ELEMENT_NAME, VARIABLE_LENGTH),
            iana(iana::INFORMATION_ELEMENT_DESCRIPTION, VARIABLE_LENGTH),
        ],
    )
}

impl ElementInfo {
    /// Its record of `template()`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        RecordWriter::new(out)
            .u32(self.element.enterprise.unwrap_or(0))
            .u16(self.element.id)
            .u8(self.data_type as u8)
            .u8(self.semantics as u8)
            .u16(self.units)
            .u64(0)
            .u64(0)
            .variable(self.name.as_bytes())
            .variable(self.description.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_record_as_rfc_5610_lays_it_out() {
        let info = ElementInfo {
            element: Element::enterprise(32473, 1),
            data_type: DataType::Unsigned32,
            semantics: Semantics::Identifier,
            units: units::NONE,
            name: "uid",
            description: "",
        };
        let mut out = Vec::new();
        info.encode(&mut out);
        assert_eq!(
            out,
            [
                [0, 0, 0x7e, 0xd9, 0, 1, 3, 4, 0, 0].as_slice(),
                &[0; 16],
                &[3, b'u', b'i', b'd', 0]
            ]
            .concat()
        );
        let template = template(258);
        assert_eq!(template.scope_fields, 2);
        assert_eq!(template.record_len(), None);
    }
}
