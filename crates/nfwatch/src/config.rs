//! `nfwatch watch --config FILE`: settings from a TOML file, each one
//! overridden by its command-line flag. Errors name the file, the line and
//! the key.

use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, ValueEnum};
use nfwatch_proto::{Prefix, NFWATCH_MAX_PREFIXES};
use serde::Deserialize;
use toml::Spanned;

use crate::cli::{parse_duration, WatchArgs, MIN_RCVBUF};
use crate::error::{Error, Result};
use crate::writers::Format;

/// The file's keys; anything else is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    sources: Option<Vec<Spanned<String>>>,
    uids: Option<Vec<u32>>,
    cgroups: Option<Vec<String>>,
    comms: Option<Vec<String>>,
    all_netns: Option<bool>,
    output: Option<PathBuf>,
    format: Option<Spanned<String>>,
    export: Option<Vec<Spanned<String>>>,
    append: Option<bool>,
    flush_interval: Option<Spanned<f64>>,
    rcvbuf: Option<Spanned<i64>>,
}

/// One file's text, for turning byte offsets into line numbers.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text
            .get(..offset)
            .map_or(0, |before| before.matches('\n').count())
            + 1
    }

    /// "FILE:LINE: KEY: message".
    fn error(&self, span: Range<usize>, key: &str, message: &str) -> Error {
        Error::Usage(format!(
            "{}:{}: {key}: {message}",
            self.path.display(),
            self.line_of(span.start)
        ))
    }

    /// The key a parse error points into: the name before `=` on its line.
    fn key_at(&self, offset: usize) -> String {
        let start = self
            .text
            .get(..offset)
            .and_then(|t| t.rfind('\n'))
            .map_or(0, |i| i + 1);
        let line = self
            .text
            .get(start..)
            .and_then(|t| t.lines().next())
            .unwrap_or("");
        line.split_once('=')
            .map_or(line, |(key, _)| key)
            .trim()
            .to_string()
    }

    fn parse(&self) -> Result<ConfigFile> {
        toml::from_str(self.text).map_err(|e| {
            let message = e.message().trim();
            match e.span() {
                Some(span) => {
                    let key = self.key_at(span.start);
                    self.error(span, &key, message)
                }
                None => Error::Usage(format!("{}: {message}", self.path.display())),
            }
        })
    }
}

/// Fills in `args` from its `--config` file wherever the command line did
/// not set the value, then checks that there is something to watch.
pub fn apply(args: &mut WatchArgs, matches: &ArgMatches) -> Result<()> {
    let Some(path) = args.config.clone() else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("--config {}", path.display()), e))?;
    let source = Source {
        path: &path,
        text: &text,
    };
    let file = source.parse()?;
    let from_file = |id: &str| matches.value_source(id) != Some(ValueSource::CommandLine);

    if from_file("src") {
        if let Some(sources) = &file.sources {
            args.src = checked_sources(&source, sources)?;
        }
    }
    if from_file("uids") {
        if let Some(uids) = &file.uids {
            args.uids = uids.clone();
        }
    }
    if from_file("cgroups") {
        if let Some(cgroups) = &file.cgroups {
            args.cgroups = cgroups.clone();
        }
    }
    if from_file("comms") {
        if let Some(comms) = &file.comms {
            args.comms = comms.clone();
        }
    }
    if from_file("all_netns") {
        if let Some(all_netns) = file.all_netns {
            args.all_netns = all_netns;
        }
    }
    if from_file("output") {
        if let Some(output) = &file.output {
            args.output = Some(output.clone());
        }
    }
    if from_file("format") {
        if let Some(format) = &file.format {
            args.format = Format::from_str(format.get_ref(), false).map_err(|_| {
                source.error(
                    format.span(),
                    "format",
                    &format!(
                        "unknown format {:?} (text, csv, jsonl, legacy or ipfix)",
                        format.get_ref()
                    ),
                )
            })?;
        }
    }
    if from_file("exports") {
        if let Some(urls) = &file.export {
            args.exports = urls
                .iter()
                .map(|url| {
                    url.get_ref().parse().map_err(|e| {
                        source.error(url.span(), "export", &format!("{}: {e}", url.get_ref()))
                    })
                })
                .collect::<Result<_>>()?;
        }
    }
    if from_file("append") {
        if let Some(append) = file.append {
            args.append = append;
        }
    }
    if from_file("flush_interval") {
        if let Some(seconds) = &file.flush_interval {
            args.flush_interval = parse_duration(&seconds.get_ref().to_string())
                .map_err(|e| source.error(seconds.span(), "flush_interval", &e))?;
        }
    }
    if from_file("rcvbuf") {
        if let Some(rcvbuf) = &file.rcvbuf {
            args.rcvbuf = checked_rcvbuf(&source, rcvbuf)?;
        }
    }
    if args.src.is_empty() {
        return Err(Error::Usage(format!(
            "no sources to watch: set sources = [\"ADDR[/LEN]\", ...] in {} or pass --src",
            path.display()
        )));
    }
    if args.append && args.output.is_none() {
        return Err(Error::Usage(format!(
            "{}: append = true needs an output file",
            path.display()
        )));
    }
    Ok(())
}

/// The sources as strings `--src` would take, each checked where it is
/// written so the error has its line.
fn checked_sources(source: &Source, sources: &[Spanned<String>]) -> Result<Vec<String>> {
    if let Some(extra) = sources.get(NFWATCH_MAX_PREFIXES) {
        return Err(source.error(
            extra.span(),
            "sources",
            &format!(
                "at most {NFWATCH_MAX_PREFIXES} prefixes, got {}",
                sources.len()
            ),
        ));
    }
    sources
        .iter()
        .map(|value| {
            value
                .get_ref()
                .parse::<Prefix>()
                .map(|_| value.get_ref().clone())
                .map_err(|e| {
                    source.error(
                        value.span(),
                        "sources",
                        &format!("{}: {e}", value.get_ref()),
                    )
                })
        })
        .collect()
}

fn checked_rcvbuf(source: &Source, rcvbuf: &Spanned<i64>) -> Result<u64> {
    u64::try_from(*rcvbuf.get_ref())
        .ok()
        .filter(|bytes| (MIN_RCVBUF..=i32::MAX as u64).contains(bytes))
        .ok_or_else(|| {
            source.error(
                rcvbuf.span(),
                "rcvbuf",
                &format!(
                    "{} is not in {MIN_RCVBUF}..={} bytes",
                    rcvbuf.get_ref(),
                    i32::MAX
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, FromArgMatches};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// `nfwatch watch --config FILE ARGS` with FILE holding `text`.
    fn load(text: &str, args: &[&str]) -> Result<WatchArgs> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nfwatch-config-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("test dir", e))?;
        let path = dir.join("nfwatch.toml");
        std::fs::write(&path, text).map_err(|e| Error::io("test file", e))?;
        let argv = ["nfwatch", "watch", "--config", path.to_str().unwrap_or("")]
            .into_iter()
            .chain(args.iter().copied());
        let matches = Cli::command()
            .try_get_matches_from(argv)
            .map_err(|e| Error::Usage(e.to_string()))?;
        let cli = Cli::from_arg_matches(&matches).map_err(|e| Error::Usage(e.to_string()))?;
        let Some(Command::Watch(mut watch)) = cli.command else {
            return Err(Error::Usage("not watch".into()));
        };
        let result = apply(
            &mut watch,
            matches.subcommand_matches("watch").unwrap_or(&matches),
        );
        let _ = std::fs::remove_dir_all(&dir);
        result.map(|()| *watch)
    }

    fn message(text: &str) -> String {
        match load(text, &[]) {
            Ok(args) => panic!("accepted: {args:?}"),
            Err(e) => e.to_string(),
        }
    }

    const FULL: &str = "sources = [\"192.0.2.1\", \"2001:db8::/32\"]\n\
        output = \"/var/log/nfwatch/nfwatch.jsonl\"\n\
        format = \"jsonl\"\n\
        append = true\n\
        flush_interval = 0.25\n\
        rcvbuf = 1048576\n\
        uids = [0, 1000]\n\
        cgroups = [\"/system.slice/nginx.service\"]\n\
        comms = [\"nginx\"]\n\
        all_netns = true\n\
        export = [\"udp://192.0.2.9:4739\", \"tcp://[2001:db8::9]:4739\"]\n";

    #[test]
    fn file_sets_every_key() {
        let args = load(FULL, &[]).unwrap();
        assert_eq!(args.src, ["192.0.2.1", "2001:db8::/32"]);
        assert_eq!(
            args.output,
            Some(PathBuf::from("/var/log/nfwatch/nfwatch.jsonl"))
        );
        assert_eq!(args.format, Format::Jsonl);
        assert!(args.append);
        assert_eq!(args.flush_interval, Duration::from_millis(250));
        assert_eq!(args.rcvbuf, 1_048_576);
        assert_eq!(args.uids, [0, 1000]);
        assert_eq!(args.cgroups, ["/system.slice/nginx.service"]);
        assert_eq!(args.comms, ["nginx"]);
        assert!(args.all_netns);
        let exports: Vec<String> = args.exports.iter().map(ToString::to_string).collect();
        assert_eq!(
            exports,
            ["udp://192.0.2.9:4739", "tcp://[2001:db8::9]:4739"]
        );
    }

    #[test]
    fn flags_override_the_file() {
        let args = load(
            FULL,
            &[
                "--src",
                "198.51.100.0/24",
                "-o",
                "x.csv",
                "--format",
                "text",
                "--rcvbuf",
                "65536",
                "--uid",
                "7",
            ],
        )
        .unwrap();
        assert_eq!(args.uids, [7]);
        assert_eq!(args.cgroups, ["/system.slice/nginx.service"]);
        assert_eq!(args.src, ["198.51.100.0/24"]);
        assert_eq!(args.output, Some(PathBuf::from("x.csv")));
        // Given on the command line as its default value: still the flag's.
        assert_eq!(args.format, Format::Text);
        assert_eq!(args.rcvbuf, 65536);
        assert!(args.append);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let path_part = |m: &str| {
            m.split_once("nfwatch.toml:")
                .map(|(_, rest)| rest.to_string())
        };
        let cases = [
            (
                "sources = [\"10.0.0.1\"]\nformats = \"csv\"\n",
                "2: formats: unknown field `formats`",
            ),
            (
                "sources = [\"10.0.0.1\"]\n\nformat = \"xml\"\n",
                "3: format: unknown format \"xml\"",
            ),
            (
                "sources = [\"10.0.0.1\",\n  \"10.0.0.5/24\"]\n",
                "2: sources: 10.0.0.5/24: host bits set",
            ),
            (
                "sources = [\"10.0.0.1\"]\nrcvbuf = 100\n",
                "2: rcvbuf: 100 is not in 65536",
            ),
            (
                "sources = [\"10.0.0.1\"]\nrcvbuf = \"big\"\n",
                "2: rcvbuf: invalid type",
            ),
            (
                "sources = [\"10.0.0.1\"]\nappend = 1\n",
                "2: append: invalid type",
            ),
            ("sources = \"10.0.0.1\"\n", "1: sources: invalid type"),
            (
                "sources = [\"10.0.0.1\"]\nexport = [\"sctp://c:4739\"]\n",
                "2: export: sctp://c:4739: unknown transport \"sctp\"",
            ),
        ];
        for (text, expected) in cases {
            let got = message(text);
            let rest = path_part(&got).unwrap_or_default();
            assert!(rest.starts_with(expected), "{text:?}: {got}");
            assert!(!got.contains('\n'), "{got}");
        }
    }

    #[test]
    fn no_sources_says_which_file_to_edit() {
        let got = message("output = \"/tmp/x.jsonl\"\n");
        assert!(got.starts_with("no sources to watch: set sources"), "{got}");
        assert!(got.contains("nfwatch.toml or pass --src"), "{got}");
        assert!(load("sources = []\n", &["--src", "10.0.0.1"]).is_ok());
    }
}
