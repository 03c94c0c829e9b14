//! `CreateContainer`: the whole spec of one container.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::{Linux, Process, Root, Spec, User};

use crate::annotations::*;
use crate::apparmor::container_apparmor;
use crate::capabilities::container_capabilities;
use crate::devices::plan_devices;
use crate::error::SpecError;
use crate::input::ContainerSpecInput;
use crate::mounts::plan_mounts;
use crate::namespaces::{container_namespaces, host_ipc};
use crate::process::{host_hostname, process_args, process_cwd, process_env};
use crate::resources::{container_cgroups_path, hugetlb_available, linux_resources};
use crate::seccomp::{container_seccomp, profile_from_deprecated_path};
use crate::user::resolve_user;
use crate::userns::{check_ids_are_mapped, container_user_namespace, join_pod_user_namespace};

/// The OCI runtime spec version written into `ociVersion`.
pub(crate) const OCI_VERSION: &str = "1.0.2-dev";

/// Builds the OCI spec of a container from its CRI config, the image config
/// and the sandbox. Errors name the CRI field at fault; nothing is created.
pub fn container_spec(input: &ContainerSpecInput) -> Result<Spec, SpecError> {
    let config = input.config;
    if input.id.is_empty() {
        return Err(SpecError::invalid("container id", "empty"));
    }
    let metadata = config
        .metadata
        .as_ref()
        .filter(|m| !m.name.is_empty())
        .ok_or_else(|| SpecError::invalid("metadata.name", "missing"))?;
    if !config.cdi_devices.is_empty() {
        return Err(SpecError::invalid(
            "cdi_devices",
            "CDI devices are not supported",
        ));
    }
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.unwrap_or_default();
    let resources = linux.resources.unwrap_or_default();
    let ns_opts = sc.namespace_options.clone().unwrap_or_default();
    let privileged = sc.privileged;
    let pod_privileged = input.sandbox.security.privileged
        || input
            .sandbox_config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
    if privileged && !pod_privileged {
        return Err(SpecError::invalid(
            "security_context.privileged",
            "a privileged container needs a privileged pod sandbox",
        ));
    }

    // Process.
    let hostname = if input.sandbox.hostname.is_empty() {
        host_hostname()
    } else {
        input.sandbox.hostname.clone()
    };
    let user = resolve_user(input.rootfs, &sc, &input.image.user)?;
    let caps = container_capabilities(
        privileged,
        sc.capabilities.as_ref(),
        input.options.default_capabilities.as_deref(),
    )?;
    let bounding = caps.bounding().clone().unwrap_or_default();
    let mut process = Process::default();
    process.set_terminal(Some(config.tty));
    process.set_args(Some(process_args(config, input.image)?));
    process.set_env(Some(process_env(config, input.image, &hostname)?));
    process.set_cwd(PathBuf::from(process_cwd(config, input.image)?));
    let mut oci_user = User::default();
    oci_user.set_uid(user.uid);
    oci_user.set_gid(user.gid);
    oci_user.set_additional_gids(Some(user.additional_gids.clone()));
    process.set_user(oci_user);
    process.set_capabilities(Some(caps));
    // Absent rather than `false`: the OCI default, and libcontainer 0.7 takes
    // any present value as "set" and then loads seccomp after dropping
    // CAP_SYS_ADMIN, which fails.
    process.set_no_new_privileges(sc.no_new_privs.then_some(true));
    process.set_oom_score_adj(Some(clamp_oom_score_adj(
        resources.oom_score_adj,
        input.min_oom_score_adj,
    )));
    process.set_rlimits(if input.options.rlimits.is_empty() {
        None
    } else {
        Some(input.options.rlimits.clone())
    });
    process.set_apparmor_profile(container_apparmor(&sc)?);
    process.set_selinux_label(None);

    // Filesystem.
    let host_ipc = host_ipc(&ns_opts, input.sandbox);
    let mount_plan = plan_mounts(
        config,
        input.sandbox,
        sc.readonly_rootfs,
        privileged,
        host_ipc,
    )?;
    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(sc.readonly_rootfs));

    // Linux.
    let owner = input
        .options
        .device_ownership_from_security_context
        .then_some((user.uid, user.gid));
    let device_plan = plan_devices(&config.devices, privileged, owner)?;
    let mut oci_resources = linux_resources(&resources, input.cgroup_v2);
    // kubelet sends a limit for every hugepage size the node has; like
    // containerd (tolerate_missing_hugetlb_controller), drop them when there
    // is no controller to enforce them rather than failing every container.
    if input.options.ignore_hugepage_limits || !hugetlb_available(input.cgroup_v2) {
        oci_resources.set_hugepage_limits(None);
    }
    oci_resources.set_devices(Some(device_plan.rules));

    #[allow(deprecated)]
    let deprecated_profile = profile_from_deprecated_path(&sc.seccomp_profile_path)?;
    let seccomp = container_seccomp(
        sc.seccomp.as_ref().or(deprecated_profile.as_ref()),
        privileged,
        &bounding,
        input.seccomp_profile_root,
        input.options.seccomp_default_when_unset,
    )?;

    let mut linux_spec = Linux::default();
    let mut namespaces = container_namespaces(
        &ns_opts,
        input.sandbox,
        input.target_pid_ns,
        input.cgroup_v2,
        privileged,
    )?;
    if let Some(userns) = container_user_namespace(ns_opts.userns_options.as_ref(), input.sandbox)?
    {
        check_ids_are_mapped(
            userns,
            user.uid,
            std::iter::once(user.gid).chain(user.additional_gids.iter().copied()),
        )?;
        join_pod_user_namespace(&mut linux_spec, &mut namespaces, userns);
    }
    linux_spec.set_namespaces(Some(namespaces));
    linux_spec.set_resources(Some(oci_resources));
    let cgroups_path = if input.cgroups_path.is_empty() {
        container_cgroups_path(&input.sandbox.cgroup_parent, input.id)
    } else {
        input.cgroups_path.to_string()
    };
    linux_spec.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    linux_spec.set_devices(Some(device_plan.devices));
    linux_spec.set_seccomp(seccomp);
    linux_spec.set_rootfs_propagation(mount_plan.rootfs_propagation);
    if privileged {
        linux_spec.set_masked_paths(Some(vec![]));
        linux_spec.set_readonly_paths(Some(vec![]));
    } else {
        // Taken as sent: kubelet sends its defaults for procMount Default and
        // empty lists for Unmasked (containerd does the same).
        linux_spec.set_masked_paths(Some(sc.masked_paths.clone()));
        linux_spec.set_readonly_paths(Some(sc.readonly_paths.clone()));
    }
    linux_spec.set_sysctl(if input.sandbox.sysctls.is_empty() {
        None
    } else {
        Some(input.sandbox.sysctls.clone())
    });

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_mounts(Some(mount_plan.mounts));
    spec.set_hostname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(container_annotations(input, &metadata.name)));
    spec.set_linux(Some(linux_spec));
    Ok(spec)
}

/// containerd's `restrict_oom_score_adj`: never ask for less than the runtime
/// may set, and stay within the kernel's range.
pub(crate) fn clamp_oom_score_adj(requested: i64, min_allowed: i32) -> i32 {
    requested.clamp(-1000, 1000).max(min_allowed as i64) as i32
}

fn container_annotations(input: &ContainerSpecInput, name: &str) -> HashMap<String, String> {
    let sandbox_meta = input.sandbox_config.metadata.clone().unwrap_or_default();
    let image = input.config.image.clone().unwrap_or_default();
    let image_name = if image.user_specified_image.is_empty() {
        image.image
    } else {
        image.user_specified_image
    };
    [
        (
            ANNOTATION_CONTAINER_TYPE,
            CONTAINER_TYPE_CONTAINER.to_string(),
        ),
        (ANNOTATION_SANDBOX_ID, input.sandbox.id.clone()),
        (ANNOTATION_CONTAINER_NAME, name.to_string()),
        (ANNOTATION_IMAGE_NAME, image_name),
        (ANNOTATION_SANDBOX_NAME, sandbox_meta.name),
        (ANNOTATION_SANDBOX_NAMESPACE, sandbox_meta.namespace),
        (ANNOTATION_SANDBOX_UID, sandbox_meta.uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{ImageConfig, PodPidNamespace, SandboxInfo, SpecOptions};
    use crate::mounts::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
    use oci_spec::runtime::{Capability, LinuxNamespaceType};
    use rcrun_proto::cri;
    use std::path::Path;

    struct Fixture {
        rootfs: tempfile::TempDir,
        sandbox_dir: tempfile::TempDir,
        sandbox: SandboxInfo,
        sandbox_config: cri::PodSandboxConfig,
        image: ImageConfig,
        options: SpecOptions,
    }

    fn fixture() -> Fixture {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(rootfs.path().join("etc")).unwrap();
        std::fs::write(
            rootfs.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            rootfs.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        )
        .unwrap();
        let sandbox_dir = tempfile::tempdir().unwrap();
        for f in ["hostname", "hosts", "resolv.conf"] {
            std::fs::write(sandbox_dir.path().join(f), "x\n").unwrap();
        }
        std::fs::create_dir(sandbox_dir.path().join("shm")).unwrap();
        let sandbox = SandboxInfo {
            id: "sandbox-1".into(),
            net_ns: Some("/run/rcrun/ns/net".into()),
            ipc_ns: Some("/run/rcrun/ns/ipc".into()),
            uts_ns: Some("/run/rcrun/ns/uts".into()),
            pid_ns: PodPidNamespace::Container,
            hostname: "web-0".into(),
            hostname_file: Some(sandbox_dir.path().join("hostname")),
            hosts_file: Some(sandbox_dir.path().join("hosts")),
            resolv_conf: Some(sandbox_dir.path().join("resolv.conf")),
            shm_dir: Some(sandbox_dir.path().join("shm")),
            cgroup_parent: "/kubepods".into(),
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let sandbox_config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web-0".into(),
                uid: "uid-1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let image = ImageConfig {
            user: "app".into(),
            env: vec!["LANG=C.UTF-8".into()],
            entrypoint: vec!["/docker-entrypoint.sh".into()],
            cmd: vec!["serve".into()],
            working_dir: "/srv".into(),
        };
        Fixture {
            rootfs,
            sandbox_dir,
            sandbox,
            sandbox_config,
            image,
            options: SpecOptions::default(),
        }
    }

    fn config() -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "sha256:abcd".into(),
                user_specified_image: "docker.io/library/nginx:1.27".into(),
                ..Default::default()
            }),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources::default()),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    masked_paths: DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
                    readonly_paths: DEFAULT_READONLY_PATHS
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    fn sc(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
        c.linux.as_mut().unwrap().security_context.as_mut().unwrap()
    }

    fn resources(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
        c.linux.as_mut().unwrap().resources.as_mut().unwrap()
    }

    fn build(f: &Fixture, c: &cri::ContainerConfig) -> Result<Spec, SpecError> {
        container_spec(&ContainerSpecInput {
            id: "ctr-1",
            config: c,
            sandbox_config: &f.sandbox_config,
            sandbox: &f.sandbox,
            image: &f.image,
            rootfs: f.rootfs.path(),
            cgroups_path: "/kubepods/ctr-1",
            target_pid_ns: None,
            seccomp_profile_root: Path::new("/var/lib/kubelet/seccomp"),
            min_oom_score_adj: 0,
            cgroup_v2: false,
            options: &f.options,
        })
    }

    #[test]
    fn a_plain_container() {
        let f = fixture();
        let spec = build(&f, &config()).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(
            p.args().as_ref().unwrap(),
            &["/docker-entrypoint.sh", "serve"]
        );
        assert_eq!(
            p.env().as_ref().unwrap(),
            &[
                crate::process::DEFAULT_PATH,
                "HOSTNAME=web-0",
                "LANG=C.UTF-8"
            ]
        );
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[1000, 10]);
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.no_new_privileges(), None);
        assert_eq!(p.oom_score_adj(), Some(0));
        let caps = p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap();
        assert!(caps.contains(&Capability::Chown) && !caps.contains(&Capability::SysAdmin));

        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), f.rootfs.path());
        assert_eq!(root.readonly(), Some(false));
        assert!(
            spec.hostname().is_none(),
            "the UTS namespace is joined, not set"
        );

        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/kubepods/ctr-1"))
        );
        assert_eq!(
            linux.masked_paths().as_ref().unwrap().len(),
            DEFAULT_MASKED_PATHS.len()
        );
        assert_eq!(
            linux.readonly_paths().as_ref().unwrap().len(),
            DEFAULT_READONLY_PATHS.len()
        );
        assert!(
            linux.seccomp().is_none(),
            "no CRI profile and the default knob: unconfined"
        );
        assert_eq!(
            linux.sysctl().as_ref().unwrap()["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
        let ns = linux.namespaces().as_ref().unwrap();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(net.path().as_deref(), Some(Path::new("/run/rcrun/ns/net")));
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert!(!rules[0].allow());

        let mounts: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().clone())
            .collect();
        for dest in [
            "/proc",
            "/dev",
            "/sys",
            "/etc/hosts",
            "/etc/hostname",
            "/etc/resolv.conf",
            "/dev/shm",
        ] {
            assert!(mounts.contains(&dest.into()), "{dest}");
        }
        let _ = &f.sandbox_dir;

        let a = spec.annotations().as_ref().unwrap();
        assert_eq!(a[ANNOTATION_CONTAINER_TYPE], "container");
        assert_eq!(a[ANNOTATION_SANDBOX_ID], "sandbox-1");
        assert_eq!(a[ANNOTATION_CONTAINER_NAME], "app");
        assert_eq!(a[ANNOTATION_IMAGE_NAME], "docker.io/library/nginx:1.27");
        assert_eq!(a[ANNOTATION_SANDBOX_NAME], "web-0");
        assert_eq!(a[ANNOTATION_SANDBOX_NAMESPACE], "default");
        assert_eq!(a[ANNOTATION_SANDBOX_UID], "uid-1");
    }

    #[test]
    fn spec_round_trips_through_config_json() {
        let f = fixture();
        let spec = build(&f, &config()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        spec.save(&path).unwrap();
        let loaded = Spec::load(&path).unwrap();
        assert_eq!(loaded.process(), spec.process());
        assert_eq!(loaded.mounts(), spec.mounts());
    }

    #[test]
    fn cgroups_path_defaults_to_the_sandbox_parent() {
        let f = fixture();
        let spec = container_spec(&ContainerSpecInput {
            id: "ctr-9",
            config: &config(),
            sandbox_config: &f.sandbox_config,
            sandbox: &f.sandbox,
            image: &f.image,
            rootfs: f.rootfs.path(),
            cgroups_path: "",
            target_pid_ns: None,
            seccomp_profile_root: Path::new("/x"),
            min_oom_score_adj: 0,
            cgroup_v2: false,
            options: &f.options,
        })
        .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/kubepods/ctr-9"))
        );
    }

    #[test]
    fn tty_sets_terminal() {
        let f = fixture();
        let mut c = config();
        c.tty = true;
        c.stdin = true;
        let spec = build(&f, &c).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(true));
    }

    #[test]
    fn readonly_rootfs_and_no_new_privs() {
        let f = fixture();
        let mut c = config();
        sc(&mut c).readonly_rootfs = true;
        sc(&mut c).no_new_privs = true;
        let spec = build(&f, &c).unwrap();
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(true)
        );
        let hosts = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/etc/hosts"))
            .unwrap();
        assert!(hosts
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string()));
    }

    #[test]
    fn oom_score_adj_is_clamped_to_the_allowed_minimum() {
        let f = fixture();
        let mut c = config();
        resources(&mut c).oom_score_adj = -999;
        let mut input_min = 0;
        let spec = build(&f, &c).unwrap();
        assert_eq!(
            spec.process().as_ref().unwrap().oom_score_adj(),
            Some(input_min)
        );
        resources(&mut c).oom_score_adj = 500;
        let spec = build(&f, &c).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(500));
        input_min = -500;
        assert_eq!(clamp_oom_score_adj(-999, input_min), -500);
        assert_eq!(clamp_oom_score_adj(5000, -1000), 1000);
        assert_eq!(clamp_oom_score_adj(-2000, -1000), -1000);
    }

    #[test]
    fn resources_land_in_the_spec() {
        let f = fixture();
        let mut c = config();
        resources(&mut c).memory_limit_in_bytes = 32 << 20;
        resources(&mut c).cpu_shares = 256;
        resources(&mut c).hugepage_limits = vec![cri::HugepageLimit {
            page_size: "2MB".into(),
            limit: 0,
        }];
        let spec = build(&f, &c).unwrap();
        let r = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(r.memory().unwrap().limit(), Some(32 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(256));
        assert_eq!(
            r.hugepage_limits().is_some(),
            crate::resources::hugetlb_available(false)
        );
        let mut f = f;
        f.options.ignore_hugepage_limits = true;
        let spec = build(&f, &c).unwrap();
        let r = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert!(r.hugepage_limits().is_none());
    }

    #[test]
    fn runtime_default_seccomp_follows_the_capabilities() {
        let f = fixture();
        let mut c = config();
        sc(&mut c).seccomp = Some(cri::SecurityProfile::default());
        sc(&mut c).capabilities = Some(cri::Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        });
        let spec = build(&f, &c).unwrap();
        let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert!(seccomp
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|s| s.names().contains(&"mount".to_string())));
    }

    #[test]
    fn seccomp_default_knob_applies_when_unset() {
        let mut f = fixture();
        f.options.seccomp_default_when_unset = true;
        let spec = build(&f, &config()).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_some());
    }

    #[test]
    fn empty_masked_and_readonly_lists_unmask() {
        let f = fixture();
        let mut c = config();
        sc(&mut c).masked_paths.clear();
        sc(&mut c).readonly_paths.clear();
        let spec = build(&f, &c).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
    }

    #[test]
    fn privileged_needs_a_privileged_sandbox() {
        let mut f = fixture();
        let mut c = config();
        sc(&mut c).privileged = true;
        let e = build(&f, &c).unwrap_err();
        assert!(e.to_string().contains("privileged"), "{e}");
        f.sandbox_config.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        sc(&mut c).seccomp = Some(cri::SecurityProfile::default());
        let spec = build(&f, &c).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
        assert!(linux
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .any(|d| d.path() == Path::new("/dev/null")));
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(
            caps.bounding().as_ref().unwrap(),
            &crate::capabilities::current_capabilities()
        );
        let sys = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
    }

    fn userns_sandbox(f: &mut Fixture) -> cri::UserNamespace {
        let one = crate::userns::IdMapping {
            container_id: 0,
            host_id: 1000,
            length: 100000,
        };
        f.sandbox.user_ns = Some(crate::userns::PodUserNamespace {
            path: "/run/rcrun/pod/sb/ns/user".into(),
            mappings: crate::userns::PodIdMappings {
                uids: one,
                gids: one,
            },
            idmap_volumes: true,
        });
        let map = cri::IdMapping {
            container_id: 0,
            host_id: 1000,
            length: 100000,
        };
        cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![map],
            gids: vec![map],
        }
    }

    #[test]
    fn pod_user_namespace_is_joined_first_with_its_mappings() {
        let mut f = fixture();
        let userns = userns_sandbox(&mut f);
        let mut c = config();
        sc(&mut c).namespace_options = Some(cri::NamespaceOption {
            userns_options: Some(userns),
            ..Default::default()
        });
        let spec = build(&f, &c).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        assert_eq!(
            ns[0].typ(),
            LinuxNamespaceType::User,
            "joined before the rest"
        );
        assert_eq!(
            ns[0].path().as_deref(),
            Some(Path::new("/run/rcrun/pod/sb/ns/user"))
        );
        assert_eq!(
            ns.iter()
                .filter(|n| n.typ() == LinuxNamespaceType::User)
                .count(),
            1
        );
        for maps in [linux.uid_mappings(), linux.gid_mappings()] {
            let maps = maps.as_ref().unwrap();
            assert_eq!(maps.len(), 1);
            assert_eq!(
                (maps[0].container_id(), maps[0].host_id(), maps[0].size()),
                (0, 1000, 100000)
            );
        }
        // The network namespace stays the pod's (owned by its user namespace).
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(net.path().as_deref(), Some(Path::new("/run/rcrun/ns/net")));
        // A container that says nothing follows its pod too.
        let spec = build(&f, &config()).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.namespaces().as_ref().unwrap()[0].typ(),
            LinuxNamespaceType::User
        );
        assert!(linux.uid_mappings().is_some());
    }

    #[test]
    fn unmapped_users_are_refused_in_a_user_namespaced_pod() {
        let mut f = fixture();
        let mut userns = userns_sandbox(&mut f);
        // The mapping covers IDs 0..100000: the image's user 1000 is in it.
        let mut c = config();
        sc(&mut c).namespace_options = Some(cri::NamespaceOption {
            userns_options: Some(userns.clone()),
            ..Default::default()
        });
        assert!(build(&f, &c).is_ok());
        sc(&mut c).run_as_user = Some(cri::Int64Value { value: 100000 });
        let e = build(&f, &c).unwrap_err();
        assert!(e.to_string().contains("uid 100000 is not mapped"), "{e}");
        sc(&mut c).run_as_user = Some(cri::Int64Value { value: 0 });
        sc(&mut c).supplemental_groups = vec![200000];
        let e = build(&f, &c).unwrap_err();
        assert!(e.to_string().contains("gid 200000 is not mapped"), "{e}");
        // A narrow mapping leaves the image's user (1000) out.
        userns.uids[0].length = 10;
        userns.gids[0].length = 10;
        let one = crate::userns::IdMapping {
            container_id: 0,
            host_id: 1000,
            length: 10,
        };
        f.sandbox.user_ns.as_mut().unwrap().mappings = crate::userns::PodIdMappings {
            uids: one,
            gids: one,
        };
        sc(&mut c).supplemental_groups = vec![];
        sc(&mut c).namespace_options = Some(cri::NamespaceOption {
            userns_options: Some(userns),
            ..Default::default()
        });
        sc(&mut c).run_as_user = None;
        let e = build(&f, &c).unwrap_err();
        assert!(e.to_string().contains("uid 1000 is not mapped"), "{e}");
    }

    #[test]
    fn node_user_namespace_has_no_user_namespace_nor_mappings() {
        let f = fixture();
        let mut c = config();
        sc(&mut c).namespace_options = Some(cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let spec = build(&f, &c).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .all(|n| n.typ() != LinuxNamespaceType::User));
        assert!(linux.uid_mappings().is_none() && linux.gid_mappings().is_none());
    }

    #[test]
    fn user_namespace_mismatch_with_the_pod_is_invalid() {
        let mut f = fixture();
        let mut userns = userns_sandbox(&mut f);
        userns.uids[0].host_id = 5000;
        let mut c = config();
        sc(&mut c).namespace_options = Some(cri::NamespaceOption {
            userns_options: Some(userns),
            ..Default::default()
        });
        let e = build(&f, &c).unwrap_err();
        assert_eq!(e.kind(), crate::SpecErrorKind::InvalidArgument);
        assert!(e.to_string().contains("userns_options"), "{e}");
        // POD in a pod without a user namespace.
        let f = fixture();
        let e = build(&f, &c).unwrap_err();
        assert!(e.to_string().contains("node's user namespace"), "{e}");
    }

    #[test]
    fn host_network_container_has_no_net_or_uts_namespace() {
        let mut f = fixture();
        f.sandbox.net_ns = None;
        f.sandbox.uts_ns = None;
        let spec = build(&f, &config()).unwrap();
        let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(!ns.iter().any(|n| matches!(
            n.typ(),
            LinuxNamespaceType::Network | LinuxNamespaceType::Uts
        )));
    }

    #[test]
    fn empty_hostname_falls_back_to_the_hosts() {
        let mut f = fixture();
        f.sandbox.hostname.clear();
        let spec = build(&f, &config()).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&format!("HOSTNAME={}", host_hostname())));
    }

    #[test]
    fn missing_metadata_or_command_is_invalid() {
        let mut f = fixture();
        let mut c = config();
        c.metadata = None;
        assert!(build(&f, &c)
            .unwrap_err()
            .to_string()
            .contains("metadata.name"));
        f.image.entrypoint.clear();
        f.image.cmd.clear();
        let e = build(&f, &config()).unwrap_err();
        assert_eq!(e.kind(), crate::SpecErrorKind::InvalidArgument);
    }

    #[test]
    fn unknown_image_user_fails_the_whole_spec() {
        let mut f = fixture();
        f.image.user = "nginx".into();
        let e = build(&f, &config()).unwrap_err();
        assert!(e.to_string().contains("\"nginx\""), "{e}");
    }
}
