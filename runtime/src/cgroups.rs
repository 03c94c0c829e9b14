//! The container's cgroup: the manager for the host's hierarchy (v1 or v2,
//! whatever the host has), stats in runc's `events` format, and resource
//! updates in runc's `update` format.
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libcgroups::common::{
    create_cgroup_manager, get_cgroup_setup, AnyCgroupManager, CgroupConfig, CgroupManager,
    CgroupSetup,
};
use libcgroups::stats::{BlkioDeviceStat, MemoryData, Stats};
use libcontainer::oci_spec::runtime::LinuxResources;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Map, Value};

use crate::mountinfo::Mount;

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroupfs manager for a container's cgroup (the systemd driver is not
/// offered).
pub fn manager(path: &Path, id: &str) -> Result<AnyCgroupManager> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: path.to_path_buf(),
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .with_context(|| format!("cgroup {}", path.display()))
}

/// The v1 controllers rcrun's runtime library manages (a container's cgroup
/// exists under each of them that the host mounts).
const V1_CONTROLLERS: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// A container's cgroup with its sub-cgroups, for signalling every process
/// in it and tearing it down.
///
/// On v1, building the library's manager reads `/proc/self/mountinfo` once
/// per controller (and re-verifies /proc each time); these steps only need
/// the directories, so they come from [`v1_hierarchies`] here. On v2 the
/// library's manager removes only the cgroup's own directory, so a container
/// that made sub-cgroups (systemd inside it, `exec --cgroup`) could never be
/// deleted; the teardown walks the tree on both.
pub enum CgroupTree {
    V1 {
        /// The cgroup's directory in each mounted controller's hierarchy
        /// (co-mounted controllers share one).
        dirs: Vec<PathBuf>,
        freezer: Option<PathBuf>,
    },
    V2 {
        dir: PathBuf,
    },
}

impl CgroupTree {
    pub fn open(path: &Path) -> Result<CgroupTree> {
        let rel = relative(path)?;
        // A teardown kills everything below the cgroup: never a hierarchy's root.
        if rel.as_os_str().is_empty() {
            bail!("refusing to tear down the root cgroup ({:?})", path);
        }
        if is_unified() {
            return Ok(CgroupTree::V2 {
                dir: Path::new(ROOT).join(rel),
            });
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut freezer = None;
        for (mount_point, controllers) in v1_hierarchies()? {
            let dir = mount_point.join(&rel);
            if controllers.iter().any(|c| c == "freezer") {
                freezer = Some(dir.clone());
            }
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        Ok(CgroupTree::V1 { dirs, freezer })
    }

    /// Freezes the cgroup, so that no process in it forks while they are
    /// signalled one by one. On v1 a cgroup can stay FREEZING while a task
    /// is in an uninterruptible state: as runc (and libcgroups) do, it is
    /// asked again, with a short thaw now and then, and thawed back when it
    /// does not freeze.
    pub fn freeze(&self) -> Result<()> {
        match self {
            CgroupTree::V1 {
                freezer: Some(dir), ..
            } => {
                let state = dir.join("freezer.state");
                for attempt in 0..1000 {
                    if attempt % 50 == 49 {
                        let _ = std::fs::write(&state, "THAWED");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    std::fs::write(&state, "FROZEN")
                        .with_context(|| format!("freeze {}", dir.display()))?;
                    if attempt % 25 == 24 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if std::fs::read_to_string(&state).is_ok_and(|s| s.trim() == "FROZEN") {
                        return Ok(());
                    }
                }
                let _ = std::fs::write(&state, "THAWED");
                bail!("{} does not freeze", dir.display())
            }
            CgroupTree::V1 { freezer: None, .. } => Ok(()),
            CgroupTree::V2 { dir } => {
                std::fs::write(dir.join("cgroup.freeze"), "1")
                    .with_context(|| format!("freeze {}", dir.display()))?;
                // Frozen once cgroup.events says so (every task stopped).
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while std::time::Instant::now() < deadline {
                    let events = std::fs::read_to_string(dir.join("cgroup.events"));
                    if events.is_ok_and(|e| e.lines().any(|l| l == "frozen 1")) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
                bail!("{} does not freeze", dir.display())
            }
        }
    }

    /// Thaws a frozen cgroup: frozen tasks do not die until thawed.
    pub fn thaw(&self) {
        match self {
            CgroupTree::V1 {
                freezer: Some(dir), ..
            } => {
                let state = dir.join("freezer.state");
                if std::fs::read_to_string(&state).is_ok_and(|s| s.trim() != "THAWED") {
                    let _ = std::fs::write(&state, "THAWED");
                }
            }
            CgroupTree::V1 { freezer: None, .. } => {}
            CgroupTree::V2 { dir } => {
                let freeze = dir.join("cgroup.freeze");
                if std::fs::read_to_string(&freeze).is_ok_and(|s| s.trim() != "0") {
                    let _ = std::fs::write(&freeze, "0");
                }
            }
        }
    }

    /// The processes in the cgroup and its descendants.
    pub fn pids(&self) -> Vec<i32> {
        match self {
            CgroupTree::V1 { dirs, .. } => {
                let mut pids = Vec::new();
                for pid in dirs.iter().flat_map(|d| procs_below(d)) {
                    if !pids.contains(&pid) {
                        pids.push(pid);
                    }
                }
                pids
            }
            CgroupTree::V2 { dir } => procs_below(dir),
        }
    }

    /// Sends SIGKILL to every process in the cgroup and its descendants.
    pub fn kill_all(&self) {
        match self {
            CgroupTree::V1 { .. } => {
                for pid in self.pids() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            CgroupTree::V2 { dir } => {
                // cgroup.kill (Linux 5.14) reaches the whole tree and
                // processes forked meanwhile; older kernels get the signal
                // per process.
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.kill"))
                    .and_then(|mut f| std::io::Write::write_all(&mut f, b"1"));
                if written.is_err() {
                    for pid in procs_below(dir) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
        }
    }

    /// Removes the cgroup (sub-cgroups first), killing what is still in it;
    /// a cgroup that does not exist is not an error.
    pub fn remove(&self) -> Result<()> {
        match self {
            CgroupTree::V1 { dirs, .. } => {
                // Every hierarchy is tried: one that fails must not leave
                // the cgroup behind in the others.
                let mut first_error = None;
                for dir in dirs {
                    if let Err(e) = remove_tree(dir) {
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
            CgroupTree::V2 { dir } => remove_tree(dir),
        }
    }
}

/// A cgroups path as a path relative to a hierarchy's root; `..` is refused
/// so that no path reaches outside the hierarchy.
fn relative(path: &Path) -> Result<PathBuf> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                bail!("cgroups path {} must not contain \"..\"", path.display())
            }
        }
    }
    Ok(rel)
}

/// A v1 hierarchy's mount point and the controllers it holds.
type Hierarchy = (PathBuf, Vec<String>);

/// Mount points of the v1 hierarchies that hold one of [`V1_CONTROLLERS`],
/// with the controllers of each.
///
/// As runc does, the usual layout is tried first: `/proc/self/cgroup` names
/// every hierarchy by its controllers (`4:cpu,cpuacct:/...`) and hosts mount
/// it at `/sys/fs/cgroup/cpu,cpuacct`, which a statfs confirms. Reading
/// mountinfo instead costs time in proportion to the host's mounts, hundreds
/// on a busy node. Any other layout is read from mountinfo.
fn v1_hierarchies() -> Result<Vec<Hierarchy>> {
    let own = crate::mountinfo::read_proc_self("cgroup")?;
    if let Some(found) = v1_hierarchies_in(&own, Path::new(ROOT)) {
        return Ok(found);
    }
    Ok(v1_mounts(&crate::mountinfo::read()?))
}

/// The hierarchies of a `/proc/self/cgroup` text at `<root>/<controllers>`,
/// or `None` when one of them is not a cgroup mount there.
fn v1_hierarchies_in(proc_self_cgroup: &str, root: &Path) -> Option<Vec<Hierarchy>> {
    let mut found = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, Some(names), Some(_)) = (fields.next(), fields.next(), fields.next()) else {
            return None;
        };
        let controllers: Vec<String> = names
            .split(',')
            .filter(|c| V1_CONTROLLERS.contains(c))
            .map(str::to_string)
            .collect();
        if controllers.is_empty() {
            continue;
        }
        let mount_point = root.join(names);
        let fs = nix::sys::statfs::statfs(&mount_point).ok()?;
        if fs.filesystem_type() != nix::sys::statfs::CGROUP_SUPER_MAGIC {
            return None;
        }
        found.push((mount_point, controllers));
    }
    Some(found)
}

/// Mount points of the v1 hierarchies that hold one of [`V1_CONTROLLERS`],
/// with the controllers of each (the super options of a `cgroup` mount:
/// `rw,cpu,cpuacct`).
fn v1_mounts(mounts: &[Mount]) -> Vec<Hierarchy> {
    mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup")
        .filter_map(|m| {
            let controllers: Vec<String> = m
                .super_options
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o))
                .map(str::to_string)
                .collect();
            (!controllers.is_empty()).then(|| (m.mount_point.clone(), controllers))
        })
        .collect()
}

/// PIDs in a v1 cgroup directory and all its sub-cgroups.
fn procs_below(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for sub in subdirs(dir) {
        pids.extend(procs_below(&sub));
    }
    pids
}

/// Sub-cgroups of a cgroup directory. cgroupfs counts them in the
/// directory's link count (2 + sub-directories): a cgroup without any, the
/// usual case, is not listed (its many control files make listing costly).
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(dir).map_or(true, |m| m.nlink() <= 2) {
        return Vec::new();
    }
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes a v1 cgroup directory, its sub-cgroups first. Tasks that were
/// just killed may linger for a moment: each rmdir is retried with a short
/// back-off (10, 10, 20, 60 ms) and what is still inside is killed again.
fn remove_tree(dir: &Path) -> Result<()> {
    for sub in subdirs(dir) {
        remove_tree(&sub)?;
    }
    let mut delay = Duration::from_millis(10);
    for attempt in 1..=5u32 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt == 5 => {
                return Err(e).with_context(|| format!("remove cgroup {}", dir.display()))
            }
            Err(_) => {}
        }
        for pid in procs_below(dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(delay);
        delay = (delay * attempt).min(Duration::from_millis(100));
    }
    Ok(())
}

/// Creates the ancestors of a container's v2 cgroup before libcontainer
/// makes the cgroup itself. Its v2 manager tests `exists()` and then calls
/// `create_dir` for each level, so two containers created at once under a
/// parent that does not exist yet race, and one fails with EEXIST;
/// `create_dir_all` takes a directory made meanwhile as success. (The v1
/// controllers already use `create_dir_all`.) The ancestors stay, as runc's
/// and libcontainer's do: other containers share them.
pub fn create_v2_ancestors(path: &Path) -> Result<()> {
    if !is_unified() {
        return Ok(());
    }
    let rel = relative(path)?;
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        let dir = Path::new(ROOT).join(parent);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("create cgroup parent {}", dir.display()))?;
    }
    Ok(())
}

/// Whether the host runs the unified (v2-only) hierarchy.
pub fn is_unified() -> bool {
    matches!(get_cgroup_setup(), Ok(CgroupSetup::Unified))
}

/// Directory of a v2 cgroup, or of one v1 controller's cgroup.
pub fn dir(path: &Path, controller: Option<&str>) -> std::path::PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    match controller {
        Some(c) if !is_unified() => Path::new(ROOT).join(c).join(rel),
        _ => Path::new(ROOT).join(rel),
    }
}

/// PIDs in the container's cgroup (all controllers' view agree for procs).
pub fn pids(path: &Path, id: &str) -> Result<Vec<i32>> {
    let m = manager(path, id)?;
    let mut pids: Vec<i32> = m
        .get_all_pids()
        .context("read the cgroup's processes")?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// OOM kills counted for the cgroup (v2 `memory.events`, v1 `memory.oom_control`).
pub fn oom_kills(path: &Path) -> u64 {
    let (file, key) = if is_unified() {
        (dir(path, None).join("memory.events"), "oom_kill")
    } else {
        (
            dir(path, Some("memory")).join("memory.oom_control"),
            "oom_kill",
        )
    };
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
            })
        })
        .unwrap_or(0)
}

fn mem(d: &MemoryData) -> Value {
    let mut m = Map::new();
    m.insert("limit".into(), json!(d.limit));
    if d.usage != 0 {
        m.insert("usage".into(), json!(d.usage));
    }
    if d.max_usage != 0 {
        m.insert("max".into(), json!(d.max_usage));
    }
    m.insert("failcnt".into(), json!(d.fail_count));
    Value::Object(m)
}

fn blkio_entries(v: &[BlkioDeviceStat]) -> Value {
    Value::Array(
        v.iter()
            .map(|e| {
                json!({
                    "major": e.major,
                    "minor": e.minor,
                    "op": e.op_type.clone().unwrap_or_default(),
                    "value": e.value,
                })
            })
            .collect(),
    )
}

fn nonzero(m: &mut Map<String, Value>, k: &str, v: u64) {
    if v != 0 {
        m.insert(k.into(), json!(v));
    }
}

/// runc's `events` stats object (`data` of a `{"type":"stats"}` event).
pub fn runc_stats(s: &Stats) -> Value {
    let mut usage = Map::new();
    nonzero(&mut usage, "total", s.cpu.usage.usage_total);
    if !s.cpu.usage.per_core_usage_total.is_empty() {
        usage.insert("percpu".into(), json!(s.cpu.usage.per_core_usage_total));
    }
    if !s.cpu.usage.per_core_usage_kernel.is_empty() {
        usage.insert(
            "percpu_kernel".into(),
            json!(s.cpu.usage.per_core_usage_kernel),
        );
    }
    if !s.cpu.usage.per_core_usage_user.is_empty() {
        usage.insert("percpu_user".into(), json!(s.cpu.usage.per_core_usage_user));
    }
    usage.insert("kernel".into(), json!(s.cpu.usage.usage_kernel));
    usage.insert("user".into(), json!(s.cpu.usage.usage_user));
    let mut throttling = Map::new();
    nonzero(&mut throttling, "periods", s.cpu.throttling.periods);
    nonzero(
        &mut throttling,
        "throttledPeriods",
        s.cpu.throttling.throttled_periods,
    );
    nonzero(
        &mut throttling,
        "throttledTime",
        s.cpu.throttling.throttled_time,
    );

    let mut memory = Map::new();
    memory.insert("cache".into(), json!(s.memory.cache));
    memory.insert("usage".into(), mem(&s.memory.memory));
    memory.insert("swap".into(), mem(&s.memory.memswap));
    memory.insert("kernel".into(), mem(&s.memory.kernel));
    memory.insert("kernelTCP".into(), mem(&s.memory.kernel_tcp));
    if !s.memory.stats.is_empty() {
        memory.insert("raw".into(), json!(s.memory.stats));
    }

    let mut pids = Map::new();
    nonzero(&mut pids, "current", s.pids.current);
    nonzero(&mut pids, "limit", s.pids.limit);

    let mut blkio = Map::new();
    let b = &s.blkio;
    for (k, v) in [
        ("ioServiceBytesRecursive", &b.service_bytes),
        ("ioServicedRecursive", &b.serviced),
        ("ioQueueRecursive", &b.queued),
        ("ioServiceTimeRecursive", &b.service_time),
        ("ioWaitTimeRecursive", &b.wait_time),
        ("ioMergedRecursive", &b.merged),
        ("ioTimeRecursive", &b.time),
        ("sectorsRecursive", &b.sectors),
    ] {
        if !v.is_empty() {
            blkio.insert(k.into(), blkio_entries(v));
        }
    }

    let hugetlb: Map<String, Value> = s
        .hugetlb
        .iter()
        .map(|(k, h)| {
            (
                k.clone(),
                json!({"usage": h.usage, "max": h.max_usage, "failcnt": h.fail_count}),
            )
        })
        .collect();

    json!({
        "cpu": {"usage": usage, "throttling": throttling},
        "memory": memory,
        "pids": pids,
        "blkio": blkio,
        "hugetlb": hugetlb,
        "intel_rdt": {},
        "network_interfaces": null,
    })
}

/// Deep-merges `update` into `base` (objects key by key, anything else replaced).
pub fn merge(base: &mut Value, update: &Value) {
    match (base, update) {
        (Value::Object(b), Value::Object(u)) => {
            for (k, v) in u {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, u) => *b = u.clone(),
    }
}

/// Applies resources to a running container's cgroup. Device rules are
/// left alone: re-applying them would briefly deny devices in use.
pub fn apply(path: &Path, id: &str, resources: &LinuxResources) -> Result<()> {
    let mut r = resources.clone();
    r.set_devices(None);
    let m = manager(path, id)?;
    m.apply(&libcgroups::common::ControllerOpt {
        resources: &r,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    })
    .context("apply resources to the cgroup")
}

/// Parses a byte size with optional binary unit (`512`, `64k`, `100m`, `1g`,
/// `1.5GiB`); `-1` means unlimited.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let lower = lower.trim_end_matches('b').trim_end_matches('i');
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        Some('p') => (&lower[..lower.len() - 1], 1 << 50),
        _ => (lower, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {s:?}"))?;
    if n < 0.0 {
        return Err(format!("invalid size {s:?}"));
    }
    Ok((n * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("64k").unwrap(), 65536);
        assert_eq!(parse_bytes("100M").unwrap(), 100 << 20);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn v1_mounts_from_mountinfo() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
37 31 0:34 / /sys/fs/cgroup/my\\040freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let mounts = crate::mountinfo::parse(mi);
        let found = v1_mounts(&mounts);
        let found: Vec<(&Path, Vec<&str>)> = found
            .iter()
            .map(|(p, c)| (p.as_path(), c.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    Path::new("/sys/fs/cgroup/cpu,cpuacct"),
                    vec!["cpu", "cpuacct"]
                ),
                (Path::new("/sys/fs/cgroup/my freezer"), vec!["freezer"]),
            ]
        );
    }

    #[test]
    fn v1_hierarchies_are_found_where_proc_self_cgroup_names_them() {
        // A root with no cgroup mounts under it: the usual layout is not
        // there, so the caller must fall back to mountinfo.
        let own = "5:cpu,cpuacct:/user.slice\n1:name=systemd:/init.scope\n0::/init.scope\n";
        let root = std::env::temp_dir();
        assert_eq!(v1_hierarchies_in(own, &root), None);
        // Only named and v2 hierarchies: nothing to look up.
        assert_eq!(
            v1_hierarchies_in("1:name=systemd:/\n0::/\n", &root),
            Some(vec![])
        );
        assert_eq!(v1_hierarchies_in("garbage\n", &root), None);
    }

    #[test]
    fn v1_hierarchies_agree_with_mountinfo_on_this_host() {
        if is_unified() {
            return;
        }
        let own = crate::mountinfo::read_proc_self("cgroup").unwrap();
        let mut fast = v1_hierarchies_in(&own, Path::new(ROOT)).expect("the usual layout");
        let mounts = crate::mountinfo::read().unwrap();
        let mut slow = v1_mounts(&mounts);
        fast.sort();
        slow.sort();
        assert!(!fast.is_empty());
        assert_eq!(fast, slow);
    }

    #[test]
    fn cgroups_paths_stay_inside_the_hierarchy() {
        assert_eq!(
            relative(Path::new("/rcrun/a")).unwrap(),
            PathBuf::from("rcrun/a")
        );
        assert_eq!(relative(Path::new("x/./y")).unwrap(), PathBuf::from("x/y"));
        assert!(relative(Path::new("/rcrun/../../etc")).is_err());
        assert!(CgroupTree::open(Path::new("/")).is_err());
        assert!(CgroupTree::open(Path::new("")).is_err());
    }

    #[test]
    fn merge_keeps_unset_fields() {
        let mut base = json!({"memory": {"limit": 1, "swap": 2}, "cpu": {"shares": 3}});
        merge(&mut base, &json!({"memory": {"limit": 10}}));
        assert_eq!(
            base,
            json!({"memory": {"limit": 10, "swap": 2}, "cpu": {"shares": 3}})
        );
    }
}
