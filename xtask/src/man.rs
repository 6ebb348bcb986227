//! `cargo xtask man`: nfwatch's man pages and shell completions, generated
//! from the clap definition the binary parses, into target/man/:
//! `man1/nfwatch.1`, `man1/nfwatch-<subcommand>.1` and
//! `completions/{nfwatch.bash,_nfwatch,nfwatch.fish}`.

use crate::util::{self, capture, describe, step};
use anyhow::{bail, Context, Result};
use clap_complete::Shell;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shells completions are generated for.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// What was generated.
pub struct Generated {
    pub pages: Vec<PathBuf>,
    pub completions: Vec<PathBuf>,
}

/// `cargo xtask man`: generates into target/man/ and checks the pages with
/// groff's warnings on.
pub fn man() -> Result<()> {
    step("man pages and shell completions");
    let dir = util::target_dir().join("man");
    util::remove_dir(&dir)?;
    let generated = generate(&dir)?;
    for page in &generated.pages {
        lint(page)?;
    }
    for path in generated.pages.iter().chain(&generated.completions) {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes the pages to `dir`/man1 and the completions to `dir`/completions.
pub fn generate(dir: &Path) -> Result<Generated> {
    let man1 = dir.join("man1");
    let completions = dir.join("completions");
    for sub in [&man1, &completions] {
        std::fs::create_dir_all(sub).with_context(|| format!("cannot create {}", sub.display()))?;
    }
    let mut cmd = nfwatch::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("nfwatch {}", env!("CARGO_PKG_VERSION"));
    let mut pages = Vec::new();
    write_pages(&cmd, &source, &man1, &mut pages)?;
    let completions = SHELLS
        .iter()
        .map(|&shell| {
            clap_complete::generate_to(shell, &mut cmd.clone(), "nfwatch", &completions)
                .with_context(|| format!("cannot write the {shell} completions"))
        })
        .collect::<Result<_>>()?;
    Ok(Generated { pages, completions })
}

/// A page for `cmd` and one for each of its visible subcommands, each
/// named as clap names the subcommand (`nfwatch-watch`).
fn write_pages(
    cmd: &clap::Command,
    source: &str,
    dir: &Path,
    pages: &mut Vec<PathBuf>,
) -> Result<()> {
    let page = clap_mangen::Man::new(cmd.clone())
        .source(source)
        .manual("nfwatch manual")
        .generate_to(dir)
        .with_context(|| format!("cannot write the man page of {}", cmd.get_name()))?;
    pages.push(page);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, source, dir, pages)?;
    }
    Ok(())
}

/// Fails on anything groff warns about in `page`.
fn lint(page: &Path) -> Result<()> {
    let mut groff = Command::new("groff");
    groff.args(["-man", "-ww", "-z"]).arg(page);
    let out = capture(&mut groff)?;
    let warnings = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !warnings.trim().is_empty() {
        bail!(
            "`{}` ({}): {}",
            describe(&groff),
            out.status,
            warnings.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every long option of every subcommand is in that subcommand's page
    /// and in every shell's completions.
    #[test]
    fn pages_and_completions_cover_every_option() {
        let dir = util::target_dir().join("man-test");
        util::remove_dir(&dir).unwrap();
        let generated = generate(&dir).unwrap();
        let names: Vec<String> = generated
            .pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["nfwatch.1", "nfwatch-watch.1", "nfwatch-stats.1"]);
        // How each shell's script names a long option.
        let completions: Vec<(String, &str)> = generated
            .completions
            .iter()
            .zip(["--", "--", "-l "])
            .map(|(p, flag)| (std::fs::read_to_string(p).unwrap(), flag))
            .collect();
        let cmd = nfwatch::command();
        for sub in cmd.get_subcommands() {
            let page =
                std::fs::read_to_string(dir.join(format!("man1/nfwatch-{}.1", sub.get_name())))
                    .unwrap();
            for long in sub.get_arguments().filter_map(|a| a.get_long()) {
                // roff escapes the dashes: \-\-src
                assert!(
                    page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                    "--{long} not in the {} page",
                    sub.get_name()
                );
                for (text, flag) in &completions {
                    assert!(
                        text.contains(&format!("{flag}{long}")),
                        "--{long} not completed"
                    );
                }
            }
        }
        util::remove_dir(&dir).unwrap();
    }
}
