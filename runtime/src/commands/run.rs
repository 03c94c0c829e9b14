//! `rcrun run`: create and start a container; unless detached, wait for it,
//! delete it (unless `--keep`) and exit with its exit code.
//!
//! Everything `start` and `delete` would read back from disk (state, hooks,
//! cgroups path) is still in memory here, so they are not re-read.
use anyhow::Result;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cli::RunArgs;
use crate::commands::create::{self, Loaded, Stdio};
use crate::commands::{delete, start};
use crate::console::ConsoleSocket;
use crate::container::Root;
use crate::supervise;

/// Returns the process exit code for rcrun.
pub fn run(root: &Root, args: &RunArgs) -> Result<i32> {
    let opts = &args.opts;
    let set = if args.detach {
        None
    } else {
        if !args.no_subreaper {
            supervise::become_subreaper();
        }
        Some(supervise::block_signals()?)
    };
    let loaded = Loaded::read(opts)?;

    // A terminal with nobody to take the pty: rcrun holds it itself.
    let wants_tty = !args.detach && opts.console_socket.is_none() && loaded.wants_terminal();
    let own_console = if wants_tty {
        root.ensure()?;
        Some(ConsoleSocket::bind(root.path())?)
    } else {
        None
    };
    let console_path = own_console
        .as_ref()
        .map(|c| c.path().to_path_buf())
        .or_else(|| opts.console_socket.clone());

    let mut created = create::create_loaded(root, opts, loaded, Stdio::inherit(), console_path)?;
    let id = opts.id.as_str();
    let pid = created.container.pid().map(|p| p.as_raw()).unwrap_or(0);
    let pty = match &own_console {
        Some(c) => match c.receive() {
            Ok(fd) => Some(fd),
            Err(e) => {
                created.discard(root, id);
                return Err(e);
            }
        },
        None => None,
    };
    drop(own_console);

    // Detached, `run` returns once the command runs (as `start` does);
    // attached, it waits for the exit anyway.
    let wait_for_exec = set.is_none();
    if let Err(e) = start::start(
        &mut created.container,
        created.hooks.as_ref(),
        wait_for_exec,
    ) {
        created.discard(root, id);
        return Err(e);
    }
    let Some(set) = set else {
        return Ok(0);
    };
    let code = match supervise::wait(pid, &set, pty) {
        Ok(code) => code,
        // Nobody can learn the exit any more: the container goes (runc
        // kills it too), and is kept stopped only if asked to.
        Err(e) => {
            if args.keep {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            } else {
                created.discard(root, id);
            }
            return Err(e);
        }
    };
    if !args.keep {
        delete::remove_exited(
            root,
            id,
            &created.meta.cgroups_path,
            &created.container.state,
            created.hooks.as_ref(),
        )?;
    }
    Ok(code)
}
