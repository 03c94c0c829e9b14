//! `rcrun start`: let a created container's process exec its command, then
//! run the poststart hooks.
//!
//! libcontainer's own `start` runs poststart hooks as soon as it has told the
//! init to go on, possibly before the init ran its startContainer hooks and
//! exec'd; the runtime spec (and runc) run them after the exec. So rcrun
//! notifies, waits for the exec, then runs the hooks itself.
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::notify_socket::{NotifySocket, NOTIFY_FILE};
use libcontainer::oci_spec::runtime::Hooks;

use crate::container::{Handle, Root};

pub fn run(root: &Root, id: &str) -> Result<()> {
    let mut h = Handle::load(root, id)?;
    let hooks = h.container.spec().ok().and_then(|c| c.hooks);
    start(&mut h.container, hooks.as_ref(), true)
}

/// Starts a created container. With `wait_for_exec`, returns only once its
/// process has exec'd the container's command (as runc's `start` does); the
/// poststart hooks always run after that exec.
pub fn start(container: &mut Container, hooks: Option<&Hooks>, wait_for_exec: bool) -> Result<()> {
    match container.status() {
        ContainerStatus::Created => {}
        ContainerStatus::Stopped => bail!("cannot start a container that has stopped"),
        ContainerStatus::Running | ContainerStatus::Paused => {
            bail!("cannot start an already running container")
        }
        ContainerStatus::Creating => bail!("cannot start a container that is still being created"),
    }
    let pid = container
        .pid()
        .context("container has no init process")?
        .as_raw();
    NotifySocket::new(container.root.join(NOTIFY_FILE))
        .notify_container_start()
        .context("start container")?;
    container
        .set_status(ContainerStatus::Running)
        .save()
        .context("save container state")?;
    let poststart = hooks.and_then(|h| h.poststart().as_ref());
    if wait_for_exec || poststart.is_some() {
        self::wait_for_exec(pid);
    }
    if let Some(poststart) = poststart {
        libcontainer::hooks::run_hooks(
            Some(poststart),
            Some(&container.state),
            Some(&container.root),
            None,
            None,
        )
        .context("poststart hook")?;
    }
    Ok(())
}

/// Waits until the init has replaced rcrun's image with the container's
/// command (or is gone).
fn wait_for_exec(pid: i32) {
    let Ok(own) = std::fs::metadata("/proc/self/exe") else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_micros(50);
    while Instant::now() < deadline {
        match std::fs::metadata(format!("/proc/{pid}/exe")) {
            Ok(m) if m.dev() == own.dev() && m.ino() == own.ino() => {}
            // Exec'd, exited, or a zombie (no exe link): done either way.
            _ => return,
        }
        std::thread::sleep(pause);
        // The exec follows the start message within a millisecond or two:
        // poll finely so that `start` does not oversleep it.
        pause = (pause * 2).min(Duration::from_micros(400));
    }
}
