//! Starting a container's monitor (`rcrun-monitor run ...`) and reading what
//! it leaves behind: its sync report, its pid, and the exit record.
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::oci_runtime::OciRuntime;
use crate::store::ProcessIds;

/// How long `create` may take before the daemon gives up on it.
const CREATE_TIMEOUT: Duration = Duration::from_secs(240);

pub struct MonitorSpec<'a> {
    pub monitor: &'a Path,
    pub runtime: &'a OciRuntime,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub state_dir: &'a Path,
    pub log_path: &'a Path,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    /// The container's cgroup dir in the memory hierarchy (OOM detection).
    pub memory_cgroup: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct SyncReport {
    ok: bool,
    #[serde(default)]
    pid: i32,
    #[serde(default)]
    monitor_pid: i32,
    #[serde(default)]
    error: String,
}

/// The exit record the monitor writes atomically when the container ends.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub exit_code: i32,
    #[serde(default)]
    pub signal: i32,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default)]
    pub finished_at: String,
    pub finished_at_ns: i64,
}

/// Runs the monitor (blocking: call from `spawn_blocking`); returns when the
/// runtime's `create` finished, with the container's and the monitor's pids.
pub fn spawn(spec: &MonitorSpec) -> anyhow::Result<ProcessIds> {
    std::fs::create_dir_all(spec.state_dir)
        .with_context(|| format!("creating {}", spec.state_dir.display()))?;
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("sync pipe")?;
    let mut cmd = Command::new(spec.monitor);
    cmd.arg("run")
        .arg("--runtime")
        .arg(&spec.runtime.path)
        .arg("--runtime-root")
        .arg(&spec.runtime.root)
        .arg("--id")
        .arg(spec.id)
        .arg("--bundle")
        .arg(spec.bundle)
        .arg("--state-dir")
        .arg(spec.state_dir)
        .arg("--log-path")
        .arg(spec.log_path)
        .arg("--sync-fd")
        .arg("3");
    if spec.tty {
        cmd.arg("--tty");
    }
    if spec.stdin {
        cmd.arg("--stdin");
    }
    if spec.stdin_once {
        cmd.arg("--stdin-once");
    }
    if let Some(cg) = &spec.memory_cgroup {
        cmd.arg("--cgroup-path").arg(cg);
    }
    for arg in spec.runtime.global_args() {
        cmd.arg(format!("--runtime-arg={arg}"));
    }
    let monitor_log = std::fs::File::create(spec.state_dir.join("monitor.log"))
        .context("creating the monitor's own log")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(monitor_log);
    let raw_write = write_end.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if raw_write == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw_write, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the monitor {}", spec.monitor.display()))?;
    drop(write_end);
    // The monitor forks and its parent exits at once: reap that parent.
    let status = child.wait().context("waiting for the monitor's parent")?;
    let report = read_report(read_end, CREATE_TIMEOUT);
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let detail = diagnostics(spec.state_dir);
            bail!("the monitor did not report (its parent {status}): {e:#}{detail}");
        }
    };
    if !report.ok {
        let mut message = report.error;
        if message.is_empty() {
            message = "the monitor reported a failure without a message".into();
        }
        bail!("{message}");
    }
    if report.pid <= 0 {
        bail!("the monitor reported no container pid");
    }
    Ok(ProcessIds {
        pid: report.pid,
        monitor_pid: report.monitor_pid,
    })
}

fn read_report(fd: OwnedFd, timeout: Duration) -> anyhow::Result<SyncReport> {
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut file = std::fs::File::from(fd);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            bail!("timed out after {timeout:?} waiting for the runtime's create");
        }
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err.into());
        }
        if n == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        let got = file.read(&mut chunk)?;
        if got == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..got]);
        if buf.contains(&b'\n') {
            break;
        }
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    if line.is_empty() {
        bail!("the monitor exited without a report");
    }
    serde_json::from_slice(line)
        .with_context(|| format!("bad report {:?}", String::from_utf8_lossy(line)))
}

/// The tail of the monitor's and the runtime's logs, to explain a failure.
fn diagnostics(state_dir: &Path) -> String {
    let mut out = String::new();
    for name in ["monitor.log", "runtime.log"] {
        if let Ok(text) = std::fs::read(state_dir.join(name)) {
            let msg = crate::oci_runtime::runtime_message(&text);
            if !text.is_empty() {
                out.push_str(&format!("; {name}: {msg}"));
            }
        }
    }
    out
}

/// The exit record, if the monitor wrote one.
pub fn read_exit(state_dir: &Path) -> Option<ExitRecord> {
    let bytes = std::fs::read(state_dir.join("exit.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether `pid` is the monitor of container `id` (guards against pid reuse
/// after a daemon restart).
pub fn is_monitor_alive(pid: i32, id: &str) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is gone for our purposes.
        if let Some(rest) = stat.rsplit(')').next() {
            if rest.trim_start().starts_with('Z') {
                return false;
            }
        }
    }
    cmdline.split(|b| *b == 0).any(|arg| arg == id.as_bytes())
}

/// A pidfd for `pid`, readable once the process ends. `Err(ESRCH)` when it
/// is gone; other errors when the kernel offers no pidfds (before 5.3, or a
/// seccomp filter refuses the call).
fn pidfd_open(pid: i32) -> Result<OwnedFd, nix::errno::Errno> {
    // SAFETY: plain syscall; the fd is owned by the result.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process ends (or is already gone).
pub async fn wait_exit(pid: i32) {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ESRCH) => return,
        // Without a pidfd, "cannot watch" must not read as "ended": that
        // would take every running container for dead.
        Err(_) => return poll_proc(pid).await,
    };
    // SAFETY: the AsyncFd owns the pidfd, which stays open until it is dropped.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    match registered {
        Ok(async_fd) => {
            let _ = async_fd.readable().await;
        }
        // No reactor registration possible: poll /proc instead.
        Err(_) => poll_proc(pid).await,
    }
}

/// Waits for `/proc/<pid>` to go, checking every 100 ms.
async fn poll_proc(pid: i32) {
    while Path::new(&format!("/proc/{pid}")).exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGKILLs every process of the session `sid` (a monitor is a session
/// leader: its runtime `create` and that runtime's children are in it).
pub fn kill_session(sid: i32) {
    if sid <= 1 {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state ppid pgrp session ...
        let session = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(3))
            .and_then(|s| s.parse::<i32>().ok());
        if session == Some(sid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Sends `signal` to `pid` if it is still the monitor of `id`.
pub fn signal_monitor(pid: i32, id: &str, signal: nix::sys::signal::Signal) {
    if is_monitor_alive(pid, id) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records_parse() {
        let dir = std::env::temp_dir().join(format!("rcrun-exit-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read_exit(&dir).is_none());
        std::fs::write(
            dir.join("exit.json"),
            r#"{"exit_code":137,"signal":9,"oom_killed":true,"finished_at":"2026-01-01T00:00:00.000000001Z","finished_at_ns":1767225600000000001}"#,
        )
        .unwrap();
        let rec = read_exit(&dir).unwrap();
        assert_eq!(rec.exit_code, 137);
        assert!(rec.oom_killed);
        assert_eq!(rec.finished_at_ns, 1767225600000000001);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Whether `pid` has ended: gone, or a zombie.
    fn ended(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn waiting_returns_once_the_process_has_ended() {
        // Through a pidfd, and through the /proc polling used where the
        // kernel has no pidfds; a reaper thread lets /proc/<pid> go.
        for use_pidfd in [true, false] {
            let mut child = std::process::Command::new("sleep")
                .arg("0.3")
                .spawn()
                .unwrap();
            let pid = child.id() as i32;
            let reaper = std::thread::spawn(move || child.wait());
            assert!(!ended(pid));
            if use_pidfd {
                wait_exit(pid).await;
            } else {
                poll_proc(pid).await;
            }
            assert!(ended(pid), "returned while {pid} runs");
            reaper.join().unwrap().unwrap();
        }
        // Gone already: no wait.
        wait_exit(i32::MAX).await;
    }

    #[test]
    fn a_dead_or_foreign_pid_is_not_a_monitor() {
        assert!(!is_monitor_alive(0, "x"));
        assert!(!is_monitor_alive(
            std::process::id() as i32,
            "no-such-container-id"
        ));
    }
}
