//! `nfwatch watch`: subscribe, receive batches, write records, stop cleanly.

use std::fs::OpenOptions;
use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use netlink_packet_generic::constants::{CTRL_CMD_DELFAMILY, GENL_ID_CTRL};
use nfwatch_proto::{Batch, KernelMessage, Prefix, Request, NFWATCH_GENL_NAME};

use crate::cli::{parse_prefixes, WatchArgs};
use crate::error::{Error, Result};
use crate::netlink::{messages, CtrlFamily, GenlSocket, Message, Received};
use crate::signals::Signals;
use crate::status::{progress_line, summary, Counters, Status};
use crate::subscribe::{self, kernel_error, wait_readable, REPLY_TIMEOUT};
use crate::writers::{Destination, Format, LineError, LineFormatter, LineSink, CSV_HEADER};

/// Datagrams read per wakeup before timers and signals are looked at again.
const DATAGRAMS_PER_WAKEUP: usize = 64;

/// How long to wait for SHUTDOWN after the family disappeared.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    phase: Phase,
    subscribe_seq: u32,
    subscribed_line: String,
    stop_requested: bool,
    counters: Counters,
    formatter: LineFormatter,
    count: Option<u64>,
    sink: LineSink,
    status: Status,
    started: Instant,
    deadline: Option<Instant>,
}

pub fn watch(args: WatchArgs) -> Result<ExitCode> {
    let prefixes = parse_prefixes(&args.src)?;
    let path = args
        .output
        .as_ref()
        .map_or_else(|| "stdout".to_string(), |p| p.display().to_string());
    let sink = open_output(&args, &path)?;
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
    let subscribe_seq = subscribe::send(&mut socket, family, Request::subscribe(&prefixes))?;

    let mut session = Session {
        family,
        phase: Phase::Subscribing {
            deadline: Instant::now() + REPLY_TIMEOUT,
        },
        subscribe_seq,
        subscribed_line: subscribed_line(&prefixes, granted),
        stop_requested: false,
        counters: Counters::default(),
        formatter: LineFormatter::new(args.format),
        count: args.count,
        sink,
        status: Status::new(),
        started: Instant::now(),
        deadline: args.duration.map(|d| Instant::now() + d),
    };
    let outcome = session.run(&mut socket, &mut signals);
    session.finish(outcome, &path)
}

fn subscribed_line(prefixes: &[Prefix], granted: usize) -> String {
    let list: Vec<String> = prefixes.iter().map(Prefix::to_string).collect();
    format!(
        "nfwatch: subscribed to {} prefixes ({}), receive buffer {granted} bytes",
        prefixes.len(),
        list.join(", ")
    )
}

fn open_output(args: &WatchArgs, path: &str) -> Result<LineSink> {
    let destination = match &args.output {
        None => Destination::Stdout(io::stdout()),
        Some(file_path) => {
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .append(args.append)
                .truncate(!args.append)
                .open(file_path)
                .and_then(|file| Ok((file.metadata()?.len(), file)))
                .map_err(|e| Error::io(format!("cannot open {path}"), e))?;
            Destination::File {
                start: file.0,
                file: file.1,
            }
        }
    };
    let needs_header = match &destination {
        Destination::File { start, .. } => *start == 0,
        Destination::Stdout(_) => true,
    };
    let mut sink = LineSink::new(destination);
    if args.format == Format::Csv && needs_header {
        sink.write_header(CSV_HEADER)
            .map_err(|e| Error::io(format!("cannot write to {path}"), e))?;
    }
    Ok(sink)
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
            if readable[0] {
                self.receive(socket)?;
            }
            self.check_timers()?;
            if self.stop_requested {
                self.unsubscribe(socket)?;
            }
            self.status.refresh(&self.counters);
        }
        Ok(())
    }

    /// Reads what is queued, a bounded number of datagrams at a time.
    fn receive(&mut self, socket: &mut GenlSocket) -> Result<()> {
        for _ in 0..DATAGRAMS_PER_WAKEUP {
            match socket.recv() {
                Ok(Received::Datagram(datagram)) => {
                    for message in messages(datagram) {
                        self.handle(message?)?;
                    }
                }
                Ok(Received::Overrun) => self.counters.overruns += 1,
                Ok(Received::Empty) => break,
                Err(e) => return Err(Error::io("cannot receive from the kernel", e)),
            }
            if self.phase == Phase::Done {
                break;
            }
        }
        Ok(())
    }

    fn handle(&mut self, message: Message<'_>) -> Result<()> {
        match message {
            Message::Ack { seq } if seq == self.subscribe_seq => self.confirm_subscribed(),
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
                    self.phase = Phase::Draining {
                        deadline: Instant::now() + SHUTDOWN_GRACE,
                    };
                }
            }
            Message::Genl {
                family, cmd, attrs, ..
            } if family == self.family => match KernelMessage::parse(cmd, attrs)? {
                KernelMessage::Records(batch) => self.batch(batch)?,
                KernelMessage::Unsubscribed(reply) | KernelMessage::Shutdown(reply) => {
                    self.counters.final_own = reply.own.or(self.counters.final_own);
                    self.phase = Phase::Done;
                }
                KernelMessage::Stats(_) | KernelMessage::Other(_) => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn is_unsubscribe(&self, seq: u32) -> bool {
        matches!(self.phase, Phase::Unsubscribing { seq: s, .. } if s == seq)
    }

    fn confirm_subscribed(&mut self) {
        if matches!(self.phase, Phase::Subscribing { .. }) {
            self.phase = Phase::Running;
        }
        if !self.subscribed_line.is_empty() {
            let line = std::mem::take(&mut self.subscribed_line);
            self.status.say(&line);
            crate::notify::ready(&line);
            self.started = Instant::now();
        }
    }

    fn batch(&mut self, batch: Batch<'_>) -> Result<()> {
        // Records only come to a subscriber: this confirms a subscription
        // whose ack may have been lost to an overrun.
        self.confirm_subscribed();
        self.counters.batch_seen(batch.seq, batch.lost);
        for record in batch.records() {
            self.counters.received += 1;
            if self
                .count
                .is_some_and(|limit| self.counters.written >= limit)
            {
                self.counters.not_written += 1;
                continue;
            }
            let line = self.sink.line_buffer();
            let start = line.len();
            if let Err(e) = self.formatter.line(line, record) {
                self.sink.discard_partial(start);
                return Err(match e {
                    LineError::Malformed(cause) => Error::Malformed(cause),
                    LineError::Format(cause) => Error::io("cannot format a record", cause),
                });
            }
            self.counters.written += 1;
            self.sink.line_added().map_err(WriteFailed)?;
            if self
                .count
                .is_some_and(|limit| self.counters.written >= limit)
            {
                self.stop_requested = true;
            }
        }
        Ok(())
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
        let until_deadline = phase_deadline.map(|d| d.saturating_duration_since(now));
        match (until_deadline, self.status.next_refresh()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn check_timers(&mut self) -> Result<()> {
        let now = Instant::now();
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
    fn finish(mut self, outcome: Result<()>, path: &str) -> Result<ExitCode> {
        let flushed = self.sink.finish().map_err(|e| Error::from(WriteFailed(e)));
        // The first error wins; a later flush failure still needs the cut.
        let outcome = outcome.and(flushed);
        if outcome.is_err() {
            let _ = self.sink.truncate_to_committed();
        }
        let failure = match outcome {
            Ok(()) => None,
            Err(Error::Io { context, source }) if context == WRITE_FAILED => {
                if source.kind() == io::ErrorKind::BrokenPipe && path == "stdout" {
                    // The reader went away (`| head`): one quiet line.
                    self.status
                        .say(&format!("nfwatch: cannot write to {path}: {source}"));
                    return Ok(ExitCode::FAILURE);
                }
                Some(format!("cannot write to {path}: {source}"))
            }
            Err(other) => Some(other.to_string()),
        };
        if let Some(failure) = &failure {
            self.status.say(&format!("nfwatch: {failure}"));
        }
        self.counters.written = self.sink.lines_written();
        if !self.subscribed_line.is_empty() {
            // Never subscribed: there is nothing to sum up.
            return Ok(ExitCode::FAILURE);
        }
        for line in summary(&self.counters, path, self.started.elapsed()) {
            self.status.say(&line);
        }
        Ok(if failure.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

const WRITE_FAILED: &str = "write failed";

/// A failed write to the output, told apart from other I/O errors.
struct WriteFailed(io::Error);

impl From<WriteFailed> for Error {
    fn from(WriteFailed(source): WriteFailed) -> Self {
        Error::io(WRITE_FAILED, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribed_line_lists_prefixes() {
        let prefixes: Vec<Prefix> =
            ["10.0.0.1".parse().unwrap(), "fd00::/8".parse().unwrap()].into();
        assert_eq!(
            subscribed_line(&prefixes, 16_777_216),
            "nfwatch: subscribed to 2 prefixes (10.0.0.1/32, fd00::/8), receive buffer 16777216 bytes"
        );
    }
}
