//! A pod's own user namespace (kubelet's `hostUsers: false`, KEP-127).
//!
//! The rules follow containerd 2.x (`parseUsernsIDs` in its CRI server):
//! mode NODE takes no mappings; mode POD takes exactly one uid and one gid
//! mapping; CONTAINER and TARGET are refused. On top of containerd's checks,
//! container ID 0 must be mapped (kubelet always maps it, critest asks for
//! the refusal) and a range must not run past the last valid ID, so the
//! kernel never sees a mapping it would reject half-way through a pod start.
//!
//! Every container of such a pod, and the pod's infra process, joins the
//! pod's pinned user namespace by path; the mappings go into the spec too,
//! as containerd writes them: runc checks them against the namespace it
//! joins, and they describe the container's IDs to whoever reads the spec.

use std::path::PathBuf;

use oci_spec::runtime::{
    Linux, LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType,
};
use rcrun_proto::cri::{self, NamespaceMode};

use crate::error::SpecError;
use crate::input::SandboxInfo;

/// The highest ID a mapping may reach: `(uid_t)-1` means "no ID" to the kernel.
const LAST_VALID_ID: u64 = u32::MAX as u64 - 1;

/// One line of `/proc/<pid>/uid_map` or `gid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMapping {
    /// The host ID the container's ID 0 maps to.
    pub fn host_root(&self) -> u32 {
        self.host_id
    }

    /// The `uid_map`/`gid_map` line: `<container id> <host id> <length>`.
    pub fn map_line(&self) -> String {
        format!("{} {} {}", self.container_id, self.host_id, self.length)
    }

    fn oci(&self) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(self.container_id)
            .host_id(self.host_id)
            .size(self.length)
            .build()
            .expect("all fields set")
    }
}

/// The uid and gid mappings of a pod's user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodIdMappings {
    pub uids: IdMapping,
    pub gids: IdMapping,
}

/// A pod's pinned user namespace, as containers join it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUserNamespace {
    /// The pinned namespace (a bind mount of `/proc/<pid>/ns/user`).
    pub path: PathBuf,
    pub mappings: PodIdMappings,
    /// The runtime makes idmapped bind mounts (its `features` say
    /// `mountExtensions.idmap.enabled`): the pod's volumes are then mounted
    /// idmapped with the container's user namespace (runtime-spec's `idmap`
    /// option without mappings), so that host root's files are the
    /// container root's.
    pub idmap_volumes: bool,
}

fn mapping(list: &[cri::IdMapping], field: &str) -> Result<IdMapping, SpecError> {
    let [one] = list else {
        return Err(SpecError::invalid(
            field,
            format!(
                "exactly one mapping is supported with user namespace mode POD, got {}",
                list.len()
            ),
        ));
    };
    if one.length == 0 {
        return Err(SpecError::invalid(field, "mapping length must not be 0"));
    }
    for (what, start) in [("container", one.container_id), ("host", one.host_id)] {
        if start as u64 + one.length as u64 - 1 > LAST_VALID_ID {
            return Err(SpecError::invalid(
                field,
                format!(
                    "{what} IDs {start}..{start}+{} run past the last valid ID {LAST_VALID_ID}",
                    one.length
                ),
            ));
        }
    }
    if one.container_id != 0 {
        return Err(SpecError::invalid(
            field,
            format!(
                "container ID 0 must be mapped, but the mapping starts at container ID {}",
                one.container_id
            ),
        ));
    }
    Ok(IdMapping {
        container_id: one.container_id,
        host_id: one.host_id,
        length: one.length,
    })
}

/// Validates a pod's (or container's) `userns_options`: `None` when the pod
/// uses the node's user namespace, its mappings for mode POD. `field` is the
/// CRI path of the `userns_options` message, for error messages.
pub fn pod_id_mappings(
    opts: Option<&cri::UserNamespace>,
    field: &str,
) -> Result<Option<PodIdMappings>, SpecError> {
    let Some(opts) = opts else {
        return Ok(None);
    };
    let mode = NamespaceMode::try_from(opts.mode).map_err(|_| {
        SpecError::invalid(
            format!("{field}.mode"),
            format!("unknown namespace mode {}", opts.mode),
        )
    })?;
    match mode {
        NamespaceMode::Node => {
            if !opts.uids.is_empty() || !opts.gids.is_empty() {
                return Err(SpecError::invalid(
                    field,
                    format!(
                        "user namespace mode NODE takes no mappings, got {} uid and {} gid mappings",
                        opts.uids.len(),
                        opts.gids.len()
                    ),
                ));
            }
            Ok(None)
        }
        NamespaceMode::Pod => Ok(Some(PodIdMappings {
            uids: mapping(&opts.uids, &format!("{field}.uids"))?,
            gids: mapping(&opts.gids, &format!("{field}.gids"))?,
        })),
        NamespaceMode::Container | NamespaceMode::Target => Err(SpecError::invalid(
            format!("{field}.mode"),
            format!(
                "user namespace mode {} is not supported: only NODE and POD are",
                mode.as_str_name()
            ),
        )),
    }
}

/// The pod user namespace a container joins: the pod's, when the container
/// asks for POD (or says nothing: kubelet always copies the pod's options).
/// A container may not leave its pod's user namespace nor ask for one in a
/// pod that has none.
pub(crate) fn container_user_namespace<'a>(
    opts: Option<&cri::UserNamespace>,
    sandbox: &'a SandboxInfo,
) -> Result<Option<&'a PodUserNamespace>, SpecError> {
    const FIELD: &str = "security_context.namespace_options.userns_options";
    let wanted = pod_id_mappings(opts, FIELD)?;
    match (&sandbox.user_ns, wanted, opts) {
        (None, None, _) => Ok(None),
        (Some(pod), None, None) => Ok(Some(pod)),
        (Some(_), None, Some(_)) => Err(SpecError::invalid(
            format!("{FIELD}.mode"),
            "the pod runs in its own user namespace: a container cannot use the node's",
        )),
        (None, Some(_), _) => Err(SpecError::invalid(
            format!("{FIELD}.mode"),
            "POD user namespace asked for in a pod that runs in the node's user namespace",
        )),
        (Some(pod), Some(wanted), _) => {
            if wanted != pod.mappings {
                return Err(SpecError::invalid(
                    FIELD,
                    format!(
                        "mappings (uids {:?}, gids {:?}) differ from the pod's (uids {:?}, gids {:?})",
                        wanted.uids.map_line(),
                        wanted.gids.map_line(),
                        pod.mappings.uids.map_line(),
                        pod.mappings.gids.map_line()
                    ),
                ));
            }
            Ok(Some(pod))
        }
    }
}

/// Checks that the container's user and groups exist in the pod's user
/// namespace: an unmapped ID would only fail later, inside the runtime,
/// with a far less clear error.
pub(crate) fn check_ids_are_mapped(
    userns: &PodUserNamespace,
    uid: u32,
    gids: impl IntoIterator<Item = u32>,
) -> Result<(), SpecError> {
    let inside = |m: &IdMapping, id: u32| {
        id >= m.container_id && (id as u64) < m.container_id as u64 + m.length as u64
    };
    if !inside(&userns.mappings.uids, uid) {
        return Err(SpecError::invalid(
            "security_context.run_as_user",
            format!(
                "uid {uid} is not mapped in the pod's user namespace (uid_map {:?})",
                userns.mappings.uids.map_line()
            ),
        ));
    }
    for gid in gids {
        if !inside(&userns.mappings.gids, gid) {
            return Err(SpecError::invalid(
                "security_context.run_as_group",
                format!(
                    "gid {gid} is not mapped in the pod's user namespace (gid_map {:?})",
                    userns.mappings.gids.map_line()
                ),
            ));
        }
    }
    Ok(())
}

/// Puts the pod's user namespace into a spec: joined by path (first, so the
/// runtime joins it before the namespaces it owns), with its mappings.
pub(crate) fn join_pod_user_namespace(
    linux: &mut Linux,
    namespaces: &mut Vec<LinuxNamespace>,
    userns: &PodUserNamespace,
) {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(LinuxNamespaceType::User);
    ns.set_path(Some(userns.path.clone()));
    namespaces.insert(0, ns);
    linux.set_uid_mappings(Some(vec![userns.mappings.uids.oci()]));
    linux.set_gid_mappings(Some(vec![userns.mappings.gids.oci()]));
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELD: &str = "namespace_options.userns_options";

    fn map(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
        cri::IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn pod(uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>) -> cri::UserNamespace {
        cri::UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids,
            gids,
        }
    }

    fn err(opts: &cri::UserNamespace) -> String {
        pod_id_mappings(Some(opts), FIELD).unwrap_err().to_string()
    }

    #[test]
    fn pod_mode_with_one_mapping_each() {
        let opts = pod(vec![map(0, 1000, 100000)], vec![map(0, 2000, 65536)]);
        let m = pod_id_mappings(Some(&opts), FIELD).unwrap().unwrap();
        assert_eq!(m.uids.map_line(), "0 1000 100000");
        assert_eq!(m.gids.map_line(), "0 2000 65536");
        assert_eq!(m.uids.host_root(), 1000);
    }

    #[test]
    fn node_mode_and_no_options_mean_the_hosts() {
        assert_eq!(pod_id_mappings(None, FIELD).unwrap(), None);
        let node = cri::UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        };
        assert_eq!(pod_id_mappings(Some(&node), FIELD).unwrap(), None);
        let with_maps = cri::UserNamespace {
            mode: NamespaceMode::Node as i32,
            uids: vec![map(0, 1000, 10)],
            gids: vec![map(0, 1000, 10)],
        };
        assert!(err(&with_maps).contains("NODE takes no mappings"));
    }

    #[test]
    fn more_than_one_mapping_is_refused() {
        let two = vec![map(0, 1000, 100000), map(0, 2000, 100000)];
        let e = err(&pod(two.clone(), two));
        assert!(e.contains(&format!("{FIELD}.uids")), "{e}");
        assert!(e.contains("exactly one mapping"), "{e}");
        let e = err(&pod(vec![map(0, 1000, 10)], vec![]));
        assert!(e.contains(&format!("{FIELD}.gids")), "{e}");
    }

    #[test]
    fn container_id_0_must_be_mapped() {
        let e = err(&pod(vec![map(1, 1000, 100000)], vec![map(0, 1000, 100000)]));
        assert!(e.contains("container ID 0 must be mapped"), "{e}");
        assert!(e.contains(&format!("{FIELD}.uids")), "{e}");
    }

    #[test]
    fn zero_length_and_overflow_are_refused() {
        let e = err(&pod(vec![map(0, 1000, 0)], vec![map(0, 1000, 1)]));
        assert!(e.contains("must not be 0"), "{e}");
        let e = err(&pod(
            vec![map(0, u32::MAX - 10, 100)],
            vec![map(0, 1000, 1)],
        ));
        assert!(e.contains("run past the last valid ID"), "{e}");
        // The last valid ID itself may be mapped.
        let edge = pod(vec![map(0, u32::MAX - 10, 10)], vec![map(0, 1, 1)]);
        assert!(pod_id_mappings(Some(&edge), FIELD).is_ok());
    }

    #[test]
    fn container_and_target_modes_are_refused_naming_the_mode() {
        for mode in [NamespaceMode::Container, NamespaceMode::Target] {
            let opts = cri::UserNamespace {
                mode: mode as i32,
                ..Default::default()
            };
            let e = err(&opts);
            assert!(e.contains(&format!("{FIELD}.mode")), "{e}");
            assert!(e.contains(mode.as_str_name()), "{e}");
        }
        let unknown = cri::UserNamespace {
            mode: 42,
            ..Default::default()
        };
        assert!(err(&unknown).contains("unknown namespace mode 42"));
    }

    fn userns_pod() -> SandboxInfo {
        SandboxInfo {
            id: "sb".into(),
            user_ns: Some(PodUserNamespace {
                path: "/run/rcrun/pod/sb/ns/user".into(),
                mappings: PodIdMappings {
                    uids: IdMapping {
                        container_id: 0,
                        host_id: 1000,
                        length: 100000,
                    },
                    gids: IdMapping {
                        container_id: 0,
                        host_id: 1000,
                        length: 100000,
                    },
                },
                idmap_volumes: false,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn containers_follow_the_pod() {
        let sb = userns_pod();
        let same = pod(vec![map(0, 1000, 100000)], vec![map(0, 1000, 100000)]);
        assert!(container_user_namespace(Some(&same), &sb)
            .unwrap()
            .is_some());
        assert!(container_user_namespace(None, &sb).unwrap().is_some());
        let node = cri::UserNamespace::default();
        let node = cri::UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..node
        };
        let e = container_user_namespace(Some(&node), &sb).unwrap_err();
        assert!(e.to_string().contains("cannot use the node's"), "{e}");
        let other = pod(vec![map(0, 5000, 100000)], vec![map(0, 1000, 100000)]);
        let e = container_user_namespace(Some(&other), &sb).unwrap_err();
        assert!(e.to_string().contains("differ from the pod's"), "{e}");
        let host_pod = SandboxInfo::default();
        assert!(container_user_namespace(Some(&node), &host_pod)
            .unwrap()
            .is_none());
        assert!(container_user_namespace(Some(&same), &host_pod).is_err());
    }
}
