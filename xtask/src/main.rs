//! nfwatch's build, test and demo runner: `cargo xtask help`.

mod deps;
mod guest;
mod host;
mod kernels;
mod kmod;
mod results;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "nfwatch build, VM test and demo runner")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Everything CI runs: deps, fmt, clippy, unit tests, module build, VM scenarios.
    Test {
        /// Only this kernel series (e.g. 6.12) or exact version.
        #[arg(long)]
        kernel: Option<String>,
        /// Only this scenario (repeatable).
        #[arg(long)]
        scenario: Vec<String>,
        /// Skip cargo fmt, clippy and unit tests.
        #[arg(long)]
        skip_static: bool,
    },
    /// Boot a 6.12 VM and show nfwatch recording live traffic.
    Demo,
    /// Build the kernel module for the tested kernels (or one).
    BuildKmod {
        #[arg(long)]
        kernel: Option<String>,
    },
    /// (in the VM) Run the scenarios.
    #[command(hide = true)]
    GuestScenarios(guest::GuestArgs),
    /// (in the VM) The demo.
    #[command(hide = true)]
    GuestDemo(guest::GuestArgs),
    /// (in the VM, peer namespace) TCP listeners that read to EOF.
    #[command(hide = true)]
    GuestPeer(guest::PeerArgs),
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Cmd) -> Result<bool> {
    match command {
        Cmd::Test {
            kernel,
            scenario,
            skip_static,
        } => host::test(&host::TestOpts {
            kernel,
            scenarios: scenario,
            skip_static,
        }),
        Cmd::Demo => host::demo().map(|()| true),
        Cmd::BuildKmod { kernel } => host::build_kmod(kernel.as_deref()).map(|()| true),
        Cmd::GuestScenarios(args) => guest::scenarios(&args),
        Cmd::GuestDemo(args) => guest::demo(&args).map(|()| true),
        Cmd::GuestPeer(args) => guest::peer(&args).map(|()| true),
    }
}
