//! Another program's NFQUEUE: a reader of nfnetlink_queue that holds its
//! packets' verdicts, as an inline IPS does while it inspects them. Starting
//! and stopping nfwatch must leave those packets where they are, and the
//! packets its verdicts send on are the sender's, not the reader's.

use super::genl::{self, Message, NlError, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST};
use super::net::{DEV, ONLINK4, OTHER4, WATCHED4};
use super::nfwatch::{Record, Watcher, DEADLINE};
use super::proc::Spawned;
use super::scenarios::{start_tcpdump, traffic_count, wait_subscribers_parameter};
use super::Ctx;
use crate::util::{run, wait_until};
use anyhow::{ensure, Context, Result};
use nfwatch_proto::{emit_attrs, walk_attrs, RawAttr};
use std::os::fd::OwnedFd;
use std::process::Command;
use std::time::Instant;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_ACCEPT: u32 = 1;

const QUEUE: u16 = 0;
const PACKETS: u16 = 5;
/// Starts and stops of nfwatch while the packets wait.
const RUNS: usize = 3;

/// A bound queue and the ids of the packets it holds.
struct QueueReader {
    fd: OwnedFd,
    seq: u32,
    held: Vec<u32>,
}

impl QueueReader {
    /// Binds queue `QUEUE`, metadata only.
    fn bind() -> Result<Self> {
        let mut reader = Self {
            fd: genl::open_socket(NETLINK_NETFILTER)?,
            seq: 0,
            held: Vec::new(),
        };
        let mut params = 0u32.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_META);
        let ack = reader.request(
            NFQNL_MSG_CONFIG,
            &[
                RawAttr::bytes(NFQA_CFG_CMD, vec![NFQNL_CFG_CMD_BIND, 0, 0, 0]),
                RawAttr::bytes(NFQA_CFG_PARAMS, params),
            ],
        )?;
        ensure!(ack.errno == 0, "binding NFQUEUE {QUEUE}: {ack:?}");
        Ok(reader)
    }

    /// Sends a request to the queue and returns its ack; packets that
    /// arrive meanwhile are held.
    fn request(&mut self, msg: u16, attrs: &[RawAttr]) -> Result<NlError> {
        self.seq += 1;
        // nfgenmsg: family, version 0, the queue (big-endian).
        let mut body = vec![libc::AF_UNSPEC as u8, 0];
        body.extend_from_slice(&QUEUE.to_be_bytes());
        body.extend_from_slice(&emit_attrs(attrs));
        let kind = NFNL_SUBSYS_QUEUE << 8 | msg;
        genl::send_message(
            &self.fd,
            &genl::message(kind, NLM_F_REQUEST | NLM_F_ACK, self.seq, &body)?,
        )?;
        loop {
            for message in genl::recv_messages(&self.fd)? {
                if message.kind == NLMSG_ERROR && message.seq == self.seq {
                    return genl::parse_error(&message);
                }
                self.hold(&message)?;
            }
        }
    }

    fn hold(&mut self, message: &Message) -> Result<()> {
        if message.kind != NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET {
            return Ok(());
        }
        for attr in walk_attrs(message.payload.get(4..).unwrap_or_default()) {
            let (kind, value) = attr?;
            if kind == NFQA_PACKET_HDR && value.len() >= 4 {
                self.held
                    .push(u32::from_be_bytes([value[0], value[1], value[2], value[3]]));
            }
        }
        Ok(())
    }

    /// Reads packets until `count` are held.
    fn wait_held(&mut self, count: usize) -> Result<()> {
        let start = Instant::now();
        while self.held.len() < count {
            ensure!(
                start.elapsed() < DEADLINE,
                "{} of {count} packets reached the queue reader",
                self.held.len()
            );
            for message in genl::recv_messages(&self.fd)? {
                self.hold(&message)?;
            }
        }
        Ok(())
    }

    fn accept(&mut self, id: u32) -> Result<NlError> {
        let mut hdr = NF_ACCEPT.to_be_bytes().to_vec();
        hdr.extend_from_slice(&id.to_be_bytes());
        self.request(NFQNL_MSG_VERDICT, &[RawAttr::bytes(NFQA_VERDICT_HDR, hdr)])
    }
}

/// The packets waiting in `QUEUE` (queue_total of /proc/net/netfilter/nfnetlink_queue).
fn queued() -> Result<u64> {
    const PATH: &str = "/proc/net/netfilter/nfnetlink_queue";
    let text = std::fs::read_to_string(PATH).with_context(|| format!("cannot read {PATH}"))?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&QUEUE.to_string()))
        .with_context(|| format!("no queue {QUEUE} in {PATH}:\n{text}"))?;
    line.split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("{PATH}: no queue_total in {line:?}"))
}

fn nft(script: &str) -> Result<()> {
    run(Command::new("nft").arg(script))
}

/// Packets held by another program's NFQUEUE stay queued while nfwatch
/// starts and stops (unregistering a Netfilter hook would drop them), and
/// its late verdicts send them on their way.
pub fn nfqueue_kept(ctx: &Ctx) -> Result<()> {
    run(Command::new("modprobe").arg("nfnetlink_queue"))?;
    let reader = QueueReader::bind()?;
    nft(&format!(
        "table ip nfwatch_queue {{
            chain out {{ type filter hook output priority 0; ip daddr {ONLINK4} icmp type echo-request queue num {QUEUE}; }}
        }}"
    ))?;
    let result = nfqueue_checked(ctx, reader);
    nft("delete table ip nfwatch_queue")?;
    result
}

fn nfqueue_checked(ctx: &Ctx, mut reader: QueueReader) -> Result<()> {
    let pcap_path = ctx.path("queued.pcap");
    let filter = format!("icmp[icmptype] == icmp-echo and dst host {ONLINK4}");
    let mut tcpdump = start_tcpdump(ctx, DEV, &filter, &pcap_path)?;
    // Nobody holds ONLINK4: ping waits for its replies until it is killed,
    // its socket open.
    let ping = Spawned::start(
        Command::new("ping")
            .args([
                "-4", "-n", "-i", "0.2", "-W", "600", "-I", OTHER4, ONLINK4, "-c",
            ])
            .arg(PACKETS.to_string()),
        &ctx.path("ping.log"),
    )?;
    reader.wait_held(PACKETS.into())?;
    let before = queued()?;
    ctx.log(&format!("held {:?}; {before} queued", reader.held));
    ensure!(
        before == u64::from(PACKETS),
        "{before} packets queued, expected {PACKETS}"
    );
    for run in 0..RUNS {
        Watcher::start(ctx, &format!("run{run}"), &[WATCHED4])?.stop()?;
        wait_subscribers_parameter(0)?;
        let now = queued()?;
        ctx.log(&format!("after nfwatch run {run}: {now} queued"));
        ensure!(
            now == before,
            "after nfwatch run {run} started and stopped: {now} of {before} packets still queued"
        );
    }
    let verdicts = Watcher::start(ctx, "verdicts", &[OTHER4])?;
    let ids = reader.held[..PACKETS.into()].to_vec();
    for id in ids {
        let ack = reader.accept(id)?;
        ensure!(ack.errno == 0, "the late verdict on packet {id}: {ack:?}");
    }
    wait_until(
        &format!("tcpdump on {DEV} to see the {PACKETS} packets leave"),
        DEADLINE,
        || Ok((traffic_count(&pcap_path)? >= PACKETS.into()).then_some(())),
    )?;
    let records = verdicts.collect()?;
    check_sent_by_ping(&records, ping.pid() as u32)?;
    drop(ping);
    tcpdump.signal(libc::SIGINT)?;
    tcpdump.wait_success(DEADLINE)?;
    let left = queued()?;
    ensure!(left == 0, "{left} packets still queued after every verdict");
    Ok(())
}

/// The packets the verdicts sent on, recorded as they pass nfwatch's hook
/// in the verdict program's context, are ping's: the kernel never saw ping
/// send (the queue took its packets first), and ping holds their socket.
fn check_sent_by_ping(records: &[Record], ping: u32) -> Result<()> {
    let echoes = records
        .iter()
        .filter(|r| r.proto == "icmp" && r.dst == ONLINK4)
        .count();
    ensure!(
        echoes == usize::from(PACKETS),
        "{echoes} of the {PACKETS} echo requests the verdicts sent on were recorded"
    );
    for r in records.iter().filter(|r| r.proto == "icmp") {
        ensure!(
            r.pid == Some(ping) && r.comm.as_ref().is_some_and(|c| *c == "ping"),
            "an echo request the verdicts sent on, not attributed to ping ({ping}): {r:?}"
        );
    }
    Ok(())
}
