//! `rcrun kill`: signal the container's init, or every process with `--all`.
use std::path::Path;

use anyhow::{bail, Context, Result};
use libcontainer::container::ContainerStatus;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cgroups;
use crate::cli::KillArgs;
use crate::container::{Handle, Root};
use crate::signals;

pub fn run(root: &Root, args: &KillArgs) -> Result<()> {
    let sig =
        signals::parse(args.signal.as_deref().unwrap_or("SIGTERM")).map_err(anyhow::Error::msg)?;
    let h = Handle::load(root, &args.id)?;
    let status = h.status();
    let paused = status == ContainerStatus::Paused;
    if args.all {
        return signal_all(&h.cgroups_path(), sig, paused);
    }
    if status == ContainerStatus::Stopped {
        bail!("container not running");
    }
    let pid = h.pid().context("container has no init process")?;
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) => {}
        Err(nix::errno::Errno::ESRCH) => bail!("container not running"),
        Err(e) => return Err(e).context("send signal"),
    }
    if paused && sig == Signal::SIGKILL {
        // A frozen process only dies once thawed.
        cgroups::CgroupTree::open(&h.cgroups_path())?.thaw();
    }
    Ok(())
}

/// Signals every process in the container's cgroup and its sub-cgroups.
/// SIGKILL on cgroup v2 goes through `cgroup.kill`; otherwise the cgroup is
/// frozen while the signals go out so no process forks past them, as runc
/// does.
pub fn signal_all(path: &Path, sig: Signal, paused: bool) -> Result<()> {
    let tree = cgroups::CgroupTree::open(path)?;
    if sig == Signal::SIGKILL && cgroups::is_unified() {
        tree.kill_all();
        return Ok(());
    }
    if !paused {
        // As runc: signal anyway, a process may fork past it.
        if let Err(e) = tree.freeze() {
            tracing::warn!("{e:#}");
        }
    }
    let result = (|| -> Result<()> {
        for p in tree.pids() {
            match kill(Pid::from_raw(p), sig) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(e).with_context(|| format!("signal process {p}")),
            }
        }
        Ok(())
    })();
    if !paused || sig == Signal::SIGKILL {
        tree.thaw();
    }
    result
}
