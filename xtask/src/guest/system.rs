//! The system test's guest side (see system.rs).

use crate::results::Outcome;
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SystemArgs {
    #[arg(long)]
    phase: String,
    #[arg(long)]
    results: PathBuf,
}

pub fn run(args: &SystemArgs) -> Result<()> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open(&args.results)?;
    let done = Outcome {
        name: format!("{} done", args.phase),
        passed: true,
        detail: String::new(),
        seconds: 0.0,
    };
    writeln!(out, "{}", serde_json::to_string(&done)?)?;
    Ok(())
}
