//! Which namespaces a container creates, joins (by path) or shares with the host.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use rcrun_proto::cri::{self, NamespaceMode};

use crate::error::SpecError;
use crate::input::{PodPidNamespace, SandboxInfo};

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path);
    n
}

fn mode(value: i32, field: &str) -> Result<NamespaceMode, SpecError> {
    NamespaceMode::try_from(value)
        .map_err(|_| SpecError::invalid(field, format!("unknown namespace mode {value}")))
}

/// Whether the container shares the host's network namespace.
pub(crate) fn host_network(opts: &cri::NamespaceOption, sandbox: &SandboxInfo) -> bool {
    opts.network == NamespaceMode::Node as i32 || sandbox.net_ns.is_none()
}

/// Whether the container shares the host's IPC namespace.
pub(crate) fn host_ipc(opts: &cri::NamespaceOption, sandbox: &SandboxInfo) -> bool {
    opts.ipc == NamespaceMode::Node as i32 || sandbox.ipc_ns.is_none()
}

/// The namespaces of a container:
/// - mount: always new;
/// - network, IPC, UTS: the sandbox's pinned ones; none (the host's) for NODE
///   or when the sandbox has none; UTS follows the network (hostNetwork pods
///   see the node's hostname);
/// - PID: NODE = host, POD = the pod's infra namespace (a new one when the
///   pod shares none), CONTAINER = new,
///   TARGET = the target container's (ephemeral containers);
/// - cgroup: new on cgroup v2 for unprivileged containers (as containerd);
/// - user: not here, see [`crate::userns`] (the pod's, joined first).
pub(crate) fn container_namespaces(
    opts: &cri::NamespaceOption,
    sandbox: &SandboxInfo,
    target_pid_ns: Option<&Path>,
    cgroup_v2: bool,
    privileged: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let network = mode(opts.network, "namespace_options.network")?;
    let ipc = mode(opts.ipc, "namespace_options.ipc")?;
    let pid = mode(opts.pid, "namespace_options.pid")?;
    if network == NamespaceMode::Target || ipc == NamespaceMode::Target {
        return Err(SpecError::invalid(
            "namespace_options",
            "TARGET is only valid for the PID namespace",
        ));
    }
    let mut out = vec![ns(LinuxNamespaceType::Mount, None)];
    if !host_network(opts, sandbox) {
        out.push(ns(LinuxNamespaceType::Network, sandbox.net_ns.clone()));
        if let Some(uts) = &sandbox.uts_ns {
            out.push(ns(LinuxNamespaceType::Uts, Some(uts.clone())));
        }
    }
    if !host_ipc(opts, sandbox) {
        out.push(ns(LinuxNamespaceType::Ipc, sandbox.ipc_ns.clone()));
    }
    match pid {
        NamespaceMode::Node => {}
        NamespaceMode::Container => out.push(ns(LinuxNamespaceType::Pid, None)),
        NamespaceMode::Pod => match &sandbox.pid_ns {
            PodPidNamespace::Pod(path) => out.push(ns(LinuxNamespaceType::Pid, Some(path.clone()))),
            PodPidNamespace::Node => {}
            // POD is the proto default, so configs that never mention
            // namespaces ask for it; a pod without a shared PID namespace
            // gives each container its own, as CONTAINER would.
            PodPidNamespace::Container => out.push(ns(LinuxNamespaceType::Pid, None)),
        },
        NamespaceMode::Target => {
            if opts.target_id.is_empty() {
                return Err(SpecError::invalid(
                    "namespace_options.target_id",
                    "empty for PID namespace mode TARGET",
                ));
            }
            let path = target_pid_ns.ok_or_else(|| {
                SpecError::invalid(
                    "namespace_options.target_id",
                    format!(
                        "no PID namespace known for target container {}",
                        opts.target_id
                    ),
                )
            })?;
            out.push(ns(LinuxNamespaceType::Pid, Some(path.to_path_buf())));
        }
    }
    if cgroup_v2 && !privileged {
        out.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned() -> SandboxInfo {
        SandboxInfo {
            id: "sb".into(),
            net_ns: Some("/run/rcrun/ns/net-sb".into()),
            ipc_ns: Some("/run/rcrun/ns/ipc-sb".into()),
            uts_ns: Some("/run/rcrun/ns/uts-sb".into()),
            ..Default::default()
        }
    }

    fn find(v: &[LinuxNamespace], t: LinuxNamespaceType) -> Option<&LinuxNamespace> {
        v.iter().find(|n| n.typ() == t)
    }

    fn opts(
        network: NamespaceMode,
        pid: NamespaceMode,
        ipc: NamespaceMode,
    ) -> cri::NamespaceOption {
        cri::NamespaceOption {
            network: network as i32,
            pid: pid as i32,
            ipc: ipc as i32,
            ..Default::default()
        }
    }

    #[test]
    fn pod_namespaces_are_joined_by_path_and_pid_is_new() {
        let o = opts(
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        let v = container_namespaces(&o, &pinned(), None, false, false).unwrap();
        assert_eq!(
            find(&v, LinuxNamespaceType::Network)
                .unwrap()
                .path()
                .as_deref(),
            Some(Path::new("/run/rcrun/ns/net-sb"))
        );
        assert_eq!(
            find(&v, LinuxNamespaceType::Ipc).unwrap().path().as_deref(),
            Some(Path::new("/run/rcrun/ns/ipc-sb"))
        );
        assert_eq!(
            find(&v, LinuxNamespaceType::Uts).unwrap().path().as_deref(),
            Some(Path::new("/run/rcrun/ns/uts-sb"))
        );
        assert!(find(&v, LinuxNamespaceType::Pid).unwrap().path().is_none());
        assert!(find(&v, LinuxNamespaceType::Mount).is_some());
        assert!(
            find(&v, LinuxNamespaceType::Cgroup).is_none(),
            "no cgroup ns on v1"
        );
    }

    #[test]
    fn node_modes_leave_the_namespace_out() {
        let o = opts(
            NamespaceMode::Node,
            NamespaceMode::Node,
            NamespaceMode::Node,
        );
        let v = container_namespaces(&o, &pinned(), None, true, false).unwrap();
        for t in [
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Pid,
        ] {
            assert!(find(&v, t).is_none(), "{t:?}");
        }
        assert!(find(&v, LinuxNamespaceType::Cgroup).is_some());
    }

    #[test]
    fn sandbox_without_pinned_namespaces_means_host() {
        let o = opts(
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        let sb = SandboxInfo::default();
        let v = container_namespaces(&o, &sb, None, false, false).unwrap();
        assert!(find(&v, LinuxNamespaceType::Network).is_none());
        assert!(find(&v, LinuxNamespaceType::Ipc).is_none());
        assert!(find(&v, LinuxNamespaceType::Uts).is_none());
    }

    #[test]
    fn pod_pid_joins_the_infra_namespace() {
        let o = opts(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        let mut sb = pinned();
        let v = container_namespaces(&o, &sb, None, false, false).unwrap();
        assert!(
            find(&v, LinuxNamespaceType::Pid).unwrap().path().is_none(),
            "no shared namespace: a new one"
        );
        sb.pid_ns = PodPidNamespace::Pod("/proc/4242/ns/pid".into());
        let v = container_namespaces(&o, &sb, None, false, false).unwrap();
        assert_eq!(
            find(&v, LinuxNamespaceType::Pid).unwrap().path().as_deref(),
            Some(Path::new("/proc/4242/ns/pid"))
        );
    }

    #[test]
    fn target_pid_joins_the_target_container() {
        let mut o = opts(
            NamespaceMode::Pod,
            NamespaceMode::Target,
            NamespaceMode::Pod,
        );
        assert!(
            container_namespaces(
                &o,
                &pinned(),
                Some(Path::new("/proc/1/ns/pid")),
                false,
                false
            )
            .is_err(),
            "no target_id"
        );
        o.target_id = "abc".into();
        let e = container_namespaces(&o, &pinned(), None, false, false).unwrap_err();
        assert!(e.to_string().contains("target_id"), "{e}");
        let v = container_namespaces(
            &o,
            &pinned(),
            Some(Path::new("/proc/77/ns/pid")),
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            find(&v, LinuxNamespaceType::Pid).unwrap().path().as_deref(),
            Some(Path::new("/proc/77/ns/pid"))
        );
    }
}
