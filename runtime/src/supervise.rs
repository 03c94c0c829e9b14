//! Staying in front of a container process (`run`, `exec` without
//! `--detach`): forward signals to it, copy its pty if rcrun holds one, reap
//! children, and return its exit code (128+signal when killed).
//!
//! The signals are blocked *before* the container is created so that
//! neither a fast exit's SIGCHLD nor an early SIGTERM is lost; the container
//! process unblocks them right before exec (see [`crate::executor`]).
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::console;
use crate::exec_watch::{self, Exec};

const FORWARDED: [Signal; 9] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Blocks SIGCHLD and the forwarded signals; returns the blocked set.
pub fn block_signals() -> Result<SigSet> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("block signals")?;
    Ok(set)
}

/// Makes rcrun the reaper of orphans in the container (when it has no PID
/// namespace of its own).
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// What [`wait`] learnt of `pid` when it exited.
enum Exit {
    Code(i32),
    /// It exited before exec'ing its command (see [`exec_watch`]).
    BeforeExec,
}

/// Reaps every exited child; returns how `pid` ended if it was one.
fn reap(pid: Pid) -> Option<Exit> {
    // A look at `pid` before it is reaped: once reaped, there is no telling
    // whether it got as far as its command.
    let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    let before_exec = matches!(waitid(Id::Pid(pid), peek), Ok(st) if st != WaitStatus::StillAlive)
        && exec_watch::zombie_outcome(pid.as_raw()) == Exec::FailedBefore;
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(st) => {
                if st.pid() == Some(pid) {
                    if let Some(c) = exit_code(st) {
                        code = Some(if before_exec {
                            Exit::BeforeExec
                        } else {
                            Exit::Code(c)
                        });
                    }
                }
            }
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            Err(_) => return,
        }
    }
}

/// Waits for `pid` to exit, forwarding signals and copying the pty.
pub fn wait(pid: i32, set: &SigSet, pty: Option<OwnedFd>) -> Result<i32> {
    let pid = Pid::from_raw(pid);
    let sfd = SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;
    let _raw = pty.as_ref().map(|_| console::RawMode::enter());
    if let Some(m) = &pty {
        console::copy_window_size(m.as_raw_fd());
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = pty.is_some();
    let mut pty_open = pty.is_some();
    let mut buf = vec![0u8; 32 * 1024];
    let mut code = reap(pid);
    while code.is_none() {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = &pty {
            if pty_open {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            }
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                match sig {
                    Signal::SIGCHLD => {}
                    Signal::SIGWINCH if pty.is_some() => {
                        if let Some(m) = &pty {
                            console::copy_window_size(m.as_raw_fd());
                        }
                    }
                    _ => {
                        let _ = kill(pid, sig);
                    }
                }
            }
            code = reap(pid);
        }
        if let Some(m) = &pty {
            let mut i = 1;
            if pty_open {
                if ready[i] {
                    match nix::unistd::read(m.as_raw_fd(), &mut buf) {
                        Ok(0) | Err(Errno::EIO) => pty_open = false,
                        Ok(n) => write_all(stdout.as_fd(), &buf[..n]),
                        Err(_) => {}
                    }
                }
                i += 1;
            }
            if stdin_open && ready.get(i).copied().unwrap_or(false) {
                match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(Errno::EIO) | Err(Errno::EBADF) => stdin_open = false,
                    Ok(n) => write_all(m.as_fd(), &buf[..n]),
                    Err(_) => {}
                }
            }
        }
    }
    // Whatever the process wrote last is still in the pty.
    if let Some(m) = &pty {
        let _ = nix::fcntl::fcntl(
            m.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        while let Ok(n) = nix::unistd::read(m.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            write_all(stdout.as_fd(), &buf[..n]);
        }
    }
    match code {
        Some(Exit::Code(c)) => Ok(c),
        // Its error went to the log (`--log`/`--debug`). runc fails here
        // too rather than pass on the init's exit code as the command's.
        Some(Exit::BeforeExec) => bail!(
            "the container's process exited before running its command \
             (a startContainer hook or the exec failed; --debug shows why)"
        ),
        None => Ok(255),
    }
}
