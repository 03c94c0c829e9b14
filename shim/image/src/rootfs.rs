//! Container rootfs: an overlay of the image's snapshots (top layer first)
//! with a per-container upper and work dir.
//!
//! Mounted through the new mount API, one `lowerdir+` per layer, so the
//! number of layers is not bounded by mount(2)'s one-page option string
//! (and no chdir is needed, which a multi-threaded daemon must avoid).
//! Kernels without `lowerdir+` (< 6.8) get mount(2) when the options fit.
//!
//! A container in its own user namespace (a pod with `hostUsers: false`)
//! gets containerd 2.x's "idmapped lowerdirs": every read-only layer is
//! shown through an idmapped bind mount of it (open_tree + mount_setattr
//! with the pod's user namespace), so that the layers' root-owned files
//! belong to the container's root while they stay owned by host root on
//! disk and shared with every other container. The daemon asks for it with
//! [`crate::RootfsIdmap`]; the upper and work dirs then belong to the
//! container's root.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Where the idmapped layers are mounted (in the scratch dir) until the
/// overlay holds them.
const IDMAPPED_DIR: &str = "idmapped-layers";

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("NUL in path"))
}

fn check(rc: libc::c_long) -> std::io::Result<libc::c_long> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The kernel's explanation of a failed fsconfig, from the context's log.
fn context_log(fd: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    loop {
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.push_str(String::from_utf8_lossy(&buf[..n as usize]).trim_end());
        out.push_str("; ");
    }
    out
}

/// Mounts the overlay of `lowers` (top first) at `target`; with `userns`,
/// each lower is first mounted idmapped with that user namespace.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    userns: Option<&Path>,
) -> std::io::Result<()> {
    let Some(userns) = userns else {
        return mount_overlay_of(lowers, upper, work, target);
    };
    let scratch = upper.parent().unwrap_or(Path::new("/"));
    // The overlay takes its own reference to each layer, so the idmapped
    // mounts are released again right after it is created (as containerd).
    let idmapped = IdmappedLayers::mount(lowers, userns, &scratch.join(IDMAPPED_DIR))?;
    mount_overlay_of(&idmapped.paths, upper, work, target)
}

/// Idmapped bind mounts of the image layers, unmounted and removed on drop.
struct IdmappedLayers {
    dir: PathBuf,
    paths: Vec<PathBuf>,
}

impl IdmappedLayers {
    fn mount(lowers: &[PathBuf], userns: &Path, dir: &Path) -> std::io::Result<Self> {
        let ns = std::fs::File::open(userns).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("opening the user namespace {}: {e}", userns.display()),
            )
        })?;
        let mut layers = IdmappedLayers {
            dir: dir.to_path_buf(),
            paths: Vec::with_capacity(lowers.len()),
        };
        std::fs::create_dir_all(dir)?;
        for (i, lower) in lowers.iter().enumerate() {
            let at = dir.join(i.to_string());
            std::fs::create_dir_all(&at)?;
            idmapped_bind(lower, &at, ns.as_raw_fd()).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("idmapped mount of layer {}: {e}", lower.display()),
                )
            })?;
            layers.paths.push(at);
        }
        Ok(layers)
    }
}

impl Drop for IdmappedLayers {
    fn drop(&mut self) {
        for path in &self.paths {
            if let Err(e) = unmount(path) {
                tracing::warn!(path = %path.display(), error = %e, "unmounting an idmapped layer");
            }
        }
        // Only empty mount points are removed: a layer still mounted (its
        // unmount failed) must not be emptied by a recursive removal.
        let removed = std::fs::read_dir(&self.dir).and_then(|entries| {
            for entry in entries {
                std::fs::remove_dir(entry?.path())?;
            }
            std::fs::remove_dir(&self.dir)
        });
        if let Err(e) = removed {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing the idmapped layer mounts");
        }
    }
}

/// Mounts `source` at `target` idmapped with the user namespace `userns_fd`:
/// open_tree(OPEN_TREE_CLONE), mount_setattr(MOUNT_ATTR_IDMAP), move_mount.
fn idmapped_bind(source: &Path, target: &Path, userns_fd: i32) -> std::io::Result<()> {
    let source_c = cpath(source)?;
    let tree = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source_c.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    })?;
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns_fd as u64,
    };
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map_err(|e| std::io::Error::new(e.kind(), format!("mount_setattr(MOUNT_ATTR_IDMAP): {e}")))?;
    move_mount(&tree, target)
}

/// Attaches the detached mount `mnt` (from fsmount or open_tree) at `target`.
fn move_mount(mnt: &OwnedFd, target: &Path) -> std::io::Result<()> {
    let target_c = cpath(target)?;
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(|_| ())
}

fn mount_overlay_of(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> std::io::Result<()> {
    match mount_with_fsopen(lowers, upper, work, target) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {
            tracing::debug!(error = %e, "fsopen overlay failed; trying mount(2)");
            mount_legacy(lowers, upper, work, target)
                .map_err(|e2| std::io::Error::new(e2.kind(), format!("{e}; mount(2): {e2}")))
        }
        Err(e) => Err(e),
    }
}

fn mount_with_fsopen(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> std::io::Result<()> {
    let fs =
        check(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })?;
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let set = |key: &std::ffi::CStr, value: &Path| -> std::io::Result<()> {
        let value = cpath(value)?;
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        })
        .map(|_| ())
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "overlay {key:?}={}: {e} {}",
                    value.to_string_lossy(),
                    context_log(&fs)
                ),
            )
        })
    };
    for lower in lowers {
        // Keep the errno for the caller's fallback decision.
        let value = cpath(lower)?;
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                c"lowerdir+".as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!(log = %context_log(&fs), "lowerdir+ refused");
            return Err(e);
        }
    }
    set(c"upperdir", upper)?;
    set(c"workdir", work)?;
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    })
    .inspect_err(|_| {
        // Kernels before 6.5 parse overlay's fsconfig keys only here, so an
        // unknown `lowerdir+` shows up as EINVAL at create: the errno is kept
        // as is for the caller's fallback to mount(2).
        tracing::debug!(log = %context_log(&fs), "creating the overlay failed");
    })?;
    let mnt =
        check(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as i32) };
    move_mount(&mnt, target).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("moving overlay to {}: {e}", target.display()),
        )
    })
}

fn mount_legacy(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> std::io::Result<()> {
    let lower = lowers
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    if options.len() >= page {
        return Err(std::io::Error::other(format!(
            "overlay options for {} layers are {} bytes, over the {page}-byte limit of mount(2), and this kernel lacks lowerdir+",
            lowers.len(),
            options.len()
        )));
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(std::io::Error::from)
}

/// Unmounts `target` if mounted (lazily, as containers may still hold it).
pub fn unmount(target: &Path) -> std::io::Result<()> {
    match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes a container's scratch dir (upper, work, and the idmapped layer
/// mount points), unless something is still mounted below it: a recursive
/// removal would walk into that mount and delete shared image layers.
/// A missing dir is not an error.
pub fn remove_scratch(scratch: &Path) -> std::io::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let below = format!("{}/", mountinfo_escape(scratch));
    if let Some(mounted) = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|m| m.starts_with(&below))
    {
        return Err(std::io::Error::other(format!(
            "{mounted} is still mounted; not removing {}",
            scratch.display()
        )));
    }
    match std::fs::remove_dir_all(scratch) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A path as /proc/self/mountinfo writes it (octal escapes for space, tab,
/// newline and backslash).
fn mountinfo_escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// True when `path` is the root of a mount (its device differs from its
/// parent's, or it is the same inode as its parent: `/`).
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(parent)) = (std::fs::symlink_metadata(path), path.parent()) else {
        return false;
    };
    let Ok(up) = std::fs::metadata(parent) else {
        return false;
    };
    me.dev() != up.dev() || me.ino() == up.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_like_the_kernel() {
        assert_eq!(
            mountinfo_escape(Path::new("/a b\\c\td")),
            "/a\\040b\\134c\\011d"
        );
    }

    #[test]
    fn scratch_with_a_mount_below_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        let layer = scratch.join("idmapped-layers/0");
        std::fs::create_dir_all(&layer).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &layer,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=64k"),
        )
        .unwrap();
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = unmount(self.0);
            }
        }
        let guard = Unmount(&layer);
        std::fs::write(layer.join("shared-file"), b"x").unwrap();

        let err = remove_scratch(&scratch).unwrap_err();
        assert!(err.to_string().contains("still mounted"), "{err}");
        assert!(layer.join("shared-file").exists());

        drop(guard);
        remove_scratch(&scratch).unwrap();
        assert!(!scratch.exists());
        remove_scratch(&scratch).unwrap();
    }
}
