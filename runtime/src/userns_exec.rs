//! `rcrun exec` into a container that has its own user namespace.
//!
//! libcontainer 0.7's tenant builder rebuilds the exec'd process's namespace
//! list from the init's `/proc/<pid>/ns/*` for ipc, uts, net, pid, mnt, cgroup
//! and time only: `user` is never in it, so the process would enter the
//! container's other namespaces as host root, with host root's capabilities.
//! The rest of libcontainer's process engine already handles a user namespace
//! given by path, in runc's order: the intermediate process joins the
//! container's cgroup while it is still host root, then setns()es into the
//! user namespace before anything else (then time and pid), and the process
//! joins the remaining namespaces with the capabilities it holds *inside* it.
//!
//! So for these containers rcrun builds the tenant spec itself, `user`
//! included, and runs libcontainer's engine
//! ([`container_main_process`]) on it, doing the little the tenant builder
//! does around that call: the start socket, the console socket, the pipe that
//! reports failures after the start, and making rcrun non-dumpable.
//!
//! The namespaces are handed over as descriptors opened here, not as
//! `/proc/<pid>/ns` paths, and the init's identity is checked after opening
//! them: a PID reused by an unrelated process cannot slip in between.
//!
//! One pass (user, then the rest) is enough here, unlike runc's two-stage
//! join for namespaces owned by another user namespace: the container's
//! init entered its namespaces the same way, so one that its user namespace
//! does not own would have failed `create` already.
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;

use libcontainer::container::{Container, ContainerStatus};
use libcontainer::notify_socket::{NotifyListener, NotifySocket};
use libcontainer::oci_spec::runtime::{
    LinuxBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, Process, Spec,
};
use libcontainer::process::args::{ContainerArgs, ContainerType};
use libcontainer::process::container_main_process::container_main_process;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::utils::PathBufExt;
use nix::fcntl::OFlag;

use crate::commands::create::Stdio;
use crate::executor::ProcessExecutor;

#[derive(Debug, thiserror::Error)]
pub enum UsernsExecError {
    #[error("container is {0}, not running")]
    NotRunning(&'static str),
    #[error("the container's init process is gone")]
    InitGone,
    #[error("open the init's {name} namespace: {source}")]
    OpenNamespace {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("--cgroup {0:?} is not a sub-cgroup of the container's")]
    SubCgroup(String),
    #[error("config.json: {0}")]
    Spec(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Engine(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UsernsExecError {
    let what = what.into();
    move |source| UsernsExecError::Io { what, source }
}

/// What to start in the container, and how.
pub struct TenantProcess {
    pub id: String,
    /// The container's effective bundle (its `config.json` is `spec`).
    pub bundle: PathBuf,
    pub spec: Spec,
    /// The process to run, complete (`--process` or built from the flags).
    pub process: Process,
    pub executor: ProcessExecutor,
    pub stdio: Stdio,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    pub detached: bool,
    pub ignore_paused: bool,
    pub sub_cgroup: Option<String>,
}

/// The init's namespaces of the types the container's config lists, opened
/// (`user` first; libcontainer joins it first whatever the order).
struct InitNamespaces {
    fds: Vec<(LinuxNamespaceType, OwnedFd)>,
}

/// `/proc/<pid>/ns/<name>` of each namespace type libcontainer can join.
fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
    }
}

impl InitNamespaces {
    fn open(pid: i32, spec: &Spec) -> Result<InitNamespaces, UsernsExecError> {
        let listed: Vec<LinuxNamespaceType> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .map(|ns| ns.iter().map(|n| n.typ()).collect())
            .unwrap_or_default();
        let mut types = vec![LinuxNamespaceType::User];
        types.extend(
            listed
                .into_iter()
                .filter(|t| *t != LinuxNamespaceType::User),
        );
        let mut fds = Vec::with_capacity(types.len());
        for typ in types {
            let name = proc_name(typ);
            // Opened close-on-exec: the descriptors reach libcontainer's
            // processes through fork and are gone once the command runs.
            let file = std::fs::File::open(format!("/proc/{pid}/ns/{name}")).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    UsernsExecError::InitGone
                } else {
                    UsernsExecError::OpenNamespace { name, source: e }
                }
            })?;
            fds.push((typ, OwnedFd::from(file)));
        }
        Ok(InitNamespaces { fds })
    }

    /// The namespace list of the tenant spec. The paths name our descriptors;
    /// libcontainer's processes inherit them by fork and open the paths
    /// before they join the mount namespace, while /proc is still the host's.
    fn spec_list(&self) -> Result<Vec<LinuxNamespace>, UsernsExecError> {
        self.fds
            .iter()
            .map(|(typ, fd)| {
                LinuxNamespaceBuilder::default()
                    .typ(*typ)
                    .path(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .build()
                    .map_err(|e| UsernsExecError::Spec(e.to_string()))
            })
            .collect()
    }
}

/// The spec libcontainer's engine runs: the container's, with `process`
/// and a `linux` section that only joins (namespaces, cgroup, personality),
/// as the tenant builder makes it, plus the user namespace.
fn tenant_spec(
    spec: &Spec,
    process: Process,
    namespaces: Vec<LinuxNamespace>,
) -> Result<Spec, UsernsExecError> {
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| UsernsExecError::Spec("linux: missing".into()))?;
    let mut b = LinuxBuilder::default().namespaces(namespaces);
    if let Some(p) = linux.cgroups_path() {
        b = b.cgroups_path(p.clone());
    }
    if let Some(p) = linux.personality() {
        b = b.personality(p.clone());
    }
    if let Some(t) = linux.time_offsets() {
        b = b.time_offsets(t.clone());
    }
    let mut out = spec.clone();
    out.set_process(Some(process)).set_linux(Some(
        b.build()
            .map_err(|e| UsernsExecError::Spec(e.to_string()))?,
    ));
    Ok(out)
}

/// Starts `t` in `container` (state loaded and refreshed by the caller) and
/// returns the PID of the process, on the host. `init_start_time` is the
/// init's recorded start time, to tell it from a process that reused its PID.
pub fn spawn(
    container: &Container,
    init_start_time: Option<u64>,
    t: TenantProcess,
) -> Result<i32, UsernsExecError> {
    match container.status() {
        ContainerStatus::Running => {}
        ContainerStatus::Paused if t.ignore_paused => {}
        s => {
            return Err(UsernsExecError::NotRunning(crate::container::status_name(
                s,
            )))
        }
    }
    let init = container.pid().ok_or(UsernsExecError::InitGone)?.as_raw();
    let namespaces = InitNamespaces::open(init, &t.spec)?;
    if init_start_time.is_some() && crate::container::start_time(init) != init_start_time {
        return Err(UsernsExecError::InitGone);
    }

    let linux = t
        .spec
        .linux()
        .as_ref()
        .ok_or_else(|| UsernsExecError::Spec("linux: missing".into()))?;
    let base_cgroup = libcontainer::utils::get_cgroup_path(linux.cgroups_path(), &t.id);
    let cgroup_path = match t.sub_cgroup.as_deref() {
        None | Some("/") => base_cgroup,
        Some(sub) => {
            let p = base_cgroup.join(sub).normalize();
            if !p.starts_with(&base_cgroup) {
                return Err(UsernsExecError::SubCgroup(sub.to_string()));
            }
            p
        }
    };
    let rootfs = {
        let root = t
            .spec
            .root()
            .as_ref()
            .ok_or_else(|| UsernsExecError::Spec("root: missing".into()))?;
        let p = if root.path().is_absolute() {
            root.path().clone()
        } else {
            t.bundle.join(root.path())
        };
        std::fs::canonicalize(&p).map_err(io(format!("rootfs {}", p.display())))?
    };
    let oom_score_adj = t.process.oom_score_adj();
    let spec = tenant_spec(&t.spec, t.process, namespaces.spec_list()?)?;

    let state_dir = &container.root;
    let tag = std::process::id();
    let notify_path = state_dir.join(format!("exec-notify-{tag}.sock"));
    let _notify_file = crate::fsutil::RemoveOnDrop(notify_path.clone());
    let notify_listener = NotifyListener::new(&notify_path)
        .map_err(|e| UsernsExecError::Engine(crate::error_text(&e)))?;

    let console = match &t.console_socket {
        Some(path) => {
            let link = format!("exec-tty-{tag}.sock");
            let _link = crate::fsutil::RemoveOnDrop(state_dir.join(&link));
            let fd = libcontainer::tty::setup_console_socket(state_dir, path, &link)
                .map_err(|e| UsernsExecError::Engine(crate::error_text(&e)))?;
            Some(fd)
        }
        None => None,
    };

    // The process reports a failure after the start here (its copy of the
    // write end closes on exec: EOF without data is success).
    let (report_rx, report_tx) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io("pipe")(e.into()))?;

    if let Some(adj) = oom_score_adj {
        // Inherited by the processes forked below (as the tenant builder does).
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(io("set oom_score_adj"))?;
    }
    // The processes forked below keep host resources (descriptors, the
    // host's root) until they exec; while non-dumpable, processes of the
    // container (same uid in its user namespace) cannot ptrace them or open
    // their /proc files.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io("make rcrun non-dumpable")(
            std::io::Error::last_os_error(),
        ));
    }

    let args = ContainerArgs {
        container_type: ContainerType::TenantContainer {
            exec_notify_fd: report_tx.as_raw_fd(),
        },
        syscall: SyscallType::default(),
        spec: Rc::new(spec),
        rootfs,
        console_socket: console.as_ref().map(|c| c.as_raw_fd()),
        notify_listener,
        preserve_fds: t.preserve_fds,
        container: None,
        // Joined by path: there is no mapping to write.
        user_ns_config: None,
        cgroup_config: libcgroups::common::CgroupConfig {
            cgroup_path,
            systemd_cgroup: container.systemd(),
            container_name: t.id.clone(),
        },
        detached: t.detached,
        executor: Box::new(t.executor),
        no_pivot: false,
        stdin: t.stdio.stdin.as_ref().map(|f| f.as_raw_fd()),
        stdout: t.stdio.stdout.as_ref().map(|f| f.as_raw_fd()),
        stderr: t.stdio.stderr.as_ref().map(|f| f.as_raw_fd()),
        as_sibling: false,
        pid_file: t.pid_file.clone(),
    };
    let pid = container_main_process(&args)
        .map_err(|e| UsernsExecError::Engine(crate::error_text(&e)))?
        .as_raw();
    if let Err(e) = NotifySocket::new(&notify_path).notify_container_start() {
        // It would wait for the start forever: it is our child (a sibling
        // of libcontainer's intermediate process), so kill and reap it.
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(UsernsExecError::Engine(crate::error_text(&e)));
    }
    drop(report_tx);
    drop(args);
    drop(namespaces);
    let mut report = String::new();
    std::fs::File::from(report_rx)
        .read_to_string(&mut report)
        .map_err(io("read the process's report"))?;
    if !report.is_empty() {
        return Err(UsernsExecError::Engine(report));
    }
    Ok(pid)
}
