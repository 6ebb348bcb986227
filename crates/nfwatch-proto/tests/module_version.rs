//! The module's MODULE_VERSION (kmod/version.h) is the workspace's version:
//! packages of the CLI and the module are built from one number.

use std::path::Path;

#[test]
fn module_version_is_the_workspace_version() {
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kmod/version.h");
    let text = std::fs::read_to_string(&header).expect("kmod/version.h");
    let defined = text
        .lines()
        .find_map(|line| line.strip_prefix("#define NFWATCH_VERSION "))
        .expect("#define NFWATCH_VERSION in kmod/version.h");
    assert_eq!(defined.trim(), format!("\"{}\"", env!("CARGO_PKG_VERSION")));
}
