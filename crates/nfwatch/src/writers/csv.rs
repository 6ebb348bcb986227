//! `csv`: RFC 4180, a header line first, every field preceded by its comma.

use std::io;

use nfwatch_proto::{FlowBytes, Record};

use super::fields::{
    family_name, push_bool, push_escaped_name, push_num, push_opt_num, write_proto,
};
use super::{flow_columns, owner_columns, Columns, Fields, LineFormat, Varying};
use crate::cgroup::Cgroups;

/// The record's field names, in order: the CSV header line (the man pages
/// list them).
pub const CSV_HEADER: &str =
    "ts,family,proto,src,dst,sport,dport,icmp_type,icmp_code,len,ifindex,ifname,nexthop,uid,pid,frag,segs,comm,cgroup_id,cgroup,unit,container,netns";

/// A flow's field names, in order: `nfwatch flows --format csv`'s header.
pub const FLOW_CSV_HEADER: &str =
    "start,end,family,proto,src,dst,sport,dport,icmp_type,icmp_code,ifindex,ifname,nexthop,uid,pid,frag,comm,cgroup_id,cgroup,unit,container,netns,packets,octets,end_reason";

pub(super) struct Csv;

impl LineFormat for Csv {
    const TS_PREFIX: Option<&'static [u8]> = Some(b"");
    const FLOW_TIMES: (&'static [u8], &'static [u8]) = (b"", b",");

    fn name(out: &mut Vec<u8>, name: &[u8]) {
        write_csv_name(out, name);
    }

    /// After the timestamp.
    fn fields(fields: &mut Fields, out: &mut Vec<u8>, r: &Record) -> io::Result<()> {
        out.push(b',');
        out.extend_from_slice(family_name(r.family).as_bytes());
        out.push(b',');
        write_proto(out, r.proto, false);
        out.push(b',');
        fields.src.push_ip(out, r.src)?;
        out.push(b',');
        fields.dst.push_ip(out, r.dst)?;
        for value in [
            r.ports.map(|p| p.0),
            r.ports.map(|p| p.1),
            r.icmp.map(|i| u16::from(i.0)),
            r.icmp.map(|i| u16::from(i.1)),
        ] {
            out.push(b',');
            push_opt_num(out, value, Self::ABSENT);
        }
        fields.varying(out, b",", Varying::Len, r);
        out.push(b',');
        push_num(out, r.ifindex);
        out.push(b',');
        fields.ifname::<Self>(out, r.ifname)?;
        out.push(b',');
        if let Some(nexthop) = r.nexthop {
            fields.nexthop.push_ip(out, nexthop)?;
        }
        out.push(b',');
        push_opt_num(out, r.uid, Self::ABSENT);
        out.push(b',');
        push_opt_num(out, r.pid, Self::ABSENT);
        out.push(b',');
        push_bool(out, r.frag);
        fields.varying(out, b",", Varying::Segs, r);
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

impl Columns for Csv {
    const ABSENT: &'static [u8] = b"";

    fn column(out: &mut Vec<u8>, _key: &[u8]) {
        out.push(b',');
    }
}

/// Characters that make a spreadsheet read a cell as a formula, and the
/// quote that guards against them (so a name starting with it is guarded
/// too, keeping names distinct).
const CSV_FORMULA_START: &[u8] = b"=+-@'";

/// `name` as a CSV field: escaped as in text, a `'` put before a field
/// starting with one of CSV_FORMULA_START, and quoted (RFC 4180) when it
/// then holds a comma, a quote or the guard.
fn write_csv_name(out: &mut Vec<u8>, name: &[u8]) {
    let start = out.len();
    push_escaped_name(out, name);
    let guarded = out
        .get(start)
        .is_some_and(|first| CSV_FORMULA_START.contains(first));
    if guarded {
        out.insert(start, b'\'');
    }
    if !guarded && !out[start..].iter().any(|&b| b == b',' || b == b'"') {
        return;
    }
    let field = out.split_off(start);
    out.push(b'"');
    for byte in field {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    out.push(b'"');
}
