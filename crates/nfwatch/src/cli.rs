//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use nfwatch_proto::record_layout;
use nfwatch_proto::{
    FlowSettings, OwnerFilter, Prefix, NFWATCH_MAX_FILTERS, NFWATCH_MAX_FLOWS,
    NFWATCH_MAX_PREFIXES, NFWATCH_MAX_TIMEOUT_MS,
};

use crate::cgroup::Cgroups;
use crate::error::{Error, Result};
use crate::export::ExportUrl;
use crate::writers::Format;

/// The smallest --rcvbuf: the kernel doubles it to 128 KiB, which holds
/// three default 32 KiB batches plus the room it keeps for replies.
pub const MIN_RCVBUF: u64 = 64 * 1024;

/// The exit codes, for `--help`.
macro_rules! exit_codes {
    () => {
        "\
Exit status:
  0  success, also when the reader of stdout went away (`nfwatch watch ... | head -3`)
  1  runtime failure: module not loaded, unloaded while recording or of another
     protocol version, permission denied, kernel error, output error
  2  usage error: an unknown option, a bad value, a bad --src
  Every failure is one line on stderr, `nfwatch: ` and the cause."
    };
}

const EXIT_CODES: &str = exit_codes!();

#[derive(Debug, Parser)]
#[command(
    name = "nfwatch",
    about = "Record every packet this host sends from given source addresses",
    after_help = EXIT_CODES,
    disable_version_flag = true,
    args_conflicts_with_subcommands = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print the CLI's version and, when it is loaded, the kernel module's.
    #[arg(short = 'V', long = "version", exclusive = true)]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Subscribe and write one line per packet sent from the given sources.
    #[command(after_help = WATCH_AFTER_HELP)]
    Watch(Box<WatchArgs>),
    /// Subscribe to flows: the kernel aggregates the packets sent from the
    /// given sources and nfwatch writes one line per flow once it ends.
    #[command(after_help = FLOWS_AFTER_HELP)]
    Flows(Box<FlowsArgs>),
    /// Print the module's counters.
    #[command(after_help = EXIT_CODES)]
    Stats(StatsArgs),
}

/// What `watch --help` says after the options.
const WATCH_AFTER_HELP: &str = concat!(
    "\
Signals:
  SIGINT, SIGTERM  unsubscribe, write every record received, print the summary, exit 0
                   (a second one stops waiting for the kernel's reply)
  SIGHUP           with -o FILE: write every record received to the file, then reopen
                   FILE by path (created again if it was moved away, as by logrotate);
                   on stdout: write every record received
  SIGUSR1          print the counters so far to stderr
  --count and --duration stop it as SIGTERM does; when the module is unloaded under
  it, it writes every record received, prints the summary and exits 1.

",
    exit_codes!()
);

/// What `flows --help` says after the options.
const FLOWS_AFTER_HELP: &str = concat!(
    "\
Flows:
  A flow is the packets whose records agree in everything but time, length and
  segments. It ends when idle --inactive-timeout, at its first packet
  --active-timeout or more after its start, when the table of --max-flows is full
  (the least recently used goes), and when nfwatch stops (its open flows are
  written then). Every `watch` option applies but --count, --config and
  --format legacy.

Signals:
  SIGINT, SIGTERM  unsubscribe, write every flow (the open ones ended), print the
                   summary, exit 0
  SIGHUP           as for watch: reopen -o FILE
  SIGUSR1          print the counters so far to stderr

",
    exit_codes!()
);

/// `nfwatch flows`: every `watch` option, and the flow table's settings.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    #[command(flatten)]
    pub watch: WatchArgs,
    /// A flow that has sent nothing for SECS seconds ends (decimals
    /// allowed; 0.001 to 604800).
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = parse_timeout)]
    pub inactive_timeout: Duration,
    /// A flow ends at its first packet SECS seconds or more after its
    /// start, so a long one is reported in parts (0.001 to 604800).
    #[arg(long, value_name = "SECS", default_value = "1800", value_parser = parse_timeout)]
    pub active_timeout: Duration,
    /// Flows open at most; when the table is full, the least recently
    /// used ends (evicted) to make room. --rcvbuf is raised to at least
    /// 128 bytes a flow, so that those open when nfwatch stops all arrive.
    #[arg(long, value_name = "N", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(NFWATCH_MAX_FLOWS)))]
    pub max_flows: u32,
}

impl FlowsArgs {
    /// The settings the kernel gets; a `watch` option flows do not take
    /// is a usage error naming it.
    pub fn flow_settings(&self) -> Result<FlowSettings> {
        let refuse =
            |option: &str, why: &str| Err(Error::Usage(format!("{option}: not for flows ({why})")));
        if self.watch.count.is_some() {
            return refuse("--count", "use --duration");
        }
        if self.watch.format == Format::Legacy {
            return refuse("--format legacy", "use text, csv, jsonl or ipfix");
        }
        if self.watch.config.is_some() {
            return refuse("--config", "the configuration file is watch's");
        }
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Ok(FlowSettings {
            inactive_ms: Some(ms(self.inactive_timeout)),
            active_ms: Some(ms(self.active_timeout)),
            max_flows: Some(self.max_flows),
        })
    }
}

/// A flow timeout: a duration as `parse_duration` reads it, from 1 ms to
/// NFWATCH_MAX_TIMEOUT_MS (the kernel takes whole milliseconds).
pub fn parse_timeout(text: &str) -> std::result::Result<Duration, String> {
    let max = Duration::from_millis(NFWATCH_MAX_TIMEOUT_MS.into());
    let range = || format!("must be from 0.001 to {} seconds", max.as_secs());
    let duration = parse_duration(text).map_err(|e| format!("{e}; {}", range()))?;
    if duration < Duration::from_millis(1) || duration > max {
        return Err(range());
    }
    Ok(duration)
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Source address or prefix to watch (repeatable).
    #[arg(
        long = "src",
        value_name = "ADDR[/LEN]",
        required_unless_present = "config"
    )]
    pub src: Vec<String>,
    /// Only packets of sockets owned by this uid (repeatable; with
    /// --cgroup, both must hold).
    #[arg(long = "uid", value_name = "UID")]
    pub uids: Vec<u32>,
    /// Only packets of sockets in this cgroup v2 or below it (repeatable):
    /// its path under the cgroup2 mount, as /system.slice/nginx.service.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<String>,
    /// Only packets whose socket's sending process has this command name
    /// (repeatable), as /proc/PID/comm shows it: 15 bytes at most.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Record the packets of every network namespace, those there are and
    /// those created later (the `netns` field tells them apart). Only from
    /// the initial network namespace, with CAP_NET_ADMIN over the initial
    /// user namespace.
    #[arg(long)]
    pub all_netns: bool,
    /// Read settings from this TOML file; flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output file, `-` for stdout (the default); created or truncated
    /// only once the module has accepted the subscription.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format (its fields: RECORD FIELDS in the nfwatch-watch(8) man
    /// page, and docs/output-formats.md); ipfix writes an IPFIX file
    /// (RFC 5655), not lines.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// IPFIX: the Private Enterprise Number nfwatch's own elements (uid,
    /// pid, comm, cgroup, netns) are sent under. The default, 32473, is the
    /// one RFC 5612 sets aside for documentation: register your own
    /// (free, at IANA) to keep these fields apart from others'.
    #[arg(long, value_name = "PEN", default_value_t = 32473)]
    pub ipfix_pen: u32,
    /// IPFIX: the Observation Domain ID of every message.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    pub odid: u32,
    /// Also send every record as IPFIX to a collector (repeatable):
    /// udp://HOST:PORT or tcp://HOST:PORT (an IPv6 address in brackets).
    /// Without -o, records go to the collectors only.
    #[arg(long = "export", value_name = "URL")]
    pub exports: Vec<ExportUrl>,
    /// IPFIX over UDP: the largest IP packet a message makes (headers
    /// included).
    #[arg(long, value_name = "BYTES", default_value_t = 1400,
          value_parser = clap::value_parser!(u16).range(576..))]
    pub export_mtu: u16,
    /// IPFIX over TCP: bytes of messages kept while a collector is away;
    /// what does not fit is counted as lost in export.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(65536..=1 << 30))]
    pub export_queue: u64,
    /// Stop after writing N records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after SECS seconds (decimals allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Append to FILE instead of truncating it.
    #[arg(long, requires = "output")]
    pub append: bool,
    /// Longest time a record may wait in nfwatch's buffer before it is
    /// written to a regular file (to a terminal or pipe: 0.1 s at most).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// Also write the end-of-run counters as one JSON object to FILE
    /// (`-` for stderr).
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Print no start, status or summary lines (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
    /// Socket receive buffer to request (at least 64 KiB: the kernel
    /// queues a batch only where it leaves room for its replies).
    #[arg(long, value_name = "BYTES", default_value_t = 8 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(MIN_RCVBUF..=i32::MAX as u64))]
    pub rcvbuf: u64,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl WatchArgs {
    /// The output file; None for stdout (no -o, or `-o -`).
    pub fn output_file(&self) -> Option<&std::path::Path> {
        self.output.as_deref().filter(|p| p.as_os_str() != "-")
    }
}

pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| "not a number of seconds".to_string())?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err("must be greater than 0".into());
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| "too large".into())
}

/// A command-line error of clap's as the one line nfwatch prints after
/// "nfwatch: ", or None for what clap prints as it is (`--help`, and the
/// help that a bare `nfwatch` gets).
///
/// The line is clap's message (its first paragraph, without the usage and
/// the "For more information" line after it), with a list clap puts on
/// lines of their own (required arguments, possible values) joined onto it,
/// and a suggestion clap has (a similar option, value or subcommand) added.
pub fn clap_error_line(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return None;
    }
    let rendered = error.render().to_string();
    let message = rendered.split("\n\n").next().unwrap_or_default();
    let message = message.strip_prefix("error:").unwrap_or(message);
    let mut line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        line = error
            .kind()
            .as_str()
            .unwrap_or("invalid command line")
            .into();
    }
    let suggested = [
        ContextKind::SuggestedArg,
        ContextKind::SuggestedValue,
        ContextKind::SuggestedSubcommand,
    ]
    .into_iter()
    .find_map(|kind| match error.get(kind) {
        Some(ContextValue::String(one)) => Some(vec![one.clone()]),
        Some(ContextValue::Strings(some)) if !some.is_empty() => Some(some.clone()),
        _ => None,
    });
    if let Some(suggested) = suggested {
        let quoted: Vec<String> = suggested.iter().map(|s| format!("'{s}'")).collect();
        line.push_str(&format!("; did you mean {}?", quoted.join(" or ")));
    }
    Some(line)
}

/// The --src values as prefixes; the error names the argument and value.
pub fn parse_prefixes(values: &[String]) -> Result<Vec<Prefix>> {
    if values.len() > NFWATCH_MAX_PREFIXES {
        return Err(Error::Usage(format!(
            "--src: at most {NFWATCH_MAX_PREFIXES} prefixes, got {}",
            values.len()
        )));
    }
    values
        .iter()
        .map(|value| {
            value
                .parse::<Prefix>()
                .map_err(|e| Error::Usage(format!("--src {value}: {e}")))
        })
        .collect()
}

/// `--uid` and `--cgroup` as the kernel takes them: each cgroup by its id
/// and depth, looked up in `cgroups`' mount.
pub fn parse_owner_filter(args: &WatchArgs, cgroups: &Cgroups) -> Result<OwnerFilter> {
    let too_many = |flag: &str, n: usize| {
        Error::Usage(format!(
            "{flag}: at most {NFWATCH_MAX_FILTERS} values, got {n}"
        ))
    };
    for (flag, n) in [
        ("--uid", args.uids.len()),
        ("--cgroup", args.cgroups.len()),
        ("--comm", args.comms.len()),
    ] {
        if n > NFWATCH_MAX_FILTERS {
            return Err(too_many(flag, n));
        }
    }
    let cgroups = args
        .cgroups
        .iter()
        .map(|path| {
            cgroups
                .subtree(path)
                .map_err(|e| Error::Usage(format!("--cgroup {path}: {e}")))
        })
        .collect::<Result<_>>()?;
    let comms = args
        .comms
        .iter()
        .map(|name| comm_name(name).map_err(|e| Error::Usage(format!("--comm {name}: {e}"))))
        .collect::<Result<_>>()?;
    Ok(OwnerFilter {
        uids: args.uids.clone(),
        cgroups,
        comms,
    })
}

/// A command name the kernel can hold: 1 to 15 bytes (TASK_COMM_LEN - 1),
/// no NUL. A longer name never matches, the kernel having cut it, so it is
/// refused rather than matched against nothing.
fn comm_name(name: &str) -> std::result::Result<Vec<u8>, String> {
    const MAX: usize = record_layout::COMM_LEN - 1;
    match name.len() {
        0 => Err("an empty command name".into()),
        len if len > MAX => Err(format!(
            "longer than the {MAX} bytes the kernel keeps of a command name (it would be {:?})",
            String::from_utf8_lossy(&name.as_bytes()[..MAX])
        )),
        _ if name.contains('\0') => Err("a command name with a NUL byte".into()),
        _ => Ok(name.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nfwatch").chain(args.iter().copied()))
    }

    fn watch(args: &[&str]) -> WatchArgs {
        match parse(args).unwrap().command {
            Some(Command::Watch(watch)) => *watch,
            _ => panic!("not watch"),
        }
    }

    #[test]
    fn watch_defaults() {
        let args = watch(&["watch", "--src", "10.0.0.1", "--src", "fd00::/8"]);
        assert_eq!(args.src, ["10.0.0.1", "fd00::/8"]);
        assert_eq!(args.format, Format::Text);
        assert_eq!(args.rcvbuf, 8 * 1024 * 1024);
        assert_eq!(
            (args.count, args.duration, args.append),
            (None, None, false)
        );
        assert_eq!(args.flush_interval, Duration::from_secs(1));
        assert_eq!(args.output_file(), None);
    }

    #[test]
    fn dash_is_stdout() {
        let args = watch(&["watch", "--src", "10.0.0.1", "-o", "-"]);
        assert_eq!(args.output_file(), None);
        let args = watch(&["watch", "--src", "10.0.0.1", "-o", "./-"]);
        assert_eq!(args.output_file(), Some(std::path::Path::new("./-")));
    }

    #[test]
    fn version_stands_alone() {
        assert!(parse(&["--version"]).unwrap().version);
        assert!(parse(&["--version", "stats"]).is_err());
    }

    #[test]
    fn every_option_has_help() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        for command in std::iter::once(&cli).chain(cli.get_subcommands()) {
            for arg in command.get_arguments() {
                assert!(
                    arg.get_help().is_some(),
                    "{} --{:?} has no help",
                    command.get_name(),
                    arg.get_long()
                );
            }
        }
    }

    #[test]
    fn watch_options() {
        let args = watch(&[
            "watch",
            "--src",
            "10.0.0.1",
            "-o",
            "out.csv",
            "--format",
            "csv",
            "--count",
            "5",
            "--duration",
            "1.5",
            "--append",
            "--rcvbuf",
            "65536",
            "--flush-interval",
            "0.25",
            "--summary-json",
            "-",
            "--quiet",
        ]);
        assert_eq!(args.flush_interval, Duration::from_millis(250));
        assert_eq!(args.summary_json, Some(PathBuf::from("-")));
        assert!(args.quiet);
        assert_eq!(args.format, Format::Csv);
        assert_eq!(args.count, Some(5));
        assert_eq!(args.duration, Some(Duration::from_millis(1500)));
        assert!(args.append);
        assert_eq!(args.rcvbuf, 65536);
    }

    #[test]
    fn comm_filters() {
        let cgroups = Cgroups::with_root(PathBuf::from("/nonexistent"));
        let filter = |names: &[&str]| {
            let mut args = vec!["watch", "--src", "10.0.0.1"];
            for name in names {
                args.extend(["--comm", name]);
            }
            parse_owner_filter(&watch(&args), &cgroups).map_err(|e| e.to_string())
        };
        assert_eq!(
            filter(&["nginx", "systemd-resolve"]).unwrap().comms,
            [b"nginx".to_vec(), b"systemd-resolve".to_vec()]
        );
        let long = filter(&["systemd-resolved"]).unwrap_err();
        assert!(
            long.contains("--comm systemd-resolved: longer than the 15 bytes"),
            "{long}"
        );
        assert!(long.contains("\"systemd-resolve\""), "{long}");
        assert!(filter(&[""]).unwrap_err().contains("empty"));
        let many: Vec<String> = (0..=NFWATCH_MAX_FILTERS).map(|i| format!("p{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(filter(&many)
            .unwrap_err()
            .contains("--comm: at most 64 values"));
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["watch"][..],
            &["watch", "--src", "10.0.0.1", "--format", "xml"],
            &["watch", "--src", "10.0.0.1", "--count", "0"],
            &["watch", "--src", "10.0.0.1", "--duration", "-1"],
            &["watch", "--src", "10.0.0.1", "--duration", "abc"],
            &["watch", "--src", "10.0.0.1", "--append"],
            &["watch", "--src", "10.0.0.1", "--rcvbuf", "0"],
            &["watch", "--src", "10.0.0.1", "--rcvbuf", "65535"],
            &["watch", "--src", "10.0.0.1", "--flush-interval", "0"],
            &["frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&["stats", "--json"]).is_ok());
    }

    #[test]
    fn clap_errors_are_one_line() {
        let line = |args: &[&str]| clap_error_line(&parse(args).unwrap_err());
        for (args, expected) in [
            (
                &["watch", "--src", "10.0.0.1", "--frobnicate"][..],
                "unexpected argument '--frobnicate' found; did you mean '--format'?",
            ),
            (
                &["watch", "--src", "10.0.0.1", "--zzz"],
                "unexpected argument '--zzz' found",
            ),
            (
                &["watch", "--src", "10.0.0.1", "--cuont", "5"],
                "unexpected argument '--cuont' found; did you mean '--count'?",
            ),
            (
                &["watch", "--src", "10.0.0.1", "--count", "0"],
                "invalid value '0' for '--count <N>': 0 is not in 1..18446744073709551615",
            ),
            (
                &["watch", "--src", "10.0.0.1", "--format", "xml"],
                "invalid value 'xml' for '--format <FORMAT>' \
                 [possible values: text, csv, jsonl, legacy, ipfix]",
            ),
            (
                &["watch"],
                "the following required arguments were not provided: --src <ADDR[/LEN]>",
            ),
            (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        ] {
            assert_eq!(line(args).as_deref(), Some(expected), "{args:?}");
        }
        assert_eq!(line(&["--help"]), None);
        assert_eq!(line(&["watch", "--help"]), None);
        assert_eq!(line(&[]), None);
    }

    #[test]
    fn src_errors_name_the_argument() {
        let message = |value: &str| {
            parse_prefixes(&[value.to_string()])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(message("10.0.0.300"), "--src 10.0.0.300: invalid address");
        assert_eq!(
            message("10.0.0.5/24"),
            "--src 10.0.0.5/24: host bits set, did you mean 10.0.0.0/24?"
        );
        assert_eq!(
            message("10.0.0.0/33"),
            "--src 10.0.0.0/33: prefix length longer than 32"
        );
        let too_many = vec!["10.0.0.1".to_string(); NFWATCH_MAX_PREFIXES + 1];
        assert!(parse_prefixes(&too_many).is_err());
    }

    fn flows(args: &[&str]) -> FlowsArgs {
        match parse(args).unwrap().command {
            Some(Command::Flows(flows)) => *flows,
            _ => panic!("not flows"),
        }
    }

    #[test]
    fn flows_defaults_and_options() {
        let args = flows(&["flows", "--src", "10.0.0.1"]);
        assert_eq!(
            args.flow_settings().unwrap(),
            FlowSettings {
                inactive_ms: Some(15_000),
                active_ms: Some(1_800_000),
                max_flows: Some(65_536),
            }
        );
        assert_eq!(args.watch.format, Format::Text);
        let args = flows(&[
            "flows",
            "--src",
            "10.0.0.1",
            "--inactive-timeout",
            "0.5",
            "--active-timeout",
            "604800",
            "--max-flows",
            "4194304",
            "--format",
            "ipfix",
            "-o",
            "f.ipfix",
            "--duration",
            "2",
        ]);
        assert_eq!(
            args.flow_settings().unwrap(),
            FlowSettings {
                inactive_ms: Some(500),
                active_ms: Some(NFWATCH_MAX_TIMEOUT_MS),
                max_flows: Some(NFWATCH_MAX_FLOWS),
            }
        );
        assert_eq!(args.watch.duration, Some(Duration::from_secs(2)));
    }

    #[test]
    fn flows_usage_errors() {
        let line = |args: &[&str]| clap_error_line(&parse(args).unwrap_err());
        for (option, value) in [
            ("--inactive-timeout", "0"),
            ("--inactive-timeout", "0.0005"),
            ("--active-timeout", "604800.001"),
            ("--active-timeout", "abc"),
            ("--max-flows", "0"),
            ("--max-flows", "4194305"),
        ] {
            let error = line(&["flows", "--src", "10.0.0.1", option, value]).unwrap();
            assert!(
                error.starts_with(&format!("invalid value '{value}' for '{option} <")),
                "{error}"
            );
        }
        assert_eq!(
            line(&["flows", "--src", "10.0.0.1", "--inactive-timeout", "0.0005"]).unwrap(),
            "invalid value '0.0005' for '--inactive-timeout <SECS>': must be from 0.001 to 604800 seconds"
        );
        let refused = |args: &[&str]| {
            flows(args)
                .flow_settings()
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused(&["flows", "--src", "10.0.0.1", "--format", "legacy"]),
            "--format legacy: not for flows (use text, csv, jsonl or ipfix)"
        );
        assert_eq!(
            refused(&["flows", "--src", "10.0.0.1", "--count", "5"]),
            "--count: not for flows (use --duration)"
        );
        assert!(refused(&["flows", "--config", "x.toml"]).starts_with("--config: not for flows"));
        assert!(parse(&["flows"]).is_err(), "--src is required");
    }
}
