//! What the encoder writes, read back by an independent IPFIX decoder
//! (netflow_parser).

use ipfix::element::{iana, Element};
use ipfix::{FieldSpec, Message, RecordWriter, Template};
use netflow_parser::variable_versions::ipfix::lookup::IPFixField;
use netflow_parser::variable_versions::ipfix::FlowSetBody;
use netflow_parser::{NetflowPacket, NetflowParser};

const PEN: u32 = 32473;

fn template() -> Template {
    let iana = |id, len| FieldSpec::new(Element::iana(id), len);
    Template::data(
        256,
        vec![
            iana(iana::SOURCE_IPV4_ADDRESS, 4),
            iana(iana::DESTINATION_IPV4_ADDRESS, 4),
            iana(iana::PROTOCOL_IDENTIFIER, 1),
            iana(iana::SOURCE_TRANSPORT_PORT, 2),
            iana(iana::DESTINATION_TRANSPORT_PORT, 2),
            iana(iana::PACKET_DELTA_COUNT, 8),
            FieldSpec::new(Element::enterprise(PEN, 1), 4),
        ],
    )
}

fn record(out: &mut Vec<u8>, sport: u16) {
    RecordWriter::new(out)
        .bytes(&[10, 0, 0, 1])
        .bytes(&[10, 0, 0, 2])
        .u8(17)
        .u16(sport)
        .u16(53)
        .u64(1)
        .u32(1000);
}

#[test]
fn templates_and_records_decode() {
    let template = template();
    let mut message = Message::new(1400);
    assert!(message.add_template(&template));
    for sport in [4000, 4001, 4002] {
        assert!(message.add_record(template.id, |out| record(out, sport)));
    }
    let bytes = message.finish(1_700_000_000, 0, 7).to_vec();

    let result = NetflowParser::default().parse_bytes(&bytes);
    assert!(result.error.is_none(), "{:?}", result.error);
    let [NetflowPacket::IPFix(packet)] = result.packets.as_slice() else {
        panic!("not one IPFIX message: {:?}", result.packets);
    };
    assert_eq!(packet.header.version, 10);
    assert_eq!(usize::from(packet.header.length), bytes.len());
    assert_eq!(packet.header.observation_domain_id, 7);
    let records: Vec<_> = packet
        .flowsets
        .iter()
        .filter_map(|set| match &set.body {
            FlowSetBody::Data(data) => Some(data.fields.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(records.len(), 3);
    for (record, sport) in records.iter().zip([4000u16, 4001, 4002]) {
        let field = |id: u16, pen: Option<u32>| {
            let wanted = IPFixField::new(id, pen);
            let (_, value) = record
                .iter()
                .find(|(field, _)| *field == wanted)
                .unwrap_or_else(|| panic!("no field {id} in {record:?}"));
            format!("{value:?}")
        };
        assert_eq!(field(iana::SOURCE_IPV4_ADDRESS, None), "Ip4Addr(10.0.0.1)");
        assert_eq!(
            field(iana::DESTINATION_IPV4_ADDRESS, None),
            "Ip4Addr(10.0.0.2)"
        );
        assert_eq!(field(iana::PROTOCOL_IDENTIFIER, None), "ProtocolType(Udp)");
        assert_eq!(
            field(iana::SOURCE_TRANSPORT_PORT, None),
            format!("DataNumber(U16({sport}))")
        );
        assert_eq!(
            field(iana::DESTINATION_TRANSPORT_PORT, None),
            "DataNumber(U16(53))"
        );
        assert_eq!(field(iana::PACKET_DELTA_COUNT, None), "DataNumber(U64(1))");
        // An element it has no type for: its bytes.
        assert_eq!(field(1, Some(PEN)), "Vec([0, 0, 3, 232])");
    }
}

#[test]
fn type_information_decodes() {
    use ipfix::type_info::{self, DataType, ElementInfo, Semantics};
    let template = type_info::template(257);
    let info = ElementInfo {
        element: Element::enterprise(PEN, 1),
        data_type: DataType::Unsigned32,
        semantics: Semantics::Identifier,
        units: type_info::units::NONE,
        name: "nfwatchUid",
        description: "the sending socket's uid",
    };
    let mut message = Message::new(1400);
    assert!(message.add_template(&template));
    assert!(message.add_record(template.id, |out| info.encode(out)));
    let bytes = message.finish(1_700_000_000, 0, 7).to_vec();

    let result = NetflowParser::default().parse_bytes(&bytes);
    assert!(result.error.is_none(), "{:?}", result.error);
    let [NetflowPacket::IPFix(packet)] = result.packets.as_slice() else {
        panic!("not one IPFIX message: {:?}", result.packets);
    };
    let options = packet
        .flowsets
        .iter()
        .find_map(|set| match &set.body {
            FlowSetBody::OptionsData(data) => Some(format!("{data:?}")),
            _ => None,
        })
        .expect("no options data set");
    assert!(options.contains("nfwatchUid"), "{options}");
    assert!(options.contains("the sending socket's uid"), "{options}");
}
