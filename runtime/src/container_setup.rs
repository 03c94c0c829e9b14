//! Set-up steps libcontainer 0.7 leaves out, done by rcrun itself from hooks
//! that run after libcontainer's mounts and before `pivot_root`.
//!
//! In the runtime's namespaces (the first `prestart` hook, with the host's
//! privileges):
//! - idmapped mounts (see [`crate::idmap`]).
//!
//! In the container's namespaces (the first `createContainer` hook, and the
//! last one for `runbindable`):
//! - per-mount propagation options (`rshared`, `rslave`, `private`, ...):
//!   libcontainer parses them but never applies them;
//! - `tmpcopyup` (runc's extension, used by podman for `--tmpfs` and
//!   `--read-only`): a tmpfs gets what the rootfs holds at its destination;
//!   libcontainer rejects the option, so it is taken out of the spec;
//! - the loopback interface of a new network namespace is brought up;
//! - `rootfsPropagation: runbindable` makes every mount of the container
//!   unbindable (libcontainer makes only the root unbindable). Bind mounts
//!   from an unbindable mount fail, so the read-only and masked paths, which
//!   libcontainer makes after `pivot_root`, are made here before that.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::{HookBuilder, LinuxNamespaceType, Spec};
use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

/// The hidden subcommand the hook runs.
pub const SUBCOMMAND: &str = "container-setup";

/// The file in the container's record directory where a failing set-up
/// hook writes why.
pub const ERROR_FILE: &str = "setup-error";

/// Which hook a plan is for.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// In the container's namespaces (`createContainer`).
    #[default]
    Container,
    /// In the runtime's namespaces (`prestart`), with the container's
    /// init PID from the state on stdin.
    Runtime,
}

/// What the hooks do, written at create time.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
pub struct Plan {
    #[serde(default)]
    pub phase: Phase,
    pub rootfs: PathBuf,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub idmapped: Vec<crate::idmap::IdmapMount>,
    pub mounts: Vec<MountStep>,
    pub loopback_up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unbindable: Option<Unbindable>,
    /// Where a failing hook writes why, for `create` to report as its own
    /// error: a hook's stderr reaches neither `--log` nor containerd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_file: Option<PathBuf>,
}

/// `rootfsPropagation: runbindable`: the paths libcontainer would otherwise
/// make read-only or mask after `pivot_root`.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
pub struct Unbindable {
    pub readonly_paths: Vec<String>,
    pub masked_paths: Vec<String>,
    pub mount_label: Option<String>,
    /// With a terminal, libcontainer binds the pty onto /dev/console after
    /// `pivot_root`: devpts mounts must stay bindable for that.
    pub keep_devpts: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MountStep {
    pub destination: PathBuf,
    /// Propagation options in the order given (`rshared`, `slave`, ...).
    pub propagation: Vec<String>,
    pub copy_up: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        !self.loopback_up && self.nothing_but_loopback()
    }

    /// Whether bringing up `lo` is all the plan may ask for.
    pub fn nothing_but_loopback(&self) -> bool {
        self.mounts.is_empty() && self.idmapped.is_empty() && self.unbindable.is_none()
    }

    /// The part of the plan the `createContainer` hook carries out.
    fn container_part(&self) -> bool {
        !self.mounts.is_empty() || self.loopback_up
    }
}

/// The per-mount propagation options the set-up hook applies.
pub(crate) const PROPAGATION: [&str; 8] = [
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "unbindable",
    "runbindable",
];

fn propagation_flags(option: &str) -> Option<MsFlags> {
    let (rec, name) = match option.strip_prefix('r') {
        Some(n) if PROPAGATION.contains(&option) => (MsFlags::MS_REC, n),
        _ => (MsFlags::empty(), option),
    };
    let flag = match name {
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "private" => MsFlags::MS_PRIVATE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(flag | rec)
}

/// Takes out of the spec what libcontainer cannot do (`tmpcopyup`,
/// idmapped mounts, the recursion of `runbindable`) and returns the plan
/// for the (already absolute) rootfs. `tmpcopyup` on anything but a tmpfs
/// is refused.
pub fn plan(spec: &mut Spec) -> Result<Plan> {
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let mut steps = Vec::new();
    let idmapped = if let Some(mut mounts) = spec.mounts().clone() {
        for (i, m) in mounts.iter_mut().enumerate() {
            let Some(opts) = m.options().clone() else {
                continue;
            };
            let copy_up = opts.iter().any(|o| o == "tmpcopyup");
            if copy_up && m.typ().as_deref() != Some("tmpfs") {
                bail!(
                    "config.json: mounts[{i}]: tmpcopyup needs a tmpfs mount, not {:?}",
                    m.typ().as_deref().unwrap_or("")
                );
            }
            let propagation: Vec<String> = opts
                .iter()
                .filter(|o| PROPAGATION.contains(&o.as_str()))
                .cloned()
                .collect();
            if copy_up || !propagation.is_empty() {
                steps.push(MountStep {
                    destination: m.destination().clone(),
                    propagation,
                    copy_up,
                });
            }
            if copy_up {
                m.set_options(Some(
                    opts.into_iter().filter(|o| o != "tmpcopyup").collect(),
                ));
            }
        }
        let idmapped = crate::idmap::take(&mut mounts)?;
        crate::idmap::preflight(&idmapped)?;
        spec.set_mounts(Some(mounts));
        idmapped
    } else {
        Vec::new()
    };
    let unbindable = take_runbindable(spec);
    let loopback_up = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_none())
        });
    Ok(Plan {
        phase: Phase::Container,
        rootfs,
        idmapped,
        mounts: steps,
        loopback_up,
        unbindable,
        // Known once the container's record directory is: install_hook.
        error_file: None,
    })
}

/// For `rootfsPropagation: runbindable`: libcontainer gets `unbindable`
/// (the root alone) and no read-only or masked paths, which the hook makes.
fn take_runbindable(spec: &mut Spec) -> Option<Unbindable> {
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let linux = spec.linux_mut().as_mut()?;
    if linux.rootfs_propagation().as_deref() != Some("runbindable") {
        return None;
    }
    linux.set_rootfs_propagation(Some("unbindable".into()));
    let plan = Unbindable {
        readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        masked_paths: linux.masked_paths().clone().unwrap_or_default(),
        mount_label: linux.mount_label().clone(),
        keep_devpts: terminal,
    };
    linux.set_readonly_paths(None);
    linux.set_masked_paths(None);
    Some(plan)
}

/// Puts the hooks running `exe container-setup PLAN-JSON` first among the
/// `prestart` hooks (idmapped mounts) and the `createContainer` hooks (the
/// rest), and, for `runbindable`, last among the `createContainer` hooks.
/// The plan travels on the command line: in a user namespace the hook
/// cannot read rcrun's root directory.
pub fn install_hook(spec: &mut Spec, exe: &Path, plan: &Plan, error_file: &Path) -> Result<()> {
    let error_file = Some(error_file.to_path_buf());
    let hook = |plan: &Plan| {
        HookBuilder::default()
            .path(exe)
            .args(vec![
                "rcrun".to_string(),
                SUBCOMMAND.to_string(),
                serde_json::to_string(plan)?,
            ])
            .build()
            .context("build the container set-up hook")
    };
    let mut hooks = spec.hooks().clone().unwrap_or_default();
    if !plan.idmapped.is_empty() {
        let runtime = Plan {
            phase: Phase::Runtime,
            rootfs: plan.rootfs.clone(),
            idmapped: plan.idmapped.clone(),
            error_file: error_file.clone(),
            ..Plan::default()
        };
        let mut list = vec![hook(&runtime)?];
        list.extend(hooks.prestart().clone().unwrap_or_default());
        hooks.set_prestart(Some(list));
    }
    let mut list = hooks.create_container().clone().unwrap_or_default();
    if plan.container_part() {
        let container = Plan {
            idmapped: Vec::new(),
            unbindable: None,
            error_file: error_file.clone(),
            ..plan.clone()
        };
        list.insert(0, hook(&container)?);
    }
    if plan.unbindable.is_some() {
        // Last, as runc applies it after all the set-up: the hooks before
        // it may still bind from the container's mounts.
        let unbindable = Plan {
            rootfs: plan.rootfs.clone(),
            unbindable: plan.unbindable.clone(),
            error_file,
            ..Plan::default()
        };
        list.push(hook(&unbindable)?);
    }
    if !list.is_empty() {
        hooks.set_create_container(Some(list));
    }
    spec.set_hooks(Some(hooks));
    Ok(())
}

/// Runs a plan as the hook. A failure goes to the plan's error file (the
/// first one only), or to stderr when it cannot.
pub fn run_hook(plan: &str) -> std::process::ExitCode {
    let Err(e) = run(plan) else {
        return std::process::ExitCode::SUCCESS;
    };
    let msg = crate::anyhow_text(&e);
    let error_file = serde_json::from_str::<Plan>(plan)
        .ok()
        .and_then(|p| p.error_file);
    let written = error_file.is_some_and(|f| crate::fsutil::write_new(&f, msg.as_bytes()).is_ok());
    if !written {
        eprintln!("{msg}");
    }
    std::process::ExitCode::from(1)
}

/// Why a set-up hook failed, if one did: what it wrote to `error_file`.
pub fn hook_failure(error_file: &Path) -> Option<String> {
    std::fs::read_to_string(error_file)
        .ok()
        .filter(|m| !m.is_empty())
}

/// The hook's work.
pub fn run(plan: &str) -> Result<()> {
    let plan: Plan = serde_json::from_str(plan).context("parse the set-up plan")?;
    if plan.phase == Phase::Runtime {
        let pid = init_pid_from_stdin()?;
        return crate::idmap::apply(pid, &plan.rootfs, &plan.idmapped);
    }
    for step in &plan.mounts {
        let target = resolve_in_root(&plan.rootfs, &step.destination)
            .with_context(|| format!("mount {}", step.destination.display()))?;
        if step.copy_up {
            copy_up(&target)
                .with_context(|| format!("tmpcopyup on {}", step.destination.display()))?;
        }
        for option in &step.propagation {
            let flags = propagation_flags(option).context("unknown propagation")?;
            nix::mount::mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
                .with_context(|| format!("make {} {option}", step.destination.display()))?;
        }
    }
    if plan.loopback_up {
        loopback_up().context("bring up the loopback interface")?;
    }
    if let Some(u) = &plan.unbindable {
        make_unbindable(&plan.rootfs, u)?;
    }
    Ok(())
}

/// The container's init PID, from the state a hook gets on stdin.
fn init_pid_from_stdin() -> Result<i32> {
    let state: serde_json::Value =
        serde_json::from_reader(std::io::stdin().lock()).context("read the state on stdin")?;
    state["pid"]
        .as_i64()
        .filter(|&p| p > 0)
        .map(|p| p as i32)
        .context("the state on stdin has no pid")
}

/// Read-only and masked paths, then every mount under the rootfs
/// unbindable (and private).
fn make_unbindable(rootfs: &Path, u: &Unbindable) -> Result<()> {
    for p in &u.readonly_paths {
        let target = resolve_in_root(rootfs, Path::new(p))?;
        readonly_path(&target).with_context(|| format!("make {p} read-only"))?;
    }
    let dev_null = resolve_in_root(rootfs, Path::new("/dev/null"))?;
    for p in &u.masked_paths {
        let target = resolve_in_root(rootfs, Path::new(p))?;
        mask_path(&target, &dev_null, u.mount_label.as_deref())
            .with_context(|| format!("mask {p}"))?;
    }
    nix::mount::mount(
        None::<&str>,
        rootfs,
        None::<&str>,
        MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("make the container's mounts unbindable")?;
    if u.keep_devpts {
        for point in mount_points_of_type(rootfs, "devpts")? {
            nix::mount::mount(
                None::<&str>,
                &point,
                None::<&str>,
                MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .with_context(|| format!("keep {} bindable", point.display()))?;
        }
    }
    Ok(())
}

/// As libcontainer does it: a recursive bind onto itself, remounted
/// read-only, nosuid, nodev, noexec; a path that does not exist is skipped.
fn readonly_path(target: &Path) -> Result<()> {
    match nix::mount::mount(
        Some(target),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        r => r?,
    }
    nix::mount::mount(
        Some(target),
        target,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )?;
    Ok(())
}

/// As libcontainer does it: a read-only tmpfs over a directory, /dev/null
/// over anything else; a path that does not exist is skipped.
fn mask_path(target: &Path, dev_null: &Path, label: Option<&str>) -> Result<()> {
    let Ok(md) = std::fs::metadata(target) else {
        return Ok(());
    };
    if md.is_dir() {
        let data = label.map(|l| format!("context=\"{l}\""));
        nix::mount::mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            data.as_deref(),
        )?;
    } else {
        nix::mount::mount(
            Some(dev_null),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
    }
    Ok(())
}

/// Mount points of file system type `fstype` at or under `root`.
fn mount_points_of_type(root: &Path, fstype: &str) -> Result<Vec<PathBuf>> {
    Ok(crate::mountinfo::read()?
        .into_iter()
        .filter(|m| m.fs_type == fstype && m.mount_point.starts_with(root))
        .map(|m| m.mount_point)
        .collect())
}

/// `path` inside `root`, following symlinks as if `root` were `/`.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut pending: Vec<PathBuf> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == Path::new("..") {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        let full = root.join(&next);
        match std::fs::symlink_metadata(&full) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    bail!("too many levels of symbolic links");
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                for tc in target.components().rev() {
                    match tc {
                        Component::Normal(n) => pending.push(PathBuf::from(n)),
                        Component::ParentDir => pending.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            _ => cur = next,
        }
    }
    Ok(root.join(cur))
}

/// A detached copy of the mount at `path` without its submounts, so what it
/// covers or what is mounted on it does not show.
fn open_tree_alone(path: &Path) -> Result<OwnedFd> {
    crate::mount_api::open_tree(path, crate::mount_api::OPEN_TREE_CLONE)
}

/// Copies what the tmpfs at `target` covers into it.
fn copy_up(target: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        bail!("no parent directory");
    };
    // The parent's mount alone shows the directory under the tmpfs; the
    // tmpfs alone keeps the copy out of mounts made on top of it.
    let below = open_tree_alone(parent)?;
    let tmpfs = open_tree_alone(target)?;
    let src = PathBuf::from(format!("/proc/self/fd/{}", below.as_raw_fd())).join(name);
    let dst = PathBuf::from(format!("/proc/self/fd/{}", tmpfs.as_raw_fd()));
    match std::fs::symlink_metadata(&src) {
        Ok(md) if md.is_dir() => {}
        _ => return Ok(()),
    }
    copy_dir_contents(&src, &dst)
}

fn copy_dir_contents(src: &Path, dst: &Path) -> Result<()> {
    for entry in std::fs::read_dir(src).with_context(|| format!("read {}", src.display()))? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let md = std::fs::symlink_metadata(&from)?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::DirBuilder::new()
                .mode(md.mode() & 0o7777)
                .create(&to)?;
            copy_dir_contents(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to).with_context(|| format!("copy {}", from.display()))?;
        } else {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(md.mode() & libc::S_IFMT);
            nix::sys::stat::mknod(
                &to,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(md.mode() & 0o7777),
                md.rdev(),
            )
            .with_context(|| format!("mknod {}", to.display()))?;
        }
        std::os::unix::fs::lchown(&to, Some(md.uid()), Some(md.gid()))?;
        if !ft.is_symlink() {
            // After chown, which clears set-id bits.
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// Sets IFF_UP on `lo` in the current network namespace.
pub(crate) fn loopback_up() -> Result<()> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: the fd was just created and is ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: ioctls on a socket with a properly initialised ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_options_map_to_flags() {
        assert_eq!(
            propagation_flags("rshared"),
            Some(MsFlags::MS_SHARED | MsFlags::MS_REC)
        );
        assert_eq!(propagation_flags("slave"), Some(MsFlags::MS_SLAVE));
        assert_eq!(
            propagation_flags("runbindable"),
            Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC)
        );
        assert_eq!(propagation_flags("ro"), None);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("rcrun-resolve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real/sub")).unwrap();
        let _ = std::fs::remove_file(dir.join("abs"));
        let _ = std::fs::remove_file(dir.join("rel"));
        std::os::unix::fs::symlink("/real", dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../real", dir.join("rel")).unwrap();
        assert_eq!(
            resolve_in_root(&dir, Path::new("/abs/sub")).unwrap(),
            dir.join("real/sub")
        );
        assert_eq!(
            resolve_in_root(&dir, Path::new("/rel/sub")).unwrap(),
            dir.join("real/sub")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
