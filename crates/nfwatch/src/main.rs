//! nfwatch: record every packet this host sends from given source addresses.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use nfwatch::{cli, config, receive, stats, version};

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Some(cli::Command::Watch(mut args)) => matches
            .subcommand_matches("watch")
            .map_or(Ok(()), |watch| config::apply(&mut args, watch))
            .and_then(|()| receive::watch(args)),
        Some(cli::Command::Stats(args)) => stats::stats(args).map(|()| ExitCode::SUCCESS),
        // clap requires a subcommand unless --version is given.
        None => version::print().map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        let _ = writeln!(std::io::stderr(), "nfwatch: {e}");
        ExitCode::from(e.exit_code())
    })
}
