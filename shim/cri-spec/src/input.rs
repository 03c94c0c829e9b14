//! What the daemon hands in: the pod's facts, the image config and knobs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rcrun_proto::cri;

use crate::userns::PodUserNamespace;

/// How the pod's containers see PIDs (the pod's `NamespaceOption.pid`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PodPidNamespace {
    /// `hostPID`: containers run in the host's PID namespace.
    Node,
    /// `shareProcessNamespace`: containers join the PID namespace of the pod's
    /// infra process, given as a path such as `/proc/<infra pid>/ns/pid`.
    Pod(PathBuf),
    /// Every container gets its own PID namespace (Kubernetes' default).
    #[default]
    Container,
}

/// The pod-level security context bits the infra process runs with (kubelet
/// already folds the pod's security context into each container's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSecurity {
    pub privileged: bool,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
}

/// What the daemon knows of a pod sandbox once `RunPodSandbox` has set it up.
#[derive(Debug, Clone, Default)]
pub struct SandboxInfo {
    /// The sandbox ID.
    pub id: String,
    /// The pinned network namespace; `None` = the host's (`hostNetwork`).
    pub net_ns: Option<PathBuf>,
    /// The pinned IPC namespace; `None` = the host's (`hostIPC`).
    pub ipc_ns: Option<PathBuf>,
    /// The pinned UTS namespace; `None` = the host's (`hostNetwork` pods share the node's hostname).
    pub uts_ns: Option<PathBuf>,
    /// The pod's PID namespace mode.
    pub pid_ns: PodPidNamespace,
    /// The pod's own user namespace (`hostUsers: false`); `None` = the host's.
    /// The pinned network, IPC and UTS namespaces are owned by it.
    pub user_ns: Option<PodUserNamespace>,
    /// The pod's hostname (for `hostNetwork` pods: the node's), exported as `HOSTNAME`.
    /// Empty = read the host's.
    pub hostname: String,
    /// The sandbox's `hostname` file, bind-mounted at `/etc/hostname`.
    pub hostname_file: Option<PathBuf>,
    /// The sandbox's `hosts` file, bind-mounted at `/etc/hosts`.
    pub hosts_file: Option<PathBuf>,
    /// The sandbox's `resolv.conf`, bind-mounted at `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// The pod's shm directory, bind-mounted at `/dev/shm`; `None` keeps a
    /// private tmpfs. Containers in the host's IPC namespace get the host's
    /// `/dev/shm` instead.
    pub shm_dir: Option<PathBuf>,
    /// The pod's cgroup parent (from `LinuxPodSandboxConfig.cgroup_parent`);
    /// containers go below it unless the daemon gives their cgroups path.
    pub cgroup_parent: String,
    /// Namespaced sysctls of the pod, set in every container.
    pub sysctls: HashMap<String, String>,
    /// Pod-level security context bits (used by the infra process).
    pub security: PodSecurity,
}

/// The parts of an image's config a container spec needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `USER`: `name`, `uid`, `uid:gid`, `name:group`, ... (empty = root).
    pub user: String,
    /// `ENV` as `KEY=value`.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `WORKDIR` (empty = `/`).
    pub working_dir: String,
}

/// Daemon-wide knobs (from its config file); `Default` gives containerd's behaviour.
#[derive(Debug, Clone, Default)]
pub struct SpecOptions {
    /// Capabilities of an unprivileged container before CRI add/drop; `None` =
    /// containerd's default set ([`crate::default_capabilities`]).
    pub default_capabilities: Option<Vec<String>>,
    /// The seccomp profile when the CRI request has none at all: `false`
    /// (containerd's default) runs unconfined, `true` applies RuntimeDefault.
    pub seccomp_default_when_unset: bool,
    /// Give devices the container user's uid/gid (containerd's
    /// `device_ownership_from_security_context`).
    pub device_ownership_from_security_context: bool,
    /// Drop hugepage limits even where a hugetlb controller exists (they are
    /// always dropped where none is, as containerd's
    /// `tolerate_missing_hugetlb_controller` does by default).
    pub ignore_hugepage_limits: bool,
    /// Resource limits for every container process (none by default: the
    /// container inherits the runtime's; raising hard limits fails without
    /// CAP_SYS_RESOURCE).
    pub rlimits: Vec<oci_spec::runtime::PosixRlimit>,
}

/// Everything [`crate::container_spec`] needs for one container.
#[derive(Debug, Clone, Copy)]
pub struct ContainerSpecInput<'a> {
    /// The container ID.
    pub id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox_config: &'a cri::PodSandboxConfig,
    pub sandbox: &'a SandboxInfo,
    pub image: &'a ImageConfig,
    /// The container's rootfs, already mounted: `/etc/passwd` and `/etc/group`
    /// are read from it; it becomes `root.path`.
    pub rootfs: &'a Path,
    /// `linux.cgroupsPath` (cgroupfs path or systemd `slice:prefix:name`);
    /// empty = [`crate::container_cgroups_path`] of the sandbox's cgroup parent.
    pub cgroups_path: &'a str,
    /// For `NamespaceMode::TARGET`: the target container's PID namespace
    /// (`/proc/<target init pid>/ns/pid`). Required when the config asks for TARGET.
    pub target_pid_ns: Option<&'a Path>,
    /// Directory `Localhost` seccomp profiles are relative to (absolute
    /// `localhost_ref`s are used as they are).
    pub seccomp_profile_root: &'a Path,
    /// The lowest `oom_score_adj` the runtime may set (the daemon's own value
    /// when it lacks CAP_SYS_RESOURCE): lower requests are raised to it.
    pub min_oom_score_adj: i32,
    /// Whether the host runs the unified cgroup hierarchy (v2 only).
    pub cgroup_v2: bool,
    pub options: &'a SpecOptions,
}
