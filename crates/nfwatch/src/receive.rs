//! `nfwatch watch` and `nfwatch flows`: subscribe, receive batches, write
//! records (of packets, or of flows), stop cleanly.

use std::fs::OpenOptions;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use netlink_packet_generic::constants::{CTRL_CMD_DELFAMILY, GENL_ID_CTRL};
use nfwatch_proto::{
    Batch, BatchKind, FlowSettings, KernelMessage, Prefix, ProtoError, Request, Scope,
    NFWATCH_GENL_NAME,
};

use crate::cgroup::Cgroups;
use crate::cli::{parse_owner_filter, parse_prefixes, FlowsArgs, WatchArgs};
use crate::error::{Error, Result};
use crate::export::{ExportSettings, Exports};
use crate::netlink::{messages, CtrlFamily, GenlSocket, Message, Received};
use crate::signals::Signals;
use crate::status::{progress_line, summary, terminal_of, Counters, FlowCounts, Status};
use crate::subscribe::{self, kernel_error, wait_readable, REPLY_TIMEOUT};
use crate::summary_json;
use crate::writers::{self, Destination, Formatter, IpfixSettings, LineError, Sink};

/// Datagrams read per wakeup before timers and signals are looked at again.
const DATAGRAMS_PER_WAKEUP: usize = 64;

/// How long to wait for SHUTDOWN after the family disappeared.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The longest a record waits in the buffer when someone may be reading
/// live (a terminal, a pipe); the buffer is also written out whenever the
/// socket has nothing more to read.
const LIVE_FLUSH: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// SUBSCRIBE sent, not yet acked.
    Subscribing {
        deadline: Instant,
    },
    Running,
    /// UNSUBSCRIBE sent; records keep coming until its reply.
    Unsubscribing {
        seq: u32,
        deadline: Instant,
    },
    /// The family is gone (DELFAMILY); the module's last batch and its
    /// SHUTDOWN with the final counters follow unless our buffer was full.
    Draining {
        deadline: Instant,
    },
    Done,
}

struct Session {
    family: u16,
    /// What the batches hold: packets' records, or flows.
    kind: BatchKind,
    phase: Phase,
    subscribe_seq: u32,
    subscribed_line: String,
    stop_requested: bool,
    /// The module went away (DELFAMILY or SHUTDOWN) before we asked to stop.
    unloaded: bool,
    counters: Counters,
    formatter: Box<dyn Formatter>,
    count: Option<u64>,
    /// None: records go to the collectors only.
    output: Option<Output>,
    /// SUBSCRIBE was acknowledged: records are written from now on.
    recording: bool,
    /// Opened once SUBSCRIBE is acknowledged: a failed start leaves FILE alone.
    sink: Option<Sink>,
    exports: Option<Exports>,
    /// What the summary calls where records went: the file, or the collectors.
    written_to: String,
    /// How long a record may wait in the sink's buffer.
    max_age: Duration,
    /// Also write the buffer out whenever the socket is drained.
    flush_when_idle: bool,
    summary_json: Option<PathBuf>,
    status: Status,
    started: Instant,
    deadline: Option<Instant>,
}

/// `nfwatch watch`: a record per packet.
pub fn watch(args: WatchArgs) -> Result<ExitCode> {
    record(args, None)
}

/// `nfwatch flows`: a record per flow, aggregated in the kernel.
pub fn flows(mut args: FlowsArgs) -> Result<ExitCode> {
    let settings = args.flow_settings()?;
    // Every flow open when it stops comes in UNSUBSCRIBE's reply, before
    // any is read: the receive buffer holds a full table.
    let table = u64::from(args.max_flows) * RCVBUF_PER_FLOW;
    args.watch.rcvbuf = args.watch.rcvbuf.max(table.min(i32::MAX as u64));
    record(args.watch, Some(settings))
}

/// Receive buffer asked for each flow of the table: the kernel doubles it,
/// and a flow's 176 bytes take some 180 in a batch's pages.
const RCVBUF_PER_FLOW: u64 = 128;

/// Subscribes (to flows with `flows`) and writes what comes until stopped.
fn record(args: WatchArgs, flows: Option<FlowSettings>) -> Result<ExitCode> {
    let kind = match flows {
        Some(_) => BatchKind::Flows,
        None => BatchKind::Records,
    };
    let prefixes = parse_prefixes(&args.src)?;
    let cgroups = Cgroups::new();
    let owners = parse_owner_filter(&args, &cgroups)?;
    let scope = if args.all_netns {
        Scope::AllNetns
    } else {
        Scope::OwnNetns
    };
    let output = (args.output.is_some() || args.exports.is_empty()).then(|| Output {
        file: args.output_file().map(PathBuf::from),
        name: args
            .output_file()
            .map_or_else(|| "stdout".to_string(), |p| p.display().to_string()),
        append: args.append,
    });
    let records_to = match output.as_ref().map(|o| &o.file) {
        Some(None) => terminal_of(io::stdout()),
        _ => None,
    };
    let written_to = match &output {
        Some(output) => output.name.clone(),
        None => args
            .exports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    };
    let exports = (!args.exports.is_empty())
        .then(|| {
            let settings = ExportSettings {
                pen: args.ipfix_pen,
                domain: args.odid,
                mtu: args.export_mtu,
                queue: usize::try_from(args.export_queue).unwrap_or(usize::MAX),
                kind,
            };
            Exports::start(&args.exports, settings, Cgroups::new())
        })
        .transpose()?;
    let mut signals =
        Signals::install().map_err(|e| Error::io("cannot install signal handlers", e))?;
    let mut socket =
        GenlSocket::open().map_err(|e| Error::io("cannot open a netlink socket", e))?;
    let granted = socket
        .set_receive_buffer(usize::try_from(args.rcvbuf).unwrap_or(usize::MAX))
        .map_err(|e| Error::io(format!("--rcvbuf {}", args.rcvbuf), e))?;
    subscribe::join_ctrl_notify(&mut socket)?;
    let family = subscribe::resolve_nfwatch(&mut socket)?;
    socket
        .set_non_blocking()
        .map_err(|e| Error::io("cannot make the netlink socket non-blocking", e))?;
    let subscribe_seq = subscribe::send(
        &mut socket,
        family,
        Request::subscribe(&prefixes, &owners, scope, flows),
    )?;

    let mut session = Session {
        family,
        kind,
        phase: Phase::Subscribing {
            deadline: Instant::now() + REPLY_TIMEOUT,
        },
        subscribe_seq,
        subscribed_line: subscribed_line(&prefixes, scope, granted, flows),
        stop_requested: false,
        unloaded: false,
        counters: Counters {
            flows: flows.map(|_| FlowCounts::default()),
            ..Counters::default()
        },
        formatter: writers::formatter(
            args.format,
            cgroups,
            IpfixSettings {
                pen: args.ipfix_pen,
                domain: args.odid,
            },
            kind,
        ),
        count: args.count,
        output,
        recording: false,
        sink: None,
        exports,
        written_to,
        max_age: args.flush_interval,
        flush_when_idle: false,
        summary_json: args.summary_json,
        status: Status::new(args.quiet, records_to),
        started: Instant::now(),
        deadline: args.duration.map(|d| Instant::now() + d),
    };
    let outcome = session.run(&mut socket, &mut signals);
    session.finish(outcome)
}

fn subscribed_line(
    prefixes: &[Prefix],
    scope: Scope,
    granted: usize,
    flows: Option<FlowSettings>,
) -> String {
    let list: Vec<String> = prefixes.iter().map(Prefix::to_string).collect();
    let everywhere = match scope {
        Scope::AllNetns => " in every network namespace",
        Scope::OwnNetns => "",
    };
    let seconds = |ms: Option<u32>| {
        ms.map_or("default".into(), |ms| {
            format!("{} s", f64::from(ms) / 1000.0)
        })
    };
    let flows = flows.map_or(String::new(), |f| {
        format!(
            ", flows ending idle after {}, active after {}, at most {}",
            seconds(f.inactive_ms),
            seconds(f.active_ms),
            f.max_flows.map_or("default".into(), |n| n.to_string()),
        )
    });
    format!(
        "nfwatch: subscribed to {} prefixes ({}){everywhere}, receive buffer {granted} bytes{flows}",
        prefixes.len(),
        list.join(", ")
    )
}

/// Where records go, as the command line said.
struct Output {
    /// None: stdout.
    file: Option<PathBuf>,
    /// "stdout" or the file's path, for messages.
    name: String,
    append: bool,
}

impl Output {
    /// Opens the output (the file truncated unless `append`), starting
    /// with what the format starts a file with (a CSV header, IPFIX
    /// templates).
    fn open(&self, append: bool, formatter: &mut dyn Formatter) -> Result<Destination> {
        let mut destination = match &self.file {
            None => Destination::Stdout(io::stdout()),
            Some(file_path) => OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(file_path)
                .and_then(|file| {
                    Ok(Destination::File {
                        start: file.metadata()?.len(),
                        file,
                    })
                })
                .map_err(|e| Error::io(format!("cannot open {}", self.name), e))?,
        };
        let starts_empty = match &destination {
            Destination::File { start, .. } => *start == 0,
            Destination::Stdout(_) => true,
        };
        if let Some(preamble) = formatter.preamble(starts_empty) {
            write_preamble(&mut destination, &preamble)
                .map_err(|e| Error::io(format!("cannot write to {}", self.name), e))?;
        }
        Ok(destination)
    }
}

fn write_preamble(destination: &mut Destination, preamble: &[u8]) -> io::Result<()> {
    use io::Write;
    destination.write_all(preamble)?;
    if let Destination::File { start, .. } = destination {
        // The preamble is kept when a failed write cuts the file back.
        *start += preamble.len() as u64;
    }
    Ok(())
}

impl Session {
    fn run(&mut self, socket: &mut GenlSocket, signals: &mut Signals) -> Result<()> {
        while self.phase != Phase::Done {
            let readable = wait_readable(&[socket.fd(), signals.fd()], self.poll_timeout())?;
            if readable[1] {
                signals.drain();
            }
            if signals.take_report() {
                self.status.say(&progress_line(&self.counters));
            }
            if signals.take_stop() {
                self.stop_requested = true;
                if matches!(self.phase, Phase::Unsubscribing { .. }) {
                    // A second Ctrl-C: stop waiting for the kernel.
                    self.phase = Phase::Done;
                }
            }
            if readable[0] && self.receive(socket)? && self.flush_when_idle {
                self.flush()?;
            }
            if signals.take_reopen() {
                self.reopen()?;
            }
            self.check_timers()?;
            if self.stop_requested {
                self.unsubscribe(socket)?;
            }
            self.status.refresh(&self.counters);
        }
        Ok(())
    }

    /// Reads what is queued, a bounded number of datagrams at a time;
    /// whether the socket was left empty.
    fn receive(&mut self, socket: &mut GenlSocket) -> Result<bool> {
        for _ in 0..DATAGRAMS_PER_WAKEUP {
            match socket.recv() {
                Ok(Received::Datagram(datagram)) => {
                    for message in messages(datagram) {
                        match message {
                            Ok(message) => self.handle(message)?,
                            // The rest of the datagram cannot be framed.
                            Err(cause) => {
                                skip_malformed(&mut self.counters, &mut self.status, &cause)
                            }
                        }
                    }
                }
                Ok(Received::Overrun) => self.counters.overruns += 1,
                Ok(Received::Empty) => return Ok(true),
                Err(e) => return Err(Error::io("cannot receive from the kernel", e)),
            }
            if self.phase == Phase::Done {
                break;
            }
        }
        Ok(false)
    }

    fn handle(&mut self, message: Message<'_>) -> Result<()> {
        match message {
            Message::Ack { seq } if seq == self.subscribe_seq => self.confirm_subscribed()?,
            Message::Error { seq, errno, extack } if seq == self.subscribe_seq => {
                return Err(kernel_error("SUBSCRIBE", errno, extack));
            }
            Message::Ack { seq } | Message::Error { seq, .. } if self.is_unsubscribe(seq) => {
                self.phase = Phase::Done;
            }
            Message::Genl {
                family: GENL_ID_CTRL,
                cmd: CTRL_CMD_DELFAMILY,
                attrs,
                ..
            } => {
                let removed = CtrlFamily::parse(attrs)?;
                if removed.name.as_deref() == Some(NFWATCH_GENL_NAME) && self.phase != Phase::Done {
                    self.unloaded |= !self.stop_requested;
                    self.phase = Phase::Draining {
                        deadline: Instant::now() + SHUTDOWN_GRACE,
                    };
                }
            }
            Message::Genl {
                family, cmd, attrs, ..
            } if family == self.family => match KernelMessage::parse(cmd, attrs) {
                Ok(KernelMessage::Records(batch) | KernelMessage::Flows(batch)) => {
                    self.batch(batch)?
                }
                Ok(KernelMessage::Unsubscribed(reply)) => {
                    self.counters.final_own = reply.own.or(self.counters.final_own);
                    self.phase = Phase::Done;
                }
                Ok(KernelMessage::Shutdown(reply)) => {
                    self.counters.final_own = reply.own.or(self.counters.final_own);
                    self.unloaded |= !self.stop_requested;
                    self.phase = Phase::Done;
                }
                Ok(KernelMessage::Stats(_) | KernelMessage::Other(_)) => {}
                Err(cause) => skip_malformed(&mut self.counters, &mut self.status, &cause),
            },
            _ => {}
        }
        Ok(())
    }

    fn is_unsubscribe(&self, seq: u32) -> bool {
        matches!(self.phase, Phase::Unsubscribing { seq: s, .. } if s == seq)
    }

    /// The module took the subscription: only now is the output opened.
    fn confirm_subscribed(&mut self) -> Result<()> {
        if matches!(self.phase, Phase::Subscribing { .. }) {
            self.phase = Phase::Running;
        }
        if !self.recording {
            if let Some(output) = &self.output {
                let destination = output.open(output.append, self.formatter.as_mut())?;
                if !destination.is_regular_file() {
                    self.max_age = self.max_age.min(LIVE_FLUSH);
                    self.flush_when_idle = true;
                }
                self.sink = Some(Sink::new(destination));
            }
            self.recording = true;
            let line = std::mem::take(&mut self.subscribed_line);
            self.status.note(&line);
            crate::notify::ready(&line);
            self.started = Instant::now();
        }
        Ok(())
    }

    fn batch(&mut self, batch: Batch<'_>) -> Result<()> {
        // Records only come to a subscriber: this confirms a subscription
        // whose ack may have been lost to an overrun.
        self.confirm_subscribed()?;
        if batch.kind != self.kind {
            let got = match batch.kind {
                BatchKind::Records => "packets",
                BatchKind::Flows => "flows",
            };
            let cause = ProtoError::UnexpectedBatch { got };
            skip_malformed(&mut self.counters, &mut self.status, &cause);
            return Ok(());
        }
        self.counters.batch_seen(batch.seq, batch.lost);
        if let Some(exports) = self.exports.as_mut() {
            exports.begin_batch(self.counters.lost());
        }
        for record in batch.entries() {
            self.counters.received += 1;
            if self
                .count
                .is_some_and(|limit| self.counters.written >= limit)
            {
                self.counters.not_written += 1;
                continue;
            }
            if let Some(exports) = self.exports.as_mut() {
                if let Err(cause) = exports.write(record) {
                    skip_malformed(&mut self.counters, &mut self.status, &cause);
                    continue;
                }
            }
            let Some(sink) = self.sink.as_mut() else {
                self.counters.written += 1;
                self.counters.flow_written(record);
                continue;
            };
            match self.formatter.write(sink, record) {
                Ok(()) => {}
                Err(LineError::Malformed(cause)) => {
                    skip_malformed(&mut self.counters, &mut self.status, &cause);
                    continue;
                }
                Err(LineError::Format(cause)) => {
                    return Err(Error::io("cannot format a record", cause));
                }
                Err(LineError::Write(cause)) => return Err(Error::Write(cause)),
            }
            self.counters.written += 1;
            self.counters.flow_written(record);
            if self
                .count
                .is_some_and(|limit| self.counters.written >= limit)
            {
                self.stop_requested = true;
            }
        }
        if let Some(exports) = self.exports.as_mut() {
            exports.release();
        }
        // A batch's records go to the sink whole: its flush timer then
        // counts for them as for lines.
        match self.sink.as_mut() {
            Some(sink) => self.formatter.release(sink).map_err(Error::Write),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<()> {
        match self.sink.as_mut() {
            Some(sink) => sink.flush().map_err(Error::Write),
            None => Ok(()),
        }
    }

    /// SIGHUP: every record so far to the old file, then FILE again by
    /// path (created when it was moved away); on stdout only the flush.
    fn reopen(&mut self) -> Result<()> {
        let (Some(sink), Some(output)) = (self.sink.as_mut(), &self.output) else {
            return Ok(());
        };
        if output.file.is_none() {
            return sink.flush().map_err(Error::Write);
        }
        // Everything to the old file before FILE is opened again: when it
        // was not moved, the new length must count those lines.
        sink.sync().map_err(Error::Write)?;
        sink.switch_to(output.open(true, self.formatter.as_mut())?);
        Ok(())
    }

    fn flush_due(&self) -> Option<Instant> {
        self.sink.as_ref()?.flush_due(self.max_age)
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let phase_deadline = match self.phase {
            Phase::Subscribing { deadline }
            | Phase::Unsubscribing { deadline, .. }
            | Phase::Draining { deadline } => Some(deadline),
            Phase::Running => self.deadline,
            Phase::Done => None,
        };
        [phase_deadline, self.flush_due()]
            .into_iter()
            .flatten()
            .map(|d| d.saturating_duration_since(now))
            .chain(self.status.next_refresh())
            .min()
    }

    fn check_timers(&mut self) -> Result<()> {
        let now = Instant::now();
        if self.flush_due().is_some_and(|due| now >= due) {
            self.flush()?;
        }
        match self.phase {
            Phase::Subscribing { deadline } if now >= deadline => {
                return Err(Error::NoReply("SUBSCRIBE"));
            }
            Phase::Running if self.deadline.is_some_and(|d| now >= d) => {
                self.stop_requested = true;
            }
            Phase::Unsubscribing { deadline, .. } if now >= deadline => {
                self.status
                    .say("nfwatch: no reply from the kernel to UNSUBSCRIBE, giving up waiting");
                self.phase = Phase::Done;
            }
            Phase::Draining { deadline } if now >= deadline => self.phase = Phase::Done,
            _ => {}
        }
        Ok(())
    }

    fn unsubscribe(&mut self, socket: &mut GenlSocket) -> Result<()> {
        if matches!(self.phase, Phase::Subscribing { .. } | Phase::Running) {
            self.phase = match subscribe::send(socket, self.family, Request::unsubscribe()) {
                Ok(seq) => Phase::Unsubscribing {
                    seq,
                    deadline: Instant::now() + REPLY_TIMEOUT,
                },
                // The module is gone (or the socket is): nothing to undo.
                Err(_) => Phase::Done,
            };
        }
        Ok(())
    }

    /// Flushes, syncs, reports; the exit code for `outcome`.
    fn finish(mut self, outcome: Result<()>) -> Result<ExitCode> {
        if !self.recording {
            // Never subscribed: nothing was opened, nothing to sum up.
            return outcome.map(|()| ExitCode::FAILURE);
        }
        let mut sink = self.sink.take();
        let flushed = sink
            .as_mut()
            .map_or(Ok(()), |s| s.finish().map_err(Error::Write));
        // The first error wins; a later flush failure still needs the cut.
        let outcome = outcome.and(flushed);
        if outcome.is_err() {
            if let Some(sink) = sink.as_mut() {
                let _ = sink.truncate_to_committed();
            }
        }
        let failure = match outcome {
            // Recording ended without being asked to: a service manager
            // must see a failure (and restart the service).
            Ok(()) if self.unloaded => Some(Error::ModuleUnloaded.to_string()),
            Ok(()) => None,
            Err(Error::Write(source)) => {
                let to_stdout = self.output.as_ref().is_some_and(|o| o.file.is_none());
                if source.kind() == io::ErrorKind::BrokenPipe && to_stdout {
                    // The reader went away (`| head`): a normal way to stop.
                    self.status
                        .note("nfwatch: stopped: the reader of stdout went away");
                    None
                } else {
                    Some(format!("cannot write to {}: {source}", self.written_to))
                }
            }
            Err(other) => Some(other.to_string()),
        };
        if let Some(failure) = &failure {
            self.status.say(&format!("nfwatch: {failure}"));
        }
        match &sink {
            Some(sink) => {
                self.counters.written = sink.records_written();
                self.counters.by_socket = self.formatter.by_socket();
            }
            None => {
                let exports = self.exports.as_ref();
                self.counters.by_socket = exports.map_or(0, Exports::by_socket);
            }
        }
        if let Some(exports) = self.exports.take() {
            self.counters.exports = exports.finish(self.counters.lost());
        }
        let elapsed = self.started.elapsed();
        for line in summary(&self.counters, &self.written_to, elapsed) {
            self.status.note(&line);
        }
        if let Some(path) = &self.summary_json {
            let object = summary_json::summary_object(&self.counters, &self.written_to, elapsed);
            summary_json::write(path, &object)?;
        }
        Ok(if failure.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// Counts what broke the contract; tells the first one's cause.
fn skip_malformed(counters: &mut Counters, status: &mut Status, cause: &ProtoError) {
    if counters.malformed == 0 {
        status.say(&format!(
            "nfwatch: skipping malformed data from the kernel ({cause}); the summary counts it"
        ));
    }
    counters.malformed += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribed_line_lists_prefixes() {
        let prefixes: Vec<Prefix> =
            ["10.0.0.1".parse().unwrap(), "fd00::/8".parse().unwrap()].into();
        assert_eq!(
            subscribed_line(&prefixes, Scope::OwnNetns, 16_777_216, None),
            "nfwatch: subscribed to 2 prefixes (10.0.0.1/32, fd00::/8), receive buffer 16777216 bytes"
        );
        assert_eq!(
            subscribed_line(&prefixes[..1], Scope::AllNetns, 65536, None),
            "nfwatch: subscribed to 1 prefixes (10.0.0.1/32) in every network namespace, receive buffer 65536 bytes"
        );
        let flows = FlowSettings {
            inactive_ms: Some(15_000),
            active_ms: Some(1_800_500),
            max_flows: Some(65_536),
        };
        assert_eq!(
            subscribed_line(&prefixes[..1], Scope::OwnNetns, 65536, Some(flows)),
            "nfwatch: subscribed to 1 prefixes (10.0.0.1/32), receive buffer 65536 bytes, flows ending idle after 15 s, active after 1800.5 s, at most 65536"
        );
    }
}
