//! `--export`: records as IPFIX (RFC 7011) to collectors, over UDP or TCP.
//! Each destination is a transport session of its own, with its own
//! message stream, templates and counts. Nothing here may stall recording:
//! a UDP datagram that cannot be sent, and a TCP message that finds the
//! queue full, are counted as lost in export, never waited for.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ipfix::element::iana;
use ipfix::{FieldSpec, RecordWriter, Template};
use nfwatch_proto::{BatchEntry, BatchKind, ProtoError};

use crate::cgroup::Cgroups;
use crate::error::{Error, Result};
use crate::writers::{Encoder, MessageSink, MessageStream, MESSAGE_BYTES};

/// Templates go again after this many messages or this long, whichever
/// comes first: ipt-netflow's defaults (refresh-rate, timeout-rate). Over
/// TCP they go once per connection, as RFC 7011 8.1 asks.
const TEMPLATES_EVERY_MESSAGES: u64 = 20;
const TEMPLATES_EVERY: Duration = Duration::from_secs(30 * 60);

/// The options template of the exporter's statistics (RFC 7011 4.3).
const STATS_TEMPLATE: u16 = 259;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A collector that takes nothing for this long is dropped and dialled again.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnecting waits this long, doubling up to BACKOFF_MAX.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// At stop, how long a TCP exporter may still try to hand its queue over.
const DRAIN: Duration = Duration::from_secs(5);

/// IPv4 or IPv6 header and UDP header, beside the message in a datagram.
const UDP_OVERHEAD_V4: usize = 20 + 8;
const UDP_OVERHEAD_V6: usize = 40 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// `udp://HOST:PORT` or `tcp://HOST:PORT` (an IPv6 address in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportUrl {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

impl FromStr for ExportUrl {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("expected udp://HOST:PORT or tcp://HOST:PORT")?;
        let transport = match scheme {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            other => return Err(format!("unknown transport {other:?}: udp or tcp")),
        };
        let (host, port) = rest.rsplit_once(':').ok_or("no :PORT")?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or("unclosed [")?,
            None if host.contains(':') => return Err("an IPv6 address needs brackets".into()),
            None => host,
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {port:?}: expected 1 to 65535"))?;
        Ok(Self {
            transport,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ExportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// What the command line sets for every destination.
#[derive(Debug, Clone, Copy)]
pub struct ExportSettings {
    pub pen: u32,
    pub domain: u32,
    /// The largest IP packet a UDP message makes.
    pub mtu: u16,
    /// Bytes of messages a TCP exporter keeps while its collector is away.
    pub queue: usize,
    /// Packets' records, or flows.
    pub kind: BatchKind,
}

/// One destination's counts, as its summary line and statistics record
/// give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub to: String,
    /// Messages sent (TCP: written to the connection).
    pub messages: u64,
    /// Packet records in them.
    pub records: u64,
    /// Packet records not sent: a datagram that could not be sent, a full
    /// queue, a connection lost under a message, a queue left at stop.
    pub lost: u64,
}

#[derive(Debug, Default)]
struct Counts {
    messages: AtomicU64,
    records: AtomicU64,
    lost: AtomicU64,
}

impl Counts {
    fn sent(&self, records: u64) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
    }

    fn lost(&self, records: u64) {
        self.lost.fetch_add(records, Ordering::Relaxed);
    }

    fn report(&self, to: &ExportUrl) -> ExportReport {
        ExportReport {
            to: to.to_string(),
            messages: self.messages.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

/// Every `--export` destination, fed the same records.
pub struct Exports {
    encoder: Encoder,
    exporters: Vec<Exporter>,
}

impl Exports {
    /// Resolves every destination and starts it: UDP sends its templates
    /// now, TCP dials in the background.
    pub fn start(urls: &[ExportUrl], settings: ExportSettings, cgroups: Cgroups) -> Result<Self> {
        let encoder = Encoder::new(settings.pen, cgroups, settings.kind);
        let exporters = urls
            .iter()
            .map(|url| Exporter::start(url, settings, &encoder))
            .collect::<Result<_>>()?;
        Ok(Self { encoder, exporters })
    }

    /// Before a batch's records: templates and statistics when due.
    pub fn begin_batch(&mut self, kernel_lost: u64) {
        for exporter in &mut self.exporters {
            exporter.kernel_lost = kernel_lost;
            exporter.refresh_if_due(&self.encoder, true);
        }
    }

    /// A packet's record or a flow, to every destination: after the
    /// templates and statistics, when a batch's records have filled
    /// enough messages for them to be due.
    pub fn write(&mut self, entry: BatchEntry) -> std::result::Result<(), ProtoError> {
        for exporter in &mut self.exporters {
            exporter.refresh_if_due(&self.encoder, false);
        }
        let (template, fields) = self.encoder.encode(entry)?;
        let fill = |out: &mut Vec<u8>| out.extend_from_slice(fields);
        for exporter in &mut self.exporters {
            exporter.add(template, &fill);
        }
        Ok(())
    }

    /// A batch's records go out whole.
    pub fn release(&mut self) {
        for exporter in &mut self.exporters {
            exporter.release();
        }
    }

    /// Records whose process was found by the socket's file.
    pub fn by_socket(&self) -> u64 {
        self.encoder.by_socket()
    }

    /// Every destination's last statistics record, its queue handed over
    /// (TCP: for DRAIN at most); their counts.
    pub fn finish(self, kernel_lost: u64) -> Vec<ExportReport> {
        self.exporters
            .into_iter()
            .map(|e| e.finish(kernel_lost))
            .collect()
    }
}

struct Exporter {
    url: ExportUrl,
    domain: u32,
    stream: MessageStream,
    out: Out,
    /// Messages sent, and when, at the last templates (UDP) or statistics.
    refreshed: (u64, Instant),
    /// Lost in the kernel, as of the batch being written: for statistics.
    kernel_lost: u64,
}

impl Exporter {
    fn start(url: &ExportUrl, settings: ExportSettings, encoder: &Encoder) -> Result<Self> {
        let fail = |cause: io::Error| Error::io(format!("--export {url}"), cause);
        let to = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(fail)?
            .next()
            .ok_or_else(|| fail(io::ErrorKind::NotFound.into()))?;
        let counts = Arc::new(Counts::default());
        let mut exporter = match url.transport {
            Transport::Udp => {
                let overhead = match to {
                    SocketAddr::V4(_) => UDP_OVERHEAD_V4,
                    SocketAddr::V6(_) => UDP_OVERHEAD_V6,
                };
                let link = UdpLink::open(to).map_err(fail)?;
                Self::new(
                    url,
                    settings,
                    usize::from(settings.mtu) - overhead,
                    Link::Udp(link),
                    counts,
                )
            }
            Transport::Tcp => {
                // Sent by the connection's thread each time it connects,
                // before anything else.
                let mut preamble = Preamble::default();
                let mut stream = MessageStream::new(MESSAGE_BYTES, settings.domain);
                stream_preamble(&mut stream, encoder, &mut preamble)
                    .and_then(|()| stream.release(&mut preamble))
                    .expect("a buffer takes every message");
                let first = first_connection(to).map_err(fail)?;
                let link = TcpLink::start(to, first, preamble, settings.queue, Arc::clone(&counts));
                Self::new(url, settings, MESSAGE_BYTES, Link::Tcp(link), counts)
            }
        };
        if url.transport == Transport::Udp {
            exporter.refresh(encoder, 0);
            // The templates went first: a host that may not send there
            // (a firewall, the service's IPAddressDeny=) is told now.
            if let Some(cause) = exporter.out.first_error.take() {
                return Err(Error::io(format!("--export {url}: cannot send"), cause));
            }
        }
        Ok(exporter)
    }

    fn new(
        url: &ExportUrl,
        settings: ExportSettings,
        max_len: usize,
        link: Link,
        counts: Arc<Counts>,
    ) -> Self {
        Self {
            url: url.clone(),
            domain: settings.domain,
            stream: MessageStream::new(max_len, settings.domain),
            out: Out {
                pending: 0,
                first_error: None,
                counts,
                link,
            },
            refreshed: (0, Instant::now()),
            kernel_lost: 0,
        }
    }

    /// Templates and statistics, when due by messages sent, or also (@by_time:
    /// once a batch, where the clock is read) by time.
    fn refresh_if_due(&mut self, encoder: &Encoder, by_time: bool) {
        let (at, when) = self.refreshed;
        let messages = self.out.counts.messages.load(Ordering::Relaxed);
        if messages >= at + TEMPLATES_EVERY_MESSAGES
            || (by_time && when.elapsed() >= TEMPLATES_EVERY)
        {
            self.refresh(encoder, self.kernel_lost);
        }
    }

    /// UDP: the templates again, in their own messages; then (TCP too) a
    /// statistics record.
    fn refresh(&mut self, encoder: &Encoder, kernel_lost: u64) {
        self.release();
        if matches!(self.out.link, Link::Udp(_)) {
            // Sending is counted, never fatal: see MessageSink for Out.
            let _ = stream_preamble(&mut self.stream, encoder, &mut self.out);
        }
        self.add_stats(kernel_lost);
        let messages = self.out.counts.messages.load(Ordering::Relaxed);
        self.refreshed = (messages, Instant::now());
    }

    fn add_stats(&mut self, kernel_lost: u64) {
        let counts = &self.out.counts;
        let (messages, records, lost) = (
            counts.messages.load(Ordering::Relaxed),
            counts.records.load(Ordering::Relaxed),
            counts.lost.load(Ordering::Relaxed),
        );
        let domain = self.domain;
        let fill = move |out: &mut Vec<u8>| {
            RecordWriter::new(out)
                .u32(domain)
                .u64(messages)
                .u64(records)
                .u64(kernel_lost)
                .u64(lost);
        };
        let _ = self.stream.add_record(STATS_TEMPLATE, &fill, &mut self.out);
    }

    /// Sending fails only as counted (see MessageSink for Out): an error
    /// here is a record too long for this collector's messages.
    fn add(&mut self, template: u16, fill: &impl Fn(&mut Vec<u8>)) {
        match self.stream.add_record(template, fill, &mut self.out) {
            Ok(()) => self.out.pending += 1,
            Err(_) => self.out.counts.lost(1),
        }
    }

    fn release(&mut self) {
        let _ = self.stream.release(&mut self.out);
    }

    fn finish(mut self, kernel_lost: u64) -> ExportReport {
        self.add_stats(kernel_lost);
        self.release();
        if let Link::Tcp(link) = self.out.link {
            link.stop();
        }
        self.out.counts.report(&self.url)
    }
}

/// The templates a stream starts with: the records' (and the type
/// records of their elements), and the statistics' options template.
fn stream_preamble(
    stream: &mut MessageStream,
    encoder: &Encoder,
    to: &mut impl MessageSink,
) -> io::Result<()> {
    encoder.preamble(stream, to)?;
    stream.add_template(&stats_template(), to)
}

/// RFC 7011 4.3's Exporting Process Reliability Statistics, scoped by the
/// observation domain, with the packets lost in the kernel as the
/// metering process's ignored packets (4.2).
fn stats_template() -> Template {
    let iana = FieldSpec::iana;
    Template::options(
        STATS_TEMPLATE,
        1,
        vec![
            iana(iana::OBSERVATION_DOMAIN_ID, 4),
            iana(iana::EXPORTED_MESSAGE_TOTAL_COUNT, 8),
            iana(iana::EXPORTED_FLOW_RECORD_TOTAL_COUNT, 8),
            iana(iana::IGNORED_PACKET_TOTAL_COUNT, 8),
            iana(iana::NOT_SENT_FLOW_TOTAL_COUNT, 8),
        ],
    )
}

/// Where an exporter's finished messages go, counting the packet records
/// added since the last one (the statistics and type records are not
/// packets).
struct Out {
    pending: u64,
    /// Why the first datagram that could not be sent was not.
    first_error: Option<io::Error>,
    counts: Arc<Counts>,
    link: Link,
}

enum Link {
    Udp(UdpLink),
    Tcp(TcpLink),
}

impl MessageSink for Out {
    fn message(&mut self, bytes: &[u8], _records: u32) -> io::Result<()> {
        let packets = std::mem::take(&mut self.pending);
        match &mut self.link {
            Link::Udp(link) => match link.socket.send_to(bytes, link.to) {
                Ok(_) => self.counts.sent(packets),
                Err(cause) => {
                    self.first_error.get_or_insert(cause);
                    self.counts.lost(packets);
                }
            },
            Link::Tcp(link) => link.push(bytes, packets, &self.counts),
        }
        Ok(())
    }
}

struct UdpLink {
    socket: UdpSocket,
    to: SocketAddr,
}

impl UdpLink {
    fn open(to: SocketAddr) -> io::Result<Self> {
        let any: SocketAddr = match to {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(any)?;
        // Never stall recording for long on a full socket buffer.
        socket.set_write_timeout(Some(Duration::from_millis(100)))?;
        Ok(Self { socket, to })
    }
}

/// A message waiting for the TCP connection, and the packet records in it.
struct Queued {
    bytes: Vec<u8>,
    packets: u64,
}

/// A thread that keeps a connection to the collector and writes the
/// messages queued for it; the queue holds at most `limit` bytes.
struct TcpLink {
    queue: mpsc::Sender<Queued>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    stop_by: Arc<OnceLock<Instant>>,
    thread: JoinHandle<()>,
}

impl TcpLink {
    fn start(
        to: SocketAddr,
        first: Option<TcpStream>,
        preamble: Preamble,
        limit: usize,
        counts: Arc<Counts>,
    ) -> Self {
        let (queue, messages) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let stop_by = Arc::new(OnceLock::new());
        let mut connection = Connection {
            to,
            preamble,
            fresh: first.is_some(),
            stream: first,
            backoff: BACKOFF_FIRST,
            sequence_offset: 0,
            queued: Arc::clone(&queued),
            stop_by: Arc::clone(&stop_by),
            counts,
        };
        let thread = thread::Builder::new()
            .name("nfwatch-export".into())
            .spawn(move || connection.run(&messages))
            .expect("a thread can be started");
        Self {
            queue,
            queued,
            limit,
            stop_by,
            thread,
        }
    }

    fn push(&mut self, bytes: &[u8], packets: u64, counts: &Counts) {
        let fits = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + bytes.len() <= self.limit).then_some(queued + bytes.len())
            })
            .is_ok();
        let message = Queued {
            bytes: bytes.to_vec(),
            packets,
        };
        if !fits || self.queue.send(message).is_err() {
            counts.lost(packets);
        }
    }

    /// No more messages; the thread hands over what is queued, for DRAIN
    /// at most, and ends.
    fn stop(self) {
        let _ = self.stop_by.set(Instant::now() + DRAIN);
        drop(self.queue);
        let _ = self.thread.join();
    }
}

/// The thread's side of a TcpLink.
struct Connection {
    to: SocketAddr,
    /// The templates, sent first on every connection.
    preamble: Preamble,
    stream: Option<TcpStream>,
    /// Connected since the last message: the templates go first.
    fresh: bool,
    backoff: Duration,
    /// Data records this thread sent in preambles (type records), added
    /// to every message's sequence number so that the collector sees the
    /// numbers run on.
    sequence_offset: u32,
    queued: Arc<AtomicUsize>,
    stop_by: Arc<OnceLock<Instant>>,
    counts: Arc<Counts>,
}

impl Connection {
    fn run(&mut self, messages: &mpsc::Receiver<Queued>) {
        while let Ok(mut message) = messages.recv() {
            self.queued.fetch_sub(message.bytes.len(), Ordering::AcqRel);
            if self.connected() {
                self.send(&mut message);
            } else {
                self.counts.lost(message.packets);
            }
        }
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    }

    /// Whether there is a connection, dialling (with backoff) until there
    /// is one or the time to stop has passed.
    fn connected(&mut self) -> bool {
        if self.stream.as_ref().is_some_and(peer_left) {
            self.stream = None;
        }
        while self.stream.is_none() {
            let give_up = self.stop_by.get().copied();
            if give_up.is_some_and(|at| Instant::now() >= at) {
                return false;
            }
            match connect(self.to) {
                Ok(stream) => {
                    self.stream = Some(stream);
                    self.fresh = true;
                    self.backoff = BACKOFF_FIRST;
                }
                Err(_) => {
                    let wait = give_up.map_or(self.backoff, |at| {
                        self.backoff
                            .min(at.saturating_duration_since(Instant::now()))
                    });
                    thread::sleep(wait);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        true
    }

    /// Writes `message` (the templates first on a new connection); a
    /// connection that fails under it loses it.
    fn send(&mut self, message: &mut Queued) {
        match self.write(message) {
            Ok(()) => self.counts.sent(message.packets),
            Err(_) => {
                self.stream = None;
                self.counts.lost(message.packets);
            }
        }
    }

    fn write(&mut self, message: &mut Queued) -> io::Result<()> {
        let stream = self.stream.as_mut().expect("connected");
        let sequence = header_sequence(&message.bytes);
        if self.fresh {
            stamp(
                &mut self.preamble.bytes,
                sequence.wrapping_add(self.sequence_offset),
            );
            stream.write_all(&self.preamble.bytes)?;
            self.sequence_offset = self.sequence_offset.wrapping_add(self.preamble.records);
            self.fresh = false;
        }
        stamp(
            &mut message.bytes,
            sequence.wrapping_add(self.sequence_offset),
        );
        stream.write_all(&message.bytes)
    }
}

/// A message's sequence number (RFC 7011 3.1).
fn header_sequence(message: &[u8]) -> u32 {
    u32::from_be_bytes(message[8..12].try_into().expect("a message has a header"))
}

/// A message's export time made now, and its sequence number `sequence`.
fn stamp(message: &mut [u8], sequence: u32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    message[4..8].copy_from_slice(&now.to_be_bytes());
    message[8..12].copy_from_slice(&sequence.to_be_bytes());
}

/// The messages a TCP connection starts with, and the data records (type
/// records) in them.
#[derive(Default)]
struct Preamble {
    bytes: Vec<u8>,
    records: u32,
}

impl MessageSink for Preamble {
    fn message(&mut self, bytes: &[u8], records: u32) -> io::Result<()> {
        assert!(self.bytes.is_empty(), "the templates fit one TCP message");
        self.bytes.extend_from_slice(bytes);
        self.records += records;
        Ok(())
    }
}

/// A first try at connecting, at start: a collector not there yet is dialled
/// again in the background, but a host that may not connect there (the
/// service's RestrictAddressFamilies= or IPAddressDeny=, a firewall's
/// reject) is an error now.
fn first_connection(to: SocketAddr) -> io::Result<Option<TcpStream>> {
    match connect(to) {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if e.raw_os_error().is_some_and(|errno| {
                [libc::EPERM, libc::EACCES, libc::EAFNOSUPPORT].contains(&errno)
            }) =>
        {
            Err(e)
        }
        Err(_) => Ok(None),
    }
}

fn connect(to: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Whether the collector closed the connection (collectors never send over
/// IPFIX's TCP: anything readable is its end).
fn peer_left(stream: &TcpStream) -> bool {
    let mut poll = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    if ready <= 0 {
        return false;
    }
    let mut byte = [0u8; 1];
    poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
        || matches!((&*stream).read(&mut byte), Ok(0) | Err(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writers::ipfix_fixture;
    use netflow_parser::variable_versions::ipfix::lookup::IPFixField;
    use netflow_parser::variable_versions::ipfix::{FlowSetBody, IPFix};
    use netflow_parser::{NetflowPacket, NetflowParser};
    use std::net::TcpListener;

    fn settings(mtu: u16, queue: usize) -> ExportSettings {
        ExportSettings {
            pen: 32473,
            domain: 7,
            mtu,
            queue,
            kind: BatchKind::Records,
        }
    }

    #[test]
    fn urls_parse_and_print_back() {
        for text in [
            "udp://192.0.2.9:4739",
            "tcp://collector.example:9995",
            "udp://[2001:db8::9]:4739",
        ] {
            let url: ExportUrl = text.parse().unwrap();
            assert_eq!(url.to_string(), text);
        }
        let bad = |text: &str| text.parse::<ExportUrl>().unwrap_err();
        assert!(bad("192.0.2.9:4739").contains("udp://HOST:PORT"));
        assert!(bad("sctp://c:4739").contains("unknown transport \"sctp\""));
        assert!(bad("udp://c").contains("no :PORT"));
        assert!(bad("udp://c:0").contains("port \"0\""));
        assert!(bad("udp://c:65536").contains("port \"65536\""));
        assert!(bad("udp://2001:db8::9:4739").contains("brackets"));
        assert!(bad("udp://:4739").contains("no host"));
    }

    /// Every data record of `messages`, by template: (template, fields).
    fn decode(messages: &[Vec<u8>]) -> Vec<(u16, Vec<(IPFixField, String)>)> {
        let mut parser = NetflowParser::default();
        let mut records = Vec::new();
        for message in messages {
            let result = parser.parse_bytes(message);
            assert!(result.error.is_none(), "{:?}", result.error);
            for packet in result.packets {
                let NetflowPacket::IPFix(IPFix { flowsets, .. }) = packet else {
                    panic!("not IPFIX");
                };
                for set in flowsets {
                    let id = set.header.header_id;
                    let rows = match set.body {
                        FlowSetBody::Data(data) => data.fields,
                        FlowSetBody::OptionsData(data) => data.fields,
                        _ => continue,
                    };
                    records.extend(rows.into_iter().map(|row| {
                        (
                            id,
                            row.into_iter()
                                .map(|(f, v)| (f, format!("{v:?}")))
                                .collect(),
                        )
                    }));
                }
            }
        }
        records
    }

    fn value(record: &[(IPFixField, String)], id: u16) -> &str {
        let wanted = IPFixField::new(id, None);
        &record.iter().find(|(f, _)| *f == wanted).unwrap().1
    }

    /// Over UDP: every datagram within the MTU, the templates before the
    /// data and again after TEMPLATES_EVERY_MESSAGES, and the statistics
    /// record at the end counting what was sent.
    #[test]
    fn udp_messages_fit_the_mtu_and_carry_templates_and_statistics() {
        let (_dir, records, collector, mut exports) = udp_exports_576();
        let batches = 30;
        for _ in 0..batches {
            exports.begin_batch(3);
            for record in records {
                exports.write(BatchEntry::Record(record)).unwrap();
            }
            exports.release();
        }
        let reports = exports.finish(3);
        let datagrams = received(&collector, 576);
        let decoded = decode(&datagrams);
        let packets = decoded
            .iter()
            .filter(|(id, _)| *id == 256 || *id == 257)
            .count();
        assert_eq!(packets, 2 * batches);
        let templates_sent = datagrams
            .iter()
            .filter(|d| starts_with_templates(d))
            .count();
        assert!(templates_sent >= 2, "templates {templates_sent} times");
        let stats: Vec<_> = decoded
            .iter()
            .filter(|(id, _)| *id == STATS_TEMPLATE)
            .collect();
        let last = &stats.last().unwrap().1;
        assert_eq!(
            value(last, iana::EXPORTED_FLOW_RECORD_TOTAL_COUNT),
            "DataNumber(U64(60))"
        );
        assert_eq!(
            value(last, iana::IGNORED_PACKET_TOTAL_COUNT),
            "DataNumber(U64(3))"
        );
        assert_eq!(
            value(last, iana::NOT_SENT_FLOW_TOTAL_COUNT),
            "DataNumber(U64(0))"
        );
        let report = &reports[0];
        assert_eq!((report.records, report.lost), (60, 0));
        assert_eq!(report.messages, datagrams.len() as u64);
    }

    /// One batch filling many messages: the templates still go again
    /// every TEMPLATES_EVERY_MESSAGES messages.
    #[test]
    fn templates_go_again_within_a_long_batch() {
        let (_dir, records, collector, mut exports) = udp_exports_576();
        exports.begin_batch(0);
        for _ in 0..100 {
            for record in records {
                exports.write(BatchEntry::Record(record)).unwrap();
            }
        }
        exports.release();
        exports.finish(0);
        let datagrams = received(&collector, 576);
        assert!(datagrams.len() > 3 * TEMPLATES_EVERY_MESSAGES as usize);
        let mut since = 0;
        for datagram in &datagrams {
            since = if starts_with_templates(datagram) {
                0
            } else {
                since + 1
            };
            assert!(
                since <= TEMPLATES_EVERY_MESSAGES,
                "{since} messages without templates"
            );
        }
    }

    /// The fixture's records (their cgroups in the directory kept), a
    /// collector's socket on loopback, and an export to it over a 576-byte
    /// MTU.
    fn udp_exports_576() -> (
        tempfile::TempDir,
        [nfwatch_proto::RecordBytes<'static>; 2],
        UdpSocket,
        Exports,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (cgroups, records) = ipfix_fixture(dir.path());
        let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
        collector
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let url: ExportUrl = format!("udp://{}", collector.local_addr().unwrap())
            .parse()
            .unwrap();
        let exports = Exports::start(&[url], settings(576, 1 << 20), cgroups).unwrap();
        (dir, records, collector, exports)
    }

    /// The datagrams `collector` got, each checked to fit `mtu`.
    fn received(collector: &UdpSocket, mtu: usize) -> Vec<Vec<u8>> {
        let mut datagrams = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = collector.recv(&mut buf) {
            assert!(n <= mtu - 28, "{n} bytes");
            datagrams.push(buf[..n].to_vec());
        }
        datagrams
    }

    /// Whether a message's first set is a template set or an options
    /// template set (the type records' template comes first).
    fn starts_with_templates(message: &[u8]) -> bool {
        matches!(message[16..18], [0, 2] | [0, 3])
    }

    /// Reads whole messages from `stream` until `records` packet records
    /// (or the end of the stream).
    fn read_messages(stream: &mut TcpStream, records: usize) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        let packets = |m: &[Vec<u8>]| {
            decode(m)
                .iter()
                .filter(|(id, _)| *id == 256 || *id == 257)
                .count()
        };
        while packets(&messages) < records {
            let mut header = [0u8; 16];
            if stream.read_exact(&mut header).is_err() {
                break;
            }
            let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let mut message = header.to_vec();
            message.resize(len, 0);
            stream.read_exact(&mut message[16..]).unwrap();
            messages.push(message);
        }
        messages
    }

    /// Over TCP: a collector that goes away and comes back gets the
    /// templates again on the new connection; what was not sent is counted,
    /// and sent plus lost is every record.
    #[test]
    fn tcp_reconnects_and_counts_what_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (cgroups, records) = ipfix_fixture(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let url: ExportUrl = format!("tcp://{addr}").parse().unwrap();
        let mut exports = Exports::start(&[url], settings(1400, 65536), cgroups).unwrap();
        let batch = |exports: &mut Exports, n: usize| {
            for _ in 0..n {
                exports.begin_batch(0);
                for record in records {
                    exports.write(BatchEntry::Record(record)).unwrap();
                }
                exports.release();
            }
        };
        batch(&mut exports, 5);
        let (mut first, _) = listener.accept().unwrap();
        let got_first = read_messages(&mut first, 10);
        assert!(starts_with_templates(&got_first[0]), "templates first");
        drop(first);
        drop(listener);
        // The collector is away: these wait in the queue or are lost.
        batch(&mut exports, 2000);
        let listener = TcpListener::bind(addr).unwrap();
        let reports = thread::scope(|s| {
            let finishing = s.spawn(|| exports.finish(0));
            let (mut second, _) = listener.accept().unwrap();
            let got_second = read_messages(&mut second, usize::MAX);
            (finishing.join().unwrap(), got_second)
        });
        let (reports, got_second) = reports;
        let count = |m: &[Vec<u8>]| {
            decode(m)
                .iter()
                .filter(|(id, _)| *id == 256 || *id == 257)
                .count() as u64
        };
        assert!(starts_with_templates(&got_second[0]), "templates again");
        let report = &reports[0];
        assert_eq!(count(&got_first) + count(&got_second), report.records);
        assert_eq!(report.records + report.lost, 2 * 2005);
        assert!(
            report.lost > 0,
            "a 64 KiB queue holds fewer than 4000 records"
        );
        // The sequence numbers run on across connections and losses.
        let last = got_second.last().unwrap();
        let sequence = header_sequence(last);
        assert!(sequence >= 4010, "{sequence}");
    }
}
