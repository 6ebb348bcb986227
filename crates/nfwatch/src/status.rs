//! Running counts: the live status line, SIGUSR1 reports and the summary.

use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use nfwatch_proto::Stats;

use crate::export::ExportReport;

/// Everything counted while watching.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub received: u64,
    pub written: u64,
    /// Received after --count was reached.
    pub not_written: u64,
    /// Sum of NFWATCH_A_BATCH_LOST.
    pub batch_lost: u64,
    /// ENOBUFS errors from recv.
    pub overruns: u64,
    /// Batches missing from the sequence.
    pub seq_gaps: u64,
    /// Records or messages from the kernel that broke the contract, skipped.
    pub malformed: u64,
    /// Records written with the process holding their socket's file, which
    /// the kernel had not seen send (counted among its unattributed).
    pub by_socket: u64,
    pub last_seq: Option<u64>,
    /// Our subscription's final counters (UNSUBSCRIBE reply or SHUTDOWN).
    pub final_own: Option<Stats>,
    /// What each `--export` destination sent and lost.
    pub exports: Vec<ExportReport>,
    /// `nfwatch flows`: what the flows written hold. None: packets.
    pub flows: Option<FlowCounts>,
}

/// The sums over the flows written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowCounts {
    /// Packets, GSO segments counted.
    pub packets: u64,
    /// Packets as the hook saw them (what the kernel's counters count).
    pub sends: u64,
}

impl Counters {
    pub fn batch_seen(&mut self, seq: u64, lost: u64) {
        if let Some(last) = self.last_seq {
            self.seq_gaps += seq.saturating_sub(last).saturating_sub(1);
        }
        self.last_seq = Some(seq);
        self.batch_lost += lost;
    }

    /// Records lost in the kernel: its final count when known.
    pub fn lost(&self) -> u64 {
        self.final_own.map_or(self.batch_lost, |own| own.lost)
    }

    /// A flow was written: its packets count.
    pub fn flow_written(&mut self, entry: nfwatch_proto::BatchEntry) {
        if let (Some(flows), nfwatch_proto::BatchEntry::Flow(flow)) = (self.flows.as_mut(), entry) {
            flows.packets += flow.packets();
            flows.sends += flow.sends();
        }
    }

    /// What is written: records, or flows.
    pub fn unit(&self) -> &'static str {
        match self.flows {
            Some(_) => "flows",
            None => "records",
        }
    }

    /// What the kernel counts (lost, matched): records, or packets.
    fn kernel_unit(&self) -> &'static str {
        match self.flows {
            Some(_) => "packets",
            None => "records",
        }
    }
}

/// The summary lines, without trailing newlines.
pub fn summary(counters: &Counters, path: &str, elapsed: Duration) -> Vec<String> {
    let (unit, kernel_unit) = (counters.unit(), counters.kernel_unit());
    let packets = counters
        .flows
        .map(|flows| format!(" ({} packets)", flows.packets))
        .unwrap_or_default();
    let mut lines = vec![
        format!(
            "nfwatch: wrote {} {unit}{packets} to {path} in {:.3} s",
            counters.written,
            elapsed.as_secs_f64()
        ),
        format!(
            "nfwatch: lost {} {kernel_unit} in the kernel, {} socket overruns (ENOBUFS), {} batch sequence gaps",
            counters.lost(),
            counters.overruns,
            counters.seq_gaps
        ),
    ];
    if let Some(own) = counters.final_own {
        lines.push(format!(
            "nfwatch: kernel counted {} matched, {} delivered, {} lost",
            own.matched, own.delivered, own.lost
        ));
        lines.push(match counters.flows {
            None => format!(
                "nfwatch: {} records with no known sending process in the kernel, {} of them written with the process holding their socket",
                own.unattributed, counters.by_socket
            ),
            Some(_) => format!(
                "nfwatch: {} packets with no known sending process in the kernel, {} flows written with the process holding their socket",
                own.unattributed, counters.by_socket
            ),
        });
        if counters.flows.is_some() {
            lines.push(format!(
                "nfwatch: {} flows ended in the kernel, {} of them evicted (table full)",
                own.flows, own.flows_evicted
            ));
        }
    }
    for export in &counters.exports {
        lines.push(format!(
            "nfwatch: exported {} {unit} in {} IPFIX messages to {}, lost {} in export",
            export.records, export.messages, export.to, export.lost
        ));
    }
    if counters.malformed > 0 {
        lines.push(format!(
            "nfwatch: skipped {} malformed records or messages from the kernel",
            counters.malformed
        ));
    }
    if counters.not_written > 0 {
        lines.push(format!(
            "nfwatch: {} records not written (--count reached)",
            counters.not_written
        ));
    }
    lines
}

/// One line for SIGUSR1, like tcpdump's.
pub fn progress_line(counters: &Counters) -> String {
    format!(
        "nfwatch: {} {} received, {} written, {} {}lost in the kernel, {} socket overruns, {} batch sequence gaps",
        counters.received,
        counters.unit(),
        counters.written,
        counters.lost(),
        if counters.flows.is_some() { "packets " } else { "" },
        counters.overruns,
        counters.seq_gaps
    )
}

const REFRESH: Duration = Duration::from_millis(250);

/// Whether the live status line may be shown: stderr is a terminal that
/// records are not printed to.
pub fn live_line_allowed(stderr: Option<u64>, records_to: Option<u64>) -> bool {
    stderr.is_some() && stderr != records_to
}

/// The terminal `fd` is, as its device number; None when it is not one.
pub fn terminal_of(fd: impl AsFd) -> Option<u64> {
    let fd = fd.as_fd();
    if !fd.is_terminal() {
        return None;
    }
    let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    file.metadata().ok().map(|m| m.rdev())
}

/// Writes to stderr; the live line (only on a terminal) is cleared before
/// any other message so they never mix.
pub struct Status {
    live: bool,
    /// --quiet: no start, live or summary lines.
    quiet: bool,
    shown: bool,
    last_refresh: Instant,
    received_at_refresh: u64,
}

impl Status {
    /// `records_to`: the terminal records are printed to, if any.
    pub fn new(quiet: bool, records_to: Option<u64>) -> Self {
        Self {
            live: !quiet && live_line_allowed(terminal_of(io::stderr()), records_to),
            quiet,
            shown: false,
            last_refresh: Instant::now(),
            received_at_refresh: 0,
        }
    }

    /// How long poll may sleep before the live line wants refreshing.
    pub fn next_refresh(&self) -> Option<Duration> {
        self.live
            .then(|| REFRESH.saturating_sub(self.last_refresh.elapsed()))
    }

    pub fn refresh(&mut self, counters: &Counters) {
        let elapsed = self.last_refresh.elapsed();
        if !self.live || elapsed < REFRESH {
            return;
        }
        let rate = (counters.received - self.received_at_refresh) as f64 / elapsed.as_secs_f64();
        let _ = write!(
            io::stderr(),
            "\r\x1b[Knfwatch: {rate:.0} {}/s, {} total, {} lost",
            counters.unit(),
            counters.received,
            counters.lost()
        );
        self.shown = true;
        self.last_refresh = Instant::now();
        self.received_at_refresh = counters.received;
    }

    /// A start or summary line: not with --quiet.
    pub fn note(&mut self, line: &str) {
        if !self.quiet {
            self.say(line);
        }
    }

    /// A warning or error: always.
    pub fn say(&mut self, line: &str) {
        self.clear();
        let _ = writeln!(io::stderr(), "{line}");
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = write!(io::stderr(), "\r\x1b[K");
            self.shown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_final_kernel_counts_and_balances() {
        let mut counters = Counters {
            received: 12,
            written: 10,
            not_written: 2,
            batch_lost: 3,
            overruns: 1,
            by_socket: 3,
            ..Counters::default()
        };
        counters.batch_seen(1, 0);
        counters.batch_seen(4, 0);
        assert_eq!(counters.seq_gaps, 2);
        counters.final_own = Some(Stats {
            matched: 17,
            delivered: 12,
            lost: 5,
            unattributed: 4,
            ..Stats::default()
        });
        let lines = summary(&counters, "out.txt", Duration::from_millis(1234));
        assert_eq!(
            lines,
            [
                "nfwatch: wrote 10 records to out.txt in 1.234 s",
                "nfwatch: lost 5 records in the kernel, 1 socket overruns (ENOBUFS), 2 batch sequence gaps",
                "nfwatch: kernel counted 17 matched, 12 delivered, 5 lost",
                "nfwatch: 4 records with no known sending process in the kernel, 3 of them written with the process holding their socket",
                "nfwatch: 2 records not written (--count reached)",
            ]
        );
        let own = counters.final_own.unwrap();
        assert_eq!(
            counters.written + counters.lost() + counters.not_written,
            own.matched
        );
    }

    #[test]
    fn live_line_only_on_a_terminal_records_do_not_go_to() {
        assert!(live_line_allowed(Some(5), None));
        assert!(live_line_allowed(Some(5), Some(6)));
        assert!(!live_line_allowed(Some(5), Some(5)));
        assert!(!live_line_allowed(None, None));
    }

    #[test]
    fn summary_counts_malformed() {
        let counters = Counters {
            malformed: 2,
            ..Counters::default()
        };
        let lines = summary(&counters, "x", Duration::ZERO);
        assert_eq!(
            lines.last().unwrap(),
            "nfwatch: skipped 2 malformed records or messages from the kernel"
        );
    }

    #[test]
    fn summary_without_kernel_counts_uses_batch_losses() {
        let mut counters = Counters::default();
        counters.batch_seen(5, 2);
        counters.batch_seen(6, 1);
        counters.written = 4;
        let lines = summary(&counters, "stdout", Duration::ZERO);
        assert_eq!(
            lines,
            [
                "nfwatch: wrote 4 records to stdout in 0.000 s",
                "nfwatch: lost 3 records in the kernel, 0 socket overruns (ENOBUFS), 0 batch sequence gaps",
            ]
        );
    }

    #[test]
    fn flow_summary_says_flows_and_packets() {
        let mut counters = Counters {
            written: 4,
            by_socket: 1,
            flows: Some(FlowCounts {
                packets: 30,
                sends: 20,
            }),
            ..Counters::default()
        };
        counters.batch_seen(1, 2);
        counters.final_own = Some(Stats {
            matched: 22,
            delivered: 20,
            lost: 2,
            unattributed: 3,
            flows: 5,
            flows_evicted: 1,
            ..Stats::default()
        });
        counters.exports.push(ExportReport {
            to: "udp://192.0.2.9:4739".into(),
            messages: 1,
            records: 4,
            lost: 0,
        });
        let lines = summary(&counters, "flows.csv", Duration::from_millis(2000));
        assert_eq!(
            lines,
            [
                "nfwatch: wrote 4 flows (30 packets) to flows.csv in 2.000 s",
                "nfwatch: lost 2 packets in the kernel, 0 socket overruns (ENOBUFS), 0 batch sequence gaps",
                "nfwatch: kernel counted 22 matched, 20 delivered, 2 lost",
                "nfwatch: 3 packets with no known sending process in the kernel, 1 flows written with the process holding their socket",
                "nfwatch: 5 flows ended in the kernel, 1 of them evicted (table full)",
                "nfwatch: exported 4 flows in 1 IPFIX messages to udp://192.0.2.9:4739, lost 0 in export",
            ]
        );
        assert_eq!(
            progress_line(&counters),
            "nfwatch: 0 flows received, 4 written, 2 packets lost in the kernel, 0 socket overruns, 0 batch sequence gaps"
        );
    }
}
