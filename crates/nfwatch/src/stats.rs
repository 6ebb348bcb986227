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

fn json_object(stats: &Stats) -> String {
    let live = stats.live.map_or(String::new(), |live| {
        format!(
            r#","live":{{"subscribers":{},"sets":{},"batches":{},"pages":{}}}"#,
            live.subscribers, live.sets, live.batches, live.pages
        )
    });
    format!(
        r#"{{"seen":{},"matched":{},"delivered":{},"lost":{},"malformed":{},"batches":{},"subscribers":{}{live}}}"#,
        stats.seen,
        stats.matched,
        stats.delivered,
        stats.lost,
        stats.malformed,
        stats.batches,
        stats.subscribers
    )
}

fn json(reply: &StatsReply) -> String {
    let mut parts = Vec::new();
    if let Some(global) = &reply.global {
        parts.push(format!(r#""global":{}"#, json_object(global)));
    }
    if let Some(own) = &reply.own {
        parts.push(format!(r#""own":{}"#, json_object(own)));
    }
    format!("{{{}}}\n", parts.join(","))
}

fn human_block(out: &mut String, stats: &Stats) {
    let rows = [
        ("packets seen", stats.seen),
        ("packets matched", stats.matched),
        ("records delivered", stats.delivered),
        ("records lost", stats.lost),
        ("packets malformed", stats.malformed),
        ("batches delivered", stats.batches),
        ("subscribers", stats.subscribers),
    ];
    let live = stats.live.map(|live| {
        [
            ("live subscribers", live.subscribers),
            ("live prefix sets", live.sets),
            ("live batches", live.batches),
            ("live batch pages", live.pages),
        ]
    });
    for (name, value) in rows.into_iter().chain(live.into_iter().flatten()) {
        let _ = writeln!(out, "{name:<18} {value:>12}");
    }
}

fn human(reply: &StatsReply) -> String {
    let mut out = String::new();
    if let Some(global) = &reply.global {
        human_block(&mut out, global);
    }
    if let Some(own) = &reply.own {
        out.push_str("this socket's subscription:\n");
        human_block(&mut out, own);
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
            live: None,
        }
    }

    #[test]
    fn json_has_global_and_optional_own() {
        let reply = StatsReply {
            global: Some(sample()),
            own: None,
        };
        assert_eq!(
            json(&reply),
            "{\"global\":{\"seen\":100,\"matched\":40,\"delivered\":38,\"lost\":2,\"malformed\":1,\"batches\":5,\"subscribers\":1}}\n"
        );
        let both = StatsReply {
            global: Some(sample()),
            own: Some(Stats::default()),
        };
        assert!(json(&both).contains(r#"},"own":{"seen":0,"#));
        let live = StatsReply {
            global: Some(Stats {
                live: Some(nfwatch_proto::LiveObjects {
                    subscribers: 1,
                    sets: 2,
                    batches: 3,
                    pages: 4,
                }),
                ..sample()
            }),
            own: None,
        };
        assert!(json(&live).ends_with(
            r#""subscribers":1,"live":{"subscribers":1,"sets":2,"batches":3,"pages":4}}}
"#
        ));
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
