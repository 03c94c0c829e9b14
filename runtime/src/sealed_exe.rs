//! rcrun runs from an image of itself that no container can write, before
//! it starts container processes (CVE-2019-5736).
//!
//! A container's init, and every process `exec` starts in a container, is a
//! fork of rcrun until it execs the container's command. If that command is
//! `/proc/self/exe`, or a script with it as interpreter, the kernel runs
//! rcrun's own file inside the container: the container's root can then
//! open it through `/proc/<pid>/exe` and, as soon as no rcrun runs, write
//! the host's binary. So `create`, `run` and `exec` first re-exec rcrun from
//! a read-only image, as runc and crun do:
//! - a read-only overlayfs over the binary's directory, made with
//!   `fsopen(2)` and never attached to a mount namespace, so that nothing
//!   can remount it writable; it copies nothing;
//! - where that is refused, a sealed memfd copy of the binary.
//!
//! A binary that already lies on a read-only mount needs neither.
use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Tells the re-executed rcrun where its binary lives: hooks that run
/// rcrun again need that path, and the read-only image has none.
const ORIGINAL_EXE_ENV: &str = "_RCRUN_ORIGINAL_EXE";

static ORIGINAL_EXE: OnceLock<PathBuf> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("inspect /proc/self/exe: {0}")]
    Inspect(#[source] io::Error),
    #[error(
        "no read-only image of the rcrun binary (overlayfs: {overlay}; memfd: {memfd}): \
         refusing to start container processes from a writable binary"
    )]
    NoImage {
        overlay: io::Error,
        memfd: io::Error,
    },
    #[error("re-executed from its read-only image, rcrun still runs from a writable binary")]
    StillWritable,
    #[error("re-exec rcrun from its read-only image: {0}")]
    Exec(#[source] io::Error),
}

/// Takes the original binary's path handed over by the re-exec. Call first
/// thing in `main`, while rcrun has one thread: the variable must not reach
/// the container's processes or hooks.
pub fn take_original_path() {
    if let Some(path) = std::env::var_os(ORIGINAL_EXE_ENV) {
        std::env::remove_var(ORIGINAL_EXE_ENV);
        let _ = ORIGINAL_EXE.set(PathBuf::from(path));
    }
}

/// The path of the rcrun binary, also when it runs from its read-only image.
pub fn original_path() -> io::Result<PathBuf> {
    match ORIGINAL_EXE.get() {
        Some(path) => Ok(path.clone()),
        None => std::env::current_exe(),
    }
}

/// Returns when rcrun runs from an image no container can write; otherwise
/// re-execs rcrun, with the same arguments, from one (and does not return).
/// `spare_dir` is an existing directory unrelated to the binary's: a
/// lower-only overlayfs needs two layers.
pub fn ensure(spare_dir: &Path) -> Result<(), SealError> {
    let exe = File::open("/proc/self/exe").map_err(SealError::Inspect)?;
    if on_read_only_mount(&exe) || is_sealed_memfd(&exe) {
        return Ok(());
    }
    if ORIGINAL_EXE.get().is_some() {
        // A re-exec that did not take: never loop.
        return Err(SealError::StillWritable);
    }
    let original = std::fs::read_link("/proc/self/exe").map_err(SealError::Inspect)?;
    let image = match overlay_image(&original, spare_dir) {
        Ok(image) => image,
        Err(overlay) => {
            tracing::debug!("read-only overlayfs image refused ({overlay}): sealed memfd copy");
            memfd_image(exe).map_err(|memfd| SealError::NoImage { overlay, memfd })?
        }
    };
    Err(SealError::Exec(reexec(&image, &original)))
}

/// Whether `file` lies on a read-only mount (when that cannot be told, it
/// does not: the image is made all the same).
fn on_read_only_mount(file: &File) -> bool {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0 }
}

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

fn is_sealed_memfd(file: &File) -> bool {
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// The binary, opened through a private read-only overlayfs of its own
/// directory.
fn overlay_image(binary: &Path, spare_dir: &Path) -> io::Result<OwnedFd> {
    let (Some(dir), Some(name)) = (binary.parent(), binary.file_name()) else {
        return Err(io::Error::other(format!(
            "{} has no directory",
            binary.display()
        )));
    };
    let ctx = fd_or_error(unsafe {
        libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC)
    })?;
    // The binary's directory on top: a file of that name in the spare
    // directory cannot hide it.
    let mut lower = escape_lowerdir(dir.as_os_str().as_bytes());
    lower.push(b':');
    lower.extend(escape_lowerdir(spare_dir.as_os_str().as_bytes()));
    fsconfig_string(&ctx, c"lowerdir", &lower)?;
    // Only to keep xino's notes out of the kernel log; older kernels lack it.
    let _ = fsconfig_string(&ctx, c"xino", b"off");
    if unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let attrs = crate::mount_api::MOUNT_ATTR_RDONLY
        | crate::mount_api::MOUNT_ATTR_NODEV
        | crate::mount_api::MOUNT_ATTR_NOSUID;
    let mnt = fd_or_error(unsafe {
        libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, attrs)
    })?;
    let name = CString::new(name.as_bytes()).map_err(io::Error::other)?;
    fd_or_error(unsafe {
        libc::openat(
            mnt.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        ) as libc::c_long
    })
}

const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

fn fsconfig_string(ctx: &OwnedFd, key: &CStr, value: &[u8]) -> io::Result<()> {
    let value = CString::new(value).map_err(io::Error::other)?;
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// overlayfs splits `lowerdir` at `:`, and takes `\` as its escape.
fn escape_lowerdir(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if b == b':' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// A sealed in-memory copy of the binary, opened read-only: the kernel
/// refuses to exec a file that is open for writing.
fn memfd_image(mut exe: File) -> io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) keeps `vm.memfd_noexec = 1` from refusing the exec.
    let fd = match fd_or_error(unsafe {
        libc::memfd_create(c"rcrun".as_ptr(), flags | MFD_EXEC) as libc::c_long
    }) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            fd_or_error(unsafe { libc::memfd_create(c"rcrun".as_ptr(), flags) as libc::c_long })?
        }
        other => other?,
    };
    let mut copy = File::from(fd);
    io::copy(&mut exe, &mut copy)?;
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let read_only = File::open(format!("/proc/self/fd/{}", copy.as_raw_fd()))?;
    Ok(read_only.into())
}

const MFD_EXEC: libc::c_uint = 0x10;

fn fd_or_error(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) })
}

/// Execs `image` with rcrun's own arguments and environment, plus the
/// original binary's path. Returns only the error.
fn reexec(image: &OwnedFd, original: &Path) -> io::Error {
    let to_cstring = |s: OsString| CString::new(s.into_vec()).ok();
    let args: Option<Vec<CString>> = std::env::args_os().map(to_cstring).collect();
    let mut env: Option<Vec<CString>> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            to_cstring(kv)
        })
        .collect();
    let (Some(args), Some(env)) = (args, env.as_mut()) else {
        return io::Error::other("an argument or environment variable holds a NUL byte");
    };
    let mut original_var = OsString::from(ORIGINAL_EXE_ENV);
    original_var.push("=");
    original_var.push(original);
    match to_cstring(original_var) {
        Some(var) => env.push(var),
        None => return io::Error::other("the binary's path holds a NUL byte"),
    }
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    unsafe { libc::fexecve(image.as_raw_fd(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::escape_lowerdir;

    #[test]
    fn lowerdir_separators_and_escapes_are_escaped() {
        assert_eq!(escape_lowerdir(b"/usr/bin"), b"/usr/bin");
        assert_eq!(escape_lowerdir(br"/a:b\c"), br"/a\:b\\c");
    }
}
