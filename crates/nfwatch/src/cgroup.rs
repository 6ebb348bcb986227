//! Cgroup ids as an operator reads them: the cgroup's path, its systemd
//! unit and the container it belongs to.
//!
//! The kernel reports a socket's cgroup v2 id, the kernfs node id, which on
//! 64-bit Linux is the inode number of the cgroup's directory in the cgroup2
//! mount; so a walk of that mount maps ids to paths.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nfwatch_proto::CgroupFilter;

use crate::rebuilt::RebuiltMap;

/// Unit types systemd puts processes in (slices only group other units).
const PROCESS_UNIT_SUFFIXES: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];

/// Prefixes container runtimes give a container's systemd scope,
/// `<prefix><id>.scope`.
const RUNTIME_SCOPE_PREFIXES: [&str; 4] = ["docker-", "cri-containerd-", "crio-", "libpod-"];

/// What a cgroup id stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupInfo {
    /// Relative to the cgroup2 mount, with a leading slash; the root is `/`.
    pub path: String,
    /// The systemd unit, as `systemctl status` names it.
    pub unit: Option<String>,
    /// The container id (or, for systemd-nspawn, the machine name).
    pub container: Option<String>,
}

impl CgroupInfo {
    fn from_path(path: String) -> Self {
        let unit = unit_of(&path).map(str::to_owned);
        let container = container_of(&path).map(Cow::into_owned);
        Self {
            path,
            unit,
            container,
        }
    }
}

/// The systemd unit a cgroup belongs to, as systemd's `cg_path_get_unit`
/// finds it: the first component below the slices, if it is a unit that
/// holds processes.
pub fn unit_of(path: &str) -> Option<&str> {
    components(path)
        .find(|c| !c.ends_with(".slice"))
        .filter(|c| is_process_unit(c))
}

/// The id of the container a cgroup belongs to, from its innermost component
/// that names one (for systemd-nspawn, the machine name). Borrowed but for
/// machine names, which systemd escapes.
pub fn container_of(path: &str) -> Option<Cow<'_, str>> {
    path.rsplit('/').find_map(container_in)
}

/// Resolves cgroup ids to [`CgroupInfo`], caching the whole tree.
#[derive(Debug)]
pub struct Cgroups {
    /// The cgroup2 mount point; without one nothing resolves.
    root: Option<PathBuf>,
    entries: RebuiltMap<u64, CgroupInfo>,
}

impl Cgroups {
    /// A resolver for the first cgroup2 mount in `/proc/self/mountinfo`.
    pub fn new() -> Self {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok();
        Self::at(mountinfo.as_deref().and_then(cgroup2_mount))
    }

    /// A resolver for the tree under `root`, as if a cgroup2 mount.
    pub fn with_root(root: PathBuf) -> Self {
        Self::at(Some(root))
    }

    fn at(root: Option<PathBuf>) -> Self {
        Self {
            root,
            entries: RebuiltMap::new(),
        }
    }

    /// The cgroup at `path` (under the mount, with a leading slash) as the
    /// kernel takes a subtree: its id and its depth, the root's being 0.
    pub fn subtree(&self, path: &str) -> Result<CgroupFilter, String> {
        let root = self
            .root
            .as_ref()
            .ok_or("no cgroup2 file system is mounted")?;
        let relative = path
            .strip_prefix('/')
            .ok_or("not a path under the cgroup2 mount (it starts with /)")?;
        let components: Vec<&str> = relative.split('/').filter(|c| !c.is_empty()).collect();
        if components.iter().any(|&c| c == "." || c == "..") {
            return Err("a path with . or .. components".into());
        }
        let dir = root.join(relative);
        let meta = fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a cgroup", dir.display()));
        }
        let level = u16::try_from(components.len()).map_err(|_| "too deep a path")?;
        Ok(CgroupFilter {
            id: meta.ino(),
            level,
        })
    }

    /// The cgroup with this id; `None` for one removed before it was seen
    /// (callers print the id instead).
    pub fn resolve(&mut self, id: u64) -> Option<&CgroupInfo> {
        let root = &self.root;
        self.entries
            .get(&id, || root.as_deref().map(walk).unwrap_or_default())
    }
}

#[cfg(test)]
impl Cgroups {
    /// As if the last walk of the tree were a second older.
    pub fn backdate(&mut self) {
        self.entries.backdate();
    }
}

impl Default for Cgroups {
    fn default() -> Self {
        Self::new()
    }
}

/// Every directory under `root`, `root` included, by inode number. Symlinks
/// are not followed, so the walk ends where the filesystem does; unreadable
/// directories are skipped.
fn walk(root: &Path) -> HashMap<u64, CgroupInfo> {
    let mut entries = HashMap::new();
    if let Ok(meta) = fs::metadata(root) {
        entries.insert(meta.ino(), CgroupInfo::from_path("/".to_owned()));
    }
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, path)) = pending.pop() {
        let Ok(children) = fs::read_dir(&dir) else {
            continue;
        };
        for child in children.flatten() {
            if !child.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(meta) = child.metadata() else {
                continue;
            };
            let child_path = format!("{path}/{}", child.file_name().to_string_lossy());
            entries.insert(meta.ino(), CgroupInfo::from_path(child_path.clone()));
            pending.push((child.path(), child_path));
        }
    }
    entries
}

/// The first cgroup2 mount point in a `/proc/<pid>/mountinfo` text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Optional fields come between the mount options and ` - `; spaces
        // in paths are escaped, so the separator is unambiguous.
        let (mount, filesystem) = line.split_once(" - ")?;
        if filesystem.split(' ').next() != Some("cgroup2") {
            return None;
        }
        let point = mount.split(' ').nth(4)?;
        Some(PathBuf::from(OsString::from_vec(unescape(
            point, "\\", 8, 3,
        ))))
    })
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// Whether `name` is a valid unit name of a type that holds processes.
fn is_process_unit(name: &str) -> bool {
    PROCESS_UNIT_SUFFIXES.iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|stem| {
            !stem.is_empty()
                && stem
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
        })
    })
}

/// The container id or machine name one path component names.
fn container_in(component: &str) -> Option<Cow<'_, str>> {
    colon_scope_id(component)
        .or_else(|| runtime_scope_id(component))
        .or_else(|| is_bare_id(component).then_some(component))
        .map(Cow::Borrowed)
        .or_else(|| machine_name(component))
}

/// containerd's systemd driver given a `<slice>:<prefix>:<id>` cgroup path
/// it left unexpanded.
fn colon_scope_id(component: &str) -> Option<&str> {
    let mut parts = component.split(':');
    let (slice, prefix, id) = (parts.next()?, parts.next()?, parts.next()?);
    let valid =
        parts.next().is_none() && slice.ends_with(".slice") && !prefix.is_empty() && is_hex(id);
    valid.then_some(id)
}

/// `<runtime>-<id>.scope` of a systemd cgroup driver, or podman's cgroupfs
/// `libpod-<id>`. `libpod-conmon-` and `crio-conmon-` scopes hold the
/// runtime's monitor, not the container, and are no hex id.
fn runtime_scope_id(component: &str) -> Option<&str> {
    let id = match component.strip_suffix(".scope") {
        Some(stem) => RUNTIME_SCOPE_PREFIXES
            .iter()
            .find_map(|prefix| stem.strip_prefix(prefix)),
        None => component.strip_prefix("libpod-"),
    }?;
    is_hex(id).then_some(id)
}

/// A cgroupfs driver's container directory: the full 64-digit id, so that
/// no pod or other directory passes for one.
fn is_bare_id(component: &str) -> bool {
    component.len() == 64 && is_hex(component)
}

/// systemd-nspawn's machine: machined's `machine-<escaped name>.scope` or
/// the `systemd-nspawn@<name>.service` template.
fn machine_name(component: &str) -> Option<Cow<'_, str>> {
    let name = component
        .strip_prefix("machine-")
        .and_then(|rest| rest.strip_suffix(".scope"))
        .or_else(|| {
            component
                .strip_prefix("systemd-nspawn@")
                .and_then(|rest| rest.strip_suffix(".service"))
        })?;
    (!name.is_empty()).then(|| unescape_unit(name))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Undoes systemd's `\xNN` escapes in unit names (`-` is `\x2d`).
fn unescape_unit(name: &str) -> Cow<'_, str> {
    if !name.contains("\\x") {
        return Cow::Borrowed(name);
    }
    Cow::Owned(String::from_utf8_lossy(&unescape(name, "\\x", 16, 2)).into_owned())
}

/// `s` with each `marker` followed by `width` digits in `radix` replaced by
/// the byte they denote; anything else is kept as it is.
fn unescape(s: &str, marker: &str, radix: u32, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        match escaped_byte(rest, marker.as_bytes(), radix, width) {
            Some(byte) => {
                out.push(byte);
                rest = &rest[marker.len() + width..];
            }
            None => {
                out.push(first);
                rest = tail;
            }
        }
    }
    out
}

fn escaped_byte(s: &[u8], marker: &[u8], radix: u32, width: usize) -> Option<u8> {
    let digits = s.strip_prefix(marker)?.get(..width)?;
    let value = digits.iter().try_fold(0u32, |acc, &d| {
        Some(acc * radix + char::from(d).to_digit(radix)?)
    })?;
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c2d8e5f1a3b7c9d0e6f2a4b8c1d3e5f7a9b0c2d4e6f8a1b3c5d7e9f0a2b4c6d";
    const OTHER_ID: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
    const POD_UID: &str = "8c4a2f37-3e4b-4c0a-9a55-2d6fd8d3c0f1";
    const POD_UID_UNDERSCORES: &str = "8c4a2f37_3e4b_4c0a_9a55_2d6fd8d3c0f1";

    fn container(path: &str) -> Option<String> {
        container_of(path).map(Cow::into_owned)
    }

    #[test]
    fn unit_is_the_first_unit_below_the_slices() {
        let cases = [
            ("/system.slice/nginx.service", Some("nginx.service")),
            ("/system.slice/nginx.service/sub", Some("nginx.service")),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
                Some("user@1000.service"),
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope",
                Some("session-3.scope"),
            ),
            ("/init.scope", Some("init.scope")),
            ("/system.slice/dbus.socket", Some("dbus.socket")),
            ("/system.slice/home.mount", Some("home.mount")),
            ("/system.slice/dev-sda2.swap", Some("dev-sda2.swap")),
            ("/system.slice", None),
            ("/", None),
            ("/test.slice/app", None),
            ("/system.slice/sys-devices-foo.device", None),
            ("/system.slice/.service", None),
            ("/system.slice/bad name.service", None),
        ];
        for (path, unit) in cases {
            assert_eq!(unit_of(path), unit, "{path}");
        }
    }

    #[test]
    fn unit_of_container_paths() {
        let scope = format!("docker-{ID}.scope");
        assert_eq!(
            unit_of(&format!("/system.slice/{scope}")),
            Some(scope.as_str())
        );
        assert_eq!(unit_of(&format!("/docker/{ID}")), None);
        assert_eq!(
            unit_of(&format!(
                "/system.slice/containerd.service/kubepods-besteffort-pod{POD_UID_UNDERSCORES}.slice:cri-containerd:{ID}"
            )),
            Some("containerd.service")
        );
    }

    #[test]
    fn docker_systemd_scope() {
        assert_eq!(
            container(&format!("/system.slice/docker-{ID}.scope")),
            Some(ID.into())
        );
    }

    #[test]
    fn docker_cgroupfs() {
        assert_eq!(container(&format!("/docker/{ID}")), Some(ID.into()));
    }

    #[test]
    fn kubernetes_containerd_systemd_scope() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID_UNDERSCORES}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(container(&path), Some(ID.into()));
    }

    #[test]
    fn kubernetes_containerd_colon_path() {
        let path = format!(
            "/system.slice/containerd.service/kubepods-besteffort-pod{POD_UID_UNDERSCORES}.slice:cri-containerd:{ID}"
        );
        assert_eq!(container(&path), Some(ID.into()));
    }

    #[test]
    fn kubernetes_crio_systemd_scope() {
        let pod = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID_UNDERSCORES}.slice"
        );
        assert_eq!(
            container(&format!("{pod}/crio-{ID}.scope")),
            Some(ID.into())
        );
        assert_eq!(
            container(&format!("{pod}/crio-{ID}.scope/container")),
            Some(ID.into())
        );
        assert_eq!(container(&format!("{pod}/crio-conmon-{ID}.scope")), None);
    }

    #[test]
    fn kubernetes_cgroupfs() {
        assert_eq!(
            container(&format!("/kubepods/burstable/pod{POD_UID}/{ID}")),
            Some(ID.into())
        );
        assert_eq!(
            container(&format!("/kubepods/pod{POD_UID}/{ID}")),
            Some(ID.into())
        );
        assert_eq!(
            container(&format!("/kubepods/burstable/pod{POD_UID}")),
            None
        );
    }

    #[test]
    fn podman_systemd_scope() {
        assert_eq!(
            container(&format!("/machine.slice/libpod-{ID}.scope")),
            Some(ID.into())
        );
        assert_eq!(
            container(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
    }

    #[test]
    fn podman_split_cgroup_is_the_scope() {
        assert_eq!(
            container(&format!("/machine.slice/libpod-{ID}.scope/container")),
            Some(ID.into())
        );
    }

    #[test]
    fn podman_rootless() {
        let path =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
        assert_eq!(container(&path), Some(ID.into()));
    }

    #[test]
    fn podman_cgroupfs() {
        assert_eq!(
            container(&format!("/libpod_parent/libpod-{ID}")),
            Some(ID.into())
        );
    }

    #[test]
    fn nspawn_machine_scope_is_unescaped() {
        assert_eq!(
            container("/machine.slice/machine-my\\x2dbox.scope"),
            Some("my-box".into())
        );
        assert_eq!(
            container("/machine.slice/machine-my\\x2dbox.scope/payload/system.slice/nginx.service"),
            Some("my-box".into())
        );
    }

    #[test]
    fn nspawn_service() {
        assert_eq!(
            container("/machine.slice/systemd-nspawn@mybox.service/payload"),
            Some("mybox".into())
        );
    }

    #[test]
    fn innermost_container_wins() {
        assert_eq!(
            container(&format!("/docker/{OTHER_ID}/docker/{ID}")),
            Some(ID.into())
        );
    }

    #[test]
    fn no_container() {
        let short = &ID[..63];
        let not_hex = "g".repeat(64);
        let paths = [
            "/".to_owned(),
            "/system.slice".to_owned(),
            "/system.slice/nginx.service".to_owned(),
            "/system.slice/docker.service".to_owned(),
            "/test.slice/app".to_owned(),
            "/user.slice/user-1000.slice/session-3.scope".to_owned(),
            format!("/docker/{short}"),
            format!("/docker/{not_hex}"),
            "/system.slice/docker-.scope".to_owned(),
            "/system.slice/docker-xyz.scope".to_owned(),
            "/machine.slice/machine-.scope".to_owned(),
        ];
        for path in paths {
            assert_eq!(container(&path), None, "{path}");
        }
    }

    #[test]
    fn unescape_keeps_what_is_no_escape() {
        assert_eq!(unescape_unit("a\\x2db\\x2"), "a-b\\x2");
        assert_eq!(unescape_unit("a\\xzzb"), "a\\xzzb");
        assert_eq!(unescape("a\\777b", "\\", 8, 3), b"a\\777b");
    }

    #[test]
    fn mountinfo_first_cgroup2_mount() {
        let mountinfo = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
25 22 0:22 / /sys/fs/cgroup/cpu rw,nosuid shared:9 - cgroup cgroup rw,cpu
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
27 22 0:23 / /mnt/other rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn mountinfo_unescapes_the_mount_point() {
        let mountinfo = "30 22 0:23 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
    }

    #[test]
    fn mountinfo_without_cgroup2() {
        let mountinfo = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
25 22 0:22 / /sys/fs/cgroup/cpu rw,nosuid shared:9 - cgroup cgroup rw,cpu
";
        assert_eq!(cgroup2_mount(mountinfo), None);
    }

    #[test]
    fn nothing_resolves_without_a_mount() {
        let mut cgroups = Cgroups::at(None);
        assert_eq!(cgroups.resolve(1), None);
    }

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn resolves_every_directory_by_inode() {
        let root = tempfile::tempdir().unwrap();
        let service = root.path().join("a.slice/b.service");
        fs::create_dir_all(&service).unwrap();
        fs::write(root.path().join("a.slice/cgroup.procs"), "").unwrap();
        let mut cgroups = Cgroups::with_root(root.path().to_path_buf());

        let info = cgroups.resolve(ino(&service)).unwrap();
        assert_eq!(info.path, "/a.slice/b.service");
        assert_eq!(info.unit.as_deref(), Some("b.service"));
        assert_eq!(info.container, None);
        let slice = cgroups.resolve(ino(&root.path().join("a.slice"))).unwrap();
        assert_eq!(slice.path, "/a.slice");
        assert_eq!(slice.unit, None);
        assert_eq!(cgroups.resolve(ino(root.path())).unwrap().path, "/");
        assert_eq!(cgroups.resolve(u64::MAX), None);
    }

    #[test]
    fn does_not_follow_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(target.path(), root.path().join("link")).unwrap();
        let mut cgroups = Cgroups::with_root(root.path().to_path_buf());
        assert_eq!(cgroups.resolve(ino(target.path())), None);
    }

    #[test]
    fn subtrees_are_their_id_and_depth() {
        let root = tempfile::tempdir().unwrap();
        let app = root.path().join("test.slice/app");
        fs::create_dir_all(&app).unwrap();
        fs::write(root.path().join("cgroup.procs"), "").unwrap();
        let cgroups = Cgroups::with_root(root.path().to_path_buf());
        let id = |path: &str| cgroups.subtree(path).map(|f| (f.id, f.level));
        assert_eq!(id("/test.slice/app"), Ok((ino(&app), 2)));
        assert_eq!(id("/test.slice/app/"), Ok((ino(&app), 2)));
        assert_eq!(id("/"), Ok((ino(root.path()), 0)));
        assert!(id("test.slice").unwrap_err().contains("starts with /"));
        assert!(id("/test.slice/../x").unwrap_err().contains(".."));
        assert!(id("/cgroup.procs").unwrap_err().contains("is not a cgroup"));
        assert!(id("/other.slice").unwrap_err().contains("No such file"));
        let unmounted = Cgroups::at(None);
        assert!(unmounted.subtree("/").unwrap_err().contains("mounted"));
    }

    #[test]
    fn new_directories_resolve_once_the_interval_has_passed() {
        let root = tempfile::tempdir().unwrap();
        let mut cgroups = Cgroups::with_root(root.path().to_path_buf());
        assert!(cgroups.resolve(ino(root.path())).is_some());

        let late = root.path().join(format!("docker-{ID}.scope"));
        fs::create_dir(&late).unwrap();
        assert_eq!(cgroups.resolve(ino(&late)), None);

        cgroups.backdate();
        let info = cgroups.resolve(ino(&late)).unwrap();
        assert_eq!(info.container.as_deref(), Some(ID));
    }
}
