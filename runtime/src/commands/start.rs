//! `rcrun start`: let a created container's process exec its command, then
//! run the poststart hooks.
//!
//! libcontainer's own `start` runs poststart hooks as soon as it has told the
//! init to go on, possibly before the init ran its startContainer hooks and
//! exec'd; the runtime spec (and runc) run them after the exec. So rcrun
//! notifies, waits for the exec, then runs the hooks itself.
use anyhow::{bail, Context, Result};
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::notify_socket::{NotifySocket, NOTIFY_FILE};
use libcontainer::oci_spec::runtime::Hooks;

use crate::container::{Handle, Root};
use crate::exec_watch::{self, Exec};

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
    if (wait_for_exec || poststart.is_some())
        && exec_watch::wait_for_exec(pid) == Exec::FailedBefore
    {
        // Its error went to the log (`--log`/`--debug`); runc's `run`
        // fails here too instead of passing on the init's exit code.
        bail!(
            "the container's process exited before running its command \
             (a startContainer hook or the exec failed; --debug shows why)"
        );
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
