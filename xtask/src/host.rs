//! Host-side commands: test, demo, build-kmod.

use crate::kernels::{self, Kernel};
use crate::results::{Outcome, Results};
use crate::util::{self, run, step};
use crate::{deps, kmod, vm};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One VM boot may take this long (TCG is slow) before it is killed.
const TEST_BOOT_DEADLINE: Duration = Duration::from_secs(25 * 60);
/// The whole-boot deadline's factor under `--full`.
const FULL_SLOWDOWN: u32 = 4;
/// The scenario that runs README.md's commands; the host runs their `cargo` lines.
const README_SCENARIO: &str = "readme";
const DEMO_BOOT_DEADLINE: Duration = Duration::from_secs(10 * 60);

pub struct TestOpts {
    pub kernel: Option<String>,
    pub scenarios: Vec<String>,
    pub skip_static: bool,
    /// More arguments for `guest-scenarios` (fuzzing settings).
    pub guest_extra: Vec<String>,
    /// Test on the KASAN/kmemleak/lockdep kernel instead (debug_kernel.rs).
    pub debug_kernel: bool,
    /// Only the system test (system.rs), not the VM scenarios.
    pub system_only: bool,
    /// Leave the system test out.
    pub skip_system: bool,
}

/// The programs the guest runs, built on the host.
pub(crate) struct Binaries {
    pub(crate) xtask: PathBuf,
    pub(crate) nfwatch: PathBuf,
}

/// What every boot needs.
pub(crate) struct Env {
    pub(crate) vng_bin: PathBuf,
    pub(crate) bins: Binaries,
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(util::workspace_root());
    cmd
}

fn static_checks() -> Result<()> {
    step("cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--check"]))?;
    step("cargo clippy");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("cargo test");
    run(cargo().args(["test", "--workspace"]))?;
    crate::man::man()
}

fn build_binaries() -> Result<Binaries> {
    step("build nfwatch and xtask");
    run(cargo().args(["build", "--package", "nfwatch", "--package", "xtask"]))?;
    let debug = util::target_dir().join("debug");
    let bins = Binaries {
        xtask: debug.join("xtask"),
        nfwatch: debug.join("nfwatch"),
    };
    for bin in [&bins.xtask, &bins.nfwatch] {
        if !bin.exists() {
            bail!("{} was not built", bin.display());
        }
    }
    Ok(bins)
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// One guest command to boot a VM for.
pub(crate) struct GuestRun<'a> {
    /// The xtask subcommand run in the guest.
    pub(crate) cmd: &'a str,
    /// Where the guest writes its results (emptied first).
    pub(crate) out: &'a Path,
    /// More arguments for `cmd`.
    pub(crate) extra: &'a [String],
    pub(crate) deadline: Duration,
    pub(crate) machine: vm::Machine,
    /// A QEMU TCG plugin and its arguments (see vm::Boot).
    pub(crate) plugin: Option<String>,
}

/// Boots `kernel` running `run` with its module and binaries.
pub(crate) fn boot_guest(
    env: &Env,
    kernel: &Kernel,
    ko: &Path,
    run: &GuestRun,
) -> Result<std::process::ExitStatus> {
    let out = run.out;
    util::remove_dir(out)?;
    std::fs::create_dir_all(out)?;
    let mut argv = vec![
        path_arg(&env.bins.xtask),
        run.cmd.to_string(),
        "--module".into(),
        path_arg(ko),
        "--nfwatch".into(),
        path_arg(&env.bins.nfwatch),
        "--out".into(),
        path_arg(out),
    ];
    argv.extend_from_slice(run.extra);
    vm::boot(&vm::Boot {
        kernel,
        vng_bin: &env.vng_bin,
        argv,
        log: out.join("console.log"),
        deadline: run.deadline,
        machine: run.machine,
        plugin: run.plugin.clone(),
    })
}

fn failure(name: &str, detail: String) -> Outcome {
    Outcome {
        name: name.into(),
        passed: false,
        detail,
        seconds: 0.0,
    }
}

/// The scenarios `kernel` runs of those asked for (all when none are):
/// None when it runs none of them, an empty list for all.
fn scenarios_on(kernel: &Kernel, asked: &[String]) -> Option<Vec<String>> {
    match (kernel.scenarios, asked.is_empty()) {
        (None, _) => Some(asked.to_vec()),
        (Some(only), true) => Some(only.iter().map(|s| s.to_string()).collect()),
        (Some(only), false) => {
            let both: Vec<String> = asked
                .iter()
                .filter(|s| only.contains(&s.as_str()))
                .cloned()
                .collect();
            (!both.is_empty()).then_some(both)
        }
    }
}

/// One kernel's builds of the module.
struct Modules {
    /// What the scenarios test: the build that ships.
    product: PathBuf,
    /// Loaded once, with selftest=1, before them.
    selftest: PathBuf,
    /// Speaking another protocol version.
    skew: PathBuf,
}

/// Runs `scenarios` (all when empty) on one kernel and returns their outcomes.
fn test_kernel(
    env: &Env,
    kernel: &Kernel,
    modules: &Modules,
    scenarios: &[String],
    opts: &TestOpts,
) -> Vec<Outcome> {
    step(&format!(
        "VM tests on {} ({}, QEMU TCG)",
        kernel.series, kernel.version
    ));
    let out = util::target_dir().join("vm").join(&kernel.version);
    // One comma-separated list: the guest's command travels on the kernel
    // command line, which holds 2,048 bytes.
    let only = (!scenarios.is_empty()).then(|| ["--scenario".to_string(), scenarios.join(",")]);
    let extra: Vec<String> = only
        .into_iter()
        .flatten()
        .chain(["--skew-module".to_string(), path_arg(&modules.skew)])
        .chain(["--selftest-module".to_string(), path_arg(&modules.selftest)])
        .chain(opts.guest_extra.iter().cloned())
        .collect();
    let mut deadline = TEST_BOOT_DEADLINE;
    let mut extra = extra;
    if opts.guest_extra.iter().any(|a| a == "--full") {
        // Ten times the kills and unload cycles: 1,500 s ran out on 6.1.
        deadline *= FULL_SLOWDOWN;
    }
    if opts.debug_kernel {
        deadline *= crate::debug_kernel::SLOWDOWN;
        extra.extend([
            "--slow".into(),
            crate::debug_kernel::SLOWDOWN.to_string(),
            "--kmemleak".into(),
        ]);
    }
    let run = GuestRun {
        cmd: "guest-scenarios",
        out: &out,
        extra: &extra,
        deadline,
        machine: vm::Machine::Smp2,
        plugin: None,
    };
    let booted = boot_guest(env, kernel, &modules.product, &run);
    let mut outcomes = match Results::read(&out) {
        Ok(results) => results.outcomes,
        Err(e) => vec![failure("results", format!("{e:#}"))],
    };
    match booted {
        Err(e) => outcomes.push(failure("vm", format!("{e:#}"))),
        Ok(status) if !status.success() && outcomes.iter().all(|o| o.passed) => {
            outcomes.push(failure("vm", format!("guest command exited with {status}")))
        }
        Ok(_) => {}
    }
    outcomes
}

fn print_outcomes(label: &str, outcomes: &[Outcome]) -> (usize, usize) {
    for o in outcomes {
        if o.passed {
            println!("  PASS {} ({:.1} s)", o.name, o.seconds);
        } else {
            println!("  FAIL {} ({:.1} s): {}", o.name, o.seconds, o.detail);
        }
    }
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let failed = outcomes.len() - passed;
    println!("{label}: {passed} passed, {failed} failed");
    (passed, failed)
}

/// `cargo xtask test`; returns whether everything passed. The last line
/// printed is `N passed, N failed`.
pub fn test(opts: &TestOpts) -> Result<bool> {
    crate::guest::check_scenario_names(&opts.scenarios)?;
    let mut clock = util::PhaseClock::start();
    let vng_bin = deps::ensure()?;
    clock.phase("dependencies");
    if !opts.skip_static {
        static_checks()?;
        clock.phase("fmt, clippy, unit tests, man pages");
    }
    let mut results = Vec::new();
    if !opts.system_only {
        results = scenario_tests(vng_bin, opts, &mut clock)?;
    }
    // --scenario and --debug-kernel pick VM scenarios; the system test runs
    // in a plain `test` (CI's) and with --system.
    let system = !(opts.skip_system || opts.debug_kernel || !opts.scenarios.is_empty());
    if opts.system_only || system {
        match crate::system::test(opts.kernel.as_deref()) {
            Ok(per_kernel) => results.extend(
                per_kernel
                    .into_iter()
                    .map(|(kernel, outcomes)| (format!("{kernel} (system)"), outcomes)),
            ),
            Err(e) => results.push((
                "system".into(),
                vec![failure("system test", format!("{e:#}"))],
            )),
        }
        clock.phase("system test");
    }
    step("summary");
    let (mut passed, mut failed) = (0, 0);
    for (label, outcomes) in &results {
        let (p, f) = print_outcomes(label, outcomes);
        passed += p;
        failed += f;
    }
    clock.print();
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0 && passed > 0)
}

/// The guest scenarios on each tested kernel, labelled by kernel version.
fn scenario_tests(
    vng_bin: PathBuf,
    opts: &TestOpts,
    clock: &mut util::PhaseClock,
) -> Result<Vec<(String, Vec<Outcome>)>> {
    let kernels = if opts.debug_kernel {
        deps::ensure_extra(crate::debug_kernel::PACKAGES)?;
        vec![crate::debug_kernel::ensure(&vng_bin)?]
    } else {
        kernels::tested(opts.kernel.as_deref())?
    };
    let kernels: Vec<(Kernel, Vec<String>)> = kernels
        .into_iter()
        .filter_map(|k| scenarios_on(&k, &opts.scenarios).map(|s| (k, s)))
        .collect();
    let runs_readme = |scenarios: &[String]| {
        scenarios.is_empty() || scenarios.iter().any(|s| s == README_SCENARIO)
    };
    // make runs one compiler at a time: one kernel's builds per core.
    let modules = std::thread::scope(|scope| {
        let building: Vec<_> = kernels
            .iter()
            .map(|(kernel, _)| {
                scope.spawn(move || -> Result<Modules> {
                    Ok(Modules {
                        product: kmod::build(kernel, kmod::Variant::Product)?,
                        selftest: kmod::build(kernel, kmod::Variant::Selftest)?,
                        skew: kmod::build(kernel, kmod::Variant::VersionSkew)?,
                    })
                })
            })
            .collect();
        building
            .into_iter()
            .map(|b| {
                b.join()
                    .unwrap_or_else(|_| bail!("a module build thread panicked"))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let env = Env {
        vng_bin,
        bins: build_binaries()?,
    };
    if kernels.iter().any(|(_, scenarios)| runs_readme(scenarios)) {
        crate::guest::readme::run_cargo_lines()?;
    }
    for (kernel, scenarios) in &kernels {
        if runs_readme(scenarios) {
            crate::guest::readme::run_make_lines(kernel)?;
        }
    }
    clock.phase("module and binary builds");
    let results = run_scenario_vms(&env, &kernels, &modules, opts);
    clock.phase("VM scenarios (kernels side by side)");
    Ok(results)
}

/// Each kernel's scenarios in its own VM, all at once.
fn run_scenario_vms(
    env: &Env,
    kernels: &[(Kernel, Vec<String>)],
    modules: &[Modules],
    opts: &TestOpts,
) -> Vec<(String, Vec<Outcome>)> {
    // Each VM is one host thread (single-threaded TCG): the kernels' VMs
    // run at the same time.
    std::thread::scope(|scope| {
        let running: Vec<_> = kernels
            .iter()
            .zip(modules)
            .map(|((kernel, scenarios), modules)| {
                scope.spawn(move || test_kernel(env, kernel, modules, scenarios, opts))
            })
            .collect();
        kernels
            .iter()
            .zip(running)
            .map(|((kernel, _), vm)| {
                let outcomes = vm.join().unwrap_or_else(|_| {
                    vec![failure("vm", "the VM runner thread panicked".into())]
                });
                (kernel.version.clone(), outcomes)
            })
            .collect()
    })
}

/// `cargo xtask demo`.
pub fn demo() -> Result<()> {
    let vng_bin = deps::ensure()?;
    let kernel = kernels::tested(Some(kernels::DEMO_SERIES))?.remove(0);
    let ko = kmod::build(&kernel, kmod::Variant::Product)?;
    let env = Env {
        vng_bin,
        bins: build_binaries()?,
    };
    step(&format!("demo VM on {} (QEMU TCG)", kernel.version));
    let out = util::target_dir().join("vm").join("demo");
    let run = GuestRun {
        cmd: "guest-demo",
        out: &out,
        extra: &[],
        deadline: DEMO_BOOT_DEADLINE,
        machine: vm::Machine::Smp2,
        plugin: None,
    };
    let status = boot_guest(&env, &kernel, &ko, &run)?;
    if !status.success() {
        bail!(
            "the demo failed in the guest ({status}); see {}",
            out.display()
        );
    }
    Ok(())
}

/// `cargo xtask build-kmod`.
pub fn build_kmod(kernel: Option<&str>) -> Result<()> {
    deps::ensure()?;
    for kernel in kernels::tested(kernel)? {
        println!(
            "{}",
            kmod::build(&kernel, kmod::Variant::Product)?.display()
        );
    }
    Ok(())
}
