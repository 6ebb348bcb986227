//! `cargo xtask man`: nfwatch's man pages and shell completions, generated
//! from the clap definition the binary parses, into target/man/:
//! `man8/nfwatch.8`, `man8/nfwatch-<subcommand>.8`, `man5/nfwatch.toml.5`
//! and `completions/{nfwatch.bash,_nfwatch,nfwatch.fish}`.
//!
//! The command pages are in section 8, system administration, as
//! tcpdump(8), conntrack(8) and ss(8) are: nfwatch needs CAP_NET_ADMIN and
//! a kernel module. To clap's sections (name, synopsis, options,
//! subcommands, and the signals and exit status of `--help`) they add a
//! description, the record fields, files, examples and references, from
//! the tables below; the examples are README.md's `quick-start` and
//! `recipes` blocks, which a VM scenario runs as printed.

use crate::guest::readme::tested_blocks;
use crate::util::{self, capture, describe, step};
use anyhow::{bail, Context, Result};
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Inline, Roff};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shells completions are generated for.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The section of the command pages: system administration.
const SECTION: &str = "8";
/// The configuration file's page: file formats.
const CONFIG_PAGE: (&str, &str) = ("nfwatch.toml", "5");
const MANUAL: &str = "nfwatch manual";

/// What a command's page says besides clap's sections. In the text,
/// `backquoted` words are set in bold.
struct CommandPage {
    /// The page's name, as clap names the (sub)command.
    name: &'static str,
    /// DESCRIPTION, one paragraph each.
    description: &'static [&'static str],
    /// Whether RECORD FIELDS (the `FIELDS` table) is in the page.
    fields: bool,
    /// Which of README.md's example commands the page shows.
    examples: fn(&str) -> bool,
    /// FILES, each a path of the `FILES` table.
    files: &'static [&'static str],
    /// SEE ALSO, besides the other nfwatch pages.
    see_also: &'static [&'static str],
    /// The subcommand whose text after the options (SIGNALS, EXIT STATUS)
    /// the page shows, if not the command's own.
    after_help_of: Option<&'static str>,
}

/// The files the recorder reads and writes, in both recording pages.
const RECORDER_FILES: &[&str] = &[
    "/etc/nfwatch/nfwatch.toml",
    "/etc/nfwatch/NAME.toml",
    "/var/log/nfwatch/",
    "/etc/modprobe.d/nfwatch.conf",
    "/sys/module/nfwatch/parameters/",
];

const COMMAND_PAGES: &[CommandPage] = &[
    CommandPage {
        name: "nfwatch",
        description: &[
            "`nfwatch` records every packet this host sends from the source addresses and \
             prefixes it is given: the time, the addresses, the protocol, the ports or ICMP \
             type and code, the length, the egress device, the next hop, and the sending uid \
             and pid. `nfwatch watch` writes one record per packet to a file or to standard \
             output, as text, CSV, JSON Lines or a legacy one-line format; `nfwatch stats` \
             prints the kernel module's counters.",
            "The records come from the `nfwatch` kernel module. It hooks Netfilter's LOCAL_OUT \
             for IPv4 and IPv6, records the headers (never the payload) of each packet whose \
             source address is in a subscriber's prefixes, and sends the records in batches \
             over Generic Netlink. It never drops, alters or delays a packet. Only packets \
             this host sends are seen, not forwarded or received ones, and only those of the \
             network namespace the subscriber is in.",
            "Nothing is lost silently: every record the module could not queue for its \
             subscriber is counted, and so is every batch the socket could not take. When it \
             stops, and on SIGUSR1, `nfwatch watch` prints on standard error how many \
             records it wrote and how many were lost, and where.",
            "Subscribing and `nfwatch stats` need CAP_NET_ADMIN in the network namespace \
             (root, or the capability set on the program) and the module loaded \
             (`modprobe nfwatch`). A network namespace holds at most `max_subscribers` (64) \
             subscribers. Every failure is one line on standard error starting with \
             `nfwatch:` that names the cause.",
        ],
        fields: false,
        examples: |_| true,
        files: RECORDER_FILES,
        see_also: &[
            "jq(1)",
            "modprobe.d(5)",
            "systemd.service(5)",
            "conntrack(8)",
            "logrotate(8)",
            "modprobe(8)",
            "ss(8)",
            "tcpdump(8)",
        ],
        // Its signals, and the same exit status.
        after_help_of: Some("watch"),
    },
    CommandPage {
        name: "nfwatch-watch",
        description: &[
            "`nfwatch watch` subscribes to the `nfwatch` kernel module with the given source \
             addresses and prefixes (`--src`, or `sources` in the `--config` file) and writes \
             one line per packet this host sends from them, to standard output or to \
             `--output` FILE. The module hooks Netfilter's LOCAL_OUT for IPv4 and IPv6 and \
             sends a record of each such packet, in batches; RECORD FIELDS below says what \
             a record holds.",
            "The output file is created or truncated (with `--append`, added to) only once the \
             module has accepted the subscription: a start that fails leaves an existing file \
             as it was. Lines reach a terminal or a pipe within 0.1 s of their batch; to a \
             regular file, no record waits in nfwatch's buffer longer than \
             `--flush-interval`, so `tail -f` follows it.",
            "It records until it has written `--count` records, `--duration` has passed, it \
             gets SIGINT or SIGTERM, or the module is unloaded (then it exits 1: recording \
             stopped without being asked to). Then it unsubscribes, writes \
             every record received, and prints a summary on standard error: the records \
             written, those lost in the kernel and the socket's overruns. Nothing is lost \
             silently: whatever the module could not deliver is counted there. `--quiet` \
             leaves out the start, status and summary lines; `--summary-json` writes the \
             counters as one JSON object.",
            "With `--config` FILE the settings come from FILE, described in nfwatch.toml(5); \
             a flag given on the command line overrides its key. `nfwatch.service` runs \
             `nfwatch watch --config /etc/nfwatch/nfwatch.toml`, and tells systemd it is \
             ready once the module has accepted the subscription.",
            "Subscribing needs CAP_NET_ADMIN in the network namespace, and sees the packets \
             of that namespace only; `uid` and `pid` are given as the subscriber's user and \
             pid namespaces see them.",
        ],
        fields: true,
        examples: |command| !command.contains("nfwatch stats"),
        files: RECORDER_FILES,
        see_also: &[
            "jq(1)",
            "systemd.service(5)",
            "logrotate(8)",
            "ss(8)",
            "tcpdump(8)",
        ],
        after_help_of: None,
    },
    CommandPage {
        name: "nfwatch-flows",
        description: &[
            "`nfwatch flows` subscribes as nfwatch-watch(8) does, but the `nfwatch` kernel \
             module aggregates the packets into flows (the packets whose records agree in \
             every field but time, length and segments) and nfwatch writes one line, or IPFIX \
             data record, per flow once it ends: its start and end, the fields of its first \
             packet but `ts`, `len` and `segs`, its packets, octets and end reason (`idle`, \
             `active`, `forced`, `evicted`). docs/output-formats.md lists the columns.",
            "A flow ends when idle `--inactive-timeout`, at its first packet \
             `--active-timeout` or more after its start, when the table of `--max-flows` is \
             full (the least recently used is evicted), and when nfwatch stops. Every option \
             of nfwatch-watch(8) applies but `--count`, `--config` and `--format legacy`; the \
             summary counts flows, and packets as the kernel's hook saw them.",
        ],
        fields: false,
        examples: |command| command.contains("nfwatch flows"),
        files: RECORDER_FILES,
        see_also: &["jq(1)", "nfdump(1)", "ss(8)"],
        after_help_of: None,
    },
    CommandPage {
        name: "nfwatch-stats",
        description: &[
            "`nfwatch stats` asks the `nfwatch` kernel module for its counters and prints them, \
             one per line, or with `--json` as one JSON object: the packets seen at the \
             LOCAL_OUT hook and matched by a subscription, the records delivered and lost, \
             malformed packets, the batches delivered and the subscribers.",
            "A `lost` count that grows means a subscriber falls behind: see the `--rcvbuf` \
             option of nfwatch-watch(8). `nfwatch stats` needs CAP_NET_ADMIN in the network \
             namespace and the module loaded.",
        ],
        fields: false,
        examples: |command| command.contains("nfwatch stats"),
        files: &[
            "/etc/modprobe.d/nfwatch.conf",
            "/sys/module/nfwatch/parameters/",
        ],
        see_also: &["conntrack(8)", "ss(8)"],
        after_help_of: None,
    },
];

/// FILES: each path and what it is.
const FILES: &[(&str, &str)] = &[
    (
        "/etc/nfwatch/nfwatch.toml",
        "The settings `nfwatch.service` runs `nfwatch watch --config` with; see \
         nfwatch.toml(5). The service does not start until it lists `sources`.",
    ),
    (
        "/etc/nfwatch/NAME.toml",
        "The settings of another recorder, `nfwatch@NAME.service`; give each its own \
         `output`.",
    ),
    (
        "/var/log/nfwatch/",
        "Where the services write their records (`nfwatch.jsonl`), and the only directory \
         they may write to. /etc/logrotate.d/nfwatch rotates the *.jsonl, *.csv and *.log \
         files there and has the services reopen them (SIGHUP): nothing is lost or written \
         twice.",
    ),
    (
        "/etc/modprobe.d/nfwatch.conf",
        "Module parameters, read when the module is loaded: \
         `options nfwatch flush_interval_us=5000 batch_bytes=32000` (the defaults; the \
         longest a record waits in a partly filled batch, and a batch's size).",
    ),
    (
        "/sys/module/nfwatch/parameters/",
        "The module parameters in force; `max_subscribers` (per network namespace, 64) \
         may be written there.",
    ),
];

/// RECORD FIELDS: every field of a record, in the order of the CSV columns
/// and JSON keys, with its meaning.
const FIELDS: &[(&str, &str)] = &[
    (
        "ts",
        "when the packet passed LOCAL_OUT: RFC 3339, UTC, nine fractional digits",
    ),
    ("family", "ipv4 or ipv6 (not in text)"),
    (
        "proto",
        "the protocol after IPv6 extension headers: tcp, udp, icmp, icmpv6, sctp, dccp, \
         udplite, igmp, gre, esp, ah, or another's decimal number (text: upper case)",
    ),
    ("src", "source address; IPv6 as RFC 5952 writes it"),
    ("dst", "destination address"),
    (
        "sport",
        "source port; absent but for TCP, UDP, UDP-Lite, SCTP and DCCP, and in a non-first \
         fragment",
    ),
    ("dport", "destination port; absent as sport"),
    (
        "icmp_type",
        "ICMP or ICMPv6 type; absent for other protocols and in a non-first fragment",
    ),
    ("icmp_code", "ICMP or ICMPv6 code; absent as icmp_type"),
    (
        "len",
        "IP length in bytes (of the whole packet when it is a GSO packet)",
    ),
    ("ifindex", "egress device index"),
    (
        "ifname",
        "egress device name; in text and csv a backslash is doubled and any other \
         unprintable byte written as \\xHH; in jsonl a string, or an array of its bytes \
         when not UTF-8",
    ),
    (
        "nexthop",
        "the route's gateway, or dst when the destination is on-link; absent without a route",
    ),
    (
        "uid",
        "the owning socket's uid; absent when no full socket owns the packet (a TCP reset \
         the kernel sends)",
    ),
    (
        "pid",
        "the sending process (thread group) id: the last process seen sending on the socket \
         in its own context since nfwatch started, also for what the kernel sends for that \
         socket later (ACKs, retransmissions); without such a send, the process holding the \
         socket's file (as ss -p finds it); absent when neither is known, or the process is \
         in another pid namespace; in text shown as comm[pid]",
    ),
    (
        "frag",
        "true for a non-first IP fragment, which has no ports or ICMP type",
    ),
    ("segs", "GSO segments, 1 when not GSO (not in text)"),
    (
        "comm",
        "that process's command name (16 bytes at most), escaped as ifname is; absent with pid \
         but for a process in another pid namespace",
    ),
    (
        "cgroup_id",
        "the owning socket's cgroup v2 id (the inode of its directory under /sys/fs/cgroup); a \
         socket belongs to the cgroup of the process that created it",
    ),
    (
        "cgroup",
        "that cgroup's path under the cgroup2 mount, as /system.slice/nginx.service; absent \
         when it was removed before nfwatch looked it up (text then shows cgroup ID)",
    ),
    (
        "unit",
        "the systemd unit of that cgroup (a service or scope); in text shown when there is \
         no container",
    ),
    (
        "container",
        "the container id from the cgroup path (docker-, cri-containerd-, crio-, libpod- \
         scopes and their cgroupfs forms; a systemd-nspawn machine's name)",
    ),
    (
        "netns",
        "the inode of the network namespace the packet was sent in, as lsns -t net shows it \
         (not in text)",
    ),
];

/// What RECORD FIELDS says before the fields.
const FIELDS_INTRO: &[&str] = &[
    "Every record has these fields, in this order; the names are the CSV column names and \
     the JSON keys. A field that does not apply is absent: `null` in jsonl, an empty field in \
     csv, left out in text.",
    "`text`, the default, is for people and may change in any release. `csv` (RFC 4180, a \
     header line first) and `jsonl` (one JSON object per line, every key present) are for \
     programs: within a major version a field keeps its name, place, type and meaning, and \
     new fields come last. `legacy` is the original tool's line, \
     `srcIP:A dstIP:B srcPORT:P dstPORT:Q PROTOCOL:NAME`, without time or device.",
];

/// The README blocks whose commands are the pages' examples.
const EXAMPLE_BLOCKS: [&str; 2] = ["quick-start", "recipes"];

/// EXAMPLES: what each of README.md's example commands does.
const EXAMPLE_NOTES: &[(&str, &str)] = &[
    (
        "sudo nfwatch watch --src 192.0.2.10 --src 2001:db8::/64 --duration 10 -o sends.jsonl --format jsonl",
        "Record for ten seconds what this host sends from 192.0.2.10 and from 2001:db8::/64 \
         into sends.jsonl, as JSON Lines:",
    ),
    (
        "jq -r '[.ts, .proto, .src, .dst, .dport] | @tsv' sends.jsonl",
        "Show the time, protocol, addresses and destination port of each record of \
         sends.jsonl:",
    ),
    ("sudo nfwatch stats", "Print the module's counters:"),
    (
        "sudo nfwatch watch --src 192.0.2.10 --format jsonl --count 5 | jq -c '{ts, proto, dst, dport}'",
        "Pass five records to jq(1) as they arrive, then stop:",
    ),
    (
        "sudo nfwatch watch --src 192.0.2.10 | head -3",
        "Print three lines of text; head(1) going away stops nfwatch with exit status 0:",
    ),
    (
        "sudo nfwatch watch --src 192.0.2.0/24 --format csv -o sends.csv --duration 5",
        "Record what a whole network sends for five seconds, as CSV with a header line:",
    ),
    (
        "sudo nfwatch watch --src 192.0.2.10 -o sends.log --append --duration 5",
        "Add five seconds of records to sends.log instead of truncating it:",
    ),
    (
        "sudo nfwatch flows --src 192.0.2.10 --format jsonl -o flows.jsonl --duration 5",
        "Record five seconds of flows, aggregated in the kernel, one line each with its \
         packets, octets and end reason:",
    ),
    (
        "sudo nfwatch stats --json",
        "Print the module's counters as one JSON object:",
    ),
];

/// A key of nfwatch.toml: as docs/service.md's table has it.
struct Key {
    name: &'static str,
    kind: &'static str,
    default: &'static str,
    flag: &'static str,
    meaning: &'static str,
}

const KEYS: &[Key] = &[
    Key {
        name: "sources",
        kind: "list of strings",
        default: "[]",
        flag: "--src",
        meaning: "addresses or prefixes (IPv4 or IPv6, `ADDR[/LEN]`, host bits clear) whose \
                  sent packets are recorded",
    },
    Key {
        name: "uids",
        kind: "list of integers",
        default: "[]",
        flag: "--uid",
        meaning: "when not empty, only packets of sockets owned by one of these uids",
    },
    Key {
        name: "cgroups",
        kind: "list of strings",
        default: "[]",
        flag: "--cgroup",
        meaning: "when not empty, only packets of sockets in one of these cgroup v2 subtrees \
                  (paths under the cgroup2 mount, as `/system.slice/nginx.service`)",
    },
    Key {
        name: "comms",
        kind: "list of strings",
        default: "[]",
        flag: "--comm",
        meaning: "when not empty, only packets whose socket's sending process has one of these \
                  command names (as `/proc/PID/comm` shows it)",
    },
    Key {
        name: "all_netns",
        kind: "boolean",
        default: "false",
        flag: "--all-netns",
        meaning: "record the packets of every network namespace, not only the service's",
    },
    Key {
        name: "output",
        kind: "string",
        default: "\"/var/log/nfwatch/nfwatch.jsonl\"",
        flag: "-o",
        meaning: "the records file (`-` for stdout, which the service sends to the journal)",
    },
    Key {
        name: "format",
        kind: "string",
        default: "\"jsonl\"",
        flag: "--format",
        meaning: "`text`, `csv`, `jsonl`, `legacy` or `ipfix`",
    },
    Key {
        name: "export",
        kind: "list of strings",
        default: "[]",
        flag: "--export",
        meaning: "IPFIX collectors every record is also sent to, as `udp://HOST:PORT` or \
                  `tcp://HOST:PORT`",
    },
    Key {
        name: "append",
        kind: "boolean",
        default: "true",
        flag: "--append",
        meaning: "add to the file across restarts instead of truncating it",
    },
    Key {
        name: "flush_interval",
        kind: "seconds",
        default: "1",
        flag: "--flush-interval",
        meaning: "longest a record waits in nfwatch before it is written to the file",
    },
    Key {
        name: "rcvbuf",
        kind: "bytes",
        default: "8388608",
        flag: "--rcvbuf",
        meaning: "netlink receive buffer, 65536 to 2147483647; larger rides out longer disk \
                  stalls",
    },
];

/// nfwatch.toml(5)'s DESCRIPTION.
const CONFIG_DESCRIPTION: &[&str] = &[
    "`nfwatch watch --config` FILE reads its settings from FILE, a TOML file. \
     `nfwatch.service` runs `nfwatch watch --config /etc/nfwatch/nfwatch.toml`, and each \
     `nfwatch@NAME.service` runs it with /etc/nfwatch/NAME.toml. The service does not start \
     until `sources` lists at least one address or prefix.",
    "Every key is optional. A flag given to `nfwatch watch` on the command line overrides its \
     key: `nfwatch watch --config` FILE `--src` ADDR watches ADDR only. The defaults below are \
     the values of the file as installed; a key that is not in the file at all takes its \
     flag's default (see nfwatch-watch(8)). The file is a conffile: an upgrade keeps your \
     edits.",
];

/// Files with their errors, as nfwatch.toml(5) shows them: a test writes
/// each file and checks that nfwatch says this of it.
const CONFIG_ERRORS: &[(&str, &str)] = &[
    (
        "sources = [\"10.10.0.5/24\"]\n",
        "nfwatch: /etc/nfwatch/nfwatch.toml:1: sources: 10.10.0.5/24: host bits set, did you mean 10.10.0.0/24?",
    ),
    (
        "sources = [\"10.10.0.5\"]\nsource = \"10.10.0.6\"\n",
        "nfwatch: /etc/nfwatch/nfwatch.toml:2: source: unknown field `source`, expected one of `sources`, `uids`, `cgroups`, `comms`, `all_netns`, `output`, `format`, `export`, `append`, `flush_interval`, `rcvbuf`",
    ),
    (
        "sources = [\"10.10.0.5\"]\nformat = \"xml\"\n",
        "nfwatch: /etc/nfwatch/nfwatch.toml:2: format: unknown format \"xml\" (text, csv, jsonl, legacy or ipfix)",
    ),
];

/// What nfwatch.toml(5) says before CONFIG_ERRORS.
const CONFIG_ERRORS_INTRO: &str =
    "An unknown key or a bad value is an error that names the file, the line and the key: \
     `nfwatch watch` prints it on standard error and exits with status 2, and the service \
     does not start (`systemctl status nfwatch` shows the line). For example:";

/// nfwatch.toml(5)'s EXAMPLES: a test parses it.
const CONFIG_EXAMPLE: &str = "\
sources = [\"192.0.2.10\", \"2001:db8:1::/64\"]
output = \"/var/log/nfwatch/web.csv\"
format = \"csv\"
flush_interval = 0.5
";

const CONFIG_FILES: &[&str] = &[
    "/etc/nfwatch/nfwatch.toml",
    "/etc/nfwatch/NAME.toml",
    "/var/log/nfwatch/",
];

const CONFIG_SEE_ALSO: &[&str] = &[
    "systemd.service(5)",
    "logrotate(8)",
    "nfwatch(8)",
    "nfwatch-watch(8)",
];

/// What was generated.
pub struct Generated {
    pub pages: Vec<PathBuf>,
    pub completions: Vec<PathBuf>,
}

/// `cargo xtask man`: generates into target/man/ and checks the pages with
/// groff's warnings on.
pub fn man() -> Result<()> {
    step("man pages and shell completions");
    let dir = util::target_dir().join("man");
    util::remove_dir(&dir)?;
    let generated = generate(&dir)?;
    for page in &generated.pages {
        lint(page)?;
    }
    for path in generated.pages.iter().chain(&generated.completions) {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes the command pages to `dir`/man8, nfwatch.toml(5) to `dir`/man5
/// and the completions to `dir`/completions.
pub fn generate(dir: &Path) -> Result<Generated> {
    let man8 = dir.join(format!("man{SECTION}"));
    let man5 = dir.join(format!("man{}", CONFIG_PAGE.1));
    let completions = dir.join("completions");
    for sub in [&man8, &man5, &completions] {
        std::fs::create_dir_all(sub).with_context(|| format!("cannot create {}", sub.display()))?;
    }
    let mut cmd = nfwatch::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("nfwatch {}", env!("CARGO_PKG_VERSION"));
    let date = date();
    let examples = examples()?;
    let mut pages = Vec::new();
    write_pages(&cmd, &source, &date, &examples, &man8, &mut pages)?;
    let path = man5.join(format!("{}.{}", CONFIG_PAGE.0, CONFIG_PAGE.1));
    std::fs::write(&path, config_page(&source, &date)?.render())
        .with_context(|| format!("cannot write {}", path.display()))?;
    pages.push(path);
    let completions = SHELLS
        .iter()
        .map(|&shell| {
            clap_complete::generate_to(shell, &mut cmd.clone(), "nfwatch", &completions)
                .with_context(|| format!("cannot write the {shell} completions"))
        })
        .collect::<Result<_>>()?;
    Ok(Generated { pages, completions })
}

/// What the pages are made from: their date is the last commit to it.
const SOURCES: &[&str] = &["xtask/src/man.rs", "crates/nfwatch/src/cli.rs", "README.md"];

/// The pages' date (`.TH`'s third argument, which must not be empty):
/// the day of the last commit to what they are made from, so that the
/// same sources give the same pages; today outside a git checkout.
fn date() -> String {
    let committed = util::stdout_of(
        Command::new("git")
            .args(["log", "-1", "--format=%cs", "--"])
            .args(SOURCES)
            .current_dir(util::workspace_root()),
    )
    .unwrap_or_default();
    match committed.trim() {
        "" => util::stdout_of(Command::new("date").arg("+%F"))
            .unwrap_or_default()
            .trim()
            .to_string(),
        day => day.to_string(),
    }
}

/// README.md's example commands, each with its note from EXAMPLE_NOTES.
fn examples() -> Result<Vec<(String, &'static str)>> {
    let path = util::workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let blocks = tested_blocks(&readme);
    let mut examples = Vec::new();
    for name in EXAMPLE_BLOCKS {
        let Some((_, lines)) = blocks.iter().find(|(n, _)| n == name) else {
            bail!("README.md has no `<!-- tested: {name} -->` block of examples");
        };
        for line in lines {
            let Some(&(_, note)) = EXAMPLE_NOTES.iter().find(|(c, _)| c == line) else {
                bail!("README.md's example `{line}` has no note in xtask/src/man.rs EXAMPLE_NOTES");
            };
            examples.push((line.clone(), note));
        }
    }
    Ok(examples)
}

/// A page for `cmd` and one for each of its visible subcommands, each
/// named as clap names the subcommand (`nfwatch-watch`).
fn write_pages(
    cmd: &clap::Command,
    source: &str,
    date: &str,
    examples: &[(String, &str)],
    dir: &Path,
    pages: &mut Vec<PathBuf>,
) -> Result<()> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let Some(extra) = COMMAND_PAGES.iter().find(|p| p.name == name) else {
        bail!("xtask/src/man.rs COMMAND_PAGES has no page {name}");
    };
    let path = dir.join(format!("{name}.{SECTION}"));
    std::fs::write(&path, page(cmd, extra, examples, source, date)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    pages.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, source, date, examples, dir, pages)?;
    }
    Ok(())
}

/// clap's sections with the page's own: DESCRIPTION, OPTIONS, SUBCOMMANDS,
/// RECORD FIELDS, the text after the options (SIGNALS, EXIT STATUS) as
/// sections laid out as `--help` shows it, FILES, EXAMPLES, SEE ALSO.
fn page(
    cmd: &clap::Command,
    extra: &CommandPage,
    examples: &[(String, &str)],
    source: &str,
    date: &str,
) -> Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .date(date)
        .source(source)
        .manual(MANUAL);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    paragraphs(&mut roff, extra.description);
    roff.to_writer(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::new();
    if extra.fields {
        roff.control("SH", ["RECORD FIELDS"]);
        paragraphs(&mut roff, FIELDS_INTRO);
        for (name, meaning) in FIELDS {
            item(&mut roff, vec![bold(*name)], meaning);
        }
    }
    roff.to_writer(&mut out)?;
    let after_help_of = match extra.after_help_of {
        Some(name) => cmd
            .find_subcommand(name)
            .with_context(|| format!("{} has no subcommand {name}", extra.name))?,
        None => cmd,
    };
    after_help_sections(after_help_of).to_writer(&mut out)?;
    let mut roff = Roff::new();
    files(&mut roff, extra.files)?;
    let shown: Vec<&(String, &str)> = examples
        .iter()
        .filter(|(command, _)| (extra.examples)(command))
        .collect();
    if !shown.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for (command, note) in shown {
            roff.control("PP", []);
            roff.text(inline(note));
            literal(&mut roff, command);
        }
    }
    let others = COMMAND_PAGES
        .iter()
        .filter(|p| p.name != extra.name)
        .map(|p| format!("{}({SECTION})", p.name));
    let config = format!("{}({})", CONFIG_PAGE.0, CONFIG_PAGE.1);
    let mut see_also: Vec<String> = extra.see_also.iter().map(|s| s.to_string()).collect();
    see_also.extend(others.chain([config]));
    see_also_section(&mut roff, see_also);
    roff.to_writer(&mut out)?;
    Ok(out)
}

/// nfwatch.toml(5).
fn config_page(source: &str, date: &str) -> Result<Roff> {
    let (name, section) = CONFIG_PAGE;
    let mut roff = Roff::new();
    roff.control("TH", [name, section, date, source, MANUAL]);
    roff.control("SH", ["NAME"]);
    roff.text([roman(format!(
        "{name} - settings of nfwatch watch and nfwatch.service"
    ))]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold("/etc/nfwatch/nfwatch.toml")]);
    roff.control("br", []);
    roff.text([bold("/etc/nfwatch/"), roman("NAME"), bold(".toml")]);
    roff.control("SH", ["DESCRIPTION"]);
    paragraphs(&mut roff, CONFIG_DESCRIPTION);
    roff.control("SH", ["KEYS"]);
    for key in KEYS {
        let tag = vec![bold(key.name), roman(format!(" ({})", key.kind))];
        let text = format!(
            "{}. Default {}; `{}` overrides it.",
            capitalized(key.meaning),
            key.default,
            key.flag
        );
        item(&mut roff, tag, &text);
    }
    roff.control("SH", ["ERRORS"]);
    roff.text(inline(CONFIG_ERRORS_INTRO));
    for (file, message) in CONFIG_ERRORS {
        literal(&mut roff, file.trim_end());
        roff.control("PP", []);
        roff.text([roman("gives")]);
        literal(&mut roff, message);
    }
    files(&mut roff, CONFIG_FILES)?;
    roff.control("SH", ["EXAMPLES"]);
    roff.text([roman(
        "Record what two sources send as CSV, with records written at least every half second:",
    )]);
    literal(&mut roff, CONFIG_EXAMPLE.trim_end());
    see_also_section(
        &mut roff,
        CONFIG_SEE_ALSO.iter().map(|s| s.to_string()).collect(),
    );
    Ok(roff)
}

/// Text with `backquoted` words in bold.
fn inline(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, piece)| !piece.is_empty())
        .map(|(i, piece)| {
            if i % 2 == 1 {
                bold(piece)
            } else {
                roman(piece)
            }
        })
        .collect()
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn paragraphs(roff: &mut Roff, paragraphs: &[&str]) {
    for (i, paragraph) in paragraphs.iter().enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text(inline(paragraph));
    }
}

/// A tagged paragraph: the tag, then the text indented under it.
fn item(roff: &mut Roff, tag: Vec<Inline>, text: &str) {
    roff.control("TP", []);
    roff.text(tag);
    roff.text(inline(text));
}

/// Lines set as they are, indented.
fn literal(roff: &mut Roff, text: &str) {
    roff.control("PP", []);
    roff.control("RS", ["4"]);
    roff.control("nf", []);
    for line in text.lines() {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    roff.control("RE", []);
}

/// FILES: `paths`, each with its entry of the FILES table.
fn files(roff: &mut Roff, paths: &[&str]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    roff.control("SH", ["FILES"]);
    for path in paths {
        let Some((_, meaning)) = FILES.iter().find(|(p, _)| p == path) else {
            bail!("{path} is not in xtask/src/man.rs FILES");
        };
        item(roff, vec![bold(*path)], meaning);
    }
    Ok(())
}

/// SEE ALSO: `pages` (`name(section)`), by section, then name.
fn see_also_section(roff: &mut Roff, mut pages: Vec<String>) {
    let key = |page: &String| {
        let (name, section) = page.split_once('(').unwrap_or((page, ""));
        (section.to_string(), name.to_string())
    };
    pages.sort_by_key(key);
    roff.control("SH", ["SEE ALSO"]);
    let count = pages.len();
    for (i, page) in pages.iter().enumerate() {
        let (name, section) = page.split_once('(').unwrap_or((page, ""));
        let end = if i + 1 < count { ")," } else { ")" };
        let section = section.trim_end_matches(')');
        let name = name.replace('-', "\\-");
        let section = format!("({section}{end}");
        roff.control("BR", [name.as_str(), section.as_str()]);
    }
}

/// clap's after-help text: a line `Heading:` starts a section, and the
/// lines under it keep their layout (no filling).
fn after_help_sections(cmd: &clap::Command) -> Roff {
    let mut roff = Roff::new();
    let Some(text) = cmd.get_after_long_help().or(cmd.get_after_help()) else {
        return roff;
    };
    let mut filling = true;
    for line in text.to_string().lines() {
        let heading = line.strip_suffix(':').filter(|_| !line.starts_with(' '));
        if let Some(heading) = heading {
            if !filling {
                roff.control("fi", []);
            }
            roff.control("SH", [heading.to_uppercase().as_str()]);
            roff.control("nf", []);
            filling = false;
        } else if !line.trim().is_empty() {
            if filling {
                roff.control("nf", []);
                filling = false;
            }
            roff.text([roman(line)]);
        }
    }
    if !filling {
        roff.control("fi", []);
    }
    roff
}

/// Fails on anything groff warns about in `page`.
fn lint(page: &Path) -> Result<()> {
    let mut groff = Command::new("groff");
    groff.args(["-man", "-ww", "-z"]).arg(page);
    let out = capture(&mut groff)?;
    let warnings = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !warnings.trim().is_empty() {
        bail!(
            "`{}` ({}): {}",
            describe(&groff),
            out.status,
            warnings.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every long option of every subcommand is in that subcommand's page
    /// and in every shell's completions.
    #[test]
    fn pages_and_completions_cover_every_option() {
        let dir = util::target_dir().join("man-test");
        util::remove_dir(&dir).unwrap();
        let generated = generate(&dir).unwrap();
        let names: Vec<String> = generated
            .pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "nfwatch.8",
                "nfwatch-watch.8",
                "nfwatch-flows.8",
                "nfwatch-stats.8",
                "nfwatch.toml.5"
            ]
        );
        // How each shell's script names a long option.
        let completions: Vec<(String, &str)> = generated
            .completions
            .iter()
            .zip(["--", "--", "-l "])
            .map(|(p, flag)| (std::fs::read_to_string(p).unwrap(), flag))
            .collect();
        let cmd = nfwatch::command();
        for sub in cmd.get_subcommands() {
            let page =
                std::fs::read_to_string(dir.join(format!("man8/nfwatch-{}.8", sub.get_name())))
                    .unwrap();
            for long in sub.get_arguments().filter_map(|a| a.get_long()) {
                // roff escapes the dashes: \-\-src
                assert!(
                    page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                    "--{long} not in the {} page",
                    sub.get_name()
                );
                for (text, flag) in &completions {
                    assert!(
                        text.contains(&format!("{flag}{long}")),
                        "--{long} not completed"
                    );
                }
            }
        }
        util::remove_dir(&dir).unwrap();
    }

    /// The `.SH` headings of a page, unquoted.
    fn sections(page: &str) -> Vec<String> {
        page.lines()
            .filter_map(|l| l.strip_prefix(".SH "))
            .map(|h| h.trim_matches('"').to_string())
            .collect()
    }

    /// Every page has the sections a man page needs, in its section's
    /// directory, and groff has no warning about it.
    #[test]
    fn pages_have_their_sections() {
        let dir = util::target_dir().join("man-test-sections");
        util::remove_dir(&dir).unwrap();
        let generated = generate(&dir).unwrap();
        let common = [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "FILES",
            "EXAMPLES",
            "SEE ALSO",
        ];
        let command = ["OPTIONS", "EXIT STATUS"];
        for (path, own) in [
            ("man8/nfwatch.8", &["SUBCOMMANDS", "SIGNALS"][..]),
            ("man8/nfwatch-watch.8", &["RECORD FIELDS", "SIGNALS"]),
            ("man8/nfwatch-flows.8", &["SIGNALS"]),
            ("man8/nfwatch-stats.8", &[]),
            ("man5/nfwatch.toml.5", &["KEYS", "ERRORS"]),
        ] {
            let path = dir.join(path);
            assert!(
                generated.pages.contains(&path),
                "{} not generated",
                path.display()
            );
            let page = std::fs::read_to_string(&path).unwrap();
            let found = sections(&page);
            let mut wanted: Vec<&str> = common.iter().chain(own).copied().collect();
            if path.extension().is_some_and(|e| e == SECTION) {
                wanted.extend(command);
            }
            for section in wanted {
                assert!(
                    found.iter().any(|f| f == section),
                    "{} has no {section}: {found:?}",
                    path.display()
                );
            }
            let section = path.extension().unwrap().to_string_lossy().into_owned();
            let title = page.lines().find(|l| l.starts_with(".TH ")).unwrap();
            assert!(
                title.split(' ').nth(2) == Some(section.as_str()),
                "{}: {title}",
                path.display()
            );
        }
        let watch = std::fs::read_to_string(dir.join("man8/nfwatch-watch.8")).unwrap();
        for (name, _) in FIELDS {
            assert!(
                watch.contains(&format!(".TP\n\\fB{}\\fR\n", name.replace('-', "\\-"))),
                "field {name} not in nfwatch-watch.8"
            );
        }
        if Command::new("groff").arg("--version").output().is_ok() {
            for page in &generated.pages {
                lint(page).unwrap();
            }
        }
        util::remove_dir(&dir).unwrap();
    }

    /// RECORD FIELDS has every field the writers write, in their order.
    #[test]
    fn fields_are_the_records() {
        let names: Vec<&str> = FIELDS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names.join(","), nfwatch::CSV_HEADER);
    }

    /// Every note is for a command README.md's examples have (a missing
    /// note fails generate()), and each page shows some.
    #[test]
    fn examples_are_the_readmes() {
        let examples = examples().unwrap();
        assert_eq!(examples.len(), EXAMPLE_NOTES.len(), "a note for no example");
        for page in COMMAND_PAGES {
            assert!(
                examples.iter().any(|(command, _)| (page.examples)(command)),
                "{} has no example",
                page.name
            );
        }
    }

    /// Every file described is on some page.
    #[test]
    fn every_file_is_shown() {
        for (path, _) in FILES {
            assert!(
                COMMAND_PAGES.iter().any(|p| p.files.contains(path)) || CONFIG_FILES.contains(path),
                "{path} is on no page"
            );
        }
    }

    /// The keys are the ones nfwatch reads, as docs/service.md's table
    /// has them, each with a flag of `nfwatch watch`; the installed file
    /// sets (or shows, commented out) each default.
    #[test]
    fn keys_are_nfwatchs() {
        let service =
            std::fs::read_to_string(util::workspace_root().join("docs/service.md")).unwrap();
        let rows: Vec<Vec<String>> = service
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|cell| cell.trim().to_string())
                    .collect()
            })
            .filter(|cells: &Vec<String>| cells.len() == 5)
            .collect();
        let documented: Vec<Vec<String>> = KEYS
            .iter()
            .map(|k| {
                vec![
                    format!("`{}`", k.name),
                    k.kind.to_string(),
                    match k.default.parse::<f64>() {
                        Ok(_) => k.default.to_string(),
                        Err(_) => format!("`{}`", k.default),
                    },
                    format!("`{}`", k.flag),
                    k.meaning.to_string(),
                ]
            })
            .collect();
        assert_eq!(rows, documented, "docs/service.md's table and KEYS differ");
        let installed =
            std::fs::read_to_string(util::workspace_root().join("packaging/nfwatch.toml")).unwrap();
        let cmd = nfwatch::command();
        let watch = cmd.find_subcommand("watch").unwrap();
        for key in KEYS {
            let line = format!("{} = {}", key.name, key.default);
            assert!(
                installed
                    .lines()
                    .any(|l| l.trim_start_matches("# ") == line),
                "packaging/nfwatch.toml has no `{line}`"
            );
            assert!(
                watch.get_arguments().any(|a| {
                    a.get_long().map(|l| format!("--{l}")).as_deref() == Some(key.flag)
                        || a.get_short().map(|s| format!("-{s}")).as_deref() == Some(key.flag)
                }),
                "nfwatch watch has no {}",
                key.flag
            );
        }
    }

    /// What nfwatch says of a config file: `nfwatch watch --config FILE`
    /// with FILE holding `text`.
    fn config_result(text: &str) -> Result<nfwatch::cli::WatchArgs, String> {
        use clap::FromArgMatches;
        use std::sync::atomic::{AtomicUsize, Ordering};
        static FILES: AtomicUsize = AtomicUsize::new(0);
        let dir = util::target_dir().join("man-test-config");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.toml", FILES.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, text).unwrap();
        let matches = nfwatch::command()
            .try_get_matches_from(["nfwatch", "watch", "--config", path.to_str().unwrap()])
            .unwrap();
        let cli = nfwatch::cli::Cli::from_arg_matches(&matches).unwrap();
        let Some(nfwatch::cli::Command::Watch(mut args)) = cli.command else {
            panic!("not watch");
        };
        let watch = matches.subcommand_matches("watch").unwrap();
        nfwatch::config::apply(&mut args, watch)
            .map(|()| *args)
            .map_err(|e| {
                format!("nfwatch: {e}").replace(path.to_str().unwrap(), "/etc/nfwatch/nfwatch.toml")
            })
    }

    /// nfwatch.toml(5)'s errors are what nfwatch says, and its example is
    /// a valid file.
    #[test]
    fn config_page_says_what_nfwatch_does() {
        for (text, message) in CONFIG_ERRORS {
            assert_eq!(
                config_result(text).err().as_deref(),
                Some(*message),
                "{text}"
            );
        }
        let args = config_result(CONFIG_EXAMPLE).unwrap();
        assert_eq!(args.src, ["192.0.2.10", "2001:db8:1::/64"]);
        assert_eq!(args.flush_interval, std::time::Duration::from_millis(500));
    }

    /// The text after the options becomes sections named by its headings.
    #[test]
    fn after_help_headings_are_sections() {
        let cmd = clap::Command::new("x")
            .after_help("Exit status:\n  0  fine\n\nSignals:\n  HUP  .reopen");
        let text = after_help_sections(&cmd).to_roff();
        assert_eq!(
            text,
            ".SH \"EXIT STATUS\"\n.nf\n  0  fine\n.fi\n.SH SIGNALS\n.nf\n  HUP  .reopen\n.fi\n"
        );
    }
}
