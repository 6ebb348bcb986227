//! nfwatch: record every packet this host sends from given source addresses.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use nfwatch::{cli, receive, stats};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Watch(args) => receive::watch(args),
        cli::Command::Stats(args) => stats::stats(args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        let _ = writeln!(std::io::stderr(), "nfwatch: {e}");
        ExitCode::FAILURE
    })
}
