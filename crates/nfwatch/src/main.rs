//! nfwatch: record every packet this host sends from given source addresses.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use nfwatch::{cli, config, receive, stats, version};

fn main() -> ExitCode {
    let parsed = cli::Cli::command()
        .try_get_matches()
        .and_then(|matches| cli::Cli::from_arg_matches(&matches).map(|cli| (matches, cli)));
    let (matches, cli) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return clap_error(&e),
    };
    let result = match cli.command {
        Some(cli::Command::Watch(mut args)) => matches
            .subcommand_matches("watch")
            .map_or(Ok(()), |watch| config::apply(&mut args, watch))
            .and_then(|()| receive::watch(*args)),
        Some(cli::Command::Flows(args)) => receive::flows(*args),
        Some(cli::Command::Stats(args)) => stats::stats(args).map(|()| ExitCode::SUCCESS),
        // clap requires a subcommand unless --version is given.
        None => version::print().map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        let _ = writeln!(std::io::stderr(), "nfwatch: {e}");
        ExitCode::from(e.exit_code())
    })
}

/// A command-line error as one `nfwatch: ...` line and exit status 2, like
/// nfwatch's own usage errors; `--help` as clap prints it.
fn clap_error(e: &clap::Error) -> ExitCode {
    match cli::clap_error_line(e) {
        Some(line) => {
            let _ = writeln!(std::io::stderr(), "nfwatch: {line}");
            ExitCode::from(2)
        }
        None => e.exit(),
    }
}
