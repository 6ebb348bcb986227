//! Proves the Rust constants agree with include/uapi/linux/nfwatch.h: a
//! generated C program prints every value and the record layout, and the
//! test compares them with the Rust mirror.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use nfwatch_proto::*;

/// (C expression, Rust value). Enum MAX values are included so a value
/// added to the header without a Rust mirror is caught too.
fn expected() -> Vec<(String, u64)> {
    let mut pairs: Vec<(String, u64)> = vec![
        ("NFWATCH_GENL_VERSION".into(), NFWATCH_GENL_VERSION.into()),
        ("NFWATCH_MAX_PREFIXES".into(), NFWATCH_MAX_PREFIXES as u64),
        ("NFWATCH_MAX_FILTERS".into(), NFWATCH_MAX_FILTERS as u64),
        (
            "sizeof(NFWATCH_GENL_NAME) - 1".into(),
            NFWATCH_GENL_NAME.len() as u64,
        ),
    ];
    let u8s: &[(&str, u8)] = &[
        ("NFWATCH_CMD_UNSPEC", NFWATCH_CMD_UNSPEC),
        ("NFWATCH_CMD_SUBSCRIBE", NFWATCH_CMD_SUBSCRIBE),
        ("NFWATCH_CMD_UNSUBSCRIBE", NFWATCH_CMD_UNSUBSCRIBE),
        ("NFWATCH_CMD_GET_STATS", NFWATCH_CMD_GET_STATS),
        ("NFWATCH_CMD_RECORDS", NFWATCH_CMD_RECORDS),
        ("NFWATCH_CMD_SHUTDOWN", NFWATCH_CMD_SHUTDOWN),
        ("NFWATCH_CMD_FLOWS", NFWATCH_CMD_FLOWS),
        ("NFWATCH_END_IDLE", NFWATCH_END_IDLE),
        ("NFWATCH_END_ACTIVE", NFWATCH_END_ACTIVE),
        ("NFWATCH_END_FORCED", NFWATCH_END_FORCED),
        ("NFWATCH_END_EVICTED", NFWATCH_END_EVICTED),
        ("NFWATCH_CMD_MAX", NFWATCH_CMD_MAX),
    ];
    let u16s: &[(&str, u16)] = &[
        ("NFWATCH_A_UNSPEC", NFWATCH_A_UNSPEC),
        ("NFWATCH_A_PAD", NFWATCH_A_PAD),
        ("NFWATCH_A_PREFIXES", NFWATCH_A_PREFIXES),
        ("NFWATCH_A_STATS_GLOBAL", NFWATCH_A_STATS_GLOBAL),
        ("NFWATCH_A_STATS_OWN", NFWATCH_A_STATS_OWN),
        ("NFWATCH_A_BATCH_SEQ", NFWATCH_A_BATCH_SEQ),
        ("NFWATCH_A_BATCH_LOST", NFWATCH_A_BATCH_LOST),
        ("NFWATCH_A_RECORD_SIZE", NFWATCH_A_RECORD_SIZE),
        ("NFWATCH_A_RECORDS", NFWATCH_A_RECORDS),
        ("NFWATCH_A_UIDS", NFWATCH_A_UIDS),
        ("NFWATCH_A_CGROUPS", NFWATCH_A_CGROUPS),
        ("NFWATCH_A_ALL_NETNS", NFWATCH_A_ALL_NETNS),
        ("NFWATCH_A_COMMS", NFWATCH_A_COMMS),
        ("NFWATCH_A_FLOWS", NFWATCH_A_FLOWS),
        ("NFWATCH_FLOWS_A_UNSPEC", NFWATCH_FLOWS_A_UNSPEC),
        ("NFWATCH_FLOWS_A_INACTIVE_MS", NFWATCH_FLOWS_A_INACTIVE_MS),
        ("NFWATCH_FLOWS_A_ACTIVE_MS", NFWATCH_FLOWS_A_ACTIVE_MS),
        ("NFWATCH_FLOWS_A_MAX_FLOWS", NFWATCH_FLOWS_A_MAX_FLOWS),
        ("NFWATCH_FLOWS_A_MAX", NFWATCH_FLOWS_A_MAX),
        ("NFWATCH_A_MAX", NFWATCH_A_MAX),
        ("NFWATCH_A_PREFIX", NFWATCH_A_PREFIX),
        ("NFWATCH_A_UID", NFWATCH_A_UID),
        ("NFWATCH_A_CGROUP", NFWATCH_A_CGROUP),
        ("NFWATCH_A_COMM", NFWATCH_A_COMM),
        ("NFWATCH_CGROUP_A_UNSPEC", NFWATCH_CGROUP_A_UNSPEC),
        ("NFWATCH_CGROUP_A_PAD", NFWATCH_CGROUP_A_PAD),
        ("NFWATCH_CGROUP_A_ID", NFWATCH_CGROUP_A_ID),
        ("NFWATCH_CGROUP_A_LEVEL", NFWATCH_CGROUP_A_LEVEL),
        ("NFWATCH_CGROUP_A_MAX", NFWATCH_CGROUP_A_MAX),
        ("NFWATCH_PREFIX_A_UNSPEC", NFWATCH_PREFIX_A_UNSPEC),
        ("NFWATCH_PREFIX_A_IPV4", NFWATCH_PREFIX_A_IPV4),
        ("NFWATCH_PREFIX_A_IPV6", NFWATCH_PREFIX_A_IPV6),
        ("NFWATCH_PREFIX_A_LEN", NFWATCH_PREFIX_A_LEN),
        ("NFWATCH_PREFIX_A_MAX", NFWATCH_PREFIX_A_MAX),
        ("NFWATCH_STAT_UNSPEC", NFWATCH_STAT_UNSPEC),
        ("NFWATCH_STAT_PAD", NFWATCH_STAT_PAD),
        ("NFWATCH_STAT_SEEN", NFWATCH_STAT_SEEN),
        ("NFWATCH_STAT_MATCHED", NFWATCH_STAT_MATCHED),
        ("NFWATCH_STAT_DELIVERED", NFWATCH_STAT_DELIVERED),
        ("NFWATCH_STAT_LOST", NFWATCH_STAT_LOST),
        ("NFWATCH_STAT_MALFORMED", NFWATCH_STAT_MALFORMED),
        ("NFWATCH_STAT_BATCHES", NFWATCH_STAT_BATCHES),
        ("NFWATCH_STAT_SUBSCRIBERS", NFWATCH_STAT_SUBSCRIBERS),
        ("NFWATCH_STAT_PREFIXES", NFWATCH_STAT_PREFIXES),
        (
            "NFWATCH_STAT_LIVE_SUBSCRIBERS",
            NFWATCH_STAT_LIVE_SUBSCRIBERS,
        ),
        ("NFWATCH_STAT_LIVE_SETS", NFWATCH_STAT_LIVE_SETS),
        ("NFWATCH_STAT_LIVE_BATCHES", NFWATCH_STAT_LIVE_BATCHES),
        ("NFWATCH_STAT_LIVE_PAGES", NFWATCH_STAT_LIVE_PAGES),
        ("NFWATCH_STAT_UNATTRIBUTED", NFWATCH_STAT_UNATTRIBUTED),
        ("NFWATCH_STAT_FLOWS", NFWATCH_STAT_FLOWS),
        ("NFWATCH_STAT_FLOWS_EVICTED", NFWATCH_STAT_FLOWS_EVICTED),
        ("NFWATCH_STAT_FLOWS_OPEN", NFWATCH_STAT_FLOWS_OPEN),
        ("NFWATCH_STAT_LIVE_FLOWS", NFWATCH_STAT_LIVE_FLOWS),
        ("NFWATCH_STAT_MAX", NFWATCH_STAT_MAX),
        ("NFWATCH_F_PORTS", NFWATCH_F_PORTS),
        ("NFWATCH_F_ICMP", NFWATCH_F_ICMP),
        ("NFWATCH_F_FRAG", NFWATCH_F_FRAG),
        ("NFWATCH_F_UID", NFWATCH_F_UID),
        ("NFWATCH_F_PID", NFWATCH_F_PID),
        ("NFWATCH_F_COMM", NFWATCH_F_COMM),
        ("NFWATCH_F_CGROUP", NFWATCH_F_CGROUP),
    ];
    pairs.extend(u8s.iter().map(|&(name, v)| (name.to_string(), v.into())));
    pairs.extend(u16s.iter().map(|&(name, v)| (name.to_string(), v.into())));
    pairs.push(("AF_INET".into(), AF_INET.into()));
    pairs.push(("AF_INET6".into(), AF_INET6.into()));
    pairs.push((
        "sizeof(struct nfwatch_record)".into(),
        record_layout::SIZE as u64,
    ));
    pairs.push((
        "NFWATCH_MAX_TIMEOUT_MS".into(),
        NFWATCH_MAX_TIMEOUT_MS.into(),
    ));
    pairs.push(("NFWATCH_MAX_FLOWS".into(), NFWATCH_MAX_FLOWS.into()));
    pairs.push((
        "sizeof(struct nfwatch_flow)".into(),
        flow_layout::SIZE as u64,
    ));
    for (field, offset, size) in flow_layout::FIELDS {
        pairs.push((
            format!("offsetof(struct nfwatch_flow, {field})"),
            offset as u64,
        ));
        pairs.push((
            format!("sizeof(((struct nfwatch_flow *)0)->{field})"),
            size as u64,
        ));
    }
    for (field, offset, size) in record_layout::FIELDS {
        pairs.push((
            format!("offsetof(struct nfwatch_record, {field})"),
            offset as u64,
        ));
        pairs.push((
            format!("sizeof(((struct nfwatch_record *)0)->{field})"),
            size as u64,
        ));
    }
    pairs
}

fn c_program(pairs: &[(String, u64)]) -> String {
    let mut program = String::from(
        "#include <stdio.h>\n#include <string.h>\n#include <stddef.h>\n\
         #include <sys/socket.h>\n#include \"nfwatch.h\"\n\
         #define SHOW(e) printf(\"%s %llu\\n\", #e, (unsigned long long)(e))\n\
         int main(void) {\n\
         \tprintf(\"NFWATCH_GENL_NAME %s\\n\", NFWATCH_GENL_NAME);\n",
    );
    for (expr, _) in pairs {
        let _ = writeln!(program, "\tSHOW({expr});");
    }
    program.push_str("\treturn 0;\n}\n");
    program
}

fn header_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include/uapi/linux")
}

fn run_c_program(source: &str) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("header_mirror");
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let (c_file, binary) = (dir.join("mirror.c"), dir.join("mirror"));
    std::fs::write(&c_file, source).expect("write C file");
    let compiled = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-Werror", "-I"])
        .arg(header_dir())
        .arg("-o")
        .arg(&binary)
        .arg(&c_file)
        .output()
        .expect("run cc");
    assert!(
        compiled.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ran = Command::new(&binary)
        .output()
        .expect("run compiled program");
    assert!(ran.status.success(), "compiled program failed");
    String::from_utf8(ran.stdout).expect("utf-8 output")
}

#[test]
fn rust_constants_match_the_uapi_header() {
    let pairs = expected();
    let mut rust = format!("NFWATCH_GENL_NAME {NFWATCH_GENL_NAME}\n");
    for (expr, value) in &pairs {
        let _ = writeln!(rust, "{expr} {value}");
    }
    let c = run_c_program(&c_program(&pairs));
    let diff: Vec<String> = c
        .lines()
        .zip(rust.lines())
        .filter(|(c_line, rust_line)| c_line != rust_line)
        .map(|(c_line, rust_line)| format!("  header: {c_line}\n  rust:   {rust_line}"))
        .collect();
    assert!(
        diff.is_empty() && c.lines().count() == rust.lines().count(),
        "Rust mirror disagrees with include/uapi/linux/nfwatch.h:\n{}",
        diff.join("\n")
    );
}

#[test]
fn record_fields_tile_the_struct_without_gaps() {
    let mut next = 0;
    for (field, offset, size) in record_layout::FIELDS {
        assert_eq!(
            offset, next,
            "field {field} does not follow its predecessor"
        );
        next = offset + size;
    }
    assert_eq!(next, record_layout::SIZE);
}

#[test]
fn flow_fields_tile_the_struct_without_gaps() {
    let mut next = 0;
    for (field, offset, size) in flow_layout::FIELDS {
        assert_eq!(
            offset, next,
            "field {field} does not follow its predecessor"
        );
        next = offset + size;
    }
    assert_eq!(next, flow_layout::SIZE);
}
