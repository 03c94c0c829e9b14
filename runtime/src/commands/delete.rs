//! `rcrun delete`: remove a container and everything it holds (processes,
//! cgroup, state), idempotently.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libcontainer::container::{ContainerStatus, State};
use libcontainer::oci_spec::runtime::Hooks;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cgroups;
use crate::cli::DeleteArgs;
use crate::container::{self, Handle, Root};

pub fn run(root: &Root, args: &DeleteArgs) -> Result<()> {
    let id = args.id.as_str();
    container::validate_id(id)?;
    let h = match Handle::load(root, id) {
        Ok(h) => h,
        // A state that exists but cannot be read (caught while another
        // command rewrites it, or damaged) still describes a container that
        // may run: nothing is removed.
        Err(e) if root.state_dir(id).join("state.json").exists() => return Err(e),
        Err(e) => {
            // A create that crashed before libcontainer wrote its state
            // leaves rcrun's record, perhaps a state directory, and a
            // cgroup: remove them (runc too removes such a directory).
            if root.bundle_dir(id).exists() || root.state_dir(id).exists() {
                let meta = container::Meta::load(root, id).unwrap_or_default();
                let cg = if meta.cgroups_path.as_os_str().is_empty() {
                    crate::spec::effective_cgroups_path(None, id)
                } else {
                    meta.cgroups_path
                };
                return remove_everything(root, id, &cg, None);
            }
            // As runc: forcing the removal of what is not there succeeds,
            // so that a cleanup can be repeated.
            if args.force {
                return Ok(());
            }
            return Err(e);
        }
    };
    let status = h.status();
    match status {
        ContainerStatus::Stopped | ContainerStatus::Created => {}
        _ if args.force => {}
        _ => bail!(
            "cannot delete container {id} that is not stopped: {}",
            container::status_name(status)
        ),
    }
    let pid = (status != ContainerStatus::Stopped)
        .then(|| h.pid())
        .flatten();
    let cg = h.cgroups_path();
    // The hooks go with the record: read them first. libcontainer keeps
    // them in its small config; the effective spec has them too.
    let hooks = match h.container.spec() {
        Ok(config) => config.hooks,
        Err(_) => crate::spec::load(&root.bundle_dir(id))
            .ok()
            .and_then(|s| s.hooks().clone()),
    };
    remove_everything(root, id, &cg, pid)?;
    run_poststop_hooks(&h.container.state, hooks.as_ref());
    Ok(())
}

/// Deletes a container whose init this process has reaped (`run`), with
/// what `create` returned: nothing needs to be read back from disk.
pub fn remove_exited(
    root: &Root,
    id: &str,
    cgroups_path: &Path,
    state: &State,
    hooks: Option<&Hooks>,
) -> Result<()> {
    remove_everything(root, id, cgroups_path, None)?;
    run_poststop_hooks(state, hooks);
    Ok(())
}

/// Runs the poststop hooks; failures are reported but do not undo the delete.
fn run_poststop_hooks(state: &State, hooks: Option<&Hooks>) {
    if let Some(hooks) = hooks {
        let mut state = state.clone();
        state.status = ContainerStatus::Stopped;
        if let Err(e) = libcontainer::hooks::run_hooks(
            hooks.poststop().as_ref(),
            Some(&state),
            None,
            None,
            None,
        ) {
            tracing::warn!("poststop hook failed: {e}");
            eprintln!("poststop hook failed: {e}");
        }
    }
}

/// Kills every process of the container, removes its cgroup, its state and
/// rcrun's record. Safe to call on a half-created or already removed one.
pub fn remove_everything(
    root: &Root,
    id: &str,
    cgroups_path: &Path,
    pid: Option<i32>,
) -> Result<()> {
    let cgroup = cgroups::CgroupTree::open(cgroups_path)
        .inspect_err(|e| tracing::warn!("cgroup {} left as it is: {e:#}", cgroups_path.display()))
        .ok();
    if let Some(cg) = &cgroup {
        // Frozen tasks do not die until thawed.
        cg.thaw();
        cg.kill_all();
    }
    if let Some(p) = pid {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        wait_gone(p, Duration::from_secs(5));
    }
    if let Some(cg) = &cgroup {
        cg.remove()
            .with_context(|| format!("remove cgroup {}", cgroups_path.display()))?;
    }
    crate::fsutil::remove_dir_all_if_exists(&root.state_dir(id))
        .context("remove container state")?;
    crate::fsutil::remove_dir_all_if_exists(&root.bundle_dir(id))
        .context("remove container record")?;
    Ok(())
}

/// Waits until a process is gone (reaped, or a zombie of someone else).
pub fn wait_gone(pid: i32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        // Reap it if it is our child; ECHILD otherwise.
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()));
        match state {
            None | Some('Z') | Some('X') => return,
            _ => {}
        }
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
