//! docs/performance.md and the README's performance table, written from the
//! bench results kept in docs/bench/ (`cargo xtask bench --write-docs`), so
//! the figures in the docs are always those of a run; a unit test fails
//! when the docs differ from what the results give.

use crate::bench::{self, Report};
use crate::util;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The results of each mode, in target/bench/ after a run and in
/// docs/bench/ once adopted.
pub const ICOUNT: &str = "results-icount.json";
pub const SMP2: &str = "results.json";
pub const INSNS: &str = "insns.json";

/// The text around the generated parts: `{{icount}}`, `{{smp2}}`, `{{insns}}`.
const TEMPLATE: &str = include_str!("performance.md.in");

/// Where README.md's table goes.
const README_BEGIN: &str =
    "<!-- performance table: written by `cargo xtask bench --write-docs`, do not edit -->\n";
const README_END: &str = "<!-- end of performance table -->\n";

/// The headline configurations in README.md: the formats side by side.
const README_CONFIGS: &[usize] = &[1, 2, 3, 4, bench::IPFIX_ALL, bench::FLOWS_ALL, 5, 6];

fn data_dir() -> PathBuf {
    util::workspace_root().join("docs").join("bench")
}

fn doc_path() -> PathBuf {
    util::workspace_root().join("docs").join("performance.md")
}

fn readme_path() -> PathBuf {
    util::workspace_root().join("README.md")
}

/// Copies a run's results file into docs/bench/ and writes the docs.
pub fn adopt(results: &Path) -> Result<()> {
    let name = results
        .file_name()
        .context("a results file without a name")?;
    let dir = data_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(results, dir.join(name))
        .with_context(|| format!("cannot copy {}", results.display()))?;
    write()
}

/// Writes docs/performance.md and README.md's table from docs/bench/.
pub fn write() -> Result<()> {
    let data = Data::read(&data_dir())?;
    std::fs::write(doc_path(), data.doc())
        .with_context(|| format!("cannot write {}", doc_path().display()))?;
    let readme = std::fs::read_to_string(readme_path())?;
    std::fs::write(readme_path(), data.readme(&readme)?)?;
    println!("wrote {} and README.md's table", doc_path().display());
    Ok(())
}

/// The results of each mode that has been run.
struct Data {
    icount: Option<Report>,
    smp2: Option<Report>,
    insns: Option<crate::insns::Report>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("cannot parse {}", path.display())),
    }
}

impl Data {
    fn read(dir: &Path) -> Result<Self> {
        Ok(Self {
            icount: read_json(&dir.join(ICOUNT))?,
            smp2: read_json(&dir.join(SMP2))?,
            insns: read_json(&dir.join(INSNS))?,
        })
    }

    fn doc(&self) -> String {
        TEMPLATE
            .replace(
                "{{icount}}",
                &mode_section(self.icount.as_ref(), "--icount"),
            )
            .replace("{{smp2}}", &mode_section(self.smp2.as_ref(), ""))
            .replace("{{insns}}", &insns_section(self.insns.as_ref()))
    }

    /// `readme` with its table (between the markers) written anew.
    fn readme(&self, readme: &str) -> Result<String> {
        let (Some(begin), Some(end)) = (readme.find(README_BEGIN), readme.find(README_END)) else {
            bail!("README.md has no performance table markers");
        };
        let table = match &self.icount {
            Some(report) => headline(report),
            None => "No `--icount` results yet.\n".to_string(),
        };
        Ok(format!(
            "{}{README_BEGIN}{table}{}",
            &readme[..begin],
            &readme[end..]
        ))
    }
}

/// Where and how something was measured, in a few words.
fn measured(m: &bench::Measured) -> String {
    format!(
        "`{}`, {}, kernel {}, commit {}",
        m.command, m.date, m.kernel, m.commit
    )
}

/// Where and how a report was measured, in one line.
fn provenance(report: &Report) -> String {
    format!(
        "{}, {} vCPU{}, {} rounds of {} s",
        measured(&report.measured),
        report.vcpus,
        if report.vcpus == 1 { "" } else { "s" },
        report.rounds,
        report.seconds_per_run
    )
}

fn mode_section(report: Option<&Report>, command: &str) -> String {
    let Some(report) = report else {
        return format!(
            "Not in this page: the host these figures were measured on was shared, \
             which distorts its clock. `{command} --write-docs` on an idle host writes \
             this section.\n"
        );
    };
    let mut text = format!("{}:\n\n{}", provenance(report), bench::table(&report.rows));
    for a in &report.accounting {
        text.push_str(&format!(
            "\nAccounting with `--rcvbuf {}` ({}) in the same boot: {} packets sent, {} written, \
             {} lost in the kernel, {} overruns, {} sequence gaps; the kernel counted {} matched: {}.\n",
            a.rcvbuf,
            a.proto,
            a.packets,
            a.written,
            a.lost_in_kernel,
            a.overruns,
            a.gaps,
            a.kernel.map_or("?".to_string(), |k| k[0].to_string()),
            if a.exact { "exact" } else { "NOT exact" }
        ));
    }
    if let Some(guest) = &report.byte_cost_guest {
        text.push_str(&format!(
            "\nBytes moved, {}.\n",
            crate::bytecost::describe(guest, &report.byte_cost_host).trim_start_matches("bytes: ")
        ));
    }
    text
}

fn insns_section(report: Option<&crate::insns::Report>) -> String {
    match report {
        None => "Not measured yet: `cargo xtask bench --insns --write-docs`.\n".to_string(),
        Some(r) => format!(
            "{}: guest kernel instructions per UDP packet sent, in all and by function \
             (one run of each configuration; \"user\" is the instructions of every process \
             in user space, per packet):\n\n{}",
            measured(&r.measured),
            r.table()
        ),
    }
}

/// README.md's table: each headline configuration's packets/s against (0)
/// for UDP and TCP, and what it recorded.
fn headline(report: &Report) -> String {
    let ratio = |proto: &str, config: usize| {
        report
            .rows
            .iter()
            .find(|r| r.proto == proto && r.config == config)
            .and_then(|r| r.pps_ratio)
            .map_or("–".to_string(), |s| format!("{:.3}", s.median))
    };
    let mut text = format!(
        "{} (packets/s each configuration leaves the sender, against nothing watching):\n\n\
         | configuration | UDP | TCP |\n|---|---:|---:|\n",
        provenance(report)
    );
    for &config in README_CONFIGS {
        if let Some(name) = bench::config_name(config) {
            text.push_str(&format!(
                "| {name} | {} | {} |\n",
                ratio("udp", config),
                ratio("tcp", config)
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/performance.md and README.md's table are what docs/bench/ gives.
    #[test]
    fn the_docs_show_the_kept_results() {
        let data = Data::read(&data_dir()).unwrap();
        let doc = std::fs::read_to_string(doc_path()).unwrap();
        assert!(
            doc == data.doc(),
            "docs/performance.md differs from docs/bench/: run `cargo xtask bench --docs-only`"
        );
        let readme = std::fs::read_to_string(readme_path()).unwrap();
        assert!(
            readme == data.readme(&readme).unwrap(),
            "README.md's performance table differs from docs/bench/: run `cargo xtask bench --docs-only`"
        );
    }
}
