//! `cargo xtask bench --insns`: where the guest kernel's instructions go,
//! by function, per UDP packet sent, in each benchmark configuration. One
//! `--icount` boot runs each configuration once under the tcg-insns plugin
//! (xtask/tcg-insns); this side symbolizes the plugin's dumps with the
//! guest's /proc/kallsyms of the same run and tabulates them.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

/// The guest address of the page whose one `ret` has the plugin dump its
/// counts (a user address nothing else maps).
pub const TRIGGER: u64 = 0x7e57_0000;
/// The plugin's dumps in the guest's output directory: `insns-dump.N`.
pub const DUMPS: &str = "insns-dump";
/// What the guest ran, in its output directory.
pub const RUNS: &str = "insns-runs.json";
/// Functions in the table, at most.
const ROWS: usize = 60;

/// One configuration's run: the plugin's dump `dump` covers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub config: usize,
    pub dump: usize,
    pub packets: u64,
}

/// The guest's text symbols of one run, sorted by address: "name" or
/// "name [module]".
pub fn kallsyms_file(config: usize) -> String {
    format!("kallsyms-c{config}.txt")
}

struct Symbols(Vec<(u64, String)>);

impl Symbols {
    /// Lines of /proc/kallsyms: `address type name [module]`, text only.
    fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                if !matches!(kind, "t" | "T" | "w" | "W") {
                    return None;
                }
                Some(match fields.next() {
                    Some(module) => (addr, format!("{name} {module}")),
                    None => (addr, name.to_string()),
                })
            })
            .collect();
        symbols.sort();
        Self(symbols)
    }

    /// The function holding `addr`: the last symbol at or below it.
    fn find(&self, addr: u64) -> &str {
        match self.0.partition_point(|(start, _)| *start <= addr) {
            0 => "?",
            i => &self.0[i - 1].1,
        }
    }
}

/// Instructions per packet by function, and the user-space total.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    kernel: HashMap<String, f64>,
    user: f64,
}

/// What target/bench/insns.json holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub command: String,
    pub date: String,
    pub commit: String,
    pub kernel: String,
    /// The configurations' names, by number.
    pub configs: Vec<String>,
    pub runs: Vec<Run>,
    pub profiles: Vec<Profile>,
}

impl Report {
    /// The markdown tables: totals per configuration, then the functions
    /// whose count moves most.
    pub fn table(&self) -> String {
        table(&self.runs, &self.profiles, &self.configs)
    }
}

impl Profile {
    /// A dump: `user N`, then `address instructions runs` per kernel block.
    fn parse(dump: &str, symbols: &Symbols, packets: u64) -> Result<Self> {
        ensure_packets(packets)?;
        let per_packet = |n: u64| n as f64 / packets as f64;
        let mut kernel: HashMap<String, u64> = HashMap::new();
        let mut user = None;
        for line in dump.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = || format!("bad dump line {line:?}");
            match fields[..] {
                ["user", n] => user = Some(n.parse::<u64>().with_context(bad)?),
                [addr, insns, runs] => {
                    let addr = u64::from_str_radix(addr, 16).with_context(bad)?;
                    let total = insns.parse::<u64>().with_context(bad)?
                        * runs.parse::<u64>().with_context(bad)?;
                    *kernel.entry(symbols.find(addr).to_string()).or_default() += total;
                }
                _ => bail!(bad()),
            }
        }
        Ok(Self {
            kernel: kernel
                .into_iter()
                .map(|(k, n)| (k, per_packet(n)))
                .collect(),
            user: per_packet(user.context("dump without a user line")?),
        })
    }

    fn kernel_total(&self) -> f64 {
        self.kernel.values().sum()
    }

    fn get(&self, function: &str) -> f64 {
        self.kernel.get(function).copied().unwrap_or(0.0)
    }
}

fn ensure_packets(packets: u64) -> Result<()> {
    if packets == 0 {
        bail!("a run sent no packets");
    }
    Ok(())
}

/// The report of the runs in `out` (the guest's output directory).
pub fn report(
    out: &Path,
    configs: &[&str],
    command: String,
    date: String,
    commit: String,
    kernel: &str,
) -> Result<Report> {
    let read = |name: &str| {
        let path = out.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let runs: Vec<Run> = serde_json::from_str(&read(RUNS)?)?;
    let profiles = runs
        .iter()
        .map(|run| {
            let symbols = Symbols::parse(&read(&kallsyms_file(run.config))?);
            Profile::parse(
                &read(&format!("{DUMPS}.{}", run.dump))?,
                &symbols,
                run.packets,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Report {
        command,
        date,
        commit,
        kernel: kernel.to_string(),
        configs: configs.iter().map(|c| c.to_string()).collect(),
        runs,
        profiles,
    })
}

fn table(runs: &[Run], profiles: &[Profile], configs: &[String]) -> String {
    let mut text = String::from(
        "| configuration | packets | kernel | vs first | user |\n|---|---:|---:|---:|---:|\n",
    );
    let base = &profiles[0];
    for (run, profile) in runs.iter().zip(profiles) {
        let _ = writeln!(
            text,
            "| {} | {} | {:.0} | {:+.0} | {:.0} |",
            configs.get(run.config).map_or("?", String::as_str),
            run.packets,
            profile.kernel_total(),
            profile.kernel_total() - base.kernel_total(),
            profile.user
        );
    }
    // Functions by how far their count moves from the first run's, most first.
    let mut functions: Vec<(f64, &str)> = profiles
        .iter()
        .flat_map(|p| p.kernel.keys())
        .map(|f| {
            let moved = profiles
                .iter()
                .map(|p| (p.get(f) - base.get(f)).abs())
                .fold(0.0, f64::max);
            (moved, f.as_str())
        })
        .filter(|&(moved, _)| moved >= 1.0)
        .collect();
    functions.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    functions.dedup_by(|a, b| a.1 == b.1);
    let _ = write!(text, "\n| function |");
    for run in runs {
        let _ = write!(text, " ({}) |", run.config);
    }
    let _ = write!(text, "\n|---|{}\n", "---:|".repeat(runs.len()));
    for (_, function) in functions.iter().take(ROWS) {
        let _ = write!(text, "| {function} |");
        for profile in profiles {
            let _ = write!(text, " {:.1} |", profile.get(function));
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "ffffffff81000000 T _stext\n\
        ffffffff81000100 t helper\n\
        ffffffff81000200 D some_data\n\
        ffffffffc0000000 t hook [nfwatch]\n";

    #[test]
    fn blocks_go_to_the_function_below_them() {
        let symbols = Symbols::parse(KALLSYMS);
        assert_eq!(symbols.find(0xffffffff81000150), "helper");
        assert_eq!(symbols.find(0xffffffff81000250), "helper");
        assert_eq!(symbols.find(0xffffffffc0000010), "hook [nfwatch]");
        assert_eq!(symbols.find(0x1000), "?");
    }

    #[test]
    fn a_dump_counts_instructions_per_packet() {
        let symbols = Symbols::parse(KALLSYMS);
        let dump =
            "user 500\nffffffff81000100 4 10\nffffffff81000120 2 5\nffffffffc0000000 10 10\n";
        let profile = Profile::parse(dump, &symbols, 10).unwrap();
        assert_eq!(profile.get("helper"), 5.0);
        assert_eq!(profile.get("hook [nfwatch]"), 10.0);
        assert_eq!(profile.user, 50.0);
        assert_eq!(profile.kernel_total(), 15.0);
        assert!(Profile::parse("ffffffff81000100 4\n", &symbols, 10).is_err());
        let err = Profile::parse("user x\n", &symbols, 10).err().unwrap();
        assert!(
            format!("{err:#}").contains("bad dump line \"user x\""),
            "{err:#}"
        );
        assert!(Profile::parse(dump, &symbols, 0).is_err());
    }

    #[test]
    fn the_table_lists_what_moved() {
        let symbols = Symbols::parse(KALLSYMS);
        let runs = [
            Run {
                config: 0,
                dump: 1,
                packets: 1,
            },
            Run {
                config: 2,
                dump: 3,
                packets: 1,
            },
        ];
        let profiles = [
            Profile::parse("user 0\nffffffff81000100 7 1\n", &symbols, 1).unwrap(),
            Profile::parse(
                "user 0\nffffffff81000100 7 1\nffffffffc0000000 3 1\n",
                &symbols,
                1,
            )
            .unwrap(),
        ];
        let configs = ["zero", "one", "two"].map(String::from);
        let text = table(&runs, &profiles, &configs);
        assert!(text.contains("| two | 1 | 10 | +3 | 0 |"), "{text}");
        assert!(text.contains("| hook [nfwatch] | 0.0 | 3.0 |"), "{text}");
        assert!(!text.contains("| helper |"), "{text}");
    }
}
