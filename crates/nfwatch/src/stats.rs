//! `nfwatch stats`: the module's counters.

use std::fmt::Write as _;
use std::io::{self, Write};

use nfwatch_proto::{KernelMessage, Request, Stats, StatsReply};

use crate::cli::StatsArgs;
use crate::error::{Error, Result};
use crate::netlink::GenlSocket;
use crate::subscribe;

pub fn stats(args: StatsArgs) -> Result<()> {
    let mut socket =
        GenlSocket::open().map_err(|e| Error::io("cannot open a netlink socket", e))?;
    let family = subscribe::resolve_nfwatch(&mut socket)?;
    let seq = subscribe::send(&mut socket, family, Request::get_stats())?;
    let reply = subscribe::exchange(&mut socket, seq, "GET_STATS", |from, cmd, attrs| {
        if from != family {
            return Ok(None);
        }
        match KernelMessage::parse(cmd, attrs)? {
            KernelMessage::Stats(reply) => Ok(Some(reply)),
            _ => Ok(None),
        }
    })?;
    let text = if args.json {
        json(&reply)
    } else {
        human(&reply)
    };
    io::stdout()
        .write_all(text.as_bytes())
        .and_then(|()| io::stdout().flush())
        .map_err(|e| Error::io("cannot write to stdout", e))
}

/// One row per counter, as text shows it and JSON names it.
fn rows(stats: &Stats) -> Vec<(&'static str, &'static str, u64)> {
    let mut rows = vec![
        ("packets seen", "seen", stats.seen),
        ("packets matched", "matched", stats.matched),
        ("records delivered", "delivered", stats.delivered),
        ("records lost", "lost", stats.lost),
        ("packets malformed", "malformed", stats.malformed),
        ("batches delivered", "batches", stats.batches),
        ("subscribers", "subscribers", stats.subscribers),
    ];
    if let Some(live) = stats.live {
        rows.extend([
            ("live subscribers", "live.subscribers", live.subscribers),
            ("live prefix sets", "live.sets", live.sets),
            ("live batches", "live.batches", live.batches),
            ("live batch pages", "live.pages", live.pages),
            ("live flows", "live.flows", live.flows),
        ]);
    }
    rows
}

/// `{"global":{...}}`: every row of the text, `live.*` nested as `live`.
fn json(reply: &StatsReply) -> String {
    let mut global = serde_json::Map::new();
    for (_, key, value) in reply.global.as_ref().map(rows).unwrap_or_default() {
        match key.split_once('.') {
            Some((outer, inner)) => {
                let nested = global
                    .entry(outer)
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                if let Some(nested) = nested.as_object_mut() {
                    nested.insert(inner.to_string(), value.into());
                }
            }
            None => {
                global.insert(key.to_string(), value.into());
            }
        }
    }
    format!("{}\n", serde_json::json!({ "global": global }))
}

/// One aligned line per counter of the caller's network namespace (the
/// stats socket holds no subscription of its own).
fn human(reply: &StatsReply) -> String {
    let mut out = String::new();
    for (name, _, value) in reply.global.as_ref().map(rows).unwrap_or_default() {
        let _ = writeln!(out, "{name:<18} {value:>12}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        Stats {
            seen: 100,
            matched: 40,
            delivered: 38,
            lost: 2,
            malformed: 1,
            batches: 5,
            subscribers: 1,
            prefixes: 0,
            unattributed: 0,
            flows: 0,
            flows_evicted: 0,
            flows_open: 0,
            live: None,
        }
    }

    #[test]
    fn json_has_every_counter_the_text_shows() {
        let reply = StatsReply {
            global: Some(sample()),
            own: None,
        };
        assert_eq!(
            json(&reply),
            "{\"global\":{\"batches\":5,\"delivered\":38,\"lost\":2,\"malformed\":1,\"matched\":40,\"seen\":100,\"subscribers\":1}}\n"
        );
        let live = StatsReply {
            global: Some(Stats {
                live: Some(nfwatch_proto::LiveObjects {
                    subscribers: 1,
                    sets: 2,
                    batches: 3,
                    pages: 4,
                    flows: 5,
                }),
                ..sample()
            }),
            own: None,
        };
        let text = json(&live);
        assert!(
            text.contains(r#""live":{"batches":3,"flows":5,"pages":4,"sets":2,"subscribers":1}"#),
            "{text}"
        );
        let human_lines = human(&live).lines().count();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let global = &value["global"];
        let json_leaves =
            global.as_object().unwrap().len() - 1 + global["live"].as_object().unwrap().len();
        assert_eq!(json_leaves, human_lines);
    }

    #[test]
    fn human_lines_are_aligned() {
        let text = human(&StatsReply {
            global: Some(sample()),
            own: None,
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[0], "packets seen                100");
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
    }
}
