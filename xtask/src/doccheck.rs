//! The documentation's commands must exist: every `nfwatch ...` and
//! `cargo xtask ...` command quoted in README.md and docs/ (code blocks and
//! inline code) is parsed with the clap definition that runs it, xtask's own
//! and the CLI's (through the nfwatch library). A unit test runs it.

use anyhow::{bail, Context, Result};
use clap::error::ErrorKind;
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// A command quoted in a document.
#[derive(Debug, PartialEq)]
pub struct Quoted {
    pub line: usize,
    pub argv: Vec<String>,
}

/// Shell words that end one command of a line.
const SEPARATORS: &[&str] = &["|", "||", "&&", ";", "&"];
/// Redirections, each followed by its file.
const REDIRECTIONS: &[&str] = &[">", ">>", "<", "2>", "2>&1"];

/// Candidate command lines of a markdown text, with their line numbers:
/// code block lines (joined where they end in `\`) and inline code spans.
/// Blocks marked ```` ```text ```` (diagrams) hold no commands.
fn code(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_block = false;
    let mut in_text = false;
    let mut pending: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(info) = line.trim_start().strip_prefix("```") {
            in_block = !in_block;
            in_text = in_block && info.trim() == "text";
            continue;
        }
        if in_text {
            continue;
        }
        if in_block {
            let (start, mut joined) = pending.take().unwrap_or((number, String::new()));
            let line = line.trim_start().trim_start_matches("$ ");
            match line.strip_suffix('\\') {
                Some(head) => {
                    joined.push_str(head);
                    pending = Some((start, joined));
                }
                None => {
                    joined.push_str(line);
                    found.push((start, joined));
                }
            }
        } else {
            // Odd pieces between backticks are inline code.
            found.extend(
                line.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(|span| (number, span.to_string())),
            );
        }
    }
    found
}

/// The `nfwatch` and `cargo xtask` commands in `text`. A command with a
/// `...` placeholder is a pattern, not a command, and is left out.
pub fn quoted(text: &str) -> Vec<Quoted> {
    let mut commands = Vec::new();
    for (line, candidate) in code(text) {
        let Some(words) = shlex::split(&candidate) else {
            continue;
        };
        for part in words.split(|w| SEPARATORS.contains(&w.as_str())) {
            let argv = without_redirections(part);
            let argv = match argv.first().map(String::as_str) {
                Some("sudo") => argv[1..].to_vec(),
                _ => argv,
            };
            // The program's name alone names it; a command has arguments.
            let ours = (argv.len() > 1 && argv[0] == "nfwatch")
                || (argv.len() > 2 && argv[..2] == ["cargo", "xtask"]);
            if ours && !argv.iter().any(|w| w == "..." || w == "…") {
                commands.push(Quoted { line, argv });
            }
        }
    }
    commands
}

fn without_redirections(words: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        if REDIRECTIONS.contains(&word.as_str()) {
            if word != "2>&1" {
                words.next();
            }
        } else {
            kept.push(word.clone());
        }
    }
    kept
}

/// Parses `argv` with the definition of the program it runs.
pub fn parse(argv: &[String]) -> Result<()> {
    let (command, args) = if argv[0] == "nfwatch" {
        (nfwatch::command(), argv)
    } else {
        (crate::Cli::command().name("xtask"), &argv[1..])
    };
    match command.try_get_matches_from(args) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => Ok(()),
        Err(e) => bail!(
            "{}",
            e.render().to_string().lines().next().unwrap_or_default()
        ),
    }
}

/// README.md and every markdown file under docs/.
pub fn documents(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Every quoted command that does not parse: `file:line: command: why`.
pub fn check(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for file in documents(root)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for command in quoted(&text) {
            if let Err(e) = parse(&command.argv) {
                problems.push(format!(
                    "{}:{}: `{}`: {e}",
                    file.strip_prefix(root).unwrap_or(&file).display(),
                    command.line,
                    command.argv.join(" ")
                ));
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn commands_are_found_in_blocks_and_inline_code() {
        let text = "Run `nfwatch stats --json` or `cargo xtask ...`.\n\
                    ```sh\n\
                    sudo nfwatch watch --src 10.0.0.1 \\\n    --format jsonl | jq . > out # note\n\
                    cargo xtask test --kernel 6.12   # comment\n\
                    make -C kmod\n\
                    ```\n";
        let found = quoted(text);
        assert_eq!(
            found,
            [
                Quoted {
                    line: 1,
                    argv: argv(&["nfwatch", "stats", "--json"])
                },
                Quoted {
                    line: 3,
                    argv: argv(&["nfwatch", "watch", "--src", "10.0.0.1", "--format", "jsonl"])
                },
                Quoted {
                    line: 5,
                    argv: argv(&["cargo", "xtask", "test", "--kernel", "6.12"])
                },
            ]
        );
    }

    #[test]
    fn wrong_commands_fail() {
        for bad in [
            &["nfwatch", "watch", "--src", "10.0.0.1", "--frobnicate"][..],
            &["nfwatch", "watch", "--src", "10.0.0.1", "--format", "xml"],
            &["nfwatch", "frobnicate"],
            &["cargo", "xtask", "test", "--kernels", "6.12"],
            &["cargo", "xtask", "frobnicate"],
        ] {
            assert!(parse(&argv(bad)).is_err(), "{bad:?} parsed");
        }
        assert!(parse(&argv(&["nfwatch", "--help"])).is_ok());
        assert!(parse(&argv(&[
            "cargo",
            "xtask",
            "bench",
            "--icount",
            "--write-docs"
        ]))
        .is_ok());
    }

    /// README.md and docs/ quote only commands that exist.
    #[test]
    fn every_quoted_command_parses() {
        let root = crate::util::workspace_root();
        let problems = check(&root).unwrap();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(
            quoted(&readme).len() >= 10,
            "the README's commands were not found"
        );
    }
}
