//! The CLI's output as a person, a pipe or logrotate meets it: lines that
//! come while traffic is slow, files left alone by a failed start, reopening
//! on SIGHUP, odd device names in every format, a module of another
//! protocol version, malformed records, the live status line.

use super::genl::Genl;
use super::net::*;
use super::nfwatch::{read_records, SummaryJson, Watcher, DEADLINE, SUBSCRIBED};
use super::proc::Spawned;
use super::traffic::{udp_batch, Flood};
use super::{insmod, rmmod, Ctx};
use crate::util::{capture, run, stdout_of, wait_until};
use anyhow::{bail, ensure, Context, Result};
use nfwatch_proto::{record_layout, Family, PaddedName, Record, NFWATCH_A_BATCH_LOST};
use nfwatch_proto::{RawAttr, NFWATCH_A_BATCH_SEQ, NFWATCH_A_RECORDS, NFWATCH_A_RECORD_SIZE};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long a line may take from its packet to the reader, at most, in
/// these tests: the CLI's 0.1 s (pipe) or 1 s (file), the module's 5 ms
/// batch timer, and TCG's slowness. Before the CLI wrote on a timer, lines
/// came only at exit or every 256 KiB.
const LINE_DEADLINE: Duration = Duration::from_secs(5);

/// SIGHUPs in the rotation test.
const ROTATIONS: usize = 10;

/// `nfwatch` with `args`, run to its end.
fn nfwatch(ctx: &Ctx, args: &[&OsStr]) -> Result<Output> {
    capture(Command::new(&ctx.guest.nfwatch).args(args))
}

fn os(args: &[&'static str]) -> Vec<&'static OsStr> {
    os_of(args)
}

fn os_of<'a>(args: &[&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(|a| OsStr::new(*a)).collect()
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One datagram from `src` to `dst`:`port`.
fn send_one(src: &str, dst: &str, port: u16) -> Result<()> {
    udp_batch(src, dst, port, 1, 16).map(drop)
}

/// Time from a datagram to its line, one datagram a second, through a pipe
/// (stdout) and into a regular file.
pub fn first_line_latency(ctx: &Ctx) -> Result<()> {
    let summary = ctx.path("pipe.summary.json");
    let mut cmd = Command::new(&ctx.guest.nfwatch);
    cmd.args(["watch", "--format", "jsonl", "--src", WATCHED4])
        .arg("--summary-json")
        .arg(&summary);
    let mut pipe = Spawned::start(&mut cmd, &ctx.path("pipe.log"))?;
    pipe.wait_line("the `subscribed to` line", DEADLINE, |l| {
        l.starts_with(SUBSCRIBED)
    })?;
    let file = Watcher::start_args(
        ctx,
        "file",
        &[WATCHED4],
        "jsonl",
        &ctx.path("file.jsonl"),
        &[],
    )?;
    let mut latencies = Vec::new();
    for port in 7000..7003 {
        let sent = Instant::now();
        send_one(WATCHED4, PEER4, port)?;
        let wanted = format!("\"dport\":{port},");
        pipe.wait_line("the datagram's line on stdout", LINE_DEADLINE, |l| {
            l.contains(&wanted)
        })?;
        let piped = sent.elapsed();
        wait_until("the datagram's line in the file", LINE_DEADLINE, || {
            let text = std::fs::read_to_string(&file.out).unwrap_or_default();
            Ok(text.contains(&wanted).then_some(()))
        })?;
        latencies.push((piped, sent.elapsed()));
        // One datagram a second: slow traffic, as a person watching makes.
        std::thread::sleep(Duration::from_secs(1).saturating_sub(sent.elapsed()));
    }
    ctx.log(&format!(
        "datagram to line (pipe, file), one a second: {:?}",
        latencies
    ));
    let file_summary = file.stop()?;
    pipe.signal(libc::SIGTERM)?;
    pipe.wait_success(DEADLINE)?;
    ensure!(file_summary.written == 3, "file: {}", file_summary.text);
    let json = SummaryJson::read(&summary)?;
    ensure!(json.written == 3, "pipe: {json:?}");
    Ok(())
}

/// Fails unless `out` is a failed start: exit 1, no `subscribed` line, and
/// every word of `words` in its output.
fn failed_start(what: &str, out: &Output, words: &[&str]) -> Result<()> {
    let text = text_of(out);
    ensure!(
        out.status.code() == Some(1),
        "{what}: expected exit 1, got {}: {text}",
        out.status
    );
    ensure!(
        !text.contains(SUBSCRIBED),
        "{what}: says subscribed: {text}"
    );
    for word in words {
        ensure!(text.contains(word), "{what}: no `{word}` in: {text}");
    }
    Ok(())
}

/// -o FILE is not touched by a start that fails before the subscription
/// is acknowledged: module not loaded, or SUBSCRIBE refused.
pub fn failed_start_keeps_file(ctx: &Ctx) -> Result<()> {
    let dir = ctx.path("");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    let kept = ctx.path("kept.csv");
    let content = b"2026-01-01T00:00:00.000000000Z,an earlier capture\n";
    std::fs::write(&kept, content)?;
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o666))?;
    let missing = ctx.path("missing.csv");
    fn watch(out: &Path) -> Vec<&OsStr> {
        let mut args = os(&["watch", "--format", "csv", "--src", WATCHED4, "-o"]);
        args.push(out.as_os_str());
        args
    }

    rmmod()?;
    let unloaded = nfwatch(ctx, &watch(&kept));
    let unloaded_missing = nfwatch(ctx, &watch(&missing));
    insmod(&ctx.guest.module)?;
    failed_start(
        "module not loaded",
        &unloaded?,
        &["not loaded", "modprobe nfwatch", "insmod kmod/nfwatch.ko"],
    )?;
    failed_start("module not loaded", &unloaded_missing?, &[])?;
    ensure!(!missing.exists(), "{} was created", missing.display());
    ensure!(
        std::fs::read(&kept)? == content,
        "module not loaded: the file changed"
    );

    // SUBSCRIBE needs CAP_NET_ADMIN: the kernel refuses it for nobody.
    let refused = capture(super::as_nobody(&ctx.guest.nfwatch).args(watch(&kept)))?;
    failed_start(
        "SUBSCRIBE refused",
        &refused,
        &["SUBSCRIBE", "not permitted"],
    )?;
    ensure!(
        std::fs::read(&kept)? == content,
        "SUBSCRIBE refused: the file changed"
    );
    ctx.log("module not loaded, SUBSCRIBE refused: exit 1, the file byte-identical");
    Ok(())
}

/// Moves `file` to `to`, sends SIGHUP, and waits until the CLI has made
/// `file` again and written a record beyond `header` to it.
fn rotate(
    watcher: &Watcher,
    to: &Path,
    header: &str,
    traffic: impl Fn() -> Result<()>,
) -> Result<()> {
    std::fs::rename(&watcher.out, to)?;
    // SAFETY: kill(2) on our running child.
    ensure!(
        unsafe { libc::kill(watcher.pid(), libc::SIGHUP) } == 0,
        "cannot send SIGHUP"
    );
    wait_until("the file reopened with a record", DEADLINE, || {
        traffic()?;
        let text = std::fs::read_to_string(&watcher.out).unwrap_or_default();
        Ok((text.len() > header.len() && text.starts_with(header)).then_some(()))
    })
}

/// The lines of `files` in order; fails unless each file is whole and
/// begins with `header`.
fn lines_of(files: &[PathBuf], header: &str) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        // Empty when no record arrived before the file was moved away.
        ensure!(
            text.is_empty() || text.ends_with('\n'),
            "{} does not end with a whole line",
            file.display()
        );
        let body = text
            .strip_prefix(header)
            .with_context(|| format!("{} does not begin with {header:?}", file.display()))?;
        lines.extend(body.lines().map(str::to_string));
    }
    Ok(lines)
}

/// A jsonl watcher of WATCHED4 writing `<tag>.jsonl` and, at its end,
/// `<tag>.summary.json` (returned).
fn watch_with_summary(ctx: &Ctx, tag: &str, extra: &[&str]) -> Result<(Watcher, PathBuf)> {
    let summary = ctx.path(&format!("{tag}.summary.json"));
    let summary_arg = summary.to_string_lossy().into_owned();
    let args = [&["--summary-json", summary_arg.as_str()][..], extra].concat();
    let out = ctx.path(&format!("{tag}.jsonl"));
    let watcher = Watcher::start_args(ctx, tag, &[WATCHED4], "jsonl", &out, &args)?;
    Ok((watcher, summary))
}

/// SIGHUP after `mv` under a flood: the files together hold each record
/// the summary counts once; a CSV file reopened starts with its header.
pub fn sighup_reopens(ctx: &Ctx) -> Result<()> {
    // A modest buffer: stopping drains it, and 16 MiB takes long under TCG.
    let (watcher, summary) = watch_with_summary(ctx, "flood", &["--rcvbuf", "262144"])?;
    let flood = Flood::start(WATCHED4, PEER4);
    let mut files = Vec::new();
    let rotated = (|| {
        for i in 0..ROTATIONS {
            let to = ctx.path(&format!("flood.jsonl.{i}"));
            rotate(&watcher, &to, "", || Ok(()))?;
            files.push(to);
        }
        Ok::<_, anyhow::Error>(())
    })();
    let sent = flood.stop()?;
    rotated?;
    files.push(watcher.out.clone());
    watcher.stop()?;
    let json = SummaryJson::read(&summary)?;
    let kernel = json.kernel.as_ref().context("no final kernel counters")?;
    let lines = lines_of(&files, "")?;
    for file in &files {
        read_records(file)?;
    }
    let distinct: HashSet<&String> = lines.iter().collect();
    ctx.log(&format!(
        "{ROTATIONS} SIGHUPs under a flood of {sent} datagrams: {} files, {} lines, summary {json:?}",
        files.len(),
        lines.len()
    ));
    ensure!(distinct.len() == lines.len(), "a record was written twice");
    ensure!(
        lines.len() as u64 == json.written,
        "files hold {} records, the summary says {} written",
        lines.len(),
        json.written
    );
    ensure!(
        json.written + json.lost_in_kernel == kernel.matched,
        "written {} + lost {} != kernel matched {}",
        json.written,
        json.lost_in_kernel,
        kernel.matched
    );
    // The flood began after the subscription and ended before it.
    ensure!(
        kernel.matched == sent,
        "the kernel matched {} of the {sent} datagrams sent",
        kernel.matched
    );

    let csv = Watcher::start_with(ctx, "rotated", &[WATCHED4], "csv")?;
    let header = &format!("{}\n", nfwatch::CSV_HEADER);
    let first = ctx.path("rotated.csv.1");
    send_one(WATCHED4, PEER4, 7100)?;
    wait_until("a record in the CSV file", DEADLINE, || {
        let text = std::fs::read_to_string(&csv.out).unwrap_or_default();
        Ok((text.len() > header.len()).then_some(()))
    })?;
    rotate(&csv, &first, header, || send_one(WATCHED4, PEER4, 7101))?;
    let files = [first, csv.out.clone()];
    let summary = csv.stop()?;
    let lines = lines_of(&files, header)?;
    // Light traffic, nothing lost: the files hold exactly what the kernel matched.
    summary.check_lossless(lines.len())?;
    ensure!(lines.len() >= 2, "CSV files hold {} records", lines.len());
    Ok(())
}

/// Names Linux accepts that are hard to print: one UTF-8 with a quote, a
/// backslash, a comma, an escape and a leading `=`; one not UTF-8.
const ODD_NAMES: [(&[u8], &str, &str); 2] = [
    (b"=a\"b\\c,\x1b", "10.41.0.1", "10.41.0.2"),
    (b"n\xff\x85", "10.42.0.1", "10.42.0.2"),
];

/// The link group the odd devices are in: addressed by group, not by
/// name, once they have their names.
const ODD_GROUP: &str = "99";

fn ip_link(args: &[&OsStr]) -> Result<()> {
    run(Command::new("ip").args(args))
}

/// Each odd device is made with a plain name and its address, then
/// renamed (iproute2 takes an odd name where a new name is given, not
/// everywhere a device is named), then brought up by group.
fn add_odd_devices() -> Result<()> {
    for (i, (name, addr, _)) in ODD_NAMES.into_iter().enumerate() {
        let plain = format!("nfwodd{i}");
        let plain = OsStr::new(&plain);
        let cidr = format!("{addr}/24");
        ip_link(
            &[
                os(&["link", "add", "name"]),
                vec![plain],
                os(&["type", "dummy"]),
            ]
            .concat(),
        )?;
        ip_link(&[os_of(&["addr", "add", &cidr, "dev"]), vec![plain]].concat())?;
        ip_link(&[os(&["link", "set", "group", ODD_GROUP, "dev"]), vec![plain]].concat())?;
        ip_link(&[
            "link".as_ref(),
            "set".as_ref(),
            "dev".as_ref(),
            plain,
            "name".as_ref(),
            OsStr::from_bytes(name),
        ])?;
    }
    ip_link(&os(&["link", "set", "group", ODD_GROUP, "up"]))
}

fn remove_odd_devices() {
    let _ = ip_link(&os(&["link", "delete", "group", ODD_GROUP]));
}

/// No C0 control byte but the line ends, and no DEL.
fn no_control_bytes(what: &str, bytes: &[u8]) -> Result<()> {
    let bad = bytes
        .iter()
        .position(|&b| (b < 0x20 && b != b'\n') || b == 0x7f);
    ensure!(bad.is_none(), "{what}: a control byte at {bad:?}");
    Ok(())
}

/// A record from each odd-named device in every format, read back with a
/// JSON parser and a CSV reader.
pub fn odd_ifnames(ctx: &Ctx) -> Result<()> {
    remove_odd_devices();
    add_odd_devices()?;
    let checked = check_odd_ifnames(ctx);
    remove_odd_devices();
    checked
}

fn check_odd_ifnames(ctx: &Ctx) -> Result<()> {
    let srcs: Vec<&str> = ODD_NAMES.iter().map(|(_, src, _)| *src).collect();
    let watchers = ["jsonl", "csv", "text"]
        .into_iter()
        .map(|format| Watcher::start_with(ctx, &format!("odd-{format}"), &srcs, format))
        .collect::<Result<Vec<_>>>()?;
    for (i, (_, src, dst)) in ODD_NAMES.into_iter().enumerate() {
        send_one(src, dst, 7200 + i as u16)?;
    }
    let mut outs = Vec::new();
    for watcher in watchers {
        outs.push(watcher.out.clone());
        let summary = watcher.stop()?;
        ensure!(summary.written == 2, "{}", summary.text);
    }
    let [jsonl, csv, text] = [0, 1, 2].map(|i| std::fs::read(&outs[i]));
    let (jsonl, csv, text) = (jsonl?, csv?, text?);
    for (what, bytes) in [("csv", &csv), ("text", &text)] {
        no_control_bytes(what, bytes)?;
    }

    let records = read_records(&outs[0])?;
    for line in String::from_utf8(jsonl)?.lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        let src = value["src"].as_str().unwrap_or_default();
        let (name, _, _) = ODD_NAMES
            .iter()
            .find(|(_, s, _)| *s == src)
            .with_context(|| format!("a record from {src}"))?;
        let expected = match std::str::from_utf8(name) {
            Ok(text) => serde_json::Value::from(text),
            Err(_) => serde_json::Value::from(name.to_vec()),
        };
        ensure!(
            value["ifname"] == expected,
            "jsonl ifname {} for {name:?}",
            value["ifname"]
        );
    }
    ensure!(records.len() == 2, "jsonl: {} records", records.len());

    // Escaped as docs/output-formats.md says: `\` doubled, other bytes
    // that are not printable UTF-8 as \xHH; CSV guards a leading `=`.
    let escaped = [r#"=a"b\\c,\x1b"#, r"n\xff\x85"];
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    let column = reader
        .headers()?
        .iter()
        .position(|h| h == "ifname")
        .context("no ifname column")?;
    let mut names: Vec<String> = reader
        .records()
        .map(|r| Ok(r?.get(column).unwrap_or_default().to_string()))
        .collect::<Result<_>>()?;
    names.sort();
    let mut expected = vec![format!("'{}", escaped[0]), escaped[1].to_string()];
    expected.sort();
    ensure!(
        names == expected,
        "csv ifnames {names:?}, expected {expected:?}"
    );

    let text = String::from_utf8(text).context("text output is not UTF-8")?;
    for name in escaped {
        ensure!(
            text.contains(&format!(" dev {name} ")),
            "text: no ` dev {name} ` in:\n{text}"
        );
    }
    ctx.log(&format!("odd names: text:\n{text}csv ifnames {names:?}"));
    Ok(())
}

/// A module declaring another protocol version: the CLI refuses it and
/// names both versions; --version shows it; MODULE_VERSION is Cargo's.
pub fn version_skew(ctx: &Ctx) -> Result<()> {
    let skewed = ctx
        .guest
        .skew_module
        .as_ref()
        .context("no --skew-module given")?;
    let release = env!("CARGO_PKG_VERSION");
    let modinfo = stdout_of(Command::new("modinfo").args(["-F", "version"]).arg(skewed))?;
    ensure!(modinfo.trim() == release, "modinfo version {modinfo:?}");
    let kept = ctx.path("kept.jsonl");
    std::fs::write(&kept, "an earlier capture\n")?;
    rmmod()?;
    insmod(skewed)?;
    // Bounded, so that a CLI that took the module would end all the same.
    let mut watch = os(&["watch", "--duration", "5", "--src", WATCHED4, "-o"]);
    watch.push(kept.as_os_str());
    let refused = nfwatch(ctx, &watch);
    let version = nfwatch(ctx, &os(&["--version"]));
    rmmod()?;
    insmod(&ctx.guest.module)?;
    let refused = refused?;
    ctx.log(&format!("refused: {}", text_of(&refused)));
    failed_start(
        "protocol 2 module",
        &refused,
        &["protocol 2", "protocol 1", release, "rmmod nfwatch"],
    )?;
    ensure!(
        std::fs::read_to_string(&kept)? == "an earlier capture\n",
        "the refused start touched the file"
    );
    let version = text_of(&version?);
    ensure!(
        version.contains(&format!("nfwatch {release} (protocol 1)"))
            && version.contains(&format!("module {release} (protocol 2)")),
        "--version with the skewed module: {version}"
    );
    let matching = text_of(&nfwatch(ctx, &os(&["--version"]))?);
    ensure!(
        matching.contains(&format!("module {release} (protocol 1)")),
        "--version: {matching}"
    );
    ctx.log(&format!("--version: {matching}"));
    Ok(())
}

/// The nfwatch process's Generic Netlink port id (/proc/net/netlink, by
/// the socket inode among the process's fds).
fn netlink_port(pid: i32) -> Result<u32> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/netlink")?;
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cols| {
            cols.len() >= 10
                && cols[1] == libc::NETLINK_GENERIC.to_string()
                && inodes.contains(cols[9])
        })
        .and_then(|cols| cols[2].parse().ok())
        .context("no NETLINK_GENERIC socket of the CLI in /proc/net/netlink")
}

/// Sends `message` from a socket of our own to netlink port `port`.
fn send_to_port(port: u32, message: &[u8]) -> Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_GENERIC,
        )
    };
    ensure!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: raw is a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_nl is plain data; all zeroes is valid.
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    to.nl_pid = port;
    // SAFETY: message and `to` are live for the call, with the sizes given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&to as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    ensure!(
        sent == message.len() as isize,
        "sendto port {port}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// A NFWATCH_CMD_RECORDS message as the module would send it.
fn records_message(family: u16, records: &[u8]) -> Vec<u8> {
    let attrs = nfwatch_proto::emit_attrs(&[
        RawAttr::bytes(NFWATCH_A_BATCH_SEQ, 1u64.to_ne_bytes()),
        RawAttr::bytes(NFWATCH_A_BATCH_LOST, 0u64.to_ne_bytes()),
        RawAttr::u32(NFWATCH_A_RECORD_SIZE, record_layout::SIZE as u32),
        RawAttr::bytes(NFWATCH_A_RECORDS, records.to_vec()),
    ]);
    let len = (16 + 4 + attrs.len()) as u32;
    [
        &len.to_ne_bytes()[..],
        &family.to_ne_bytes(),
        &0u16.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &[nfwatch_proto::NFWATCH_CMD_RECORDS, 1, 0, 0],
        &attrs,
    ]
    .concat()
}

fn fake_record(dport: u16) -> Record {
    let mut name = [0u8; 16];
    name[..4].copy_from_slice(b"fake");
    Record {
        ts_ns: 1_800_000_000_000_000_000 + u64::from(dport),
        family: Family::V4,
        proto: 17,
        src: WATCHED4.parse().expect("an address"),
        dst: "10.99.0.1".parse().expect("an address"),
        nexthop: None,
        ifname: PaddedName::from_padded(name),
        len: 44,
        ifindex: 99,
        uid: None,
        pid: None,
        ports: Some((1, dport)),
        icmp: None,
        frag: false,
        segs: 1,
        comm: None,
        cgroup_id: None,
        netns: None,
        sock_ino: None,
    }
}

/// A batch from a test sender with a record of an unknown address family
/// between two good ones: the bad one is counted and skipped, the capture
/// goes on.
pub fn malformed_record(ctx: &Ctx) -> Result<()> {
    let (watcher, summary) = watch_with_summary(ctx, "malformed", &[])?;
    let family = Genl::open()?.resolve("nfwatch")?;
    let mut bad = fake_record(2).to_bytes();
    bad[record_layout::FAMILY] = 99;
    let records = [fake_record(1).to_bytes(), bad, fake_record(3).to_bytes()].concat();
    send_to_port(
        netlink_port(watcher.pid())?,
        &records_message(family, &records),
    )?;
    wait_until("the two good records in the file", DEADLINE, || {
        Ok(read_records(&watcher.out).ok().filter(|r| r.len() == 2))
    })?;
    let out = watcher.out.clone();
    watcher.stop()?;
    let written = read_records(&out)?;
    let json = SummaryJson::read(&summary)?;
    ctx.log(&format!("summary {json:?}"));
    let dports: Vec<Option<u16>> = written.iter().map(|r| r.dport).collect();
    ensure!(dports == [Some(1), Some(3)], "records written: {dports:?}");
    ensure!(
        json.malformed == 1 && json.written == 2,
        "summary: {json:?}"
    );
    Ok(())
}

/// Everything `script` saw of `command` run on a terminal.
fn on_terminal(ctx: &Ctx, tag: &str, command: &str) -> Result<String> {
    let flood = Flood::start(WATCHED4, PEER4);
    let out = capture(Command::new("script").args(["-q", "-e", "-c", command, "/dev/null"]));
    flood.stop()?;
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(ctx.path(&format!("{tag}.terminal")), &text)?;
    ensure!(out.status.success(), "{tag}: {}", text_of(&out));
    Ok(text)
}

/// The live status line only where records do not go: never mixed into
/// records printed to the same terminal; --quiet silences it all.
pub fn status_line(ctx: &Ctx) -> Result<()> {
    let nfwatch = ctx.guest.nfwatch.display();
    let watch = format!("'{nfwatch}' watch --src {WATCHED4} --duration 4 --rcvbuf 262144");
    let file = ctx.path("status.txt");
    let to_file = on_terminal(ctx, "file", &format!("{watch} -o '{}'", file.display()))?;
    let to_terminal = on_terminal(ctx, "terminal", &watch)?;
    let quiet = on_terminal(
        ctx,
        "quiet",
        &format!("{watch} --quiet -o '{}'", file.display()),
    )?;
    const LIVE: &str = "records/s";
    ensure!(
        to_file.contains(LIVE),
        "-o FILE on a terminal: no live line in {to_file:?}"
    );
    ensure!(
        !to_terminal.contains(LIVE) && to_terminal.contains(" UDP "),
        "records on the terminal: a live line among them, or no records: {to_terminal:?}"
    );
    ensure!(quiet.trim().is_empty(), "--quiet printed {quiet:?}");
    if to_terminal
        .lines()
        .any(|l| l.contains("nfwatch:") && l.contains(" UDP "))
    {
        bail!("a status line glued to a record: {to_terminal:?}");
    }
    Ok(())
}
