//! The infra process of a pod that shares one PID namespace: a tiny reaper
//! (`/pause`) that owns the namespace the pod's containers join.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, LinuxCapabilities, LinuxCpu, LinuxNamespaceType, LinuxResources, Process, Root,
    Spec, User,
};
use oci_spec::runtime::{Linux, LinuxNamespace};
use rcrun_proto::cri;

use crate::annotations::*;
use crate::container::{clamp_oom_score_adj, OCI_VERSION};
use crate::error::SpecError;
use crate::input::SandboxInfo;
use crate::mounts::{mount, proc_and_dev_mounts, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
use crate::process::DEFAULT_PATH;
use crate::seccomp::seccomp_profile_for_caps;
use crate::userns::join_pod_user_namespace;

/// containerd's oom_score_adj for sandboxes: the last thing the OOM killer picks.
const INFRA_OOM_SCORE_ADJ: i64 = -998;
/// containerd's CPU shares for sandboxes (the minimum).
const INFRA_CPU_SHARES: u64 = 2;

/// Everything [`sandbox_infra_spec`] needs.
#[derive(Debug, Clone, Copy)]
pub struct InfraSpecInput<'a> {
    pub sandbox: &'a SandboxInfo,
    pub sandbox_config: &'a cri::PodSandboxConfig,
    /// A minimal rootfs holding the infra binary (the daemon provides it).
    pub rootfs: &'a Path,
    /// What to run inside `rootfs`; empty = `["/pause"]`.
    pub args: &'a [String],
    /// `linux.cgroupsPath` of the infra process.
    pub cgroups_path: &'a str,
    /// See [`crate::ContainerSpecInput::min_oom_score_adj`].
    pub min_oom_score_adj: i32,
    pub cgroup_v2: bool,
}

fn ns(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path.cloned());
    n
}

/// The spec of a pod's infra process: a new PID (and mount) namespace, the
/// pod's network, IPC and UTS namespaces, no capabilities, no new
/// privileges, a read-only rootfs, RuntimeDefault seccomp (none for
/// privileged pods), the pod's user.
pub fn sandbox_infra_spec(input: &InfraSpecInput) -> Result<Spec, SpecError> {
    let sb = input.sandbox;
    if sb.id.is_empty() {
        return Err(SpecError::invalid("sandbox id", "empty"));
    }
    let args = if input.args.is_empty() {
        vec!["/pause".to_string()]
    } else {
        input.args.to_vec()
    };

    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_args(Some(args));
    process.set_env(Some(vec![DEFAULT_PATH.to_string()]));
    process.set_cwd(PathBuf::from("/"));
    let mut user = User::default();
    let gid = sb.security.run_as_group.unwrap_or(0);
    user.set_uid(sb.security.run_as_user.unwrap_or(0));
    user.set_gid(gid);
    let mut gids = vec![gid];
    gids.extend(
        sb.security
            .supplemental_groups
            .iter()
            .filter(|g| **g != gid),
    );
    user.set_additional_gids(Some(gids));
    process.set_user(user);
    let none = Capabilities::new();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(none.clone()));
    caps.set_effective(Some(none.clone()));
    caps.set_permitted(Some(none.clone()));
    caps.set_inheritable(Some(none.clone()));
    caps.set_ambient(Some(none.clone()));
    process.set_capabilities(Some(caps));
    process.set_no_new_privileges(Some(true));
    process.set_oom_score_adj(Some(clamp_oom_score_adj(
        INFRA_OOM_SCORE_ADJ,
        input.min_oom_score_adj,
    )));
    process.set_rlimits(None);

    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(true));

    let mut mounts = proc_and_dev_mounts();
    mounts.extend([mount(
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", "ro"],
    )]);
    match &sb.shm_dir {
        Some(dir) => {
            let mut m = mount("/dev/shm", "bind", "", &["rbind", "rprivate", "rw"]);
            m.set_source(Some(dir.clone()));
            mounts.push(m);
        }
        None => mounts.push(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )),
    }

    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid, None),
        ns(LinuxNamespaceType::Mount, None),
    ];
    if let Some(p) = &sb.net_ns {
        namespaces.push(ns(LinuxNamespaceType::Network, Some(p)));
        if let Some(u) = &sb.uts_ns {
            namespaces.push(ns(LinuxNamespaceType::Uts, Some(u)));
        }
    }
    if let Some(p) = &sb.ipc_ns {
        namespaces.push(ns(LinuxNamespaceType::Ipc, Some(p)));
    }
    if input.cgroup_v2 {
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    let mut linux = Linux::default();
    if let Some(userns) = &sb.user_ns {
        // The infra process owns the pod's PID namespace, which must belong
        // to the pod's user namespace for the containers that join both.
        join_pod_user_namespace(&mut linux, &mut namespaces, userns);
    }

    let mut resources = LinuxResources::default();
    let mut cpu = LinuxCpu::default();
    cpu.set_shares(Some(INFRA_CPU_SHARES));
    resources.set_cpu(Some(cpu));

    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(Some(PathBuf::from(input.cgroups_path)));
    linux.set_devices(None);
    linux.set_masked_paths(Some(
        DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
    ));
    linux.set_readonly_paths(Some(
        DEFAULT_READONLY_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    ));
    linux.set_seccomp(if sb.security.privileged {
        None
    } else {
        Some(seccomp_profile_for_caps(&none))
    });

    let meta = input.sandbox_config.metadata.clone().unwrap_or_default();
    let annotations: HashMap<String, String> = [
        (
            ANNOTATION_CONTAINER_TYPE,
            CONTAINER_TYPE_SANDBOX.to_string(),
        ),
        (ANNOTATION_SANDBOX_ID, sb.id.clone()),
        (ANNOTATION_SANDBOX_NAME, meta.name),
        (ANNOTATION_SANDBOX_NAMESPACE, meta.namespace),
        (ANNOTATION_SANDBOX_UID, meta.uid),
        (
            ANNOTATION_SANDBOX_LOG_DIR,
            input.sandbox_config.log_directory.clone(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts));
    spec.set_hostname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(annotations));
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::PodSecurity;

    fn sandbox() -> SandboxInfo {
        SandboxInfo {
            id: "pod-1".into(),
            net_ns: Some("/run/rcrun/ns/net-1".into()),
            ipc_ns: Some("/run/rcrun/ns/ipc-1".into()),
            uts_ns: Some("/run/rcrun/ns/uts-1".into()),
            shm_dir: Some("/run/rcrun/pods/pod-1/shm".into()),
            ..Default::default()
        }
    }

    fn build(sb: &SandboxInfo, args: &[String], min_oom: i32) -> Spec {
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u-1".into(),
                namespace: "prod".into(),
                attempt: 0,
            }),
            log_directory: "/var/log/pods/u-1".into(),
            ..Default::default()
        };
        sandbox_infra_spec(&InfraSpecInput {
            sandbox: sb,
            sandbox_config: &config,
            rootfs: Path::new("/run/rcrun/pods/pod-1/infra"),
            args,
            cgroups_path: "/kubepods/pod-1",
            min_oom_score_adj: min_oom,
            cgroup_v2: false,
        })
        .unwrap()
    }

    #[test]
    fn infra_joins_the_pods_user_namespace() {
        let mut sb = sandbox();
        assert!(build(&sb, &[], 0)
            .linux()
            .as_ref()
            .unwrap()
            .uid_mappings()
            .is_none());
        let one = crate::userns::IdMapping {
            container_id: 0,
            host_id: 200000,
            length: 65536,
        };
        sb.user_ns = Some(crate::userns::PodUserNamespace {
            path: "/run/rcrun/pod/pod-1/ns/user".into(),
            mappings: crate::userns::PodIdMappings {
                uids: one,
                gids: one,
            },
            idmap_volumes: true,
        });
        let spec = build(&sb, &[], 0);
        let linux = spec.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        assert_eq!(ns[0].typ(), LinuxNamespaceType::User);
        assert_eq!(
            ns[0].path().as_deref(),
            Some(Path::new("/run/rcrun/pod/pod-1/ns/user"))
        );
        assert!(ns
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none()));
        let uids = linux.uid_mappings().as_ref().unwrap();
        assert_eq!((uids[0].host_id(), uids[0].size()), (200000, 65536));
        assert_eq!(linux.gid_mappings().as_ref().unwrap().len(), 1);
    }

    #[test]
    fn infra_owns_a_new_pid_namespace_and_joins_the_pods() {
        let spec = build(&sandbox(), &[], -1000);
        let linux = spec.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        let find = |t| ns.iter().find(|n| n.typ() == t);
        assert!(find(LinuxNamespaceType::Pid).unwrap().path().is_none());
        assert!(find(LinuxNamespaceType::Mount).unwrap().path().is_none());
        assert_eq!(
            find(LinuxNamespaceType::Network).unwrap().path().as_deref(),
            Some(Path::new("/run/rcrun/ns/net-1"))
        );
        assert_eq!(
            find(LinuxNamespaceType::Ipc).unwrap().path().as_deref(),
            Some(Path::new("/run/rcrun/ns/ipc-1"))
        );
        assert_eq!(
            find(LinuxNamespaceType::Uts).unwrap().path().as_deref(),
            Some(Path::new("/run/rcrun/ns/uts-1"))
        );
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/kubepods/pod-1"))
        );
        assert_eq!(
            linux
                .resources()
                .as_ref()
                .unwrap()
                .cpu()
                .as_ref()
                .unwrap()
                .shares(),
            Some(INFRA_CPU_SHARES)
        );
        assert_eq!(
            linux.masked_paths().as_ref().unwrap().len(),
            DEFAULT_MASKED_PATHS.len()
        );
        assert!(linux.seccomp().is_some());
    }

    #[test]
    fn infra_process_is_minimal() {
        let spec = build(&sandbox(), &[], -1000);
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["/pause"]);
        assert!(p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap()
            .is_empty());
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.oom_score_adj(), Some(-998));
        assert!(p.rlimits().is_none());
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let shm = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert_eq!(
            shm.source().as_deref(),
            Some(Path::new("/run/rcrun/pods/pod-1/shm"))
        );
        let a = spec.annotations().as_ref().unwrap();
        assert_eq!(a[ANNOTATION_CONTAINER_TYPE], "sandbox");
        assert_eq!(a[ANNOTATION_SANDBOX_NAMESPACE], "prod");
        assert_eq!(a[ANNOTATION_SANDBOX_LOG_DIR], "/var/log/pods/u-1");
    }

    #[test]
    fn infra_runs_as_the_pod_user_and_clamps_oom() {
        let mut sb = sandbox();
        sb.security = PodSecurity {
            privileged: true,
            run_as_user: Some(65535),
            run_as_group: Some(65534),
            supplemental_groups: vec![2000],
        };
        sb.net_ns = None;
        let args = vec!["/pause".to_string(), "pause".to_string()];
        let spec = build(&sb, &args, 0);
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &args);
        assert_eq!((p.user().uid(), p.user().gid()), (65535, 65534));
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[65534, 2000]);
        assert_eq!(p.oom_score_adj(), Some(0));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none(), "privileged pod: unconfined");
        let ns = linux.namespaces().as_ref().unwrap();
        assert!(!ns.iter().any(|n| matches!(
            n.typ(),
            LinuxNamespaceType::Network | LinuxNamespaceType::Uts
        )));
    }

    #[test]
    fn empty_sandbox_id_is_invalid() {
        let sb = SandboxInfo::default();
        let config = cri::PodSandboxConfig::default();
        let e = sandbox_infra_spec(&InfraSpecInput {
            sandbox: &sb,
            sandbox_config: &config,
            rootfs: Path::new("/x"),
            args: &[],
            cgroups_path: "/x",
            min_oom_score_adj: 0,
            cgroup_v2: false,
        })
        .unwrap_err();
        assert_eq!(e.kind(), crate::SpecErrorKind::InvalidArgument);
    }
}
