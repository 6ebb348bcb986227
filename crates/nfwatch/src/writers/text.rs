//! `text`: for people reading a terminal.

use std::io;

use nfwatch_proto::{FlowBytes, Record};

use super::fields::{push_escaped_name, push_num, write_endpoint, write_proto};
use super::{end_reason, Fields, LineFormat, Varying};
use crate::cgroup::{CgroupInfo, Cgroups};

pub(super) struct Text;

impl LineFormat for Text {
    const TS_PREFIX: Option<&'static [u8]> = Some(b"");
    const FLOW_TIMES: (&'static [u8], &'static [u8]) = (b"", b" ");

    fn name(out: &mut Vec<u8>, name: &[u8]) {
        push_escaped_name(out, name);
    }

    fn fields(fields: &mut Fields, out: &mut Vec<u8>, r: &Record) -> io::Result<()> {
        out.push(b' ');
        write_proto(out, r.proto, true);
        out.push(b' ');
        write_endpoint(out, &mut fields.src, r.src, r.ports.map(|p| p.0))?;
        out.extend_from_slice(b" -> ");
        write_endpoint(out, &mut fields.dst, r.dst, r.ports.map(|p| p.1))?;
        if let Some((icmp_type, icmp_code)) = r.icmp {
            out.extend_from_slice(b" type ");
            push_num(out, icmp_type);
            out.extend_from_slice(b" code ");
            push_num(out, icmp_code);
        }
        out.extend_from_slice(b" dev ");
        fields.ifname::<Self>(out, r.ifname)?;
        if let Some(nexthop) = r.nexthop {
            out.extend_from_slice(b" via ");
            fields.nexthop.push_ip(out, nexthop)?;
        }
        fields.varying(out, b" len ", Varying::Len, r);
        if r.frag {
            out.extend_from_slice(b" frag");
        }
        if let Some(uid) = r.uid {
            out.extend_from_slice(b" uid ");
            push_num(out, uid);
        }
        fields.owner::<Self>(out, r);
        Ok(())
    }

    fn owner(out: &mut Vec<u8>, cgroups: &mut Cgroups, r: &Record) -> bool {
        owner(out, cgroups, r)
    }

    /// ` packets P octets O reason R`.
    fn flow_counters(out: &mut Vec<u8>, flow: FlowBytes) {
        out.extend_from_slice(b" packets ");
        push_num(out, flow.packets());
        out.extend_from_slice(b" octets ");
        push_num(out, flow.octets());
        out.extend_from_slice(b" reason ");
        end_reason::<Self>(out, flow.end_reason());
    }
}

/// Text: `comm[pid]`, then the container, else the unit, else the
/// cgroup's path (or its id, if it is not found), none for the root. False
/// when the cgroup was not found.
fn owner(out: &mut Vec<u8>, cgroups: &mut Cgroups, r: &Record) -> bool {
    if let Some(comm) = r.comm {
        out.push(b' ');
        push_escaped_name(out, comm.as_bytes());
        if let Some(pid) = r.pid {
            out.push(b'[');
            push_num(out, pid);
            out.push(b']');
        }
    }
    let Some(id) = r.cgroup_id else { return true };
    match cgroups.resolve(id) {
        Some(CgroupInfo {
            container: Some(container),
            ..
        }) => {
            out.extend_from_slice(b" container ");
            push_escaped_name(out, container.as_bytes());
        }
        Some(CgroupInfo {
            unit: Some(unit), ..
        }) => {
            out.extend_from_slice(b" unit ");
            push_escaped_name(out, unit.as_bytes());
        }
        Some(CgroupInfo { path, .. }) if path == "/" => {}
        Some(CgroupInfo { path, .. }) => {
            out.extend_from_slice(b" cgroup ");
            push_escaped_name(out, path.as_bytes());
        }
        None => {
            out.extend_from_slice(b" cgroup ");
            push_num(out, id);
            return false;
        }
    }
    true
}
