//! nfwatch: record every packet this host sends from given source addresses.
//!
//! The binary's code as a library, so that tools outside it (the man pages,
//! shell completions and documentation checks of `cargo xtask`) use the very
//! command-line definition the binary parses.

pub mod cgroup;
pub mod cli;
pub mod config;
mod error;
pub mod export;
mod netlink;
mod notify;
mod rebuilt;
pub mod receive;
mod signals;
mod sockets;
pub mod stats;
mod status;
mod subscribe;
mod summary_json;
pub mod version;
mod writers;

/// The record's field names, in order: the CSV header line (the man pages
/// list them).
pub use writers::CSV_HEADER;

/// The command line `nfwatch` parses.
pub fn command() -> clap::Command {
    <cli::Cli as clap::CommandFactory>::command()
}
