//! `rcrun exec`: run another process in a running container.
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{Capability, Process};
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cli::ExecArgs;
use crate::commands::create::Stdio;
use crate::confine::ExecConfinement;
use crate::console::ConsoleSocket;
use crate::container::{Handle, Root};
use crate::executor::ProcessExecutor;
use crate::{supervise, userns_exec};

/// Returns rcrun's exit code (the process's, unless detached).
pub fn run(root: &Root, args: &ExecArgs) -> Result<i32> {
    if args.pidfd_socket.is_some() {
        bail!("--pidfd-socket is not supported");
    }
    let h = Handle::load(root, &args.id)?;
    if let Some(pf) = &args.pid_file {
        crate::fsutil::require_parent_dir(pf, "--pid-file")?;
    }
    let spec =
        crate::spec::load(&root.bundle_dir(&args.id)).context("load the container's config")?;
    let mut process = build_process(args, spec.process().as_ref())?;
    let (confinement, notify) = match spec.linux().as_ref().and_then(|l| l.seccomp().clone()) {
        Some(seccomp) => {
            let (c, n) = ExecConfinement::prepare(&mut process, seccomp)?;
            (Some(c), n)
        }
        None => (None, None),
    };
    if let Some(init) = h.container.pid() {
        check_cwd(init.as_raw(), process.cwd())?;
    }
    let terminal = process.terminal().unwrap_or(false);
    if terminal && args.detach && args.console_socket.is_none() {
        bail!("cannot allocate tty if rcrun will detach without setting console socket");
    }
    if !terminal && args.console_socket.is_some() {
        bail!("cannot use console socket if rcrun will not detach or allocate tty");
    }
    let own_console = if terminal && args.console_socket.is_none() {
        Some(ConsoleSocket::bind(root.path())?)
    } else {
        None
    };
    let console_path: Option<PathBuf> = own_console
        .as_ref()
        .map(|c| c.path().to_path_buf())
        .or_else(|| args.console_socket.clone());

    let set = if args.detach {
        None
    } else {
        Some(supervise::block_signals()?)
    };
    let stdio = Stdio::inherit();
    crate::supplementary_groups::drop_all()?;
    let executor = ProcessExecutor {
        new_keyring: None,
        confinement,
    };
    // A pid file written before the process failed to start would name a
    // process that never ran (libcontainer writes it first): a failure puts
    // back what the file held.
    let pid_file_undo = args
        .pid_file
        .as_deref()
        .map(|p| crate::fsutil::UndoOnDrop(crate::fsutil::Overwrite::begin(p)));
    let pid = if crate::spec::has_user_namespace(&spec) {
        // libcontainer's tenant builder leaves the user namespace out.
        userns_exec::spawn(
            &h.container,
            h.meta.init_start_time,
            userns_exec::TenantProcess {
                id: args.id.clone(),
                bundle: root.bundle_dir(&args.id),
                spec,
                process,
                executor,
                stdio,
                pid_file: args.pid_file.clone(),
                console_socket: console_path.clone(),
                preserve_fds: args.preserve_fds,
                detached: args.detach || console_path.is_some(),
                ignore_paused: args.ignore_paused,
                sub_cgroup: args.cgroup.clone(),
            },
        )
        .context("exec failed")?
    } else {
        exec_as_tenant(
            root,
            args,
            &process,
            executor,
            stdio,
            console_path.as_deref(),
        )?
    };
    // The process runs its command now. What is left can still fail (the
    // seccomp listener, the terminal); then it must not run on unattended,
    // as runc makes sure too.
    let handed_over = (|| -> Result<_> {
        if let Some(n) = notify {
            n.forward(pid, &h.container.state).context("exec failed")?;
        }
        own_console.as_ref().map(|c| c.receive()).transpose()
    })();
    drop(h);
    let pty = match handed_over {
        Ok(pty) => pty,
        Err(e) => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            // Reaped if it is our child. (The pid file is undone with
            // `pid_file_undo`.)
            crate::commands::delete::wait_gone(pid, std::time::Duration::from_secs(2));
            return Err(e);
        }
    };
    // Started: the pid file stays.
    if let Some(undo) = pid_file_undo {
        undo.keep();
    }
    match set {
        None => Ok(0),
        Some(set) => supervise::wait(pid, &set, pty),
    }
}

/// The working directory must exist in the container (resolved as the
/// container sees it: from its root, through its mounts). libcontainer's
/// failing chdir reports only "failed to unix syscall"; runc names the cwd.
fn check_cwd(init_pid: i32, cwd: &Path) -> Result<()> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let Ok(root) = std::fs::File::open(format!("/proc/{init_pid}/root")) else {
        // The container is going away: the exec itself says so.
        return Ok(());
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    match openat2(root.as_raw_fd(), cwd, how) {
        Ok(fd) => {
            let _ = nix::unistd::close(fd);
            Ok(())
        }
        Err(e @ (Errno::ENOENT | Errno::ENOTDIR)) => {
            bail!(
                "cwd {} is not a directory in the container: {e}",
                cwd.display()
            )
        }
        // Anything else (a cwd only the process's user may search) is for
        // the exec to find out.
        Err(_) => Ok(()),
    }
}

/// Starts the process with libcontainer's tenant builder; returns its PID.
fn exec_as_tenant(
    root: &Root,
    args: &ExecArgs,
    process: &Process,
    executor: ProcessExecutor,
    stdio: Stdio,
    console_path: Option<&Path>,
) -> Result<i32> {
    let process_file = root
        .bundle_dir(&args.id)
        .join(format!("exec-{}.json", std::process::id()));
    std::fs::write(&process_file, serde_json::to_vec(process)?).context("write process.json")?;
    let _cleanup = crate::fsutil::RemoveOnDrop(process_file.clone());
    let mut builder = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(root.path())
        .context("root path")?
        .with_pid_file(args.pid_file.as_deref())
        .context("pid file")?
        .with_console_socket(console_path)
        .with_preserved_fds(args.preserve_fds)
        .with_executor(executor);
    if let Some(fd) = stdio.stdin {
        builder = builder.with_stdin(fd);
    }
    if let Some(fd) = stdio.stdout {
        builder = builder.with_stdout(fd);
    }
    if let Some(fd) = stdio.stderr {
        builder = builder.with_stderr(fd);
    }
    let pid = builder
        .as_tenant()
        .with_detach(args.detach || console_path.is_some())
        .with_process(Some(&process_file))
        .with_ignore_paused(args.ignore_paused)
        .with_sub_cgroup(args.cgroup.clone())
        .build()
        .map_err(|e| anyhow::anyhow!(crate::tidy_libcontainer_error(&crate::error_text(&e))))
        .context("exec failed")?;
    Ok(pid.as_raw())
}

/// The process to exec: `--process`, or the container's own process with
/// the command line's changes (runc's rules).
fn build_process(args: &ExecArgs, base: Option<&Process>) -> Result<Process> {
    if let Some(path) = &args.process {
        let data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let de = &mut serde_json::Deserializer::from_slice(&data);
        let p: Process = serde_path_to_error::deserialize(de)
            .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
        crate::spec::validate_process(&p).with_context(|| path.display().to_string())?;
        return Ok(p);
    }
    if args.command.is_empty() {
        bail!("exec: no command given");
    }
    let mut p = base
        .cloned()
        .context("the container has no process in its config")?;
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        if !cwd.is_absolute() {
            bail!("--cwd {:?} is not an absolute path", cwd);
        }
        p.set_cwd(cwd.clone());
    }
    if !args.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for e in &args.env {
            let key = e.split('=').next().unwrap_or_default();
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        p.set_env(Some(env));
    }
    if let Some(u) = &args.user {
        let mut user = p.user().clone();
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        user.set_uid(
            uid.parse()
                .with_context(|| format!("--user {u:?}: uid must be a number"))?,
        );
        if let Some(g) = gid {
            user.set_gid(
                g.parse()
                    .with_context(|| format!("--user {u:?}: gid must be a number"))?,
            );
        }
        p.set_user(user);
    }
    if !args.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(args.additional_gids.clone()));
        p.set_user(user);
    }
    if !args.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        if p.capabilities().is_none() {
            caps.set_inheritable(None);
            caps.set_ambient(None);
            caps.set_bounding(Some(Default::default()));
            caps.set_effective(Some(Default::default()));
            caps.set_permitted(Some(Default::default()));
        }
        for c in &args.cap {
            let name = c.to_ascii_uppercase();
            let name = if name.starts_with("CAP_") {
                name
            } else {
                format!("CAP_{name}")
            };
            let cap: Capability = serde_json::from_value(serde_json::Value::String(name))
                .map_err(|_| anyhow::anyhow!("unknown capability {c:?}"))?;
            let add = |set: &Option<libcontainer::oci_spec::runtime::Capabilities>| {
                let mut s = set.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            caps.set_bounding(add(caps.bounding()));
            caps.set_effective(add(caps.effective()));
            caps.set_permitted(add(caps.permitted()));
            if caps.inheritable().is_some() {
                caps.set_ambient(add(caps.ambient()));
            }
        }
        p.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}
