//! nfwatch's build, test and demo runner: `cargo xtask help`.

mod bench;
mod bytecost;
mod debug_kernel;
mod deps;
#[cfg(test)]
mod doccheck;
mod guest;
mod host;
mod insns;
mod kernels;
mod kmod;
mod man;
mod package;
mod perfdoc;
mod results;
mod system;
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
        /// Test on Debian's 6.12 built with KASAN, kmemleak, lockdep and
        /// PROVE_RCU (built once into target/debug-kernel/; about 35 min on 2
        /// cores), with `--full`'s counts and the deadlines times 6.
        #[arg(long)]
        debug_kernel: bool,
        /// Requests the fuzz_netlink scenario sends.
        #[arg(long)]
        fuzz_requests: Option<u64>,
        /// The reliability scenarios' full counts (200 subscribers killed,
        /// 50 unload cycles, rmmod under 1 s asserted); the default is a
        /// quicker run for CI.
        #[arg(long)]
        full: bool,
        /// Only the system test: the Debian packages installed in a Debian 12
        /// image booted with systemd, per kernel (part of a plain `test`,
        /// not of one with --scenario).
        #[arg(long, conflicts_with_all = ["skip_system", "scenario", "debug_kernel"])]
        system: bool,
        /// Leave the system test out.
        #[arg(long)]
        skip_system: bool,
    },
    /// Build the Debian packages nfwatch-dkms and nfwatch into target/debian/.
    Package,
    /// Boot a VM and fuzz the nfwatch Generic Netlink family.
    FuzzNetlink {
        /// Requests in all (a fifth from an unprivileged process).
        #[arg(long, default_value_t = guest::fuzz::DEFAULT_REQUESTS)]
        requests: u64,
        /// Only this kernel series (e.g. 6.12) or exact version.
        #[arg(long)]
        kernel: Option<String>,
        /// The PRNG seed (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// On the debug kernel (see `test --debug-kernel`).
        #[arg(long)]
        debug_kernel: bool,
    },
    /// Boot a 6.12 VM and show nfwatch recording live traffic.
    Demo,
    /// Build the kernel module for the tested kernels (or one).
    BuildKmod {
        #[arg(long)]
        kernel: Option<String>,
    },
    /// nfwatch's man pages and bash, zsh and fish completions, from its
    /// clap definition, into target/man/{man8,man5,completions}.
    Man,
    /// Benchmark against tcpdump and NFLOG in one 6.12 VM (not part of `test`).
    Bench {
        /// Rounds over all configurations (medians and quartiles are reported).
        #[arg(long, default_value_t = 9)]
        rounds: usize,
        /// Seconds the generator sends per measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// udp and/or tcp (repeatable; default both).
        #[arg(long)]
        proto: Vec<String>,
        /// Also profile each configuration once (UDP) with perf in the guest.
        #[arg(long)]
        perf: bool,
        /// Count instructions instead of seconds: 1 vCPU under QEMU
        /// `-icount shift=0,sleep=off`, so every instruction the guest runs
        /// takes 1 ns of its time. Repeatable to a fraction of a percent
        /// whatever the host does; the tool and the sender share the CPU,
        /// so packets/s falls by the tool's whole cost.
        #[arg(long)]
        icount: bool,
        /// Instead of the rounds: count the guest kernel's instructions per
        /// UDP packet by function, each configuration once, in one --icount
        /// boot under a QEMU plugin (xtask/tcg-insns).
        #[arg(long)]
        insns: bool,
        /// Then keep this run's results in docs/bench/ and write
        /// docs/performance.md and README.md's table from them.
        #[arg(long)]
        write_docs: bool,
        /// Instead of a run: write docs/performance.md and README.md's
        /// table from the results in docs/bench/.
        #[arg(long, conflicts_with_all = ["write_docs", "icount", "insns", "perf"])]
        docs_only: bool,
    },
    /// (in the VM) Run the scenarios.
    #[command(hide = true)]
    GuestScenarios(guest::GuestArgs),
    /// (in the system test's guest) One boot's checks.
    #[command(hide = true)]
    GuestSystem(guest::system::SystemArgs),
    /// (in the VM) The demo.
    #[command(hide = true)]
    GuestDemo(guest::GuestArgs),
    /// (in the VM, peer namespace) TCP listeners that read to EOF.
    #[command(hide = true)]
    GuestPeer(guest::PeerArgs),
    /// (in the VM, peer namespace) Accepts one connection and writes to it on SIGUSR1.
    #[command(hide = true)]
    GuestPush(guest::attribution::PushArgs),
    /// (in the VM) An IPFIX collector over TCP: one connection's messages.
    #[command(hide = true)]
    GuestCollect(guest::ipfix::CollectArgs),
    /// (in the VM) One netlink fuzzing client; prints its tally as JSON.
    #[command(hide = true)]
    GuestFuzzClient(guest::fuzz::ClientArgs),
    /// (in the VM) The benchmark's measurements.
    #[command(hide = true)]
    GuestBench(guest::BenchArgs),
    /// (in the VM) The benchmark's traffic generator.
    #[command(hide = true)]
    GuestGen(guest::GenArgs),
    /// (in the VM, unprivileged) Binds portids it is given as they come free.
    #[command(hide = true)]
    GuestPortidThief,
    /// (in the VM, own namespaces) Subscribes and unsubscribes piles of sockets.
    #[command(hide = true)]
    GuestSubscriberPile,
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
            debug_kernel,
            fuzz_requests,
            full,
            system,
            skip_system,
        } => host::test(&host::TestOpts {
            kernel,
            scenarios: scenario,
            skip_static,
            guest_extra: fuzz_requests
                .map(|n| vec!["--fuzz-requests".into(), n.to_string()])
                .into_iter()
                .flatten()
                // The debug kernel's run is the thorough one: full counts.
                .chain((full || debug_kernel).then(|| "--full".to_string()))
                .collect(),
            debug_kernel,
            system_only: system,
            skip_system,
        }),
        Cmd::FuzzNetlink {
            requests,
            kernel,
            seed,
            debug_kernel,
        } => {
            let mut guest_extra = vec!["--fuzz-requests".into(), requests.to_string()];
            if let Some(seed) = seed {
                guest_extra.extend(["--fuzz-seed".into(), seed.to_string()]);
            }
            host::test(&host::TestOpts {
                kernel,
                scenarios: vec!["fuzz_netlink".into()],
                skip_static: true,
                guest_extra,
                debug_kernel,
                system_only: false,
                skip_system: true,
            })
        }
        Cmd::Package => package::package().map(|()| true),
        Cmd::Demo => host::demo().map(|()| true),
        Cmd::Man => man::man().map(|()| true),
        Cmd::BuildKmod { kernel } => host::build_kmod(kernel.as_deref()).map(|()| true),
        Cmd::GuestScenarios(args) => guest::scenarios(&args),
        Cmd::GuestSystem(args) => guest::system::system(&args).map(|()| true),
        Cmd::GuestDemo(args) => guest::demo(&args).map(|()| true),
        Cmd::GuestPeer(args) => guest::peer(&args).map(|()| true),
        Cmd::GuestPush(args) => guest::attribution::push(&args).map(|()| true),
        Cmd::GuestCollect(args) => guest::ipfix::collect(&args).map(|()| true),
        Cmd::GuestFuzzClient(args) => guest::fuzz::client(&args).map(|()| true),
        Cmd::Bench {
            docs_only: true, ..
        } => perfdoc::write().map(|()| true),
        Cmd::Bench {
            rounds,
            seconds,
            proto,
            perf,
            icount,
            insns,
            write_docs,
            docs_only: false,
        } => bench::bench(&bench::BenchOpts {
            rounds,
            seconds,
            perf,
            icount,
            insns,
            write_docs,
            protos: if proto.is_empty() {
                vec!["udp".into(), "tcp".into()]
            } else {
                proto
            },
        })
        .map(|()| true),
        Cmd::GuestBench(args) => guest::bench::bench(&args).map(|()| true),
        Cmd::GuestGen(args) => guest::generator::gen(&args).map(|()| true),
        Cmd::GuestPortidThief => guest::isolation::portid_thief().map(|()| true),
        Cmd::GuestSubscriberPile => guest::isolation::subscriber_pile().map(|()| true),
    }
}
