//! The container's `cgroup` mount on a cgroup v1 host.
//!
//! libcontainer 0.7 makes it as runc does, a tmpfs with a bind mount of the
//! container's cgroup in each hierarchy, but ignores the mount's options:
//! every hierarchy stayed writable, so the container's root could raise its
//! own limits (`pids.max`, `memory.limit_in_bytes`) or move itself to
//! another cgroup, where runc honours `ro`. Its path-safe resolution of each
//! of those mounts also costs about 1.5 ms per container.
//!
//! So rcrun gives libcontainer a plain tmpfs in its place (runc's: `mode=755`,
//! nosuid, nodev, noexec) and fills it once the container is created, while
//! its init waits for `start` and nothing of the image has run: from the
//! host it clones the container's cgroup of each hierarchy with
//! `open_tree(2)`, sets the mount's attributes (`ro`, `nosuid`, ...), enters
//! the container's mount namespace and moves the clones in, adds runc's
//! symlinks for co-mounted controllers (`cpu` -> `cpu,cpuacct`), and makes
//! the tmpfs read-only when the mount asks for `ro`.
//!
//! libcontainer still makes the mount, and rcrun then makes it read-only,
//! when the container has a cgroup namespace (the hierarchies are then
//! mounted as the cgroup file system itself), when it has a user namespace
//! (the host's root, unmapped there, cannot make the directories of the
//! tmpfs its root owns), when masked or read-only paths lie below or above
//! it (libcontainer applies them after its mounts), and when
//! `createContainer` hooks, which run before `start`, could look at it. A
//! `cgroup` mount with later mounts of the spec below it is left to
//! libcontainer alone, as the spec asks.
//! cgroup v2 needs none of this: libcontainer mounts `cgroup2` with the
//! mount's options.
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Mount, MountBuilder, Spec};
use nix::sched::CloneFlags;

use crate::mount_api::{
    attr_of, move_mount, open_tree, set_attrs, MOUNT_ATTR_RDONLY, OPEN_TREE_CLONE,
};

/// Where the host mounts its v1 hierarchies.
const HOST_ROOT: &str = "/sys/fs/cgroup";

/// What rcrun does for one `cgroup` mount of the spec once the container
/// is created.
#[derive(Debug, PartialEq)]
pub enum CgroupMount {
    /// Mount the hierarchies into the tmpfs that took the mount's place.
    Hierarchies {
        destination: PathBuf,
        /// The `MOUNT_ATTR_*` bits the mount's options set and clear, for
        /// each hierarchy.
        attrs: (u64, u64),
    },
    /// libcontainer mounted the hierarchies: make them read-only.
    ReadOnly { destination: PathBuf },
}

/// Takes the `cgroup` mounts of `spec` that rcrun finishes itself, on a
/// cgroup v1 host, run as root (the finishing enters the container's mount
/// namespace from the host's).
pub fn take(spec: &mut Spec) -> Vec<CgroupMount> {
    if crate::cgroups::is_unified() || !nix::unistd::geteuid().is_root() {
        return Vec::new();
    }
    plan(spec)
}

/// [`take`] on a v1 host.
fn plan(spec: &mut Spec) -> Vec<CgroupMount> {
    let Some(mut mounts) = spec.mounts().clone() else {
        return Vec::new();
    };
    let linux = spec.linux().as_ref();
    let has_namespace = |typ| {
        linux
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == typ))
    };
    let own_namespaces =
        has_namespace(LinuxNamespaceType::Cgroup) || has_namespace(LinuxNamespaceType::User);
    let protected: Vec<PathBuf> = linux
        .map(|l| {
            let masked = l.masked_paths().iter().flatten();
            let readonly = l.readonly_paths().iter().flatten();
            masked.chain(readonly).map(PathBuf::from).collect()
        })
        .unwrap_or_default();
    let container_hooks = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().as_ref())
        .is_some_and(|l| !l.is_empty());

    let destinations: Vec<PathBuf> = mounts.iter().map(|m| m.destination().clone()).collect();
    let mut plans = Vec::new();
    for (i, m) in mounts.iter_mut().enumerate() {
        if m.typ().as_deref() != Some("cgroup") {
            continue;
        }
        let destination = m.destination().clone();
        let options = m.options().clone().unwrap_or_default();
        let overlaps = |p: &PathBuf| p.starts_with(&destination) || destination.starts_with(p);
        // A later mount below it would be covered by, or collide with, the
        // hierarchies mounted after `create`.
        let mounts_below = destinations[i + 1..]
            .iter()
            .any(|d| d.starts_with(&destination));
        if mounts_below {
            continue;
        }
        if own_namespaces || container_hooks || protected.iter().any(overlaps) {
            if attrs_of(&options).0 & MOUNT_ATTR_RDONLY != 0 {
                plans.push(CgroupMount::ReadOnly { destination });
            }
            continue;
        }
        *m = tmpfs_at(&destination);
        plans.push(CgroupMount::Hierarchies {
            destination,
            attrs: attrs_of(&options),
        });
    }
    spec.set_mounts(Some(mounts));
    plans
}

/// The tmpfs under the hierarchies, as runc makes it.
fn tmpfs_at(destination: &Path) -> Mount {
    let options = ["nosuid", "noexec", "nodev", "mode=755"].map(String::from);
    MountBuilder::default()
        .destination(destination)
        .typ("tmpfs")
        .source("tmpfs")
        .options(options.to_vec())
        .build()
        .expect("every field of the mount is set")
}

/// The `MOUNT_ATTR_*` bits (set, clear) that a `cgroup` mount's options
/// ask for; the later of two opposite options wins.
fn attrs_of(options: &[String]) -> (u64, u64) {
    options
        .iter()
        .filter_map(|o| attr_of(o))
        .fold((0, 0), |(set, clr), (s, c)| {
            ((set & !c) | s, (clr & !s) | c)
        })
}

/// Carries out `plans` for the container whose init is `pid` (our child,
/// waiting for `start`).
pub fn finish(plans: &[CgroupMount], pid: i32) -> Result<()> {
    for plan in plans {
        match plan {
            CgroupMount::Hierarchies { destination, attrs } => {
                mount_hierarchies(pid, destination, *attrs)
            }
            CgroupMount::ReadOnly { destination } => make_read_only(pid, destination),
        }
        .with_context(|| format!("the cgroup mount on {}", destination_of(plan).display()))?;
    }
    Ok(())
}

fn destination_of(plan: &CgroupMount) -> &Path {
    match plan {
        CgroupMount::Hierarchies { destination, .. } | CgroupMount::ReadOnly { destination } => {
            destination
        }
    }
}

/// A v1 hierarchy as the container sees it.
#[derive(Debug, PartialEq)]
struct Hierarchy {
    /// Its directory under the mount: `cpu,cpuacct`, `memory`, `systemd`.
    name: String,
    /// The container's cgroup in it, on the host.
    source: PathBuf,
}

fn mount_hierarchies(pid: i32, destination: &Path, (set, clr): (u64, u64)) -> Result<()> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .context("read the container's cgroups")?;
    let host_init = std::fs::read_to_string("/proc/1/cgroup").unwrap_or_default();
    let mut clones = Vec::new();
    for h in hierarchies(&own, &host_init, Path::new(HOST_ROOT)) {
        if !is_cgroup_mount(&Path::new(HOST_ROOT).join(&h.name)) {
            tracing::debug!("cgroup hierarchy {} is not mounted at {HOST_ROOT}", h.name);
            continue;
        }
        let clone = open_tree(
            &h.source,
            OPEN_TREE_CLONE | libc::AT_RECURSIVE as libc::c_uint,
        )?;
        set_attrs(&clone, set, clr, true)
            .with_context(|| format!("set the attributes of {}", h.source.display()))?;
        clones.push((h.name, clone));
    }
    in_mount_namespace_of(pid, || {
        for (name, clone) in &clones {
            let target = destination.join(name);
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&target)
                .with_context(|| format!("create {}", target.display()))?;
            move_mount(clone, &target)?;
            for comount in name.split(',').filter(|c| c != name) {
                let link = destination.join(comount);
                std::os::unix::fs::symlink(name, &link)
                    .with_context(|| format!("symlink {}", link.display()))?;
            }
        }
        if set & MOUNT_ATTR_RDONLY != 0 {
            let tmpfs = open_tree(destination, 0)?;
            set_attrs(&tmpfs, MOUNT_ATTR_RDONLY, 0, false).context("make the tmpfs read-only")?;
        }
        Ok(())
    })
}

fn make_read_only(pid: i32, destination: &Path) -> Result<()> {
    in_mount_namespace_of(pid, || {
        let tree = open_tree(destination, 0)?;
        set_attrs(&tree, MOUNT_ATTR_RDONLY, 0, true).context("make it read-only")?;
        Ok(())
    })
}

/// The v1 hierarchies of a `/proc/<pid>/cgroup` text, each with the
/// process's cgroup under `root`. As libcontainer does, a path is taken
/// relative to the host init's cgroup in the same hierarchy
/// (`host_init`, `/proc/1/cgroup`) when it lies below it: when rcrun runs
/// in a container, its hierarchies are mounted from there.
fn hierarchies(own: &str, host_init: &str, root: &Path) -> Vec<Hierarchy> {
    let base = |names: &str| {
        host_init.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            (f.nth(1) == Some(names)).then(|| f.next()).flatten()
        })
    };
    own.lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ':');
            let (id, names, path) = (f.next()?, f.next()?, f.next()?);
            if id == "0" || names.is_empty() {
                return None; // the unified hierarchy
            }
            let rel = match base(names) {
                Some(b) if b != "/" => Path::new(path).strip_prefix(b).unwrap_or(Path::new(path)),
                _ => Path::new(path),
            };
            let rel = rel.strip_prefix("/").unwrap_or(rel);
            let name = names.strip_prefix("name=").unwrap_or(names).to_string();
            Some(Hierarchy {
                source: root.join(&name).join(rel),
                name,
            })
        })
        .collect()
}

fn is_cgroup_mount(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP_SUPER_MAGIC)
}

/// Runs `f` in the mount namespace of process `pid`, on a thread of its
/// own: joining a mount namespace moves the root and the working directory
/// of the caller, which must not share them (threads do), so the thread
/// unshares them first and the rest of rcrun keeps its own.
fn in_mount_namespace_of(pid: i32, f: impl FnOnce() -> Result<()> + Send) -> Result<()> {
    let ns = File::open(format!("/proc/{pid}/ns/mnt"))
        .context("open the container's mount namespace")?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_FS).context("unshare the file system context")?;
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS)
                .context("enter the container's mount namespace")?;
            f()
        })
        .join()
        .unwrap_or_else(|_| anyhow::bail!("the mount thread panicked"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount_api::{
        MOUNT_ATTR_ATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID,
    };
    use libcontainer::oci_spec::runtime::{
        HookBuilder, HooksBuilder, LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder,
    };

    fn cgroup_mount(options: &[&str]) -> Mount {
        MountBuilder::default()
            .destination("/sys/fs/cgroup")
            .typ("cgroup")
            .source("cgroup")
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    /// A spec with `mount` and no namespace, masked or read-only path.
    fn spec_with(mount: Mount) -> Spec {
        SpecBuilder::default()
            .mounts(vec![mount])
            .linux(bare_linux().build().unwrap())
            .build()
            .unwrap()
    }

    fn bare_linux() -> LinuxBuilder {
        LinuxBuilder::default()
            .namespaces(vec![])
            .masked_paths(vec![])
            .readonly_paths(vec![])
    }

    #[test]
    fn a_cgroup_mount_becomes_a_tmpfs_filled_later() {
        let mut spec = spec_with(cgroup_mount(&[
            "nosuid", "noexec", "nodev", "relatime", "ro",
        ]));
        let plans = plan(&mut spec);
        assert_eq!(
            plans,
            [CgroupMount::Hierarchies {
                destination: "/sys/fs/cgroup".into(),
                attrs: (
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                    // `relatime` replaces the access-time mode.
                    MOUNT_ATTR_ATIME
                ),
            }]
        );
        let m = &spec.mounts().as_ref().unwrap()[0];
        assert_eq!(m.typ().as_deref(), Some("tmpfs"));
        assert!(!m.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn libcontainer_keeps_the_mount_where_its_order_matters() {
        let with_namespace = |typ| {
            move |mut s: Spec| {
                let ns = LinuxNamespaceBuilder::default().typ(typ).build().unwrap();
                s.set_linux(Some(bare_linux().namespaces(vec![ns]).build().unwrap()));
                s
            }
        };
        let with_cgroupns = with_namespace(LinuxNamespaceType::Cgroup);
        let with_userns = with_namespace(LinuxNamespaceType::User);
        let with_masked = |mut s: Spec| {
            s.set_linux(Some(
                bare_linux()
                    .masked_paths(vec!["/sys/fs/cgroup/memory".to_string()])
                    .build()
                    .unwrap(),
            ));
            s
        };
        let with_readonly_above = |mut s: Spec| {
            let linux = bare_linux().readonly_paths(vec!["/sys/fs".to_string()]);
            s.set_linux(Some(linux.build().unwrap()));
            s
        };
        let with_hook = |mut s: Spec| {
            let hook = HookBuilder::default().path("/bin/true").build().unwrap();
            s.set_hooks(Some(
                HooksBuilder::default()
                    .create_container(vec![hook])
                    .build()
                    .unwrap(),
            ));
            s
        };
        for (case, change) in [
            ("cgroup namespace", &with_cgroupns as &dyn Fn(Spec) -> Spec),
            ("user namespace", &with_userns),
            ("masked path below", &with_masked),
            ("read-only path above", &with_readonly_above),
            ("createContainer hook", &with_hook),
        ] {
            let mut spec = change(spec_with(cgroup_mount(&["ro"])));
            assert_eq!(
                plan(&mut spec),
                [CgroupMount::ReadOnly {
                    destination: "/sys/fs/cgroup".into()
                }],
                "{case}"
            );
            let m = &spec.mounts().as_ref().unwrap()[0];
            assert_eq!(m.typ().as_deref(), Some("cgroup"), "{case}");
            // Writable as asked: nothing to do.
            let mut spec = change(spec_with(cgroup_mount(&["rw"])));
            assert_eq!(plan(&mut spec), [], "{case}");
        }
    }

    #[test]
    fn a_cgroup_mount_with_later_mounts_below_is_left_alone() {
        let mut spec = spec_with(cgroup_mount(&["ro"]));
        let below = MountBuilder::default()
            .destination("/sys/fs/cgroup/extra")
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .unwrap();
        spec.mounts_mut().as_mut().unwrap().push(below);
        assert_eq!(plan(&mut spec), []);
        let m = &spec.mounts().as_ref().unwrap()[0];
        assert_eq!(m.typ().as_deref(), Some("cgroup"));
    }

    #[test]
    fn hierarchies_are_the_processes_cgroups() {
        let own = "12:name=systemd:/user.slice/s.scope\n\
                   4:cpu,cpuacct:/rcrun/c1\n\
                   3:memory:/rcrun/c1\n\
                   0::/user.slice/s.scope\n";
        let found = hierarchies(own, "", Path::new("/sys/fs/cgroup"));
        assert_eq!(
            found,
            [
                Hierarchy {
                    name: "systemd".into(),
                    source: "/sys/fs/cgroup/systemd/user.slice/s.scope".into()
                },
                Hierarchy {
                    name: "cpu,cpuacct".into(),
                    source: "/sys/fs/cgroup/cpu,cpuacct/rcrun/c1".into()
                },
                Hierarchy {
                    name: "memory".into(),
                    source: "/sys/fs/cgroup/memory/rcrun/c1".into()
                },
            ]
        );
    }

    #[test]
    fn in_a_container_paths_are_taken_from_its_init_cgroup() {
        let own = "3:memory:/docker/abc/rcrun/c1\n4:pids:/elsewhere/c1\n";
        let init = "3:memory:/docker/abc\n4:pids:/docker/abc\n";
        let found = hierarchies(own, init, Path::new("/sys/fs/cgroup"));
        assert_eq!(found[0].source, Path::new("/sys/fs/cgroup/memory/rcrun/c1"));
        assert_eq!(
            found[1].source,
            Path::new("/sys/fs/cgroup/pids/elsewhere/c1")
        );
    }
}
