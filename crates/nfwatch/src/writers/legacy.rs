//! `legacy`: the original tool's line, `srcIP:… dstIP:… srcPORT:… dstPORT:…
//! PROTOCOL:…`, without a timestamp.

use std::io;

use nfwatch_proto::{FlowBytes, Record};

use super::fields::{push_escaped_name, push_num, write_proto};
use super::{Fields, LineFormat};
use crate::cgroup::Cgroups;

pub(super) struct Legacy;

impl LineFormat for Legacy {
    const TS_PREFIX: Option<&'static [u8]> = None;
    /// Not written: `flows` refuses `--format legacy`.
    const FLOW_TIMES: (&'static [u8], &'static [u8]) = (b"", b"");

    fn name(out: &mut Vec<u8>, name: &[u8]) {
        push_escaped_name(out, name);
    }

    fn fields(fields: &mut Fields, out: &mut Vec<u8>, r: &Record) -> io::Result<()> {
        let (sport, dport) = r.ports.unwrap_or_default();
        out.extend_from_slice(b"srcIP:");
        fields.src.push_ip(out, r.src)?;
        out.extend_from_slice(b" dstIP:");
        fields.dst.push_ip(out, r.dst)?;
        out.extend_from_slice(b" srcPORT:");
        push_num(out, sport);
        out.extend_from_slice(b" dstPORT:");
        push_num(out, dport);
        out.extend_from_slice(b" PROTOCOL:");
        write_proto(out, r.proto, true);
        Ok(())
    }

    /// The line has no owner.
    fn owner(_: &mut Vec<u8>, _: &mut Cgroups, _: &Record) -> bool {
        true
    }

    /// Never called: `flows` refuses `--format legacy`.
    fn flow_counters(_: &mut Vec<u8>, _: FlowBytes) {}
}
