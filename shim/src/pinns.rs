//! Pinning a pod's network, IPC and UTS namespaces (and, for `hostUsers:
//! false` pods, its user namespace) by bind-mounting them under the run dir
//! (the pause-less model of CRI-O's pinns).
//!
//! `unshare` changes the calling thread's namespaces, which must never happen
//! on a tokio worker; so the daemon re-executes itself as a short-lived,
//! single-threaded helper (`rcrun-cri __pin-namespaces ...`, handled in
//! `main` before any runtime starts) that unshares, configures the fresh
//! namespaces (hostname, `lo` up, sysctls) and bind-mounts them in place.
//!
//! With a user namespace the helper forks, as CRI-O's pinns does: the child
//! unshares the user namespace, the helper (still in the host's) writes its
//! mappings, then the child, now root in it, unshares the network, IPC and
//! UTS namespaces, which the new user namespace therefore owns; containers
//! that join the user namespace may then join and administer them. The
//! helper bind-mounts the child's namespaces: only a process with
//! CAP_SYS_ADMIN over the host's mount namespace can.
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The hidden subcommand name.
pub const HELPER: &str = "__pin-namespaces";

/// What the helper is asked to do.
#[derive(Debug, Default, Clone)]
pub struct PinRequest {
    /// A new user namespace, pinned here, with `uid_map`/`gid_map` (one
    /// `uid_map` line each: `<container id> <host id> <length>`).
    pub user: Option<PathBuf>,
    pub uid_map: String,
    pub gid_map: String,
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub hostname: String,
    pub sysctls: Vec<(String, String)>,
}

impl PinRequest {
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![HELPER.to_string()];
        for (flag, path) in [
            ("--user", &self.user),
            ("--net", &self.net),
            ("--ipc", &self.ipc),
            ("--uts", &self.uts),
        ] {
            if let Some(p) = path {
                args.push(flag.into());
                args.push(p.to_string_lossy().into_owned());
            }
        }
        for (flag, map) in [("--uid-map", &self.uid_map), ("--gid-map", &self.gid_map)] {
            if !map.is_empty() {
                args.push(flag.into());
                args.push(map.clone());
            }
        }
        if !self.hostname.is_empty() {
            args.push("--hostname".into());
            args.push(self.hostname.clone());
        }
        for (k, v) in &self.sysctls {
            args.push("--sysctl".into());
            args.push(format!("{k}={v}"));
        }
        args
    }

    fn from_args(args: &[String]) -> anyhow::Result<Self> {
        let mut req = Self::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--user" => req.user = Some(value.into()),
                "--uid-map" => req.uid_map = value.clone(),
                "--gid-map" => req.gid_map = value.clone(),
                "--net" => req.net = Some(value.into()),
                "--ipc" => req.ipc = Some(value.into()),
                "--uts" => req.uts = Some(value.into()),
                "--hostname" => req.hostname = value.clone(),
                "--sysctl" => {
                    let (k, v) = value.split_once('=').context("sysctl must be key=value")?;
                    req.sysctls.push((k.to_string(), v.to_string()));
                }
                other => bail!("unknown flag {other}"),
            }
        }
        if req.user.is_some() && (req.uid_map.is_empty() || req.gid_map.is_empty()) {
            bail!("a new user namespace needs --uid-map and --gid-map");
        }
        if req.user.is_none() && !(req.uid_map.is_empty() && req.gid_map.is_empty()) {
            bail!("--uid-map and --gid-map need --user");
        }
        Ok(req)
    }
}

/// Checks that every sysctl is namespaced and lives in a namespace the pod
/// owns (the same rule runc applies to a pause container's spec).
pub fn validate_sysctls(
    sysctls: &[(String, String)],
    own_net: bool,
    own_ipc: bool,
) -> Result<(), String> {
    for (key, _) in sysctls {
        if key.is_empty() || key.contains("..") || key.starts_with('/') || key.starts_with('.') {
            return Err(format!("invalid sysctl name {key:?}"));
        }
        let ipc = key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem"
            || key.starts_with("fs.mqueue.");
        let net = key.starts_with("net.");
        if ipc && !own_ipc {
            return Err(format!(
                "sysctl {key:?} is not allowed with the host IPC namespace"
            ));
        }
        if net && !own_net {
            return Err(format!(
                "sysctl {key:?} is not allowed with the host network namespace"
            ));
        }
        if !ipc && !net {
            return Err(format!(
                "sysctl {key:?} is not namespaced and cannot be set for a pod"
            ));
        }
    }
    Ok(())
}

/// Entry point of the helper process (single-threaded; exits the process).
pub fn helper_main(args: &[String]) -> ! {
    match PinRequest::from_args(args).and_then(|req| pin_here(&req)) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(1)
        }
    }
}

fn pin_here(req: &PinRequest) -> anyhow::Result<()> {
    match &req.user {
        None => {
            unshare_and_configure(req)?;
            bind_all(req, "self")
        }
        Some(_) => pin_in_user_namespace(req),
    }
}

/// Unshares the namespaces other than the user namespace and configures
/// them: hostname, `lo` up, sysctls.
fn unshare_and_configure(req: &PinRequest) -> anyhow::Result<()> {
    let mut flags = CloneFlags::empty();
    if req.net.is_some() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if req.ipc.is_some() {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if req.uts.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    unshare(flags).context("unshare of the pod namespaces")?;
    if req.uts.is_some() && !req.hostname.is_empty() {
        nix::unistd::sethostname(&req.hostname)
            .with_context(|| format!("setting hostname {:?}", req.hostname))?;
    }
    if req.net.is_some() {
        loopback_up().context("bringing lo up")?;
    }
    for (key, value) in &req.sysctls {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value)
            .with_context(|| format!("setting sysctl {key}={value:?} ({})", path.display()))?;
    }
    Ok(())
}

/// Bind-mounts the namespaces of `/proc/<proc_dir>` (the user namespace
/// first); on failure, whatever was pinned is released again.
fn bind_all(req: &PinRequest, proc_dir: &str) -> anyhow::Result<()> {
    let all = [
        ("user", &req.user),
        ("net", &req.net),
        ("ipc", &req.ipc),
        ("uts", &req.uts),
    ];
    let mut pinned: Vec<&Path> = Vec::new();
    let result = (|| {
        for (kind, target) in all {
            let Some(target) = target else { continue };
            bind_ns(&format!("/proc/{proc_dir}/ns/{kind}"), target)?;
            pinned.push(target);
        }
        Ok(())
    })();
    if result.is_err() {
        for path in pinned {
            unpin(path);
        }
    }
    result
}

/// The user-namespace flow (see the module comment). The child reports
/// each step over a socket: `U` = user namespace unshared, `0` = all set
/// up, `E<message>` = failed; the helper answers `M` once the mappings are
/// written. The child waits for the socket to close before it exits, so its
/// namespaces stay reachable through `/proc/<child>` while they are pinned.
fn pin_in_user_namespace(req: &PinRequest) -> anyhow::Result<()> {
    let (mut parent, mut child) = UnixStream::pair().context("socketpair for the userns child")?;
    // SAFETY: the helper is single-threaded (it runs before any runtime or
    // thread starts), so the child may run ordinary code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork for the user namespace");
    }
    if pid == 0 {
        drop(parent);
        let code = match userns_child(req, &mut child) {
            Ok(()) => 0,
            Err(e) => {
                let _ = child.write_all(format!("E{e:#}").as_bytes());
                1
            }
        };
        drop(child);
        // SAFETY: leaves the forked child without running the helper's exit path twice.
        unsafe { libc::_exit(code) }
    }
    drop(child);
    let result = (|| {
        expect_step(&mut parent, b'U')?;
        write_map(pid, "gid_map", &req.gid_map)?;
        write_map(pid, "uid_map", &req.uid_map)?;
        parent
            .write_all(b"M")
            .context("telling the userns child the mappings are written")?;
        expect_step(&mut parent, b'0')?;
        bind_all(req, &pid.to_string())
    })();
    drop(parent);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    result
}

fn userns_child(req: &PinRequest, sock: &mut UnixStream) -> anyhow::Result<()> {
    // SAFETY: plain prctl; the child must not outlive a helper that died.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error()).context("PR_SET_PDEATHSIG");
    }
    unshare(CloneFlags::CLONE_NEWUSER).context("unshare of the user namespace")?;
    sock.write_all(b"U")?;
    let mut byte = [0u8; 1];
    sock.read_exact(&mut byte)
        .context("waiting for the user namespace mappings")?;
    if byte[0] != b'M' {
        bail!("unexpected step {:?} from the helper", byte[0] as char);
    }
    // Root of the new namespace, so that what it creates is owned by it.
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .context("setresgid(0) in the user namespace")?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .context("setresuid(0) in the user namespace")?;
    unshare_and_configure(req)?;
    sock.write_all(b"0")?;
    // Wait for the helper to pin our namespaces (it closes its end).
    let _ = sock.read(&mut byte);
    Ok(())
}

/// Reads the child's next step; `E` carries its error message.
fn expect_step(sock: &mut UnixStream, want: u8) -> anyhow::Result<()> {
    let mut byte = [0u8; 1];
    match sock.read(&mut byte) {
        Ok(1) if byte[0] == want => Ok(()),
        Ok(1) if byte[0] == b'E' => {
            let mut message = String::new();
            let _ = sock.read_to_string(&mut message);
            bail!("{message}")
        }
        Ok(1) => bail!(
            "unexpected step {:?} from the userns child",
            byte[0] as char
        ),
        Ok(_) => bail!("the userns child exited early"),
        Err(e) => Err(e).context("reading from the userns child"),
    }
}

fn write_map(pid: i32, file: &str, line: &str) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, format!("{line}\n"))
        .with_context(|| format!("writing {line:?} to {path}"))
}

fn bind_ns(source: &str, target: &Path) -> anyhow::Result<()> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .with_context(|| format!("creating {}", target.display()))?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {source} on {}", target.display()))
}

/// `ip link set lo up`, with the classic ioctls (no netlink needed for one flag).
fn loopback_up() -> anyhow::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq that we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            result = Err(std::io::Error::last_os_error());
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) < 0 {
                result = Err(std::io::Error::last_os_error());
            }
        }
        libc::close(fd);
        result.map_err(Into::into)
    }
}

/// Runs the helper (a fresh process of this binary) and waits for it.
pub fn pin(req: &PinRequest) -> anyhow::Result<()> {
    let output = std::process::Command::new("/proc/self/exe")
        .args(req.to_args())
        .stdin(std::process::Stdio::null())
        .output()
        .context("running the namespace helper")?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Releases a pinned namespace: lazy unmount, then the file. Idempotent.
pub fn unpin(path: &Path) {
    if let Err(e) = umount2(path, MntFlags::MNT_DETACH) {
        if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
            tracing::warn!(path = %path.display(), error = %e, "unmounting a pinned namespace");
        }
    }
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "removing a pinned namespace file");
        }
    }
}

/// Whether `path` is a live pinned namespace (an nsfs mount).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let req = PinRequest {
            user: Some("/run/x/user".into()),
            uid_map: "0 1000 100000".into(),
            gid_map: "0 2000 65536".into(),
            net: Some("/run/x/net".into()),
            ipc: None,
            uts: Some("/run/x/uts".into()),
            hostname: "pod-a".into(),
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
        };
        let args = req.to_args();
        assert_eq!(args[0], HELPER);
        let back = PinRequest::from_args(&args[1..]).unwrap();
        assert_eq!(back.user, req.user);
        assert_eq!(back.uid_map, "0 1000 100000");
        assert_eq!(back.gid_map, "0 2000 65536");
        assert_eq!(back.net, req.net);
        assert_eq!(back.ipc, None);
        assert_eq!(back.uts, req.uts);
        assert_eq!(back.hostname, "pod-a");
        assert_eq!(back.sysctls, req.sysctls);
    }

    #[test]
    fn user_namespace_and_mappings_come_together() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(PinRequest::from_args(&args(&["--user", "/x"])).is_err());
        assert!(
            PinRequest::from_args(&args(&["--uid-map", "0 1 1", "--gid-map", "0 1 1"])).is_err()
        );
        assert!(PinRequest::from_args(&args(&[
            "--user",
            "/x",
            "--uid-map",
            "0 1 1",
            "--gid-map",
            "0 1 1"
        ]))
        .is_ok());
    }

    #[test]
    fn sysctls_must_be_namespaced_and_owned() {
        let s = |k: &str| vec![(k.to_string(), "1".to_string())];
        assert!(validate_sysctls(&s("net.ipv4.ip_forward"), true, true).is_ok());
        assert!(validate_sysctls(&s("kernel.shmmax"), true, true).is_ok());
        assert!(validate_sysctls(&s("net.ipv4.ip_forward"), false, true).is_err());
        assert!(validate_sysctls(&s("kernel.msgmax"), true, false).is_err());
        assert!(validate_sysctls(&s("vm.swappiness"), true, true).is_err());
        assert!(validate_sysctls(&s("net/../../x"), true, true).is_err());
    }
}
