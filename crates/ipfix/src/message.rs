//! Templates, and messages filled with sets up to a size limit.

use crate::{
    FieldSpec, HEADER_LEN, MIN_TEMPLATE_ID, OPTIONS_TEMPLATE_SET_ID, SET_HEADER_LEN,
    TEMPLATE_SET_ID, VARIABLE_LENGTH, VERSION,
};

/// A template (RFC 7011 3.4.1) or an options template (3.4.2.2), whose
/// first `scope_fields` fields are its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub id: u16,
    pub scope_fields: u16,
    pub fields: Vec<FieldSpec>,
}

impl Template {
    /// A data template. `id` is at least `MIN_TEMPLATE_ID`.
    pub fn data(id: u16, fields: Vec<FieldSpec>) -> Self {
        Self::options(id, 0, fields)
    }

    /// An options template whose first `scope_fields` fields (at least one)
    /// are its scope; with 0, a data template.
    pub fn options(id: u16, scope_fields: u16, fields: Vec<FieldSpec>) -> Self {
        assert!(id >= MIN_TEMPLATE_ID, "template id {id} below 256");
        assert!(usize::from(scope_fields) <= fields.len());
        Self {
            id,
            scope_fields,
            fields,
        }
    }

    fn set_id(&self) -> u16 {
        if self.scope_fields == 0 {
            TEMPLATE_SET_ID
        } else {
            OPTIONS_TEMPLATE_SET_ID
        }
    }

    /// The template record: id, field count (and scope field count), fields.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(self.fields.len() as u16).to_be_bytes());
        if self.scope_fields > 0 {
            out.extend_from_slice(&self.scope_fields.to_be_bytes());
        }
        for field in &self.fields {
            field.encode(out);
        }
    }

    fn encoded_len(&self) -> usize {
        let head = if self.scope_fields > 0 { 6 } else { 4 };
        head + self
            .fields
            .iter()
            .map(FieldSpec::encoded_len)
            .sum::<usize>()
    }

    /// The length of every record of this template, when none of its
    /// fields is variable.
    pub fn record_len(&self) -> Option<usize> {
        self.fields
            .iter()
            .map(|f| (f.length != VARIABLE_LENGTH).then_some(usize::from(f.length)))
            .sum()
    }
}

/// One message being filled: its sets, within `max_len` bytes with the
/// header. Records of one template go into one data set until a record of
/// another template (or a template) comes.
#[derive(Debug)]
pub struct Message {
    buf: Vec<u8>,
    max_len: usize,
    /// Where the open set's header is, and its id.
    open_set: Option<(usize, u16)>,
    data_records: u32,
}

impl Message {
    /// An empty message of at most `max_len` bytes (at most 65,535, the
    /// header's length field).
    pub fn new(max_len: usize) -> Self {
        let max_len = max_len.min(usize::from(u16::MAX));
        assert!(max_len > HEADER_LEN + SET_HEADER_LEN);
        let mut buf = Vec::with_capacity(max_len);
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            max_len,
            open_set: None,
            data_records: 0,
        }
    }

    /// No set yet.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER_LEN
    }

    /// The data records added since the message was started.
    pub fn data_records(&self) -> u32 {
        self.data_records
    }

    /// Adds `template`'s record to a template set (or options template
    /// set); false, and nothing added, when it does not fit.
    pub fn add_template(&mut self, template: &Template) -> bool {
        let set_id = template.set_id();
        if !self.reserve(set_id, template.encoded_len()) {
            return false;
        }
        template.encode(&mut self.buf);
        true
    }

    /// Adds one data record of `template_id`, its fields written by `fill`,
    /// to a data set; false, and nothing added, when it does not fit.
    pub fn add_record(&mut self, template_id: u16, fill: impl FnOnce(&mut Vec<u8>)) -> bool {
        debug_assert!(template_id >= MIN_TEMPLATE_ID);
        let reopen = self.open_set.is_none_or(|(_, id)| id != template_id);
        let start = self.buf.len();
        if reopen {
            self.close_set();
            self.open(template_id);
        }
        fill(&mut self.buf);
        if self.buf.len() > self.max_len {
            self.buf.truncate(start);
            if reopen {
                self.open_set = None;
            }
            return false;
        }
        self.data_records += 1;
        true
    }

    /// Closes the last set and writes the header: the message's bytes.
    /// `sequence` is the number of data records sent in the stream before
    /// this message (RFC 7011 3.1, erratum 4396).
    pub fn finish(&mut self, export_time: u32, sequence: u32, domain: u32) -> &[u8] {
        self.close_set();
        let len = self.buf.len() as u16;
        let header = &mut self.buf[..HEADER_LEN];
        header[0..2].copy_from_slice(&VERSION.to_be_bytes());
        header[2..4].copy_from_slice(&len.to_be_bytes());
        header[4..8].copy_from_slice(&export_time.to_be_bytes());
        header[8..12].copy_from_slice(&sequence.to_be_bytes());
        header[12..16].copy_from_slice(&domain.to_be_bytes());
        &self.buf
    }

    /// Empty again, for the next message.
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.open_set = None;
        self.data_records = 0;
    }

    /// Room for `len` more bytes in a set of `set_id`, which is open after.
    fn reserve(&mut self, set_id: u16, len: usize) -> bool {
        let same_set = self.open_set.is_some_and(|(_, id)| id == set_id);
        let needed = len + if same_set { 0 } else { SET_HEADER_LEN };
        if self.buf.len() + needed > self.max_len {
            return false;
        }
        if !same_set {
            self.close_set();
            self.open(set_id);
        }
        true
    }

    fn open(&mut self, set_id: u16) {
        self.open_set = Some((self.buf.len(), set_id));
        self.buf.extend_from_slice(&set_id.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]);
    }

    /// Writes the open set's length.
    fn close_set(&mut self) {
        if let Some((at, _)) = self.open_set.take() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::{iana, Element};
    use crate::RecordWriter;

    fn v4_template() -> Template {
        Template::data(
            256,
            vec![
                FieldSpec::new(Element::iana(iana::SOURCE_IPV4_ADDRESS), 4),
                FieldSpec::new(Element::iana(iana::DESTINATION_IPV4_ADDRESS), 4),
                FieldSpec::new(Element::enterprise(32473, 1), 4),
            ],
        )
    }

    #[test]
    fn header_template_set_and_data_set_as_rfc_7011_lays_them_out() {
        let template = v4_template();
        let mut message = Message::new(1400);
        assert!(message.add_template(&template));
        assert!(message.add_record(256, |out| {
            RecordWriter::new(out)
                .bytes(&[10, 0, 0, 1])
                .bytes(&[10, 0, 0, 2])
                .u32(1000);
        }));
        let bytes = message.finish(0x6000_0000, 7, 42).to_vec();
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            // Header: version 10, length 56, export time, sequence 7, domain 42.
            &[0, 10, 0, 56, 0x60, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 42][..],
            // Template set (2), 24 bytes: template 256, 3 fields.
            &[0, 2, 0, 24, 1, 0, 0, 3],
            &[0, 8, 0, 4, 0, 12, 0, 4, 0x80, 1, 0, 4, 0, 0, 0x7e, 0xd9],
            // Data set 256, 16 bytes: one record.
            &[1, 0, 0, 16, 10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 3, 0xe8],
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(template.record_len(), Some(12));
    }

    #[test]
    fn options_templates_carry_their_scope_count() {
        let template = Template::options(
            257,
            1,
            vec![
                FieldSpec::new(Element::iana(iana::OBSERVATION_DOMAIN_ID), 4),
                FieldSpec::new(Element::iana(iana::NOT_SENT_FLOW_TOTAL_COUNT), 8),
            ],
        );
        let mut message = Message::new(100);
        assert!(message.add_template(&template));
        let bytes = message.finish(0, 0, 0);
        assert_eq!(
            &bytes[HEADER_LEN..],
            [0, 3, 0, 18, 1, 1, 0, 2, 0, 1, 0, 149, 0, 4, 0, 166, 0, 8]
        );
    }

    #[test]
    fn a_message_never_exceeds_its_size() {
        let template = v4_template();
        let mut message = Message::new(100);
        assert!(message.add_template(&template));
        let mut added = 0;
        while message.add_record(256, |out| out.extend_from_slice(&[0; 12])) {
            added += 1;
        }
        // 16 header + 24 template set + 4 set header + 12 per record.
        assert_eq!(added, (100 - 16 - 24 - 4) / 12);
        assert_eq!(message.data_records(), added);
        let len = message.finish(0, 0, 0).len();
        assert!(len <= 100, "{len}");
        message.clear();
        assert!(message.is_empty());
        // A record of another template opens a set of its own.
        assert!(message.add_record(256, |out| out.extend_from_slice(&[0; 12])));
        assert!(message.add_record(300, |out| out.extend_from_slice(&[0; 4])));
        let bytes = message.finish(0, 0, 0);
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 4], [1, 0, 0, 16]);
        assert_eq!(&bytes[HEADER_LEN + 16..HEADER_LEN + 20], [1, 44, 0, 8]);
    }
}
