//! nfwatch: record every packet this host sends from given source addresses.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use nfwatch::{cli, receive, stats, version};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        Some(cli::Command::Watch(args)) => receive::watch(args),
        Some(cli::Command::Stats(args)) => stats::stats(args).map(|()| ExitCode::SUCCESS),
        // clap requires a subcommand unless --version is given.
        None => version::print().map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        let _ = writeln!(std::io::stderr(), "nfwatch: {e}");
        ExitCode::from(e.exit_code())
    })
}
