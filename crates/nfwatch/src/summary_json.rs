//! `--summary-json`: the end-of-run counters as one JSON object.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::status::Counters;

/// The object; `kernel` is null when the final counters never came (the
/// module went away without them, or nfwatch stopped on an error).
/// With flows, also `flows` (the flows written, as `written`), `packets`
/// and `sends` (their sums), and the kernel's `flows` and `flows_evicted`.
pub fn summary_object(counters: &Counters, output: &str, elapsed: Duration) -> Value {
    let mut object = json!({
        "output": output,
        "written": counters.written,
        "not_written": counters.not_written,
        "lost_in_kernel": counters.lost(),
        "overruns": counters.overruns,
        "seq_gaps": counters.seq_gaps,
        "malformed": counters.malformed,
        "by_socket": counters.by_socket,
        "kernel": counters.final_own.map(|own| json!({
            "matched": own.matched,
            "delivered": own.delivered,
            "lost": own.lost,
            "unattributed": own.unattributed,
        })),
        "exports": counters.exports.iter().map(|e| json!({
            "to": e.to,
            "messages": e.messages,
            "records": e.records,
            "lost": e.lost,
        })).collect::<Vec<_>>(),
        "duration_s": elapsed.as_secs_f64(),
    });
    if let Some(flows) = counters.flows {
        object["flows"] = counters.written.into();
        object["packets"] = flows.packets.into();
        object["sends"] = flows.sends.into();
        if let (Some(own), Some(kernel)) = (counters.final_own, object["kernel"].as_object_mut()) {
            kernel.insert("flows".into(), own.flows.into());
            kernel.insert("flows_evicted".into(), own.flows_evicted.into());
        }
    }
    object
}

/// Writes `object` and a newline to `path` (`-`: stderr).
pub fn write(path: &Path, object: &Value) -> Result<()> {
    let text = format!("{object}\n");
    let written = if path.as_os_str() == "-" {
        io::stderr().write_all(text.as_bytes())
    } else {
        std::fs::write(path, text)
    };
    written.map_err(|e| Error::io(format!("--summary-json {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfwatch_proto::Stats;

    #[test]
    fn every_counter_is_there() {
        let counters = Counters {
            written: 10,
            not_written: 1,
            overruns: 2,
            seq_gaps: 3,
            malformed: 4,
            by_socket: 5,
            final_own: Some(Stats {
                matched: 12,
                delivered: 11,
                lost: 1,
                unattributed: 6,
                ..Stats::default()
            }),
            exports: vec![crate::export::ExportReport {
                to: "udp://192.0.2.9:4739".into(),
                messages: 2,
                records: 9,
                lost: 1,
            }],
            ..Counters::default()
        };
        let object = summary_object(&counters, "out.jsonl", Duration::from_millis(1500));
        assert_eq!(
            object.to_string(),
            r#"{"by_socket":5,"duration_s":1.5,"exports":[{"lost":1,"messages":2,"records":9,"to":"udp://192.0.2.9:4739"}],"kernel":{"delivered":11,"lost":1,"matched":12,"unattributed":6},"lost_in_kernel":1,"malformed":4,"not_written":1,"output":"out.jsonl","overruns":2,"seq_gaps":3,"written":10}"#
        );
        let without = summary_object(&Counters::default(), "stdout", Duration::ZERO);
        assert_eq!(without["kernel"], Value::Null);
    }

    #[test]
    fn flows_add_their_counts() {
        let counters = Counters {
            written: 3,
            flows: Some(crate::status::FlowCounts {
                packets: 40,
                sends: 30,
            }),
            final_own: Some(Stats {
                matched: 30,
                delivered: 30,
                flows: 3,
                flows_evicted: 1,
                ..Stats::default()
            }),
            ..Counters::default()
        };
        let object = summary_object(&counters, "stdout", Duration::ZERO);
        assert_eq!(
            (&object["flows"], &object["packets"], &object["sends"]),
            (&json!(3), &json!(40), &json!(30))
        );
        assert_eq!(object["written"], json!(3));
        assert_eq!(
            object["kernel"].to_string(),
            r#"{"delivered":30,"flows":3,"flows_evicted":1,"lost":0,"matched":30,"unattributed":0}"#
        );
        let packets = summary_object(&Counters::default(), "stdout", Duration::ZERO);
        assert!(packets.get("flows").is_none() && packets.get("packets").is_none());
    }
}
