//! `rcrun create`: set the container up; its process waits for `start`.
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::{Hooks, Spec};
use libcontainer::syscall::syscall::SyscallType;

use crate::cli::CreateOpts;
use crate::container::{self, Meta, Root};
use crate::executor::ProcessExecutor;
use crate::{commands, container_setup, spec};

pub fn run(root: &Root, opts: &CreateOpts) -> Result<()> {
    create(root, opts, Stdio::inherit(), opts.console_socket.clone())?;
    Ok(())
}

/// The container's stdin, stdout and stderr.
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Stdio {
    /// Copies of our own stdio (or /dev/null where ours is closed).
    pub fn inherit() -> Stdio {
        fn dup_or_null(fd: std::os::fd::BorrowedFd<'_>, write: bool) -> Option<OwnedFd> {
            fd.try_clone_to_owned().ok().or_else(|| {
                std::fs::OpenOptions::new()
                    .read(!write)
                    .write(write)
                    .open("/dev/null")
                    .ok()
                    .map(OwnedFd::from)
            })
        }
        // SAFETY: fds 0-2 are borrowed only for the duration of the dup.
        let (i, o, e) = unsafe {
            (
                std::os::fd::BorrowedFd::borrow_raw(0),
                std::os::fd::BorrowedFd::borrow_raw(1),
                std::os::fd::BorrowedFd::borrow_raw(2),
            )
        };
        Stdio {
            stdin: dup_or_null(i.as_fd(), false),
            stdout: dup_or_null(o.as_fd(), true),
            stderr: dup_or_null(e.as_fd(), true),
        }
    }
}

/// Whether rcrun brings up the loopback interface of the container's new
/// network namespace itself, right after libcontainer has created the
/// container, instead of the set-up hook inside it (takes it out of `setup`).
///
/// Only when that is all the hook would do and no create-time hook
/// (prestart, createRuntime, createContainer) could tell the difference; the
/// container's process runs only after `start`, so it cannot. This spares a
/// fork and exec of rcrun inside every such container, and libcontainer's
/// hook round trip between its processes.
fn loopback_from_runtime(setup: &mut container_setup::Plan, spec: &Spec) -> bool {
    if !setup.loopback_up || !setup.nothing_but_loopback() {
        return false;
    }
    let hooks_see_it = spec.hooks().as_ref().is_some_and(|h| {
        [h.prestart(), h.create_runtime(), h.create_container()]
            .iter()
            .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
    });
    if hooks_see_it {
        return false;
    }
    setup.loopback_up = false;
    true
}

/// Sets IFF_UP on `lo` in the network namespace of process `pid` (the
/// container's init, our child: its PID cannot be reused meanwhile).
fn loopback_up_in(pid: i32) -> Result<()> {
    use nix::sched::{setns, CloneFlags};

    let own = std::fs::File::open("/proc/self/ns/net").context("open rcrun's network namespace")?;
    let target = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .context("open the container's network namespace")?;
    setns(&target, CloneFlags::CLONE_NEWNET).context("enter the container's network namespace")?;
    let up = container_setup::loopback_up().context("bring up the loopback interface");
    // Back before anything else, whether or not that worked.
    setns(&own, CloneFlags::CLONE_NEWNET).context("return to rcrun's network namespace")?;
    up
}

/// A bundle's spec, read once: `run` looks at it before creating.
pub struct Loaded {
    bundle: PathBuf,
    spec: Spec,
}

impl Loaded {
    /// Checks the ID and the options, then reads `<bundle>/config.json`.
    pub fn read(opts: &CreateOpts) -> Result<Loaded> {
        container::validate_id(&opts.id)?;
        if opts.pidfd_socket.is_some() {
            bail!("--pidfd-socket is not supported");
        }
        let bundle = crate::fsutil::absolute(opts.bundle.as_deref().unwrap_or(Path::new(".")));
        let spec = spec::load(&bundle)?;
        Ok(Loaded { bundle, spec })
    }

    pub fn wants_terminal(&self) -> bool {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false)
    }
}

/// A container that was just created.
pub struct Created {
    pub container: Container,
    pub meta: Meta,
    /// The hooks of the effective spec (poststart and poststop run from
    /// rcrun itself).
    pub hooks: Option<Hooks>,
    /// The `--pid-file` this create wrote, with what it held before.
    pub pid_file: Option<crate::fsutil::Overwrite>,
}

impl Created {
    /// Undoes the create after a later step failed: the container, its
    /// cgroup and directories, and the pid file it wrote.
    pub fn discard(&self, root: &Root, id: &str) {
        let pid = self.container.pid().map(|p| p.as_raw());
        if let Err(e) = commands::delete::remove_everything(root, id, &self.meta.cgroups_path, pid)
        {
            tracing::warn!("cleanup of {id}: {e:#}");
        }
        if let Some(pf) = &self.pid_file {
            pf.undo();
        }
    }
}

/// Creates the container; on any failure removes everything it made.
pub fn create(
    root: &Root,
    opts: &CreateOpts,
    stdio: Stdio,
    console_socket: Option<PathBuf>,
) -> Result<Created> {
    create_loaded(root, opts, Loaded::read(opts)?, stdio, console_socket)
}

/// [`create`] with the bundle already read.
pub fn create_loaded(
    root: &Root,
    opts: &CreateOpts,
    loaded: Loaded,
    stdio: Stdio,
    console_socket: Option<PathBuf>,
) -> Result<Created> {
    let id = opts.id.as_str();
    let terminal = loaded.wants_terminal();
    let Loaded { bundle, mut spec } = loaded;
    spec::validate(&spec, &bundle)?;
    if terminal && console_socket.is_none() {
        bail!("process.terminal is set: --console-socket is required");
    }
    if !terminal && console_socket.is_some() {
        bail!("--console-socket given but process.terminal is not set");
    }
    let bundle = bundle.canonicalize().unwrap_or(bundle);
    spec::make_effective(&mut spec, &bundle, id)?;
    let cgroup_mounts = crate::cgroup_mount::take(&mut spec);
    let mut setup = container_setup::plan(&mut spec)?;
    let loopback_by_runtime = loopback_from_runtime(&mut setup, &spec);

    if let Some(pf) = &opts.pid_file {
        crate::fsutil::require_parent_dir(pf, "--pid-file")?;
    }
    root.ensure()?;
    let eff_bundle = root.bundle_dir(id);
    // mkdir is the atomic claim on the ID: a second create of it fails here.
    match std::fs::create_dir(&eff_bundle) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("container with id exists: {id}")
        }
        Err(e) => return Err(e).context("create container directory"),
    }
    if root.state_dir(id).exists() {
        let _ = std::fs::remove_dir(&eff_bundle);
        bail!("container with id exists: {id}");
    }

    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_default();
    let mut meta = Meta {
        bundle: bundle.clone(),
        rootfs: spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_default(),
        cgroups_path: cgroups_path.clone(),
        init_start_time: None,
    };
    let pid_file = opts.pid_file.as_deref().map(crate::fsutil::absolute);
    let pid_file_overwrite = pid_file.as_deref().map(crate::fsutil::Overwrite::begin);

    let setup_error = eff_bundle.join(container_setup::ERROR_FILE);
    let result = (|| -> Result<Container> {
        if !setup.is_empty() {
            let exe = crate::sealed_exe::original_path().context("locate the rcrun binary")?;
            container_setup::install_hook(&mut spec, &exe, &setup, &setup_error)?;
        }
        // The directory was created above by this process: nobody else
        // writes here, so plain exclusive writes do (no temp file + rename).
        crate::fsutil::write_new(
            &eff_bundle.join("config.json"),
            &serde_json::to_vec(&spec).context("serialize the effective config")?,
        )
        .context("write effective config")?;
        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(root.path())
            .context("root path")?
            .with_pid_file(pid_file.as_deref())
            .context("pid file")?
            .with_console_socket(console_socket.as_deref())
            .with_preserved_fds(opts.preserve_fds)
            .with_executor(ProcessExecutor {
                new_keyring: (!opts.no_new_keyring).then(|| format!("_ses.{id}")),
                confinement: None,
            });
        if let Some(fd) = stdio.stdin {
            builder = builder.with_stdin(fd);
        }
        if let Some(fd) = stdio.stdout {
            builder = builder.with_stdout(fd);
        }
        if let Some(fd) = stdio.stderr {
            builder = builder.with_stderr(fd);
        }
        crate::supplementary_groups::drop_all()?;
        crate::cgroups::create_v2_ancestors(&cgroups_path)?;
        let container = builder
            .as_init(&eff_bundle)
            .with_systemd(false)
            .with_detach(true)
            .with_no_pivot(opts.no_pivot)
            .build()
            .map_err(|e| anyhow::anyhow!(crate::tidy_libcontainer_error(&crate::error_text(&e))))?;
        let pid = container.pid().map(|p| p.as_raw());
        meta.init_start_time = pid.and_then(container::start_time);
        if let Some(pid) = pid {
            crate::cgroup_mount::finish(&cgroup_mounts, pid)?;
            if loopback_by_runtime {
                loopback_up_in(pid)?;
            }
        }
        // Written once, complete: until then (and after a crash before
        // it) readers fall back to libcontainer's state, which holds the
        // cgroups path as soon as a cgroup can exist.
        meta.save(root, id)?;
        Ok(container)
    })();

    match result {
        Ok(container) => Ok(Created {
            container,
            meta,
            hooks: spec.hooks().clone(),
            pid_file: pid_file_overwrite,
        }),
        // Whatever failed, the same cleanup: the container (if libcontainer
        // made it), its cgroup and directories, and a pid file we wrote.
        Err(e) => {
            // libcontainer says only that a hook exited 1: the reason is
            // what rcrun's set-up hook wrote.
            let e = match container_setup::hook_failure(&setup_error) {
                Some(reason) => anyhow::anyhow!("container set-up: {reason}"),
                None => e,
            };
            let pid = Container::load(root.state_dir(id))
                .ok()
                .and_then(|c| c.pid())
                .map(|p| p.as_raw());
            if let Err(ce) = commands::delete::remove_everything(root, id, &cgroups_path, pid) {
                tracing::warn!("cleanup after failed create: {ce:#}");
            }
            if let Some(pf) = &pid_file_overwrite {
                pf.undo();
            }
            Err(e)
        }
    }
}
