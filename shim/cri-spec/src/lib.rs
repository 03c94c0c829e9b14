//! Turns a CRI v1 container config, the image config and the facts the daemon
//! knows about the pod sandbox into an OCI runtime spec (`config.json`), with
//! containerd's CRI semantics.
//!
//! Pure apart from reading what the spec must describe: the rootfs's
//! `/etc/passwd` and `/etc/group` (user names), host device nodes (major/minor),
//! mount host paths (existence), seccomp profile files and the daemon's own
//! capability set (for privileged containers).
//!
//! The rules, briefly (each module documents its own):
//! - process: `command`+`args` replace ENTRYPOINT+CMD (Kubernetes semantics);
//!   env = PATH default, `HOSTNAME`, image ENV, config envs (later wins by
//!   name); cwd = config, image WORKDIR, `/`; user from `run_as_username`,
//!   `run_as_user` or the image USER resolved in the rootfs, `run_as_group`
//!   overriding the group, supplementary groups per SupplementalGroupsPolicy;
//!   containerd's default capabilities with CRI add/drop (`ALL` = the daemon's
//!   effective set); `oom_score_adj` clamped to what the runtime may set;
//! - mounts: proc, /dev tmpfs, devpts, mqueue, sysfs and cgroupfs (read-only
//!   unless privileged), the sandbox's hostname/hosts/resolv.conf/shm, then the
//!   CRI mounts (replacing defaults at the same path) with their propagation,
//!   `ro`/`rro`;
//! - linux: the pod's namespaces joined by path (none = the host's), PID per
//!   NODE/POD/CONTAINER/TARGET, the pod's user namespace with its mappings
//!   (`hostUsers: false`), a cgroup namespace on v2; resources and device
//!   rules; seccomp RuntimeDefault/Unconfined/Localhost (none when privileged
//!   or unset); masked and read-only paths exactly as sent; the pod's sysctls;
//!   containerd's `io.kubernetes.cri.*` annotations.
//!
//! Entry points:
//! - [`container_spec`] for `CreateContainer`,
//! - [`sandbox_infra_spec`] for a pod's shared-PID infra process,
//! - [`linux_resources`] for `CreateContainer` and `UpdateContainerResources`,
//! - [`default_seccomp_profile`] / [`seccomp_profile_for_caps`] for `RuntimeDefault`.

mod annotations;
mod apparmor;
mod capabilities;
mod container;
mod devices;
mod error;
mod infra;
mod input;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod seccomp;
mod secure_path;
mod user;
mod userns;

pub use annotations::*;
pub use capabilities::{current_capabilities, default_capabilities, parse_capability};
pub use container::container_spec;
pub use error::{SpecError, SpecErrorKind};
pub use infra::{sandbox_infra_spec, InfraSpecInput};
pub use input::{
    ContainerSpecInput, ImageConfig, PodPidNamespace, PodSecurity, SandboxInfo, SpecOptions,
};
pub use mounts::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
pub use resources::{container_cgroups_path, linux_resources};
pub use seccomp::{default_seccomp_profile, seccomp_profile_for_caps};
pub use userns::{pod_id_mappings, IdMapping, PodIdMappings, PodUserNamespace};

/// The OCI spec types this crate produces (oci-spec 0.8, the version libcontainer speaks).
pub use oci_spec::runtime as oci;
