//! Idmapped bind mounts: runtime-spec's `idmap` / `ridmap` mount options and a
//! mount's own `uidMappings` / `gidMappings`, which libcontainer 0.7 does not
//! make.
//!
//! Setting `MOUNT_ATTR_IDMAP` needs CAP_SYS_ADMIN over the source's
//! superblock, that is in the host's user namespace, which the container's
//! init does not have once it is in its own user namespace. So rcrun takes
//! these mounts out of the spec libcontainer gets and makes them from a hook
//! that libcontainer runs in the runtime's namespaces once the other mounts
//! are made and before `pivot_root` (the first `prestart` hook): it enters
//! the container's mount namespace, clones the source with `open_tree(2)`,
//! sets the idmapping with `mount_setattr(2)` and attaches the clone with
//! `move_mount(2)`. Mounts of the spec that come after an idmapped mount
//! and lie under it are moved on top of it, so the order of the spec holds.
use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder, Mount};
use nix::sched::CloneFlags;

use crate::mount_api::{
    attr_of, mount_setattr, move_mount, open_tree, set_attrs, MountAttr, MOUNT_ATTR_IDMAP,
    OPEN_TREE_CLONE,
};
use serde::{Deserialize, Serialize};

/// Options that say nothing about the mount's attributes and are handled
/// elsewhere (the kind of bind, the idmapping; propagation, see
/// [`crate::container_setup::PROPAGATION`]).
const PASSIVE_OPTIONS: &[&str] = &["bind", "rbind", "idmap", "ridmap", "defaults", "async"];

/// Whether a spec mount asks for an idmapping.
pub fn is_idmapped(m: &Mount) -> bool {
    m.options()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o == "idmap" || o == "ridmap")
        || m.uid_mappings().is_some()
        || m.gid_mappings().is_some()
}

/// Whether a spec mount is a bind mount.
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|o| o == "bind" || o == "rbind")
}

fn has_option(m: &Mount, name: &str) -> bool {
    m.options()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o == name)
}

/// Attributes to set and clear, on the mount alone and recursively.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq)]
pub struct Attrs {
    pub set: u64,
    pub clr: u64,
    pub rec_set: u64,
    pub rec_clr: u64,
}

impl Attrs {
    /// The attributes mount options ask for; an option that is neither an
    /// attribute nor one of [`PASSIVE_OPTIONS`] or a propagation is an error.
    pub fn parse(options: &[String]) -> Result<Attrs, String> {
        let mut a = Attrs::default();
        for o in options {
            let o = o.as_str();
            if PASSIVE_OPTIONS.contains(&o) || crate::container_setup::PROPAGATION.contains(&o) {
                continue;
            }
            let (rec, name) = match attr_of(o) {
                Some(_) => (false, o),
                None => match o.strip_prefix('r').filter(|n| attr_of(n).is_some()) {
                    Some(n) => (true, n),
                    None => {
                        return Err(format!(
                            "option {o:?} is not supported on an idmapped mount"
                        ))
                    }
                },
            };
            let (set, clr) = attr_of(name).unwrap_or_default();
            let (s, c) = if rec {
                (&mut a.rec_set, &mut a.rec_clr)
            } else {
                (&mut a.set, &mut a.clr)
            };
            *s = (*s & !clr) | set;
            *c = (*c & !set) | clr;
        }
        Ok(a)
    }
}

/// Where the IDs of an idmapping come from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Ids {
    /// The mount's own `uidMappings` and `gidMappings`.
    Own {
        uid: Vec<LinuxIdMapping>,
        gid: Vec<LinuxIdMapping>,
    },
    /// The container's user namespace (new or joined).
    Container,
}

/// One idmapped mount, as the hook makes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct IdmapMount {
    /// Its index in the spec's `mounts`, for messages.
    pub index: usize,
    pub source: PathBuf,
    pub destination: PathBuf,
    /// `rbind`: submounts of the source come along.
    pub rbind: bool,
    /// `ridmap`: the idmapping covers those submounts too.
    pub ridmap: bool,
    pub ids: Ids,
    pub attrs: Attrs,
    /// Destinations of later spec mounts under this one, which libcontainer
    /// has made before the hook runs and which must end up on top of it.
    pub nested: Vec<PathBuf>,
    /// A later mount covers the destination: the idmapped mount would not
    /// be visible, so it is not made.
    pub covered: bool,
}

impl IdmapMount {
    /// open_tree(2) flags for a clone of the source.
    fn clone_flags(&self) -> libc::c_uint {
        let recursive = if self.rbind {
            libc::AT_RECURSIVE as libc::c_uint
        } else {
            0
        };
        OPEN_TREE_CLONE | recursive
    }
}

/// Checks an idmapped mount of the spec; the reason names what is wrong.
pub fn check(m: &Mount, userns: bool) -> Result<(), String> {
    if !is_bind(m) {
        return Err(format!(
            "idmapped mounts must be bind mounts, not type {:?}",
            m.typ().as_deref().unwrap_or("")
        ));
    }
    match (m.uid_mappings(), m.gid_mappings()) {
        (None, None) if !userns => {
            return Err(
                "an idmapped mount without uidMappings and gidMappings needs a user namespace"
                    .into(),
            )
        }
        (None, None) => {}
        (Some(u), Some(g)) => {
            check_mappings("uidMappings", u)?;
            check_mappings("gidMappings", g)?;
        }
        _ => {
            return Err("an idmapped mount needs both uidMappings and gidMappings".into());
        }
    }
    Attrs::parse(m.options().as_deref().unwrap_or_default())?;
    Ok(())
}

/// The kernel refuses empty ranges, ranges past 2^32 and overlaps on either
/// side; say which mapping is wrong before anything is made.
fn check_mappings(field: &str, maps: &[LinuxIdMapping]) -> Result<(), String> {
    if maps.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if maps.len() > 340 {
        return Err(format!("{field} has more than 340 ranges"));
    }
    let end = |start: u32, size: u32| u64::from(start) + u64::from(size);
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            return Err(format!("{field}[{i}]: size must not be 0"));
        }
        if end(m.container_id(), m.size()) > 1 << 32 || end(m.host_id(), m.size()) > 1 << 32 {
            return Err(format!("{field}[{i}]: range goes past the last ID"));
        }
        for (j, o) in maps[..i].iter().enumerate() {
            let overlap =
                |a: u32, b: u32| u64::from(a) < end(b, o.size()) && u64::from(b) < end(a, m.size());
            if overlap(m.container_id(), o.container_id()) || overlap(m.host_id(), o.host_id()) {
                return Err(format!("{field}[{i}] overlaps {field}[{j}]"));
            }
        }
    }
    Ok(())
}

/// `path` without `.` and `..` (lexically), for comparing destinations.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Takes the idmapped mounts out of `mounts` (libcontainer cannot make them)
/// and returns what the hook needs to make them. Call after [`check`].
pub fn take(mounts: &mut Vec<Mount>) -> Result<Vec<IdmapMount>> {
    let dests: Vec<PathBuf> = mounts.iter().map(|m| clean(m.destination())).collect();
    let idmapped: Vec<bool> = mounts.iter().map(is_idmapped).collect();
    let mut out = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        if !idmapped[i] {
            continue;
        }
        let dest = &dests[i];
        let later = (i + 1..mounts.len()).filter(|&j| !idmapped[j]);
        let nested = later
            .clone()
            .filter(|&j| dests[j] != *dest && dests[j].starts_with(dest))
            .map(|j| dests[j].clone())
            .collect();
        let covered = (i + 1..mounts.len()).any(|j| dest.starts_with(&dests[j]));
        let ids = match (m.uid_mappings(), m.gid_mappings()) {
            (Some(u), Some(g)) => Ids::Own {
                uid: u.clone(),
                gid: g.clone(),
            },
            _ => Ids::Container,
        };
        let attrs = Attrs::parse(m.options().as_deref().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("config.json: mounts[{i}]: {e}"))?;
        out.push(IdmapMount {
            index: i,
            source: m.source().clone().unwrap_or_default(),
            destination: m.destination().clone(),
            rbind: has_option(m, "rbind"),
            ridmap: has_option(m, "ridmap"),
            ids,
            attrs,
            nested,
            covered,
        });
    }
    let mut i = 0;
    mounts.retain(|_| {
        i += 1;
        !idmapped[i - 1]
    });
    Ok(out)
}

/// A user namespace with the given mappings, held by its fd: a child is
/// forked into a new user namespace, we write its maps, open its
/// `ns/user`, and let it exit.
fn userns_with(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<File> {
    let (ready_r, ready_w) = nix::unistd::pipe()?;
    let (done_r, done_w) = nix::unistd::pipe()?;
    // SAFETY: the child only makes raw syscalls (async-signal-safe) and
    // exits, so forking is sound even if the caller had other threads.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let ok = nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            if ok {
                let _ = nix::unistd::write(&ready_w, b"1");
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(done_r.as_raw_fd(), &mut b);
            }
            // SAFETY: leave the forked copy without running destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            drop(done_r);
            let result = (|| -> Result<File> {
                let mut b = [0u8; 1];
                if nix::unistd::read(ready_r.as_raw_fd(), &mut b)? != 1 {
                    bail!("the helper could not create a user namespace");
                }
                let proc = PathBuf::from(format!("/proc/{child}"));
                std::fs::write(proc.join("uid_map"), map_text(uid)).context("write uid_map")?;
                std::fs::write(proc.join("gid_map"), map_text(gid)).context("write gid_map")?;
                File::open(proc.join("ns/user")).context("open the user namespace")
            })();
            drop(done_w);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Mount points in the current mount namespace.
fn mount_points() -> Result<HashSet<PathBuf>> {
    Ok(crate::mountinfo::read()?
        .into_iter()
        .map(|m| m.mount_point)
        .collect())
}

/// Creates a mount point (a directory, or an empty file for a file mount)
/// at `path`, as the container's root creates the mount points of its
/// other mounts.
fn create_mount_point(path: &Path, dir: bool, root: &ContainerRoot) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    root.run(|| {
        if dir {
            std::fs::create_dir_all(path)
        } else {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map(drop)
        }
    })
    .with_context(|| format!("create mount point {}", path.display()))
}

/// The container's root user: the host's root, or root in the container's
/// own user namespace.
struct ContainerRoot {
    userns: Option<File>,
}

impl ContainerRoot {
    fn of(pid: i32) -> Result<ContainerRoot> {
        let theirs = format!("/proc/{pid}/ns/user");
        let own =
            std::fs::metadata(&theirs)?.ino() != std::fs::metadata("/proc/self/ns/user")?.ino();
        Ok(ContainerRoot {
            userns: if own { Some(File::open(theirs)?) } else { None },
        })
    }

    /// Runs `f` as this user: in a child that joins the user namespace
    /// (this process stays the host's root).
    fn run(&self, f: impl FnOnce() -> std::io::Result<()>) -> Result<()> {
        let Some(ns) = &self.userns else {
            return Ok(f()?);
        };
        let (err_r, err_w) = nix::unistd::pipe()?;
        // SAFETY: the hook process is single-threaded.
        match unsafe { nix::unistd::fork() }.context("fork")? {
            nix::unistd::ForkResult::Child => {
                drop(err_r);
                let result = (|| -> std::io::Result<()> {
                    nix::sched::setns(ns, CloneFlags::CLONE_NEWUSER)?;
                    let root = nix::unistd::Gid::from_raw(0);
                    nix::unistd::setresgid(root, root, root)?;
                    let root = nix::unistd::Uid::from_raw(0);
                    nix::unistd::setresuid(root, root, root)?;
                    f()
                })();
                if let Err(e) = &result {
                    let _ = nix::unistd::write(&err_w, e.to_string().as_bytes());
                }
                // SAFETY: leave the forked copy without running destructors.
                unsafe { libc::_exit(i32::from(result.is_err())) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(err_w);
                let mut msg = String::new();
                let _ = std::io::Read::read_to_string(&mut File::from(err_r), &mut msg);
                match nix::sys::wait::waitpid(child, None)? {
                    nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                    _ if !msg.is_empty() => bail!("{msg}"),
                    status => bail!("as the container's root: {status:?}"),
                }
            }
        }
    }
}

/// Tries each idmapping on a throwaway clone of its source, so a source
/// whose file system cannot be idmapped is reported before anything of
/// the container exists.
pub fn preflight(mounts: &[IdmapMount]) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    // Any user namespace but the host's will do.
    let probe = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(0u32)
        .size(1u32)
        .build()?;
    let userns = userns_with(std::slice::from_ref(&probe), std::slice::from_ref(&probe))
        .context("create a user namespace for idmapped mounts")?;
    for m in mounts {
        let tree = open_tree(&m.source, m.clone_flags())
            .and_then(|tree| set_idmap(&tree, &userns, m.ridmap));
        tree.with_context(|| {
            format!(
                "config.json: mounts[{}]: idmapped mount of {}",
                m.index,
                m.source.display()
            )
        })?;
    }
    Ok(())
}

fn set_idmap(tree: &OwnedFd, userns: &File, recursive: bool) -> Result<()> {
    mount_setattr(
        tree,
        recursive,
        &MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        },
    )
    .map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EINVAL) {
            " (does the source's filesystem support idmapped mounts?)"
        } else {
            ""
        };
        anyhow::anyhow!("set the idmapping: {e}{hint}")
    })
}

/// The hook's work: makes `mounts` in the mount namespace of process `pid`
/// (the container's init), whose rootfs is `rootfs`.
pub fn apply(pid: i32, rootfs: &Path, mounts: &[IdmapMount]) -> Result<()> {
    let proc = PathBuf::from(format!("/proc/{pid}/ns"));
    let mnt_ns = File::open(proc.join("mnt")).context("open the container's mount namespace")?;
    // A covered mount is not made: no user namespace (a fork) for it.
    let mut todo = Vec::new();
    for m in mounts {
        if m.covered {
            tracing::debug!(
                "mounts[{}]: a later mount covers {}",
                m.index,
                m.destination.display()
            );
            continue;
        }
        let ns = match &m.ids {
            Ids::Own { uid, gid } => userns_with(uid, gid),
            Ids::Container => {
                File::open(proc.join("user")).context("open the container's user namespace")
            }
        }
        .with_context(|| format!("mounts[{}]", m.index))?;
        todo.push((m, ns));
    }
    let root = ContainerRoot::of(pid).context("open the container's user namespace")?;
    nix::sched::setns(&mnt_ns, CloneFlags::CLONE_NEWNS)
        .context("enter the container's mount namespace")?;
    for (m, userns) in &todo {
        attach(m, userns, rootfs, &root).with_context(|| {
            format!(
                "mounts[{}]: idmapped mount of {} on {}",
                m.index,
                m.source.display(),
                m.destination.display()
            )
        })?;
    }
    Ok(())
}

fn attach(m: &IdmapMount, userns: &File, rootfs: &Path, root: &ContainerRoot) -> Result<()> {
    let target = crate::container_setup::resolve_in_root(rootfs, &m.destination)?;
    // Later mounts under the destination, grabbed before they are covered
    // (mountinfo is read only when there are any).
    let points = if m.nested.is_empty() {
        HashSet::new()
    } else {
        mount_points()?
    };
    let mut nested = Vec::new();
    for dest in &m.nested {
        if nested
            .iter()
            .any(|(d, _): &(PathBuf, OwnedFd)| dest.starts_with(d))
        {
            continue; // moves along with the mount it lies in
        }
        let path = crate::container_setup::resolve_in_root(rootfs, dest)?;
        if points.contains(&path) {
            nested.push((dest.clone(), open_tree(&path, 0)?));
        }
    }

    let is_dir = std::fs::metadata(&m.source)
        .with_context(|| format!("source {}", m.source.display()))?
        .is_dir();
    let tree = open_tree(&m.source, m.clone_flags())?;
    set_idmap(&tree, userns, m.ridmap)?;
    set_attrs(&tree, m.attrs.rec_set, m.attrs.rec_clr, true).context("set mount attributes")?;
    set_attrs(&tree, m.attrs.set, m.attrs.clr, false).context("set mount attributes")?;

    create_mount_point(&target, is_dir, root)?;
    move_mount(&tree, &target)?;

    for (dest, fd) in nested {
        let path = crate::container_setup::resolve_in_root(rootfs, &dest)?;
        let dir = nix::sys::stat::fstat(fd.as_raw_fd())
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .unwrap_or(true);
        create_mount_point(&path, dir, root)?;
        move_mount(&fd, &path).with_context(|| format!("move the mount on {}", dest.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount_api::{
        MOUNT_ATTR_ATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
    };
    use libcontainer::oci_spec::runtime::MountBuilder;

    fn map(c: u32, h: u32, s: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(s)
            .build()
            .unwrap()
    }

    fn mount(dest: &str, typ: &str, opts: &[&str]) -> Mount {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source("/src")
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn options_become_attributes() {
        let opts = |o: &[&str]| Attrs::parse(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let a = opts(&["rbind", "ridmap", "ro", "rnosuid", "noatime", "rprivate"]).unwrap();
        assert_eq!(a.set, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOATIME);
        assert_eq!(a.clr, MOUNT_ATTR_ATIME);
        assert_eq!(a.rec_set, MOUNT_ATTR_NOSUID);
        let a = opts(&["ro", "rw"]).unwrap();
        assert_eq!((a.set, a.clr), (0, MOUNT_ATTR_RDONLY));
        assert!(opts(&["idmap", "size=10"]).unwrap_err().contains("size=10"));
    }

    #[test]
    fn mappings_are_checked() {
        assert!(check_mappings("uidMappings", &[map(0, 100000, 65536)]).is_ok());
        assert!(check_mappings("uidMappings", &[map(0, 1, 0)])
            .unwrap_err()
            .contains("size"));
        assert!(check_mappings("uidMappings", &[map(0, u32::MAX, 2)])
            .unwrap_err()
            .contains("past"));
        assert!(
            check_mappings("gidMappings", &[map(0, 1000, 10), map(5, 5000, 10)])
                .unwrap_err()
                .contains("overlaps")
        );
        assert!(check_mappings("uidMappings", &[]).is_err());
    }

    #[test]
    fn only_bind_mounts_with_ids_are_accepted() {
        let tmpfs = mount("/t", "tmpfs", &["idmap"]);
        assert!(check(&tmpfs, true).unwrap_err().contains("bind"));
        let bind = mount("/b", "bind", &["rbind", "idmap"]);
        assert!(check(&bind, false).unwrap_err().contains("user namespace"));
        assert!(check(&bind, true).is_ok());
        let mut half = bind.clone();
        half.set_uid_mappings(Some(vec![map(0, 1000, 1)]));
        assert!(check(&half, false).unwrap_err().contains("both"));
    }

    #[test]
    fn take_keeps_the_order_of_later_mounts() {
        let mut mounts = vec![
            mount("/data/early", "tmpfs", &[]),
            mount("/data", "bind", &["bind", "idmap"]),
            mount("/data/later", "tmpfs", &[]),
            mount("/data/later/deeper", "tmpfs", &[]),
            mount("/other", "tmpfs", &[]),
            mount("/x/y", "bind", &["rbind", "ridmap"]),
            mount("/x", "tmpfs", &[]),
        ];
        let taken = take(&mut mounts).unwrap();
        assert_eq!(mounts.len(), 5);
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].index, 1);
        assert_eq!(
            taken[0].nested,
            [
                PathBuf::from("/data/later"),
                PathBuf::from("/data/later/deeper")
            ]
        );
        assert!(!taken[0].covered);
        assert!(taken[1].rbind && taken[1].ridmap && taken[1].covered);
        assert_eq!(taken[1].ids, Ids::Container);
    }
}
