//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use nfwatch_proto::{Prefix, NFWATCH_MAX_PREFIXES};

use crate::error::{Error, Result};
use crate::writers::Format;

/// The smallest --rcvbuf: the kernel doubles it to 128 KiB, which holds
/// three default 32 KiB batches plus the room it keeps for replies.
pub const MIN_RCVBUF: u64 = 64 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "nfwatch",
    version,
    about = "Record every packet this host sends from given source addresses"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Subscribe and write one line per packet sent from the given sources.
    Watch(WatchArgs),
    /// Print the module's counters.
    Stats(StatsArgs),
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
    /// Read settings from this TOML file; flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output file (default: stdout); created or truncated.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Stop after writing N records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after SECS seconds (decimals allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Append to FILE instead of truncating it.
    #[arg(long, requires = "output")]
    pub append: bool,
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

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| "not a number of seconds".to_string())?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err("must be greater than 0".into());
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| "too large".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nfwatch").chain(args.iter().copied()))
    }

    fn watch(args: &[&str]) -> WatchArgs {
        match parse(args).unwrap().command {
            Command::Watch(watch) => watch,
            Command::Stats(_) => panic!("not watch"),
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
        ]);
        assert_eq!(args.format, Format::Csv);
        assert_eq!(args.count, Some(5));
        assert_eq!(args.duration, Some(Duration::from_millis(1500)));
        assert!(args.append);
        assert_eq!(args.rcvbuf, 65536);
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
            &["frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&["stats", "--json"]).is_ok());
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
}
