//! The nfwatch binary where no module is needed: help, exit codes, and an
//! output file left alone when the start fails.

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

fn nfwatch() -> Command {
    Command::cargo_bin("nfwatch").expect("the nfwatch binary")
}

fn module_loaded() -> bool {
    std::path::Path::new("/sys/module/nfwatch").exists()
}

#[test]
fn help_documents_exit_codes_signals_and_every_option() {
    nfwatch().arg("--help").assert().success().stdout(
        contains("Exit status:")
            .and(contains(
                "0  success, also when the reader of stdout went away",
            ))
            .and(contains("1  runtime failure"))
            .and(contains("2  usage error")),
    );
    let help = nfwatch().args(["watch", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&help.get_output().stdout).into_owned();
    for option in [
        "--src <ADDR[/LEN]>",
        "-o, --output <FILE>",
        "--format <FORMAT>",
        "--count <N>",
        "--duration <SECS>",
        "--append",
        "--rcvbuf <BYTES>",
        "--flush-interval <SECS>",
        "--summary-json <FILE>",
        "-q, --quiet",
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(option))
            .unwrap_or_else(|| panic!("{option} missing from:\n{text}"));
        let help = line.trim_start()[option.len()..].trim_start();
        assert!(
            !help.is_empty() && !help.starts_with('['),
            "{option} has no help text: {line:?}"
        );
    }
    for word in ["SIGHUP", "SIGTERM", "SIGUSR1", "Exit status:"] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
}

#[test]
fn usage_errors_exit_2() {
    nfwatch()
        .args(["watch", "--src", "10.0.0.300"])
        .assert()
        .code(2)
        .stderr("nfwatch: --src 10.0.0.300: invalid address\n");
    nfwatch()
        .args(["watch", "--src", "10.0.0.5/24"])
        .assert()
        .code(2)
        .stderr(contains("did you mean 10.0.0.0/24?"));
    nfwatch().arg("watch").assert().code(2);
    nfwatch().arg("frobnicate").assert().code(2);
    nfwatch()
        .args(["watch", "--src", "10.0.0.1", "--flush-interval", "0"])
        .assert()
        .code(2)
        .stderr(contains("--flush-interval"));
}

/// stderr of a failed run, which must be exactly one `nfwatch: ` line.
fn one_error_line(args: &[&str]) -> String {
    let assert = nfwatch().args(args).assert().code(2).stdout("");
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.starts_with("nfwatch: ") && stderr.ends_with('\n') && stderr.lines().count() == 1,
        "{args:?}: not one `nfwatch: ` line on stderr:\n{stderr}"
    );
    stderr
}

#[test]
fn clap_errors_are_one_line_exit_2() {
    let unknown = one_error_line(&["watch", "--src", "10.0.0.1", "--frobnicate"]);
    assert!(unknown.contains("'--frobnicate'"), "{unknown}");
    let count = one_error_line(&["watch", "--src", "10.0.0.1", "--count", "x"]);
    assert!(count.contains("'x' for '--count <N>'"), "{count}");
    let zero = one_error_line(&["watch", "--src", "10.0.0.1", "--count", "0"]);
    assert!(zero.contains("--count"), "{zero}");
    let missing = one_error_line(&["watch", "--format", "csv"]);
    assert!(missing.contains("--src"), "{missing}");
    let format = one_error_line(&["watch", "--src", "10.0.0.1", "--format", "xml"]);
    assert!(
        format.contains("possible values: text, csv, jsonl, legacy, ipfix"),
        "{format}"
    );
    one_error_line(&["frobnicate"]);
    one_error_line(&["stats", "--jsno"]);
    one_error_line(&["--version", "stats"]);
    // --help is clap's help on stdout, exit 0, as before.
    for args in [&["--help"][..], &["watch", "--help"], &["stats", "-h"]] {
        nfwatch()
            .args(args)
            .assert()
            .success()
            .stderr("")
            .stdout(contains("Usage: nfwatch").and(contains("Options:")));
    }
}

#[test]
fn version_names_the_cli_and_protocol() {
    nfwatch()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicates::str::starts_with(format!(
            "nfwatch {} (protocol 1)\nmodule ",
            env!("CARGO_PKG_VERSION")
        )));
}

#[test]
fn failed_start_leaves_the_output_alone() {
    if module_loaded() {
        eprintln!("skipped: the nfwatch module is loaded on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kept = dir.path().join("kept.csv");
    let missing = dir.path().join("missing.csv");
    std::fs::write(&kept, "an earlier capture\n").expect("write");
    for out in [&kept, &missing] {
        let assert = nfwatch()
            .args(["watch", "--src", "10.0.0.1", "--format", "csv", "-o"])
            .arg(out)
            .assert()
            .code(1);
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert!(!stderr.contains("subscribed"), "{stderr}");
        if stderr.contains("not loaded") {
            assert!(
                stderr.contains("modprobe nfwatch") && stderr.contains("insmod kmod/nfwatch.ko"),
                "{stderr}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(&kept).expect("read"),
        "an earlier capture\n"
    );
    assert!(!missing.exists(), "{} was created", missing.display());
}

#[test]
fn flows_refuses_what_it_cannot_write() {
    for (args, option) in [
        (&["--format", "legacy"][..], "--format legacy"),
        (&["--count", "3"], "--count"),
        (&["--inactive-timeout", "0"], "--inactive-timeout"),
        (&["--max-flows", "0"], "--max-flows"),
    ] {
        let assert = nfwatch()
            .args(["flows", "--src", "10.0.0.1"])
            .args(args)
            .assert()
            .code(2)
            .stdout("");
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("nfwatch: ") && stderr.contains(option),
            "{stderr}"
        );
    }
    let help = nfwatch().args(["flows", "--help"]).assert().success();
    let text = String::from_utf8_lossy(&help.get_output().stdout).into_owned();
    for option in [
        "--inactive-timeout <SECS>",
        "--active-timeout <SECS>",
        "--max-flows <N>",
        "--export <URL>",
    ] {
        assert!(text.contains(option), "{option} missing from:\n{text}");
    }
}
