//! `jsonl`: one JSON object (RFC 8259) per line, every key always there,
//! in the order of the CSV columns.

use std::io::{self, Write};

use nfwatch_proto::{FlowBytes, Record};

use super::fields::{family_name, push_bool, push_num, push_opt_num, write_proto};
use super::{flow_columns, owner_columns, Columns, Fields, LineFormat, Varying};
use crate::cgroup::Cgroups;

pub(super) struct Jsonl;

impl LineFormat for Jsonl {
    const TS_PREFIX: Option<&'static [u8]> = Some(b"{\"ts\":\"");
    const FLOW_TIMES: (&'static [u8], &'static [u8]) = (b"{\"start\":\"", b"\",\"end\":\"");
    const LINE_END: &'static [u8] = b"}";

    fn name(out: &mut Vec<u8>, name: &[u8]) {
        write_json_name(out, name);
    }

    /// After `{"ts":"` and the timestamp.
    fn fields(fields: &mut Fields, out: &mut Vec<u8>, r: &Record) -> io::Result<()> {
        out.extend_from_slice(b"\",\"family\":\"");
        out.extend_from_slice(family_name(r.family).as_bytes());
        out.extend_from_slice(b"\",\"proto\":\"");
        write_proto(out, r.proto, false);
        out.extend_from_slice(b"\",\"src\":\"");
        fields.src.push_ip(out, r.src)?;
        out.extend_from_slice(b"\",\"dst\":\"");
        fields.dst.push_ip(out, r.dst)?;
        out.extend_from_slice(b"\",\"sport\":");
        push_opt_num(out, r.ports.map(|p| p.0), Self::ABSENT);
        out.extend_from_slice(b",\"dport\":");
        push_opt_num(out, r.ports.map(|p| p.1), Self::ABSENT);
        out.extend_from_slice(b",\"icmp_type\":");
        push_opt_num(out, r.icmp.map(|i| i.0), Self::ABSENT);
        out.extend_from_slice(b",\"icmp_code\":");
        push_opt_num(out, r.icmp.map(|i| i.1), Self::ABSENT);
        fields.varying(out, b",\"len\":", Varying::Len, r);
        out.extend_from_slice(b",\"ifindex\":");
        push_num(out, r.ifindex);
        out.extend_from_slice(b",\"ifname\":");
        fields.ifname::<Self>(out, r.ifname)?;
        out.extend_from_slice(b",\"nexthop\":");
        match r.nexthop {
            Some(nexthop) => {
                out.push(b'"');
                fields.nexthop.push_ip(out, nexthop)?;
                out.push(b'"');
            }
            None => out.extend_from_slice(Self::ABSENT),
        }
        out.extend_from_slice(b",\"uid\":");
        push_opt_num(out, r.uid, Self::ABSENT);
        out.extend_from_slice(b",\"pid\":");
        push_opt_num(out, r.pid, Self::ABSENT);
        out.extend_from_slice(b",\"frag\":");
        push_bool(out, r.frag);
        fields.varying(out, b",\"segs\":", Varying::Segs, r);
        fields.owner::<Self>(out, r);
        Ok(())
    }

    fn owner(out: &mut Vec<u8>, cgroups: &mut Cgroups, r: &Record) -> bool {
        owner_columns::<Self>(out, cgroups, r)
    }

    fn flow_counters(out: &mut Vec<u8>, flow: FlowBytes) {
        flow_columns::<Self>(out, flow);
    }
}

impl Columns for Jsonl {
    const ABSENT: &'static [u8] = b"null";

    fn column(out: &mut Vec<u8>, key: &[u8]) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
    }
}

/// `name` as a JSON value: a string when it is UTF-8 (control characters,
/// DEL and C1 included, as `\uXXXX`), else an array of its bytes, as
/// `journalctl -o json` writes fields that are not UTF-8. Either way valid
/// JSON, and distinct names never look alike.
fn write_json_name(out: &mut Vec<u8>, name: &[u8]) {
    let Ok(text) = std::str::from_utf8(name) else {
        out.push(b'[');
        for (i, &byte) in name.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_num(out, byte);
        }
        out.push(b']');
        return;
    };
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out.push(b'"');
}
